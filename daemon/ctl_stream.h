/* SPDX-License-Identifier: MIT */
#pragma once

/* ctl_stream: a reply of any size, made a part at a time as the client's socket takes it
 * (ctl_conn.c asks for the next part when what it holds runs low), so that no reply costs
 * more than a part of memory or of a wakeup. The reply is still one JSON object on one
 * line: the status of many tunnels ({"ok":true,…,"tunnels":[…]}) or the metrics
 * ({"ok":true,"metrics":"…"}). Each tunnel is read when its part is made; a reload between
 * parts is followed by name (a tunnel it removed is left out, one it added before the
 * cursor is not seen). */

#include <stdbool.h>
#include <stddef.h>

#include "supervisor.h"
#include "util.h"

#define CTL_STREAM_PART (32u << 10)     /* bytes a part grows the reply by, about */

struct ctl_stream;

/* The status of tunnels: every one (names NULL), or the named ones (each last seen at
 * index hints[i] of the supervisor's set); with_daemon adds tunneld's own fields (version,
 * pid, uptime, config, status) as status and events have them. Takes names and hints. */
int ctl_stream_tunnels(struct supervisor *sup, bool with_daemon, char **names, size_t *hints,
                       struct ctl_stream **ret);
/* The metrics of every tunnel (metrics.h). */
int ctl_stream_metrics(struct supervisor *sup, struct ctl_stream **ret);

/* Append the next part to out: 0 if more is to come, 1 once the reply is whole (its
 * newline written). */
int ctl_stream_next(struct ctl_stream *s, struct buf *out);
struct ctl_stream *ctl_stream_free(struct ctl_stream *s);
