/* SPDX-License-Identifier: MIT */
#pragma once

/* tunnelctl_conn: tunnelctl's side of the control socket (the protocol is
 * daemon/ctl_protocol.h). */

#include <stdbool.h>
#include <stdio.h>

#include "json.h"

/* Connect to tunneld's socket (bounded: a full listen queue is an error after a few
 * seconds). Says why on stderr. 0 or -errno. */
int tunnelctl_conn_open(const char *path, int *ret_fd);
/* Send one request line and read its reply line (bounded in time; at most
 * TUNNELCTL_REPLY_MAX). Says why on stderr. 0 or -errno. */
#define TUNNELCTL_REPLY_MAX (1u << 30)
int tunnelctl_conn_exchange(int fd, const char *req, char **ret);

/* The metrics request, its reply printed as it comes (never held whole): the metrics text,
 * or with json the reply as tunneld sent it, onto out. 0 once all of it is printed; 1 with
 * *ret the reply line if it is not metrics (an error reply, or the line that says tunneld
 * dropped us, after what was printed of a reply it cut); -errno (said on stderr). */
int tunnelctl_conn_print_metrics(int fd, bool json, FILE *out, char **ret);

/* If line is tunneld's last line to a client it drops ({"ok":false,"dropped":…}): why. */
const char *tunnelctl_conn_dropped(const struct json *line);

/* The next line from tunneld (an event of a subscription): -ETIMEDOUT after timeout_ms
 * (< 0: no limit), -ECONNRESET if tunneld closed the connection. Silent. */
int tunnelctl_conn_read_line(int fd, int timeout_ms, char **ret);

/* While waiting for a reply, call pump whenever fd (another connection: a subscription
 * whose events must not wait unread) is readable. fd < 0: no more. */
void tunnelctl_conn_meanwhile(int fd, void (*pump)(void *userdata), void *userdata);

/* The control socket tunneld PID listens on, from its descriptors. -ENOENT if it has
 * none, -ESRCH if /proc does not show PID. */
int tunnelctl_conn_socket_of_pid(long pid, char **ret);
/* Whether the process listening on path is pid (SO_PEERCRED). */
bool tunnelctl_conn_socket_is_of_pid(const char *path, long pid);
