/* SPDX-License-Identifier: MIT */
#pragma once

/* tcp_tune: set an option on a TCP socket that a child (ssh) holds, from outside: a
 * duplicate of its descriptor through pidfd_getfd (the same socket, so the option is the
 * connection's), checked to be the connection meant, set, closed. With TCP_USER_TIMEOUT
 * the kernel ends the connection when data it sent stays unacknowledged that long: ssh
 * then exits, and tunneld learns of a dead path from the exit, with no timer of its own.
 * Needs the right to ptrace the process (its parent, same user) and, under a seccomp
 * filter, pidfd_getfd (systemd's @debug set). */

#include <sys/types.h>

#include "endpoint.h"

/* TCP_USER_TIMEOUT of the connection local → remote that pid holds as descriptor fd (from
 * proc_net_server_connection(); -1: found among pid's first 64 connections), in
 * milliseconds (0: the kernel's default). 0, -ESTALE if fd is no longer that connection,
 * -ENOENT if pid holds no such connection, or -errno (-EPERM: not allowed by ptrace's
 * rules or a seccomp filter, -ESRCH: pid is gone). */
int tcp_tune_user_timeout(pid_t pid, int fd, const struct endpoint *local, const struct endpoint *remote,
                          unsigned ms);
/* The same, reading it back (for tests and diagnostics): *ret_ms. */
int tcp_tune_get_user_timeout(pid_t pid, int fd, const struct endpoint *local, const struct endpoint *remote,
                              unsigned *ret_ms);
