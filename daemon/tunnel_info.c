/* SPDX-License-Identifier: MIT */
/* tunnel_info: what others may read of a tunnel: its state's name, its deadlines, the
 * status snapshot of tunnelctl, events and metrics, and a few accessors. */
#include "tunnel_internal.h"

#include <time.h>

#include "jump_config.h"

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

/* The destination and each jump host. */
static unsigned hops(const struct tunnel_spec *s)
{
        return 1 + jump_hop_count(s->jump_host);
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
                return t->spec.multiplex ? "a forward failed; it is asked for again over the running ssh"
                                         : "a forward failed; exit_on_forward_failure = false keeps ssh running";
        case TUNNEL_STOPPED:
        case TUNNEL_FAILED:
        case TUNNEL_STOPPING:
                return t->reason;
        default:
                return NULL;
        }
}

enum avail_class avail_class_of(const struct tunnel *t)
{
        if (t->state == TUNNEL_UP)
                return AVAIL_UP;
        /* make-before-break: the old ssh serves every forward until the new one has it */
        if (t->state == TUNNEL_STARTING && t->mux_old && t->mux_old->closes_left == 0 && !t->mux_old->term_sent)
                return AVAIL_UP;
        /* not wanted: disabled, held by an operator, stopped by its policy or on purpose */
        if (!t->spec.enabled || t->held || t->state == TUNNEL_STOPPED ||
            (t->state == TUNNEL_STOPPING && !t->start_after_stop))
                return AVAIL_OFF;
        return AVAIL_DOWN;
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
        availability_get(&t->avail, now, &ret->avail);
        ret->multiplex = t->spec.multiplex;
        ret->forwards = t->fwd_status;
        ret->n_forwards = t->n_fwds;
        if (riding(t)) {
                const struct tunnel *c = t->carrier;

                ret->connection = c->spec.name;
                ret->pid = t->attached && c->pid > 0 ? c->pid : 0;
                ret->uptime = ret->pid ? now - c->started_at : -1;
                ret->retry_in = t->state == TUNNEL_BACKOFF ? c->retry_at - now : -1;
                ret->forwards = NULL;
                ret->n_forwards = 0;
                if (t->attached && tunnel_is_running(t))
                        ret->forwards = share_rider_forwards(t, &ret->n_forwards);
        }
}


enum tunnel_state tunnel_get_state(const struct tunnel *t) { return t->state; }
const struct tunnel_spec *tunnel_get_spec(const struct tunnel *t) { return &t->spec; }
const char *tunnel_get_name(const struct tunnel *t) { return t->spec.name; }
bool tunnel_is_connecting(const struct tunnel *t) { return t->connecting; }
bool tunnel_is_held(const struct tunnel *t) { return t->held; }
bool tunnel_has_started(const struct tunnel *t) { return t->total_starts > 0; }
bool tunnel_has_child(const struct tunnel *t) { return t->pid > 0 || handover_has_child(t); }
const struct tunnel_run *tunnel_get_last_run(const struct tunnel *t) { return &t->last_run; }
unsigned long tunnel_get_restarts(const struct tunnel *t) { return t->restarts; }
void *tunnel_get_owner(const struct tunnel *t) { return t->owner; }

const char *forward_state_to_string(enum forward_state s)
{
        switch (s) {
        case FORWARD_PENDING: return "pending";
        case FORWARD_OPEN: return "open";
        case FORWARD_FAILED: return "failed";
        }
        return "?";
}
