/* SPDX-License-Identifier: MIT */
/* clash.h as a table: which forwards can listen at once, each row with why. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"     /* rows name what they need */
#include <stdio.h>

#include "clash.h"
#include "test.h"
#include "util.h"

#define L FORWARD_LOCAL
#define R FORWARD_REMOTE
#define D FORWARD_DYNAMIC

struct side {
        enum forward_kind kind;
        const char *spec;
        const char *host;               /* -R: the server, as host:port of the tunnel */
        int port;
        bool gateway_ports;
};

static void test_pairs(void)
{
        static const struct {
                const char *why;
                struct side a, b;
                bool clash;
        } rows[] = {
                /* both work: ssh binds them side by side */
                { "IPv4 and IPv6 loopback are two listeners", { L, "127.0.0.1:5000:h:1" }, { L, "[::1]:5000:h:1" }, false },
                { "0.0.0.0 and :: (IPV6_V6ONLY)", { L, "0.0.0.0:5000:h:1" }, { L, "[::]:5000:h:1" }, false },
                { "0.0.0.0 and ::1", { L, "0.0.0.0:5000:h:1" }, { L, "[::1]:5000:h:1" }, false },
                { ":: and 127.0.0.1", { L, "[::]:5000:h:1" }, { L, "127.0.0.1:5000:h:1" }, false },
                { "two loopback addresses", { L, "127.0.0.1:5000:h:1" }, { L, "127.0.0.2:5000:h:1" }, false },
                { "no bind address is loopback only", { L, "5000:h:1" }, { L, "127.0.0.2:5000:h:1" }, false },
                { "other ports", { L, "5000:h:1" }, { L, "5001:h:1" }, false },
                { "-R on two servers", { R, "8080:h:1", "a.example", 0 }, { R, "8080:h:1", "b.example", 0 }, false },
                { "-R on two sshd ports of one host", { R, "8080:h:1", "a.example", 22 }, { R, "8080:h:1", "a.example", 2222 }, false },
                { "-R 0: the server picks a free port", { R, "0:h:1", "a.example", 0 }, { R, "0:h:1", "a.example", 0 }, false },
                { "-L here and -R there", { L, "8080:h:1" }, { R, "8080:h:1", "a.example", 0 }, false },
                { "two socket paths", { L, "/run/a.sock:h:1" }, { L, "/run/b.sock:h:1" }, false },
                { "a socket and a port", { L, "/run/a.sock:h:1" }, { L, "5000:h:1" }, false },
                { "-R 0.0.0.0 and [::]: fine under GatewayPorts clientspecified", { R, "0.0.0.0:8080:h:1", "a", 0 }, { R, "[::]:8080:h:1", "a", 0 }, false },
                { "a name tunneld cannot resolve vs every address: not certain", { L, "myhost:5000:h:1" }, { L, "*:5000:h:1" }, false },
                /* cannot both work */
                { "the same forward twice", { L, "5000:h:1" }, { L, "5000:h:2" }, true },
                { "localhost in any case", { L, "LOCALHOST:5000:h:1" }, { L, "localhost:5000:h:1" }, true },
                { "127.1 is 127.0.0.1", { L, "127.1:5000:h:1" }, { L, "127.0.0.1:5000:h:1" }, true },
                { "::1 spelt out", { L, "[0:0:0:0:0:0:0:1]:5000:h:1" }, { L, "[::1]:5000:h:1" }, true },
                { "GatewayPorts=yes: no bind address is every address", { L, "5000:h:1", .gateway_ports = true }, { L, "127.0.0.2:5000:h:1" }, true },
                { "* is every address", { L, "*:5000:h:1" }, { L, "127.0.0.1:5000:h:1" }, true },
                { "0.0.0.0 covers every IPv4 address", { L, "0.0.0.0:5000:h:1" }, { L, "127.0.0.1:5000:h:1" }, true },
                { "no bind address includes ::1", { L, "5000:h:1" }, { L, "[::1]:5000:h:1" }, true },
                { "-D and -L share the port space", { D, "5000" }, { L, "127.0.0.1:5000:h:1" }, true },
                { "one socket, two spellings", { L, "/run/x.sock:h:1" }, { L, "/run//./x.sock:h:1" }, true },
                { "one -R socket on one server", { R, "/run/x.sock:h:1", "a", 0 }, { R, "/run/x.sock:/y", "a", 0 }, true },
                { "-R: port unset is 22", { R, "8080:h:1", "a.example", 0 }, { R, "8080:h:1", "a.example", 22 }, true },
                { "-R: 127.0.0.1 and localhost are one server", { R, "8080:h:1", "127.0.0.1", 0 }, { R, "8080:h:1", "localhost", 22 }, true },
                { "-R: the server's own rules, any GatewayPorts", { R, "8080:h:1", "a", 0 }, { R, "127.0.0.1:8080:h:1", "a", 0 }, true },
                { "a name twice", { L, "myhost:5000:h:1" }, { L, "MyHost:5000:h:1" }, true },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                struct clash_listener a, b;
                char sa[300], sb[300];
                const char *ida = rows[i].a.host ? clash_server_identity(rows[i].a.host, rows[i].a.port, sa, sizeof(sa)) : NULL;
                const char *idb = rows[i].b.host ? clash_server_identity(rows[i].b.host, rows[i].b.port, sb, sizeof(sb)) : NULL;
                bool got;

                test_assert(clash_listener_from(rows[i].a.kind, rows[i].a.spec, ida, rows[i].a.gateway_ports, &a) == 0);
                test_assert(clash_listener_from(rows[i].b.kind, rows[i].b.spec, idb, rows[i].b.gateway_ports, &b) == 0);
                got = clash_listeners_clash(&a, &b);
                if (got != rows[i].clash || clash_listeners_clash(&b, &a) != got)
                        printf("#   row %zu (%s): clash %d, expected %d\n", i, rows[i].why, got, rows[i].clash);
                test_assert(got == rows[i].clash);
                test_assert(clash_listeners_clash(&b, &a) == got);      /* symmetric */
                clash_listener_done(&a);
                clash_listener_done(&b);
        }
}

static void test_server_identity(void)
{
        char b[128];

        test_assert_streq(clash_server_identity("127.0.0.1", 0, b, sizeof(b)), "localhost:22");
        test_assert_streq(clash_server_identity("LOCALHOST", 22, b, sizeof(b)), "localhost:22");
        test_assert_streq(clash_server_identity("::1", 2222, b, sizeof(b)), "localhost:2222");
        test_assert_streq(clash_server_identity("Db.Example.org", 1022, b, sizeof(b)), "db.example.org:1022");
}

static void test_gateway_ports(void)
{
        char *yes[] = { (char *)"Compression=yes", (char *)"gatewayports=yes", NULL };
        char *first[] = { (char *)"GatewayPorts=no", (char *)"GatewayPorts=yes", NULL };

        test_assert(clash_gateway_ports(yes));
        test_assert(!clash_gateway_ports(first));       /* ssh's first value wins */
        test_assert(!clash_gateway_ports(NULL));
}

static size_t reports;
static size_t reported[8][2];

static void found(const struct clash_entry *a, const struct clash_entry *b, void *userdata)
{
        (void)userdata;
        if (reports < 8) {
                reported[reports][0] = a->index;
                reported[reports][1] = b->index;
        }
        reports++;
}

/* Many at once: each clashing forward is reported once, against the earliest one. */
static void test_find_all(void)
{
        static const char *const specs[] = { "5000:h:1", "6000:h:1", "127.0.0.1:5000:h:1", "[::1]:6000:h:1",
                                             "7000:h:1", "localhost:5000:h:1" };
        struct clash_entry v[ELEMENTSOF(specs)];

        for (size_t i = 0; i < ELEMENTSOF(specs); i++) {
                test_assert(clash_listener_from(FORWARD_LOCAL, specs[i], NULL, false, &v[i].l) == 0);
                v[i].index = i;
                v[i].owner = NULL;
        }
        reports = 0;
        test_assert(clash_find_all(v, ELEMENTSOF(specs), found, NULL) == 0);
        test_assert(reports == 3);
        test_assert(reported[0][0] == 0 && reported[0][1] == 2);
        test_assert(reported[1][0] == 0 && reported[1][1] == 5);
        test_assert(reported[2][0] == 1 && reported[2][1] == 3);
        for (size_t i = 0; i < ELEMENTSOF(specs); i++)
                clash_listener_done(&v[i].l);
}

/* The fast scan finds, for every forward, the same earliest clash as comparing every pair
 * would: random local and remote forwards over a few ports, addresses and paths. */
static size_t fast_of[400];

static void record(const struct clash_entry *a, const struct clash_entry *b, void *userdata)
{
        (void)userdata;
        fast_of[b->index] = a->index + 1;
}

static void test_find_all_is_pairwise(void)
{
        static const char *const binds[] = { "", "*:", "localhost:", "LocalHost:", "127.0.0.1:", "127.1:", "127.0.0.2:",
                                             "0.0.0.0:", "[::]:", "[::1]:", "[0:0:0:0:0:0:0:1]:", "myhost:", "MYHOST:" };
        static const char *const servers[] = { "a:22", "b:22" };
        unsigned seed = 12345;
        struct clash_entry v[400], copy[400];
        size_t n = 400;

        for (size_t i = 0; i < n; i++) {
                char spec[128];
                int kind = (seed = seed * 1103515245 + 12345) >> 16 & 3;
                unsigned r = (seed = seed * 1103515245 + 12345) >> 16;

                const char *bind = binds[(r >> 4) % ELEMENTSOF(binds)];
                unsigned port = 5000 + (r >> 8) % 3;
                enum forward_kind k = kind == 3 ? FORWARD_REMOTE : kind == 2 ? FORWARD_DYNAMIC : FORWARD_LOCAL;

                if (k != FORWARD_DYNAMIC && (r & 15) == 0)
                        snprintf(spec, sizeof(spec), "/run/s%u.sock:h:1", r >> 4 & 3);
                else if (k == FORWARD_DYNAMIC)
                        snprintf(spec, sizeof(spec), "%s%u", bind, port);
                else
                        snprintf(spec, sizeof(spec), "%s%u:h:1", bind, port);
                test_assert(clash_listener_from(k, spec, servers[r >> 12 & 1], (r >> 13 & 7) == 0, &v[i].l) == 0);
                v[i].index = i;
                v[i].owner = NULL;
                fast_of[i] = 0;
        }
        memcpy(copy, v, sizeof(v));
        test_assert(clash_find_all(copy, n, record, NULL) == 0);
        for (size_t j = 0; j < n; j++) {
                size_t slow = 0;
                for (size_t i = 0; i < j && !slow; i++)
                        if (clash_listeners_clash(&v[i].l, &v[j].l))
                                slow = i + 1;
                if (slow != fast_of[j])
                        printf("#   forward %zu: pairwise says %zu, the scan %zu\n", j, slow, fast_of[j]);
                test_assert(slow == fast_of[j]);
        }
        for (size_t i = 0; i < n; i++)
                clash_listener_done(&v[i].l);
}

TEST_MAIN(TEST(test_pairs), TEST(test_server_identity), TEST(test_gateway_ports), TEST(test_find_all),
          TEST(test_find_all_is_pairwise))
