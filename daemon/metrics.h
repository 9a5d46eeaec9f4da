/* SPDX-License-Identifier: MIT */
#pragma once

/* metrics: the Prometheus text exposition format (version 0.0.4) of every tunnel, from
 * their status snapshots. */

#include <stddef.h>

#include "tunnel.h"

int metrics_render(struct tunnel *const *tunnels, size_t n, char **ret);

/* Write text to path atomically for node_exporter's textfile collector: through its
 * directory's fd (opened once), a new file under a name nobody can guess, then renamed
 * over path (safe_dir.h): no symlink or FIFO planted in a shared directory such as /tmp
 * redirects or blocks it. */
int metrics_write_file(const char *path, const char *text);
