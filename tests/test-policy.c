/* SPDX-License-Identifier: MIT */
/* policy.h as a table: every verdict the state machine can reach, each row with why. No
 * fork, no clock, no loop. */
#include "policy.h"
#include "test.h"
#include "util.h"

static struct tunnel_spec base_spec(void)
{
        return (struct tunnel_spec){
                .name = (char *)"t", .sup.gatetime = 30, .sup.restart = RESTART_ALWAYS, .sup.restart_delay = 1,
                .sup.restart_delay_max = 60, .sup.flap_threshold = 5, .sup.flap_window = 60,
        };
}

enum spec_variant { S_DEFAULT, S_NEVER, S_ON_FAILURE, S_MAX_STARTS_3, S_FAIL_FAST, S_GATE_0 };

static struct tunnel_spec variant(enum spec_variant v)
{
        struct tunnel_spec s = base_spec();

        switch (v) {
        case S_DEFAULT: break;
        case S_NEVER: s.sup.restart = RESTART_NEVER; break;
        case S_ON_FAILURE: s.sup.restart = RESTART_ON_FAILURE; break;
        case S_MAX_STARTS_3: s.sup.max_starts = 3; break;
        case S_FAIL_FAST: s.sup.fail_fast = true; break;
        case S_GATE_0: s.sup.gatetime = 0; break;
        }
        return s;
}

/* A run: how long, up or not, up for gatetime or not, exit, class, ended by tunneld. */
#define RUN(ran_, up_, gate_, st_, sig_, class_, ours_) \
        { .ran = ran_, .came_up = up_, .passed_gate = gate_, .exit_status = st_, .exit_signal = sig_, \
          .failure = class_, .ended_by_tunneld = ours_ }

static void test_verdicts(void)
{
        static const struct {
                const char *why;
                enum spec_variant spec;
                struct run_counters counters;
                struct run_outcome run;
                enum verdict_kind kind;
                bool success;
                enum failure_class failure;
                unsigned failures;
                double delay;           /* before jitter (jitter 1.0 below: the whole delay) */
                const char *reason;
        } rows[] = {
                { "up for gatetime, then lost: a success, start again at once",
                  S_DEFAULT, { 1, 3, true }, RUN(100, true, true, 0, 0, FAILURE_NONE, false),
                  VERDICT_RESTART_NOW, true, FAILURE_LOST, 0, 0, NULL },
                { "a success shorter than restart_delay (gatetime 0) waits out restart_delay",
                  S_GATE_0, { 1, 0, true }, RUN(0.25, true, true, 255, 0, FAILURE_NONE, false),
                  VERDICT_RESTART_AFTER, true, FAILURE_UNKNOWN, 0, 0.75, NULL },
                { "never up, however long it ran (a hung server): a failed start",
                  S_DEFAULT, { 1, 0, false }, RUN(600, false, false, 0, 0, FAILURE_TIMEOUT, true),
                  VERDICT_BACKOFF, false, FAILURE_TIMEOUT, 1, 1, NULL },
                { "never up with gatetime 0: still a failed start",
                  S_GATE_0, { 1, 2, false }, RUN(0.1, false, false, 255, 0, FAILURE_NONE, false),
                  VERDICT_BACKOFF, false, FAILURE_UNKNOWN, 3, 4, NULL },
                { "up for less than gatetime: a failed start, the delay doubles",
                  S_DEFAULT, { 2, 2, true }, RUN(10, true, false, 255, 0, FAILURE_CLOSED, false),
                  VERDICT_BACKOFF, false, FAILURE_CLOSED, 3, 4, NULL },
                { "the probe ended it after gatetime: a failure, so the restarts back off",
                  S_DEFAULT, { 1, 0, true }, RUN(300, true, true, 0, 0, FAILURE_PROBE, true),
                  VERDICT_BACKOFF, false, FAILURE_PROBE, 1, 1, NULL },
                { "auth goes to the cap at once: retrying fast cannot fix a key",
                  S_DEFAULT, { 1, 0, false }, RUN(0.2, false, false, 255, 0, FAILURE_AUTH, false),
                  VERDICT_BACKOFF, false, FAILURE_AUTH, 1, 60, NULL },
                { "host-key goes to the cap at once",
                  S_DEFAULT, { 1, 0, false }, RUN(0.2, false, false, 255, 0, FAILURE_HOST_KEY, false),
                  VERDICT_BACKOFF, false, FAILURE_HOST_KEY, 1, 60, NULL },
                { "config goes to the cap at once: ssh refuses its options until they change",
                  S_DEFAULT, { 1, 0, false }, RUN(0.01, false, false, 255, 0, FAILURE_CONFIG, false),
                  VERDICT_BACKOFF, false, FAILURE_CONFIG, 1, 60, NULL },
                { "forward-denied goes to the cap at once: the server's policy",
                  S_DEFAULT, { 1, 0, false }, RUN(0.3, false, false, 255, 0, FAILURE_FORWARD_DENIED, false),
                  VERDICT_BACKOFF, false, FAILURE_FORWARD_DENIED, 1, 60, NULL },
                { "remote-forward knocks every 3 s: a stale session lets go",
                  S_DEFAULT, { 5, 4, false }, RUN(0.3, false, false, 255, 0, FAILURE_REMOTE_FORWARD, false),
                  VERDICT_BACKOFF, false, FAILURE_REMOTE_FORWARD, 5, 3, NULL },
                { "killed by a signal tunneld did not send",
                  S_DEFAULT, { 1, 0, false }, RUN(1, false, false, -1, 9, FAILURE_NONE, false),
                  VERDICT_BACKOFF, false, FAILURE_KILLED, 1, 1, NULL },
                { "exit 127 at once: ssh could not be executed",
                  S_DEFAULT, { 1, 1, false }, RUN(0.01, false, false, 127, 0, FAILURE_NONE, false),
                  VERDICT_BACKOFF, false, FAILURE_EXEC, 2, 2, NULL },
                { "restart=never: failed after any exit, even a good one",
                  S_NEVER, { 1, 0, true }, RUN(100, true, true, 0, 0, FAILURE_NONE, false),
                  VERDICT_FAILED, true, FAILURE_LOST, 0, 0, "restart=never" },
                { "restart=on-failure after ssh's own exit 0",
                  S_ON_FAILURE, { 1, 0, true }, RUN(100, true, true, 0, 0, FAILURE_NONE, false),
                  VERDICT_FAILED, true, FAILURE_LOST, 0, 0, "exit status 0 with restart=on-failure" },
                { "restart=on-failure: ssh -N exits 0 on tunneld's own SIGTERM (deadline), still a failure",
                  S_ON_FAILURE, { 1, 0, false }, RUN(25, false, false, 0, 0, FAILURE_TIMEOUT, true),
                  VERDICT_BACKOFF, false, FAILURE_TIMEOUT, 1, 1, NULL },
                { "restart=on-failure retries exit 255",
                  S_ON_FAILURE, { 1, 0, false }, RUN(0.1, false, false, 255, 0, FAILURE_REFUSED, false),
                  VERDICT_BACKOFF, false, FAILURE_REFUSED, 1, 1, NULL },
                { "max_starts reached: failed, whatever the run",
                  S_MAX_STARTS_3, { 3, 2, false }, RUN(0.1, false, false, 255, 0, FAILURE_REFUSED, false),
                  VERDICT_FAILED, false, FAILURE_REFUSED, 3, 0, "max_starts reached" },
                { "max_starts not reached yet",
                  S_MAX_STARTS_3, { 2, 1, false }, RUN(0.1, false, false, 255, 0, FAILURE_REFUSED, false),
                  VERDICT_BACKOFF, false, FAILURE_REFUSED, 2, 2, NULL },
                { "fail_fast: the first start failed",
                  S_FAIL_FAST, { 1, 0, false }, RUN(0.1, false, false, 255, 0, FAILURE_AUTH, false),
                  VERDICT_FAILED, false, FAILURE_AUTH, 1, 0, "first start failed (fail_fast)" },
                { "fail_fast: a configuration that once worked is retried",
                  S_FAIL_FAST, { 4, 0, true }, RUN(0.1, false, false, 255, 0, FAILURE_REFUSED, false),
                  VERDICT_BACKOFF, false, FAILURE_REFUSED, 1, 1, NULL },
                { "fail_fast: a good first run is not a failure",
                  S_FAIL_FAST, { 1, 0, false }, RUN(100, true, true, 255, 0, FAILURE_TIMEOUT, false),
                  VERDICT_RESTART_NOW, true, FAILURE_TIMEOUT, 0, 0, NULL },
                { "the delay is capped at restart_delay_max",
                  S_DEFAULT, { 1, 30, false }, RUN(0.1, false, false, 255, 0, FAILURE_DNS, false),
                  VERDICT_BACKOFF, false, FAILURE_DNS, 31, 60, NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                struct tunnel_spec s = variant(rows[i].spec);
                struct verdict v = policy_judge(&s.sup, &rows[i].counters, &rows[i].run, 1.0 - 1e-12);
                bool ok = v.kind == rows[i].kind && v.success == rows[i].success && v.failure == rows[i].failure &&
                          v.failures == rows[i].failures &&
                          (rows[i].kind == VERDICT_FAILED || rows[i].kind == VERDICT_RESTART_NOW ||
                           (v.delay > rows[i].delay - 1e-6 && v.delay <= rows[i].delay + 1e-6)) &&
                          (!rows[i].reason || (v.reason && strcmp(v.reason, rows[i].reason) == 0));

                if (!ok)
                        printf("#   row %zu (%s): kind %d success %d class %s failures %u delay %.3f reason %s\n", i,
                               rows[i].why, v.kind, v.success, failure_class_to_string(v.failure), v.failures, v.delay,
                               v.reason ? v.reason : "-");
                test_assert(ok);
        }
}

/* Jitter: between half and the whole delay, so consecutive delays never shrink. */
static void test_jitter(void)
{
        struct tunnel_spec s = base_spec();
        struct run_counters c = { 1, 3, false };
        struct run_outcome run = RUN(0.1, false, false, 255, 0, FAILURE_REFUSED, false);

        test_assert(policy_judge(&s.sup, &c, &run, 0).delay == 4);          /* failure 4: base 8 */
        test_assert(policy_judge(&s.sup, &c, &run, 0.5).delay == 6);
        test_assert(policy_judge(&s.sup, &c, &run, 0.999999).delay < 8);
}

static void test_backoff_base(void)
{
        test_assert(policy_backoff_base(1, 60, 0) == 1);
        test_assert(policy_backoff_base(1, 60, 1) == 1);
        test_assert(policy_backoff_base(1, 60, 2) == 2);
        test_assert(policy_backoff_base(1, 60, 3) == 4);
        test_assert(policy_backoff_base(1, 60, 6) == 32);
        test_assert(policy_backoff_base(1, 60, 7) == 60);
        test_assert(policy_backoff_base(1, 60, 4000000000u) == 60);
        test_assert(policy_backoff_base(0.2, 0.8, 5) == 0.8);
}

/* remote-forward knocks every 3 s ten times, then backs off without ever going below the
 * knock; a cap below the knock wins. */
static void test_remote_forward_knocks(void)
{
        struct tunnel_spec s = base_spec();
        double last = 0;

        for (unsigned n = 1; n <= REMOTE_FORWARD_TRIES + 8; n++) {
                double d = policy_failure_delay(&s.sup, FAILURE_REMOTE_FORWARD, n);
                if (n <= REMOTE_FORWARD_TRIES)
                        test_assert(d == REMOTE_FORWARD_DELAY);
                test_assert(d >= last);
                test_assert(d <= 60);
                last = d;
        }
        test_assert(last == 60);
        s.sup.restart_delay_max = 2;
        test_assert(policy_failure_delay(&s.sup, FAILURE_REMOTE_FORWARD, 1) == 2);
        test_assert(policy_failure_delay(&s.sup, FAILURE_REMOTE_FORWARD, 30) == 2);
}

static void test_network_may_cure(void)
{
        static const enum failure_class cured[] = { FAILURE_DNS, FAILURE_REFUSED, FAILURE_UNREACHABLE,
                                                    FAILURE_TIMEOUT, FAILURE_CLOSED, FAILURE_UNKNOWN };
        static const enum failure_class not_cured[] = { FAILURE_AUTH, FAILURE_HOST_KEY, FAILURE_CONFIG,
                                                        FAILURE_LOCAL_FORWARD, FAILURE_REMOTE_FORWARD,
                                                        FAILURE_FORWARD_DENIED, FAILURE_EXEC, FAILURE_PROBE };

        for (size_t i = 0; i < ELEMENTSOF(cured); i++)
                test_assert(policy_network_may_cure(cured[i]));
        for (size_t i = 0; i < ELEMENTSOF(not_cured); i++)
                test_assert(!policy_network_may_cure(not_cured[i]));
}

/* flap_threshold failures within flap_window flap; spread wider, they do not. */
static void test_flapping(void)
{
        struct tunnel_spec s = base_spec();
        struct flap_ring r = {0};

        for (int i = 0; i < 4; i++)
                test_assert(!policy_flap_note_failure(&r, &s.sup, 100 + i));
        test_assert(policy_flap_note_failure(&r, &s.sup, 104));
        policy_flap_reset(&r);
        for (int i = 0; i < 10; i++)
                test_assert(!policy_flap_note_failure(&r, &s.sup, 100 + 20.0 * i));
}

TEST_MAIN(TEST(test_verdicts), TEST(test_jitter), TEST(test_backoff_base), TEST(test_remote_forward_knocks),
          TEST(test_network_may_cure), TEST(test_flapping))
