/* SPDX-License-Identifier: MIT */
#include "clash.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

/* One address a listener binds: a family with an address, or every address of it, or a
 * name only the resolver knows. */
struct bound {
        int family;                     /* 4, 6, or 0 for a name */
        bool any;
        const unsigned char *addr;
        const char *name;
};

static const unsigned char loop4[4] = { 127, 0, 0, 1 };
static const unsigned char loop6[16] = { [15] = 1 };

static bool is_loopback_name(const char *s)
{
        struct in_addr a4;
        struct in6_addr a6;

        if (strcasecmp(s, "localhost") == 0)
                return true;
        if (inet_aton(s, &a4))
                return (ntohl(a4.s_addr) >> 24) == 127;
        return inet_pton(AF_INET6, s, &a6) == 1 && memcmp(&a6, loop6, 16) == 0;
}

const char *clash_server_identity(const char *host, int port, char *buf, size_t size)
{
        size_t n = 0;

        if (is_loopback_name(host))
                n = (size_t)snprintf(buf, size, "localhost");
        else
                for (const char *p = host; *p && n + 1 < size; p++)
                        buf[n++] = (char)tolower((unsigned char)*p);
        if (n < size)
                snprintf(buf + n, size - n, ":%d", port > 0 ? port : 22);
        return buf;
}

bool clash_gateway_ports(char *const *ssh_options)
{
        for (char *const *o = ssh_options; o && *o; o++)
                if (strncasecmp(*o, "GatewayPorts=", 13) == 0)
                        return strcasecmp(*o + 13, "yes") == 0 || strcasecmp(*o + 13, "true") == 0;
        return false;
}

/* "/a//b/./c/" → "/a/b/c": two spellings of one path are one socket ("..", which may
 * cross a symbolic link, is kept). */
static char *normalize_path(const char *p)
{
        char *out = malloc(strlen(p) + 2);
        size_t n = 0;

        if (!out)
                return NULL;
        while (*p) {
                size_t len;

                while (*p == '/')
                        p++;
                len = strcspn(p, "/");
                if (len && !(len == 1 && p[0] == '.')) {
                        out[n++] = '/';
                        memcpy(out + n, p, len);
                        n += len;
                }
                p += len;
        }
        if (!n)
                out[n++] = '/';
        out[n] = '\0';
        return out;
}

int clash_listener_from(enum forward_kind kind, const char *spec, const char *server, bool gateway_ports,
                        struct clash_listener *l)
{
        static struct forward f;
        struct in_addr a4;
        struct in6_addr a6;

        *l = (struct clash_listener){ .kind = kind, .gateway_ports = gateway_ports };
        if (forward_parse(kind, spec, &f))
                return -EINVAL;
        if (kind == FORWARD_REMOTE && server && !(l->server = strdup(server)))
                return -ENOMEM;
        if (f.listen.port < 0) {
                l->port = -1;
                l->name = normalize_path(f.listen.path);
                return l->name ? 0 : -ENOMEM;
        }
        l->port = f.listen.port;
        if (!f.listen.host_given)
                l->bind = CLASH_BIND_NONE;
        else if (!f.listen.host[0] || strcmp(f.listen.host, "*") == 0)
                l->bind = CLASH_BIND_ALL;
        else if (strcasecmp(f.listen.host, "localhost") == 0)
                l->bind = CLASH_BIND_LOCALHOST;
        else if (inet_aton(f.listen.host, &a4)) {
                l->bind = CLASH_BIND_V4;
                memcpy(l->addr, &a4, 4);
        } else if (inet_pton(AF_INET6, f.listen.host, &a6) == 1) {
                l->bind = CLASH_BIND_V6;
                memcpy(l->addr, &a6, 16);
        } else {
                l->bind = CLASH_BIND_NAME;
                l->name = strdup(f.listen.host);
                if (!l->name)
                        return -ENOMEM;
                for (char *p = l->name; *p; p++)
                        *p = (char)tolower((unsigned char)*p);
        }
        l->exact_loopback = f.listen.host_given && (strcmp(f.listen.host, "127.0.0.1") == 0 ||
                                                    strcmp(f.listen.host, "::1") == 0);
        return 0;
}

void clash_listener_done(struct clash_listener *l)
{
        free(l->server);
        free(l->name);
        l->server = l->name = NULL;
}

static size_t add_loopback(struct bound *b, size_t n)
{
        b[n++] = (struct bound){ .family = 4, .addr = loop4 };
        b[n++] = (struct bound){ .family = 6, .addr = loop6 };
        return n;
}

static size_t add_all(struct bound *b, size_t n)
{
        b[n++] = (struct bound){ .family = 4, .any = true };
        b[n++] = (struct bound){ .family = 6, .any = true };
        return n;
}

static size_t add_as_written(const struct clash_listener *l, struct bound *b, size_t n)
{
        static const unsigned char zero[16];

        switch (l->bind) {
        case CLASH_BIND_V4:
                b[n++] = (struct bound){ .family = 4, .any = memcmp(l->addr, zero, 4) == 0, .addr = l->addr };
                return n;
        case CLASH_BIND_V6:
                b[n++] = (struct bound){ .family = 6, .any = memcmp(l->addr, zero, 16) == 0, .addr = l->addr };
                return n;
        case CLASH_BIND_NAME:
                b[n++] = (struct bound){ .name = l->name };
                return n;
        case CLASH_BIND_LOCALHOST:
                return add_loopback(b, n);
        case CLASH_BIND_ALL:
        case CLASH_BIND_NONE:
                return add_all(b, n);
        }
        return n;
}

/* What l binds: ssh's channel_fwd_bind_addr(), for the client (-L/-D) or for a server
 * with sshd's GatewayPorts = server_gp (0 no, 1 yes, 2 clientspecified). At most two. */
static size_t bound_addresses(const struct clash_listener *l, int server_gp, struct bound b[2])
{
        if (l->kind != FORWARD_REMOTE) {
                if (l->bind == CLASH_BIND_NONE)
                        return l->gateway_ports ? add_all(b, 0) : add_loopback(b, 0);
                return add_as_written(l, b, 0);
        }
        switch (server_gp) {
        case 0:
                if (l->exact_loopback)
                        return add_as_written(l, b, 0);
                return add_loopback(b, 0);
        case 1:
                return add_all(b, 0);
        default:
                return add_as_written(l, b, 0);
        }
}

static bool bounds_clash(const struct bound *x, const struct bound *y)
{
        if (!x->family || !y->family)
                return !x->family && !y->family && strcmp(x->name, y->name) == 0;
        if (x->family != y->family)
                return false;   /* IPV6_V6ONLY: 0.0.0.0 and :: are two listeners */
        return x->any || y->any || memcmp(x->addr, y->addr, x->family == 4 ? 4 : 16) == 0;
}

static bool clash_under(const struct clash_listener *a, const struct clash_listener *b, int server_gp)
{
        struct bound ba[2], bb[2];
        size_t na = bound_addresses(a, server_gp, ba), nb = bound_addresses(b, server_gp, bb);

        for (size_t i = 0; i < na; i++)
                for (size_t j = 0; j < nb; j++)
                        if (bounds_clash(&ba[i], &bb[j]))
                                return true;
        return false;
}

bool clash_listeners_clash(const struct clash_listener *a, const struct clash_listener *b)
{
        bool remote_a = a->kind == FORWARD_REMOTE, remote_b = b->kind == FORWARD_REMOTE;

        if (remote_a != remote_b || (remote_a && strcmp_null(a->server, b->server) != 0))
                return false;   /* not on the same host */
        if ((a->port < 0) != (b->port < 0))
                return false;
        if (a->port < 0)
                return strcmp(a->name, b->name) == 0;
        if (a->port != b->port || a->port == 0)
                return false;   /* port 0: the server picks a free one */
        if (!remote_a)
                return clash_under(a, b, 0);
        /* the server's GatewayPorts is unknown: only a clash under every setting is certain */
        return clash_under(a, b, 0) && clash_under(a, b, 1) && clash_under(a, b, 2);
}

/* ---- many at once ---- */

static int compare_entries(const void *x, const void *y)
{
        const struct clash_entry *a = x, *b = y;
        int r;

        if (a->l.kind == FORWARD_REMOTE) {
                if (b->l.kind != FORWARD_REMOTE)
                        return 1;
        } else if (b->l.kind == FORWARD_REMOTE)
                return -1;
        r = strcmp(a->l.server ? a->l.server : "", b->l.server ? b->l.server : "");
        if (r)
                return r;
        if (a->l.port != b->l.port)
                return a->l.port < b->l.port ? -1 : 1;
        if (a->l.port < 0 && (r = strcmp(a->l.name, b->l.name)))
                return r;
        return a->index < b->index ? -1 : a->index > b->index;
}

static bool same_group(const struct clash_entry *a, const struct clash_entry *b)
{
        return (a->l.kind == FORWARD_REMOTE) == (b->l.kind == FORWARD_REMOTE) &&
               strcmp_null(a->l.server, b->l.server) == 0 && a->l.port == b->l.port &&
               (a->l.port >= 0 || strcmp(a->l.name, b->l.name) == 0);
}

/* Where each address was first bound in a group of local listeners on one port: the
 * earliest entry a newcomer clashes with is the first holder of one of its addresses, the
 * first wildcard of one of its families, or, if it is a wildcard, the first entry of that
 * family. So a group costs O(n), however many listeners share the port. */
struct slot {
        bool used;
        int family;                     /* 4, 6, 0 for a name */
        unsigned char addr[16];
        const char *name;
        size_t at;                      /* index into v */
};

struct first_table {
        struct slot *slots;
        size_t mask;
};

static size_t hash_bound(const struct bound *b)
{
        size_t h = 1469598103934665603ull;
        const unsigned char *p = b->family ? b->addr : (const unsigned char *)b->name;
        size_t len = b->family == 4 ? 4 : b->family == 6 ? 16 : strlen(b->name);

        for (size_t i = 0; i < len; i++)
                h = (h ^ p[i]) * 1099511628211ull;
        return h ^ (size_t)b->family;
}

static struct slot *find_slot(struct first_table *t, const struct bound *b)
{
        for (size_t i = hash_bound(b) & t->mask;; i = (i + 1) & t->mask) {
                struct slot *s = &t->slots[i];
                if (!s->used || (s->family == b->family &&
                                 (b->family ? memcmp(s->addr, b->addr, b->family == 4 ? 4 : 16) == 0
                                            : strcmp(s->name, b->name) == 0)))
                        return s;
        }
}

#define NONE ((size_t)-1)

static size_t earlier(size_t a, size_t b)
{
        return a < b ? a : b;   /* NONE is the largest */
}

static int scan_local_group(struct clash_entry *v, size_t start, size_t end, clash_found_t found, void *userdata)
{
        size_t size = 8, first_any[7] = { NONE, NONE, NONE, NONE, NONE, NONE, NONE };
        size_t first_wild[7] = { NONE, NONE, NONE, NONE, NONE, NONE, NONE };
        struct first_table t;

        while (size < 4 * (end - start))
                size *= 2;
        t.slots = calloc(size, sizeof(*t.slots));
        if (!t.slots)
                return -ENOMEM;
        t.mask = size - 1;
        for (size_t j = start; j < end; j++) {
                struct bound b[2];
                size_t nb = bound_addresses(&v[j].l, 0, b), best = NONE;

                for (size_t k = 0; k < nb; k++) {
                        int f = b[k].family;

                        if (f)
                                best = earlier(best, earlier(first_wild[f], b[k].any ? first_any[f] : NONE));
                        if (!f || !b[k].any) {
                                const struct slot *s = find_slot(&t, &b[k]);
                                if (s->used)
                                        best = earlier(best, s->at);
                        }
                }
                if (best != NONE)
                        found(&v[best], &v[j], userdata);
                for (size_t k = 0; k < nb; k++) {
                        int f = b[k].family;

                        if (f) {
                                first_any[f] = earlier(first_any[f], j);
                                if (b[k].any)
                                        first_wild[f] = earlier(first_wild[f], j);
                        }
                        if (!f || !b[k].any) {
                                struct slot *s = find_slot(&t, &b[k]);
                                if (!s->used)
                                        *s = (struct slot){ .used = true, .family = f, .name = b[k].name, .at = j };
                                if (f)
                                        memcpy(s->addr, b[k].addr, f == 4 ? 4 : 16);
                        }
                }
        }
        free(t.slots);
        return 0;
}

int clash_find_all(struct clash_entry *v, size_t n, clash_found_t found, void *userdata)
{
        /* Sorted by (host, port or path, index): only entries of one group can clash. */
        qsort(v, n, sizeof(*v), compare_entries);
        for (size_t start = 0, end; start < n; start = end) {
                for (end = start + 1; end < n && same_group(&v[start], &v[end]); end++)
                        ;
                if (v[start].l.port < 0) {
                        /* one path: every later one clashes with the first */
                        for (size_t j = start + 1; j < end; j++)
                                found(&v[start], &v[j], userdata);
                        continue;
                }
                if (v[start].l.port == 0)
                        continue;       /* the server picks */
                if (v[start].l.kind != FORWARD_REMOTE) {
                        int r = scan_local_group(v, start, end, found, userdata);
                        if (r < 0)
                                return r;
                        continue;
                }
                /* -R on one server and port: few, and "clash under every GatewayPorts" is no
                 * property of single addresses: pairwise */
                for (size_t j = start + 1; j < end; j++)
                        for (size_t i = start; i < j; i++)
                                if (clash_listeners_clash(&v[i].l, &v[j].l)) {
                                        found(&v[i], &v[j], userdata);
                                        break;  /* one report per forward */
                                }
        }
        return 0;
}
