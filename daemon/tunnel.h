/* SPDX-License-Identifier: MIT */
#pragma once

/* tunnel: one named tunnel's state machine and its ssh child (the mechanism; what to do
 * after a run is policy.h's verdict). */

#include <ev.h>
#include <stdbool.h>
#include <sys/types.h>

#include "availability.h"
#include "config.h"
#include "lines.h"
#include "policy.h"
#include "ssh_output.h"

enum tunnel_state {
        TUNNEL_STOPPED,         /* not running, by request (or disabled) */
        TUNNEL_STARTING,        /* ssh spawned, not yet authenticated with every forward in place */
        TUNNEL_UP,              /* ssh authenticated, every forward tunneld asked for in place */
        TUNNEL_BACKOFF,         /* ssh exited; a timer will start it again */
        TUNNEL_FAILED,          /* ssh exited and the policy says not to retry */
        TUNNEL_STOPPING,        /* SIGTERM sent, waiting for the exit (SIGKILL at the grace end) */
        TUNNEL_QUEUED,          /* due to start, waiting for a start slot or for the tunnels it is after */
        TUNNEL_DEGRADED,        /* ssh runs without a forward (exit_on_forward_failure = false) */
        _TUNNEL_STATE_MAX,
};

struct tunnel;                  /* opaque: tunnel_internal.h */

enum tunnel_event {
        TUNNEL_EVENT_STATE,             /* t->state changed from old */
        TUNNEL_EVENT_FLAPPING,          /* t->flapping just became true */
        TUNNEL_EVENT_CONNECTING,        /* t->connecting changed */
};

/* Called after every state change (and when flapping starts). The observer may free the
 * tunnel only when the new state is STOPPED and tunnel_wants_start() is false. */
typedef void (*tunnel_observer_t)(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata);

/* Asked before every spawn: NULL to go ahead, else why the tunnel must wait (it is then
 * QUEUED until tunnel_dequeue()). The text is copied. */
typedef const char *(*tunnel_gate_t)(struct tunnel *t, void *userdata);

/* What every tunnel of one supervisor shares; owned by the supervisor, which updates it on
 * reload (a tunnel reads it when it needs it, never keeps a copy). */
struct tunnel_context {
        struct ev_loop *loop;
        const char *ssh;                /* the ssh program (config "ssh") */
        double stop_timeout;            /* SIGTERM → SIGKILL */
        const char *runtime_dir;        /* tunneld's private 0700 directory (jump host files) */
        tunnel_observer_t observer;
        tunnel_gate_t gate;
        void *userdata;
};

struct tunnel_run {
        bool valid;
        pid_t pid;                      /* the ssh that ran */
        int exit_status;        /* -1 if killed by a signal */
        int exit_signal;        /* 0 if it exited */
        double ran;             /* seconds */
        double ended_at;        /* CLOCK_MONOTONIC */
        enum failure_class failure;
        bool failure_on_proxy;  /* the failure was the jump host's (before the destination answered) */
        bool requested;         /* tunneld asked for this exit (a stop, not a failure) */
};

/* owner: whatever the creator keeps for the tunnel (tunnel_get_owner). */
int tunnel_new(const struct tunnel_context *ctx, const struct tunnel_spec *spec, void *owner, struct tunnel **ret);
/* Free; a live child is killed (SIGKILL) and left to the caller's reaper. NULL-safe. */
struct tunnel *tunnel_free(struct tunnel *t);

/* Start now (manual start resets counters and backoff). No-op if already running. */
void tunnel_start(struct tunnel *t);
/* SIGTERM the child (SIGKILL after stop_timeout) and stay stopped. */
void tunnel_stop(struct tunnel *t, const char *reason);
/* An operator's stop: like tunnel_stop, and a reload does not start it again. */
void tunnel_hold(struct tunnel *t, const char *reason);
/* Stop if running, then start again. */
void tunnel_restart(struct tunnel *t, const char *reason);
/* A new spec and everything derived from it (ssh's argv with program ssh, the jump hosts'
 * file, the probe), made before a reload's point of no return: applying it cannot fail. */
struct tunnel_change;
int tunnel_change_new(struct tunnel *t, const struct tunnel_spec *spec, const char *ssh, struct tunnel_change **ret);
struct tunnel_change *tunnel_change_free(struct tunnel_change *c);
/* The ssh command line changed (reload): restart with the new one if it is enabled, stop
 * if not. Takes c. */
void tunnel_reconfigure(struct tunnel *t, struct tunnel_change *c);
/* Only supervision settings changed (restart, backoff, gatetime, probe, hooks, after…):
 * applied in place, the running ssh is kept and the current run's timers are re-armed for
 * what is left of them. Takes c. */
void tunnel_update_policy(struct tunnel *t, struct tunnel_change *c);
/* multiplex on both sides, the same connection, only forwards (and supervision settings)
 * changed: tunnel_update_forwards can apply it to the running ssh. */
bool tunnel_forwards_change_in_place(const struct tunnel *t, const struct tunnel_spec *spec);
/* Removed forwards are closed and added ones opened on the running master; the others,
 * and every connection through them, are untouched. Takes c. */
void tunnel_update_forwards(struct tunnel *t, struct tunnel_change *c);
/* Backoff only: retry now with a reset delay (SIGUSR1). */
void tunnel_retry_now(struct tunnel *t, const char *reason);
/* Backoff only, and only after a failure a network change can cure: retry now, backoff
 * reset (the network came back; the start-slot queue spreads a herd). True if it did. */
bool tunnel_retry_soon(struct tunnel *t, const char *reason);
/* QUEUED only: the gate has opened; spawn now. */
void tunnel_dequeue(struct tunnel *t, const char *reason);

/* STOPPING with a start to follow (a restart, a reconfiguration). */
bool tunnel_wants_start(const struct tunnel *t);
/* That start is off: the tunnel stays stopped once the exit is reaped. */
void tunnel_cancel_start(struct tunnel *t);
bool tunnel_has_child(const struct tunnel *t);
/* Running ssh, as state: STARTING, UP or DEGRADED. */
bool tunnel_is_running(const struct tunnel *t);
/* The consecutive failures shown to operators: 0 once this run passed gatetime. */
unsigned tunnel_failures_shown(const struct tunnel *t);

const char *tunnel_state_to_string(enum tunnel_state s);

/* The few things the supervisor reads of a tunnel (the rest is tunnel_get_status). */
enum tunnel_state tunnel_get_state(const struct tunnel *t);
const struct tunnel_spec *tunnel_get_spec(const struct tunnel *t);
const char *tunnel_get_name(const struct tunnel *t);
bool tunnel_is_connecting(const struct tunnel *t);     /* holds a max_parallel_starts slot */
bool tunnel_is_held(const struct tunnel *t);           /* stopped by an operator */
bool tunnel_has_started(const struct tunnel *t);       /* has launched an ssh since tunneld started */
const struct tunnel_run *tunnel_get_last_run(const struct tunnel *t);
unsigned long tunnel_get_restarts(const struct tunnel *t);
void *tunnel_get_owner(const struct tunnel *t);

/* multiplex = true: each forward as ssh answered for it. */
enum forward_state {
        FORWARD_PENDING,        /* asked for, no reply yet (or the master not there yet) */
        FORWARD_OPEN,           /* ssh listens (-L/-D), or the server accepted it (-R) */
        FORWARD_FAILED,         /* refused, with ssh's reason; asked for again on a schedule */
};
struct forward_status {
        char kind;                      /* 'L', 'R', 'D' */
        const char *spec;
        enum forward_state state;
        const char *reason;             /* FAILED: ssh's words */
        int allocated_port;             /* -R 0: the port the server chose; 0 otherwise */
};
const char *forward_state_to_string(enum forward_state s);

/* share_connection: a carrier is a hidden tunnel (no forwards, probe, hooks or after of
 * its own) whose ssh carries the forwards of the tunnels riding it; named name (it is in
 * the log and in its files' names). */
int tunnel_new_carrier(const struct tunnel_context *ctx, const struct tunnel_spec *rider, const char *name,
                       struct tunnel **ret);
/* Every rider of carrier c has moved to rider's connection settings: c takes them (the
 * supervision in place, a new connection by a make-before-break restart). 0 or -ENOMEM. */
int tunnel_update_carrier(struct tunnel *c, const struct tunnel_spec *rider, const char *ssh);
/* A rider's connection (NULL: none, its own ssh). Leaving one closes its forwards there
 * (the last to leave stops it); a running rider's forwards go onto the new one at once.
 * 0 or -ENOMEM (nothing changed). */
int tunnel_set_carrier(struct tunnel *rider, struct tunnel *carrier);
struct tunnel *tunnel_get_carrier(const struct tunnel *t);
size_t tunnel_count_riders(const struct tunnel *carrier);

/* What the control socket, the metrics and the events read of a tunnel: a snapshot, its
 * strings borrowed (valid until the tunnel next changes). */
struct tunnel_status {
        const char *name;
        const char *host;
        enum tunnel_state state;
        const char *reason;             /* why queued, degraded, stopping, stopped or failed; else NULL */
        bool enabled, held, flapping;
        pid_t pid;                      /* 0: no ssh */
        double since;                   /* seconds in this state */
        double state_since_wall;        /* when it entered this state (unix time) */
        double uptime;                  /* of the current ssh; < 0: none */
        double retry_in;                /* backoff: seconds to the next start; < 0 otherwise */
        unsigned long starts, restarts, prohibited;
        unsigned consecutive_failures;
        const unsigned long *failures;  /* by class, [_FAILURE_MAX] */
        const struct tunnel_run *last_run;      /* ->valid false: none yet */
        double last_run_ago;
        char *const *local_forwards;    /* what ssh sets up (tunnel_spec_*_forwards) */
        char *const *remote_forwards;
        char *const *dynamic_forwards;
        char *const *allocated;         /* this run's server-chosen -R ports, or NULL */
        double gatetime;
        enum restart_policy restart;
        struct availability_info avail; /* since the tunnel was configured */
        bool multiplex;
        const char *connection;         /* share_connection: the shared connection it rides, or NULL */
        const struct forward_status *forwards;  /* multiplex and running: one per forward */
        size_t n_forwards;
};
void tunnel_get_status(const struct tunnel *t, double now, struct tunnel_status *ret);

/* The start deadline of a tunnel: start_timeout, or by default (connect_timeout + 10 s)
 * per hop (the destination and each jump host); and how long of it a start slot is held:
 * connect_timeout per hop (past it, ssh is connected and waits on a slow or hung server,
 * which must not keep other tunnels queued). */
double tunnel_start_deadline(const struct tunnel_spec *s);
double tunnel_slot_time(const struct tunnel_spec *s);
