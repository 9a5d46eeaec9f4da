/* SPDX-License-Identifier: MIT */
/* config_ssh: what ssh makes of the tunnels (ssh_view.h). ssh -G is asked once per
 * distinct ssh configuration, that is a tunnel's command line without its forwards (the
 * program, -F ssh_config_file, host, user, port, identity, jump host, ssh_options…), never
 * per tunnel and never with the forwards, all by the load's one deadline; a tunnel with an
 * ssh_config_file takes its configuration's answer: the real host and port, and its own
 * forwards followed by those its file adds. */
#include "config.h"
#include "config_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

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

/* ---- ssh's answers that stand: a reload asks ssh only what may have changed ---- */

static void stamp_of(const struct stat *st, struct file_stamp *ret)
{
        *ret = (struct file_stamp){ .dev = st->st_dev, .ino = st->st_ino, .size = (uint64_t)st->st_size,
                                    .mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec };
}

static bool stamp_equal(const struct file_stamp *a, const struct file_stamp *b)
{
        return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns;
}

/* The first word of an ssh_config line ("Key value" or "Key=value"), lower case. */
static void first_word(const char *line, char *word, size_t size)
{
        size_t n = 0;

        line += strspn(line, " \t");
        while (*line && !isspace((unsigned char)*line) && *line != '=' && n + 1 < size)
                word[n++] = (char)tolower((unsigned char)*line++);
        word[n] = '\0';
}

/* ssh_config_file's stamp, and whether what ssh -G says of it depends on it alone: not if
 * it includes other files, or has ssh ask the network or run a program (Match exec, Match
 * localnetwork, CanonicalizeHostname). Anything unreadable or unusual: not reusable. */
static void stamp_config_file(const char *path, struct file_stamp *ret, bool *reusable)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        char line[4096], word[32];
        struct stat st;

        *reusable = false;
        *ret = (struct file_stamp){ 0 };
        if (!f || fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 20))
                return;
        stamp_of(&st, ret);
        while (fgets(line, sizeof(line), f)) {
                first_word(line, word, sizeof(word));
                if (strcmp(word, "include") == 0 || strcmp(word, "canonicalizehostname") == 0 ||
                    (strcmp(word, "match") == 0 && (strcasestr(line, "exec") || strcasestr(line, "localnetwork"))))
                        return;
        }
        *reusable = !ferror(f);
}

static void stamp_program(const char *ssh, struct file_stamp *ret)
{
        struct stat st;

        *ret = (struct file_stamp){ 0 };
        if (ssh[0] == '/' && stat(ssh, &st) == 0)
                stamp_of(&st, ret);
}

static int compare_view_key(const void *key, const void *view)
{
        return strcmp(key, ((const struct config_view *)view)->key);
}

/* The running configuration's answer for key, if it stands. */
static const struct config_view *known_view(const struct config_views *known, const char *key, bool reusable,
                                            const struct file_stamp *file, const struct file_stamp *program)
{
        const struct config_view *v;

        if (!known || !known->n || !reusable)
                return NULL;
        v = bsearch(key, known->v, known->n, sizeof(*known->v), compare_view_key);
        return v && v->reusable && stamp_equal(&v->file, file) && stamp_equal(&v->program, program) &&
               program->ino != 0 ? v : NULL;
}

static int view_copy(const struct config_view *v, struct config_view *ret)
{
        *ret = *v;
        ret->key = ret->hostname = NULL;
        ret->local_forwards = ret->remote_forwards = ret->dynamic_forwards = NULL;
        if (!(ret->key = strdup(v->key)) || (v->hostname && !(ret->hostname = strdup(v->hostname))) ||
            strv_copy(v->local_forwards, &ret->local_forwards) < 0 ||
            strv_copy(v->remote_forwards, &ret->remote_forwards) < 0 ||
            strv_copy(v->dynamic_forwards, &ret->dynamic_forwards) < 0)
                return -ENOMEM;
        return 0;
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

/* What ssh knows of each configuration, before it is asked. */
struct query_info {
        struct file_stamp file;
        bool reusable;
        const struct config_view *known;        /* the running configuration's answer, still standing */
        size_t asked;                           /* its index among those asked (if not known) */
};

/* ssh -G did not answer every configuration in time: the load fails as a whole, at the
 * first tunnel (in configuration order) of one it did not answer. */
static void judge_late(struct parser *p, const struct config *c, const struct query_key *keys, const size_t *first,
                       const struct query_info *info, const struct ssh_view *views, size_t m)
{
        size_t late = SIZE_MAX;

        for (size_t q = 0; q < m; q++)
                if (!info[q].known && views[info[q].asked].timed_out && keys[first[q]].tunnel < late)
                        late = keys[first[q]].tunnel;
        if (late == SIZE_MAX)
                return;
        config_diag_tunnel(p, &c->tunnels[late], names_ssh_config_file(&c->tunnels[late]) ? "ssh_config_file" : "ssh_options",
                    "ssh -G did not answer within %.0f s, the limit of one load (ssh -G runs once per ssh "
                    "configuration, %zu here; an ssh_config_file whose Match exec hangs?): nothing is loaded",
                    p->load_timeout, m);
}

/* Each configuration asked is judged at its first tunnel, in configuration order (leads:
 * scratch, one per tunnel). */
static void judge_views(struct parser *p, struct config *c, const struct query_key *keys, size_t n,
                        const size_t *first, const struct query_info *info, struct ssh_view *views, size_t m,
                        size_t *leads)
{
        for (size_t q = 0; q < m; q++)
                leads[keys[first[q]].tunnel] = q + 1;
        for (size_t i = 0; i < c->n_tunnels; i++) {
                size_t q = leads[i], end;

                if (!q-- || info[q].known)
                        continue;       /* judged by the load whose answer it is */
                end = q + 1 < m ? first[q + 1] : n;
                judge_view(p, &c->tunnels[i], &views[info[q].asked], end - first[q] - 1);
        }
}

/* The views that tunnels take (an ssh_config_file's), kept in c sorted by key with what
 * they were asked of: 0 or -ENOMEM. */
static int keep_views(struct config *c, const struct query_key *keys, const size_t *first,
                      const struct query_info *info, struct ssh_view *views, size_t m,
                      const struct file_stamp *program)
{
        c->ssh_views.v = calloc(m + 1, sizeof(struct config_view));
        if (!c->ssh_views.v)
                return -ENOMEM;
        for (size_t q = 0; q < m; q++) {
                struct config_view *v = &c->ssh_views.v[c->ssh_views.n];

                if (!names_ssh_config_file(&c->tunnels[keys[first[q]].tunnel]))
                        continue;
                if (info[q].known) {
                        c->ssh_views.n++;
                        if (view_copy(info[q].known, v) < 0)
                                return -ENOMEM;
                        continue;
                }
                if (views[info[q].asked].error)
                        continue;
                c->ssh_views.n++;
                if (view_from(&views[info[q].asked], keys[first[q]].key, v) < 0)
                        return -ENOMEM;
                v->reusable = info[q].reusable;
                v->file = info[q].file;
                v->program = *program;
        }
        return 0;
}

void config_ssh_ask(struct parser *p, struct config *c)
{
        size_t n = 0, m = 0, asked = 0;
        struct query_key *keys = calloc(c->n_tunnels + 1, sizeof(*keys));
        size_t *first = calloc(c->n_tunnels + 1, sizeof(size_t));      /* query → its first index into keys */
        struct query_info *info = calloc(c->n_tunnels + 1, sizeof(*info));
        char ***argvs = calloc(c->n_tunnels + 1, sizeof(char **));
        struct ssh_view *views = calloc(c->n_tunnels + 1, sizeof(*views));     /* of those asked */
        size_t *leads = calloc(c->n_tunnels + 1, sizeof(size_t));     /* tunnel → 1 + the query it leads */
        struct file_stamp program;
        int r;

        if (!keys || !first || !info || !argvs || !views || !leads || query_keys(c, keys, &n) < 0)
                goto oom;
        stamp_program(c->ssh, &program);
        for (size_t k = 0; k < n; k++) {
                const struct tunnel_spec *t = &c->tunnels[keys[k].tunnel];
                struct query_info *q = &info[m];

                if (k && strcmp(keys[k].key, keys[k - 1].key) == 0)
                        continue;
                first[m++] = k;
                /* an ssh_config_file's answer may stand; ssh_options alone are asked every time
                 * (ssh reads /etc/ssh/ssh_config then, which includes ssh_config.d) */
                if (names_ssh_config_file(t))
                        stamp_config_file(t->ssh_config_file, &q->file, &q->reusable);
                q->known = known_view(p->opts->known, keys[k].key, q->reusable, &q->file, &program);
                if (q->known)
                        continue;
                q->asked = asked;
                /* asked with the configuration's first tunnel (and without its forwards) */
                if (bare_argv(t, c->ssh, &argvs[asked++]) < 0)
                        goto oom;
        }
        r = ssh_view_query(argvs, asked, p->deadline, views);
        if (r < 0)
                goto oom;
        judge_late(p, c, keys, first, info, views, m);
        if (p->errs->n > 0)
                goto done;
        judge_views(p, c, keys, n, first, info, views, m, leads);
        if (keep_views(c, keys, first, info, views, m, &program) < 0)
                goto oom;
        config_ssh_take_views(p, c, &c->ssh_views);
        goto done;
oom:
        p->oom = -ENOMEM;
done:
        for (size_t i = 0; keys && i < n; i++)
                free(keys[i].key);
        for (size_t q = 0; argvs && q < asked; q++)
                strv_free(argvs[q]);
        for (size_t q = 0; views && q < asked; q++)
                ssh_view_done(&views[q]);
        free(keys);
        free(first);
        free(info);
        free(argvs);
        free(views);
        free(leads);
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
