/* SPDX-License-Identifier: MIT */
/* supervisor_pacing: pacing.h on the loop (declared in supervisor_internal.h): each connection's
 * destination and credentials from its spec, the start gate's holds, the runs' news, the
 * followers of a failed attempt, the timer of held connections. */

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pacing.h"
#include "supervisor_internal.h"

struct supervisor_pacing {
        struct supervisor *s;
        struct pacing *p;
        ev_timer timer;                 /* a held connection's time comes */
        double armed_for;
        bool dirty;                     /* something changed: when is the next time */
        char reason[160];               /* the gate's answer (valid until the next call) */
};

static struct pacing_member *member_of(const struct conn *c)
{
        struct supervisor_link *l = conn_get_owner(c);

        return &l->pacing;
}

/* ---- what a connection's destination and credentials are ---- */

static void put_field(struct buf *b, const char *s)
{
        buf_printf(b, "%zu:%s;", s ? strlen(s) : 0, s ? s : "");
}

static void put_lower(struct buf *b, const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                char ch = (char)tolower((unsigned char)s[i]);
                buf_append(b, &ch, 1);
        }
}

/* The first hop ssh connects to, as ssh sees it: the first jump host ([user@]host[:port],
 * ssh://…), else the host (ssh -G's hostname and port, when ssh was asked) and port. */
static void put_destination(struct buf *b, const struct tunnel_spec *s)
{
        if (s->jump_host) {
                const char *h = s->jump_host, *end = h + strcspn(h, ","), *at, *colon;

                if (strncmp(h, "ssh://", 6) == 0)
                        h += 6;
                at = memchr(h, '@', (size_t)(end - h));
                if (at)
                        h = at + 1;
                if (*h == '[') {                /* [v6]:port */
                        const char *close = memchr(h, ']', (size_t)(end - h));

                        if (close) {
                                put_lower(b, h + 1, (size_t)(close - h - 1));
                                buf_printf(b, ":%s", close[1] == ':' ? "" : "22");
                                if (close[1] == ':')
                                        buf_append(b, close + 2, (size_t)(end - close - 2));
                                return;
                        }
                }
                colon = memchr(h, ':', (size_t)(end - h));
                put_lower(b, h, (size_t)((colon ? colon : end) - h));
                buf_puts(b, ":");
                if (colon)
                        buf_append(b, colon + 1, (size_t)(end - colon - 1));
                else
                        buf_puts(b, "22");
                return;
        }
        {
                const char *host = s->ssh.viewed && s->ssh.hostname ? s->ssh.hostname : s->host;
                int port = s->ssh.viewed && s->ssh.port > 0 ? s->ssh.port : s->port > 0 ? s->port : 22;

                put_lower(b, host, strlen(host));
                buf_printf(b, ":%d", port);
        }
}

/* Everything that decides whether a login succeeds there. */
static void put_credentials(struct buf *b, const struct tunnel_spec *s)
{
        put_destination(b, s);
        buf_puts(b, "\n");
        put_field(b, s->host);
        buf_printf(b, "%d;", s->port);
        put_field(b, s->user);
        put_field(b, s->identity_file);
        put_field(b, s->jump_host);
        put_field(b, s->ssh_config_file);
        for (char **o = s->ssh_options; o && *o; o++)
                put_field(b, *o);
        buf_puts(b, "|");
        for (char **k = s->host_keys; k && *k; k++)
                put_field(b, *k);
        buf_puts(b, "|");
        for (char **k = s->jump_host_keys; k && *k; k++)
                put_field(b, *k);
}

static uint64_t digest(const struct tunnel_spec *s)
{
        _cleanup_buf_ struct buf b = {0};
        uint64_t h = UINT64_C(0xcbf29ce484222325);

        put_credentials(&b, s);
        for (size_t i = 0; i < b.len; i++)
                h = (h ^ (unsigned char)b.data[i]) * UINT64_C(0x100000001b3);
        return b.oom ? 0 : h;
}

/* c's member, joined to its current credentials; NULL if that cannot be done (no memory:
 * then c is not paced). */
static struct pacing_member *joined(struct supervisor_pacing *sp, struct conn *c)
{
        struct pacing_member *m = member_of(c);
        /* the destination its next start goes to: a tunnel's alternatives are paced each as its own */
        const struct tunnel_spec *spec = conn_get_dest_spec(c);
        _cleanup_buf_ struct buf dest = {0}, cred = {0};
        uint64_t h = digest(spec);
        char *d = NULL, *k = NULL;
        int r;

        if (h == 0)
                return NULL;
        if (m->cred && m->hash == h)
                return m;
        m->owner = c;
        put_destination(&dest, spec);
        put_credentials(&cred, spec);
        if (buf_steal(&dest, &d) < 0 || buf_steal(&cred, &k) < 0) {
                free(d);
                return NULL;
        }
        r = pacing_join(sp->p, m, h, d, k, now_mono());
        free(d);
        free(k);
        return r < 0 ? NULL : m;
}

/* ---- the gate ---- */

static const char *name_of(void *owner)
{
        return owner ? conn_get_name(owner) : "another tunnel";
}

const char *supervisor_pacing_gate(struct supervisor *s, struct conn *c)
{
        struct supervisor_pacing *sp = s->pacing;
        struct supervisor_link *l = conn_get_owner(c);
        struct pacing_member *m;
        struct pacing_decision v;
        double now = now_mono();
        char in[DURATION_MAX];

        /* the first time it is asked for a connection: every connection made since is
         * counted, so that the order between credentials (the one most share first) sees
         * them all, not only those that asked before */
        if (sp && !member_of(c)->cred)
                for (size_t i = 0; i < s->n_conns; i++)
                        if (!member_of(s->conns[i])->cred)
                                (void)joined(sp, s->conns[i]);
        if (!sp || !(m = joined(sp, c))) {
                start_queue_hold(&s->starts, &l->start, false);
                l->start.proven = false;
                return NULL;
        }
        l->start.proven = pacing_is_proven(m);
        v = pacing_ask(sp->p, m, s->starts.dequeuing == c, conn_get_failures(c) == 0, now);
        sp->dirty = true;
        start_queue_hold(&s->starts, &l->start, v.hold != PACING_GO);
        switch (v.hold) {
        case PACING_GO:
                return NULL;
        case PACING_HOLD_TURN:
                snprintf(sp->reason, sizeof(sp->reason), "waiting its turn to try new credentials on %s", v.destination);
                break;
        case PACING_HOLD_FOLLOW:
                snprintf(sp->reason, sizeof(sp->reason), "waiting for %s's ssh: the first try of these credentials on %s",
                         name_of(v.by), v.destination);
                break;
        case PACING_HOLD_FAILING:
                snprintf(sp->reason, sizeof(sp->reason), "these credentials failed on %s (%s): tried again in %s",
                         v.destination, failure_class_to_string(v.failure),
                         format_duration(v.until - now, in, sizeof(in)));
                break;
        case PACING_HOLD_BUDGET:
                snprintf(sp->reason, sizeof(sp->reason), "%.0f s of failed logins counted on %s: new credentials "
                         "wait %s, or the server would refuse this address", v.outstanding, v.destination,
                         format_duration(v.until - now, in, sizeof(in)));
                break;
        }
        return sp->reason;
}

/* ---- news ---- */

void supervisor_pacing_note(struct supervisor *s, struct conn *c, int event, int old)
{
        struct supervisor_pacing *sp = s->pacing;
        struct supervisor_link *l = conn_get_owner(c);
        struct pacing_member *m = &l->pacing;
        enum conn_state now = conn_get_state(c);
        double t = now_mono();

        if (!sp || !m->cred || event != CONN_EVENT_STATE)
                return;
        /* with alternatives: the credentials of the destination it is at now (a failed
         * fail-back leaves it up on the backup, not on the preferred one it tried) */
        if (!(m = joined(sp, c)))
                return;
        sp->dirty = true;
        if (now != CONN_QUEUED) {
                pacing_unwait(sp->p, m);
                start_queue_hold(&s->starts, &l->start, false);
        }
        if ((now == CONN_STARTING && pacing_started(sp->p, m, t)) ||
            (now == CONN_UP && old != CONN_UP && pacing_up(sp->p, m, t)))
                start_queue_kick(&s->starts);
        else if (now == CONN_BACKOFF)
                pacing_retry_at(sp->p, m, t + conn_get_retry_in(c, t));
}

void supervisor_pacing_run_ended(struct conn *c, const struct conn_run *run, void *userdata)
{
        struct supervisor *s = userdata;
        struct supervisor_pacing *sp = s->pacing;
        struct pacing_member *m = member_of(c);
        struct pacing_outcome o = {
                .answered = run->answered,
                .authenticated = run->authenticated,
                .failure = run->requested ? FAILURE_NONE : run->failure,
                .ran = run->ran,
        };
        struct pacing_end e;

        if (!sp || !m->cred)
                return;
        e = pacing_ended(sp->p, m, &o, run->ended_at);
        sp->dirty = true;
        if (e.kick || e.fail_followers)
                start_queue_kick(&s->starts);
}

/* ---- the loop ---- */

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct supervisor_pacing *sp = w->data;

        (void)loop;
        (void)revents;
        sp->armed_for = 0;
        sp->dirty = true;
        start_queue_kick(&sp->s->starts);
}

void supervisor_pacing_flush(struct supervisor *s)
{
        struct supervisor_pacing *sp = s->pacing;
        struct pacing_member *m;
        enum failure_class class;
        void *by;
        double now, next;

        if (!sp || !sp->dirty)
                return;
        sp->dirty = false;
        /* those that waited for an attempt that failed: its failure is theirs */
        while (pacing_take_follower(sp->p, &m, &by, &class)) {
                struct conn *c = m->owner;
                char why[160];

                if (conn_get_state(c) != CONN_QUEUED)
                        continue;
                snprintf(why, sizeof(why), "not started: %s's ssh with the same credentials failed just now", name_of(by));
                start_queue_hold(&s->starts, &((struct supervisor_link *)conn_get_owner(c))->start, false);
                conn_fail_unstarted(c, by ? conn_get_last_run(by) : NULL, class, why);
        }
        now = now_mono();
        next = pacing_next_change(sp->p, now);
        if (next > 0 && next != sp->armed_for) {
                sp->armed_for = next;
                ev_timer_stop(s->loop, &sp->timer);
                ev_timer_set(&sp->timer, next > now ? next - now + 0.01 : 0.01, 0.);
                ev_timer_start(s->loop, &sp->timer);
        } else if (next == 0 && sp->armed_for) {
                sp->armed_for = 0;
                ev_timer_stop(s->loop, &sp->timer);
        }
}

void supervisor_pacing_forget(struct supervisor *s, struct conn *c)
{
        if (!s->pacing)
                return;
        pacing_leave(s->pacing->p, member_of(c), now_mono());
        s->pacing->dirty = true;
}

int supervisor_pacing_new(struct supervisor *s, struct supervisor_pacing **ret)
{
        struct supervisor_pacing *sp = calloc(1, sizeof(*sp));
        int r;

        if (!sp)
                return -ENOMEM;
        r = pacing_new(&sp->p);
        if (r < 0) {
                free(sp);
                return r;
        }
        sp->s = s;
        ev_timer_init(&sp->timer, on_timer, 0., 0.);
        sp->timer.data = sp;
        *ret = sp;
        return 0;
}

struct supervisor_pacing *supervisor_pacing_free(struct supervisor_pacing *sp)
{
        if (!sp)
                return NULL;
        ev_timer_stop(sp->s->loop, &sp->timer);
        pacing_free(sp->p);
        free(sp);
        return NULL;
}
