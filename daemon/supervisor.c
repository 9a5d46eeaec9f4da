/* SPDX-License-Identifier: MIT */
/* supervisor: the set of tunnels, their events (start queue, hooks, listeners) and the
 * shutdown order; applying a configuration and reloads are supervisor_apply.c's. */
#include "supervisor_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "notify.h"

static struct member *member_of(const struct tunnel *t)
{
        return tunnel_get_owner(t);
}

int new_tunnel(struct supervisor *s, const struct tunnel_spec *spec, struct tunnel **ret)
{
        struct member *m = calloc(1, sizeof(*m));
        int r;

        if (!m)
                return -ENOMEM;
        r = tunnel_new(&s->ctx, spec, m, ret);
        if (r < 0) {
                free(m);
                return r;
        }
        m->start.tunnel = *ret;
        return 0;
}

void free_tunnel(struct tunnel *t)
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
        return share_any_child(s);
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
        if (s->carriers_dirty)
                share_collect(s);
        if (!any_child(s)) {
                for (size_t i = 0; i < s->n_listeners; i++)
                        if (s->listeners[i].stopped)
                                s->listeners[i].stopped(s->listeners[i].userdata);
                ev_break(s->loop, EVBREAK_ALL);
        }
}

ssize_t index_of(struct tunnel *const *v, size_t n, const struct tunnel *t)
{
        for (size_t i = 0; i < n; i++)
                if (v[i] == t)
                        return (ssize_t)i;
        return -1;
}

ssize_t index_of_name(struct tunnel *const *v, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (v[i] && strcmp(tunnel_get_name(v[i]), name) == 0)
                        return (ssize_t)i;
        return -1;
}

void remove_at(struct tunnel **v, size_t *n, size_t i)
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

static const char *waiting_for(const struct tunnel *t, void *userdata)
{
        return supervisor_waiting_for(userdata, t);
}

/* May t spawn ssh now? */
static const char *gate(struct tunnel *t, void *userdata)
{
        struct supervisor *s = userdata;

        if (s->shutting_down)
                return "tunneld is stopping";
        return start_queue_gate(&s->starts, t);
}

void on_network_changed(void *userdata)
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
        share_shutdown(s);
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

        start_queue_note(&s->starts, &member_of(t)->start, ev, old);
        if (ev == TUNNEL_EVENT_CONNECTING)
                return;
        for (size_t i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].event)
                        s->listeners[i].event(t, ev, old, s->listeners[i].userdata);
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
        start_queue_run(&s->starts);
        if (s->carriers_dirty)
                share_collect(s);
        for (size_t i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].idle)
                        s->listeners[i].idle(s->listeners[i].userdata);
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
        s->share_ctx = (struct tunnel_context){
                .loop = loop,
                .runtime_dir = s->runtime_dir,
                .observer = share_on_event,
                .userdata = s,
        };
        s->started_at = now_mono();
        start_queue_init(&s->starts, waiting_for, s);
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
        *ret = s;
        return 0;
}

struct supervisor *supervisor_free(struct supervisor *s)
{
        if (!s)
                return NULL;
        share_free(s);          /* first: the riders then have no connection to leave */
        for (size_t i = 0; i < s->n_tunnels; i++)
                free_tunnel(s->tunnels[i]);
        for (size_t i = 0; i < s->n_retiring; i++)
                free_tunnel(s->retiring[i]);
        free(s->tunnels);
        free(s->retiring);
        ev_ref(s->loop);
        ev_prepare_stop(s->loop, &s->flush);
        free(s->reload_error);
        reload_job_free(s->reload_job);
        config_errors_clear(&s->reload_errs);
        netwatch_free(s->netwatch);
        config_free(s->config);
        free(s->runtime_dir);
        free(s);
        return NULL;
}

void supervisor_shutdown(struct supervisor *s)
{
        if (s->shutting_down)
                return;
        s->shutting_down = true;
        s->reload_job = reload_job_free(s->reload_job);        /* a reload in flight is dropped */
        s->reload_again = false;
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

bool supervisor_is_loading(const struct supervisor *s)
{
        return s->loaded != NULL;
}

void restart_or_retry(struct tunnel *t, const char *reason)
{
        enum tunnel_state st = tunnel_get_state(t);

        if (st == TUNNEL_STARTING || st == TUNNEL_UP)
                tunnel_restart(t, reason);
        else if (st == TUNNEL_BACKOFF)
                tunnel_retry_now(t, reason);
}

void supervisor_restart_all(struct supervisor *s, const char *reason)
{
        share_restart_all(s, reason);
        for (size_t i = 0; i < s->n_tunnels; i++)
                /* a tunnel riding a shared connection restarted with it, above */
                if (!tunnel_get_carrier(s->tunnels[i]) || tunnel_has_child(s->tunnels[i]))
                        restart_or_retry(s->tunnels[i], reason);
}

int supervisor_add_listener(struct supervisor *s, const struct supervisor_listener *l)
{
        if (s->n_listeners == SUPERVISOR_LISTENERS_MAX)
                return -ENOSPC;
        s->listeners[s->n_listeners++] = *l;
        return 0;
}

const char *supervisor_reload_error(const struct supervisor *s)
{
        return s->reload_error;
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
