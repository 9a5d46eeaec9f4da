/* SPDX-License-Identifier: MIT */
#pragma once

/* tunnel: what the operator named: a set of forwards on a connection (conn.h), with its
 * own state, counters, availability, probe and verbs. Its state follows from its
 * connection's and its forwards' (tunnel.c: derive); it runs no process of its own. */

#include <ev.h>
#include <stdbool.h>
#include <sys/types.h>

#include "availability.h"
#include "config.h"
#include "conn.h"
#include "policy.h"
#include "ssh_output.h"

enum tunnel_state {
        TUNNEL_STOPPED,         /* not wanted: stopped by request, disabled, or by its policy's end */
        TUNNEL_STARTING,        /* its connection is connecting, or its forwards are being opened */
        TUNNEL_UP,              /* its connection is up and ssh answered "open" for every forward */
        TUNNEL_BACKOFF,         /* its connection's ssh ended; a timer starts it again */
        TUNNEL_FAILED,          /* …and the policy says not to retry */
        TUNNEL_STOPPING,        /* its connection's ssh was sent SIGTERM for it, the exit not yet reaped */
        TUNNEL_QUEUED,          /* waiting for the tunnels it is after, or for a start slot */
        TUNNEL_DEGRADED,        /* its connection is up, but a forward failed (asked for again) */
        _TUNNEL_STATE_MAX,
};

struct tunnel;

enum tunnel_event {
        TUNNEL_EVENT_STATE,             /* the state changed from old */
        TUNNEL_EVENT_FLAPPING,          /* its connection began flapping */
        TUNNEL_EVENT_SSH,               /* a new ssh serves its forwards, its state the same (make-before-break) */
        TUNNEL_EVENT_SSH_FAILED,        /* the new ssh failed before it took them over: the old one serves on */
};

/* Called after every state change (and when flapping starts). The observer may free the
 * tunnel only when the new state is STOPPED. */
typedef void (*tunnel_observer_t)(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata);
/* The first tunnel t is after that is not up (its name), or NULL: t may attach now. */
typedef const char *(*tunnel_waiting_for_t)(const struct tunnel *t, void *userdata);

struct tunnel_context {
        struct ev_loop *loop;
        tunnel_observer_t observer;
        tunnel_waiting_for_t waiting_for;
        void *userdata;
};

/* owner: whatever the creator keeps for the tunnel (tunnel_get_owner). The tunnel is on
 * no connection until tunnel_set_conn(). */
int tunnel_new(const struct tunnel_context *ctx, const struct tunnel_spec *spec, void *owner, struct tunnel **ret);
/* Leaves its connection (closing its forwards there) and goes. NULL-safe. */
struct tunnel *tunnel_free(struct tunnel *t);
/* Onto connection c (NULL: none): its forwards leave the old one and, if it is wanted,
 * go onto c at once. */
void tunnel_set_conn(struct tunnel *t, struct conn *c);
struct conn *tunnel_get_conn(const struct tunnel *t);

/* Start now (a manual start: its connection retries now if it was backing off). */
void tunnel_start(struct tunnel *t);
/* Its forwards off the connection (the last tunnel on it stops its ssh); stays stopped. */
void tunnel_stop(struct tunnel *t, const char *reason);
/* An operator's stop: like tunnel_stop, and a reload does not start it again. */
void tunnel_hold(struct tunnel *t, const char *reason);
/* Alone on its connection: the connection restarts (make-before-break when up); with
 * others: its forwards are closed and opened again on the same ssh. */
void tunnel_restart(struct tunnel *t, const char *reason);
/* QUEUED for the tunnels it is after: attach now if they are up. */
void tunnel_recheck_after(struct tunnel *t);

/* A reload's new spec (the tunnel's own settings: forwards, probe, hooks, after), made
 * before the point of no return. */
struct tunnel_change;
int tunnel_change_new(struct tunnel *t, const struct tunnel_spec *spec, struct tunnel_change **ret);
struct tunnel_change *tunnel_change_free(struct tunnel_change *ch);
/* Take it (cannot fail), riding connection c from now on: on the same connection, added
 * forwards are opened and removed ones closed on the running ssh, the others and their
 * connections untouched; a changed probe restarts; disabled → stopped, enabled → started
 * (unless held). Takes ch. */
void tunnel_reconfigure(struct tunnel *t, struct tunnel_change *ch, struct conn *c);

const char *tunnel_state_to_string(enum tunnel_state s);

enum tunnel_state tunnel_get_state(const struct tunnel *t);
const struct tunnel_spec *tunnel_get_spec(const struct tunnel *t);
const char *tunnel_get_name(const struct tunnel *t);
bool tunnel_is_held(const struct tunnel *t);           /* stopped by an operator */
bool tunnel_is_wanted(const struct tunnel *t);         /* started (not stopped by anyone) */
bool tunnel_has_started(const struct tunnel *t);       /* has asked its connection for its forwards */
unsigned long tunnel_get_restarts(const struct tunnel *t);
const struct conn_run *tunnel_get_last_run(const struct tunnel *t);
/* The class of its first failed forward (FAILURE_NONE: none failed): why it is degraded. */
enum failure_class tunnel_get_forward_failure(const struct tunnel *t);
void *tunnel_get_owner(const struct tunnel *t);

/* What the control socket, the metrics and the events read of a tunnel: a snapshot, its
 * strings borrowed (valid until the tunnel next changes). */
struct tunnel_status {
        const char *name;
        const char *host;
        enum tunnel_state state;
        const char *reason;             /* why queued, degraded, stopping, stopped or failed; else NULL */
        bool enabled, held, flapping;
        pid_t pid;                      /* its connection's ssh; 0: none */
        pid_t next_pid;                 /* make-before-break: the ssh taking its forwards over; 0: none */
        double since;                   /* seconds in this state */
        double state_since_wall;        /* when it entered this state (unix time) */
        double uptime;                  /* of the connection's current ssh; < 0: none */
        double retry_in;                /* backoff: seconds to the next start; < 0 otherwise */
        unsigned long starts, restarts, prohibited;
        unsigned consecutive_failures;
        const unsigned long *failures;  /* by class, [_FAILURE_MAX] */
        const struct conn_run *last_run;        /* ->valid false: none yet */
        double last_run_ago;
        char *const *local_forwards;    /* what ssh sets up (tunnel_spec_*_forwards) */
        char *const *remote_forwards;
        char *const *dynamic_forwards;
        double gatetime;
        enum restart_policy restart;
        struct availability_info avail; /* since the tunnel was configured */
        const char *connection;         /* share_connection: the shared connection it rides, or NULL */
        size_t n_forwards;              /* one per forward, as ssh answered for it */
        const struct tunnel *tunnel;    /* for tunnel_forward_status() */
};
void tunnel_get_status(const struct tunnel *t, double now, struct tunnel_status *ret);
/* The i-th forward's state (i < n_forwards). */
const struct forward_status *tunnel_forward_status(const struct tunnel_status *s, size_t i);
/* Its connection's TCP connection to the server (or first hop), as the kernel sees it (read
 * at most once a second per connection): 0, or -ENOENT while no ssh of its runs (or its
 * own connection is not known), -errno. */
int tunnel_path_status(const struct tunnel_status *s, struct tcp_diag_info *ret);
/* Its connection's alternatives (conn.h): how many (0: none configured), which one serves
 * (-1: none), how often it failed over, and alternative i (i < tunnel_alt_count()). */
size_t tunnel_alt_count(const struct tunnel_status *s);
ssize_t tunnel_alt_serving(const struct tunnel_status *s);
unsigned long tunnel_alt_failovers(const struct tunnel_status *s);
void tunnel_alt_status(const struct tunnel_status *s, size_t i, double now, struct conn_alt_info *ret);
