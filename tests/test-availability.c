/* SPDX-License-Identifier: MIT */
/* availability.h: scripted lives of a tunnel, each step (time, what it became) and the
 * numbers after it. No clock. */
#include <math.h>

#include "availability.h"
#include "test.h"

#define U AVAIL_UP
#define D AVAIL_DOWN
#define O AVAIL_OFF

struct step {
        double at;
        enum avail_class cls;
};

struct expect {
        double now, up, down;
        unsigned long outages;
        double current, longest, last;
};

static bool near(double a, double b)
{
        return fabs(a - b) < 1e-9;
}

static void check(const char *why, const struct step *steps, size_t n, const struct expect *e)
{
        struct availability a;
        struct availability_info i;

        availability_init(&a, 0);
        for (size_t k = 0; k < n; k++)
                availability_note(&a, steps[k].cls, steps[k].at);
        availability_get(&a, e->now, &i);
        if (!near(i.up_seconds, e->up) || !near(i.down_seconds, e->down) || i.outages != e->outages ||
            !near(i.current_outage, e->current) || !near(i.longest_outage, e->longest) ||
            !near(i.last_outage, e->last)) {
                printf("#   %s: up %g down %g outages %lu current %g longest %g last %g\n", why, i.up_seconds,
                       i.down_seconds, i.outages, i.current_outage, i.longest_outage, i.last_outage);
                test_failed_checks++;
        }
        /* up + down + off is the time since it was configured: nothing counted twice */
        test_assert(i.up_seconds + i.down_seconds <= e->now + 1e-9);
        if (i.up_seconds + i.down_seconds > 0)
                test_assert(near(i.ratio, i.up_seconds / (i.up_seconds + i.down_seconds)));
        else
                test_assert(i.ratio < 0);
}

static void test_lives(void)
{
        static const struct {
                const char *why;
                struct step steps[8];
                size_t n;
                struct expect e;
        } rows[] = {
                { "configured disabled: nothing counted", {}, 0, { 100, 0, 0, 0, -1, 0, -1 } },
                { "the first connect is down time, not an outage", { { 0, D }, { 2, U } }, 2,
                  { 10, 8, 2, 0, -1, 0, -1 } },
                { "never up: all down, still no outage (up was never lost)", { { 0, D } }, 1,
                  { 50, 0, 50, 0, -1, 0, -1 } },
                { "an outage going on counts in down, current and longest", { { 0, D }, { 1, U }, { 11, D } }, 3,
                  { 15, 10, 5, 1, 4, 4, -1 } },
                { "two outages: the longest and the last", { { 0, D }, { 1, U }, { 11, D }, { 14, U }, { 20, D },
                                                             { 21, U } }, 6, { 30, 25, 5, 2, -1, 3, 1 } },
                { "an operator's stop ends the outage and counts nothing", { { 0, D }, { 1, U }, { 5, D }, { 7, O } },
                  4, { 100, 4, 3, 1, -1, 2, 2 } },
                { "stopped while up is no outage; started again, the connect is down", { { 0, D }, { 1, U }, { 5, O },
                                                                                          { 50, D }, { 51, U } },
                  5, { 60, 13, 2, 0, -1, 0, -1 } },
                { "degraded, restarting, backoff: one outage until up", { { 0, D }, { 1, U }, { 2, D }, { 3, D },
                                                                           { 4, D }, { 9, U } }, 6,
                  { 10, 2, 8, 1, -1, 7, 7 } },
        };

        for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++)
                check(rows[r].why, rows[r].steps, rows[r].n, &rows[r].e);
}

static void test_clock_going_nowhere(void)
{
        struct availability a;
        struct availability_info i;

        /* a note at the same instant, or an earlier one (a caller's stale now), adds nothing */
        availability_init(&a, 10);
        availability_note(&a, AVAIL_UP, 10);
        availability_note(&a, AVAIL_UP, 9);
        availability_get(&a, 9, &i);
        test_assert(i.up_seconds == 0 && i.down_seconds == 0);
}

int main(void)
{
        static const struct test_case cases[] = {
                TEST(test_lives),
                TEST(test_clock_going_nowhere),
        };
        return test_run(cases, sizeof(cases) / sizeof(cases[0]));
}
