/* SPDX-License-Identifier: MIT */
/* pacing: destinations' budgets and credentials' attempts (pacing.h). */
#include "pacing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* After a failure that repeats, until the attempt's own backoff says when it tries again. */
#define RETRY_FALLBACK 60.0
/* What sshd caps a penalty at (PerSourcePenalties max): tunneld never counts more. */
#define COUNT_MAX 600.0

struct pacing_dest {
        char *key;
        uint64_t hash;
        double outstanding, at;         /* the count as of at (it runs down a second a second) */
        unsigned in_flight;             /* unproven attempts under way */
        struct pacing_cred *creds;      /* its credentials */
        size_t n_creds;
        struct pacing_dest *bucket_next;
};

struct pacing_cred {
        char *key;
        uint64_t hash;
        struct pacing_dest *dest;
        size_t n_members;
        bool proven;
        bool failing;                   /* failed in a way that repeats: next_at is its next attempt */
        enum failure_class failure;
        double next_at;
        void *last_by;                  /* the owner whose attempt failed last */
        struct pacing_member *attempt;  /* the unproven attempt under way */
        struct pacing_member *head, *tail;      /* waiting, oldest first */
        size_t n_waiting;
        /* an attempt failed: those that waited for it (seq <= upto) take its failure */
        bool pending;
        enum failure_class pending_class;
        uint64_t pending_upto;
        void *pending_by;
        struct pacing_cred *pending_next;
        struct pacing_cred *dest_prev, *dest_next, *bucket_next;
};

struct table {
        void **buckets;                 /* struct pacing_dest * or struct pacing_cred * */
        size_t size, n;
};

struct pacing {
        struct table dests, creds;
        uint64_t seq;
        struct pacing_cred *pending;    /* credentials whose waiting members take a failure */
        void *taken_by;                 /* what pacing_take_follower returned last */
};

/* ---- the server's count ---- */

double pacing_cost(const struct pacing_outcome *o)
{
        if (o->authenticated)
                return 0;
        switch (o->failure) {
        case FAILURE_AUTH:
                return PACING_COST_AUTH;        /* the server answered: a failed login */
        case FAILURE_NONE:              /* a stop tunneld asked for, before it authenticated */
        case FAILURE_HOST_KEY:          /* ssh hangs up in the key exchange, before any login */
        case FAILURE_TIMEOUT:
        case FAILURE_CLOSED:
        case FAILURE_KILLED:
        case FAILURE_LOST:
        case FAILURE_MUX:
        case FAILURE_PROBE:
        case FAILURE_UNKNOWN:
                if (!o->answered)
                        /* no banner: most likely no session process either; if one was
                         * made, a connection that never tried */
                        return PACING_COST_NOAUTH;
                if (o->failure == FAILURE_HOST_KEY)
                        return PACING_COST_NOAUTH;
                /* it may have tried a key by then (a failed login), or outlasted the grace time */
                return o->ran >= PACING_GRACE_TIME ? PACING_COST_GRACE : PACING_COST_AUTH;
        case FAILURE_DNS:
        case FAILURE_REFUSED:
        case FAILURE_UNREACHABLE:
        case FAILURE_PENALTY:           /* refused before its session process: not counted */
        case FAILURE_CONFIG:            /* ssh did not connect */
        case FAILURE_EXEC:
        case FAILURE_LOCAL_FORWARD:
        case FAILURE_REMOTE_FORWARD:
        case FAILURE_FORWARD_DENIED:
        case _FAILURE_MAX:
                return 0;
        }
        return 0;
}

bool pacing_class_repeats(enum failure_class c)
{
        return c == FAILURE_AUTH || c == FAILURE_HOST_KEY || c == FAILURE_CONFIG || c == FAILURE_EXEC;
}

bool pacing_class_shared(enum failure_class c)
{
        switch (c) {
        case FAILURE_AUTH:
        case FAILURE_HOST_KEY:
        case FAILURE_CONFIG:
        case FAILURE_EXEC:
        case FAILURE_DNS:
        case FAILURE_REFUSED:
        case FAILURE_UNREACHABLE:
        case FAILURE_TIMEOUT:
        case FAILURE_CLOSED:
        case FAILURE_PENALTY:
                return true;
        default:
                return false;
        }
}

static double count_at(const struct pacing_dest *d, double now)
{
        double left = d->outstanding - (now - d->at);

        return left > 0 ? left : 0;
}

static void charge(struct pacing_dest *d, double cost, double now)
{
        double c = count_at(d, now) + cost;

        d->outstanding = c > COUNT_MAX ? COUNT_MAX : c;
        d->at = now;
}

/* ---- tables ---- */

static uint64_t hash_string(const char *s)
{
        uint64_t h = UINT64_C(0xcbf29ce484222325);

        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * UINT64_C(0x100000001b3);
        return h;
}

static void **dest_next_ptr(void *e) { return (void **)&((struct pacing_dest *)e)->bucket_next; }
static void **cred_next_ptr(void *e) { return (void **)&((struct pacing_cred *)e)->bucket_next; }

static int table_grow(struct table *t, void **(*next)(void *), uint64_t (*hash_of)(void *))
{
        size_t size = t->size ? t->size * 2 : 64;
        void **b = calloc(size, sizeof(void *));

        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < t->size; i++)
                for (void *e = t->buckets[i], *n; e; e = n) {
                        n = *next(e);
                        *next(e) = b[hash_of(e) & (size - 1)];
                        b[hash_of(e) & (size - 1)] = e;
                }
        free(t->buckets);
        t->buckets = b;
        t->size = size;
        return 0;
}

static uint64_t dest_hash(void *e) { return ((struct pacing_dest *)e)->hash; }
static uint64_t cred_hash(void *e) { return ((struct pacing_cred *)e)->hash; }

static int table_add(struct table *t, void *e, uint64_t h, void **(*next)(void *), uint64_t (*hash_of)(void *))
{
        if (t->n + 1 > t->size / 2 && table_grow(t, next, hash_of) < 0)
                return -ENOMEM;
        *next(e) = t->buckets[h & (t->size - 1)];
        t->buckets[h & (t->size - 1)] = e;
        t->n++;
        return 0;
}

static void table_remove(struct table *t, void *e, uint64_t h, void **(*next)(void *))
{
        for (void **p = &t->buckets[h & (t->size - 1)]; *p; p = next(*p))
                if (*p == e) {
                        *p = *next(e);
                        t->n--;
                        return;
                }
}

static struct pacing_dest *find_dest(const struct pacing *p, const char *key, uint64_t h)
{
        if (!p->dests.size)
                return NULL;
        for (struct pacing_dest *d = p->dests.buckets[h & (p->dests.size - 1)]; d; d = d->bucket_next)
                if (d->hash == h && strcmp(d->key, key) == 0)
                        return d;
        return NULL;
}

static struct pacing_cred *find_cred(const struct pacing *p, const char *key, uint64_t h)
{
        if (!p->creds.size)
                return NULL;
        for (struct pacing_cred *c = p->creds.buckets[h & (p->creds.size - 1)]; c; c = c->bucket_next)
                if (c->hash == h && strcmp(c->key, key) == 0)
                        return c;
        return NULL;
}

/* ---- life ---- */

int pacing_new(struct pacing **ret)
{
        struct pacing *p = calloc(1, sizeof(*p));

        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

static void free_dest(struct pacing *p, struct pacing_dest *d)
{
        table_remove(&p->dests, d, d->hash, dest_next_ptr);
        free(d->key);
        free(d);
}

static void unlink_pending(struct pacing *p, struct pacing_cred *c)
{
        for (struct pacing_cred **q = &p->pending; *q; q = &(*q)->pending_next)
                if (*q == c) {
                        *q = c->pending_next;
                        break;
                }
        c->pending = false;
        c->pending_next = NULL;
}

static void free_cred(struct pacing *p, struct pacing_cred *c)
{
        struct pacing_dest *d = c->dest;

        if (c->pending)
                unlink_pending(p, c);
        table_remove(&p->creds, c, c->hash, cred_next_ptr);
        if (c->dest_prev)
                c->dest_prev->dest_next = c->dest_next;
        else
                d->creds = c->dest_next;
        if (c->dest_next)
                c->dest_next->dest_prev = c->dest_prev;
        d->n_creds--;
        free(c->key);
        free(c);
}

struct pacing *pacing_free(struct pacing *p)
{
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->creds.size; i++)
                for (struct pacing_cred *c = p->creds.buckets[i], *n; c; c = n) {
                        n = c->bucket_next;
                        free(c->key);
                        free(c);
                }
        for (size_t i = 0; i < p->dests.size; i++)
                for (struct pacing_dest *d = p->dests.buckets[i], *n; d; d = n) {
                        n = d->bucket_next;
                        free(d->key);
                        free(d);
                }
        free(p->creds.buckets);
        free(p->dests.buckets);
        free(p);
        return NULL;
}

/* Forget destinations no credential uses and whose count has run down: keep the rest. */
static void maybe_free_dest(struct pacing *p, struct pacing_dest *d, double now)
{
        if (d->n_creds == 0 && d->in_flight == 0 && count_at(d, now) <= 0)
                free_dest(p, d);
}

static void drop_member(struct pacing *p, struct pacing_member *m, double now)
{
        struct pacing_cred *c = m->cred;
        struct pacing_dest *d;

        if (!c)
                return;
        pacing_unwait(p, m);
        if (m->attempt) {
                /* an attempt that ends with no result: count the worst of it */
                m->attempt = false;
                c->attempt = NULL;
                c->dest->in_flight--;
                charge(c->dest, PACING_COST_AUTH, now);
        }
        m->running = false;
        m->cred = NULL;
        d = c->dest;
        if (--c->n_members == 0 && !c->proven && !c->failing) {
                free_cred(p, c);
                maybe_free_dest(p, d, now);
        } else if (c->n_members == 0) {
                /* what it proved (or how it failed) is worth keeping for a reload that
                 * brings it back; it is freed with the rest */
        }
}

int pacing_join(struct pacing *p, struct pacing_member *m, uint64_t hash, const char *dest, const char *cred,
                double now)
{
        uint64_t dh = hash_string(dest), ch = hash_string(cred);
        struct pacing_dest *d;
        struct pacing_cred *c;

        if (m->cred && m->hash == hash)
                return 0;
        c = find_cred(p, cred, ch);
        if (c && c == m->cred) {
                m->hash = hash;
                return 0;
        }
        d = find_dest(p, dest, dh);
        if (!d) {
                d = calloc(1, sizeof(*d));
                if (!d || !(d->key = strdup(dest)) || table_add(&p->dests, d, dh, dest_next_ptr, dest_hash) < 0) {
                        if (d)
                                free(d->key);
                        free(d);
                        return -ENOMEM;
                }
                d->hash = dh;
        }
        if (!c) {
                c = calloc(1, sizeof(*c));
                if (!c || !(c->key = strdup(cred)) || table_add(&p->creds, c, ch, cred_next_ptr, cred_hash) < 0) {
                        if (c)
                                free(c->key);
                        free(c);
                        maybe_free_dest(p, d, now);
                        return -ENOMEM;
                }
                c->hash = ch;
                c->dest = d;
                c->dest_next = d->creds;
                if (d->creds)
                        d->creds->dest_prev = c;
                d->creds = c;
                d->n_creds++;
        }
        drop_member(p, m, now);
        m->cred = c;
        m->hash = hash;
        c->n_members++;
        return 0;
}

void pacing_leave(struct pacing *p, struct pacing_member *m, double now)
{
        drop_member(p, m, now);
}

/* ---- waiting ---- */

static void wait_on(struct pacing *p, struct pacing_member *m)
{
        struct pacing_cred *c = m->cred;

        if (m->waiting)
                return;
        m->waiting = true;
        m->seq = ++p->seq;
        m->next = NULL;
        m->prev = c->tail;
        if (c->tail)
                c->tail->next = m;
        else
                c->head = m;
        c->tail = m;
        c->n_waiting++;
}

void pacing_unwait(struct pacing *p, struct pacing_member *m)
{
        struct pacing_cred *c = m->cred;

        (void)p;
        if (!m->waiting || !c)
                return;
        if (m->prev)
                m->prev->next = m->next;
        else
                c->head = m->next;
        if (m->next)
                m->next->prev = m->prev;
        else
                c->tail = m->prev;
        m->prev = m->next = NULL;
        m->waiting = false;
        c->n_waiting--;
}

/* May c's next unproven attempt go now, as far as c itself goes? (A member asking fresh
 * may make it due sooner: it is in line then.) */
static bool cred_due(const struct pacing_cred *c, double now)
{
        return !c->proven && !c->attempt && (!c->failing || now >= c->next_at);
}

/* The credential that goes first at d among those that wait: the one most connections
 * share, then the one that has waited longest. NULL if none is due. self (if not NULL) is
 * in line whatever its failure (asked by a fresh member). */
static struct pacing_cred *first_in_line(const struct pacing_dest *d, const struct pacing_cred *self, double now)
{
        struct pacing_cred *best = NULL;

        for (struct pacing_cred *c = d->creds; c; c = c->dest_next) {
                bool in_line = (self && c == self) || cred_due(c, now);

                if (!c->n_waiting || !in_line)
                        continue;
                if (!best || c->n_members > best->n_members ||
                    (c->n_members == best->n_members && c->head->seq < best->head->seq))
                        best = c;
        }
        return best;
}

/* Other credentials at d that are not proven and have connections: the order between
 * them is decided in the start queue's turn, once every one has asked. */
static bool others_unproven(const struct pacing_dest *d, const struct pacing_cred *self)
{
        for (const struct pacing_cred *c = d->creds; c; c = c->dest_next)
                if (c != self && !c->proven && c->n_members > 0)
                        return true;
        return false;
}

/* How long until the count at d leaves room for one more attempt (0: now). */
static double room_in(const struct pacing_dest *d, double now)
{
        double over = count_at(d, now) + PACING_COST_AUTH * (d->in_flight + 1) - PACING_BUDGET;

        return over > 0 ? over : 0;
}

struct pacing_decision pacing_ask(struct pacing *p, struct pacing_member *m, bool from_queue, bool fresh,
                                  double now)
{
        struct pacing_decision v = { .hold = PACING_GO };
        struct pacing_cred *c = m->cred;
        struct pacing_dest *d;
        double wait;

        if (!c || c->proven || c->attempt == m) {
                pacing_unwait(p, m);
                return v;
        }
        d = c->dest;
        v.destination = d->key;
        wait_on(p, m);          /* among those in line while it is judged */
        if (c->attempt) {
                v.hold = PACING_HOLD_FOLLOW;
                v.by = c->attempt->owner;
        } else if (c->failing && now < c->next_at && !fresh) {
                v.hold = PACING_HOLD_FAILING;
                v.until = c->next_at;
                v.failure = c->failure;
                v.by = c->last_by;
        } else if ((wait = room_in(d, now)) > 0) {
                v.hold = PACING_HOLD_BUDGET;
                v.until = now + wait;
                v.outstanding = count_at(d, now);
        } else if (from_queue ? first_in_line(d, c, now) != c : others_unproven(d, c)) {
                v.hold = PACING_HOLD_TURN;
        }
        if (v.hold == PACING_GO)
                pacing_unwait(p, m);
        return v;
}

bool pacing_started(struct pacing *p, struct pacing_member *m, double now)
{
        struct pacing_cred *c = m->cred;

        pacing_unwait(p, m);
        if (!c)
                return false;
        m->running = true;
        if (c->proven || c->attempt)
                return false;
        m->attempt = true;
        c->attempt = m;
        c->dest->in_flight++;
        /* its followers wait; another credential may fit beside it */
        return room_in(c->dest, now) == 0 && first_in_line(c->dest, NULL, now) != NULL;
}

bool pacing_up(struct pacing *p, struct pacing_member *m, double now)
{
        struct pacing_cred *c = m->cred;
        bool was_attempt = m->attempt, news;

        (void)p;
        (void)now;
        if (!c)
                return false;
        c->failing = false;
        if (was_attempt) {
                m->attempt = false;
                c->attempt = NULL;
                c->dest->in_flight--;
        }
        news = was_attempt || !c->proven;
        c->proven = true;
        return news;    /* its followers go, and the room it held is free */
}

static void set_pending(struct pacing *p, struct pacing_cred *c, enum failure_class class, void *by)
{
        if (!c->n_waiting)
                return;
        c->pending_class = class;
        c->pending_upto = p->seq;
        c->pending_by = by;
        if (!c->pending) {
                c->pending = true;
                c->pending_next = p->pending;
                p->pending = c;
        }
}

struct pacing_end pacing_ended(struct pacing *p, struct pacing_member *m, const struct pacing_outcome *o, double now)
{
        struct pacing_end e = { .kick = false };
        struct pacing_cred *c = m->cred;
        struct pacing_dest *d;
        bool was_attempt = m->attempt;

        if (!c)
                return e;
        d = c->dest;
        m->running = false;
        if (was_attempt) {
                m->attempt = false;
                c->attempt = NULL;
                d->in_flight--;
        }
        charge(d, pacing_cost(o), now);
        if (o->failure == FAILURE_PENALTY && count_at(d, now) < PACING_PENALTY_ASSUMED) {
                d->outstanding = PACING_PENALTY_ASSUMED;
                d->at = now;
        }
        e.kick = true;          /* the room it held is free, or the count changed */
        if (o->authenticated || o->failure == FAILURE_NONE)
                return e;
        if (pacing_class_repeats(o->failure)) {
                /* the same credentials fail the same way: proven no more */
                c->proven = false;
                c->failing = true;
                c->failure = o->failure;
                c->next_at = now + RETRY_FALLBACK;
                c->last_by = m->owner;
        }
        if (was_attempt && pacing_class_shared(o->failure)) {
                set_pending(p, c, o->failure, m->owner);
                e.fail_followers = c->pending;
        }
        return e;
}

void pacing_retry_at(struct pacing *p, struct pacing_member *m, double at)
{
        struct pacing_cred *c = m->cred;

        (void)p;
        if (c && c->failing && c->last_by == m->owner)
                c->next_at = at;
}

bool pacing_take_follower(struct pacing *p, struct pacing_member **ret, void **ret_by, enum failure_class *ret_class)
{
        while (p->pending) {
                struct pacing_cred *c = p->pending;
                struct pacing_member *m = c->head;

                if (!m || m->seq > c->pending_upto) {
                        unlink_pending(p, c);
                        continue;
                }
                pacing_unwait(p, m);
                *ret = m;
                *ret_by = p->taken_by = c->pending_by;
                *ret_class = c->pending_class;
                return true;
        }
        return false;
}

double pacing_next_change(const struct pacing *p, double now)
{
        double next = 0;

        for (size_t i = 0; i < p->creds.size; i++)
                for (const struct pacing_cred *c = p->creds.buckets[i]; c; c = c->bucket_next) {
                        double at = 0;

                        if (!c->n_waiting || c->proven || c->attempt)
                                continue;
                        if (c->failing && now < c->next_at)
                                at = c->next_at;
                        else if (room_in(c->dest, now) > 0)
                                at = now + room_in(c->dest, now);
                        if (at > 0 && (next == 0 || at < next))
                                next = at;
                }
        return next;
}

double pacing_outstanding(const struct pacing *p, const struct pacing_member *m, double now)
{
        (void)p;
        return m->cred ? count_at(m->cred->dest, now) : 0;
}

bool pacing_is_proven(const struct pacing_member *m)
{
        return m->cred && m->cred->proven;
}
