/* SPDX-License-Identifier: MIT */
#pragma once

/* ctl_client: tunnelctl's side of the control socket (the protocol is daemon/ctl.h). */

#include <stdbool.h>

/* Connect to tunneld's socket (bounded: a full listen queue is an error after a few
 * seconds). Says why on stderr. 0 or -errno. */
int ctl_client_open(const char *path, int *ret_fd);
/* Send one request line and read its reply line (bounded in time). Says why on stderr.
 * 0 or -errno. */
int ctl_client_exchange(int fd, const char *req, char **ret);

/* The next line from tunneld (an event of a subscription): -ETIMEDOUT after timeout_ms
 * (< 0: no limit), -ECONNRESET if tunneld closed the connection. Silent. */
int ctl_client_read_line(int fd, int timeout_ms, char **ret);

/* The control socket tunneld PID listens on, from its descriptors. -ENOENT if it has
 * none, -ESRCH if /proc does not show PID. */
int ctl_client_socket_of_pid(long pid, char **ret);
/* Whether the process listening on path is pid (SO_PEERCRED). */
bool ctl_client_socket_is_of_pid(const char *path, long pid);
