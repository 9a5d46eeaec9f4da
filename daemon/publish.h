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

int publisher_new(struct ev_loop *loop, struct supervisor *s, struct publisher **ret);
struct publisher *publisher_free(struct publisher *p);

/* Arm ready_timeout (at start: READY=1 anyway then). */
void publisher_start(struct publisher *p);
/* Something changed: STATUS and the metrics file are due. */
void publisher_news(struct publisher *p);
/* Once per loop iteration: READY if it is time, else what is due. */
void publisher_flush(struct publisher *p);
/* A reload: error NULL if applied (its text is shown in STATUS until one is); READY=1
 * again if it was sent before (systemd waits for it after RELOADING=1). */
void publisher_reloaded(struct publisher *p, const char *error);
/* Shutdown's end: the metrics file must not go on claiming tunnels are up. */
void publisher_final(struct publisher *p);

/* One short line for systemd's STATUS= (and tunnelctl's "status" field). */
int publish_status_text(const struct supervisor *s, const struct publisher *p, char **ret);
