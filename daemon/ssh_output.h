/* SPDX-License-Identifier: MIT */
#pragma once

/* What one line of ssh's stderr tells about the tunnel. Pure functions, unit-tested. */

#include <stdbool.h>

enum failure_class {
        FAILURE_NONE,
        FAILURE_AUTH,            /* Permission denied */
        FAILURE_HOST_KEY,        /* verification failed, identification changed */
        FAILURE_DNS,             /* could not resolve hostname */
        FAILURE_REFUSED,         /* connection refused */
        FAILURE_UNREACHABLE,     /* no route to host, network unreachable */
        FAILURE_TIMEOUT,         /* connect timed out, ServerAlive timeout, tunneld's start deadline */
        FAILURE_CLOSED,          /* the server closed or reset the connection */
        FAILURE_LOCAL_FORWARD,   /* local listen address in use */
        FAILURE_REMOTE_FORWARD,  /* the server refused a -R listener (port taken, often by a stale session) */
        FAILURE_EXEC,            /* ssh could not be started (executed, or its files written) */
        FAILURE_KILLED,          /* ssh died of a signal tunneld did not send */
        FAILURE_LOST,            /* ssh exited 0 on its own: a tunnel lost without an error */
        FAILURE_PROBE,           /* tunneld's own probe found the forward dead */
        FAILURE_CONFIG,          /* ssh refused its configuration: a bad option, a file's permissions */
        FAILURE_FORWARD_DENIED,  /* the server's policy refuses a -R (AllowTcpForwarding, PermitListen) */
        FAILURE_MUX,             /* multiplex: ssh's control socket never came, closed, or spoke garbage */
        FAILURE_PENALTY,         /* the server refuses this address for now, before its banner
                                  * ("Not allowed at this time": PerSourcePenalties, MaxStartups) */
        FAILURE_UNKNOWN,
        _FAILURE_MAX,
};

enum ssh_line_kind {
        SSH_LINE_PLAIN,          /* log it */
        SSH_LINE_DEBUG,          /* "debug1: …" noise we asked for; log only at debug level */
        SSH_LINE_AUTHENTICATED,  /* "Authenticated to HOST ([ADDR]:PORT) using …" */
        SSH_LINE_REMOTE_FORWARD_OK, /* the server accepted one -R listener */
        SSH_LINE_SESSION,        /* forwarding set up, the client loop runs (local listeners bound) */
        SSH_LINE_ALLOCATED,      /* "Allocated port N for remote forward to HOST:PORT" (-R 0:…) */
        SSH_LINE_PROXY,          /* "debug1: Executing proxy command: …": a jump host or ProxyCommand */
        SSH_LINE_BANNER,         /* "debug1: Remote protocol version …": the destination answered */
        SSH_LINE_FORWARD_REFUSED_BY_POLICY, /* the server says its policy refuses a forward */
        SSH_LINE_PROHIBITED,     /* "channel N: open failed: administratively prohibited": one connection */
        SSH_LINE_FAILURE,        /* an error line; *ret_class says which */
};

enum ssh_line_kind ssh_line_parse(const char *line, enum failure_class *ret_class);

const char *failure_class_to_string(enum failure_class c);
/* One sentence for the operator: what to check. NULL for NONE. */
const char *failure_class_hint(enum failure_class c);
/* The same for a run that had authenticated, or not: a connection the server closed after
 * it came up was not turned away. */
const char *failure_class_hint_run(enum failure_class c, bool authenticated);
/* "closed" (and unknown) say only that the connection went away: a specific cause seen
 * earlier in the same run (a refused key on the jump host, say) is the better answer. */
bool failure_class_is_generic(enum failure_class c);
