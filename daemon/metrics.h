/* SPDX-License-Identifier: MIT */
#pragma once

/* metrics: the Prometheus text exposition format (version 0.0.4) of every tunnel, from
 * their status snapshots. */

#include <stddef.h>

#include "tunnel.h"

int metrics_render(struct tunnel *const *tunnels, size_t n, char **ret);

/* Write text to path atomically (a temporary file in the same directory, then rename), for
 * node_exporter's textfile collector. */
int metrics_write_file(const char *path, const char *text);
