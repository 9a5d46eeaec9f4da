/* SPDX-License-Identifier: MIT */
/* tunnel: one tunnel's state machine: the one place that changes its state, its timers
 * (start deadline, gatetime, max_lifetime, backoff, SIGKILL grace), spawning its ssh,
 * and the public API. What ssh prints is tunnel_output.c's, what its exit means
 * tunnel_exit.c's. */
#include "tunnel_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hook.h"
#include "jump_config.h"
#include "probe.h"
#include "process.h"

struct log_ctx ctx_of(const struct tunnel *t)
{
        struct log_ctx ctx = LOG_CTX_INIT;

        ctx.tunnel = t->spec.name;
        ctx.pid = t->pid > 0 ? t->pid : -1;
        return ctx;
}

void arm(struct tunnel *t, ev_timer *w, double after)
{
        ev_timer_stop(t->ctx->loop, w);
        ev_timer_set(w, after > 0 ? after : 0., 0.);
        ev_timer_start(t->ctx->loop, w);
}

/* max_parallel_starts counts the tunnels whose ssh is still connecting: from spawn until it
 * authenticates, ends, or has connected for tunnel_slot_time(). */
void set_connecting(struct tunnel *t, bool connecting)
{
        if (t->connecting == connecting)
                return;
        t->connecting = connecting;
        if (t->ctx->observer)
                t->ctx->observer(t, TUNNEL_EVENT_CONNECTING, t->state, t->ctx->userdata);
}

/* The one place that changes t->state: logs what happened and what happens next, then
 * tells the observer. Callers return right after: the observer may free t. */
void set_state(struct tunnel *t, enum tunnel_state state, int prio, const struct tunnel_run *run,
                      const char *fmt, ...)
{
        struct log_ctx ctx = ctx_of(t);
        enum tunnel_state old = t->state;
        char text[1536];
        va_list ap;

        if (state != TUNNEL_STARTING)
                set_connecting(t, false);
        if (state == TUNNEL_STOPPED)
                end_flapping(t, "stopped");
        if (old == TUNNEL_UP && state != TUNNEL_UP)
                ev_timer_stop(t->ctx->loop, &t->gate_timer);
        t->state = state;
        t->state_since = now_mono();
        availability_note(&t->avail, avail_class_of(t), t->state_since);
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

        ctx.state = tunnel_state_to_string(state);
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
                        t->flap_reported_at = t->state_since;
                        log_full(prio, &ctx, "still flapping (%lu messages at debug level so far): %s",
                                 t->flap_suppressed, text);
                } else {
                        t->flap_suppressed++;
                        log_full(LOG_DEBUG, &ctx, "%s", text);
                }
        } else
                log_full(prio, &ctx, "%s", text);

        if (t->is_carrier)
                share_sync_riders(t);
        if (t->ctx->observer)
                t->ctx->observer(t, TUNNEL_EVENT_STATE, old, t->ctx->userdata);
}

void end_flapping(struct tunnel *t, const char *why)
{
        struct log_ctx ctx = ctx_of(t);

        if (!t->flapping)
                return;
        t->flapping = false;
        log_full(LOG_NOTICE, &ctx, "no longer flapping (%s); %lu messages were logged at debug level meanwhile",
                 why, t->flap_suppressed);
        t->flap_suppressed = 0;
        flap_reset(&t->flaps);
        if (t->is_carrier)
                share_flapping(t, false);
}

/* ---- ending a run ---- */

/* tunneld ends the current run for a failure of its own finding (probe, start deadline, a
 * forward ssh could not set up): SIGTERM now, SIGKILL after stop_timeout, and the exit is
 * classed as class. The state stays until the exit is reaped. */
void end_run(struct tunnel *t, enum failure_class class, const char *fmt, ...)
{
        struct log_ctx ctx = ctx_of(t);
        char why[512], grace[DURATION_MAX];
        va_list ap;

        if (t->pid <= 0 || t->kill_class != FAILURE_NONE || t->state == TUNNEL_STOPPING)
                return;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        t->kill_class = class;
        ctx.failure = failure_class_to_string(class);
        log_full(t->flapping ? LOG_DEBUG : LOG_WARNING, &ctx, "%s: restarting ssh (SIGTERM to pid %d, SIGKILL in %s)",
                 why, (int)t->pid, format_duration(t->ctx->stop_timeout, grace, sizeof(grace)));
        t->flap_suppressed += t->flapping;
        if (t->probe)
                probe_stop(t->probe);
        ev_timer_stop(t->ctx->loop, &t->deadline_timer);
        process_kill(t->pid, SIGTERM);
        arm(t, &t->grace_timer, t->ctx->stop_timeout);
}

void on_grace_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;
        struct log_ctx ctx = ctx_of(t);
        char grace[DURATION_MAX];

        (void)loop;
        (void)revents;
        if (t->pid <= 0 || t->kill_sent)
                return;
        t->kill_sent = true;
        log_full(LOG_WARNING, &ctx, "ssh did not exit within %s of SIGTERM: sending SIGKILL",
                 format_duration(t->ctx->stop_timeout, grace, sizeof(grace)));
        process_kill(t->pid, SIGKILL);
}

/* ---- coming up ---- */

/* This run has been up for gatetime: a successful start (unless the probe ends it). */
void pass_gate(struct tunnel *t)
{
        struct log_ctx ctx = ctx_of(t);
        char gate[DURATION_MAX];

        if (t->gate_passed)
                return;
        t->gate_passed = t->ever_passed = true;
        end_flapping(t, "a run lasted gatetime");
        log_full(LOG_DEBUG, &ctx, "ssh has been up for gatetime %s: this start counts as a success",
                 format_duration(t->spec.gatetime, gate, sizeof(gate)));
}

void on_gate_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;

        (void)loop;
        (void)revents;
        if (t->state == TUNNEL_UP)
                pass_gate(t);
}

static void enter_up(struct tunnel *t)
{
        size_t remotes = strv_length(tunnel_spec_remote_forwards(&t->spec));
        char took[DURATION_MAX];

        t->run_up = true;
        t->up_since = now_mono();
        ev_timer_stop(t->ctx->loop, &t->deadline_timer);
        if (t->spec.gatetime > 0)
                arm(t, &t->gate_timer, t->spec.gatetime);
        else
                pass_gate(t);
        set_state(t, TUNNEL_UP, LOG_NOTICE, NULL, "up: ssh (pid %d) authenticated%s after %s", (int)t->pid,
                  remotes ? " and every remote forward accepted" : "",
                  format_duration(t->up_since - t->started_at, took, sizeof(took)));
}

/* multiplex: up once authenticated and every forward open by ssh's reply; degraded while
 * one failed (it is asked for again), up again when it opens. */
static void maybe_up_multiplexed(struct tunnel *t)
{
        bool all_open;
        size_t failed = 0;

        if (!t->authenticated || !mux_forwards_settled(t, &all_open))
                return;
        if (t->is_carrier) {
                /* the connection is up; each rider judges its own forwards */
                if (t->state == TUNNEL_STARTING && t->mux_ready)
                        enter_up(t);
                return;
        }
        if (all_open) {
                if (t->state == TUNNEL_STARTING || t->state == TUNNEL_DEGRADED)
                        enter_up(t);
                return;
        }
        for (size_t i = 0; i < t->n_fwds; i++)
                failed += t->fwd_status[i].state == FORWARD_FAILED;
        if (t->state == TUNNEL_STARTING || t->state == TUNNEL_UP) {
                if (t->state == TUNNEL_UP)
                        ev_timer_stop(t->ctx->loop, &t->gate_timer);
                set_state(t, TUNNEL_DEGRADED, LOG_WARNING, NULL,
                          "degraded: ssh (pid %d) runs, but %zu of %zu forwards failed (see above); "
                          "they are asked for again", (int)t->pid, failed, t->n_fwds);
        }
}

/* Up once ssh is authenticated, its -L/-D listeners are bound and every -R has its reply;
 * degraded if a forward failed and ssh runs on (exit_on_forward_failure = false). */
void maybe_up(struct tunnel *t)
{
        if (!tunnel_is_running(t) || t->kill_class != FAILURE_NONE)
                return;
        if (t->spec.multiplex) {
                maybe_up_multiplexed(t);
                return;
        }
        /* With ExitOnForwardFailure ssh exits by itself when no address of a -L/-D could
         * be bound, or when the server refuses a -R; but it carries on into the session
         * when a forward bound only one of its addresses (127.0.0.1 taken, ::1 free), and
         * clients of the other would reach whoever holds it. */
        if (t->local_forward_failed && t->session && t->spec.exit_on_forward_failure) {
                end_run(t, FAILURE_LOCAL_FORWARD, "a local forward is not bound on every address it should be "
                        "(exit_on_forward_failure)");
                return;
        }
        if (!t->authenticated || !t->session ||
            t->remote_replies < strv_length(tunnel_spec_remote_forwards(&t->spec)))
                return;
        if (t->forward_failed) {
                /* with exit_on_forward_failure ssh exits by itself (or is ended above) */
                if (t->state != TUNNEL_DEGRADED && !t->spec.exit_on_forward_failure)
                        set_state(t, TUNNEL_DEGRADED, LOG_WARNING, NULL,
                                  "degraded: ssh (pid %d) runs, but a forward failed (see above); "
                                  "exit_on_forward_failure = false keeps it running", (int)t->pid);
                return;
        }
        if (t->state == TUNNEL_STARTING)
                enter_up(t);
}

/* The slot phase of the deadline timer ends: ssh has been connecting for as long as the
 * network could take; the slot goes to the next tunnel, the deadline stays. The second
 * phase: not up within the start deadline. */
void on_deadline_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;
        double deadline = tunnel_start_deadline(&t->spec), slot = tunnel_slot_time(&t->spec);
        char took[DURATION_MAX];

        (void)loop;
        (void)revents;
        if (t->state != TUNNEL_STARTING)
                return;
        if (!t->deadline_final) {
                t->deadline_final = true;
                if (t->connecting) {
                        struct log_ctx ctx = ctx_of(t);
                        log_full(LOG_DEBUG, &ctx, "still connecting after %s: its start slot goes to the next tunnel",
                                 format_duration(slot, took, sizeof(took)));
                        set_connecting(t, false);
                }
                if (deadline > slot) {
                        arm(t, w, deadline - slot);
                        return;
                }
        }
        end_run(t, FAILURE_TIMEOUT, "ssh is not up after start_timeout %s (%s)",
                format_duration(deadline, took, sizeof(took)),
                !ssh_connected(t) ? (t->via_proxy ? "no answer from the destination through the jump host"
                                              : "the server has not answered")
                : !t->authenticated ? "connected, but the server has not completed the handshake"
                                    : "authenticated, but the forwards are not set up");
}

void on_retry_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;

        (void)loop;
        (void)revents;
        if (t->state == TUNNEL_BACKOFF)
                spawn(t, NULL, "backoff over", "restarting");
}

void on_lifetime_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;
        struct log_ctx ctx = ctx_of(t);
        char life[DURATION_MAX];

        (void)loop;
        (void)revents;
        if (!tunnel_is_running(t))
                return;
        format_duration(t->spec.max_lifetime, life, sizeof(life));
        if (t->spec.max_lifetime_action == LIFETIME_STOP) {
                log_full(LOG_NOTICE, &ctx, "ssh reached max_lifetime %s: stopping the tunnel (max_lifetime_action=stop)",
                         life);
                tunnel_hold(t, "max_lifetime reached");
                return;
        }
        log_full(LOG_NOTICE, &ctx, "ssh reached max_lifetime %s: restarting it", life);
        tunnel_restart(t, "max_lifetime reached");
}

static void reset_run(struct tunnel *t)
{
        t->kill_class = FAILURE_NONE;
        t->kill_sent = false;
        t->probe_misses = 0;
        t->authenticated = t->session = t->via_proxy = t->banner_seen = false;
        /* multiplex: ssh logs at VERBOSE, which has no "Executing proxy command" and no
         * banner line; the jump hosts (VERBOSE in their file) say when each is through */
        t->hops = t->spec.multiplex ? jump_hop_count(t->spec.jump_host) : 0;
        t->hops_authenticated = 0;
        t->via_proxy = t->hops > 0;
        t->handed_over = false;
        t->forward_refused_by_policy = t->forward_failed = t->local_forward_failed = false;
        t->allocated = strv_free(t->allocated);
        t->remote_replies = t->remote_confirmed = 0;
        t->run_failure = FAILURE_NONE;
        t->run_failure_on_proxy = false;
        t->run_up = t->gate_passed = false;
        t->deadline_final = false;
        lines_reset(&t->out);
}

void spawn(struct tunnel *t, const struct tunnel_run *run, const char *what, const char *next)
{
        double deadline = tunnel_start_deadline(&t->spec), slot = tunnel_slot_time(&t->spec);
        pid_t pid;
        int err_fd, r;

        ev_timer_stop(t->ctx->loop, &t->retry_timer);
        t->retry_at = 0;
        if (t->ctx->gate) {
                const char *why = t->ctx->gate(t, t->ctx->userdata);
                if (why) {
                        snprintf(t->wait_reason, sizeof(t->wait_reason), "%s", why);
                        if (t->state != TUNNEL_QUEUED)
                                set_state(t, TUNNEL_QUEUED, run && !run->requested ? LOG_WARNING : LOG_INFO, run,
                                          "%s; queued: %s", what, why);
                        return;
                }
        }
        if (riding(t)) {
                rider_spawn(t, run, what);
                return;
        }
        reset_run(t);
        remove_stale_sockets(t);
        r = mux_run_begin(t);
        if (r < 0)
                goto fail;
        if (write_run_files(t) < 0)
                goto fail;
        {
                _cleanup_strv_free_ char **argv = NULL;

                r = mux_run_argv(t, &argv);
                if (r >= 0)
                        r = process_spawn(argv ? argv : t->argv, ssh_environment(), false, &pid, &err_fd);
        }
        if (r < 0) {
                struct log_ctx ctx = ctx_of(t);
                ctx.failure = failure_class_to_string(FAILURE_EXEC);
                log_full_errno(LOG_ERR, r, &ctx, "cannot start ssh: %m");
                goto fail;
        }
        /* Watch the child before anything else can run (ev.pod: start ev_child right after
         * fork). */
        t->pid = pid;
        ev_child_set(&t->child_watcher, pid, 0);
        ev_child_start(t->ctx->loop, &t->child_watcher);
        t->stderr_fd = err_fd;
        ev_io_set(&t->stderr_watcher, t->stderr_fd, EV_READ);
        ev_io_start(t->ctx->loop, &t->stderr_watcher);

        set_connecting(t, true);
        t->started_at = now_mono();
        t->starts++;
        t->total_starts++;
        arm(t, &t->deadline_timer, slot < deadline ? slot : deadline);
        if (t->spec.max_lifetime > 0)
                arm(t, &t->lifetime_timer, t->spec.max_lifetime);
        if (t->restart_pending)
                t->restarts++;
        t->restart_pending = false;

        /* the same count as tunnelctl's STARTS (max_starts counts since the last manual start) */
        set_state(t, TUNNEL_STARTING, run && !run->requested ? LOG_WARNING : LOG_INFO, run,
                  "%s; %s: ssh pid %d (start %lu)", what, next, (int)pid, t->total_starts);
        return;

fail: {
                /* a start that did not happen is a failed run like any other */
                mux_run_end(t);
                struct tunnel_run failed = { .valid = true, .exit_status = -1, .failure = FAILURE_EXEC,
                                             .ended_at = now_mono() };

                t->starts++;
                t->total_starts++;
                t->started_at = failed.ended_at;
                finish_run(t, &failed);
        }
}

/* ---- probe ---- */

void on_probe(bool ok, const char *why, void *userdata)
{
        struct tunnel *t = userdata;
        struct log_ctx ctx = ctx_of(t);

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
        if (riding(t)) {
                /* shared fate: the connection the probe's traffic does not pass through */
                end_run(t->carrier, FAILURE_PROBE, "probe %s of tunnel %s failed %u times in a row (%s) although ssh "
                        "runs", t->spec.probe.connect, t->spec.name, t->probe_misses, why);
                return;
        }
        end_run(t, FAILURE_PROBE, "probe %s failed %u times in a row (%s) although ssh runs", t->spec.probe.connect,
                t->probe_misses, why);
}

int tunnel_new(const struct tunnel_context *ctx, const struct tunnel_spec *spec, void *owner, struct tunnel **ret)
{
        struct tunnel_change *c;
        struct tunnel *t;
        int r;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        *t = (struct tunnel){
                .ctx = ctx,
                .owner = owner,
                .state = TUNNEL_STOPPED,
                .state_since = now_mono(),
                .stderr_fd = -1,
        };
        mux_init(t);
        r = tunnel_change_new(t, spec, ctx->ssh, &c);
        if (r < 0) {
                free(t);
                return r;
        }
        take_change(t, c, true, true);
        availability_init(&t->avail, t->state_since);
        if (!spec->enabled)
                t->reason = "disabled in the configuration";
        ev_child_init(&t->child_watcher, on_child, 0, 0);
        ev_timer_init(&t->retry_timer, on_retry_timer, 0., 0.);
        ev_timer_init(&t->grace_timer, on_grace_timer, 0., 0.);
        ev_timer_init(&t->gate_timer, on_gate_timer, 0., 0.);
        ev_timer_init(&t->lifetime_timer, on_lifetime_timer, 0., 0.);
        ev_timer_init(&t->deadline_timer, on_deadline_timer, 0., 0.);
        ev_io_init(&t->stderr_watcher, on_stderr, -1, EV_READ);
        t->child_watcher.data = t->retry_timer.data = t->grace_timer.data = t->gate_timer.data = t;
        t->lifetime_timer.data = t->deadline_timer.data = t->stderr_watcher.data = t;
        *ret = t;
        return 0;
}

struct tunnel *tunnel_free(struct tunnel *t)
{
        struct ev_loop *loop;

        if (!t)
                return NULL;
        loop = t->ctx->loop;
        (void)tunnel_set_carrier(t, NULL);
        share_detach_all(t);
        free(t->rider_status);
        if (t->pid > 0)
                process_kill(t->pid, SIGKILL);
        ev_child_stop(loop, &t->child_watcher);
        ev_timer_stop(loop, &t->retry_timer);
        ev_timer_stop(loop, &t->grace_timer);
        ev_timer_stop(loop, &t->gate_timer);
        ev_timer_stop(loop, &t->lifetime_timer);
        ev_timer_stop(loop, &t->deadline_timer);
        ev_io_stop(loop, &t->stderr_watcher);
        if (t->stderr_fd >= 0)
                close(t->stderr_fd);
        remove_run_files(t);
        handover_free(t);
        mux_done(t);
        free(t->mux_path);
        free(t->mux_run_path);
        probe_free(t->probe);
        strv_free(t->allocated);
        strv_free(t->argv);
        free(t->jump_config);
        free(t->jump_config_path);
        free(t->known_hosts);
        free(t->known_hosts_path);
        tunnel_spec_done(&t->spec);
        free(t);
        return NULL;
}

bool tunnel_wants_start(const struct tunnel *t)
{
        return t->start_after_stop;
}

void tunnel_cancel_start(struct tunnel *t)
{
        t->start_after_stop = false;
}

void reset_counters(struct tunnel *t)
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
        case TUNNEL_DEGRADED:
        case TUNNEL_QUEUED:
        case _TUNNEL_STATE_MAX:
                return;
        }
}

void tunnel_stop(struct tunnel *t, const char *reason)
{
        char grace[DURATION_MAX];

        if (riding(t)) {
                rider_stop(t, reason);
                return;
        }
        t->reason = reason;
        handover_abort(t, "stops with the tunnel");
        switch (t->state) {
        case TUNNEL_STARTING:
        case TUNNEL_UP:
        case TUNNEL_DEGRADED:
                ev_timer_stop(t->ctx->loop, &t->gate_timer);
                ev_timer_stop(t->ctx->loop, &t->lifetime_timer);
                ev_timer_stop(t->ctx->loop, &t->deadline_timer);
                process_kill(t->pid, SIGTERM);
                arm(t, &t->grace_timer, t->ctx->stop_timeout);
                set_state(t, TUNNEL_STOPPING, LOG_INFO, NULL, "stopping (%s): SIGTERM sent to ssh pid %d, SIGKILL in %s",
                          reason, (int)t->pid, format_duration(t->ctx->stop_timeout, grace, sizeof(grace)));
                return;
        case TUNNEL_BACKOFF:
        case TUNNEL_FAILED:
        case TUNNEL_QUEUED:
                ev_timer_stop(t->ctx->loop, &t->retry_timer);
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
        if (riding(t)) {
                rider_restart(t, reason);
                return;
        }
        /* its own ssh from before it shared a connection: stopped, then it rides */
        if (!t->carrier && handover_begin(t, reason))
                return;         /* make-before-break: the old ssh serves until the new one does */
        if (tunnel_is_running(t) || t->state == TUNNEL_STOPPING) {
                /* first: STOPPING is then a restart's (down time, not off) from its start */
                t->start_after_stop = true;
                if (t->state != TUNNEL_STOPPING)
                        tunnel_stop(t, reason);
                t->reason = reason;
                return;
        }
        tunnel_start(t);
}

void tunnel_retry_now(struct tunnel *t, const char *reason)
{
        if (t->state != TUNNEL_BACKOFF)
                return;
        if (riding(t)) {
                tunnel_retry_now(t->carrier, reason);   /* one backoff per connection */
                return;
        }
        t->failures = 0;
        spawn(t, NULL, reason, "retrying now");
}

bool tunnel_retry_soon(struct tunnel *t, const char *reason)
{
        /* only failures a network change can cure: a refused key or a taken port stay as
         * they are, and their backoff must not be reset by every interface that comes up */
        if (t->state != TUNNEL_BACKOFF || !policy_network_may_cure(t->last_run.failure))
                return false;
        if (riding(t))
                return tunnel_retry_soon(t->carrier, reason);
        t->failures = 0;
        spawn(t, NULL, reason, "retrying now, backoff reset");
        return true;
}

void tunnel_dequeue(struct tunnel *t, const char *reason)
{
        if (t->state == TUNNEL_QUEUED)
                spawn(t, NULL, reason, "launched");
}
