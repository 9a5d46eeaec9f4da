/* SPDX-License-Identifier: MIT */
/* tunnel_change: a tunnel's forwards (one conn_forward each, reused across a reload when
 * unchanged) and a reload's new spec: made before the point of no return, taken after it
 * with the forwards changed on the running connection. */
#include "tunnel_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "probe.h"

static void forward_free(struct conn_forward *f)
{
        if (!f)
                return;
        free((char *)f->st.spec);
        free(f);
}

void tunnel_forwards_free(struct conn_forward **v, size_t n)
{
        for (size_t i = 0; v && i < n; i++)
                forward_free(v[i]);
        free(v);
}

static const struct {
        char kind;
        enum forward_kind k;
        char *const *(*list)(const struct tunnel_spec *s);
} kinds[] = {
        { 'L', FORWARD_LOCAL, tunnel_spec_local_forwards },
        { 'R', FORWARD_REMOTE, tunnel_spec_remote_forwards },
        { 'D', FORWARD_DYNAMIC, tunnel_spec_dynamic_forwards },
};

/* The forwards of spec, in order; one that old already has (same kind and spec) is
 * reused: kept[i] its index in old, else -1 and a new one made. */
int tunnel_forwards_build(const struct tunnel_spec *spec, struct conn_forward *const *old, size_t n_old,
                          struct conn_forward ***ret, ssize_t **ret_kept, size_t *ret_n)
{
        size_t n = 0, k = 0;
        _cleanup_free_ bool *taken = calloc(n_old + 1, sizeof(bool));
        struct conn_forward **v;
        ssize_t *kept;

        for (size_t i = 0; i < ELEMENTSOF(kinds); i++)
                n += strv_length(kinds[i].list(spec));
        v = calloc(n + 1, sizeof(struct conn_forward *));
        kept = calloc(n + 1, sizeof(*kept));
        if (!v || !kept || !taken)
                goto oom;
        for (size_t i = 0; i < ELEMENTSOF(kinds); i++)
                for (char *const *s = kinds[i].list(spec); s && *s; s++, k++) {
                        kept[k] = -1;
                        for (size_t j = 0; j < n_old && kept[k] < 0; j++)
                                if (!taken[j] && old[j]->st.kind == kinds[i].kind && strcmp(old[j]->st.spec, *s) == 0) {
                                        taken[j] = true;
                                        kept[k] = (ssize_t)j;
                                }
                        if (kept[k] >= 0)
                                continue;
                        v[k] = calloc(1, sizeof(*v[k]));
                        if (!v[k])
                                goto oom;
                        v[k]->st = (struct forward_status){ .kind = kinds[i].kind, .spec = strdup(*s),
                                                            .state = FORWARD_PENDING };
                        if (!v[k]->st.spec || forward_parse(kinds[i].k, *s, &v[k]->f))
                                goto oom;       /* validated at load: only memory can fail */
                }
        *ret = v;
        *ret_kept = kept;
        *ret_n = n;
        return 0;
oom:
        for (size_t i = 0; v && i < n; i++)
                forward_free(v[i]);
        free(v);
        free(kept);
        return -ENOMEM;
}

struct tunnel_change {
        struct tunnel_spec spec;
        struct probe *probe;
        struct conn_forward **fwds;     /* NULL where kept[i] >= 0: the tunnel's own */
        ssize_t *kept;
        size_t n_fwds;
};

struct tunnel_change *tunnel_change_free(struct tunnel_change *ch)
{
        if (!ch)
                return NULL;
        probe_free(ch->probe);
        tunnel_forwards_free(ch->fwds, ch->n_fwds);
        free(ch->kept);
        tunnel_spec_done(&ch->spec);
        free(ch);
        return NULL;
}

int tunnel_change_new(struct tunnel *t, const struct tunnel_spec *spec, struct tunnel_change **ret)
{
        struct tunnel_change *ch = calloc(1, sizeof(*ch));
        int r;

        if (!ch)
                return -ENOMEM;
        r = tunnel_spec_copy(spec, &ch->spec);
        if (r >= 0)
                r = tunnel_forwards_build(&ch->spec, t->fwds, t->n_fwds, &ch->fwds, &ch->kept, &ch->n_fwds);
        if (r >= 0 && ch->spec.probe.connect)
                r = probe_new(t->ctx->loop, &ch->spec.probe, tunnel_on_probe, t, &ch->probe);
        if (r < 0) {
                tunnel_change_free(ch);
                return r;
        }
        *ret = ch;
        return 0;
}

static bool probe_changed(const struct probe_spec *a, const struct probe_spec *b)
{
        return strcmp_null(a->connect, b->connect) != 0 || a->interval != b->interval || a->timeout != b->timeout ||
               a->failures != b->failures || strcmp_null(a->send, b->send) != 0 || strcmp_null(a->expect, b->expect) != 0;
}

/* The new forwards in place: kept ones as they are (their connections untouched), removed
 * ones closed, added ones asked for. */
static void swap_forwards(struct tunnel *t, struct tunnel_change *ch, size_t *added, size_t *removed)
{
        struct conn *c = t->user.attached ? t->user.conn : NULL;
        _cleanup_free_ bool *keep = calloc(t->n_fwds + 1, sizeof(bool));

        *added = *removed = 0;
        for (size_t k = 0; k < ch->n_fwds; k++)
                if (ch->kept[k] >= 0) {
                        ch->fwds[k] = t->fwds[ch->kept[k]];
                        if (keep)
                                keep[ch->kept[k]] = true;
                }
        for (size_t i = 0; i < t->n_fwds; i++) {
                bool kept = false;

                for (size_t k = 0; !keep && k < ch->n_fwds && !kept; k++)
                        kept = ch->fwds[k] == t->fwds[i];
                if (keep ? keep[i] : kept)
                        continue;
                (*removed)++;
                if (c)
                        conn_forward_remove(c, t->fwds[i]);
                forward_free(t->fwds[i]);
        }
        free(t->fwds);
        t->fwds = ch->fwds;
        t->n_fwds = ch->n_fwds;
        ch->fwds = NULL;
        for (size_t k = 0; k < t->n_fwds; k++) {
                t->fwds[k]->user = &t->user;
                if (ch->kept[k] >= 0)
                        continue;
                (*added)++;
                if (c)
                        conn_forward_add(c, t->fwds[k]);
        }
}

void tunnel_reconfigure(struct tunnel *t, struct tunnel_change *ch, struct conn *c)
{
        bool new_probe = probe_changed(&t->spec.probe, &ch->spec.probe);
        bool same_ssh = tunnel_spec_same_ssh(&t->spec, &ch->spec);
        bool moves = c != t->user.conn;
        size_t added, removed;
        struct log_ctx ctx;

        if (moves && t->user.conn) {
                /* off the old connection first: its forwards close there */
                tunnel_detach(t, "no tunnel uses the connection any more");
                conn_remove_user(&t->user);
                t->stop_waits = false;
        }
        tunnel_spec_done(&t->spec);
        t->spec = ch->spec;
        ch->spec = (struct tunnel_spec){0};
        t->user.name = t->spec.name;
        swap_forwards(t, ch, &added, &removed);
        if (new_probe) {
                probe_free(t->probe);
                t->probe = ch->probe;
                ch->probe = NULL;
                t->probe_misses = 0;
                if (t->probe && t->state == TUNNEL_UP)
                        probe_start(t->probe);
        }
        tunnel_change_free(ch);
        if (moves && c)
                conn_add_user(c, &t->user);
        ctx = tunnel_log_ctx(t);
        if (!moves && (added || removed) && t->user.attached && conn_get_pid(t->user.conn) > 0)
                log_full(LOG_NOTICE, &ctx, "forwards changed: %zu added, %zu removed on the running ssh (pid %d); "
                         "the others and their connections are untouched", added, removed,
                         (int)conn_get_pid(t->user.conn));
        else if (added || removed)
                log_full(LOG_INFO, &ctx, "forwards changed: applied");
        else if (same_ssh && !moves && t->user.attached && conn_get_pid(t->user.conn) > 0)
                log_full(LOG_INFO, &ctx, "supervision settings changed: applied to the running ssh (pid %d)",
                         (int)conn_get_pid(t->user.conn));
        else if (same_ssh && !moves)
                log_full(LOG_INFO, &ctx, "supervision settings changed: applied");
        if (!t->spec.enabled) {
                tunnel_stop(t, "disabled in the configuration");
                return;
        }
        if (!t->held && !t->wanted) {
                tunnel_start(t);        /* enabled again, or its policy had stopped it */
                return;
        }
        if (t->wanted)
                tunnel_go(t, false);
        else
                tunnel_sync_state(t, LOG_INFO, NULL, NULL);
}
