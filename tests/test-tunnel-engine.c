/* SPDX-License-Identifier: MIT */
/* test-tunnel-engine: a tunnel's state (tunnel.h) as it follows from its connection's and
 * its forwards', in-process on the real loop, against fake-ssh as the scripted mux master:
 * up only when ssh answered "open" for every forward, degraded while one failed, a forward
 * added while up, a forward lost during a make-before-break, stopping until the ssh is
 * reaped, two tunnels on one shared connection. */
#include <signal.h>

#include "conn_internal.h"
#include "test-engine.h"
#include "test.h"
#include "tunnel.h"

#define WAIT 3.0                /* the most a step may take on a loaded machine; a pass takes ms */

/* Every tunnel event, in order. */
struct seen_event {
        const struct tunnel *t;
        enum tunnel_event ev;
        enum tunnel_state s;
        double at;
        bool conn_child;        /* its connection had an ssh then */
};
static struct seen_event seen[256];
static size_t n_seen;
static unsigned up_too_early;   /* UP while a forward was not open (nor served by an old ssh) */
static double conn_up_at;       /* the last time a connection went UP */

static void on_tunnel_event(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata)
{
        struct conn *c = tunnel_get_conn(t);
        struct tunnel_status st;

        (void)old;
        (void)userdata;
        if (n_seen < ELEMENTSOF(seen))
                seen[n_seen++] = (struct seen_event){ t, ev, tunnel_get_state(t), engine_now(), c && conn_has_child(c) };
        if (ev != TUNNEL_EVENT_STATE || tunnel_get_state(t) != TUNNEL_UP)
                return;
        tunnel_get_status(t, now_mono(), &st);
        for (size_t i = 0; i < st.n_forwards; i++)
                if (tunnel_forward_status(&st, i)->state != FORWARD_OPEN && !(c && conn_is_handing_over(c)))
                        up_too_early++;
}

static void on_conn_event(struct conn *c, int event, int old, void *userdata)
{
        (void)userdata;
        if (event == CONN_EVENT_STATE && conn_get_state(c) == CONN_UP && old != CONN_UP)
                conn_up_at = engine_now();
}

static const struct tunnel_context tunnel_ctx = {
        .observer = on_tunnel_event,
};
static struct tunnel_context tctx;
static struct conn_context cctx;

/* The state events of t from index from on: their states, at most max; how many. */
static size_t states_of(const struct tunnel *t, size_t from, enum tunnel_state *ret, double *ret_at, size_t max)
{
        size_t k = 0;

        for (size_t i = from; i < n_seen && k < max; i++)
                if (seen[i].t == t && seen[i].ev == TUNNEL_EVENT_STATE) {
                        ret[k] = seen[i].s;
                        if (ret_at)
                                ret_at[k] = seen[i].at;
                        k++;
                }
        return k;
}

struct until_state {
        struct tunnel *t;
        enum tunnel_state s;
};
static bool in_state(void *p)
{
        struct until_state *u = p;

        return tunnel_get_state(u->t) == u->s;
}
static bool wait_state(struct tunnel *t, enum tunnel_state s, double timeout)
{
        return engine_run_until(in_state, &(struct until_state){ t, s }, timeout);
}

static bool no_child(void *p)
{
        return !conn_has_child(p);
}

static const struct forward_status *forward_of(const struct tunnel *t, size_t i)
{
        static struct tunnel_status st;

        tunnel_get_status(t, now_mono(), &st);
        return i < st.n_forwards ? tunnel_forward_status(&st, i) : NULL;
}

/* A configuration of tunnels ("{ name = …; … }, …") with fake-ssh. */
static struct config *load(const char *tunnels)
{
        struct config *cfg = engine_config("tunnels = ( %s );", tunnels);

        test_assert(cfg);
        return cfg;
}

/* Tunnel i of cfg on connection c (made if NULL: its own, or shared), started. */
static struct tunnel *tunnel_up(const struct config *cfg, size_t i, struct conn **c, bool shared)
{
        struct tunnel *t = NULL;

        if (!*c) {
                char name[64];

                snprintf(name, sizeof(name), "%s%s", shared ? "~" : "", cfg->tunnels[i].name);
                test_assert(conn_new(&cctx, name, &cfg->tunnels[i], shared, NULL, c) == 0);
                if (!*c)
                        return NULL;
        }
        test_assert(tunnel_new(&tctx, &cfg->tunnels[i], NULL, &t) == 0);
        if (!t)
                return NULL;
        tunnel_set_conn(t, *c);
        tunnel_start(t);
        return t;
}

/* Stopped, freed, and no ssh left. */
static void teardown(struct tunnel **ts, size_t n, struct conn *c)
{
        for (size_t i = 0; i < n; i++)
                if (ts[i]) {
                        tunnel_stop(ts[i], "the test is over");
                        test_assert(wait_state(ts[i], TUNNEL_STOPPED, WAIT));
                }
        if (c)
                test_assert(engine_run_until(no_child, c, WAIT));
        for (size_t i = 0; i < n; i++)
                tunnel_free(ts[i]);
        conn_free(c);
}

/* Up when ssh answered "open" for every forward: the connection is up well before the
 * late one's reply, the tunnel only after it. */
static void test_up_only_when_every_forward_is_open(void)
{
        struct config *cfg = load("{ name = \"t-up\"; host = \"t-up\"; gatetime = 0;"
                                  "  local_forwards = ( \"127.0.0.1:15201:127.0.0.1:1\", \"127.0.0.1:15202:127.0.0.1:1\" ); }");
        enum tunnel_state st[16];
        struct tunnel *t = NULL;
        struct conn *c = NULL;
        double at[16];
        size_t n;

        fake_plan("t-up", "0 30 auth late=15202:0.4");
        if (!cfg)
                return;
        n_seen = 0;
        up_too_early = 0;
        conn_up_at = 0;
        t = tunnel_up(cfg, 0, &c, false);
        if (!t)
                goto done;
        test_assert(wait_state(t, TUNNEL_UP, WAIT));
        n = states_of(t, 0, st, at, ELEMENTSOF(st));
        test_assert(n == 2 && st[0] == TUNNEL_STARTING && st[1] == TUNNEL_UP);
        test_assert(conn_up_at > 0 && at[n - 1] - conn_up_at >= 0.35);
        test_assert(up_too_early == 0);
        test_assert(forward_of(t, 0)->state == FORWARD_OPEN && forward_of(t, 1)->state == FORWARD_OPEN);
done:
        teardown(&t, 1, c);
        config_free(cfg);
}

/* A forward that fails degrades the tunnel (the other keeps working, the run goes on);
 * its retries on the same ssh are no news: the tunnel stays degraded, its failure counted
 * once. */
static void test_degraded_while_a_forward_fails(void)
{
        struct config *cfg = load("{ name = \"t-deg\"; host = \"t-deg\"; gatetime = 0; restart_delay = 0.1; restart_delay_max = 0.2;"
                                  "  local_forwards = ( \"127.0.0.1:15211:127.0.0.1:1\", \"127.0.0.1:15212:127.0.0.1:1\" ); }");
        struct tunnel *t = NULL;
        struct conn *c = NULL;
        struct tunnel_status s;
        enum tunnel_state st[16];
        size_t n;
        pid_t pid;

        fake_plan("t-deg", "0 30 auth refuse=15212");
        if (!cfg)
                return;
        n_seen = 0;
        t = tunnel_up(cfg, 0, &c, false);
        if (!t)
                goto done;
        test_assert(wait_state(t, TUNNEL_DEGRADED, WAIT));
        pid = conn_get_pid(c);
        engine_run_for(0.6);                            /* a few retries */
        test_assert(fake_count("t-deg", "open", pid, "L 15212 fail") >= 2);
        test_assert(fake_count("t-deg", "open", pid, "L 15211 ok") == 1);
        n = states_of(t, 0, st, NULL, ELEMENTSOF(st));
        test_assert(n == 2 && st[0] == TUNNEL_STARTING && st[1] == TUNNEL_DEGRADED);
        tunnel_get_status(t, now_mono(), &s);
        test_assert(s.state == TUNNEL_DEGRADED);
        test_assert(s.pid == pid);
        test_assert(s.failures[FAILURE_LOCAL_FORWARD] == 1);
        test_assert(forward_of(t, 0)->state == FORWARD_OPEN);
        test_assert(fake_count("t-deg", "start", 0, NULL) == 1);
done:
        teardown(&t, 1, c);
        config_free(cfg);
}

/* A forward added (a reload's change) while the tunnel is up: asked for on the running
 * ssh; the tunnel stays up meanwhile, the kept forward is not touched. */
static void test_forward_added_while_up_stays_up(void)
{
        struct config *cfg = load("{ name = \"t-add\"; host = \"t-add\"; gatetime = 0;"
                                  "  local_forwards = ( \"127.0.0.1:15221:127.0.0.1:1\" ); }");
        struct config *cfg2 = load("{ name = \"t-add\"; host = \"t-add\"; gatetime = 0;"
                                   "  local_forwards = ( \"127.0.0.1:15221:127.0.0.1:1\", \"127.0.0.1:15222:127.0.0.1:1\" ); }");
        struct tunnel_change *ch = NULL;
        struct tunnel *t = NULL;
        struct conn *c = NULL;
        size_t before;
        pid_t pid;

        fake_plan("t-add", "0 30 auth late=15222:0.3");
        if (!cfg || !cfg2)
                goto done;
        n_seen = 0;
        t = tunnel_up(cfg, 0, &c, false);
        if (!t)
                goto done;
        test_assert(wait_state(t, TUNNEL_UP, WAIT));
        pid = conn_get_pid(c);
        before = n_seen;
        test_assert(tunnel_change_new(t, &cfg2->tunnels[0], &ch) == 0);
        if (!ch)
                goto done;
        tunnel_reconfigure(t, ch, c);
        test_assert(tunnel_get_state(t) == TUNNEL_UP);
        test_assert(forward_of(t, 1) && forward_of(t, 1)->state == FORWARD_PENDING);
        engine_run_for(0.15);
        test_assert(tunnel_get_state(t) == TUNNEL_UP);  /* its reply is late: still pending */
        test_assert(forward_of(t, 1)->state == FORWARD_PENDING);
        engine_run_for(0.4);
        test_assert(forward_of(t, 1)->state == FORWARD_OPEN);
        test_assert(n_seen == before);                  /* no event at all: up throughout */
        test_assert(conn_get_pid(c) == pid);
        test_assert(fake_count("t-add", "open", pid, "L 15221") == 1);
        test_assert(fake_count("t-add", "close", 0, NULL) == 0);
        test_assert(fake_count("t-add", "open", pid, "L 15222 ok") == 1);
done:
        teardown(&t, 1, c);
        config_free(cfg);
        config_free(cfg2);
}

static bool next_pid_known(void *p)
{
        return conn_get_next_pid(p) > 0;
}

/* A make-before-break restart: the tunnel is up throughout while the old ssh serves.
 * A forward the new ssh refuses degrades it (not a restart, not down); an old ssh killed
 * before the new one has the forwards takes them down: the tunnel says starting, then up
 * once the new one has them. */
static void test_forward_lost_during_handover(void)
{
        const char *spec = "gatetime = 0; restart_delay = 5; drain_timeout = 10;"
                           "  local_forwards = ( \"127.0.0.1:15231:127.0.0.1:1\", \"127.0.0.1:15232:127.0.0.1:1\" ); }";
        struct config *cfg = NULL;
        enum tunnel_state st[16];
        struct tunnel *t = NULL;
        struct conn *c = NULL;
        double at[16], killed_at;
        pid_t first, second;
        size_t before, n;
        char text[512];

        /* the new ssh refuses one */
        snprintf(text, sizeof(text), "{ name = \"t-hand\"; host = \"t-hand\"; %s", spec);
        fake_plan("t-hand", "0 30 auth\n0 30 auth refuse=15232");
        cfg = load(text);
        if (!cfg)
                return;
        n_seen = 0;
        up_too_early = 0;
        t = tunnel_up(cfg, 0, &c, false);
        if (!t)
                goto done;
        test_assert(wait_state(t, TUNNEL_UP, WAIT));
        first = conn_get_pid(c);
        before = n_seen;
        tunnel_restart(t, "restart requested");
        test_assert(tunnel_get_state(t) == TUNNEL_UP);  /* the old ssh serves meanwhile */
        test_assert(wait_state(t, TUNNEL_DEGRADED, WAIT));
        second = conn_get_pid(c);
        test_assert(second > 0 && second != first);
        n = states_of(t, before, st, NULL, ELEMENTSOF(st));
        test_assert(n == 1 && st[0] == TUNNEL_DEGRADED);
        test_assert(forward_of(t, 0)->state == FORWARD_OPEN);
        test_assert(forward_of(t, 1)->state == FORWARD_FAILED);
        test_assert(fake_count("t-hand", "open", second, "L 15232 fail") >= 1);
        test_assert(up_too_early == 0);
        teardown(&t, 1, c);
        config_free(cfg);
        t = NULL;
        c = NULL;

        /* the old ssh dies before the new one has taken the forwards over */
        snprintf(text, sizeof(text), "{ name = \"t-hand2\"; host = \"t-hand2\"; %s", spec);
        fake_plan("t-hand2", "0 30 auth\n0 30 auth sockwait=0.5");
        cfg = load(text);
        if (!cfg)
                return;
        n_seen = 0;
        t = tunnel_up(cfg, 0, &c, false);
        if (!t)
                goto done;
        test_assert(wait_state(t, TUNNEL_UP, WAIT));
        first = conn_get_pid(c);
        before = n_seen;
        tunnel_restart(t, "restart requested");
        test_assert(engine_run_until(next_pid_known, c, WAIT));
        second = conn_get_next_pid(c);
        killed_at = engine_now();
        test_assert(kill(first, SIGKILL) == 0);
        test_assert(wait_state(t, TUNNEL_STARTING, WAIT));
        test_assert(engine_now() - killed_at < 0.4);    /* at once, not when the new ssh answers */
        test_assert(forward_of(t, 0)->state == FORWARD_PENDING);
        test_assert(wait_state(t, TUNNEL_UP, WAIT));
        n = states_of(t, before, st, at, ELEMENTSOF(st));
        test_assert(n == 2 && st[0] == TUNNEL_STARTING && st[1] == TUNNEL_UP);
        test_assert(n == 2 && at[1] - killed_at >= 0.2);        /* up when the new ssh has them */
        test_assert(conn_get_pid(c) == second);
        test_assert(fake_count("t-hand2", "open", second, "L 15231 ok") == 1);
        test_assert(fake_count("t-hand2", "open", second, "L 15232 ok") == 1);
done:
        teardown(&t, 1, c);
        config_free(cfg);
}

/* Stopping until the connection's ssh is reaped: an ssh that ignores SIGTERM keeps the
 * tunnel stopping until SIGKILL at stop_timeout; stopped means no ssh is left. */
static void test_stopping_until_the_ssh_is_reaped(void)
{
        struct config *cfg = load("{ name = \"t-stop\"; host = \"t-stop\"; gatetime = 0;"
                                  "  local_forwards = ( \"127.0.0.1:15241:127.0.0.1:1\" ); }");
        enum tunnel_state st[16];
        struct tunnel *t = NULL;
        struct conn *c = NULL;
        double at[16], stop_at;
        size_t before, n;
        pid_t pid;

        fake_plan("t-stop", "0 30 auth noterm");
        if (!cfg)
                return;
        n_seen = 0;
        t = tunnel_up(cfg, 0, &c, false);
        if (!t)
                goto done;
        test_assert(wait_state(t, TUNNEL_UP, WAIT));
        pid = conn_get_pid(c);
        before = n_seen;
        stop_at = engine_now();
        tunnel_stop(t, "stop requested");
        test_assert(tunnel_get_state(t) == TUNNEL_STOPPING);
        test_assert(wait_state(t, TUNNEL_STOPPED, WAIT));
        n = states_of(t, before, st, at, ELEMENTSOF(st));
        test_assert(n == 2 && st[0] == TUNNEL_STOPPING && st[1] == TUNNEL_STOPPED);
        test_assert(n == 2 && at[1] - stop_at >= 0.28);         /* SIGKILL at stop_timeout */
        test_assert(!seen[n_seen - 1].conn_child);              /* reaped when it said stopped */
        test_assert(!engine_pid_alive(pid));
        test_assert(fake_count("t-stop", "term", pid, NULL) == 0);     /* it ignored SIGTERM */
done:
        teardown(&t, 1, c);
        config_free(cfg);
}

/* Two tunnels on one shared connection: stopping one closes only its forwards (stopped at
 * once, the ssh and the other tunnel untouched); the last one stops the ssh. */
static void test_two_tunnels_on_one_connection(void)
{
        struct config *cfg = load("{ name = \"t-s1\"; host = \"t-shared\"; share_connection = true; gatetime = 0;"
                                  "  local_forwards = ( \"127.0.0.1:15261:127.0.0.1:1\" ); },"
                                  "{ name = \"t-s2\"; host = \"t-shared\"; share_connection = true; gatetime = 0;"
                                  "  local_forwards = ( \"127.0.0.1:15262:127.0.0.1:1\" ); }");
        struct tunnel *t[2] = { NULL, NULL };
        enum tunnel_state st[16];
        struct conn *c = NULL;
        size_t before, n;
        pid_t pid;

        fake_plan("t-shared", "0 30 auth");
        if (!cfg)
                return;
        n_seen = 0;
        t[0] = tunnel_up(cfg, 0, &c, true);
        t[1] = tunnel_up(cfg, 1, &c, true);
        if (!t[0] || !t[1])
                goto done;
        test_assert(wait_state(t[0], TUNNEL_UP, WAIT) && wait_state(t[1], TUNNEL_UP, WAIT));
        pid = conn_get_pid(c);
        test_assert(conn_count_attached(c) == 2);
        test_assert(fake_count("t-shared", "start", 0, NULL) == 1);

        before = n_seen;
        tunnel_stop(t[0], "stop requested");
        test_assert(tunnel_get_state(t[0]) == TUNNEL_STOPPED); /* nothing to wait for */
        engine_run_for(0.1);
        test_assert(fake_count("t-shared", "close", pid, "L 15261") == 1);
        test_assert(fake_count("t-shared", "close", pid, "L 15262") == 0);
        test_assert(states_of(t[1], before, st, NULL, ELEMENTSOF(st)) == 0);
        test_assert(tunnel_get_state(t[1]) == TUNNEL_UP);
        test_assert(conn_get_state(c) == CONN_UP && conn_get_pid(c) == pid);
        test_assert(fake_count("t-shared", "term", pid, NULL) == 0);

        before = n_seen;
        tunnel_stop(t[1], "stop requested");
        test_assert(tunnel_get_state(t[1]) == TUNNEL_STOPPING);
        test_assert(wait_state(t[1], TUNNEL_STOPPED, WAIT));
        n = states_of(t[1], before, st, NULL, ELEMENTSOF(st));
        test_assert(n == 2 && st[0] == TUNNEL_STOPPING && st[1] == TUNNEL_STOPPED);
        test_assert(fake_count("t-shared", "term", pid, NULL) == 1);
        test_assert(conn_get_state(c) == CONN_STOPPED);
done:
        teardown(t, 2, c);
        config_free(cfg);
}

int main(void)
{
        static const struct test_case cases[] = {
                TEST(test_up_only_when_every_forward_is_open),
                TEST(test_degraded_while_a_forward_fails),
                TEST(test_forward_added_while_up_stays_up),
                TEST(test_forward_lost_during_handover),
                TEST(test_stopping_until_the_ssh_is_reaped),
                TEST(test_two_tunnels_on_one_connection),
        };
        int r;

        engine_init();
        tctx = tunnel_ctx;
        tctx.loop = engine_loop();
        engine_conn_context(&cctx, 0.3);
        cctx.observer = on_conn_event;
        r = test_run(cases, ELEMENTSOF(cases));
        engine_finish();
        return r;
}
