/* SPDX-License-Identifier: MIT */
#pragma once

/* tunnel: one named tunnel's state machine and its ssh child. */

#include <ev.h>
#include <stdbool.h>
#include <sys/types.h>

#include "config.h"
#include "lines.h"
#include "ssh_output.h"

enum tunnel_state {
        TUNNEL_STOPPED,         /* not running, by request (or disabled) */
        TUNNEL_STARTING,        /* ssh spawned, not yet authenticated with every forward in place */
        TUNNEL_UP,              /* ssh reported authentication and every remote forward accepted */
        TUNNEL_BACKOFF,         /* ssh exited; a timer will start it again */
        TUNNEL_FAILED,          /* ssh exited and the policy says not to retry */
        TUNNEL_STOPPING,        /* SIGTERM sent, waiting for the exit (SIGKILL at the grace end) */
        TUNNEL_QUEUED,          /* due to start, waiting for a start slot or for the tunnels it is after */
        _TUNNEL_STATE_MAX,
};

struct tunnel;

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

struct tunnel_run {
        bool valid;
        pid_t pid;                      /* the ssh that ran */
        int exit_status;        /* -1 if killed by a signal */
        int exit_signal;        /* 0 if it exited */
        double ran;             /* seconds */
        double ended_at;        /* CLOCK_MONOTONIC */
        enum failure_class failure;
        bool requested;         /* tunneld asked for this exit */
};

struct tunnel {
        struct ev_loop *loop;
        struct tunnel_spec spec;
        char **argv;
        double stop_timeout;
        tunnel_observer_t observer;
        tunnel_gate_t gate;
        void *userdata;
        struct probe *probe;            /* NULL unless spec.probe.connect */
        unsigned probe_misses;
        bool probe_kill;                /* this run is being ended because the probe failed */
        char wait_reason[128];          /* QUEUED: why */

        enum tunnel_state state;
        double state_since;             /* CLOCK_MONOTONIC */
        const char *reason;             /* why FAILED or STOPPED, static */

        pid_t pid;                      /* > 0 while an ssh child exists */
        double started_at;
        double retry_at;                /* BACKOFF: when the timer fires */
        bool authenticated;
        bool connecting;                /* spawned, not authenticated yet: holds a max_parallel_starts slot */
        bool session;                   /* "Entering interactive session": -L/-D listeners bound */
        bool forward_failed;            /* this run: a forward could not be set up */
        char **allocated;               /* this run: "PORT for remote forward to HOST:PORT" (-R 0:…) */
        unsigned remote_confirmed;
        enum failure_class run_failure; /* from this run's stderr */
        bool kill_sent;
        bool start_after_stop;
        bool held;                      /* stopped by an operator: stays stopped across reloads */

        ev_child child_watcher;
        ev_timer timer;                 /* backoff retry or stop grace, by state */
        ev_timer gate_timer;            /* gatetime of the current run */
        ev_timer lifetime_timer;        /* max_lifetime of the current run */
        ev_io stderr_watcher;
        int stderr_fd;
        struct lines out;               /* ssh's stderr, a line at a time */

        unsigned starts;                /* since configured or started by hand (max_starts) */
        unsigned failures;              /* consecutive failed starts (backoff exponent) */
        unsigned long total_starts;     /* since tunneld started; never reset */
        unsigned long restarts;         /* starts after an exit tunneld did not ask for */
        bool restart_pending;           /* the next start is such a restart */
        unsigned long total_failures[_FAILURE_MAX];
        bool run_up;                    /* this run has been UP */
        bool gate_elapsed;              /* this run has lasted gatetime (up or not) */
        bool gate_passed;               /* this run has lasted gatetime while UP: a success so far */
        unsigned failures_before_gate;  /* restored if a passed run still ends as a failure (probe) */
        bool ever_passed;               /* some run since configured was a success (fail_fast) */
        struct tunnel_run last_run;

        /* flapping: flap_threshold failed runs within flap_window */
#define FLAP_RING 64
        double fail_at[FLAP_RING];
        unsigned fail_next;
        bool flapping;
        unsigned long flap_suppressed;  /* lines logged at debug level while flapping */
        double flap_reported_at;        /* last "flapping"/"still flapping" line */

        struct hook *hook;              /* on_state_change runner, made by the supervisor */
};

int tunnel_new(struct ev_loop *loop, const struct tunnel_spec *spec, const char *ssh, double stop_timeout,
               tunnel_observer_t observer, void *userdata, struct tunnel **ret);
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
/* New spec (reload): restart with it if it is enabled, stop if not. */
int tunnel_reconfigure(struct tunnel *t, const struct tunnel_spec *spec, const char *ssh, double stop_timeout);
/* Backoff only: retry now with a reset delay (SIGUSR1). */
void tunnel_retry_now(struct tunnel *t, const char *reason);
/* Backoff only, and only after a failure a network change can cure (dns, refused,
 * unreachable, timeout, closed, unknown): retry within jitter seconds with a reset delay
 * (the network came back). Returns true if it will. */
bool tunnel_retry_soon(struct tunnel *t, double jitter, const char *reason);
/* QUEUED only: the gate has opened; spawn now. */
void tunnel_dequeue(struct tunnel *t, const char *reason);

bool tunnel_wants_start(const struct tunnel *t);
static inline bool tunnel_has_child(const struct tunnel *t) { return t->pid > 0; }

const char *tunnel_state_to_string(enum tunnel_state s);

/* The next backoff delay for the n-th consecutive failure, before jitter. Exposed for tests. */
double tunnel_backoff_base(double initial, double max, unsigned failures);
/* The same, by failure class: auth and host-key go to the cap at once; remote-forward is
 * retried every REMOTE_FORWARD_DELAY s for REMOTE_FORWARD_TRIES tries first. */
#define REMOTE_FORWARD_TRIES 10
#define REMOTE_FORWARD_DELAY 3.0
double tunnel_failure_delay(const struct tunnel_spec *s, enum failure_class class, unsigned failures);
