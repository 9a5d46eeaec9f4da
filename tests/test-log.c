/* SPDX-License-Identifier: MIT */
#include <signal.h>

#include "log.h"
#include "test.h"

static bool has_field(struct iovec *iov, int n, const char *field)
{
        for (int i = 0; i < n; i++)
                if (iov[i].iov_len == strlen(field) && memcmp(iov[i].iov_base, field, iov[i].iov_len) == 0)
                        return true;
        return false;
}

static void test_fields(void)
{
        struct log_ctx ctx = LOG_CTX_INIT;
        struct log_scratch s;
        struct iovec iov[LOG_MAX_FIELDS];
        int n;

        ctx.tunnel = "db";
        ctx.pid = 4242;
        ctx.exit_status = 255;
        ctx.state = "backoff";
        ctx.failure = "auth";
        ctx.destination = "relay2";
        n = log_build_fields(LOG_WARNING, &ctx, "ssh exited", &s, iov);
        test_assert(n == 9);
        test_assert(has_field(iov, n, "DESTINATION=relay2"));
        test_assert(has_field(iov, n, "MESSAGE=db: ssh exited"));
        test_assert(has_field(iov, n, "PRIORITY=4"));
        test_assert(has_field(iov, n, "TUNNEL=db"));
        test_assert(has_field(iov, n, "SSH_PID=4242"));
        test_assert(has_field(iov, n, "EXIT_STATUS=255"));
        test_assert(has_field(iov, n, "TUNNEL_STATE=backoff"));
        test_assert(has_field(iov, n, "FAILURE=auth"));
        test_assert(has_field(iov, n, "SYSLOG_IDENTIFIER=tunneld"));
        free(s.message);

        ctx = (struct log_ctx)LOG_CTX_INIT;
        ctx.tunnel = "web";
        ctx.exit_signal = SIGKILL;
        n = log_build_fields(LOG_ERR, &ctx, "killed", &s, iov);
        test_assert(n == 5);
        test_assert(has_field(iov, n, "EXIT_SIGNAL=KILL"));
        test_assert(!has_field(iov, n, "EXIT_STATUS=-1"));
        free(s.message);

        n = log_build_fields(LOG_INFO, NULL, "plain", &s, iov);
        test_assert(n == 3);
        test_assert(has_field(iov, n, "MESSAGE=plain"));
        free(s.message);
}

static void test_stderr_format(void)
{
        struct log_ctx ctx = LOG_CTX_INIT;
        _cleanup_free_ char *a = NULL, *b = NULL;

        ctx.tunnel = "db";
        test_assert(log_format_stderr(LOG_WARNING, &ctx, "down", false, &a) == 0);
        test_assert_streq(a, "<4>db: down\n");
        test_assert(log_format_stderr(LOG_NOTICE, NULL, "hello", false, &b) == 0);
        test_assert_streq(b, "<5>hello\n");
}

/* On a terminal: "HH:MM:SS level   name: text", no "<N>" (colour only with NO_COLOR unset,
 * and log_open decides that: not here). */
static void test_stderr_format_tty(void)
{
        struct log_ctx ctx = LOG_CTX_INIT;
        _cleanup_free_ char *a = NULL;

        ctx.tunnel = "db";
        test_assert(log_format_stderr(LOG_WARNING, &ctx, "down", true, &a) == 0);
        test_assert(a && strlen(a) == strlen("12:34:56 warning db: down\n"));
        test_assert(a && a[2] == ':' && a[5] == ':' && strcmp(a + 8, " warning db: down\n") == 0);
        test_assert(a && !strchr(a, '<'));
}

static void test_errno_return(void)
{
        log_open(LOG_TARGET_STDERR);
        log_set_max_level(LOG_EMERG);   /* silent */
        test_assert(log_error_errno(-ENOENT, "x: %m") == -ENOENT);
        test_assert(log_error_errno(EACCES, "x: %m") == -EACCES);
}

TEST_MAIN(TEST(test_fields), TEST(test_stderr_format), TEST(test_stderr_format_tty), TEST(test_errno_return))
