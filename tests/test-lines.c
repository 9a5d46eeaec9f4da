/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <unistd.h>

#include "lines.h"
#include "test.h"
#include "util.h"

static char **got;

static void collect(const char *line, void *userdata)
{
        (void)userdata;
        strv_push(&got, line);
}

static void test_split(void)
{
        struct lines l = {0};
        char big[2001];
        int fds[2];

        got = strv_free(got);
        test_assert(pipe2(fds, O_NONBLOCK) == 0);
        memset(big, 'x', 2000);
        big[2000] = '\0';
        dprintf(fds[1], "a\r\nbb\n\n%s\nlast", big);
        close(fds[1]);
        test_assert(lines_read(&l, fds[0], true, collect, NULL));
        close(fds[0]);
        test_assert(strv_length(got) == 5);
        if (strv_length(got) == 5) {
                test_assert_streq(got[0], "a");
                test_assert_streq(got[1], "bb");
                test_assert(strlen(got[2]) == sizeof(l.buf) - 1);
                test_assert(strlen(got[3]) == 2000 - (sizeof(l.buf) - 1));
                test_assert_streq(got[4], "last");
        }
        got = strv_free(got);
}

/* One chunk per call while the child lives; the partial line waits for its end. */
static void test_partial(void)
{
        struct lines l = {0};
        int fds[2];

        got = strv_free(got);
        test_assert(pipe2(fds, O_NONBLOCK) == 0);
        dprintf(fds[1], "one\ntw");
        test_assert(!lines_read(&l, fds[0], false, collect, NULL));
        test_assert(strv_length(got) == 1);
        dprintf(fds[1], "o\n");
        test_assert(!lines_read(&l, fds[0], false, collect, NULL));
        test_assert(strv_length(got) == 2 && strcmp(got[1], "two") == 0);
        close(fds[1]);
        test_assert(lines_read(&l, fds[0], false, collect, NULL));      /* EOF */
        close(fds[0]);
        got = strv_free(got);
}

TEST_MAIN(TEST(test_split), TEST(test_partial))
