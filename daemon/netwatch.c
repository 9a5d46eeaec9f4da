/* SPDX-License-Identifier: MIT */
#include "netwatch.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "nlsock.h"
#include "util.h"

struct netwatch {
        struct ev_loop *loop;
        int fd;
        ev_io io;
        ev_timer settle;
        unsigned kinds;                 /* of the burst being settled */
        netwatch_changed_t changed;
        void *userdata;
        netwatch_path_changed_t path_changed;
        void *path_userdata;
};

static unsigned kind_of(const struct nlmsghdr *h)
{
        switch (h->nlmsg_type) {
        case RTM_NEWLINK: {
                struct ifinfomsg ifi;

                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(ifi)))
                        return 0;
                memcpy(&ifi, NLMSG_DATA(h), sizeof(ifi));
                return (ifi.ifi_flags & IFF_UP) && (ifi.ifi_flags & IFF_RUNNING) ? NETWATCH_LINK_UP
                                                                                : NETWATCH_LINK_DOWN;
        }
        case RTM_DELLINK:
                return NETWATCH_LINK_DOWN;
        case RTM_NEWADDR:
                return NETWATCH_ADDR_ADDED;
        case RTM_DELADDR:
                return NETWATCH_ADDR_REMOVED;
        case RTM_NEWROUTE:
                return NETWATCH_ROUTE_ADDED;
        case RTM_DELROUTE:
                return NETWATCH_ROUTE_REMOVED;
        default:
                return 0;
        }
}

unsigned netwatch_parse(const void *buf, size_t len)
{
        const struct nlmsghdr *h;
        size_t off = 0;
        bool bad = false;
        unsigned kinds = 0;

        while ((h = nlsock_next(buf, len, &off, &bad)))
                kinds |= kind_of(h);
        return kinds;
}

const char *netwatch_kinds_format(unsigned kinds, char *buf, size_t size)
{
        static const char *const names[] = { "link-up", "link-down", "addr-added", "addr-removed",
                                             "route-added", "route-removed", "overrun" };
        size_t at = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (kinds & (1u << i)) {
                        int k = snprintf(buf + at, size - at, "%s%s", at ? "," : "", names[i]);

                        if (k < 0 || (size_t)k >= size - at) {
                                buf[at] = '\0';        /* no name cut in half */
                                break;
                        }
                        at += (size_t)k;
                }
        if (!at)
                snprintf(buf, size, "none");
        return buf;
}

static void on_settle(struct ev_loop *loop, ev_timer *t, int revents)
{
        struct netwatch *w = t->data;
        unsigned kinds = w->kinds;

        (void)loop;
        (void)revents;
        w->kinds = 0;
        /* path_changed first: a moved path is replaced before retries look at the network */
        if (w->path_changed)
                w->path_changed(kinds, w->path_userdata);
        if (w->changed && (kinds & NETWATCH_BACK))
                w->changed(w->userdata);
}

static void on_netlink(struct ev_loop *loop, ev_io *io, int revents)
{
        struct netwatch *w = io->data;
        char buf[8192] __attribute__((aligned(__alignof__(struct nlmsghdr))));
        unsigned kinds = 0, wanted;

        (void)revents;
        /* bounded: a storm of netlink events (another job flapping links) gets a share of
         * the loop like everything else; the rest waits for the next wakeup */
        for (int reads = 0; reads < 16; reads++) {
                ssize_t got = recv(w->fd, buf, sizeof(buf), MSG_DONTWAIT);

                if (got < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == ENOBUFS)
                                kinds |= NETWATCH_OVERRUN;      /* we missed events: assume anything */
                        break;
                }
                if (got == 0)
                        break;
                kinds |= netwatch_parse(buf, (size_t)got);
        }
        /* without a path_changed listener only news that the network may be back arms the
         * timer: an idle tunneld wakes for nothing else */
        wanted = w->path_changed ? kinds : kinds & NETWATCH_BACK;
        if (!wanted)
                return;
        w->kinds |= wanted;
        if (!ev_is_active(&w->settle)) {
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

void netwatch_set_path_changed(struct netwatch *w, netwatch_path_changed_t path_changed, void *userdata)
{
        w->path_changed = path_changed;
        w->path_userdata = userdata;
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
