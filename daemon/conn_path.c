/* SPDX-License-Identifier: MIT */
/* conn_path: a connection's network path. Once ssh authenticated, its own TCP connection
 * to the server (with a jump host or a ProxyCommand: the helper's, to the first hop) is
 * read from /proc (proc_net.h) and kept with the run. On it:
 *   - TCP_USER_TIMEOUT = dead_path_timeout (tcp_tune.h): data that stays unacknowledged
 *     that long makes the kernel end the connection, and ssh exits: a dead path is found
 *     by TCP itself, with no timer of tunneld's, in seconds instead of ServerAlive's
 *     interval × count;
 *   - a change of the network (netwatch) is checked against it (netpath.h): a path that
 *     moved, or whose local address went, is replaced make-before-break at once;
 *   - its figures (tcp_diag.h) for status and metrics.
 * After a dead path, while no new ssh got an answer, a start whose TCP connection did not
 * complete within CONN_PATH_PROBE is replaced at once (without counting a failure), so that
 * the path's return is found within about a second instead of at TCP's backed-off SYN
 * retransmission. */
#include "conn_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "netpath.h"
#include "tcp_diag.h"
#include "tcp_tune.h"

static bool warned;             /* said once: TCP_USER_TIMEOUT cannot be set here */

static int find_socket(const struct conn *c, struct proc_net_socket *ret)
{
        pid_t pid = c->master ? master_pid(c->master) : 0;

        if (pid <= 0)
                return -ESRCH;
        if (master_via_proxy(c->master))
                return proc_net_proxy_connection(pid, 0, ret);
        return proc_net_server_connection(pid, 0, ret);
}

void conn_path_tune(struct conn *c)
{
        struct conn_path *p = &c->run.path;
        struct log_ctx ctx = conn_log_ctx(c);
        unsigned ms = (unsigned)(c->spec.sup.dead_path_timeout * 1000);
        char local[ENDPOINT_MAX], remote[ENDPOINT_MAX];
        int r;

        if (!p->known || (ms == 0 && !p->tuned))
                return;
        r = tcp_tune_user_timeout(p->sock.pid, p->sock.fd, &p->sock.local, &p->sock.remote, ms);
        if (r < 0) {
                /* -EPERM under a seccomp filter without pidfd_getfd: ServerAlive alone then */
                log_full_errno(r == -EPERM && !warned ? LOG_WARNING : LOG_DEBUG, r, &ctx,
                               "cannot set TCP_USER_TIMEOUT on ssh's connection %s → %s: %m; a dead path is found "
                               "by ServerAlive alone", endpoint_format(&p->sock.local, local, sizeof(local)),
                               endpoint_format(&p->sock.remote, remote, sizeof(remote)));
                warned = warned || r == -EPERM;
                return;
        }
        p->tuned = ms > 0;
        log_full(LOG_DEBUG, &ctx, "ssh's connection %s → %s: TCP_USER_TIMEOUT %u ms",
                 endpoint_format(&p->sock.local, local, sizeof(local)),
                 endpoint_format(&p->sock.remote, remote, sizeof(remote)), ms);
}

void conn_path_learn(struct conn *c)
{
        struct conn_path *p = &c->run.path;
        struct log_ctx ctx = conn_log_ctx(c);
        int r;

        if (p->known)
                return;
        r = find_socket(c, &p->sock);
        if (r < 0) {
                log_full_errno(LOG_DEBUG, r, &ctx, "ssh's own connection not found: %m; its path is not watched");
                return;
        }
        p->known = true;
        p->ifindex = 0;
        conn_path_tune(c);
}

bool conn_path_moved(struct conn *c, struct netpath *np, char *why, size_t size)
{
        struct conn_path *p = &c->run.path;
        struct netpath_result res;
        int r;

        if (!p->known)
                return false;
        r = netpath_check(np, &p->sock.local, &p->sock.remote, p->ifindex, &res);
        if (r < 0) {
                struct log_ctx ctx = conn_log_ctx(c);
                log_full_errno(LOG_DEBUG, r, &ctx, "cannot ask the kernel for ssh's path: %m");
                return false;
        }
        if (res.conn.ifindex > 0 && p->ifindex == 0)
                p->ifindex = res.conn.ifindex;  /* its interface from now on, to see it change */
        if (res.verdict != NETPATH_MOVED && res.verdict != NETPATH_GONE) {
                struct log_ctx ctx = conn_log_ctx(c);
                log_full(LOG_DEBUG, &ctx, "network changed: ssh's path is %s", netpath_verdict_name(res.verdict));
                return false;
        }
        netpath_describe(&res, &p->sock.local, &p->sock.remote, why, size);
        return true;
}

bool conn_path_has_tcp(const struct conn *c)
{
        struct proc_net_socket s;

        return find_socket(c, &s) >= 0;
}

int conn_get_path(struct conn *c, struct tcp_diag_info *ret)
{
        struct conn_path *p = &c->run.path;
        double now = now_mono();

        if (!c->master || !p->known)
                return -ENOENT;
        /* 10,000 tunnels on 100 connections: one look per connection per second at most */
        if (p->figures_at == 0 || now - p->figures_at >= 1.0) {
                p->figures_r = tcp_diag_get(&p->sock.local, &p->sock.remote, &p->figures);
                p->figures_at = now;
        }
        *ret = p->figures;
        return p->figures_r;
}
