/* SPDX-License-Identifier: MIT */
/* netpath: the route and address requests, their replies parsed (a route with its
 * source, interface and gateway; the kernel's refusal; a dump of addresses, a
 * point-to-point one, a failed duplicate address detection; broken lengths), the verdict
 * text, and real checks of loopback connections. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_addr.h>
#include <net/if.h>

#include "netpath.h"
#include "nlbuild.h"
#include "test.h"

static struct endpoint ep(const char *text)
{
        struct endpoint e;

        test_assert(endpoint_parse(text, &e) == 0);
        return e;
}

static void add_route(struct nlbuild *b, uint32_t seq, int family, uint32_t oif, const char *prefsrc,
                      const char *src, const char *gateway)
{
        struct rtmsg rt = { .rtm_family = (unsigned char)family, .rtm_type = RTN_UNICAST };
        struct endpoint e;

        nlb_msg(b, RTM_NEWROUTE, seq, &rt, sizeof(rt));
        nlb_u32(b, RTA_TABLE, 254);
        if (oif)
                nlb_u32(b, RTA_OIF, oif);
        if (prefsrc && endpoint_parse(prefsrc, &e) == 0)
                nlb_attr(b, RTA_PREFSRC, &e.addr, endpoint_addr_len(&e));
        if (src && endpoint_parse(src, &e) == 0)
                nlb_attr(b, RTA_SRC, &e.addr, endpoint_addr_len(&e));
        if (gateway && endpoint_parse(gateway, &e) == 0)
                nlb_attr(b, RTA_GATEWAY, &e.addr, endpoint_addr_len(&e));
}

static void add_address(struct nlbuild *b, uint32_t seq, int family, uint32_t index, const char *local,
                        const char *address, uint32_t flags)
{
        struct ifaddrmsg ifa = { .ifa_family = (unsigned char)family, .ifa_index = index,
                                 .ifa_flags = (unsigned char)flags };
        struct endpoint e;

        nlb_msg(b, RTM_NEWADDR, seq, &ifa, sizeof(ifa));
        if (address && endpoint_parse(address, &e) == 0)
                nlb_attr(b, IFA_ADDRESS, &e.addr, endpoint_addr_len(&e));
        if (local && endpoint_parse(local, &e) == 0)
                nlb_attr(b, IFA_LOCAL, &e.addr, endpoint_addr_len(&e));
        nlb_u32(b, IFA_FLAGS, flags);
}

static void test_requests(void)
{
        struct endpoint dst = ep("198.18.42.1"), src = ep("198.18.40.1"), v6 = ep("2001:db8::1");
        uint8_t buf[256];
        const struct nlmsghdr *h = (const void *)buf;
        const struct rtmsg *rt = NLMSG_DATA(h);
        size_t n = netpath_route_request(&dst, NULL, 4, buf, sizeof(buf));

        test_assert(n == NLMSG_LENGTH(sizeof(*rt)) + RTA_SPACE(4) && h->nlmsg_len == n);
        test_assert(h->nlmsg_type == RTM_GETROUTE && h->nlmsg_flags == NLM_F_REQUEST && h->nlmsg_seq == 4);
        test_assert(rt->rtm_family == AF_INET && rt->rtm_dst_len == 32 && rt->rtm_src_len == 0);
        n = netpath_route_request(&dst, &src, 5, buf, sizeof(buf));
        test_assert(n == NLMSG_LENGTH(sizeof(*rt)) + 2 * RTA_SPACE(4) && rt->rtm_src_len == 32);
        n = netpath_route_request(&v6, NULL, 6, buf, sizeof(buf));
        test_assert(n == NLMSG_LENGTH(sizeof(*rt)) + RTA_SPACE(16) && rt->rtm_dst_len == 128);
        test_assert(netpath_route_request(&v6, &src, 7, buf, sizeof(buf)) == 0);        /* mixed */
        v6 = ep("fe80::1%3");
        n = netpath_route_request(&v6, NULL, 6, buf, sizeof(buf));
        test_assert(n == NLMSG_LENGTH(sizeof(*rt)) + RTA_SPACE(16) + RTA_SPACE(4));     /* RTA_OIF 3 */
        test_assert(netpath_route_request(&dst, NULL, 7, buf, 20) == 0);                /* no room */

        n = netpath_addr_request(AF_INET6, 8, buf, sizeof(buf));
        test_assert(n == NLMSG_LENGTH(sizeof(struct ifaddrmsg)) && h->nlmsg_type == RTM_GETADDR);
        test_assert(h->nlmsg_flags == (NLM_F_REQUEST | NLM_F_DUMP));
        test_assert(((const struct ifaddrmsg *)NLMSG_DATA(h))->ifa_family == AF_INET6);
}

static void test_route_replies(void)
{
        struct nlbuild b = {0};
        struct netpath_route r;
        char text[ENDPOINT_MAX];

        add_route(&b, 4, AF_INET, 7, "198.18.41.1", NULL, "198.18.41.2");
        test_assert(netpath_parse_route(b.data, b.len, 4, &r) == 1);
        test_assert(r.error == 0 && r.ifindex == 7 && r.type == RTN_UNICAST);
        test_assert_streq(endpoint_format_addr(&r.src, text, sizeof(text)), "198.18.41.1");
        test_assert_streq(endpoint_format_addr(&r.gateway, text, sizeof(text)), "198.18.41.2");
        /* the source asked for comes back as RTA_SRC, not RTA_PREFSRC */
        b.len = 0;
        add_route(&b, 5, AF_INET6, 2, NULL, "2001:db8::5", NULL);
        test_assert(netpath_parse_route(b.data, b.len, 5, &r) == 1);
        test_assert_streq(endpoint_format_addr(&r.src, text, sizeof(text)), "2001:db8::5");
        test_assert(r.gateway.family == 0);
        test_assert(netpath_parse_route(b.data, b.len, 4, &r) == 0);    /* not the answer to 4 */
        /* the kernel's refusal: no route */
        b.len = 0;
        nlb_error(&b, 6, -ENETUNREACH);
        test_assert(netpath_parse_route(b.data, b.len, 6, &r) == 1 && r.error == -ENETUNREACH);
        /* broken: an address of the wrong length, an attribute past its message, a cut header */
        b.len = 0;
        add_route(&b, 7, AF_INET, 7, NULL, NULL, NULL);
        nlb_attr(&b, RTA_PREFSRC, "\1\2\3", 3);
        test_assert(netpath_parse_route(b.data, b.len, 7, &r) == -EBADMSG);
        b.len = 0;
        add_route(&b, 7, AF_INET, 7, "10.0.0.1", NULL, NULL);
        nlb_last(&b)->nlmsg_len -= 2;
        test_assert(netpath_parse_route(b.data, b.len, 7, &r) == -EBADMSG);
        b.len = 0;
        add_route(&b, 7, AF_INET, 7, NULL, NULL, NULL);
        test_assert(netpath_parse_route(b.data, 10, 7, &r) == -EBADMSG);
        nlb_msg(&b, RTM_NEWROUTE, 8, "x", 1);          /* too short for rtmsg */
        test_assert(netpath_parse_route(b.data + b.last, b.len - b.last, 8, &r) == -EBADMSG);
}

struct seen {
        int n;
        char addr[4][ENDPOINT_MAX];
        int ifindex[4];
        uint32_t flags[4];
        int max;
};

static bool visit(const struct endpoint *addr, int ifindex, uint32_t flags, void *userdata)
{
        struct seen *s = userdata;

        if (s->n >= s->max)
                return false;
        endpoint_format_addr(addr, s->addr[s->n], sizeof(s->addr[0]));
        s->ifindex[s->n] = ifindex;
        s->flags[s->n++] = flags;
        return true;
}

static void test_address_dumps(void)
{
        struct nlbuild b = {0};
        struct seen s = { .max = 4 };

        add_address(&b, 3, AF_INET, 2, "198.18.40.1", "198.18.40.1", 0);
        add_address(&b, 3, AF_INET, 5, "10.8.0.1", "10.8.0.2", 0);              /* point-to-point: peer */
        add_address(&b, 3, AF_INET6, 3, NULL, "2001:db8::9", IFA_F_DADFAILED);
        test_assert(netpath_parse_addrs(b.data, b.len, 3, visit, &s) == 0);    /* no end yet */
        test_assert(s.n == 3);
        test_assert_streq(s.addr[0], "198.18.40.1");
        test_assert_streq(s.addr[1], "10.8.0.1");
        test_assert_streq(s.addr[2], "2001:db8::9");
        test_assert(s.ifindex[1] == 5 && s.flags[2] == IFA_F_DADFAILED);
        nlb_done(&b, 3);
        s.n = 0;
        test_assert(netpath_parse_addrs(b.data, b.len, 3, visit, &s) == 1 && s.n == 3);
        s.n = 0;
        s.max = 2;
        test_assert(netpath_parse_addrs(b.data, b.len, 3, visit, &s) == -E2BIG);
        b.len = 0;
        nlb_error(&b, 3, -EPERM);
        test_assert(netpath_parse_addrs(b.data, b.len, 3, visit, &s) == -EPERM);
        b.len = 0;
        add_address(&b, 3, AF_INET, 2, "198.18.40.1", NULL, 0);
        nlb_last(&b)->nlmsg_len += 4;
        test_assert(netpath_parse_addrs(b.data, b.len, 3, visit, &s) == -EBADMSG);
}

static void test_describe(void)
{
        struct endpoint local = ep("198.18.40.1:40000"), remote = ep("198.18.42.1:22");
        struct netpath_result r = { .verdict = NETPATH_MOVED, .changed = NETPATH_CHANGED_SOURCE };
        char buf[320];

        r.fresh.ifindex = 8;
        snprintf(r.fresh.ifname, sizeof(r.fresh.ifname), "tt41o");
        r.fresh.src = ep("198.18.41.1");
        r.conn.ifindex = 8;
        snprintf(r.conn.ifname, sizeof(r.conn.ifname), "tt41o");
        test_assert_streq(netpath_describe(&r, &local, &remote, buf, sizeof(buf)),
                          "a new connection to 198.18.42.1 leaves from 198.18.41.1 by tt41o; this one from 198.18.40.1 by tt41o");
        r.verdict = NETPATH_GONE;
        test_assert_streq(netpath_describe(&r, &local, &remote, buf, sizeof(buf)),
                          "its local address 198.18.40.1 is no longer assigned");
        r.verdict = NETPATH_UNREACHABLE;
        r.fresh.error = -ENETUNREACH;
        test_assert_streq(netpath_describe(&r, &local, &remote, buf, sizeof(buf)),
                          "no route to 198.18.42.1 now (Network is unreachable)");
        test_assert_streq(netpath_verdict_name(NETPATH_SAME), "same");
}

/* real checks: loopback stays the same; an address nobody has is gone */
static void test_real_checks(void)
{
        struct netpath *np = NULL;
        struct netpath_result r;
        struct endpoint l4 = ep("127.0.0.1:40000"), r4 = ep("127.0.0.1:22"), gone = ep("192.0.2.254:40000");
        struct endpoint l6 = ep("[::1]:40000"), r6 = ep("[::1]:22");
        unsigned lo = if_nametoindex("lo");

        test_assert(netpath_open(&np) == 0);
        test_assert(netpath_check(np, &l4, &r4, 0, &r) == 0);
        test_assert(r.verdict == NETPATH_SAME && r.conn.ifindex == (int)lo && r.fresh.ifindex == (int)lo);
        test_assert_streq(r.conn.ifname, "lo");
        test_assert(netpath_check(np, &l4, &r4, (int)lo + 100, &r) == 0);       /* it left by another before */
        test_assert(r.verdict == NETPATH_MOVED && r.changed == NETPATH_CHANGED_INTERFACE);
        test_assert(netpath_check(np, &gone, &r4, 0, &r) == 0 && r.verdict == NETPATH_GONE);
        if (netpath_check(np, &l6, &r6, 0, &r) == 0)                            /* IPv6 may be off */
                test_assert(r.verdict == NETPATH_SAME && r.conn.ifindex == (int)lo);
        test_assert(netpath_check(np, &l4, &r6, 0, &r) == -EINVAL);
        netpath_close(np);
}

TEST_MAIN(TEST(test_requests), TEST(test_route_replies), TEST(test_address_dumps), TEST(test_describe),
          TEST(test_real_checks))
