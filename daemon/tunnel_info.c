/* SPDX-License-Identifier: MIT */
/* tunnel_info: what others may read of a tunnel: its state's name, the status snapshot of
 * tunnelctl, events and metrics, and a few accessors. */
#include "tunnel_internal.h"

#include <time.h>

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

enum avail_class tunnel_avail_class(const struct tunnel *t)
{
        if (t->state == TUNNEL_UP)
                return AVAIL_UP;
        /* not wanted: disabled, held by an operator, stopped by its policy or on purpose */
        if (!t->spec.enabled || t->held || !t->wanted || t->state == TUNNEL_STOPPED || t->state == TUNNEL_STOPPING)
                return AVAIL_OFF;
        return AVAIL_DOWN;
}

static const char *status_reason(const struct tunnel *t)
{
        struct conn *c = t->user.conn;

        switch (t->state) {
        case TUNNEL_QUEUED:
                return !t->user.attached ? t->wait_reason : c ? conn_get_reason(c) : "no connection";
        case TUNNEL_DEGRADED:
                return "a forward failed; it is asked for again over the running ssh";
        case TUNNEL_FAILED:
                return c && conn_get_reason(c) ? conn_get_reason(c) : t->reason;
        case TUNNEL_STOPPED:
        case TUNNEL_STOPPING:
                return t->reason;
        default:
                return NULL;
        }
}

void tunnel_get_status(const struct tunnel *t, double now, struct tunnel_status *ret)
{
        static const struct conn_run none;
        const struct conn *c = t->user.conn;
        /* its connection's ssh: while it runs for it, and while it ends for it */
        bool on = c && (t->user.attached || t->state == TUNNEL_STOPPING);
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
                .pid = on ? conn_get_pid(c) : 0,
                .next_pid = on ? conn_get_next_pid(c) : 0,
                .since = now - t->state_since,
                .state_since_wall = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9 - (now - t->state_since),
                .uptime = on ? conn_get_uptime(c, now) : -1,
                .retry_in = on && t->state == TUNNEL_BACKOFF ? conn_get_retry_in(c, now) : -1,
                .starts = t->total_starts,
                .restarts = t->restarts,
                .prohibited = t->prohibited,
                .consecutive_failures = on ? conn_get_failures(c) : 0,
                .failures = t->total_failures,
                .last_run = c ? conn_get_last_run(c) : &none,
                .local_forwards = tunnel_spec_local_forwards(&t->spec),
                .remote_forwards = tunnel_spec_remote_forwards(&t->spec),
                .dynamic_forwards = tunnel_spec_dynamic_forwards(&t->spec),
                .gatetime = t->spec.sup.gatetime,
                .restart = t->spec.sup.restart,
                .connection = c && conn_is_shared(c) ? conn_get_name(c) : NULL,
                .n_forwards = on && conn_get_pid(c) > 0 ? t->n_fwds : 0,
                .tunnel = t,
        };
        ret->last_run_ago = now - ret->last_run->ended_at;
        availability_get(&t->avail, now, &ret->avail);
}

const struct forward_status *tunnel_forward_status(const struct tunnel_status *s, size_t i)
{
        return &s->tunnel->fwds[i]->st;
}

int tunnel_path_status(const struct tunnel_status *s, struct tcp_diag_info *ret)
{
        if (s->pid <= 0 || !s->tunnel->user.conn)
                return -ENOENT;
        return conn_get_path(s->tunnel->user.conn, ret);
}

size_t tunnel_alt_count(const struct tunnel_status *s)
{
        return s->tunnel->user.conn ? conn_alt_count(s->tunnel->user.conn) : 0;
}

ssize_t tunnel_alt_serving(const struct tunnel_status *s)
{
        return s->tunnel->user.conn && s->pid > 0 ? conn_alt_serving(s->tunnel->user.conn) : -1;
}

unsigned long tunnel_alt_failovers(const struct tunnel_status *s)
{
        return s->tunnel->user.conn ? conn_alt_failovers(s->tunnel->user.conn) : 0;
}

void tunnel_alt_status(const struct tunnel_status *s, size_t i, double now, struct conn_alt_info *ret)
{
        conn_alt_get(s->tunnel->user.conn, i, now, ret);
}

enum tunnel_state tunnel_get_state(const struct tunnel *t) { return t->state; }
const struct tunnel_spec *tunnel_get_spec(const struct tunnel *t) { return &t->spec; }
const char *tunnel_get_name(const struct tunnel *t) { return t->spec.name; }
bool tunnel_is_held(const struct tunnel *t) { return t->held; }
bool tunnel_is_wanted(const struct tunnel *t) { return t->wanted; }
bool tunnel_has_started(const struct tunnel *t) { return t->total_starts > 0; }
unsigned long tunnel_get_restarts(const struct tunnel *t) { return t->restarts; }
struct conn *tunnel_get_conn(const struct tunnel *t) { return t->user.conn; }
void *tunnel_get_owner(const struct tunnel *t) { return t->owner; }

enum failure_class tunnel_get_forward_failure(const struct tunnel *t)
{
        for (size_t i = 0; i < t->n_fwds; i++)
                if (t->fwds[i]->st.state == FORWARD_FAILED)
                        return t->fwds[i]->class;
        return FAILURE_NONE;
}

const struct conn_run *tunnel_get_last_run(const struct tunnel *t)
{
        static const struct conn_run none;

        return t->user.conn ? conn_get_last_run(t->user.conn) : &none;
}
