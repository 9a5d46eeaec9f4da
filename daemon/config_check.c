/* SPDX-License-Identifier: MIT */
/* config_check: what is checked across tunnels once everything is read: after cycles,
 * port clashes (clash.h), shared connections, and the files the tunnels name (readable,
 * keys not readable by others, permissions like sshd's StrictModes). ssh's own judgement
 * of its options is config_ssh.c's. */
#include "config.h"
#include "config_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clash.h"
#include "log.h"
#include "safe_path.h"
#include "ssh_argv.h"

void config_vdiag(struct parser *p, const char *file, int line, const char *tunnel, const char *key,
                  const char *fmt, va_list ap)
{
        _cleanup_free_ char *what = NULL;
        int r;

        if (vasprintf(&what, fmt, ap) < 0) {
                what = NULL;
                p->oom = -ENOMEM;
                return;
        }
        if (line < 0)
                r = config_push_error(p->errs, "%s: %s (by default): %s", file, key, what);
        else
                r = config_push_error(p->errs, "%s:%d: %s%s%s: %s", file, line, tunnel ? tunnel : "",
                                      tunnel ? "." : "", key, what);
        if (r < 0)
                p->oom = -ENOMEM;
}

void config_diag_tunnel(struct parser *p, const struct tunnel_spec *t, const char *key, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        config_vdiag(p, t->source_file, t->source_line, t->name, key, fmt, ap);
        va_end(ap);
}

static ssize_t find_tunnel(const struct config *c, const char *name)
{
        for (size_t i = 0; i < c->n_tunnels; i++)
                if (strcmp(c->tunnels[i].name, name) == 0)
                        return (ssize_t)i;
        return -1;
}

/* after: known names, no self, no cycle (depth-first with colours). */
/* Depth-first over "after" edges; path holds the tunnels on the way down. On a cycle,
 * *ret_at is where it closes and path[*ret_depth..] are its members. */
static bool after_cycle(const struct config *c, size_t i, unsigned char *colour, size_t *path, size_t depth,
                        size_t *ret_at, size_t *ret_depth)
{
        colour[i] = 1;
        path[depth] = i;
        for (char **a = c->tunnels[i].after; a && *a; a++) {
                ssize_t j = find_tunnel(c, *a);
                if (j < 0)
                        continue;
                if (colour[j] == 1) {
                        *ret_at = (size_t)j;    /* the back edge closes the cycle here */
                        *ret_depth = depth;
                        return true;
                }
                if (colour[j] == 0 && after_cycle(c, (size_t)j, colour, path, depth + 1, ret_at, ret_depth))
                        return true;
        }
        colour[i] = 2;
        return false;
}

void config_check_after(struct parser *p, const struct config *c)
{
        _cleanup_free_ unsigned char *colour = NULL;
        _cleanup_free_ size_t *path = NULL;
        bool refs_ok = true;

        for (size_t i = 0; i < c->n_tunnels; i++)
                for (char **a = c->tunnels[i].after; a && *a; a++) {
                        if (strcmp(*a, c->tunnels[i].name) == 0) {
                                config_diag_tunnel(p, &c->tunnels[i], "after", "a tunnel cannot wait for itself");
                                refs_ok = false;
                        } else if (find_tunnel(c, *a) < 0) {
                                config_diag_tunnel(p, &c->tunnels[i], "after", "no tunnel is named \"%s\"", *a);
                                refs_ok = false;
                        } else if (c->tunnels[i].enabled && !c->tunnels[find_tunnel(c, *a)].enabled) {
                                config_diag_tunnel(p, &c->tunnels[i], "after",
                                            "\"%s\" is disabled: this tunnel would wait for it forever", *a);
                                refs_ok = false;
                        }
                }
        if (!refs_ok)
                return;
        colour = calloc(c->n_tunnels + 1, 1);
        if (!colour) {
                p->oom = -ENOMEM;
                return;
        }
        path = calloc(c->n_tunnels + 1, sizeof(size_t));
        if (!path) {
                p->oom = -ENOMEM;
                return;
        }
        for (size_t i = 0; i < c->n_tunnels; i++) {
                size_t at = 0, last = 0, first = 0;
                struct buf b = {0};
                _cleanup_free_ char *cycle = NULL;

                if (colour[i] != 0 || !after_cycle(c, i, colour, path, 0, &at, &last))
                        continue;
                while (path[first] != at)
                        first++;
                /* "a waits for b, b for c, c for a": a -> b -> c -> a */
                for (size_t k = first; k <= last; k++)
                        buf_printf(&b, "%s -> ", c->tunnels[path[k]].name);
                buf_printf(&b, "%s", c->tunnels[at].name);
                if (buf_steal(&b, &cycle) < 0) {
                        p->oom = -ENOMEM;
                        return;
                }
                config_diag_tunnel(p, &c->tunnels[at], "after", "is part of a cycle of tunnels waiting for each other: %s",
                            cycle);
                return;
        }
}

/* ---- port clashes (clash.h has the rules) ---- */

struct clash_owner {
        const struct tunnel_spec *t;
        const char *spec;
        const char *setting;
};

struct clash_report {
        const struct clash_entry *a, *b;
};

struct clash_reports {
        struct clash_report *v;
        size_t n, cap;
        bool oom;
};

static void on_clash(const struct clash_entry *a, const struct clash_entry *b, void *userdata)
{
        struct clash_reports *r = userdata;

        if (r->n == r->cap) {
                struct clash_report *g = realloc(r->v, (r->cap = r->cap ? 2 * r->cap : 16) * sizeof(*g));
                if (!g) {
                        r->oom = true;
                        return;
                }
                r->v = g;
        }
        r->v[r->n++] = (struct clash_report){ a, b };
}

static int compare_reports(const void *x, const void *y)
{
        const struct clash_report *a = x, *b = y;

        return a->b->index < b->b->index ? -1 : a->b->index > b->b->index;
}

/* Two enabled tunnels (or one, twice) that would listen where the other does cannot both
 * work. Sorted, so that 60,000 forwards take milliseconds, not seconds. */
void config_check_ports(struct parser *p, const struct config *c)
{
        static const char *const settings[3] = { "local_forwards", "dynamic_forwards", "remote_forwards" };
        static const enum forward_kind kinds[3] = { FORWARD_LOCAL, FORWARD_DYNAMIC, FORWARD_REMOTE };
        _cleanup_free_ struct clash_entry *v = NULL;
        _cleanup_free_ struct clash_owner *owners = NULL;
        struct clash_reports reports = {0};
        size_t n = 0, total = 0;

        for (size_t i = 0; i < c->n_tunnels; i++)
                total += strv_length(c->tunnels[i].local_forwards) + strv_length(c->tunnels[i].dynamic_forwards) +
                         strv_length(c->tunnels[i].remote_forwards) + strv_length(c->tunnels[i].ssh.local_forwards) +
                         strv_length(c->tunnels[i].ssh.dynamic_forwards) + strv_length(c->tunnels[i].ssh.remote_forwards);
        v = calloc(total + 1, sizeof(*v));
        owners = calloc(total + 1, sizeof(*owners));
        if (!v || !owners) {
                p->oom = -ENOMEM;
                return;
        }
        for (size_t i = 0; i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];
                /* what ssh will set up: with an ssh_config_file, ssh -G's lists */
                char **const lists[3] = { t->ssh.viewed ? t->ssh.local_forwards : t->local_forwards,
                                          t->ssh.viewed ? t->ssh.dynamic_forwards : t->dynamic_forwards,
                                          t->ssh.viewed ? t->ssh.remote_forwards : t->remote_forwards };
                bool gateway_ports = t->ssh.viewed ? t->ssh.gateway_ports : clash_gateway_ports(t->ssh_options);
                char server[VALUE_MAX_LEN + 16];

                if (!t->enabled)
                        continue;
                clash_server_identity(t->ssh.viewed && t->ssh.hostname ? t->ssh.hostname : t->host ? t->host : "",
                                      t->ssh.viewed ? t->ssh.port : t->port, server, sizeof(server));
                for (int k = 0; k < 3; k++)
                        for (char **f = lists[k]; f && *f; f++) {
                                int r = clash_listener_from(kinds[k], *f, server, gateway_ports, &v[n].l);
                                if (r == -ENOMEM) {
                                        p->oom = r;
                                        goto done;
                                }
                                if (r < 0)
                                        continue;       /* invalid: reported by validation */
                                owners[n] = (struct clash_owner){ t, *f, settings[k] };
                                v[n].index = n;
                                v[n].owner = &owners[n];
                                n++;
                        }
        }
        if (clash_find_all(v, n, on_clash, &reports) < 0 || reports.oom) {
                p->oom = -ENOMEM;
                goto done;
        }
        /* in configuration order */
        if (reports.n)
                qsort(reports.v, reports.n, sizeof(*reports.v), compare_reports);
        for (size_t i = 0; i < reports.n; i++) {
                const struct clash_owner *a = reports.v[i].a->owner, *b = reports.v[i].b->owner;
                const struct clash_listener *l = &reports.v[i].b->l;
                char where[VALUE_MAX_LEN + 32];

                if (l->port < 0)
                        snprintf(where, sizeof(where), "%s socket %s", l->kind == FORWARD_REMOTE ? b->t->host : "local",
                                 l->name);
                else
                        snprintf(where, sizeof(where), "%s port %d", l->kind == FORWARD_REMOTE ? b->t->host : "local",
                                 l->port);
                config_diag_tunnel(p, b->t, b->setting, "\"%s\" listens on %s, as \"%s\" of tunnel %s (%s:%d) does",
                            b->spec, where, a->spec, a->t->name, a->t->source_file, a->t->source_line);
        }
done:
        free(reports.v);
        for (size_t i = 0; i < n; i++)
                clash_listener_done(&v[i].l);
}

/* One forward of a share_connection tunnel, as written, for finding the same forward in
 * two tunnels of one connection: on one ssh they would be one forward, and closing one
 * would close the other's (ssh's CLOSE_FWD is for every client). Only a -R of port 0 can
 * be the same in two tunnels (the clash checks refuse the rest). */
struct share_forward {
        size_t group, tunnel;
        int kind, pos;                  /* which list (local, remote, dynamic), where in it */
        const char *spec;
};

static int compare_share_forwards(const void *x, const void *y)
{
        const struct share_forward *a = x, *b = y;
        int r;

        if (a->group != b->group)
                return a->group < b->group ? -1 : 1;
        if (a->kind != b->kind)
                return a->kind - b->kind;
        if ((r = strcmp(a->spec, b->spec)))
                return r;
        return a->tunnel < b->tunnel ? -1 : a->tunnel > b->tunnel;
}

/* The same forward in two tunnels (later, earlier) of one connection; reported once per
 * pair, at the later one, naming its first such forward. */
struct share_clash {
        size_t tunnel, other;
        int kind, pos;
        const char *spec;
};

static int compare_share_clashes(const void *x, const void *y)
{
        const struct share_clash *a = x, *b = y;

        if (a->tunnel != b->tunnel)
                return a->tunnel < b->tunnel ? -1 : 1;
        if (a->other != b->other)
                return a->other < b->other ? -1 : 1;
        return a->kind != b->kind ? a->kind - b->kind : a->pos - b->pos;
}

/* Sorted, so that 10,000 tunnels on one connection do not compare each with each. */
static int check_share_forwards(struct parser *p, const struct config *c, const size_t *group)
{
        _cleanup_free_ struct share_forward *v = NULL;
        _cleanup_free_ struct share_clash *clashes = NULL;
        size_t n = 0, total = 0, n_clashes = 0, cap = 0;

        for (size_t i = 0; i < c->n_tunnels; i++)
                if (c->tunnels[i].share_connection)
                        total += strv_length(tunnel_spec_local_forwards(&c->tunnels[i])) +
                                 strv_length(tunnel_spec_remote_forwards(&c->tunnels[i])) +
                                 strv_length(tunnel_spec_dynamic_forwards(&c->tunnels[i]));
        v = calloc(total + 1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];
                char *const *lists[3] = { tunnel_spec_local_forwards(t), tunnel_spec_remote_forwards(t),
                                          tunnel_spec_dynamic_forwards(t) };

                for (int k = 0; t->share_connection && k < 3; k++)
                        for (int pos = 0; lists[k] && lists[k][pos]; pos++)
                                v[n++] = (struct share_forward){ group[i], i, k, pos, lists[k][pos] };
        }
        qsort(v, n, sizeof(*v), compare_share_forwards);
        for (size_t a = 0; a < n; a++)
                for (size_t b = a + 1; b < n && v[a].group == v[b].group && v[a].kind == v[b].kind &&
                                       strcmp(v[a].spec, v[b].spec) == 0; b++) {
                        if (v[b].tunnel == v[a].tunnel)
                                continue;
                        if (n_clashes == cap) {
                                struct share_clash *grown = realloc(clashes, (cap = cap ? 2 * cap : 8) * sizeof(*grown));
                                if (!grown)
                                        return -ENOMEM;
                                clashes = grown;
                        }
                        clashes[n_clashes++] = (struct share_clash){ v[b].tunnel, v[a].tunnel, v[b].kind, v[b].pos,
                                                                     v[b].spec };
                }
        if (n_clashes)
                qsort(clashes, n_clashes, sizeof(*clashes), compare_share_clashes);
        for (size_t k = 0; k < n_clashes; k++)
                if (!k || clashes[k].tunnel != clashes[k - 1].tunnel || clashes[k].other != clashes[k - 1].other)
                        config_diag_tunnel(p, &c->tunnels[clashes[k].tunnel], "share_connection", "forward \"%s\" is tunnel "
                                    "%s's too, and both would ride one ssh, where they are one forward: give one of "
                                    "them share_connection = false", clashes[k].spec,
                                    c->tunnels[clashes[k].other].name);
        return 0;
}

/* Each share_connection tunnel's connection: the index of the first tunnel it shares one
 * with (itself if none before it). Compared with each connection's first tunnel only, so
 * that 10,000 tunnels on 100 connections cost a million comparisons, not fifty million. */
static int share_groups(const struct config *c, size_t *group)
{
        _cleanup_free_ size_t *firsts = calloc(c->n_tunnels + 1, sizeof(size_t));
        size_t n = 0;

        if (!firsts)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_tunnels; i++) {
                group[i] = i;
                if (!c->tunnels[i].share_connection)
                        continue;
                for (size_t k = 0; k < n && group[i] == i; k++)
                        if (tunnel_spec_shares_connection(&c->tunnels[i], &c->tunnels[firsts[k]]))
                                group[i] = firsts[k];
                if (group[i] == i)
                        firsts[n++] = i;
        }
        return 0;
}

void config_check_share(struct parser *p, const struct config *c)
{
        _cleanup_free_ size_t *group = calloc(c->n_tunnels + 1, sizeof(size_t));

        if (!group || share_groups(c, group) < 0 || check_share_forwards(p, c, group) < 0) {
                p->oom = -ENOMEM;
                return;
        }
        for (size_t i = 0; i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];

                for (char **a = t->after; t->share_connection && a && *a; a++) {
                        ssize_t j = find_tunnel(c, *a);

                        /* both ride one ssh: up and down together, the wait means nothing */
                        if (j >= 0 && c->tunnels[j].share_connection && group[j] == group[i])
                                config_diag_tunnel(p, t, "after", "\"%s\" shares this tunnel's connection "
                                            "(share_connection): they come up and go down together, so one cannot "
                                            "wait for the other; set share_connection = false on one of them, or "
                                            "drop the after", *a);
                }
        }
}

/* Files ssh will read: they must exist, and a key must not be readable by others (ssh
 * ignores such keys). Paths starting with ~ are ssh's to expand. */
void config_check_files(struct parser *p, const struct config *c)
{
        char why[PATH_MAX + 128];

        for (size_t i = 0; i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];
                struct stat st;

                if (!t->enabled)
                        continue;       /* an example, or parked: its files may not exist yet */
                if (t->identity_file && t->identity_file[0] != '~') {
                        if (stat(t->identity_file, &st) < 0)
                                config_diag_tunnel(p, t, "identity_file", "%s: %s", t->identity_file, strerror(errno));
                        else if (!S_ISREG(st.st_mode))
                                config_diag_tunnel(p, t, "identity_file", "%s: not a regular file", t->identity_file);
                        else if (st.st_mode & 077)
                                config_diag_tunnel(p, t, "identity_file",
                                            "%s: readable by group or others (mode %04o): ssh refuses such keys; chmod 600 it",
                                            t->identity_file, st.st_mode & 07777);
                        else if (access(t->identity_file, R_OK) < 0)
                                config_diag_tunnel(p, t, "identity_file", "%s: %s (tunneld runs as uid %d)", t->identity_file,
                                            strerror(errno), (int)geteuid());
                }
                if (t->ssh_config_file && strcmp(t->ssh_config_file, "none") != 0 && t->ssh_config_file[0] != '~') {
                        if (access(t->ssh_config_file, R_OK) < 0)
                                config_diag_tunnel(p, t, "ssh_config_file", "%s: %s", t->ssh_config_file, strerror(errno));
                        else if (!p->opts->allow_insecure && stat(t->ssh_config_file, &st) == 0 && S_ISREG(st.st_mode) &&
                                 safe_path_check(t->ssh_config_file, SAFE_PATH_FILE, why, sizeof(why)) < 0)
                                config_diag_tunnel(p, t, "ssh_config_file", "%s: %s (its ProxyCommand would run as "
                                            "tunneld), or run tunneld with --allow-insecure-config",
                                            t->ssh_config_file, why);
                }
                if (t->on_state_change) {
                        if (access(t->on_state_change, X_OK) < 0)
                                config_diag_tunnel(p, t, "on_state_change", "%s: %s", t->on_state_change, strerror(errno));
                        else if (!p->opts->allow_insecure &&
                                 safe_path_check(t->on_state_change, SAFE_PATH_FILE, why, sizeof(why)) < 0)
                                config_diag_tunnel(p, t, "on_state_change", "%s: %s, or run tunneld with "
                                            "--allow-insecure-config", t->on_state_change, why);
                }
        }
}

/* A configuration file turns into command lines: the file read (f) and its path, every
 * directory and link on the way, by safe_path.h's rule. */
int config_check_file_permissions(FILE *f, const char *path, const struct config_load_options *opts,
                           struct config_errors *errs)
{
        char why[PATH_MAX + 160];
        struct stat st;
        int r;

        if (opts->allow_insecure)
                return 0;
        if (fstat(fileno(f), &st) < 0) {
                r = -errno;
                config_push_error(errs, "%s: cannot stat: %s", path, strerror(-r));
                return r;
        }
        r = safe_path_check(path, SAFE_PATH_FILE, why, sizeof(why));
        if (r >= 0 && safe_path_judge(&st, geteuid(), false, why, sizeof(why)))
                r = -EPERM;     /* what was opened is not what the path shows (now) */
        if (r < 0) {
                config_push_error(errs, "%s: %s, or run tunneld with --allow-insecure-config", path, why);
                return r;
        }
        return 0;
}

/* "FILE:LINE: key: what" at a global setting, or "FILE: key (by default): what". */
_printf_(4, 5)
static void diag_global(struct parser *p, const config_setting_t *root, const char *key, const char *fmt, ...)
{
        const config_setting_t *s = root ? config_setting_get_member(root, key) : NULL;
        va_list ap;

        va_start(ap, fmt);
        config_vdiag(p, p->path, s ? (int)config_setting_source_line(s) : -1, NULL, key, fmt, ap);
        va_end(ap);
}

/* The ssh program: the very file execvp would run (looked up in PATH now, and run by
 * that path from now on, so that a directory earlier in PATH cannot gain an "ssh"
 * later), judged by sshd's rule before anything runs it. Not found: ssh -G, or the
 * exec, says so. */
static void check_ssh_program(struct parser *p, struct config *c, const config_setting_t *root)
{
        _cleanup_free_ char *found = NULL;
        char why[PATH_MAX + 160];
        int r = safe_path_find_program(c->ssh, &found);

        if (r == -ENOMEM)
                p->oom = r;
        if (r < 0)
                return;
        if (!p->opts->allow_insecure && safe_path_check(found, SAFE_PATH_FILE, why, sizeof(why)) < 0) {
                diag_global(p, root, "ssh", "%s: %s (tunneld runs it as uid %d), or run tunneld with "
                            "--allow-insecure-config", found, why, (int)geteuid());
                return;
        }
        free(c->ssh);
        c->ssh = found;
        found = NULL;
}

/* What tunneld runs and the directories it makes or writes files in, before anything
 * runs (-t's ssh -G included): the ssh program, the control socket's directory (the
 * socket, its lock and the runtime directory SOCKET.d are made there under names anyone
 * can guess), the metrics file's (written under unguessable names and renamed: a sticky
 * directory such as /tmp is fine). include_dir is judged before its files are read
 * (config.c). */
void config_check_trusted_paths(struct parser *p, struct config *c, const config_setting_t *root)
{
        const char *sock = p->opts->control_socket ? p->opts->control_socket : c->control_socket;
        char why[PATH_MAX + 160];

        check_ssh_program(p, c, root);
        if (p->opts->allow_insecure)
                return;
        if (sock && strcmp(sock, "none") != 0 && safe_path_check(sock, SAFE_PATH_NEW, why, sizeof(why)) < 0) {
                static const char *const advice = "others could replace or take first what tunneld keeps beside "
                        "the socket (its lock, the runtime directory of the files ssh reads); put the socket in a "
                        "directory only root can write (by default /run/tunneld), or run tunneld with "
                        "--allow-insecure-config";

                if (p->opts->control_socket)
                        config_push_error(p->errs, "--control-socket %s: %s: %s", sock, why, advice);
                else
                        diag_global(p, root, "control_socket", "%s: %s: %s", sock, why, advice);
        }
        if (c->metrics_file && safe_path_check(c->metrics_file, SAFE_PATH_RENAMED, why, sizeof(why)) < 0)
                diag_global(p, root, "metrics_file", "%s: %s: others could replace the file or take its name; put "
                            "it in a directory only root (or tunneld's user) can write, such as node_exporter's "
                            "textfile directory, or in a sticky one such as /tmp, or run tunneld with "
                            "--allow-insecure-config", c->metrics_file, why);
}

/* include_dir itself, before a file of it is read: every entry of it is trusted. */
int config_check_include_dir(struct parser *p, const char *dir, const config_setting_t *root)
{
        char why[PATH_MAX + 160];

        if (p->opts->allow_insecure || safe_path_check(dir, SAFE_PATH_DIR, why, sizeof(why)) >= 0)
                return 0;
        diag_global(p, root, "include_dir", "%s: %s: others could put files in it, or run tunneld with "
                    "--allow-insecure-config", dir, why);
        return -EPERM;
}
