/* SPDX-License-Identifier: MIT */
#include "notify.h"

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "log.h"

static ev_timer watchdog_timer;

void notify_ready(const char *status)
{
        if (status)
                (void)sd_notifyf(0, "READY=1\nSTATUS=%s", status);
        else
                (void)sd_notify(0, "READY=1");
}

void notify_status(const char *status)
{
        (void)sd_notifyf(0, "STATUS=%s", status);
}

void notify_reloading(void)
{
        struct timespec ts;
        uint64_t usec;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        (void)sd_notifyf(0, "RELOADING=1\nSTATUS=Reloading configuration…\nMONOTONIC_USEC=%llu",
                         (unsigned long long)usec);
}

void notify_stopping(const char *status)
{
        (void)sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status ? status : "Stopping…");
}

static void on_watchdog(struct ev_loop *loop, ev_timer *w, int revents)
{
        (void)loop;
        (void)w;
        (void)revents;
        (void)sd_notify(0, "WATCHDOG=1");
}

unsigned long long notify_watchdog_start(struct ev_loop *loop)
{
        uint64_t usec = 0;
        int r;

        r = sd_watchdog_enabled(0, &usec);
        if (r < 0)
                log_warning_errno(r, "Ignoring malformed WATCHDOG_USEC: %m");
        if (r <= 0 || usec == 0)
                return 0;
        ev_timer_init(&watchdog_timer, on_watchdog, 0., (double)usec / 2e6);
        ev_timer_again(loop, &watchdog_timer);
        (void)sd_notify(0, "WATCHDOG=1");
        return (unsigned long long)usec;
}

void notify_watchdog_stop(struct ev_loop *loop)
{
        ev_timer_stop(loop, &watchdog_timer);
}
