/* SPDX-License-Identifier: MIT */
#pragma once

/* ctl_protocol: the control socket's requests and replies, one JSON object per line each
 * way; one table of commands (name, who may, handler). The socket and its clients are
 * ctl.c's.
 *
 *   {"cmd":"status"}                       {"cmd":"status","tunnels":["db"]}
 *   {"cmd":"start","tunnels":["db"]}       {"cmd":"stop","all":true}
 *   {"cmd":"restart","tunnels":["db"]}     {"cmd":"reload"}   {"cmd":"check"}
 *   {"cmd":"metrics"}                      {"cmd":"events","tunnels":["db"]}
 *
 * Every reply has "ok" (true/false); errors carry "error" (and "errors" for configuration
 * problems). status, check, metrics and events are open to anyone who may connect;
 * commands that change state need root, tunneld's own user, or control_group. events
 * replies like status, then the connection stays subscribed: one line per state change
 * of the named tunnels (all by default), until the client closes it. */

#include <stdbool.h>
#include <sys/types.h>

#include "supervisor.h"
#include "util.h"

struct ctl_peer {
        uid_t uid;
        bool may_write;                 /* root, tunneld's uid, or control_group */
};

/* What a request asks of the connection besides its reply. */
struct ctl_effect {
        bool subscribe;                 /* events: follow state changes from now on */
        char **names;                   /* …of these tunnels (NULL: all); the caller frees it */
        unsigned long wait_reload;      /* reload: the reply comes when this reload is done */
};

/* The reply to a reload request, once supervisor_reload_result() says it is done. */
void ctl_protocol_reload_reply(struct supervisor *sup, struct buf *out);

/* Answer one request line into out (a JSON object and '\n'). */
void ctl_protocol_handle(struct supervisor *sup, const char *line, size_t len, const struct ctl_peer *peer,
                         struct buf *out, struct ctl_effect *effect);

/* An error reply, for the socket's own refusals ("too many clients", "request too long"). */
void ctl_protocol_error(struct buf *out, const char *fmt, ...) _printf_(2, 3);
