/* SPDX-License-Identifier: MIT */
#pragma once

/* ctl: the control socket and its clients (the protocol is ctl_protocol.h). A client's
 * cost is bounded before work is done for it; see the limits below. */

#include <ev.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "supervisor.h"
#include "util.h"

/* What a client may cost, bounded before any work is done for it: one request line of
 * CTL_REQUEST_MAX, one reply at a time (the next request is read only once the last reply
 * was taken), and a place in the table. Root, tunneld's own user and control_group (who
 * may change state) always get a place: a newcomer of theirs on a full table evicts a
 * read-only client first; read-only clients (control_world_readable) share CTL_READERS_MAX
 * places, at most CTL_READERS_PER_UID per user. */
#define CTL_REQUEST_MAX 4096            /* bytes per request line */
#define CTL_CLIENTS_MAX 64              /* connections in all */
#define CTL_READERS_MAX 32              /* …of which read-only */
#define CTL_READERS_PER_UID 8           /* …of which from one user */
#define CTL_REQUESTS_PER_WAKEUP 4       /* pipelined requests answered per callback */
#define CTL_IDLE_TIMEOUT 30.0           /* seconds without a complete request */
#define CTL_STALL_TIMEOUT 5.0           /* seconds with a reply pending and none of it read */
#define CTL_OUTPUT_MAX (16u << 20)      /* a reply bigger than this is not sent */
#define CTL_EVENTS_BACKLOG (1u << 20)   /* a subscriber this far behind is dropped */

struct ctl_server;

/* Listen on path (created before any tunnel starts, so a second tunneld on the same socket
 * fails with -EADDRINUSE before it duplicates anything; so does a lock file that is not a
 * plain file of ours: logged once, tunneld must not start); requests are served once a
 * supervisor is attached. */
int ctl_server_new(struct ev_loop *loop, const char *path, const char *group, bool world_readable,
                   struct ctl_server **ret);
void ctl_server_attach(struct ctl_server *s, struct supervisor *sup);
struct ctl_server *ctl_server_free(struct ctl_server *s);

