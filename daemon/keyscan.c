/* SPDX-License-Identifier: MIT */
#include "keyscan.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jump_config.h"
#include "known_hosts.h"
#include "process.h"
#include "runtime.h"
#include "safe_path.h"
#include "ssh_output.h"
#include "util.h"

#define OUTPUT_MAX (64u << 10)
#define SCANNED_ALIAS "keyscan"         /* what accept-new files the key under */

/* One HostKeyAlgorithms list per kind of key: ssh fetches one key per connection. */
static const char *const algorithm_groups[] = {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521",
        "rsa-sha2-512,rsa-sha2-256",
};

struct target {
        struct tunnel_spec spec;        /* what ssh connects to, through spec.jump_host */
        char what[1100];                /* "jump host 127.0.0.1:2222", "destination db.example.org" */
        char entry[1100];               /* a jump host as jump_host_keys names it; "" for the destination */
        char **keys;                    /* "KEYTYPE BASE64" */
        char **fingerprints;
        double timeout;                 /* a scan's, seconds */
        bool timed_out;                 /* tunneld killed the last ssh at timeout */
};

/* argv without a shell, stdout and stderr into *ret_output, killed at timeout seconds
 * (*ret_timed_out). The exit status as waitpid gives it, or -errno. */
static int run_bounded(char **argv, double timeout, char **ret_output, bool *ret_timed_out)
{
        _cleanup_buf_ struct buf text = {0};
        double deadline = now_mono() + timeout;
        bool eof = false, exited = false;
        int out = -1, pidfd, status = 0, r;
        pid_t pid;

        *ret_timed_out = false;
        r = process_spawn(argv, NULL, true, &pid, &out);
        if (r < 0)
                return r;
        pidfd = pidfd_open(pid, 0);
        while (!eof || !exited) {
                struct pollfd p[2] = { { .fd = eof ? -1 : out, .events = POLLIN },
                                       { .fd = exited ? -1 : pidfd, .events = POLLIN } };
                double left = deadline - now_mono();

                if (left <= 0) {
                        process_kill(pid, SIGKILL);
                        *ret_timed_out = true;  /* said by the caller, as tunneld's, not ssh's */
                        break;
                }
                if (poll(p, 2, (int)(left * 1000) + 1) < 0 && errno != EINTR)
                        break;
                if (p[0].revents && !eof) {
                        char chunk[4096];
                        ssize_t n = read(out, chunk, sizeof(chunk));
                        if (n > 0 && text.len < OUTPUT_MAX)
                                buf_append(&text, chunk, (size_t)n);
                        else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                                eof = true;
                }
                if ((p[1].revents || (pidfd < 0 && eof)) && waitpid(pid, &status, pidfd < 0 ? 0 : WNOHANG) == pid)
                        exited = true;
        }
        if (!exited) {
                process_kill(pid, SIGKILL);
                (void)waitpid(pid, &status, 0);
        }
        close(out);
        if (pidfd >= 0)
                close(pidfd);
        if (!text.len)
                buf_puts(&text, "");
        r = buf_steal(&text, ret_output);
        return r < 0 ? r : status;
}

static int push2(char ***argv, const char *a, const char *b)
{
        int r = strv_push(argv, a);
        return r < 0 ? r : strv_push(argv, b);
}

/* ssh to the target that stops at the server's host key, before authentication: no
 * known_hosts at all and StrictHostKeyChecking=yes, so ssh always refuses the key and
 * disconnects before it sends a single authentication request (even "none", which ssh
 * tries first whatever PreferredAuthentications says, and which a server with empty
 * passwords accepts). The key itself reaches tunneld through KnownHostsCommand: ssh runs
 * this tunneld (without a shell) to note it in offered, and it answers nothing. */
static int scan_argv(const struct config *c, const struct target *t, const char *config_file, const char *offered,
                     const char *algorithms, char ***ret)
{
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *q_self = NULL, *q_offered = NULL, *note = NULL, *algs = NULL,
                            *timeout = NULL, *port = NULL;
        const struct tunnel_spec *s = &t->spec;
        char exe[4096];
        ssize_t n;
        int r;

        n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
                return n < 0 ? -errno : -ENOENT;
        exe[n] = '\0';
        if (strstr(exe, "${") || strstr(offered, "${"))
                return -EINVAL;         /* ssh would expand it from the environment */
        if (known_hosts_quote_path(exe, &q_self) < 0 || known_hosts_quote_path(offered, &q_offered) < 0 ||
            asprintf(&note, "KnownHostsCommand=%s " KEYSCAN_NOTE " %s %%t %%K", q_self, q_offered) < 0 ||
            asprintf(&algs, "HostKeyAlgorithms=%s", algorithms) < 0 ||
            asprintf(&timeout, "ConnectTimeout=%d", s->connect_timeout) < 0 || asprintf(&port, "%d", s->port) < 0)
                return -ENOMEM;
        if ((r = strv_push(&argv, c->ssh)) < 0 || (r = strv_push(&argv, "-N")) < 0 || (r = strv_push(&argv, "-T")) < 0 ||
            (config_file && (r = push2(&argv, "-F", config_file)) < 0))
                return r;
        /* ssh takes the first value it is given: these come before the tunnel's ssh_options */
        static const char *const fixed[] = {
                "BatchMode=yes", "ControlMaster=no", "ControlPath=none", "ClearAllForwardings=yes",
                "UserKnownHostsFile=/dev/null", "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes",
                "VerifyHostKeyDNS=no", "CheckHostIP=no", "UpdateHostKeys=no", "PreferredAuthentications=none",
                "LogLevel=ERROR",
        };
        for (size_t i = 0; i < ELEMENTSOF(fixed); i++)
                if ((r = push2(&argv, "-o", fixed[i])) < 0)
                        return r;
        if ((r = push2(&argv, "-o", note)) < 0 || (r = push2(&argv, "-o", algs)) < 0 ||
            (r = push2(&argv, "-o", timeout)) < 0 || (s->port > 0 && (r = push2(&argv, "-p", port)) < 0) ||
            (s->user && (r = push2(&argv, "-l", s->user)) < 0) ||
            (s->jump_host && (r = push2(&argv, "-J", s->jump_host)) < 0))
                return r;
        for (char **o = s->ssh_options; o && *o; o++)
                if ((r = push2(&argv, "-o", *o)) < 0)
                        return r;
        if ((r = push2(&argv, "--", s->host)) < 0)
                return r;
        *ret = argv;
        argv = NULL;
        return 0;
}

/* tunneld --keyscan-note FILE TYPE KEY, run by ssh as KnownHostsCommand: append "TYPE KEY"
 * to FILE (made empty by the scan; never created here, never through a link) and print
 * nothing, so that ssh knows no key and stops. */
int keyscan_note_main(const char *file, const char *type, const char *key)
{
        size_t tl = strspn(type, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@.-_");
        size_t kl = strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=");
        _cleanup_free_ char *line = NULL;
        _cleanup_close_ int fd = -1;
        int n;

        if (!tl || type[tl] || tl > 64 || !kl || key[kl] || kl > 16384)
                return 0;       /* not a key as ssh gives it: nothing to note */
        n = asprintf(&line, "%s %s\n", type, key);
        if (n < 0)
                return 1;
        fd = open(file, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || write(fd, line, (size_t)n) != n)
                return 1;
        return 0;
}

/* The keys keyscan_note_main() noted: "TYPE BASE64" lines. */
static int take_offered(const char *path, char ***keys)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        char line[16384 + 128];

        if (!f)
                return 0;
        while (fgets(line, sizeof(line), f)) {
                bool seen = false;

                line[strcspn(line, "\n")] = '\0';
                if (!strchr(line, ' '))
                        continue;
                for (char **k = *keys; k && *k; k++)
                        seen = seen || strcmp(*k, line) == 0;
                if (!seen && strv_push(keys, line) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* "256 SHA256:… (ED25519)" from ssh-keygen -lf. */
static int fingerprint(const char *keygen, const char *dir, const char *key, char **ret)
{
        _cleanup_free_ char *path = NULL, *text = NULL, *output = NULL;
        _cleanup_strv_free_ char **argv = NULL;
        bool timed_out;
        int r;

        if (asprintf(&path, "%s/key.pub", dir) < 0 || asprintf(&text, "%s\n", key) < 0)
                return -ENOMEM;
        r = write_file_atomic(path, text, 0600);
        if (r < 0)
                return r;
        if ((r = strv_push(&argv, keygen)) < 0 || (r = push2(&argv, "-l", "-E")) < 0 ||
            (r = push2(&argv, "sha256", "-f")) < 0 || (r = strv_push(&argv, path)) < 0)
                return r;
        r = run_bounded(argv, 10, &output, &timed_out);
        if (r < 0)
                return r;
        output[strcspn(output, "\n")] = '\0';
        char *nc = strstr(output, " no comment (");    /* "256 SHA256:… no comment (ED25519)" */
        if (nc)
                memmove(nc, nc + 11, strlen(nc + 11) + 1);
        if (!WIFEXITED(r) || WEXITSTATUS(r) != 0 || !strstr(output, "SHA256:")) {
                free(output);
                output = strdup("(ssh-keygen -lf could not tell its fingerprint)");
                if (!output)
                        return -ENOMEM;
        }
        *ret = output;
        output = NULL;
        return 0;
}

/* A host behind a jump host is reached only through jump hosts checked as the tunnel
 * checks them: the jump hosts' file of jump_config.h, with the tunnel's jump_host_keys. */
static int write_jump_files(const struct target *t, const char *dir, char **ret_config)
{
        _cleanup_free_ char *known = NULL, *known_path = NULL, *config = NULL, *config_path = NULL;
        int r;

        *ret_config = NULL;
        if (!t->spec.jump_host || strcmp(t->spec.jump_host, "none") == 0)
                return 0;
        if (asprintf(&known_path, "%s/jump.known_hosts", dir) < 0 || asprintf(&config_path, "%s/ssh_config", dir) < 0)
                return -ENOMEM;
        if ((r = known_hosts_render(&t->spec, &known)) < 0 ||
            (known && (r = write_file_atomic(known_path, known, 0600)) < 0) ||
            (r = jump_config_render(&t->spec, known ? known_path : NULL, &config)) < 0 ||
            (config && (r = write_file_atomic(config_path, config, 0600)) < 0))
                return r;
        if (config) {
                *ret_config = config_path;
                config_path = NULL;
        }
        return 0;
}

/* Fetch t's keys; on failure *ret_error says what ssh said (and t->timed_out whether
 * tunneld killed it at t->timeout). */
static int scan_target(const struct config *c, const char *keygen, struct target *t, const char *dir, size_t hops,
                       char **ret_error)
{
        _cleanup_free_ char *config = NULL, *offered = NULL, *failed = NULL;
        int r;

        *ret_error = NULL;
        t->timeout = (double)t->spec.connect_timeout * (double)(hops + 1) + 10;
        if (asprintf(&offered, "%s/offered", dir) < 0)
                return -ENOMEM;
        r = write_jump_files(t, dir, &config);
        if (r < 0)
                return r;
        for (size_t g = 0; g < ELEMENTSOF(algorithm_groups) && !failed; g++) {
                _cleanup_strv_free_ char **argv = NULL;
                _cleanup_free_ char *output = NULL;
                size_t before = strv_length(t->keys);

                r = write_file_atomic(offered, "", 0600);
                if (r >= 0)
                        r = scan_argv(c, t, config ? config : t->spec.ssh_config_file, offered, algorithm_groups[g],
                                      &argv);
                if (r >= 0)
                        r = run_bounded(argv, t->timeout, &output, &t->timed_out);
                if (r >= 0)
                        r = take_offered(offered, &t->keys);
                if (r < 0)
                        return r;
                /* a kind of key the server does not have; anything else ends the scan */
                if (strv_length(t->keys) == before && (t->timed_out || !strstr(output, "no matching host key type"))) {
                        failed = output;
                        output = NULL;
                }
        }
        (void)unlink(offered);
        if (!t->keys) {
                *ret_error = failed ? failed : strdup("the server offered no ssh-ed25519, ECDSA or RSA host key");
                failed = NULL;
                return *ret_error ? 0 : -ENOMEM;
        }
        for (char **k = t->keys; *k; k++) {
                _cleanup_free_ char *fp = NULL;
                if ((r = fingerprint(keygen, dir, *k, &fp)) < 0 || (r = strv_push(&t->fingerprints, fp)) < 0)
                        return r;
        }
        return 0;
}

/* Hop i of jump_host as a target: reached through hops 0..i-1, with the tunnel's settings
 * for jump hosts (no destination options). */
static int hop_target(const struct tunnel_spec *s, const char *hop, size_t len, struct target *t)
{
        char host[1025];
        const char *at = memchr(hop, '@', len), *user = hop;
        int port, r;

        if (!validate_jump_hop_split(hop, len, host, sizeof(host), &port) || port < 0)
                return -EINVAL;
        r = tunnel_spec_copy(s, &t->spec);
        if (r < 0)
                return r;
        free(t->spec.host);
        free(t->spec.user);
        free(t->spec.jump_host);
        strv_free(t->spec.host_keys);
        t->spec.host_keys = NULL;
        t->spec.jump_host = hop > s->jump_host ? strndup(s->jump_host, (size_t)(hop - s->jump_host - 1)) : NULL;
        t->spec.host = strdup(host);
        if (strncmp(user, "ssh://", 6) == 0)
                user += 6;
        t->spec.user = at ? strndup(user, (size_t)(at - user)) : NULL;
        t->spec.port = port;
        if (!t->spec.host || (at && !t->spec.user) || (hop > s->jump_host && !t->spec.jump_host))
                return -ENOMEM;
        if (t->spec.ssh_options) {
                size_t k = 0;
                for (size_t i = 0; t->spec.ssh_options[i]; i++) {
                        if (jump_config_option_is_destination(t->spec.ssh_options[i]))
                                free(t->spec.ssh_options[i]);
                        else
                                t->spec.ssh_options[k++] = t->spec.ssh_options[i];
                }
                t->spec.ssh_options[k] = NULL;
        }
        if (!port)
                snprintf(t->entry, sizeof(t->entry), "%s", host);
        else if (strchr(host, ':'))
                snprintf(t->entry, sizeof(t->entry), "[%s]:%d", host, port);
        else
                snprintf(t->entry, sizeof(t->entry), "%s:%d", host, port);
        snprintf(t->what, sizeof(t->what), "jump host %s (\"%.*s\" of jump_host)", t->entry, (int)len, hop);
        return 0;
}

static void target_done(struct target *t)
{
        tunnel_spec_done(&t->spec);
        strv_free(t->keys);
        strv_free(t->fingerprints);
}

/* The jump hosts in order, then the destination. */
static int make_targets(const struct tunnel_spec *s, struct target **ret, size_t *ret_n)
{
        size_t n = 0, max = 2;
        struct target *v;
        int r = 0;

        for (const char *p = s->jump_host; p && *p; p++)
                max += *p == ',';
        v = calloc(max, sizeof(*v));
        if (!v)
                return -ENOMEM;
        for (const char *h = s->jump_host && strcmp(s->jump_host, "none") != 0 ? s->jump_host : ""; *h && r >= 0;) {
                size_t len = strcspn(h, ",");
                r = hop_target(s, h, len, &v[n++]);
                h += len + (h[len] == ',');
        }
        if (r >= 0 && (r = tunnel_spec_copy(s, &v[n].spec)) >= 0) {
                char name[VALUE_MAX_LEN + 16];

                strv_free(v[n].spec.host_keys);
                v[n].spec.host_keys = NULL;
                known_hosts_pattern(s->host, s->port, name, sizeof(name));
                snprintf(v[n].what, sizeof(v[n].what), "destination %s%s", name,
                         n ? ", through the jump host" : "");
                n++;
        }
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        target_done(&v[i]);
                free(v);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

static void print_paste(FILE *out, const struct target *v, size_t n, const struct tunnel_spec *s, size_t alt)
{
        char where[160];

        bool any_jump = false;

        fprintf(out, "\nCompare each fingerprint with the server's own before you paste anything: on that server\n"
                     "(at its console, or over a connection you already trust) run\n"
                     "    ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\n"
                     "(ssh_host_ecdsa_key.pub, ssh_host_rsa_key.pub for the other types). Only if they match,\n"
                     "put these lines in %s (%s:%d), then check and apply:\n"
                     "tunneld -t, then systemctl reload tunneld.\n\n",
                     alt ? (snprintf(where, sizeof(where), "alternatives[%zu] of the tunnel \"%s\"", alt, s->name), where)
                         : (snprintf(where, sizeof(where), "the tunnel \"%s\"", s->name), where),
                     s->source_file, s->source_line);
        for (size_t i = 0; i < n; i++)
                any_jump = any_jump || (v[i].entry[0] && v[i].keys);
        if (any_jump) {
                size_t printed = 0;
                fprintf(out, "    jump_host_keys = (");
                for (size_t i = 0; i < n; i++)
                        for (char **k = v[i].entry[0] ? v[i].keys : NULL; k && *k; k++)
                                fprintf(out, "%s \"%s %s\"", printed++ ? "," : "", v[i].entry, *k);
                fprintf(out, " );\n");
        }
        if (!v[n - 1].entry[0] && v[n - 1].keys) {
                fprintf(out, "    host_keys = (");
                for (char **k = v[n - 1].keys; *k; k++)
                        fprintf(out, "%s \"%s\"", k == v[n - 1].keys ? "" : ",", *k);
                fprintf(out, " );\n");
        }
}

static void say_failure(const struct target *t, size_t i, const char *error, const char *name)
{
        bool hop_key = false;

        for (const char *l = error; *l; l += strcspn(l, "\n"), l += *l == '\n') {
                char line[1024];
                enum failure_class class;

                snprintf(line, sizeof(line), "%.*s", (int)strcspn(l, "\n"), l);
                if (*line)
                        fprintf(stderr, "    ssh: %s\n", line);
                hop_key = hop_key || (i > 0 && ssh_line_parse(line, &class) == SSH_LINE_FAILURE &&
                                      class == FAILURE_HOST_KEY);
        }
        if (t->timed_out)
                fprintf(stderr, "tunneld: ssh did not finish within %g s (connect_timeout per hop, plus 10 s): "
                                "killed it\n", t->timeout);
        if (hop_key)
                fprintf(stderr, "tunneld: the jump host's own key is not trusted yet, and keys behind a jump host are "
                                "fetched only through a jump host whose key is checked: compare and pin the "
                                "jump_host_keys above, then run tunneld --keyscan %s again\n", name);
        else
                fprintf(stderr, "tunneld: could not fetch the key of the %s\n", t->what);
}

/* One destination of the tunnel (alt 0: its own, else an alternative's effective spec). */
static int scan_destination(const struct config *c, const char *keygen, const char *dir, const char *name,
                            const struct tunnel_spec *s, size_t alt, FILE *out)
{
        struct target *v = NULL;
        size_t n = 0, done = 0;
        int r, status = 0;

        if (alt > 0)
                fprintf(out, "%s%s: alternatives[%zu] (%s):\n", "\n", name, alt, s->host);
        r = make_targets(s, &v, &n);
        for (; r >= 0 && done < n; done++) {
                _cleanup_free_ char *error = NULL;

                r = scan_target(c, keygen, &v[done], dir, done, &error);
                if (r < 0)
                        break;
                if (error) {
                        say_failure(&v[done], done, error, name);
                        status = 1;
                        break;
                }
                fprintf(out, "%s: keys of the %s, not trusted yet:\n", name, v[done].what);
                for (char **f = v[done].fingerprints; f && *f; f++)
                        fprintf(out, "    %s\n", *f);
        }
        if (r < 0) {
                fprintf(stderr, "tunneld: --keyscan %s: %s\n", name, strerror(-r));
                status = 1;
        }
        if (done > 0 || (n && v[0].keys))
                print_paste(out, v, done < n ? done + 1 : n, s, alt);
        for (size_t i = 0; i < n; i++)
                target_done(&v[i]);
        free(v);
        return status;
}

int keyscan_run(const struct config *c, const char *name, FILE *out)
{
        _cleanup_free_ char *keygen = NULL;
        char why[4096 + 160];
        const struct tunnel_spec *s = NULL;
        char dir[] = "/tmp/tunneld-keyscan.XXXXXX";
        int r, status = 0;

        for (size_t i = 0; i < c->n_tunnels && !s; i++)
                if (strcmp(c->tunnels[i].name, name) == 0)
                        s = &c->tunnels[i];
        if (!s) {
                fprintf(stderr, "tunneld: --keyscan %s: no tunnel of that name in %s\n", name, c->path);
                return 1;
        }
        /* ssh-keygen, like ssh (config_check.c), only as sshd's rule would run it */
        r = safe_path_find_program("ssh-keygen", &keygen);
        if (r == -ENOENT) {
                fprintf(stderr, "tunneld: ssh-keygen is not in PATH: it tells the keys' fingerprints\n");
                return 1;
        }
        if (r >= 0 && !c->load_options.allow_insecure && safe_path_check(keygen, SAFE_PATH_FILE, why, sizeof(why)) < 0) {
                fprintf(stderr, "tunneld: %s: %s, or run tunneld with --allow-insecure-config\n", keygen, why);
                return 1;
        }
        if (r >= 0 && !mkdtemp(dir)) {
                fprintf(stderr, "tunneld: cannot create a directory for the keys: %s\n", strerror(errno));
                return 1;
        }
        if (r < 0) {
                fprintf(stderr, "tunneld: --keyscan %s: %s\n", name, strerror(-r));
                return 1;
        }
        /* its own destination, then each alternative's */
        for (size_t k = 0; k <= s->alts.n; k++) {
                struct tunnel_spec eff;

                if (tunnel_spec_alternative(s, k, &eff) < 0) {
                        fprintf(stderr, "tunneld: --keyscan %s: %s\n", name, strerror(ENOMEM));
                        status = 1;
                        break;
                }
                status |= scan_destination(c, keygen, dir, name, &eff, k, out);
                tunnel_spec_done(&eff);
        }
        runtime_dir_remove(dir);
        return status;
}
