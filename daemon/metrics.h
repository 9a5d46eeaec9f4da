/* SPDX-License-Identifier: MIT */
#pragma once

/* metrics: the Prometheus text exposition format (version 0.0.4) of every tunnel, from
 * their status snapshots. */

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#include "tunnel.h"

int metrics_render(struct tunnel *const *tunnels, size_t n, char **ret);

/* The same text a part at a time (the control socket streams it): each call appends
 * samples to out from cur on until out grew by budget bytes (at least one window of
 * tunnels) or everything is written, then returns true. Each sample is read as its part is
 * made. tunnels may be another set between calls (a reload): the caller keeps cur->tunnel
 * at the tunnel it was at. Zero a cursor to begin. */
struct metrics_cursor {
        size_t family;                  /* the family being written */
        size_t tunnel;                  /* the next tunnel of it */
        bool begun, in_family;          /* tunneld_tunnels and the family's header written */
};
bool metrics_render_part(struct metrics_cursor *cur, struct tunnel *const *tunnels, size_t n, struct buf *out,
                         size_t budget);

/* Write text to path atomically for node_exporter's textfile collector: through its
 * directory's fd (opened once), a new file under a name nobody can guess, then renamed
 * over path (safe_dir.h): no symlink or FIFO planted in a shared directory such as /tmp
 * redirects or blocks it. */
int metrics_write_file(const char *path, const char *text);
