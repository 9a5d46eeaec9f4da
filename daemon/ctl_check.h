/* SPDX-License-Identifier: MIT */
#pragma once

/* ctl_check: the control socket's check, off the event loop. A check job loads the file
 * tunneld runs, the way tunneld loads it (its load options: what a reload would accept), in
 * a child process (reload_job.h), so that no check delays anything on the loop however
 * long ssh -G takes. One job at a time: a check asked for while one runs is answered by the
 * next job, which answers every check asked for meanwhile; so checks in a loop cost one
 * process at a time, whoever asks. */

#include <ev.h>
#include <stdbool.h>

#include "config.h"
#include "supervisor.h"

struct ctl_check_result {
        int r;                          /* 0: the file loads; else -errno */
        const char *path;
        size_t tunnels, enabled;
        bool ssh_asked;                 /* ssh -G judged the tunnels (as tunneld does) */
        const struct config_errors *errs;
};

/* Job number done is over: answer every check whose ticket is at most done. */
typedef void (*ctl_check_done_t)(unsigned long done, const struct ctl_check_result *res, void *userdata);

struct ctl_check;

int ctl_check_new(struct ev_loop *loop, ctl_check_done_t done, void *userdata, struct ctl_check **ret);
/* Kills a job still running (nobody is answered). NULL-safe. */
struct ctl_check *ctl_check_free(struct ctl_check *k);

/* A check of what sup runs, with ssh -G (as the daemon asks it) if ask_ssh, else without
 * (for those who may not make tunneld run ssh). 0 and the job number whose end answers it
 * in *ret_ticket, or -errno (no job could be started). */
int ctl_check_ask(struct ctl_check *k, struct supervisor *sup, bool ask_ssh, unsigned long *ret_ticket);
