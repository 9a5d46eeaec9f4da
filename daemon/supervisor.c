/* SPDX-License-Identifier: MIT */
#include "supervisor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hook.h"
#include "log.h"
#include "netwatch.h"
#include "notify.h"
#include "publish.h"

/* What the supervisor keeps for each of its tunnels (the tunnel's owner). */
struct member {
        struct hook *hook;              /* on_state_change, made on its first event */
        struct tunnel *queue_prev, *queue_next;
        bool in_queue;
};

struct supervisor {
        struct ev_loop *loop;
        struct config *config;
        struct tunnel_context ctx;      /* what every tunnel shares (ssh, stop_timeout, …) */
        char *runtime_dir;

        struct tunnel **tunnels;        /* in configuration order */
        size_t n_tunnels;
        struct tunnel **retiring;       /* removed by a reload, still stopping */
        size_t n_retiring;

        bool shutting_down;
        bool dequeue_due;               /* a start slot freed, or a tunnel came up */
        size_t connecting;              /* tunnels whose ssh holds a start slot */
        double started_at;
        ev_prepare flush;               /* once per loop iteration: dequeue, publish */
        struct publisher *publisher;    /* STATUS, READY, the metrics file */
        struct netwatch *netwatch;
        struct tunnel *queue_head, *queue_tail; /* QUEUED tunnels, in the order they queued */
        struct tunnel *dequeuing;       /* the queued tunnel being let through */
        tunnel_observer_t sink;         /* the control socket's subscribers */
        void *sink_data;
        char gate_reason[128];
};

static struct member *member_of(const struct tunnel *t)
{
        return tunnel_get_owner(t);
}

static int new_tunnel(struct supervisor *s, const struct tunnel_spec *spec, struct tunnel **ret)
{
        struct member *m = calloc(1, sizeof(*m));
        int r;

        if (!m)
                return -ENOMEM;
        r = tunnel_new(&s->ctx, spec, m, ret);
        if (r < 0)
                free(m);
        return r;
}

static void free_tunnel(struct tunnel *t)
{
        struct member *m;

        if (!t)
                return;
        m = member_of(t);
        tunnel_free(t);
        hook_free(m->hook);
        free(m);
}

static void on_tunnel_event(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata);

static bool any_child(const struct supervisor *s)
{
        for (size_t i = 0; i < s->n_tunnels; i++)
                if (tunnel_has_child(s->tunnels[i]))
                        return true;
        for (size_t i = 0; i < s->n_retiring; i++)
                if (tunnel_has_child(s->retiring[i]))
                        return true;
        return false;
}

static void shutdown_step(struct supervisor *s);

/* At shutdown, once per loop iteration (never from inside a tunnel's callback: stopping
 * one tunnel would stop the next from its observer, a recursion as deep as the tunnel
 * list, which a thousand tunnels run off the stack): stop what may stop now, and end the
 * loop once no ssh is left. */
static void shutdown_progress(struct supervisor *s)
{
        if (any_child(s))
                shutdown_step(s);
        if (!any_child(s)) {
                publisher_final(s->publisher);  /* the metrics file must not claim tunnels are up */
                ev_break(s->loop, EVBREAK_ALL);
        }
}

static ssize_t index_of(struct tunnel *const *v, size_t n, const struct tunnel *t)
{
        for (size_t i = 0; i < n; i++)
                if (v[i] == t)
                        return (ssize_t)i;
        return -1;
}

static ssize_t index_of_name(struct tunnel *const *v, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (v[i] && strcmp(tunnel_get_name(v[i]), name) == 0)
                        return (ssize_t)i;
        return -1;
}

static void remove_at(struct tunnel **v, size_t *n, size_t i)
{
        memmove(v + i, v + i + 1, (*n - i - 1) * sizeof(struct tunnel *));
        (*n)--;
}

/* after: the first tunnel t waits for that is not up, or NULL. */
const char *supervisor_waiting_for(const struct supervisor *s, const struct tunnel *t)
{
        for (char **a = tunnel_get_spec(t)->after; a && *a; a++) {
                const struct tunnel *d = supervisor_find(s, *a);
                if (d && tunnel_get_state(d) != TUNNEL_UP)
                        return tunnel_get_name(d);
        }
        return NULL;
}

/* The FIFO of QUEUED tunnels, kept by the observer: a tunnel joins at the tail when it
 * queues, so one whose start just failed and comes back from backoff goes behind every
 * tunnel that was already waiting. */
static void queue_append(struct supervisor *s, struct tunnel *t)
{
        struct member *m = member_of(t);

        if (m->in_queue)
                return;
        m->in_queue = true;
        m->queue_next = NULL;
        m->queue_prev = s->queue_tail;
        if (s->queue_tail)
                member_of(s->queue_tail)->queue_next = t;
        else
                s->queue_head = t;
        s->queue_tail = t;
}

static void queue_remove(struct supervisor *s, struct tunnel *t)
{
        struct member *m = member_of(t);

        if (!m->in_queue)
                return;
        if (m->queue_prev)
                member_of(m->queue_prev)->queue_next = m->queue_next;
        else
                s->queue_head = m->queue_next;
        if (m->queue_next)
                member_of(m->queue_next)->queue_prev = m->queue_prev;
        else
                s->queue_tail = m->queue_prev;
        m->queue_prev = m->queue_next = NULL;
        m->in_queue = false;
}

/* A queued tunnel that waits for a start slot (not for the tunnels it is after). */
static bool slot_waiters(const struct supervisor *s)
{
        for (const struct tunnel *t = s->queue_head; t; t = member_of(t)->queue_next)
                if (!supervisor_waiting_for(s, t))
                        return true;
        return false;
}

/* May t spawn ssh now? Not before the tunnels it is after are up; queued tunnels go
 * first, in the order they queued; at most max_parallel_starts are connecting at once. */
static const char *gate(struct tunnel *t, void *userdata)
{
        struct supervisor *s = userdata;
        int max = s->config->max_parallel_starts;
        const char *dep = supervisor_waiting_for(s, t);
        size_t starting;

        if (s->shutting_down)
                return "tunneld is stopping";
        if (dep) {
                snprintf(s->gate_reason, sizeof(s->gate_reason), "waiting for %s to be up", dep);
                return s->gate_reason;
        }
        if (max <= 0)
                return NULL;
        starting = s->connecting - tunnel_is_connecting(t);     /* a restarting tunnel has its own slot */
        if (starting >= (size_t)max) {
                snprintf(s->gate_reason, sizeof(s->gate_reason), "%zu tunnel%s connecting (max_parallel_starts %d)",
                         starting, starting == 1 ? " is" : "s are", max);
                return s->gate_reason;
        }
        if (s->dequeuing != t && tunnel_get_state(t) != TUNNEL_QUEUED && slot_waiters(s)) {
                snprintf(s->gate_reason, sizeof(s->gate_reason), "other tunnels are queued first");
                return s->gate_reason;
        }
        return NULL;
}

/* Let queued tunnels through, oldest first, while there is room. Runs once per loop
 * iteration, never from inside a tunnel's own callback. */
static void dequeue(struct supervisor *s)
{
        int max = s->config->max_parallel_starts;
        struct tunnel *next;

        for (struct tunnel *t = s->queue_head; t; t = next) {
                next = member_of(t)->queue_next;        /* a start takes t out of the queue */
                if (supervisor_waiting_for(s, t))
                        continue;
                if (max > 0 && s->connecting >= (size_t)max)
                        return;
                s->dequeuing = t;
                tunnel_dequeue(t, "start slot free");
                s->dequeuing = NULL;
        }
}

static void on_network_changed(void *userdata)
{
        struct supervisor *s = userdata;
        size_t n = 0;

        if (s->shutting_down)
                return;
        /* at once, no jitter: the start-slot queue (max_parallel_starts) spreads a herd */
        for (size_t i = 0; i < s->n_tunnels; i++)
                n += tunnel_retry_soon(s->tunnels[i], "network changed");
        if (n)
                log_notice("network changed: %zu tunnel%s in backoff retr%s now", n, n == 1 ? "" : "s",
                           n == 1 ? "ies" : "y");
        else
                log_debug("network changed: no tunnel is waiting to retry");
}

/* Stop, at shutdown, every tunnel no running tunnel is after: dependents go first. */
static void shutdown_step(struct supervisor *s)
{
        for (size_t i = s->n_tunnels; i > 0; i--) {
                struct tunnel *t = s->tunnels[i - 1];
                bool needed = false;

                if (tunnel_get_state(t) == TUNNEL_STOPPED || tunnel_get_state(t) == TUNNEL_STOPPING)
                        continue;
                for (size_t j = 0; j < s->n_tunnels && !needed; j++) {
                        const struct tunnel *d = s->tunnels[j];
                        if (d == t || !tunnel_has_child(d))
                                continue;
                        for (char **a = tunnel_get_spec(d)->after; a && *a; a++)
                                if (strcmp(*a, tunnel_get_name(t)) == 0) {
                                        needed = true;
                                        break;
                                }
                }
                if (!needed)
                        tunnel_stop(t, "tunneld is stopping");
        }
}

static void run_hook(struct supervisor *s, struct tunnel *t, const char *state, const char *previous)
{
        const struct tunnel_spec *spec = tunnel_get_spec(t);
        const struct tunnel_run *last = tunnel_get_last_run(t);
        struct member *m = member_of(t);
        struct hook_event ev = {
                .state = state,
                .previous = previous,
                .failure = last->valid && last->failure != FAILURE_NONE && strcmp(state, "up") != 0
                                   ? failure_class_to_string(last->failure) : "",
                .restarts = tunnel_get_restarts(t),
        };

        if (!spec->on_state_change)
                return;
        if (!m->hook && hook_new(s->loop, spec->name, &m->hook) < 0)
                return;
        hook_fire(m->hook, spec->on_state_change, s->config->hook_timeout, &ev);
}

static void on_tunnel_event(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata)
{
        struct supervisor *s = userdata;
        enum tunnel_state now = tunnel_get_state(t);

        publisher_news(s->publisher);
        if (ev == TUNNEL_EVENT_CONNECTING) {
                if (tunnel_is_connecting(t))
                        s->connecting++;
                else {
                        s->connecting--;
                        s->dequeue_due = true;
                }
                return;
        }
        if (ev == TUNNEL_EVENT_STATE && old != now) {
                if (now == TUNNEL_QUEUED)
                        queue_append(s, t);
                else if (old == TUNNEL_QUEUED)
                        queue_remove(s, t);
                if (old == TUNNEL_STARTING || now == TUNNEL_UP || now == TUNNEL_QUEUED)
                        s->dequeue_due = true;
        }
        if (s->sink)            /* (CONNECTING returned above) */
                s->sink(t, ev, old, s->sink_data);
        if (ev == TUNNEL_EVENT_FLAPPING) {
                run_hook(s, t, "flapping", tunnel_state_to_string(old));
                return;
        }
        if (old != now && (now == TUNNEL_UP || now == TUNNEL_FAILED || now == TUNNEL_DEGRADED))
                run_hook(s, t, tunnel_state_to_string(now), tunnel_state_to_string(old));
        if (now == TUNNEL_STOPPED && !tunnel_wants_start(t)) {
                ssize_t i = index_of(s->retiring, s->n_retiring, t);
                if (i >= 0) {
                        remove_at(s->retiring, &s->n_retiring, (size_t)i);
                        free_tunnel(t);
                }
        }
}

/* Once per loop iteration, before it sleeps, and O(1) unless something is due: let queued
 * tunnels start, then what the publisher has due (READY, STATUS, the metrics file). */
static void on_flush(struct ev_loop *loop, ev_prepare *w, int revents)
{
        struct supervisor *s = w->data;

        (void)loop;
        (void)revents;
        if (s->shutting_down) {
                shutdown_progress(s);
                return;
        }
        if (s->dequeue_due) {
                s->dequeue_due = false;
                dequeue(s);
        }
        publisher_flush(s->publisher);
}

int supervisor_status_text(const struct supervisor *s, char **ret)
{
        return publish_status_text(s, s->publisher, ret);
}

int supervisor_new(struct ev_loop *loop, struct config *config, const char *runtime_dir, struct supervisor **ret)
{
        struct supervisor *s;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->loop = loop;
        s->runtime_dir = runtime_dir ? strdup(runtime_dir) : NULL;
        if (runtime_dir && !s->runtime_dir) {
                free(s);
                return -ENOMEM;
        }
        s->ctx = (struct tunnel_context){
                .loop = loop,
                .runtime_dir = s->runtime_dir,
                .observer = on_tunnel_event,
                .gate = gate,
                .userdata = s,
        };
        s->started_at = now_mono();
        r = publisher_new(loop, s, &s->publisher);
        if (r < 0) {
                free(s->runtime_dir);
                free(s);
                return r;
        }
        ev_prepare_init(&s->flush, on_flush);
        s->flush.data = s;
        ev_prepare_start(loop, &s->flush);
        /* The prepare watcher must not keep the loop alive on its own. */
        ev_unref(loop);

        r = supervisor_apply(s, config);
        if (r < 0) {
                supervisor_free(s);
                return r;
        }
        publisher_start(s->publisher);
        *ret = s;
        return 0;
}

struct supervisor *supervisor_free(struct supervisor *s)
{
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_tunnels; i++)
                free_tunnel(s->tunnels[i]);
        for (size_t i = 0; i < s->n_retiring; i++)
                free_tunnel(s->retiring[i]);
        free(s->tunnels);
        free(s->retiring);
        ev_ref(s->loop);
        ev_prepare_stop(s->loop, &s->flush);
        publisher_free(s->publisher);
        netwatch_free(s->netwatch);
        config_free(s->config);
        free(s->runtime_dir);
        free(s);
        return NULL;
}

/* How a reload treats a tunnel it keeps. */
enum keep {
        KEEP_UNTOUCHED,                 /* same spec: same pid, same counters */
        KEEP_POLICY,                    /* same ssh command line: settings applied in place */
        KEEP_RESTART,                   /* a new command line (or taken back while stopping) */
};

static enum keep how_to_keep(const struct tunnel *t, const struct tunnel_spec *spec, bool ssh_changed)
{
        if (ssh_changed || !tunnel_spec_same_command(tunnel_get_spec(t), spec) ||
            tunnel_get_state(t) == TUNNEL_STOPPING)
                return KEEP_RESTART;
        return tunnel_spec_equal(tunnel_get_spec(t), spec) ? KEEP_UNTOUCHED : KEEP_POLICY;
}

static void log_tunnel(int prio, const char *name, const char *text)
{
        struct log_ctx ctx = LOG_CTX_INIT;

        ctx.tunnel = name;
        log_full(prio, &ctx, "%s", text);
}

int supervisor_apply(struct supervisor *s, struct config *c)
{
        const struct config *old = s->config;
        _cleanup_free_ struct tunnel **next = NULL, **removed = NULL, **reused = NULL;
        _cleanup_free_ struct tunnel_change **changes = NULL;
        _cleanup_free_ enum keep *keep = NULL;
        size_t n_removed = 0, n_next = c->n_tunnels;
        struct tunnel **grown;
        bool ssh_changed = old && strcmp(old->ssh, c->ssh) != 0;
        int r = 0;

        next = calloc(n_next + 1, sizeof(struct tunnel *));
        reused = calloc(n_next + 1, sizeof(struct tunnel *));
        changes = calloc(n_next + 1, sizeof(struct tunnel_change *));
        keep = calloc(n_next + 1, sizeof(enum keep));
        removed = calloc(s->n_tunnels + 1, sizeof(struct tunnel *));
        grown = realloc(s->retiring, (s->n_retiring + s->n_tunnels + 1) * sizeof(struct tunnel *));
        if (grown)
                s->retiring = grown;
        if (!next || !reused || !changes || !keep || !removed || !grown)
                return -ENOMEM;

        /* Everything that can fail comes first: the new tunnels, and for each kept one the
         * new spec with its argv and probe. Failing leaves everything as it was. */
        s->ctx.ssh = c->ssh;            /* for the new tunnels' argv; restored on failure */
        for (size_t i = 0; i < n_next && r >= 0; i++) {
                const struct tunnel_spec *spec = &c->tunnels[i];
                struct tunnel *t = supervisor_find(s, spec->name);
                ssize_t j;

                if (!t && (j = index_of_name(s->retiring, s->n_retiring, spec->name)) >= 0)
                        t = s->retiring[j];
                if (!t) {
                        r = new_tunnel(s, spec, &next[i]);
                        continue;
                }
                keep[i] = how_to_keep(t, spec, ssh_changed);
                if (keep[i] != KEEP_UNTOUCHED)
                        r = tunnel_change_new(t, spec, c->ssh, &changes[i]);
        }
        if (r < 0) {
                s->ctx.ssh = old ? old->ssh : NULL;
                for (size_t i = 0; i < n_next; i++) {
                        free_tunnel(next[i]);
                        tunnel_change_free(changes[i]);
                }
                return r;
        }

        /* Point of no return. */
        s->ctx.stop_timeout = c->stop_timeout;
        s->dequeue_due = true;
        for (size_t i = 0; i < n_next; i++) {
                const char *name = c->tunnels[i].name;
                ssize_t j;

                if (next[i])
                        continue;
                j = index_of_name(s->tunnels, s->n_tunnels, name);
                if (j >= 0) {
                        next[i] = reused[i] = s->tunnels[j];
                        s->tunnels[j] = NULL;
                        continue;
                }
                /* Removed by an earlier reload and still stopping: take it back. */
                j = index_of_name(s->retiring, s->n_retiring, name);
                next[i] = reused[i] = s->retiring[j];
                remove_at(s->retiring, &s->n_retiring, (size_t)j);
                tunnel_cancel_start(reused[i]);
        }
        for (size_t i = 0; i < s->n_tunnels; i++)
                if (s->tunnels[i]) {
                        removed[n_removed++] = s->tunnels[i];
                        s->retiring[s->n_retiring++] = s->tunnels[i];
                }
        free(s->tunnels);
        s->tunnels = next;
        s->n_tunnels = n_next;
        next = NULL;
        s->config = c;
        publisher_news(s->publisher);

        if (ssh_changed)
                log_notice("ssh program changed from %s to %s: every tunnel restarts", old->ssh, c->ssh);

        for (size_t i = 0; i < n_removed; i++) {
                log_tunnel(LOG_NOTICE, tunnel_get_name(removed[i]), "removed from the configuration");
                if (tunnel_get_state(removed[i]) == TUNNEL_STOPPED && !tunnel_wants_start(removed[i])) {
                        /* stopped already (disabled, or by an operator): no event will free it */
                        ssize_t j = index_of(s->retiring, s->n_retiring, removed[i]);
                        remove_at(s->retiring, &s->n_retiring, (size_t)j);
                        free_tunnel(removed[i]);
                        continue;
                }
                tunnel_stop(removed[i], "removed from the configuration");  /* may free it */
        }
        for (size_t i = 0; i < s->n_tunnels; i++) {
                struct tunnel *t = s->tunnels[i];
                const struct tunnel_spec *spec = &c->tunnels[i];

                if (!reused[i]) {
                        if (old)
                                log_tunnel(LOG_NOTICE, spec->name, "added to the configuration");
                        if (spec->enabled)
                                tunnel_start(t);
                        continue;
                }
                switch (keep[i]) {
                case KEEP_UNTOUCHED:
                        break;
                case KEEP_POLICY:
                        tunnel_update_policy(t, changes[i]);
                        break;
                case KEEP_RESTART:
                        tunnel_reconfigure(t, changes[i]);
                        break;
                }
                changes[i] = NULL;
        }
        config_free((struct config *)old);
        if (c->watch_network && !s->netwatch)
                (void)netwatch_new(s->loop, on_network_changed, s, &s->netwatch);
        else if (!c->watch_network)
                s->netwatch = netwatch_free(s->netwatch);
        return 0;
}

/* Globals read once at start: say so rather than ignore a change silently. */
static void report_fixed_globals(const struct config *old, const struct config *c)
{
        if (strcmp_null(old->control_socket, c->control_socket) != 0)
                log_warning("control_socket changed to %s: takes effect when tunneld restarts",
                            c->control_socket ? c->control_socket : "none");
        if (strcmp_null(old->control_group, c->control_group) != 0)
                log_warning("control_group changed to %s: takes effect when tunneld restarts",
                            c->control_group ? c->control_group : "(none)");
        if (old->control_world_readable != c->control_world_readable)
                log_warning("control_world_readable changed to %s: takes effect when tunneld restarts",
                            c->control_world_readable ? "true" : "false");
        if (old->ready != c->ready || old->ready_timeout != c->ready_timeout)
                log_warning("ready/ready_timeout changed: they only matter at start, and take effect when tunneld restarts");
}

int supervisor_reload(struct supervisor *s, struct config_errors *ret_errs)
{
        struct config_errors errs = {0};
        struct config *c = NULL;
        _cleanup_free_ char *error = NULL;
        size_t before = 0, after = 0, changed = 0;
        int r;

        notify_reloading();
        log_notice("reloading %s", s->config->path);
        r = config_load(s->config->path, &s->config->load_options, &c, &errs);
        if (r < 0) {
                for (size_t i = 0; i < errs.n; i++)
                        log_error("%s", errs.lines[i]);
                log_error("reload rejected: %zu error%s in %s; the running tunnels are unchanged",
                          errs.n, errs.n == 1 ? "" : "s", s->config->path);
                if (asprintf(&error, "reload failed (%zu error%s, see the journal), running the previous configuration",
                             errs.n, errs.n == 1 ? "" : "s") < 0)
                        error = NULL;
                if (ret_errs) {
                        config_errors_clear(ret_errs);
                        *ret_errs = errs;
                } else
                        config_errors_clear(&errs);
                goto ready;
        }
        report_fixed_globals(s->config, c);

        before = s->n_tunnels;
        for (size_t i = 0; i < c->n_tunnels; i++) {
                struct tunnel *t = supervisor_find(s, c->tunnels[i].name);
                if (t && !tunnel_spec_equal(tunnel_get_spec(t), &c->tunnels[i]))
                        changed++;
        }
        {
                enum log_target target = c->log_target, old_target = s->config->log_target;
                int level = c->log_level;

                r = supervisor_apply(s, c);     /* takes c */
                if (r < 0) {
                        log_error_errno(r, "reload failed: %m; the running tunnels are unchanged");
                        config_free(c);
                        error = strdup("reload failed (out of memory), running the previous configuration");
                        goto ready;
                }
                if (target != old_target)
                        log_open(target);
                log_set_max_level(level);
        }
        after = s->n_tunnels;
        log_notice("reload done: %zu tunnel%s (was %zu), %zu changed", after, after == 1 ? "" : "s", before, changed);

ready:
        publisher_reloaded(s->publisher, error);
        return r;
}

void supervisor_shutdown(struct supervisor *s)
{
        if (s->shutting_down)
                return;
        s->shutting_down = true;
        /* Reverse configuration order, a tunnel only once none that is after it runs (each
         * step bounded by stop_timeout, so at most stop_timeout per level of after-chain).
         * Queued and backoff ones simply stop; none starts again. Observers never free
         * active tunnels, and removed ones are stopping already. */
        for (size_t i = s->n_tunnels; i > 0; i--) {
                struct tunnel *t = s->tunnels[i - 1];
                tunnel_cancel_start(t);
                if (!tunnel_has_child(t))
                        tunnel_stop(t, "tunneld is stopping");
        }
}

bool supervisor_is_shutting_down(const struct supervisor *s)
{
        return s->shutting_down;
}

void supervisor_restart_all(struct supervisor *s, const char *reason)
{
        for (size_t i = 0; i < s->n_tunnels; i++) {
                struct tunnel *t = s->tunnels[i];

                enum tunnel_state st = tunnel_get_state(t);

                if (st == TUNNEL_STARTING || st == TUNNEL_UP)
                        tunnel_restart(t, reason);
                else if (st == TUNNEL_BACKOFF)
                        tunnel_retry_now(t, reason);
        }
}

void supervisor_set_event_sink(struct supervisor *s, tunnel_observer_t sink, void *userdata)
{
        s->sink = sink;
        s->sink_data = userdata;
}

const struct config *supervisor_config(const struct supervisor *s) { return s->config; }
double supervisor_started_at(const struct supervisor *s) { return s->started_at; }
size_t supervisor_count(const struct supervisor *s) { return s->n_tunnels; }
struct tunnel *supervisor_get(const struct supervisor *s, size_t i) { return i < s->n_tunnels ? s->tunnels[i] : NULL; }

struct tunnel *const *supervisor_tunnels(const struct supervisor *s, size_t *ret_n)
{
        *ret_n = s->n_tunnels;
        return s->tunnels;
}

struct tunnel *supervisor_find(const struct supervisor *s, const char *name)
{
        ssize_t i = index_of_name(s->tunnels, s->n_tunnels, name);
        return i >= 0 ? s->tunnels[i] : NULL;
}
