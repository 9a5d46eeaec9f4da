/* SPDX-License-Identifier: MIT */
/* conn_handover: make-before-break for a connection's planned restarts (tunnelctl
 * restart, SIGUSR1, max_lifetime, a reload that changes the ssh command line). The running
 * master becomes an old one and goes on serving; a new master is started on another
 * control socket (s0 … s9); once it said hello each forward is closed on the old one and at
 * once opened on the new (a -L is refused for the few ms between), and the old master
 * keeps its established connections: it is stopped when none is left through its
 * forwards, or at drain_timeout. Nothing that was working is broken. */
#include "conn_internal.h"

#include <stdlib.h>
#include <string.h>

#define DRAIN_CHECK 1.0                 /* seconds between looks at an old master's connections */
#define OLDS_MAX 8                      /* old masters at once; the oldest goes first */

static void old_free(struct conn_old *o)
{
        ev_timer_stop(o->c->ctx->loop, &o->timer);
        master_free(o->m);
        free(o->fwds);
        free(o->owners);
        free(o->close_ids);
        free(o);
}

static void old_unlink(struct conn_old *o)
{
        for (struct conn_old **p = &o->c->olds; *p; p = &(*p)->next)
                if (*p == o) {
                        *p = o->next;
                        return;
                }
}

static void old_stop(struct conn_old *o, const char *why)
{
        struct log_ctx ctx = conn_log_ctx(o->c);

        if (master_is_stopping(o->m) || master_pid(o->m) <= 0)
                return;
        log_full(LOG_INFO, &ctx, "the old ssh (pid %d) %s: SIGTERM", (int)master_pid(o->m), why);
        master_stop(o->m, o->c->ctx->stop_timeout);
}

static void start_drain(struct conn_old *o);

/* Forward i no longer has the old master: opened on the new one. */
static void moved(struct conn_old *o, size_t i)
{
        struct conn_forward *f = o->owners[i];

        if (o->close_ids[i]) {
                o->close_ids[i] = 0;
                o->closes_left--;
        }
        o->owners[i] = NULL;
        if (f) {
                f->held_by_old = false;
                f->st.state = FORWARD_PENDING;
                f->st.allocated_port = 0;       /* the old ssh's: the new one asks for its own */
                conn_forward_opened_after_move(o->c, f);
        }
}

/* Every close answered and every forward answered by the new master: the drain begins. */
static void settle(struct conn_old *o)
{
        if (o->handing_over && o->move_started && o->closes_left == 0 && o->moving == 0)
                start_drain(o);
}

void conn_handover_moved(struct conn *c, struct conn_forward *f)
{
        struct conn_old *o = c->olds;

        if (!f->moving)
                return;
        f->moving = false;
        if (!o || !o->handing_over)
                return;
        if (o->moving)
                o->moving--;
        settle(o);
}

static void on_drain_timer(struct ev_loop *loop, ev_timer *w, int revents);

/* Everything has moved (or was closed): o only carries its last connections now. */
static void start_drain(struct conn_old *o)
{
        struct conn *c = o->c;
        struct log_ctx ctx = conn_log_ctx(c);
        size_t n = 0;

        o->handing_over = false;
        if (c->master && master_pid(c->master) > 0 && master_pid(o->m) > 0) {
                log_full(LOG_NOTICE, &ctx, "make-before-break done: ssh pid %d has taken every forward over; the old "
                         "one (pid %d) ends when its %zu connections do", (int)master_pid(c->master),
                         (int)master_pid(o->m), master_count_forwarded(o->m, o->fwds, o->n));
                for (struct conn_user *u = c->users; u; u = u->next)
                        if (u->ops->handed_over)
                                u->ops->handed_over(u, NULL);
        }
        for (struct conn_old *d = o->c->olds; d; d = d->next)
                if (++n > OLDS_MAX)
                        old_stop(d, "is one old ssh too many");
        ev_timer_stop(o->c->ctx->loop, &o->timer);
        ev_timer_init(&o->timer, on_drain_timer, DRAIN_CHECK, 0.);
        o->timer.data = o;
        ev_timer_start(o->c->ctx->loop, &o->timer);
}

static void on_drain_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct conn_old *o = w->data;
        double now = now_mono();

        (void)loop;
        (void)revents;
        if (master_is_stopping(o->m))
                return;
        if (master_count_forwarded(o->m, o->fwds, o->n) == 0)
                old_stop(o, "carries no connection any more");
        else if (now >= o->deadline)
                old_stop(o, "reached drain_timeout");
        else
                conn_arm(o->c, &o->timer, o->deadline - now < DRAIN_CHECK ? o->deadline - now : DRAIN_CHECK);
}

/* A handover that never finished (the new master is slow to come): at drain_timeout the
 * old one goes anyway. */
static void on_handover_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct conn_old *o = w->data;

        (void)loop;
        (void)revents;
        old_stop(o, "reached drain_timeout before the new ssh took its forwards over");
}

static void on_old_reply(struct master *m, const struct mux_reply *r, void *userdata)
{
        struct conn_old *o = userdata;

        (void)m;
        for (size_t i = 0; r->request_id && i < o->n; i++)
                if (o->close_ids[i] == r->request_id) {
                        moved(o, i);
                        settle(o);
                        return;
                }
}

static void on_old_event(struct master *m, enum master_event ev, void *userdata)
{
        struct conn_old *o = userdata;

        (void)m;
        if (ev != MASTER_LOST)
                return;
        /* its control socket is gone: nothing more can be closed there */
        for (size_t i = 0; i < o->n; i++)
                if (o->close_ids[i])
                        moved(o, i);
        settle(o);
}

static void on_old_exit(struct master *m, const struct master_exit *e, void *userdata)
{
        struct conn_old *o = userdata;
        struct conn *c = o->c;
        struct log_ctx ctx = conn_log_ctx(c);

        (void)m;
        log_full(LOG_INFO, &ctx, "the old ssh (pid %d) has ended: the make-before-break restart is over", (int)e->pid);
        if (c->state == CONN_UP || c->state == CONN_STARTING)
                /* the last ssh that ended, at tunneld's request (status' last_exit); after a
                 * failed run there is no old ssh left to end (an abort stopped it) */
                c->last_run = (struct conn_run){ .valid = true, .pid = e->pid, .exit_status = e->exit_status,
                                                 .exit_signal = e->exit_signal, .ran = e->ran, .ended_at = e->ended_at,
                                                 .requested = true };
        /* first out of the list: what it still served is served by nobody until the new ssh
         * has it, and the users must see that (no handover any more) */
        old_unlink(o);
        for (size_t i = 0; i < o->n; i++)
                if (o->owners[i]) {
                        struct conn_forward *f = o->owners[i];

                        o->owners[i] = NULL;
                        f->held_by_old = f->moving = false;
                        f->st.state = FORWARD_PENDING;
                        f->st.allocated_port = 0;
                        if (f->user && f->user->ops->forward)
                                f->user->ops->forward(f->user, f, false);
                        conn_forward_opened_after_move(c, f);
                }
        conn_alt_old_ended(c);
        old_free(o);
}

static const struct master_ops old_ops = {
        .event = on_old_event,
        .reply = on_old_reply,
        .exited = on_old_exit,
};

int conn_handover_free_gen(const struct conn *c)
{
        for (int gen = 0; gen < 10; gen++) {
                bool used = false;

                for (const struct conn_old *o = c->olds; o && !used; o = o->next)
                        used = o->gen == gen;
                if (!used)
                        return gen;
        }
        return 0;       /* cannot happen: at most OLDS_MAX + 1 masters are alive */
}

bool conn_handover_has_child(const struct conn *c)
{
        for (const struct conn_old *o = c->olds; o; o = o->next)
                if (master_pid(o->m) > 0)
                        return true;
        return false;
}

bool conn_handover_begin(struct conn *c, const char *reason)
{
        struct conn_old *o;
        size_t n = 0, k = 0;

        if (c->state != CONN_UP || !c->master || !master_is_ready(c->master) || c->run.kill_class != FAILURE_NONE ||
            conn_is_handing_over(c))
                return false;
        for (struct conn_forward *f = c->fwds.first; f; f = f->next)
                n += f->st.state == FORWARD_OPEN;
        o = calloc(1, sizeof(*o));
        if (!o || !(o->fwds = calloc(n + 1, sizeof(struct forward))) ||
            !(o->owners = calloc(n + 1, sizeof(struct conn_forward *))) ||
            !(o->close_ids = calloc(n + 1, sizeof(uint32_t)))) {
                if (o) {
                        free(o->fwds);
                        free(o->owners);
                }
                free(o);
                return false;
        }
        o->c = c;
        o->m = c->master;
        o->gen = c->gen;
        o->handing_over = true;
        o->deadline = now_mono() + c->spec.sup.drain_timeout;
        o->run = c->run;
        for (struct conn_forward *f = c->fwds.first; f; f = f->next) {
                if (f->st.state == FORWARD_OPEN) {
                        o->fwds[k] = f->f;
                        o->owners[k++] = f;
                        f->moving = f->held_by_old = true;
                        f->move_retry = false;
                        f->move_tries = 0;
                        o->moving++;
                } else if (!f->request_id) {
                        /* asked for anew from the new master (a failed one at once) */
                        f->st.state = FORWARD_PENDING;
                        f->failures = 0;
                }
                f->request_id = 0;
        }
        o->n = k;
        master_set_owner(o->m, &old_ops, o);
        ev_timer_init(&o->timer, on_handover_timer, c->spec.sup.drain_timeout > 0 ? c->spec.sup.drain_timeout : 0., 0.);
        o->timer.data = o;
        ev_timer_start(c->ctx->loop, &o->timer);
        o->next = c->olds;
        c->olds = o;
        /* the run is the old master's now: the connection forgets it without an exit */
        c->master = NULL;
        ev_timer_stop(c->ctx->loop, &c->gate_timer);
        ev_timer_stop(c->ctx->loop, &c->lifetime_timer);
        ev_timer_stop(c->ctx->loop, &c->deadline_timer);
        ev_timer_stop(c->ctx->loop, &c->fwds.retry);
        conn_spawn(c, NULL, reason, "make-before-break: a new ssh takes the forwards over");
        return true;
}

void conn_handover_move(struct conn *c)
{
        struct conn_old *o = c->olds;

        if (!o || !o->handing_over || o->move_started)
                return;
        o->move_started = true;
        for (size_t i = 0; i < o->n; i++) {
                if (!o->owners[i] || o->close_ids[i])
                        continue;
                if (master_close_forward(o->m, &o->fwds[i], &o->close_ids[i]) < 0) {
                        o->close_ids[i] = 0;
                        moved(o, i);            /* nothing to close it over: it is the new one's now */
                        continue;
                }
                o->closes_left++;
        }
        settle(o);                              /* nothing to wait for: the drain begins */
}

void conn_handover_forget(struct conn *c, const struct conn_forward *f)
{
        struct conn_old *o = c->olds;

        if (!o || !o->handing_over)
                return;
        for (size_t i = 0; i < o->n; i++)
                if (o->owners[i] == f) {
                        o->owners[i] = NULL;
                        /* not closed there yet: the old master must let go of it too */
                        if (!o->close_ids[i] && master_close_forward(o->m, &o->fwds[i], &o->close_ids[i]) >= 0)
                                o->closes_left++;
                        else
                                o->close_ids[i] = 0;
                }
}

bool conn_handover_revert(struct conn *c)
{
        struct conn_old *o = c->olds;

        if (!o || !o->handing_over || o->move_started || c->master || master_is_stopping(o->m) ||
            !master_is_ready(o->m))
                return false;
        c->olds = o->next;
        c->master = o->m;
        c->gen = o->gen;
        c->run = o->run;
        o->m = NULL;
        master_set_owner(c->master, &conn_master_ops, c);
        for (size_t i = 0; i < o->n; i++)
                if (o->owners[i])
                        o->owners[i]->held_by_old = o->owners[i]->moving = false;
        old_free(o);
        return true;
}

void conn_handover_abort(struct conn *c, const char *why)
{
        for (struct conn_old *o = c->olds; o; o = o->next) {
                for (size_t i = 0; o->handing_over && i < o->n; i++)
                        if (o->owners[i]) {
                                o->owners[i]->held_by_old = o->owners[i]->moving = false;
                                o->owners[i]->st.state = FORWARD_PENDING;
                                o->owners[i]->st.allocated_port = 0;
                                o->owners[i] = NULL;
                        }
                o->handing_over = false;
                old_stop(o, why);
        }
}

void conn_handover_extend(struct conn *c, double seconds)
{
        struct conn_old *o = c->olds;

        if (!o || !o->handing_over)
                return;
        o->deadline = now_mono() + seconds + c->spec.sup.drain_timeout;
        conn_arm(c, &o->timer, seconds + c->spec.sup.drain_timeout);
}

void conn_handover_free(struct conn *c)
{
        while (c->olds) {
                struct conn_old *o = c->olds;

                c->olds = o->next;
                old_free(o);
        }
}
