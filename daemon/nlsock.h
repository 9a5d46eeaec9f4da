/* SPDX-License-Identifier: MIT */
#pragma once

/* nlsock: one request and its reply on a netlink socket, bounded in time and size (the
 * socket is non-blocking; a reply that does not come within timeout_ms is -ETIMEDOUT, a
 * reply longer than max_bytes -E2BIG), and the checked walk over what the kernel sent
 * (pure: every length within its buffer). netpath and tcp_diag are built on it. */

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NLSOCK_BUFFER 65536             /* one datagram of a dump fits (the kernel's skbs are ≤ 32 KiB) */

/* A netlink socket of protocol (NETLINK_ROUTE, NETLINK_SOCK_DIAG), O_CLOEXEC and
 * non-blocking: the fd, or -errno. */
int nlsock_open(int protocol);

/* What came back, one datagram at a time: > 0 the reply is complete, 0 more is to come,
 * -errno the answer (an NLMSG_ERROR) or a malformed reply. */
typedef int (*nlsock_parse_t)(const void *buf, size_t len, void *userdata);

/* Send req (its nlmsg_seq set by the caller) and feed each datagram from the kernel to
 * parse until it says done. Waits at most timeout_ms in all (poll), reads at most
 * max_bytes. Returns parse's > 0, or -errno. */
int nlsock_transact(int fd, const void *req, size_t len, unsigned timeout_ms, size_t max_bytes,
                    nlsock_parse_t parse, void *userdata);

/* The message at *offset of buf (len bytes), its length checked against what is left, and
 * *offset moved past it; NULL at the end, or with *bad set when the rest is malformed. */
const struct nlmsghdr *nlsock_next(const void *buf, size_t len, size_t *offset, bool *bad);

/* The error an NLMSG_ERROR carries (0 for an ack), or -EBADMSG if it is cut short. */
int nlsock_error(const struct nlmsghdr *h);

/* Attribute walk over data (len bytes): the next rtattr with its length checked, or NULL
 * (with *bad set if the rest is malformed). The payload is RTA_DATA(a), RTA_PAYLOAD(a). */
const struct rtattr *nlsock_attr_next(const void *data, size_t len, size_t *offset, bool *bad);
