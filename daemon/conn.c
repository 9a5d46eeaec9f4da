/* SPDX-License-Identifier: MIT */
/* conn: a connection's state machine, its users and its verbs. Spawning a run and judging
 * its end are conn_run.c's, its forwards conn_forward.c's, make-before-break
 * conn_handover.c's. */
#include "conn_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jump_config.h"

static const char *const state_names[_CONN_STATE_MAX] = {
        [CONN_STOPPED] = "stopped",
        [CONN_QUEUED] = "queued",
        [CONN_STARTING] = "starting",
        [CONN_UP] = "up",
        [CONN_BACKOFF] = "backoff",
        [CONN_FAILED] = "failed",
        [CONN_STOPPING] = "stopping",
};

const char *conn_state_to_string(enum conn_state s)
{
        return s >= 0 && s < _CONN_STATE_MAX ? state_names[s] : "?";
}

const char *conn_forward_state_to_string(enum forward_state s)
{
        switch (s) {
        case FORWARD_PENDING: return "pending";
        case FORWARD_OPEN: return "open";
        case FORWARD_FAILED: return "failed";
        }
        return "?";
}

void conn_run_log_fields(const struct conn_run *run, struct log_ctx *ctx)
{
        if (!run)
                return;
        if (run->pid > 0)
                ctx->pid = run->pid;
        ctx->exit_status = run->exit_status;
        ctx->exit_signal = run->exit_signal;
        if (run->failure != FAILURE_NONE)
                ctx->failure = failure_class_to_string(run->failure);
}

struct log_ctx conn_log_ctx(const struct conn *c)
{
        struct log_ctx ctx = LOG_CTX_INIT;

        ctx.connection = c->name;
        /* a tunnel's own connection: its lines are the tunnel's (journalctl TUNNEL=NAME) */
        if (!c->shared)
                ctx.tunnel = c->name;
        ctx.destination = conn_get_destination(c);
        ctx.pid = c->master ? master_pid(c->master) : -1;
        if (ctx.pid == 0)
                ctx.pid = -1;
        return ctx;
}

void conn_arm(struct conn *c, ev_timer *w, double after)
{
        ev_timer_stop(c->ctx->loop, w);
        ev_timer_set(w, after > 0 ? after : 0., 0.);
        ev_timer_start(c->ctx->loop, w);
}

bool conn_is_running(const struct conn *c)
{
        return c->state == CONN_STARTING || c->state == CONN_UP;
}

void conn_set_connecting(struct conn *c, bool connecting)
{
        if (c->run.connecting == connecting)
                return;
        c->run.connecting = connecting;
        if (c->ctx->observer)
                c->ctx->observer(c, CONN_EVENT_CONNECTING, c->state, c->ctx->userdata);
}

/* A flapping connection's churn goes to debug level: its final verdicts do not, and once
 * per flap_window an exit is logged as usual, so that the log still says what it does. */
static int flap_prio(struct conn *c, int prio, const struct conn_run *run, char *prefix, size_t size)
{
        prefix[0] = '\0';
        if (!c->flap.flapping || prio <= LOG_ERR || c->state == CONN_STOPPED || c->state == CONN_STOPPING)
                return prio;
        if (run && c->state_since - c->flap.reported_at >= c->spec.sup.flap_window) {
                c->flap.reported_at = c->state_since;
                snprintf(prefix, size, "still flapping (%lu messages at debug level so far): ", c->flap.suppressed);
                return prio;
        }
        c->flap.suppressed++;
        return LOG_DEBUG;
}

void conn_set_state(struct conn *c, enum conn_state state, int prio, const struct conn_run *run, const char *fmt, ...)
{
        enum conn_state old = c->state;
        char prefix[96], text[1536], news[1700];
        va_list ap;

        if (state != CONN_STARTING)
                conn_set_connecting(c, false);
        if (state == CONN_STOPPED)
                conn_end_flapping(c, "stopped");
        if (old == CONN_UP && state != CONN_UP)
                ev_timer_stop(c->ctx->loop, &c->gate_timer);
        c->state = state;
        c->state_since = now_mono();

        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        prio = flap_prio(c, prio, run, prefix, sizeof(prefix));
        snprintf(news, sizeof(news), "%s%s", prefix, text);

        /* A shared connection tells its story once, under its own name; a tunnel's own
         * connection is told by the tunnel (one line per change, the tunnel's). */
        if (c->shared || !c->users) {
                struct log_ctx ctx = conn_log_ctx(c);

                ctx.state = conn_state_to_string(state);
                conn_run_log_fields(run, &ctx);
                log_full(prio, &ctx, "%s", news);
        }
        for (struct conn_user *u = c->users, *next; u; u = next) {
                next = u->next;
                u->ops->changed(u, old, prio, run, news);
        }
        conn_alt_on_state(c);
        if (c->ctx->observer)
                c->ctx->observer(c, CONN_EVENT_STATE, old, c->ctx->userdata);
}

void conn_end_flapping(struct conn *c, const char *why)
{
        struct log_ctx ctx = conn_log_ctx(c);

        if (!c->flap.flapping)
                return;
        c->flap.flapping = false;
        log_full(LOG_NOTICE, &ctx, "no longer flapping (%s); %lu messages were logged at debug level meanwhile",
                 why, c->flap.suppressed);
        c->flap.suppressed = 0;
        policy_flap_reset(&c->flap.ring);
        if (c->master)
                master_set_quiet(c->master, false);
        for (struct conn_user *u = c->users; u; u = u->next)
                if (u->ops->flapping)
                        u->ops->flapping(u, false);
}

/* ---- coming up ---- */

void conn_pass_gate(struct conn *c)
{
        struct log_ctx ctx = conn_log_ctx(c);
        char gate[DURATION_MAX];

        if (c->run.gate_passed)
                return;
        c->run.gate_passed = c->counters.ever_passed = true;
        conn_end_flapping(c, "a run lasted gatetime");
        log_full(LOG_DEBUG, &ctx, "ssh has been up for gatetime %s: this start counts as a success",
                 format_duration(c->spec.sup.gatetime, gate, sizeof(gate)));
}

static void on_gate_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct conn *c = w->data;

        (void)loop;
        (void)revents;
        if (c->state == CONN_UP)
                conn_pass_gate(c);
}

/* Up once ssh authenticated and its control socket answered. */
void conn_maybe_up(struct conn *c)
{
        char took[DURATION_MAX];

        if (c->state != CONN_STARTING || !c->master || c->run.kill_class != FAILURE_NONE ||
            !master_is_authenticated(c->master) || !master_is_ready(c->master))
                return;
        c->run.came_up = true;
        c->run.up_since = now_mono();
        ev_timer_stop(c->ctx->loop, &c->deadline_timer);
        if (c->spec.sup.gatetime > 0)
                conn_arm(c, &c->gate_timer, c->spec.sup.gatetime);
        else
                conn_pass_gate(c);
        conn_set_state(c, CONN_UP, LOG_INFO, NULL, "up: ssh (pid %d) authenticated after %s",
                       (int)master_pid(c->master),
                       format_duration(c->run.up_since - c->run.started_at, took, sizeof(took)));
}

/* ---- ending a run ---- */

void conn_end_run(struct conn *c, enum failure_class class, const char *fmt, ...)
{
        struct log_ctx ctx = conn_log_ctx(c);
        char why[512], grace[DURATION_MAX];
        va_list ap;

        if (!c->master || !conn_is_running(c) || c->run.kill_class != FAILURE_NONE)
                return;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        c->run.kill_class = class;
        ctx.failure = failure_class_to_string(class);
        log_full(c->flap.flapping ? LOG_DEBUG : LOG_WARNING, &ctx, "%s: restarting ssh (SIGTERM to pid %d, SIGKILL in %s)",
                 why, (int)master_pid(c->master), format_duration(c->ctx->stop_timeout, grace, sizeof(grace)));
        c->flap.suppressed += c->flap.flapping;
        ev_timer_stop(c->ctx->loop, &c->deadline_timer);
        master_stop(c->master, c->ctx->stop_timeout);
}

/* The slot phase of the deadline ends: ssh has been connecting for as long as the network
 * could take; the slot goes to the next connection, the deadline stays. The second phase:
 * not up within the start deadline. */
static void on_deadline_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct conn *c = w->data;
        double deadline = conn_start_deadline(&c->spec), slot = conn_slot_time(&c->spec);
        char took[DURATION_MAX];

        (void)loop;
        (void)revents;
        if (c->state != CONN_STARTING || !c->master)
                return;
        if (c->path_dead_since > 0 && !c->run.deadline_final && now_mono() - c->run.started_at < slot - 0.01) {
                /* a probe of a dead path: no TCP connection yet, a new ssh tries (its SYNs, not
                 * TCP's backed-off retransmissions, find the path's return) */
                if (!master_answered(c->master) && !conn_path_has_tcp(c)) {
                        c->run.probe_ended = true;
                        conn_set_connecting(c, false);  /* its slot to the next: the path may be another's */
                        ev_timer_stop(c->ctx->loop, &c->deadline_timer);
                        master_stop(c->master, c->ctx->stop_timeout);
                } else
                        conn_arm(c, w, slot - (now_mono() - c->run.started_at));
                return;
        }
        if (!c->run.deadline_final) {
                c->run.deadline_final = true;
                if (c->run.connecting) {
                        struct log_ctx ctx = conn_log_ctx(c);
                        log_full(LOG_DEBUG, &ctx, "still connecting after %s: its start slot goes to the next one",
                                 format_duration(slot, took, sizeof(took)));
                        conn_set_connecting(c, false);
                }
                if (deadline > slot) {
                        conn_arm(c, w, deadline - slot);
                        return;
                }
        }
        conn_end_run(c, FAILURE_TIMEOUT, "ssh is not up after start_timeout %s (%s)",
                     format_duration(deadline, took, sizeof(took)),
                     !master_answered(c->master)
                             ? (master_via_proxy(c->master) ? "no answer from the destination through the jump host"
                                                            : "the server has not answered")
                     : !master_is_authenticated(c->master) ? "connected, but the server has not completed the handshake"
                                                            : "authenticated, but its control socket does not answer");
}

static void on_retry_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct conn *c = w->data;

        (void)loop;
        (void)revents;
        if (c->state == CONN_BACKOFF)
                conn_spawn(c, NULL, "backoff over", "restarting");
        else if (c->state == CONN_UP && c->restart_again) {
                const char *why = c->restart_again;

                c->restart_again = NULL;
                c->run.retry_at = 0;
                (void)conn_handover_begin(c, why);      /* not now (ssh is being ended): the restart follows anyway */
        }
}

/* max_lifetime_action = stop: every user stays stopped until started. */
static void stop_for_good(struct conn *c, const char *reason)
{
        for (struct conn_user *u = c->users, *next; u; u = next) {
                next = u->next;
                if (u->attached && u->ops->held)
                        u->ops->held(u, reason);        /* detaches it: the last one stops c */
        }
}

static void on_lifetime_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct conn *c = w->data;
        struct log_ctx ctx = conn_log_ctx(c);
        char life[DURATION_MAX];

        (void)loop;
        (void)revents;
        if (!conn_is_running(c))
                return;
        format_duration(c->spec.sup.max_lifetime, life, sizeof(life));
        if (c->spec.sup.max_lifetime_action == LIFETIME_STOP) {
                log_full(LOG_NOTICE, &ctx, "ssh reached max_lifetime %s: stopping the tunnel%s (max_lifetime_action=stop)",
                         life, c->n_attached > 1 ? "s on it" : "");
                stop_for_good(c, "max_lifetime reached");
                return;
        }
        log_full(LOG_NOTICE, &ctx, "ssh reached max_lifetime %s: restarting it", life);
        conn_restart(c, "max_lifetime reached");
}

static void reset_counters(struct conn *c)
{
        conn_end_flapping(c, "started again by request");
        c->counters.starts = 0;
        c->counters.failures = 0;
        /* ever_passed stays: fail_fast is about a configuration that never worked, and only
         * a changed configuration makes the next start a first one again */
        c->reason = NULL;
}

/* No user wants it any more: SIGTERM (SIGKILL after stop_timeout), or stopped at once. */
static void stop(struct conn *c, const char *reason)
{
        char grace[DURATION_MAX];

        c->reason = reason;
        c->restart_again = NULL;
        conn_handover_abort(c, "stops with the connection");
        switch (c->state) {
        case CONN_STARTING:
        case CONN_UP:
                ev_timer_stop(c->ctx->loop, &c->gate_timer);
                ev_timer_stop(c->ctx->loop, &c->lifetime_timer);
                ev_timer_stop(c->ctx->loop, &c->deadline_timer);
                master_stop(c->master, c->ctx->stop_timeout);
                conn_set_state(c, CONN_STOPPING, LOG_INFO, NULL, "stopping (%s): SIGTERM sent to ssh pid %d, SIGKILL in %s",
                               reason, (int)master_pid(c->master),
                               format_duration(c->ctx->stop_timeout, grace, sizeof(grace)));
                return;
        case CONN_BACKOFF:
        case CONN_FAILED:
        case CONN_QUEUED:
                ev_timer_stop(c->ctx->loop, &c->retry_timer);
                c->run.retry_at = 0;
                conn_set_state(c, CONN_STOPPED, LOG_NOTICE, NULL, "stopped (%s)", reason);
                return;
        case CONN_STOPPING:
                c->start_after_stop = false;
                return;
        case CONN_STOPPED:
        case _CONN_STATE_MAX:
                return;
        }
}

/* Someone wants it running. */
static void start(struct conn *c, bool manual)
{
        switch (c->state) {
        case CONN_STOPPED:
        case CONN_FAILED:
                reset_counters(c);
                conn_spawn(c, NULL, "starting", "launched");
                return;
        case CONN_BACKOFF:
                if (manual) {
                        reset_counters(c);
                        conn_spawn(c, NULL, "start requested", "launched");
                }
                return;
        case CONN_STOPPING:
                c->start_after_stop = true;
                return;
        case CONN_QUEUED:
        case CONN_STARTING:
        case CONN_UP:
        case _CONN_STATE_MAX:
                return;
        }
}

/* ---- users ---- */

void conn_add_user(struct conn *c, struct conn_user *u)
{
        u->conn = c;
        u->attached = false;
        u->prev = NULL;
        u->next = c->users;
        if (c->users)
                c->users->prev = u;
        c->users = u;
        c->n_users++;
}

void conn_remove_user(struct conn_user *u)
{
        struct conn *c = u->conn;

        if (!c)
                return;
        for (struct conn_forward *f = c->fwds.first, *next; f; f = next) {
                next = f->next;
                if (f->user == u)
                        conn_forward_remove(c, f);
        }
        conn_detach(u, "no tunnel uses the connection any more");
        if (u->prev)
                u->prev->next = u->next;
        else
                c->users = u->next;
        if (u->next)
                u->next->prev = u->prev;
        u->prev = u->next = NULL;
        u->conn = NULL;
        c->n_users--;
}

void conn_attach(struct conn_user *u, bool manual)
{
        struct conn *c = u->conn;

        if (!u->attached) {
                u->attached = true;
                c->n_attached++;
        }
        start(c, manual);
}

void conn_detach(struct conn_user *u, const char *reason)
{
        struct conn *c = u->conn;

        if (!c || !u->attached)
                return;
        u->attached = false;
        if (--c->n_attached == 0)
                stop(c, reason);
}

/* ---- verbs ---- */

void conn_restart(struct conn *c, const char *reason)
{
        if (conn_is_handing_over(c)) {
                struct log_ctx ctx = conn_log_ctx(c);
                /* a new ssh is taking the forwards over already, or is queued to: that is
                 * the restart asked for */
                if (c->master)
                        log_full(LOG_INFO, &ctx, "%s: a make-before-break restart is under way already (ssh pid %d)",
                                 reason, (int)master_pid(c->master));
                else
                        log_full(LOG_INFO, &ctx, "%s: a make-before-break restart is under way already (its new ssh "
                                 "is queued: %s)", reason, c->wait_reason);
                return;
        }
        reset_counters(c);
        if (conn_handover_begin(c, reason))
                return;         /* make-before-break: the old ssh serves until the new one does */
        if (conn_is_running(c)) {
                c->start_after_stop = true;
                stop(c, reason);
                c->reason = reason;
                return;
        }
        if (c->state == CONN_STOPPING) {
                c->start_after_stop = true;
                return;
        }
        if (c->n_attached > 0 && c->state != CONN_QUEUED)
                conn_spawn(c, NULL, reason, "launched");
}

void conn_retry_now(struct conn *c, const char *reason)
{
        if (c->state != CONN_BACKOFF)
                return;
        c->counters.failures = 0;
        conn_spawn(c, NULL, reason, "retrying now");
}

bool conn_retry_soon(struct conn *c, const char *reason)
{
        /* only failures a network change can cure: a refused key or a bad option stay as
         * they are, and their backoff must not be reset by every interface that comes up */
        if (c->state != CONN_BACKOFF || !policy_network_may_cure(c->last_run.failure))
                return false;
        c->counters.failures = 0;
        conn_spawn(c, NULL, reason, "retrying now, backoff reset");
        return true;
}

void conn_network_changed(struct conn *c, struct netpath *np)
{
        char why[256], reason[300];

        if (c->state != CONN_UP || conn_is_handing_over(c) || c->run.kill_class != FAILURE_NONE ||
            !conn_path_moved(c, np, why, sizeof(why)))
                return;
        snprintf(reason, sizeof(reason), "the network path moved (%s)", why);
        if (!conn_handover_begin(c, reason))
                conn_end_run(c, FAILURE_UNREACHABLE, "%s", reason);
}

void conn_resumed(struct conn *c)
{
        if (c->state == CONN_UP && !conn_is_handing_over(c))
                (void)conn_handover_begin(c, "resumed from sleep");
        else if (c->state == CONN_BACKOFF)
                conn_retry_now(c, "resumed from sleep");
}

void conn_dequeue(struct conn *c, const char *reason)
{
        if (c->state == CONN_QUEUED)
                conn_spawn(c, NULL, reason, "launched");
}

void conn_cancel_start(struct conn *c)
{
        c->start_after_stop = false;
}

/* ---- life ---- */

int conn_new(const struct conn_context *ctx, const char *name, const struct tunnel_spec *spec, bool shared,
             void *owner, struct conn **ret)
{
        struct conn *c = calloc(1, sizeof(*c));
        int r;

        if (!c)
                return -ENOMEM;
        *c = (struct conn){
                .ctx = ctx,
                .shared = shared,
                .owner = owner,
                .state = CONN_STOPPED,
                .state_since = now_mono(),
                .name = strdup(name),
        };
        if (!c->name) {
                free(c);
                return -ENOMEM;
        }
        r = tunnel_spec_copy(spec, &c->spec);
        if (r >= 0)
                r = conn_setup_new(c, &c->spec, ctx->ssh, 0, &c->setup);
        if (r >= 0)
                r = conn_alts_new(c, &c->spec, ctx->ssh, &c->alts);
        if (r < 0) {
                conn_setup_done(&c->setup);
                tunnel_spec_done(&c->spec);
                free(c->name);
                free(c);
                return r;
        }
        ev_timer_init(&c->retry_timer, on_retry_timer, 0., 0.);
        ev_timer_init(&c->deadline_timer, on_deadline_timer, 0., 0.);
        ev_timer_init(&c->gate_timer, on_gate_timer, 0., 0.);
        ev_timer_init(&c->lifetime_timer, on_lifetime_timer, 0., 0.);
        c->retry_timer.data = c->deadline_timer.data = c->gate_timer.data = c->lifetime_timer.data = c;
        conn_forwards_init(c);
        *ret = c;
        return 0;
}

struct conn *conn_free(struct conn *c)
{
        struct ev_loop *loop;

        if (!c)
                return NULL;
        loop = c->ctx->loop;
        while (c->users)
                conn_remove_user(c->users);
        ev_timer_stop(loop, &c->retry_timer);
        ev_timer_stop(loop, &c->deadline_timer);
        ev_timer_stop(loop, &c->gate_timer);
        ev_timer_stop(loop, &c->lifetime_timer);
        ev_timer_stop(loop, &c->fwds.retry);
        c->master = master_free(c->master);
        conn_idle_free(c);
        conn_handover_free(c);
        conn_remove_files(c);
        c->alts = conn_alts_free(c, c->alts);
        conn_setup_done(&c->setup);
        tunnel_spec_done(&c->spec);
        free(c->name);
        free(c);
        return NULL;
}

/* ---- what others read ---- */

double conn_start_deadline(const struct tunnel_spec *s)
{
        unsigned hops = 1 + jump_hop_count(s->jump_host);

        return s->sup.start_timeout > 0 ? s->sup.start_timeout : (s->connect_timeout + 10.0) * hops;
}

double conn_slot_time(const struct tunnel_spec *s)
{
        double slot = (double)s->connect_timeout * (1 + jump_hop_count(s->jump_host)), deadline = conn_start_deadline(s);

        return slot < deadline ? slot : deadline;
}

double conn_get_uptime(const struct conn *c, double now)
{
        return c->master && master_pid(c->master) > 0 ? now - c->run.started_at : -1;
}

double conn_get_retry_in(const struct conn *c, double now)
{
        return c->state == CONN_BACKOFF ? c->run.retry_at - now : -1;
}

const char *conn_get_reason(const struct conn *c)
{
        return c->state == CONN_QUEUED ? c->wait_reason : c->reason;
}

bool conn_has_child(const struct conn *c)
{
        return (c->master && master_pid(c->master) > 0) || conn_handover_has_child(c);
}

bool conn_is_handing_over(const struct conn *c)
{
        return c->olds && c->olds->handing_over;
}

enum conn_state conn_get_state(const struct conn *c) { return c->state; }
const char *conn_get_name(const struct conn *c) { return c->name; }
const struct tunnel_spec *conn_get_spec(const struct conn *c) { return &c->spec; }
bool conn_is_shared(const struct conn *c) { return c->shared; }
void *conn_get_owner(const struct conn *c) { return c->owner; }
bool conn_is_connecting(const struct conn *c) { return c->run.connecting; }
bool conn_wants_start(const struct conn *c) { return c->start_after_stop; }
/* The ssh that serves the forwards: during a make-before-break handover the old one. */
pid_t conn_get_pid(const struct conn *c)
{
        if (conn_is_handing_over(c) && master_pid(c->olds->m) > 0)
                return master_pid(c->olds->m);
        return c->master ? master_pid(c->master) : 0;
}

pid_t conn_get_next_pid(const struct conn *c)
{
        return conn_is_handing_over(c) && c->master ? master_pid(c->master) : 0;
}
const struct conn_run *conn_get_last_run(const struct conn *c) { return &c->last_run; }
unsigned conn_get_failures(const struct conn *c) { return c->run.gate_passed ? 0 : c->counters.failures; }
bool conn_is_flapping(const struct conn *c) { return c->flap.flapping; }
size_t conn_count_users(const struct conn *c) { return c->n_users; }
size_t conn_count_attached(const struct conn *c) { return c->n_attached; }
bool conn_has_started(const struct conn *c) { return c->total_starts > 0; }
