/* SPDX-License-Identifier: MIT */
#include "tunnel.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hook.h"
#include "lines.h"
#include "log.h"
#include "probe.h"
#include "process.h"
#include "ssh_argv.h"

static const char *const state_names[_TUNNEL_STATE_MAX] = {
        [TUNNEL_STOPPED] = "stopped",
        [TUNNEL_STARTING] = "starting",
        [TUNNEL_UP] = "up",
        [TUNNEL_BACKOFF] = "backoff",
        [TUNNEL_FAILED] = "failed",
        [TUNNEL_STOPPING] = "stopping",
        [TUNNEL_QUEUED] = "queued",
};

const char *tunnel_state_to_string(enum tunnel_state s)
{
        return s >= 0 && s < _TUNNEL_STATE_MAX ? state_names[s] : "?";
}

double tunnel_backoff_base(double initial, double max, unsigned failures)
{
        double d = initial * ldexp(1.0, (int)(failures > 1 ? (failures > 40 ? 40 : failures - 1) : 0));

        return d > max ? max : d;
}

static void spawn(struct tunnel *t, const struct tunnel_run *run, const char *what, const char *next);
static void end_flapping(struct tunnel *t, const char *why);

/* max_parallel_starts counts the tunnels whose ssh is still connecting: from spawn until it
 * authenticates or ends. One that is authenticated but never comes up frees its slot. */
static void set_connecting(struct tunnel *t, bool connecting)
{
        if (t->connecting == connecting)
                return;
        t->connecting = connecting;
        if (t->observer)
                t->observer(t, TUNNEL_EVENT_CONNECTING, t->state, t->userdata);
}

/* The one place that changes t->state: logs what happened and what happens next, then
 * tells the observer. Callers return right after: the observer may free t. */
_printf_(5, 6)
static void set_state(struct tunnel *t, enum tunnel_state state, int prio, const struct tunnel_run *run,
                      const char *fmt, ...)
{
        struct log_ctx ctx = LOG_CTX_INIT;
        enum tunnel_state old = t->state;
        char text[1536];
        va_list ap;

        if (state != TUNNEL_STARTING)
                set_connecting(t, false);
        if (state == TUNNEL_STOPPED)
                end_flapping(t, "stopped");
        t->state = state;
        t->state_since = now_mono();
        if (t->probe) {
                if (state == TUNNEL_UP && old != TUNNEL_UP) {
                        t->probe_misses = 0;
                        probe_start(t->probe);
                } else if (state != TUNNEL_UP && old == TUNNEL_UP)
                        probe_stop(t->probe);
        }

        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);

        ctx.tunnel = t->spec.name;
        ctx.state = tunnel_state_to_string(state);
        ctx.pid = t->pid > 0 ? t->pid : -1;
        if (run) {
                /* the entry is about the ssh that ended (SSH_PID=N finds N's exit) */
                if (run->pid > 0)
                        ctx.pid = run->pid;
                ctx.exit_status = run->exit_status;
                ctx.exit_signal = run->exit_signal;
                if (run->failure != FAILURE_NONE)
                        ctx.failure = failure_class_to_string(run->failure);
        }
        /* A flapping tunnel was reported once; its churn goes to debug, what an operator
         * did or a final verdict does not, and once per flap_window an exit is logged as
         * usual, so that the log still says what the tunnel is doing. */
        if (t->flapping && prio > LOG_ERR && state != TUNNEL_STOPPED && state != TUNNEL_STOPPING) {
                if (run && t->state_since - t->flap_reported_at >= t->spec.flap_window) {
                        /* an exit, with its reason */
                        t->flap_reported_at = t->state_since;
                        log_full(prio, &ctx, "still flapping (%lu messages at debug level so far): %s",
                                 t->flap_suppressed, text);
                } else {
                        t->flap_suppressed++;
                        log_full(LOG_DEBUG, &ctx, "%s", text);
                }
        } else
                log_full(prio, &ctx, "%s", text);

        if (t->observer)
                t->observer(t, TUNNEL_EVENT_STATE, old, t->userdata);
}

static void end_flapping(struct tunnel *t, const char *why)
{
        struct log_ctx ctx = LOG_CTX_INIT;

        if (!t->flapping)
                return;
        t->flapping = false;
        ctx.tunnel = t->spec.name;
        log_full(LOG_NOTICE, &ctx, "no longer flapping (%s); %lu messages were logged at debug level meanwhile",
                 why, t->flap_suppressed);
        t->flap_suppressed = 0;
        t->fail_next = 0;
        memset(t->fail_at, 0, sizeof(t->fail_at));
}

/* Count a failed run; true if the tunnel just started flapping. */
static bool note_failure(struct tunnel *t, double now)
{
        unsigned threshold = (unsigned)t->spec.flap_threshold;
        double oldest;

        if (threshold > FLAP_RING)
                threshold = FLAP_RING;
        t->fail_at[t->fail_next % FLAP_RING] = now;
        t->fail_next++;
        if (t->flapping || t->fail_next < threshold)
                return false;
        oldest = t->fail_at[(t->fail_next - threshold) % FLAP_RING];
        if (now - oldest > t->spec.flap_window)
                return false;
        t->flapping = true;
        t->flap_suppressed = 0;
        t->flap_reported_at = now;
        return true;
}

/* ---- ssh's stderr ---- */

/* This run has lasted gatetime and is up: a successful start (unless the probe ends it). */
static void pass_gate(struct tunnel *t)
{
        char gate[DURATION_MAX];

        if (t->gate_passed)
                return;
        t->gate_passed = t->ever_passed = true;
        t->failures_before_gate = t->failures;
        t->failures = 0;
        end_flapping(t, "a run lasted gatetime");
        log_full(LOG_DEBUG, &(struct log_ctx){ .tunnel = t->spec.name, .pid = t->pid, .exit_status = -1,
                                               .exit_signal = -1 },
                 "ssh has been up for gatetime %s: this start counts as a success",
                 format_duration(t->spec.gatetime, gate, sizeof(gate)));
}

static void maybe_up(struct tunnel *t)
{
        size_t remotes = strv_length(t->spec.remote_forwards);
        char took[DURATION_MAX];

        /* with exit_on_forward_failure = false ssh runs on without a forward: not up */
        if (t->state != TUNNEL_STARTING || !t->authenticated || !t->session || t->forward_failed ||
            t->remote_confirmed < remotes)
                return;
        t->run_up = true;
        if (t->gate_elapsed)
                pass_gate(t);
        set_state(t, TUNNEL_UP, LOG_NOTICE, NULL, "up: ssh (pid %d) authenticated%s after %s",
                  (int)t->pid, remotes ? " and every remote forward accepted" : "",
                  format_duration(now_mono() - t->started_at, took, sizeof(took)));
}

static void handle_line(struct tunnel *t, const char *line)
{
        struct log_ctx ctx = LOG_CTX_INIT;
        enum failure_class class;

        ctx.tunnel = t->spec.name;
        ctx.pid = t->pid > 0 ? t->pid : -1;

        switch (ssh_line_parse(line, &class)) {
        case SSH_LINE_DEBUG:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                return;
        case SSH_LINE_REMOTE_FORWARD_OK:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                t->remote_confirmed++;
                maybe_up(t);
                return;
        case SSH_LINE_ALLOCATED:
                /* the port the server chose for a -R 0:…: status and metrics show it */
                log_full(t->flapping ? LOG_DEBUG : LOG_INFO, &ctx, "ssh: %s", line);
                (void)strv_push(&t->allocated, line + 15);
                return;
        case SSH_LINE_SESSION:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                t->session = true;
                maybe_up(t);
                return;
        case SSH_LINE_AUTHENTICATED:
                log_full(t->flapping ? LOG_DEBUG : LOG_INFO, &ctx, "ssh: %s", line);
                t->flap_suppressed += t->flapping;
                t->authenticated = true;
                set_connecting(t, false);
                maybe_up(t);
                return;
        case SSH_LINE_FAILURE:
                if (!t->probe_kill)
                        t->run_failure = class;
                if (class == FAILURE_LOCAL_FORWARD || class == FAILURE_REMOTE_FORWARD)
                        t->forward_failed = true;
                ctx.failure = failure_class_to_string(class);
                log_full(t->flapping ? LOG_DEBUG : LOG_WARNING, &ctx, "ssh: %s", line);
                t->flap_suppressed += t->flapping;
                return;
        case SSH_LINE_PLAIN:
                log_full(t->flapping ? LOG_DEBUG : LOG_INFO, &ctx, "ssh: %s", line);
                t->flap_suppressed += t->flapping;
                return;
        }
}

static void on_line(const char *line, void *userdata)
{
        handle_line(userdata, line);
}

static void read_stderr(struct tunnel *t, bool final)
{
        if (lines_read(&t->out, t->stderr_fd, final, on_line, t)) {
                ev_io_stop(t->loop, &t->stderr_watcher);
                close(t->stderr_fd);
                t->stderr_fd = -1;
        }
}

static void on_stderr(struct ev_loop *loop, ev_io *w, int revents)
{
        struct tunnel *t = w->data;

        (void)loop;
        (void)revents;
        read_stderr(t, false);
}

/* ---- exits and policy ---- */

static void describe_run(const struct tunnel *t, const struct tunnel_run *run, char *buf, size_t size)
{
        char ran[DURATION_MAX];
        size_t n;

        format_duration(run->ran, ran, sizeof(ran));
        if (run->exit_signal > 0) {
                char sig[16];
                n = (size_t)snprintf(buf, size, "ssh was killed by signal %s after %s",
                                     signal_to_name(run->exit_signal, sig, sizeof(sig)), ran);
        } else
                n = (size_t)snprintf(buf, size, "ssh exited with status %d after %s", run->exit_status, ran);
        if (n < size && t->spec.gatetime > 0 && run->ran < t->spec.gatetime) {
                char gate[DURATION_MAX];
                n += (size_t)snprintf(buf + n, size - n, ", before gatetime %s",
                                      format_duration(t->spec.gatetime, gate, sizeof(gate)));
        }
        if (n < size && run->failure != FAILURE_NONE)
                snprintf(buf + n, size - n, " (%s: %s)", failure_class_to_string(run->failure),
                         failure_class_hint(run->failure));
}

static void on_retry_timer(struct ev_loop *loop, ev_timer *w, int revents);
static void on_grace_timer(struct ev_loop *loop, ev_timer *w, int revents);

double tunnel_failure_delay(const struct tunnel_spec *s, enum failure_class class, unsigned failures)
{
        switch (class) {
        case FAILURE_AUTH:
        case FAILURE_HOST_KEY:
                /* Retrying fast cannot fix a refused key or a changed host key. */
                return s->restart_delay_max;
        case FAILURE_REMOTE_FORWARD:
                /* Usually the server still holds the port for our previous, dead session: it
                 * lets go once it notices. Knock every few seconds for a while, then back off. */
                if (failures <= REMOTE_FORWARD_TRIES)
                        return s->restart_delay_max < REMOTE_FORWARD_DELAY ? s->restart_delay_max : REMOTE_FORWARD_DELAY;
                /* then the normal backoff, but never shorter than the knocks were */
                {
                        double d = tunnel_backoff_base(s->restart_delay, s->restart_delay_max,
                                                       failures - REMOTE_FORWARD_TRIES);
                        double floor = s->restart_delay_max < REMOTE_FORWARD_DELAY ? s->restart_delay_max
                                                                                    : REMOTE_FORWARD_DELAY;
                        return d > floor ? d : floor;
                }
        default:
                return tunnel_backoff_base(s->restart_delay, s->restart_delay_max, failures);
        }
}

static void enter_backoff(struct tunnel *t, const struct tunnel_run *run, const char *what)
{
        double base = tunnel_failure_delay(&t->spec, run ? run->failure : FAILURE_NONE, t->failures);
        /* Jitter between half and the whole delay: many tunnels never retry in lockstep, and
         * consecutive delays still never shrink (d/2..d, then d..2d). */
        double delay = base * (0.5 + 0.5 * random_unit());
        char in[DURATION_MAX];

        t->retry_at = now_mono() + delay;
        ev_timer_stop(t->loop, &t->timer);
        ev_set_cb(&t->timer, on_retry_timer);
        ev_timer_set(&t->timer, delay, 0.);
        ev_timer_start(t->loop, &t->timer);
        set_state(t, TUNNEL_BACKOFF, LOG_WARNING, run, "%s; restarting in %s (failed start %u in a row)",
                  what, format_duration(delay, in, sizeof(in)), t->failures);
}

static void finish_run(struct tunnel *t, struct tunnel_run *run)
{
        const struct tunnel_spec *s = &t->spec;
        /* A run the probe ended is a failure however long it lasted: restarting ssh does not
         * fix a dead far end, so the retries must back off. So is a run that never came up
         * and whose ssh said why (a refused key fails even with gatetime 0). */
        bool success = (s->gatetime <= 0 || run->ran >= s->gatetime) && run->failure != FAILURE_PROBE &&
                       !(run->failure != FAILURE_NONE && !t->run_up);
        char what[1024];

        if (run->failure == FAILURE_NONE) {
                if (run->exit_signal > 0)
                        run->failure = FAILURE_KILLED;
                else if (run->exit_status == 0)
                        run->failure = FAILURE_LOST;
                else if (run->exit_status == 127 && run->ran < 1.0)
                        run->failure = FAILURE_EXEC;
                else
                        run->failure = FAILURE_UNKNOWN;
        }
        t->total_failures[run->failure]++;
        t->last_run = *run;
        t->restart_pending = true;
        describe_run(t, run, what, sizeof(what));

        if (success) {
                t->failures = 0;
                t->ever_passed = true;
        } else {
                if (t->gate_passed)
                        t->failures = t->failures_before_gate;
                t->failures++;
                if (note_failure(t, run->ended_at)) {
                        char window[DURATION_MAX];
                        struct log_ctx ctx = LOG_CTX_INIT;

                        ctx.tunnel = s->name;
                        ctx.failure = failure_class_to_string(run->failure);
                        log_full(LOG_WARNING, &ctx, "flapping: %d failed starts within %s, the last: %s; "
                                 "until a run lasts gatetime, its failures are logged at debug level, "
                                 "with one line per flap_window",
                                 s->flap_threshold, format_duration(s->flap_window, window, sizeof(window)), what);
                        if (t->observer)
                                t->observer(t, TUNNEL_EVENT_FLAPPING, t->state, t->userdata);
                }
        }

        if (s->restart == RESTART_NEVER) {
                t->reason = "restart=never";
                set_state(t, TUNNEL_FAILED, LOG_ERR, run, "%s; not restarting (restart=never)", what);
                return;
        }
        if (s->restart == RESTART_ON_FAILURE && run->exit_signal == 0 && run->exit_status == 0 &&
            run->failure != FAILURE_PROBE) {
                t->reason = "exit status 0 with restart=on-failure";
                set_state(t, TUNNEL_FAILED, LOG_ERR, run,
                          "%s; not restarting (restart=on-failure, and ssh -N exits 0 when someone sends it SIGTERM)",
                          what);
                return;
        }
        if (s->max_starts > 0 && t->starts >= (unsigned)s->max_starts) {
                t->reason = "max_starts reached";
                set_state(t, TUNNEL_FAILED, LOG_ERR, run, "%s; not restarting (started %u times, max_starts %d)",
                          what, t->starts, s->max_starts);
                return;
        }
        if (s->fail_fast && !success && !t->ever_passed) {
                t->reason = "first start failed (fail_fast)";
                set_state(t, TUNNEL_FAILED, LOG_ERR, run,
                          "%s; not restarting (fail_fast: the first start failed, check the configuration)", what);
                return;
        }
        if (!success) {
                enter_backoff(t, run, what);
                return;
        }
        /* A good run: restart at once, but never start one tunnel twice within restart_delay
         * (with gatetime 0 every run counts as good, and a failing ssh must not spin). */
        if (run->ran < s->restart_delay) {
                double delay = s->restart_delay - run->ran;
                char in[DURATION_MAX];

                t->retry_at = now_mono() + delay;
                ev_timer_stop(t->loop, &t->timer);
                ev_set_cb(&t->timer, on_retry_timer);
                ev_timer_set(&t->timer, delay, 0.);
                ev_timer_start(t->loop, &t->timer);
                set_state(t, TUNNEL_BACKOFF, LOG_WARNING, run, "%s; restarting in %s", what,
                          format_duration(delay, in, sizeof(in)));
                return;
        }
        spawn(t, run, what, "restarting now");
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents)
{
        struct tunnel *t = w->data;
        struct tunnel_run run = { .valid = true, .exit_status = -1 };
        int status = w->rstatus;

        (void)revents;
        ev_child_stop(loop, w);
        ev_timer_stop(loop, &t->gate_timer);
        ev_timer_stop(loop, &t->lifetime_timer);
        if (t->stderr_fd >= 0)
                read_stderr(t, true);   /* ssh's last words come before our verdict */

        if (WIFEXITED(status))
                run.exit_status = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
                run.exit_signal = WTERMSIG(status);
        run.ended_at = now_mono();
        run.ran = run.ended_at - t->started_at;
        run.failure = t->probe_kill ? FAILURE_PROBE : t->run_failure;
        run.pid = t->pid;
        t->pid = 0;
        if (t->probe_kill) {
                t->probe_kill = false;
                ev_timer_stop(loop, &t->timer);         /* its SIGKILL grace */
        }

        if (t->state == TUNNEL_STOPPING) {
                char ran[DURATION_MAX];

                run.requested = true;
                run.failure = FAILURE_NONE;
                t->last_run = run;
                ev_timer_stop(loop, &t->timer);
                if (t->start_after_stop) {
                        t->start_after_stop = false;
                        spawn(t, &run, "ssh stopped", "starting again");
                        return;
                }
                set_state(t, TUNNEL_STOPPED, LOG_NOTICE, &run, "stopped: ssh ended after %s (%s)",
                          format_duration(run.ran, ran, sizeof(ran)), t->reason ? t->reason : "stop requested");
                return;
        }
        finish_run(t, &run);
}

static void on_gate_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;
        char gate[DURATION_MAX];

        (void)loop;
        (void)revents;
        t->gate_elapsed = true;
        if (t->state == TUNNEL_UP) {
                pass_gate(t);
                return;
        }
        /* Not a success yet: it counts once it is up (ssh may still be authenticating, or
         * runs on without a forward under exit_on_forward_failure = false). */
        log_full(t->flapping ? LOG_DEBUG : LOG_WARNING,
                 &(struct log_ctx){ .tunnel = t->spec.name, .pid = t->pid, .exit_status = -1, .exit_signal = -1 },
                 "ssh has run for gatetime %s but is not up (%s)", format_duration(t->spec.gatetime, gate, sizeof(gate)),
                 t->forward_failed ? "a forward failed" : !t->authenticated ? "not authenticated yet"
                                                                            : "forwards not set up yet");
}

static void on_lifetime_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;
        char life[DURATION_MAX];

        (void)loop;
        (void)revents;
        if (t->state != TUNNEL_STARTING && t->state != TUNNEL_UP)
                return;
        format_duration(t->spec.max_lifetime, life, sizeof(life));
        if (t->spec.max_lifetime_action == LIFETIME_STOP) {
                log_full(LOG_NOTICE, &(struct log_ctx){ .tunnel = t->spec.name, .pid = t->pid, .exit_status = -1,
                                                        .exit_signal = -1 },
                         "ssh reached max_lifetime %s: stopping the tunnel (max_lifetime_action=stop)", life);
                tunnel_hold(t, "max_lifetime reached");
                return;
        }
        log_full(LOG_NOTICE, &(struct log_ctx){ .tunnel = t->spec.name, .pid = t->pid, .exit_status = -1,
                                                .exit_signal = -1 },
                 "ssh reached max_lifetime %s: restarting it", life);
        tunnel_restart(t, "max_lifetime reached");
}

static void on_retry_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;

        (void)loop;
        (void)revents;
        if (t->state == TUNNEL_BACKOFF)
                spawn(t, NULL, "backoff over", "restarting");
}

static void on_grace_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;
        char grace[DURATION_MAX];

        (void)loop;
        (void)revents;
        if ((t->state != TUNNEL_STOPPING && !t->probe_kill) || t->pid <= 0 || t->kill_sent)
                return;
        t->kill_sent = true;
        log_full(LOG_WARNING, &(struct log_ctx){ .tunnel = t->spec.name, .pid = t->pid, .exit_status = -1,
                                                 .exit_signal = -1 },
                 "ssh did not exit within %s of SIGTERM: sending SIGKILL",
                 format_duration(t->stop_timeout, grace, sizeof(grace)));
        process_kill(t->pid, SIGKILL);
}

/* ---- spawning ---- */

static void spawn(struct tunnel *t, const struct tunnel_run *run, const char *what, const char *next)
{
        pid_t pid;
        int err_fd, r;

        ev_timer_stop(t->loop, &t->timer);
        t->retry_at = 0;
        if (t->gate) {
                const char *why = t->gate(t, t->userdata);
                if (why) {
                        snprintf(t->wait_reason, sizeof(t->wait_reason), "%s", why);
                        if (t->state != TUNNEL_QUEUED)
                                set_state(t, TUNNEL_QUEUED, run && !run->requested ? LOG_WARNING : LOG_INFO, run,
                                          "%s; queued: %s", what, why);
                        return;
                }
        }
        t->probe_kill = false;
        t->probe_misses = 0;
        t->authenticated = false;
        t->session = false;
        t->forward_failed = false;
        t->allocated = strv_free(t->allocated);
        t->remote_confirmed = 0;
        t->run_failure = FAILURE_NONE;
        t->kill_sent = false;
        t->run_up = false;
        t->gate_elapsed = t->spec.gatetime <= 0;
        t->gate_passed = false;
        lines_reset(&t->out);

        r = process_spawn(t->argv, NULL, false, &pid, &err_fd);
        if (r < 0) {
                errno = -r;
                goto fail;
        }
        /* Watch the child before anything else can run (ev.pod: start ev_child right after
         * fork). */
        t->pid = pid;
        ev_child_set(&t->child_watcher, pid, 0);
        ev_child_start(t->loop, &t->child_watcher);
        t->stderr_fd = err_fd;
        ev_io_set(&t->stderr_watcher, t->stderr_fd, EV_READ);
        ev_io_start(t->loop, &t->stderr_watcher);

        set_connecting(t, true);
        t->started_at = now_mono();
        t->starts++;
        t->total_starts++;
        if (t->spec.gatetime > 0) {
                ev_timer_set(&t->gate_timer, t->spec.gatetime, 0.);
                ev_timer_start(t->loop, &t->gate_timer);
        }
        if (t->spec.max_lifetime > 0) {
                ev_timer_set(&t->lifetime_timer, t->spec.max_lifetime, 0.);
                ev_timer_start(t->loop, &t->lifetime_timer);
        }
        if (t->restart_pending)
                t->restarts++;
        t->restart_pending = false;

        set_state(t, TUNNEL_STARTING, run && !run->requested ? LOG_WARNING : LOG_INFO, run, "%s; %s: ssh pid %d (start %u)",
                  what, next, (int)pid, t->starts);
        return;

fail: {
                struct tunnel_run failed = { .valid = true, .exit_status = -1, .failure = FAILURE_EXEC };
                char why[256];

                snprintf(why, sizeof(why), "cannot start ssh: %s", strerror(errno));
                log_full(LOG_ERR, &(struct log_ctx){ .tunnel = t->spec.name, .pid = -1, .exit_status = -1,
                                                     .exit_signal = -1, .failure = "exec" },
                         "%s", why);
                t->starts++;
                t->total_starts++;
                t->failures++;
                t->total_failures[FAILURE_EXEC]++;
                t->last_run = failed;
                enter_backoff(t, &failed, why);
        }
}

/* ---- probe ---- */

static void on_probe(bool ok, const char *why, void *userdata)
{
        struct tunnel *t = userdata;
        struct log_ctx ctx = LOG_CTX_INIT;
        char grace[DURATION_MAX];

        ctx.tunnel = t->spec.name;
        ctx.pid = t->pid;
        if (ok) {
                if (t->probe_misses)
                        log_full(LOG_NOTICE, &ctx, "probe %s passes again", t->spec.probe.connect);
                t->probe_misses = 0;
                return;
        }
        t->probe_misses++;
        ctx.failure = failure_class_to_string(FAILURE_PROBE);
        if (t->probe_misses < (unsigned)t->spec.probe.failures || t->state != TUNNEL_UP) {
                log_full(LOG_WARNING, &ctx, "probe %s failed (%u of %d): %s", t->spec.probe.connect,
                         t->probe_misses, t->spec.probe.failures, why);
                return;
        }
        log_full(LOG_WARNING, &ctx, "probe %s failed %u times in a row (%s) although ssh runs: "
                 "restarting ssh (SIGTERM to pid %d, SIGKILL in %s)", t->spec.probe.connect, t->probe_misses, why,
                 (int)t->pid, format_duration(t->stop_timeout, grace, sizeof(grace)));
        probe_stop(t->probe);
        t->probe_kill = true;
        t->run_failure = FAILURE_PROBE;
        process_kill(t->pid, SIGTERM);
        ev_timer_stop(t->loop, &t->timer);
        ev_set_cb(&t->timer, on_grace_timer);
        ev_timer_set(&t->timer, t->stop_timeout, 0.);
        ev_timer_start(t->loop, &t->timer);
}

static int make_probe(struct tunnel *t)
{
        t->probe = probe_free(t->probe);
        if (!t->spec.probe.connect)
                return 0;
        return probe_new(t->loop, &t->spec.probe, on_probe, t, &t->probe);
}

/* ---- public API ---- */

int tunnel_new(struct ev_loop *loop, const struct tunnel_spec *spec, const char *ssh, double stop_timeout,
               tunnel_observer_t observer, void *userdata, struct tunnel **ret)
{
        struct tunnel *t;
        int r;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        *t = (struct tunnel){
                .loop = loop,
                .stop_timeout = stop_timeout,
                .observer = observer,
                .userdata = userdata,
                .state = TUNNEL_STOPPED,
                .state_since = now_mono(),
                .stderr_fd = -1,
        };
        r = tunnel_spec_copy(spec, &t->spec);
        if (r < 0) {
                free(t);
                return r;
        }
        r = ssh_argv_build(&t->spec, ssh, &t->argv);
        if (r < 0) {
                tunnel_spec_done(&t->spec);
                free(t);
                return r;
        }
        r = make_probe(t);
        if (r < 0) {
                strv_free(t->argv);
                tunnel_spec_done(&t->spec);
                free(t);
                return r;
        }
        if (!spec->enabled)
                t->reason = "disabled in the configuration";
        ev_child_init(&t->child_watcher, on_child, 0, 0);
        ev_timer_init(&t->timer, on_retry_timer, 0., 0.);
        ev_timer_init(&t->gate_timer, on_gate_timer, 0., 0.);
        ev_timer_init(&t->lifetime_timer, on_lifetime_timer, 0., 0.);
        ev_io_init(&t->stderr_watcher, on_stderr, -1, EV_READ);
        t->child_watcher.data = t->timer.data = t->gate_timer.data = t->lifetime_timer.data = t;
        t->stderr_watcher.data = t;
        *ret = t;
        return 0;
}

struct tunnel *tunnel_free(struct tunnel *t)
{
        if (!t)
                return NULL;
        if (t->pid > 0) {
                process_kill(t->pid, SIGKILL);
        }
        ev_child_stop(t->loop, &t->child_watcher);
        ev_timer_stop(t->loop, &t->timer);
        ev_timer_stop(t->loop, &t->gate_timer);
        ev_timer_stop(t->loop, &t->lifetime_timer);
        ev_io_stop(t->loop, &t->stderr_watcher);
        if (t->stderr_fd >= 0)
                close(t->stderr_fd);
        probe_free(t->probe);
        hook_free(t->hook);
        strv_free(t->allocated);
        strv_free(t->argv);
        tunnel_spec_done(&t->spec);
        free(t);
        return NULL;
}

bool tunnel_wants_start(const struct tunnel *t)
{
        return t->start_after_stop;
}

static void reset_counters(struct tunnel *t)
{
        t->restart_pending = false;
        end_flapping(t, "started again by request");
        t->starts = 0;
        t->failures = 0;
        /* ever_passed stays: fail_fast is about a configuration that never worked, and only
         * a changed configuration makes the next start a first one again */
        t->reason = NULL;
}

void tunnel_start(struct tunnel *t)
{
        t->held = false;
        switch (t->state) {
        case TUNNEL_STOPPED:
        case TUNNEL_FAILED:
        case TUNNEL_BACKOFF:
                reset_counters(t);
                spawn(t, NULL, t->state == TUNNEL_BACKOFF ? "start requested" : "starting", "launched");
                return;
        case TUNNEL_STOPPING:
                t->start_after_stop = true;
                return;
        case TUNNEL_STARTING:
        case TUNNEL_UP:
        case TUNNEL_QUEUED:
        case _TUNNEL_STATE_MAX:
                return;
        }
}

void tunnel_stop(struct tunnel *t, const char *reason)
{
        char grace[DURATION_MAX];

        t->reason = reason;
        switch (t->state) {
        case TUNNEL_STARTING:
        case TUNNEL_UP:
                ev_timer_stop(t->loop, &t->gate_timer);
                ev_timer_stop(t->loop, &t->lifetime_timer);
                process_kill(t->pid, SIGTERM);
                ev_timer_stop(t->loop, &t->timer);
                ev_set_cb(&t->timer, on_grace_timer);
                ev_timer_set(&t->timer, t->stop_timeout, 0.);
                ev_timer_start(t->loop, &t->timer);
                set_state(t, TUNNEL_STOPPING, LOG_INFO, NULL, "stopping (%s): SIGTERM sent to ssh pid %d, SIGKILL in %s",
                          reason, (int)t->pid, format_duration(t->stop_timeout, grace, sizeof(grace)));
                return;
        case TUNNEL_BACKOFF:
        case TUNNEL_FAILED:
        case TUNNEL_QUEUED:
                ev_timer_stop(t->loop, &t->timer);
                t->retry_at = 0;
                set_state(t, TUNNEL_STOPPED, LOG_NOTICE, NULL, "stopped (%s)", reason);
                return;
        case TUNNEL_STOPPING:
                t->start_after_stop = false;
                return;
        case TUNNEL_STOPPED:
        case _TUNNEL_STATE_MAX:
                return;
        }
}

void tunnel_hold(struct tunnel *t, const char *reason)
{
        t->held = true;
        t->start_after_stop = false;
        tunnel_stop(t, reason);
}

void tunnel_restart(struct tunnel *t, const char *reason)
{
        t->held = false;
        reset_counters(t);
        if (t->state == TUNNEL_STARTING || t->state == TUNNEL_UP || t->state == TUNNEL_STOPPING) {
                if (t->state != TUNNEL_STOPPING)
                        tunnel_stop(t, reason);
                t->reason = reason;
                t->start_after_stop = true;
                return;
        }
        tunnel_start(t);
}

int tunnel_reconfigure(struct tunnel *t, const struct tunnel_spec *spec, const char *ssh, double stop_timeout)
{
        struct tunnel_spec copy;
        char **argv = NULL;
        int r;

        r = tunnel_spec_copy(spec, &copy);
        if (r < 0)
                return r;
        r = ssh_argv_build(&copy, ssh, &argv);
        if (r < 0) {
                tunnel_spec_done(&copy);
                return r;
        }
        /* A running child keeps the argv it was started with; the new one is for the next start. */
        tunnel_spec_done(&t->spec);
        strv_free(t->argv);
        t->spec = copy;
        t->argv = argv;
        t->stop_timeout = stop_timeout;
        r = make_probe(t);
        if (r < 0)
                log_full_errno(LOG_ERR, r, &(struct log_ctx){ .tunnel = t->spec.name, .pid = -1, .exit_status = -1,
                                                              .exit_signal = -1 },
                               "cannot set up the probe: %m; running without it");

        /* a new configuration has not proven itself yet: its first start is judged by
         * fail_fast again */
        t->ever_passed = false;
        if (!spec->enabled) {
                tunnel_stop(t, "disabled in the configuration");
                return 0;
        }
        if (t->held && (t->state == TUNNEL_STOPPED || t->state == TUNNEL_STOPPING)) {
                /* an operator stopped it: the new spec waits for their start */
                t->starts = t->failures = 0;
                return 0;
        }
        tunnel_restart(t, "configuration changed");
        return 0;
}

void tunnel_retry_now(struct tunnel *t, const char *reason)
{
        if (t->state != TUNNEL_BACKOFF)
                return;
        t->failures = 0;
        spawn(t, NULL, reason, "retrying now");
}

bool tunnel_retry_soon(struct tunnel *t, double jitter, const char *reason)
{
        double delay = jitter * random_unit();
        char in[DURATION_MAX];

        if (t->state != TUNNEL_BACKOFF)
                return false;
        /* Only failures a network change can cure: a refused key or a taken port stay as
         * they are, and their backoff must not be reset by every interface that comes up. */
        switch (t->last_run.failure) {
        case FAILURE_DNS:
        case FAILURE_REFUSED:
        case FAILURE_UNREACHABLE:
        case FAILURE_TIMEOUT:
        case FAILURE_CLOSED:
        case FAILURE_UNKNOWN:
                break;
        default:
                return false;
        }
        t->failures = 0;
        if (t->retry_at - now_mono() <= delay)
                return true;    /* due sooner anyway */
        t->retry_at = now_mono() + delay;
        ev_timer_stop(t->loop, &t->timer);
        ev_set_cb(&t->timer, on_retry_timer);
        ev_timer_set(&t->timer, delay, 0.);
        ev_timer_start(t->loop, &t->timer);
        log_full(LOG_INFO, &(struct log_ctx){ .tunnel = t->spec.name, .pid = -1, .exit_status = -1,
                                              .exit_signal = -1, .state = "backoff" },
                 "%s: backoff reset, retrying in %s", reason, format_duration(delay, in, sizeof(in)));
        return true;
}

void tunnel_dequeue(struct tunnel *t, const char *reason)
{
        if (t->state == TUNNEL_QUEUED)
                spawn(t, NULL, reason, "launched");
}
