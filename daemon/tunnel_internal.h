/* SPDX-License-Identifier: MIT */
#pragma once

/* What tunnel.c (the state, verbs, reload) and tunnel_info.c (what others read) share.
 * Not for other modules: they have tunnel.h. */

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

/* tunnel_info.c */
enum avail_class tunnel_avail_class(const struct tunnel *t);
