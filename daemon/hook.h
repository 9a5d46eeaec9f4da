/* SPDX-License-Identifier: MIT */
#pragma once

/* hook: runs a tunnel's on_state_change program, asynchronously, one at a time.
 *
 * The program gets TUNNEL_NAME, TUNNEL_STATE, TUNNEL_PREVIOUS_STATE, TUNNEL_FAILURE and
 * TUNNEL_RESTARTS in its environment; its output is logged under the tunnel's name; it
 * is killed (its whole process group) at the time limit. An event that arrives while the
 * program runs waits, and only the newest waiting one runs next. */

#include <ev.h>

struct hook;

struct hook_event {
        const char *state;              /* "up", "failed", "flapping" */
        const char *previous;
        const char *failure;            /* "" when none */
        unsigned long restarts;
};

int hook_new(struct ev_loop *loop, const char *tunnel, struct hook **ret);
/* Kills a running program. NULL-safe. */
struct hook *hook_free(struct hook *h);

void hook_fire(struct hook *h, const char *program, double timeout, const struct hook_event *ev);
