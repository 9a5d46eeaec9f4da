/* SPDX-License-Identifier: MIT */
/* conn_alt: a connection's alternatives for its destination (config.h: tunnel_alts).
 * Alternative 0 is the spec's own destination, the preferred one; 1 … n-1 follow in the
 * configured order, each with its own ssh command line and files (conn_setup).
 *
 * Failover: a run that fails for a reason another host may not have (not a local one:
 * conn_alt_class_moves) makes the next start go to the next alternative at once; only a
 * full round of failures costs a backoff step. Fail-back: while a backup serves, the
 * preferred one is tried on its own backoff as a make-before-break candidate beside it
 * (conn_handover.c); the forwards move only once the candidate has been up for gatetime.
 * A candidate that fails is a failure of the preferred alternative alone: the backup
 * serves on, its run and counters untouched. */
#include "conn_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- what it is made of ---- */

bool conn_alt_class_moves(enum failure_class class)
{
        switch (class) {
        case FAILURE_AUTH:
        case FAILURE_HOST_KEY:
        case FAILURE_DNS:
        case FAILURE_REFUSED:
        case FAILURE_UNREACHABLE:
        case FAILURE_TIMEOUT:
        case FAILURE_CLOSED:
        case FAILURE_LOST:
        case FAILURE_PROBE:
        case FAILURE_PENALTY:
        case FAILURE_UNKNOWN:
                return true;
        default:
                /* config, exec, mux, killed, the forwards' own: the same on every host */
                return false;
        }
}

static void alt_done(struct conn_alt *a)
{
        conn_setup_done(&a->setup);
        tunnel_spec_done(&a->spec);
}

struct conn_alts *conn_alts_free(const struct conn *c, struct conn_alts *a)
{
        if (!a)
                return NULL;
        if (c) {
                ev_timer_stop(c->ctx->loop, &a->failback_timer);
                ev_timer_stop(c->ctx->loop, &a->hold_timer);
        }
        for (size_t i = 0; i < a->n; i++)
                alt_done(&a->v[i]);
        free(a->v);
        free(a);
        return NULL;
}

static void on_failback_timer(struct ev_loop *loop, ev_timer *w, int revents);
static void on_hold_timer(struct ev_loop *loop, ev_timer *w, int revents);

int conn_alts_new(const struct conn *c, const struct tunnel_spec *spec, const char *ssh, struct conn_alts **ret)
{
        struct conn_alts *a;
        int r = 0;

        *ret = NULL;
        if (spec->alts.n == 0)
                return 0;
        a = calloc(1, sizeof(*a));
        if (!a || !(a->v = calloc(spec->alts.n + 1, sizeof(*a->v)))) {
                free(a);
                return -ENOMEM;
        }
        a->n = spec->alts.n + 1;
        /* 0 is the connection's own spec and setup; each other one its own */
        for (size_t i = 1; i < a->n && r >= 0; i++) {
                r = tunnel_spec_alternative(spec, i, &a->v[i].spec);
                if (r >= 0)
                        r = conn_setup_new(c, &a->v[i].spec, ssh, i, &a->v[i].setup);
        }
        if (r < 0)
                return conn_alts_free(NULL, a), r;
        ev_timer_init(&a->failback_timer, on_failback_timer, 0., 0.);
        ev_timer_init(&a->hold_timer, on_hold_timer, 0., 0.);
        a->failback_timer.data = a->hold_timer.data = (void *)c;
        *ret = a;
        return 0;
}

const struct tunnel_spec *conn_alt_spec(const struct conn *c, size_t i)
{
        return c->alts && i > 0 && i < c->alts->n ? &c->alts->v[i].spec : &c->spec;
}

const struct conn_setup *conn_alt_setup(const struct conn *c, size_t i)
{
        return c->alts && i > 0 && i < c->alts->n ? &c->alts->v[i].setup : &c->setup;
}

size_t conn_alt_target(const struct conn *c)
{
        return c->alts ? c->alts->target : 0;
}

const char *conn_get_destination(const struct conn *c)
{
        return c->alts && c->run.alt < c->alts->n ? conn_alt_spec(c, c->run.alt)->host : NULL;
}

const struct tunnel_spec *conn_get_dest_spec(const struct conn *c)
{
        return conn_alt_spec(c, conn_alt_target(c));
}

void conn_alt_started(struct conn *c)
{
        if (c->alts && c->run.alt < c->alts->n)
                c->alts->v[c->run.alt].starts++;
}

void conn_alts_remove_files(const struct conn_alts *a, size_t from)
{
        for (size_t i = from > 1 ? from : 1; a && i < a->n; i++) {
                if (a->v[i].setup.jump_config_path)
                        (void)unlink(a->v[i].setup.jump_config_path);
                if (a->v[i].setup.known_hosts_path)
                        (void)unlink(a->v[i].setup.known_hosts_path);
        }
}

/* How the log names alternative i: its host, with the port where two share a host. */
const char *conn_alt_name(const struct conn *c, size_t i, char *buf, size_t size)
{
        const struct tunnel_spec *s = conn_alt_spec(c, i);
        bool twice = false;

        for (size_t k = 0; c->alts && k < c->alts->n && !twice; k++)
                twice = k != i && strcmp_null(conn_alt_spec(c, k)->host, s->host) == 0;
        if (twice)
                snprintf(buf, size, "%s:%d", s->host ? s->host : "?", s->port > 0 ? s->port : 22);
        else
                snprintf(buf, size, "%s", s->host ? s->host : "?");
        return buf;
}

/* ---- failing over ---- */

static void note_failure(struct conn_alts *a, size_t i, enum failure_class class)
{
        if (i >= a->n)
                return;
        a->v[i].last_failure = class != FAILURE_NONE ? class : FAILURE_UNKNOWN;
        a->v[i].failed_at = now_mono();
        a->v[i].failures++;
}

/* The next start goes to the next alternative: next says so, for the log. */
static void move_on(struct conn *c, const struct conn_run *run, char *next, size_t size)
{
        struct conn_alts *a = c->alts;
        size_t from = c->run.alt, to = (from + 1) % a->n;
        char f[128], t[128];

        a->target = to;
        snprintf(next, size, "failing over to %s (%s at %s)", conn_alt_name(c, to, t, sizeof(t)),
                 failure_class_to_string(run->failure != FAILURE_NONE ? run->failure : FAILURE_UNKNOWN),
                 conn_alt_name(c, from, f, sizeof(f)));
}

bool conn_alt_failover(struct conn *c, const struct conn_run *run, const struct verdict *v, unsigned failures_before,
                       char *next, size_t size)
{
        struct conn_alts *a = c->alts;

        if (!a)
                return false;
        note_failure(a, c->run.alt, run->failure);
        if (!conn_alt_class_moves(run->failure))
                return false;
        /* restart=never, max_starts, on-failure's exit 0 stand; fail_fast judges the whole list */
        if (v->kind == VERDICT_FAILED && strcmp(v->reason, "first start failed (fail_fast)") != 0)
                return false;
        if (++a->round >= a->n) {
                /* every alternative failed in a row: one backoff step, then the preferred first */
                a->round = 0;
                a->target = 0;
                return false;
        }
        move_on(c, run, next, size);
        a->failovers++;
        c->counters.failures = failures_before;
        return true;
}

bool conn_alt_path_died(struct conn *c, const struct conn_run *run, bool probe, char *next, size_t size)
{
        struct conn_alts *a = c->alts;

        if (!a)
                return false;
        if (!probe) {
                note_failure(a, c->run.alt, run->failure);
                a->failovers++;
                a->round = 1;
        }
        /* a probe of a dead path that found no TCP connection tries the next one: nothing counted */
        move_on(c, run, next, size);
        return true;
}

/* ---- failing back ---- */

static double failback_delay(const struct conn *c)
{
        const struct conn_alt *p = &c->alts->v[0];
        unsigned failures = p->failures > 0 ? p->failures : 1;

        return policy_failure_delay(&c->spec.sup, p->last_failure != FAILURE_NONE ? p->last_failure : FAILURE_UNKNOWN,
                                    failures) * (0.5 + 0.5 * random_unit());
}

static void arm_failback(struct conn *c)
{
        struct conn_alts *a = c->alts;
        struct log_ctx ctx = conn_log_ctx(c);
        char in[DURATION_MAX], p[128], s[128];
        double delay;

        if (ev_is_active(&a->failback_timer))
                return;
        delay = failback_delay(c);
        a->failback_at = now_mono() + delay;
        conn_arm(c, &a->failback_timer, delay);
        log_full(LOG_INFO, &ctx, "%s serves; %s is tried again in %s (make-before-break)",
                 conn_alt_name(c, c->run.alt, s, sizeof(s)), conn_alt_name(c, 0, p, sizeof(p)),
                 format_duration(delay, in, sizeof(in)));
}

static void end_failback(struct conn *c)
{
        struct conn_alts *a = c->alts;

        a->failing_back = a->holding = false;
        ev_timer_stop(c->ctx->loop, &a->hold_timer);
}

void conn_alt_on_state(struct conn *c)
{
        struct conn_alts *a = c->alts;

        if (!a)
                return;
        switch (c->state) {
        case CONN_UP:
                if (a->failing_back)
                        return;         /* the candidate came up: the hold is over (on_hold_timer) */
                a->round = 0;
                a->target = c->run.alt < a->n ? c->run.alt : 0;
                if (c->run.alt < a->n) {
                        a->v[c->run.alt].last_failure = FAILURE_NONE;
                        a->v[c->run.alt].failures = 0;
                }
                if (c->run.alt == 0)
                        ev_timer_stop(c->ctx->loop, &a->failback_timer);
                else
                        arm_failback(c);
                return;
        case CONN_STARTING:
        case CONN_QUEUED:
                if (conn_is_handing_over(c))
                        return;         /* a new ssh beside one that serves */
                /* fall through */
        default:
                end_failback(c);
                ev_timer_stop(c->ctx->loop, &a->failback_timer);
                return;
        }
}

static void on_failback_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct conn *c = w->data;
        struct conn_alts *a = c->alts;
        char why[160], p[128];
        size_t serving = c->run.alt;

        (void)loop;
        (void)revents;
        if (c->state != CONN_UP || serving == 0 || serving >= a->n || conn_is_handing_over(c) || c->run.kill_class != FAILURE_NONE)
                return;
        snprintf(why, sizeof(why), "failing back: %s is tried again", conn_alt_name(c, 0, p, sizeof(p)));
        a->target = 0;
        a->failing_back = true;
        if (!conn_handover_begin(c, why)) {
                a->target = serving;
                end_failback(c);
                arm_failback(c);
        }
}

/* The candidate's forwards move: what its MASTER_READY would have done. */
static void take_over(struct conn *c)
{
        conn_handover_move(c);
        conn_forwards_open_pending(c);
        conn_maybe_up(c);
        conn_pass_gate(c);
        conn_idle_on_ready(c);
}

static void on_hold_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct conn *c = w->data;
        struct conn_alts *a = c->alts;
        struct log_ctx ctx = conn_log_ctx(c);
        char gate[DURATION_MAX], p[128], s[128];

        (void)loop;
        (void)revents;
        if (!a->holding || c->state != CONN_STARTING || !c->master)
                return;
        end_failback(c);
        log_full(LOG_NOTICE, &ctx, "back on %s: its ssh (pid %d) has been up for gatetime %s; the forwards move to it, "
                 "%s drains", conn_alt_name(c, 0, p, sizeof(p)), (int)master_pid(c->master),
                 format_duration(c->spec.sup.gatetime, gate, sizeof(gate)),
                 c->olds ? conn_alt_name(c, c->olds->run.alt, s, sizeof(s)) : "the backup");
        take_over(c);
}

bool conn_alt_hold(struct conn *c)
{
        struct conn_alts *a = c->alts;
        struct log_ctx ctx;
        char gate[DURATION_MAX], p[128], s[128];

        if (!a || !a->failing_back)
                return false;
        if (a->holding)
                return true;
        if (!c->master || !master_is_authenticated(c->master) || !master_is_ready(c->master))
                return true;            /* not both yet: nothing moves */
        if (c->spec.sup.gatetime <= 0 || !conn_is_handing_over(c)) {
                end_failback(c);        /* nothing to wait for (or nobody serves meanwhile) */
                return false;
        }
        a->holding = true;
        ev_timer_stop(c->ctx->loop, &c->deadline_timer);
        conn_set_connecting(c, false);
        conn_handover_extend(c, c->spec.sup.gatetime);
        conn_arm(c, &a->hold_timer, c->spec.sup.gatetime);
        ctx = conn_log_ctx(c);
        log_full(LOG_NOTICE, &ctx, "%s answers again (ssh pid %d): it takes the forwards over once it has been up for "
                 "gatetime %s; %s serves meanwhile", conn_alt_name(c, 0, p, sizeof(p)), (int)master_pid(c->master),
                 format_duration(c->spec.sup.gatetime, gate, sizeof(gate)),
                 c->olds ? conn_alt_name(c, c->olds->run.alt, s, sizeof(s)) : "the backup");
        return true;
}

void conn_alt_old_ended(struct conn *c)
{
        struct conn_alts *a = c->alts;

        /* the backup went while the candidate waited: it serves now, gatetime or not */
        if (a && a->holding && c->state == CONN_STARTING && c->master) {
                end_failback(c);
                take_over(c);
        }
}

bool conn_alt_failback_failed(struct conn *c, const struct conn_run *run, const char *what)
{
        struct conn_alts *a = c->alts;
        char in[DURATION_MAX], pn[128], sn[128];
        double delay;

        if (!a || !a->failing_back)
                return false;
        end_failback(c);
        if (!conn_handover_revert(c))
                return false;   /* nothing to go back to: the connection's own failure */
        note_failure(a, 0, run->failure);
        a->target = c->run.alt;
        c->last_run = *run;
        if (c->counters.starts > 0)
                c->counters.starts--;   /* max_starts counts the connection's starts, not its tries of the preferred */
        conn_forwards_open_pending(c);
        if (c->spec.sup.gatetime > 0 && !c->run.gate_passed)
                conn_arm(c, &c->gate_timer, c->spec.sup.gatetime - (now_mono() - c->run.up_since));
        delay = failback_delay(c);
        a->failback_at = now_mono() + delay;
        conn_arm(c, &a->failback_timer, delay);
        conn_set_state(c, CONN_UP, LOG_WARNING, run, "failing back to %s failed: %s; %s (ssh pid %d) serves on; %s is "
                       "tried again in %s", conn_alt_name(c, 0, pn, sizeof(pn)), what,
                       conn_alt_name(c, c->run.alt, sn, sizeof(sn)), (int)master_pid(c->master),
                       conn_alt_name(c, 0, pn, sizeof(pn)), format_duration(delay, in, sizeof(in)));
        for (struct conn_user *u = c->users; u; u = u->next)
                if (u->ops->handed_over)
                        u->ops->handed_over(u, run);
        return true;
}

/* ---- a reload ---- */

/* Old alternative i's place among the new ones (n: gone). */
static size_t find_new(const struct tunnel_spec *old, size_t i, const struct tunnel_spec *new)
{
        if (i == 0)
                return 0;       /* the spec's own destination: a change of it is a new command line */
        for (size_t k = 1; k <= new->alts.n; k++)
                if (i <= old->alts.n && tunnel_alt_equal(&old->alts.v[i - 1], &new->alts.v[k - 1]))
                        return k;
        return new->alts.n + 1;
}

bool conn_alt_reconfigure(struct conn *c, const struct tunnel_spec *old, const struct tunnel_spec *new,
                          struct conn_alts **next)
{
        struct conn_alts *a = c->alts, *b = *next;
        size_t n = 1 + new->alts.n, serving = c->run.alt, to;
        bool moves, was_holding = a && a->holding;

        *next = NULL;
        for (size_t i = 0; a && b && i < a->n; i++) {
                size_t k = find_new(old, i, new);

                if (k < n) {
                        b->v[k].last_failure = a->v[i].last_failure;
                        b->v[k].failed_at = a->v[i].failed_at;
                        b->v[k].failures = a->v[i].failures;
                        b->v[k].starts = a->v[i].starts;
                }
        }
        to = find_new(old, serving, new);
        moves = to >= n;
        c->run.alt = moves ? SIZE_MAX : to;
        for (struct conn_old *o = c->olds; o; o = o->next) {
                size_t k = find_new(old, o->run.alt, new);
                o->run.alt = k < n ? k : SIZE_MAX;      /* its alternative was removed: it drains anyway */
        }
        if (b) {
                size_t target = a ? find_new(old, a->target, new) : 0;

                b->failovers = a ? a->failovers : 0;
                b->target = moves || target >= n ? 0 : target;
                b->failback_timer.data = b->hold_timer.data = c;
        }
        if (a) {
                if (a->failing_back && b) {
                        b->failing_back = a->failing_back;
                        b->holding = a->holding;
                        if (ev_is_active(&a->hold_timer))
                                conn_arm(c, &b->hold_timer, ev_timer_remaining(c->ctx->loop, &a->hold_timer));
                }
                conn_alts_remove_files(a, b ? b->n : 1);
                conn_alts_free(c, a);
        }
        c->alts = b;
        if (was_holding && !b && c->state == CONN_STARTING && c->master)
                take_over(c);   /* no alternatives any more: nothing to wait for */
        if (!moves && b && c->state == CONN_UP && !b->failing_back)
                conn_alt_on_state(c);   /* a backup that serves now (reordered): the preferred is tried */
        return moves;
}

/* ---- what others read ---- */

size_t conn_alt_count(const struct conn *c)
{
        return c->alts ? c->alts->n : 0;
}

ssize_t conn_alt_serving(const struct conn *c)
{
        if (conn_is_handing_over(c))
                return c->olds->run.alt == SIZE_MAX ? -1 : (ssize_t)c->olds->run.alt;
        if (c->state == CONN_UP)
                return (ssize_t)c->run.alt;
        return -1;
}

unsigned long conn_alt_failovers(const struct conn *c)
{
        return c->alts ? c->alts->failovers : 0;
}

void conn_alt_get(const struct conn *c, size_t i, double now, struct conn_alt_info *ret)
{
        const struct tunnel_spec *s = conn_alt_spec(c, i);
        const struct conn_alt *a = c->alts && i < c->alts->n ? &c->alts->v[i] : NULL;

        *ret = (struct conn_alt_info){
                .host = s->host,
                .port = s->port,
                .serving = conn_alt_serving(c) == (ssize_t)i,
                .last_failure = a ? a->last_failure : FAILURE_NONE,
                .failed_ago = a && a->failed_at > 0 ? now - a->failed_at : -1,
                .starts = a ? a->starts : 0,
                .retry_in = c->alts && i == 0 && ev_is_active(&c->alts->failback_timer) ? c->alts->failback_at - now : -1,
        };
}
