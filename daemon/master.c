/* SPDX-License-Identifier: MIT */
/* master: one ssh process as a mux master: spawn, stderr, control socket, exit. */
#include "master.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lines.h"
#include "log.h"
#include "mux_client.h"
#include "process.h"
#include "proc_net.h"

/* ssh's plain lines (not its errors, never tunneld's own): at most this many per window at
 * their level, the rest at debug level with a count, so a client hammering a dead forward
 * target cannot flood the journal. */
#define CHATTER_LINES 50
#define CHATTER_WINDOW 10.0
/* What is read of ssh's stderr once it has exited: its last words, but bounded (a helper
 * that inherited the pipe may go on writing). */
#define FINAL_READ_MAX (64u << 10)
/* …and before a reply is judged: a listener's bind error comes just before it. */
#define DRAIN_MAX (16u << 10)
/* A master that dies closes its control socket a moment before its exit is reaped: the
 * exit (killed by a signal, its last words) is the better verdict, if it comes this soon. */
#define LOST_GRACE 1.0

struct master_cues {
        unsigned hops;                  /* jump hosts, each saying "Authenticated to" (VERBOSE in their file) */
        unsigned hops_authenticated;
        bool via_proxy;
        bool answered;                  /* the destination's banner ("Remote protocol version") */
        bool authenticated;
        enum failure_class failure;     /* the first specific class of its stderr */
        bool failure_on_proxy;
};

struct master {
        struct ev_loop *loop;
        const struct master_ops *ops;
        void *userdata;
        char *log_tunnel, *log_connection;
        char *control_path;
        pid_t pid;
        double started_at;
        ev_child child;
        int err_fd;
        ev_io err_io;
        struct lines out;
        double chatter_since;
        unsigned chatter_lines;
        unsigned long chatter_dropped;
        bool quiet;
        struct sockwatch *watch;
        struct sockwatch_entry watched; /* until the control socket appears */
        struct mux_client *mux;
        bool ready;
        struct master_cues cues;
        ev_timer lost_timer;
        char lost_why[192];
        ev_timer kill_timer;
        double grace;
        bool term_sent, kill_sent, exited;
};

static struct log_ctx log_ctx_of(const struct master *m)
{
        struct log_ctx ctx = LOG_CTX_INIT;

        ctx.tunnel = m->log_tunnel;
        ctx.connection = m->log_connection;
        ctx.pid = m->pid > 0 ? m->pid : -1;
        return ctx;
}

/* ---- stderr ---- */

static void log_chatter(struct master *m, int prio, const char *line)
{
        struct log_ctx ctx = log_ctx_of(m);
        double now = now_mono();

        if (now - m->chatter_since >= CHATTER_WINDOW) {
                if (m->chatter_dropped)
                        log_full(LOG_NOTICE, &ctx, "%lu lines of ssh's output went to the debug level "
                                 "(more than %d in %.0f s)", m->chatter_dropped, CHATTER_LINES, CHATTER_WINDOW);
                m->chatter_since = now;
                m->chatter_lines = 0;
                m->chatter_dropped = 0;
        }
        if (m->quiet)
                prio = LOG_DEBUG;
        else if (++m->chatter_lines > CHATTER_LINES) {
                m->chatter_dropped++;
                prio = LOG_DEBUG;
        }
        log_full(prio, &ctx, "ssh: %s", line);
}

static void note_failure(struct master *m, enum failure_class class, const char *line)
{
        struct log_ctx ctx = log_ctx_of(m);

        if (class == FAILURE_LOCAL_FORWARD || class == FAILURE_REMOTE_FORWARD || class == FAILURE_FORWARD_DENIED) {
                /* a forward's: its own reply judges it, and the run goes on */
                if (m->ops->forward_line)
                        m->ops->forward_line(m, class, line, m->userdata);
                return;
        }
        /* the first specific cause wins over a later generic "Connection closed" */
        if (!(failure_class_is_generic(class) && m->cues.failure != FAILURE_NONE &&
              !failure_class_is_generic(m->cues.failure))) {
                m->cues.failure = class;
                /* before the destination answered, through a proxy: the jump host's line */
                m->cues.failure_on_proxy = m->cues.via_proxy && !m->cues.answered;
        }
        ctx.failure = failure_class_to_string(class);
        log_full(m->quiet ? LOG_DEBUG : LOG_WARNING, &ctx, "ssh: %s", line);
}

static void on_line(const char *line, void *userdata)
{
        struct master *m = userdata;
        struct log_ctx ctx = log_ctx_of(m);
        enum failure_class class;

        switch (ssh_line_parse(line, &class)) {
        case SSH_LINE_BANNER:
                m->cues.answered = true;
                _fallthrough_;
        case SSH_LINE_DEBUG:
        case SSH_LINE_SESSION:
        case SSH_LINE_REMOTE_FORWARD_OK:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                return;
        case SSH_LINE_PROXY:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                m->cues.via_proxy = true;
                return;
        case SSH_LINE_FORWARD_REFUSED_BY_POLICY:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                if (m->ops->forward_line)
                        m->ops->forward_line(m, FAILURE_FORWARD_DENIED, line, m->userdata);
                return;
        case SSH_LINE_AUTHENTICATED:
                log_full(m->quiet ? LOG_DEBUG : LOG_INFO, &ctx, "ssh: %s", line);
                if (m->cues.hops_authenticated < m->cues.hops) {
                        /* a jump host's: after the last one, what fails is the destination */
                        m->cues.hops_authenticated++;
                        return;
                }
                m->cues.authenticated = m->cues.answered = true;
                m->ops->event(m, MASTER_AUTHENTICATED, m->userdata);
                return;
        case SSH_LINE_PROHIBITED:
                log_chatter(m, LOG_WARNING, line);
                m->ops->event(m, MASTER_PROHIBITED, m->userdata);
                return;
        case SSH_LINE_FAILURE:
                note_failure(m, class, line);
                return;
        case SSH_LINE_ALLOCATED:        /* the reply says it too */
        case SSH_LINE_PLAIN:
                log_chatter(m, LOG_INFO, line);
                return;
        }
}

static void close_stderr(struct master *m)
{
        if (m->err_fd < 0)
                return;
        lines_flush(&m->out, on_line, m);
        ev_io_stop(m->loop, &m->err_io);
        close(m->err_fd);
        m->err_fd = -1;
}

static void on_stderr(struct ev_loop *loop, ev_io *w, int revents)
{
        struct master *m = w->data;

        (void)loop;
        (void)revents;
        /* one chunk per wakeup while ssh lives: fair to every other connection */
        if (lines_read(&m->out, m->err_fd, 0, NULL, on_line, m))
                close_stderr(m);
}

/* ---- the control socket ---- */

static void on_lost_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct master *m = w->data;

        (void)loop;
        (void)revents;
        if (!m->exited)
                m->ops->event(m, MASTER_LOST, m->userdata);
}

static void on_mux_ready(void *userdata)
{
        struct master *m = userdata;

        m->ready = true;
        m->ops->event(m, MASTER_READY, m->userdata);
}

static void on_mux_reply(const struct mux_reply *r, void *userdata)
{
        struct master *m = userdata;

        /* ssh logged a half-bound listener before it answered: read that first */
        if (m->err_fd >= 0 && lines_read(&m->out, m->err_fd, DRAIN_MAX, NULL, on_line, m))
                close_stderr(m);
        m->ops->reply(m, r, m->userdata);
}

static void on_mux_closed(int error, const char *why, void *userdata)
{
        struct master *m = userdata;

        (void)error;
        m->mux = mux_client_free(m->mux);
        m->ready = false;
        if (m->exited)
                return;
        snprintf(m->lost_why, sizeof(m->lost_why), "%s", why);
        ev_timer_set(&m->lost_timer, LOST_GRACE, 0.);
        ev_timer_start(m->loop, &m->lost_timer);
}

static const struct mux_client_ops mux_ops = {
        .ready = on_mux_ready,
        .reply = on_mux_reply,
        .closed = on_mux_closed,
};

static void stop_watch(struct master *m)
{
        sockwatch_remove(m->watch, &m->watched);
}

/* The control socket appeared: connect. One that is gone at once (an ssh that dies right
 * after it bound it) is judged like a control connection lost: its exit, if it comes in
 * time, is the better verdict. */
static void on_socket(struct sockwatch_entry *e)
{
        struct master *m = (struct master *)((char *)e - offsetof(struct master, watched));
        int r = mux_client_new(m->loop, m->control_path, &mux_ops, m, &m->mux);

        if (r >= 0)
                return;
        errno = -r;
        snprintf(m->lost_why, sizeof(m->lost_why), "cannot connect to ssh's control socket %s: %m", m->control_path);
        ev_timer_set(&m->lost_timer, LOST_GRACE, 0.);
        ev_timer_start(m->loop, &m->lost_timer);
}

/* ---- the process ---- */

static void on_kill_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct master *m = w->data;
        struct log_ctx ctx = log_ctx_of(m);
        char grace[DURATION_MAX];

        (void)loop;
        (void)revents;
        if (m->exited || m->kill_sent)
                return;
        m->kill_sent = true;
        log_full(LOG_WARNING, &ctx, "ssh did not exit within %s of SIGTERM: sending SIGKILL",
                 format_duration(m->grace, grace, sizeof(grace)));
        process_kill(m->pid, SIGKILL);
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents)
{
        struct master *m = w->data;
        struct master_exit e = { .pid = m->pid, .exit_status = -1 };
        int status = w->rstatus;

        (void)revents;
        ev_child_stop(loop, w);
        ev_timer_stop(loop, &m->kill_timer);
        ev_timer_stop(loop, &m->lost_timer);
        m->exited = true;
        if (m->err_fd >= 0) {
                /* ssh's last words come before the verdict, but no more than a bounded read:
                 * a helper that inherited the pipe may never close it */
                (void)lines_read(&m->out, m->err_fd, FINAL_READ_MAX, NULL, on_line, m);
                close_stderr(m);
        }
        stop_watch(m);
        m->mux = mux_client_free(m->mux);
        m->ready = false;
        if (WIFEXITED(status))
                e.exit_status = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
                e.exit_signal = WTERMSIG(status);
        e.ended_at = now_mono();
        e.ran = e.ended_at - m->started_at;
        e.failure = m->cues.failure;
        e.failure_on_proxy = m->cues.failure_on_proxy;
        e.answered = m->cues.answered;
        e.authenticated = m->cues.authenticated;
        m->ops->exited(m, &e, m->userdata);
}

int master_spawn(struct ev_loop *loop, const struct master_params *p, const struct master_ops *ops, void *userdata,
                 struct master **ret)
{
        struct master *m = calloc(1, sizeof(*m));
        int r, err_fd;

        if (!m)
                return -ENOMEM;
        *m = (struct master){
                .loop = loop,
                .ops = ops,
                .userdata = userdata,
                .err_fd = -1,
                .watch = p->watch,
                .cues = { .hops = p->hops, .via_proxy = p->hops > 0 },
        };
        m->control_path = strdup(p->control_path);
        m->log_connection = p->log_connection ? strdup(p->log_connection) : NULL;
        m->log_tunnel = p->log_tunnel ? strdup(p->log_tunnel) : NULL;
        if (!m->control_path || (p->log_connection && !m->log_connection) || (p->log_tunnel && !m->log_tunnel)) {
                r = -ENOMEM;
                goto fail;
        }
        ev_timer_init(&m->lost_timer, on_lost_timer, 0., 0.);
        ev_timer_init(&m->kill_timer, on_kill_timer, 0., 0.);
        m->lost_timer.data = m->kill_timer.data = m;
        /* watched before ssh runs: it may create its socket before we look */
        m->watched = (struct sockwatch_entry){ .name = strrchr(m->control_path, '/') + 1, .appeared = on_socket };
        sockwatch_add(m->watch, &m->watched);
        r = process_spawn(p->argv, p->envp, false, &m->pid, &err_fd);
        if (r < 0)
                goto fail;
        /* Watch the child before anything else can run (ev.pod: start ev_child right after fork). */
        ev_child_init(&m->child, on_child, m->pid, 0);
        m->child.data = m;
        ev_child_start(loop, &m->child);
        m->started_at = now_mono();
        m->err_fd = err_fd;
        ev_io_init(&m->err_io, on_stderr, err_fd, EV_READ);
        m->err_io.data = m;
        ev_io_start(loop, &m->err_io);
        *ret = m;
        return 0;
fail:
        stop_watch(m);
        free(m->control_path);
        free(m->log_connection);
        free(m->log_tunnel);
        free(m);
        return r;
}

struct master *master_free(struct master *m)
{
        if (!m)
                return NULL;
        if (!m->exited && m->pid > 0) {
                /* libev reaps it (the child watcher stops here, but SIGCHLD is libev's) */
                process_kill(m->pid, SIGKILL);
                ev_child_stop(m->loop, &m->child);
        }
        ev_timer_stop(m->loop, &m->kill_timer);
        ev_timer_stop(m->loop, &m->lost_timer);
        if (m->err_fd >= 0) {
                ev_io_stop(m->loop, &m->err_io);
                close(m->err_fd);
        }
        stop_watch(m);
        mux_client_free(m->mux);
        (void)unlink(m->control_path);
        free(m->control_path);
        free(m->log_connection);
        free(m->log_tunnel);
        free(m);
        return NULL;
}

void master_set_owner(struct master *m, const struct master_ops *ops, void *userdata)
{
        m->ops = ops;
        m->userdata = userdata;
}

void master_stop(struct master *m, double grace)
{
        if (m->exited || m->term_sent)
                return;
        m->term_sent = true;
        m->grace = grace;
        process_kill(m->pid, SIGTERM);
        ev_timer_set(&m->kill_timer, grace > 0 ? grace : 0., 0.);
        ev_timer_start(m->loop, &m->kill_timer);
}

int master_open_forward(struct master *m, const struct forward *f, uint32_t *ret_id)
{
        if (!m->mux || !m->ready)
                return -ENOTCONN;
        return mux_client_open_forward(m->mux, f, ret_id);
}

int master_close_forward(struct master *m, const struct forward *f, uint32_t *ret_id)
{
        if (!m->mux || !m->ready)
                return -ENOTCONN;
        return mux_client_close_forward(m->mux, f, ret_id);
}

/* A draining master's connections: accepted on a -L/-D listen port, or made to a -R's target. */
struct forwarded {
        const struct forward *fwds;
        size_t n;
};

static bool forwarded_port(unsigned local, unsigned remote, void *userdata)
{
        const struct forwarded *fw = userdata;

        for (size_t i = 0; i < fw->n; i++) {
                const struct forward *f = &fw->fwds[i];

                if (f->kind != FORWARD_REMOTE && f->listen.port == (int)local)
                        return true;
                if (f->kind == FORWARD_REMOTE && !f->socks && f->connect.port == (int)remote)
                        return true;
        }
        return false;
}

size_t master_count_forwarded(const struct master *m, const struct forward *fwds, size_t n)
{
        struct forwarded fw = { .fwds = fwds, .n = n };
        int k;

        if (m->exited)
                return 0;
        k = proc_net_established(m->pid, forwarded_port, &fw);
        return k > 0 ? (size_t)k : 0;
}

pid_t master_pid(const struct master *m) { return m && !m->exited ? m->pid : 0; }
const char *master_control_path(const struct master *m) { return m->control_path; }
double master_started_at(const struct master *m) { return m->started_at; }
bool master_is_ready(const struct master *m) { return m->ready; }
bool master_is_authenticated(const struct master *m) { return m->cues.authenticated; }
bool master_is_stopping(const struct master *m) { return m->term_sent; }
bool master_via_proxy(const struct master *m) { return m->cues.via_proxy; }
bool master_answered(const struct master *m) { return m->cues.answered; }
const char *master_lost_reason(const struct master *m) { return m->lost_why; }
void master_set_quiet(struct master *m, bool quiet) { m->quiet = quiet; }
