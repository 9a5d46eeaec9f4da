/* SPDX-License-Identifier: MIT */
#include "test.h"
#include "tunnel.h"

static void test_backoff_base(void)
{
        test_assert(tunnel_backoff_base(1, 60, 0) == 1);
        test_assert(tunnel_backoff_base(1, 60, 1) == 1);
        test_assert(tunnel_backoff_base(1, 60, 2) == 2);
        test_assert(tunnel_backoff_base(1, 60, 3) == 4);
        test_assert(tunnel_backoff_base(1, 60, 6) == 32);
        test_assert(tunnel_backoff_base(1, 60, 7) == 60);
        test_assert(tunnel_backoff_base(1, 60, 4000000000u) == 60);
        test_assert(tunnel_backoff_base(0.2, 0.8, 5) == 0.8);
}

static void test_state_names(void)
{
        test_assert_streq(tunnel_state_to_string(TUNNEL_STOPPED), "stopped");
        test_assert_streq(tunnel_state_to_string(TUNNEL_STARTING), "starting");
        test_assert_streq(tunnel_state_to_string(TUNNEL_UP), "up");
        test_assert_streq(tunnel_state_to_string(TUNNEL_BACKOFF), "backoff");
        test_assert_streq(tunnel_state_to_string(TUNNEL_FAILED), "failed");
        test_assert_streq(tunnel_state_to_string(TUNNEL_STOPPING), "stopping");
}

/* By class: auth and host-key wait the cap at once; remote-forward knocks every 3 s ten
 * times, then backs off without ever going below the knock. */
static void test_failure_delay(void)
{
        struct tunnel_spec s = { .restart_delay = 1, .restart_delay_max = 60 };
        double last = 0;

        test_assert(tunnel_failure_delay(&s, FAILURE_AUTH, 1) == 60);
        test_assert(tunnel_failure_delay(&s, FAILURE_HOST_KEY, 1) == 60);
        test_assert(tunnel_failure_delay(&s, FAILURE_REFUSED, 1) == 1);
        test_assert(tunnel_failure_delay(&s, FAILURE_REFUSED, 3) == 4);
        for (unsigned n = 1; n <= REMOTE_FORWARD_TRIES + 8; n++) {
                double d = tunnel_failure_delay(&s, FAILURE_REMOTE_FORWARD, n);
                if (n <= REMOTE_FORWARD_TRIES)
                        test_assert(d == REMOTE_FORWARD_DELAY);
                test_assert(d >= last);         /* never shrinks */
                test_assert(d <= 60);
                last = d;
        }
        test_assert(last == 60);
        s.restart_delay_max = 2;                /* a cap below the knock wins */
        test_assert(tunnel_failure_delay(&s, FAILURE_REMOTE_FORWARD, 1) == 2);
        test_assert(tunnel_failure_delay(&s, FAILURE_REMOTE_FORWARD, 30) == 2);
}

TEST_MAIN(TEST(test_backoff_base), TEST(test_state_names), TEST(test_failure_delay))
