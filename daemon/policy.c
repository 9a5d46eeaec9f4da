/* SPDX-License-Identifier: MIT */
#include "policy.h"

#include <math.h>
#include <string.h>

enum failure_class policy_classify_exit(const struct run_outcome *run)
{
        if (run->failure != FAILURE_NONE)
                return run->failure;
        if (run->exit_signal > 0)
                return FAILURE_KILLED;
        if (run->exit_status == 0)
                return FAILURE_LOST;
        if (run->exit_status == 127 && run->ran < 1.0)
                return FAILURE_EXEC;
        return FAILURE_UNKNOWN;
}

double policy_backoff_base(double initial, double max, unsigned failures)
{
        double d = initial * ldexp(1.0, (int)(failures > 1 ? (failures > 40 ? 40 : failures - 1) : 0));

        return d > max ? max : d;
}

double policy_failure_delay(const struct supervision *s, enum failure_class class, unsigned failures)
{
        double knock = s->restart_delay_max < REMOTE_FORWARD_DELAY ? s->restart_delay_max : REMOTE_FORWARD_DELAY;
        double d;

        switch (class) {
        case FAILURE_AUTH:
        case FAILURE_HOST_KEY:
        case FAILURE_CONFIG:
        case FAILURE_FORWARD_DENIED:
                return s->restart_delay_max;
        case FAILURE_REMOTE_FORWARD:
                if (failures <= REMOTE_FORWARD_TRIES)
                        return knock;
                /* then the normal backoff, but never shorter than the knocks were */
                d = policy_backoff_base(s->restart_delay, s->restart_delay_max, failures - REMOTE_FORWARD_TRIES);
                return d > knock ? d : knock;
        case FAILURE_PENALTY:
                return policy_backoff_base(PENALTY_DELAY,
                                           s->restart_delay_max > PENALTY_DELAY ? s->restart_delay_max : PENALTY_DELAY,
                                           failures);
        default:
                return policy_backoff_base(s->restart_delay, s->restart_delay_max, failures);
        }
}

bool policy_network_may_cure(enum failure_class class)
{
        switch (class) {
        case FAILURE_DNS:
        case FAILURE_REFUSED:
        case FAILURE_UNREACHABLE:
        case FAILURE_TIMEOUT:
        case FAILURE_CLOSED:
        case FAILURE_UNKNOWN:
        case FAILURE_PENALTY:   /* a new source address is not the one the server refuses */
                return true;
        default:
                return false;
        }
}

static struct verdict failed(struct verdict v, const char *reason, const char *why)
{
        v.kind = VERDICT_FAILED;
        v.reason = reason;
        v.why = why;
        return v;
}

struct verdict policy_judge(const struct supervision *s, const struct run_counters *c,
                            const struct run_outcome *run, double jitter)
{
        struct verdict v = { .failure = policy_classify_exit(run) };

        /* A success is a run that was up for gatetime. A run that never came up failed,
         * however long it lasted; so did one the probe ended (restarting ssh does not fix
         * a dead far end, so those retries must back off too). */
        v.success = run->passed_gate && v.failure != FAILURE_PROBE;
        v.failures = v.success ? 0 : c->failures + 1;

        if (s->restart == RESTART_NEVER)
                return failed(v, "restart=never", "restart=never");
        /* ssh -N exits 0 on SIGTERM: an exit 0 tunneld caused itself is not ssh's verdict */
        if (s->restart == RESTART_ON_FAILURE && run->exit_signal == 0 && run->exit_status == 0 &&
            !run->ended_by_tunneld)
                return failed(v, "exit status 0 with restart=on-failure",
                              "restart=on-failure, and ssh -N exits 0 when someone sends it SIGTERM");
        if (s->max_starts > 0 && c->starts >= (unsigned)s->max_starts)
                return failed(v, "max_starts reached", "max_starts reached");
        if (s->fail_fast && !v.success && !c->ever_passed)
                return failed(v, "first start failed (fail_fast)",
                              "fail_fast: the first start failed, check the configuration");
        if (!v.success) {
                v.kind = VERDICT_BACKOFF;
                v.delay = policy_failure_delay(s, v.failure, v.failures) * (0.5 + 0.5 * jitter);
                return v;
        }
        /* Never start one tunnel twice within restart_delay. */
        if (run->ran < s->restart_delay) {
                v.kind = VERDICT_RESTART_AFTER;
                v.delay = s->restart_delay - run->ran;
                return v;
        }
        v.kind = VERDICT_RESTART_NOW;
        return v;
}

bool policy_flap_note_failure(struct flap_ring *r, const struct supervision *s, double now)
{
        unsigned threshold = (unsigned)s->flap_threshold;

        if (threshold > FLAP_RING)
                threshold = FLAP_RING;
        if (threshold < 1)
                threshold = 1;
        r->at[r->next % FLAP_RING] = now;
        r->next++;
        if (r->next < threshold)
                return false;
        return now - r->at[(r->next - threshold) % FLAP_RING] <= s->flap_window;
}

void policy_flap_reset(struct flap_ring *r)
{
        memset(r, 0, sizeof(*r));
}
