/* SPDX-License-Identifier: MIT */
/* test-start-queue: start admission (start_queue.h) through the real supervisor, in-process
 * on the real loop, with fake-ssh children: max_parallel_starts = 1, connections let through
 * in the order they queued (one whose start just failed and comes back from backoff goes
 * behind those that waited; so does one that finds the slot free while others are queued),
 * a slot given back at "Authenticated to", a slow start holding it for connect_timeout at
 * most. */
#include <string.h>

#include "supervisor_internal.h"
#include "test-engine.h"
#include "test.h"

#define WAIT 3.0                /* the most a step may take on a loaded machine; a pass takes ms */

/* Every tunnel state event, in order. */
struct seen_event {
        char name[16];
        enum tunnel_state s;
        double at;
};
static struct seen_event seen[256];
static size_t n_seen;
static size_t most_connecting;  /* the most connections holding a start slot at once */
static bool stopped;
static struct supervisor *sup;

static void on_event(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata)
{
        (void)old;
        (void)userdata;
        if (sup->starts.connecting > most_connecting)
                most_connecting = sup->starts.connecting;
        if (ev != TUNNEL_EVENT_STATE || n_seen == ELEMENTSOF(seen))
                return;
        snprintf(seen[n_seen].name, sizeof(seen[n_seen].name), "%s", tunnel_get_name(t));
        seen[n_seen].s = tunnel_get_state(t);
        seen[n_seen++].at = engine_now();
}

static void on_stopped(void *userdata)
{
        (void)userdata;
        stopped = true;
}

/* A supervisor of these tunnels ("{ … }, …") with these globals, its events recorded
 * from the first (the tunnels come with a configuration applied after the listener). */
static bool start(const char *globals, const char *tunnels)
{
        struct config *empty = engine_config("%s\ntunnels = ( );", globals);
        struct config *cfg = engine_config("%s\ntunnels = ( %s );", globals, tunnels);
        struct supervisor_listener l = { .event = on_event, .stopped = on_stopped };

        n_seen = 0;
        most_connecting = 0;
        stopped = false;
        sup = NULL;
        test_assert(empty && cfg);
        if (!empty || !cfg || supervisor_new(engine_loop(), empty, engine_runtime_dir(), &sup) < 0) {
                config_free(cfg);
                test_assert(sup);
                return false;
        }
        test_assert(supervisor_add_listener(sup, &l) == 0);
        ev_now_update(engine_loop());   /* the slot and deadline timers count from now */
        test_assert(supervisor_apply(sup, cfg) == 0);
        return true;
}

static bool is_stopped(void *p)
{
        (void)p;
        return stopped;
}

static void finish(void)
{
        if (!sup)
                return;
        supervisor_shutdown(sup);
        test_assert(engine_run_until(is_stopped, NULL, WAIT));
        sup = supervisor_free(sup);
}

struct until_state {
        const char *name;
        enum tunnel_state s;
};
static bool in_state(void *p)
{
        struct until_state *u = p;
        struct tunnel *t = supervisor_find(sup, u->name);

        return t && tunnel_get_state(t) == u->s;
}
static bool wait_state(const char *name, enum tunnel_state s, double timeout)
{
        return engine_run_until(in_state, &(struct until_state){ name, s }, timeout);
}

static enum conn_state conn_state_of(const char *name)
{
        struct tunnel *t = supervisor_find(sup, name);

        return t && tunnel_get_conn(t) ? conn_get_state(tunnel_get_conn(t)) : _CONN_STATE_MAX;
}

/* The index of the k-th (0: first) event of name entering s, or -1. */
static ssize_t event_of(const char *name, enum tunnel_state s, unsigned k)
{
        for (size_t i = 0; i < n_seen; i++)
                if (seen[i].s == s && strcmp(seen[i].name, name) == 0 && k-- == 0)
                        return (ssize_t)i;
        return -1;
}

/* The names that went STARTING, in order, joined by spaces. */
static const char *start_order(void)
{
        static char buf[256];
        size_t n = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < n_seen && n < sizeof(buf) - 20; i++)
                if (seen[i].s == TUNNEL_STARTING)
                        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? " " : "", seen[i].name);
        return buf;
}

static double at_of(ssize_t i)
{
        return i >= 0 ? seen[i].at : -1;
}

#define FORWARD(port) "local_forwards = ( \"127.0.0.1:" #port ":127.0.0.1:1\" );"

/* A, B, C queue in that order for one slot; A's start fails, and when its backoff ends B
 * holds the slot and C waits: A queues behind C. B, then C, then A get the slot. */
static void test_failed_start_requeues_behind_those_that_waited(void)
{
        ssize_t backoff, queued, c_start, a_again;

        fake_plan("qa", "255 0.05\n0 30 auth");
        fake_plan("qb", "0 30 auth wait=0.4");
        fake_plan("qc", "0 30 auth wait=0.1");
        if (!start("max_parallel_starts = 1; stop_timeout = 0.5;"
                   "defaults = { gatetime = 0; restart_delay = 0.1; restart_delay_max = 0.1; connect_timeout = 5; };",
                   "{ name = \"qa\"; host = \"qa\"; " FORWARD(15301) " },"
                   "{ name = \"qb\"; host = \"qb\"; " FORWARD(15302) " },"
                   "{ name = \"qc\"; host = \"qc\"; " FORWARD(15303) " }")) {
                finish();
                return;
        }
        test_assert(conn_state_of("qa") == CONN_STARTING);
        test_assert(conn_state_of("qb") == CONN_QUEUED && conn_state_of("qc") == CONN_QUEUED);
        test_assert(wait_state("qa", TUNNEL_UP, WAIT));
        test_assert(wait_state("qb", TUNNEL_UP, 0.1) && wait_state("qc", TUNNEL_UP, 0.1));
        test_assert_streq(start_order(), "qa qb qc qa");
        backoff = event_of("qa", TUNNEL_BACKOFF, 0);
        queued = event_of("qa", TUNNEL_QUEUED, 0);
        c_start = event_of("qc", TUNNEL_STARTING, 0);
        a_again = event_of("qa", TUNNEL_STARTING, 1);
        test_assert(backoff >= 0 && queued > backoff);          /* back from backoff: queued… */
        test_assert(queued < event_of("qb", TUNNEL_UP, 0));     /* …while B held the slot… */
        test_assert(c_start > queued && a_again > c_start);     /* …behind C */
        test_assert(at_of(a_again) - at_of(c_start) >= 0.08);   /* after C authenticated */
        test_assert(most_connecting == 1);
        test_assert(fake_count("qa", "start", 0, NULL) == 2);
        finish();
}

/* A connection that finds the slot free while others are queued goes behind them: C's
 * slot is given back (it is stopped) and A is started by hand at that very moment, B has
 * been waiting: B goes first. */
static void test_free_slot_goes_to_the_queue_first(void)
{
        ssize_t queued, b_start, a_start;
        struct tunnel *a, *c;

        fake_plan("qd", "255 0.05\n0 30 auth");
        fake_plan("qe", "0 30 auth wait=0.2");
        fake_plan("qf", "0 30 auth wait=10");
        if (!start("max_parallel_starts = 1; stop_timeout = 0.5;"
                   "defaults = { gatetime = 0; restart_delay = 5; restart_delay_max = 5; connect_timeout = 5; };",
                   "{ name = \"qd\"; host = \"qd\"; " FORWARD(15311) " },"
                   "{ name = \"qf\"; host = \"qf\"; " FORWARD(15313) " },"
                   "{ name = \"qe\"; host = \"qe\"; " FORWARD(15312) " }")) {
                finish();
                return;
        }
        /* qd failed and waits 2.5-5 s; qf holds the slot; qe waits for it */
        test_assert(wait_state("qd", TUNNEL_BACKOFF, WAIT));
        test_assert(wait_state("qf", TUNNEL_STARTING, WAIT));
        test_assert(conn_state_of("qe") == CONN_QUEUED);
        a = supervisor_find(sup, "qd");
        c = supervisor_find(sup, "qf");
        if (!a || !c) {
                finish();
                return;
        }
        tunnel_stop(c, "stop requested");       /* its slot is free… */
        tunnel_start(a);                        /* …and qd is started by hand */
        test_assert(conn_state_of("qd") == CONN_QUEUED);
        test_assert(conn_get_reason(tunnel_get_conn(a)) && strstr(conn_get_reason(tunnel_get_conn(a)), "queued first"));
        test_assert(wait_state("qd", TUNNEL_UP, WAIT));
        test_assert(tunnel_get_state(supervisor_find(sup, "qe")) == TUNNEL_UP);
        queued = event_of("qd", TUNNEL_QUEUED, 0);
        b_start = event_of("qe", TUNNEL_STARTING, 0);
        a_start = event_of("qd", TUNNEL_STARTING, 1);
        test_assert(queued >= 0 && b_start > queued && a_start > b_start);
        test_assert(at_of(a_start) - at_of(b_start) >= 0.18);   /* once qe authenticated */
        test_assert(most_connecting == 1);
        finish();
}

/* A connection whose credentials logged in before goes before one whose credentials were
 * never tried: qp comes up (proven), qx holds the only slot for 1 s, qn queues (new
 * credentials), then qp's ssh ends and its restart queues behind qn; when qx
 * authenticates, qp gets the slot first (after a blip, the good tunnels before keys never
 * tried), then qn. */
static void test_proven_credentials_go_first(void)
{
        fake_plan("qp", "0 0.3 auth\n0 30 auth");
        fake_plan("qx", "0 30 auth wait=1");
        fake_plan("qn", "0 30 auth");
        if (!start("max_parallel_starts = 1; stop_timeout = 0.5;"
                   "defaults = { gatetime = 0; restart_delay = 0.1; restart_delay_max = 0.1; connect_timeout = 5; };",
                   "{ name = \"qp\"; host = \"qp\"; " FORWARD(15321) " },"
                   "{ name = \"qx\"; host = \"qx\"; " FORWARD(15322) " },"
                   "{ name = \"qn\"; host = \"qn\"; " FORWARD(15323) " }")) {
                finish();
                return;
        }
        test_assert(wait_state("qx", TUNNEL_UP, WAIT + 1));
        test_assert(wait_state("qp", TUNNEL_UP, WAIT) && wait_state("qn", TUNNEL_UP, WAIT));
        test_assert_streq(start_order(), "qp qx qp qn");
        test_assert(event_of("qp", TUNNEL_QUEUED, 0) >= 0);   /* it did wait behind qn */
        test_assert(event_of("qp", TUNNEL_QUEUED, 0) > event_of("qn", TUNNEL_QUEUED, 0));
        test_assert(most_connecting == 1);
        finish();
}

/* "Authenticated to" gives the slot back: the next connection starts then, not when the
 * first is up (its control socket comes 0.5 s later) nor at connect_timeout. */
static void test_authenticated_frees_the_slot(void)
{
        ssize_t g_start, g_up, h_start;

        fake_plan("qg", "0 30 auth wait=0.2 sockwait=0.5");
        fake_plan("qh", "0 30 auth");
        if (!start("max_parallel_starts = 1; stop_timeout = 0.5;"
                   "defaults = { gatetime = 0; connect_timeout = 5; };",
                   "{ name = \"qg\"; host = \"qg\"; " FORWARD(15321) " },"
                   "{ name = \"qh\"; host = \"qh\"; " FORWARD(15322) " }")) {
                finish();
                return;
        }
        test_assert(wait_state("qg", TUNNEL_UP, WAIT) && wait_state("qh", TUNNEL_UP, WAIT));
        g_start = event_of("qg", TUNNEL_STARTING, 0);
        g_up = event_of("qg", TUNNEL_UP, 0);
        h_start = event_of("qh", TUNNEL_STARTING, 0);
        test_assert(h_start > g_start && h_start < g_up);
        test_assert(at_of(h_start) - at_of(g_start) >= 0.18 && at_of(h_start) - at_of(g_start) < 0.6);
        test_assert(most_connecting == 1);
        finish();
}

/* A start that never authenticates holds its slot for connect_timeout (one hop), then
 * gives it up while it goes on until its start deadline. */
static void test_slow_start_holds_the_slot_for_connect_timeout(void)
{
        ssize_t i_start, j_start;
        double held;

        fake_plan("qi", "0 30");
        fake_plan("qj", "0 30 auth");
        if (!start("max_parallel_starts = 1; stop_timeout = 0.5;"
                   "defaults = { gatetime = 0; connect_timeout = 1; start_timeout = 20; };",
                   "{ name = \"qi\"; host = \"qi\"; " FORWARD(15331) " },"
                   "{ name = \"qj\"; host = \"qj\"; " FORWARD(15332) " }")) {
                finish();
                return;
        }
        test_assert(wait_state("qj", TUNNEL_UP, WAIT));
        i_start = event_of("qi", TUNNEL_STARTING, 0);
        j_start = event_of("qj", TUNNEL_STARTING, 0);
        held = at_of(j_start) - at_of(i_start);
        test_assert(i_start >= 0 && j_start > i_start);
        test_assert(held >= 0.95 && held < 1.6);
        test_assert(conn_state_of("qi") == CONN_STARTING);      /* not ended: its deadline is 20 s */
        test_assert(fake_count("qi", "term", 0, NULL) == 0);
        finish();
}

int main(void)
{
        static const struct test_case cases[] = {
                TEST(test_failed_start_requeues_behind_those_that_waited),
                TEST(test_free_slot_goes_to_the_queue_first),
                TEST(test_proven_credentials_go_first),
                TEST(test_authenticated_frees_the_slot),
                TEST(test_slow_start_holds_the_slot_for_connect_timeout),
        };
        int r;

        engine_init();
        r = test_run(cases, ELEMENTSOF(cases));
        engine_finish();
        return r;
}
