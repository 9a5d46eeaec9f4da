/* SPDX-License-Identifier: MIT */
#include "test.h"
#include "util.h"

static void test_format_duration(void)
{
        char b[DURATION_MAX];

        test_assert_streq(format_duration(0.0004, b, sizeof(b)), "0 ms");
        test_assert_streq(format_duration(0.85, b, sizeof(b)), "850 ms");
        test_assert_streq(format_duration(2.14, b, sizeof(b)), "2.1 s");
        test_assert_streq(format_duration(0.9996, b, sizeof(b)), "1.0 s");
        test_assert_streq(format_duration(40, b, sizeof(b)), "40 s");
        test_assert_streq(format_duration(182, b, sizeof(b)), "3 min 2 s");
        test_assert_streq(format_duration(300, b, sizeof(b)), "5 min");
        test_assert_streq(format_duration(7500, b, sizeof(b)), "2 h 5 min");
        test_assert_streq(format_duration(-3, b, sizeof(b)), "0 ms");
}

static void test_strv(void)
{
        _cleanup_strv_free_ char **a = NULL, **b = NULL;

        test_assert(strv_length(a) == 0);
        test_assert(strv_push(&a, "x") == 0);
        test_assert(strv_push(&a, "y") == 0);
        test_assert(strv_length(a) == 2);
        test_assert(strv_copy(a, &b) == 0);
        test_assert(strv_equal(a, b));
        test_assert(strv_push(&b, "z") == 0);
        test_assert(!strv_equal(a, b));
        test_assert(strv_equal(NULL, NULL));
}

static void test_shell_quote(void)
{
        char *argv[] = { "ssh", "-o", "ProxyCommand=ssh -W %h:%p j", "it's", "", NULL };
        _cleanup_free_ char *s = NULL;

        test_assert(shell_quote_argv(argv, &s) == 0);
        test_assert_streq(s, "ssh -o 'ProxyCommand=ssh -W %h:%p j' 'it'\\''s' ''");
}

static void test_buf_json(void)
{
        struct buf b = {0};
        _cleanup_free_ char *s = NULL;

        buf_json_string(&b, "a\"b\\c\n\x01");
        test_assert(buf_steal(&b, &s) == 0);
        test_assert_streq(s, "\"a\\\"b\\\\c\\n\\u0001\"");
}

static void test_random_unit(void)
{
        double lo = 1, hi = 0;

        for (int i = 0; i < 10000; i++) {
                double r = random_unit();
                test_assert(r >= 0 && r < 1);
                lo = r < lo ? r : lo;
                hi = r > hi ? r : hi;
        }
        test_assert(lo < 0.01 && hi > 0.99);
}

TEST_MAIN(TEST(test_format_duration), TEST(test_strv), TEST(test_shell_quote), TEST(test_buf_json),
          TEST(test_random_unit))
