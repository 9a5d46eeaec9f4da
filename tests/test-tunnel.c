/* SPDX-License-Identifier: MIT */
#include "test.h"
#include "tunnel.h"

static void test_state_names(void)
{
        test_assert_streq(tunnel_state_to_string(TUNNEL_STOPPED), "stopped");
        test_assert_streq(tunnel_state_to_string(TUNNEL_STARTING), "starting");
        test_assert_streq(tunnel_state_to_string(TUNNEL_UP), "up");
        test_assert_streq(tunnel_state_to_string(TUNNEL_BACKOFF), "backoff");
        test_assert_streq(tunnel_state_to_string(TUNNEL_FAILED), "failed");
        test_assert_streq(tunnel_state_to_string(TUNNEL_STOPPING), "stopping");
        test_assert_streq(tunnel_state_to_string(TUNNEL_QUEUED), "queued");
        test_assert_streq(tunnel_state_to_string(TUNNEL_DEGRADED), "degraded");
        for (int s = 0; s < _TUNNEL_STATE_MAX; s++)
                test_assert(strcmp(tunnel_state_to_string(s), "?") != 0);
}

/* The start deadline: (connect_timeout + 10 s) per hop unless start_timeout says; the slot
 * is held for connect_timeout per hop, never past the deadline. */
static void test_start_deadline(void)
{
        struct tunnel_spec s = { .connect_timeout = 15 };

        test_assert(conn_start_deadline(&s) == 25);
        test_assert(conn_slot_time(&s) == 15);
        s.jump_host = (char *)"a,b@c:22";
        test_assert(conn_start_deadline(&s) == 75);
        test_assert(conn_slot_time(&s) == 45);
        s.jump_host = (char *)"none";
        test_assert(conn_start_deadline(&s) == 25);
        s.sup.start_timeout = 5;
        test_assert(conn_start_deadline(&s) == 5);
        test_assert(conn_slot_time(&s) == 5);
}

TEST_MAIN(TEST(test_state_names), TEST(test_start_deadline))
