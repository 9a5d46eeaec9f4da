/* SPDX-License-Identifier: MIT */
#pragma once

/* proc_net: a process's established TCP connections, read from /proc (its socket inodes
 * in /proc/PID/fd, then /proc/PID/net/tcp and tcp6, the tables of its own network
 * namespace). A one-off look, never a poll loop. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "endpoint.h"

#define PROC_NET_TCP_ESTABLISHED 1

/* One TCP socket of a process. */
struct proc_net_socket {
        pid_t pid;                      /* the process that holds it */
        int fd;                         /* its descriptor there (for pidfd_getfd) */
        unsigned long inode;
        unsigned state;                 /* the kernel's TCP state: 1 established */
        struct endpoint local, remote;
};

/* Which connections count: their local and remote ports. NULL: every one. */
typedef bool (*proc_net_match_t)(unsigned local_port, unsigned remote_port, void *userdata);

/* How many of pid's sockets are established TCP connections that match; -errno if pid's
 * descriptors cannot be read (it is gone). */
int proc_net_established(pid_t pid, proc_net_match_t match, void *userdata);

/* pid's established TCP connections, lowest descriptor first, at most max (more are left
 * out: *ret_n ≤ max). -errno if pid's descriptors cannot be read. */
int proc_net_connections(pid_t pid, struct proc_net_socket *out, size_t max, size_t *ret_n);

/* The connection an ssh process holds to its server: its established TCP connection to
 * port (0: any) with the lowest descriptor (ssh opens it first, before any forward).
 * -ENOENT if it has none (not connected yet, or it talks through a proxy). */
int proc_net_server_connection(pid_t pid, unsigned port, struct proc_net_socket *ret);

/* The same, held by one of pid's descendants (at most 3 levels down): with ProxyJump or
 * a ProxyCommand ssh talks to a helper through a pipe, and the helper nearest to pid that
 * holds a TCP connection to port (0: any) has the connection to the first hop. */
int proc_net_proxy_connection(pid_t pid, unsigned port, struct proc_net_socket *ret);

/* One line of /proc/net/tcp or tcp6 (pure, fuzzed): 1 and the socket's state, addresses
 * and inode in ret (pid and fd untouched); 0 for the header or anything else. */
int proc_net_parse_line(const char *line, struct proc_net_socket *ret);

/* The parent pid from the text of /proc/PID/stat (pure): 0 or -EINVAL. */
int proc_net_parse_ppid(const char *stat, pid_t *ret);
