/* SPDX-License-Identifier: MIT */
/* supervisor: the set of tunnels and their connections, their events (start queue,
 * `after`, hooks, listeners) and the shutdown order; applying a configuration and reloads
 * are supervisor_apply.c's, which connection a tunnel rides supervisor_conn.c's. */
#include "supervisor_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "notify.h"
#include "sockwatch.h"
#include "runtime.h"

static struct supervisor_member *member_of(const struct tunnel *t)
{
        return tunnel_get_owner(t);
}

int supervisor_tunnel_new(struct supervisor *s, const struct tunnel_spec *spec, struct tunnel **ret)
{
        struct supervisor_member *m = calloc(1, sizeof(*m));
        int r;

        if (!m)
                return -ENOMEM;
        r = tunnel_new(&s->tunnel_ctx, spec, m, ret);
        if (r < 0)
                free(m);
        return r;
}

void supervisor_tunnel_free(struct tunnel *t)
{
        struct supervisor_member *m;

        if (!t)
                return;
        m = member_of(t);
        tunnel_free(t);
        hook_free(m->hook);
        free(m);
}

ssize_t supervisor_index_of(struct tunnel *const *v, size_t n, const struct tunnel *t)
{
        for (size_t i = 0; i < n; i++)
                if (v[i] == t)
                        return (ssize_t)i;
        return -1;
}

ssize_t supervisor_index_of_name(struct tunnel *const *v, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (v[i] && strcmp(tunnel_get_name(v[i]), name) == 0)
                        return (ssize_t)i;
        return -1;
}

void supervisor_remove_at(struct tunnel **v, size_t *n, size_t i)
{
        memmove(v + i, v + i + 1, (*n - i - 1) * sizeof(struct tunnel *));
        (*n)--;
}

static bool any_child(const struct supervisor *s)
{
        return supervisor_conn_any_child(s);
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

/* May connection c spawn ssh now? */
static const char *gate(struct conn *c, void *userdata)
{
        struct supervisor *s = userdata;
        const char *why;

        if (s->shutting_down)
                return "tunneld is stopping";
        if ((why = supervisor_pacing_gate(s, c)))
                return why;
        return start_queue_gate(&s->starts, c);
}

/* At shutdown, stop every tunnel no running tunnel is after: dependents go first. A
 * connection stops when its last tunnel does. */
static void shutdown_step(struct supervisor *s)
{
        _cleanup_free_ bool *needed = calloc(s->n_tunnels + 1, sizeof(bool));

        /* what a tunnel that still runs is after must wait (linear unless `after` is used) */
        for (size_t j = 0; needed && j < s->n_tunnels; j++) {
                const struct tunnel *d = s->tunnels[j];

                if (tunnel_get_state(d) == TUNNEL_STOPPED)
                        continue;
                for (char **a = tunnel_get_spec(d)->after; a && *a; a++) {
                        ssize_t k = supervisor_index_of_name(s->tunnels, s->n_tunnels, *a);
                        if (k >= 0 && (size_t)k != j)
                                needed[k] = true;
                }
        }
        for (size_t i = s->n_tunnels; i > 0; i--) {
                struct tunnel *t = s->tunnels[i - 1];

                if (tunnel_get_state(t) != TUNNEL_STOPPED && tunnel_get_state(t) != TUNNEL_STOPPING &&
                    (!needed || !needed[i - 1]))
                        tunnel_stop(t, "tunneld is stopping");
        }
        for (size_t i = 0; i < s->n_retiring; i++)
                tunnel_stop(s->retiring[i], "tunneld is stopping");
}

/* At shutdown, once per loop iteration (never from inside a callback: stopping one tunnel
 * would stop the next from its observer, a recursion as deep as the tunnel list): stop
 * what may stop now, and end the loop once no ssh is left. */
static void shutdown_progress(struct supervisor *s)
{
        shutdown_step(s);
        if (s->conns_dirty)
                supervisor_conn_collect(s);
        if (!any_child(s)) {
                for (size_t i = 0; i < s->n_listeners; i++)
                        if (s->listeners[i].stopped)
                                s->listeners[i].stopped(s->listeners[i].userdata);
                ev_break(s->loop, EVBREAK_ALL);
        }
}

static void run_hook(struct supervisor *s, struct tunnel *t, const char *state, const char *previous)
{
        const struct tunnel_spec *spec = tunnel_get_spec(t);
        const struct conn_run *last = tunnel_get_last_run(t);
        enum failure_class forward = tunnel_get_forward_failure(t);
        struct supervisor_member *m = member_of(t);
        struct hook_event ev = {
                .state = state,
                .previous = previous,
                .restarts = tunnel_get_restarts(t),
        };

        /* degraded: why a forward failed; failed, flapping: why the last run ended */
        if (strcmp(state, "degraded") == 0)
                ev.failure = forward != FAILURE_NONE ? failure_class_to_string(forward) : "";
        else
                ev.failure = last->valid && last->failure != FAILURE_NONE && strcmp(state, "up") != 0
                                     ? failure_class_to_string(last->failure) : "";

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

        for (size_t i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].event)
                        s->listeners[i].event(t, ev, old, s->listeners[i].userdata);
        if (ev == TUNNEL_EVENT_SSH || ev == TUNNEL_EVENT_SSH_FAILED)
                return;
        if (ev == TUNNEL_EVENT_FLAPPING) {
                run_hook(s, t, "flapping", tunnel_state_to_string(old));
                return;
        }
        if (old != now && (now == TUNNEL_UP || now == TUNNEL_FAILED || now == TUNNEL_DEGRADED))
                run_hook(s, t, tunnel_state_to_string(now), tunnel_state_to_string(old));
        if (now == TUNNEL_UP || old == TUNNEL_UP)
                s->after_due = true;
        if (now == TUNNEL_STOPPED) {
                ssize_t i = supervisor_index_of(s->retiring, s->n_retiring, t);
                if (i >= 0)
                        s->conns_dirty = true;  /* freed at the next flush, never from inside its own callback */
        }
}

static void on_conn_event(struct conn *c, int event, int old, void *userdata)
{
        struct supervisor *s = userdata;
        struct supervisor_link *l = conn_get_owner(c);

        start_queue_note(&s->starts, &l->start, event, old);
        supervisor_pacing_note(s, c, event, old);
        if (event == CONN_EVENT_STATE && conn_get_state(c) == CONN_STOPPED)
                s->conns_dirty = true;
}

/* Retiring tunnels that have stopped go; so do connections no tunnel rides. */
static void collect(struct supervisor *s)
{
        for (size_t i = s->n_retiring; i > 0; i--) {
                struct tunnel *t = s->retiring[i - 1];

                if (tunnel_get_state(t) == TUNNEL_STOPPED) {
                        supervisor_remove_at(s->retiring, &s->n_retiring, i - 1);
                        supervisor_tunnel_free(t);
                }
        }
        supervisor_conn_collect(s);
}

/* Tunnels waiting for those they are after: through, once those are up. */
static void run_after(struct supervisor *s)
{
        s->after_due = false;
        for (size_t i = 0; i < s->n_tunnels; i++)
                if (tunnel_get_state(s->tunnels[i]) == TUNNEL_QUEUED && tunnel_get_spec(s->tunnels[i])->after)
                        tunnel_recheck_after(s->tunnels[i]);
}

/* Once per loop iteration, before it sleeps, and O(1) unless something is due: let queued
 * tunnels and connections through, then what the publisher has due (READY, STATUS, the
 * metrics file). */
static void on_next_turn(struct ev_loop *loop, ev_idle *w, int revents)
{
        (void)loop;
        (void)w;
        (void)revents;          /* nothing: its being active keeps the loop from blocking */
}

static void on_flush(struct ev_loop *loop, ev_prepare *w, int revents)
{
        struct supervisor *s = w->data;

        (void)loop;
        (void)revents;
        if (s->shutting_down) {
                shutdown_progress(s);
                return;
        }
        if (s->after_due)
                run_after(s);
        supervisor_pacing_flush(s);
        start_queue_run(&s->starts);
        /* more to let through at the next turn: the loop must not wait for an event first */
        if (start_queue_busy(&s->starts))
                ev_idle_start(s->loop, &s->next_turn);
        else
                ev_idle_stop(s->loop, &s->next_turn);
        if (s->conns_dirty)
                collect(s);
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
        if (runtime_dir && ((r = runtime_control_dir_create(runtime_dir, &s->control_dir)) < 0 ||
                            (r = sockwatch_new(loop, s->control_dir, &s->watch)) < 0)) {
                if (r != -ENOMEM && s->control_dir)
                        log_error_errno(r, "cannot watch %s for ssh's control sockets: %m", s->control_dir);
                runtime_control_dir_remove(s->control_dir, s->runtime_dir);
                free(s->control_dir);
                free(s->runtime_dir);
                free(s);
                return r;
        }
        s->tunnel_ctx = (struct tunnel_context){
                .loop = loop,
                .observer = on_tunnel_event,
                .waiting_for = waiting_for,
                .userdata = s,
        };
        s->conn_ctx = (struct conn_context){
                .loop = loop,
                .runtime_dir = s->runtime_dir,
                .control_dir = s->control_dir,
                .watch = s->watch,
                .observer = on_conn_event,
                .gate = gate,
                .run_ended = supervisor_pacing_run_ended,
                .quiet_wait = start_queue_turn_reason,
                .userdata = s,
        };
        s->started_at = now_mono();
        start_queue_init(&s->starts);
        /* without it (no memory) no connection is paced */
        (void)supervisor_pacing_new(s, &s->pacing);
        ev_prepare_init(&s->flush, on_flush);
        s->flush.data = s;
        ev_prepare_start(loop, &s->flush);
        ev_idle_init(&s->next_turn, on_next_turn);
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
        for (size_t i = 0; i < s->n_tunnels; i++)
                supervisor_tunnel_free(s->tunnels[i]);
        for (size_t i = 0; i < s->n_retiring; i++)
                supervisor_tunnel_free(s->retiring[i]);
        supervisor_conn_free_all(s);
        s->pacing = supervisor_pacing_free(s->pacing);
        free(s->tunnels);
        free(s->retiring);
        ev_ref(s->loop);
        ev_prepare_stop(s->loop, &s->flush);
        ev_idle_stop(s->loop, &s->next_turn);
        free(s->load.error);
        reload_job_free(s->load.job);
        config_errors_clear(&s->load.errs);
        supervisor_net_free(s);
        config_free(s->config);
        sockwatch_free(s->watch);
        runtime_control_dir_remove(s->control_dir, s->runtime_dir);
        free(s->control_dir);
        free(s->runtime_dir);
        free(s);
        return NULL;
}

void supervisor_shutdown(struct supervisor *s)
{
        if (s->shutting_down)
                return;
        s->shutting_down = true;
        s->load.job = reload_job_free(s->load.job);        /* a reload in flight is dropped */
        s->load.again = false;
        /* Reverse configuration order, a tunnel only once none that is after it runs (each
         * step bounded by stop_timeout, so at most stop_timeout per level of after-chain).
         * Nothing starts again: a restart waiting for an exit is off. The steps run from
         * the loop's prepare watcher. */
        for (size_t i = 0; i < s->n_conns; i++)
                conn_cancel_start(s->conns[i]);
}

bool supervisor_is_shutting_down(const struct supervisor *s)
{
        return s->shutting_down;
}

bool supervisor_is_loading(const struct supervisor *s)
{
        return s->load.loaded != NULL;
}

/* SIGUSR1: every connection restarts once (make-before-break where it is up); one in
 * backoff retries now. */
void supervisor_restart_all(struct supervisor *s, const char *reason)
{
        for (size_t i = 0; i < s->n_conns; i++) {
                struct conn *c = s->conns[i];
                enum conn_state st = conn_get_state(c);

                if (conn_count_attached(c) == 0)
                        continue;
                if (st == CONN_STARTING || st == CONN_UP)
                        conn_restart(c, reason);
                else if (st == CONN_BACKOFF)
                        conn_retry_now(c, reason);
        }
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
        return s->load.error;
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
        ssize_t i = supervisor_index_of_name(s->tunnels, s->n_tunnels, name);
        return i >= 0 ? s->tunnels[i] : NULL;
}
