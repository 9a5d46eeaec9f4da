/* SPDX-License-Identifier: MIT */
#pragma once

/* reload_job: loading the configuration off the event loop, at start and for every
 * reload. Loading asks ssh -G about each ssh configuration, and an ssh_config's "Match
 * exec" can make that take seconds: the daemon would stop answering and obey SIGTERM late.
 * So a child process loads the file exactly as the daemon would and sends back its errors,
 * or what ssh said of each ssh configuration (config.h: config_view); the parent then loads
 * the file again without ssh, taking those answers, and must have read the same bytes. The
 * child fails its load at the load's limit (CONFIG_LOAD_TIMEOUT), is killed a little after
 * it whatever it is doing, and with the job. */

#include <ev.h>

#include "config.h"

struct reload_job;

/* r: 0 with *c the new configuration (the callee owns it), or -errno with errs (which the
 * callee owns too); -EAGAIN: the files changed while they were being loaded (load again).
 * Called from the loop, never from reload_job_start. */
typedef void (*reload_job_done_t)(int r, struct config *c, struct config_errors *errs, void *userdata);

int reload_job_start(struct ev_loop *loop, const char *path, const struct config_load_options *opts,
                     reload_job_done_t done, void *userdata, struct reload_job **ret);

/* The same loading for `check` (ctl_check.h): only the verdict comes back, nothing is loaded
 * again. r: 0 with how many tunnels (and of them enabled) the file has, or -errno with errs
 * (which the callee owns). Called from the loop. */
typedef void (*reload_job_checked_t)(int r, size_t tunnels, size_t enabled, struct config_errors *errs,
                                     void *userdata);
int reload_job_start_check(struct ev_loop *loop, const char *path, const struct config_load_options *opts,
                           reload_job_checked_t checked, void *userdata, struct reload_job **ret);
/* Kills a child still loading (its result is dropped). NULL-safe. */
struct reload_job *reload_job_free(struct reload_job *j);

/* The child's report, as JSON text (tests and fuzzing read it back). */
int reload_job_report(int r, const struct config *c, const struct config_errors *errs, char **ret);
/* Parse a report: 0 and *ret_views (when the load succeeded: sorted by key) or *ret_errs;
 * -EBADMSG. */
int reload_job_parse_report(const char *text, size_t len, struct config_views *ret_views,
                            struct config_errors *ret_errs, int *ret_r, uint64_t *ret_digest);
