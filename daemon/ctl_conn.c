/* SPDX-License-Identifier: MIT */
/* ctl_conn: one client of the control socket: its request lines in, its replies and events
 * out, every byte of it bounded, and its drop with a last line saying why.
 *
 * What the client took is judged by the socket's own queue (SIOCOUTQ: what was sent and
 * is not yet read), looked at before each send and at the deadline, never by what tunneld
 * sends meanwhile: a client that takes nothing for CTL_STALL_TIMEOUT while tunneld holds
 * more for it than its socket takes is dropped, at any event rate. tunneld never fills the
 * socket's buffer to the brim: it keeps CTL_SOCKET_RESERVE free, so that a last line
 * always fits behind what is queued. */
#include "ctl_internal.h"

#include <errno.h>
#include <linux/sockios.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "ctl_protocol.h"
#include "log.h"

#define KEEP_ALLOCATED (16u << 10)      /* an output buffer bigger than this is freed once sent */
#define LAST_LINE_MAX 1024              /* what is kept of a line being sent when its client is dropped */

static const char *const drop_reasons[_CTL_DROP_MAX] = {
        [CTL_DROP_STALLED] = "stalled",
        [CTL_DROP_BACKLOG] = "backlog",
        [CTL_DROP_IDLE] = "idle",
        [CTL_DROP_EVICTED] = "evicted",
};

/* What the last line and the log say. */
static void drop_text(enum ctl_drop why, char *text, size_t size)
{
        switch (why) {
        case CTL_DROP_STALLED:
                snprintf(text, size, "nothing of what tunneld sent was read for %g s", CTL_STALL_TIMEOUT);
                break;
        case CTL_DROP_BACKLOG:
                snprintf(text, size, "fell %u KiB behind the events (a follower must read as fast as tunnels "
                         "change)", CTL_EVENTS_BACKLOG >> 10);
                break;
        case CTL_DROP_IDLE:
                snprintf(text, size, "no complete request within %g s", CTL_IDLE_TIMEOUT);
                break;
        default:
                snprintf(text, size, "evicted: every place on the control socket was taken, and a client "
                         "that comes first needed one");
        }
}

static size_t unsent(const struct ctl_conn *c)
{
        return c->out.len - c->out_off;
}

static bool events_pending(const struct ctl_conn *c)
{
        return c->subscribed && c->cursor < ctl_events_end(c->server->events);
}

/* Something of a reply or of events is still to be sent or to be made. */
static bool has_output(const struct ctl_conn *c)
{
        return unsent(c) || c->stream || events_pending(c);
}

bool ctl_conn_is_idle(const struct ctl_conn *c)
{
        return c->in_len == 0 && !has_output(c);
}

void ctl_conn_free(struct ctl_conn *c)
{
        struct ctl_server *s = c->server;

        for (struct ctl_conn **p = &s->conns; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        s->n_conns--;
        s->n_readers -= !c->may_write;
        if (c->subscribed && --s->n_subscribers == 0)
                ctl_events_trim(s->events, UINT64_MAX);         /* nobody left to read them */
        ev_io_stop(s->loop, &c->io);
        ev_timer_stop(s->loop, &c->timer);
        close(c->fd);
        ctl_stream_free(c->stream);
        buf_free(&c->out);
        strv_free(c->names);
        free(c);
}

/* What the client has not read yet of what the socket took; 0 if it cannot be told. */
static int socket_unread(const struct ctl_conn *c)
{
        int q = 0;

        return ioctl(c->fd, SIOCOUTQ, &q) < 0 ? 0 : q;
}

/* Note what the socket's queue says now: the client took something since the last look (or
 * had taken everything), so the stall clock starts again. */
static void note_unread(struct ctl_conn *c, int q)
{
        if (q < c->unread || c->unread == 0)
                c->last_progress = now_mono();
        c->unread = q;
}

/* A subscriber waits for news as long as it likes, a reload's or check's asker for its end.
 * While tunneld holds something for a client that its socket would not take, the client
 * has CTL_STALL_TIMEOUT from when it last took anything (or from when tunneld first sent
 * it what is unread). What its socket holds costs tunneld nothing: that alone starts no
 * clock (a client busy elsewhere for a while is not dropped for it). */
static double conn_due(const struct ctl_conn *c)
{
        if (has_output(c) || c->backlog)
                return c->last_progress + CTL_STALL_TIMEOUT;
        if (c->subscribed || c->waiting_reload || c->waiting_check)
                return 1e300;
        return c->last_active + CTL_IDLE_TIMEOUT;
}

static void conn_arm(struct ctl_conn *c)
{
        double left = conn_due(c) - now_mono();

        ev_timer_stop(c->server->loop, &c->timer);
        if (left > 1e200)
                return;         /* no timer: an idle tunneld makes no wakeups */
        ev_timer_set(&c->timer, left > 0 ? left : 0., 0.);
        ev_timer_start(c->server->loop, &c->timer);
}

/* One send of what is ready: 1 if the socket took some, 0 if it takes no more now (full, or
 * only the reserve left), -errno if the client is gone. */
static int conn_send(struct ctl_conn *c)
{
        int q = socket_unread(c), reserve = CTL_SOCKET_RESERVE;
        size_t len = unsent(c) < CTL_SEND_MAX ? unsent(c) : CTL_SEND_MAX;
        ssize_t n;

        note_unread(c, q);
        /* the socket reports writable once its queue is under a quarter of the buffer: a
         * reserve above that never leaves us waiting for a wakeup that does not come */
        if (reserve > c->sndbuf / 4)
                reserve = c->sndbuf / 4;
        if (c->sndbuf > 0 && q > c->sndbuf - reserve)
                return 0;
        n = send(c->fd, c->out.data + c->out_off, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
                return errno == EINTR ? 1 : errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        c->line_open = c->out.data[c->out_off + (size_t)n - 1] != '\n';
        c->out_off += (size_t)n;
        c->unread = socket_unread(c);
        c->last_active = now_mono();
        return 1;
}

static bool follows(const struct ctl_conn *c, const char *name, size_t len)
{
        if (!c->names)
                return true;
        for (char **n = c->names; *n; n++)
                if (strlen(*n) == len && memcmp(*n, name, len) == 0)
                        return true;
        return false;
}

/* The next events it follows from the log into out, about a part's worth. */
static void stage_events(struct ctl_conn *c)
{
        const struct ctl_events *log = c->server->events;
        size_t start, name_len, len;
        const char *name, *line;

        /* what was sent leaves the buffer before it grows */
        if (c->out_off && c->out_off >= c->out.len / 2) {
                memmove(c->out.data, c->out.data + c->out_off, unsent(c));
                c->out.len -= c->out_off;
                c->out_off = 0;
        }
        start = c->out.len;
        while (c->out.len - start < CTL_STREAM_PART && ctl_events_next(log, &c->cursor, &name, &name_len, &line, &len))
                if (follows(c, name, name_len))
                        buf_append(&c->out, line, len);
        if (c->cursor >= ctl_events_first_end(log))
                ctl_server_events_read(c->server);
}

/* Send what is ready, making the next parts of a big reply as the socket takes them (at
 * most CTL_PARTS_PER_WAKEUP a call, CTL_READER_PARTS_PER_WAKEUP for a read-only client).
 * false if the client was freed. */
static bool conn_flush(struct ctl_conn *c)
{
        int parts = 0, most = c->may_write ? CTL_PARTS_PER_WAKEUP : CTL_READER_PARTS_PER_WAKEUP;

        for (;;) {
                int r;

                if ((c->stream || events_pending(c)) && unsent(c) < CTL_LOW_WATER) {
                        if (parts++ == most)
                                break;          /* the rest next time: the loop has others too */
                        if (!c->stream)
                                stage_events(c);        /* a subscriber's, once its snapshot is out */
                        else if (ctl_stream_next(c->stream, &c->out) != 0)
                                c->stream = ctl_stream_free(c->stream);
                }
                if (c->out.oom) {
                        log_warning("control client (pid %d): out of memory for its reply: closed", (int)c->cred.pid);
                        ctl_conn_free(c);
                        return false;
                }
                if (!unsent(c))
                        break;
                r = conn_send(c);
                if (r < 0) {
                        ctl_conn_free(c);
                        return false;
                }
                if (r == 0)
                        break;
        }
        if (!has_output(c)) {
                c->out.len = c->out_off = 0;
                if (c->out.cap > KEEP_ALLOCATED)
                        buf_free(&c->out);      /* a big reply's buffer is not kept for the next */
                if (c->close_after_flush || (c->eof && !memchr(c->in, '\n', c->in_len))) {
                        ctl_conn_free(c);
                        return false;
                }
        }
        return true;
}

/* Busy: the reply to its last request is not all taken, or not made yet; or tunneld's
 * first load is not attached yet (main.c), and the request waits, unread. */
static bool conn_busy(const struct ctl_conn *c)
{
        return has_output(c) || c->waiting_reload || c->waiting_check || !c->server->sup;
}

/* Read only between replies, and only with room for the rest of a line: a client that
 * pipelines requests and does not read the answers costs one reply, not a rendering loop. */
static void conn_update_events(struct ctl_conn *c, bool more_requests)
{
        int events = has_output(c) || more_requests ? EV_WRITE : 0;

        if (!c->eof && !c->close_after_flush &&
            (c->subscribed || (!has_output(c) && !more_requests && c->in_len < sizeof(c->in))))
                events |= EV_READ;
        if (events == (c->io.events & (EV_READ | EV_WRITE)))
                return;
        ev_io_stop(c->server->loop, &c->io);
        ev_io_set(&c->io, c->fd, events);
        if (events)
                ev_io_start(c->server->loop, &c->io);
}

/* Answer the next complete request, if the last reply is out. true if one was answered. */
static bool conn_answer_one(struct ctl_conn *c)
{
        char *nl;
        size_t len;

        if (conn_busy(c) || c->close_after_flush || c->subscribed || !(nl = memchr(c->in, '\n', c->in_len)))
                return false;
        len = (size_t)(nl - c->in);
        ctl_server_answer(c, c->in, len);
        memmove(c->in, nl + 1, c->in_len - len - 1);
        c->in_len -= len + 1;
        c->last_active = now_mono();
        return true;
}

static void conn_serve(struct ctl_conn *c)
{
        bool more;

        for (int i = 0; i < CTL_REQUESTS_PER_WAKEUP; i++) {
                if (!conn_answer_one(c))
                        break;
                if (!conn_flush(c))
                        return;
        }
        if (c->subscribed)
                c->in_len = 0;          /* what a subscriber sends is not read as requests */
        if (!conn_busy(c) && c->in_len == sizeof(c->in)) {
                ctl_protocol_error(&c->out, "request too long (at most %d bytes per line)", CTL_REQUEST_MAX);
                c->close_after_flush = true;
                c->in_len = 0;
                if (!conn_flush(c))
                        return;
        }
        /* answered the most a callback may: come back next loop iteration */
        more = !conn_busy(c) && !c->close_after_flush && memchr(c->in, '\n', c->in_len);
        /* (the socket reports writable only while its queue is short: a client that does
         * not read is not called back, and its backlog counts as a pending reply) */
        c->backlog = more;
        conn_update_events(c, more);
        conn_arm(c);
}

void ctl_conn_answered(struct ctl_conn *c)
{
        c->last_active = now_mono();
        if (conn_flush(c))
                conn_serve(c);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
        struct ctl_conn *c = w->data;

        (void)loop;
        if ((revents & EV_WRITE) && !conn_flush(c))
                return;
        if ((revents & EV_READ) && (c->subscribed || !has_output(c)) && c->in_len < sizeof(c->in)) {
                ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);

                if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                        ctl_conn_free(c);
                        return;
                }
                if (n == 0) {
                        c->eof = true;
                        /* a last request without a newline still counts */
                        if (c->in_len && c->in_len < sizeof(c->in) && !memchr(c->in, '\n', c->in_len))
                                c->in[c->in_len++] = '\n';
                        if (!c->in_len) {
                                ctl_conn_free(c);
                                return;
                        }
                }
                if (n > 0)
                        c->in_len += (size_t)n;
        }
        conn_serve(c);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct ctl_conn *c = w->data;

        (void)loop;
        (void)revents;
        note_unread(c, socket_unread(c));
        if (now_mono() < conn_due(c)) {
                conn_arm(c);    /* it took something meanwhile, or was busy */
                return;
        }
        ctl_conn_drop(c, has_output(c) || c->backlog ? CTL_DROP_STALLED : CTL_DROP_IDLE);
}

/* "events", "check", …: what the client was doing, for the log. */
static const char *conn_doing(const struct ctl_conn *c)
{
        if (c->subscribed)
                return ", events";
        if (c->waiting_check)
                return ", check";
        if (c->waiting_reload)
                return ", reload";
        return has_output(c) ? ", a reply" : "";
}

void ctl_conn_drop(struct ctl_conn *c, enum ctl_drop why)
{
        struct buf last = {0};
        char text[160];

        drop_text(why, text, sizeof(text));
        log_full(why == CTL_DROP_IDLE ? LOG_INFO : LOG_WARNING, NULL, "control client (pid %d, uid %u%s%s): "
                 "dropped: %s", (int)c->cred.pid, (unsigned)c->cred.uid, c->may_write ? "" : ", read-only",
                 conn_doing(c), text);
        /* The line the client has a part of is ended first: with its own rest if that is
         * short and here (an event), else with a newline (a big reply cut short). */
        if (c->line_open) {
                const char *rest = c->out.data ? c->out.data + c->out_off : NULL;
                const char *nl = rest ? memchr(rest, '\n', unsent(c)) : NULL;

                if (nl && (size_t)(nl - rest) < LAST_LINE_MAX)
                        buf_append(&last, rest, (size_t)(nl - rest) + 1);
                else
                        buf_puts(&last, "\n");
        }
        ctl_protocol_dropped(&last, drop_reasons[why], text);
        /* the reserve kept in the socket's buffer has room for it; if not, so be it */
        if (!last.oom)
                (void)!send(c->fd, last.data, last.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        buf_free(&last);
        ctl_conn_free(c);
}

void ctl_conn_kick(struct ctl_conn *c)
{
        if (conn_flush(c)) {
                conn_update_events(c, false);
                conn_arm(c);
        }
}

int ctl_conn_new(struct ctl_server *s, int fd, const struct ucred *cred, bool may_write, struct ctl_conn **ret)
{
        struct ctl_conn *c = calloc(1, sizeof(*c));
        socklen_t len = sizeof(c->sndbuf);

        if (!c)
                return -ENOMEM;
        c->server = s;
        c->fd = fd;
        c->cred = *cred;
        c->may_write = may_write;
        if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &c->sndbuf, &len) < 0)
                c->sndbuf = 0;          /* no reserve then */
        c->last_active = c->last_progress = now_mono();
        ev_io_init(&c->io, on_io, fd, EV_READ);
        ev_timer_init(&c->timer, on_timer, CTL_IDLE_TIMEOUT, 0.);
        c->io.data = c->timer.data = c;
        *ret = c;
        return 0;
}
