/* SPDX-License-Identifier: MIT */
#include "netpath.h"

#include <errno.h>
#include <linux/if_addr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nlsock.h"
#include "util.h"

#define ADDR_DUMP_MAX (1u << 20)        /* bytes of an address dump read */

struct address {
        struct endpoint addr;
        int ifindex;
        uint32_t flags;
};

struct netpath {
        int fd;
        uint32_t seq;
        bool loaded[2];                 /* AF_INET, AF_INET6 addresses taken */
        struct address *addrs;
        size_t n_addrs;
};

struct route_request {
        struct nlmsghdr h;
        struct rtmsg r;
        char attrs[2 * RTA_SPACE(16) + RTA_SPACE(4)];
};

static size_t put_attr(char *at, unsigned short type, const void *data, size_t len)
{
        struct rtattr a = { .rta_len = (unsigned short)RTA_LENGTH(len), .rta_type = type };

        memcpy(at, &a, sizeof(a));
        memcpy(at + RTA_LENGTH(0), data, len);
        return RTA_SPACE(len);
}

size_t netpath_route_request(const struct endpoint *dst, const struct endpoint *src, uint32_t seq, void *buf,
                             size_t size)
{
        struct route_request m = {
                .h = {
                        .nlmsg_type = RTM_GETROUTE,
                        .nlmsg_flags = NLM_F_REQUEST,
                        .nlmsg_seq = seq,
                },
                .r = { .rtm_family = (unsigned char)dst->family },
        };
        size_t alen = endpoint_addr_len(dst), at = 0;

        if (!alen || (src && src->family != dst->family))
                return 0;
        m.r.rtm_dst_len = (unsigned char)(alen * 8);
        at += put_attr(m.attrs + at, RTA_DST, &dst->addr, alen);
        if (src) {
                m.r.rtm_src_len = (unsigned char)(alen * 8);
                at += put_attr(m.attrs + at, RTA_SRC, &src->addr, alen);
        }
        if (dst->scope_id) {
                uint32_t oif = dst->scope_id;   /* a link-local remote is on that link only */

                at += put_attr(m.attrs + at, RTA_OIF, &oif, sizeof(oif));
        }
        m.h.nlmsg_len = (uint32_t)(NLMSG_LENGTH(sizeof(m.r)) + at);
        if (size < m.h.nlmsg_len)
                return 0;
        memcpy(buf, &m, m.h.nlmsg_len);
        return m.h.nlmsg_len;
}

size_t netpath_addr_request(int family, uint32_t seq, void *buf, size_t size)
{
        struct {
                struct nlmsghdr h;
                struct ifaddrmsg a;
        } m = {
                .h = {
                        .nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg)),
                        .nlmsg_type = RTM_GETADDR,
                        .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
                        .nlmsg_seq = seq,
                },
                .a = { .ifa_family = (unsigned char)family },
        };

        if (size < sizeof(m))
                return 0;
        memcpy(buf, &m, sizeof(m));
        return sizeof(m);
}

/* an address attribute of family's length → e; false if it is not one */
static bool take_addr(const struct rtattr *a, int family, struct endpoint *e)
{
        size_t alen = family == AF_INET ? 4 : 16;

        if (RTA_PAYLOAD(a) != alen)
                return false;
        memset(e, 0, sizeof(*e));
        e->family = family;
        memcpy(&e->addr, RTA_DATA(a), alen);
        return true;
}

static int take_route(const struct nlmsghdr *h, struct netpath_route *ret)
{
        struct rtmsg rt;
        const char *attrs;
        size_t payload, off = 0;
        const struct rtattr *a;
        struct endpoint prefsrc = {0}, src = {0};
        bool bad = false;

        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(rt)))
                return -EBADMSG;
        memcpy(&rt, NLMSG_DATA(h), sizeof(rt));
        if (rt.rtm_family != AF_INET && rt.rtm_family != AF_INET6)
                return -EBADMSG;
        memset(ret, 0, sizeof(*ret));
        ret->type = rt.rtm_type;
        attrs = (const char *)NLMSG_DATA(h) + NLMSG_ALIGN(sizeof(rt));
        payload = h->nlmsg_len - NLMSG_LENGTH(0);
        payload = payload > NLMSG_ALIGN(sizeof(rt)) ? payload - NLMSG_ALIGN(sizeof(rt)) : 0;
        while ((a = nlsock_attr_next(attrs, payload, &off, &bad))) {
                uint32_t oif;

                switch (a->rta_type) {
                case RTA_OIF:
                        if (RTA_PAYLOAD(a) != sizeof(oif))
                                return -EBADMSG;
                        memcpy(&oif, RTA_DATA(a), sizeof(oif));
                        ret->ifindex = oif > INT32_MAX ? 0 : (int)oif;
                        break;
                case RTA_PREFSRC:
                        if (!take_addr(a, rt.rtm_family, &prefsrc))
                                return -EBADMSG;
                        break;
                case RTA_SRC:
                        if (!take_addr(a, rt.rtm_family, &src))
                                return -EBADMSG;
                        break;
                case RTA_GATEWAY:
                        if (!take_addr(a, rt.rtm_family, &ret->gateway))
                                return -EBADMSG;
                        break;
                default:
                        break;
                }
        }
        if (bad)
                return -EBADMSG;
        /* the kernel names the source it picked (RTA_PREFSRC) unless it is the one asked for */
        ret->src = prefsrc.family ? prefsrc : src;
        return 0;
}

int netpath_parse_route(const void *buf, size_t len, uint32_t seq, struct netpath_route *ret)
{
        const struct nlmsghdr *h;
        size_t off = 0;
        bool bad = false;

        while ((h = nlsock_next(buf, len, &off, &bad))) {
                int r;

                if (h->nlmsg_seq != seq)
                        continue;
                if (h->nlmsg_type == NLMSG_ERROR) {
                        r = nlsock_error(h);
                        if (r == -EBADMSG)
                                return r;
                        if (r == 0)
                                continue;       /* an ack: the route comes (came) on its own */
                        memset(ret, 0, sizeof(*ret));
                        ret->error = r;
                        return 1;
                }
                if (h->nlmsg_type != RTM_NEWROUTE)
                        continue;
                r = take_route(h, ret);
                return r < 0 ? r : 1;
        }
        return bad ? -EBADMSG : 0;
}

static int take_address(const struct nlmsghdr *h, netpath_addr_visit_t visit, void *userdata)
{
        struct ifaddrmsg ifa;
        const char *attrs;
        size_t payload, off = 0;
        const struct rtattr *a;
        struct endpoint local = {0}, address = {0};
        uint32_t flags;
        bool bad = false;

        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(ifa)))
                return -EBADMSG;
        memcpy(&ifa, NLMSG_DATA(h), sizeof(ifa));
        if (ifa.ifa_family != AF_INET && ifa.ifa_family != AF_INET6)
                return 0;                       /* not asked for: skipped */
        flags = ifa.ifa_flags;
        attrs = (const char *)NLMSG_DATA(h) + NLMSG_ALIGN(sizeof(ifa));
        payload = h->nlmsg_len - NLMSG_LENGTH(0);
        payload = payload > NLMSG_ALIGN(sizeof(ifa)) ? payload - NLMSG_ALIGN(sizeof(ifa)) : 0;
        while ((a = nlsock_attr_next(attrs, payload, &off, &bad))) {
                if (a->rta_type == IFA_LOCAL && !take_addr(a, ifa.ifa_family, &local))
                        return -EBADMSG;
                if (a->rta_type == IFA_ADDRESS && !take_addr(a, ifa.ifa_family, &address))
                        return -EBADMSG;
                if (a->rta_type == IFA_FLAGS && RTA_PAYLOAD(a) == sizeof(flags))
                        memcpy(&flags, RTA_DATA(a), sizeof(flags));
        }
        if (bad)
                return -EBADMSG;
        /* on a point-to-point link IFA_ADDRESS is the peer's; IFA_LOCAL is ours */
        if (!local.family)
                local = address;
        if (!local.family)
                return 0;
        return visit(&local, (int)ifa.ifa_index, flags, userdata) ? 0 : -E2BIG;
}

int netpath_parse_addrs(const void *buf, size_t len, uint32_t seq, netpath_addr_visit_t visit, void *userdata)
{
        const struct nlmsghdr *h;
        size_t off = 0;
        bool bad = false;

        while ((h = nlsock_next(buf, len, &off, &bad))) {
                int r;

                if (h->nlmsg_seq != seq)
                        continue;
                if (h->nlmsg_type == NLMSG_DONE)
                        return 1;
                if (h->nlmsg_type == NLMSG_ERROR) {
                        r = nlsock_error(h);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (h->nlmsg_type != RTM_NEWADDR)
                        continue;
                r = take_address(h, visit, userdata);
                if (r < 0)
                        return r;
        }
        return bad ? -EBADMSG : 0;
}

int netpath_open(struct netpath **ret)
{
        struct netpath *np = calloc(1, sizeof(*np));

        if (!np)
                return -ENOMEM;
        np->fd = nlsock_open(NETLINK_ROUTE);
        if (np->fd < 0) {
                int r = np->fd;

                free(np);
                return r;
        }
        *ret = np;
        return 0;
}

struct netpath *netpath_close(struct netpath *np)
{
        if (!np)
                return NULL;
        close(np->fd);
        free(np->addrs);
        free(np);
        return NULL;
}

struct route_lookup {
        uint32_t seq;
        struct netpath_route *ret;
};

static int parse_route_reply(const void *buf, size_t len, void *userdata)
{
        struct route_lookup *l = userdata;

        return netpath_parse_route(buf, len, l->seq, l->ret);
}

static int lookup_route(struct netpath *np, const struct endpoint *dst, const struct endpoint *src,
                        struct netpath_route *ret)
{
        struct route_request req;
        struct route_lookup l = { .seq = ++np->seq, .ret = ret };
        size_t len = netpath_route_request(dst, src, l.seq, &req, sizeof(req));
        int r;

        if (!len)
                return -EINVAL;
        r = nlsock_transact(np->fd, &req, len, NETPATH_TIMEOUT_MS, NLSOCK_BUFFER, parse_route_reply, &l);
        if (r < 0)
                return r;
        if (ret->ifindex > 0 && !if_indextoname((unsigned)ret->ifindex, ret->ifname))
                ret->ifname[0] = '\0';
        return 0;
}

static bool keep_address(const struct endpoint *addr, int ifindex, uint32_t flags, void *userdata)
{
        struct netpath *np = userdata;

        if (np->n_addrs >= NETPATH_ADDRS_MAX)
                return false;
        np->addrs[np->n_addrs++] = (struct address){ .addr = *addr, .ifindex = ifindex, .flags = flags };
        return true;
}

struct addr_dump {
        uint32_t seq;
        struct netpath *np;
};

static int parse_addr_reply(const void *buf, size_t len, void *userdata)
{
        struct addr_dump *d = userdata;

        return netpath_parse_addrs(buf, len, d->seq, keep_address, d->np);
}

static int load_addresses(struct netpath *np, int family)
{
        struct {
                struct nlmsghdr h;
                struct ifaddrmsg a;
        } req;
        struct addr_dump d = { .seq = ++np->seq, .np = np };
        size_t len = netpath_addr_request(family, d.seq, &req, sizeof(req));
        int r;

        if (!np->addrs) {
                np->addrs = calloc(NETPATH_ADDRS_MAX, sizeof(*np->addrs));
                if (!np->addrs)
                        return -ENOMEM;
        }
        r = nlsock_transact(np->fd, &req, len, NETPATH_TIMEOUT_MS, ADDR_DUMP_MAX, parse_addr_reply, &d);
        if (r < 0)
                return r;
        np->loaded[family == AF_INET6] = true;
        return 0;
}

static bool assigned(const struct netpath *np, const struct endpoint *local)
{
        for (size_t i = 0; i < np->n_addrs; i++)
                if (endpoint_same_addr(&np->addrs[i].addr, local))
                        return !(np->addrs[i].flags & IFA_F_DADFAILED);
        return false;
}

static bool no_route(int error)
{
        return error == -ENETUNREACH || error == -EHOSTUNREACH || error == -ENETDOWN || error == -EACCES ||
               error == -EPERM || error == -EAGAIN;
}

int netpath_check(struct netpath *np, const struct endpoint *local, const struct endpoint *remote, int ifindex,
                  struct netpath_result *ret)
{
        struct netpath_result res = {0};
        int r;

        if (!endpoint_addr_len(local) || local->family != remote->family)
                return -EINVAL;
        if (!np->loaded[local->family == AF_INET6]) {
                r = load_addresses(np, local->family);
                if (r < 0)
                        return r;
        }
        if (!assigned(np, local)) {
                res.verdict = NETPATH_GONE;
                *ret = res;
                return 0;
        }
        r = lookup_route(np, remote, NULL, &res.fresh);
        if (r >= 0)
                r = lookup_route(np, remote, local, &res.conn);
        if (r < 0)
                return r;
        if (res.conn.error == -EINVAL && res.fresh.error != -EINVAL)
                res.verdict = NETPATH_GONE;     /* IPv4: no longer a local address (it went since the dump) */
        else if ((res.fresh.error == -EINVAL && res.conn.error == -EINVAL) ||  /* a blackhole route: both dropped */
                 no_route(res.fresh.error) || no_route(res.conn.error))
                res.verdict = NETPATH_UNREACHABLE;
        else if (res.fresh.error || res.conn.error)
                return res.fresh.error ? res.fresh.error : res.conn.error;
        else {
                if (res.fresh.src.family && !endpoint_same_addr(&res.fresh.src, local))
                        res.changed |= NETPATH_CHANGED_SOURCE;
                if (ifindex > 0 && res.conn.ifindex != ifindex)
                        res.changed |= NETPATH_CHANGED_INTERFACE;
                res.verdict = res.changed ? NETPATH_MOVED : NETPATH_SAME;
        }
        *ret = res;
        return 0;
}

const char *netpath_verdict_name(enum netpath_verdict v)
{
        switch (v) {
        case NETPATH_SAME:
                return "same";
        case NETPATH_MOVED:
                return "moved";
        case NETPATH_GONE:
                return "gone";
        case NETPATH_UNREACHABLE:
                return "unreachable";
        }
        return "unknown";
}

static const char *route_text(const struct netpath_route *rt, const struct endpoint *src, char *buf, size_t size)
{
        char addr[ENDPOINT_MAX], ifname[IF_NAMESIZE + 16];

        if (rt->ifname[0])
                snprintf(ifname, sizeof(ifname), "%s", rt->ifname);
        else
                snprintf(ifname, sizeof(ifname), "interface %d", rt->ifindex);
        snprintf(buf, size, "from %s by %s", endpoint_format_addr(src->family ? src : &rt->src, addr, sizeof(addr)),
                 ifname);
        return buf;
}

const char *netpath_describe(const struct netpath_result *r, const struct endpoint *local,
                             const struct endpoint *remote, char *buf, size_t size)
{
        char l[ENDPOINT_MAX], rem[ENDPOINT_MAX], a[96], b[96];

        endpoint_format_addr(local, l, sizeof(l));
        endpoint_format_addr(remote, rem, sizeof(rem));
        switch (r->verdict) {
        case NETPATH_GONE:
                snprintf(buf, size, "its local address %s is no longer assigned", l);
                break;
        case NETPATH_UNREACHABLE: {
                int error = r->fresh.error ? r->fresh.error : r->conn.error;

                snprintf(buf, size, "no route to %s now (%s)", rem,
                         error == -EINVAL ? "a blackhole route" : strerror(-error));
                break;
        }
        case NETPATH_MOVED:
                snprintf(buf, size, "a new connection to %s leaves %s%s; this one %s", rem,
                         route_text(&r->fresh, &(struct endpoint){0}, a, sizeof(a)),
                         r->changed & NETPATH_CHANGED_INTERFACE ? " (its interface changed)" : "",
                         route_text(&r->conn, local, b, sizeof(b)));
                break;
        case NETPATH_SAME:
        default:
                snprintf(buf, size, "to %s %s, as a new connection would", rem,
                         route_text(&r->conn, local, a, sizeof(a)));
                break;
        }
        return buf;
}
