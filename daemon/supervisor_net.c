/* SPDX-License-Identifier: MIT */
/* supervisor_net: what the supervisor hears of the machine's network and sleep, and what
 * its connections do about it. A burst of network changes (netwatch.h): connections in
 * backoff for a failure a network can cure retry at once, and every up connection's path
 * is checked against the kernel's routes (conn_network_changed: moved or gone → a new ssh,
 * make-before-break). A resume from sleep (sleepwatch.h): every up connection gets a new
 * ssh beside its old one. Both walk the connections a few at a time per loop turn, so
 * that 10,000 of them never hold the loop in one callback. */
#include "supervisor_internal.h"

#include "log.h"

#define NET_TURN 64             /* connections looked at per loop turn */

static void walk_stop(struct supervisor *s)
{
        ev_idle_stop(s->loop, &s->net.walk);
        s->net.np = netpath_close(s->net.np);
}

static void on_walk(struct ev_loop *loop, ev_idle *w, int revents)
{
        struct supervisor *s = w->data;
        size_t end = s->net.next + NET_TURN;

        (void)loop;
        (void)revents;
        for (; s->net.next < s->n_conns && s->net.next < end; s->net.next++) {
                struct conn *c = s->conns[s->net.next];

                if (s->net.resumed)
                        conn_resumed(c);
                else if (s->net.np)
                        conn_network_changed(c, s->net.np);
        }
        if (s->net.next >= s->n_conns || s->shutting_down)
                walk_stop(s);
}

static void walk_start(struct supervisor *s, bool resumed)
{
        walk_stop(s);           /* a walk under way: this one, from the start, sees newer addresses */
        s->net.resumed = resumed;
        s->net.next = 0;
        if (!resumed) {
                int r = netpath_open(&s->net.np);
                if (r < 0) {
                        log_full_errno(LOG_DEBUG, r, NULL, "network changed: cannot ask the kernel for the paths: %m");
                        return;
                }
        }
        ev_idle_start(s->loop, &s->net.walk);
}

void supervisor_on_network_changed(void *userdata)
{
        struct supervisor *s = userdata;
        size_t n = 0;

        if (s->shutting_down)
                return;
        /* at once, no jitter: the start-slot queue (max_parallel_starts) spreads a herd */
        for (size_t i = 0; i < s->n_conns; i++)
                n += conn_retry_soon(s->conns[i], "network changed");
        if (n)
                log_notice("network changed: %zu connection%s in backoff retr%s now", n, n == 1 ? "" : "s",
                           n == 1 ? "ies" : "y");
        else
                log_debug("network changed: no connection is waiting to retry");
}

/* Any change may move a path (an address or route gone, another route preferred, a link
 * down): the up connections' paths are checked against the kernel. */
static void on_path_changed(unsigned kinds, void *userdata)
{
        struct supervisor *s = userdata;
        char what[128];

        if (s->shutting_down || !s->n_conns)
                return;
        log_debug("network changed (%s): checking the connections' paths",
                  netwatch_kinds_format(kinds, what, sizeof(what)));
        if (ev_is_active(&s->net.walk) && s->net.resumed)
                return;         /* a resume's walk replaces every up connection's ssh anyway */
        walk_start(s, false);
}

static void on_sleep(bool sleeping, void *userdata)
{
        struct supervisor *s = userdata;

        if (s->shutting_down)
                return;
        if (sleeping) {
                log_info("the machine goes to sleep");
                return;
        }
        log_notice("resumed from sleep: each up connection gets a new ssh beside its old one");
        walk_start(s, true);
}

void supervisor_net_apply(struct supervisor *s, const struct config *c)
{
        if (!ev_is_active(&s->net.walk) && !s->net.walk.data) {
                ev_idle_init(&s->net.walk, on_walk);
                s->net.walk.data = s;
        }
        if (c->watch_network && !s->net.watch) {
                if (netwatch_new(s->loop, supervisor_on_network_changed, s, &s->net.watch) >= 0)
                        netwatch_set_path_changed(s->net.watch, on_path_changed, s);
        } else if (!c->watch_network)
                s->net.watch = netwatch_free(s->net.watch);
        if (c->watch_network && !s->net.sleep && !s->net.sleep_tried) {
                s->net.sleep_tried = true;      /* said once if there is no bus or logind */
                (void)sleepwatch_new(s->loop, on_sleep, s, &s->net.sleep);
        } else if (!c->watch_network)
                s->net.sleep = sleepwatch_free(s->net.sleep);
}

void supervisor_net_free(struct supervisor *s)
{
        if (s->net.walk.data)
                walk_stop(s);
        s->net.watch = netwatch_free(s->net.watch);
        s->net.sleep = sleepwatch_free(s->net.sleep);
}
