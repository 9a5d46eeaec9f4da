/* SPDX-License-Identifier: MIT */
#include "availability.h"

void availability_init(struct availability *a, double now)
{
        *a = (struct availability){
                .cls = AVAIL_OFF,
                .mark = now,
                .outage_since = -1,
                .last = -1,
        };
}

static void end_outage(struct availability *a, double now)
{
        double took = now - a->outage_since;

        if (took > a->longest)
                a->longest = took;
        a->last = took;
        a->last_ended = now;
        a->outage_since = -1;
}

void availability_note(struct availability *a, enum avail_class cls, double now)
{
        double elapsed = now > a->mark ? now - a->mark : 0;

        if (a->cls == AVAIL_UP)
                a->up += elapsed;
        else if (a->cls == AVAIL_DOWN)
                a->down += elapsed;
        a->mark = now;
        if (a->cls == AVAIL_UP && cls == AVAIL_DOWN) {
                a->outages++;
                a->outage_since = now;
        } else if (cls != AVAIL_DOWN && a->outage_since >= 0)
                end_outage(a, now);
        a->cls = cls;
}

void availability_get(const struct availability *a, double now, struct availability_info *ret)
{
        double elapsed = now > a->mark ? now - a->mark : 0;
        double up = a->up + (a->cls == AVAIL_UP ? elapsed : 0);
        double down = a->down + (a->cls == AVAIL_DOWN ? elapsed : 0);
        double current = a->outage_since >= 0 ? now - a->outage_since : -1;

        *ret = (struct availability_info){
                .up_seconds = up,
                .down_seconds = down,
                .ratio = up + down > 0 ? up / (up + down) : -1,
                .outages = a->outages,
                .current_outage = current,
                .longest_outage = current > a->longest ? current : a->longest,
                .last_outage = a->last,
                .last_outage_ago = a->last >= 0 ? now - a->last_ended : -1,
        };
}
