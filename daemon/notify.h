/* SPDX-License-Identifier: MIT */
#pragma once

/* notify: the service manager's side channel (sd_notify). Every call is a no-op without
 * NOTIFY_SOCKET. */

#include <ev.h>

void notify_ready(const char *status);
void notify_status(const char *status);
void notify_reloading(void);
void notify_stopping(const char *status);

/* If the manager asked for a watchdog (WATCHDOG_USEC for our pid), ping it from the loop at
 * half the interval, so a stuck loop is caught. Returns the interval in µs, or 0. */
unsigned long long notify_watchdog_start(struct ev_loop *loop);
void notify_watchdog_stop(struct ev_loop *loop);
