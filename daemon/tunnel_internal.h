/* SPDX-License-Identifier: MIT */
#pragma once

/* What tunnel.c (the state and verbs), tunnel_change.c (forwards, a reload's change) and
 * tunnel_info.c (what others read) share. Not for other modules: they have tunnel.h. */

#include "tunnel.h"

struct tunnel {
        const struct tunnel_context *ctx;
        struct tunnel_spec spec;
        void *owner;
        struct conn_user user;          /* its place on its connection */
        struct conn_forward **fwds;     /* what it asks its connection for: -L, -R, -D in spec order */
        size_t n_fwds;
        struct probe *probe;            /* NULL unless spec.probe.connect */
        unsigned probe_misses;

        enum tunnel_state state;
        double state_since;             /* CLOCK_MONOTONIC */
        const char *reason;             /* why STOPPED (static) */
        char wait_reason[128];          /* QUEUED for the tunnels it is after: why */
        bool wanted;                    /* started: its forwards on the connection, or waiting for after */
        bool held;                      /* stopped by an operator: stays stopped across reloads */
        bool stop_waits;                /* not wanted, and its connection's ssh ends for it: STOPPING */
        bool flapping;                  /* its connection flaps */

        double started_at;              /* when it last went STARTING */
        unsigned long total_starts;     /* since tunneld started; never reset */
        unsigned long restarts;         /* starts after an exit tunneld did not ask for */
        bool restart_pending;           /* the next start is such a restart */
        unsigned long total_failures[_FAILURE_MAX];
        unsigned long prohibited;       /* connections the server refused ("administratively prohibited") */
        double counted_run;             /* ended_at of its connection's last run counted in total_failures */
        struct availability avail;      /* up and down time, outages */
};

/* tunnel.c */
struct log_ctx tunnel_log_ctx(const struct tunnel *t);
/* Onto its connection (its forwards with it), unless a tunnel it is after is not up yet. */
void tunnel_go(struct tunnel *t, bool manual);
/* Its forwards off the connection; the last tunnel on it stops the connection's ssh. */
void tunnel_detach(struct tunnel *t, const char *reason);
/* The state again, after anything that may have changed it. news: its own connection's
 * line (the connection changed), told as the tunnel's. */
void tunnel_sync_state(struct tunnel *t, int prio, const struct conn_run *run, const char *news);
void tunnel_on_probe(bool ok, const char *why, void *userdata);

/* tunnel_change.c */
/* The forwards of spec, in order; one that old already has (same kind and spec) is
 * reused: kept[i] its index in old, else -1 and a new one made. 0 or -ENOMEM. */
int tunnel_forwards_build(const struct tunnel_spec *spec, struct conn_forward *const *old, size_t n_old,
                          struct conn_forward ***ret, ssize_t **ret_kept, size_t *ret_n);
void tunnel_forwards_free(struct conn_forward **v, size_t n);

/* tunnel_info.c */
enum avail_class tunnel_avail_class(const struct tunnel *t);
