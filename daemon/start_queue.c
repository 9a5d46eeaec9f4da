/* SPDX-License-Identifier: MIT */
#include "start_queue.h"

#include <stdio.h>

const char start_queue_turn_reason[] = "many connections start at once: this one at the next turn of the loop";

void start_queue_init(struct start_queue *q)
{
        *q = (struct start_queue){0};
}

static void append(struct start_queue *q, struct start_entry *e)
{
        if (e->queued)
                return;
        e->queued = true;
        q->waiting += !e->held;
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
        q->waiting -= !e->held;
}

/* No limit of parallel starts: only the turn's, and the queue's order. */
static const char *turn_gate(struct start_queue *q, const struct conn *c)
{
        if (q->dequeuing != c && conn_get_state(c) != CONN_QUEUED && q->waiting > 0) {
                snprintf(q->reason, sizeof(q->reason), "other connections are queued first");
                return q->reason;
        }
        if (q->turn >= START_QUEUE_TURN) {
                q->due = true;
                return start_queue_turn_reason;
        }
        q->turn++;
        return NULL;
}

const char *start_queue_gate(struct start_queue *q, const struct conn *c)
{
        size_t starting;

        if (q->max <= 0)
                return turn_gate(q, c);
        starting = q->connecting - conn_is_connecting(c);       /* a restarting connection has its own slot */
        if (starting >= (size_t)q->max) {
                snprintf(q->reason, sizeof(q->reason), "%zu connection%s connecting (max_parallel_starts %d)", starting,
                         starting == 1 ? " is" : "s are", q->max);
                return q->reason;
        }
        return turn_gate(q, c);
}

void start_queue_note(struct start_queue *q, struct start_entry *e, int event, int old)
{
        enum conn_state now = conn_get_state(e->conn);

        if (event == CONN_EVENT_CONNECTING) {
                if (conn_is_connecting(e->conn))
                        q->connecting++;
                else {
                        q->connecting--;
                        q->due = true;
                }
                return;
        }
        if (old == (int)now)
                return;
        if (now == CONN_QUEUED)
                append(q, e);
        else if (old == CONN_QUEUED)
                unlink_entry(q, e);
        if (old == CONN_STARTING || now == CONN_QUEUED)
                q->due = true;
}

void start_queue_forget(struct start_queue *q, struct start_entry *e)
{
        unlink_entry(q, e);
        if (conn_is_connecting(e->conn)) {
                q->connecting--;
                q->due = true;
        }
}

void start_queue_run(struct start_queue *q)
{
        struct start_entry *next;

        q->turn = 0;
        if (!q->due)
                return;
        q->due = false;
        for (int proven_only = 1; proven_only >= 0; proven_only--)
                for (struct start_entry *e = q->head; e; e = next) {
                        next = e->next;         /* a start takes e out of the queue */
                        if (proven_only && !e->proven)
                                continue;
                        if ((q->max > 0 && q->connecting >= (size_t)q->max) || q->turn >= START_QUEUE_TURN) {
                                q->due = q->due || q->turn >= START_QUEUE_TURN;
                                return;
                        }
                        q->dequeuing = e->conn;
                        conn_dequeue(e->conn, "start slot free");
                        q->dequeuing = NULL;
                }
}

bool start_queue_busy(const struct start_queue *q)
{
        return q->due && q->head && (q->max <= 0 || q->connecting < (size_t)q->max);
}

void start_queue_kick(struct start_queue *q)
{
        q->due = true;
}

void start_queue_hold(struct start_queue *q, struct start_entry *e, bool held)
{
        if (e->held == held)
                return;
        if (e->queued && held)
                q->waiting--;
        else if (e->queued)
                q->waiting++;
        e->held = held;
}
