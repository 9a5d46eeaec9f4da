/* SPDX-License-Identifier: MIT */
#pragma once

/* netpath: does a TCP connection still have its path? Asked of the kernel over
 * NETLINK_ROUTE: is its local address still assigned (RTM_GETADDR), and would a new
 * connection to its remote leave by the same source address (RTM_GETROUTE, as a new
 * connect() would look it up) and its own packets by the interface they used? One look
 * (netpath_open) takes the addresses once and serves any number of checks; every request
 * is bounded in time and size. The replies' parsing is pure and fuzzed. */

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "endpoint.h"

enum netpath_verdict {
        NETPATH_SAME,           /* its path is the one a new connection would take */
        NETPATH_MOVED,          /* a new connection would leave otherwise (see changed) */
        NETPATH_GONE,           /* its local address is no longer assigned: it is dead */
        NETPATH_UNREACHABLE,    /* no route to its remote now: nothing to move to yet */
};

#define NETPATH_CHANGED_SOURCE    0x1u  /* a new connection's source address is another */
#define NETPATH_CHANGED_INTERFACE 0x2u  /* its packets leave by another interface than before */

/* One route lookup's answer. */
struct netpath_route {
        int error;                      /* the lookup's -errno (-ENETUNREACH …), else 0 */
        int ifindex;                    /* the interface packets leave by; 0: none */
        char ifname[IF_NAMESIZE];       /* its name when it was looked up, else "" */
        unsigned type;                  /* RTN_UNICAST, RTN_LOCAL, … */
        struct endpoint src;            /* the source address (port 0); family 0: none said */
        struct endpoint gateway;        /* family 0: directly connected */
};

struct netpath_result {
        enum netpath_verdict verdict;
        unsigned changed;               /* NETPATH_CHANGED_* when MOVED */
        struct netpath_route conn;      /* the route of the connection's own packets (from local) */
        struct netpath_route fresh;     /* a new connection's */
};

struct netpath;

#define NETPATH_TIMEOUT_MS 200          /* per request: the kernel answers from the system call itself */
#define NETPATH_ADDRS_MAX 4096          /* addresses looked at; a host with more gets -E2BIG */

int netpath_open(struct netpath **ret);
struct netpath *netpath_close(struct netpath *np);

/* The connection local → remote (same family). ifindex: the interface its packets left by
 * when last checked (the result's conn.ifindex then), 0 if not known. 0 and *ret, or
 * -errno when the kernel could not be asked. The addresses are those of the handle's first
 * check: open one per burst of changes. */
int netpath_check(struct netpath *np, const struct endpoint *local, const struct endpoint *remote, int ifindex,
                  struct netpath_result *ret);

const char *netpath_verdict_name(enum netpath_verdict v);
/* What the kernel said, for the log: "leaves from 198.18.41.1 by tt41o now; this one is
 * from 198.18.40.1 by tt40o", "its address 198.18.40.1 is gone", … */
const char *netpath_describe(const struct netpath_result *r, const struct endpoint *local,
                             const struct endpoint *remote, char *buf, size_t size);

/* Pure: requests and the parsing of their replies. */
size_t netpath_route_request(const struct endpoint *dst, const struct endpoint *src, uint32_t seq, void *buf,
                             size_t size);
size_t netpath_addr_request(int family, uint32_t seq, void *buf, size_t size);
/* One datagram of the reply to route request seq: 1 and *ret (its error set for the
 * kernel's refusal), 0 if the reply is still to come, -EBADMSG if malformed. */
int netpath_parse_route(const void *buf, size_t len, uint32_t seq, struct netpath_route *ret);
/* One datagram of an address dump: visit gets each address (IFA_LOCAL, else IFA_ADDRESS),
 * its interface and flags (IFA_F_*); it returns false to stop (-E2BIG). 1 at the dump's
 * end, 0 if more is to come, -errno for the kernel's error, -EBADMSG if malformed. */
typedef bool (*netpath_addr_visit_t)(const struct endpoint *addr, int ifindex, uint32_t flags, void *userdata);
int netpath_parse_addrs(const void *buf, size_t len, uint32_t seq, netpath_addr_visit_t visit, void *userdata);
