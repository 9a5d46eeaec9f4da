/* SPDX-License-Identifier: MIT */
#pragma once

/* probe: an active check through a tunnel's forward, non-blocking on the loop.
 *
 * Every interval: connect to the address; if send is set, write it; if expect is set, the
 * reply must begin with it. Without expect, the connection must stay open (or deliver
 * data) for the timeout: ssh closes a forwarded connection at once when the far end
 * refuses it, which is what a dead forward looks like from here. */

#include <ev.h>
#include <stdbool.h>

#include "config.h"

struct probe;

/* ok: the check passed; why: what failed, for the log. */
typedef void (*probe_result_t)(bool ok, const char *why, void *userdata);

int probe_new(struct ev_loop *loop, const struct probe_spec *spec, probe_result_t done, void *userdata,
              struct probe **ret);
struct probe *probe_free(struct probe *p);

/* Start checking every interval (the first check one interval from now); stop aborts any
 * check in flight. */
void probe_start(struct probe *p);
void probe_stop(struct probe *p);
