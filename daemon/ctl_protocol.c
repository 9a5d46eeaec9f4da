/* SPDX-License-Identifier: MIT */
#include "ctl_protocol.h"

#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_commands.h"
#include "json.h"
#include "json_write.h"
#include "log.h"

struct request {
        struct supervisor *sup;
        const struct json *json;
        const struct ctl_command *cmd;
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

void ctl_protocol_dropped(struct buf *out, const char *reason, const char *text)
{
        struct json_writer w = json_writer_init(out);

        json_begin_object(&w);
        json_field_bool(&w, "ok", false);
        json_field_string(&w, "dropped", reason);
        json_field_string(&w, "error", text);
        json_end_object(&w);
        buf_puts(out, "\n");
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

/* The index of the tunnel named name in the supervisor's set, or -1. */
static ssize_t index_of(const struct supervisor *sup, const char *name)
{
        size_t n;
        struct tunnel *const *v = supervisor_tunnels(sup, &n);

        for (size_t i = 0; i < n; i++)
                if (strcmp(tunnel_get_name(v[i]), name) == 0)
                        return (ssize_t)i;
        return -1;
}

/* The tunnels a request names: "tunnels":[…] (their names and where they are in *ret_names
 * and *ret_hints, NULL-terminated), or "all":true (*ret_names NULL: every one), or an
 * error reply. */
static int select_tunnels(const struct request *r, bool all_by_default, char ***ret_names, size_t **ret_hints)
{
        const struct json *names = json_get(r->json, "tunnels");
        bool all = json_get_bool(r->json, "all", false);
        size_t n = names && names->type == JSON_ARRAY ? names->n : 0;
        _cleanup_strv_free_ char **v = NULL;
        _cleanup_free_ size_t *hints = NULL;

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
        *ret_names = NULL;
        *ret_hints = NULL;
        if (all || !n)
                return 0;
        hints = calloc(n + 1, sizeof(size_t));
        if (!hints)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const struct json *name = names->items[i];
                ssize_t at;

                if (name->type != JSON_STRING) {
                        ctl_protocol_error(r->out, "\"tunnels\" must be a list of names");
                        return -EINVAL;
                }
                at = index_of(r->sup, name->string);
                if (at < 0) {
                        ctl_protocol_error(r->out, "no such tunnel: %s%s", name->string,
                                           supervisor_is_loading(r->sup) ? " (tunneld is still loading its configuration)"
                                                                         : "");
                        return -ENOENT;
                }
                if (strv_push(&v, name->string) < 0)
                        return -ENOMEM;
                hints[i] = (size_t)at;
        }
        *ret_names = v;
        *ret_hints = hints;
        v = NULL;
        hints = NULL;
        return 0;
}

/* The reply: the status of the selected tunnels, streamed. */
static int reply_tunnels(const struct request *r, char **names, size_t *hints, bool with_daemon)
{
        int e = ctl_stream_tunnels(r->sup, with_daemon, names, hints, &r->effect->stream);

        if (e < 0)
                ctl_protocol_error(r->out, "out of memory");
        return e;
}

static void handle_status(const struct request *r)
{
        char **names;
        size_t *hints;

        if (select_tunnels(r, true, &names, &hints) >= 0)
                (void)reply_tunnels(r, names, hints, true);
}

/* status now, then every state change: the reply is the snapshot the changes follow. */
static void handle_events(const struct request *r)
{
        char **names;
        size_t *hints;

        if (select_tunnels(r, true, &names, &hints) < 0)
                return;
        if (names && strv_copy(names, &r->effect->names) < 0) {
                strv_free(names);
                free(hints);
                ctl_protocol_error(r->out, "out of memory");
                return;
        }
        if (reply_tunnels(r, names, hints, true) >= 0)
                r->effect->subscribe = true;
        else
                r->effect->names = strv_free(r->effect->names);
}

/* Loaded as tunneld loads it, in a check job (ctl_check.h): the reply comes when it is done. */
static void handle_check(const struct request *r)
{
        r->effect->check = true;
}

void ctl_protocol_check_reply(const struct ctl_check_result *res, struct buf *out)
{
        struct json_writer w = json_writer_init(out);

        if (res->r < 0) {
                if (res->errs && res->errs->n)
                        reply_errors(out, "configuration invalid", res->errs);
                else
                        ctl_protocol_error(out, "check failed: %s", strerror(-res->r));
                return;
        }
        json_begin_object(&w);
        json_field_bool(&w, "ok", true);
        json_field_uint(&w, "tunnels", res->tunnels);
        json_field_uint(&w, "enabled", res->enabled);
        json_field_string(&w, "config", res->path);
        /* false: loaded without ssh -G (only root, tunneld's user or control_group make
         * tunneld run ssh) */
        json_field_bool(&w, "ssh", res->ssh_asked);
        json_end_object(&w);
        buf_puts(out, "\n");
}

static void handle_metrics(const struct request *r)
{
        if (ctl_stream_metrics(r->sup, &r->effect->stream) < 0)
                ctl_protocol_error(r->out, "out of memory");
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
        char **names;
        size_t *hints, n;
        struct tunnel *const *v;

        if (select_tunnels(r, false, &names, &hints) < 0)
                return;
        v = supervisor_tunnels(r->sup, &n);
        /* a disabled tunnel runs only once enabled: its files were never checked (config.h),
         * and a start that does nothing must not look like one that worked */
        for (size_t i = 0; names && names[i] && ctl_command_id(r->cmd) != CTL_CMD_STOP; i++)
                if (!tunnel_get_spec(v[hints[i]])->enabled) {
                        ctl_protocol_error(r->out, "%s is disabled (enabled = false in %s): set enabled = true and "
                                           "reload to run it", names[i], tunnel_get_spec(v[hints[i]])->source_file);
                        strv_free(names);
                        free(hints);
                        return;
                }
        for (size_t i = 0; names ? names[i] != NULL : i < n; i++) {
                struct tunnel *t = v[names ? hints[i] : i];
                struct log_ctx ctx = LOG_CTX_INIT;

                ctx.tunnel = tunnel_get_name(t);
                log_full(LOG_NOTICE, &ctx, "%s requested on the control socket", r->cmd->name);
                if (ctl_command_id(r->cmd) == CTL_CMD_START)
                        tunnel_start(t);
                else if (ctl_command_id(r->cmd) == CTL_CMD_STOP)
                        tunnel_hold(t, "stopped by request");
                else
                        tunnel_restart(t, "restart requested");
        }
        (void)reply_tunnels(r, names, hints, false);
}

/* What tunneld does for each request of ctl_commands.h (wait is tunnelctl's own). */
static void (*const handlers[_CTL_CMD_MAX])(const struct request *r) = {
        [CTL_CMD_STATUS] = handle_status,
        [CTL_CMD_START] = handle_change,
        [CTL_CMD_STOP] = handle_change,
        [CTL_CMD_RESTART] = handle_change,
        [CTL_CMD_EVENTS] = handle_events,
        [CTL_CMD_RELOAD] = handle_reload,
        [CTL_CMD_CHECK] = handle_check,
        [CTL_CMD_METRICS] = handle_metrics,
};

bool ctl_protocol_serves(const struct ctl_command *c)
{
        return handlers[ctl_command_id(c)] != NULL;
}

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
        struct request r = { .sup = sup, .out = out, .effect = effect };
        struct json *req = NULL;
        const char *cmd;
        int e;

        *effect = (struct ctl_effect){0};
        e = json_parse(line, len, &req);
        if (e < 0) {
                ctl_protocol_error(out, e == -ENOMEM ? "out of memory" : "request is not valid JSON");
                return;
        }
        r.json = req;
        cmd = json_get_string(req, "cmd");
        r.cmd = ctl_command_find(cmd);
        if (r.cmd && !handlers[ctl_command_id(r.cmd)])
                r.cmd = NULL;           /* tunnelctl's own (wait): not a request */
        if (!cmd)
                ctl_protocol_error(out, "request needs a \"cmd\" string");
        else if (!r.cmd)
                ctl_protocol_error(out, "unknown command \"%.64s\"", cmd);
        else if (r.cmd->changes && !peer->may_write) {
                char who[256];

                who_may_write(sup, who, sizeof(who));
                ctl_protocol_error(out, "permission denied: %s needs %s; you are uid %d", cmd, who, (int)peer->uid);
        } else if (r.cmd->changes && supervisor_is_shutting_down(sup))
                ctl_protocol_error(out, "tunneld is stopping");
        else
                handlers[ctl_command_id(r.cmd)](&r);
        json_free(req);
}
