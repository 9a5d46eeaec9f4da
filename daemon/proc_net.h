/* SPDX-License-Identifier: MIT */
#pragma once

/* proc_net: a process's established TCP connections, read from /proc (its socket inodes
 * in /proc/PID/fd, then /proc/net/tcp and tcp6). A one-off look, never a poll loop. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Which connections count: their local and remote ports. NULL: every one. */
typedef bool (*proc_net_match_t)(unsigned local_port, unsigned remote_port, void *userdata);

/* How many of pid's sockets are established TCP connections that match; -errno if pid's
 * descriptors cannot be read (it is gone). */
int proc_net_established(pid_t pid, proc_net_match_t match, void *userdata);
