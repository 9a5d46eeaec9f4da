/* SPDX-License-Identifier: MIT */
/* supervisor_apply: a configuration applied to the running set as a plan (everything
 * that can fail first, then swap in, retire, carry out), and reloads (loaded off the loop
 * by reload_job.c, then applied). */
#include "supervisor_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "notify.h"

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

/* The running tunnels sorted by name, made once per apply: each of 10,000 names is found
 * by bisection, not by a scan of the set (which made a reload of 10,000 tunnels spend a
 * second comparing names). */
struct named {
        struct tunnel *t;
        size_t at;                      /* its index in s->tunnels */
};
struct by_name {
        struct named *v;
        size_t n;
};

static int compare_named(const void *x, const void *y)
{
        return strcmp(tunnel_get_name(((const struct named *)x)->t), tunnel_get_name(((const struct named *)y)->t));
}

static int by_name_new(const struct supervisor *s, struct by_name *ret)
{
        ret->n = s->n_tunnels;
        ret->v = calloc(ret->n + 1, sizeof(*ret->v));
        if (!ret->v)
                return -ENOMEM;
        for (size_t i = 0; i < ret->n; i++)
                ret->v[i] = (struct named){ s->tunnels[i], i };
        qsort(ret->v, ret->n, sizeof(*ret->v), compare_named);
        return 0;
}

static const struct named *by_name_find(const struct by_name *b, const char *name)
{
        size_t lo = 0, hi = b->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int r = strcmp(name, tunnel_get_name(b->v[mid].t));

                if (r == 0)
                        return &b->v[mid];
                if (r < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return NULL;
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
        struct by_name running;         /* the set before, by name */
};

static void plan_free(struct plan *p)
{
        free(p->next);
        free(p->reused);
        free(p->changes);
        free(p->keep);
        free(p->removed);
        free(p->running.v);
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
        if (!grown || !p->next || !p->reused || !p->changes || !p->keep || !p->removed ||
            by_name_new(s, &p->running) < 0) {
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
                const struct named *found = by_name_find(&p->running, spec->name);
                struct tunnel *t = found ? found->t : NULL;
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
                const struct named *found;
                ssize_t j;

                if (p->next[i])
                        continue;
                found = by_name_find(&p->running, name);
                if (found && s->tunnels[found->at]) {
                        p->next[i] = p->reused[i] = s->tunnels[found->at];
                        s->tunnels[found->at] = NULL;
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
                share_update_context(s);
                plan_free(&p);
                return r;
        }
        /* Point of no return. */
        s->ctx.stop_timeout = c->stop_timeout;
        share_update_context(s);
        s->starts.max = c->max_parallel_starts;
        start_queue_kick(&s->starts);
        plan_swap_in(s, c, &p);
        s->config = c;
        share_assign(s, c, p.ssh_changed);
        if (p.ssh_changed)
                log_notice("ssh program changed from %s to %s: every tunnel restarts", old->ssh, c->ssh);
        retire_removed(s, &p);
        carry_out(s, c, old != NULL && !s->loaded, &p);        /* the first load's tunnels are not "added" */
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
        struct by_name running = {0};

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
        if (by_name_new(s, &running) >= 0)
                for (size_t i = 0; i < c->n_tunnels; i++) {
                        const struct named *t = by_name_find(&running, c->tunnels[i].name);
                        if (t && !tunnel_spec_equal(tunnel_get_spec(t->t), &c->tunnels[i]))
                                changed++;
                }
        free(running.v);
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

/* supervisor_new_loading's load is done: its tunnels start, or nothing does. */
static void first_load_finish(struct supervisor *s, int r, struct config *c, struct config_errors *errs)
{
        supervisor_loaded_t loaded = s->loaded;
        double took = now_mono() - s->started_at;

        free(s->reload_error);
        s->reload_error = NULL;
        if (r < 0) {
                for (size_t i = 0; i < errs->n; i++)
                        log_error("%s", errs->lines[i]);
                log_error("tunneld: %s: %zu error%s, not starting", s->config->path, errs->n, errs->n == 1 ? "" : "s");
                s->reload_error = strdup("the configuration did not load (see the journal)");
                s->loaded = NULL;
                loaded(s, r, s->loaded_userdata);
                return;
        }
        config_warn_fixed_globals(s->config, c);
        if (c->log_target != s->config->log_target)
                log_open(c->log_target);
        log_set_max_level(c->log_level);
        log_notice("configuration loaded: %zu tunnel%s (ssh -G and checks took %.1f s); starting them", c->n_tunnels,
                   c->n_tunnels == 1 ? "" : "s", took);
        s->started_at = now_mono();     /* tunneld's uptime: since its set runs, as the tunnels' own time */
        r = supervisor_apply(s, c);     /* takes c */
        s->loaded = NULL;
        if (r < 0) {
                log_error_errno(r, "cannot start the tunnels: %m");
                config_free(c);
        }
        loaded(s, r, s->loaded_userdata);
}

/* What a load ended with, for the load under way: the first one, or a reload. */
static void load_finish(struct supervisor *s, int r, struct config *c, struct config_errors *errs)
{
        if (s->loaded)
                first_load_finish(s, r, c, errs);
        else
                reload_finish(s, r, c, errs);
}

static void load(struct supervisor *s);

static void on_reload_loaded(int r, struct config *c, struct config_errors *errs, void *userdata)
{
        struct supervisor *s = userdata;

        s->reload_job = reload_job_free(s->reload_job);
        if (r == -EAGAIN && !s->shutting_down) {
                /* the file changed under the load: read it again, this reload's answer waits */
                log_notice("%s%s changed while it was being loaded: loading it again", s->loaded ? "" : "reload: ",
                           s->config->path);
                config_errors_clear(errs);
                if (!s->loaded)
                        s->reload_again = false;        /* this load reads the newest file anyway */
                load(s);
                return;
        }
        load_finish(s, r, c, errs);
        config_errors_clear(errs);
        if (s->reload_again && !s->shutting_down) {
                s->reload_again = false;
                (void)supervisor_reload(s);
        }
}

/* Load the file for the reload under way: in a child, or (fork failed) here. */
static void load(struct supervisor *s)
{
        struct config_errors errs = {0};
        struct config *c = NULL;
        int r = reload_job_start(s->loop, s->config->path, &s->config->load_options, on_reload_loaded, s,
                                 &s->reload_job);

        if (r >= 0)
                return;
        /* no child process: load here, the loop waits for ssh -G this once */
        log_warning_errno(r, "reload: cannot load in a child process (%m): loading in tunneld itself");
        r = config_load(s->config->path, &s->config->load_options, &c, &errs);
        load_finish(s, r, c, &errs);
        config_errors_clear(&errs);
}

int supervisor_new_loading(struct ev_loop *loop, struct config *config, const char *runtime_dir,
                           supervisor_loaded_t loaded, void *userdata, struct supervisor **ret)
{
        size_t n = config->n_tunnels;
        struct supervisor *s;
        int r;

        /* read without ssh -G: their ssh view is missing, the load's tunnels replace them */
        for (size_t i = 0; i < n; i++)
                tunnel_spec_done(&config->tunnels[i]);
        config->n_tunnels = 0;
        r = supervisor_new(loop, config, runtime_dir, &s);
        if (r < 0)
                return r;
        if (asprintf(&s->reload_error, "loading the configuration (%zu tunnel%s: ssh -G asked in a child process)",
                     n, n == 1 ? "" : "s") < 0) {
                s->reload_error = NULL;
                r = -ENOMEM;
        }
        s->loaded = loaded;
        s->loaded_userdata = userdata;
        if (r >= 0)
                r = reload_job_start(loop, config->path, &config->load_options, on_reload_loaded, s, &s->reload_job);
        if (r < 0) {
                s->config = NULL;       /* still the caller's */
                supervisor_free(s);
                return r;
        }
        notify_status(s->reload_error);
        *ret = s;
        return 0;
}

unsigned long supervisor_reload(struct supervisor *s)
{
        if (s->reload_job) {
                /* the file may have changed after the running one read it: one more after it */
                s->reload_again = true;
                return s->reload_started + 1;
        }
        s->reload_started++;
        notify_reloading();
        log_notice("reloading %s", s->config->path);
        load(s);
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
