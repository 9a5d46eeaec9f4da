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
 * was taken; a big reply is made CTL_STREAM_PART at a time as the socket takes it), and a
 * place in the table; a subscriber's events are kept once for all (ctl_events.h). Root,
 * tunneld's own user and control_group (who may change state)
 * always get a place: a newcomer of theirs on a full table evicts a read-only client
 * first; read-only clients (control_world_readable) share CTL_READERS_MAX places, at most
 * CTL_READERS_PER_UID per user. A client that is dropped gets a last line saying why
 * (ctl_protocol_dropped), and tunneld logs it once. */
#define CTL_REQUEST_MAX 4096            /* bytes per request line */
#define CTL_CLIENTS_MAX 64              /* connections in all */
#define CTL_READERS_MAX 32              /* …of which read-only */
#define CTL_READERS_PER_UID 8           /* …of which from one user */
#define CTL_REQUESTS_PER_WAKEUP 4       /* pipelined requests answered per callback */
#define CTL_PARTS_PER_WAKEUP 4          /* parts of a big reply made per callback… */
#define CTL_READER_PARTS_PER_WAKEUP 1   /* …for a read-only client: root's replies come first */
#define CTL_IDLE_TIMEOUT 30.0           /* seconds without a complete request */
#define CTL_STALL_TIMEOUT 5.0           /* seconds with something sent or to send and none of it read */
#define CTL_LOW_WATER (32u << 10)       /* the next part of a reply or of events is made below this much unsent */
#define CTL_SEND_MAX (16u << 10)        /* bytes per send(): the socket queues them as one */
#define CTL_SOCKET_RESERVE (32u << 10)  /* room kept in the socket's buffer for a last line */

struct ctl_server;

/* Listen on path (created before any tunnel starts, so a second tunneld on the same socket
 * fails with -EADDRINUSE before it duplicates anything; so does a lock file that is not a
 * plain file of ours: logged once, tunneld must not start); requests are served once a
 * supervisor is attached. */
int ctl_server_new(struct ev_loop *loop, const char *path, const char *group, bool world_readable,
                   struct ctl_server **ret);
void ctl_server_attach(struct ctl_server *s, struct supervisor *sup);
struct ctl_server *ctl_server_free(struct ctl_server *s);

