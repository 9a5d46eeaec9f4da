/* SPDX-License-Identifier: MIT */
#pragma once

/* netwatch: tells when the network may have come back (a link came up, an address or a
 * route was added), from a NETLINK_ROUTE socket on the loop. Bursts are debounced. */

#include <ev.h>

struct netwatch;

typedef void (*netwatch_changed_t)(void *userdata);

#define NETWATCH_SETTLE 0.2     /* seconds after the first event of a burst */

int netwatch_new(struct ev_loop *loop, netwatch_changed_t changed, void *userdata, struct netwatch **ret);
struct netwatch *netwatch_free(struct netwatch *w);
