/* SPDX-License-Identifier: MIT */
/* tcp_diag: the request as the kernel wants it, every kind of reply (one socket, a dump,
 * an error, short and long tcp_info, broken lengths), and one real lookup of a loopback
 * connection of this process. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nlbuild.h"
#include "tcp_diag.h"
#include "test.h"

static struct endpoint ep(const char *text)
{
        struct endpoint e;

        test_assert(endpoint_parse(text, &e) == 0);
        return e;
}

/* an IPv4 address as a dual-stack socket has it: ::ffff:a.b.c.d, family AF_INET6 */
static struct endpoint mapped(const char *v4)
{
        struct endpoint e = ep(v4), m = { .family = AF_INET6, .port = e.port };

        m.addr.v6.s6_addr[10] = m.addr.v6.s6_addr[11] = 0xff;
        memcpy(&m.addr.v6.s6_addr[12], &e.addr.v4, 4);
        return m;
}

static void add_socket_ep(struct nlbuild *b, uint32_t seq, struct endpoint l, struct endpoint r, uint32_t inode,
                          const struct tcp_info *ti, size_t info_len)
{
        struct inet_diag_msg d = {
                .idiag_family = (uint8_t)l.family,
                .idiag_state = 1,
                .idiag_inode = inode,
                .idiag_uid = 1000,
                .idiag_wqueue = 300,
                .id = { .idiag_sport = htons((uint16_t)l.port), .idiag_dport = htons((uint16_t)r.port) },
        };

        memcpy(d.id.idiag_src, &l.addr, endpoint_addr_len(&l));
        memcpy(d.id.idiag_dst, &r.addr, endpoint_addr_len(&r));
        nlb_msg(b, SOCK_DIAG_BY_FAMILY, seq, &d, sizeof(d));
        nlb_u32(b, INET_DIAG_MARK, 7);          /* attributes not asked for come too */
        if (ti)
                nlb_attr(b, INET_DIAG_INFO, ti, info_len);
}

static void add_socket(struct nlbuild *b, uint32_t seq, const char *local, const char *remote, uint32_t inode,
                       const struct tcp_info *ti, size_t info_len)
{
        add_socket_ep(b, seq, ep(local), ep(remote), inode, ti, info_len);
}

static struct tcp_info some_info(void)
{
        struct tcp_info ti;

        memset(&ti, 0, sizeof(ti));
        ti.tcpi_state = 1;
        ti.tcpi_retransmits = 3;
        ti.tcpi_backoff = 3;
        ti.tcpi_unacked = 2;
        ti.tcpi_total_retrans = 9;
        ti.tcpi_last_ack_recv = 4200;
        ti.tcpi_last_data_recv = 4100;
        ti.tcpi_last_data_sent = 90;
        ti.tcpi_rtt = 1500;
        ti.tcpi_rttvar = 700;
        ti.tcpi_rto = 1632000;
        ti.tcpi_notsent_bytes = 1620;
        ti.tcpi_bytes_acked = 4654;
        ti.tcpi_bytes_received = 4841;
        ti.tcpi_bytes_sent = 5433;
        return ti;
}

static void test_request(void)
{
        struct endpoint l = ep("198.18.0.1:40000"), r = ep("198.18.0.2:22"), r6 = ep("[::1]:22");
        uint8_t buf[256];
        size_t n = tcp_diag_request(&l, &r, 0, 5, buf, sizeof(buf));
        const struct nlmsghdr *h = (const void *)buf;
        const struct inet_diag_req_v2 *q = NLMSG_DATA(h);

        test_assert(n == NLMSG_LENGTH(sizeof(*q)) && h->nlmsg_len == n);
        test_assert(h->nlmsg_type == SOCK_DIAG_BY_FAMILY && h->nlmsg_seq == 5);
        test_assert(h->nlmsg_flags == NLM_F_REQUEST);                   /* exact lookup, no dump */
        test_assert(q->sdiag_family == AF_INET && q->sdiag_protocol == IPPROTO_TCP);
        test_assert(q->idiag_ext == 1 << (INET_DIAG_INFO - 1));
        test_assert(ntohs(q->id.idiag_sport) == 40000 && ntohs(q->id.idiag_dport) == 22);
        test_assert(memcmp(q->id.idiag_src, &l.addr.v4, 4) == 0 && memcmp(q->id.idiag_dst, &r.addr.v4, 4) == 0);
        test_assert(q->id.idiag_cookie[0] == INET_DIAG_NOCOOKIE);

        n = tcp_diag_request(&l, NULL, 1u << 1, 6, buf, sizeof(buf));
        test_assert(n && (h->nlmsg_flags & NLM_F_DUMP) && q->idiag_states == 2);

        test_assert(tcp_diag_request(&l, &r6, 0, 1, buf, sizeof(buf)) == 0);   /* mixed families */
        test_assert(tcp_diag_request(&l, &r, 0, 1, buf, 8) == 0);              /* no room */
}

static void test_one_socket(void)
{
        struct nlbuild b = {0};
        struct tcp_info ti = some_info();
        struct tcp_diag_info d;
        char text[ENDPOINT_MAX];

        add_socket(&b, 5, "198.18.0.1:40000", "198.18.0.2:22", 1234, &ti, sizeof(ti));
        test_assert(tcp_diag_parse(b.data, b.len, 5, 0, &d) == 1);
        test_assert_streq(endpoint_format(&d.local, text, sizeof(text)), "198.18.0.1:40000");
        test_assert_streq(endpoint_format(&d.remote, text, sizeof(text)), "198.18.0.2:22");
        test_assert(d.inode == 1234 && d.state == 1 && d.uid == 1000 && d.wqueue == 300);
        test_assert(d.has_info && d.has_bytes_sent);
        test_assert(d.unacked == 2 && d.retransmits == 3 && d.total_retrans == 9 && d.backoff == 3);
        test_assert(d.last_ack_recv_ms == 4200 && d.last_data_recv_ms == 4100 && d.last_data_sent_ms == 90);
        test_assert(d.rtt_us == 1500 && d.rttvar_us == 700 && d.rto_us == 1632000 && d.notsent_bytes == 1620);
        test_assert(d.bytes_acked == 4654 && d.bytes_received == 4841 && d.bytes_sent == 5433);
        test_assert_streq(tcp_diag_state_name(d.state), "established");
        test_assert_streq(tcp_diag_state_name(200), "unknown");
}

static void test_older_and_newer_kernels(void)
{
        struct nlbuild b = {0};
        struct tcp_info ti = some_info();
        uint8_t longer[sizeof(ti) + 64] = {0};
        struct tcp_diag_info d;

        /* 4.x before tcpi_bytes_sent: the figures it has, no bytes_sent */
        add_socket(&b, 1, "10.0.0.1:1", "10.0.0.2:2", 1, &ti, offsetof(struct tcp_info, tcpi_bytes_sent));
        test_assert(tcp_diag_parse(b.data, b.len, 1, 0, &d) == 1);
        test_assert(d.has_info && !d.has_bytes_sent && d.bytes_sent == 0 && d.bytes_acked == 4654);
        /* a kernel too old for tcpi_total_retrans: not called tcp_info */
        b.len = 0;
        add_socket(&b, 1, "10.0.0.1:1", "10.0.0.2:2", 1, &ti, 8);
        test_assert(tcp_diag_parse(b.data, b.len, 1, 0, &d) == 1);
        test_assert(!d.has_info && d.retransmits == 3);
        /* a newer kernel's longer struct: the known part read */
        memcpy(longer, &ti, sizeof(ti));
        b.len = 0;
        add_socket(&b, 1, "10.0.0.1:1", "10.0.0.2:2", 1, (const void *)longer, sizeof(longer));
        test_assert(tcp_diag_parse(b.data, b.len, 1, 0, &d) == 1);
        test_assert(d.has_bytes_sent && d.bytes_sent == 5433);
        /* no INET_DIAG_INFO at all (a time-wait socket) */
        b.len = 0;
        add_socket(&b, 1, "[2001:db8::1]:1", "[2001:db8::2]:22", 1, NULL, 0);
        test_assert(tcp_diag_parse(b.data, b.len, 1, 0, &d) == 1);
        test_assert(!d.has_info && d.local.family == AF_INET6 && d.remote.port == 22);
}

static void test_dump_by_inode(void)
{
        struct nlbuild b = {0};
        struct tcp_info ti = some_info();
        struct tcp_diag_info d;

        add_socket(&b, 9, "10.0.0.1:1", "10.0.0.2:2", 100, &ti, sizeof(ti));
        add_socket_ep(&b, 9, mapped("10.0.0.1:3"), mapped("10.0.0.2:4"), 200, &ti, sizeof(ti));
        test_assert(tcp_diag_parse(b.data, b.len, 9, 200, &d) == 1);
        test_assert(d.inode == 200 && d.local.family == AF_INET && d.local.port == 3);  /* mapped → IPv4 */
        test_assert(tcp_diag_parse(b.data, b.len, 9, 300, &d) == 0);    /* more to come */
        b.len = 0;
        add_socket_ep(&b, 9, mapped("10.0.0.1:3"), ep("[2001:db8::2]:4"), 300, &ti, sizeof(ti));
        test_assert(tcp_diag_parse(b.data, b.len, 9, 0, &d) == 1);
        test_assert(d.local.family == AF_INET6 && d.remote.family == AF_INET6);        /* one mapped end: IPv6 */
        b.len = 0;
        add_socket(&b, 9, "10.0.0.1:1", "10.0.0.2:2", 100, &ti, sizeof(ti));
        add_socket_ep(&b, 9, mapped("10.0.0.1:3"), mapped("10.0.0.2:4"), 200, &ti, sizeof(ti));
        nlb_done(&b, 9);
        test_assert(tcp_diag_parse(b.data, b.len, 9, 300, &d) == -ENOENT);
        test_assert(tcp_diag_parse(b.data, b.len, 8, 100, &d) == 0);    /* another question's answer */
}

static void test_errors(void)
{
        struct nlbuild b = {0};
        struct tcp_info ti = some_info();
        struct tcp_diag_info d;

        nlb_error(&b, 3, -ENOENT);
        test_assert(tcp_diag_parse(b.data, b.len, 3, 0, &d) == -ENOENT);
        b.len = 0;
        nlb_error(&b, 3, -EPERM);
        test_assert(tcp_diag_parse(b.data, b.len, 3, 0, &d) == -EPERM);
        b.len = 0;
        nlb_error(&b, 3, 5);                                    /* a positive "error" is nonsense */
        test_assert(tcp_diag_parse(b.data, b.len, 3, 0, &d) == -EBADMSG);

        /* a message longer than the datagram */
        b.len = 0;
        add_socket(&b, 3, "10.0.0.1:1", "10.0.0.2:2", 1, &ti, sizeof(ti));
        test_assert(tcp_diag_parse(b.data, b.len - 1, 3, 0, &d) == -EBADMSG);
        /* an attribute longer than its message */
        nlb_last(&b)->nlmsg_len -= 8;
        test_assert(tcp_diag_parse(b.data, b.len, 3, 0, &d) == -EBADMSG);
        /* too short for inet_diag_msg */
        b.len = 0;
        nlb_msg(&b, SOCK_DIAG_BY_FAMILY, 3, "x", 1);
        test_assert(tcp_diag_parse(b.data, b.len, 3, 0, &d) == -EBADMSG);
        /* a family that is not inet */
        b.len = 0;
        add_socket(&b, 3, "10.0.0.1:1", "10.0.0.2:2", 1, NULL, 0);
        ((struct inet_diag_msg *)NLMSG_DATA(nlb_last(&b)))->idiag_family = AF_UNIX;
        test_assert(tcp_diag_parse(b.data, b.len, 3, 0, &d) == -EBADMSG);
        /* a header cut short */
        test_assert(tcp_diag_parse(b.data, 7, 3, 0, &d) == -EBADMSG);
        test_assert(tcp_diag_parse(b.data, 0, 3, 0, &d) == 0);
}

/* the kernel's answer for a connection of this process, by 4-tuple and by inode */
static void test_real_connection(void)
{
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        struct endpoint l, r;
        struct tcp_diag_info d, byinode;
        struct stat st;
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), a;

        test_assert(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 1) == 0);
        test_assert(getsockname(lfd, (struct sockaddr *)&sa, &len) == 0);
        test_assert(connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        test_assert(a >= 0 && write(c, "hello", 5) == 5);
        len = sizeof(sa);
        test_assert(getsockname(c, (struct sockaddr *)&sa, &len) == 0 && endpoint_from_sockaddr((void *)&sa, len, &l) == 0);
        len = sizeof(sa);
        test_assert(getpeername(c, (struct sockaddr *)&sa, &len) == 0 && endpoint_from_sockaddr((void *)&sa, len, &r) == 0);
        test_assert(tcp_diag_get(&l, &r, &d) == 0);
        test_assert(d.state == 1 && d.has_info && endpoint_equal(&d.local, &l) && endpoint_equal(&d.remote, &r));
        test_assert(fstat(c, &st) == 0 && d.inode == st.st_ino);
        test_assert(d.bytes_acked >= 5 || d.unacked > 0);
        test_assert(tcp_diag_get_by_inode(AF_INET, st.st_ino, &byinode) == 0 && endpoint_equal(&byinode.local, &l));
        r.port = r.port == 1 ? 2 : 1;
        test_assert(tcp_diag_get(&l, &r, &d) == -ENOENT);
        close(a);
        close(c);
        close(lfd);
}

TEST_MAIN(TEST(test_request), TEST(test_one_socket), TEST(test_older_and_newer_kernels), TEST(test_dump_by_inode),
          TEST(test_errors), TEST(test_real_connection))
