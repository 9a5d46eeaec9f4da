/* SPDX-License-Identifier: MIT */
#pragma once

/* A test is a function; a failed check prints file:line and the expression, and the test
 * goes on to its next check. Output is TAP, one line per test, so meson counts them. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failed_checks;

#define test_assert(expr) do {                                                          \
                if (!(expr)) {                                                          \
                        printf("#   %s:%d: check failed: %s\n", __FILE__, __LINE__, #expr); \
                        test_failed_checks++;                                           \
                }                                                                       \
        } while (0)

#define test_assert_streq(a, b) do {                                                    \
                const char *_a = (a), *_b = (b);                                        \
                if (!_a || !_b || strcmp(_a, _b) != 0) {                                \
                        printf("#   %s:%d: %s == %s\n#     got:      \"%s\"\n#     expected: \"%s\"\n", \
                               __FILE__, __LINE__, #a, #b, _a ? _a : "(null)", _b ? _b : "(null)"); \
                        test_failed_checks++;                                           \
                }                                                                       \
        } while (0)

struct test_case {
        const char *name;
        void (*fn)(void);
};
#define TEST(f) { #f, f }

static inline int test_run(const struct test_case *cases, size_t n)
{
        int failed = 0;

        printf("1..%zu\n", n);
        for (size_t i = 0; i < n; i++) {
                int before = test_failed_checks;
                cases[i].fn();
                if (test_failed_checks != before) {
                        printf("not ok %zu - %s\n", i + 1, cases[i].name);
                        failed++;
                } else
                        printf("ok %zu - %s\n", i + 1, cases[i].name);
                fflush(stdout);
        }
        return failed ? 1 : 0;
}
#define TEST_MAIN(...) \
        int main(void) { static const struct test_case cases[] = { __VA_ARGS__ }; \
                         return test_run(cases, sizeof(cases) / sizeof(cases[0])); }
