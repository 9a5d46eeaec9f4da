/* SPDX-License-Identifier: MIT */
/* tunnel_mux: a tunnel whose ssh is a mux master (multiplex = true). ssh authenticates
 * with no forward of its own; once its control socket appears (inotify on a directory of
 * tunneld's, no polling) tunneld opens every forward over it, and each one's reply says
 * whether it is there: per-forward truth, and no stderr line per forwarded connection. A
 * failed forward does not end the run: the tunnel is degraded, and the forward is asked
 * for again on a doubling schedule over the live connection. */
#include "tunnel_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mux_client.h"
#include "ssh_argv.h"

#define FWD_RETRY_MIN 1.0               /* seconds: a failed forward is asked for again, */
#define FWD_RETRY_MAX 30.0              /* doubling up to this */
#define DRAIN_MAX (16u << 10)           /* ssh's stderr read before a reply is judged */
/* A master that dies closes its control socket a moment before its exit is reaped: the
 * exit (killed by a signal, its last words) is the better verdict, if it comes this soon. */
#define MUX_LOST_GRACE 1.0

void mux_init(struct tunnel *t)
{
        t->mux_watch_fd = -1;
        ev_io_init(&t->mux_watch, NULL, -1, EV_READ);
        ev_timer_init(&t->fwd_retry_timer, NULL, 0., 0.);
        ev_timer_init(&t->mux_lost_timer, NULL, 0., 0.);
}

static char *mux_dir(const struct tunnel *t)
{
        char *d = strdup(t->mux_path), *slash = d ? strrchr(d, '/') : NULL;

        if (slash)
                *slash = '\0';
        return d;
}

void mux_done(struct tunnel *t)
{
        _cleanup_free_ char *dir = NULL;

        mux_run_end(t);
        if (!t->mux_path)
                return;
        dir = mux_dir(t);
        for (int gen = 0; gen < 2; gen++) {
                _cleanup_free_ char *path = NULL;

                if (asprintf(&path, "%s%d", t->mux_path, gen) >= 0)
                        (void)unlink(path);
        }
        if (dir)
                (void)rmdir(dir);
}

static void stop_watch(struct tunnel *t)
{
        if (t->mux_watch_fd < 0)
                return;
        ev_io_stop(t->ctx->loop, &t->mux_watch);
        close(t->mux_watch_fd);
        t->mux_watch_fd = -1;
}

void mux_run_end(struct tunnel *t)
{
        stop_watch(t);
        t->mux = mux_client_free(t->mux);
        t->mux_ready = false;
        ev_timer_stop(t->ctx->loop, &t->fwd_retry_timer);
        ev_timer_stop(t->ctx->loop, &t->mux_lost_timer);
        t->fwd_retry_delay = 0;
        free(t->fwds);
        forward_states_free(t->fwd_status, t->n_fwds);
        t->fwds = NULL;
        t->fwd_status = NULL;
        t->n_fwds = 0;
}

bool mux_forwards_settled(const struct tunnel *t, bool *all_open)
{
        *all_open = true;
        for (size_t i = 0; i < t->n_fwds; i++) {
                if (t->fwds[i].st->state == FORWARD_PENDING)
                        return false;
                if (t->fwds[i].st->state != FORWARD_OPEN)
                        *all_open = false;
        }
        return true;
}

static void fail_forward(struct tunnel *t, struct mux_forward *m, const char *reason)
{
        struct log_ctx ctx = ctx_of(m->rider ? m->rider : t);   /* a shared connection's: the rider's news */
        bool again = m->st->state == FORWARD_FAILED && strcmp(m->reason, reason) == 0;

        snprintf(m->reason, sizeof(m->reason), "%s", reason);
        m->st->state = FORWARD_FAILED;
        m->st->reason = m->reason;
        /* the first failure, or a new reason, is news; the same one every retry is not */
        log_full(again ? LOG_DEBUG : LOG_WARNING, &ctx, "forward %c %s failed: %s", m->st->kind, m->st->spec, reason);
}

static void open_forward(struct tunnel *t, struct mux_forward *m)
{
        int r = mux_client_open_forward(t->mux, &m->f, &m->request_id);

        if (r < 0) {
                m->request_id = 0;
                fail_forward(t, m, "tunneld cannot ask ssh for it over the control socket");
                return;
        }
        m->st->state = FORWARD_PENDING;
}

static void on_fwd_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;

        (void)loop;
        (void)revents;
        if (!t->mux)
                return;
        for (size_t i = 0; i < t->n_fwds; i++)
                if (t->fwds[i].st->state == FORWARD_FAILED) {
                        /* a half-bound listener stays half-bound: close it, then open anew */
                        uint32_t ignored;
                        (void)mux_client_close_forward(t->mux, &t->fwds[i].f, &ignored);
                        open_forward(t, &t->fwds[i]);
                }
}

/* After every reply: up, degraded, and the next retry of what failed. */
static void judge(struct tunnel *t)
{
        bool all_open, settled = mux_forwards_settled(t, &all_open);

        if (settled && !all_open && !ev_is_active(&t->fwd_retry_timer)) {
                t->fwd_retry_delay = t->fwd_retry_delay ? t->fwd_retry_delay * 2 : FWD_RETRY_MIN;
                if (t->fwd_retry_delay > FWD_RETRY_MAX)
                        t->fwd_retry_delay = FWD_RETRY_MAX;
                arm(t, &t->fwd_retry_timer, t->fwd_retry_delay);
        } else if (settled && all_open)
                t->fwd_retry_delay = 0;
        maybe_up(t);
}

static struct mux_forward *forward_of(struct tunnel *t, uint32_t request_id)
{
        for (size_t i = 0; request_id && i < t->n_fwds; i++)
                if (t->fwds[i].request_id == request_id)
                        return &t->fwds[i];
        return NULL;
}

/* Ask for every forward not asked for yet (all of them once the master said hello). */
void mux_open_pending(struct tunnel *t)
{
        if (!t->mux || !t->mux_ready)
                return;
        for (size_t i = 0; i < t->n_fwds; i++)
                if (t->fwds[i].st->state == FORWARD_PENDING && !t->fwds[i].request_id && !t->fwds[i].handover)
                        open_forward(t, &t->fwds[i]);
        judge(t);
}

static void on_ready(void *userdata)
{
        struct tunnel *t = userdata;

        t->mux_ready = true;
        handover_move(t);       /* an old master's forwards: closed there first */
        mux_open_pending(t);
}

static void on_reply(const struct mux_reply *r, void *userdata)
{
        struct tunnel *t = userdata;
        struct mux_forward *m = forward_of(t, r->request_id);

        if (!m)
                return;         /* a close before a retry, an alive check */
        /* ssh logged a half-bound listener before it answered: read that first */
        if (t->stderr_fd >= 0 && lines_read(&t->out, t->stderr_fd, DRAIN_MAX, NULL, on_line, t))
                close_stderr(t);
        m->request_id = 0;
        switch (r->type) {
        case MUX_S_OK:
        case MUX_S_REMOTE_PORT:
                if (m->st->state == FORWARD_FAILED)
                        break;  /* its stderr said it is only half there */
                if (r->type == MUX_S_REMOTE_PORT) {
                        struct log_ctx ctx = ctx_of(m->rider ? m->rider : t);
                        m->st->allocated_port = (int)r->value;
                        log_full(LOG_INFO, &ctx, "forward R %s: the server allocated port %u", m->st->spec, r->value);
                }
                if (m->reason[0]) {
                        struct log_ctx ctx = ctx_of(m->rider ? m->rider : t);
                        log_full(LOG_NOTICE, &ctx, "forward %c %s open again", m->st->kind, m->st->spec);
                        m->reason[0] = '\0';
                }
                m->st->state = FORWARD_OPEN;
                m->st->reason = NULL;
                break;
        case MUX_S_FAILURE:
        case MUX_S_PERMISSION_DENIED:
                fail_forward(t, m, r->reason[0] ? r->reason : "refused, no reason given");
                break;
        default:
                fail_forward(t, m, "ssh answered with something else than a forward's reply");
                break;
        }
        judge(t);
        if (t->is_carrier && m->rider)
                share_sync_rider(m->rider);
}

/* The master lives on without its control connection: nothing can be asked of it. */
static void on_mux_lost(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct tunnel *t = w->data;

        (void)loop;
        (void)revents;
        if (tunnel_is_running(t) && t->kill_class == FAILURE_NONE)
                end_run(t, FAILURE_MUX, "%s", t->mux_lost_why);
}

static void on_closed(int error, const char *why, void *userdata)
{
        struct tunnel *t = userdata;

        (void)error;
        t->mux = mux_client_free(t->mux);
        t->mux_ready = false;
        if (!tunnel_is_running(t) || t->kill_class != FAILURE_NONE)
                return;
        snprintf(t->mux_lost_why, sizeof(t->mux_lost_why), "%s", why);
        ev_timer_init(&t->mux_lost_timer, on_mux_lost, MUX_LOST_GRACE, 0.);
        t->mux_lost_timer.data = t;
        ev_timer_start(t->ctx->loop, &t->mux_lost_timer);
}

static const struct mux_client_ops mux_ops = {
        .ready = on_ready,
        .reply = on_reply,
        .closed = on_closed,
};

static void connect_master(struct tunnel *t)
{
        int r = mux_client_new(t->ctx->loop, t->mux_run_path, &mux_ops, t, &t->mux);

        if (r < 0) {
                errno = -r;
                end_run(t, FAILURE_MUX, "cannot connect to ssh's control socket %s: %m", t->mux_run_path);
        }
}

/* The directory of the control socket changed: connect once the socket is there. */
static void on_watch(struct ev_loop *loop, ev_io *w, int revents)
{
        struct tunnel *t = w->data;
        char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t n = read(t->mux_watch_fd, events, sizeof(events));
        bool appeared = false;

        (void)loop;
        (void)revents;
        for (ssize_t at = 0; n > 0 && at + (ssize_t)sizeof(struct inotify_event) <= n;) {
                const struct inotify_event *e = (const struct inotify_event *)(events + at);

                if (e->len && strcmp(e->name, strrchr(t->mux_run_path, '/') + 1) == 0)
                        appeared = true;
                at += (ssize_t)(sizeof(*e) + e->len);
        }
        if (!appeared)
                return;
        stop_watch(t);
        connect_master(t);
}

static int add_forwards(struct tunnel *t, char kind, enum forward_kind k, char *const *specs)
{
        for (size_t i = 0; specs && specs[i]; i++) {
                struct mux_forward *m = &t->fwds[t->n_fwds];

                *m = (struct mux_forward){ .st = &t->fwd_status[t->n_fwds] };
                *m->st = (struct forward_status){ .kind = kind, .spec = strdup(specs[i]), .state = FORWARD_PENDING };
                if (!m->st->spec)
                        return -ENOMEM;
                t->n_fwds++;
                if (forward_parse(k, specs[i], &m->f))
                        return -EINVAL;         /* validated at load: cannot happen */
        }
        return 0;
}

static int watch_dir(struct tunnel *t, const char *dir)
{
        struct log_ctx ctx = ctx_of(t);
        struct stat st;

        if (strlen(t->mux_run_path) > SSH_CONTROL_PATH_MAX) {
                log_full(LOG_ERR, &ctx, "multiplex: the control socket %s is %zu bytes long, ssh allows %d: "
                         "shorten control_socket or the tunnel's name", t->mux_run_path, strlen(t->mux_run_path),
                         SSH_CONTROL_PATH_MAX);
                return -ENAMETOOLONG;
        }
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return log_full_errno(LOG_ERR, errno, &ctx, "cannot create %s: %m", dir);
        if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
                return log_full_errno(LOG_ERR, EEXIST, &ctx, "%s is not a directory of ours", dir);
        /* a socket left behind makes ssh run without multiplexing ("already exists") */
        if (unlink(t->mux_run_path) < 0 && errno != ENOENT)
                return log_full_errno(LOG_ERR, errno, &ctx, "cannot remove %s: %m", t->mux_run_path);
        t->mux_watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (t->mux_watch_fd < 0 || inotify_add_watch(t->mux_watch_fd, dir, IN_CREATE | IN_MOVED_TO) < 0) {
                int r = log_full_errno(LOG_ERR, errno, &ctx, "cannot watch %s: %m", dir);
                stop_watch(t);
                return r;
        }
        ev_io_init(&t->mux_watch, on_watch, t->mux_watch_fd, EV_READ);
        t->mux_watch.data = t;
        ev_io_start(t->ctx->loop, &t->mux_watch);
        return 0;
}

int mux_run_begin(struct tunnel *t)
{
        char *const *l = tunnel_spec_local_forwards(&t->spec), *const *r = tunnel_spec_remote_forwards(&t->spec);
        char *const *d = tunnel_spec_dynamic_forwards(&t->spec);
        _cleanup_free_ char *dir = NULL;
        size_t n;
        int ret;

        mux_run_end(t);
        if (!t->spec.multiplex || !t->mux_path)
                return 0;
        /* s0 … s9: a socket no master that still runs has */
        t->mux_gen = handover_free_gen(t);
        free(t->mux_run_path);
        if (asprintf(&t->mux_run_path, "%s%d", t->mux_path, t->mux_gen) < 0) {
                t->mux_run_path = NULL;
                return -ENOMEM;
        }
        dir = mux_dir(t);
        n = strv_length(l) + strv_length(r) + strv_length(d);
        t->fwds = calloc(n + 1, sizeof(*t->fwds));
        t->fwd_status = calloc(n + 1, sizeof(*t->fwd_status));
        if (!dir || !t->fwds || !t->fwd_status) {
                mux_run_end(t);
                return -ENOMEM;
        }
        ev_timer_init(&t->fwd_retry_timer, on_fwd_retry, 0., 0.);
        t->fwd_retry_timer.data = t;
        if ((ret = add_forwards(t, 'L', FORWARD_LOCAL, l)) < 0 || (ret = add_forwards(t, 'R', FORWARD_REMOTE, r)) < 0 ||
            (ret = add_forwards(t, 'D', FORWARD_DYNAMIC, d)) < 0 || (ret = watch_dir(t, dir)) < 0) {
                mux_run_end(t);
                return ret;
        }
        if (t->is_carrier)
                share_assign_owners(t);
        return 0;
}

/* A line of ssh's stderr says a listener could not be bound on one of its addresses
 * ("bind [127.0.0.1]:5004: Address already in use"): the mux reply will say OK (one
 * address was enough for ssh), so the forward of that port is marked failed first. */
void mux_note_bind_failure(struct tunnel *t, const char *line)
{
        const char *port = strstr(line, "]:");
        long p = port ? strtol(port + 2, NULL, 10) : -1;

        for (size_t i = 0; i < t->n_fwds; i++) {
                struct mux_forward *m = &t->fwds[i];
                bool match = m->f.kind != FORWARD_REMOTE &&
                             ((m->f.listen.path[0] && strstr(line, m->f.listen.path)) ||
                              (!m->f.listen.path[0] && m->f.listen.port == p));

                if (match)
                        fail_forward(t, m, line);
        }
}

static struct mux_forward *take_old(struct mux_forward *old, bool *taken, size_t n, char kind, const char *spec)
{
        for (size_t i = 0; i < n; i++)
                if (!taken[i] && old[i].st->kind == kind && strcmp(old[i].st->spec, spec) == 0) {
                        taken[i] = true;
                        return &old[i];
                }
        return NULL;
}

int mux_retarget(struct tunnel *t, const struct tunnel_spec *spec, size_t *added, size_t *removed)
{
        static const struct { char kind; enum forward_kind k; } kinds[] = {
                { 'L', FORWARD_LOCAL }, { 'R', FORWARD_REMOTE }, { 'D', FORWARD_DYNAMIC } };
        char *const *lists[] = { tunnel_spec_local_forwards(spec), tunnel_spec_remote_forwards(spec),
                                 tunnel_spec_dynamic_forwards(spec) };
        size_t n = strv_length(lists[0]) + strv_length(lists[1]) + strv_length(lists[2]), k = 0;
        _cleanup_free_ struct mux_forward **olds = calloc(n + 1, sizeof(struct mux_forward *));
        _cleanup_free_ bool *taken = calloc(t->n_fwds + 1, sizeof(bool));
        struct mux_forward *fwds = calloc(n + 1, sizeof(*fwds));
        struct forward_status *st = calloc(n + 1, sizeof(*st));

        *added = *removed = 0;
        if (!fwds || !st || !taken || !olds)
                goto oom;
        /* first what can fail: each forward's old state, or a new one with its own string */
        for (size_t l = 0; l < ELEMENTSOF(lists); l++)
                for (size_t i = 0; lists[l] && lists[l][i]; i++, k++) {
                        olds[k] = take_old(t->fwds, taken, t->n_fwds, kinds[l].kind, lists[l][i]);
                        if (olds[k])
                                continue;
                        st[k] = (struct forward_status){ .kind = kinds[l].kind, .spec = strdup(lists[l][i]),
                                                         .state = FORWARD_PENDING };
                        if (!st[k].spec)
                                goto oom;
                        (void)forward_parse(kinds[l].k, lists[l][i], &fwds[k].f);
                        (*added)++;
                }
        /* then the move: a kept one's state (and its string) as it is */
        for (k = 0; k < n; k++) {
                if (olds[k]) {
                        fwds[k] = *olds[k];
                        st[k] = *olds[k]->st;
                }
                fwds[k].st = &st[k];
                st[k].reason = st[k].state == FORWARD_FAILED ? fwds[k].reason : NULL;
        }
        for (size_t i = 0; i < t->n_fwds; i++)
                if (!taken[i]) {
                        uint32_t ignored;

                        (*removed)++;
                        if (t->mux && t->mux_ready)
                                (void)mux_client_close_forward(t->mux, &t->fwds[i].f, &ignored);
                        free((char *)t->fwd_status[i].spec);
                }
        free(t->fwds);
        free(t->fwd_status);
        t->fwds = fwds;
        t->fwd_status = st;
        t->n_fwds = n;
        return 0;
oom:
        for (size_t i = 0; st && olds && i < n; i++)
                if (!olds[i])
                        free((char *)st[i].spec);
        free(fwds);
        free(st);
        return -ENOMEM;
}

int mux_run_argv(const struct tunnel *t, char ***ret)
{
        _cleanup_strv_free_ char **argv = NULL;
        int r;

        *ret = NULL;
        if (!t->mux_run_path)
                return 0;
        r = strv_copy(t->argv, &argv);
        if (r < 0)
                return r;
        for (char **a = argv; *a; a++)
                if (strncmp(*a, "ControlPath=", 12) == 0) {
                        char *v;

                        r = ssh_control_path_option(t->mux_run_path, &v);
                        if (r < 0)
                                return r;
                        free(*a);
                        *a = v;
                        *ret = argv;
                        argv = NULL;
                        return 0;
                }
        return -EINVAL;
}

void forward_states_free(struct forward_status *st, size_t n)
{
        for (size_t i = 0; st && i < n; i++)
                free((char *)st[i].spec);
        free(st);
}
