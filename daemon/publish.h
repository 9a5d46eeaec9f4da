/* SPDX-License-Identifier: MIT */
#pragma once

/* publish: what tunneld tells others about its tunnels without being asked: systemd's
 * READY=1 (when it is time) and STATUS= line, and the metrics file (retried after a
 * failed write). Changes are published at once after a quiet spell, then at most every
 * PUBLISH_DELAY; nothing is armed while nothing happens. */

#include <ev.h>
#include <stdbool.h>

struct supervisor;
struct publisher;

#define PUBLISH_DELAY 0.2               /* seconds: a burst of changes is published once */

/* Follows s (a listener of its events, loop iterations, reloads and shutdown) from now on.
 * Free it after s stops calling (after the loop). */
int publisher_new(struct ev_loop *loop, struct supervisor *s, struct publisher **ret);
struct publisher *publisher_free(struct publisher *p);

/* One short line for systemd's STATUS= (and tunnelctl's "status" field). */
int publish_status_text(const struct supervisor *s, char **ret);
