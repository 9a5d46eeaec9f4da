/* SPDX-License-Identifier: MIT */
/* tunnel: one named tunnel: its forwards on a connection, its state derived from the
 * connection's and the forwards' (the one place that changes it is set_state(), which
 * logs one line and tells the observer), its counters, probe and verbs. What others read
 * of it is tunnel_info.c's. */
#include "tunnel_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probe.h"

struct log_ctx tunnel_log_ctx(const struct tunnel *t)
{
        struct log_ctx ctx = LOG_CTX_INIT;
        struct conn *c = t->user.conn;

        ctx.tunnel = t->spec.name;
        ctx.connection = c && conn_is_shared(c) ? conn_get_name(c) : NULL;
        ctx.destination = c ? conn_get_destination(c) : NULL;
        if (c && conn_get_pid(c) > 0)
                ctx.pid = conn_get_pid(c);
        return ctx;
}

static bool own_connection(const struct tunnel *t)
{
        return t->user.conn && !conn_is_shared(t->user.conn);
}

/* ---- the state, from the connection's and the forwards' ---- */

struct forward_counts {
        size_t open, pending, failed;
};

static struct forward_counts count_forwards(const struct tunnel *t)
{
        struct forward_counts n = {0};

        for (size_t i = 0; i < t->n_fwds; i++) {
                const struct conn_forward *f = t->fwds[i];

                if (f->st.state == FORWARD_FAILED)
                        n.failed++;     /* a moving one too: the old ssh let it go, the new one refused it */
                else if (f->moving || f->st.state == FORWARD_OPEN)
                        n.open++;       /* make-before-break: served by the old ssh until the new one has it */
                else
                        n.pending++;
        }
        return n;
}

/* Up when ssh answered "open" for every forward; degraded while one failed. A forward
 * asked for while the tunnel is up or degraded (added by a reload, retried) does not make
 * it starting again: only its failure changes what the tunnel is. */
static enum tunnel_state from_forwards(const struct tunnel *t)
{
        struct forward_counts n = count_forwards(t);

        if (n.failed)
                return TUNNEL_DEGRADED;
        if (n.pending && (t->state == TUNNEL_UP || t->state == TUNNEL_DEGRADED))
                return t->state;
        return n.pending ? TUNNEL_STARTING : TUNNEL_UP;
}

static enum tunnel_state derive(const struct tunnel *t)
{
        struct conn *c = t->user.conn;

        if (!t->wanted)
                return t->stop_waits && c && conn_has_child(c) && conn_get_state(c) == CONN_STOPPING ? TUNNEL_STOPPING
                                                                                                  : TUNNEL_STOPPED;
        if (!c || !t->user.attached)
                return TUNNEL_QUEUED;
        switch (conn_get_state(c)) {
        case CONN_QUEUED:
                return conn_is_handing_over(c) ? from_forwards(t) : TUNNEL_QUEUED;
        case CONN_STARTING:
                return conn_is_handing_over(c) ? from_forwards(t) : TUNNEL_STARTING;
        case CONN_UP:
                return from_forwards(t);
        case CONN_BACKOFF:
                return TUNNEL_BACKOFF;
        case CONN_FAILED:
                return TUNNEL_FAILED;
        case CONN_STOPPED:
        case CONN_STOPPING:     /* attached: it starts again (conn_attach) */
        case _CONN_STATE_MAX:
                break;
        }
        return TUNNEL_STARTING;
}

static void set_state(struct tunnel *t, enum tunnel_state state, int prio, const struct conn_run *run, const char *text)
{
        struct log_ctx ctx = tunnel_log_ctx(t);
        enum tunnel_state old = t->state;

        t->state = state;
        t->state_since = now_mono();
        availability_note(&t->avail, tunnel_avail_class(t), t->state_since);
        if (t->probe) {
                if (state == TUNNEL_UP && old != TUNNEL_UP) {
                        t->probe_misses = 0;
                        probe_start(t->probe);
                } else if (state != TUNNEL_UP && old == TUNNEL_UP)
                        probe_stop(t->probe);
        }
        ctx.state = tunnel_state_to_string(state);
        conn_run_log_fields(run, &ctx);
        log_full(prio, &ctx, "%s", text);
        if (t->ctx->observer)
                t->ctx->observer(t, TUNNEL_EVENT_STATE, old, t->ctx->userdata);
}

/* The line of a change the tunnel makes on its own (not its own connection's news). */
static int describe(const struct tunnel *t, enum tunnel_state state, char *buf, size_t size)
{
        struct conn *c = t->user.conn;
        const char *cn = c ? conn_get_name(c) : "";
        int pid = c ? (int)conn_get_pid(c) : 0;
        bool own = own_connection(t);
        struct forward_counts n = count_forwards(t);
        char took[DURATION_MAX];

        switch (state) {
        case TUNNEL_UP:
                format_duration(now_mono() - t->started_at, took, sizeof(took));
                if (own)
                        snprintf(buf, size, "up: ssh (pid %d) authenticated%s after %s", pid,
                                 strv_length(tunnel_spec_remote_forwards(&t->spec)) ? " and every remote forward accepted"
                                                                                    : "", took);
                else
                        snprintf(buf, size, "up: every forward is open on the shared connection %s (ssh pid %d) after %s",
                                 cn, pid, took);
                return LOG_NOTICE;
        case TUNNEL_DEGRADED:
                if (own)
                        snprintf(buf, size, "degraded: ssh (pid %d) runs, but %zu of %zu forwards failed (see above); "
                                 "they are asked for again", pid, n.failed, t->n_fwds);
                else
                        snprintf(buf, size, "degraded: %zu of %zu forwards failed on the shared connection %s (see "
                                 "above); they are asked for again", n.failed, t->n_fwds, cn);
                return LOG_WARNING;
        case TUNNEL_STARTING:
                if (t->state == TUNNEL_UP || t->state == TUNNEL_DEGRADED)
                        snprintf(buf, size, "restarting: its forwards are opened again on ssh pid %d", pid);
                else if (c && (conn_get_state(c) == CONN_UP || conn_get_state(c) == CONN_STARTING) && !own)
                        snprintf(buf, size, "starting: its forwards go onto the shared connection %s (ssh pid %d)", cn,
                                 pid);
                else if (!own)
                        snprintf(buf, size, "starting: the shared connection %s is connecting%s", cn,
                                 pid ? "" : " (queued)");
                else
                        snprintf(buf, size, "starting: ssh pid %d", pid);
                return LOG_INFO;
        case TUNNEL_BACKOFF: {
                const struct conn_run *run = c ? conn_get_last_run(c) : NULL;
                char in[DURATION_MAX];

                format_duration(c ? conn_get_retry_in(c, now_mono()) : 0, in, sizeof(in));
                snprintf(buf, size, "the shared connection %s is down (%s): its forwards come back with it, in %s", cn,
                         run && run->valid ? failure_class_to_string(run->failure) : "?", in);
                return LOG_WARNING;
        }
        case TUNNEL_FAILED: {
                const struct conn_run *run = c ? conn_get_last_run(c) : NULL;

                snprintf(buf, size, "failed with the %sconnection %s (%s): not retried", own ? "" : "shared ", cn,
                         run && run->valid ? failure_class_to_string(run->failure) : "?");
                return LOG_ERR;
        }
        case TUNNEL_QUEUED:
                snprintf(buf, size, "starting; queued: %s", !t->user.attached ? t->wait_reason
                                                            : c ? conn_get_reason(c) : "no connection");
                return LOG_INFO;
        case TUNNEL_STOPPING:
                snprintf(buf, size, "stopping (%s): its connection's ssh (pid %d) ends", t->reason ? t->reason : "?",
                         pid);
                return LOG_INFO;
        case TUNNEL_STOPPED:
                snprintf(buf, size, "stopped (%s)", t->reason ? t->reason : "stop requested");
                return LOG_NOTICE;
        case _TUNNEL_STATE_MAX:
                break;
        }
        buf[0] = '\0';
        return LOG_INFO;
}

/* The state again, after anything that may have changed it. news: its own connection's
 * line (the connection changed), told as the tunnel's. */
void tunnel_sync_state(struct tunnel *t, int prio, const struct conn_run *run, const char *news)
{
        enum tunnel_state state = derive(t);
        char text[1600];
        int p;

        if (state == t->state) {
                if (news && own_connection(t)) {
                        struct log_ctx ctx = tunnel_log_ctx(t);
                        log_full(prio, &ctx, "%s", news);
                }
                return;
        }
        p = describe(t, state, text, sizeof(text));
        /* its own connection's story is the tunnel's: one line, the connection's words,
         * except for "up", which the forwards decide */
        if (news && own_connection(t) && state != TUNNEL_UP && state != TUNNEL_DEGRADED) {
                snprintf(text, sizeof(text), "%s", news);
                p = prio;
        } else if (t->flapping && p > LOG_ERR && state != TUNNEL_STOPPED && state != TUNNEL_STOPPING)
                p = LOG_DEBUG;
        set_state(t, state, p, run, text);
}

/* A start of its forwards: counted (max_starts is the connection's). */
static void note_start(struct tunnel *t)
{
        t->started_at = now_mono();
        t->total_starts++;
        if (t->restart_pending)
                t->restarts++;
        t->restart_pending = false;
}

/* ---- the connection's news ---- */

static struct tunnel *of_user(struct conn_user *u)
{
        return (struct tunnel *)((char *)u - offsetof(struct tunnel, user));
}

static void on_conn_changed(struct conn_user *u, enum conn_state old, int prio, const struct conn_run *run,
                            const char *news)
{
        struct tunnel *t = of_user(u);
        enum conn_state now = conn_get_state(u->conn);

        if (u->attached) {
                if (run && run->valid && !run->requested) {
                        /* the next start is a restart after a run that ran (not after a
                         * start judged failed unstarted: pacing.h's followers) */
                        t->restart_pending = t->restart_pending || run->pid > 0;
                        /* a path that died under an up connection is no failed start */
                        if (run->failure != FAILURE_NONE && !run->path_died && run->ended_at != t->counted_run) {
                                t->total_failures[run->failure]++;      /* once per failure of the connection */
                                t->counted_run = run->ended_at;
                        }
                }
                if (now == CONN_STARTING && (old != CONN_STARTING || run))
                        note_start(t);          /* a new ssh for its forwards */
        }
        if (t->stop_waits && !conn_has_child(u->conn))
                t->stop_waits = false;
        /* the connection's UP is not the tunnel's: its forwards say */
        tunnel_sync_state(t, prio, run, now == CONN_UP && old != CONN_UP && !run ? NULL : news);
}

static void on_conn_flapping(struct conn_user *u, bool flapping)
{
        struct tunnel *t = of_user(u);

        if (t->flapping == flapping)
                return;
        t->flapping = flapping;
        if (flapping && t->ctx->observer)
                t->ctx->observer(t, TUNNEL_EVENT_FLAPPING, t->state, t->ctx->userdata);
}

static void on_conn_forward(struct conn_user *u, struct conn_forward *f, bool failed)
{
        struct tunnel *t = of_user(u);

        if (failed && f->class != FAILURE_NONE)
                t->total_failures[f->class]++;
        tunnel_sync_state(t, LOG_INFO, NULL, NULL);
}

static void on_conn_prohibited(struct conn_user *u)
{
        of_user(u)->prohibited++;
}

static void on_conn_held(struct conn_user *u, const char *reason)
{
        struct tunnel *t = of_user(u);

        t->held = true;
        t->wanted = false;
        t->reason = reason;
        tunnel_detach(t, reason);
        tunnel_sync_state(t, LOG_NOTICE, NULL, NULL);
}

static void on_conn_handed_over(struct conn_user *u, const struct conn_run *failed)
{
        struct tunnel *t = of_user(u);

        if (u->attached && t->ctx->observer)
                t->ctx->observer(t, failed ? TUNNEL_EVENT_SSH_FAILED : TUNNEL_EVENT_SSH, t->state, t->ctx->userdata);
}

static const struct conn_user_ops user_ops = {
        .changed = on_conn_changed,
        .held = on_conn_held,
        .flapping = on_conn_flapping,
        .forward = on_conn_forward,
        .prohibited = on_conn_prohibited,
        .handed_over = on_conn_handed_over,
};

/* ---- onto and off its connection ---- */

static void attach(struct tunnel *t, bool manual)
{
        struct conn *c = t->user.conn;
        bool was_running = conn_get_state(c) == CONN_UP || conn_get_state(c) == CONN_STARTING;

        if (!t->user.attached) {
                for (size_t i = 0; i < t->n_fwds; i++)
                        conn_forward_add(c, t->fwds[i]);
                if (was_running)
                        note_start(t);  /* its forwards onto a connection that runs for others */
        }
        conn_attach(&t->user, manual);
}

void tunnel_detach(struct tunnel *t, const char *reason)
{
        struct conn *c = t->user.conn;

        if (!c || !t->user.attached)
                return;
        for (size_t i = 0; i < t->n_fwds; i++)
                conn_forward_remove(c, t->fwds[i]);
        /* the last one on it: the connection's ssh ends for it (said before the connection
         * tells its users it is stopping) */
        t->stop_waits = conn_count_attached(c) == 1 && conn_has_child(c);
        conn_detach(&t->user, reason);
        t->stop_waits = t->stop_waits && conn_get_state(c) == CONN_STOPPING && conn_has_child(c);
}

/* Wanted: onto the connection, unless a tunnel it is after is not up yet. */
void tunnel_go(struct tunnel *t, bool manual)
{
        const char *dep;

        if (!t->user.conn) {
                tunnel_sync_state(t, LOG_INFO, NULL, NULL);
                return;
        }
        dep = t->ctx->waiting_for ? t->ctx->waiting_for(t, t->ctx->userdata) : NULL;
        if (dep && !t->user.attached) {
                snprintf(t->wait_reason, sizeof(t->wait_reason), "waiting for %s to be up", dep);
                tunnel_sync_state(t, LOG_INFO, NULL, NULL);
                return;
        }
        attach(t, manual);
        tunnel_sync_state(t, LOG_INFO, NULL, NULL);
}

void tunnel_set_conn(struct tunnel *t, struct conn *c)
{
        if (t->user.conn == c)
                return;
        if (t->user.conn) {
                tunnel_detach(t, "no tunnel uses the connection any more");
                conn_remove_user(&t->user);
                t->stop_waits = false;
        }
        if (!c)
                return;         /* on none: what it shows is settled when it gets one */
        conn_add_user(c, &t->user);
        if (t->wanted)
                tunnel_go(t, false);
        else
                tunnel_sync_state(t, LOG_INFO, NULL, NULL);
}

void tunnel_recheck_after(struct tunnel *t)
{
        if (t->wanted && !t->user.attached && t->user.conn)
                tunnel_go(t, false);
}

/* ---- verbs ---- */

void tunnel_start(struct tunnel *t)
{
        t->held = false;
        if (!t->spec.enabled)
                return;
        t->wanted = true;
        t->stop_waits = false;
        t->reason = NULL;
        tunnel_go(t, true);
}

void tunnel_stop(struct tunnel *t, const char *reason)
{
        t->reason = reason;
        if (!t->wanted && t->state == TUNNEL_STOPPED)
                return;
        t->wanted = false;
        tunnel_detach(t, reason);
        tunnel_sync_state(t, LOG_NOTICE, NULL, NULL);
}

void tunnel_hold(struct tunnel *t, const char *reason)
{
        t->held = true;
        tunnel_stop(t, reason);
}

void tunnel_restart(struct tunnel *t, const char *reason)
{
        struct conn *c = t->user.conn;

        t->held = false;
        if (!t->spec.enabled)
                return;
        if (!t->wanted || !c || !t->user.attached) {
                tunnel_start(t);
                return;
        }
        if (conn_count_attached(c) == 1) {
                conn_restart(c, reason);        /* its own ssh: make-before-break when up */
                tunnel_sync_state(t, LOG_INFO, NULL, NULL);
                return;
        }
        /* one of many on a shared connection: only its forwards, on the same ssh */
        if (conn_get_state(c) != CONN_UP) {
                conn_attach(&t->user, true);
                tunnel_sync_state(t, LOG_INFO, NULL, NULL);
                return;
        }
        note_start(t);
        for (size_t i = 0; i < t->n_fwds; i++)
                conn_forward_reopen(c, t->fwds[i]);
        if (t->state == TUNNEL_UP || t->state == TUNNEL_DEGRADED) {
                char text[256];

                snprintf(text, sizeof(text), "%s: its forwards are opened again on the shared connection %s "
                         "(ssh pid %d)", reason, conn_get_name(c), (int)conn_get_pid(c));
                set_state(t, TUNNEL_STARTING, LOG_INFO, NULL, text);
        }
        tunnel_sync_state(t, LOG_INFO, NULL, NULL);
}

/* ---- probe ---- */

void tunnel_on_probe(bool ok, const char *why, void *userdata)
{
        struct tunnel *t = userdata;
        struct log_ctx ctx = tunnel_log_ctx(t);

        if (ok) {
                if (t->probe_misses)
                        log_full(LOG_NOTICE, &ctx, "probe %s passes again", t->spec.probe.connect);
                t->probe_misses = 0;
                return;
        }
        t->probe_misses++;
        ctx.failure = failure_class_to_string(FAILURE_PROBE);
        if (t->probe_misses < (unsigned)t->spec.probe.failures || t->state != TUNNEL_UP || !t->user.conn) {
                log_full(LOG_WARNING, &ctx, "probe %s failed (%u of %d): %s", t->spec.probe.connect, t->probe_misses,
                         t->spec.probe.failures, why);
                return;
        }
        /* a shared connection shares the fate: it is what the probe's traffic goes through */
        if (own_connection(t))
                conn_end_run(t->user.conn, FAILURE_PROBE, "probe %s failed %u times in a row (%s) although ssh runs",
                             t->spec.probe.connect, t->probe_misses, why);
        else
                conn_end_run(t->user.conn, FAILURE_PROBE, "probe %s of tunnel %s failed %u times in a row (%s) "
                             "although ssh runs", t->spec.probe.connect, t->spec.name, t->probe_misses, why);
}

/* ---- life ---- */

int tunnel_new(const struct tunnel_context *ctx, const struct tunnel_spec *spec, void *owner, struct tunnel **ret)
{
        struct tunnel *t = calloc(1, sizeof(*t));
        ssize_t *kept = NULL;
        int r;

        if (!t)
                return -ENOMEM;
        *t = (struct tunnel){
                .ctx = ctx,
                .owner = owner,
                .state = TUNNEL_STOPPED,
                .state_since = now_mono(),
                .user = { .ops = &user_ops },
        };
        r = tunnel_spec_copy(spec, &t->spec);
        if (r >= 0)
                r = tunnel_forwards_build(&t->spec, NULL, 0, &t->fwds, &kept, &t->n_fwds);
        free(kept);
        if (r >= 0 && t->spec.probe.connect)
                r = probe_new(ctx->loop, &t->spec.probe, tunnel_on_probe, t, &t->probe);
        if (r < 0) {
                tunnel_forwards_free(t->fwds, t->n_fwds);
                tunnel_spec_done(&t->spec);
                free(t);
                return r;
        }
        t->user.name = t->spec.name;
        for (size_t i = 0; i < t->n_fwds; i++)
                t->fwds[i]->user = &t->user;
        availability_init(&t->avail, t->state_since);
        if (!spec->enabled)
                t->reason = "disabled in the configuration";
        *ret = t;
        return 0;
}

struct tunnel *tunnel_free(struct tunnel *t)
{
        if (!t)
                return NULL;
        if (t->user.conn) {
                tunnel_detach(t, "no tunnel uses the connection any more");
                conn_remove_user(&t->user);
        }
        probe_free(t->probe);
        tunnel_forwards_free(t->fwds, t->n_fwds);
        tunnel_spec_done(&t->spec);
        free(t);
        return NULL;
}
