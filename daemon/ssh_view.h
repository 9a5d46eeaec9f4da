/* SPDX-License-Identifier: MIT */
#pragma once

/* ssh_view: what ssh makes of a tunnel's command line, from `ssh -G` (ssh prints its
 * effective configuration and exits; nothing is connected). ssh judges its own options:
 * a typo in ssh_options, a broken ssh_config_file (bad permissions on an Include) are its
 * errors, and an alias of an ssh_config_file gets its real host, port, user and the forwards
 * its file adds. Asked once per distinct ssh configuration (config_ssh.c), never per
 * tunnel. Parsing is pure (and fuzzed: tests/fuzz/fuzz-ssh-view.c); running is synchronous,
 * parallel, and ends at the load's deadline. */

#include <stdbool.h>
#include <stddef.h>

struct ssh_view {
        char *error;                    /* ssh refused the command line: what it said; else NULL */
        bool ran;                       /* ssh ran and said something (false: could not run, killed) */
        bool timed_out;                 /* the deadline came first (ssh killed, or never started) */
        char *hostname;
        int port;
        char *user;
        char **local_forwards;          /* in tunneld's spec syntax ("[127.0.0.1]:5000:db:3306") */
        char **remote_forwards;
        char **dynamic_forwards;
        bool fork_after_authentication;
        bool gateway_ports;
};

/* Parse ssh -G's output. 0, or -ENOMEM. Unknown lines are ignored. */
int ssh_view_parse(const char *text, struct ssh_view *ret);
void ssh_view_done(struct ssh_view *v);

/* Run each argv (an ssh command line: "-G" is put after argv[0], and "-o LogLevel=ERROR"
 * ahead of the rest) with at most SSH_VIEW_PARALLEL at once, until deadline (now_mono()'s
 * clock); views[i] gets what ssh printed, or error set (exit status, signal, could not run),
 * or timed_out. 0 or -ENOMEM. */
#define SSH_VIEW_PARALLEL 8
int ssh_view_query(char **const *argvs, size_t n, double deadline, struct ssh_view *views);
