/* SPDX-License-Identifier: MIT */
#pragma once

/* netwatch: what changed in the network, from a NETLINK_ROUTE socket on the loop. Bursts
 * are debounced: NETWATCH_SETTLE after the first event of a burst, each callback gets the
 * burst once. `changed` hears when the network may have come back (a link came up, an
 * address or a route was added); `path_changed`, if set, hears of every burst and what
 * kinds of change it held (a path can go away as well as come back). */

#include <ev.h>
#include <stddef.h>

struct netwatch;

typedef void (*netwatch_changed_t)(void *userdata);
typedef void (*netwatch_path_changed_t)(unsigned kinds, void *userdata);

#define NETWATCH_SETTLE 0.2     /* seconds after the first event of a burst */

/* kinds of change */
#define NETWATCH_LINK_UP        0x01u   /* a link is up and running (also: it changed while up) */
#define NETWATCH_LINK_DOWN      0x02u   /* a link went down, lost its carrier, or went away */
#define NETWATCH_ADDR_ADDED     0x04u
#define NETWATCH_ADDR_REMOVED   0x08u
#define NETWATCH_ROUTE_ADDED    0x10u   /* added or replaced */
#define NETWATCH_ROUTE_REMOVED  0x20u
#define NETWATCH_OVERRUN        0x40u   /* events were lost (the socket overflowed): anything may have */
/* the kinds after which a failing connect may succeed */
#define NETWATCH_BACK (NETWATCH_LINK_UP | NETWATCH_ADDR_ADDED | NETWATCH_ROUTE_ADDED | NETWATCH_OVERRUN)

/* changed may be NULL (only path_changed then). */
int netwatch_new(struct ev_loop *loop, netwatch_changed_t changed, void *userdata, struct netwatch **ret);
struct netwatch *netwatch_free(struct netwatch *w);
/* Also call path_changed (NULL: stop) after every burst. Neither callback may free w. */
void netwatch_set_path_changed(struct netwatch *w, netwatch_path_changed_t path_changed, void *userdata);

/* The kinds of change in one datagram of netlink events (pure, fuzzed). */
unsigned netwatch_parse(const void *buf, size_t len);
/* "link-down,route-removed" */
const char *netwatch_kinds_format(unsigned kinds, char *buf, size_t size);
