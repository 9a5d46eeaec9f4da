/* SPDX-License-Identifier: MIT */
#include "mux_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_CHUNK 4096
#define REPLIES_PER_WAKEUP 64           /* fairness: a chatty master waits for the next turn */

struct mux_client {
        struct ev_loop *loop;
        int fd;
        ev_io io;
        struct mux_client_ops ops;
        void *userdata;
        struct buf out;                 /* requests not yet taken by the socket */
        size_t out_sent;
        uint8_t in[MUX_PACKET_MAX + 4 + READ_CHUNK];
        size_t in_len;
        bool hello_seen;
        uint32_t next_id;
        bool closing;                   /* closed() was called: nothing more */
};

static void update_events(struct mux_client *c)
{
        int want = EV_READ | (c->out.len > c->out_sent ? EV_WRITE : 0);

        if ((c->io.events & (EV_READ | EV_WRITE)) == want)
                return;
        ev_io_stop(c->loop, &c->io);
        ev_io_set(&c->io, c->fd, want);
        ev_io_start(c->loop, &c->io);
}

static void fail(struct mux_client *c, int error, const char *why)
{
        if (c->closing)
                return;
        c->closing = true;
        ev_io_stop(c->loop, &c->io);
        c->ops.closed(error, why, c->userdata);     /* may free c */
}

/* Write what the socket takes; -1 if the connection failed (c may be gone then). */
static int flush_out(struct mux_client *c)
{
        while (c->out_sent < c->out.len) {
                ssize_t n = send(c->fd, c->out.data + c->out_sent, c->out.len - c->out_sent, MSG_NOSIGNAL);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        break;
                if (n < 0) {
                        fail(c, -errno, "cannot write to ssh's control socket");
                        return -1;
                }
                c->out_sent += (size_t)n;
        }
        if (c->out_sent == c->out.len)
                c->out.len = c->out_sent = 0;
        update_events(c);
        return 0;
}

/* Hand over the whole replies at the start of in[]; false if c is gone. */
static bool dispatch(struct mux_client *c)
{
        size_t at = 0;
        int handled = 0;
        bool ok = true;

        while (handled++ < REPLIES_PER_WAKEUP) {
                struct mux_reply r;
                size_t used;
                int k = mux_parse_reply(c->in + at, c->in_len - at, &used, &r);

                if (k == 0)
                        break;
                if (k < 0 || (!c->hello_seen) != (r.type == MUX_MSG_HELLO)) {
                        fail(c, -EBADMSG, k < 0 ? "ssh's control socket sent a malformed message"
                                                : "ssh's control socket did not begin with its hello");
                        return false;
                }
                at += used;
                if (r.type == MUX_MSG_HELLO) {
                        c->hello_seen = true;
                        if (c->ops.ready)
                                c->ops.ready(c->userdata);
                } else
                        c->ops.reply(&r, c->userdata);
                if (c->closing) {       /* the owner ended it from its callback */
                        ok = false;
                        break;
                }
        }
        if (!ok)
                return false;
        memmove(c->in, c->in + at, c->in_len - at);
        c->in_len -= at;
        if (handled > REPLIES_PER_WAKEUP)
                ev_feed_event(c->loop, &c->io, EV_CUSTOM);      /* the rest next iteration */
        return true;
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
        struct mux_client *c = w->data;

        (void)loop;
        if ((revents & EV_WRITE) && flush_out(c) < 0)
                return;
        if (revents & EV_READ) {
                ssize_t n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);

                if (n < 0 && (errno == EINTR || errno == EAGAIN))
                        return;
                if (n < 0) {
                        fail(c, -errno, "cannot read ssh's control socket");
                        return;
                }
                if (n == 0) {
                        fail(c, -ECONNRESET, "ssh closed its control socket");
                        return;
                }
                c->in_len += (size_t)n;
        }
        (void)dispatch(c);
}

int mux_client_new(struct ev_loop *loop, const char *path, const struct mux_client_ops *ops, void *userdata,
                   struct mux_client **ret)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct mux_client *c;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->loop = loop;
        c->ops = *ops;
        c->userdata = userdata;
        c->next_id = 1;
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;

                if (c->fd >= 0)
                        close(c->fd);
                free(c);
                return r;
        }
        ev_io_init(&c->io, on_io, c->fd, EV_READ);
        c->io.data = c;
        mux_put_hello(&c->out);
        update_events(c);       /* written from the loop: no callback before we return */
        *ret = c;
        return 0;
}

void mux_client_set_owner(struct mux_client *c, const struct mux_client_ops *ops, void *userdata)
{
        c->ops = *ops;
        c->userdata = userdata;
}

struct mux_client *mux_client_free(struct mux_client *c)
{
        if (!c)
                return NULL;
        ev_io_stop(c->loop, &c->io);
        ev_clear_pending(c->loop, &c->io);
        close(c->fd);
        buf_free(&c->out);
        free(c);
        return NULL;
}

static int queued(struct mux_client *c, int r, uint32_t id, uint32_t *ret_id)
{
        if (r < 0)
                return r;
        if (c->out.oom)
                return -ENOMEM;
        *ret_id = id;
        update_events(c);       /* written from the loop, never from inside the caller */
        return 0;
}

int mux_client_open_forward(struct mux_client *c, const struct forward *f, uint32_t *ret_id)
{
        uint32_t id = c->next_id++;

        return queued(c, mux_put_open_forward(&c->out, id, f), id, ret_id);
}

int mux_client_close_forward(struct mux_client *c, const struct forward *f, uint32_t *ret_id)
{
        uint32_t id = c->next_id++;

        return queued(c, mux_put_close_forward(&c->out, id, f), id, ret_id);
}

int mux_client_alive_check(struct mux_client *c, uint32_t *ret_id)
{
        uint32_t id = c->next_id++;

        mux_put_alive_check(&c->out, id);
        return queued(c, 0, id, ret_id);
}
