/* SPDX-License-Identifier: MIT */
#pragma once

/* conn: a connection, the one way tunneld drives ssh. One ssh at a time runs as a
 * multiplexing master of tunneld's own (master.h); the connection owns everything about
 * it: when it is spawned (the start gate), "up" (authenticated, its control socket
 * answering), the start deadline, failure classes, gatetime, restart policy and backoff
 * (policy.h's verdict), max_lifetime, make-before-break handover to a new master and the
 * old one's drain, and the forwards its tunnels want, each opened, closed and retried with
 * ssh's own reply. Its users (tunnel.h) are told of every change; what a change means for
 * a tunnel is the tunnel's business. */

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "netpath.h"
#include "tcp_diag.h"
#include "forward.h"
#include "sockwatch.h"
#include "ssh_output.h"

struct conn;

enum conn_state {
        CONN_STOPPED,           /* no ssh; no user wants it (or stopped by max_lifetime_action) */
        CONN_QUEUED,            /* wanted, waiting for a start slot */
        CONN_STARTING,          /* ssh spawned, not yet authenticated with its control socket answering */
        CONN_UP,                /* authenticated, control socket answering: forwards are asked for */
        CONN_BACKOFF,           /* ssh ended; a timer starts it again */
        CONN_FAILED,            /* ssh ended and the policy says not to retry */
        CONN_STOPPING,          /* SIGTERM sent, waiting for the exit */
        _CONN_STATE_MAX,
};

/* One ssh run, as it ended. */
struct conn_run {
        bool valid;
        pid_t pid;
        int exit_status;                /* -1 if killed by a signal */
        int exit_signal;                /* 0 if it exited */
        double ran;                     /* seconds */
        double ended_at;                /* CLOCK_MONOTONIC */
        enum failure_class failure;
        bool failure_on_proxy;          /* the jump host's (before the destination answered) */
        bool requested;                 /* tunneld asked for this exit (a stop, not a failure) */
        bool answered;                  /* the destination sent its banner */
        bool authenticated;             /* ssh authenticated to the destination */
        bool path_died;                 /* it had come up, and its path died under it: not a failed start */
};
/* A run's journal fields (SSH_PID, EXIT_STATUS, EXIT_SIGNAL, FAILURE) onto ctx; run may be NULL. */
struct log_ctx;
void conn_run_log_fields(const struct conn_run *run, struct log_ctx *ctx);

/* What every connection of one supervisor shares, owned by the supervisor (which updates
 * it on reload; a connection reads it when it needs it). */
struct conn_context {
        struct ev_loop *loop;
        const char *ssh;
        double stop_timeout;            /* SIGTERM → SIGKILL */
        const char *runtime_dir;        /* tunneld's private 0700 directory: the files it writes for ssh */
        const char *control_dir;        /* …and the directory of the control sockets (runtime.h) */
        struct sockwatch *watch;        /* on control_dir */
        /* every state change, and CONN_EVENT_CONNECTING (the slot), after the users were told */
        void (*observer)(struct conn *c, int event, int old, void *userdata);
        /* asked before every spawn: NULL to go ahead, else why to wait (QUEUED until conn_dequeue()) */
        const char *(*gate)(struct conn *c, void *userdata);
        /* every run's end (a stop tunneld asked for too), before the connection judges it */
        void (*run_ended)(struct conn *c, const struct conn_run *run, void *userdata);
        const char *quiet_wait;         /* a reason of the gate's not worth a line (one turn of the loop) */
        void *userdata;
};
enum {
        CONN_EVENT_STATE,
        CONN_EVENT_CONNECTING,          /* conn_is_connecting() changed */
};

/* A forward one user wants on the connection. The user owns it (and its spec string); the
 * connection keeps it on its list while added, and says what ssh answered. */
enum forward_state {
        FORWARD_PENDING,        /* not answered yet (or no master to ask) */
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
struct conn_user;
struct conn_forward {
        struct forward f;
        struct forward_status st;       /* what status shows */
        struct conn_user *user;
        enum failure_class class;       /* FAILED: local-forward, remote-forward or forward-denied */
        char reason[256];
        unsigned failures;              /* in a row: its retry's backoff */
        double retry_at;                /* FAILED: when it is asked for again */
        uint32_t request_id;            /* the open in flight on the current master; 0: none */
        bool cause_seen;                /* this attempt: ssh's stderr named the cause (kept over the reply's) */
        bool moving;                    /* make-before-break: served by the old master until the new one answers */
        bool held_by_old;               /* …and not yet let go by the old one */
        bool move_retry;                /* a moved -R whose port the server still held: asked again at retry_at */
        unsigned move_tries;
        bool listed;
        struct conn_forward *prev, *next;
};

/* Who rides a connection: a tunnel. */
struct conn_user_ops {
        /* the connection changed state (or its ssh: a new run, a make-before-break
         * handover); news is the log line of what happened and what happens next, prio its
         * level, run the ssh run it is about (NULL: none ended) */
        void (*changed)(struct conn_user *u, enum conn_state old, int prio, const struct conn_run *run,
                        const char *news);
        /* max_lifetime_action = stop: the connection stopped for good; the user stays
         * stopped (and detached) until it is started */
        void (*held)(struct conn_user *u, const char *reason);
        /* the connection began (true) or stopped (false) flapping */
        void (*flapping)(struct conn_user *u, bool flapping);
        /* one of its forwards changed state; failed: it just failed (not a retry's same failure) */
        void (*forward)(struct conn_user *u, struct conn_forward *f, bool failed);
        /* the server refused one connection through a forward of the connection */
        void (*prohibited)(struct conn_user *u);
        /* make-before-break is done: a new ssh serves the forwards (conn_get_pid); or, with
         * failed, the new ssh's run that ended before it took them over: the old one serves on */
        void (*handed_over)(struct conn_user *u, const struct conn_run *failed);
};
struct conn_user {
        const struct conn_user_ops *ops;
        const char *name;               /* the tunnel's, for the log */
        struct conn *conn;              /* NULL: on none */
        struct conn_user *prev, *next;
        bool attached;                  /* wants the connection running */
};

/* name: the connection's (a tunnel's own, or "~FIRST" for a shared one). spec: the
 * connection settings (its forwards, probe, hooks are not read). */
int conn_new(const struct conn_context *ctx, const char *name, const struct tunnel_spec *spec, bool shared,
             void *owner, struct conn **ret);
/* Free; a live ssh is killed (SIGKILL). Users are dropped (their conn is NULL). NULL-safe. */
struct conn *conn_free(struct conn *c);

/* A user joins (not attached: the connection does not run for it yet) or leaves (its
 * forwards removed, detached first). */
void conn_add_user(struct conn *c, struct conn_user *u);
void conn_remove_user(struct conn_user *u);
/* The user wants the connection running: started if it is not (now, not after a backoff,
 * if manual: a start by request). The last user to detach stops it. */
void conn_attach(struct conn_user *u, bool manual);
void conn_detach(struct conn_user *u, const char *reason);
/* A user's forward onto the connection (asked for once a master answers) or off it
 * (closed on the master). */
void conn_forward_add(struct conn *c, struct conn_forward *f);
void conn_forward_remove(struct conn *c, struct conn_forward *f);
/* Closed and asked for again on the same ssh (tunnelctl restart of one tunnel of many). */
void conn_forward_reopen(struct conn *c, struct conn_forward *f);

/* A planned restart (tunnelctl restart, SIGUSR1, max_lifetime): make-before-break when up,
 * else a stop and a start; in backoff: a retry now. */
void conn_restart(struct conn *c, const char *reason);
/* BACKOFF only: retry now with a reset delay. */
void conn_retry_now(struct conn *c, const char *reason);
/* BACKOFF only, after a failure a network change can cure: retry now, backoff reset. */
bool conn_retry_soon(struct conn *c, const char *reason);
/* The network changed (one look of the kernel, np, for a burst of changes): an up
 * connection whose path moved or went gets a new ssh, make-before-break. */
void conn_network_changed(struct conn *c, struct netpath *np);
/* The machine resumed from sleep: an up connection gets a new ssh make-before-break (its
 * old TCP connection may be dead after a long sleep; a live one loses nothing), one in
 * backoff retries now. */
void conn_resumed(struct conn *c);
/* The current run's TCP connection to its server (or first hop), as the kernel sees it
 * now: 0, or -ENOENT (none known), -errno. */
int conn_get_path(struct conn *c, struct tcp_diag_info *ret);
/* QUEUED only: the gate has opened. */
void conn_dequeue(struct conn *c, const char *reason);
/* QUEUED only: judged as a failed start of class without running ssh (pacing.h: the
 * attempt it waited for, with the same credentials, just failed so, like its run: its
 * exit is taken, not its pid nor its time); why begins the log line ("not started: …"). */
void conn_fail_unstarted(struct conn *c, const struct conn_run *like, enum failure_class class, const char *why);
/* tunneld ends the run for a failure of its own finding (a probe): SIGTERM now, the exit
 * classed as class. */
void conn_end_run(struct conn *c, enum failure_class class, const char *fmt, ...) _printf_(3, 4);
/* Shutting down: a restart that waits for an exit is off. */
void conn_cancel_start(struct conn *c);

/* A reload's new settings, made before the point of no return (applying cannot fail). */
struct conn_change;
int conn_change_new(struct conn *c, const struct tunnel_spec *spec, const char *ssh, struct conn_change **ret);
struct conn_change *conn_change_free(struct conn_change *ch);
const struct tunnel_spec *conn_change_spec(const struct conn_change *ch);
/* Take them: supervision in place (the same ssh, its timers re-armed for what is left of
 * them); a new ssh command line by a make-before-break restart. Takes ch. */
void conn_reconfigure(struct conn *c, struct conn_change *ch);
/* Would spec's connection settings be this connection's (no new ssh)? */
bool conn_same_command(const struct conn *c, const struct tunnel_spec *spec, const char *ssh);

const char *conn_state_to_string(enum conn_state s);
const char *conn_forward_state_to_string(enum forward_state s);
enum conn_state conn_get_state(const struct conn *c);
const char *conn_get_name(const struct conn *c);
const struct tunnel_spec *conn_get_spec(const struct conn *c);
/* With alternatives: the host the current run's ssh goes to (journal DESTINATION=); NULL
 * without alternatives. */
const char *conn_get_destination(const struct conn *c);
/* The spec of the destination its next (or current) start goes to: with alternatives, that
 * alternative's effective spec; else conn_get_spec(). */
const struct tunnel_spec *conn_get_dest_spec(const struct conn *c);
bool conn_is_shared(const struct conn *c);
void *conn_get_owner(const struct conn *c);
bool conn_is_connecting(const struct conn *c);         /* holds a max_parallel_starts slot */
bool conn_has_child(const struct conn *c);             /* an ssh of it runs (a draining one too) */
bool conn_wants_start(const struct conn *c);           /* STOPPING, to start again */
/* The old master still serves the forwards while a new one takes them over. */
bool conn_is_handing_over(const struct conn *c);
pid_t conn_get_pid(const struct conn *c);              /* the ssh serving the forwards, 0: none */
pid_t conn_get_next_pid(const struct conn *c);         /* make-before-break: the ssh taking them over, or 0 */
double conn_get_uptime(const struct conn *c, double now);      /* < 0: no ssh */
double conn_get_retry_in(const struct conn *c, double now);    /* BACKOFF: seconds; < 0 otherwise */
const struct conn_run *conn_get_last_run(const struct conn *c);
unsigned conn_get_failures(const struct conn *c);      /* failed runs in a row (0 once this one passed gatetime) */
bool conn_is_flapping(const struct conn *c);
size_t conn_count_users(const struct conn *c);
size_t conn_count_attached(const struct conn *c);
const char *conn_get_reason(const struct conn *c);     /* QUEUED: why; STOPPED, FAILED: why */
bool conn_has_started(const struct conn *c);

/* Alternatives (conn_alt.c): 0 is the spec's own destination, the preferred one. */
struct conn_alt_info {
        const char *host;
        int port;                       /* 0: ssh's default */
        bool serving;                   /* its ssh serves the forwards */
        enum failure_class last_failure;        /* why it does not serve: its last failure (NONE: none since it did) */
        double failed_ago;              /* seconds; < 0: never failed */
        unsigned long starts;
        double retry_in;                /* the preferred one while a backup serves: its next try; < 0 otherwise */
};
size_t conn_alt_count(const struct conn *c);            /* 0: no alternatives configured */
ssize_t conn_alt_serving(const struct conn *c);         /* the alternative whose ssh serves; -1: none */
unsigned long conn_alt_failovers(const struct conn *c);
void conn_alt_get(const struct conn *c, size_t i, double now, struct conn_alt_info *ret);

/* The start deadline of a connection: start_timeout, or by default (connect_timeout + 10 s)
 * per hop (the destination and each jump host); and how long of it a start slot is held:
 * connect_timeout per hop (past it ssh is connected and waits on a slow or hung server,
 * which must not keep other connections queued). */
double conn_start_deadline(const struct tunnel_spec *s);
double conn_slot_time(const struct tunnel_spec *s);
