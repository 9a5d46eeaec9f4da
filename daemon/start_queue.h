/* SPDX-License-Identifier: MIT */
#pragma once

/* start_queue: who may spawn ssh now. Not a tunnel before the tunnels it is after are up;
 * at most max_parallel_starts connecting at once; tunnels that had to wait go first, in
 * the order they queued (one whose start just failed and comes back from backoff goes
 * behind every tunnel already waiting). Fed with the tunnels' events; lets queued ones
 * through from the loop, never from inside a tunnel's own callback. */

#include <stdbool.h>
#include <stddef.h>

#include "tunnel.h"

/* What the queue keeps for one tunnel, inside its owner's bookkeeping. */
struct start_entry {
        struct tunnel *tunnel;
        struct start_entry *prev, *next;
        bool queued;
};

/* The first tunnel t is after that is not up (its name), or NULL. */
typedef const char *(*start_waiting_for_t)(const struct tunnel *t, void *userdata);

struct start_queue {
        struct start_entry *head, *tail;        /* QUEUED tunnels, oldest first */
        size_t connecting;                      /* tunnels whose ssh holds a start slot */
        int max;                                /* max_parallel_starts; <= 0: no limit */
        bool due;                               /* a slot freed, or a tunnel came up */
        const struct tunnel *dequeuing;         /* the queued tunnel being let through */
        start_waiting_for_t waiting_for;
        void *userdata;
        char reason[128];
};

void start_queue_init(struct start_queue *q, start_waiting_for_t waiting_for, void *userdata);
/* NULL: t may spawn now; else why it must wait (valid until the next call). */
const char *start_queue_gate(struct start_queue *q, const struct tunnel *t);
/* A tunnel event (tunnel.h's observer): keeps the queue and the slot count. */
void start_queue_note(struct start_queue *q, struct start_entry *e, enum tunnel_event ev, enum tunnel_state old);
/* Let queued tunnels through, oldest first, while there is room; O(1) unless due. */
void start_queue_run(struct start_queue *q);
/* Something else may have freed a place (a reload: new max, new after). */
void start_queue_kick(struct start_queue *q);
