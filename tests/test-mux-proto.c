/* SPDX-License-Identifier: MIT */
/* mux_proto.h: the requests byte for byte as PROTOCOL.mux has them (and as ssh's own mux
 * client fills the fields), and every kind of reply, whole, split and broken. */
#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mux_proto.h"
#include "test.h"

/* A request or reply written as text: "u:N" a uint32, "s:TEXT" a string, "p" the packet
 * length placeholder (patched). */
static size_t build(uint8_t *out, const char *const *fields)
{
        size_t n = 4;

        for (const char *const *f = fields; *f; f++) {
                if ((*f)[0] == 'u') {
                        uint32_t v = (uint32_t)strtoul(*f + 2, NULL, 0);
                        out[n++] = (uint8_t)(v >> 24), out[n++] = (uint8_t)(v >> 16);
                        out[n++] = (uint8_t)(v >> 8), out[n++] = (uint8_t)v;
                } else {
                        size_t len = strlen(*f + 2);
                        out[n++] = 0, out[n++] = 0, out[n++] = (uint8_t)(len >> 8), out[n++] = (uint8_t)len;
                        memcpy(out + n, *f + 2, len);
                        n += len;
                }
        }
        out[0] = out[1] = 0;
        out[2] = (uint8_t)((n - 4) >> 8);
        out[3] = (uint8_t)(n - 4);
        return n;
}

static bool same(const struct buf *b, const uint8_t *want, size_t n)
{
        if (b->len != n || memcmp(b->data, want, n) != 0) {
                printf("#   %zu bytes, want %zu\n", b->len, n);
                return false;
        }
        return true;
}

static void check_forward(enum forward_kind kind, const char *spec, const char *const *want_fields)
{
        struct forward f;
        struct buf b = {0};
        uint8_t want[512];
        size_t n = build(want, want_fields);

        test_assert(forward_parse(kind, spec, &f) == NULL);
        test_assert(mux_put_open_forward(&b, 7, &f) == 0);
        if (!same(&b, want, n))
                printf("#   forward %s\n", spec);
        test_assert(same(&b, want, n));
        buf_free(&b);
}

static void test_requests(void)
{
        struct buf b = {0};
        uint8_t want[64];

        mux_put_hello(&b);
        test_assert(same(&b, want, build(want, (const char *const[]){ "u:1", "u:4", NULL })));
        buf_free(&b);
        mux_put_alive_check(&b, 9);
        test_assert(same(&b, want, build(want, (const char *const[]){ "u:0x10000004", "u:9", NULL })));
        buf_free(&b);

        /* no bind address: ""; an explicit one as given; "*" and "" both mean every address */
        check_forward(FORWARD_LOCAL, "5000:localhost:3306", (const char *const[]){
                "u:0x10000006", "u:7", "u:1", "s:", "u:5000", "s:localhost", "u:3306", NULL });
        check_forward(FORWARD_LOCAL, "127.0.0.1:5000:db:3306", (const char *const[]){
                "u:0x10000006", "u:7", "u:1", "s:127.0.0.1", "u:5000", "s:db", "u:3306", NULL });
        check_forward(FORWARD_LOCAL, "*:5000:db:3306", (const char *const[]){
                "u:0x10000006", "u:7", "u:1", "s:*", "u:5000", "s:db", "u:3306", NULL });
        check_forward(FORWARD_LOCAL, "[::1]:5000:[2001:db8::1]:22", (const char *const[]){
                "u:0x10000006", "u:7", "u:1", "s:::1", "u:5000", "s:2001:db8::1", "u:22", NULL });
        /* a Unix socket: the path in the host field, port (unsigned)-2 */
        check_forward(FORWARD_LOCAL, "/run/db.sock:/var/run/mysqld/mysqld.sock", (const char *const[]){
                "u:0x10000006", "u:7", "u:1", "s:/run/db.sock", "u:0xfffffffe", "s:/var/run/mysqld/mysqld.sock",
                "u:0xfffffffe", NULL });
        check_forward(FORWARD_REMOTE, "0:localhost:80", (const char *const[]){
                "u:0x10000006", "u:7", "u:2", "s:", "u:0", "s:localhost", "u:80", NULL });
        /* a dynamic forward: connect host "socks", as ssh's parser gives it */
        check_forward(FORWARD_DYNAMIC, "127.0.0.1:1080", (const char *const[]){
                "u:0x10000006", "u:7", "u:3", "s:127.0.0.1", "u:1080", "s:socks", "u:0", NULL });

        /* close repeats the open's fields */
        {
                struct forward f;
                test_assert(forward_parse(FORWARD_LOCAL, "5000:localhost:3306", &f) == NULL);
                test_assert(mux_put_close_forward(&b, 8, &f) == 0);
                test_assert(same(&b, want, build(want, (const char *const[]){
                        "u:0x10000007", "u:8", "u:1", "s:", "u:5000", "s:localhost", "u:3306", NULL })));
                buf_free(&b);
                /* a forward that is not one (a corrupted kind) is refused, nothing written */
                f.kind = (enum forward_kind)9;
                test_assert(mux_put_open_forward(&b, 1, &f) == -EINVAL);
                test_assert(b.len == 0);
                buf_free(&b);
        }
}

static int parse(const uint8_t *p, size_t n, size_t *used, struct mux_reply *r)
{
        return mux_parse_reply(p, n, used, r);
}

static void test_replies(void)
{
        uint8_t p[600];
        struct mux_reply r;
        size_t n, used;

        n = build(p, (const char *const[]){ "u:1", "u:4", "s:info", "s:anything", NULL });
        test_assert(parse(p, n, &used, &r) == 1 && used == n && r.type == MUX_MSG_HELLO && r.version == 4);
        n = build(p, (const char *const[]){ "u:1", "u:3", NULL });
        test_assert(parse(p, n, &used, &r) == -EBADMSG);        /* another version */
        n = build(p, (const char *const[]){ "u:0x80000001", "u:5", NULL });
        test_assert(parse(p, n, &used, &r) == 1 && r.type == MUX_S_OK && r.request_id == 5);
        n = build(p, (const char *const[]){ "u:0x80000007", "u:6", "u:40123", NULL });
        test_assert(parse(p, n, &used, &r) == 1 && r.type == MUX_S_REMOTE_PORT && r.value == 40123);
        n = build(p, (const char *const[]){ "u:0x80000003", "u:2", "s:remote port forwarding failed\nfor 8080", NULL });
        test_assert(parse(p, n, &used, &r) == 1 && r.type == MUX_S_FAILURE && r.request_id == 2);
        test_assert_streq(r.reason, "remote port forwarding failed?for 8080");
        /* split anywhere: not yet, and nothing used */
        for (size_t cut = 0; cut < n; cut++)
                test_assert(parse(p, cut, &used, &r) == 0 && used == 0);
        /* a string longer than its packet; a packet longer than the limit; an unknown type */
        n = build(p, (const char *const[]){ "u:0x80000003", "u:2", "u:1000", NULL });
        test_assert(parse(p, n, &used, &r) == -EBADMSG);
        p[0] = 0, p[1] = 1, p[2] = 0, p[3] = 0;
        test_assert(parse(p, 8, &used, &r) == -EBADMSG);
        n = build(p, (const char *const[]){ "u:0x80000009", "u:1", "u:0", NULL });
        test_assert(parse(p, n, &used, &r) == -EBADMSG);
        n = build(p, (const char *const[]){ "u:0x80000001", NULL });
        test_assert(parse(p, n, &used, &r) == -EBADMSG);        /* OK without its request id */
        /* a long reason is cut, still a C string */
        {
                char reason[MUX_REASON_MAX + 60];
                char field[sizeof(reason) + 2];
                static uint8_t big[4096];

                memset(reason, 'x', sizeof(reason) - 1);
                reason[sizeof(reason) - 1] = '\0';
                snprintf(field, sizeof(field), "s:%s", reason);
                n = build(big, (const char *const[]){ "u:0x80000003", "u:1", field, NULL });
                test_assert(parse(big, n, &used, &r) == 1 && strlen(r.reason) == MUX_REASON_MAX - 1);
        }
}

/* The master's hello from OpenSSH 10.3 on (mux.c; PROTOCOL.mux still says "no extensions
 * are currently defined"): extension "info", value "0", announcing the MUX_C_EXT_INFO
 * requests of ssh -O conninfo and -O channels. tunneld skips every extension, whatever its
 * name or value, within the hello's packet. */
static void test_hello_extensions(void)
{
        uint8_t p[600];
        struct mux_reply r;
        size_t n, used, at;

        /* 10.3's hello, then the replies that follow it, in one read */
        n = build(p, (const char *const[]){ "u:1", "u:4", "s:info", "s:0", NULL });
        at = n;
        at += build(p + at, (const char *const[]){ "u:0x80000001", "u:1", NULL });
        at += build(p + at, (const char *const[]){ "u:0x80000007", "u:2", "u:40123", NULL });
        test_assert(mux_parse_reply(p, at, &used, &r) == 1 && used == n && r.type == MUX_MSG_HELLO && r.version == 4);
        test_assert(mux_parse_reply(p + n, at - n, &used, &r) == 1 && r.type == MUX_S_OK && r.request_id == 1);
        n += used;
        test_assert(mux_parse_reply(p + n, at - n, &used, &r) == 1 && r.type == MUX_S_REMOTE_PORT && r.value == 40123);
        test_assert(n + used == at);

        /* several, of names nobody defined yet, one with an empty value */
        n = build(p, (const char *const[]){ "u:1", "u:4", "s:info", "s:0", "s:channels@example.org", "s:",
                                            "s:x", "s:a value of some length", NULL });
        test_assert(mux_parse_reply(p, n, &used, &r) == 1 && used == n && r.type == MUX_MSG_HELLO);

        /* a value of any bytes: NULs, control characters, 0xff */
        {
                static const uint8_t hello[] = { 0, 0, 0, 27, 0, 0, 0, 1, 0, 0, 0, 4,
                                                 0, 0, 0, 4, 'i', 'n', 'f', 'o',
                                                 0, 0, 0, 7, 0, '\n', 0xff, 0, 0x1b, 'x', 0 };
                test_assert(sizeof(hello) == 31);
                test_assert(mux_parse_reply(hello, sizeof(hello), &used, &r) == 1 && used == sizeof(hello));
        }

        /* a name without its value; a value longer than the hello (though the next packet's
         * bytes would make up its length); a name longer than the hello */
        n = build(p, (const char *const[]){ "u:1", "u:4", "s:info", NULL });
        test_assert(mux_parse_reply(p, n, &used, &r) == -EBADMSG && used == 0);
        n = build(p, (const char *const[]){ "u:1", "u:4", "s:info", "u:8", NULL });
        at = n + build(p + n, (const char *const[]){ "u:0x80000001", "u:1", NULL });
        test_assert(mux_parse_reply(p, at, &used, &r) == -EBADMSG);
        n = build(p, (const char *const[]){ "u:1", "u:4", "u:200", "s:info", NULL });
        test_assert(mux_parse_reply(p, n, &used, &r) == -EBADMSG);
        /* half a length: not a whole extension */
        n = build(p, (const char *const[]){ "u:1", "u:4", NULL });
        p[3] += 2, p[n] = 0, p[n + 1] = 0;
        test_assert(mux_parse_reply(p, n + 2, &used, &r) == -EBADMSG);

        /* 10.3's replies to what tunneld never asks (MUX_S_EXT_INFO to -O conninfo,
         * MUX_S_PROXY): not taken for another reply */
        n = build(p, (const char *const[]){ "u:0x90000001", "u:1", "u:0", "s:connection info", NULL });
        test_assert(mux_parse_reply(p, n, &used, &r) == -EBADMSG);
        n = build(p, (const char *const[]){ "u:0x8000000f", "u:1", NULL });
        test_assert(mux_parse_reply(p, n, &used, &r) == -EBADMSG);
}

/* A passenger session (conn_idle.c's keepalive: the sftp subsystem), as ssh's own mux
 * client asks for one (mux.c mux_client_request_session: the flags are uint32), its
 * descriptors with SCM_RIGHTS, and the master's answers: opened, its end, a tty refused. */
static void test_sessions(void)
{
        struct buf b = {0};
        uint8_t want[128], p[128];
        struct mux_reply r;
        size_t n, used;

        mux_put_new_session(&b, 3, "sftp", true);
        test_assert(same(&b, want, build(want, (const char *const[]){
                "u:0x10000002", "u:3", "s:", "u:0", "u:0", "u:0", "u:1", "u:0xffffffff", "s:", "s:sftp", NULL })));
        buf_free(&b);
        mux_put_new_session(&b, 4, "cat", false);
        test_assert(same(&b, want, build(want, (const char *const[]){
                "u:0x10000002", "u:4", "s:", "u:0", "u:0", "u:0", "u:0", "u:0xffffffff", "s:", "s:cat", NULL })));
        buf_free(&b);

        n = build(p, (const char *const[]){ "u:0x80000006", "u:3", "u:2", NULL });
        test_assert(parse(p, n, &used, &r) == 1 && used == n && r.type == MUX_S_SESSION_OPENED && r.request_id == 3 &&
                    r.session_id == 2);
        n = build(p, (const char *const[]){ "u:0x80000004", "u:2", "u:127", NULL });
        test_assert(parse(p, n, &used, &r) == 1 && r.type == MUX_S_EXIT_MESSAGE && r.session_id == 2 && r.value == 127);
        n = build(p, (const char *const[]){ "u:0x80000008", "u:2", NULL });
        test_assert(parse(p, n, &used, &r) == 1 && r.type == MUX_S_TTY_ALLOC_FAIL && r.session_id == 2);
        /* a field short: refused */
        n = build(p, (const char *const[]){ "u:0x80000006", "u:3", NULL });
        test_assert(parse(p, n, &used, &r) == -EBADMSG);
        n = build(p, (const char *const[]){ "u:0x80000004", "u:2", NULL });
        test_assert(parse(p, n, &used, &r) == -EBADMSG);
        n = build(p, (const char *const[]){ "u:0x80000008", NULL });
        test_assert(parse(p, n, &used, &r) == -EBADMSG);

        /* a descriptor over a Unix socket: one byte, and the descriptor with it */
        {
                int sv[2], pipefd[2], got = -1;
                char byte = 1;
                union {
                        struct cmsghdr align;
                        char buf[CMSG_SPACE(sizeof(int))];
                } control;
                struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
                struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                                      .msg_controllen = sizeof(control.buf) };
                struct cmsghdr *cmsg;

                test_assert(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
                test_assert(pipe(pipefd) == 0);
                test_assert(mux_send_fd(sv[0], pipefd[1]) == 0);
                test_assert(recvmsg(sv[1], &msg, 0) == 1 && byte == 0);
                cmsg = CMSG_FIRSTHDR(&msg);
                test_assert(cmsg && cmsg->cmsg_type == SCM_RIGHTS);
                if (cmsg)
                        memcpy(&got, CMSG_DATA(cmsg), sizeof(int));
                /* the same pipe: what is written through the received one comes out of it */
                test_assert(got >= 0 && write(got, "x", 1) == 1 && read(pipefd[0], &byte, 1) == 1 && byte == 'x');
                if (got >= 0)
                        close(got);
                close(pipefd[0]);
                close(pipefd[1]);
                close(sv[1]);
                test_assert(mux_send_fd(sv[0], 0) == -EPIPE);   /* nobody reads: said, never SIGPIPE */
                close(sv[0]);
        }
}

TEST_MAIN(TEST(test_requests), TEST(test_replies), TEST(test_hello_extensions), TEST(test_sessions))
