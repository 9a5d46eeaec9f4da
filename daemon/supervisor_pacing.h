/* SPDX-License-Identifier: MIT */
#pragma once

/* supervisor_pacing: pacing.h on the loop. Every connection's spawn asks it (through the
 * supervisor's start gate) whether its credentials may be tried now; a connection it holds
 * waits QUEUED, held in the start queue (start_queue_hold), and is asked again at every
 * turn of the queue; what its runs did (conn_context's run_ended, the states) goes to it;
 * in the loop's prepare, before the start queue's turn, those that waited for an attempt
 * that failed take its failure (conn_fail_unstarted), and a timer kicks the queue when a
 * held connection's time comes. For supervisor.c and supervisor_conn.c only. */

#include <ev.h>

#include "conn.h"

struct supervisor;
struct supervisor_pacing;

int supervisor_pacing_new(struct supervisor *s, struct supervisor_pacing **ret);
struct supervisor_pacing *supervisor_pacing_free(struct supervisor_pacing *sp);

/* The start gate's first question: NULL (go on to the start queue) or why c waits. */
const char *supervisor_pacing_gate(struct supervisor *s, struct conn *c);
/* conn_context's observer: a connection's event. */
void supervisor_pacing_note(struct supervisor *s, struct conn *c, int event, int old);
/* conn_context's run_ended. */
void supervisor_pacing_run_ended(struct conn *c, const struct conn_run *run, void *userdata);
/* The loop's prepare, before the start queue's turn. */
void supervisor_pacing_flush(struct supervisor *s);
/* c goes. */
void supervisor_pacing_forget(struct supervisor *s, struct conn *c);
