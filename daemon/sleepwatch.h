/* SPDX-License-Identifier: MIT */
#pragma once

/* sleepwatch: logind's PrepareForSleep(bool) on the system bus (sd-bus, on the libev
 * loop: the bus's fd as an ev_io, its timeout as an ev_timer, both re-armed after every
 * turn, so an idle bus costs no wakeup). The callback hears true before the machine
 * sleeps and false once it has resumed. Without a system bus or logind it says so once
 * and the daemon goes on without it. */

#include <ev.h>
#include <stdbool.h>

struct sleepwatch;

typedef void (*sleepwatch_cb_t)(bool sleeping, void *userdata);

#define SLEEPWATCH_TURNS 64     /* bus messages handled per wakeup; the rest on the next turn */

/* 0 and *ret, or -errno (logged) when there is no system bus: go on without it. cb may
 * not free w. */
int sleepwatch_new(struct ev_loop *loop, sleepwatch_cb_t cb, void *userdata, struct sleepwatch **ret);
struct sleepwatch *sleepwatch_free(struct sleepwatch *w);
