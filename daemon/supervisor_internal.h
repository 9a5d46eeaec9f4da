/* SPDX-License-Identifier: MIT */
#pragma once

/* What supervisor.c (the set, its events, shutdown) and supervisor_apply.c (a config
 * applied as a plan, reloads) share. Not for other modules (they have supervisor.h). */

#include <sys/types.h>

#include "hook.h"
#include "netwatch.h"
#include "reload_job.h"
#include "start_queue.h"
#include "supervisor.h"

/* What the supervisor keeps for each of its tunnels (the tunnel's owner). */
struct member {
        struct hook *hook;              /* on_state_change, made on its first event */
        struct start_entry start;       /* its place in the start queue */
};

struct supervisor {
        struct ev_loop *loop;
        struct config *config;
        struct tunnel_context ctx;      /* what every tunnel shares (ssh, stop_timeout, …) */
        char *runtime_dir;

        struct tunnel **tunnels;        /* in configuration order */
        size_t n_tunnels;
        struct tunnel **retiring;       /* removed by a reload, still stopping */
        size_t n_retiring;
        struct tunnel **carriers;       /* share_connection: the shared connections (supervisor_share.c) */
        size_t n_carriers;
        struct tunnel_context share_ctx;        /* theirs: no start queue, no listeners */
        bool carriers_dirty;            /* one has stopped: free those no tunnel rides */

        bool shutting_down;
        struct start_queue starts;      /* who may spawn ssh now */
        double started_at;
        ev_prepare flush;               /* once per loop iteration: dequeue, publish */
        struct supervisor_listener listeners[SUPERVISOR_LISTENERS_MAX];
        size_t n_listeners;
        char *reload_error;             /* the last reload's, until one is applied */
        struct reload_job *reload_job;  /* loading in a child process */
        bool reload_again;              /* asked for while one was loading */
        unsigned long reload_started, reload_done;      /* reloads counted, begun and finished */
        int reload_r;                   /* the last finished one: 0 or -errno */
        struct config_errors reload_errs;       /* …and its errors */
        supervisor_loaded_t loaded;     /* supervisor_new_loading: set until its load is done */
        void *loaded_userdata;
        struct netwatch *netwatch;
};

int new_tunnel(struct supervisor *s, const struct tunnel_spec *spec, struct tunnel **ret);
/* The tunnel and the supervisor's member of it. NULL-safe. */
void free_tunnel(struct tunnel *t);
ssize_t index_of(struct tunnel *const *v, size_t n, const struct tunnel *t);
ssize_t index_of_name(struct tunnel *const *v, size_t n, const char *name);
void remove_at(struct tunnel **v, size_t *n, size_t i);
void on_network_changed(void *userdata);
/* SIGUSR1's for one tunnel: a running one restarts (make-before-break where it can), one
 * in backoff retries now. */
void restart_or_retry(struct tunnel *t, const char *reason);

/* supervisor_share.c */
/* Each tunnel of the new set (c's order) onto its shared connection, made if it is new
 * (or off one); carriers left without riders stop, and go once stopped. A new ssh
 * program restarts every connection with it (as it does every tunnel). */
void share_assign(struct supervisor *s, const struct config *c, bool ssh_changed);
void share_collect(struct supervisor *s);
void share_update_context(struct supervisor *s);
void share_on_event(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata);
bool share_any_child(const struct supervisor *s);
void share_restart_all(struct supervisor *s, const char *reason);
void share_shutdown(struct supervisor *s);
void share_free(struct supervisor *s);
