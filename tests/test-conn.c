/* SPDX-License-Identifier: MIT */
/* test-conn: a connection's state machine (conn.h) in-process, on the real loop, against
 * fake-ssh as its scripted mux master: up only once ssh authenticated and its control
 * socket said hello, each forward's own reply, a failed forward asked for again on the
 * same ssh, an exit backed off by the class of its stderr, kill -9 after gatetime, the
 * start deadline, max_lifetime's make-before-break, a lost control connection. */
#include <signal.h>

#include "conn_internal.h"
#include "test-engine.h"
#include "test.h"

#define WAIT 3.0                /* the most a step may take on a loaded machine; a pass takes ms */

/* One user of the connection, recording what it is told. */
struct rec {
        struct conn_user u;     /* first: the callbacks get it */
        struct conn *c;
        struct conn_context ctx;
        enum conn_state seen[64];
        double at[64];
        size_t n;
        double slot_freed_at;   /* the connection gave its start slot back */
        unsigned forward_news, failed_news, handed_over, handover_failed;
        double failed_at, opened_at;    /* the last forward news of each kind */
        bool watch_handover;    /* check every forward while a make-before-break runs */
        unsigned down_in_handover;      /* …a forward shown neither open nor moving then */
        struct conn_forward *fwds[4];
        size_t n_fwds;
};

static void note(struct rec *r)
{
        if (r->n < ELEMENTSOF(r->seen)) {
                r->seen[r->n] = conn_get_state(r->c);
                r->at[r->n++] = engine_now();
        }
}

static void check_handover(struct rec *r)
{
        if (!r->watch_handover || !conn_is_handing_over(r->c))
                return;
        for (size_t i = 0; i < r->n_fwds; i++)
                if (!r->fwds[i]->moving && r->fwds[i]->st.state != FORWARD_OPEN)
                        r->down_in_handover++;
}

static void on_changed(struct conn_user *u, enum conn_state old, int prio, const struct conn_run *run, const char *news)
{
        (void)old;
        (void)prio;
        (void)run;
        (void)news;
        note((struct rec *)u);
        check_handover((struct rec *)u);
}

static void on_forward(struct conn_user *u, struct conn_forward *f, bool failed)
{
        struct rec *r = (struct rec *)u;

        r->forward_news++;
        r->failed_news += failed;
        if (failed)
                r->failed_at = engine_now();
        if (f->st.state == FORWARD_OPEN)
                r->opened_at = engine_now();
        check_handover(r);
}

static void on_handed_over(struct conn_user *u, const struct conn_run *failed)
{
        if (failed)
                ((struct rec *)u)->handover_failed++;
        else
                ((struct rec *)u)->handed_over++;
}

static const struct conn_user_ops rec_ops = {
        .changed = on_changed,
        .forward = on_forward,
        .handed_over = on_handed_over,
};

static void on_conn_event(struct conn *c, int event, int old, void *userdata)
{
        struct rec *r = userdata;

        (void)old;
        if (event == CONN_EVENT_CONNECTING && !conn_is_connecting(c))
                r->slot_freed_at = engine_now();
}

/* A connection named name (its host too) with these settings, r its one user, not started. */
static bool setup(struct rec *r, const char *name, const char *settings, double stop_timeout)
{
        struct config *cfg = engine_config("tunnels = ( { name = \"%s\"; host = \"%s\"; %s } );", name, name, settings);
        int k;

        *r = (struct rec){ .u = { .ops = &rec_ops, .name = name } };
        if (!cfg)
                return false;
        engine_conn_context(&r->ctx, stop_timeout);
        r->ctx.observer = on_conn_event;
        r->ctx.userdata = r;
        k = conn_new(&r->ctx, name, &cfg->tunnels[0], false, NULL, &r->c);
        config_free(cfg);
        test_assert(k == 0);
        if (k < 0)
                return false;
        conn_add_user(r->c, &r->u);
        return true;
}

static struct conn_forward *add_forward(struct rec *r, char kind, const char *spec)
{
        struct conn_forward *f = engine_forward_new(&r->u, kind, spec);

        test_assert(f);
        if (f) {
                r->fwds[r->n_fwds++] = f;
                conn_forward_add(r->c, f);
        }
        return f;
}

struct until_state {
        struct conn *c;
        enum conn_state s;
};
static bool in_state(void *p)
{
        struct until_state *u = p;

        return conn_get_state(u->c) == u->s;
}
static bool wait_state(struct conn *c, enum conn_state s, double timeout)
{
        return engine_run_until(in_state, &(struct until_state){ c, s }, timeout);
}

struct until_forward {
        struct conn_forward *f;
        enum forward_state s;
};
static bool forward_in(void *p)
{
        struct until_forward *u = p;

        return u->f->st.state == u->s;
}
static bool wait_forward(struct conn_forward *f, enum forward_state s, double timeout)
{
        return engine_run_until(forward_in, &(struct until_forward){ f, s }, timeout);
}

static bool no_child(void *p)
{
        return !conn_has_child(p);
}

struct until_seen {
        struct rec *r;
        size_t n;
};
static bool seen_more(void *p)
{
        struct until_seen *u = p;

        return u->r->n > u->n;
}

/* The index of the first state s seen at or after from, or -1. */
static ssize_t seen_at(const struct rec *r, enum conn_state s, size_t from)
{
        for (size_t i = from; i < r->n; i++)
                if (r->seen[i] == s)
                        return (ssize_t)i;
        return -1;
}

/* Stopped and gone, whatever it was doing: no ssh left behind. */
static void teardown(struct rec *r)
{
        if (!r->c)
                return;
        conn_detach(&r->u, "the test is over");
        test_assert(wait_state(r->c, CONN_STOPPED, WAIT));
        test_assert(engine_run_until(no_child, r->c, WAIT));
        conn_remove_user(&r->u);
        r->c = conn_free(r->c);
        for (size_t i = 0; i < r->n_fwds; i++)
                engine_forward_free(r->fwds[i]);
        r->n_fwds = 0;
}

/* Up is "Authenticated to" and the control socket's hello, both: the slot is given back
 * at the first, the connection is up at the second. */
static void test_up_after_authenticated_and_hello(void)
{
        struct rec r;
        double spawned;
        ssize_t up;

        fake_plan("c-up", "0 30 auth sockwait=0.5");
        if (!setup(&r, "c-up", "gatetime = 0;", 1))
                return;
        spawned = engine_now();
        conn_attach(&r.u, false);
        test_assert(conn_get_state(r.c) == CONN_STARTING);
        test_assert(conn_is_connecting(r.c));
        test_assert(conn_get_pid(r.c) > 0);
        test_assert(wait_state(r.c, CONN_UP, WAIT));
        up = seen_at(&r, CONN_UP, 0);
        test_assert(up >= 0);
        if (up >= 0) {
                /* the slot went back at "Authenticated to", 0.5 s before the socket came */
                test_assert(r.slot_freed_at > 0 && r.slot_freed_at < r.at[up] - 0.25);
                test_assert(r.at[up] - spawned >= 0.48);
        }
        test_assert(!conn_is_connecting(r.c));
        test_assert(conn_get_pid(r.c) == fake_start_pid("c-up", 0));
        test_assert(r.n == 2 && r.seen[0] == CONN_STARTING && r.seen[1] == CONN_UP);
        teardown(&r);
}

/* Each forward takes ssh's own reply: open; failed with ssh's words (the bind error it
 * printed, over the reply's "Port forwarding failed"; the server's refusal of a -R); -R 0
 * with the port the server chose. One forward's failure does not end the run. */
static void test_forward_replies(void)
{
        struct conn_forward *ok, *busy, *any, *refused;
        struct rec r;
        pid_t pid;

        fake_plan("c-fwd", "0 30 auth busy=15102 refuse=15104");
        if (!setup(&r, "c-fwd", "gatetime = 0; restart_delay = 5;", 1))
                return;
        ok = add_forward(&r, 'L', "127.0.0.1:15101:127.0.0.1:1");
        busy = add_forward(&r, 'L', "127.0.0.1:15102:127.0.0.1:1");
        any = add_forward(&r, 'R', "0:127.0.0.1:80");
        refused = add_forward(&r, 'R', "15104:127.0.0.1:80");
        if (!ok || !busy || !any || !refused) {
                teardown(&r);
                return;
        }
        conn_attach(&r.u, false);
        test_assert(ok->st.state == FORWARD_PENDING);   /* nothing to ask yet */
        test_assert(wait_forward(refused, FORWARD_FAILED, WAIT));
        test_assert(wait_forward(any, FORWARD_OPEN, WAIT));
        test_assert(wait_forward(ok, FORWARD_OPEN, WAIT));
        test_assert(wait_forward(busy, FORWARD_FAILED, WAIT));
        test_assert(conn_get_state(r.c) == CONN_UP);
        test_assert(ok->st.reason == NULL && ok->st.allocated_port == 0);
        test_assert_streq(busy->st.reason, "bind [127.0.0.1]:15102: Address already in use");
        test_assert(busy->class == FAILURE_LOCAL_FORWARD);
        test_assert(any->st.allocated_port == 41001);
        test_assert_streq(refused->st.reason, "remote port forwarding failed for listen port 15104");
        test_assert(refused->class == FAILURE_REMOTE_FORWARD);
        test_assert(r.failed_news == 2);
        pid = conn_get_pid(r.c);
        test_assert(fake_count("c-fwd", "open", pid, "L 15101 ok") == 1);
        test_assert(fake_count("c-fwd", "open", pid, "L 15102 fail") == 1);
        test_assert(fake_count("c-fwd", "open", pid, "R 0 port 41001") == 1);
        test_assert(fake_count("c-fwd", "open", pid, "R 15104 fail") == 1);
        test_assert(fake_count("c-fwd", "start", 0, NULL) == 1);
        teardown(&r);
}

/* A failed forward is asked for again on its schedule (restart_delay, jittered into
 * [d/2, d]), closed and opened on the same ssh, and opens. */
static void test_failed_forward_retried_on_same_ssh(void)
{
        struct conn_forward *f;
        double failed_at, open_at;
        struct rec r;
        pid_t pid;

        fake_plan("c-retry", "0 30 auth refuse=15111/1");
        if (!setup(&r, "c-retry", "gatetime = 0; restart_delay = 0.3; restart_delay_max = 5;", 1))
                return;
        f = add_forward(&r, 'L', "127.0.0.1:15111:127.0.0.1:1");
        if (!f) {
                teardown(&r);
                return;
        }
        conn_attach(&r.u, false);
        test_assert(wait_forward(f, FORWARD_FAILED, WAIT));
        failed_at = r.failed_at;
        pid = conn_get_pid(r.c);
        test_assert_streq(f->st.reason, "Port forwarding failed");
        test_assert(f->retry_at - now_mono() > 0.05 && f->retry_at - now_mono() <= 0.3);
        test_assert(wait_forward(f, FORWARD_OPEN, WAIT));
        open_at = r.opened_at;
        test_assert(open_at - failed_at >= 0.13);       /* not before half of restart_delay */
        test_assert(conn_get_pid(r.c) == pid);
        test_assert(conn_get_state(r.c) == CONN_UP);
        test_assert(r.n == 2);                          /* STARTING, UP: the run went on */
        test_assert(fake_count("c-retry", "open", pid, "L 15111 fail") == 1);
        test_assert(fake_count("c-retry", "close", pid, "L 15111") == 1);
        test_assert(fake_count("c-retry", "open", pid, "L 15111 ok") == 1);
        test_assert(fake_count("c-retry", "start", 0, NULL) == 1);
        teardown(&r);
}

/* An exit backs off by the class its stderr named: a refused connection doubles from
 * restart_delay, an authentication failure waits restart_delay_max at once. */
static void test_exit_backs_off_by_class(void)
{
        const struct conn_run *run;
        struct rec r;
        double retry_in;
        ssize_t again;

        fake_plan("c-refused", "255 0.05 bye=refused\n0 30 auth");
        if (!setup(&r, "c-refused", "gatetime = 0; restart_delay = 0.3; restart_delay_max = 20;", 1))
                return;
        conn_attach(&r.u, false);
        test_assert(wait_state(r.c, CONN_BACKOFF, WAIT));
        run = conn_get_last_run(r.c);
        test_assert(run->valid && !run->requested);
        test_assert(run->exit_status == 255);
        test_assert(run->failure == FAILURE_REFUSED);
        test_assert(conn_get_failures(r.c) == 1);
        retry_in = conn_get_retry_in(r.c, now_mono());
        test_assert(retry_in > 0.05 && retry_in <= 0.3);
        test_assert(wait_state(r.c, CONN_UP, WAIT));
        again = seen_at(&r, CONN_STARTING, 1);
        test_assert(again > 0 && r.at[again] - r.at[1] >= 0.12);      /* not before half of restart_delay */
        test_assert(fake_count("c-refused", "start", 0, NULL) == 2);
        teardown(&r);

        fake_plan("c-denied", "255 0.05 denied\n0 30 auth");
        if (!setup(&r, "c-denied", "gatetime = 0; restart_delay = 0.3; restart_delay_max = 20;", 1))
                return;
        conn_attach(&r.u, false);
        test_assert(wait_state(r.c, CONN_BACKOFF, WAIT));
        run = conn_get_last_run(r.c);
        test_assert(run->failure == FAILURE_AUTH);
        retry_in = conn_get_retry_in(r.c, now_mono());
        test_assert(retry_in > 9 && retry_in <= 20);    /* the cap at once, jittered into [10, 20] */
        teardown(&r);
}

/* kill -9 of an ssh that has been up for gatetime: a good run, restarted at once (no
 * backoff, the failure count stays 0); before gatetime it is a failure that backs off. */
static void test_kill9_after_gatetime_restarts_at_once(void)
{
        const struct conn_run *run;
        double killed_at;
        struct rec r;
        ssize_t next;
        size_t n;
        pid_t pid;

        fake_plan("c-kill", "0 30 auth");
        if (!setup(&r, "c-kill", "gatetime = 0.2; restart_delay = 0.05; restart_delay_max = 20;", 1))
                return;
        conn_attach(&r.u, false);
        test_assert(wait_state(r.c, CONN_UP, WAIT));
        engine_run_for(0.35);                   /* past gatetime */
        pid = conn_get_pid(r.c);
        n = r.n;
        killed_at = engine_now();
        test_assert(kill(pid, SIGKILL) == 0);
        test_assert(engine_run_until(seen_more, &(struct until_seen){ &r, n }, WAIT));
        test_assert(wait_state(r.c, CONN_UP, WAIT));
        next = seen_at(&r, CONN_STARTING, n);
        test_assert(next == (ssize_t)n);        /* UP → STARTING: no backoff between */
        test_assert(next >= 0 && r.at[next] - killed_at < 0.5);
        run = conn_get_last_run(r.c);
        test_assert(run->pid == pid && run->exit_signal == SIGKILL);
        test_assert(run->failure == FAILURE_KILLED);
        test_assert(conn_get_failures(r.c) == 0);
        test_assert(conn_get_pid(r.c) != pid && conn_get_pid(r.c) > 0);
        teardown(&r);

        fake_plan("c-kill-early", "0 30 auth");
        if (!setup(&r, "c-kill-early", "gatetime = 10; restart_delay = 5; restart_delay_max = 20;", 1))
                return;
        conn_attach(&r.u, false);
        test_assert(wait_state(r.c, CONN_UP, WAIT));
        test_assert(kill(conn_get_pid(r.c), SIGKILL) == 0);
        test_assert(wait_state(r.c, CONN_BACKOFF, WAIT));
        test_assert(conn_get_last_run(r.c)->failure == FAILURE_KILLED);
        test_assert(conn_get_failures(r.c) == 1);
        teardown(&r);
}

/* The start deadline: a master that authenticated but never made its control socket is
 * ended at start_timeout (SIGTERM), its run classed timeout, and backs off. */
static void test_start_deadline(void)
{
        double spawned, ended;
        struct rec r;
        ssize_t b;
        pid_t pid;

        fake_plan("c-deadline", "0 30 authonly");
        if (!setup(&r, "c-deadline", "gatetime = 0; start_timeout = 0.4; restart_delay = 5;", 1))
                return;
        spawned = engine_now();
        conn_attach(&r.u, false);
        pid = conn_get_pid(r.c);
        test_assert(wait_state(r.c, CONN_BACKOFF, WAIT));
        b = seen_at(&r, CONN_BACKOFF, 0);
        ended = b >= 0 ? r.at[b] : 0;
        test_assert(ended - spawned >= 0.38 && ended - spawned < 1.5);
        test_assert(seen_at(&r, CONN_UP, 0) < 0);
        test_assert(conn_get_last_run(r.c)->failure == FAILURE_TIMEOUT);
        test_assert(conn_get_last_run(r.c)->pid == pid);
        test_assert(fake_count("c-deadline", "term", pid, NULL) == 1);
        teardown(&r);
}

static bool handed_over(void *p)
{
        return ((struct rec *)p)->handed_over > 0;
}

static bool no_old_master(void *p)
{
        return ((struct rec *)p)->c->olds == NULL;
}

/* max_lifetime: make-before-break. A new master on the other control socket; each
 * forward closed on the old one and opened on the new; never a moment a forward is shown
 * down; the old master drains, then is stopped. */
static void test_max_lifetime_make_before_break(void)
{
        struct conn_forward *l, *rr;
        struct conn_change *ch = NULL;
        struct config *cfg;
        struct rec r;
        pid_t first, second;

        fake_plan("c-life", "0 30 auth");
        if (!setup(&r, "c-life", "gatetime = 0; max_lifetime = 0.4; drain_timeout = 10;", 1))
                return;
        l = add_forward(&r, 'L', "127.0.0.1:15121:127.0.0.1:1");
        rr = add_forward(&r, 'R', "0:127.0.0.1:80");
        if (!l || !rr) {
                teardown(&r);
                return;
        }
        conn_attach(&r.u, false);
        test_assert(wait_forward(l, FORWARD_OPEN, WAIT) && wait_forward(rr, FORWARD_OPEN, WAIT));
        first = conn_get_pid(r.c);
        r.watch_handover = true;
        test_assert(engine_run_until(handed_over, &r, WAIT));
        second = conn_get_pid(r.c);
        test_assert(second > 0 && second != first);
        test_assert(conn_get_next_pid(r.c) == 0);
        test_assert(r.handed_over == 1);
        test_assert(r.down_in_handover == 0);
        test_assert(l->st.state == FORWARD_OPEN && rr->st.state == FORWARD_OPEN);
        test_assert(rr->st.allocated_port == 41001);    /* the new master's answer */
        test_assert(conn_get_state(r.c) == CONN_UP);
        test_assert(engine_pid_alive(first));           /* draining: not stopped yet */
        test_assert(fake_count("c-life", "close", first, "L 15121") == 1);
        test_assert(fake_count("c-life", "close", first, "R 0") == 1);
        test_assert(fake_count("c-life", "open", second, "L 15121 ok") == 1);
        test_assert(fake_count("c-life", "open", second, "R 0 port 41001") == 1);
        /* no more lifetimes (a reload's supervision change, in place): only this one */
        cfg = engine_config("tunnels = ( { name = \"c-life\"; host = \"c-life\"; gatetime = 0; drain_timeout = 10; } );");
        test_assert(cfg && conn_change_new(r.c, &cfg->tunnels[0], engine_fake_ssh(), &ch) == 0);
        if (ch)
                conn_reconfigure(r.c, ch);
        config_free(cfg);
        /* no connection through its forwards: the first drain check stops it */
        test_assert(engine_run_until(no_old_master, &r, WAIT));
        test_assert(fake_count("c-life", "term", first, NULL) == 1);
        test_assert(conn_get_pid(r.c) == second);
        test_assert(conn_get_last_run(r.c)->pid == first && conn_get_last_run(r.c)->requested);
        test_assert(r.down_in_handover == 0);
        test_assert(fake_count("c-life", "start", 0, NULL) == 2);
        teardown(&r);
}

static bool handover_failed(void *p)
{
        return ((struct rec *)p)->handover_failed > 0;
}

/* A make-before-break whose new master fails before it took anything over (a refused key):
 * the old master is the run again, untouched (no forward closed on it, still up, no state
 * but UP shown for long), the failure counted with its class; the restart is tried again
 * after the backoff, and that one takes the forwards over. */
static void test_failed_handover_keeps_the_old_master(void)
{
        struct conn_forward *l;
        struct rec r;
        pid_t first, second;

        fake_plan("c-keep", "0 30 auth\n255 0.05 denied\n0 30 auth");
        if (!setup(&r, "c-keep", "gatetime = 0; max_lifetime = 0.4; restart_delay = 0.3; restart_delay_max = 0.3; "
                   "drain_timeout = 10;", 1))
                return;
        l = add_forward(&r, 'L', "127.0.0.1:15141:127.0.0.1:1");
        if (!l) {
                teardown(&r);
                return;
        }
        conn_attach(&r.u, false);
        test_assert(wait_forward(l, FORWARD_OPEN, WAIT));
        first = conn_get_pid(r.c);
        r.watch_handover = true;
        test_assert(engine_run_until(handover_failed, &r, WAIT));
        test_assert(conn_get_state(r.c) == CONN_UP);
        test_assert(conn_get_pid(r.c) == first && conn_get_next_pid(r.c) == 0);
        test_assert(!conn_is_handing_over(r.c) && r.c->olds == NULL);
        test_assert(l->st.state == FORWARD_OPEN && !l->moving && !l->held_by_old);
        test_assert(conn_get_last_run(r.c)->failure == FAILURE_AUTH && !conn_get_last_run(r.c)->requested);
        test_assert(fake_count("c-keep", "close", first, NULL) == 0);
        test_assert(engine_pid_alive(first));
        test_assert(r.handed_over == 0 && r.down_in_handover == 0);
        /* the backoff over, the third start takes the forward over */
        test_assert(engine_run_until(handed_over, &r, WAIT));
        second = conn_get_pid(r.c);
        test_assert(second > 0 && second != first);
        test_assert(l->st.state == FORWARD_OPEN);
        test_assert(fake_count("c-keep", "close", first, "L 15141") == 1);
        test_assert(fake_count("c-keep", "open", second, "L 15141 ok") == 1);
        test_assert(fake_count("c-keep", "start", 0, NULL) == 3);
        test_assert(r.down_in_handover == 0);
        teardown(&r);
}

static bool handing_over_now(void *p)
{
        return conn_is_handing_over(p);
}

static bool serving_preferred(void *p)
{
        struct conn *c = p;

        return conn_alt_serving(c) == 0 && !conn_is_handing_over(c) && conn_get_state(c) == CONN_UP;
}

/* Alternatives: the preferred one refused, the next serves at once (no backoff); the
 * preferred one answers again: tried beside the backup, it takes the forward over only
 * after gatetime, the backup lets it go; every destination refused: one backoff per round. */
static void test_alternatives_failover_and_failback(void)
{
        struct conn_forward *l;
        struct rec r;
        pid_t backup, preferred;
        double candidate_at, moved_at;

        fake_plan("c-alt1", "255 0.05 bye=refused\n0 30 auth");
        fake_plan("c-alt2", "0 30 auth");
        if (!setup(&r, "c-alt1", "gatetime = 0.6; restart_delay = 0.2; restart_delay_max = 0.3; drain_timeout = 10; "
                   "alternatives = ( { host = \"c-alt2\"; } );", 1))
                return;
        l = add_forward(&r, 'L', "127.0.0.1:15161:127.0.0.1:1");
        if (!l) {
                teardown(&r);
                return;
        }
        conn_attach(&r.u, false);
        test_assert(wait_forward(l, FORWARD_OPEN, WAIT));
        backup = conn_get_pid(r.c);
        test_assert(conn_alt_count(r.c) == 2 && conn_alt_serving(r.c) == 1 && conn_alt_failovers(r.c) == 1);
        test_assert(seen_at(&r, CONN_BACKOFF, 0) < 0);          /* failed over at once */
        test_assert(r.c->alts->v[0].last_failure == FAILURE_REFUSED);
        test_assert(fake_count("c-alt2", "open", backup, "L 15161 ok") == 1);
        /* the preferred one is tried again beside the backup, which serves meanwhile */
        test_assert(engine_run_until(handing_over_now, r.c, WAIT));
        candidate_at = engine_now();
        test_assert(engine_run_until(serving_preferred, r.c, WAIT));
        moved_at = engine_now();
        preferred = conn_get_pid(r.c);
        test_assert(preferred > 0 && preferred != backup);
        test_assert(moved_at - candidate_at >= 0.55);           /* up for gatetime first */
        test_assert(wait_forward(l, FORWARD_OPEN, WAIT));
        test_assert(fake_count("c-alt2", "close", backup, "L 15161") == 1);
        test_assert(fake_count("c-alt1", "open", preferred, "L 15161 ok") == 1);
        test_assert(conn_alt_failovers(r.c) == 1);              /* a fail-back is no failover */
        test_assert(r.c->alts->v[0].last_failure == FAILURE_NONE);
        teardown(&r);

        /* both refused: each round tries both, then backs off once */
        fake_plan("c-alt3", "255 0.05 bye=refused");
        fake_plan("c-alt4", "255 0.05 bye=refused");
        if (!setup(&r, "c-alt3", "gatetime = 0; restart_delay = 0.3; restart_delay_max = 0.3; "
                   "alternatives = ( { host = \"c-alt4\"; } );", 1))
                return;
        conn_attach(&r.u, false);
        test_assert(wait_state(r.c, CONN_BACKOFF, WAIT));
        test_assert(fake_count("c-alt3", "start", 0, NULL) == 1 && fake_count("c-alt4", "start", 0, NULL) == 1);
        test_assert(conn_get_failures(r.c) == 1);               /* one step for the round */
        test_assert(conn_alt_target(r.c) == 0);                 /* the next round from the preferred */
        teardown(&r);
}

/* The control connection closed while ssh runs on: nothing can be asked of that master
 * any more; the run is ended (class mux) and backs off. */
static void test_master_lost(void)
{
        struct conn_forward *f;
        struct rec r;
        pid_t pid;

        fake_plan("c-lost", "0 30 auth hangup=0.2");
        if (!setup(&r, "c-lost", "gatetime = 0; restart_delay = 5;", 1))
                return;
        f = add_forward(&r, 'L', "127.0.0.1:15131:127.0.0.1:1");
        if (!f) {
                teardown(&r);
                return;
        }
        conn_attach(&r.u, false);
        test_assert(wait_forward(f, FORWARD_OPEN, WAIT));
        pid = conn_get_pid(r.c);
        test_assert(wait_state(r.c, CONN_BACKOFF, WAIT));
        test_assert(conn_get_last_run(r.c)->pid == pid);
        test_assert(conn_get_last_run(r.c)->failure == FAILURE_MUX);
        test_assert(!conn_get_last_run(r.c)->requested);
        test_assert(fake_count("c-lost", "term", pid, NULL) == 1);     /* tunneld ended it */
        test_assert(f->st.state == FORWARD_PENDING);
        teardown(&r);
}

int main(void)
{
        static const struct test_case cases[] = {
                TEST(test_up_after_authenticated_and_hello),
                TEST(test_forward_replies),
                TEST(test_failed_forward_retried_on_same_ssh),
                TEST(test_exit_backs_off_by_class),
                TEST(test_kill9_after_gatetime_restarts_at_once),
                TEST(test_start_deadline),
                TEST(test_max_lifetime_make_before_break),
                TEST(test_failed_handover_keeps_the_old_master),
                TEST(test_master_lost), TEST(test_alternatives_failover_and_failback),
        };
        int r;

        engine_init();
        r = test_run(cases, ELEMENTSOF(cases));
        engine_finish();
        return r;
}
