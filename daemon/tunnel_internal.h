/* SPDX-License-Identifier: MIT */
#pragma once

/* What the files of the tunnel module share: the tunnel itself and the steps one file
 * takes in another's. Not for other modules (they have tunnel.h). */

#include "tunnel.h"

#include <stdint.h>

#include "forward.h"
#include "log.h"

struct tunnel {
        const struct tunnel_context *ctx;
        struct tunnel_spec spec;
        char **argv;
        char *jump_config;              /* jump_config.h text, NULL without a jump host */
        char *jump_config_path;         /* where it is written before every start */
        char *known_hosts;              /* known_hosts.h text, NULL without host_keys and jump_host_keys */
        char *known_hosts_path;
        struct probe *probe;            /* NULL unless spec.probe.connect */

        enum tunnel_state state;
        double state_since;             /* CLOCK_MONOTONIC */
        const char *reason;             /* why FAILED or STOPPED, static */
        char wait_reason[128];          /* QUEUED: why */
        bool held;                      /* stopped by an operator: stays stopped across reloads */
        bool start_after_stop;          /* STOPPING: start again once the exit is reaped */

        /* the current run */
        pid_t pid;                      /* > 0 while an ssh child exists */
        double started_at;
        double up_since;                /* when this run last came UP */
        double retry_at;                /* BACKOFF: when the timer fires */
        bool connecting;                /* holds a max_parallel_starts slot */
        bool authenticated;
        bool session;                   /* "Entering interactive session": -L/-D listeners bound */
        bool via_proxy;                 /* ssh runs a ProxyJump/ProxyCommand */
        bool banner_seen;               /* the destination answered (lines after this are not the proxy's) */
        unsigned hops;                  /* multiplex: jump hosts, each saying "Authenticated to" (VERBOSE) */
        unsigned hops_authenticated;    /* …so far: once all have, the lines are the destination's */
        bool forward_refused_by_policy; /* sshd said its policy refuses a forward */
        bool forward_failed;            /* this run: a forward could not be set up */
        bool local_forward_failed;      /* …and it was a -L/-D listener */
        char **allocated;               /* this run: "PORT for remote forward to HOST:PORT" (-R 0:…) */
        unsigned remote_replies;        /* -R replies, accepted or refused */
        unsigned remote_confirmed;      /* -R accepted */
        bool run_up;                    /* this run has been UP */
        bool gate_passed;               /* this run has been UP for gatetime: a success so far */
        enum failure_class run_failure; /* from this run's stderr */
        bool run_failure_on_proxy;
        enum failure_class kill_class;  /* tunneld is ending this run for this failure (NONE: it is not) */
        bool kill_sent;                 /* SIGKILL sent */
        unsigned probe_misses;

        ev_child child_watcher;
        ev_timer retry_timer;           /* BACKOFF: the next start */
        ev_timer grace_timer;           /* SIGTERM sent: SIGKILL when it fires */
        ev_timer gate_timer;            /* UP: gatetime of the current run */
        ev_timer lifetime_timer;        /* max_lifetime of the current run */
        ev_timer deadline_timer;        /* STARTING: the slot's end, then the start deadline */
        bool deadline_final;            /* the deadline timer's second phase */
        ev_io stderr_watcher;
        int stderr_fd;
        struct lines out;               /* ssh's stderr, a line at a time */
        double chatter_since;           /* ssh's plain lines: rate limit window */
        unsigned chatter_lines;
        unsigned long chatter_dropped;

        unsigned starts;                /* since configured or started by hand (max_starts) */
        unsigned failures;              /* consecutive failed runs (backoff exponent) */
        unsigned long total_starts;     /* since tunneld started; never reset */
        unsigned long restarts;         /* starts after an exit tunneld did not ask for */
        bool restart_pending;           /* the next start is such a restart */
        unsigned long total_failures[_FAILURE_MAX];
        unsigned long prohibited;       /* connections the server refused ("administratively prohibited") */
        bool ever_passed;               /* some run since configured was a success (fail_fast) */
        struct tunnel_run last_run;

        struct flap_ring flaps;
        bool flapping;
        unsigned long flap_suppressed;  /* lines logged at debug level while flapping */
        double flap_reported_at;        /* last "flapping"/"still flapping" line */

        struct availability avail;      /* up and down time, outages */

        /* multiplex = true: ssh is a mux master; tunneld opens its forwards over the control
         * socket (tunnel_mux.c) */
        char *mux_path;                 /* ssh's ControlPath: RUNTIME/NAME.mux/s, and 0 or 1 */
        char *mux_run_path;             /* this run's: s0 or s1 (the other is a draining master's) */
        int mux_gen;
        struct mux_old *mux_old;        /* the master before, handing its forwards over */
        struct mux_old *drainers;       /* masters before that, carrying their last connections */
        bool handed_over;               /* this run took the forwards over from the old master */
        int mux_watch_fd;               /* inotify on its directory until the socket appears */
        ev_io mux_watch;
        struct mux_client *mux;
        struct mux_forward *fwds;
        struct forward_status *fwd_status;      /* fwds[i].st: what status shows */
        size_t n_fwds;
        bool mux_ready;                 /* the master's hello came: requests may go */
        ev_timer fwd_retry_timer;       /* failed forwards are asked for again */
        double fwd_retry_delay;
        ev_timer mux_lost_timer;        /* the control connection closed: the exit, if one comes, says why */
        char mux_lost_why[192];

        /* share_connection (tunnel_share.c): a rider's forwards are on its carrier's ssh */
        struct tunnel *carrier;         /* rider: the hidden tunnel of its connection; NULL: its own ssh */
        bool attached;                  /* rider: its forwards are among the carrier's */
        struct forward_status *rider_status;    /* rider: its forwards as the carrier has them */
        size_t n_rider_status;
        bool is_carrier;
        ev_prepare sync_due;            /* carrier: its forwards follow its riders' before the loop sleeps */
        struct tunnel **riders;         /* carrier: every tunnel of the connection, attached or not */
        size_t n_riders;

        void *owner;                    /* the supervisor's, for its own bookkeeping */
};


/* tunnel.c: the state machine */
struct log_ctx ctx_of(const struct tunnel *t);
void arm(struct tunnel *t, ev_timer *w, double after);
/* The one place that changes t->state: logs what happened and what happens next, then
 * tells the observer. Callers return right after: the observer may free t. */
void set_state(struct tunnel *t, enum tunnel_state state, int prio, const struct tunnel_run *run,
               const char *fmt, ...) _printf_(5, 6);
void set_connecting(struct tunnel *t, bool connecting);
/* What the tunnel counts as now: up, down (wanted, not up) or off. */
enum avail_class avail_class_of(const struct tunnel *t);
void end_flapping(struct tunnel *t, const char *why);
/* tunneld ends the current run for a failure of its own finding: SIGTERM now, SIGKILL
 * after stop_timeout, the exit classed as class. */
void end_run(struct tunnel *t, enum failure_class class, const char *fmt, ...) _printf_(3, 4);
void pass_gate(struct tunnel *t);
/* Up once authenticated, listeners bound and every -R answered; degraded, or ended, if a
 * forward failed. */
void maybe_up(struct tunnel *t);
void spawn(struct tunnel *t, const struct tunnel_run *run, const char *what, const char *next);
void reset_counters(struct tunnel *t);
void on_probe(bool ok, const char *why, void *userdata);
void on_retry_timer(struct ev_loop *loop, ev_timer *w, int revents);
void on_grace_timer(struct ev_loop *loop, ev_timer *w, int revents);
void on_gate_timer(struct ev_loop *loop, ev_timer *w, int revents);
void on_deadline_timer(struct ev_loop *loop, ev_timer *w, int revents);
void on_lifetime_timer(struct ev_loop *loop, ev_timer *w, int revents);

/* tunnel_output.c: ssh's stderr */
void on_line(const char *line, void *userdata);
void on_stderr(struct ev_loop *loop, ev_io *w, int revents);
void close_stderr(struct tunnel *t);
/* The destination answered (its banner, or with multiplex the master's own TCP connection). */
bool ssh_connected(const struct tunnel *t);

/* tunnel_exit.c */
void on_child(struct ev_loop *loop, ev_child *w, int revents);
/* A run ended that tunneld did not ask to end: the verdict of policy.h, carried out. */
void finish_run(struct tunnel *t, struct tunnel_run *run);

/* tunnel_child.c */
char **ssh_environment(void);
/* A -L Unix socket left behind by a killed ssh: removed if nobody listens on it. */
void remove_stale_sockets(struct tunnel *t);
/* The files ssh reads that tunneld writes (the jump hosts' ssh_config, the known_hosts
 * of pinned keys): written before every start (0 or -errno, logged), removed when the
 * tunnel goes. */
int write_run_files(struct tunnel *t);
void remove_run_files(struct tunnel *t);

/* tunnel_mux.c */
struct mux_forward {
        struct forward_status *st;      /* what status shows; st->spec its own copy (a reload frees the spec's) */
        struct forward f;
        uint32_t request_id;            /* the open in flight; 0: none */
        bool handover;                  /* waits for the old master to close it first */
        struct tunnel *rider;           /* a carrier's: the tunnel it is for */
        char reason[256];
};
/* Before spawning a master: its directory, no stale socket, the watch, every forward
 * pending. 0 or -errno (logged). */
int mux_run_begin(struct tunnel *t);
/* The run ended (or the tunnel goes): the control connection, the watch and the forwards. */
void mux_run_end(struct tunnel *t);
/* A reload's new forwards for the running master, from spec (whose strings the tunnel is
 * about to take): kept ones stay as they are, removed ones are closed, added ones pending.
 * *added and *removed count them. Then mux_open_pending() asks for the added ones. */
int mux_retarget(struct tunnel *t, const struct tunnel_spec *spec, size_t *added, size_t *removed);
void mux_open_pending(struct tunnel *t);
/* Free forward states and the spec strings they own. */
void forward_states_free(struct forward_status *st, size_t n);
/* ssh's stderr said a listener is not bound on every address: fail that forward. */
void mux_note_bind_failure(struct tunnel *t, const char *line);
/* Every forward answered: *all_open if each is open. False while any is pending. */
bool mux_forwards_settled(const struct tunnel *t, bool *all_open);
void mux_init(struct tunnel *t);
/* The tunnel is freed: its directory too. */
void mux_done(struct tunnel *t);

/* The argv of this run: ControlPath is the run's (s0 or s1). *ret NULL: t->argv as it is. */
int mux_run_argv(const struct tunnel *t, char ***ret);

/* tunnel_handover.c: make-before-break for a multiplexed tunnel's planned restarts */
struct mux_old {
        struct tunnel *t;
        struct mux_old *next;           /* in t->drainers */
        pid_t pid;
        int gen;                        /* its socket: s0 or s1 */
        ev_child child;
        struct mux_client *mux;         /* still connected: its forwards are closed over it */
        struct mux_forward *fwds;       /* what it had */
        struct forward_status *fwd_status;
        size_t n_fwds;
        uint32_t *close_ids;            /* the close of fwds[i] in flight; 0: none */
        size_t closes_left;
        ev_timer timer;                 /* the drain's checks and its deadline */
        double deadline;
        bool term_sent, kill_sent;
};
/* A planned restart of an up multiplexed tunnel: its ssh becomes the old master (still
 * serving), and a new one is started that takes the forwards over once it is ready.
 * False if it cannot be done this way (the caller restarts the usual way). */
bool handover_begin(struct tunnel *t, const char *reason);
/* The new master said hello: move each forward (close on the old, then open here). */
void handover_move(struct tunnel *t);
/* The new run ended, the tunnel stops or goes: the old master is stopped too. */
void handover_abort(struct tunnel *t, const char *why);
bool handover_has_child(const struct tunnel *t);
/* A control socket number (0-9) no older master of t still uses. */
int handover_free_gen(const struct tunnel *t);
/* The tunnel goes: the old master is killed and forgotten. */
void handover_free(struct tunnel *t);

/* tunnel_share.c: share_connection */
/* A rider now: it has a carrier, and no ssh of its own left from before it shared. */
static inline bool riding(const struct tunnel *t)
{
        return t->carrier && t->pid <= 0 && !t->mux_old && !t->drainers;
}
void share_assign_owners(struct tunnel *c);
void share_sync_rider(struct tunnel *r);
void share_sync_riders(struct tunnel *c);
/* spawn() for a rider, past the start gate: its forwards onto the connection. */
void rider_spawn(struct tunnel *r, const struct tunnel_run *run, const char *what);
void rider_stop(struct tunnel *r, const char *reason);
void rider_restart(struct tunnel *r, const char *reason);
/* Its spec's forwards changed (reload): the carrier follows, on the running master. */
void share_forwards_changed(struct tunnel *r);
/* The connection flaps, or no longer does: so do its riders (each one's hook and events). */
void share_flapping(struct tunnel *c, bool flapping);
/* What status shows of a rider's forwards, read from the carrier now. */
const struct forward_status *share_rider_forwards(const struct tunnel *r, size_t *n);
/* The carrier goes: its riders run without it (the supervisor gives them another). */
void share_detach_all(struct tunnel *c);

/* tunnel_change.c */
void take_change(struct tunnel *t, struct tunnel_change *c, bool command, bool probe);
