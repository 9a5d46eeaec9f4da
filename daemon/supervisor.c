/* SPDX-License-Identifier: MIT */
#include "supervisor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hook.h"
#include "log.h"
#include "metrics.h"
#include "netwatch.h"
#include "notify.h"

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
        bool status_dirty;              /* something to publish (STATUS, metrics file) */
        bool dequeue_due;               /* a start slot freed, or a tunnel came up */
        ev_timer publish;               /* STATUS and metrics at most every PUBLISH_DELAY */
        size_t in_state[_TUNNEL_STATE_MAX];     /* tunnels (and retiring ones) per state */
        size_t connecting;                      /* tunnels whose ssh holds a start slot */
        double started_at;
        char *reload_error;             /* shown in STATUS until a reload succeeds */
        ev_prepare flush;               /* coalesces STATUS updates: once per loop iteration */
        bool ready_sent;
        ev_timer ready_timer;           /* READY=1 anyway at ready_timeout */
        struct netwatch *netwatch;
        struct tunnel *queue_head, *queue_tail; /* QUEUED tunnels, in the order they queued */
        struct tunnel *dequeuing;       /* the queued tunnel being let through */
        bool metrics_failed;
        ev_timer metrics_retry;         /* metrics_file could not be written: try again */
        tunnel_observer_t sink;         /* the control socket's subscribers */
        void *sink_data;
        double metrics_retry_delay;
        char gate_reason[128];
};

#define PUBLISH_DELAY 0.2               /* seconds: a burst of changes is published once */
#define METRICS_RETRY_MIN 1.0           /* seconds: a failed metrics_file write is retried, */
#define METRICS_RETRY_MAX 60.0          /* doubling up to this */

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
static void write_metrics(struct supervisor *s);

/* At shutdown, once per loop iteration (never from inside a tunnel's callback: stopping
 * one tunnel would stop the next from its observer, a recursion as deep as the tunnel
 * list, which a thousand tunnels run off the stack): stop what may stop now, and end the
 * loop once no ssh is left. */
static void shutdown_progress(struct supervisor *s)
{
        if (any_child(s))
                shutdown_step(s);
        if (!any_child(s)) {
                write_metrics(s);       /* the file must not go on claiming tunnels are up */
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
                if (v[i] && strcmp(v[i]->spec.name, name) == 0)
                        return (ssize_t)i;
        return -1;
}

static void remove_at(struct tunnel **v, size_t *n, size_t i)
{
        memmove(v + i, v + i + 1, (*n - i - 1) * sizeof(struct tunnel *));
        (*n)--;
}

/* after: the first tunnel t waits for that is not up, or NULL. */
static const char *waiting_for(const struct supervisor *s, const struct tunnel *t)
{
        for (char **a = t->spec.after; a && *a; a++) {
                const struct tunnel *d = supervisor_find(s, *a);
                if (d && d->state != TUNNEL_UP)
                        return d->spec.name;
        }
        return NULL;
}

/* The FIFO of QUEUED tunnels, kept by the observer: a tunnel joins at the tail when it
 * queues, so one whose start just failed and comes back from backoff goes behind every
 * tunnel that was already waiting. */
static void queue_append(struct supervisor *s, struct tunnel *t)
{
        if (t->in_queue)
                return;
        t->in_queue = true;
        t->queue_next = NULL;
        t->queue_prev = s->queue_tail;
        if (s->queue_tail)
                s->queue_tail->queue_next = t;
        else
                s->queue_head = t;
        s->queue_tail = t;
}

static void queue_remove(struct supervisor *s, struct tunnel *t)
{
        if (!t->in_queue)
                return;
        if (t->queue_prev)
                t->queue_prev->queue_next = t->queue_next;
        else
                s->queue_head = t->queue_next;
        if (t->queue_next)
                t->queue_next->queue_prev = t->queue_prev;
        else
                s->queue_tail = t->queue_prev;
        t->queue_prev = t->queue_next = NULL;
        t->in_queue = false;
}

/* A queued tunnel that waits for a start slot (not for the tunnels it is after). */
static bool slot_waiters(const struct supervisor *s)
{
        for (const struct tunnel *t = s->queue_head; t; t = t->queue_next)
                if (!waiting_for(s, t))
                        return true;
        return false;
}

/* May t spawn ssh now? Not before the tunnels it is after are up; queued tunnels go
 * first, in the order they queued; at most max_parallel_starts are connecting at once. */
static const char *gate(struct tunnel *t, void *userdata)
{
        struct supervisor *s = userdata;
        int max = s->config->max_parallel_starts;
        const char *dep = waiting_for(s, t);
        size_t starting;

        if (s->shutting_down)
                return "tunneld is stopping";
        if (dep) {
                snprintf(s->gate_reason, sizeof(s->gate_reason), "waiting for %s to be up", dep);
                return s->gate_reason;
        }
        if (max <= 0)
                return NULL;
        starting = s->connecting - t->connecting;      /* a restarting tunnel has its own slot */
        if (starting >= (size_t)max) {
                snprintf(s->gate_reason, sizeof(s->gate_reason), "%zu tunnel%s connecting (max_parallel_starts %d)",
                         starting, starting == 1 ? " is" : "s are", max);
                return s->gate_reason;
        }
        if (s->dequeuing != t && t->state != TUNNEL_QUEUED && slot_waiters(s)) {
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
                next = t->queue_next;   /* a start takes t out of the queue */
                if (waiting_for(s, t))
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

                if (t->state == TUNNEL_STOPPED || t->state == TUNNEL_STOPPING)
                        continue;
                for (size_t j = 0; j < s->n_tunnels && !needed; j++) {
                        const struct tunnel *d = s->tunnels[j];
                        if (d == t || !tunnel_has_child(d))
                                continue;
                        for (char **a = d->spec.after; a && *a; a++)
                                if (strcmp(*a, t->spec.name) == 0) {
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
        struct hook_event ev = {
                .state = state,
                .previous = previous,
                .failure = t->last_run.valid && t->last_run.failure != FAILURE_NONE && strcmp(state, "up") != 0
                                   ? failure_class_to_string(t->last_run.failure) : "",
                .restarts = t->restarts,
        };

        if (!t->spec.on_state_change)
                return;
        if (!t->hook && hook_new(s->loop, t->spec.name, &t->hook) < 0)
                return;
        hook_fire(t->hook, t->spec.on_state_change, s->config->hook_timeout, &ev);
}

static void on_tunnel_event(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata)
{
        struct supervisor *s = userdata;

        s->status_dirty = true;
        if (ev == TUNNEL_EVENT_CONNECTING) {
                if (t->connecting)
                        s->connecting++;
                else {
                        s->connecting--;
                        s->dequeue_due = true;
                }
                return;
        }
        if (ev == TUNNEL_EVENT_STATE && old != t->state) {
                s->in_state[old]--;
                s->in_state[t->state]++;
                if (t->state == TUNNEL_QUEUED)
                        queue_append(s, t);
                else if (old == TUNNEL_QUEUED)
                        queue_remove(s, t);
                if (old == TUNNEL_STARTING || t->state == TUNNEL_UP || t->state == TUNNEL_QUEUED)
                        s->dequeue_due = true;
        }
        if (s->sink)            /* (CONNECTING returned above) */
                s->sink(t, ev, old, s->sink_data);
        if (ev == TUNNEL_EVENT_FLAPPING) {
                run_hook(s, t, "flapping", tunnel_state_to_string(old));
                return;
        }
        if (old != t->state && (t->state == TUNNEL_UP || t->state == TUNNEL_FAILED || t->state == TUNNEL_DEGRADED))
                run_hook(s, t, tunnel_state_to_string(t->state), tunnel_state_to_string(old));
        if (t->state == TUNNEL_STOPPED && !tunnel_wants_start(t)) {
                ssize_t i = index_of(s->retiring, s->n_retiring, t);
                if (i >= 0) {
                        remove_at(s->retiring, &s->n_retiring, (size_t)i);
                        s->in_state[t->state]--;
                        tunnel_free(t);
                }
        }
}

static bool settled(const struct tunnel *t)
{
        return t->state == TUNNEL_UP || t->state == TUNNEL_FAILED || t->state == TUNNEL_BACKOFF ||
               t->state == TUNNEL_STOPPED;
}

/* all-up: every required tunnel is up, or has had its chance and failed a start, or waits
 * for a tunnel it is after that did. */
static bool all_settled(const struct supervisor *s)
{
        for (size_t i = 0; i < s->n_tunnels; i++) {
                const struct tunnel *t = s->tunnels[i];
                const char *dep;

                if (!t->spec.enabled || !t->spec.required || t->held || settled(t))
                        continue;
                if (t->state == TUNNEL_QUEUED && (dep = waiting_for(s, t)) && settled(supervisor_find(s, dep)))
                        continue;
                return false;
        }
        return true;
}

/* started: every enabled tunnel has launched its first ssh, or waits for a tunnel it is
 * after (which has); not while tunnels wait for a max_parallel_starts slot. */
static bool all_launched(const struct supervisor *s)
{
        for (size_t i = 0; i < s->n_tunnels; i++) {
                const struct tunnel *t = s->tunnels[i];

                if (t->spec.enabled && !t->held && t->total_starts == 0 && t->state == TUNNEL_QUEUED &&
                    !waiting_for(s, t))
                        return false;
        }
        return true;
}

static void send_ready(struct supervisor *s)
{
        _cleanup_free_ char *text = NULL;

        s->ready_sent = true;
        s->status_dirty = false;
        ev_timer_stop(s->loop, &s->ready_timer);
        ev_timer_stop(s->loop, &s->publish);
        if (supervisor_status_text(s, &text) >= 0) {
                notify_ready(text);
                if (s->config->ready == READY_ALL_UP)
                        log_notice("ready: %s", text);
        } else
                notify_ready(NULL);
}

static void on_ready_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct supervisor *s = w->data;
        char t[DURATION_MAX];

        (void)loop;
        (void)revents;
        if (s->ready_sent)
                return;
        log_warning("ready_timeout %s passed before every tunnel was %s: reporting ready anyway",
                    format_duration(s->config->ready_timeout, t, sizeof(t)),
                    s->config->ready == READY_ALL_UP ? "up" : "started");
        send_ready(s);
}

static void write_metrics(struct supervisor *s)
{
        _cleanup_free_ char *text = NULL;
        int r;

        if (!s->config->metrics_file)
                return;
        r = metrics_render(s, &text);
        if (r >= 0)
                r = metrics_write_file(s->config->metrics_file, text);
        if (r < 0) {
                /* a full disk, say: try again later, not only on the next change (which may
                 * not come for days), and say it once */
                if (!s->metrics_failed)
                        log_warning_errno(r, "cannot write metrics_file %s: %m; retrying", s->config->metrics_file);
                s->metrics_failed = true;
                s->metrics_retry_delay = s->metrics_retry_delay ? s->metrics_retry_delay * 2 : METRICS_RETRY_MIN;
                if (s->metrics_retry_delay > METRICS_RETRY_MAX)
                        s->metrics_retry_delay = METRICS_RETRY_MAX;
                if (!s->shutting_down) {
                        ev_timer_set(&s->metrics_retry, s->metrics_retry_delay, 0.);
                        ev_timer_start(s->loop, &s->metrics_retry);
                }
                return;
        }
        if (s->metrics_failed)
                log_notice("metrics_file %s written again", s->config->metrics_file);
        s->metrics_failed = false;
        s->metrics_retry_delay = 0;
        ev_timer_stop(s->loop, &s->metrics_retry);
}

static void on_metrics_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
        (void)loop;
        (void)revents;
        write_metrics(w->data);
}

/* STATUS and the metrics file, now; then nothing more for PUBLISH_DELAY, whatever happens
 * meanwhile, and once more at its end if anything did (a burst of a thousand starts is
 * published a few times, a lone change at once). */
static void publish(struct supervisor *s)
{
        _cleanup_free_ char *text = NULL;

        s->status_dirty = false;
        if (supervisor_status_text(s, &text) >= 0)
                notify_status(text);
        write_metrics(s);
        ev_timer_set(&s->publish, PUBLISH_DELAY, 0.);
        ev_timer_start(s->loop, &s->publish);
}

static void on_publish(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct supervisor *s = w->data;

        (void)loop;
        (void)revents;
        if (s->status_dirty && !s->shutting_down)
                publish(s);
}

/* Once per loop iteration, before it sleeps, and O(1) unless something is due: let queued
 * tunnels start, send READY when it is time, publish what changed (at most every
 * PUBLISH_DELAY; the timer runs only after news: an idle tunneld has none armed). */
static void on_flush(struct ev_loop *loop, ev_prepare *w, int revents)
{
        struct supervisor *s = w->data;

        (void)revents;
        if (s->shutting_down) {
                shutdown_progress(s);
                return;
        }
        if (s->dequeue_due) {
                s->dequeue_due = false;
                dequeue(s);
        }
        if (!s->status_dirty)
                return;
        if (!s->ready_sent && (s->config->ready == READY_STARTED ? all_launched(s) : all_settled(s))) {
                send_ready(s);
                write_metrics(s);
                return;
        }
        if (!ev_is_active(&s->publish))
                publish(s);
}

/* Append "label: a, b (…), c +N more" for tunnels in state. */
static void status_section(const struct supervisor *s, struct buf *b, enum tunnel_state state, const char *label)
{
        const size_t shown_max = 4;
        size_t shown = 0, more = 0;
        double now = now_mono();

        for (size_t i = 0; i < s->n_tunnels; i++) {
                const struct tunnel *t = s->tunnels[i];

                if (t->state != state)
                        continue;
                if (state == TUNNEL_STOPPED && !t->spec.enabled)
                        continue;       /* disabled on purpose: not news */
                if (shown == shown_max) {
                        more++;
                        continue;
                }
                buf_printf(b, "%s%s", shown ? ", " : label, t->spec.name);
                if (state == TUNNEL_BACKOFF) {
                        /* a time, not a countdown: STATUS is published on changes only, and
                         * "retry in 37 s" would go on being shown after the retry */
                        time_t at = time(NULL) + (time_t)(t->retry_at - now + 0.5);
                        char when[16];
                        struct tm tm;

                        if (!localtime_r(&at, &tm) || !strftime(when, sizeof(when), "%H:%M:%S", &tm))
                                snprintf(when, sizeof(when), "?");
                        buf_printf(b, " (%s%sretry at %s)",
                                   t->last_run.failure != FAILURE_NONE ? failure_class_to_string(t->last_run.failure) : "",
                                   t->last_run.failure != FAILURE_NONE ? ", " : "", when);
                } else if (state == TUNNEL_FAILED && t->last_run.failure != FAILURE_NONE)
                        buf_printf(b, " (%s)", failure_class_to_string(t->last_run.failure));
                else if (state == TUNNEL_QUEUED && t->wait_reason[0])
                        buf_printf(b, " (%s)", t->wait_reason);
                shown++;
        }
        if (more)
                buf_printf(b, " +%zu more", more);
}

int supervisor_status_text(const struct supervisor *s, char **ret)
{
        struct buf b = {0};
        size_t up = 0, enabled = 0;

        for (size_t i = 0; i < s->n_tunnels; i++) {
                enabled += s->tunnels[i]->spec.enabled;
                up += s->tunnels[i]->state == TUNNEL_UP;
        }
        if (s->reload_error)
                buf_printf(&b, "%s; ", s->reload_error);
        buf_printf(&b, "%zu/%zu tunnels up", up, enabled);
        status_section(s, &b, TUNNEL_DEGRADED, "; degraded: ");
        status_section(s, &b, TUNNEL_STARTING, "; starting: ");
        status_section(s, &b, TUNNEL_QUEUED, "; queued: ");
        status_section(s, &b, TUNNEL_BACKOFF, "; backoff: ");
        status_section(s, &b, TUNNEL_FAILED, "; failed: ");
        status_section(s, &b, TUNNEL_STOPPED, "; stopped: ");
        status_section(s, &b, TUNNEL_STOPPING, "; stopping: ");
        return buf_steal(&b, ret);
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
        ev_prepare_init(&s->flush, on_flush);
        s->flush.data = s;
        ev_prepare_start(loop, &s->flush);
        /* The prepare watcher must not keep the loop alive on its own. */
        ev_unref(loop);

        ev_timer_init(&s->ready_timer, on_ready_timeout, 0., 0.);
        ev_timer_init(&s->publish, on_publish, 0., 0.);
        ev_timer_init(&s->metrics_retry, on_metrics_retry, 0., 0.);
        s->ready_timer.data = s->publish.data = s->metrics_retry.data = s;
        r = supervisor_apply(s, config);
        if (r < 0) {
                supervisor_free(s);
                return r;
        }
        /* READY=1 goes out from a loop iteration (after the control socket is up) once every
         * tunnel launched its ssh, or for all-up once every tunnel settled; or at ready_timeout. */
        if (config->ready_timeout > 0) {
                ev_timer_set(&s->ready_timer, config->ready_timeout, 0.);
                ev_timer_start(loop, &s->ready_timer);
        }
        *ret = s;
        return 0;
}

struct supervisor *supervisor_free(struct supervisor *s)
{
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_tunnels; i++)
                tunnel_free(s->tunnels[i]);
        for (size_t i = 0; i < s->n_retiring; i++)
                tunnel_free(s->retiring[i]);
        free(s->tunnels);
        free(s->retiring);
        ev_ref(s->loop);
        ev_prepare_stop(s->loop, &s->flush);
        ev_timer_stop(s->loop, &s->ready_timer);
        ev_timer_stop(s->loop, &s->publish);
        ev_timer_stop(s->loop, &s->metrics_retry);
        netwatch_free(s->netwatch);
        config_free(s->config);
        free(s->reload_error);
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
        if (ssh_changed || !tunnel_spec_same_command(&t->spec, spec) || t->state == TUNNEL_STOPPING)
                return KEEP_RESTART;
        return tunnel_spec_equal(&t->spec, spec) ? KEEP_UNTOUCHED : KEEP_POLICY;
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
                        r = tunnel_new(&s->ctx, spec, &next[i]);
                        continue;
                }
                keep[i] = how_to_keep(t, spec, ssh_changed);
                if (keep[i] != KEEP_UNTOUCHED)
                        r = tunnel_change_new(t, spec, c->ssh, &changes[i]);
        }
        if (r < 0) {
                s->ctx.ssh = old ? old->ssh : NULL;
                for (size_t i = 0; i < n_next; i++) {
                        tunnel_free(next[i]);
                        tunnel_change_free(changes[i]);
                }
                return r;
        }

        /* Point of no return. */
        s->ctx.stop_timeout = c->stop_timeout;
        for (size_t i = 0; i < n_next; i++)
                if (next[i])
                        s->in_state[TUNNEL_STOPPED]++;  /* born stopped */
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
                reused[i]->start_after_stop = false;
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
        s->status_dirty = true;

        if (ssh_changed)
                log_notice("ssh program changed from %s to %s: every tunnel restarts", old->ssh, c->ssh);

        for (size_t i = 0; i < n_removed; i++) {
                log_tunnel(LOG_NOTICE, removed[i]->spec.name, "removed from the configuration");
                if (removed[i]->state == TUNNEL_STOPPED && !tunnel_wants_start(removed[i])) {
                        /* stopped already (disabled, or by an operator): no event will free it */
                        ssize_t j = index_of(s->retiring, s->n_retiring, removed[i]);
                        remove_at(s->retiring, &s->n_retiring, (size_t)j);
                        s->in_state[TUNNEL_STOPPED]--;
                        tunnel_free(removed[i]);
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
                free(s->reload_error);
                if (asprintf(&s->reload_error, "reload failed (%zu error%s, see the journal), running the previous configuration",
                             errs.n, errs.n == 1 ? "" : "s") < 0)
                        s->reload_error = NULL;
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
                if (t && !tunnel_spec_equal(&t->spec, &c->tunnels[i]))
                        changed++;
        }
        {
                enum log_target target = c->log_target, old_target = s->config->log_target;
                int level = c->log_level;

                r = supervisor_apply(s, c);     /* takes c */
                if (r < 0) {
                        log_error_errno(r, "reload failed: %m; the running tunnels are unchanged");
                        config_free(c);
                        goto ready;
                }
                if (target != old_target)
                        log_open(target);
                log_set_max_level(level);
        }
        after = s->n_tunnels;
        free(s->reload_error);
        s->reload_error = NULL;
        log_notice("reload done: %zu tunnel%s (was %zu), %zu changed", after, after == 1 ? "" : "s", before, changed);

ready:
        /* Before the first READY (all-up still waiting) a reload must not claim readiness. */
        if (s->ready_sent)
                send_ready(s);
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
                t->start_after_stop = false;
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

                if (t->state == TUNNEL_STARTING || t->state == TUNNEL_UP)
                        tunnel_restart(t, reason);
                else if (t->state == TUNNEL_BACKOFF)
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

struct tunnel *supervisor_find(const struct supervisor *s, const char *name)
{
        ssize_t i = index_of_name(s->tunnels, s->n_tunnels, name);
        return i >= 0 ? s->tunnels[i] : NULL;
}
