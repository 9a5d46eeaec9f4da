/* SPDX-License-Identifier: MIT */
#pragma once

/* forward: one -L/-R/-D spec in ssh's own syntax, parsed into what listens where and
 * where it connects. Pure; the one parser behind validation, port clashes, stale socket
 * cleanup and status. */

#include <stdbool.h>

#include "validate.h"

enum forward_kind {
        FORWARD_LOCAL,          /* -L: listens here, connects from the server */
        FORWARD_REMOTE,         /* -R: listens on the server, connects from here */
        FORWARD_DYNAMIC,        /* -D: a SOCKS proxy listening here */
};

#define FORWARD_HOST_MAX 255             /* a DNS name's most, and any address literal */
#define FORWARD_PATH_MAX 107            /* sun_path holds 108 bytes with its NUL */

/* One side of a forward: a TCP address or a Unix socket path. */
struct forward_end {
        char host[FORWARD_HOST_MAX + 1];        /* bind address or host, brackets removed; "" = none given */
        bool host_given;                        /* the spec named one (even "" or "*") */
        int port;                               /* -1 for a Unix socket */
        char path[FORWARD_PATH_MAX + 1];        /* the Unix socket, or "" */
};

struct forward {
        enum forward_kind kind;
        struct forward_end listen;
        struct forward_end connect;     /* unused for -D and a reverse SOCKS -R ("8080") */
        bool socks;                     /* -D, or -R with only a listen side */
};

/* NULL and *ret filled if spec is a valid forward of that kind, else why not. */
const char *forward_parse(enum forward_kind kind, const char *spec, struct forward *ret);

const char *forward_validate_local(const char *s);
const char *forward_validate_remote(const char *s);
const char *forward_validate_dynamic(const char *s);

/* The Unix socket a -L spec listens on, or NULL (a TCP listener, or not a valid spec).
 * buf holds the result. */
const char *forward_local_socket(const char *spec, char *buf, unsigned size);
