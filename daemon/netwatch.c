/* SPDX-License-Identifier: MIT */
#include "netwatch.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

struct netwatch {
        struct ev_loop *loop;
        int fd;
        ev_io io;
        ev_timer settle;
        netwatch_changed_t changed;
        void *userdata;
};

/* Only events that can make a failing connect succeed count; a link going down or an
 * address going away cannot. */
static bool is_news(const struct nlmsghdr *h)
{
        switch (h->nlmsg_type) {
        case RTM_NEWLINK: {
                const struct ifinfomsg *ifi = NLMSG_DATA(h);
                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*ifi)))
                        return false;
                return (ifi->ifi_flags & IFF_UP) && (ifi->ifi_flags & IFF_RUNNING);
        }
        case RTM_NEWADDR:
        case RTM_NEWROUTE:
                return true;
        default:
                return false;
        }
}

static void on_settle(struct ev_loop *loop, ev_timer *t, int revents)
{
        struct netwatch *w = t->data;

        (void)loop;
        (void)revents;
        w->changed(w->userdata);
}

static void on_netlink(struct ev_loop *loop, ev_io *io, int revents)
{
        struct netwatch *w = io->data;
        char buf[8192] __attribute__((aligned(__alignof__(struct nlmsghdr))));
        bool news = false;

        (void)revents;
        /* bounded: a storm of netlink events (another job flapping links) gets a share of
         * the loop like everything else; the rest waits for the next wakeup */
        for (int reads = 0; reads < 16; reads++) {
                ssize_t got = recv(w->fd, buf, sizeof(buf), MSG_DONTWAIT);
                size_t off = 0;

                if (got < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == ENOBUFS)
                                news = true;    /* we missed events: assume the worst (the best) */
                        break;
                }
                if (got == 0)
                        break;
                /* NLMSG_OK() mixes signed and unsigned; walk the messages by hand */
                while ((size_t)got - off >= sizeof(struct nlmsghdr)) {
                        const struct nlmsghdr *h = (const struct nlmsghdr *)(buf + off);

                        if (h->nlmsg_len < sizeof(*h) || h->nlmsg_len > (size_t)got - off)
                                break;
                        if (is_news(h))
                                news = true;
                        off += NLMSG_ALIGN(h->nlmsg_len);
                }
        }
        if (news && !ev_is_active(&w->settle)) {
                ev_timer_set(&w->settle, NETWATCH_SETTLE, 0.);
                ev_timer_start(loop, &w->settle);
        }
}

int netwatch_new(struct ev_loop *loop, netwatch_changed_t changed, void *userdata, struct netwatch **ret)
{
        struct sockaddr_nl sa = {
                .nl_family = AF_NETLINK,
                .nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR |
                             RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE,
        };
        struct netwatch *w;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->loop = loop;
        w->changed = changed;
        w->userdata = userdata;
        w->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
        if (w->fd < 0 || bind(w->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                if (w->fd >= 0)
                        close(w->fd);
                free(w);
                return log_warning_errno(r, "cannot watch the network (netlink): %m; tunnels in backoff wait for their timer");
        }
        ev_io_init(&w->io, on_netlink, w->fd, EV_READ);
        ev_timer_init(&w->settle, on_settle, 0., 0.);
        w->io.data = w->settle.data = w;
        ev_io_start(loop, &w->io);
        *ret = w;
        return 0;
}

struct netwatch *netwatch_free(struct netwatch *w)
{
        if (!w)
                return NULL;
        ev_io_stop(w->loop, &w->io);
        ev_timer_stop(w->loop, &w->settle);
        close(w->fd);
        free(w);
        return NULL;
}
