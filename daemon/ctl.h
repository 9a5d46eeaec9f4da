/* SPDX-License-Identifier: MIT */
#pragma once

/* ctl: the control socket. One JSON request per line, one JSON response per line.
 *
 *   {"cmd":"status"}                       {"cmd":"status","tunnels":["db"]}
 *   {"cmd":"start","tunnels":["db"]}       {"cmd":"stop","all":true}
 *   {"cmd":"restart","tunnels":["db"]}     {"cmd":"reload"}   {"cmd":"check"}
 *
 * Every response has "ok" (true/false); errors carry "error" (and "errors" for config
 * problems). status, check and metrics are open to anyone who may connect (the socket is
 * 0600, 0660 with control_group, 0666 with control_world_readable); commands that change
 * state need root, tunneld's own user, or a process holding control_group (its gid or a
 * supplementary group, from SO_PEERCRED/SO_PEERGROUPS). */

#include <ev.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "supervisor.h"
#include "util.h"

#define CTL_REQUEST_MAX 4096            /* bytes per request line */
#define CTL_CLIENTS_MAX 32             /* when full, the quietest idle client makes room */
#define CTL_IDLE_TIMEOUT 30.0           /* seconds without a complete request */
#define CTL_OUTPUT_MAX (16u << 20)      /* a client that does not read is dropped */

struct ctl_server;

/* Listen on path (created before any tunnel starts, so a second tunneld on the same socket
 * fails with -EADDRINUSE before it duplicates anything); requests are served once a
 * supervisor is attached. */
int ctl_server_new(struct ev_loop *loop, const char *path, const char *group, bool world_readable,
                   struct ctl_server **ret);
void ctl_server_attach(struct ctl_server *s, struct supervisor *sup);
struct ctl_server *ctl_server_free(struct ctl_server *s);

/* Answer one request line into out (a JSON object and '\n'). Exposed for tests. */
void ctl_handle_request(struct supervisor *sup, const char *line, size_t len, bool may_write, struct buf *out);

/* The status of one tunnel as a JSON object (also used by metrics). */
void ctl_tunnel_json(struct buf *b, const struct tunnel *t, double now);
