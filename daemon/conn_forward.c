/* SPDX-License-Identifier: MIT */
/* conn_forward: the forwards of a connection's users, each opened over the master's
 * control socket with its own reply: per-forward truth, and no stderr line per forwarded
 * connection. A failed forward does not end the run: it is asked for again on its own
 * schedule (policy.h, by its class), over the live connection, with ssh's own words for
 * why it failed (the bind error of its stderr, over the reply's "Port forwarding failed"). */
#include "conn_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "mux_proto.h"

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents);

void conn_forwards_init(struct conn *c)
{
        ev_timer_init(&c->fwds.retry, on_retry, 0., 0.);
        c->fwds.retry.data = c;
}

static struct log_ctx forward_ctx(const struct conn *c, const struct conn_forward *f)
{
        struct log_ctx ctx = conn_log_ctx(c);

        ctx.tunnel = f->user ? f->user->name : NULL;    /* a forward's news is its tunnel's */
        return ctx;
}

static void tell(struct conn_forward *f, bool failed)
{
        if (f->user && f->user->ops->forward)
                f->user->ops->forward(f->user, f, failed);
}

/* A -L Unix socket left behind by a killed ssh makes every later bind fail "Address
 * already in use". Remove it if it is a socket nobody listens on; never anything else. */
static void remove_stale_socket(const struct conn *c, const struct conn_forward *f)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct log_ctx ctx = forward_ctx(c, f);
        const char *path = f->f.listen.path;
        struct stat st;
        int fd;

        if (f->f.kind != FORWARD_LOCAL || !path[0] || strlen(path) >= sizeof(sa.sun_path) || lstat(path, &st) < 0 ||
            !S_ISSOCK(st.st_mode))
                return;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno == ECONNREFUSED) {
                if (unlink(path) == 0)
                        log_full(LOG_INFO, &ctx, "removed %s: a socket nobody listens on (left by an ssh that was killed)",
                                 path);
                else
                        log_full_errno(LOG_WARNING, errno, &ctx, "cannot remove the stale socket %s: %m", path);
        }
        close(fd);
}

/* A -R moved to a new master (make-before-break) may find its port still taken: ssh sends
 * the old master's cancel-tcpip-forward without waiting for the server, whose session for
 * the new master may bind first. Asked again this often, this many times, before it is a
 * failure. */
#define MOVE_RETRY 0.1
#define MOVE_TRIES 20

static bool retry_due(const struct conn_forward *f)
{
        return (f->st.state == FORWARD_FAILED || f->move_retry) && !f->request_id;
}

static void schedule_retry(struct conn *c)
{
        double next = 0, now = now_mono();

        for (struct conn_forward *f = c->fwds.first; f; f = f->next)
                if (retry_due(f) && (next == 0 || f->retry_at < next))
                        next = f->retry_at;
        if (next == 0) {
                ev_timer_stop(c->ctx->loop, &c->fwds.retry);
                return;
        }
        conn_arm(c, &c->fwds.retry, next - now);
}

static void fail(struct conn *c, struct conn_forward *f, enum failure_class class, const char *reason)
{
        struct log_ctx ctx = forward_ctx(c, f);
        /* a retry's same answer (its state is pending meanwhile) */
        bool again = f->failures > 0 && f->class == class && strcmp(f->reason, reason) == 0;
        char in[DURATION_MAX];

        snprintf(f->reason, sizeof(f->reason), "%s", reason);
        f->st.state = FORWARD_FAILED;
        f->st.reason = f->reason;
        f->st.allocated_port = 0;
        f->class = class;
        f->failures++;
        f->retry_at = now_mono() + policy_failure_delay(&c->spec.sup, class, f->failures) * (0.5 + random_unit() / 2);
        ctx.failure = failure_class_to_string(class);
        /* the first failure, or a new reason, is news; the same one every retry is not */
        log_full(again ? LOG_DEBUG : LOG_WARNING, &ctx, "forward %c %s failed: %s; asked for again in %s", f->st.kind,
                 f->st.spec, reason, format_duration(f->retry_at - now_mono(), in, sizeof(in)));
        tell(f, !again);
}

static void open_one(struct conn *c, struct conn_forward *f)
{
        int r;

        remove_stale_socket(c, f);
        f->cause_seen = false;
        r = master_open_forward(c->master, &f->f, &f->request_id);
        if (r < 0) {
                f->request_id = 0;
                fail(c, f, f->f.kind == FORWARD_REMOTE ? FAILURE_REMOTE_FORWARD : FAILURE_LOCAL_FORWARD,
                     "tunneld cannot ask ssh for it over the control socket");
                return;
        }
        if (f->st.state != FORWARD_PENDING) {
                f->st.state = FORWARD_PENDING;
                tell(f, false);
        }
}

static bool may_open(const struct conn *c, const struct conn_forward *f)
{
        return c->master && master_is_ready(c->master) && c->run.kill_class == FAILURE_NONE &&
               f->st.state == FORWARD_PENDING && !f->request_id && !f->held_by_old;
}

void conn_forwards_open_pending(struct conn *c)
{
        for (struct conn_forward *f = c->fwds.first; f; f = f->next)
                if (may_open(c, f))
                        open_one(c, f);
}

void conn_forward_opened_after_move(struct conn *c, struct conn_forward *f)
{
        if (may_open(c, f))
                open_one(c, f);
}

/* Silent: the connection's change of state follows at once, and its users read their
 * forwards then (a tunnel must not see "pending" before it sees why). */
void conn_forwards_reset(struct conn *c)
{
        ev_timer_stop(c->ctx->loop, &c->fwds.retry);
        for (struct conn_forward *f = c->fwds.first; f; f = f->next) {
                if (f->held_by_old)
                        continue;       /* an old master serves it on (conn_handover_abort, _revert) */
                f->request_id = 0;
                f->moving = f->held_by_old = f->move_retry = false;
                f->move_tries = 0;
                f->st.state = FORWARD_PENDING;
                f->st.reason = NULL;
                f->st.allocated_port = 0;
                f->failures = 0;
        }
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct conn *c = w->data;
        double now = now_mono();

        (void)loop;
        (void)revents;
        if (!c->master || !master_is_ready(c->master))
                return;
        for (struct conn_forward *f = c->fwds.first; f; f = f->next)
                if (f->move_retry && !f->request_id && f->retry_at <= now + 0.01) {
                        f->move_retry = false;
                        open_one(c, f);
                } else if (f->st.state == FORWARD_FAILED && !f->request_id && f->retry_at <= now + 0.01) {
                        /* a half-bound listener stays half-bound: close it, then open anew */
                        uint32_t ignored;
                        (void)master_close_forward(c->master, &f->f, &ignored);
                        f->st.state = FORWARD_PENDING;
                        open_one(c, f);
                }
        schedule_retry(c);
}

void conn_forward_add(struct conn *c, struct conn_forward *f)
{
        f->prev = c->fwds.last;
        f->next = NULL;
        if (c->fwds.last)
                c->fwds.last->next = f;
        else
                c->fwds.first = f;
        c->fwds.last = f;
        c->fwds.n++;
        f->listed = true;
        f->request_id = 0;
        f->moving = f->held_by_old = f->move_retry = false;
        f->move_tries = 0;
        f->failures = 0;
        f->st.state = FORWARD_PENDING;
        f->st.reason = NULL;
        f->st.allocated_port = 0;
        if (may_open(c, f))
                open_one(c, f);
}

void conn_forward_remove(struct conn *c, struct conn_forward *f)
{
        if (!f->listed)
                return;
        /* open (or being opened) on the master: closed there */
        if (c->master && master_is_ready(c->master) && !f->held_by_old &&
            (f->st.state == FORWARD_OPEN || f->request_id || f->st.state == FORWARD_FAILED)) {
                uint32_t ignored;
                (void)master_close_forward(c->master, &f->f, &ignored);
        }
        conn_handover_forget(c, f);
        conn_handover_moved(c, f);
        if (f->prev)
                f->prev->next = f->next;
        else
                c->fwds.first = f->next;
        if (f->next)
                f->next->prev = f->prev;
        else
                c->fwds.last = f->prev;
        f->prev = f->next = NULL;
        f->listed = false;
        f->request_id = 0;
        f->moving = f->held_by_old = f->move_retry = false;
        f->move_tries = 0;
        c->fwds.n--;
        f->st.state = FORWARD_PENDING;
        f->st.reason = NULL;
        f->st.allocated_port = 0;
        schedule_retry(c);
}

void conn_forward_reopen(struct conn *c, struct conn_forward *f)
{
        uint32_t ignored;

        if (!f->listed || !c->master || !master_is_ready(c->master) || f->held_by_old)
                return;
        (void)master_close_forward(c->master, &f->f, &ignored);
        f->request_id = 0;
        conn_handover_moved(c, f);
        f->failures = 0;
        f->st.state = FORWARD_PENDING;
        f->st.reason = NULL;
        f->st.allocated_port = 0;
        open_one(c, f);
        tell(f, false);
        schedule_retry(c);
}

static struct conn_forward *by_request(struct conn *c, uint32_t id)
{
        for (struct conn_forward *f = c->fwds.first; id && f; f = f->next)
                if (f->request_id == id)
                        return f;
        return NULL;
}

void conn_forwards_on_reply(struct conn *c, const struct mux_reply *r)
{
        struct conn_forward *f = by_request(c, r->request_id);
        struct log_ctx ctx;
        bool policy = c->run.refused_by_policy;

        if (!f)
                return;         /* a close, or a forward removed since */
        ctx = forward_ctx(c, f);
        f->request_id = 0;
        c->run.refused_by_policy = false;
        switch (r->type) {
        case MUX_S_OK:
        case MUX_S_REMOTE_PORT:
                if (f->st.state == FORWARD_FAILED) {
                        tell(f, false);         /* its stderr said it is only half there */
                        break;
                }
                if (r->type == MUX_S_REMOTE_PORT) {
                        f->st.allocated_port = (int)r->value;
                        log_full(LOG_INFO, &ctx, "forward R %s: the server allocated port %u", f->st.spec, r->value);
                }
                if (f->failures)
                        log_full(LOG_NOTICE, &ctx, "forward %c %s open again", f->st.kind, f->st.spec);
                f->failures = 0;
                f->reason[0] = '\0';
                f->st.state = FORWARD_OPEN;
                f->st.reason = NULL;
                tell(f, false);
                break;
        case MUX_S_FAILURE:
        case MUX_S_PERMISSION_DENIED: {
                enum failure_class class = f->f.kind != FORWARD_REMOTE ? FAILURE_LOCAL_FORWARD
                                           : policy ? FAILURE_FORWARD_DENIED : FAILURE_REMOTE_FORWARD;
                char reason[256];

                /* ssh's stderr named the cause ("bind [::1]:5000: Cannot assign requested
                 * address"): better than the reply's "Port forwarding failed" */
                snprintf(reason, sizeof(reason), "%.255s",
                         f->cause_seen ? f->reason : r->reason[0] ? r->reason : "refused, no reason given");
                if (f->cause_seen && f->st.state == FORWARD_FAILED) {
                        tell(f, false);
                        break;
                }
                if (f->moving && class == FAILURE_REMOTE_FORWARD && f->move_tries < MOVE_TRIES) {
                        f->move_tries++;
                        f->move_retry = true;
                        f->retry_at = now_mono() + MOVE_RETRY;
                        log_full(LOG_DEBUG, &ctx, "forward R %s: the server still holds the port for the old ssh "
                                 "(%s); asked again in %.0f ms", f->st.spec, reason, MOVE_RETRY * 1000);
                        schedule_retry(c);
                        return;         /* still moving: the old master's, for the tunnel */
                }
                fail(c, f, class, reason);
                break;
        }
        default:
                fail(c, f, FAILURE_MUX, "ssh answered with something else than a forward's reply");
                break;
        }
        conn_handover_moved(c, f);      /* the new master has it (or said why not) */
        schedule_retry(c);
}

/* Does a bind error line name this forward's listener? "bind [127.0.0.1]:5004: …",
 * "channel_setup_fwd_listener_tcpip: cannot listen to port: 5004", "unix_listener: cannot
 * bind to path /run/x.sock: …". */
static bool line_names(const struct conn_forward *f, const char *line)
{
        const char *p;
        long port;

        if (f->f.kind == FORWARD_REMOTE)
                return false;
        if (f->f.listen.path[0])
                return strstr(line, f->f.listen.path) != NULL;
        if ((p = strstr(line, "]:")))
                port = strtol(p + 2, NULL, 10);
        else if ((p = strstr(line, "port: ")))
                port = strtol(p + 6, NULL, 10);
        else
                return false;
        return port == f->f.listen.port;
}

void conn_forwards_on_line(struct conn *c, enum failure_class class, const char *line)
{
        if (class == FAILURE_FORWARD_DENIED) {
                c->run.refused_by_policy = true;        /* the next -R refusal is the policy's */
                return;
        }
        if (class != FAILURE_LOCAL_FORWARD) {
                struct log_ctx ctx = conn_log_ctx(c);
                log_full(LOG_INFO, &ctx, "ssh: %s", line);      /* the reply names the -R that failed */
                return;
        }
        for (struct conn_forward *f = c->fwds.first; f; f = f->next) {
                if (!line_names(f, line))
                        continue;
                if (f->cause_seen && f->st.state == FORWARD_FAILED)
                        continue;       /* its first cause stays ("cannot listen" follows the bind error) */
                f->cause_seen = true;
                if (f->request_id) {
                        /* the reply follows: a failure keeps this cause, an OK (one address
                         * was enough for ssh) is a half-bound listener, failed here */
                        fail(c, f, FAILURE_LOCAL_FORWARD, line);
                        return;
                }
        }
}
