/* SPDX-License-Identifier: MIT */
#pragma once

/* supervisor: the set of tunnels and their connections. Applies a configuration as a plan
 * (supervisor_apply.c), reloads, shuts down. */

#include <ev.h>
#include <stdbool.h>

#include "config.h"
#include "tunnel.h"

struct supervisor;

/* Takes ownership of config and starts every enabled tunnel. runtime_dir: tunneld's
 * private directory (runtime.h), for the files it writes for ssh. */
int supervisor_new(struct ev_loop *loop, struct config *config, const char *runtime_dir, struct supervisor **ret);
struct supervisor *supervisor_free(struct supervisor *s);
/* Start with none of config's tunnels (it was read without ssh -G) and load config->path
 * again off the loop, ssh -G included, as a reload does (reload_job.h); its tunnels are
 * applied (started, not "added") when that is done. Until then the set is empty and
 * supervisor_reload_error() says it is loading; a reload asked for meanwhile runs after
 * it. loaded(r) is called once, from the loop: 0, or -errno with the errors logged (the
 * set stays empty); never if tunneld is stopped first. On failure config is still the
 * caller's. */
typedef void (*supervisor_loaded_t)(struct supervisor *s, int r, void *userdata);
int supervisor_new_loading(struct ev_loop *loop, struct config *config, const char *runtime_dir,
                           supervisor_loaded_t loaded, void *userdata, struct supervisor **ret);
/* supervisor_new_loading's load is not done yet (the set is empty until it is). */
bool supervisor_is_loading(const struct supervisor *s);

/* Re-read the configuration file, in a child process (reload_job.h: ssh -G never blocks
 * the loop), then apply it; on any error the running set stays exactly as it was, and the
 * errors go to the log. A reload asked for while one loads runs after it. Returns the
 * number of the reload that will answer this request: supervisor_reload_result() says
 * when it is done (the listeners' reloaded is called then), and how it went. */
unsigned long supervisor_reload(struct supervisor *s);
/* The number of the last finished reload, its result (0 applied, else -errno) and errors. */
unsigned long supervisor_reload_result(const struct supervisor *s, int *ret_r, const struct config_errors **ret_errs);
/* Apply an already loaded configuration (takes ownership). */
int supervisor_apply(struct supervisor *s, struct config *config);

/* Stop everything; ev_break() once no ssh child is left. */
void supervisor_shutdown(struct supervisor *s);
bool supervisor_is_shutting_down(const struct supervisor *s);

/* Restart every running tunnel's ssh (SIGUSR1). */
void supervisor_restart_all(struct supervisor *s, const char *reason);

const struct config *supervisor_config(const struct supervisor *s);
size_t supervisor_count(const struct supervisor *s);
/* Every tunnel, in configuration order. */
struct tunnel *const *supervisor_tunnels(const struct supervisor *s, size_t *ret_n);
struct tunnel *supervisor_get(const struct supervisor *s, size_t i);
struct tunnel *supervisor_find(const struct supervisor *s, const char *name);
/* The first tunnel t is after that is not up (its name), or NULL. */
const char *supervisor_waiting_for(const struct supervisor *s, const struct tunnel *t);

/* When the supervisor started (CLOCK_MONOTONIC): its first load applied, with
 * supervisor_new_loading (until then, when it was made). */
double supervisor_started_at(const struct supervisor *s);

/* Who else follows the supervisor (the publisher, the control socket's subscribers). Each
 * callback may be NULL; they are called in the order the listeners were added. */
struct supervisor_listener {
        /* after the supervisor's own bookkeeping of a tunnel event (but CONNECTING), before
         * a removed tunnel is freed */
        tunnel_observer_t event;
        /* once per loop iteration, after queued tunnels were let through */
        void (*idle)(void *userdata);
        /* a reload ended: error NULL if it was applied, else what STATUS should say */
        void (*reloaded)(const char *error, void *userdata);
        /* shutdown is done (no ssh left); the loop ends right after */
        void (*stopped)(void *userdata);
        void *userdata;
};
#define SUPERVISOR_LISTENERS_MAX 4
int supervisor_add_listener(struct supervisor *s, const struct supervisor_listener *l);

/* What STATUS says of the configuration before the tunnels: that it is still loading at
 * start (supervisor_new_loading), or the last reload's failure until a reload is applied;
 * NULL if neither. */
const char *supervisor_reload_error(const struct supervisor *s);
