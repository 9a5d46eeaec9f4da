/* SPDX-License-Identifier: MIT */
#include "mux_proto.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#define MUX_FWD_LOCAL 1
#define MUX_FWD_REMOTE 2
#define MUX_FWD_DYNAMIC 3
#define MUX_PORT_STREAMLOCAL 0xfffffffeu        /* (unsigned)-2: the host field is a socket path */

static void put_u32(struct buf *b, uint32_t v)
{
        char w[4] = { (char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v };

        buf_append(b, w, 4);
}

static void put_string(struct buf *b, const char *s)
{
        put_u32(b, (uint32_t)strlen(s));
        buf_append(b, s, strlen(s));
}

/* A packet: its length first, patched in once the body is written. */
static size_t begin(struct buf *b, uint32_t type)
{
        size_t at = b->len;

        put_u32(b, 0);
        put_u32(b, type);
        return at;
}

static void end(struct buf *b, size_t at)
{
        uint32_t n = (uint32_t)(b->len - at - 4);

        if (b->oom || b->len < at + 4)
                return;
        b->data[at] = (char)(n >> 24);
        b->data[at + 1] = (char)(n >> 16);
        b->data[at + 2] = (char)(n >> 8);
        b->data[at + 3] = (char)n;
}

void mux_put_hello(struct buf *b)
{
        size_t at = begin(b, MUX_MSG_HELLO);

        put_u32(b, MUX_VERSION);
        end(b, at);
}

/* What ssh's own mux client sends for a forward (a -L/-R/-D as ssh parsed it). */
struct fields {
        uint32_t type;
        const char *listen_host;
        uint32_t listen_port;
        const char *connect_host;
        uint32_t connect_port;
};

static int end_port(const struct forward_end *e, uint32_t *ret)
{
        if (e->path[0]) {
                *ret = MUX_PORT_STREAMLOCAL;
                return 0;
        }
        if (e->port < 0 || e->port > 65535)
                return -EINVAL;
        *ret = (uint32_t)e->port;
        return 0;
}

static int forward_fields(const struct forward *f, struct fields *ret)
{
        const struct forward_end *l = &f->listen, *c = &f->connect;

        switch (f->kind) {
        case FORWARD_LOCAL: ret->type = MUX_FWD_LOCAL; break;
        case FORWARD_REMOTE: ret->type = MUX_FWD_REMOTE; break;
        case FORWARD_DYNAMIC: ret->type = MUX_FWD_DYNAMIC; break;
        default: return -EINVAL;        /* an unknown type makes the master fatal() */
        }
        /* no bind address: ssh's default (loopback unless GatewayPorts); "" or "*": all */
        if (l->path[0])
                ret->listen_host = l->path;
        else if (!l->host_given)
                ret->listen_host = "";
        else if (!l->host[0] || strcmp(l->host, "*") == 0)
                ret->listen_host = "*";
        else
                ret->listen_host = l->host;
        if (end_port(l, &ret->listen_port) < 0)
                return -EINVAL;
        if (f->socks) {
                /* ssh's parser gives a dynamic forward the connect host "socks" */
                ret->connect_host = f->kind == FORWARD_DYNAMIC ? "socks" : "";
                ret->connect_port = 0;
                return 0;
        }
        ret->connect_host = c->path[0] ? c->path : c->host;
        if (!ret->connect_host[0])
                return -EINVAL;
        return end_port(c, &ret->connect_port);
}

static int put_forward(struct buf *b, uint32_t type, uint32_t request_id, const struct forward *f)
{
        struct fields x;
        size_t at;

        if (forward_fields(f, &x) < 0)
                return -EINVAL;
        at = begin(b, type);
        put_u32(b, request_id);
        put_u32(b, x.type);
        put_string(b, x.listen_host);
        put_u32(b, x.listen_port);
        put_string(b, x.connect_host);
        put_u32(b, x.connect_port);
        end(b, at);
        return b->oom ? -ENOMEM : 0;
}

int mux_put_open_forward(struct buf *b, uint32_t request_id, const struct forward *f)
{
        return put_forward(b, MUX_C_OPEN_FWD, request_id, f);
}

/* The master finds the forward by these same strings: the open's, exactly. */
int mux_put_close_forward(struct buf *b, uint32_t request_id, const struct forward *f)
{
        return put_forward(b, MUX_C_CLOSE_FWD, request_id, f);
}

void mux_put_alive_check(struct buf *b, uint32_t request_id)
{
        size_t at = begin(b, MUX_C_ALIVE_CHECK);

        put_u32(b, request_id);
        end(b, at);
}

void mux_put_stop_listening(struct buf *b, uint32_t request_id)
{
        size_t at = begin(b, MUX_C_STOP_LISTENING);

        put_u32(b, request_id);
        end(b, at);
}

void mux_put_new_session(struct buf *b, uint32_t request_id, const char *command, bool subsystem)
{
        size_t at = begin(b, MUX_C_NEW_SESSION);

        put_u32(b, request_id);
        put_string(b, "");              /* reserved */
        put_u32(b, 0);                  /* want tty */
        put_u32(b, 0);                  /* want X11 forwarding */
        put_u32(b, 0);                  /* want agent forwarding */
        put_u32(b, subsystem);
        put_u32(b, 0xffffffffu);        /* no escape character */
        put_string(b, "");              /* terminal type */
        put_string(b, command);
        end(b, at);                     /* no environment */
}

int mux_send_fd(int sock, int fd)
{
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = {0};
        char byte = 0;
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                              .msg_controllen = sizeof(control.buf) };
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        ssize_t n;

        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
        do
                n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        return n == 1 ? 0 : -EIO;
}

/* A cursor over one packet's body: every read checks what is left. */
struct cursor {
        const uint8_t *p;
        size_t left;
};

static int get_u32(struct cursor *c, uint32_t *ret)
{
        if (c->left < 4)
                return -EBADMSG;
        *ret = (uint32_t)c->p[0] << 24 | (uint32_t)c->p[1] << 16 | (uint32_t)c->p[2] << 8 | c->p[3];
        c->p += 4;
        c->left -= 4;
        return 0;
}

/* A string: skipped if out is NULL, else copied (truncated to size, control characters
 * and NULs shown as '?': the reason goes to the log). */
static int get_string(struct cursor *c, char *out, size_t size)
{
        uint32_t n;

        if (get_u32(c, &n) < 0 || n > c->left)
                return -EBADMSG;
        if (out) {
                size_t k = n < size - 1 ? n : size - 1;

                for (size_t i = 0; i < k; i++)
                        out[i] = c->p[i] < 0x20 || c->p[i] == 0x7f ? '?' : (char)c->p[i];
                out[k] = '\0';
        }
        c->p += n;
        c->left -= n;
        return 0;
}

static int parse_body(struct cursor *c, struct mux_reply *r)
{
        if (get_u32(c, &r->type) < 0)
                return -EBADMSG;
        switch (r->type) {
        case MUX_MSG_HELLO:
                if (get_u32(c, &r->version) < 0 || r->version != MUX_VERSION)
                        return -EBADMSG;
                /* extensions (name, value), each skipped: OpenSSH 10.3's "info" (= "0",
                 * for ssh -O conninfo), and whatever a later version adds */
                while (c->left > 0) {
                        if (get_string(c, NULL, 0) < 0)         /* the name */
                                return -EBADMSG;
                        if (get_string(c, NULL, 0) < 0)         /* its value */
                                return -EBADMSG;
                }
                return 0;
        case MUX_S_OK:
                return get_u32(c, &r->request_id);
        case MUX_S_FAILURE:
        case MUX_S_PERMISSION_DENIED:
                if (get_u32(c, &r->request_id) < 0)
                        return -EBADMSG;
                return get_string(c, r->reason, sizeof(r->reason));
        case MUX_S_ALIVE:
        case MUX_S_REMOTE_PORT:
                if (get_u32(c, &r->request_id) < 0)
                        return -EBADMSG;
                return get_u32(c, &r->value);
        case MUX_S_SESSION_OPENED:
                if (get_u32(c, &r->request_id) < 0)
                        return -EBADMSG;
                return get_u32(c, &r->session_id);
        case MUX_S_EXIT_MESSAGE:
                if (get_u32(c, &r->session_id) < 0)
                        return -EBADMSG;
                return get_u32(c, &r->value);
        case MUX_S_TTY_ALLOC_FAIL:
                return get_u32(c, &r->session_id);
        default:
                return -EBADMSG;        /* nothing else answers what tunneld asks */
        }
}

int mux_parse_reply(const uint8_t *data, size_t len, size_t *ret_used, struct mux_reply *ret)
{
        struct cursor c = { data, len };
        uint32_t n = 0;

        *ret_used = 0;
        if (len < 4)
                return 0;
        (void)get_u32(&c, &n);
        if (n < 4 || n > MUX_PACKET_MAX)
                return -EBADMSG;
        if (c.left < n)
                return 0;
        c.left = n;             /* this packet only; fields past its end are a bad message */
        *ret = (struct mux_reply){ 0 };
        if (parse_body(&c, ret) < 0)
                return -EBADMSG;
        /* bytes after the fields we know: a newer master's additions, ignored */
        *ret_used = 4 + (size_t)n;
        return 1;
}

const char *mux_msg_name(uint32_t type)
{
        switch (type) {
        case MUX_MSG_HELLO: return "hello";
        case MUX_C_NEW_SESSION: return "new session";
        case MUX_C_ALIVE_CHECK: return "alive check";
        case MUX_C_OPEN_FWD: return "open forward";
        case MUX_C_CLOSE_FWD: return "close forward";
        case MUX_C_STOP_LISTENING: return "stop listening";
        case MUX_S_OK: return "ok";
        case MUX_S_PERMISSION_DENIED: return "permission denied";
        case MUX_S_FAILURE: return "failure";
        case MUX_S_EXIT_MESSAGE: return "exit message";
        case MUX_S_ALIVE: return "alive";
        case MUX_S_SESSION_OPENED: return "session opened";
        case MUX_S_REMOTE_PORT: return "remote port";
        case MUX_S_TTY_ALLOC_FAIL: return "tty allocation failed";
        default: return "unknown";
        }
}
