/* SPDX-License-Identifier: MIT */
/* tunnel_child: what an ssh child needs before it runs: an environment with a shell that
 * can run ProxyJump, and no socket file left by a killed ssh in its way. */
#include "tunnel_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ssh runs ProxyJump and ProxyCommand through $SHELL; under systemd with User=tunneld
 * that is the user's login shell, /usr/sbin/nologin, and every jump host fails without a
 * word. A shell /etc/shells does not list is replaced by /bin/sh. */
char **ssh_environment(void)
{
        extern char **environ;
        static char **env;
        const char *shell;
        size_t n = 0, k = 0;
        bool ok = false;

        if (env)
                return env;
        shell = getenv("SHELL");
        if (shell && *shell) {
                for (const char *s; (s = getusershell());)
                        if (strcmp(s, shell) == 0) {
                                ok = true;
                                break;
                        }
                endusershell();
        }
        if (ok)
                return environ;
        while (environ[n])
                n++;
        env = calloc(n + 2, sizeof(char *));
        if (!env)
                return environ;
        for (size_t i = 0; i < n; i++)
                if (strncmp(environ[i], "SHELL=", 6) != 0)
                        env[k++] = environ[i];
        env[k] = (char *)"SHELL=/bin/sh";
        return env;
}

static int write_one(struct tunnel *t, const char *path, const char *text, const char *what)
{
        int r;

        if (!text)
                return 0;
        r = write_file_atomic(path, text, 0600);
        if (r < 0) {
                struct log_ctx ctx = ctx_of(t);
                log_full_errno(LOG_ERR, r, &ctx, "cannot write %s (%s): %m", path, what);
        }
        return r;
}

int write_run_files(struct tunnel *t)
{
        int r = write_one(t, t->jump_config_path, t->jump_config, "the jump host's ssh settings");

        return r < 0 ? r : write_one(t, t->known_hosts_path, t->known_hosts, "the pinned host keys");
}

void remove_run_files(struct tunnel *t)
{
        if (t->jump_config_path)
                (void)unlink(t->jump_config_path);
        if (t->known_hosts_path)
                (void)unlink(t->known_hosts_path);
}

/* A -L Unix socket left behind by a killed ssh makes every later bind fail "Address
 * already in use". Remove it if it is a socket nobody listens on; never anything else. */
void remove_stale_sockets(struct tunnel *t)
{
        for (char *const *f = tunnel_spec_local_forwards(&t->spec); f && *f; f++) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                char path[sizeof(sa.sun_path)];
                struct log_ctx ctx = ctx_of(t);
                struct stat st;
                int fd, r;

                if (!forward_local_socket(*f, path, sizeof(path)) || strlen(path) >= sizeof(sa.sun_path) ||
                    lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
                        continue;
                memcpy(sa.sun_path, path, strlen(path) + 1);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        continue;
                r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
                if (r < 0 && errno == ECONNREFUSED) {
                        if (unlink(path) == 0)
                                log_full(LOG_INFO, &ctx, "removed %s: a socket nobody listens on (left by an ssh "
                                         "that was killed)", path);
                        else
                                log_full_errno(LOG_WARNING, errno, &ctx, "cannot remove the stale socket %s: %m", path);
                }
                close(fd);
        }
}

