/* SPDX-License-Identifier: MIT */
/* endpoint: addresses with and without ports, IPv6 in brackets, scopes, IPv4-mapped ones
 * made IPv4, and what is not an address. */
#include <arpa/inet.h>
#include <errno.h>

#include "endpoint.h"
#include "test.h"

static void round_trip(const char *in, const char *out)
{
        struct endpoint e;
        char buf[ENDPOINT_MAX];

        test_assert(endpoint_parse(in, &e) == 0);
        test_assert_streq(endpoint_format(&e, buf, sizeof(buf)), out);
}

static void test_parse_and_format(void)
{
        round_trip("198.18.0.1:22", "198.18.0.1:22");
        round_trip("198.18.0.1", "198.18.0.1");
        round_trip("[2001:db8::1]:443", "[2001:db8::1]:443");
        round_trip("2001:db8::1", "2001:db8::1");
        round_trip("[::1]:65535", "[::1]:65535");
        round_trip("[fe80::1%3]:22", "[fe80::1%3]:22");
        round_trip("[::ffff:10.1.2.3]:22", "10.1.2.3:22");
        round_trip("::ffff:10.1.2.3", "10.1.2.3");
}

static void test_not_addresses(void)
{
        static const char *const bad[] = {
                "", ":22", "198.18.0.1:", "198.18.0.1:0", "198.18.0.1:65536", "198.18.0.1:22x", "198.18.0.1:-1",
                "[198.18.0.1]:22", "[::1", "[::1]22", "[::1]:", "host:22", "198.18.0.256", "1.2.3.4%2",
                "[fe80::1%]:22", "[fe80::1%x]:22", "::1:22:", "[2001:db8::1]:22:33",
                "0000000000000000000000000000000000000000000000000000000000000000000000000000:1",
        };
        struct endpoint e;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                if (endpoint_parse(bad[i], &e) != -EINVAL)
                        printf("#   accepted: \"%s\"\n", bad[i]);
                test_assert(endpoint_parse(bad[i], &e) == -EINVAL);
        }
}

static void test_sockaddr_and_compare(void)
{
        struct endpoint a, b, c;
        struct sockaddr_storage ss;
        size_t len;

        test_assert(endpoint_parse("[2001:db8::7]:22", &a) == 0);
        len = endpoint_to_sockaddr(&a, &ss);
        test_assert(len == sizeof(struct sockaddr_in6) && ss.ss_family == AF_INET6);
        test_assert(endpoint_from_sockaddr((struct sockaddr *)&ss, len, &b) == 0 && endpoint_equal(&a, &b));
        test_assert(endpoint_from_sockaddr((struct sockaddr *)&ss, 8, &b) == -EAFNOSUPPORT);
        test_assert(endpoint_parse("2001:db8::7", &c) == 0);
        test_assert(endpoint_same_addr(&a, &c) && !endpoint_equal(&a, &c));
        test_assert(endpoint_parse("10.0.0.1:22", &c) == 0 && !endpoint_same_addr(&a, &c));
        test_assert(endpoint_to_sockaddr(&c, &ss) == sizeof(struct sockaddr_in));
        b = (struct endpoint){0};
        test_assert(!endpoint_same_addr(&b, &b) && endpoint_to_sockaddr(&b, &ss) == 0);
}

TEST_MAIN(TEST(test_parse_and_format), TEST(test_not_addresses), TEST(test_sockaddr_and_compare))
