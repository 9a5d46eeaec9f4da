/* SPDX-License-Identifier: MIT */
#pragma once

/* ctl_protocol: the control socket's requests and replies, one JSON object per line each
 * way. The commands are ctl_commands.h's; this is what tunneld does for each. The socket and
 * its clients are ctl.c's.
 *
 *   {"cmd":"status"}   {"cmd":"status","tunnels":["db"]}   {"cmd":"stop","all":true}
 *
 * Every reply has "ok" (true/false); errors carry "error" (and "errors" for configuration
 * problems). Anyone who may connect may look; commands that change state (changes in
 * ctl_commands.h) need root, tunneld's own user, or control_group. events replies like
 * status, then the connection stays subscribed: one line per state change of the named
 * tunnels (all by default), until the client closes it. A client tunneld
 * drops gets a last line {"ok":false,"dropped":REASON,"error":TEXT} (ctl_protocol_dropped). */

#include <stdbool.h>
#include <sys/types.h>

#include "ctl_check.h"
#include "ctl_commands.h"
#include "ctl_stream.h"
#include "supervisor.h"
#include "util.h"

struct ctl_peer {
        uid_t uid;
        bool may_write;                 /* root, tunneld's uid, or control_group */
};

/* What a request asks of the connection besides the reply written at once (if any). */
struct ctl_effect {
        bool subscribe;                 /* events: follow state changes from now on */
        char **names;                   /* …of these tunnels (NULL: all); the caller frees it */
        unsigned long wait_reload;      /* reload: the reply comes when this reload is done */
        bool check;                     /* check: the reply comes from a check job (ctl_check.h) */
        struct ctl_stream *stream;      /* the reply, made a part at a time; the caller frees it */
};

/* The reply to a check, once its job is done. */
void ctl_protocol_check_reply(const struct ctl_check_result *res, struct buf *out);

/* The reply to a reload request, once supervisor_reload_result() says it is done. */
void ctl_protocol_reload_reply(struct supervisor *sup, struct buf *out);

/* Whether tunneld answers this command of ctl_commands.h (every request does). */
bool ctl_protocol_serves(const struct ctl_command *c);

/* Answer one request line into out (a JSON object and '\n'). */
void ctl_protocol_handle(struct supervisor *sup, const char *line, size_t len, const struct ctl_peer *peer,
                         struct buf *out, struct ctl_effect *effect);

/* An error reply, for the socket's own refusals ("too many clients", "request too long"). */
void ctl_protocol_error(struct buf *out, const char *fmt, ...) _printf_(2, 3);
/* The last line to a client tunneld drops: {"ok":false,"dropped":reason,"error":text}
 * (reason: stalled, backlog, idle, evicted). It reads as an error reply too. */
void ctl_protocol_dropped(struct buf *out, const char *reason, const char *text);
