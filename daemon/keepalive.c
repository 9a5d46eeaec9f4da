/* SPDX-License-Identifier: MIT */
/* keepalive: a session held open through an ssh master (keepalive.h). */
#include "keepalive.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "mux_proto.h"
#include "util.h"

#define REQUEST_ID 1
#define READ_MAX (MUX_PACKET_MAX + 4)

enum ka_state {
        KA_HELLO,                       /* waiting for the master's hello */
        KA_OPENING,                     /* the request sent: waiting for its answer */
        KA_OPEN,                        /* the session runs */
        KA_DONE,                        /* ended: nothing more is called */
};

struct keepalive {
        struct ev_loop *loop;
        struct keepalive_ops ops;
        void *userdata;
        char *subsystem;
        int fd;                         /* the control connection */
        int hold;                       /* our end of the session's stdin, stdout and stderr */
        ev_io io;
        enum ka_state state;
        int exit_status;
        uint8_t in[READ_MAX];
        size_t in_len;
};

static void end(struct keepalive *k, const char *why)
{
        bool opened = k->state == KA_OPEN;

        if (k->state == KA_DONE)
                return;
        k->state = KA_DONE;
        ev_io_stop(k->loop, &k->io);
        k->ops.ended(opened, k->exit_status, why, k->userdata);    /* may free k */
}

/* The request and its three descriptors, at once: the master reads the descriptors as
 * soon as it has the request, and waits for them. */
static int request(struct keepalive *k)
{
        _cleanup_buf_ struct buf b = {0};
        int sv[2], r = 0;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        mux_put_new_session(&b, REQUEST_ID, k->subsystem, true);
        if (b.oom)
                r = -ENOMEM;
        if (r == 0) {
                ssize_t n;

                do
                        n = send(k->fd, b.data, b.len, MSG_NOSIGNAL);
                while (n < 0 && errno == EINTR);
                r = n < 0 ? -errno : (size_t)n != b.len ? -EAGAIN : 0;
        }
        for (int i = 0; r == 0 && i < 3; i++)
                r = mux_send_fd(k->fd, sv[1]);
        close(sv[1]);
        if (r < 0) {
                close(sv[0]);
                return r;
        }
        k->hold = sv[0];
        return 0;
}

/* One message from the master; false once the keepalive ended (k may be gone then). */
static bool on_reply(struct keepalive *k, const struct mux_reply *r)
{
        switch (k->state) {
        case KA_HELLO:
                if (r->type != MUX_MSG_HELLO) {
                        end(k, "ssh's control socket did not begin with its hello");
                        return false;
                }
                if (request(k) < 0) {
                        end(k, "cannot send the session's request to ssh's control socket");
                        return false;
                }
                k->state = KA_OPENING;
                return true;
        case KA_OPENING:
                if (r->type == MUX_S_SESSION_OPENED && r->request_id == REQUEST_ID) {
                        k->state = KA_OPEN;
                        k->ops.opened(k->userdata);
                        return true;
                }
                if ((r->type == MUX_S_FAILURE || r->type == MUX_S_PERMISSION_DENIED) && r->request_id == REQUEST_ID) {
                        char why[MUX_REASON_MAX + 64];

                        snprintf(why, sizeof(why), "ssh: %s", r->reason);
                        end(k, why);
                        return false;
                }
                end(k, "ssh answered the session's request with something else");
                return false;
        case KA_OPEN:
                if (r->type == MUX_S_EXIT_MESSAGE)
                        k->exit_status = (int)(r->value & 0xff);
                /* a tty refused: it asked for none; anything else: ignored */
                return true;
        case KA_DONE:
                break;
        }
        return false;
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
        struct keepalive *k = w->data;
        size_t at = 0;
        ssize_t n;

        (void)loop;
        (void)revents;
        n = read(k->fd, k->in + k->in_len, sizeof(k->in) - k->in_len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return;
        if (n <= 0) {
                end(k, k->exit_status >= 0 ? "the session ended" : "ssh closed the session's control connection");
                return;
        }
        k->in_len += (size_t)n;
        for (;;) {
                struct mux_reply r;
                size_t used;
                int p = mux_parse_reply(k->in + at, k->in_len - at, &used, &r);

                if (p == 0)
                        break;
                if (p < 0) {
                        end(k, "ssh's control socket sent a malformed message");
                        return;
                }
                at += used;
                if (!on_reply(k, &r))
                        return;         /* k may be gone */
        }
        memmove(k->in, k->in + at, k->in_len - at);
        k->in_len -= at;
}

int keepalive_new(struct ev_loop *loop, const char *control_path, const char *subsystem,
                  const struct keepalive_ops *ops, void *userdata, struct keepalive **ret)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_buf_ struct buf hello = {0};
        struct keepalive *k;
        ssize_t n;
        int r;

        if (strlen(control_path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, control_path, strlen(control_path) + 1);
        k = calloc(1, sizeof(*k));
        if (!k)
                return -ENOMEM;
        *k = (struct keepalive){ .loop = loop, .ops = *ops, .userdata = userdata, .fd = -1, .hold = -1,
                                 .exit_status = -1, .subsystem = strdup(subsystem) };
        if (!k->subsystem) {
                free(k);
                return -ENOMEM;
        }
        k->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (k->fd < 0 || connect(k->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                r = -errno;
                goto fail;
        }
        mux_put_hello(&hello);
        do
                n = send(k->fd, hello.data, hello.len, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0 || (size_t)n != hello.len) {
                r = n < 0 ? -errno : -EAGAIN;
                goto fail;
        }
        ev_io_init(&k->io, on_io, k->fd, EV_READ);
        k->io.data = k;
        ev_io_start(loop, &k->io);
        *ret = k;
        return 0;
fail:
        if (k->fd >= 0)
                close(k->fd);
        free(k->subsystem);
        free(k);
        return r;
}

struct keepalive *keepalive_free(struct keepalive *k)
{
        if (!k)
                return NULL;
        ev_io_stop(k->loop, &k->io);
        ev_clear_pending(k->loop, &k->io);
        if (k->fd >= 0)
                close(k->fd);
        if (k->hold >= 0)
                close(k->hold);
        free(k->subsystem);
        free(k);
        return NULL;
}

bool keepalive_is_open(const struct keepalive *k)
{
        return k && k->state == KA_OPEN;
}
