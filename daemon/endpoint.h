/* SPDX-License-Identifier: MIT */
#pragma once

/* endpoint: one end of a TCP connection, an IPv4 or IPv6 address and a port, as the kernel
 * names it (proc_net, tcp_diag, netpath, tcp_tune all speak it). Pure. */

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct endpoint {
        int family;                     /* AF_INET, AF_INET6; 0: none */
        union {
                struct in_addr v4;
                struct in6_addr v6;
        } addr;
        unsigned port;                  /* host order; 0 when only the address matters */
        unsigned scope_id;              /* IPv6 link-local: the interface; else 0 */
};

/* "198.18.0.1:22", "[2001:db8::1]:22" ("[fe80::1%3]:22"); the address alone without a port */
#define ENDPOINT_MAX (INET6_ADDRSTRLEN + 20)
const char *endpoint_format(const struct endpoint *e, char *buf, size_t size);
const char *endpoint_format_addr(const struct endpoint *e, char *buf, size_t size);
/* "ADDR:PORT", "[V6]:PORT", or an address alone (port 0): 0 or -EINVAL. An IPv4-mapped IPv6
 * address becomes IPv4. */
int endpoint_parse(const char *text, struct endpoint *ret);
int endpoint_from_sockaddr(const struct sockaddr *sa, size_t len, struct endpoint *ret);
/* ret must hold a struct sockaddr_in6; returns its length */
size_t endpoint_to_sockaddr(const struct endpoint *e, struct sockaddr_storage *ret);
/* ::ffff:a.b.c.d → a.b.c.d (a dual-stack socket's view of an IPv4 peer) */
void endpoint_unmap(struct endpoint *e);
/* Both ends of one connection, only if both are mapped: its two ends stay of one family. */
void endpoint_unmap_pair(struct endpoint *a, struct endpoint *b);
size_t endpoint_addr_len(const struct endpoint *e);     /* 4, 16, or 0 */
bool endpoint_same_addr(const struct endpoint *a, const struct endpoint *b);
bool endpoint_equal(const struct endpoint *a, const struct endpoint *b);        /* address and port */
