/* SPDX-License-Identifier: MIT */
/* netwatch: each kind of netlink event → its kind of change (a link up and running, down,
 * gone; addresses and routes added and removed), several in one datagram, broken ones. */
#include <linux/if.h>

#include "netwatch.h"
#include "nlbuild.h"
#include "test.h"

static unsigned link_event(uint16_t type, unsigned flags)
{
        struct nlbuild b = {0};
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC, .ifi_index = 3, .ifi_flags = flags };

        nlb_msg(&b, type, 0, &ifi, sizeof(ifi));
        return netwatch_parse(b.data, b.len);
}

static unsigned event(uint16_t type)
{
        struct nlbuild b = {0};
        char body[16] = {0};

        nlb_msg(&b, type, 0, body, sizeof(body));
        return netwatch_parse(b.data, b.len);
}

static void test_kinds(void)
{
        test_assert(link_event(RTM_NEWLINK, IFF_UP | IFF_RUNNING) == NETWATCH_LINK_UP);
        test_assert(link_event(RTM_NEWLINK, IFF_UP) == NETWATCH_LINK_DOWN);             /* no carrier */
        test_assert(link_event(RTM_NEWLINK, 0) == NETWATCH_LINK_DOWN);
        test_assert(link_event(RTM_DELLINK, IFF_UP | IFF_RUNNING) == NETWATCH_LINK_DOWN);
        test_assert(event(RTM_NEWADDR) == NETWATCH_ADDR_ADDED);
        test_assert(event(RTM_DELADDR) == NETWATCH_ADDR_REMOVED);
        test_assert(event(RTM_NEWROUTE) == NETWATCH_ROUTE_ADDED);
        test_assert(event(RTM_DELROUTE) == NETWATCH_ROUTE_REMOVED);
        test_assert(event(RTM_NEWNEIGH) == 0);
        test_assert((NETWATCH_BACK & NETWATCH_ADDR_REMOVED) == 0 && (NETWATCH_BACK & NETWATCH_ROUTE_ADDED));
}

static void test_bursts_and_broken_ones(void)
{
        struct nlbuild b = {0};
        char body[16] = {0};
        struct ifinfomsg ifi = { .ifi_flags = IFF_UP | IFF_RUNNING };

        nlb_msg(&b, RTM_DELADDR, 0, body, sizeof(body));
        nlb_msg(&b, RTM_DELROUTE, 0, body, sizeof(body));
        test_assert(netwatch_parse(b.data, b.len) == (NETWATCH_ADDR_REMOVED | NETWATCH_ROUTE_REMOVED));
        nlb_msg(&b, RTM_NEWLINK, 0, "x", 1);                    /* too short for ifinfomsg: no kind */
        test_assert(netwatch_parse(b.data, b.len) == (NETWATCH_ADDR_REMOVED | NETWATCH_ROUTE_REMOVED));
        nlb_msg(&b, RTM_NEWLINK, 0, &ifi, sizeof(ifi));
        nlb_last(&b)->nlmsg_len = 4096;                         /* past the datagram: the walk stops */
        test_assert(netwatch_parse(b.data, b.len) == (NETWATCH_ADDR_REMOVED | NETWATCH_ROUTE_REMOVED));
        test_assert(netwatch_parse(b.data, 3) == 0);
}

static void test_format(void)
{
        char buf[128];

        test_assert_streq(netwatch_kinds_format(NETWATCH_LINK_DOWN | NETWATCH_ROUTE_REMOVED, buf, sizeof(buf)),
                          "link-down,route-removed");
        test_assert_streq(netwatch_kinds_format(0, buf, sizeof(buf)), "none");
        test_assert_streq(netwatch_kinds_format(NETWATCH_OVERRUN, buf, sizeof(buf)), "overrun");
        test_assert_streq(netwatch_kinds_format(0x7f, buf, 20), "link-up,link-down");   /* cut at a name */
}

TEST_MAIN(TEST(test_kinds), TEST(test_bursts_and_broken_ones), TEST(test_format))
