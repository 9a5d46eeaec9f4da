/* SPDX-License-Identifier: MIT */
#pragma once

/* ssh_view: what ssh makes of a tunnel's command line, from `ssh -G` (ssh prints its
 * effective configuration and exits; nothing is connected). ssh judges its own options:
 * a typo in ssh_options, a broken ssh_config_file (bad permissions on an Include) are its
 * errors, and an alias of an ssh_config_file gets its real host, port, user and forwards.
 * Parsing is pure (and fuzzed); running is synchronous, bounded in time and parallel. */

#include <stdbool.h>
#include <stddef.h>

struct ssh_view {
        char *error;                    /* ssh refused the command line: what it said; else NULL */
        bool ran;                       /* ssh ran and said something (false: could not run, killed) */
        char *hostname;
        int port;
        char *user;
        char **local_forwards;          /* in tunneld's spec syntax ("[127.0.0.1]:5000:db:3306") */
        char **remote_forwards;
        char **dynamic_forwards;
        bool clear_all_forwardings;
        bool fork_after_authentication;
        bool gateway_ports;
};

/* Parse ssh -G's output. 0, or -ENOMEM. Unknown lines are ignored. */
int ssh_view_parse(const char *text, struct ssh_view *ret);
void ssh_view_done(struct ssh_view *v);

/* Run each argv (an ssh command line: "-G" is put after argv[0], and "-o LogLevel=ERROR"
 * ahead of the rest) with at most SSH_VIEW_PARALLEL at once, all within timeout seconds;
 * views[i] gets what ssh printed, or error set (exit status, signal, timeout, could not
 * run). 0 or -ENOMEM. */
#define SSH_VIEW_PARALLEL 8
#define SSH_VIEW_TIMEOUT 15.0           /* seconds for every ssh -G of one load */
int ssh_view_query(char **const *argvs, size_t n, double timeout, struct ssh_view *views);
