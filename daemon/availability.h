/* SPDX-License-Identifier: MIT */
#pragma once

/* availability: how long a tunnel has been up and down since it was configured, and its
 * outages. Pure bookkeeping: the caller says what the tunnel is at each change and gives
 * the clock (CLOCK_MONOTONIC seconds), so it is tested without a clock.
 *
 * Up is the state UP. Down is any time the tunnel is wanted but not up: starting, queued,
 * in backoff, failed, degraded, restarting. Off is time it is not wanted (disabled,
 * stopped by an operator or by its restart policy): neither up nor down. An outage begins
 * when an up tunnel goes down and ends when it is up again (or is turned off); the wait
 * for a tunnel's first up is down time, not an outage. */

#include <stdbool.h>

enum avail_class {
        AVAIL_OFF,
        AVAIL_DOWN,
        AVAIL_UP,
};

struct availability {
        enum avail_class cls;           /* since mark */
        double mark;
        double up, down;                /* seconds, up to mark */
        unsigned long outages;          /* begun, including a current one */
        double outage_since;            /* < 0: none going on */
        double longest;                 /* the longest finished outage */
        double last;                    /* the last finished outage; < 0: none yet */
        double last_ended;              /* when it ended */
};

struct availability_info {
        double up_seconds, down_seconds;
        double ratio;                   /* up / (up + down); < 0: no time counted yet */
        unsigned long outages;
        double current_outage;          /* seconds of the outage going on; < 0: none */
        double longest_outage;          /* the longest, the current one included; 0: none */
        double last_outage;             /* the last finished one; < 0: none */
        double last_outage_ago;         /* since it ended */
};

void availability_init(struct availability *a, double now);
/* The tunnel is cls from now on. */
void availability_note(struct availability *a, enum avail_class cls, double now);
void availability_get(const struct availability *a, double now, struct availability_info *ret);
