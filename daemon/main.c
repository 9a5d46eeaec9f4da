/* SPDX-License-Identifier: MIT */
/* tunneld: supervise one ssh per configured tunnel from one event loop. */
#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h>

#include "autossh_import.h"
#include "check_report.h"
#include "config.h"
#include "ctl.h"
#include "keyscan.h"
#include "log.h"
#include "notify.h"
#include "process.h"
#include "runtime.h"
#include "publish.h"
#include "supervisor.h"

#ifndef TUNNELD_VERSION
#define TUNNELD_VERSION "unknown"
#endif
#ifndef TUNNELD_CONFIG
#define TUNNELD_CONFIG "/etc/tunneld.conf"
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
                r = check_report_become_user(check_as);
                if (r != CHECK_REPORT_HERE)
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
                r = check ? check_report_print(config, verbose) : keyscan_run(config, keyscan, stdout);
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
