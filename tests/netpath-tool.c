/* SPDX-License-Identifier: MIT */
/* netpath-tool: what tunneld's network modules say, for tests against the real kernel.
 * One line per answer, "key=value" words, so a test reads it without guessing.
 *
 *   netpath-tool server PID [PORT]               pid's connection to its server (proc_net)
 *   netpath-tool proxy PID [PORT]                the same, held by a ProxyJump helper
 *   netpath-tool check LOCAL REMOTE [IFINDEX]    netpath's verdict
 *   netpath-tool diag LOCAL REMOTE               tcp_diag's figures
 *   netpath-tool diag-inode 4|6 INODE            the same, looked up by socket inode
 *   netpath-tool user-timeout PID FD|- LOCAL REMOTE MS    tcp_tune (reads it back)
 *   netpath-tool watch [--sleep] [LOCAL REMOTE]...
 *           runs a loop: each settled netlink burst prints "change kinds=…" and a check
 *           of every connection; with --sleep, logind's PrepareForSleep as "sleep
 *           sleeping=1|0". Ends when stdin ends.
 *   netpath-tool selfcheck [SECONDS]             each module once, against a child of its
 *           own holding a loopback connection (for the hardened unit), then sleepwatch
 *           for SECONDS. */
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "endpoint.h"
#include "log.h"
#include "netpath.h"
#include "netwatch.h"
#include "proc_net.h"
#include "sleepwatch.h"
#include "tcp_diag.h"
#include "tcp_tune.h"

#define CONNS_MAX 16

static int usage(void)
{
        fprintf(stderr, "usage: netpath-tool server|proxy|check|diag|diag-inode|user-timeout|watch|selfcheck ...\n");
        return 2;
}

static int parse_endpoint(const char *text, struct endpoint *ret)
{
        if (endpoint_parse(text, ret) < 0) {
                fprintf(stderr, "netpath-tool: not an address: %s\n", text);
                return -EINVAL;
        }
        return 0;
}

static int fail(const char *what, int r)
{
        printf("%s error=%s errno=%d\n", what, strerror(-r), -r);
        return 1;
}

static void print_socket(const char *what, const struct proc_net_socket *s)
{
        char l[ENDPOINT_MAX], r[ENDPOINT_MAX];

        printf("%s pid=%d fd=%d inode=%lu local=%s remote=%s\n", what, (int)s->pid, s->fd, s->inode,
               endpoint_format(&s->local, l, sizeof(l)), endpoint_format(&s->remote, r, sizeof(r)));
}

static int cmd_server(int argc, char **argv, bool proxy)
{
        struct proc_net_socket s;
        unsigned port = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 0;
        int r;

        if (argc < 1)
                return usage();
        r = proxy ? proc_net_proxy_connection(atoi(argv[0]), port, &s)
                  : proc_net_server_connection(atoi(argv[0]), port, &s);
        if (r < 0)
                return fail(proxy ? "proxy" : "server", r);
        print_socket(proxy ? "proxy" : "server", &s);
        return 0;
}

static void print_route(const char *what, const struct netpath_route *rt)
{
        char src[ENDPOINT_MAX];

        printf(" %s_ifindex=%d %s_ifname=%s %s_src=%s", what, rt->ifindex, what, rt->ifname[0] ? rt->ifname : "-",
               what, rt->src.family ? endpoint_format_addr(&rt->src, src, sizeof(src)) : "-");
}

static int check_one(struct netpath *np, const struct endpoint *local, const struct endpoint *remote, int ifindex)
{
        struct netpath_result res;
        char l[ENDPOINT_MAX], r[ENDPOINT_MAX], why[320];
        int k = netpath_check(np, local, remote, ifindex, &res);

        if (k < 0)
                return fail("check", k);
        printf("check local=%s remote=%s verdict=%s changed=%s%s", endpoint_format(local, l, sizeof(l)),
               endpoint_format(remote, r, sizeof(r)), netpath_verdict_name(res.verdict),
               res.changed & NETPATH_CHANGED_SOURCE ? "source" : "",
               res.changed & NETPATH_CHANGED_INTERFACE ? (res.changed & NETPATH_CHANGED_SOURCE ? ",interface" : "interface") : "");
        if (!res.changed)
                printf("-");
        print_route("conn", &res.conn);
        print_route("fresh", &res.fresh);
        printf(" why=\"%s\"\n", netpath_describe(&res, local, remote, why, sizeof(why)));
        return 0;
}

static int cmd_check(int argc, char **argv)
{
        struct endpoint local, remote;
        struct netpath *np = NULL;
        int r;

        if (argc < 2 || parse_endpoint(argv[0], &local) < 0 || parse_endpoint(argv[1], &remote) < 0)
                return usage();
        r = netpath_open(&np);
        if (r < 0)
                return fail("check", r);
        r = check_one(np, &local, &remote, argc > 2 ? atoi(argv[2]) : 0);
        netpath_close(np);
        return r;
}

static void print_diag(const struct tcp_diag_info *d)
{
        char l[ENDPOINT_MAX], r[ENDPOINT_MAX];

        printf("diag local=%s remote=%s inode=%lu state=%s has_info=%d unacked=%u retransmits=%u total_retrans=%u "
               "backoff=%u last_ack_recv_ms=%u last_data_recv_ms=%u last_data_sent_ms=%u rtt_us=%u rttvar_us=%u "
               "rto_us=%u bytes_sent=%llu has_bytes_sent=%d bytes_acked=%llu bytes_received=%llu notsent=%u "
               "wqueue=%u rqueue=%u\n",
               endpoint_format(&d->local, l, sizeof(l)), endpoint_format(&d->remote, r, sizeof(r)), d->inode,
               tcp_diag_state_name(d->state), d->has_info, d->unacked, d->retransmits, d->total_retrans, d->backoff,
               d->last_ack_recv_ms, d->last_data_recv_ms, d->last_data_sent_ms, d->rtt_us, d->rttvar_us, d->rto_us,
               (unsigned long long)d->bytes_sent, d->has_bytes_sent, (unsigned long long)d->bytes_acked,
               (unsigned long long)d->bytes_received, d->notsent_bytes, d->wqueue, d->rqueue);
}

static int cmd_diag(int argc, char **argv)
{
        struct endpoint local, remote;
        struct tcp_diag_info d;
        int r;

        if (argc < 2 || parse_endpoint(argv[0], &local) < 0 || parse_endpoint(argv[1], &remote) < 0)
                return usage();
        r = tcp_diag_get(&local, &remote, &d);
        if (r < 0)
                return fail("diag", r);
        print_diag(&d);
        return 0;
}

static int cmd_diag_inode(int argc, char **argv)
{
        struct tcp_diag_info d;
        int r;

        if (argc < 2)
                return usage();
        r = tcp_diag_get_by_inode(atoi(argv[0]) == 6 ? AF_INET6 : AF_INET, strtoul(argv[1], NULL, 10), &d);
        if (r < 0)
                return fail("diag", r);
        print_diag(&d);
        return 0;
}

static int cmd_user_timeout(int argc, char **argv)
{
        struct endpoint local, remote;
        unsigned got = 0;
        int r, fd;
        pid_t pid;

        if (argc < 5 || parse_endpoint(argv[2], &local) < 0 || parse_endpoint(argv[3], &remote) < 0)
                return usage();
        pid = atoi(argv[0]);
        fd = strcmp(argv[1], "-") == 0 ? -1 : atoi(argv[1]);
        r = tcp_tune_user_timeout(pid, fd, &local, &remote, (unsigned)strtoul(argv[4], NULL, 10));
        if (r >= 0)
                r = tcp_tune_get_user_timeout(pid, fd, &local, &remote, &got);
        if (r < 0)
                return fail("user-timeout", r);
        printf("user-timeout ok ms=%u\n", got);
        return 0;
}

/* ---- watch: the modules on a loop, as tunneld would use them ---- */

struct watch {
        struct endpoint local[CONNS_MAX], remote[CONNS_MAX];
        int ifindex[CONNS_MAX];
        size_t n;
        ev_io in;
};

static void on_path_changed(unsigned kinds, void *userdata)
{
        struct watch *w = userdata;
        struct netpath *np = NULL;
        char text[128];
        int r;

        printf("change kinds=%s\n", netwatch_kinds_format(kinds, text, sizeof(text)));
        r = netpath_open(&np);
        if (r < 0) {
                fail("check", r);
                return;
        }
        for (size_t i = 0; i < w->n; i++)
                check_one(np, &w->local[i], &w->remote[i], w->ifindex[i]);
        netpath_close(np);
}

static void on_sleep(bool sleeping, void *userdata)
{
        (void)userdata;
        printf("sleep sleeping=%d\n", sleeping);
}

static void on_stdin(struct ev_loop *loop, ev_io *io, int revents)
{
        char buf[256];

        (void)revents;
        if (read(io->fd, buf, sizeof(buf)) <= 0)
                ev_break(loop, EVBREAK_ALL);
}

/* the interface each connection's packets leave by now: what a later check compares */
static void learn_interfaces(struct watch *w)
{
        struct netpath *np = NULL;

        if (netpath_open(&np) < 0)
                return;
        for (size_t i = 0; i < w->n; i++) {
                struct netpath_result res;

                if (netpath_check(np, &w->local[i], &w->remote[i], 0, &res) == 0)
                        w->ifindex[i] = res.conn.ifindex;
        }
        netpath_close(np);
}

static int cmd_watch(int argc, char **argv)
{
        struct ev_loop *loop = EV_DEFAULT;
        struct watch w = {0};
        struct netwatch *nw = NULL;
        struct sleepwatch *sw = NULL;
        bool sleep = false;
        int r;

        for (int i = 0; i < argc; i++) {
                if (strcmp(argv[i], "--sleep") == 0) {
                        sleep = true;
                        continue;
                }
                if (i + 1 >= argc || w.n >= CONNS_MAX || parse_endpoint(argv[i], &w.local[w.n]) < 0 ||
                    parse_endpoint(argv[i + 1], &w.remote[w.n]) < 0)
                        return usage();
                w.n++;
                i++;
        }
        learn_interfaces(&w);
        r = netwatch_new(loop, NULL, NULL, &nw);
        if (r < 0)
                return fail("netwatch", r);
        netwatch_set_path_changed(nw, on_path_changed, &w);
        if (sleep)
                (void)sleepwatch_new(loop, on_sleep, NULL, &sw);
        ev_io_init(&w.in, on_stdin, 0, EV_READ);
        ev_io_start(loop, &w.in);
        printf("watching connections=%zu\n", w.n);
        ev_run(loop, 0);
        sleepwatch_free(sw);
        netwatch_free(nw);
        return 0;
}

/* ---- selfcheck: each module once, under whatever restrictions the caller runs in ---- */

static pid_t connected_child(int listener, const struct endpoint *to)
{
        struct sockaddr_storage sa;
        size_t len = endpoint_to_sockaddr(to, &sa);
        pid_t pid = fork();

        if (pid != 0)
                return pid;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(listener);
        int fd = socket(to->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, (socklen_t)len) < 0)
                _exit(1);
        for (;;)
                pause();
}

static void on_selfcheck_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
        (void)t;
        (void)revents;
        ev_break(loop, EVBREAK_ALL);
}

static int cmd_selfcheck(int argc, char **argv)
{
        struct ev_loop *loop = EV_DEFAULT;
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        struct endpoint server;
        struct proc_net_socket s;
        struct netpath *np = NULL;
        struct tcp_diag_info d;
        struct netwatch *nw = NULL;
        struct sleepwatch *sw = NULL;
        unsigned got = 0;
        ev_timer timeout;
        int listener, conn, r;
        pid_t child;

        printf("selfcheck uid=%u\n", (unsigned)getuid());
        listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        endpoint_parse("127.0.0.1", &server);
        endpoint_to_sockaddr(&server, &sa);
        if (listener < 0 || bind(listener, (struct sockaddr *)&sa, sizeof(struct sockaddr_in)) < 0 ||
            listen(listener, 4) < 0 || getsockname(listener, (struct sockaddr *)&sa, &salen) < 0)
                return fail("listen", -errno);
        endpoint_from_sockaddr((struct sockaddr *)&sa, salen, &server);
        child = connected_child(listener, &server);
        conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (child < 0 || conn < 0)
                return fail("child", -errno);

        r = proc_net_server_connection(child, server.port, &s);
        if (r < 0)
                fail("proc_net", r);
        else
                print_socket("proc_net ok", &s);
        r = netpath_open(&np);
        if (r >= 0 && s.local.family) {
                printf("netpath ");
                r = check_one(np, &s.local, &s.remote, 0);
        } else
                fail("netpath", r);
        netpath_close(np);
        r = r < 0 ? r : tcp_diag_get(&s.local, &s.remote, &d);
        if (r < 0)
                fail("tcp_diag", r);
        else
                printf("tcp_diag ok state=%s has_info=%d\n", tcp_diag_state_name(d.state), d.has_info);
        r = tcp_tune_user_timeout(child, s.fd, &s.local, &s.remote, 4321);
        if (r >= 0)
                r = tcp_tune_get_user_timeout(child, s.fd, &s.local, &s.remote, &got);
        if (r < 0)
                fail("pidfd_getfd", r);
        else
                printf("pidfd_getfd ok user_timeout_ms=%u\n", got);
        r = netwatch_new(loop, NULL, NULL, &nw);
        if (r < 0)
                fail("netwatch", r);
        else
                printf("netwatch ok\n");
        r = sleepwatch_new(loop, on_sleep, NULL, &sw);
        if (r < 0)
                fail("sleepwatch", r);
        else
                printf("sleepwatch ok\n");
        fflush(stdout);
        ev_timer_init(&timeout, on_selfcheck_timeout, argc > 0 ? atof(argv[0]) : 0., 0.);
        ev_timer_start(loop, &timeout);
        ev_run(loop, 0);
        sleepwatch_free(sw);
        netwatch_free(nw);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        close(conn);
        close(listener);
        printf("done\n");
        return 0;
}

int main(int argc, char **argv)
{
        setvbuf(stdout, NULL, _IOLBF, 0);
        log_open(LOG_TARGET_STDERR);
        log_set_max_level(LOG_DEBUG);
        signal(SIGPIPE, SIG_IGN);
        if (argc < 2)
                return usage();
        if (strcmp(argv[1], "server") == 0)
                return cmd_server(argc - 2, argv + 2, false);
        if (strcmp(argv[1], "proxy") == 0)
                return cmd_server(argc - 2, argv + 2, true);
        if (strcmp(argv[1], "check") == 0)
                return cmd_check(argc - 2, argv + 2);
        if (strcmp(argv[1], "diag") == 0)
                return cmd_diag(argc - 2, argv + 2);
        if (strcmp(argv[1], "diag-inode") == 0)
                return cmd_diag_inode(argc - 2, argv + 2);
        if (strcmp(argv[1], "user-timeout") == 0)
                return cmd_user_timeout(argc - 2, argv + 2);
        if (strcmp(argv[1], "watch") == 0)
                return cmd_watch(argc - 2, argv + 2);
        if (strcmp(argv[1], "selfcheck") == 0)
                return cmd_selfcheck(argc - 2, argv + 2);
        return usage();
}
