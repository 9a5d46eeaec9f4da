/* SPDX-License-Identifier: MIT */
/* config_ssh: what ssh makes of the tunnels (ssh_view.h). ssh -G is asked once per
 * distinct ssh configuration, that is a tunnel's command line without its forwards (the
 * program, -F ssh_config_file, host, user, port, identity, jump host, ssh_options…), never
 * per tunnel and never with the forwards, all by the load's one deadline; a tunnel with an
 * ssh_config_file takes its configuration's answer: the real host and port, and its own
 * forwards followed by those its file adds. */
#include "config.h"
#include "config_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ssh_argv.h"
#include "ssh_view.h"

static bool names_ssh_config_file(const struct tunnel_spec *t)
{
        return t->ssh_config_file && strcmp(t->ssh_config_file, "none") != 0;
}

/* t's ssh command line without its forwards: what shapes ssh's view of it. ssh's own
 * forwards are asked for apart (tunneld parses t's: forward.c). */
static int bare_argv(const struct tunnel_spec *t, const char *ssh, char ***ret)
{
        struct tunnel_spec bare = *t;   /* shallow, only read */

        bare.local_forwards = bare.remote_forwards = bare.dynamic_forwards = NULL;
        return ssh_argv_build_view(&bare, ssh, ret);
}

/* Which ssh -G answers for t. With an ssh_config_file: its whole command line but the
 * forwards, each word length-prefixed (no word can pass for two); the name, the forwards,
 * the probe, hooks and supervision are not ssh's business. Without one, ssh judges only
 * the ssh_options, the same whatever the host. */
static int view_key(const struct tunnel_spec *t, const char *ssh, char **ret)
{
        _cleanup_strv_free_ char **argv = NULL;
        struct buf b = {0};

        if (names_ssh_config_file(t)) {
                if (bare_argv(t, ssh, &argv) < 0)
                        return -ENOMEM;
                buf_puts(&b, "F");
                for (char **a = argv; *a; a++)
                        buf_printf(&b, "%zu:%s", strlen(*a), *a);
        } else {
                buf_printf(&b, "O%s", t->ssh_config_file ? "-F none" : "");
                for (char **o = t->ssh_options; o && *o; o++)
                        buf_printf(&b, "\n%s", *o);
        }
        return buf_steal(&b, ret);
}

static bool same_end(const struct forward_end *a, const struct forward_end *b)
{
        return a->host_given == b->host_given && a->port == b->port && strcmp(a->host, b->host) == 0 &&
               strcmp(a->path, b->path) == 0;
}

/* One forward to ssh, written two ways? (ssh compares what it parsed, as here.) */
static bool same_forward_spec(enum forward_kind kind, const char *a, const char *b)
{
        struct forward fa, fb;

        if (strcmp(a, b) == 0)
                return true;
        if (forward_parse(kind, a, &fa) || forward_parse(kind, b, &fb))
                return false;
        return fa.socks == fb.socks && same_end(&fa.listen, &fb.listen) && same_end(&fa.connect, &fb.connect);
}

/* The forwards ssh sets up: the tunnel's own (its command line's, first), then those its
 * ssh_config_file adds that it does not have already (ssh drops a repeated one). NULL
 * when there are none. */
static int merge_forwards(enum forward_kind kind, char *const *own, char *const *file, char ***ret)
{
        _cleanup_strv_free_ char **v = NULL;

        *ret = NULL;
        for (char *const *f = own; f && *f; f++)
                if (strv_push(&v, *f) < 0)
                        return -ENOMEM;
        for (char *const *f = file; f && *f; f++) {
                bool known = false;

                for (char *const *o = own; o && *o && !known; o++)
                        known = same_forward_spec(kind, *o, *f);
                if (!known && strv_push(&v, *f) < 0)
                        return -ENOMEM;
        }
        *ret = v;
        v = NULL;
        return 0;
}

/* What ssh says of t's configuration, with t's own forwards. 0 or -ENOMEM. */
static int take_view(struct tunnel_spec *t, const struct config_view *v)
{
        t->ssh.viewed = true;
        t->ssh.port = v->port;
        t->ssh.gateway_ports = v->gateway_ports;
        if (v->hostname && !(t->ssh.hostname = strdup(v->hostname)))
                return -ENOMEM;
        if (merge_forwards(FORWARD_LOCAL, t->local_forwards, v->local_forwards, &t->ssh.local_forwards) < 0 ||
            merge_forwards(FORWARD_REMOTE, t->remote_forwards, v->remote_forwards, &t->ssh.remote_forwards) < 0 ||
            merge_forwards(FORWARD_DYNAMIC, t->dynamic_forwards, v->dynamic_forwards, &t->ssh.dynamic_forwards) < 0)
                return -ENOMEM;
        return 0;
}

/* ssh -G's answer as a view of its configuration (moved out of it). */
static int view_from(struct ssh_view *sv, const char *key, struct config_view *ret)
{
        *ret = (struct config_view){
                .key = strdup(key),
                .hostname = sv->hostname,
                .port = sv->port,
                .local_forwards = sv->local_forwards,
                .remote_forwards = sv->remote_forwards,
                .dynamic_forwards = sv->dynamic_forwards,
                .gateway_ports = sv->gateway_ports,
        };
        sv->hostname = NULL;
        sv->local_forwards = sv->remote_forwards = sv->dynamic_forwards = NULL;
        return ret->key ? 0 : -ENOMEM;
}

struct query_key {
        char *key;
        size_t tunnel;
};

static int compare_keys(const void *x, const void *y)
{
        const struct query_key *a = x, *b = y;
        int r = strcmp(a->key, b->key);

        return r ? r : a->tunnel < b->tunnel ? -1 : a->tunnel > b->tunnel;
}

/* Every enabled tunnel's key, sorted (then in configuration order). */
static int query_keys(const struct config *c, struct query_key *keys, size_t *ret_n)
{
        size_t n = 0;
        int r = 0;

        for (size_t i = 0; i < c->n_tunnels && r >= 0; i++) {
                if (!c->tunnels[i].enabled)
                        continue;
                keys[n].tunnel = i;
                r = view_key(&c->tunnels[i], c->ssh, &keys[n].key);
                if (r >= 0)
                        n++;
        }
        if (r >= 0)
                qsort(keys, n, sizeof(*keys), compare_keys);
        *ret_n = n;
        return r;
}

/* What ssh said of a configuration, judged at its first tunnel t (others: how many more). */
static void judge_view(struct parser *p, struct tunnel_spec *t, struct ssh_view *v, size_t others)
{
        const char *setting = t->ssh_config_file ? "ssh_config_file" : "ssh_options";
        char also[96] = "";

        if (others)
                snprintf(also, sizeof(also), " (and %zu other tunnel%s with these %s)", others, others == 1 ? "" : "s",
                         names_ssh_config_file(t) ? "ssh settings" : "ssh_options");
        if (v->error && v->ran) {
                if (strstr(v->error, "command-line"))
                        setting = "ssh_options";
                config_diag_tunnel(p, t, setting, "ssh refuses it: %s%s", v->error, also);
                return;
        }
        if (v->error) {
                if (p->opts->ask_ssh == CONFIG_SSH_STRICT)
                        config_diag_tunnel(p, t, "ssh", "cannot ask ssh to check the ssh options: %s%s", v->error, also);
                else
                        log_warning("%s: cannot ask ssh to check the ssh options: %s; starting anyway", t->name,
                                    v->error);
                return;
        }
        if (v->fork_after_authentication)
                config_diag_tunnel(p, t, setting, "ForkAfterAuthentication=yes makes ssh go to the background, and "
                            "tunneld would see it exit at once; remove it (tunneld keeps ssh in the foreground)%s",
                            also);
}

/* ssh -G did not answer every configuration in time: the load fails as a whole, at the
 * first tunnel (in configuration order) of one it did not answer. */
static void judge_late(struct parser *p, const struct config *c, const struct query_key *keys, const size_t *first,
                       const struct ssh_view *views, size_t m)
{
        size_t late = SIZE_MAX;

        for (size_t q = 0; q < m; q++)
                if (views[q].timed_out && keys[first[q]].tunnel < late)
                        late = keys[first[q]].tunnel;
        if (late == SIZE_MAX)
                return;
        config_diag_tunnel(p, &c->tunnels[late], names_ssh_config_file(&c->tunnels[late]) ? "ssh_config_file" : "ssh_options",
                    "ssh -G did not answer within %.0f s, the limit of one load (ssh -G runs once per ssh "
                    "configuration, %zu here; an ssh_config_file whose Match exec hangs?): nothing is loaded",
                    p->load_timeout, m);
}

void config_ssh_ask(struct parser *p, struct config *c)
{
        size_t n = 0, m = 0;
        struct query_key *keys = calloc(c->n_tunnels + 1, sizeof(*keys));
        size_t *first = calloc(c->n_tunnels + 1, sizeof(size_t));      /* query → its first index into keys */
        char ***argvs = calloc(c->n_tunnels + 1, sizeof(char **));
        struct ssh_view *views = calloc(c->n_tunnels + 1, sizeof(*views));
        size_t *leads = calloc(c->n_tunnels + 1, sizeof(size_t));     /* tunnel → 1 + the query it leads */
        int r;

        if (!keys || !first || !argvs || !views || !leads || query_keys(c, keys, &n) < 0)
                goto oom;
        for (size_t k = 0; k < n; k++) {
                if (!k || strcmp(keys[k].key, keys[k - 1].key) != 0) {
                        first[m] = k;
                        /* asked with the configuration's first tunnel (and without its forwards) */
                        if (bare_argv(&c->tunnels[keys[k].tunnel], c->ssh, &argvs[m]) < 0)
                                goto oom;
                        m++;
                }
        }
        r = ssh_view_query(argvs, m, p->deadline, views);
        if (r < 0)
                goto oom;
        judge_late(p, c, keys, first, views, m);
        if (p->errs->n > 0)
                goto done;
        /* judged at each configuration's first tunnel, in configuration order */
        for (size_t q = 0; q < m; q++)
                leads[keys[first[q]].tunnel] = q + 1;
        for (size_t i = 0; i < c->n_tunnels; i++) {
                size_t q = leads[i], end;

                if (!q--)
                        continue;
                end = q + 1 < m ? first[q + 1] : n;
                judge_view(p, &c->tunnels[i], &views[q], end - first[q] - 1);
        }
        /* the views that tunnels take (an ssh_config_file's), kept sorted by key */
        c->ssh_views.v = calloc(m + 1, sizeof(struct config_view));
        if (!c->ssh_views.v)
                goto oom;
        for (size_t q = 0; q < m; q++)
                if (!views[q].error && names_ssh_config_file(&c->tunnels[keys[first[q]].tunnel])) {
                        if (view_from(&views[q], keys[first[q]].key, &c->ssh_views.v[c->ssh_views.n++]) < 0)
                                goto oom;
                }
        config_ssh_take_views(p, c, &c->ssh_views);
        goto done;
oom:
        p->oom = -ENOMEM;
done:
        for (size_t i = 0; keys && i < n; i++)
                free(keys[i].key);
        for (size_t q = 0; argvs && q < m; q++)
                strv_free(argvs[q]);
        for (size_t q = 0; views && q < m; q++)
                ssh_view_done(&views[q]);
        free(keys);
        free(first);
        free(argvs);
        free(views);
        free(leads);
}

static int compare_view_key(const void *key, const void *view)
{
        return strcmp(key, ((const struct config_view *)view)->key);
}

/* Each enabled tunnel with an ssh_config_file takes the view of its configuration: ssh's
 * answer in this load, or in another load of the same files (a reload's child). */
void config_ssh_take_views(struct parser *p, struct config *c, const struct config_views *views)
{
        for (size_t i = 0; i < c->n_tunnels && !p->oom; i++) {
                struct tunnel_spec *t = &c->tunnels[i];
                _cleanup_free_ char *key = NULL;
                const struct config_view *v;

                if (!t->enabled || !names_ssh_config_file(t))
                        continue;
                if (view_key(t, c->ssh, &key) < 0) {
                        p->oom = -ENOMEM;
                        break;
                }
                v = views->n ? bsearch(key, views->v, views->n, sizeof(*views->v), compare_view_key) : NULL;
                if (v && take_view(t, v) < 0)
                        p->oom = -ENOMEM;
        }
}
