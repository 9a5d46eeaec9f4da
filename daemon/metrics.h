/* SPDX-License-Identifier: MIT */
#pragma once

/* metrics: the Prometheus text exposition format (version 0.0.4) of every tunnel. */

#include "supervisor.h"

int metrics_render(const struct supervisor *s, char **ret);

/* Write text to path atomically (a temporary file in the same directory, then rename), for
 * node_exporter's textfile collector. */
int metrics_write_file(const char *path, const char *text);
