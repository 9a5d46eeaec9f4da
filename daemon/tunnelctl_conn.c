/* SPDX-License-Identifier: MIT */
/* tunnelctl_conn: tunnelctl's side of the control socket (daemon/ctl.h): connecting with a
 * bound on the wait, one request and its reply line at a time, and finding the socket a
 * tunneld pid listens on. */
#include "tunnelctl_conn.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

#define REPLY_TIMEOUT_MS 60000
#define CONNECT_TIMEOUT_MS 5000         /* a full listen queue makes connect() wait */

/* tunneld binds PATH.new and renames it into place: the kernel keeps the bound name. */
static int found_socket(char *path, char **ret)
{
        size_t len = strlen(path);
        struct stat st;

        if (len > 4 && strcmp(path + len - 4, ".new") == 0 && stat(path, &st) < 0)
                path[len - 4] = '\0';
        *ret = strdup(path);
        return *ret ? 0 : -ENOMEM;
}

static bool has_inode(const unsigned long *inodes, size_t n, unsigned long ino)
{
        for (size_t i = 0; i < n; i++)
                if (inodes[i] == ino)
                        return true;
        return false;
}

/* Among the listening stream sockets with a path (from the kernel's sock_diag, which needs
 * no privilege and no /proc/net, hidden by the unit's ProcSubset=pid), the one whose inode
 * is in inodes. */
static int find_by_sock_diag(const unsigned long *inodes, size_t n, char **ret)
{
        struct {
                struct nlmsghdr nlh;
                struct unix_diag_req req;
        } msg = {
                .nlh = { .nlmsg_len = sizeof(msg), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                         .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
                .req = { .sdiag_family = AF_UNIX, .udiag_states = 1u << 10 /* TCP_LISTEN */,
                         .udiag_show = UDIAG_SHOW_NAME },
        };
        _cleanup_close_ int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        long buf[8192];
        int r = -ENOENT;

        if (fd < 0 || send(fd, &msg, sizeof(msg), 0) < 0)
                return -errno;
        for (;;) {
                ssize_t len = recv(fd, buf, sizeof(buf), 0);

                if (len < 0)
                        return errno == EINTR ? -EINTR : -errno;
                for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)len); h = NLMSG_NEXT(h, len)) {
                        const struct unix_diag_msg *m = NLMSG_DATA(h);
                        int alen = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));

                        if (h->nlmsg_type == NLMSG_DONE)
                                return r;
                        if (h->nlmsg_type == NLMSG_ERROR)
                                return -EIO;
                        if (r != -ENOENT || m->udiag_type != SOCK_STREAM || !has_inode(inodes, n, m->udiag_ino))
                                continue;
                        for (struct rtattr *a = (struct rtattr *)(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
                                char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
                                size_t plen = RTA_PAYLOAD(a);

                                if (a->rta_type != UNIX_DIAG_NAME || plen == 0 || ((char *)RTA_DATA(a))[0] != '/')
                                        continue;       /* abstract or unnamed */
                                if (plen >= sizeof(path))
                                        plen = sizeof(path) - 1;
                                memcpy(path, RTA_DATA(a), plen);
                                path[plen] = '\0';
                                r = found_socket(path, ret);
                        }
                }
        }
}

/* The control socket tunneld PID listens on, from its descriptors: what systemd's
 * ExecReload (which knows $MAINPID, not the configured path) uses. -ENOENT if it has none. */
int tunnelctl_conn_socket_of_pid(long pid, char **ret)
{
        char dir[64], link[64];
        unsigned long *inodes = NULL;
        size_t n = 0, room = 0;
        struct dirent *e;
        DIR *d;
        int r;

        snprintf(dir, sizeof(dir), "/proc/%ld/fd", pid);
        d = opendir(dir);
        if (!d)
                return errno == ENOENT ? -ESRCH : -errno;      /* ENOENT means "no socket" */
        while ((e = readdir(d))) {
                ssize_t len = readlinkat(dirfd(d), e->d_name, link, sizeof(link) - 1);
                unsigned long ino;

                if (len <= 0)
                        continue;
                link[len] = '\0';
                if (sscanf(link, "socket:[%lu]", &ino) != 1)
                        continue;
                if (n == room) {
                        unsigned long *grown = realloc(inodes, (room = room ? 2 * room : 16) * sizeof(*inodes));
                        if (!grown) {
                                closedir(d);
                                free(inodes);
                                return -ENOMEM;
                        }
                        inodes = grown;
                }
                inodes[n++] = ino;
        }
        closedir(d);
        r = find_by_sock_diag(inodes, n, ret);
        free(inodes);
        return r;
}

/* Whether the process listening on path is pid (SO_PEERCRED), for when /proc does not show
 * pid's descriptors: under the unit's PrivateUsers=, ExecReload runs in a user namespace
 * of its own, and the kernel hides tunneld's /proc entry from it. */
bool tunnelctl_conn_socket_is_of_pid(const char *path, long pid)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct ucred cred;
        socklen_t len = sizeof(cred);
        _cleanup_close_ int fd = -1;

        if (strlen(path) >= sizeof(sa.sun_path))
                return false;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        return fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
               getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid == pid;
}

/* connect() that gives up after CONNECT_TIMEOUT_MS: a Unix socket whose listen queue is
 * full (tunneld flooded with connections) would otherwise block for ever. errno set. */
static int connect_bounded(int fd, const struct sockaddr_un *sa)
{
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int err = 0, r;
        socklen_t len = sizeof(err);

        if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
                return 0;
        if (errno != EAGAIN && errno != EINPROGRESS)
                return -1;
        /* Linux reports EAGAIN for a full queue of a Unix socket: retry until the deadline */
        for (int waited = 0; waited < CONNECT_TIMEOUT_MS; waited += 50) {
                if (errno == EINPROGRESS) {
                        r = poll(&p, 1, CONNECT_TIMEOUT_MS - waited);
                        if (r <= 0)
                                break;
                        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
                                errno = err ? err : errno;
                                return -1;
                        }
                        return 0;
                }
                (void)poll(NULL, 0, 50);
                if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
                        return 0;
                if (errno != EAGAIN && errno != EINPROGRESS)
                        return -1;
        }
        errno = ETIMEDOUT;
        return -1;
}

int tunnelctl_conn_open(const char *path, int *ret_fd)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path)) {
                fprintf(stderr, "tunnelctl: socket path too long: %s\n", path);
                return -ENAMETOOLONG;
        }
        memcpy(sa.sun_path, path, strlen(path) + 1);    /* length checked above */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || connect_bounded(fd, &sa) < 0) {
                int e = errno;

                if (e == EACCES)
                        fprintf(stderr, "tunnelctl: cannot reach tunneld at %s: Permission denied (the socket admits "
                                        "root, tunneld's user and its control_group; control_world_readable = true "
                                        "lets every local user read status)\n", path);
                else
                        fprintf(stderr, "tunnelctl: cannot reach tunneld at %s: %s (is tunneld running? -s sets the "
                                        "socket)\n", path, e == ETIMEDOUT ? "its listen queue stays full" : strerror(e));
                if (fd >= 0)
                        close(fd);
                return -e;
        }
        (void)fcntl(fd, F_SETFL, 0);    /* blocking again: the reply loop polls */
        *ret_fd = fd;
        return 0;
}

/* Another connection read while we wait on this one (tunnelctl restart's subscription). */
static struct {
        int fd;
        void (*pump)(void *userdata);
        void *userdata;
} meanwhile = { .fd = -1 };

void tunnelctl_conn_meanwhile(int fd, void (*pump)(void *userdata), void *userdata)
{
        meanwhile.fd = fd;
        meanwhile.pump = pump;
        meanwhile.userdata = userdata;
}

/* poll() for fd readable, pumping the other connection meanwhile: > 0, 0 at the timeout
 * (ms; < 0: none), -1 with errno. */
static int wait_readable(int fd, int timeout_ms)
{
        double deadline = now_mono() + timeout_ms / 1000.0;

        for (;;) {
                struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = meanwhile.fd, .events = POLLIN } };
                int left = timeout_ms < 0 ? -1 : (int)((deadline - now_mono()) * 1000) + 1;
                int r = poll(p, meanwhile.fd >= 0 ? 2 : 1, timeout_ms < 0 ? -1 : left > 0 ? left : 0);

                if (r > 0 && meanwhile.fd >= 0 && p[1].revents) {
                        meanwhile.pump(meanwhile.userdata);
                        if (!p[0].revents)
                                continue;
                }
                if (r < 0 && errno == EINTR)
                        continue;
                return r;
        }
}

int tunnelctl_conn_read_line(int fd, int timeout_ms, char **ret)
{
        struct buf b = {0};
        double deadline = now_mono() + timeout_ms / 1000.0;

        for (;;) {
                int left = timeout_ms < 0 ? -1 : (int)((deadline - now_mono()) * 1000) + 1;
                char chunk[65536];
                ssize_t n;
                int r = wait_readable(fd, timeout_ms < 0 ? -1 : left > 0 ? left : 0);

                if (r <= 0) {
                        buf_free(&b);
                        return -ETIMEDOUT;
                }
                /* one line: peek, then take exactly it (the next line stays for the next call) */
                n = recv(fd, chunk, sizeof(chunk), MSG_PEEK);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                {
                        const char *nl = memchr(chunk, '\n', (size_t)n);
                        size_t take = nl ? (size_t)(nl - chunk) + 1 : (size_t)n;

                        n = recv(fd, chunk, take, 0);
                        if (n <= 0)
                                break;
                        buf_append(&b, chunk, (size_t)n);
                        if (nl || b.len > TUNNELCTL_REPLY_MAX)
                                break;
                }
        }
        if (!b.data || !memchr(b.data, '\n', b.len)) {
                buf_free(&b);
                return -ECONNRESET;
        }
        return buf_steal(&b, ret) < 0 ? -ENOMEM : 0;
}

static void send_request(int fd, const char *req)
{
        size_t len = strlen(req), off = 0;

        while (off < len) {
                ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        /* a full tunneld answers "too many clients" and closes before reading
                         * us: its reply is waiting; read it rather than report EPIPE */
                        break;
                }
                off += (size_t)n;
        }
}

int tunnelctl_conn_exchange(int fd, const char *req, char **ret)
{
        int r;

        send_request(fd, req);
        r = tunnelctl_conn_read_line(fd, REPLY_TIMEOUT_MS, ret);
        if (r == -ETIMEDOUT)
                fprintf(stderr, "tunnelctl: no reply from tunneld within %d s\n", REPLY_TIMEOUT_MS / 1000);
        else if (r == -ECONNRESET)
                fprintf(stderr, "tunnelctl: tunneld closed the connection without a reply\n");
        return r;
}

const char *tunnelctl_conn_dropped(const struct json *line)
{
        return json_get_string(line, "dropped") ? json_get_string(line, "error") : NULL;
}

#define METRICS_PREFIX "{\"ok\":true,\"metrics\":\""

/* Wait up to REPLY_TIMEOUT_MS for the next bytes: 1..n, 0 at the end, -errno. */
static ssize_t recv_some(int fd, char *chunk, size_t size)
{
        ssize_t n;
        int r = wait_readable(fd, REPLY_TIMEOUT_MS);

        if (r == 0)
                return -ETIMEDOUT;
        do
                n = recv(fd, chunk, size, 0);
        while (n < 0 && errno == EINTR);
        return n < 0 ? -errno : n;
}

/* The line that starts with b's bytes (the rest read as any reply is): 1 and the line in
 * *ret, or -errno. */
static int rest_of_line(int fd, struct buf *b, char **ret)
{
        _cleanup_free_ char *rest = NULL;
        int r = 0;

        if (!b->data || !memchr(b->data, '\n', b->len))
                r = tunnelctl_conn_read_line(fd, REPLY_TIMEOUT_MS, &rest);
        if (r >= 0 && rest)
                buf_puts(b, rest);
        if (r == -ECONNRESET && b->len)
                r = 0;                  /* what came is the answer */
        if (r < 0 || buf_steal(b, ret) < 0) {
                buf_free(b);
                return r < 0 ? r : -ENOMEM;
        }
        return 1;
}

/* One piece of the metrics reply's line (up to its newline, if it is in it): printed. 1 if
 * the text's closing quote was read, 0 if not yet, -errno. */
static int print_piece(struct json_string_stream *st, const char *p, size_t len, bool json, FILE *out)
{
        struct buf text = {0};
        size_t used;
        int e;

        if (json)
                fwrite(p, 1, len, out);
        e = json_string_stream_feed(st, p, len, &text, &used);
        if (!json && text.len)
                fwrite(text.data, 1, text.len, out);
        buf_free(&text);
        return e;
}

int tunnelctl_conn_print_metrics(int fd, bool json, FILE *out, char **ret)
{
        struct json_string_stream st = {0};
        struct buf head = {0};
        char chunk[65536];
        const size_t plen = strlen(METRICS_PREFIX);
        int closed = 0;
        ssize_t n;

        send_request(fd, "{\"cmd\":\"metrics\"}\n");
        /* enough of the reply to tell the metrics from an error (or a last line) */
        while (head.len < plen && !(head.data && memchr(head.data, '\n', head.len))) {
                n = recv_some(fd, chunk, sizeof(chunk));
                if (n <= 0)
                        goto cut;
                buf_append(&head, chunk, (size_t)n);
        }
        if (head.len < plen || memcmp(head.data, METRICS_PREFIX, plen) != 0)
                return rest_of_line(fd, &head, ret);
        if (json)
                fwrite(head.data, 1, plen, out);
        memmove(head.data, head.data + plen, head.len - plen);
        head.len -= plen;
        for (;;) {
                const char *nl = memchr(head.data, '\n', head.len);
                size_t len = nl ? (size_t)(nl - head.data) : head.len;

                if (closed == 0)
                        closed = print_piece(&st, head.data, len, json, out);
                else if (json)
                        fwrite(head.data, 1, len, out);
                if (closed < 0 && !nl)
                        break;
                if (nl) {
                        /* the line ended: the reply whole, or cut short (a line then says why) */
                        struct buf next = {0};

                        if (json)
                                fputc('\n', out);
                        if (closed > 0) {
                                buf_free(&head);
                                return 0;
                        }
                        buf_append(&next, nl + 1, head.len - len - 1);
                        buf_free(&head);
                        return rest_of_line(fd, &next, ret) < 0 ? -EPROTO : 1;
                }
                n = recv_some(fd, chunk, sizeof(chunk));
                if (n <= 0)
                        goto cut;
                head.len = 0;
                buf_append(&head, chunk, (size_t)n);
        }
        buf_free(&head);
        fprintf(stderr, "tunnelctl: tunneld sent a reply that is not JSON\n");
        return -EPROTO;
cut:
        buf_free(&head);
        if (n == -ETIMEDOUT)
                fprintf(stderr, "tunnelctl: no more of the reply from tunneld within %d s\n", REPLY_TIMEOUT_MS / 1000);
        else
                fprintf(stderr, "tunnelctl: tunneld closed the connection in the middle of the reply\n");
        return n < 0 ? (int)n : -ECONNRESET;
}
