/* SPDX-License-Identifier: MIT */
#pragma once

/* policy: what happens after one ssh run ended, and how long to wait before the next.
 * Pure: no fork, no clock, no loop (the caller passes times and the random draw), so the
 * whole table of verdicts is unit-tested (tests/test-policy.c). conn_run.c is the mechanism
 * that carries a verdict out. */

#include <stdbool.h>

#include "config.h"
#include "ssh_output.h"

/* remote-forward is knocked every REMOTE_FORWARD_DELAY s for REMOTE_FORWARD_TRIES tries
 * first: the server usually frees a stale session's port within that. */
#define REMOTE_FORWARD_TRIES 10
#define REMOTE_FORWARD_DELAY 3.0
/* penalty: a refusal for a penalty waits at least this (before jitter: half of it at
 * least), doubling from there: a block begins with more than 15 s left (sshd's default
 * PerSourcePenalties min) and lasts up to 10 minutes; trying again costs nothing there
 * (a refused connection is not counted), but tells nothing sooner. */
#define PENALTY_DELAY 30.0

/* What the tunnel knew of a run when it ended. */
struct run_outcome {
        double ran;                     /* seconds from spawn to exit */
        bool came_up;                   /* reached UP (authenticated, every forward in place) */
        bool passed_gate;               /* was UP for gatetime (gatetime 0: came up) */
        int exit_status;                /* -1 if killed by a signal */
        int exit_signal;                /* 0 if it exited */
        enum failure_class failure;     /* from ssh's stderr, or why tunneld ended it; NONE if neither */
        bool ended_by_tunneld;          /* tunneld stopped it for failure (probe, deadline, forward) */
};

/* Counters the verdict reads. */
struct run_counters {
        unsigned starts;                /* since configured or started by hand, this run included */
        unsigned failures;              /* consecutive failed runs before this one */
        bool ever_passed;               /* a run since configured was a success (fail_fast) */
};

enum verdict_kind {
        VERDICT_RESTART_NOW,            /* a good run: start again at once */
        VERDICT_RESTART_AFTER,          /* a good run, but not twice within restart_delay */
        VERDICT_BACKOFF,                /* a failed run: wait delay, then start again */
        VERDICT_FAILED,                 /* do not start again until asked (reason says why) */
};

struct verdict {
        enum verdict_kind kind;
        bool success;
        enum failure_class failure;     /* the run's class, never NONE */
        unsigned failures;              /* the consecutive-failure count from now on */
        double delay;                   /* RESTART_AFTER, BACKOFF: seconds (BACKOFF jittered) */
        const char *reason;             /* FAILED: short, for status */
        const char *why;                /* FAILED: the log's "not restarting (…)" text */
};

/* The class of a run nothing classified: by how it ended. */
enum failure_class policy_classify_exit(const struct run_outcome *run);

/* The verdict on a finished run. jitter is a uniform draw in [0, 1): a backoff waits
 * between half and the whole base delay, so that many tunnels never retry in lockstep and
 * consecutive delays never shrink (d/2..d, then d..2d). */
struct verdict policy_judge(const struct supervision *s, const struct run_counters *c,
                            const struct run_outcome *run, double jitter);

/* The base delay (before jitter) after the n-th consecutive failure of a class: auth,
 * host-key, config and forward-denied go to the cap at once (retrying fast cannot fix
 * them); remote-forward is knocked every REMOTE_FORWARD_DELAY s for REMOTE_FORWARD_TRIES
 * tries first; penalty doubles from PENALTY_DELAY (the cap: restart_delay_max, or
 * PENALTY_DELAY if that is less); the rest double from restart_delay up to
 * restart_delay_max. */
double policy_failure_delay(const struct supervision *s, enum failure_class class, unsigned failures);
double policy_backoff_base(double initial, double max, unsigned failures);

/* May a network change (a link up, an address or route added) cure this class? */
bool policy_network_may_cure(enum failure_class class);

/* Flapping: flap_threshold failed runs within flap_window seconds. */
#define FLAP_RING 64
struct flap_ring {
        double at[FLAP_RING];
        unsigned next;
};
/* Count a failed run at time now; true if, with it, the tunnel flaps. */
bool policy_flap_note_failure(struct flap_ring *r, const struct supervision *s, double now);
void policy_flap_reset(struct flap_ring *r);
