/* SPDX-License-Identifier: MIT */
#include "start_queue.h"

#include <stdio.h>

void start_queue_init(struct start_queue *q, start_waiting_for_t waiting_for, void *userdata)
{
        *q = (struct start_queue){ .waiting_for = waiting_for, .userdata = userdata };
}

static void append(struct start_queue *q, struct start_entry *e)
{
        if (e->queued)
                return;
        e->queued = true;
        e->next = NULL;
        e->prev = q->tail;
        if (q->tail)
                q->tail->next = e;
        else
                q->head = e;
        q->tail = e;
}

static void unlink_entry(struct start_queue *q, struct start_entry *e)
{
        if (!e->queued)
                return;
        if (e->prev)
                e->prev->next = e->next;
        else
                q->head = e->next;
        if (e->next)
                e->next->prev = e->prev;
        else
                q->tail = e->prev;
        e->prev = e->next = NULL;
        e->queued = false;
}

/* A queued tunnel that waits for a start slot (not for the tunnels it is after). */
static bool slot_waiters(const struct start_queue *q)
{
        for (const struct start_entry *e = q->head; e; e = e->next)
                if (!q->waiting_for(e->tunnel, q->userdata))
                        return true;
        return false;
}

const char *start_queue_gate(struct start_queue *q, const struct tunnel *t)
{
        const char *dep = q->waiting_for(t, q->userdata);
        size_t starting;

        if (dep) {
                snprintf(q->reason, sizeof(q->reason), "waiting for %s to be up", dep);
                return q->reason;
        }
        if (q->max <= 0)
                return NULL;
        starting = q->connecting - tunnel_is_connecting(t);     /* a restarting tunnel has its own slot */
        if (starting >= (size_t)q->max) {
                snprintf(q->reason, sizeof(q->reason), "%zu tunnel%s connecting (max_parallel_starts %d)", starting,
                         starting == 1 ? " is" : "s are", q->max);
                return q->reason;
        }
        if (q->dequeuing != t && tunnel_get_state(t) != TUNNEL_QUEUED && slot_waiters(q)) {
                snprintf(q->reason, sizeof(q->reason), "other tunnels are queued first");
                return q->reason;
        }
        return NULL;
}

void start_queue_note(struct start_queue *q, struct start_entry *e, enum tunnel_event ev, enum tunnel_state old)
{
        enum tunnel_state now = tunnel_get_state(e->tunnel);

        if (ev == TUNNEL_EVENT_CONNECTING) {
                if (tunnel_is_connecting(e->tunnel))
                        q->connecting++;
                else {
                        q->connecting--;
                        q->due = true;
                }
                return;
        }
        if (ev != TUNNEL_EVENT_STATE || old == now)
                return;
        if (now == TUNNEL_QUEUED)
                append(q, e);
        else if (old == TUNNEL_QUEUED)
                unlink_entry(q, e);
        if (old == TUNNEL_STARTING || now == TUNNEL_UP || now == TUNNEL_QUEUED)
                q->due = true;
}

void start_queue_run(struct start_queue *q)
{
        struct start_entry *next;

        if (!q->due)
                return;
        q->due = false;
        for (struct start_entry *e = q->head; e; e = next) {
                next = e->next;         /* a start takes e out of the queue */
                if (q->waiting_for(e->tunnel, q->userdata))
                        continue;
                if (q->max > 0 && q->connecting >= (size_t)q->max)
                        return;
                q->dequeuing = e->tunnel;
                tunnel_dequeue(e->tunnel, "start slot free");
                q->dequeuing = NULL;
        }
}

void start_queue_kick(struct start_queue *q)
{
        q->due = true;
}
