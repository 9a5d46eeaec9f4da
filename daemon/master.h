/* SPDX-License-Identifier: MIT */
#pragma once

/* master: one ssh process run as a multiplexing master of tunneld's own. Spawned in its
 * own process group, its stderr read a line at a time (what ssh says of itself: through
 * each jump host, the destination's banner, authenticated, why it failed), its control
 * socket found by inotify (no polling) and spoken to over OpenSSH's mux protocol, its
 * exit reaped. Mechanism only: what a run means is the connection's (conn.h). */

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "forward.h"
#include "mux_proto.h"
#include "sockwatch.h"
#include "ssh_output.h"

struct master;

/* How one ssh ended, and what its stderr said of it. */
struct master_exit {
        pid_t pid;
        int exit_status;                /* -1 if killed by a signal */
        int exit_signal;                /* 0 if it exited */
        double ran;                     /* seconds */
        double ended_at;                /* CLOCK_MONOTONIC */
        enum failure_class failure;     /* the first specific class its stderr named; NONE if none */
        bool failure_on_proxy;          /* …before the destination answered, through a jump host or proxy */
        bool answered;                  /* the destination sent its banner */
        bool authenticated;
};

enum master_event {
        MASTER_AUTHENTICATED,           /* "Authenticated to" the destination (each jump host's first) */
        MASTER_READY,                   /* its control socket said hello: requests may go */
        MASTER_LOST,                    /* the control connection ended while ssh runs on (master_lost_reason) */
        MASTER_PROHIBITED,              /* the server refused one connection through a forward */
};

struct master_ops {
        void (*event)(struct master *m, enum master_event ev, void *userdata);
        /* a reply to one of master_open_forward/master_close_forward's requests */
        void (*reply)(struct master *m, const struct mux_reply *r, void *userdata);
        /* a line of ssh about a forward (a listener it could not bind, the server's
         * refusal by policy): class is local-forward, remote-forward or forward-denied */
        void (*forward_line)(struct master *m, enum failure_class class, const char *line, void *userdata);
        /* the process ended; the master stays (its exit is read) until master_free() */
        void (*exited)(struct master *m, const struct master_exit *e, void *userdata);
};

struct master_params {
        char *const *argv;              /* ssh's, with this master's ControlPath */
        char *const *envp;
        const char *control_path;       /* in a directory of tunneld's, with no socket there */
        struct sockwatch *watch;        /* on that directory: tells when the socket appears */
        unsigned hops;                  /* jump hosts: their "Authenticated to" lines come first */
        const char *log_tunnel;         /* the journal's TUNNEL= of its lines (NULL: none) */
        const char *log_connection;     /* CONNECTION= and the name its lines are logged under */
};

/* Spawn ssh; its events go to ops. Strings of p are copied. 0 or -errno (nothing runs). */
int master_spawn(struct ev_loop *loop, const struct master_params *p, const struct master_ops *ops, void *userdata,
                 struct master **ret);
/* Kill it if it still runs (SIGKILL; its exit is reaped by libev and ignored) and forget it. NULL-safe. */
struct master *master_free(struct master *m);
/* Its events go to someone else from now on (make-before-break: the old master's). */
void master_set_owner(struct master *m, const struct master_ops *ops, void *userdata);

/* SIGTERM to its process group (ProxyJump helpers too), SIGKILL after grace seconds. */
void master_stop(struct master *m, double grace);
/* Queue a request; *ret_id is the id its reply will carry. -ENOTCONN before MASTER_READY. */
int master_open_forward(struct master *m, const struct forward *f, uint32_t *ret_id);
int master_close_forward(struct master *m, const struct forward *f, uint32_t *ret_id);

/* 0 once it exited, or for no master (NULL). */
pid_t master_pid(const struct master *m);
/* Its control socket (a second control connection may be made to it: keepalive.h). */
const char *master_control_path(const struct master *m);
double master_started_at(const struct master *m);
bool master_is_ready(const struct master *m);
bool master_is_authenticated(const struct master *m);
bool master_is_stopping(const struct master *m);
/* ssh runs ProxyJump or a ProxyCommand. */
bool master_via_proxy(const struct master *m);
/* The destination answered: its banner came, or ssh authenticated. */
bool master_answered(const struct master *m);
/* Why the control connection ended (MASTER_LOST). */
const char *master_lost_reason(const struct master *m);
/* Its established TCP connections through these forwards (accepted on a -L/-D listener,
 * or made to a -R's target): a draining master's last users. */
size_t master_count_forwarded(const struct master *m, const struct forward *fwds, size_t n);
/* Its lines are logged at debug level from now on (true) or at their own (a flapping connection). */
void master_set_quiet(struct master *m, bool quiet);
