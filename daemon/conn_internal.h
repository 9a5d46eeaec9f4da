/* SPDX-License-Identifier: MIT */
#pragma once

/* What the files of the conn module share (conn.c: the state machine and its verbs;
 * conn_run.c: a run's spawn and end; conn_forward.c: the forwards; conn_handover.c:
 * make-before-break; conn_change.c: a reload's new settings). Not for other modules: they have conn.h. */

#include "conn.h"
#include "proc_net.h"

#include "log.h"
#include "master.h"
#include "policy.h"

/* What a connection's ssh is started with, derived from its spec (and the ssh program):
 * made before a reload's point of no return, so that taking it cannot fail. */
struct conn_setup {
        char *ssh;
        char **argv;                    /* its ControlPath is control_base's generation 0 */
        char *jump_config, *jump_config_path;   /* jump_config.h: NULL without a jump host */
        char *known_hosts, *known_hosts_path;   /* known_hosts.h: NULL without pinned keys */
        char *control_base;             /* DIR/NAME.mux: a master's socket is NAME.mux0 … NAME.mux9 */
};

struct conn_change {
        struct tunnel_spec spec;
        struct conn_setup setup;
        struct conn_alts *alts;         /* the new spec's alternatives (NULL: none) */
};

/* One destination of a connection (conn_alt.c): 0 the spec's own, then its alternatives. */
struct conn_alt {
        struct tunnel_spec spec;        /* i > 0: the effective spec (tunnel_spec_alternative) */
        struct conn_setup setup;        /* i > 0: its command line and files; 0 has the connection's */
        enum failure_class last_failure;        /* why it does not serve (NONE: no failure since it did) */
        double failed_at;
        unsigned failures;              /* in a row: its own backoff while another serves */
        unsigned long starts;
};
struct conn_alts {
        struct conn_alt *v;
        size_t n;                       /* 1 + the spec's alternatives */
        size_t target;                  /* where the next start goes */
        size_t round;                   /* alternatives failed in a row since one was up */
        unsigned long failovers;
        bool failing_back;              /* the new ssh is the preferred one's, beside a backup that serves */
        bool holding;                   /* …it is up, and takes the forwards over once up for gatetime */
        double failback_at;
        ev_timer failback_timer, hold_timer;
};

/* The run's own TCP connection to its server (with a jump host or a ProxyCommand: the
 * helper's, to the first hop), learnt once ssh authenticated (conn_path.c). */
struct conn_path {
        bool known;
        bool tuned;                     /* TCP_USER_TIMEOUT set on it */
        struct proc_net_socket sock;    /* who holds it (pid, fd), its two ends */
        int ifindex;                    /* the interface its packets left by at the first check */
        double figures_at;              /* figures' last look (status and metrics read them at most once a second) */
        int figures_r;
        struct tcp_diag_info figures;
};

/* The current run: from spawn to exit. */
struct conn_runstate {
        double started_at;
        double up_since;                /* when this run came UP */
        double retry_at;                /* BACKOFF: when the timer fires */
        bool connecting;                /* holds a max_parallel_starts slot */
        bool deadline_final;            /* the deadline timer's second phase */
        bool came_up, gate_passed;
        bool refused_by_policy;         /* sshd said its policy refuses a forward (the next -R failure's class) */
        enum failure_class kill_class;  /* tunneld ends this run for this failure (NONE: it does not) */
        const char *not_started;        /* conn_fail_unstarted: what the run's line says (during the call) */
        bool probe_ended;               /* tunneld ended it: no TCP connection yet, the path still dead */
        size_t alt;                     /* the alternative it goes to (conn_alt.c; SIZE_MAX: removed since) */
        struct conn_path path;
};

/* A master before the current one: it serves its forwards until the new master has taken
 * each over (handing over), then carries its last connections (draining). */
struct conn_old {
        struct conn *c;
        struct conn_old *next;
        struct master *m;
        int gen;
        struct forward *fwds;           /* what it had open (copies: a forward may go meanwhile) */
        struct conn_forward **owners;   /* each one's forward (NULL: removed since) */
        uint32_t *close_ids;            /* the close of fwds[i] in flight; 0: none */
        size_t n, closes_left;
        size_t moving;                  /* forwards the new master has not answered for yet */
        bool handing_over;              /* until every close was answered */
        bool move_started;              /* the new master answered: the closes went out */
        struct conn_runstate run;       /* its run's, for when it is the run again (conn_handover_revert) */
        ev_timer timer;                 /* the drain's checks, its deadline */
        double deadline;
};


/* Every user's forwards (conn_forward.c), in the order they were added. */
struct conn_forwards {
        struct conn_forward *first, *last;
        size_t n;
        ev_timer retry;                 /* failed forwards are asked for again */
};

struct conn_flap {
        struct flap_ring ring;
        bool flapping;
        unsigned long suppressed;       /* lines logged at debug level while flapping */
        double reported_at;             /* the last "flapping"/"still flapping" line */
};

struct conn {
        const struct conn_context *ctx;
        char *name;
        bool shared;
        void *owner;
        struct tunnel_spec spec;
        struct conn_setup setup;

        enum conn_state state;
        double state_since;
        const char *reason;             /* STOPPED, FAILED: why */
        char wait_reason[128];          /* QUEUED: why */
        bool start_after_stop;          /* STOPPING: start again once the exit is reaped */
        const char *restart_again;      /* UP: a make-before-break whose new ssh failed, tried again at run.retry_at */

        struct master *master;          /* the current run's ssh */
        int gen;                        /* its control socket */
        struct conn_old *olds;          /* masters before: the first may still be handing over */
        struct conn_runstate run;
        double path_dead_since;         /* a run's path died; until a new ssh gets an answer (conn_path.c) */
        ev_timer retry_timer, deadline_timer, gate_timer, lifetime_timer;

        struct run_counters counters;   /* what policy.h judges a run with */
        unsigned long total_starts;
        struct conn_run last_run;
        struct conn_flap flap;

        struct conn_user *users;
        size_t n_users, n_attached;
        struct conn_forwards fwds;
        struct conn_idle *idle;         /* the server's idle limit, once seen (conn_idle.c) */
        struct conn_alts *alts;         /* the destination's alternatives (conn_alt.c); NULL: none */
};

/* conn.c */
struct log_ctx conn_log_ctx(const struct conn *c);
void conn_arm(struct conn *c, ev_timer *w, double after);
/* The one place that changes c->state: tells the users (who log the news, or the
 * connection logs it itself when it is shared), then the observer. */
void conn_set_state(struct conn *c, enum conn_state state, int prio, const struct conn_run *run, const char *fmt, ...)
        _printf_(5, 6);
void conn_set_connecting(struct conn *c, bool connecting);
void conn_maybe_up(struct conn *c);
/* This run has been up for gatetime: a successful start. */
void conn_pass_gate(struct conn *c);
void conn_end_flapping(struct conn *c, const char *why);
bool conn_is_running(const struct conn *c);

/* conn_run.c */
/* Spawn a master for a new run (past the start gate), or queue. */
void conn_spawn(struct conn *c, const struct conn_run *run, const char *what, const char *next);
/* The run's end, judged by policy.h and carried out. */
void conn_finish_run(struct conn *c, struct conn_run *run);
/* alt: the alternative it is for (its files are NAME.altI.*; 0: NAME.*). */
int conn_setup_new(const struct conn *c, const struct tunnel_spec *spec, const char *ssh, size_t alt,
                   struct conn_setup *ret);
void conn_setup_done(struct conn_setup *s);
/* The files ssh reads that tunneld writes: removed when the connection goes. */
void conn_remove_files(const struct conn *c);
extern const struct master_ops conn_master_ops;

/* conn_forward.c */
/* The master said hello: ask for every forward not asked for yet. */
void conn_forwards_open_pending(struct conn *c);
/* The run ended: every forward is pending again (asked for from the next master), but
 * those an old master still holds; the users are not told (the connection's change of
 * state that follows tells them). */
void conn_forwards_reset(struct conn *c);
void conn_forwards_on_reply(struct conn *c, const struct mux_reply *r);
void conn_forwards_on_line(struct conn *c, enum failure_class class, const char *line);
void conn_forward_opened_after_move(struct conn *c, struct conn_forward *f);
void conn_forwards_init(struct conn *c);

/* conn_idle.c */
/* The current master said hello: a session is held open on it if the server showed an
 * idle limit. */
void conn_idle_on_ready(struct conn *c);
/* The current master is stopped: its session goes. */
void conn_idle_stop(struct conn *c);
/* The current master's run ended on its own: true if the server closed it for its idle
 * limit, and it is reconnected (not a failure); else its session went, and the run is
 * judged as usual. */
bool conn_idle_closed(struct conn *c, struct conn_run *run);
void conn_idle_free(struct conn *c);
/* conn_path.c */
/* A path found dead stays probed this long at most, each start given this long to connect. */
#define CONN_PATH_DEAD_MAX 600.0
#define CONN_PATH_PROBE 1.5
/* ssh authenticated: its own connection learnt, dead_path_timeout set on it. */
void conn_path_learn(struct conn *c);
/* dead_path_timeout (again, after a reload changed it) on the run's connection. */
void conn_path_tune(struct conn *c);
/* The network changed: true if the run's path moved or went (why: what changed). */
bool conn_path_moved(struct conn *c, struct netpath *np, char *why, size_t size);
/* The run holds an established TCP connection (to its server or first hop). */
bool conn_path_has_tcp(const struct conn *c);

/* conn_alt.c */
/* Could another host not fail so (not a local or configuration failure)? */
bool conn_alt_class_moves(enum failure_class class);
int conn_alts_new(const struct conn *c, const struct tunnel_spec *spec, const char *ssh, struct conn_alts **ret);
struct conn_alts *conn_alts_free(const struct conn *c, struct conn_alts *a);
/* Alternative i's spec and setup (0, or none configured: the connection's own). */
const struct tunnel_spec *conn_alt_spec(const struct conn *c, size_t i);
const struct conn_setup *conn_alt_setup(const struct conn *c, size_t i);
size_t conn_alt_target(const struct conn *c);
const char *conn_alt_name(const struct conn *c, size_t i, char *buf, size_t size);
void conn_alt_started(struct conn *c);
/* The files of alternatives from on. */
void conn_alts_remove_files(const struct conn_alts *a, size_t from);
/* A judged run's end: true if the next start goes to the next alternative at once (next:
 * the log's words; the failure count stays: one backoff step per full round). */
bool conn_alt_failover(struct conn *c, const struct conn_run *run, const struct verdict *v, unsigned failures_before,
                       char *next, size_t size);
/* A run's path died (or, probe, a probe of a dead path found no TCP connection): true if
 * the next start goes to the next alternative. */
bool conn_alt_path_died(struct conn *c, const struct conn_run *run, bool probe, char *next, size_t size);
/* A fail-back candidate's run ended: true if the backup is the run again and serves on. */
bool conn_alt_failback_failed(struct conn *c, const struct conn_run *run, const char *what);
/* The master's news: true while a fail-back candidate waits (nothing moves to it yet). */
bool conn_alt_hold(struct conn *c);
/* Every change of state (conn_set_state): fail-back armed while a backup is up. */
void conn_alt_on_state(struct conn *c);
/* The old master ended (conn_handover.c). */
void conn_alt_old_ended(struct conn *c);
/* A reload's alternatives (takes *next): what each had learnt carried over; true if the
 * alternative that serves was removed (the caller restarts, make-before-break). */
bool conn_alt_reconfigure(struct conn *c, const struct tunnel_spec *old, const struct tunnel_spec *new,
                          struct conn_alts **next);

/* conn_handover.c */
/* A fail-back candidate waits this long more: the old master's handover deadline too. */
void conn_handover_extend(struct conn *c, double seconds);
/* An up connection's planned restart, make-before-break: false if it cannot be done so. */
bool conn_handover_begin(struct conn *c, const char *reason);
/* The new master said hello: each forward closed on the old one, then opened here. */
void conn_handover_move(struct conn *c);
/* The new run ended before the old master let go of any forward: the old one is the run
 * again, as if the restart had not been tried. False if it cannot be (nothing to go back to). */
bool conn_handover_revert(struct conn *c);
/* The new run ended, or the connection stops: the old masters are stopped too. */
void conn_handover_abort(struct conn *c, const char *why);
/* Forward f stops moving (the new master answered for it, or it went): once none is
 * left, the old master only drains. */
void conn_handover_moved(struct conn *c, struct conn_forward *f);
/* A forward goes: an old master that still holds it closes it. */
void conn_handover_forget(struct conn *c, const struct conn_forward *f);
/* A control socket number no old master of c still uses. */
int conn_handover_free_gen(const struct conn *c);
bool conn_handover_has_child(const struct conn *c);
void conn_handover_free(struct conn *c);
