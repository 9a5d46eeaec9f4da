/* SPDX-License-Identifier: MIT */
#pragma once

/* What supervisor.c (the set, its events, shutdown), supervisor_apply.c (a configuration
 * applied as a plan, reloads) and supervisor_conn.c (which connection each tunnel rides)
 * share. Not for other modules: they have supervisor.h. */

#include <sys/types.h>

#include "hook.h"
#include "netpath.h"
#include "netwatch.h"
#include "pacing.h"
#include "sleepwatch.h"
#include "reload_job.h"
#include "start_queue.h"
#include "supervisor.h"

/* What the supervisor keeps for each tunnel (the tunnel's owner)… */
struct supervisor_member {
        struct hook *hook;              /* on_state_change, made on its first event */
};
/* …and for each connection (the connection's owner). */
struct supervisor_link {
        struct start_entry start;       /* its place in the start queue */
        struct pacing_member pacing;    /* its credentials' attempts (supervisor_pacing.c) */
};

/* The configuration's loads: the first (supervisor_new_loading) and each reload, loaded in
 * a child process (reload_job.h), one at a time. */
struct supervisor_load {
        char *error;                    /* the last reload's, until one is applied; "loading" at first */
        struct reload_job *job;         /* loading in a child process */
        bool again;                     /* a reload asked for while one was loading */
        unsigned long started, done;    /* reloads counted, begun and finished */
        int r;                          /* the last finished one: 0 or -errno */
        struct config_errors errs;      /* …and its errors */
        supervisor_loaded_t loaded;     /* supervisor_new_loading: set until its load is done */
        void *userdata;
};

/* What the supervisor watches of the network and of sleep (supervisor_net.c). */
struct supervisor_net {
        struct netwatch *watch;         /* NETLINK_ROUTE (watch_network) */
        struct sleepwatch *sleep;       /* logind's PrepareForSleep */
        bool sleep_tried;
        struct netpath *np;             /* the kernel's look, for a walk over the connections */
        ev_idle walk;                   /* a walk: a few connections per loop turn */
        size_t next;                    /* its next connection */
        bool resumed;                   /* a resume's walk (else a path check's) */
};

struct supervisor {
        struct ev_loop *loop;
        struct config *config;
        struct tunnel_context tunnel_ctx;
        struct conn_context conn_ctx;   /* what every connection shares (ssh, stop_timeout, …) */
        char *runtime_dir;
        char *control_dir;              /* the control sockets' (runtime_control_dir_create) */
        struct sockwatch *watch;        /* on control_dir */

        struct tunnel **tunnels;        /* in configuration order */
        size_t n_tunnels;
        struct tunnel **retiring;       /* removed by a reload, still stopping */
        size_t n_retiring;
        struct conn **conns;            /* every connection, the tunnels' own and the shared ones */
        size_t n_conns;
        bool conns_dirty;               /* one has stopped: free those no tunnel uses */
        bool after_due;                 /* a tunnel came up: those after it may go */

        bool shutting_down;
        struct start_queue starts;      /* which connection may spawn ssh now */
        struct supervisor_pacing *pacing;       /* …and which credentials may be tried */
        double started_at;
        ev_prepare flush;               /* once per loop iteration: dequeue, publish */
        ev_idle next_turn;              /* active while the start queue has more for the next turn */
        struct supervisor_listener listeners[SUPERVISOR_LISTENERS_MAX];
        size_t n_listeners;
        struct supervisor_load load;
        struct supervisor_net net;
};

/* supervisor.c */
int supervisor_tunnel_new(struct supervisor *s, const struct tunnel_spec *spec, struct tunnel **ret);
/* The tunnel and the supervisor's member of it. NULL-safe. */
void supervisor_tunnel_free(struct tunnel *t);
ssize_t supervisor_index_of(struct tunnel *const *v, size_t n, const struct tunnel *t);
ssize_t supervisor_index_of_name(struct tunnel *const *v, size_t n, const char *name);
void supervisor_remove_at(struct tunnel **v, size_t *n, size_t i);
/* supervisor_net.c */
void supervisor_on_network_changed(void *userdata);
/* Watch the network (and sleep) as c says (watch_network). */
void supervisor_net_apply(struct supervisor *s, const struct config *c);
void supervisor_net_free(struct supervisor *s);

/* supervisor_pacing.c */
/* supervisor_pacing: pacing.h on the loop. Every connection's spawn asks it (through the
 * supervisor's start gate) whether its credentials may be tried now; a connection it holds
 * waits QUEUED, held in the start queue (start_queue_hold), and is asked again at every
 * turn of the queue; what its runs did (conn_context's run_ended, the states) goes to it;
 * in the loop's prepare, before the start queue's turn, those that waited for an attempt
 * that failed take its failure (conn_fail_unstarted), and a timer kicks the queue when a
 * held connection's time comes. */
struct supervisor_pacing;

int supervisor_pacing_new(struct supervisor *s, struct supervisor_pacing **ret);
struct supervisor_pacing *supervisor_pacing_free(struct supervisor_pacing *sp);

/* The start gate's first question: NULL (go on to the start queue) or why c waits. */
const char *supervisor_pacing_gate(struct supervisor *s, struct conn *c);
/* conn_context's observer: a connection's event. */
void supervisor_pacing_note(struct supervisor *s, struct conn *c, int event, int old);
/* conn_context's run_ended. */
void supervisor_pacing_run_ended(struct conn *c, const struct conn_run *run, void *userdata);
/* The loop's prepare, before the start queue's turn. */
void supervisor_pacing_flush(struct supervisor *s);
/* c goes. */
void supervisor_pacing_forget(struct supervisor *s, struct conn *c);

/* supervisor_conn.c */
/* A new connection for spec (named name; shared or a tunnel's own), on s's list. */
int supervisor_conn_new(struct supervisor *s, const char *name, const struct tunnel_spec *spec, bool shared,
                        struct conn **ret);
/* The connection a tunnel of spec rides after a reload that takes it to spec: the shared
 * one of its settings, or its own (t's, or an idle one of its name); NULL: a new one is
 * needed. */
struct conn *supervisor_conn_find(const struct supervisor *s, const struct tunnel_spec *spec, const struct tunnel *t);
/* A shared connection's name: "~FIRST", "~FIRST.2" while another of that name stops. */
int supervisor_conn_name(const struct supervisor *s, const struct tunnel_spec *spec, char **ret);
/* Connections no tunnel rides: stopped ones freed. */
void supervisor_conn_collect(struct supervisor *s);
bool supervisor_conn_any_child(const struct supervisor *s);
void supervisor_conn_free_all(struct supervisor *s);
