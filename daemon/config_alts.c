/* SPDX-License-Identifier: MIT */
/* config_alts: a tunnel's alternatives for its destination (alternatives = ( { host =
 * "relay2"; port = 2222; }, … )): parsed with the tunnel's own validators, copied,
 * compared, each one's effective spec (the tunnel's, with what the alternative names
 * instead), and the checks of a tunnel run again on each effective spec. */
#include "config.h"
#include "config_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* What an alternative may name: where ssh connects and how it logs in there. */
static const char *const alt_keys[] = {
        "host", "user", "port", "identity_file", "jump_host", "host_keys", "jump_host_keys",
};

static void alt_done(struct tunnel_alt *a)
{
        free(a->host);
        free(a->user);
        free(a->identity_file);
        free(a->jump_host);
        strv_free(a->host_keys);
        strv_free(a->jump_host_keys);
        *a = (struct tunnel_alt){0};
}

void tunnel_alts_done(struct tunnel_alts *a)
{
        for (size_t i = 0; i < a->n; i++)
                alt_done(&a->v[i]);
        free(a->v);
        *a = (struct tunnel_alts){0};
}

static int dup_str(const char *s, char **ret)
{
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int dup_strv(char *const *v, char ***ret)
{
        *ret = NULL;
        return v ? strv_copy(v, ret) : 0;
}

int tunnel_alts_copy(const struct tunnel_alts *a, struct tunnel_alts *ret)
{
        struct tunnel_alts c = {0};

        *ret = c;
        if (a->n == 0)
                return 0;
        c.v = calloc(a->n, sizeof(*c.v));
        if (!c.v)
                return -ENOMEM;
        for (; c.n < a->n; c.n++) {
                const struct tunnel_alt *s = &a->v[c.n];
                struct tunnel_alt *d = &c.v[c.n];
                int r;

                d->port = s->port;
                d->source_line = s->source_line;
                if ((r = dup_str(s->host, &d->host)) < 0 || (r = dup_str(s->user, &d->user)) < 0 ||
                    (r = dup_str(s->identity_file, &d->identity_file)) < 0 ||
                    (r = dup_str(s->jump_host, &d->jump_host)) < 0 ||
                    (r = dup_strv(s->host_keys, &d->host_keys)) < 0 ||
                    (r = dup_strv(s->jump_host_keys, &d->jump_host_keys)) < 0) {
                        c.n++;
                        tunnel_alts_done(&c);
                        return r;
                }
        }
        *ret = c;
        return 0;
}

bool tunnel_alt_equal(const struct tunnel_alt *a, const struct tunnel_alt *b)
{
        return strcmp_null(a->host, b->host) == 0 && strcmp_null(a->user, b->user) == 0 && a->port == b->port &&
               strcmp_null(a->identity_file, b->identity_file) == 0 && strcmp_null(a->jump_host, b->jump_host) == 0 &&
               strv_equal(a->host_keys, b->host_keys) && strv_equal(a->jump_host_keys, b->jump_host_keys);
}

bool tunnel_alts_equal(const struct tunnel_alts *a, const struct tunnel_alts *b)
{
        if (a->n != b->n)
                return false;
        for (size_t i = 0; i < a->n; i++)
                if (!tunnel_alt_equal(&a->v[i], &b->v[i]))
                        return false;
        return true;
}

static int replace_str(char **field, const char *value)
{
        char *copy;

        if (!value)
                return 0;
        copy = strdup(value);
        if (!copy)
                return -ENOMEM;
        free(*field);
        *field = copy;
        return 0;
}

static int replace_strv(char ***field, char *const *value)
{
        char **copy;
        int r;

        if (!value)
                return 0;
        r = strv_copy(value, &copy);
        if (r < 0)
                return r;
        strv_free(*field);
        *field = copy;
        return 0;
}

int tunnel_spec_alternative(const struct tunnel_spec *s, size_t i, struct tunnel_spec *ret)
{
        const struct tunnel_alt *a;
        struct tunnel_spec c;
        int r = tunnel_spec_copy(s, &c);

        if (r < 0)
                return r;
        tunnel_alts_done(&c.alts);
        if (i > 0 && i <= s->alts.n) {
                a = &s->alts.v[i - 1];
                if ((r = replace_str(&c.host, a->host)) < 0 || (r = replace_str(&c.user, a->user)) < 0 ||
                    (r = replace_str(&c.identity_file, a->identity_file)) < 0 ||
                    (r = replace_str(&c.jump_host, a->jump_host)) < 0 ||
                    (r = replace_strv(&c.host_keys, a->host_keys)) < 0 ||
                    (r = replace_strv(&c.jump_host_keys, a->jump_host_keys)) < 0) {
                        tunnel_spec_done(&c);
                        return r;
                }
                if (a->port)
                        c.port = a->port;
                if (a->host || a->port) {
                        /* ssh -G's answer was for the tunnel's own host */
                        free(c.ssh.hostname);
                        c.ssh.hostname = NULL;
                        c.ssh.port = 0;
                }
                c.source_line = a->source_line;
        }
        *ret = c;
        return 0;
}

const char *tunnel_spec_alt_host(const struct tunnel_spec *s, size_t i)
{
        if (i > 0 && i <= s->alts.n && s->alts.v[i - 1].host)
                return s->alts.v[i - 1].host;
        return s->host;
}

int tunnel_spec_alt_port(const struct tunnel_spec *s, size_t i)
{
        if (i > 0 && i <= s->alts.n && s->alts.v[i - 1].port)
                return s->alts.v[i - 1].port;
        return s->port;
}

/* ---- parsing ---- */

_printf_(4, 5)
static void adiag(struct parser *p, const config_setting_t *s, const char *label, const char *fmt, ...)
{
        const char *file = config_setting_source_file(s);
        va_list ap;

        va_start(ap, fmt);
        config_vdiag(p, file ? file : p->path, (int)config_setting_source_line(s), NULL, label, fmt, ap);
        va_end(ap);
}

static bool is_alt_key(const char *key)
{
        for (size_t i = 0; i < ELEMENTSOF(alt_keys); i++)
                if (strcmp(alt_keys[i], key) == 0)
                        return true;
        return false;
}

/* Same host, port, user and jump host: the same destination twice. */
static bool same_destination(const struct tunnel_alt *a, const struct tunnel_alt *b)
{
        return strcmp_null(a->host, b->host) == 0 && a->port == b->port && strcmp_null(a->user, b->user) == 0 &&
               strcmp_null(a->jump_host, b->jump_host) == 0;
}

/* One group of the list into a (its members parsed by the tunnel's own table). */
static void parse_one(struct parser *p, const config_setting_t *g, const char *label, struct tunnel_alt *a)
{
        struct tunnel_spec scratch = {0};
        int n = config_setting_length(g);
        char sub[NAME_MAX_LEN + 96];

        for (int i = 0; i < n; i++) {
                const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
                const char *key = config_setting_name(m);

                snprintf(sub, sizeof(sub), "%s.%s", label, key);
                if (!is_alt_key(key)) {
                        adiag(p, m, sub, "is not a destination setting: an alternative names host, port, user, "
                              "identity_file, jump_host, host_keys or jump_host_keys; the rest is the tunnel's");
                        continue;
                }
                (void)config_parse_tunnel_setting(p, m, key, sub, &scratch);
        }
        if (n == 0)
                adiag(p, g, label, "names nothing: an alternative sets at least its host or port");
        a->host = scratch.host;
        a->user = scratch.user;
        a->port = scratch.port;
        a->identity_file = scratch.identity_file;
        a->jump_host = scratch.jump_host;
        a->host_keys = scratch.host_keys;
        a->jump_host_keys = scratch.jump_host_keys;
        a->source_line = (int)config_setting_source_line(g);
        scratch.host = scratch.user = scratch.identity_file = scratch.jump_host = NULL;
        scratch.host_keys = scratch.jump_host_keys = NULL;
        tunnel_spec_done(&scratch);
}

void config_alts_parse(struct parser *p, const config_setting_t *s, const char *label, struct tunnel_alts *ret)
{
        struct tunnel_alts a = {0};
        size_t errs_before = p->errs->n;
        int n;

        if (config_setting_type(s) != CONFIG_TYPE_LIST) {
                adiag(p, s, label, "must be a list of groups: %s = ( { host = \"…\"; port = …; }, … )",
                      config_setting_name(s));
                return;
        }
        n = config_setting_length(s);
        if (n > CONFIG_ALTS_MAX) {
                adiag(p, s, label, "%d alternatives: at most %d", n, CONFIG_ALTS_MAX);
                return;
        }
        a.v = calloc((size_t)n + 1, sizeof(*a.v));
        if (!a.v) {
                p->oom = -ENOMEM;
                return;
        }
        for (int i = 0; i < n; i++) {
                const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
                char sub[NAME_MAX_LEN + 80];

                /* numbered as status numbers them: 0 is the tunnel's own destination */
                snprintf(sub, sizeof(sub), "%s[%d]", label, i + 1);
                if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
                        adiag(p, g, sub, "must be a group { host = \"…\"; … }, not a single value");
                        continue;
                }
                parse_one(p, g, sub, &a.v[a.n]);
                for (size_t k = 0; k < a.n; k++)
                        if (same_destination(&a.v[k], &a.v[a.n]))
                                adiag(p, g, sub, "the same destination as alternatives[%zu]", k + 1);
                a.n++;
        }
        if (p->errs->n != errs_before) {
                tunnel_alts_done(&a);
                return;
        }
        tunnel_alts_done(ret);
        *ret = a;
}

/* ---- checks ---- */

_printf_(4, 5)
static void tdiag(struct parser *p, const struct tunnel_spec *t, size_t k, const char *fmt, ...)
{
        char key[48];
        va_list ap;

        snprintf(key, sizeof(key), "alternatives[%zu]", k);
        va_start(ap, fmt);
        config_vdiag(p, t->source_file, t->alts.v[k - 1].source_line, t->name, key, fmt, ap);
        va_end(ap);
}

/* Destination i of t as ssh would reach it (the tunnel's defaults filled in). */
static void effective_destination(const struct tunnel_spec *t, size_t i, struct tunnel_alt *ret)
{
        const struct tunnel_alt *a = i > 0 ? &t->alts.v[i - 1] : NULL;

        *ret = (struct tunnel_alt){
                .host = a && a->host ? a->host : t->host,
                .port = a && a->port ? a->port : t->port,
                .user = a && a->user ? a->user : t->user,
                .jump_host = a && a->jump_host ? a->jump_host : t->jump_host,
        };
}

/* An alternative that is, once the tunnel's settings fill it in, a destination listed
 * before it (the tunnel's own host, say): failing over to it would retry the same server. */
static void check_distinct(struct parser *p, const struct tunnel_spec *t)
{
        if (!t->alts.v)
                return;
        for (size_t k = 1; k <= t->alts.n; k++) {
                struct tunnel_alt mine;

                effective_destination(t, k, &mine);
                for (size_t j = 0; j < k; j++) {
                        struct tunnel_alt earlier;

                        effective_destination(t, j, &earlier);
                        if (!same_destination(&mine, &earlier))
                                continue;
                        if (j == 0)
                                tdiag(p, t, k, "the tunnel's own destination (the same host, port, user and "
                                      "jump host): failing over to it would retry the same server");
                        else
                                tdiag(p, t, k, "the same destination as alternatives[%zu] once the tunnel's "
                                      "settings fill it in", j);
                        break;
                }
        }
}

/* Each alternative's effective spec, named "NAME.alternatives[I]" at the alternative's
 * line, through the checks a tunnel gets: pinned keys against the rest, its files. An
 * alternative that changes nothing those checks read is not checked twice. */
void config_alts_check(struct parser *p, const struct config *c, bool files)
{
        for (size_t i = 0; i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];

                check_distinct(p, t);
                for (size_t k = 1; k <= t->alts.n; k++) {
                        const struct tunnel_alt *a = &t->alts.v[k - 1];
                        struct tunnel_spec eff;
                        struct config one = { .tunnels = &eff, .n_tunnels = 1 };
                        char *name;

                        if (!a->host_keys && !a->jump_host_keys && !a->jump_host && !a->identity_file)
                                continue;
                        if (tunnel_spec_alternative(t, k, &eff) < 0) {
                                p->oom = -ENOMEM;
                                return;
                        }
                        if (asprintf(&name, "%s.alternatives[%zu]", t->name, k) < 0) {
                                tunnel_spec_done(&eff);
                                p->oom = -ENOMEM;
                                return;
                        }
                        free(eff.name);
                        eff.name = name;
                        /* only what the alternative brings: the tunnel's own were checked as its */
                        free(eff.ssh_config_file);
                        free(eff.on_state_change);
                        eff.ssh_config_file = eff.on_state_change = NULL;
                        if (!a->identity_file) {
                                free(eff.identity_file);
                                eff.identity_file = NULL;
                        }
                        if (a->host_keys || a->jump_host_keys || a->jump_host)
                                config_pins_check(p, &one);
                        if (files)
                                config_check_files(p, &one);
                        tunnel_spec_done(&eff);
                }
        }
}
