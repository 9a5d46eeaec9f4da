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

TEST_MAIN(TEST(test_backoff_base), TEST(test_state_names))
