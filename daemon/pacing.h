/* SPDX-License-Identifier: MIT */
#pragma once

/* pacing: how tunneld tries credentials a server has not accepted yet, so that a server
 * that penalises failed logins never blocks this address. sshd 9.8 and later
 * (PerSourcePenalties, on by default) count 5 s for a connection that failed to
 * authenticate, 1 s for one that never tried, 10 s for one that outlasted LoginGraceTime;
 * the count runs down by a second a second, and past 15 s the server refuses every
 * connection from the address (the good tunnels' too) for as long as it has left, up to
 * 10 minutes. fail2ban and sshguard ban on a handful of failures too.
 *
 * A destination is the first hop tunneld's ssh connects to (host and port as ssh sees
 * them, or the first jump host): it has one budget, what tunneld counts it has accrued
 * there. A credential is everything that decides whether a login succeeds there (the
 * destination, host, user, identity, jump hosts, ssh options, pinned keys). Then:
 *
 * - a credential that authenticated (proven) is never held back;
 * - an unproven one goes one attempt at a time: the connections that share it wait for
 *   the first one's result (success: they all go; a failure: they take it as theirs);
 * - a credential that failed in a way that can only repeat (auth, host-key, config,
 *   exec) is tried again once per backoff of the connection that tried it, not once per
 *   connection;
 * - an unproven attempt starts only while the destination's count plus a failed login for
 *   each attempt under way (this one included) stays within PACING_BUDGET; among the
 *   credentials waiting for a destination, the one most connections share goes first.
 *
 * Pure: no clock, no loop, no process (the caller passes times and does what it is told);
 * tests/test-pacing.c holds it to this. supervisor_pacing.c is the mechanism. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ssh_output.h"

/* sshd's defaults (PerSourcePenalties): refused once more than this is outstanding… */
#define PACING_BLOCK_AT 15.0
/* …so tunneld lets at most this accrue: a failed login of someone else's still fits. */
#define PACING_BUDGET 10.0
#define PACING_COST_AUTH 5.0            /* authfail, invaliduser */
#define PACING_COST_NOAUTH 1.0          /* a connection that never tried to authenticate */
#define PACING_COST_GRACE 10.0          /* LoginGraceTime exceeded */
#define PACING_GRACE_TIME 120.0         /* sshd's default LoginGraceTime */
/* A refusal for a penalty: the block began with more than PACING_BLOCK_AT outstanding;
 * tunneld counts at least this, so the next unproven attempt waits it out. */
#define PACING_PENALTY_ASSUMED (PACING_BLOCK_AT + PACING_COST_AUTH)

/* How a run to the destination ended, as far as the server's count goes. */
struct pacing_outcome {
        bool answered;                  /* the server sent its banner (a session process of its ran) */
        bool authenticated;
        enum failure_class failure;     /* NONE: none (a stop tunneld asked for) */
        double ran;                     /* seconds */
};

/* What the server counted for a run (0 once it authenticated). */
double pacing_cost(const struct pacing_outcome *o);
/* The same credentials would fail the same way: one attempt per backoff for them all. */
bool pacing_class_repeats(enum failure_class c);
/* Those that wait for an attempt take its failure as theirs (its class says nothing of
 * the credentials or the server, e.g. killed: they try for themselves). */
bool pacing_class_shared(enum failure_class c);

struct pacing;
struct pacing_cred;

enum pacing_hold {
        PACING_GO,                      /* start now */
        PACING_HOLD_TURN,               /* another credential for the destination goes first */
        PACING_HOLD_FOLLOW,             /* an attempt with the same credentials is under way */
        PACING_HOLD_FAILING,            /* the credentials failed; their next attempt is at until */
        PACING_HOLD_BUDGET,             /* the destination's count leaves no room until until */
};

/* One connection, as pacing knows it: kept inside its owner's bookkeeping. */
struct pacing_member {
        void *owner;
        struct pacing_cred *cred;       /* NULL: not joined */
        uint64_t hash;                  /* of what it joined with (pacing_join) */
        bool waiting;                   /* held by pacing */
        uint64_t seq;                   /* its place among those waiting */
        bool running;                   /* its ssh runs (from pacing_started to pacing_ended) */
        bool attempt;                   /* …as its credentials' unproven attempt */
        struct pacing_member *prev, *next;      /* its credentials' waiting list */
};

struct pacing_decision {
        enum pacing_hold hold;
        double until;                   /* FAILING, BUDGET: when it may change (or sooner, on news) */
        void *by;                       /* FOLLOW: the attempt's owner; FAILING: the failed one's */
        enum failure_class failure;     /* FAILING: its class */
        double outstanding;             /* BUDGET: what tunneld counts accrued at the destination */
        const char *destination;
};

int pacing_new(struct pacing **ret);
struct pacing *pacing_free(struct pacing *p);

/* m uses these credentials (cred, which includes dest) from now on; hash is the caller's
 * digest of them (a member that joins with the same hash again stays where it is). 0 or
 * -ENOMEM. */
int pacing_join(struct pacing *p, struct pacing_member *m, uint64_t hash, const char *dest, const char *cred,
                double now);
/* m goes (its connection is freed): an attempt under way ends with no result. */
void pacing_leave(struct pacing *p, struct pacing_member *m, double now);

/* May m's ssh start now? from_queue: asked from the start queue's turn (in the loop's
 * prepare), not from a connection's own callback: only then may an unproven credential
 * that shares its destination with others go. fresh: m has not failed since it was
 * started (a first start, or a start by request): it is not held for its credentials'
 * next attempt (but follows one under way, and waits for room as any other). A hold keeps
 * m waiting until it is asked again (pacing_unwait when it stops waiting otherwise). */
struct pacing_decision pacing_ask(struct pacing *p, struct pacing_member *m, bool from_queue, bool fresh,
                                  double now);
void pacing_unwait(struct pacing *p, struct pacing_member *m);
/* m's ssh was spawned. True if another may go now (ask the waiting ones again). */
bool pacing_started(struct pacing *p, struct pacing_member *m, double now);
/* m authenticated: its credentials are proven. True if others may go now. */
bool pacing_up(struct pacing *p, struct pacing_member *m, double now);

struct pacing_end {
        bool kick;                      /* others may go now */
        bool fail_followers;            /* those waiting for this attempt take its failure */
};
/* m's run ended (a stop tunneld asked for too). */
struct pacing_end pacing_ended(struct pacing *p, struct pacing_member *m, const struct pacing_outcome *o,
                               double now);
/* m's credentials failed, and m tries again at this time (its backoff): their next attempt. */
void pacing_retry_at(struct pacing *p, struct pacing_member *m, double at);

/* The members to take the failure of their credentials' attempt, one at a time: false
 * once there is none left. *ret_by names the attempt (its owner, valid until the next
 * call). */
bool pacing_take_follower(struct pacing *p, struct pacing_member **ret, void **ret_by, enum failure_class *ret_class);
/* The earliest time a waiting member may go without news (0: none waits on time). */
double pacing_next_change(const struct pacing *p, double now);
/* What tunneld counts accrued at m's destination (tests, status). */
double pacing_outstanding(const struct pacing *p, const struct pacing_member *m, double now);
bool pacing_is_proven(const struct pacing_member *m);
