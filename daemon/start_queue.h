/* SPDX-License-Identifier: MIT */
#pragma once

/* start_queue: which connection may spawn ssh now. At most max_parallel_starts connecting
 * at once; connections that had to wait go first, in the order they queued (one whose
 * start just failed and comes back from backoff goes behind every one already waiting).
 * Fed with the connections' events; lets queued ones through from the loop, never from
 * inside a connection's own callback. And whatever max_parallel_starts says, at most
 * START_QUEUE_TURN spawn in one turn of the loop (a fork costs milliseconds, 100 ms under
 * AddressSanitizer): 300 tunnels started at once never hold the loop for seconds. */

#include <stdbool.h>
#include <stddef.h>

#include "conn.h"

/* What the queue keeps for one connection, inside its owner's bookkeeping. */
struct start_entry {
        struct conn *conn;
        struct start_entry *prev, *next;
        bool queued;
        bool held;                      /* waits for something else than a slot (pacing.h) */
        bool proven;                    /* its credentials logged in before: let through first */
};

#define START_QUEUE_TURN 16
/* The reason a connection waits only for the next turn of the loop (not worth a line). */
extern const char start_queue_turn_reason[];

struct start_queue {
        struct start_entry *head, *tail;        /* QUEUED connections, oldest first */
        size_t waiting;                         /* …of them, those not held: waiting for a slot */
        size_t connecting;                      /* connections whose ssh holds a start slot */
        int max;                                /* max_parallel_starts; <= 0: no limit */
        bool due;                               /* a slot freed */
        unsigned turn;                          /* spawns let through in this turn of the loop */
        const struct conn *dequeuing;           /* the queued connection being let through */
        char reason[128];
};

void start_queue_init(struct start_queue *q);
/* NULL: c may spawn now; else why it must wait (valid until the next call). */
const char *start_queue_gate(struct start_queue *q, const struct conn *c);
/* A connection's event (conn_context's observer): keeps the queue and the slot count. */
void start_queue_note(struct start_queue *q, struct start_entry *e, int event, int old);
/* The connection goes: out of the queue, its slot given back. */
void start_queue_forget(struct start_queue *q, struct start_entry *e);
/* A new turn of the loop: let queued connections through while there is room, those whose
 * credentials are proven first (a blip's good tunnels before keys never tried), each kind
 * oldest first; O(1) unless due. */
void start_queue_run(struct start_queue *q);
/* Connections wait that the next turn lets through: the loop must not block until then. */
bool start_queue_busy(const struct start_queue *q);
/* Something else may have freed a place (a reload: a new max), or may let a held
 * connection go: they are all asked again. */
void start_queue_kick(struct start_queue *q);
/* The connection waits for something else than a slot (held), or no longer: a held one
 * does not make others queue behind it, and is asked again at every turn of the queue. */
void start_queue_hold(struct start_queue *q, struct start_entry *e, bool held);
