/* SPDX-License-Identifier: MIT */
/* supervisor_apply: a configuration applied to the running set as a plan (everything that
 * can fail first, then swap in, retire, carry out), and reloads (loaded off the loop by
 * reload_job.c, then applied). */
#include "supervisor_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "notify.h"

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

/* A reload's plan: for each tunnel of the new configuration, in its order, a new tunnel or
 * the one it keeps (and its change, made in advance), and the connection it will ride. */
struct plan {
        size_t n;
        struct tunnel **next;           /* the new set */
        struct tunnel **reused;         /* next[i] if it ran before, else NULL */
        struct tunnel_change **changes; /* a kept tunnel's new spec; NULL: the same */
        struct conn **target;           /* the connection next[i] rides; NULL: none (disabled) */
        size_t conns_before;            /* s->conns[conns_before…] were made by this plan */
        struct conn_change **conn_changes;      /* by index in s->conns: a kept connection's new settings */
        size_t conn_changes_size;
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
        free(p->target);
        free(p->conn_changes);
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
                .target = calloc(c->n_tunnels + 1, sizeof(struct conn *)),
                .conns_before = s->n_conns,
                .conn_changes_size = s->n_conns + c->n_tunnels + 1,
                .conn_changes = calloc(s->n_conns + c->n_tunnels + 1, sizeof(struct conn_change *)),
                .removed = calloc(s->n_tunnels + 1, sizeof(struct tunnel *)),
                .ssh_changed = s->config && strcmp(s->config->ssh, c->ssh) != 0,
        };
        if (!grown || !p->next || !p->reused || !p->changes || !p->target || !p->conn_changes || !p->removed ||
            by_name_new(s, &p->running) < 0) {
                plan_free(p);
                return -ENOMEM;
        }
        return 0;
}

static ssize_t conn_index(const struct supervisor *s, const struct conn *c)
{
        for (size_t i = 0; i < s->n_conns; i++)
                if (s->conns[i] == c)
                        return (ssize_t)i;
        return -1;
}

/* A kept connection takes spec's settings if they differ (a new ssh, or new supervision). */
static int plan_conn_change(struct supervisor *s, const struct config *c, struct plan *p, struct conn *conn,
                            const struct tunnel_spec *spec)
{
        ssize_t k = conn_index(s, conn);

        if (k < 0 || (size_t)k >= p->conns_before || p->conn_changes[k])
                return 0;
        if (!p->ssh_changed && conn_same_command(conn, spec, c->ssh) &&
            tunnel_spec_same_supervision(conn_get_spec(conn), spec))
                return 0;
        return conn_change_new(conn, spec, c->ssh, &p->conn_changes[k]);
}

/* A shared connection whose every tunnel moves to the same new settings, which no
 * connection has yet: it changes with them instead of being replaced, so that their
 * connections survive (in place, or make-before-break). */
static struct conn *plan_follow(const struct supervisor *s, const struct config *c, const struct plan *p,
                                const struct tunnel *t, const struct tunnel_spec *spec)
{
        struct conn *old = t ? tunnel_get_conn(t) : NULL;
        ssize_t k;

        if (!old || !conn_is_shared(old) || !spec->share_connection || (k = conn_index(s, old)) < 0 ||
            p->conn_changes[k])
                return NULL;
        for (size_t i = 0; i < c->n_tunnels; i++) {
                const struct named *found = by_name_find(&p->running, c->tunnels[i].name);
                const struct tunnel *u = found ? found->t : NULL;

                if (u && tunnel_get_conn(u) == old &&
                    (!c->tunnels[i].enabled || !tunnel_spec_shares_connection(&c->tunnels[i], spec)))
                        return NULL;
        }
        for (size_t i = 0; i < p->n; i++)
                if (p->target[i] == old)
                        return NULL;    /* claimed by a tunnel of another group already */
        return old;
}

/* A shared connection this plan gives spec's settings (a followed one). */
static struct conn *plan_find_changed(const struct supervisor *s, const struct plan *p, const struct tunnel_spec *spec)
{
        for (size_t k = 0; spec->share_connection && k < p->conns_before; k++)
                if (p->conn_changes[k] && conn_is_shared(s->conns[k]) &&
                    tunnel_spec_shares_connection(conn_change_spec(p->conn_changes[k]), spec))
                        return s->conns[k];
        return NULL;
}

/* The connection spec's tunnel rides: found, followed or made. */
static int plan_target(struct supervisor *s, const struct config *c, struct plan *p, size_t i, struct tunnel *t)
{
        const struct tunnel_spec *spec = &c->tunnels[i];
        _cleanup_free_ char *name = NULL;
        struct conn *conn = plan_find_changed(s, p, spec);
        int r;

        if (!conn) {
                ssize_t k;

                conn = supervisor_conn_find(s, spec, t);
                /* a shared one this plan moves to other settings is not this group's any more */
                if (conn && conn_is_shared(conn) && (k = conn_index(s, conn)) >= 0 && p->conn_changes[k] &&
                    !tunnel_spec_shares_connection(conn_change_spec(p->conn_changes[k]), spec))
                        conn = NULL;
        }
        if (!conn)
                conn = plan_follow(s, c, p, t, spec);
        if (conn) {
                p->target[i] = conn;
                return plan_conn_change(s, c, p, conn, spec);
        }
        if (!spec->enabled)
                return 0;       /* a disabled tunnel needs no connection */
        if (spec->share_connection && (r = supervisor_conn_name(s, spec, &name)) < 0)
                return r;
        return supervisor_conn_new(s, name ? name : spec->name, spec, spec->share_connection, &p->target[i]);
}

/* Everything that can fail: the new tunnels and connections, and for each kept one its new
 * spec (the tunnel's, the connection's). Failing leaves everything as it was. */
static int plan_prepare(struct supervisor *s, const struct config *c, struct plan *p)
{
        int r = 0;

        s->conn_ctx.ssh = c->ssh;       /* for the new connections' argv; restored on failure */
        for (size_t i = 0; i < p->n && r >= 0; i++) {
                const struct tunnel_spec *spec = &c->tunnels[i];
                const struct named *found = by_name_find(&p->running, spec->name);
                struct tunnel *t = found ? found->t : NULL;
                ssize_t j;

                if (!t && (j = supervisor_index_of_name(s->retiring, s->n_retiring, spec->name)) >= 0)
                        t = s->retiring[j];
                if (!t)
                        r = supervisor_tunnel_new(s, spec, &p->next[i]);
                else if (!tunnel_spec_equal(tunnel_get_spec(t), spec))
                        r = tunnel_change_new(t, spec, &p->changes[i]);
                if (r >= 0)
                        r = plan_target(s, c, p, i, t);
        }
        for (size_t k = 0; r >= 0 && p->ssh_changed && k < p->conns_before; k++)
                if (!p->conn_changes[k])
                        r = conn_change_new(s->conns[k], conn_get_spec(s->conns[k]), c->ssh, &p->conn_changes[k]);
        if (r >= 0)
                return 0;
        for (size_t i = 0; i < p->n; i++) {
                supervisor_tunnel_free(p->next[i]);
                tunnel_change_free(p->changes[i]);
        }
        for (size_t k = 0; k < p->conn_changes_size; k++)
                conn_change_free(p->conn_changes[k]);
        while (s->n_conns > p->conns_before) {
                struct conn *made = s->conns[--s->n_conns];
                free(conn_get_owner(made));
                conn_free(made);
        }
        s->conn_ctx.ssh = s->config ? s->config->ssh : NULL;
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
                j = supervisor_index_of_name(s->retiring, s->n_retiring, name);
                p->next[i] = p->reused[i] = s->retiring[j];
                supervisor_remove_at(s->retiring, &s->n_retiring, (size_t)j);
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

/* Removed tunnels stop (they go once stopped). */
static void retire_removed(struct supervisor *s, const struct plan *p)
{
        for (size_t i = 0; i < p->n_removed; i++) {
                log_tunnel(LOG_NOTICE, tunnel_get_name(p->removed[i]), "removed from the configuration");
                tunnel_stop(p->removed[i], "removed from the configuration");
        }
        s->conns_dirty = true;
}

/* Kept connections take their new settings; each tunnel takes its change and rides its
 * connection; new tunnels start. Nothing here can fail. */
static void carry_out(struct supervisor *s, const struct config *c, bool reloading, struct plan *p)
{
        for (size_t k = 0; k < p->conns_before; k++)
                if (p->conn_changes[k]) {
                        conn_reconfigure(s->conns[k], p->conn_changes[k]);
                        p->conn_changes[k] = NULL;
                }
        for (size_t i = 0; i < s->n_tunnels; i++) {
                struct tunnel *t = s->tunnels[i];
                const struct tunnel_spec *spec = &c->tunnels[i];

                if (!p->reused[i]) {
                        if (reloading)
                                log_tunnel(LOG_NOTICE, spec->name, "added to the configuration");
                        tunnel_set_conn(t, p->target[i]);
                        if (spec->enabled)
                                tunnel_start(t);
                        continue;
                }
                if (p->changes[i]) {
                        tunnel_reconfigure(t, p->changes[i], p->target[i]);
                        p->changes[i] = NULL;
                } else
                        tunnel_set_conn(t, p->target[i]);
        }
        s->conns_dirty = true;
}

int supervisor_apply(struct supervisor *s, struct config *c)
{
        const struct config *old = s->config;
        struct plan p;
        int r;

        r = plan_alloc(s, c, &p);
        if (r < 0)
                return r;
        r = plan_prepare(s, c, &p);
        if (r < 0) {
                plan_free(&p);
                return r;
        }
        /* Point of no return. */
        s->conn_ctx.stop_timeout = c->stop_timeout;
        s->starts.max = c->max_parallel_starts;
        start_queue_kick(&s->starts);
        plan_swap_in(s, c, &p);
        s->config = c;
        s->after_due = true;
        if (p.ssh_changed)
                log_notice("ssh program changed from %s to %s: every connection restarts", old->ssh, c->ssh);
        retire_removed(s, &p);
        carry_out(s, c, old != NULL && !s->load.loaded, &p);        /* the first load's tunnels are not "added" */
        plan_free(&p);
        config_free((struct config *)old);
        supervisor_net_apply(s, c);
        return 0;
}

/* The loaded configuration (or its errors), applied: the end of one reload. */
static void reload_finish(struct supervisor *s, int r, struct config *c, struct config_errors *errs)
{
        _cleanup_free_ char *error = NULL;
        size_t before = s->n_tunnels, changed = 0;
        struct by_name running = {0};

        config_errors_clear(&s->load.errs);
        if (r < 0) {
                for (size_t i = 0; i < errs->n; i++)
                        log_error("%s", errs->lines[i]);
                log_error("reload rejected: %zu error%s in %s; the running tunnels are unchanged",
                          errs->n, errs->n == 1 ? "" : "s", s->config->path);
                if (asprintf(&error, "reload failed (%zu error%s, see the journal), running the previous configuration",
                             errs->n, errs->n == 1 ? "" : "s") < 0)
                        error = NULL;
                s->load.errs = *errs;
                *errs = (struct config_errors){ 0 };
                goto done;
        }
        config_errors_clear(errs);
        config_warn_fixed_globals(s->config, c);
        for (char **w = c->warnings; w && *w; w++)
                log_warning("%s", *w);
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
        s->load.r = r;
        s->load.done = s->load.started;
        free(s->load.error);
        s->load.error = error;
        error = NULL;
        for (size_t i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].reloaded)
                        s->listeners[i].reloaded(s->load.error, s->listeners[i].userdata);
}

/* supervisor_new_loading's load is done: its tunnels start, or nothing does. */
static void first_load_finish(struct supervisor *s, int r, struct config *c, struct config_errors *errs)
{
        supervisor_loaded_t loaded = s->load.loaded;
        double took = now_mono() - s->started_at;

        free(s->load.error);
        s->load.error = NULL;
        if (r < 0) {
                for (size_t i = 0; i < errs->n; i++)
                        log_error("%s", errs->lines[i]);
                log_error("tunneld: %s: %zu error%s, not starting", s->config->path, errs->n, errs->n == 1 ? "" : "s");
                s->load.error = strdup("the configuration did not load (see the journal)");
                s->load.loaded = NULL;
                loaded(s, r, s->load.userdata);
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
        s->load.loaded = NULL;
        if (r < 0) {
                log_error_errno(r, "cannot start the tunnels: %m");
                config_free(c);
        }
        loaded(s, r, s->load.userdata);
}

/* What a load ended with, for the load under way: the first one, or a reload. */
static void load_finish(struct supervisor *s, int r, struct config *c, struct config_errors *errs)
{
        if (s->load.loaded)
                first_load_finish(s, r, c, errs);
        else
                reload_finish(s, r, c, errs);
}

static void load(struct supervisor *s);

static void on_reload_loaded(int r, struct config *c, struct config_errors *errs, void *userdata)
{
        struct supervisor *s = userdata;

        s->load.job = reload_job_free(s->load.job);
        if (r == -EAGAIN && !s->shutting_down) {
                /* the file changed under the load: read it again, this reload's answer waits */
                log_notice("%s%s changed while it was being loaded: loading it again", s->load.loaded ? "" : "reload: ",
                           s->config->path);
                config_errors_clear(errs);
                if (!s->load.loaded)
                        s->load.again = false;        /* this load reads the newest file anyway */
                load(s);
                return;
        }
        load_finish(s, r, c, errs);
        config_errors_clear(errs);
        if (s->load.again && !s->shutting_down) {
                s->load.again = false;
                (void)supervisor_reload(s);
        }
}

/* Load the file for the reload under way: in a child, or (fork failed) here. */
static void load(struct supervisor *s)
{
        struct config_errors errs = {0};
        struct config_load_options opts = s->config->load_options;
        struct config *c = NULL;
        int r;

        /* what ssh said of the running configuration stands where its files are the same */
        opts.known = &s->config->ssh_views;
        r = reload_job_start(s->loop, s->config->path, &opts, on_reload_loaded, s, &s->load.job);
        if (r >= 0)
                return;
        /* no child process: load here, the loop waits for ssh -G this once */
        log_warning_errno(r, "reload: cannot load in a child process (%m): loading in tunneld itself");
        r = config_load(s->config->path, &opts, &c, &errs);
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
        if (asprintf(&s->load.error, "loading the configuration (%zu tunnel%s: ssh -G asked in a child process)",
                     n, n == 1 ? "" : "s") < 0) {
                s->load.error = NULL;
                r = -ENOMEM;
        }
        s->load.loaded = loaded;
        s->load.userdata = userdata;
        if (r >= 0)
                r = reload_job_start(loop, config->path, &config->load_options, on_reload_loaded, s, &s->load.job);
        if (r < 0) {
                s->config = NULL;       /* still the caller's */
                supervisor_free(s);
                return r;
        }
        notify_status(s->load.error);
        *ret = s;
        return 0;
}

unsigned long supervisor_reload(struct supervisor *s)
{
        if (s->load.job) {
                /* the file may have changed after the running one read it: one more after it */
                s->load.again = true;
                return s->load.started + 1;
        }
        s->load.started++;
        notify_reloading();
        log_notice("reloading %s", s->config->path);
        load(s);
        return s->load.started;
}

unsigned long supervisor_reload_result(const struct supervisor *s, int *ret_r, const struct config_errors **ret_errs)
{
        if (ret_r)
                *ret_r = s->load.r;
        if (ret_errs)
                *ret_errs = &s->load.errs;
        return s->load.done;
}
