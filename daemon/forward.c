/* SPDX-License-Identifier: MIT */
#include "forward.h"

#include <stdio.h>
#include <string.h>

#define FIELDS_MAX 5

struct fields {
        char v[FIELDS_MAX][VALUE_MAX_LEN + 1];
        bool bracketed[FIELDS_MAX];
        int n;
};

/* Split at ':' outside brackets, brackets dropped (as ssh's hpdelim). false if malformed. */
static bool split(const char *s, struct fields *f)
{
        size_t len = 0;
        bool in_bracket = false;

        f->n = 0;
        f->bracketed[0] = false;
        for (const char *p = s;; p++) {
                if (*p == '[' && !in_bracket && len == 0) {
                        in_bracket = true;
                        f->bracketed[f->n] = true;
                        continue;
                }
                if (*p == ']' && in_bracket) {
                        in_bracket = false;
                        if (p[1] && p[1] != ':')
                                return false;
                        continue;
                }
                if ((*p == ':' && !in_bracket) || *p == '\0') {
                        if (in_bracket)
                                return false;
                        f->v[f->n][len] = '\0';
                        f->n++;
                        if (*p == '\0')
                                return true;
                        if (f->n >= FIELDS_MAX)
                                return false;
                        len = 0;
                        f->bracketed[f->n] = false;
                        continue;
                }
                if (*p == '[' || *p == ']' || len >= VALUE_MAX_LEN)
                        return false;
                f->v[f->n][len++] = *p;
        }
}

static bool is_path(const char *f) { return f[0] == '/'; }

static bool is_address(const char *f, bool bracketed, bool allow_wildcard)
{
        if (!*f)
                return allow_wildcard;
        if (allow_wildcard && strcmp(f, "*") == 0)
                return true;
        if (f[0] == '-')
                return false;
        if (!bracketed && strchr(f, ':'))
                return false;   /* IPv6 addresses need brackets in a forward spec */
        for (const char *p = f; *p; p++)
                if (!validate_host_char(*p))
                        return false;
        return true;
}

static void set_tcp(struct forward_end *e, const char *host, bool given, int port)
{
        snprintf(e->host, sizeof(e->host), "%.*s", FORWARD_HOST_MAX, host);     /* length checked */
        e->host_given = given;
        e->port = port;
        e->path[0] = '\0';
}

static void set_path(struct forward_end *e, const char *path)
{
        e->host[0] = '\0';
        e->host_given = false;
        e->port = -1;
        snprintf(e->path, sizeof(e->path), "%.*s", FORWARD_PATH_MAX, path);     /* length checked */
}

/* A listen side that is a port or a path, with no bind address. */
static bool set_listen_port_or_path(struct forward_end *e, const char *f, int min)
{
        int port;

        if (validate_parse_port(f, min, &port)) {
                set_tcp(e, "", false, port);
                return true;
        }
        if (is_path(f)) {
                set_path(e, f);
                return true;
        }
        return false;
}

/* ssh could not bind or reach a longer one, and a forward costs no more than it must. */
static const char *field_too_long(const struct fields *f)
{
        for (int i = 0; i < f->n; i++) {
                size_t len = strlen(f->v[i]);

                if (is_path(f->v[i]) && len > FORWARD_PATH_MAX)
                        return "has a Unix socket path longer than 107 bytes (the most a socket address holds)";
                if (len > FORWARD_HOST_MAX)
                        return "has a host name longer than 255 characters";
        }
        return NULL;
}

const char *forward_parse(enum forward_kind kind, const char *spec, struct forward *ret)
{
        static struct fields f;         /* 5 KiB: not on the stack of every caller */
        const char *r = validate_argv_word(spec);
        int listen_min = kind == FORWARD_REMOTE ? 0 : 1;
        struct forward out = { .kind = kind };
        int p0, p1;

        if (r)
                return r;
        if (spec[0] == '-')
                return "must not begin with '-'";
        if (!split(spec, &f))
                return "is not a forward specification (unbalanced brackets or too many fields)";
        if ((r = field_too_long(&f)))
                return r;

        if (kind == FORWARD_DYNAMIC) {
                out.socks = true;
                if (f.n == 1 && validate_parse_port(f.v[0], 1, &p0))
                        set_tcp(&out.listen, "", false, p0);
                else if (f.n == 2 && is_address(f.v[0], f.bracketed[0], true) && validate_parse_port(f.v[1], 1, &p1))
                        set_tcp(&out.listen, f.v[0], true, p1);
                else
                        return "must be [bind_address:]port with a port from 1 to 65535";
                goto done;
        }

        switch (f.n) {
        case 1:
                /* -R port: a reverse SOCKS proxy (ssh answers it on the server) */
                if (kind == FORWARD_REMOTE && validate_parse_port(f.v[0], 0, &p0)) {
                        set_tcp(&out.listen, "", false, p0);
                        out.socks = true;
                        goto done;
                }
                break;
        case 2:
                if (kind == FORWARD_REMOTE && is_address(f.v[0], f.bracketed[0], true) && validate_parse_port(f.v[1], 0, &p1)) {
                        set_tcp(&out.listen, f.v[0], true, p1);
                        out.socks = true;
                        goto done;
                }
                if (is_path(f.v[1]) && set_listen_port_or_path(&out.listen, f.v[0], listen_min)) {
                        set_path(&out.connect, f.v[1]);
                        goto done;
                }
                break;
        case 3:
                if (is_address(f.v[1], f.bracketed[1], false) && validate_parse_port(f.v[2], 1, &p1) &&
                    set_listen_port_or_path(&out.listen, f.v[0], listen_min)) {
                        set_tcp(&out.connect, f.v[1], true, p1);
                        goto done;
                }
                if (is_address(f.v[0], f.bracketed[0], true) && validate_parse_port(f.v[1], listen_min, &p0) && is_path(f.v[2])) {
                        set_tcp(&out.listen, f.v[0], true, p0);
                        set_path(&out.connect, f.v[2]);
                        goto done;
                }
                break;
        case 4:
                if (is_address(f.v[0], f.bracketed[0], true) && validate_parse_port(f.v[1], listen_min, &p0) &&
                    is_address(f.v[2], f.bracketed[2], false) && validate_parse_port(f.v[3], 1, &p1)) {
                        set_tcp(&out.listen, f.v[0], true, p0);
                        set_tcp(&out.connect, f.v[2], true, p1);
                        goto done;
                }
                break;
        }
        return kind == FORWARD_LOCAL
                ? "must be [bind_address:]port:host:hostport (or a form with Unix socket paths), ports from 1 to 65535"
                : "must be [bind_address:]port:host:hostport, [bind_address:]port, or a form with Unix socket paths; ports from 0 to 65535";
done:
        if (ret)
                *ret = out;
        return NULL;
}

const char *forward_validate_local(const char *s) { return forward_parse(FORWARD_LOCAL, s, NULL); }
const char *forward_validate_remote(const char *s) { return forward_parse(FORWARD_REMOTE, s, NULL); }
const char *forward_validate_dynamic(const char *s) { return forward_parse(FORWARD_DYNAMIC, s, NULL); }

const char *forward_local_socket(const char *spec, char *buf, unsigned size)
{
        static struct forward f;

        if (forward_parse(FORWARD_LOCAL, spec, &f) || f.listen.port >= 0)
                return NULL;
        snprintf(buf, size, "%s", f.listen.path);
        return buf;
}
