/* SPDX-License-Identifier: MIT */
/* check_report: what tunneld -t says of a configuration that loaded (the groups of shared
 * connections; with -v every ssh command line and the files written for it), and -t as the
 * service's user. */
#include "check_report.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jump_config.h"
#include "known_hosts.h"
#include "ssh_argv.h"
#include "util.h"

static bool checked_as_root;            /* -t as root, for want of the service's user */

/* Say which checks only passed because root ran them. */
static void note_root_checks(const struct config *c)
{
        for (size_t i = 0; checked_as_root && i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];
                if (t->enabled && (t->identity_file || t->ssh_config_file || t->on_state_change)) {
                        fprintf(stderr, "tunneld: checked as root (there is no user %s): keys, ssh config files "
                                        "and hooks are readable by root; to check them as the service's user: "
                                        "tunneld -t --check-as USER\n", TUNNELD_USER);
                        return;
                }
        }
}

/* share_connection: which tunnels will ride one ssh (the first names it, as tunneld does). */
static void print_shared(const struct config *c)
{
        _cleanup_free_ bool *done = calloc(c->n_tunnels + 1, sizeof(bool));

        for (size_t i = 0; done && i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];
                size_t n = 1;

                if (done[i] || !t->share_connection || !t->enabled)
                        continue;
                printf("shared connection ~%s: %s", t->name, t->name);
                for (size_t j = i + 1; j < c->n_tunnels; j++)
                        if (!done[j] && c->tunnels[j].enabled && tunnel_spec_shares_connection(t, &c->tunnels[j])) {
                                done[j] = true;
                                printf(", %s", c->tunnels[j].name);
                                n++;
                        }
                printf(n == 1 ? " (alone: no other tunnel has the same connection and supervision settings)\n"
                              : " (one ssh to %s%s%s)\n", t->user ? t->user : "", t->user ? "@" : "", t->host);
        }
}

/* alternatives: the destinations in the order they are tried; with -v each alternative's
 * ssh command line (its files are NAME.altI.known_hosts and NAME.altI.ssh_config). */
static int print_alternatives(const struct config *c, bool verbose, const char *dir, const char *d)
{
        for (size_t i = 0; i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];

                if (!t->enabled || t->alts.n == 0)
                        continue;
                printf("%s: destinations, tried in this order:", t->name);
                for (size_t k = 0; k <= t->alts.n; k++) {
                        int port = tunnel_spec_alt_port(t, k);

                        printf(" %zu %s", k, tunnel_spec_alt_host(t, k));
                        if (port > 0)
                                printf(":%d", port);
                        printf(k == 0 ? " (its own)%s" : "%s", k < t->alts.n ? "," : "\n");
                }
                for (size_t k = 1; verbose && k <= t->alts.n; k++) {
                        _cleanup_strv_free_ char **argv = NULL;
                        _cleanup_free_ char *line = NULL, *known = NULL, *known_path = NULL, *jump = NULL,
                                            *jump_path = NULL, *base = NULL, *control = NULL, *runtime = NULL;
                        struct tunnel_spec eff;
                        int r = tunnel_spec_alternative(t, k, &eff);

                        if (r < 0)
                                return r;
                        if ((r = known_hosts_render(&eff, &known)) >= 0 && known &&
                            asprintf(&known_path, "%s%s/%s.alt%zu.known_hosts", dir, d, t->name, k) < 0)
                                r = -ENOMEM;
                        if (r >= 0 && (r = jump_config_render(&eff, known_path, &jump)) >= 0 && jump &&
                            asprintf(&jump_path, "%s%s/%s.alt%zu.ssh_config", dir, d, t->name, k) < 0)
                                r = -ENOMEM;
                        if (r >= 0 && asprintf(&runtime, "%s%s", dir, d) < 0)
                                r = -ENOMEM;
                        if (r >= 0 && ((r = ssh_control_base(runtime, t->name, &base)) < 0 ||
                                       asprintf(&control, "%s0", base) < 0 ||
                                       ssh_argv_build(&eff, c->ssh, jump_path, known_path, control, &argv) < 0 ||
                                       shell_quote_argv(argv, &line) < 0))
                                r = r < 0 ? r : -ENOMEM;
                        tunnel_spec_done(&eff);
                        if (r < 0)
                                return r;
                        printf("%s alternative %zu: %s\n", t->name, k, line);
                }
        }
        return 0;
}

/* -t -v: what tunneld asks the master for, over its control socket. */
static void print_forwards(const struct tunnel_spec *t)
{
        static const struct { const char *flag; char *const *(*list)(const struct tunnel_spec *s); } kinds[] = {
                { "-L", tunnel_spec_local_forwards },
                { "-R", tunnel_spec_remote_forwards },
                { "-D", tunnel_spec_dynamic_forwards },
        };
        const char *sep = ": opened over ssh's control socket: ";

        for (size_t k = 0; k < ELEMENTSOF(kinds); k++)
                for (char *const *f = kinds[k].list(t); f && *f; f++) {
                        printf("%s%s%s %s", sep == NULL ? "" : t->name, sep ? sep : " ", kinds[k].flag, *f);
                        sep = NULL;
                }
        if (!sep)
                printf("\n");
}

/* -t -v: the ssh that will run for tunnel i: its own connection's, or the shared
 * connection's (printed at its first tunnel, named as tunneld names it). */
static int print_argv(const struct config *c, size_t i, const char *dir, const char *d, const char *jump_path,
                      const char *known_hosts_path)
{
        const struct tunnel_spec *t = &c->tunnels[i];
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *line = NULL, *runtime = NULL, *base = NULL, *control = NULL, *carrier = NULL;
        size_t first = i;

        for (size_t j = 0; t->share_connection && t->enabled && j < i && first == i; j++)
                if (c->tunnels[j].enabled && tunnel_spec_shares_connection(&c->tunnels[j], t))
                        first = j;
        if (first < i) {
                printf("%s: rides the shared connection ~%s (above)\n", t->name, c->tunnels[first].name);
                print_forwards(t);
                return 0;
        }
        if (t->share_connection && asprintf(&carrier, "~%s", t->name) < 0)
                return -ENOMEM;
        /* a runtime directory too long for ssh's control sockets: they go in a short one */
        if ((strlen(dir) + strlen(d) + 23 > SSH_CONTROL_PATH_MAX ? asprintf(&runtime, "/tmp/tunneld-mux.XXXXXX")
                                                                 : asprintf(&runtime, "%s%s", dir, d)) < 0 ||
            ssh_control_base(runtime, carrier ? carrier : t->name, &base) < 0 ||
            asprintf(&control, "%s0", base) < 0 ||
            ssh_argv_build(t, c->ssh, jump_path, known_hosts_path, control, &argv) < 0)
                return -ENOMEM;
        if (shell_quote_argv(argv, &line) < 0)
                return -ENOMEM;
        if (carrier)
                printf("%s (the shared connection of %s): %s\n%s: rides it\n", carrier, t->name, line, t->name);
        else
                printf("%s%s: %s\n", t->name, t->enabled ? "" : " (disabled)", line);
        print_forwards(t);
        return 0;
}

int check_report_print(const struct config *c, bool verbose)
{
        note_root_checks(c);
        printf("configuration OK: %zu tunnel%s", c->n_tunnels, c->n_tunnels == 1 ? "" : "s");
        if (config_enabled_count(c) != c->n_tunnels)
                printf(" (%zu enabled)", config_enabled_count(c));
        printf("\n");
        print_shared(c);
        {
                bool socket = c->control_socket && strcmp(c->control_socket, "none") != 0;

                if (print_alternatives(c, verbose, socket ? c->control_socket : "RUNTIME_DIR", socket ? ".d" : "") < 0)
                        return 1;
        }
        for (size_t i = 0; verbose && i < c->n_tunnels; i++) {
                _cleanup_free_ char *jump_config = NULL, *jump_path = NULL;
                _cleanup_free_ char *known_hosts = NULL, *known_hosts_path = NULL;
                bool socket = c->control_socket && strcmp(c->control_socket, "none") != 0;
                const char *dir = socket ? c->control_socket : "RUNTIME_DIR", *d = socket ? ".d" : "";

                if (known_hosts_render(&c->tunnels[i], &known_hosts) < 0 ||
                    (known_hosts &&
                     asprintf(&known_hosts_path, "%s%s/%s.known_hosts", dir, d, c->tunnels[i].name) < 0) ||
                    jump_config_render(&c->tunnels[i], known_hosts_path, &jump_config) < 0 ||
                    (jump_config && asprintf(&jump_path, "%s%s/%s.ssh_config", dir, d, c->tunnels[i].name) < 0))
                        return 1;
                if (print_argv(c, i, dir, d, jump_path, known_hosts_path) < 0)
                        return 1;
                if (jump_config)
                        printf("%s: %s, written at every start:\n%s", c->tunnels[i].name, jump_path, jump_config);
                if (known_hosts)
                        printf("%s: %s, written at every start:\n%s", c->tunnels[i].name, known_hosts_path, known_hosts);
        }
        return 0;
}

int check_report_become_user(const char *user)
{
        const char *name = user ? user : TUNNELD_USER;
        struct passwd *pw;
        pid_t pid;
        int status;

        if (geteuid() != 0) {
                if (user)
                        fprintf(stderr, "tunneld: --check-as needs root; checking as uid %d\n", (int)geteuid());
                return CHECK_REPORT_HERE;
        }
        pw = getpwnam(name);
        if (!pw || pw->pw_uid == 0) {
                if (user && !pw) {
                        fprintf(stderr, "tunneld: --check-as %s: no such user\n", user);
                        return 2;
                }
                checked_as_root = !user;
                return CHECK_REPORT_HERE;
        }
        fflush(stdout);
        pid = fork();
        if (pid < 0) {
                fprintf(stderr, "tunneld: cannot fork to check as %s: %s\n", name, strerror(errno));
                return 1;
        }
        if (pid == 0) {
                if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0 ||
                    setuid(0) == 0) {
                        fprintf(stderr, "tunneld: cannot become %s to check as it: %s\n", name, strerror(errno));
                        _exit(1);
                }
                (void)setenv("HOME", pw->pw_dir, 1);
                (void)setenv("USER", pw->pw_name, 1);
                (void)setenv("LOGNAME", pw->pw_name, 1);
                fprintf(stderr, "tunneld: checking as %s (uid %d), as the service reads the files\n", pw->pw_name,
                        (int)pw->pw_uid);
                return CHECK_REPORT_HERE;
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return 1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
