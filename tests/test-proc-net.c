/* SPDX-License-Identifier: MIT */
/* proc_net: lines of /proc/net/tcp and tcp6 as the kernel writes them (and what is not one),
 * /proc/PID/stat's parent, and this process's own loopback connection found with its fd. */
#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proc_net.h"
#include "test.h"

static void test_lines(void)
{
        struct proc_net_socket s = { .pid = 7, .fd = 9 };
        char text[ENDPOINT_MAX];

        test_assert(proc_net_parse_line("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
                                        "retrnsmt   uid  timeout inode\n", &s) == 0);
        test_assert(proc_net_parse_line("   3: 0100007F:9C40 BB2A12C6:0016 01 00000000:00000000 02:0000A1F3 "
                                        "00000000     0        0 246622 2 0000000000000000 20 4 30 10 -1\n", &s) == 1);
        test_assert(s.state == 1 && s.inode == 246622 && s.pid == 7 && s.fd == 9);
        test_assert_streq(endpoint_format(&s.local, text, sizeof(text)), "127.0.0.1:40000");
        test_assert_streq(endpoint_format(&s.remote, text, sizeof(text)), "198.18.42.187:22");
        /* IPv6, and an IPv4-mapped one (a dual-stack socket) */
        test_assert(proc_net_parse_line("   0: 00000000000000000000000001000000:0016 "
                                        "B80D0120000000000000000001000000:C350 0A 00000000:00000000 00:00000000 "
                                        "00000000     0        0 1234 1 0000000000000000 100 0 0 10 0\n", &s) == 1);
        test_assert(s.state == 10 && s.inode == 1234);
        test_assert_streq(endpoint_format(&s.local, text, sizeof(text)), "[::1]:22");
        test_assert_streq(endpoint_format(&s.remote, text, sizeof(text)), "[2001:db8::1]:50000");
        test_assert(proc_net_parse_line("   1: 0000000000000000FFFF00000100007F:0016 "
                                        "0000000000000000FFFF00000200007F:C350 01 0:0 0:0 0 0 0 77", &s) == 1);
        test_assert_streq(endpoint_format(&s.local, text, sizeof(text)), "127.0.0.1:22");
        test_assert(s.local.family == AF_INET && s.inode == 77);
        /* not lines of the table */
        test_assert(proc_net_parse_line("", &s) == 0);
        test_assert(proc_net_parse_line("   3: 0100007F:9C40 BB2A12C6:0016 01 0:0 0:0 0 0 0\n", &s) == 0);
        test_assert(proc_net_parse_line("   3: 0100007G:9C40 BB2A12C6:0016 01 0:0 0:0 0 0 0 5\n", &s) == 0);
        test_assert(proc_net_parse_line("   3: 0100007F:9C4 BB2A12C6:0016 01 0:0 0:0 0 0 0 5\n", &s) == 0);
        test_assert(proc_net_parse_line("   3: 0100007F:9C40 0000000000000000FFFF00000200007F:0016 01 0:0 0:0 0 0 0 5",
                                        &s) == 0);                      /* families differ */
        test_assert(proc_net_parse_line("   3: 0100007F:9C40 BB2A12C6:0016 1 0:0 0:0 0 0 0 5\n", &s) == 0);
        /* one end mapped, the other not (found by the fuzzer): both stay IPv6 */
        test_assert(proc_net_parse_line("   1: 0000000000000000FFFF00000100007F:0015 "
                                        "0000000009551615FFFF00000200007F:C350 01 0:0 0:0 0 0 0 77\n", &s) == 1);
        test_assert(s.local.family == AF_INET6 && s.remote.family == AF_INET6);
        test_assert(proc_net_parse_line("   3: 0100007F:9C40 BB2A12C6:0016 01 0:0 0:0 0 0 0 -5\n", &s) == 0);
        test_assert(proc_net_parse_line("   3: 0100007F:9C40 BB2A12C6:0016 01 0:0 0:0 0 0 0 99999999999999999999999\n",
                                        &s) == 0);
        test_assert(proc_net_parse_line("   3 0100007F:9C40 BB2A12C6:0016 01 0:0 0:0 0 0 0 5\n", &s) == 0);
}

static void test_ppid(void)
{
        pid_t ppid = 0;

        test_assert(proc_net_parse_ppid("123 (ssh) S 45 123 123 0 -1", &ppid) == 0 && ppid == 45);
        test_assert(proc_net_parse_ppid("124 (a) b) (c) R 46 124", &ppid) == 0 && ppid == 46);
        test_assert(proc_net_parse_ppid("125 (ssh S 45", &ppid) == -EINVAL);
        test_assert(proc_net_parse_ppid("126 (ssh) S", &ppid) == -EINVAL);
        test_assert(proc_net_parse_ppid("", &ppid) == -EINVAL);
}

/* this process's own connection, found with its descriptor and inode */
static void test_own_connection(void)
{
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        struct proc_net_socket s, all[8];
        struct stat st;
        size_t n = 0;
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), a;

        test_assert(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 1) == 0);
        test_assert(getsockname(lfd, (struct sockaddr *)&sa, &len) == 0);
        test_assert(connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        test_assert(a >= 0 && fstat(c, &st) == 0);
        test_assert(proc_net_server_connection(getpid(), ntohs(sa.sin_port), &s) == 0);
        test_assert(s.fd == c && s.inode == st.st_ino && s.pid == getpid() && s.remote.port == ntohs(sa.sin_port));
        test_assert(proc_net_connections(getpid(), all, 8, &n) == 0 && n == 2);        /* both ends */
        test_assert(n == 2 && all[0].fd < all[1].fd);
        test_assert(proc_net_established(getpid(), NULL, NULL) == 2);
        test_assert(proc_net_server_connection(getpid(), 1, &s) == -ENOENT);
        test_assert(proc_net_proxy_connection(getpid(), ntohs(sa.sin_port), &s) == -ENOENT);   /* no children */
        test_assert(proc_net_connections(-5, all, 8, &n) == -ENOENT);
        close(a);
        close(c);
        close(lfd);
}

TEST_MAIN(TEST(test_lines), TEST(test_ppid), TEST(test_own_connection))
