/* SPDX-License-Identifier: MIT */
/* tunnel_share: share_connection. The tunnels of one connection (same destination, key,
 * options and supervision) ride one ssh: a hidden tunnel, the carrier, runs the mux master
 * and owns every forward of its riders (opened, retried, moved by make-before-break as any
 * multiplexed tunnel's). A rider has no ssh of its own: its state is its forwards' on the
 * carrier while the connection is up, and the connection's otherwise (one failure, one
 * backoff for all). Starting, stopping or restarting a rider opens or closes only its own
 * forwards; the carrier stops when its last rider does. */
#include "tunnel_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const forward_kinds = "LRD";

static char *const *rider_list(const struct tunnel *r, int kind)
{
        switch (kind) {
        case 0: return tunnel_spec_local_forwards(&r->spec);
        case 1: return tunnel_spec_remote_forwards(&r->spec);
        default: return tunnel_spec_dynamic_forwards(&r->spec);
        }
}

static bool rider_has(const struct tunnel *r, char kind, const char *spec)
{
        const char *k = strchr(forward_kinds, kind);

        if (!k || !r->attached)
                return false;
        for (char *const *f = rider_list(r, (int)(k - forward_kinds)); f && *f; f++)
                if (strcmp(*f, spec) == 0)
                        return true;
        return false;
}

/* Which rider each of the carrier's forwards is for (forwards are unique across tunnels:
 * the configuration's clash checks). */
void share_assign_owners(struct tunnel *c)
{
        for (size_t i = 0; c->fwds && i < c->n_fwds; i++) {
                c->fwds[i].rider = NULL;
                for (size_t k = 0; k < c->n_riders && !c->fwds[i].rider; k++)
                        if (rider_has(c->riders[k], c->fwds[i].st->kind, c->fwds[i].st->spec))
                                c->fwds[i].rider = c->riders[k];
        }
}

/* The carrier's forwards: every attached rider's, in rider order. */
static int union_forwards(const struct tunnel *c, char ***l, char ***r, char ***d)
{
        char ***lists[] = { l, r, d };
        int ret = 0;

        for (size_t k = 0; k < c->n_riders && ret >= 0; k++)
                for (int kind = 0; c->riders[k]->attached && kind < 3 && ret >= 0; kind++)
                        for (char *const *f = rider_list(c->riders[k], kind); f && *f && ret >= 0; f++)
                                ret = strv_push(lists[kind], *f);
        return ret;
}

static void set_lists(struct tunnel_spec *s, char **l, char **r, char **d)
{
        char **old[] = { s->local_forwards, s->remote_forwards, s->dynamic_forwards,
                         s->ssh_local_forwards, s->ssh_remote_forwards, s->ssh_dynamic_forwards };

        for (size_t i = 0; i < ELEMENTSOF(old); i++)
                strv_free(old[i]);
        s->local_forwards = l;
        s->remote_forwards = r;
        s->dynamic_forwards = d;
        /* the carrier reads its lists through tunnel_spec_*_forwards, view or not */
        s->ssh_local_forwards = s->ssh_remote_forwards = s->ssh_dynamic_forwards = NULL;
        if (s->ssh_viewed && (strv_copy(l, &s->ssh_local_forwards) < 0 || strv_copy(r, &s->ssh_remote_forwards) < 0 ||
                              strv_copy(d, &s->ssh_dynamic_forwards) < 0))
                s->ssh_viewed = false;  /* out of memory: the plain lists are the same */
}

/* The carrier's forwards follow its riders: added ones opened, gone ones closed, on the
 * running master; the others untouched. */
static int sync_forwards(struct tunnel *c)
{
        _cleanup_strv_free_ char **l = NULL, **r = NULL, **d = NULL;
        size_t added, removed;
        int ret = union_forwards(c, &l, &r, &d);

        if (ret < 0)
                return ret;
        set_lists(&c->spec, l, r, d);
        l = r = d = NULL;
        if (c->fwds) {
                ret = mux_retarget(c, &c->spec, &added, &removed);
                if (ret < 0)
                        return ret;
        }
        share_assign_owners(c);
        mux_open_pending(c);
        return 0;
}

/* Riders come and go many at a time (a start, a reload, a thousand of them): the carrier's
 * forwards follow once per loop iteration, not once per rider. */
static void on_sync_due(struct ev_loop *loop, ev_prepare *w, int revents)
{
        struct tunnel *c = w->data;

        (void)revents;
        ev_prepare_stop(loop, w);
        if (sync_forwards(c) < 0) {
                struct log_ctx ctx = ctx_of(c);
                log_full(LOG_ERR, &ctx, "cannot change the forwards of the shared connection: out of memory; "
                         "tried again with the next change");
        }
        share_sync_riders(c);
}

static void sync_soon(struct tunnel *c)
{
        if (!ev_is_active(&c->sync_due))
                ev_prepare_start(c->ctx->loop, &c->sync_due);
}

static size_t attached_riders(const struct tunnel *c)
{
        size_t n = 0;

        for (size_t k = 0; k < c->n_riders; k++)
                n += c->riders[k]->attached;
        return n;
}

/* The rider's forwards as the carrier has them (status shows them), and their counts. */
static void read_forwards(struct tunnel *r, size_t *open, size_t *failed, size_t *pending)
{
        struct tunnel *c = r->carrier;
        size_t n = 0, want;

        *open = *failed = *pending = 0;
        /* riders are detached before their carrier goes, and a rider without one reads nothing */
        if (!c)
                return;
        want = strv_length(rider_list(r, 0)) + strv_length(rider_list(r, 1)) + strv_length(rider_list(r, 2));
        if (want != r->n_rider_status) {
                struct forward_status *st = realloc(r->rider_status, (want + 1) * sizeof(*st));
                if (!st) {
                        *pending = 1;   /* judged again at the next reply */
                        r->n_rider_status = 0;
                        return;
                }
                r->rider_status = st;
                r->n_rider_status = want;
        }
        /* in its own order; one the carrier has not asked for yet (between two runs) is pending */
        for (int kind = 0; kind < 3; kind++)
                for (char *const *f = rider_list(r, kind); f && *f; f++, n++) {
                        const struct forward_status *found = NULL;

                        for (size_t i = 0; c->fwds && i < c->n_fwds && !found; i++)
                                if (c->fwds[i].rider == r && c->fwds[i].st->kind == forward_kinds[kind] &&
                                    strcmp(c->fwds[i].st->spec, *f) == 0)
                                        found = c->fwds[i].st;
                        r->rider_status[n] = found ? *found : (struct forward_status){
                                .kind = forward_kinds[kind], .spec = *f, .state = FORWARD_PENDING };
                        *open += r->rider_status[n].state == FORWARD_OPEN;
                        *failed += r->rider_status[n].state == FORWARD_FAILED;
                        *pending += r->rider_status[n].state == FORWARD_PENDING;
                }
}

static void rider_up(struct tunnel *r)
{
        struct tunnel *c = r->carrier;
        char took[DURATION_MAX];

        r->run_up = true;
        r->gate_passed = r->ever_passed = true;        /* the connection's gatetime judges the connection */
        r->up_since = now_mono();
        set_state(r, TUNNEL_UP, LOG_NOTICE, NULL, "up: every forward is open on the shared connection %s "
                  "(ssh pid %d) after %s", c->spec.name, (int)c->pid,
                  format_duration(r->up_since - r->started_at, took, sizeof(took)));
}

/* The connection's last run, once per rider: its exit and failure class are the rider's
 * too (a run that passed gatetime restarts at once, with no backoff to tell of it). */
static void note_connection_run(struct tunnel *r)
{
        const struct tunnel_run *run = &r->carrier->last_run;

        if (!run->valid || (r->last_run.valid && r->last_run.ended_at == run->ended_at && r->last_run.pid == run->pid))
                return;
        r->last_run = *run;
        if (run->failure != FAILURE_NONE && !run->requested)
                r->total_failures[run->failure]++;     /* once per failure of the connection */
        r->restart_pending = !run->requested;
}

/* The connection ended a run: the same verdict for each of its riders. */
static void rider_down(struct tunnel *r, enum tunnel_state state)
{
        struct tunnel *c = r->carrier;
        const struct tunnel_run *run = &c->last_run;

        note_connection_run(r);
        r->failures = c->failures;
        r->gate_passed = false;         /* its failures in a row show until the connection passes again */
        r->run_up = false;
        if (state == TUNNEL_BACKOFF) {
                char in[DURATION_MAX];

                r->retry_at = c->retry_at;
                set_state(r, TUNNEL_BACKOFF, LOG_WARNING, run, "the shared connection %s is down (%s): its forwards "
                          "come back with it, in %s", c->spec.name, failure_class_to_string(run->failure),
                          format_duration(c->retry_at - now_mono(), in, sizeof(in)));
        } else {
                r->reason = "the shared connection failed";
                set_state(r, TUNNEL_FAILED, LOG_ERR, run, "failed with the shared connection %s (%s): not retried",
                          c->spec.name, failure_class_to_string(run->failure));
        }
}

/* A rider's state from its connection's and its forwards'. */
void share_sync_rider(struct tunnel *r)
{
        struct tunnel *c = r->carrier;
        size_t open, failed, pending;

        if (!c || !r->attached)
                return;
        read_forwards(r, &open, &failed, &pending);
        switch (c->state) {
        case TUNNEL_UP:
        case TUNNEL_DEGRADED:
                if (!c->mux_ready)
                        return;
                if (r->state == TUNNEL_BACKOFF || r->state == TUNNEL_FAILED) {
                        set_state(r, TUNNEL_STARTING, LOG_INFO, NULL, "the shared connection %s is back (ssh pid %d): "
                                  "opening its forwards", c->spec.name, (int)c->pid);
                        return;
                }
                if (pending)
                        return;
                if (failed && r->state != TUNNEL_DEGRADED)
                        set_state(r, TUNNEL_DEGRADED, LOG_WARNING, NULL, "degraded: %zu of %zu forwards failed on the "
                                  "shared connection %s (see above); they are asked for again", failed,
                                  failed + open, c->spec.name);
                else if (!failed && r->state != TUNNEL_UP)
                        rider_up(r);
                return;
        case TUNNEL_STARTING:
        case TUNNEL_QUEUED:
                /* make-before-break: the old master serves the forwards until it hands them
                 * over, and the new one is opening them then */
                if (r->state == TUNNEL_STARTING ||
                    ((r->state == TUNNEL_UP || r->state == TUNNEL_DEGRADED) && (c->mux_old || c->handed_over)))
                        return;
                note_connection_run(r);
                r->started_at = now_mono();
                if (r->restart_pending)
                        r->restarts++;
                r->restart_pending = false;
                r->starts++;
                r->total_starts++;
                set_state(r, TUNNEL_STARTING, LOG_INFO, NULL, "the shared connection %s is connecting (ssh pid %d)",
                          c->spec.name, (int)c->pid);
                return;
        case TUNNEL_STOPPING:
                if (r->state == TUNNEL_UP || r->state == TUNNEL_DEGRADED) {
                        r->restart_pending = true;
                        set_state(r, TUNNEL_STARTING, LOG_WARNING, NULL, "the shared connection %s is restarting",
                                  c->spec.name);
                }
                return;
        case TUNNEL_BACKOFF:
        case TUNNEL_FAILED:
                if (r->state != c->state)
                        rider_down(r, c->state);
                return;
        case TUNNEL_STOPPED:
        case _TUNNEL_STATE_MAX:
                if (r->state != TUNNEL_STOPPED && r->state != TUNNEL_STOPPING) {
                        r->attached = false;
                        r->reason = "the shared connection stopped";
                        set_state(r, TUNNEL_STOPPED, LOG_NOTICE, NULL, "stopped with the shared connection %s",
                                  c->spec.name);
                }
                return;
        }
}

void share_sync_riders(struct tunnel *c)
{
        /* a rider's observer may not free it here (it is not stopped), but a rider that
         * stops with the connection leaves the list only through tunnel_set_carrier */
        for (size_t k = 0; k < c->n_riders; k++)
                share_sync_rider(c->riders[k]);
}

/* Its forwards go onto the connection, which is started if it is not running. */
void rider_spawn(struct tunnel *r, const struct tunnel_run *run, const char *what)
{
        struct tunnel *c = r->carrier;
        bool was_attached = r->attached;

        ev_timer_stop(r->ctx->loop, &r->retry_timer);
        r->retry_at = 0;
        r->attached = true;
        if (!was_attached)
                sync_soon(c);
        r->started_at = now_mono();
        r->starts++;
        r->total_starts++;
        if (r->restart_pending)
                r->restarts++;
        r->restart_pending = false;
        r->run_up = false;
        set_state(r, TUNNEL_STARTING, run && !run->requested ? LOG_WARNING : LOG_INFO, run,
                  "%s; its forwards go onto the shared connection %s (%s)", what, c->spec.name,
                  tunnel_is_running(c) ? "running" : tunnel_state_to_string(c->state));
        if (c->state == TUNNEL_STOPPED || c->state == TUNNEL_FAILED || c->state == TUNNEL_STOPPING)
                tunnel_start(c);        /* (stopping: once its exit is reaped) */
        else if (c->state == TUNNEL_BACKOFF && !run)
                tunnel_retry_now(c, "a tunnel on it was started");
        share_sync_rider(r);
}

/* Its forwards are closed on the connection; the last rider to go stops the connection. */
static void detach(struct tunnel *r)
{
        struct tunnel *c = r->carrier;

        if (!c || !r->attached)
                return;
        r->attached = false;
        sync_soon(c);
        if (attached_riders(c) == 0 && c->state != TUNNEL_STOPPED && c->state != TUNNEL_STOPPING)
                tunnel_stop(c, "no tunnel uses the shared connection any more");
}

void rider_stop(struct tunnel *r, const char *reason)
{
        struct log_ctx ctx = ctx_of(r);
        bool had = r->attached && tunnel_is_running(r);

        ev_timer_stop(r->ctx->loop, &r->retry_timer);
        r->retry_at = 0;
        r->reason = reason;
        detach(r);
        if (r->state == TUNNEL_STOPPED)
                return;
        if (had)
                log_full(LOG_DEBUG, &ctx, "its forwards are closed on the shared connection %s", r->carrier->spec.name);
        set_state(r, TUNNEL_STOPPED, LOG_NOTICE, NULL, "stopped (%s)", reason);
}

void rider_restart(struct tunnel *r, const char *reason)
{
        if (r->attached) {
                r->attached = false;
                (void)sync_forwards(r->carrier);       /* closed, then opened again below */
        }
        spawn(r, NULL, reason, "restarting");
}

void share_detach_all(struct tunnel *c)
{
        if (c->is_carrier)
                ev_prepare_stop(c->ctx->loop, &c->sync_due);
        for (size_t k = 0; k < c->n_riders; k++)
                c->riders[k]->carrier = NULL;
        free(c->riders);
        c->riders = NULL;
        c->n_riders = 0;
}

int tunnel_set_carrier(struct tunnel *r, struct tunnel *c)
{
        struct tunnel *old = r->carrier;
        bool active = r->attached;

        if (old == c)
                return 0;
        if (c) {
                struct tunnel **v = realloc(c->riders, (c->n_riders + 1) * sizeof(struct tunnel *));
                if (!v)
                        return -ENOMEM;
                c->riders = v;
        }
        if (old) {
                detach(r);
                for (size_t k = 0; k < old->n_riders; k++)
                        if (old->riders[k] == r) {
                                memmove(old->riders + k, old->riders + k + 1, (old->n_riders - k - 1) * sizeof(struct tunnel *));
                                old->n_riders--;
                                break;
                        }
        }
        r->carrier = c;
        if (c)
                c->riders[c->n_riders++] = r;
        if (!active)
                return 0;
        /* running: its forwards go onto the new connection at once; off sharing, it is
         * stopped here and its reconfiguration (share_connection changed) starts its ssh */
        if (c)
                spawn(r, NULL, "moved to another shared connection", "launched");
        else
                set_state(r, TUNNEL_STOPPED, LOG_NOTICE, NULL, "leaves the shared connection %s: it will run its "
                          "own ssh", old->spec.name);
        return 0;
}

void share_forwards_changed(struct tunnel *r)
{
        if (r->attached)
                sync_soon(r->carrier);
}

/* A carrier's spec: the rider's connection alone, named name, with forwards (copied; NULL:
 * none): no probe, hooks or ordering of its own. */
static int carrier_spec(const struct tunnel_spec *rider, const char *name, const struct tunnel_spec *forwards,
                        struct tunnel_spec *ret)
{
        _cleanup_strv_free_ char **l = NULL, **r = NULL, **d = NULL;
        char *name_copy = strdup(name);
        int k;

        if (!name_copy || (forwards && (strv_copy(tunnel_spec_local_forwards(forwards), &l) < 0 ||
                                        strv_copy(tunnel_spec_remote_forwards(forwards), &r) < 0 ||
                                        strv_copy(tunnel_spec_dynamic_forwards(forwards), &d) < 0))) {
                free(name_copy);
                return -ENOMEM;
        }
        k = tunnel_spec_copy(rider, ret);
        if (k < 0) {
                free(name_copy);
                return k;
        }
        free(ret->name);
        ret->name = name_copy;
        set_lists(ret, l, r, d);
        l = r = d = NULL;
        free(ret->probe.connect);
        ret->probe.connect = NULL;
        free(ret->on_state_change);
        ret->on_state_change = NULL;
        ret->after = strv_free(ret->after);
        ret->enabled = true;
        ret->required = false;
        return 0;
}

int tunnel_new_carrier(const struct tunnel_context *ctx, const struct tunnel_spec *rider, const char *name,
                       struct tunnel **ret)
{
        struct tunnel_spec s;
        int r = carrier_spec(rider, name, NULL, &s);

        if (r < 0)
                return r;
        r = tunnel_new(ctx, &s, NULL, ret);
        tunnel_spec_done(&s);
        if (r < 0)
                return r;
        (*ret)->is_carrier = true;
        ev_prepare_init(&(*ret)->sync_due, on_sync_due);
        (*ret)->sync_due.data = *ret;
        return 0;
}

int tunnel_update_carrier(struct tunnel *c, const struct tunnel_spec *rider, const char *ssh)
{
        struct tunnel_change *change;
        struct tunnel_spec s;
        bool same_command;
        int r = carrier_spec(rider, c->spec.name, &c->spec, &s);

        if (r < 0)
                return r;
        same_command = tunnel_spec_same_command(&c->spec, &s);
        r = tunnel_change_new(c, &s, ssh, &change);
        tunnel_spec_done(&s);
        if (r < 0)
                return r;
        /* the connection's supervision in place (same ssh); a new connection make-before-break */
        if (same_command)
                tunnel_update_policy(c, change);
        else
                tunnel_reconfigure(c, change);
        return 0;
}

const struct forward_status *share_rider_forwards(const struct tunnel *r, size_t *n)
{
        struct tunnel *w = (struct tunnel *)r;  /* rider_status is a cache of the carrier's states */
        size_t open, failed, pending;

        read_forwards(w, &open, &failed, &pending);
        *n = w->n_rider_status;
        return w->rider_status;
}

struct tunnel *tunnel_get_carrier(const struct tunnel *t) { return t->carrier; }
size_t tunnel_count_riders(const struct tunnel *c) { return c->n_riders; }

void share_flapping(struct tunnel *c, bool flapping)
{
        for (size_t k = 0; k < c->n_riders; k++) {
                struct tunnel *r = c->riders[k];

                if (!r->attached || r->flapping == flapping)
                        continue;
                r->flapping = flapping;
                r->flap_suppressed = 0;
                if (flapping && r->ctx->observer)
                        r->ctx->observer(r, TUNNEL_EVENT_FLAPPING, r->state, r->ctx->userdata);
        }
}
