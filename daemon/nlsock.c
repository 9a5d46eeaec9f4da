/* SPDX-License-Identifier: MIT */
#include "nlsock.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

int nlsock_open(int protocol)
{
        struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
        int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);

        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;

                close(fd);
                return r;
        }
        return fd;
}

static int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int nlsock_transact(int fd, const void *req, size_t len, unsigned timeout_ms, size_t max_bytes,
                    nlsock_parse_t parse, void *userdata)
{
        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        _cleanup_free_ char *buf = malloc(NLSOCK_BUFFER);
        int64_t deadline = now_ms() + timeout_ms;
        size_t total = 0;

        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k = sendto(fd, req, len, MSG_DONTWAIT, (struct sockaddr *)&kernel, sizeof(kernel));

                if (k == (ssize_t)len)
                        break;
                if (k >= 0)
                        return -EIO;
                if (errno != EINTR)
                        return -errno;
        }
        for (;;) {
                struct sockaddr_nl from;
                struct iovec iov = { buf, NLSOCK_BUFFER };
                struct msghdr msg = { .msg_name = &from, .msg_namelen = sizeof(from),
                                      .msg_iov = &iov, .msg_iovlen = 1 };
                ssize_t k = recvmsg(fd, &msg, MSG_DONTWAIT);
                int r;

                if (k < 0) {
                        struct pollfd p = { .fd = fd, .events = POLLIN };
                        int64_t left;

                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                return -errno;
                        /* rtnetlink and sock_diag answer from the sender's own system call:
                         * waiting here is for a kernel that does not, bounded */
                        left = deadline - now_ms();
                        if (left <= 0)
                                return -ETIMEDOUT;
                        if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
                                return -errno;
                        continue;
                }
                if (k == 0)
                        return -EPIPE;
                if (msg.msg_flags & MSG_TRUNC)
                        return -EMSGSIZE;
                if (from.nl_pid != 0)
                        continue;               /* not the kernel's */
                total += (size_t)k;
                if (total > max_bytes)
                        return -E2BIG;
                r = parse(buf, (size_t)k, userdata);
                if (r != 0)
                        return r;
        }
}

const struct nlmsghdr *nlsock_next(const void *buf, size_t len, size_t *offset, bool *bad)
{
        const struct nlmsghdr *h;
        size_t left;

        if (*offset >= len)
                return NULL;
        left = len - *offset;
        if (left < sizeof(*h)) {
                *bad = true;
                return NULL;
        }
        h = (const struct nlmsghdr *)((const char *)buf + *offset);
        if (h->nlmsg_len < sizeof(*h) || h->nlmsg_len > left) {
                *bad = true;
                return NULL;
        }
        /* the last message may lack its padding */
        *offset += NLMSG_ALIGN(h->nlmsg_len) < left ? NLMSG_ALIGN(h->nlmsg_len) : left;
        return h;
}

int nlsock_error(const struct nlmsghdr *h)
{
        const struct nlmsgerr *e = NLMSG_DATA(h);

        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(e->error)))
                return -EBADMSG;
        if (e->error > 0 || e->error < -4095)
                return -EBADMSG;
        return e->error;
}

const struct rtattr *nlsock_attr_next(const void *data, size_t len, size_t *offset, bool *bad)
{
        const struct rtattr *a;
        size_t left;

        if (*offset >= len)
                return NULL;
        left = len - *offset;
        if (left < sizeof(*a)) {
                *bad = true;
                return NULL;
        }
        a = (const struct rtattr *)((const char *)data + *offset);
        if (a->rta_len < sizeof(*a) || a->rta_len > left) {
                *bad = true;
                return NULL;
        }
        *offset += RTA_ALIGN(a->rta_len) < left ? RTA_ALIGN(a->rta_len) : left;
        return a;
}
