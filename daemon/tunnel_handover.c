/* SPDX-License-Identifier: MIT */
/* tunnel_handover: make-before-break for the planned restarts of a multiplexed tunnel
 * (tunnelctl restart, SIGUSR1, max_lifetime, a reload that changes the connection). The
 * running master becomes the old one and goes on serving; a new master is started on the
 * other control socket (s0/s1); once it said hello each forward is closed on the old one
 * and at once opened on the new (a -L is refused for the few ms between), and the old
 * master keeps its established connections: it is stopped when none is left through its
 * forwards, or at drain_timeout. Nothing is broken that was working. */
#include "tunnel_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mux_client.h"
#include "probe.h"
#include "proc_net.h"
#include "process.h"

#define DRAIN_CHECK 1.0                 /* seconds between looks at the old master's connections */
#define DRAINERS_MAX 8                  /* old masters draining at once; the oldest goes first */

/* Forget o wherever it is: t->mux_old or the list of drainers. */
static void unlink_old(struct mux_old *o)
{
        struct tunnel *t = o->t;

        if (t->mux_old == o) {
                t->mux_old = NULL;
                return;
        }
        for (struct mux_old **p = &t->drainers; *p; p = &(*p)->next)
                if (*p == o) {
                        *p = o->next;
                        return;
                }
}

static void old_free(struct mux_old *o)
{
        ev_child_stop(o->t->ctx->loop, &o->child);
        ev_timer_stop(o->t->ctx->loop, &o->timer);
        mux_client_free(o->mux);
        free(o->fwds);
        forward_states_free(o->fwd_status, o->n_fwds);
        free(o->close_ids);
        free(o);
}

static void old_stop(struct mux_old *o, int sig, const char *why)
{
        struct log_ctx ctx = ctx_of(o->t);

        if (sig == SIGTERM) {
                if (o->term_sent)
                        return;
                o->term_sent = true;
                log_full(LOG_INFO, &ctx, "the old ssh (pid %d) %s: SIGTERM", (int)o->pid, why);
        } else
                o->kill_sent = true;
        process_kill(o->pid, sig);
}

static void on_old_exit(struct ev_loop *loop, ev_child *w, int revents)
{
        struct mux_old *o = w->data;
        struct tunnel *t = o->t;
        struct log_ctx ctx = ctx_of(t);

        (void)loop;
        (void)revents;
        bool serving = t->mux_old == o;        /* it had not handed its forwards over yet */

        log_full(LOG_INFO, &ctx, "the old ssh (pid %d) has ended: the make-before-break restart is over",
                 (int)o->pid);
        unlink_old(o);
        old_free(o);
        if (serving && t->is_carrier)
                share_sync_riders(t);   /* nothing serves their forwards until the new ssh does */
}

/* The old master's TCP connections through its forwards: accepted on a -L/-D listen port,
 * or made to a -R's target. */
static bool forwarded_port(unsigned local, unsigned remote, void *userdata)
{
        const struct mux_old *o = userdata;

        for (size_t i = 0; i < o->n_fwds; i++) {
                const struct forward *f = &o->fwds[i].f;

                if (f->kind != FORWARD_REMOTE && f->listen.port == (int)local)
                        return true;
                if (f->kind == FORWARD_REMOTE && !f->socks && f->connect.port == (int)remote)
                        return true;
        }
        return false;
}

static size_t connections_left(const struct mux_old *o)
{
        int n = proc_net_established(o->pid, forwarded_port, (void *)o);

        return n > 0 ? (size_t)n : 0;
}

static void on_old_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct mux_old *o = w->data;
        double now = now_mono();

        (void)loop;
        (void)revents;
        if (o->term_sent) {
                old_stop(o, SIGKILL, "did not end after SIGTERM");
                return;
        }
        if (o->closes_left == 0 && connections_left(o) == 0)
                old_stop(o, SIGTERM, "carries no connection any more");
        else if (now >= o->deadline)
                old_stop(o, SIGTERM, "reached drain_timeout");
        if (o->term_sent) {
                arm(o->t, &o->timer, o->t->ctx->stop_timeout);
                return;
        }
        arm(o->t, &o->timer, o->deadline - now < DRAIN_CHECK ? o->deadline - now : DRAIN_CHECK);
}

/* The handover is over: o only carries its last connections now, among the drainers
 * (so that the next planned restart can be make-before-break too). */
static void start_drain(struct mux_old *o)
{
        struct tunnel *t = o->t;
        size_t n = 0;

        if (t->mux_old == o) {
                t->mux_old = NULL;
                t->handed_over = true;
                o->next = t->drainers;
                t->drainers = o;
        }
        for (struct mux_old *d = t->drainers; d; d = d->next)
                if (++n > DRAINERS_MAX)
                        old_stop(d, SIGTERM, "is one drainer too many");
        arm(t, &o->timer, DRAIN_CHECK);
}

int handover_free_gen(const struct tunnel *t)
{
        for (int gen = 0; gen < 10; gen++) {
                bool used = t->mux_old && t->mux_old->gen == gen;

                for (const struct mux_old *d = t->drainers; d && !used; d = d->next)
                        used = d->gen == gen;
                if (!used)
                        return gen;
        }
        return 0;       /* cannot happen: at most DRAINERS_MAX + 1 are alive */
}

static struct mux_forward *new_twin(struct tunnel *t, const struct mux_forward *old)
{
        for (size_t i = 0; i < t->n_fwds; i++)
                if (t->fwds[i].st->kind == old->st->kind && strcmp(t->fwds[i].st->spec, old->st->spec) == 0)
                        return &t->fwds[i];
        return NULL;
}

/* A close of the old master answered (or it is gone): the forward opens on the new one. */
static void moved(struct mux_old *o, size_t i)
{
        struct tunnel *t = o->t;
        struct mux_forward *m = new_twin(t, &o->fwds[i]);

        o->close_ids[i] = 0;
        if (--o->closes_left == 0)
                start_drain(o);                         /* everything moved: the drain begins */
        if (m) {
                m->handover = false;
                mux_open_pending(t);
        }
}

static void on_old_reply(const struct mux_reply *r, void *userdata)
{
        struct mux_old *o = userdata;

        for (size_t i = 0; r->request_id && i < o->n_fwds; i++)
                if (o->close_ids[i] == r->request_id) {
                        moved(o, i);
                        return;
                }
}

static void on_old_closed(int error, const char *why, void *userdata)
{
        struct mux_old *o = userdata;

        (void)error;
        (void)why;
        o->mux = mux_client_free(o->mux);
        for (size_t i = 0; i < o->n_fwds; i++)
                if (o->close_ids[i])
                        moved(o, i);
}

static const struct mux_client_ops old_ops = {
        .reply = on_old_reply,
        .closed = on_old_closed,
};

bool handover_has_child(const struct tunnel *t)
{
        return t->mux_old || t->drainers;
}

bool handover_begin(struct tunnel *t, const char *reason)
{
        struct mux_old *o;

        if (!t->spec.multiplex || t->mux_old || !t->mux || !t->mux_ready ||
            (t->state != TUNNEL_UP && t->state != TUNNEL_DEGRADED) || t->kill_class != FAILURE_NONE)
                return false;
        o = calloc(1, sizeof(*o));
        if (!o || !(o->close_ids = calloc(t->n_fwds + 1, sizeof(uint32_t)))) {
                free(o);
                return false;
        }
        *o = (struct mux_old){ .t = t, .pid = t->pid, .gen = t->mux_gen, .mux = t->mux, .fwds = t->fwds,
                               .fwd_status = t->fwd_status, .n_fwds = t->n_fwds, .close_ids = o->close_ids,
                               .deadline = now_mono() + t->spec.drain_timeout };
        mux_client_set_owner(o->mux, &old_ops, o);
        /* the run is the old master's now: the tunnel forgets it without an exit */
        ev_child_stop(t->ctx->loop, &t->child_watcher);
        ev_child_init(&o->child, on_old_exit, o->pid, 0);
        o->child.data = o;
        ev_child_start(t->ctx->loop, &o->child);
        ev_timer_init(&o->timer, on_old_timer, 0., 0.);
        o->timer.data = o;
        arm(t, &o->timer, t->spec.drain_timeout > 0 ? t->spec.drain_timeout : 0.);
        if (t->stderr_fd >= 0)
                close_stderr(t);        /* ssh ignores SIGPIPE: its last words are lost, not it */
        ev_timer_stop(t->ctx->loop, &t->gate_timer);
        ev_timer_stop(t->ctx->loop, &t->lifetime_timer);
        ev_timer_stop(t->ctx->loop, &t->deadline_timer);
        if (t->probe)
                probe_stop(t->probe);
        t->mux = NULL;
        t->fwds = NULL;
        t->fwd_status = NULL;
        t->n_fwds = 0;
        t->mux_ready = false;
        t->pid = 0;
        t->mux_old = o;
        spawn(t, NULL, reason, "make-before-break: a new ssh takes the forwards over");
        return true;
}

void handover_move(struct tunnel *t)
{
        struct mux_old *o = t->mux_old;

        if (!o || o->closes_left)
                return;
        for (size_t i = 0; i < o->n_fwds; i++) {
                struct mux_forward *m = new_twin(t, &o->fwds[i]);

                if (!m || o->fwds[i].st->state != FORWARD_OPEN || !o->mux)
                        continue;
                if (mux_client_close_forward(o->mux, &o->fwds[i].f, &o->close_ids[i]) < 0) {
                        o->close_ids[i] = 0;
                        continue;
                }
                m->st->state = FORWARD_PENDING;
                m->request_id = 0;
                m->handover = true;     /* opened once the old one let go */
                o->closes_left++;
        }
        if (o->closes_left == 0)
                start_drain(o);                         /* nothing to move: drain from now */
}

void handover_abort(struct tunnel *t, const char *why)
{
        if (t->mux_old)
                old_stop(t->mux_old, SIGTERM, why);
        for (struct mux_old *d = t->drainers; d; d = d->next)
                old_stop(d, SIGTERM, why);
}

void handover_free(struct tunnel *t)
{
        if (t->mux_old) {
                process_kill(t->mux_old->pid, SIGKILL);         /* libev reaps it */
                old_free(t->mux_old);
                t->mux_old = NULL;
        }
        while (t->drainers) {
                struct mux_old *d = t->drainers;

                t->drainers = d->next;
                process_kill(d->pid, SIGKILL);
                old_free(d);
        }
}
