/* SPDX-License-Identifier: MIT */
/* supervisor_conn: the connections. Each tunnel rides one: its own (named after it), or,
 * with share_connection, the one every tunnel of the same connection and supervision
 * settings rides (tunnel_spec_shares_connection), named "~FIRST" after the first of them.
 * A connection is made when a tunnel first needs it and freed once no tunnel rides it and
 * its ssh has ended. */
#include "supervisor_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool name_taken(const struct supervisor *s, const char *name)
{
        for (size_t i = 0; i < s->n_conns; i++)
                if (strcmp(conn_get_name(s->conns[i]), name) == 0)
                        return true;
        return false;
}

int supervisor_conn_name(const struct supervisor *s, const struct tunnel_spec *spec, char **ret)
{
        char *name = NULL;

        /* no tunnel's name has a '~': the log and the runtime files cannot mix them up */
        for (unsigned n = 1; !name || name_taken(s, name); n++) {
                free(name);
                if ((n == 1 ? asprintf(&name, "~%s", spec->name) : asprintf(&name, "~%s.%u", spec->name, n)) < 0)
                        return -ENOMEM;
        }
        *ret = name;
        return 0;
}

int supervisor_conn_new(struct supervisor *s, const char *name, const struct tunnel_spec *spec, bool shared,
                        struct conn **ret)
{
        struct conn **v = realloc(s->conns, (s->n_conns + 1) * sizeof(struct conn *));
        struct supervisor_link *l;
        int r;

        if (!v)
                return -ENOMEM;
        s->conns = v;
        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        r = conn_new(&s->conn_ctx, name, spec, shared, l, ret);
        if (r < 0) {
                free(l);
                return r;
        }
        l->start.conn = *ret;
        s->conns[s->n_conns++] = *ret;
        return 0;
}

static void conn_drop(struct supervisor *s, size_t i)
{
        struct conn *c = s->conns[i];
        struct supervisor_link *l = conn_get_owner(c);

        start_queue_forget(&s->starts, &l->start);
        supervisor_pacing_forget(s, c);
        conn_free(c);
        free(l);
        memmove(s->conns + i, s->conns + i + 1, (s->n_conns - i - 1) * sizeof(struct conn *));
        s->n_conns--;
}

struct conn *supervisor_conn_find(const struct supervisor *s, const struct tunnel_spec *spec, const struct tunnel *t)
{
        struct conn *own = t ? tunnel_get_conn(t) : NULL;

        if (spec->share_connection) {
                for (size_t i = 0; i < s->n_conns; i++)
                        if (conn_is_shared(s->conns[i]) &&
                            tunnel_spec_shares_connection(conn_get_spec(s->conns[i]), spec))
                                return s->conns[i];
                return NULL;
        }
        if (own && !conn_is_shared(own))
                return own;
        /* one of its name that nobody rides any more (stopping, say): taken back */
        for (size_t i = 0; i < s->n_conns; i++)
                if (!conn_is_shared(s->conns[i]) && conn_count_users(s->conns[i]) == 0 &&
                    strcmp(conn_get_name(s->conns[i]), spec->name) == 0)
                        return s->conns[i];
        return NULL;
}

void supervisor_conn_collect(struct supervisor *s)
{
        for (size_t i = s->n_conns; i > 0; i--) {
                struct conn *c = s->conns[i - 1];

                if (conn_count_users(c) == 0 && conn_get_state(c) == CONN_STOPPED && !conn_has_child(c) &&
                    !conn_wants_start(c))
                        conn_drop(s, i - 1);
        }
        s->conns_dirty = false;
}

bool supervisor_conn_any_child(const struct supervisor *s)
{
        for (size_t i = 0; i < s->n_conns; i++)
                if (conn_has_child(s->conns[i]))
                        return true;
        return false;
}

void supervisor_conn_free_all(struct supervisor *s)
{
        while (s->n_conns)
                conn_drop(s, s->n_conns - 1);
        free(s->conns);
        s->conns = NULL;
}
