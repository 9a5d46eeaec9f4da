/* SPDX-License-Identifier: MIT */
/* conn_run: one run of a connection: what its ssh is started with, the spawn (past the
 * start gate), the master's news, and the end of the run judged by policy.h and carried
 * out (backoff, a restart, failed). */
#include "conn_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jump_config.h"
#include "known_hosts.h"
#include "ssh_argv.h"

/* ---- what ssh is started with ---- */

void conn_setup_done(struct conn_setup *s)
{
        free(s->ssh);
        strv_free(s->argv);
        free(s->jump_config);
        free(s->jump_config_path);
        free(s->known_hosts);
        free(s->known_hosts_path);
        free(s->control_base);
        *s = (struct conn_setup){0};
}

/* RUNTIME_DIR/NAME.known_hosts and RUNTIME_DIR/NAME.ssh_config (an alternative's
 * NAME.altI.…), written before every start. */
int conn_setup_new(const struct conn *c, const struct tunnel_spec *spec, const char *ssh, size_t alt,
                   struct conn_setup *ret)
{
        const char *dir = c->ctx->runtime_dir ? c->ctx->runtime_dir : "/tmp";
        struct conn_setup s = { .ssh = strdup(ssh ? ssh : "ssh") };
        _cleanup_free_ char *control = NULL;
        char tag[32] = "";
        int r = s.ssh ? 0 : -ENOMEM;

        if (alt > 0)
                snprintf(tag, sizeof(tag), ".alt%zu", alt);
        if (r >= 0)
                r = known_hosts_render(spec, &s.known_hosts);
        if (r >= 0 && s.known_hosts && asprintf(&s.known_hosts_path, "%s/%s%s.known_hosts", dir, c->name, tag) < 0) {
                s.known_hosts_path = NULL;
                r = -ENOMEM;
        }
        if (r >= 0)
                r = jump_config_render(spec, s.known_hosts_path, &s.jump_config);
        if (r >= 0 && s.jump_config && asprintf(&s.jump_config_path, "%s/%s%s.ssh_config", dir, c->name, tag) < 0) {
                s.jump_config_path = NULL;
                r = -ENOMEM;
        }
        if (r >= 0)
                r = ssh_control_base(c->ctx->control_dir ? c->ctx->control_dir : dir, c->name, &s.control_base);
        if (r >= 0 && asprintf(&control, "%s0", s.control_base) < 0) {
                control = NULL;
                r = -ENOMEM;
        }
        if (r >= 0)
                r = ssh_argv_build(spec, s.ssh, s.jump_config_path, s.known_hosts_path, control, &s.argv);
        if (r < 0) {
                conn_setup_done(&s);
                return r;
        }
        *ret = s;
        return 0;
}

void conn_remove_files(const struct conn *c)
{
        if (c->setup.jump_config_path)
                (void)unlink(c->setup.jump_config_path);
        if (c->setup.known_hosts_path)
                (void)unlink(c->setup.known_hosts_path);
        conn_alts_remove_files(c->alts, 1);
}

/* ssh runs ProxyJump and ProxyCommand through $SHELL; under systemd with User=tunneld
 * that is the user's login shell, /usr/sbin/nologin, and every jump host fails without a
 * word. A shell /etc/shells does not list is replaced by /bin/sh. */
static char **ssh_environment(void)
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

static int write_one(const struct conn *c, const char *path, const char *text, const char *what)
{
        int r;

        if (!text)
                return 0;
        r = write_file_atomic(path, text, 0600);
        if (r < 0) {
                struct log_ctx ctx = conn_log_ctx(c);
                log_full_errno(LOG_ERR, r, &ctx, "cannot write %s (%s): %m", path, what);
        }
        return r;
}

/* No socket left in the way of the master's (one left behind makes ssh run without
 * multiplexing: "already exists"), and a path ssh can bind. */
static int prepare_control(const struct conn *c, const char *path)
{
        struct log_ctx ctx = conn_log_ctx(c);

        if (strlen(path) > SSH_CONTROL_PATH_MAX) {
                log_full(LOG_ERR, &ctx, "the control socket %s is %zu bytes long, ssh allows %d", path, strlen(path),
                         SSH_CONTROL_PATH_MAX);
                return -ENAMETOOLONG;
        }
        if (unlink(path) < 0 && errno != ENOENT)
                return log_full_errno(LOG_ERR, errno, &ctx, "cannot remove %s: %m", path);
        return 0;
}

/* This run's argv: the setup's, its ControlPath this generation's. */
static int run_argv(const struct conn *c, const char *control, char ***ret)
{
        _cleanup_strv_free_ char **argv = NULL;
        int r = strv_copy(conn_alt_setup(c, c->run.alt)->argv, &argv);

        if (r < 0)
                return r;
        for (char **a = argv; *a; a++)
                if (strncmp(*a, "ControlPath=", 12) == 0) {
                        char *v;

                        r = ssh_control_path_option(control, &v);
                        if (r < 0)
                                return r;
                        free(*a);
                        *a = v;
                        *ret = argv;
                        argv = NULL;
                        return 0;
                }
        return -EINVAL;
}

static int start_master(struct conn *c)
{
        const struct conn_setup *setup = conn_alt_setup(c, c->run.alt);
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *control = NULL;
        struct master_params p;
        int r;

        c->gen = conn_handover_free_gen(c);
        if (asprintf(&control, "%s%d", c->setup.control_base, c->gen) < 0) {
                control = NULL;
                return -ENOMEM;
        }
        if ((r = prepare_control(c, control)) < 0)
                return r;
        if ((r = write_one(c, setup->jump_config_path, setup->jump_config, "the jump host's ssh settings")) < 0 ||
            (r = write_one(c, setup->known_hosts_path, setup->known_hosts, "the pinned host keys")) < 0)
                return r;
        if ((r = run_argv(c, control, &argv)) < 0)
                return r;
        p = (struct master_params){
                .argv = argv,
                .envp = ssh_environment(),
                .control_path = control,
                .watch = c->ctx->watch,
                .hops = jump_hop_count(conn_alt_spec(c, c->run.alt)->jump_host),
                .log_tunnel = c->shared ? NULL : c->name,
                .log_connection = c->name,
        };
        r = master_spawn(c->ctx->loop, &p, &conn_master_ops, c, &c->master);
        if (r < 0) {
                struct log_ctx ctx = conn_log_ctx(c);
                ctx.failure = failure_class_to_string(FAILURE_EXEC);
                log_full_errno(LOG_ERR, r, &ctx, "cannot start ssh: %m");
        }
        if (r >= 0 && c->flap.flapping)
                master_set_quiet(c->master, true);
        return r;
}

static void reset_run(struct conn *c)
{
        c->run = (struct conn_runstate){ .kill_class = FAILURE_NONE, .alt = conn_alt_target(c) };
}

/* A QUEUED connection's start judged failed without running ssh: a run like the one it
 * waited for, which ended with the same credentials just now (its exit, no pid, no time). */
void conn_fail_unstarted(struct conn *c, const struct conn_run *like, enum failure_class class, const char *why)
{
        struct conn_run run = { .valid = true, .exit_status = 255, .failure = class, .ended_at = now_mono() };

        if (c->state != CONN_QUEUED)
                return;
        if (like && like->valid && like->failure == class) {
                run.exit_status = like->exit_status;
                run.exit_signal = like->exit_signal;
                run.failure_on_proxy = like->failure_on_proxy;
        }
        reset_run(c);
        c->run.not_started = why;
        conn_finish_run(c, &run);
        c->run.not_started = NULL;
}

void conn_spawn(struct conn *c, const struct conn_run *run, const char *what, const char *next)
{
        const struct tunnel_spec *dest = conn_alt_spec(c, conn_alt_target(c));
        double deadline = conn_start_deadline(dest), slot = conn_slot_time(dest);
        /* a run that ended on its own is a warning, but one that was no failure (the
         * server's idle limit: conn_idle.c) */
        int prio = run && !run->requested && run->failure != FAILURE_NONE ? LOG_WARNING : LOG_INFO;
        int r;

        ev_timer_stop(c->ctx->loop, &c->retry_timer);
        c->run.retry_at = 0;
        c->restart_again = NULL;
        if (c->ctx->gate) {
                const char *why = c->ctx->gate(c, c->ctx->userdata);
                if (why) {
                        snprintf(c->wait_reason, sizeof(c->wait_reason), "%s", why);
                        if (c->state != CONN_QUEUED)
                                conn_set_state(c, CONN_QUEUED, why == c->ctx->quiet_wait ? LOG_DEBUG : prio, run,
                                               "%s; queued: %s", what, why);
                        return;
                }
        }
        reset_run(c);
        c->master = master_free(c->master);
        r = start_master(c);
        c->counters.starts++;
        c->total_starts++;
        c->run.started_at = now_mono();
        if (r < 0) {
                /* a start that did not happen is a failed run like any other */
                struct conn_run failed = { .valid = true, .exit_status = -1, .failure = FAILURE_EXEC,
                                           .ended_at = c->run.started_at };
                conn_finish_run(c, &failed);
                return;
        }
        conn_alt_started(c);
        conn_set_connecting(c, true);
        if (c->path_dead_since > 0 && now_mono() - c->path_dead_since > CONN_PATH_DEAD_MAX)
                c->path_dead_since = 0;         /* dead for long: starts as usual, backing off */
        /* a dead path: a start that has no TCP connection soon is replaced (on_deadline_timer) */
        conn_arm(c, &c->deadline_timer, c->path_dead_since > 0 && CONN_PATH_PROBE < slot ? CONN_PATH_PROBE
                                        : slot < deadline ? slot : deadline);
        if (c->spec.sup.max_lifetime > 0)
                conn_arm(c, &c->lifetime_timer, c->spec.sup.max_lifetime);
        /* the same count as tunnelctl's STARTS (max_starts counts since the last manual start) */
        conn_set_state(c, CONN_STARTING, prio, run, "%s; %s: ssh pid %d (start %lu)", what, next,
                       (int)master_pid(c->master), c->total_starts);
}

/* ---- how a run ended ---- */

static void describe_run(const struct conn *c, const struct conn_run *run, char *buf, size_t size)
{
        char ran[DURATION_MAX];
        size_t n;

        format_duration(run->ran, ran, sizeof(ran));
        if (run->pid <= 0)
                n = (size_t)snprintf(buf, size, "%s", c->run.not_started ? c->run.not_started : "ssh could not be started");
        else if (run->exit_signal > 0) {
                char sig[16];
                n = (size_t)snprintf(buf, size, "ssh was killed by signal %s after %s",
                                     signal_to_name(run->exit_signal, sig, sizeof(sig)), ran);
        } else
                n = (size_t)snprintf(buf, size, "ssh exited with status %d after %s", run->exit_status, ran);
        if (run->pid <= 0)
                ;       /* nothing ran */
        else if (n < size && !c->run.came_up)
                n += (size_t)snprintf(buf + n, size - n, ", never up");
        else if (n < size && c->spec.sup.gatetime > 0 && !c->run.gate_passed) {
                char gate[DURATION_MAX];
                n += (size_t)snprintf(buf + n, size - n, ", up for less than gatetime %s",
                                      format_duration(c->spec.sup.gatetime, gate, sizeof(gate)));
        }
        if (n < size && run->failure != FAILURE_NONE) {
                const char *hint = failure_class_hint_run(run->failure, run->authenticated);
                const char *jump = conn_alt_spec(c, c->run.alt)->jump_host;

                if (run->failure_on_proxy && jump)
                        snprintf(buf + n, size - n, " (%s on the jump host %s: %s)", failure_class_to_string(run->failure),
                                 jump, hint);
                else if (run->failure_on_proxy)
                        snprintf(buf + n, size - n, " (%s on the proxy of ssh_config_file: %s)",
                                 failure_class_to_string(run->failure), hint);
                else
                        snprintf(buf + n, size - n, " (%s: %s)", failure_class_to_string(run->failure), hint);
        }
}

static void note_flapping(struct conn *c, const struct conn_run *run, const char *what)
{
        struct log_ctx ctx = conn_log_ctx(c);
        char window[DURATION_MAX];

        if (!policy_flap_note_failure(&c->flap.ring, &c->spec.sup, run->ended_at) || c->flap.flapping)
                return;
        c->flap.flapping = true;
        c->flap.suppressed = 0;
        c->flap.reported_at = run->ended_at;
        ctx.failure = failure_class_to_string(run->failure);
        log_full(LOG_WARNING, &ctx, "flapping: %d failed starts within %s, the last: %s; "
                 "until a run lasts gatetime, its failures are logged at debug level, "
                 "with one line per flap_window",
                 c->spec.sup.flap_threshold, format_duration(c->spec.sup.flap_window, window, sizeof(window)), what);
        for (struct conn_user *u = c->users; u; u = u->next)
                if (u->ops->flapping)
                        u->ops->flapping(u, true);
}

/* A make-before-break whose new ssh ended before the old one let go of anything: a failed
 * run like any other (counted, judged, backed off), but the old ssh is the run again and
 * serves on, and the restart is tried again once the backoff is over (not at all if the
 * policy allows no more starts). Nothing that worked broke for a new ssh that never did. */
static void keep_old(struct conn *c, struct conn_run *run, const struct verdict *v, const char *what)
{
        double delay = v->delay > c->spec.sup.restart_delay ? v->delay : c->spec.sup.restart_delay;

        conn_forwards_open_pending(c);          /* those added or failed meanwhile */
        if (c->spec.sup.gatetime > 0 && !c->run.gate_passed)
                conn_arm(c, &c->gate_timer, c->spec.sup.gatetime - (now_mono() - c->run.up_since));
        if (v->kind == VERDICT_FAILED) {
                c->restart_again = NULL;
                conn_set_state(c, CONN_UP, LOG_ERR, run, "%s; the old ssh (pid %d) serves on, and is not restarted (%s)",
                               what, (int)master_pid(c->master), v->why);
        } else {
                char in[DURATION_MAX];

                c->restart_again = "make-before-break tried again";
                c->run.retry_at = now_mono() + delay;
                conn_arm(c, &c->retry_timer, delay);
                conn_set_state(c, CONN_UP, LOG_WARNING, run, "%s; the old ssh (pid %d) serves on; make-before-break "
                               "tried again in %s", what, (int)master_pid(c->master),
                               format_duration(delay, in, sizeof(in)));
        }
        for (struct conn_user *u = c->users; u; u = u->next)
                if (u->ops->handed_over)
                        u->ops->handed_over(u, run);
}

/* A run that had come up and ended for want of an answer from its server (TCP gave up on
 * unacknowledged data after dead_path_timeout, or ServerAlive did): its path died under
 * it. Not a failed start: a new ssh at once, and while the path stays dead its starts are
 * probes (conn_path.c). A probe tunneld ended (no TCP connection yet) is replaced at once. */
static bool path_died(struct conn *c, struct conn_run *run)
{
        char what[1024], next[300];

        if (c->run.probe_ended) {
                struct log_ctx ctx = conn_log_ctx(c);
                bool alt = conn_alt_path_died(c, run, true, next, sizeof(next));

                log_full(LOG_DEBUG, &ctx, "no TCP connection after %.1f s: the path is still dead; a new ssh%s%s",
                         CONN_PATH_PROBE, alt ? ", " : "", alt ? next : "");
                conn_spawn(c, NULL, "the path is still dead", alt ? next : "trying again");
                return true;
        }
        if (!c->run.came_up || c->run.kill_class != FAILURE_NONE || run->failure != FAILURE_TIMEOUT)
                return false;
        run->path_died = true;
        c->last_run = *run;
        c->path_dead_since = now_mono();
        describe_run(c, run, what, sizeof(what));
        snprintf(what + strlen(what), sizeof(what) - strlen(what), "; its path died (the server stopped "
                 "answering a connection that was up)");
        if (conn_alt_path_died(c, run, false, next, sizeof(next)))
                conn_spawn(c, run, what, next);
        else
                conn_spawn(c, run, what, "reconnecting at once");
        return true;
}

/* A run ended that tunneld did not ask to end: the verdict of policy.h, carried out. */
void conn_finish_run(struct conn *c, struct conn_run *run)
{
        const struct run_outcome outcome = {
                .ran = run->ran,
                .came_up = c->run.came_up,
                .passed_gate = c->run.gate_passed,
                .exit_status = run->exit_status,
                .exit_signal = run->exit_signal,
                .failure = run->failure,
                .ended_by_tunneld = c->run.kill_class != FAILURE_NONE,
        };
        struct verdict v;
        char what[1024], in[DURATION_MAX], next[300];
        unsigned failures_before = c->counters.failures;

        if (path_died(c, run))
                return;
        v = policy_judge(&c->spec.sup, &c->counters, &outcome, random_unit());

        run->failure = v.failure;
        describe_run(c, run, what, sizeof(what));
        /* the preferred alternative tried beside a backup: its failure alone */
        if (conn_alt_failback_failed(c, run, what))
                return;
        c->last_run = *run;
        c->counters.failures = v.failures;
        if (v.success)
                c->counters.ever_passed = true;
        if (!v.success)
                note_flapping(c, run, what);
        if (conn_handover_revert(c)) {
                keep_old(c, run, &v, what);
                return;
        }
        conn_handover_abort(c, "stops: the new ssh ended before it took every forward over");
        conn_forwards_reset(c);
        if (conn_alt_failover(c, run, &v, failures_before, next, sizeof(next))) {
                conn_spawn(c, run, what, next);
                return;
        }

        switch (v.kind) {
        case VERDICT_FAILED:
                c->reason = v.reason;
                if (c->spec.sup.max_starts > 0 && strcmp(v.reason, "max_starts reached") == 0)
                        conn_set_state(c, CONN_FAILED, LOG_ERR, run, "%s; not restarting (started %u times, max_starts %d)",
                                       what, c->counters.starts, c->spec.sup.max_starts);
                else
                        conn_set_state(c, CONN_FAILED, LOG_ERR, run, "%s; not restarting (%s)", what, v.why);
                return;
        case VERDICT_BACKOFF:
                c->run.retry_at = now_mono() + v.delay;
                conn_arm(c, &c->retry_timer, v.delay);
                conn_set_state(c, CONN_BACKOFF, LOG_WARNING, run, "%s; restarting in %s (failed start %u in a row)",
                               what, format_duration(v.delay, in, sizeof(in)), c->counters.failures);
                return;
        case VERDICT_RESTART_AFTER:
                c->run.retry_at = now_mono() + v.delay;
                conn_arm(c, &c->retry_timer, v.delay);
                conn_set_state(c, CONN_BACKOFF, LOG_WARNING, run, "%s; restarting in %s", what,
                               format_duration(v.delay, in, sizeof(in)));
                return;
        case VERDICT_RESTART_NOW:
                conn_spawn(c, run, what, "restarting now");
                return;
        }
}

/* ---- the master's news ---- */

static void on_master_event(struct master *m, enum master_event ev, void *userdata)
{
        struct conn *c = userdata;

        (void)m;
        switch (ev) {
        case MASTER_AUTHENTICATED:
                conn_set_connecting(c, false);
                c->path_dead_since = 0;         /* a path again */
                conn_path_learn(c);
                if (!conn_alt_hold(c))
                        conn_maybe_up(c);
                return;
        case MASTER_READY:
                if (conn_alt_hold(c))
                        return;                 /* a fail-back candidate: up for gatetime first */
                conn_handover_move(c);          /* an old master's forwards: closed there first */
                conn_forwards_open_pending(c);
                conn_maybe_up(c);
                conn_idle_on_ready(c);
                return;
        case MASTER_LOST:
                /* the master lives on without its control connection: nothing can be asked of it */
                if (conn_is_running(c))
                        conn_end_run(c, FAILURE_MUX, "%s", master_lost_reason(m));
                return;
        case MASTER_PROHIBITED:
                for (struct conn_user *u = c->users; u; u = u->next)
                        if (u->attached && u->ops->prohibited)
                                u->ops->prohibited(u);
                return;
        }
}

static void on_master_reply(struct master *m, const struct mux_reply *r, void *userdata)
{
        (void)m;
        conn_forwards_on_reply(userdata, r);
}

static void on_master_forward_line(struct master *m, enum failure_class class, const char *line, void *userdata)
{
        (void)m;
        conn_forwards_on_line(userdata, class, line);
}

static void on_master_exit(struct master *m, const struct master_exit *e, void *userdata)
{
        struct conn *c = userdata;
        struct conn_run run = {
                .valid = true,
                .pid = e->pid,
                .exit_status = e->exit_status,
                .exit_signal = e->exit_signal,
                .ran = e->ran,
                .ended_at = e->ended_at,
                .failure = c->run.kill_class != FAILURE_NONE ? c->run.kill_class : e->failure,
                .failure_on_proxy = c->run.kill_class == FAILURE_NONE && e->failure_on_proxy,
                .answered = e->answered,
                .authenticated = e->authenticated,
        };

        (void)m;
        ev_timer_stop(c->ctx->loop, &c->gate_timer);
        ev_timer_stop(c->ctx->loop, &c->lifetime_timer);
        ev_timer_stop(c->ctx->loop, &c->deadline_timer);
        /* the master is gone, and the forwards with it; those an old master still serves
         * are conn_finish_run's */
        conn_forwards_reset(c);
        if (c->state == CONN_STOPPING) {
                run.requested = true;
                run.failure = FAILURE_NONE;
                run.failure_on_proxy = false;
        }
        if (c->ctx->run_ended)
                c->ctx->run_ended(c, &run, c->ctx->userdata);

        if (c->state == CONN_STOPPING) {
                char ran[DURATION_MAX];

                conn_idle_stop(c);
                c->last_run = run;
                c->master = master_free(c->master);
                if (c->start_after_stop && c->n_attached > 0) {
                        c->start_after_stop = false;
                        conn_spawn(c, &run, "ssh stopped", "starting again");
                        return;
                }
                c->start_after_stop = false;
                conn_set_state(c, CONN_STOPPED, LOG_NOTICE, &run, "stopped: ssh ended after %s (%s)",
                               format_duration(run.ran, ran, sizeof(ran)), c->reason ? c->reason : "stop requested");
                return;
        }
        c->master = master_free(c->master);
        if (conn_idle_closed(c, &run))
                return;         /* the server's idle limit: reconnected, not a failure */
        conn_finish_run(c, &run);
}

const struct master_ops conn_master_ops = {
        .event = on_master_event,
        .reply = on_master_reply,
        .forward_line = on_master_forward_line,
        .exited = on_master_exit,
};
