/* SPDX-License-Identifier: MIT */
#include "ctl_protocol.h"

#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "json_write.h"
#include "log.h"
#include "metrics.h"
#include "publish.h"
#include "tunnel_json.h"

#ifndef TUNNELD_VERSION
#define TUNNELD_VERSION "unknown"
#endif

struct request {
        struct supervisor *sup;
        const struct json *json;
        const char *cmd;
        const struct ctl_peer *peer;
        struct buf *out;
        struct ctl_effect *effect;
};

_printf_(2, 0)
static void reply_errorv(struct buf *out, const char *fmt, va_list ap)
{
        struct json_writer w = json_writer_init(out);
        char text[512];

        vsnprintf(text, sizeof(text), fmt, ap);
        json_begin_object(&w);
        json_field_bool(&w, "ok", false);
        json_field_string(&w, "error", text);
        json_end_object(&w);
        buf_puts(out, "\n");
}

void ctl_protocol_error(struct buf *out, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        reply_errorv(out, fmt, ap);
        va_end(ap);
}

static void reply_errors(struct buf *out, const char *error, const struct config_errors *errs)
{
        struct json_writer w = json_writer_init(out);

        json_begin_object(&w);
        json_field_bool(&w, "ok", false);
        json_field_string(&w, "error", error);
        json_field_strv(&w, "errors", errs->lines);
        json_end_object(&w);
        buf_puts(out, "\n");
}

/* The tunnels a request names: "tunnels":[…] or "all":true. NULL-terminated array in
 * *ret (borrowed pointers), or an error reply. */
static int select_tunnels(const struct request *r, bool all_by_default, struct tunnel ***ret)
{
        const struct json *names = json_get(r->json, "tunnels");
        bool all = json_get_bool(r->json, "all", false);
        size_t n = names && names->type == JSON_ARRAY ? names->n : 0;
        struct tunnel **v;

        if (names && names->type != JSON_ARRAY) {
                ctl_protocol_error(r->out, "\"tunnels\" must be a list of names");
                return -EINVAL;
        }
        if (all && n) {
                ctl_protocol_error(r->out, "give tunnel names or \"all\", not both");
                return -EINVAL;
        }
        if (!all && !n && !all_by_default) {
                ctl_protocol_error(r->out, "name at least one tunnel, or set \"all\"");
                return -EINVAL;
        }
        if (all || !n)
                n = supervisor_count(r->sup);
        v = calloc(n + 1, sizeof(struct tunnel *));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const struct json *name = all || !names ? NULL : names->items[i];

                if (!name) {
                        v[i] = supervisor_get(r->sup, i);
                        continue;
                }
                if (name->type != JSON_STRING) {
                        ctl_protocol_error(r->out, "\"tunnels\" must be a list of names");
                        free(v);
                        return -EINVAL;
                }
                v[i] = supervisor_find(r->sup, name->string);
                if (!v[i]) {
                        ctl_protocol_error(r->out, "no such tunnel: %s%s", name->string,
                                           supervisor_is_loading(r->sup) ? " (tunneld is still loading its configuration)"
                                                                         : "");
                        free(v);
                        return -ENOENT;
                }
        }
        *ret = v;
        return 0;
}

static void reply_tunnels(const struct request *r, struct tunnel **v, bool with_daemon)
{
        struct json_writer w = json_writer_init(r->out);
        double now = now_mono();

        json_begin_object(&w);
        json_field_bool(&w, "ok", true);
        if (with_daemon) {
                _cleanup_free_ char *status = NULL;

                json_field_string(&w, "version", TUNNELD_VERSION);
                json_field_int(&w, "pid", getpid());
                json_field_seconds(&w, "uptime", now - supervisor_started_at(r->sup));
                json_field_string(&w, "config", supervisor_config(r->sup)->path);
                if (publish_status_text(r->sup, &status) >= 0)
                        json_field_string(&w, "status", status);
        }
        json_write_key(&w, "tunnels");
        json_begin_array(&w);
        for (size_t i = 0; v[i]; i++) {
                struct tunnel_status st;

                tunnel_get_status(v[i], now, &st);
                tunnel_json_write(&w, &st);
        }
        json_end_array(&w);
        json_end_object(&w);
        buf_puts(r->out, "\n");
}

static void handle_status(const struct request *r)
{
        _cleanup_free_ struct tunnel **v = NULL;

        if (select_tunnels(r, true, &v) >= 0)
                reply_tunnels(r, v, true);
}

/* status now, then every state change: the reply is the snapshot the changes follow. */
static void handle_events(const struct request *r)
{
        _cleanup_free_ struct tunnel **v = NULL;
        const struct json *names = json_get(r->json, "tunnels");

        if (select_tunnels(r, true, &v) < 0)
                return;
        for (size_t i = 0; names && names->type == JSON_ARRAY && i < names->n; i++)
                if (strv_push(&r->effect->names, names->items[i]->string) < 0) {
                        r->effect->names = strv_free(r->effect->names);
                        ctl_protocol_error(r->out, "out of memory");
                        return;
                }
        r->effect->subscribe = true;
        reply_tunnels(r, v, true);
}

/* As tunneld -t would. Only those who may change tunnels make tunneld ask ssh (a process
 * per distinct set of options): a read-only client gets every check but ssh's. */
static void handle_check(const struct request *r)
{
        struct config_load_options opts = supervisor_config(r->sup)->load_options;
        struct config_errors errs = {0};
        struct config *c = NULL;
        const char *path = supervisor_config(r->sup)->path;
        struct json_writer w = json_writer_init(r->out);

        opts.ask_ssh = r->peer->may_write ? CONFIG_SSH_STRICT : CONFIG_SSH_SKIP;
        if (config_load(path, &opts, &c, &errs) < 0) {
                reply_errors(r->out, "configuration invalid", &errs);
                config_errors_clear(&errs);
                return;
        }
        json_begin_object(&w);
        json_field_bool(&w, "ok", true);
        json_field_uint(&w, "tunnels", c->n_tunnels);
        json_field_uint(&w, "enabled", config_enabled_count(c));
        json_field_string(&w, "config", path);
        json_end_object(&w);
        buf_puts(r->out, "\n");
        config_free(c);
}

static void handle_metrics(const struct request *r)
{
        _cleanup_free_ char *text = NULL;
        struct json_writer w = json_writer_init(r->out);

        size_t n;
        struct tunnel *const *v = supervisor_tunnels(r->sup, &n);

        if (metrics_render(v, n, &text) < 0) {
                ctl_protocol_error(r->out, "out of memory");
                return;
        }
        json_begin_object(&w);
        json_field_bool(&w, "ok", true);
        json_field_string(&w, "metrics", text);
        json_end_object(&w);
        buf_puts(r->out, "\n");
}

void ctl_protocol_reload_reply(struct supervisor *sup, struct buf *out)
{
        const struct config_errors *errs;
        struct json_writer w = json_writer_init(out);
        int e;

        (void)supervisor_reload_result(sup, &e, &errs);
        if (e < 0) {
                if (errs->n)
                        reply_errors(out, "reload rejected: the running tunnels are unchanged", errs);
                else
                        ctl_protocol_error(out, "reload failed: %s", strerror(-e));
                return;
        }
        json_begin_object(&w);
        json_field_bool(&w, "ok", true);
        json_field_uint(&w, "tunnels", supervisor_count(sup));
        json_end_object(&w);
        buf_puts(out, "\n");
}

/* The reply waits for the reload (loaded in a child process); the loop does not. */
static void handle_reload(const struct request *r)
{
        unsigned long gen;

        log_notice("reload requested on the control socket");
        gen = supervisor_reload(r->sup);
        if (supervisor_reload_result(r->sup, NULL, NULL) >= gen)
                ctl_protocol_reload_reply(r->sup, r->out);
        else
                r->effect->wait_reload = gen;
}

/* start, stop, restart */
static void handle_change(const struct request *r)
{
        _cleanup_free_ struct tunnel **v = NULL;

        if (select_tunnels(r, false, &v) < 0)
                return;
        for (size_t i = 0; v[i]; i++) {
                struct log_ctx ctx = LOG_CTX_INIT;

                ctx.tunnel = tunnel_get_name(v[i]);
                log_full(LOG_NOTICE, &ctx, "%s requested on the control socket", r->cmd);
                if (strcmp(r->cmd, "start") == 0)
                        tunnel_start(v[i]);
                else if (strcmp(r->cmd, "stop") == 0)
                        tunnel_hold(v[i], "stopped by request");
                else
                        tunnel_restart(v[i], "restart requested");
        }
        reply_tunnels(r, v, false);
}

static const struct command {
        const char *name;
        bool changes;                   /* needs root, tunneld's user or control_group */
        void (*handle)(const struct request *r);
} commands[] = {
        { "status",  false, handle_status },
        { "check",   false, handle_check },
        { "metrics", false, handle_metrics },
        { "events",  false, handle_events },
        { "start",   true,  handle_change },
        { "stop",    true,  handle_change },
        { "restart", true,  handle_change },
        { "reload",  true,  handle_reload },
};

/* "root, tunneld's user (tunneld) or the group ops": who may change tunnels. */
static void who_may_write(const struct supervisor *sup, char *buf, size_t size)
{
        const struct config *c = supervisor_config(sup);
        struct passwd *pw = getpwuid(geteuid());
        int n;

        if (geteuid() == 0)
                n = snprintf(buf, size, "root");
        else if (pw)
                n = snprintf(buf, size, "root or tunneld's user (%s)", pw->pw_name);
        else
                n = snprintf(buf, size, "root or tunneld's user (uid %d)", (int)geteuid());
        if (n > 0 && (size_t)n < size && c->control_group)
                snprintf(buf + n, size - (size_t)n, ", or a member of the group %s (control_group)", c->control_group);
        else if (n > 0 && (size_t)n < size)
                snprintf(buf + n, size - (size_t)n, " (control_group names a group that may too)");
}

void ctl_protocol_handle(struct supervisor *sup, const char *line, size_t len, const struct ctl_peer *peer,
                         struct buf *out, struct ctl_effect *effect)
{
        struct request r = { .sup = sup, .peer = peer, .out = out, .effect = effect };
        struct json *req = NULL;
        const struct command *c = NULL;
        int e;

        *effect = (struct ctl_effect){0};
        e = json_parse(line, len, &req);
        if (e < 0) {
                ctl_protocol_error(out, e == -ENOMEM ? "out of memory" : "request is not valid JSON");
                return;
        }
        r.json = req;
        r.cmd = json_get_string(req, "cmd");
        for (size_t i = 0; r.cmd && i < ELEMENTSOF(commands) && !c; i++)
                if (strcmp(commands[i].name, r.cmd) == 0)
                        c = &commands[i];
        if (!r.cmd)
                ctl_protocol_error(out, "request needs a \"cmd\" string");
        else if (!c)
                ctl_protocol_error(out, "unknown command \"%.64s\"", r.cmd);
        else if (c->changes && !peer->may_write) {
                char who[256];

                who_may_write(sup, who, sizeof(who));
                ctl_protocol_error(out, "permission denied: %s needs %s; you are uid %d", r.cmd, who, (int)peer->uid);
        } else if (c->changes && supervisor_is_shutting_down(sup))
                ctl_protocol_error(out, "tunneld is stopping");
        else
                c->handle(&r);
        json_free(req);
}
