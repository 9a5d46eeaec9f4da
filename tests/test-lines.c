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
        test_assert(lines_read(&l, fds[0], 65536, NULL, collect, NULL));
        lines_flush(&l, collect, NULL);
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
        test_assert(!lines_read(&l, fds[0], 0, NULL, collect, NULL));
        test_assert(strv_length(got) == 1);
        dprintf(fds[1], "o\n");
        test_assert(!lines_read(&l, fds[0], 0, NULL, collect, NULL));
        test_assert(strv_length(got) == 2 && strcmp(got[1], "two") == 0);
        close(fds[1]);
        test_assert(lines_read(&l, fds[0], 0, NULL, collect, NULL));    /* EOF */
        close(fds[0]);
        got = strv_free(got);
}

/* A writer that never stops (a hook's helper holding the pipe): a read ends after max
 * bytes with the pipe still open, never at an EOF that does not come. */
static void test_bounded(void)
{
        struct lines l = {0};
        char line[100];
        size_t n = 0;
        int fds[2];

        got = strv_free(got);
        test_assert(pipe2(fds, O_NONBLOCK) == 0);
        memset(line, 'y', sizeof(line) - 1);
        line[sizeof(line) - 2] = '\n';
        line[sizeof(line) - 1] = '\0';
        for (int i = 0; i < 600; i++)           /* 59 KiB, more than the pipe wants at once */
                if (write(fds[1], line, strlen(line)) < 0)
                        break;
        test_assert(!lines_read(&l, fds[0], 3 * LINES_CHUNK, &n, collect, NULL));
        test_assert(n >= 3 * LINES_CHUNK && n < 4 * LINES_CHUNK);
        test_assert(strv_length(got) > 100);
        close(fds[1]);
        close(fds[0]);
        got = strv_free(got);
}

TEST_MAIN(TEST(test_split), TEST(test_partial), TEST(test_bounded))
