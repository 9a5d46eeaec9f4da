/* SPDX-License-Identifier: MIT */
/* ctl_check: check jobs, one at a time, their answers shared. */
#include "ctl_check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "reload_job.h"

struct ctl_check {
        struct ev_loop *loop;
        ctl_check_done_t done;
        void *userdata;
        struct supervisor *sup;
        struct reload_job *job;         /* the one running, or NULL */
        unsigned long number;           /* the last job started */
        bool job_asks_ssh;
        bool again;                     /* a check was asked for while the job ran… */
        bool again_asks_ssh;            /* …and one of those wants ssh asked */
        char *path;                     /* of the running job */
};

int ctl_check_new(struct ev_loop *loop, ctl_check_done_t done, void *userdata, struct ctl_check **ret)
{
        struct ctl_check *k = calloc(1, sizeof(*k));

        if (!k)
                return -ENOMEM;
        k->loop = loop;
        k->done = done;
        k->userdata = userdata;
        *ret = k;
        return 0;
}

struct ctl_check *ctl_check_free(struct ctl_check *k)
{
        if (!k)
                return NULL;
        reload_job_free(k->job);
        free(k->path);
        free(k);
        return NULL;
}

static void on_checked(int r, size_t tunnels, size_t enabled, struct config_errors *errs, void *userdata);

static int start_job(struct ctl_check *k, bool ask_ssh)
{
        const struct config *c = supervisor_config(k->sup);
        struct config_load_options opts = c->load_options;
        int r;

        if (!ask_ssh)
                opts.ask_ssh = CONFIG_SSH_SKIP;
        free(k->path);
        k->path = strdup(c->path);
        if (!k->path)
                return -ENOMEM;
        r = reload_job_start_check(k->loop, c->path, &opts, on_checked, k, &k->job);
        if (r < 0)
                return log_warning_errno(r, "check: cannot start loading %s: %m", c->path);
        k->number++;
        k->job_asks_ssh = ask_ssh;
        return 0;
}

static void on_checked(int r, size_t tunnels, size_t enabled, struct config_errors *errs, void *userdata)
{
        struct ctl_check *k = userdata;
        _cleanup_free_ char *path = k->path;
        struct ctl_check_result res = { .r = r, .path = path, .tunnels = tunnels, .enabled = enabled,
                                        .ssh_asked = k->job_asks_ssh, .errs = errs };
        unsigned long done = k->number;
        int again = 0;

        k->path = NULL;
        k->job = reload_job_free(k->job);
        if (k->again) {
                /* started before the answers: a check asked for while they are given (a
                 * client's next request) waits for this job, not a second one */
                k->again = false;
                again = start_job(k, k->again_asks_ssh);
                if (again < 0)
                        k->number++;    /* its number gets the failure */
        }
        k->done(done, &res, k->userdata);
        config_errors_clear(errs);
        if (again < 0) {
                struct ctl_check_result failed = { .r = again, .path = path };

                k->done(done + 1, &failed, k->userdata);
        }
}

int ctl_check_ask(struct ctl_check *k, struct supervisor *sup, bool ask_ssh, unsigned long *ret_ticket)
{
        int r;

        k->sup = sup;
        if (k->job) {
                /* this job read the file before the question: the next one answers it */
                k->again_asks_ssh = k->again ? k->again_asks_ssh || ask_ssh : ask_ssh;
                k->again = true;
                *ret_ticket = k->number + 1;
                return 0;
        }
        r = start_job(k, ask_ssh);
        if (r < 0)
                return r;
        *ret_ticket = k->number;
        return 0;
}
