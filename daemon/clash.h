/* SPDX-License-Identifier: MIT */
#pragma once

/* clash: which forwards cannot listen at the same time, as the kernel and ssh decide it.
 * Pure (no resolver, no sockets), table-tested in tests/test-clash.c.
 *
 * ssh's listeners (channels.c): a -L/-D without a bind address, or with "localhost",
 * listens on the loopback addresses of both families, 127.0.0.1 and ::1 (every address
 * with GatewayPorts=yes); "" and "*" listen on every address; other addresses as given.
 * IPv6 sockets are IPV6_V6ONLY, so 0.0.0.0 and :: do not collide, while a wildcard
 * collides with every address of its family on the same port (Linux refuses a second
 * listener there, SO_REUSEADDR or not). A -R listens on the server, which decides by its
 * own GatewayPorts (no: loopback whatever was asked, unless 127.0.0.1 or ::1; yes:
 * everything; clientspecified: as asked); tunneld cannot know it, so two -R clash only if
 * they clash under each of the three. Host names tunneld cannot resolve clash only with
 * the same name. Unix sockets clash by path. */

#include <stdbool.h>
#include <stddef.h>

#include "forward.h"

/* How a forward's bind address was written. */
enum clash_bind {
        CLASH_BIND_NONE,                /* no bind address */
        CLASH_BIND_LOCALHOST,           /* "localhost" (any case) */
        CLASH_BIND_ALL,                 /* "" or "*" */
        CLASH_BIND_V4,                  /* a numeric IPv4 address (0.0.0.0: every IPv4 address) */
        CLASH_BIND_V6,                  /* a numeric IPv6 address (::: every IPv6 address) */
        CLASH_BIND_NAME,                /* a host name, resolved by ssh at run time */
};

/* One forward as it will listen. Strings are owned (clash_listener_done). */
struct clash_listener {
        enum forward_kind kind;
        char *server;                   /* -R: the server's identity (clash_server_identity), else NULL */
        bool gateway_ports;             /* -L/-D: the tunnel's GatewayPorts=yes */
        int port;                       /* -1: a Unix socket */
        enum clash_bind bind;
        bool exact_loopback;            /* written exactly "127.0.0.1" or "::1" (sshd's rule) */
        unsigned char addr[16];         /* V4 (4 bytes), V6 */
        char *name;                     /* NAME, lower-cased; or the Unix socket's path, normalized */
};

/* Fill l from a forward spec; -EINVAL if it is not valid (validation reports that),
 * -ENOMEM. */
int clash_listener_from(enum forward_kind kind, const char *spec, const char *server, bool gateway_ports,
                        struct clash_listener *l);
void clash_listener_done(struct clash_listener *l);

/* Can both listen at once? false: they cannot. */
bool clash_listeners_clash(const struct clash_listener *a, const struct clash_listener *b);

/* The server a -R listens on, "host:port" with the host lower-cased, every loopback name
 * and address as "localhost", and port 0 as 22. buf holds the result. */
const char *clash_server_identity(const char *host, int port, char *buf, size_t size);

/* True if ssh_options holds GatewayPorts=yes (ssh's first value wins). */
bool clash_gateway_ports(char *const *ssh_options);

/* Near-linear over many listeners: n entries, each with a caller's index (kept stable);
 * calls found(a, b, userdata) once for every later entry b that clashes with an earlier a
 * (earlier in index order). Sorts v. 0 or -ENOMEM. */
struct clash_entry {
        struct clash_listener l;
        size_t index;
        const void *owner;              /* the caller's (tunnel, forward) */
};
typedef void (*clash_found_t)(const struct clash_entry *a, const struct clash_entry *b, void *userdata);
int clash_find_all(struct clash_entry *v, size_t n, clash_found_t found, void *userdata);
