/* SPDX-License-Identifier: MIT */
#include "tunnel.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hook.h"
#include "jump_config.h"
#include "lines.h"
#include "log.h"
#include "probe.h"
#include "process.h"
#include "ssh_argv.h"

/* ssh's plain lines (not its errors, never tunneld's own): at most this many per window at
 * their level, the rest at debug level with a count, so a client hammering a dead forward
 * target cannot flood the journal. */
#define CHATTER_LINES 50
#define CHATTER_WINDOW 10.0
/* What is read of ssh's stderr once it has exited: its last words, but bounded (a helper
 * that inherited the pipe may go on writing). */
#define FINAL_READ_MAX (64u << 10)

static const char *const state_names[_TUNNEL_STATE_MAX] = {
        [TUNNEL_STOPPED] = "stopped",
        [TUNNEL_STARTING] = "starting",
        [TUNNEL_UP] = "up",
        [TUNNEL_BACKOFF] = "backoff",
        [TUNNEL_FAILED] = "failed",
        [TUNNEL_STOPPING] = "stopping",
        [TUNNEL_QUEUED] = "queued",
        [TUNNEL_DEGRADED] = "degraded",
};

const char *tunnel_state_to_string(enum tunnel_state s)
{
        return s >= 0 && s < _TUNNEL_STATE_MAX ? state_names[s] : "?";
}

static unsigned hops(const struct tunnel_spec *s)
{
        unsigned n = 1;

        if (s->jump_host && strcmp(s->jump_host, "none") != 0)
                for (const char *p = s->jump_host; p; p = strchr(p + 1, ','))
                        n++;
        return n;
}

double tunnel_start_deadline(const struct tunnel_spec *s)
{
        return s->start_timeout > 0 ? s->start_timeout : (s->connect_timeout + 10.0) * hops(s);
}

double tunnel_slot_time(const struct tunnel_spec *s)
{
        double slot = (double)s->connect_timeout * hops(s), deadline = tunnel_start_deadline(s);

        return slot < deadline ? slot : deadline;
}

bool tunnel_is_running(const struct tunnel *t)
{
        return t->state == TUNNEL_STARTING || t->state == TUNNEL_UP || t->state == TUNNEL_DEGRADED;
}

unsigned tunnel_failures_shown(const struct tunnel *t)
{
        return t->gate_passed ? 0 : t->failures;
}

static const char *status_reason(const struct tunnel *t)
{
        switch (t->state) {
        case TUNNEL_QUEUED:
                return t->wait_reason;
        case TUNNEL_DEGRADED:
                return "a forward failed; exit_on_forward_failure = false keeps ssh running";
        case TUNNEL_STOPPED:
        case TUNNEL_FAILED:
        case TUNNEL_STOPPING:
                return t->reason;
        default:
                return NULL;
        }
}

void tunnel_get_status(const struct tunnel *t, double now, struct tunnel_status *ret)
{
        struct timespec wall;

        clock_gettime(CLOCK_REALTIME, &wall);
        *ret = (struct tunnel_status){
                .name = t->spec.name,
                .host = t->spec.host,
                .state = t->state,
                .reason = status_reason(t),
                .enabled = t->spec.enabled,
                .held = t->held,
                .flapping = t->flapping,
                .pid = t->pid > 0 ? t->pid : 0,
                .since = now - t->state_since,
                .state_since_wall = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9 - (now - t->state_since),
                .uptime = t->pid > 0 ? now - t->started_at : -1,
                .retry_in = t->state == TUNNEL_BACKOFF ? t->retry_at - now : -1,
                .starts = t->total_starts,
                .restarts = t->restarts,
                .prohibited = t->prohibited,
                .consecutive_failures = tunnel_failures_shown(t),
                .failures = t->total_failures,
                .last_run = &t->last_run,
                .last_run_ago = now - t->last_run.ended_at,
                .local_forwards = tunnel_spec_local_forwards(&t->spec),
                .remote_forwards = tunnel_spec_remote_forwards(&t->spec),
                .dynamic_forwards = tunnel_spec_dynamic_forwards(&t->spec),
                .allocated = t->pid > 0 ? t->allocated : NULL,
                .gatetime = t->spec.gatetime,
                .restart = t->spec.restart,
        };
}

static struct log_ctx ctx_of(const struct tunnel *t)
{
        struct log_ctx ctx = LOG_CTX_INIT;

        ctx.tunnel = t->spec.name;
        ctx.pid = t->pid > 0 ? t->pid : -1;
        return ctx;
}

static void arm(struct tunnel *t, ev_timer *w, double after)
{
        ev_timer_stop(t->ctx->loop, w);
        ev_timer_set(w, after > 0 ? after : 0., 0.);
        ev_timer_start(t->ctx->loop, w);
}

static void spawn(struct tunnel *t, const struct tunnel_run *run, const char *what, const char *next);
static void end_flapping(struct tunnel *t, const char *why);

/* max_parallel_starts counts the tunnels whose ssh is still connecting: from spawn until it
 * authenticates, ends, or has connected for tunnel_slot_time(). */
static void set_connecting(struct tunnel *t, bool connecting)
{
        if (t->connecting == connecting)
                return;
        t->connecting = connecting;
        if (t->ctx->observer)
                t->ctx->observer(t, TUNNEL_EVENT_CONNECTING, t->state, t->ctx->userdata);
}

/* The one place that changes t->state: logs what happened and what happens next, then
 * tells the observer. Callers return right after: the observer may free t. */
_printf_(5, 6)
static void set_state(struct tunnel *t, enum tunnel_state state, int prio, const struct tunnel_run *run,
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

        if (t->ctx->observer)
                t->ctx->observer(t, TUNNEL_EVENT_STATE, old, t->ctx->userdata);
}

static void end_flapping(struct tunnel *t, const char *why)
{
        struct log_ctx ctx = ctx_of(t);

        if (!t->flapping)
                return;
        t->flapping = false;
        log_full(LOG_NOTICE, &ctx, "no longer flapping (%s); %lu messages were logged at debug level meanwhile",
                 why, t->flap_suppressed);
        t->flap_suppressed = 0;
        flap_reset(&t->flaps);
}

/* ---- ending a run ---- */

/* tunneld ends the current run for a failure of its own finding (probe, start deadline, a
 * forward ssh could not set up): SIGTERM now, SIGKILL after stop_timeout, and the exit is
 * classed as class. The state stays until the exit is reaped. */
_printf_(3, 4)
static void end_run(struct tunnel *t, enum failure_class class, const char *fmt, ...)
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

static void on_grace_timer(struct ev_loop *loop, ev_timer *w, int revents)
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
static void pass_gate(struct tunnel *t)
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

static void on_gate_timer(struct ev_loop *loop, ev_timer *w, int revents)
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

/* Up once ssh is authenticated, its -L/-D listeners are bound and every -R has its reply;
 * degraded if a forward failed and ssh runs on (exit_on_forward_failure = false). */
static void maybe_up(struct tunnel *t)
{
        if (!tunnel_is_running(t) || t->kill_class != FAILURE_NONE)
                return;
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
static void on_deadline_timer(struct ev_loop *loop, ev_timer *w, int revents)
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
                !t->banner_seen ? (t->via_proxy ? "no answer from the destination through the jump host"
                                                : "the server has not answered")
                : !t->authenticated ? "connected, but the server has not completed the handshake"
                                    : "authenticated, but the forwards are not set up");
}

/* ---- ssh's stderr ---- */

/* ssh's plain lines, rate limited (its errors and cues never are). */
static void log_chatter(struct tunnel *t, int prio, const char *line)
{
        struct log_ctx ctx = ctx_of(t);
        double now = now_mono();

        if (now - t->chatter_since >= CHATTER_WINDOW) {
                if (t->chatter_dropped)
                        log_full(LOG_NOTICE, &ctx, "%lu lines of ssh's output went to the debug level "
                                 "(more than %d in %.0f s)", t->chatter_dropped, CHATTER_LINES, CHATTER_WINDOW);
                t->chatter_since = now;
                t->chatter_lines = 0;
                t->chatter_dropped = 0;
        }
        if (t->flapping || ++t->chatter_lines > CHATTER_LINES) {
                t->chatter_dropped += !t->flapping;
                t->flap_suppressed += t->flapping;
                prio = LOG_DEBUG;
        }
        log_full(prio, &ctx, "ssh: %s", line);
}

static void note_failure_line(struct tunnel *t, enum failure_class class, const char *line)
{
        struct log_ctx ctx = ctx_of(t);

        /* sshd said why it refused a -R: not a stale session but its policy */
        if (class == FAILURE_REMOTE_FORWARD && t->forward_refused_by_policy)
                class = FAILURE_FORWARD_DENIED;
        /* the first specific cause wins over a later generic "Connection closed" */
        if (!(failure_class_is_generic(class) && t->run_failure != FAILURE_NONE &&
              !failure_class_is_generic(t->run_failure))) {
                t->run_failure = class;
                /* before the destination answered, through a proxy: the jump host's line */
                t->run_failure_on_proxy = t->via_proxy && !t->banner_seen;
        }
        ctx.failure = failure_class_to_string(class);
        log_full(t->flapping ? LOG_DEBUG : LOG_WARNING, &ctx, "ssh: %s", line);
        t->flap_suppressed += t->flapping;

        if (class == FAILURE_LOCAL_FORWARD)
                t->local_forward_failed = true;
        else if (class == FAILURE_REMOTE_FORWARD || class == FAILURE_FORWARD_DENIED)
                t->remote_replies++;
        else
                return;
        t->forward_failed = true;
        maybe_up(t);
}

static void handle_line(struct tunnel *t, const char *line)
{
        struct log_ctx ctx = ctx_of(t);
        enum failure_class class;

        switch (ssh_line_parse(line, &class)) {
        case SSH_LINE_DEBUG:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                return;
        case SSH_LINE_PROXY:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                t->via_proxy = true;
                return;
        case SSH_LINE_BANNER:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                t->banner_seen = true;
                return;
        case SSH_LINE_FORWARD_REFUSED_BY_POLICY:
                log_chatter(t, LOG_INFO, line);
                t->forward_refused_by_policy = true;
                return;
        case SSH_LINE_REMOTE_FORWARD_OK:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                t->remote_replies++;
                t->remote_confirmed++;
                maybe_up(t);
                return;
        case SSH_LINE_ALLOCATED:
                /* the port the server chose for a -R 0:…: status and metrics show it */
                log_chatter(t, LOG_INFO, line);
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
                t->authenticated = t->banner_seen = true;
                set_connecting(t, false);
                maybe_up(t);
                return;
        case SSH_LINE_PROHIBITED:
                /* one connection through a forward, refused by the server's policy */
                t->prohibited++;
                log_chatter(t, LOG_WARNING, line);
                return;
        case SSH_LINE_FAILURE:
                note_failure_line(t, class, line);
                return;
        case SSH_LINE_PLAIN:
                log_chatter(t, LOG_INFO, line);
                return;
        }
}

static void on_line(const char *line, void *userdata)
{
        handle_line(userdata, line);
}

static void close_stderr(struct tunnel *t)
{
        lines_flush(&t->out, on_line, t);
        ev_io_stop(t->ctx->loop, &t->stderr_watcher);
        close(t->stderr_fd);
        t->stderr_fd = -1;
}

static void on_stderr(struct ev_loop *loop, ev_io *w, int revents)
{
        struct tunnel *t = w->data;

        (void)loop;
        (void)revents;
        /* one chunk per wakeup while ssh lives: fair to every other tunnel */
        if (lines_read(&t->out, t->stderr_fd, 0, NULL, on_line, t))
                close_stderr(t);
}

/* ---- exits ---- */

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
        if (n < size && !t->run_up)
                n += (size_t)snprintf(buf + n, size - n, ", never up");
        else if (n < size && t->spec.gatetime > 0 && !t->gate_passed) {
                char gate[DURATION_MAX];
                n += (size_t)snprintf(buf + n, size - n, ", up for less than gatetime %s",
                                      format_duration(t->spec.gatetime, gate, sizeof(gate)));
        }
        if (n < size && run->failure != FAILURE_NONE) {
                if (run->failure_on_proxy && t->spec.jump_host)
                        snprintf(buf + n, size - n, " (%s on the jump host %s: %s)", failure_class_to_string(run->failure),
                                 t->spec.jump_host, failure_class_hint(run->failure));
                else if (run->failure_on_proxy)
                        snprintf(buf + n, size - n, " (%s on the proxy of ssh_config_file: %s)",
                                 failure_class_to_string(run->failure), failure_class_hint(run->failure));
                else
                        snprintf(buf + n, size - n, " (%s: %s)", failure_class_to_string(run->failure),
                                 failure_class_hint(run->failure));
        }
}

static void on_retry_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;

        (void)loop;
        (void)revents;
        if (t->state == TUNNEL_BACKOFF)
                spawn(t, NULL, "backoff over", "restarting");
}

static void note_flapping(struct tunnel *t, const struct tunnel_run *run, const char *what)
{
        struct log_ctx ctx = ctx_of(t);
        char window[DURATION_MAX];

        if (!flap_note_failure(&t->flaps, &t->spec, run->ended_at) || t->flapping)
                return;
        t->flapping = true;
        t->flap_suppressed = 0;
        t->flap_reported_at = run->ended_at;
        ctx.failure = failure_class_to_string(run->failure);
        log_full(LOG_WARNING, &ctx, "flapping: %d failed starts within %s, the last: %s; "
                 "until a run lasts gatetime, its failures are logged at debug level, "
                 "with one line per flap_window",
                 t->spec.flap_threshold, format_duration(t->spec.flap_window, window, sizeof(window)), what);
        if (t->ctx->observer)
                t->ctx->observer(t, TUNNEL_EVENT_FLAPPING, t->state, t->ctx->userdata);
}

/* A run ended that tunneld did not ask to end: the verdict of policy.h, carried out. */
static void finish_run(struct tunnel *t, struct tunnel_run *run)
{
        const struct run_outcome outcome = {
                .ran = run->ran,
                .came_up = t->run_up,
                .passed_gate = t->gate_passed,
                .exit_status = run->exit_status,
                .exit_signal = run->exit_signal,
                .failure = run->failure,
                .ended_by_tunneld = t->kill_class != FAILURE_NONE,
        };
        const struct run_counters counters = { .starts = t->starts, .failures = t->failures,
                                               .ever_passed = t->ever_passed };
        struct verdict v = policy_judge(&t->spec, &counters, &outcome, random_unit());
        char what[1024], in[DURATION_MAX];

        run->failure = v.failure;
        t->total_failures[v.failure]++;
        t->last_run = *run;
        t->restart_pending = true;
        t->failures = v.failures;
        if (v.success)
                t->ever_passed = true;
        describe_run(t, run, what, sizeof(what));
        if (!v.success)
                note_flapping(t, run, what);

        switch (v.kind) {
        case VERDICT_FAILED:
                t->reason = v.reason;
                if (t->spec.max_starts > 0 && strcmp(v.reason, "max_starts reached") == 0)
                        set_state(t, TUNNEL_FAILED, LOG_ERR, run, "%s; not restarting (started %u times, max_starts %d)",
                                  what, t->starts, t->spec.max_starts);
                else
                        set_state(t, TUNNEL_FAILED, LOG_ERR, run, "%s; not restarting (%s)", what, v.why);
                return;
        case VERDICT_BACKOFF:
                t->retry_at = now_mono() + v.delay;
                arm(t, &t->retry_timer, v.delay);
                set_state(t, TUNNEL_BACKOFF, LOG_WARNING, run, "%s; restarting in %s (failed start %u in a row)",
                          what, format_duration(v.delay, in, sizeof(in)), t->failures);
                return;
        case VERDICT_RESTART_AFTER:
                t->retry_at = now_mono() + v.delay;
                arm(t, &t->retry_timer, v.delay);
                set_state(t, TUNNEL_BACKOFF, LOG_WARNING, run, "%s; restarting in %s", what,
                          format_duration(v.delay, in, sizeof(in)));
                return;
        case VERDICT_RESTART_NOW:
                spawn(t, run, what, "restarting now");
                return;
        }
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
        ev_timer_stop(loop, &t->deadline_timer);
        ev_timer_stop(loop, &t->grace_timer);
        if (t->stderr_fd >= 0) {
                /* ssh's last words come before our verdict, but no more than a bounded read:
                 * a helper that inherited the pipe may never close it */
                (void)lines_read(&t->out, t->stderr_fd, FINAL_READ_MAX, NULL, on_line, t);
                close_stderr(t);
        }

        if (WIFEXITED(status))
                run.exit_status = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
                run.exit_signal = WTERMSIG(status);
        run.ended_at = now_mono();
        run.ran = run.ended_at - t->started_at;
        run.failure = t->kill_class != FAILURE_NONE ? t->kill_class : t->run_failure;
        run.failure_on_proxy = t->kill_class == FAILURE_NONE && t->run_failure_on_proxy;
        run.pid = t->pid;
        t->pid = 0;
        if (t->probe)
                probe_stop(t->probe);

        if (t->state == TUNNEL_STOPPING) {
                char ran[DURATION_MAX];

                run.requested = true;
                run.failure = FAILURE_NONE;
                run.failure_on_proxy = false;
                t->last_run = run;
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

static void on_lifetime_timer(struct ev_loop *loop, ev_timer *w, int revents)
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

/* ---- spawning ---- */

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

/* A -L Unix socket left behind by a killed ssh makes every later bind fail "Address
 * already in use". Remove it if it is a socket nobody listens on; never anything else. */
static void remove_stale_sockets(struct tunnel *t)
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

static void reset_run(struct tunnel *t)
{
        t->kill_class = FAILURE_NONE;
        t->kill_sent = false;
        t->probe_misses = 0;
        t->authenticated = t->session = t->via_proxy = t->banner_seen = false;
        t->forward_refused_by_policy = t->forward_failed = t->local_forward_failed = false;
        t->allocated = strv_free(t->allocated);
        t->remote_replies = t->remote_confirmed = 0;
        t->run_failure = FAILURE_NONE;
        t->run_failure_on_proxy = false;
        t->run_up = t->gate_passed = false;
        t->deadline_final = false;
        lines_reset(&t->out);
}

static void spawn(struct tunnel *t, const struct tunnel_run *run, const char *what, const char *next)
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
        reset_run(t);
        remove_stale_sockets(t);
        if (t->jump_config) {
                r = write_file_atomic(t->jump_config_path, t->jump_config, 0600);
                if (r < 0) {
                        struct log_ctx ctx = ctx_of(t);
                        log_full_errno(LOG_ERR, r, &ctx, "cannot write %s (the jump host's ssh settings): %m",
                                       t->jump_config_path);
                        goto fail;
                }
        }
        r = process_spawn(t->argv, ssh_environment(), false, &pid, &err_fd);
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
                struct tunnel_run failed = { .valid = true, .exit_status = -1, .failure = FAILURE_EXEC,
                                             .ended_at = now_mono() };

                t->starts++;
                t->total_starts++;
                t->started_at = failed.ended_at;
                finish_run(t, &failed);
        }
}

/* ---- probe ---- */

static void on_probe(bool ok, const char *why, void *userdata)
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
        end_run(t, FAILURE_PROBE, "probe %s failed %u times in a row (%s) although ssh runs", t->spec.probe.connect,
                t->probe_misses, why);
}

/* ---- public API ---- */

/* A spec and everything derived from it (ssh's argv, the jump hosts' file, the probe):
 * made before a reload's point of no return, so that applying it cannot fail. */
struct tunnel_change {
        struct tunnel_spec spec;
        char **argv;
        char *jump_config;
        char *jump_config_path;
        struct probe *probe;
};

struct tunnel_change *tunnel_change_free(struct tunnel_change *c)
{
        if (!c)
                return NULL;
        strv_free(c->argv);
        free(c->jump_config);
        free(c->jump_config_path);
        probe_free(c->probe);
        tunnel_spec_done(&c->spec);
        free(c);
        return NULL;
}

int tunnel_change_new(struct tunnel *t, const struct tunnel_spec *spec, const char *ssh, struct tunnel_change **ret)
{
        struct tunnel_change *c = calloc(1, sizeof(*c));
        int r;

        if (!c)
                return -ENOMEM;
        r = tunnel_spec_copy(spec, &c->spec);
        if (r < 0) {
                free(c);
                return r;
        }
        r = jump_config_render(&c->spec, &c->jump_config);
        if (r >= 0 && c->jump_config &&
            asprintf(&c->jump_config_path, "%s/%s.ssh_config", t->ctx->runtime_dir ? t->ctx->runtime_dir : "/tmp",
                     c->spec.name) < 0) {
                c->jump_config_path = NULL;
                r = -ENOMEM;
        }
        if (r >= 0)
                r = ssh_argv_build(&c->spec, ssh, c->jump_config_path, &c->argv);
        if (r >= 0 && c->spec.probe.connect)
                r = probe_new(t->ctx->loop, &c->spec.probe, on_probe, t, &c->probe);
        if (r < 0) {
                tunnel_change_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

/* Take c's spec (and, with command, its argv and jump file); c is freed. */
static void take_change(struct tunnel *t, struct tunnel_change *c, bool command, bool probe)
{
        tunnel_spec_done(&t->spec);
        t->spec = c->spec;
        c->spec = (struct tunnel_spec){0};
        if (command) {
                if (t->jump_config_path && strcmp_null(c->jump_config_path, t->jump_config_path) != 0)
                        (void)unlink(t->jump_config_path);
                strv_free(t->argv);
                free(t->jump_config);
                free(t->jump_config_path);
                t->argv = c->argv;
                t->jump_config = c->jump_config;
                t->jump_config_path = c->jump_config_path;
                c->argv = NULL;
                c->jump_config = c->jump_config_path = NULL;
        }
        if (probe) {
                probe_free(t->probe);
                t->probe = c->probe;
                c->probe = NULL;
        }
        tunnel_change_free(c);
}

int tunnel_new(const struct tunnel_context *ctx, const struct tunnel_spec *spec, struct tunnel **ret)
{
        struct tunnel_change *c;
        struct tunnel *t;
        int r;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        *t = (struct tunnel){
                .ctx = ctx,
                .state = TUNNEL_STOPPED,
                .state_since = now_mono(),
                .stderr_fd = -1,
        };
        r = tunnel_change_new(t, spec, ctx->ssh, &c);
        if (r < 0) {
                free(t);
                return r;
        }
        take_change(t, c, true, true);
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
        if (t->jump_config_path)
                (void)unlink(t->jump_config_path);
        probe_free(t->probe);
        hook_free(t->hook);
        strv_free(t->allocated);
        strv_free(t->argv);
        free(t->jump_config);
        free(t->jump_config_path);
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
        case TUNNEL_DEGRADED:
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
        if (tunnel_is_running(t) || t->state == TUNNEL_STOPPING) {
                if (t->state != TUNNEL_STOPPING)
                        tunnel_stop(t, reason);
                t->reason = reason;
                t->start_after_stop = true;
                return;
        }
        tunnel_start(t);
}

void tunnel_reconfigure(struct tunnel *t, struct tunnel_change *c)
{
        bool enabled = c->spec.enabled;

        /* A running child keeps the argv it was started with; the new one is for the next start. */
        take_change(t, c, true, true);
        /* a new configuration has not proven itself yet: its first start is judged by
         * fail_fast again */
        t->ever_passed = false;
        if (!enabled) {
                tunnel_stop(t, "disabled in the configuration");
                return;
        }
        if (t->held && (t->state == TUNNEL_STOPPED || t->state == TUNNEL_STOPPING)) {
                /* an operator stopped it: the new spec waits for their start */
                t->starts = t->failures = 0;
                return;
        }
        tunnel_restart(t, "configuration changed");
}

/* The current run's timers, re-armed for the new spec: what is left of each. */
static void rearm_run_timers(struct tunnel *t)
{
        double now = now_mono();

        if (t->state == TUNNEL_UP && !t->gate_passed) {
                double left = t->spec.gatetime - (now - t->up_since);
                if (left <= 0)
                        pass_gate(t);
                else
                        arm(t, &t->gate_timer, left);
        }
        ev_timer_stop(t->ctx->loop, &t->lifetime_timer);
        if (t->pid > 0 && t->spec.max_lifetime > 0)
                arm(t, &t->lifetime_timer, t->spec.max_lifetime - (now - t->started_at));
        if (t->state == TUNNEL_STARTING && t->kill_class == FAILURE_NONE) {
                double ran = now - t->started_at, slot = tunnel_slot_time(&t->spec);

                if (!t->deadline_final && ran < slot)
                        arm(t, &t->deadline_timer, slot - ran);
                else {
                        t->deadline_final = true;
                        set_connecting(t, false);
                        arm(t, &t->deadline_timer, tunnel_start_deadline(&t->spec) - ran);
                }
        }
}

void tunnel_update_policy(struct tunnel *t, struct tunnel_change *c)
{
        const struct probe_spec *a = &t->spec.probe, *b = &c->spec.probe;
        bool probe_changed = strcmp_null(a->connect, b->connect) != 0 || a->interval != b->interval ||
                             a->timeout != b->timeout || a->failures != b->failures ||
                             strcmp_null(a->send, b->send) != 0 || strcmp_null(a->expect, b->expect) != 0;
        struct log_ctx ctx = ctx_of(t);

        take_change(t, c, false, probe_changed);
        if (probe_changed && t->probe && t->state == TUNNEL_UP) {
                t->probe_misses = 0;
                probe_start(t->probe);
        }
        rearm_run_timers(t);
        if (t->pid > 0)
                log_full(LOG_INFO, &ctx, "supervision settings changed: applied to the running ssh (pid %d)", (int)t->pid);
        else
                log_full(LOG_INFO, &ctx, "supervision settings changed: applied");
}

void tunnel_retry_now(struct tunnel *t, const char *reason)
{
        if (t->state != TUNNEL_BACKOFF)
                return;
        t->failures = 0;
        spawn(t, NULL, reason, "retrying now");
}

bool tunnel_retry_soon(struct tunnel *t, const char *reason)
{
        /* only failures a network change can cure: a refused key or a taken port stay as
         * they are, and their backoff must not be reset by every interface that comes up */
        if (t->state != TUNNEL_BACKOFF || !policy_network_may_cure(t->last_run.failure))
                return false;
        t->failures = 0;
        spawn(t, NULL, reason, "retrying now, backoff reset");
        return true;
}

void tunnel_dequeue(struct tunnel *t, const char *reason)
{
        if (t->state == TUNNEL_QUEUED)
                spawn(t, NULL, reason, "launched");
}
