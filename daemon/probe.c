/* SPDX-License-Identifier: MIT */
#include "probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

struct probe {
        struct ev_loop *loop;
        struct sockaddr_storage addr;
        socklen_t addr_len;
        double interval, timeout;
        char *send, *expect;
        size_t send_len, expect_len;
        probe_result_t done;
        void *userdata;

        ev_timer every;                 /* the interval */
        ev_timer deadline;              /* one check's timeout */
        ev_io io;
        int fd;
        enum { IDLE, CONNECTING, SENDING, READING } phase;
        size_t sent, got;
        char reply[1024];
};

static int parse_address(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len)
{
        char host[64];
        const char *port;
        size_t n;

        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                n = (size_t)(end - s - 1);
                memcpy(host, s + 1, n);
                host[n] = '\0';
                port = end + 2;
        } else {
                const char *colon = strrchr(s, ':');
                n = (size_t)(colon - s);
                memcpy(host, s, n);
                host[n] = '\0';
                port = colon + 1;
        }
        memset(ret, 0, sizeof(*ret));
        if (strcmp(host, "localhost") == 0)
                strcpy(host, "127.0.0.1");
        if (strchr(host, ':')) {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)ret;
                a->sin6_family = AF_INET6;
                a->sin6_port = htons((uint16_t)atoi(port));
                if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
                        return -EINVAL;
                *ret_len = sizeof(*a);
        } else {
                struct sockaddr_in *a = (struct sockaddr_in *)ret;
                a->sin_family = AF_INET;
                a->sin_port = htons((uint16_t)atoi(port));
                if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
                        return -EINVAL;
                *ret_len = sizeof(*a);
        }
        return 0;
}

static void finish(struct probe *p, bool ok, const char *why)
{
        ev_io_stop(p->loop, &p->io);
        ev_timer_stop(p->loop, &p->deadline);
        if (p->fd >= 0) {
                close(p->fd);
                p->fd = -1;
        }
        p->phase = IDLE;
        p->done(ok, why, p->userdata);      /* may call probe_stop() or probe_free() */
}

static void watch(struct probe *p, int events)
{
        ev_io_stop(p->loop, &p->io);
        ev_io_set(&p->io, p->fd, events);
        ev_io_start(p->loop, &p->io);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
        struct probe *p = w->data;
        char why[160];
        ssize_t n;

        (void)loop;
        (void)revents;
        switch (p->phase) {
        case CONNECTING: {
                int err = 0;
                socklen_t len = sizeof(err);

                if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        err = errno;
                if (err) {
                        snprintf(why, sizeof(why), "connect: %s", strerror(err));
                        finish(p, false, why);
                        return;
                }
                p->phase = p->send_len ? SENDING : READING;
                watch(p, p->send_len ? EV_WRITE : EV_READ);
                return;
        }
        case SENDING:
                n = send(p->fd, p->send + p->sent, p->send_len - p->sent, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return;
                        snprintf(why, sizeof(why), "send: %s", strerror(errno));
                        finish(p, false, why);
                        return;
                }
                p->sent += (size_t)n;
                if (p->sent == p->send_len) {
                        p->phase = READING;
                        watch(p, EV_READ);
                }
                return;
        case READING:
                n = recv(p->fd, p->reply + p->got, sizeof(p->reply) - p->got, 0);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return;
                        snprintf(why, sizeof(why), "receive: %s", strerror(errno));
                        finish(p, false, why);
                        return;
                }
                if (n == 0) {
                        finish(p, false, p->got ? "connection closed before the expected reply"
                                                : "connection closed at once: the forward's far end is not answering");
                        return;
                }
                p->got += (size_t)n;
                if (!p->expect_len) {
                        finish(p, true, NULL);  /* data came back: the path works */
                        return;
                }
                if (p->got >= p->expect_len || p->got == sizeof(p->reply)) {
                        if (p->got >= p->expect_len && memcmp(p->reply, p->expect, p->expect_len) == 0)
                                finish(p, true, NULL);
                        else
                                finish(p, false, "the reply does not begin with the expected text");
                }
                return;
        case IDLE:
                return;
        }
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct probe *p = w->data;
        char t[DURATION_MAX], why[160];

        (void)loop;
        (void)revents;
        if (p->phase == READING && !p->expect_len) {
                finish(p, true, NULL);  /* still open after the timeout: the far end accepted */
                return;
        }
        snprintf(why, sizeof(why), "no %s within %s",
                 p->phase == CONNECTING ? "connection" : p->phase == SENDING ? "room to send" : "reply",
                 format_duration(p->timeout, t, sizeof(t)));
        finish(p, false, why);
}

static void on_every(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct probe *p = w->data;
        char why[160];

        (void)revents;
        if (p->phase != IDLE)
                return;         /* the last one has not finished; its deadline will */
        p->sent = p->got = 0;
        p->fd = socket(p->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (p->fd < 0) {
                snprintf(why, sizeof(why), "socket: %s", strerror(errno));
                finish(p, false, why);
                return;
        }
        p->phase = CONNECTING;
        ev_timer_set(&p->deadline, p->timeout, 0.);
        ev_timer_start(loop, &p->deadline);
        if (connect(p->fd, (struct sockaddr *)&p->addr, p->addr_len) < 0 && errno != EINPROGRESS) {
                snprintf(why, sizeof(why), "connect: %s", strerror(errno));
                finish(p, false, why);
                return;
        }
        watch(p, EV_WRITE);
}

int probe_new(struct ev_loop *loop, const struct probe_spec *spec, probe_result_t done, void *userdata,
              struct probe **ret)
{
        struct probe *p = calloc(1, sizeof(*p));

        if (!p)
                return -ENOMEM;
        p->loop = loop;
        p->fd = -1;
        p->interval = spec->interval;
        p->timeout = spec->timeout;
        p->done = done;
        p->userdata = userdata;
        if (parse_address(spec->connect, &p->addr, &p->addr_len) < 0) {
                free(p);
                return -EINVAL;
        }
        if (spec->send) {
                p->send = strdup(spec->send);
                p->send_len = strlen(spec->send);
        }
        if (spec->expect) {
                p->expect = strdup(spec->expect);
                p->expect_len = strlen(spec->expect);
                if (p->expect_len > sizeof(p->reply))
                        p->expect_len = sizeof(p->reply);
        }
        if ((spec->send && !p->send) || (spec->expect && !p->expect)) {
                probe_free(p);
                return -ENOMEM;
        }
        ev_timer_init(&p->every, on_every, 0., p->interval);
        ev_timer_init(&p->deadline, on_deadline, 0., 0.);
        ev_io_init(&p->io, on_io, -1, EV_READ);
        p->every.data = p->deadline.data = p->io.data = p;
        *ret = p;
        return 0;
}

void probe_start(struct probe *p)
{
        ev_timer_stop(p->loop, &p->every);
        ev_timer_set(&p->every, p->interval, p->interval);
        ev_timer_start(p->loop, &p->every);
}

void probe_stop(struct probe *p)
{
        ev_timer_stop(p->loop, &p->every);
        ev_timer_stop(p->loop, &p->deadline);
        ev_io_stop(p->loop, &p->io);
        if (p->fd >= 0) {
                close(p->fd);
                p->fd = -1;
        }
        p->phase = IDLE;
}

struct probe *probe_free(struct probe *p)
{
        if (!p)
                return NULL;
        probe_stop(p);
        free(p->send);
        free(p->expect);
        free(p);
        return NULL;
}
