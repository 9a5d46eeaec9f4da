/* SPDX-License-Identifier: MIT */
/* tunneld: supervise one ssh per configured tunnel from one event loop. */
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <math.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "autossh_import.h"
#include "config.h"
#include "ctl.h"
#include "jump_config.h"
#include "keyscan.h"
#include "known_hosts.h"
#include "log.h"
#include "notify.h"
#include "process.h"
#include "runtime.h"
#include "ssh_argv.h"
#include "publish.h"
#include "supervisor.h"

#ifndef TUNNELD_VERSION
#define TUNNELD_VERSION "unknown"
#endif
#ifndef TUNNELD_CONFIG
#define TUNNELD_CONFIG "/etc/tunneld.conf"
#endif
#ifndef TUNNELD_USER
#define TUNNELD_USER "tunneld"          /* the shipped units' User= */
#endif

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: tunneld [OPTIONS]\n"
                "Supervise SSH tunnels: one ssh child per configured tunnel.\n\n"
                "  -c, --config FILE  configuration file (default " TUNNELD_CONFIG ")\n"
                "  -s, --control-socket PATH\n"
                "                     control socket, overriding control_socket of the file\n"
                "  -t, --check        validate the configuration and exit (0 if valid, 1 if not)\n"
                "  -v, --verbose      with --check: print each tunnel's ssh command line\n"
                "      --keyscan NAME fetch the host keys of tunnel NAME (and its jump hosts),\n"
                "                     without trusting them: their fingerprints to compare, and\n"
                "                     host_keys lines to paste (no daemon needed)\n"
                "      --check-as USER\n"
                "                     with --check or --keyscan as root: check (scan) as USER\n"
                "                     (default " TUNNELD_USER " if that user exists; root for root)\n"
                "  -d, --debug        log at debug level (ssh's debug lines included)\n"
                "      --import-autossh FILE...\n"
                "                     print the tunnels of autossh command lines and systemd units\n"
                "                     (FILE - for standard input) as a tunnels block; nothing runs\n"
                "      --allow-insecure-config\n"
                "                     read configuration files even if they are writable by group\n"
                "                     or others, or owned by someone other than root or this user\n"
                "  -h, --help         show this help\n"
                "  -V, --version      show the version\n\n"
                "Signals: HUP reloads the configuration, TERM/INT stop every tunnel and exit,\n"
                "USR1 restarts every running tunnel's ssh.\n");
}

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

static int check_config(const struct config *c, bool verbose)
{
        note_root_checks(c);
        printf("configuration OK: %zu tunnel%s", c->n_tunnels, c->n_tunnels == 1 ? "" : "s");
        if (config_enabled_count(c) != c->n_tunnels)
                printf(" (%zu enabled)", config_enabled_count(c));
        printf("\n");
        print_shared(c);
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

/* tunneld -t run as root checks files as root reads them: every key looks readable. The
 * service runs as TUNNELD_USER, so check as that user: in a child that has become it,
 * whose exit status is ours. CHECK_HERE: go on in this process (not root, or checking as
 * root on purpose, or no such user: then say which checks only root passed). */
#define CHECK_HERE (-1)
static int become_check_user(const char *user)
{
        const char *name = user ? user : TUNNELD_USER;
        struct passwd *pw;
        pid_t pid;
        int status;

        if (geteuid() != 0) {
                if (user)
                        fprintf(stderr, "tunneld: --check-as needs root; checking as uid %d\n", (int)geteuid());
                return CHECK_HERE;
        }
        pw = getpwnam(name);
        if (!pw || pw->pw_uid == 0) {
                if (user && !pw) {
                        fprintf(stderr, "tunneld: --check-as %s: no such user\n", user);
                        return 2;
                }
                checked_as_root = !user;
                return CHECK_HERE;
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
                return CHECK_HERE;
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return 1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

/* The control socket answers at the latest this long after start (seconds): requests wait
 * for the first load until then, so that one done by then is never seen half-way; after
 * it, a slow load is served as an empty set that says it is loading. */
#define ATTACH_GRACE 0.3

struct daemon {
        struct ev_loop *loop;
        struct supervisor *sup;
        struct publisher *pub;
        struct ctl_server *ctl;
        ev_signal sig_hup, sig_term, sig_int, sig_usr1;
        ev_timer attach;                /* ATTACH_GRACE after start */
        bool attached;                  /* the control socket serves the supervisor */
        bool failed;                    /* the configuration did not load: exit 1 */
};

static void attach(struct daemon *d)
{
        ev_timer_stop(d->loop, &d->attach);
        if (d->attached || !d->ctl)
                return;
        d->attached = true;
        ctl_server_attach(d->ctl, d->sup);
}

static void on_attach(struct ev_loop *loop, ev_timer *w, int revents)
{
        (void)loop;
        (void)revents;
        attach(w->data);
}

/* The load off the loop is done: publish (STATUS, READY once the tunnels launched) and
 * answer on the control socket, or stop, as a daemon that cannot start. */
static void on_loaded(struct supervisor *s, int r, void *userdata)
{
        struct daemon *d = userdata;

        if (r >= 0) {
                r = publisher_new(d->loop, s, &d->pub);
                if (r < 0)
                        log_error_errno(r, "cannot start: %m");
        }
        attach(d);
        if (r < 0) {
                d->failed = true;
                supervisor_shutdown(s);
        }
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
        struct daemon *d = w->data;

        (void)loop;
        (void)revents;
        switch (w->signum) {
        case SIGHUP:
                if (!supervisor_is_shutting_down(d->sup))
                        (void)supervisor_reload(d->sup);
                break;
        case SIGTERM:
        case SIGINT:
                if (supervisor_is_shutting_down(d->sup)) {
                        log_notice("already stopping; waiting for ssh children to exit");
                        break;
                }
                log_notice("received SIG%s: stopping every tunnel", sigabbrev_np(w->signum));
                notify_stopping("Stopping every tunnel…");
                supervisor_shutdown(d->sup);
                break;
        case SIGUSR1:
                if (!supervisor_is_shutting_down(d->sup)) {
                        log_notice("received SIGUSR1: restarting every running tunnel");
                        supervisor_restart_all(d->sup, "SIGUSR1");
                }
                break;
        }
}

int main(int argc, char *argv[])
{
        static const struct option options[] = {
                { "config",  required_argument, NULL, 'c' },
                { "control-socket", required_argument, NULL, 's' },
                { "check",   no_argument,       NULL, 't' },
                { "verbose", no_argument,       NULL, 'v' },
                { "debug",   no_argument,       NULL, 'd' },
                { "allow-insecure-config", no_argument, NULL, 'I' },
                { "check-as", required_argument, NULL, 'U' },
                { "import-autossh", no_argument, NULL, 'A' },
                { "keyscan", required_argument, NULL, 'K' },
                { "help",    no_argument,       NULL, 'h' },
                { "version", no_argument,       NULL, 'V' },
                {}
        };
        const char *path = TUNNELD_CONFIG;
        bool check = false, verbose = false, debug = false, import = false;
        const char *check_as = NULL, *keyscan = NULL;
        struct config_load_options opts = { .ask_ssh = CONFIG_SSH_LENIENT };
        struct config_errors errs = {0};
        struct config *config = NULL;
        struct daemon d = {0};
        char *runtime_dir = NULL;
        struct ev_loop *loop;
        double started = now_mono();
        int c, r;

        if (argc == 5 && strcmp(argv[1], KEYSCAN_NOTE) == 0)
                return keyscan_note_main(argv[2], argv[3], argv[4]);    /* ssh runs it during --keyscan */
        while ((c = getopt_long(argc, argv, "c:s:tvdhV", options, NULL)) >= 0) {
                switch (c) {
                case 'c': path = optarg; break;
                case 's':
                        if (validate_socket_path(optarg)) {
                                fprintf(stderr, "tunneld: --control-socket %s: %s\n", optarg, validate_socket_path(optarg));
                                return 2;
                        }
                        opts.control_socket = optarg;
                        break;
                case 't': check = true; break;
                case 'v': verbose = true; break;
                case 'd': debug = true; break;
                case 'I': opts.allow_insecure = true; break;
                case 'U': check_as = optarg; break;
                case 'A': import = true; break;
                case 'K': keyscan = optarg; break;
                case 'h': usage(stdout); return 0;
                case 'V': printf("tunneld %s\n", TUNNELD_VERSION); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (import)
                return autossh_import_main(argv + optind, stdout, stderr);
        if (optind < argc) {
                fprintf(stderr, "tunneld: unexpected argument '%s'\n", argv[optind]);
                usage(stderr);
                return 2;
        }

        if (check && keyscan) {
                fprintf(stderr, "tunneld: --keyscan and --check are two things: one at a time\n");
                return 2;
        }
        if (check || keyscan) {
                if (check)
                        opts.ask_ssh = CONFIG_SSH_STRICT;       /* -t: ssh must have judged every option */
                opts.keyscan = keyscan != NULL;
                /* the keys are fetched as the service connects: its user's ssh_config and known_hosts */
                r = become_check_user(check_as);
                if (r != CHECK_HERE)
                        return r;
        } else if (check_as) {
                fprintf(stderr, "tunneld: --check-as goes with --check or --keyscan\n");
                return 2;
        }
        {
                /* The daemon reads the file here without ssh: its globals, and every error but
                 * ssh's, before anything starts. ssh -G comes with the load off the loop, once
                 * the control socket answers (supervisor_new_loading). */
                struct config_load_options read = opts;

                if (!check && !keyscan)
                        read.ask_ssh = CONFIG_SSH_SKIP;
                r = config_load(path, &read, &config, &errs);
        }
        if (r < 0) {
                /* the daemon logs with <N> prefixes, and so does -t into the journal (the
                 * unit's ExecStartPre): "journalctl -p err" must show why it did not start */
                const char *err = log_stderr_is_journal() || (!check && !isatty(STDERR_FILENO)) ? "<3>" : "";

                for (size_t i = 0; i < errs.n; i++)
                        fprintf(stderr, "%s%s\n", err, errs.lines[i]);
                fprintf(stderr, "%stunneld: %s: %zu error%s, %s\n", err, path, errs.n, errs.n == 1 ? "" : "s",
                        check || keyscan ? "configuration invalid" : "not starting");
                config_errors_clear(&errs);
                return 1;
        }
        for (char **w = config->warnings; (check || keyscan) && w && *w; w++)
                fprintf(stderr, "%swarning: %s\n", log_stderr_is_journal() ? "<4>" : "", *w);
        if (check || keyscan) {
                r = check ? check_config(config, verbose) : keyscan_run(config, keyscan, stdout);
                config_free(config);
                return r;
        }

        config->load_options = opts;    /* the load off the loop, and every reload, ask ssh */
        log_open(config->log_target);
        log_set_max_level(config->log_level);
        if (debug)
                log_force_debug();
        (void)signal(SIGPIPE, SIG_IGN);
        {
                /* a stderr pipe per tunnel, a socket per tunnelctl client, a pipe per hook */
                unsigned long nofile = process_raise_nofile();
                size_t need = 3 * config->n_tunnels + 64;
                if (nofile && nofile < need)
                        log_warning("open file limit %lu is low for %zu tunnels (about %zu needed): "
                                    "raise LimitNOFILE=", nofile, config->n_tunnels, need);
        }

        loop = ev_default_loop(EVFLAG_AUTO | EVFLAG_SIGNALFD);
        if (!loop) {
                log_error("cannot create the event loop");
                config_free(config);
                return 1;
        }
        ev_signal_init(&d.sig_hup, on_signal, SIGHUP);
        ev_signal_init(&d.sig_term, on_signal, SIGTERM);
        ev_signal_init(&d.sig_int, on_signal, SIGINT);
        ev_signal_init(&d.sig_usr1, on_signal, SIGUSR1);
        d.sig_hup.data = d.sig_term.data = d.sig_int.data = d.sig_usr1.data = &d;
        ev_signal_start(loop, &d.sig_hup);
        ev_signal_start(loop, &d.sig_term);
        ev_signal_start(loop, &d.sig_int);
        ev_signal_start(loop, &d.sig_usr1);

        log_notice("tunneld %s starting: %zu tunnel%s from %s", TUNNELD_VERSION, config->n_tunnels,
                   config->n_tunnels == 1 ? "" : "s", path);
        for (char **w = config->warnings; w && *w; w++)
                log_warning("%s", *w);
        if (config->control_socket && strcmp(config->control_socket, "none") != 0) {
                r = ctl_server_new(loop, config->control_socket, config->control_group,
                                   config->control_world_readable, &d.ctl);
                if (r == -EADDRINUSE) {
                        /* another tunneld: starting a second set of ssh would fight it for every port */
                        config_free(config);
                        return 1;
                }
                /* other errors: tunnels still run; they matter more than tunnelctl */
        }
        d.loop = loop;
        r = runtime_dir_create(d.ctl ? config->control_socket : NULL, &runtime_dir);
        if (r >= 0)
                r = supervisor_new_loading(loop, config, runtime_dir, on_loaded, &d, &d.sup);
        if (r < 0) {
                log_error_errno(r, "cannot start: %m");
                ctl_server_free(d.ctl);
                runtime_dir_remove(runtime_dir);
                free(runtime_dir);
                config_free(config);    /* still ours */
                return 1;
        }
        ev_timer_init(&d.attach, on_attach, fmax(0., ATTACH_GRACE - (now_mono() - started)), 0.);
        d.attach.data = &d;
        ev_timer_start(loop, &d.attach);
        notify_watchdog_start(loop);

        ev_run(loop, 0);

        notify_watchdog_stop(loop);
        if (!d.failed)
                log_notice("every tunnel stopped; exiting");
        publisher_free(d.pub);
        supervisor_free(d.sup);
        runtime_dir_remove(runtime_dir);        /* while the socket's lock still makes it ours */
        free(runtime_dir);
        ctl_server_free(d.ctl);
        ev_loop_destroy(loop);
        return d.failed ? 1 : 0;
}
