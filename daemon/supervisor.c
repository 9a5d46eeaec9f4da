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
#include "reload_job.h"
#include "start_queue.h"

/* What the supervisor keeps for each of its tunnels (the tunnel's owner). */
struct member {
        struct hook *hook;              /* on_state_change, made on its first event */
        struct start_entry start;       /* its place in the start queue */
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
        struct start_queue starts;      /* who may spawn ssh now */
        double started_at;
        ev_prepare flush;               /* once per loop iteration: dequeue, publish */
        struct supervisor_listener listeners[SUPERVISOR_LISTENERS_MAX];
        size_t n_listeners;
        char *reload_error;             /* the last reload's, until one is applied */
        struct reload_job *reload_job;  /* loading in a child process */
        bool reload_again;              /* asked for while one was loading */
        unsigned long reload_started, reload_done;      /* reloads counted, begun and finished */
        int reload_r;                   /* the last finished one: 0 or -errno */
        struct config_errors reload_errs;       /* …and its errors */
        struct netwatch *netwatch;
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
        if (r < 0) {
                free(m);
                return r;
        }
        m->start.tunnel = *ret;
        return 0;
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
                for (size_t i = 0; i < s->n_listeners; i++)
                        if (s->listeners[i].stopped)
                                s->listeners[i].stopped(s->listeners[i].userdata);
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

/* How a reload treats a tunnel it keeps. */
enum keep {
        KEEP_UNTOUCHED,                 /* same spec: same pid, same counters */
        KEEP_POLICY,                    /* same ssh command line: settings applied in place */
        KEEP_FORWARDS,                  /* multiplex, same connection: forwards changed on the running ssh */
        KEEP_RESTART,                   /* a new command line (or taken back while stopping) */
};

static enum keep how_to_keep(const struct tunnel *t, const struct tunnel_spec *spec, bool ssh_changed)
{
        if (!ssh_changed && !tunnel_spec_same_command(tunnel_get_spec(t), spec) &&
            tunnel_forwards_change_in_place(t, spec))
                return KEEP_FORWARDS;
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

/* A reload's plan: for each tunnel of the new configuration, in its order, either a new
 * tunnel, or the running one it keeps with how (and the change, made in advance). */
struct plan {
        size_t n;
        struct tunnel **next;           /* the new set */
        struct tunnel **reused;         /* next[i] if it was running before, else NULL */
        struct tunnel_change **changes;
        enum keep *keep;
        struct tunnel **removed;        /* running before, not in the new configuration */
        size_t n_removed;
        bool ssh_changed;
};

static void plan_free(struct plan *p)
{
        free(p->next);
        free(p->reused);
        free(p->changes);
        free(p->keep);
        free(p->removed);
}

static int plan_alloc(struct supervisor *s, const struct config *c, struct plan *p)
{
        struct tunnel **grown = realloc(s->retiring, (s->n_retiring + s->n_tunnels + 1) * sizeof(struct tunnel *));

        if (grown)
                s->retiring = grown;    /* room for every tunnel to retire */
        *p = (struct plan){
                .n = c->n_tunnels,
                .next = calloc(c->n_tunnels + 1, sizeof(struct tunnel *)),
                .reused = calloc(c->n_tunnels + 1, sizeof(struct tunnel *)),
                .changes = calloc(c->n_tunnels + 1, sizeof(struct tunnel_change *)),
                .keep = calloc(c->n_tunnels + 1, sizeof(enum keep)),
                .removed = calloc(s->n_tunnels + 1, sizeof(struct tunnel *)),
                .ssh_changed = s->config && strcmp(s->config->ssh, c->ssh) != 0,
        };
        if (!grown || !p->next || !p->reused || !p->changes || !p->keep || !p->removed) {
                plan_free(p);
                return -ENOMEM;
        }
        return 0;
}

/* Everything that can fail: the new tunnels, and for each kept one the new spec with its
 * argv and probe. Failing leaves everything as it was. */
static int plan_prepare(struct supervisor *s, const struct config *c, struct plan *p)
{
        int r = 0;

        for (size_t i = 0; i < p->n && r >= 0; i++) {
                const struct tunnel_spec *spec = &c->tunnels[i];
                struct tunnel *t = supervisor_find(s, spec->name);
                ssize_t j;

                if (!t && (j = index_of_name(s->retiring, s->n_retiring, spec->name)) >= 0)
                        t = s->retiring[j];
                if (!t) {
                        r = new_tunnel(s, spec, &p->next[i]);
                        continue;
                }
                p->keep[i] = how_to_keep(t, spec, p->ssh_changed);
                if (p->keep[i] != KEEP_UNTOUCHED)
                        r = tunnel_change_new(t, spec, c->ssh, &p->changes[i]);
        }
        if (r < 0)
                for (size_t i = 0; i < p->n; i++) {
                        free_tunnel(p->next[i]);
                        tunnel_change_free(p->changes[i]);
                }
        return r;
}

/* Past the point of no return: the new set in configuration order, kept tunnels moved
 * over (one removed by an earlier reload and still stopping is taken back), the rest
 * retiring. */
static void plan_swap_in(struct supervisor *s, const struct config *c, struct plan *p)
{
        for (size_t i = 0; i < p->n; i++) {
                const char *name = c->tunnels[i].name;
                ssize_t j;

                if (p->next[i])
                        continue;
                j = index_of_name(s->tunnels, s->n_tunnels, name);
                if (j >= 0) {
                        p->next[i] = p->reused[i] = s->tunnels[j];
                        s->tunnels[j] = NULL;
                        continue;
                }
                j = index_of_name(s->retiring, s->n_retiring, name);
                p->next[i] = p->reused[i] = s->retiring[j];
                remove_at(s->retiring, &s->n_retiring, (size_t)j);
                tunnel_cancel_start(p->reused[i]);
        }
        for (size_t i = 0; i < s->n_tunnels; i++)
                if (s->tunnels[i]) {
                        p->removed[p->n_removed++] = s->tunnels[i];
                        s->retiring[s->n_retiring++] = s->tunnels[i];
                }
        free(s->tunnels);
        s->tunnels = p->next;
        s->n_tunnels = p->n;
        p->next = NULL;
}

/* Removed tunnels stop; their last event frees them (one stopped already has none to come). */
static void retire_removed(struct supervisor *s, const struct plan *p)
{
        for (size_t i = 0; i < p->n_removed; i++) {
                struct tunnel *t = p->removed[i];

                log_tunnel(LOG_NOTICE, tunnel_get_name(t), "removed from the configuration");
                if (tunnel_get_state(t) == TUNNEL_STOPPED && !tunnel_wants_start(t)) {
                        ssize_t j = index_of(s->retiring, s->n_retiring, t);
                        remove_at(s->retiring, &s->n_retiring, (size_t)j);
                        free_tunnel(t);
                        continue;
                }
                tunnel_stop(t, "removed from the configuration");  /* may free it */
        }
}

/* New tunnels start; kept ones take their change, made in advance (cannot fail). */
static void carry_out(struct supervisor *s, const struct config *c, bool reloading, struct plan *p)
{
        for (size_t i = 0; i < s->n_tunnels; i++) {
                struct tunnel *t = s->tunnels[i];
                const struct tunnel_spec *spec = &c->tunnels[i];

                if (!p->reused[i]) {
                        if (reloading)
                                log_tunnel(LOG_NOTICE, spec->name, "added to the configuration");
                        if (spec->enabled)
                                tunnel_start(t);
                        continue;
                }
                switch (p->keep[i]) {
                case KEEP_UNTOUCHED:
                        break;
                case KEEP_POLICY:
                        tunnel_update_policy(t, p->changes[i]);
                        break;
                case KEEP_FORWARDS:
                        tunnel_update_forwards(t, p->changes[i]);
                        break;
                case KEEP_RESTART:
                        tunnel_reconfigure(t, p->changes[i]);
                        break;
                }
                p->changes[i] = NULL;
        }
}

int supervisor_apply(struct supervisor *s, struct config *c)
{
        const struct config *old = s->config;
        struct plan p;
        int r;

        r = plan_alloc(s, c, &p);
        if (r < 0)
                return r;
        s->ctx.ssh = c->ssh;            /* for the new tunnels' argv; restored on failure */
        r = plan_prepare(s, c, &p);
        if (r < 0) {
                s->ctx.ssh = old ? old->ssh : NULL;
                plan_free(&p);
                return r;
        }
        /* Point of no return. */
        s->ctx.stop_timeout = c->stop_timeout;
        s->starts.max = c->max_parallel_starts;
        start_queue_kick(&s->starts);
        plan_swap_in(s, c, &p);
        s->config = c;
        if (p.ssh_changed)
                log_notice("ssh program changed from %s to %s: every tunnel restarts", old->ssh, c->ssh);
        retire_removed(s, &p);
        carry_out(s, c, old != NULL, &p);
        plan_free(&p);
        config_free((struct config *)old);
        if (c->watch_network && !s->netwatch)
                (void)netwatch_new(s->loop, on_network_changed, s, &s->netwatch);
        else if (!c->watch_network)
                s->netwatch = netwatch_free(s->netwatch);
        return 0;
}

/* The loaded configuration (or its errors), applied: the end of one reload. */
static void reload_finish(struct supervisor *s, int r, struct config *c, struct config_errors *errs)
{
        _cleanup_free_ char *error = NULL;
        size_t before = s->n_tunnels, changed = 0;

        config_errors_clear(&s->reload_errs);
        if (r < 0) {
                for (size_t i = 0; i < errs->n; i++)
                        log_error("%s", errs->lines[i]);
                log_error("reload rejected: %zu error%s in %s; the running tunnels are unchanged",
                          errs->n, errs->n == 1 ? "" : "s", s->config->path);
                if (asprintf(&error, "reload failed (%zu error%s, see the journal), running the previous configuration",
                             errs->n, errs->n == 1 ? "" : "s") < 0)
                        error = NULL;
                s->reload_errs = *errs;
                *errs = (struct config_errors){ 0 };
                goto done;
        }
        config_errors_clear(errs);
        config_warn_fixed_globals(s->config, c);
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
                        goto done;
                }
                if (target != old_target)
                        log_open(target);
                log_set_max_level(level);
        }
        log_notice("reload done: %zu tunnel%s (was %zu), %zu changed", s->n_tunnels, s->n_tunnels == 1 ? "" : "s",
                   before, changed);
done:
        s->reload_r = r;
        s->reload_done = s->reload_started;
        free(s->reload_error);
        s->reload_error = error;
        error = NULL;
        for (size_t i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].reloaded)
                        s->listeners[i].reloaded(s->reload_error, s->listeners[i].userdata);
}

static void on_reload_loaded(int r, struct config *c, struct config_errors *errs, void *userdata)
{
        struct supervisor *s = userdata;

        s->reload_job = reload_job_free(s->reload_job);
        if (r == -EAGAIN && !s->shutting_down) {
                /* the file changed under the reload: read it again, this reload's answer waits */
                log_notice("reload: %s changed while it was being loaded: loading it again", s->config->path);
                config_errors_clear(errs);
                s->reload_again = false;
                s->reload_started--;
                (void)supervisor_reload(s);
                return;
        }
        reload_finish(s, r, c, errs);
        config_errors_clear(errs);
        if (s->reload_again && !s->shutting_down) {
                s->reload_again = false;
                (void)supervisor_reload(s);
        }
}

unsigned long supervisor_reload(struct supervisor *s)
{
        struct config_errors errs = {0};
        struct config *c = NULL;
        int r;

        if (s->reload_job) {
                /* the file may have changed after the running one read it: one more after it */
                s->reload_again = true;
                return s->reload_started + 1;
        }
        s->reload_started++;
        notify_reloading();
        log_notice("reloading %s", s->config->path);
        r = reload_job_start(s->loop, s->config->path, &s->config->load_options, on_reload_loaded, s,
                             &s->reload_job);
        if (r >= 0)
                return s->reload_started;
        /* no child process (fork failed): load here, the loop waits for ssh -G this once */
        log_warning_errno(r, "reload: cannot load in a child process (%m): loading in tunneld itself");
        r = config_load(s->config->path, &s->config->load_options, &c, &errs);
        reload_finish(s, r, c, &errs);
        config_errors_clear(&errs);
        return s->reload_started;
}

unsigned long supervisor_reload_result(const struct supervisor *s, int *ret_r, const struct config_errors **ret_errs)
{
        if (ret_r)
                *ret_r = s->reload_r;
        if (ret_errs)
                *ret_errs = &s->reload_errs;
        return s->reload_done;
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
