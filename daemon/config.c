/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "clash.h"
#include "ssh_argv.h"
#include "ssh_view.h"

#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#define DURATION_MAX_S 86400.0

#ifndef TUNNELD_CONTROL_SOCKET
#define TUNNELD_CONTROL_SOCKET "/run/tunneld/control"
#endif

/* ---- spec helpers ---- */

void tunnel_spec_done(struct tunnel_spec *s)
{
        if (!s)
                return;
        free(s->name);
        free(s->host);
        free(s->user);
        free(s->identity_file);
        free(s->jump_host);
        free(s->ssh_config_file);
        strv_free(s->local_forwards);
        strv_free(s->remote_forwards);
        strv_free(s->dynamic_forwards);
        strv_free(s->ssh_options);
        free(s->probe.connect);
        free(s->probe.send);
        free(s->probe.expect);
        strv_free(s->after);
        free(s->on_state_change);
        free(s->ssh_hostname);
        strv_free(s->ssh_local_forwards);
        strv_free(s->ssh_remote_forwards);
        strv_free(s->ssh_dynamic_forwards);
        free(s->source_file);
        *s = (struct tunnel_spec){0};
}

static int strdup_null(const char *s, char **ret)
{
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int strv_copy_null(char *const *v, char ***ret)
{
        *ret = NULL;
        return v ? strv_copy(v, ret) : 0;
}

int tunnel_spec_copy(const struct tunnel_spec *s, struct tunnel_spec *ret)
{
        struct tunnel_spec c = *s;      /* scalars */
        int r = 0;

        c.name = c.host = c.user = c.identity_file = c.jump_host = c.ssh_config_file = c.source_file = NULL;
        c.local_forwards = c.remote_forwards = c.dynamic_forwards = c.ssh_options = NULL;
        c.probe.connect = c.probe.send = c.probe.expect = NULL;
        c.after = NULL;
        c.on_state_change = NULL;
        c.ssh_hostname = NULL;
        c.ssh_local_forwards = c.ssh_remote_forwards = c.ssh_dynamic_forwards = NULL;

        if ((r = strdup_null(s->name, &c.name)) < 0 ||
            (r = strdup_null(s->host, &c.host)) < 0 ||
            (r = strdup_null(s->user, &c.user)) < 0 ||
            (r = strdup_null(s->identity_file, &c.identity_file)) < 0 ||
            (r = strdup_null(s->jump_host, &c.jump_host)) < 0 ||
            (r = strdup_null(s->ssh_config_file, &c.ssh_config_file)) < 0 ||
            (r = strdup_null(s->source_file, &c.source_file)) < 0 ||
            (r = strdup_null(s->probe.connect, &c.probe.connect)) < 0 ||
            (r = strdup_null(s->probe.send, &c.probe.send)) < 0 ||
            (r = strdup_null(s->probe.expect, &c.probe.expect)) < 0 ||
            (r = strdup_null(s->on_state_change, &c.on_state_change)) < 0 ||
            (r = strv_copy_null(s->after, &c.after)) < 0 ||
            (r = strv_copy_null(s->local_forwards, &c.local_forwards)) < 0 ||
            (r = strv_copy_null(s->remote_forwards, &c.remote_forwards)) < 0 ||
            (r = strv_copy_null(s->dynamic_forwards, &c.dynamic_forwards)) < 0 ||
            (r = strv_copy_null(s->ssh_options, &c.ssh_options)) < 0 ||
            (r = strdup_null(s->ssh_hostname, &c.ssh_hostname)) < 0 ||
            (r = strv_copy_null(s->ssh_local_forwards, &c.ssh_local_forwards)) < 0 ||
            (r = strv_copy_null(s->ssh_remote_forwards, &c.ssh_remote_forwards)) < 0 ||
            (r = strv_copy_null(s->ssh_dynamic_forwards, &c.ssh_dynamic_forwards)) < 0) {
                tunnel_spec_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

bool tunnel_spec_same_command(const struct tunnel_spec *a, const struct tunnel_spec *b)
{
        return strcmp_null(a->name, b->name) == 0 &&
               a->enabled == b->enabled &&
               strcmp_null(a->host, b->host) == 0 &&
               strcmp_null(a->user, b->user) == 0 &&
               a->port == b->port &&
               strcmp_null(a->identity_file, b->identity_file) == 0 &&
               strcmp_null(a->jump_host, b->jump_host) == 0 &&
               strcmp_null(a->ssh_config_file, b->ssh_config_file) == 0 &&
               strv_equal(a->local_forwards, b->local_forwards) &&
               strv_equal(a->remote_forwards, b->remote_forwards) &&
               strv_equal(a->dynamic_forwards, b->dynamic_forwards) &&
               strv_equal(a->ssh_options, b->ssh_options) &&
               a->server_alive_interval == b->server_alive_interval &&
               a->server_alive_count_max == b->server_alive_count_max &&
               a->exit_on_forward_failure == b->exit_on_forward_failure &&
               a->connect_timeout == b->connect_timeout &&
               a->ssh_viewed == b->ssh_viewed &&
               strcmp_null(a->ssh_hostname, b->ssh_hostname) == 0 &&
               a->ssh_port == b->ssh_port &&
               strv_equal(a->ssh_local_forwards, b->ssh_local_forwards) &&
               strv_equal(a->ssh_remote_forwards, b->ssh_remote_forwards) &&
               strv_equal(a->ssh_dynamic_forwards, b->ssh_dynamic_forwards);
}

char *const *tunnel_spec_local_forwards(const struct tunnel_spec *s)
{
        return s->ssh_viewed ? s->ssh_local_forwards : s->local_forwards;
}

char *const *tunnel_spec_remote_forwards(const struct tunnel_spec *s)
{
        return s->ssh_viewed ? s->ssh_remote_forwards : s->remote_forwards;
}

char *const *tunnel_spec_dynamic_forwards(const struct tunnel_spec *s)
{
        return s->ssh_viewed ? s->ssh_dynamic_forwards : s->dynamic_forwards;
}

bool tunnel_spec_equal(const struct tunnel_spec *a, const struct tunnel_spec *b)
{
        return tunnel_spec_same_command(a, b) &&
               a->start_timeout == b->start_timeout &&
               a->gatetime == b->gatetime &&
               a->fail_fast == b->fail_fast &&
               a->restart == b->restart &&
               a->restart_delay == b->restart_delay &&
               a->restart_delay_max == b->restart_delay_max &&
               a->max_starts == b->max_starts &&
               a->max_lifetime == b->max_lifetime &&
               a->max_lifetime_action == b->max_lifetime_action &&
               strcmp_null(a->probe.connect, b->probe.connect) == 0 &&
               a->probe.interval == b->probe.interval &&
               a->probe.timeout == b->probe.timeout &&
               a->probe.failures == b->probe.failures &&
               strcmp_null(a->probe.send, b->probe.send) == 0 &&
               strcmp_null(a->probe.expect, b->probe.expect) == 0 &&
               strv_equal(a->after, b->after) &&
               a->required == b->required &&
               strcmp_null(a->on_state_change, b->on_state_change) == 0 &&
               a->flap_threshold == b->flap_threshold &&
               a->flap_window == b->flap_window;
}

static const char *const restart_names[] = {
        [RESTART_ALWAYS] = "always", [RESTART_ON_FAILURE] = "on-failure", [RESTART_NEVER] = "never",
};
static const char *const lifetime_action_names[] = {
        [LIFETIME_RESTART] = "restart", [LIFETIME_STOP] = "stop",
};
static const char *const log_target_names[] = {
        [LOG_TARGET_AUTO] = "auto", [LOG_TARGET_JOURNAL] = "journal", [LOG_TARGET_STDERR] = "stderr",
};
static const char *const log_level_names[] = {
        [LOG_ERR] = "err", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};
static const char *const ready_names[] = {
        [READY_STARTED] = "started", [READY_ALL_UP] = "all-up",
};

const char *restart_policy_to_string(enum restart_policy p)
{
        return p >= 0 && p < (int)ELEMENTSOF(restart_names) ? restart_names[p] : "?";
}

const char *lifetime_action_to_string(enum lifetime_action a)
{
        return a >= 0 && a < (int)ELEMENTSOF(lifetime_action_names) ? lifetime_action_names[a] : "?";
}

struct config *config_free(struct config *c)
{
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_tunnels; i++)
                tunnel_spec_done(&c->tunnels[i]);
        free(c->tunnels);
        free(c->path);
        free(c->ssh);
        free(c->control_socket);
        free(c->control_group);
        free(c->include_dir);
        free(c->metrics_file);
        free(c);
        return NULL;
}

size_t config_enabled_count(const struct config *c)
{
        size_t n = 0;

        for (size_t i = 0; i < c->n_tunnels; i++)
                n += c->tunnels[i].enabled;
        return n;
}

void config_errors_clear(struct config_errors *e)
{
        strv_free(e->lines);
        e->lines = NULL;
        e->n = 0;
}

/* ---- the parser ---- */

struct parser {
        const char *path;
        const struct config_load_options *opts;
        struct config_errors *errs;
        bool defaults_has_host;
        int oom;
        char **seen;                    /* "name\tFILE:LINE" of every tunnel read, valid or not */
};

static const char *setting_file(struct parser *p, const config_setting_t *s)
{
        const char *f = s ? config_setting_source_file(s) : NULL;
        return f ? f : p->path;
}

/* A copy of text with control characters as \n, \t or \xNN: a hostile value must not
 * write raw newlines or escape sequences into a terminal or the journal. */
static char *escape_controls(const char *text)
{
        struct buf b = {0};
        char *ret = NULL;

        for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
                if (*c == '\n')
                        buf_append(&b, "\\n", 2);
                else if (*c == '\t')
                        buf_append(&b, "\\t", 2);
                else if (*c < 0x20 || *c == 0x7f)
                        buf_printf(&b, "\\x%02x", *c);
                else
                        buf_append(&b, (const char *)c, 1);
        }
        return buf_steal(&b, &ret) < 0 ? NULL : ret;
}

/* Every error line goes through here: formatted, its control characters escaped. */
static int push_error(struct config_errors *errs, const char *fmt, ...) _printf_(2, 3);
static int push_error(struct config_errors *errs, const char *fmt, ...)
{
        _cleanup_free_ char *raw = NULL, *line = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&raw, fmt, ap);
        va_end(ap);
        if (r < 0) {
                raw = NULL;
                return -ENOMEM;
        }
        line = escape_controls(raw);
        if (!line || strv_push(&errs->lines, line) < 0)
                return -ENOMEM;
        errs->n++;
        return 0;
}

_printf_(4, 5)
static void diag(struct parser *p, const config_setting_t *s, const char *label, const char *fmt, ...)
{
        _cleanup_free_ char *what = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&what, fmt, ap);
        va_end(ap);
        if (r < 0) {
                what = NULL;
                p->oom = -ENOMEM;
                return;
        }
        if (push_error(p->errs, "%s:%d: %s: %s", setting_file(p, s), s ? config_setting_source_line(s) : 0,
                       label, what) < 0)
                p->oom = -ENOMEM;
}

static const char *type_name(int type)
{
        switch (type) {
        case CONFIG_TYPE_GROUP:  return "a group";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:  return "an integer";
        case CONFIG_TYPE_FLOAT:  return "a number";
        case CONFIG_TYPE_STRING: return "a string";
        case CONFIG_TYPE_BOOL:   return "a boolean";
        case CONFIG_TYPE_ARRAY:  return "an array";
        case CONFIG_TYPE_LIST:   return "a list";
        }
        return "something else";
}

/* A string, or diagnose. */
static const char *get_string(struct parser *p, const config_setting_t *s, const char *label)
{
        if (config_setting_type(s) != CONFIG_TYPE_STRING) {
                diag(p, s, label, "must be a string, not %s", type_name(config_setting_type(s)));
                return NULL;
        }
        return config_setting_get_string(s);
}

static bool get_bool(struct parser *p, const config_setting_t *s, const char *label, bool *ret)
{
        if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
                diag(p, s, label, "must be true or false, not %s", type_name(config_setting_type(s)));
                return false;
        }
        *ret = config_setting_get_bool(s);
        return true;
}

static bool get_number(struct parser *p, const config_setting_t *s, const char *label,
                       bool integer, double min, double max, double *ret)
{
        double v;

        switch (config_setting_type(s)) {
        case CONFIG_TYPE_INT:
                v = config_setting_get_int(s);
                break;
        case CONFIG_TYPE_INT64:
                v = (double)config_setting_get_int64(s);
                break;
        case CONFIG_TYPE_FLOAT:
                if (integer) {
                        diag(p, s, label, "must be a whole number");
                        return false;
                }
                v = config_setting_get_float(s);
                break;
        default:
                diag(p, s, label, "must be a number, not %s", type_name(config_setting_type(s)));
                return false;
        }
        if (!isfinite(v) || v < min || v > max) {
                if (integer)
                        diag(p, s, label, "must be from %.0f to %.0f", min, max);
                else
                        diag(p, s, label, "must be from %g to %g seconds", min, max);
                return false;
        }
        *ret = v;
        return true;
}

/* A list or array of strings (a lone string is taken as a one-element list). */
static bool get_strv(struct parser *p, const config_setting_t *s, const char *label,
                     const char *(*validate)(const char *), char ***ret)
{
        _cleanup_strv_free_ char **v = NULL;
        int type = config_setting_type(s);
        int n;

        if (type == CONFIG_TYPE_STRING) {
                const char *str = config_setting_get_string(s);
                const char *why = validate ? validate(str) : NULL;
                if (why) {
                        diag(p, s, label, "\"%s\" %s", str, why);
                        return false;
                }
                if (strv_push(&v, str) < 0) {
                        p->oom = -ENOMEM;
                        return false;
                }
                *ret = v;
                v = NULL;
                return true;
        }
        if (type != CONFIG_TYPE_LIST && type != CONFIG_TYPE_ARRAY) {
                diag(p, s, label, "must be a list of strings, not %s", type_name(type));
                return false;
        }
        n = config_setting_length(s);
        bool ok = true;
        v = calloc(1, sizeof(char *));
        if (!v) {
                p->oom = -ENOMEM;
                return false;
        }
        for (int i = 0; i < n; i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
                const char *str, *why;

                if (config_setting_type(e) != CONFIG_TYPE_STRING) {
                        diag(p, e, label, "element %d must be a string, not %s", i + 1,
                             type_name(config_setting_type(e)));
                        ok = false;
                        continue;
                }
                str = config_setting_get_string(e);
                why = validate ? validate(str) : NULL;
                if (why) {
                        diag(p, e, label, "\"%s\" %s", str, why);
                        ok = false;
                        continue;
                }
                if (strv_push(&v, str) < 0) {
                        p->oom = -ENOMEM;
                        return false;
                }
        }
        if (!ok)
                return false;
        *ret = v;
        v = NULL;
        return true;
}

enum kind { K_STRING, K_BOOL, K_INT, K_DURATION, K_STRV, K_ENUM, K_GROUP };

/* One setting: where it goes (offset into struct tunnel_spec or struct config) and how
 * it is checked. */
struct setting {
        const char *name;
        enum kind kind;
        size_t offset;
        double min, max;                        /* K_INT, K_DURATION */
        const char *(*validate)(const char *);  /* K_STRING, each K_STRV element */
        const char *const *names;               /* K_ENUM: value = index */
        size_t n_names;
        const struct setting *sub;              /* K_GROUP: the members, offsets into the member struct */
        size_t n_sub;
};
#define ENUM(n) .names = (n), .n_names = ELEMENTSOF(n)

#define P(m) offsetof(struct probe_spec, m)
static const struct setting probe_settings[] = {
        { .name = "connect", .kind = K_STRING, .offset = P(connect), .validate = validate_probe_address },
        { .name = "interval", .kind = K_DURATION, .offset = P(interval), .min = 0.1, .max = DURATION_MAX_S },
        { .name = "timeout", .kind = K_DURATION, .offset = P(timeout), .min = 0.1, .max = 3600 },
        { .name = "failures", .kind = K_INT, .offset = P(failures), .min = 1, .max = 1000 },
        { .name = "send", .kind = K_STRING, .offset = P(send), .validate = validate_probe_data },
        { .name = "expect", .kind = K_STRING, .offset = P(expect), .validate = validate_probe_data },
};
#undef P

#define F(m) offsetof(struct tunnel_spec, m)
static const struct setting tunnel_settings[] = {
        { .name = "host", .kind = K_STRING, .offset = F(host), .validate = validate_host },
        { .name = "user", .kind = K_STRING, .offset = F(user), .validate = validate_user },
        { .name = "port", .kind = K_INT, .offset = F(port), .min = 1, .max = 65535 },
        { .name = "identity_file", .kind = K_STRING, .offset = F(identity_file), .validate = validate_path },
        { .name = "jump_host", .kind = K_STRING, .offset = F(jump_host), .validate = validate_jump_host },
        { .name = "ssh_config_file", .kind = K_STRING, .offset = F(ssh_config_file), .validate = validate_path },
        { .name = "enabled", .kind = K_BOOL, .offset = F(enabled) },
        { .name = "local_forwards", .kind = K_STRV, .offset = F(local_forwards), .validate = validate_local_forward },
        { .name = "remote_forwards", .kind = K_STRV, .offset = F(remote_forwards), .validate = validate_remote_forward },
        { .name = "dynamic_forwards", .kind = K_STRV, .offset = F(dynamic_forwards), .validate = validate_dynamic_forward },
        { .name = "ssh_options", .kind = K_STRV, .offset = F(ssh_options), .validate = validate_ssh_option },
        { .name = "server_alive_interval", .kind = K_INT, .offset = F(server_alive_interval), .min = 0, .max = 86400 },
        { .name = "server_alive_count_max", .kind = K_INT, .offset = F(server_alive_count_max), .min = 1, .max = 1000 },
        { .name = "exit_on_forward_failure", .kind = K_BOOL, .offset = F(exit_on_forward_failure) },
        { .name = "connect_timeout", .kind = K_INT, .offset = F(connect_timeout), .min = 1, .max = 3600 },
        { .name = "start_timeout", .kind = K_DURATION, .offset = F(start_timeout), .min = 0, .max = DURATION_MAX_S },
        { .name = "gatetime", .kind = K_DURATION, .offset = F(gatetime), .min = 0, .max = DURATION_MAX_S },
        { .name = "fail_fast", .kind = K_BOOL, .offset = F(fail_fast) },
        { .name = "restart", .kind = K_ENUM, .offset = F(restart), ENUM(restart_names) },
        { .name = "restart_delay", .kind = K_DURATION, .offset = F(restart_delay), .min = 0.05, .max = DURATION_MAX_S },
        { .name = "restart_delay_max", .kind = K_DURATION, .offset = F(restart_delay_max), .min = 0.05, .max = DURATION_MAX_S },
        { .name = "max_starts", .kind = K_INT, .offset = F(max_starts), .min = 0, .max = INT_MAX },
        { .name = "max_lifetime", .kind = K_DURATION, .offset = F(max_lifetime), .min = 0, .max = 365 * DURATION_MAX_S },
        { .name = "max_lifetime_action", .kind = K_ENUM, .offset = F(max_lifetime_action), ENUM(lifetime_action_names) },
        { .name = "after", .kind = K_STRV, .offset = F(after), .validate = validate_tunnel_name },
        { .name = "required", .kind = K_BOOL, .offset = F(required) },
        { .name = "on_state_change", .kind = K_STRING, .offset = F(on_state_change), .validate = validate_absolute_path },
        { .name = "flap_threshold", .kind = K_INT, .offset = F(flap_threshold), .min = 2, .max = 64 },
        { .name = "flap_window", .kind = K_DURATION, .offset = F(flap_window), .min = 1, .max = DURATION_MAX_S },
        { .name = "probe", .kind = K_GROUP, .offset = F(probe), .sub = probe_settings, .n_sub = ELEMENTSOF(probe_settings) },
};
#undef F

#define G(m) offsetof(struct config, m)
static const struct setting global_settings[] = {
        { .name = "ssh", .kind = K_STRING, .offset = G(ssh), .validate = validate_program },
        { .name = "stop_timeout", .kind = K_DURATION, .offset = G(stop_timeout), .min = 0.1, .max = 3600 },
        { .name = "log_target", .kind = K_ENUM, .offset = G(log_target), ENUM(log_target_names) },
        { .name = "log_level", .kind = K_ENUM, .offset = G(log_level), ENUM(log_level_names) },
        { .name = "control_socket", .kind = K_STRING, .offset = G(control_socket), .validate = validate_socket_path },
        { .name = "control_group", .kind = K_STRING, .offset = G(control_group), .validate = validate_group_name },
        { .name = "ready", .kind = K_ENUM, .offset = G(ready), ENUM(ready_names) },
        { .name = "ready_timeout", .kind = K_DURATION, .offset = G(ready_timeout), .min = 0, .max = DURATION_MAX_S },
        { .name = "max_parallel_starts", .kind = K_INT, .offset = G(max_parallel_starts), .min = 0, .max = 100000 },
        { .name = "watch_network", .kind = K_BOOL, .offset = G(watch_network) },
        { .name = "control_world_readable", .kind = K_BOOL, .offset = G(control_world_readable) },
        { .name = "include_dir", .kind = K_STRING, .offset = G(include_dir), .validate = validate_include_dir },
        { .name = "metrics_file", .kind = K_STRING, .offset = G(metrics_file), .validate = validate_absolute_path },
        { .name = "hook_timeout", .kind = K_DURATION, .offset = G(hook_timeout), .min = 0.1, .max = 3600 },
};
#undef G

static const struct setting *find_setting(const struct setting *table, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(table[i].name, name) == 0)
                        return &table[i];
        return NULL;
}
#define find_tunnel_setting(name) find_setting(tunnel_settings, ELEMENTSOF(tunnel_settings), name)
#define find_global_setting(name) find_setting(global_settings, ELEMENTSOF(global_settings), name)

static void spec_set_defaults(struct tunnel_spec *t)
{
        *t = (struct tunnel_spec){
                .enabled = true,
                .server_alive_interval = 30,
                .server_alive_count_max = 3,
                .exit_on_forward_failure = true,
                .connect_timeout = 15,
                .gatetime = 30,
                .restart = RESTART_ALWAYS,
                .restart_delay = 1,
                .restart_delay_max = 60,
                .max_lifetime_action = LIFETIME_RESTART,
                .probe = { .interval = 30, .timeout = 5, .failures = 3 },
                .required = true,
                .flap_threshold = 5,
                .flap_window = 60,
        };
}

static void diag_enum(struct parser *p, const config_setting_t *s, const char *label, const char *value,
                      const struct setting *d)
{
        struct buf b = {0};
        _cleanup_free_ char *list = NULL;
        size_t k = 0, total = 0;

        for (size_t i = 0; i < d->n_names; i++)
                total += d->names[i] != NULL;
        for (size_t i = 0; i < d->n_names; i++) {
                if (!d->names[i])
                        continue;
                buf_printf(&b, "%s\"%s\"", k == 0 ? "" : k + 1 == total ? " or " : ", ", d->names[i]);
                k++;
        }
        if (buf_steal(&b, &list) < 0) {
                p->oom = -ENOMEM;
                return;
        }
        diag(p, s, label, "\"%s\" must be %s", value, list);
}

/* Parse one setting s (described by d) into the struct at base; label names it in messages. */
static void parse_setting(struct parser *p, const struct setting *d, const config_setting_t *s,
                          const char *label, void *base)
{
        void *field = (char *)base + d->offset;
        const char *str, *why;
        double num;
        bool b;

        switch (d->kind) {
        case K_STRING:
                str = get_string(p, s, label);
                if (!str)
                        return;
                why = d->validate ? d->validate(str) : NULL;
                if (why) {
                        diag(p, s, label, "\"%s\" %s", str, why);
                        return;
                }
                free(*(char **)field);
                *(char **)field = strdup(str);
                if (!*(char **)field)
                        p->oom = -ENOMEM;
                return;
        case K_BOOL:
                if (get_bool(p, s, label, &b))
                        *(bool *)field = b;
                return;
        case K_INT:
                if (get_number(p, s, label, true, d->min, d->max, &num))
                        *(int *)field = (int)num;
                return;
        case K_DURATION:
                if (get_number(p, s, label, false, d->min, d->max, &num))
                        *(double *)field = num;
                return;
        case K_STRV: {
                char **v = NULL;
                if (get_strv(p, s, label, d->validate, &v)) {
                        strv_free(*(char ***)field);
                        *(char ***)field = v;
                }
                return;
        }
        case K_ENUM:
                str = get_string(p, s, label);
                if (!str)
                        return;
                for (size_t i = 0; i < d->n_names; i++)
                        if (d->names[i] && strcmp(d->names[i], str) == 0) {
                                *(int *)field = (int)i;
                                return;
                        }
                diag_enum(p, s, label, str, d);
                return;
        case K_GROUP: {
                int n;
                if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
                        diag(p, s, label, "must be a group { … }, not %s", type_name(config_setting_type(s)));
                        return;
                }
                n = config_setting_length(s);
                for (int i = 0; i < n; i++) {
                        const config_setting_t *m = config_setting_get_elem(s, (unsigned)i);
                        const char *key = config_setting_name(m);
                        const struct setting *sd = find_setting(d->sub, d->n_sub, key);
                        char sublabel[256];

                        snprintf(sublabel, sizeof(sublabel), "%s.%s", label, key);
                        if (!sd) {
                                diag(p, m, sublabel, "unknown setting");
                                continue;
                        }
                        parse_setting(p, sd, m, sublabel, field);
                }
                return;
        }
        }
}

/* Apply every member of group g to spec. prefix names the group in messages. */
static void parse_tunnel_group(struct parser *p, const config_setting_t *g, const char *prefix,
                               bool allow_name, struct tunnel_spec *spec)
{
        int n = config_setting_length(g);

        for (int i = 0; i < n; i++) {
                const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
                const char *key = config_setting_name(s);
                const struct setting *d;
                char label[NAME_MAX_LEN + 64];

                snprintf(label, sizeof(label), "%s.%s", prefix, key);
                if (strcmp(key, "name") == 0) {
                        if (!allow_name)
                                diag(p, s, label, "a name belongs to a tunnel, not to defaults");
                        continue;       /* read by the caller */
                }
                d = find_tunnel_setting(key);
                if (!d) {
                        diag(p, s, label, "unknown setting");
                        continue;
                }
                parse_setting(p, d, s, label, spec);
        }
}

static void check_tunnel(struct parser *p, const config_setting_t *g, const char *prefix,
                         const struct tunnel_spec *t)
{
        char label[NAME_MAX_LEN + 64];

        /* an invalid host was reported already: "missing" would only add noise */
        if (!t->host && !config_setting_get_member(g, "host") && !p->defaults_has_host) {
                snprintf(label, sizeof(label), "%s.host", prefix);
                diag(p, g, label, "missing (set it in the tunnel or in defaults)");
        }
        if ((t->probe.send || t->probe.expect) && !t->probe.connect) {
                snprintf(label, sizeof(label), "%s.probe.connect", prefix);
                diag(p, g, label, "missing: a probe needs an address to connect to");
        }
        if (t->probe.connect && t->probe.timeout >= t->probe.interval) {
                snprintf(label, sizeof(label), "%s.probe.timeout", prefix);
                diag(p, g, label, "%g s must be shorter than probe.interval %g s", t->probe.timeout, t->probe.interval);
        }
        if (t->restart_delay_max < t->restart_delay) {
                snprintf(label, sizeof(label), "%s.restart_delay_max", prefix);
                diag(p, g, label, "%g s is less than restart_delay %g s", t->restart_delay_max, t->restart_delay);
        }
}

static void parse_tunnels(struct parser *p, const config_setting_t *list, const struct tunnel_spec *tmpl,
                          struct config *c)
{
        struct tunnel_spec *grown;
        int n, type = config_setting_type(list);

        if (type != CONFIG_TYPE_LIST) {
                diag(p, list, "tunnels", "must be a list of groups: tunnels = ( { name = \"…\"; … } );");
                return;
        }
        n = config_setting_length(list);
        grown = realloc(c->tunnels, (c->n_tunnels + (size_t)n + 1) * sizeof(struct tunnel_spec));
        if (!grown) {
                p->oom = -ENOMEM;
                return;
        }
        c->tunnels = grown;
        for (int i = 0; i < n; i++) {
                const config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
                const config_setting_t *ns;
                struct tunnel_spec t;
                char prefix[NAME_MAX_LEN + 32], label[NAME_MAX_LEN + 64];
                const char *name = NULL;
                unsigned errs_before = (unsigned)p->errs->n;

                snprintf(prefix, sizeof(prefix), "tunnels[%d]", i);
                if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
                        diag(p, g, prefix, "must be a group { name = \"…\"; host = \"…\"; … }, not %s",
                             type_name(config_setting_type(g)));
                        continue;
                }
                ns = config_setting_get_member(g, "name");
                snprintf(label, sizeof(label), "%s.name", prefix);
                if (!ns) {
                        diag(p, g, label, "missing");
                } else if ((name = get_string(p, ns, label))) {
                        const char *why = validate_tunnel_name(name);
                        if (why) {
                                diag(p, ns, label, "\"%s\" %s", name, why);
                                name = NULL;
                        } else {
                                size_t len = strlen(name);
                                char where[PATH_MAX + 80];
                                bool dup = false;

                                /* against every tunnel so far, also those with errors of their own */
                                for (char **w = p->seen; w && *w; w++)
                                        if (strncmp(*w, name, len) == 0 && (*w)[len] == '\t') {
                                                diag(p, ns, label, "\"%s\" is already used by the tunnel at %s",
                                                     name, *w + len + 1);
                                                dup = true;
                                                break;
                                        }
                                snprintf(where, sizeof(where), "%s\t%s:%d", name, setting_file(p, g),
                                         config_setting_source_line(g));
                                if (!dup && strv_push(&p->seen, where) < 0)
                                        p->oom = -ENOMEM;
                                snprintf(prefix, sizeof(prefix), "%s", name);
                        }
                }

                if (tunnel_spec_copy(tmpl, &t) < 0) {
                        p->oom = -ENOMEM;
                        return;
                }
                parse_tunnel_group(p, g, prefix, true, &t);
                check_tunnel(p, g, prefix, &t);

                if (p->errs->n != errs_before || !name) {
                        tunnel_spec_done(&t);
                        continue;
                }
                t.name = strdup(name);
                t.source_file = strdup(setting_file(p, g));
                t.source_line = config_setting_source_line(g);
                if (!t.name || !t.source_file) {
                        tunnel_spec_done(&t);
                        p->oom = -ENOMEM;
                        return;
                }
                c->tunnels[c->n_tunnels++] = t;
        }
}

/* The main file: globals, defaults (into tmpl) and tunnels. */
static void parse_root(struct parser *p, const config_setting_t *root, struct config *c, struct tunnel_spec *tmpl)
{
        const config_setting_t *defaults = NULL, *tunnels = NULL;
        int n = config_setting_length(root);

        for (int i = 0; i < n; i++) {
                const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
                const char *key = config_setting_name(s);
                const struct setting *d;

                if (strcmp(key, "defaults") == 0)
                        defaults = s;
                else if (strcmp(key, "tunnels") == 0)
                        tunnels = s;
                else if ((d = find_global_setting(key)))
                        parse_setting(p, d, s, key, c);
                else if (find_tunnel_setting(key))
                        diag(p, s, key, "is a tunnel setting: put it in a tunnel or in defaults");
                else
                        diag(p, s, key, "unknown setting");
        }

        if (defaults) {
                if (config_setting_type(defaults) != CONFIG_TYPE_GROUP)
                        diag(p, defaults, "defaults", "must be a group { … }, not %s",
                             type_name(config_setting_type(defaults)));
                else {
                        parse_tunnel_group(p, defaults, "defaults", false, tmpl);
                        p->defaults_has_host = config_setting_get_member(defaults, "host") != NULL;
                }
        }
        if (tunnels)
                parse_tunnels(p, tunnels, tmpl, c);
}

/* A drop-in file holds tunnels only; the main file's defaults apply to them. */
static void parse_dropin(struct parser *p, const config_setting_t *root, struct config *c,
                         const struct tunnel_spec *tmpl)
{
        int n = config_setting_length(root);

        for (int i = 0; i < n; i++) {
                const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
                const char *key = config_setting_name(s);

                if (strcmp(key, "tunnels") == 0)
                        parse_tunnels(p, s, tmpl, c);
                else
                        diag(p, s, key, "a drop-in file holds only a tunnels list (globals and defaults belong in %s)",
                             c->path);
        }
}

/* ---- checks across tunnels, after everything is read ---- */

_printf_(4, 5)
static void diag_tunnel(struct parser *p, const struct tunnel_spec *t, const char *key, const char *fmt, ...)
{
        _cleanup_free_ char *what = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&what, fmt, ap);
        va_end(ap);
        if (r < 0) {
                p->oom = -ENOMEM;
                return;
        }
        if (push_error(p->errs, "%s:%d: %s.%s: %s", t->source_file, t->source_line, t->name, key, what) < 0)
                p->oom = -ENOMEM;
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

static void check_after(struct parser *p, const struct config *c)
{
        _cleanup_free_ unsigned char *colour = NULL;
        _cleanup_free_ size_t *path = NULL;
        bool refs_ok = true;

        for (size_t i = 0; i < c->n_tunnels; i++)
                for (char **a = c->tunnels[i].after; a && *a; a++) {
                        if (strcmp(*a, c->tunnels[i].name) == 0) {
                                diag_tunnel(p, &c->tunnels[i], "after", "a tunnel cannot wait for itself");
                                refs_ok = false;
                        } else if (find_tunnel(c, *a) < 0) {
                                diag_tunnel(p, &c->tunnels[i], "after", "no tunnel is named \"%s\"", *a);
                                refs_ok = false;
                        } else if (c->tunnels[i].enabled && !c->tunnels[find_tunnel(c, *a)].enabled) {
                                diag_tunnel(p, &c->tunnels[i], "after",
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
                diag_tunnel(p, &c->tunnels[at], "after", "is part of a cycle of tunnels waiting for each other: %s",
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
static void check_ports(struct parser *p, const struct config *c)
{
        static const char *const settings[3] = { "local_forwards", "dynamic_forwards", "remote_forwards" };
        static const enum forward_kind kinds[3] = { FORWARD_LOCAL, FORWARD_DYNAMIC, FORWARD_REMOTE };
        _cleanup_free_ struct clash_entry *v = NULL;
        _cleanup_free_ struct clash_owner *owners = NULL;
        struct clash_reports reports = {0};
        size_t n = 0, total = 0;

        for (size_t i = 0; i < c->n_tunnels; i++)
                total += strv_length(c->tunnels[i].local_forwards) + strv_length(c->tunnels[i].dynamic_forwards) +
                         strv_length(c->tunnels[i].remote_forwards) + strv_length(c->tunnels[i].ssh_local_forwards) +
                         strv_length(c->tunnels[i].ssh_dynamic_forwards) + strv_length(c->tunnels[i].ssh_remote_forwards);
        v = calloc(total + 1, sizeof(*v));
        owners = calloc(total + 1, sizeof(*owners));
        if (!v || !owners) {
                p->oom = -ENOMEM;
                return;
        }
        for (size_t i = 0; i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];
                /* what ssh will set up: with an ssh_config_file, ssh -G's lists */
                char **const lists[3] = { t->ssh_viewed ? t->ssh_local_forwards : t->local_forwards,
                                          t->ssh_viewed ? t->ssh_dynamic_forwards : t->dynamic_forwards,
                                          t->ssh_viewed ? t->ssh_remote_forwards : t->remote_forwards };
                bool gateway_ports = t->ssh_viewed ? t->ssh_gateway_ports : clash_gateway_ports(t->ssh_options);
                char server[VALUE_MAX_LEN + 16];

                if (!t->enabled)
                        continue;
                clash_server_identity(t->ssh_viewed && t->ssh_hostname ? t->ssh_hostname : t->host ? t->host : "",
                                      t->ssh_viewed ? t->ssh_port : t->port, server, sizeof(server));
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
                diag_tunnel(p, b->t, b->setting, "\"%s\" listens on %s, as \"%s\" of tunnel %s (%s:%d) does",
                            b->spec, where, a->spec, a->t->name, a->t->source_file, a->t->source_line);
        }
done:
        free(reports.v);
        for (size_t i = 0; i < n; i++)
                clash_listener_done(&v[i].l);
}

/* ---- ssh judges ssh's options (ssh_view.h) ---- */

#define SSH_VIEW_TIMEOUT 15.0   /* seconds for every ssh -G of one load */

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

/* One ssh -G per tunnel with an ssh_config_file (its alias, its forwards and its Include
 * files are its own), and one per distinct set of ssh_options for the rest (those are
 * judged the same whatever the host). */
static int query_keys(const struct config *c, struct query_key *keys, size_t *ret_n)
{
        size_t n = 0;

        for (size_t i = 0; i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];
                struct buf b = {0};

                if (!t->enabled)
                        continue;
                if (t->ssh_config_file && strcmp(t->ssh_config_file, "none") != 0)
                        buf_printf(&b, "T%zu", i);
                else {
                        buf_printf(&b, "O%s", t->ssh_config_file ? "-F none" : "");
                        for (char **o = t->ssh_options; o && *o; o++)
                                buf_printf(&b, "\n%s", *o);
                }
                keys[n].tunnel = i;
                if (buf_steal(&b, &keys[n].key) < 0) {
                        *ret_n = n;
                        return -ENOMEM;
                }
                n++;
        }
        qsort(keys, n, sizeof(*keys), compare_keys);
        *ret_n = n;
        return 0;
}

static void take_view(struct tunnel_spec *t, struct ssh_view *v)
{
        t->ssh_viewed = true;
        t->ssh_hostname = v->hostname;
        t->ssh_port = v->port;
        t->ssh_local_forwards = v->local_forwards;
        t->ssh_remote_forwards = v->remote_forwards;
        t->ssh_dynamic_forwards = v->dynamic_forwards;
        t->ssh_gateway_ports = v->gateway_ports;
        v->hostname = NULL;
        v->local_forwards = v->remote_forwards = v->dynamic_forwards = NULL;
}

/* What ssh said of query q, for its first tunnel t (and others that share it). */
static void judge_view(struct parser *p, struct tunnel_spec *t, struct ssh_view *v, size_t others)
{
        const char *setting = t->ssh_config_file ? "ssh_config_file" : "ssh_options";
        char also[96] = "";

        if (others)
                snprintf(also, sizeof(also), " (and %zu other tunnel%s with these ssh_options)", others,
                         others == 1 ? "" : "s");
        if (v->error && v->ran) {
                if (strstr(v->error, "command-line"))
                        setting = "ssh_options";
                diag_tunnel(p, t, setting, "ssh refuses it: %s%s", v->error, also);
                return;
        }
        if (v->error) {
                if (p->opts->ask_ssh == CONFIG_SSH_STRICT)
                        diag_tunnel(p, t, "ssh", "cannot ask ssh to check the ssh options: %s%s", v->error, also);
                else
                        log_warning("%s: cannot ask ssh to check the ssh options: %s; starting anyway", t->name,
                                    v->error);
                return;
        }
        if (v->clear_all_forwardings)
                diag_tunnel(p, t, setting, "ClearAllForwardings=yes makes ssh set up no forward at all: the tunnel "
                            "would be up with nothing listening; remove it%s", also);
        if (v->fork_after_authentication)
                diag_tunnel(p, t, setting, "ForkAfterAuthentication=yes makes ssh go to the background, and "
                            "tunneld would see it exit at once; remove it (tunneld keeps ssh in the foreground)%s",
                            also);
}

static void ask_ssh(struct parser *p, struct config *c)
{
        size_t n = 0, m = 0;
        struct query_key *keys = calloc(c->n_tunnels + 1, sizeof(*keys));
        size_t *first = calloc(c->n_tunnels + 1, sizeof(size_t));      /* query → its index into keys */
        char ***argvs = calloc(c->n_tunnels + 1, sizeof(char **));
        struct ssh_view *views = calloc(c->n_tunnels + 1, sizeof(*views));
        size_t *owner = calloc(c->n_tunnels + 1, sizeof(size_t));     /* tunnel → 1 + the query it leads */
        int r;

        if (!keys || !first || !argvs || !views || !owner || query_keys(c, keys, &n) < 0)
                goto oom;
        for (size_t k = 0; k < n; k++) {
                if (k && strcmp(keys[k].key, keys[k - 1].key) == 0)
                        continue;
                first[m] = k;
                /* the command line the tunnel's ssh gets, without the jump hosts' file */
                if (ssh_argv_build(&c->tunnels[keys[k].tunnel], c->ssh, NULL, &argvs[m]) < 0)
                        goto oom;
                m++;
        }
        r = ssh_view_query(argvs, m, SSH_VIEW_TIMEOUT, views);
        if (r < 0)
                goto oom;
        /* judged at each query's first tunnel, in configuration order */
        for (size_t q = 0; q < m; q++)
                owner[keys[first[q]].tunnel] = q + 1;
        for (size_t i = 0; i < c->n_tunnels; i++) {
                size_t q = owner[i], k, end;
                struct tunnel_spec *t = &c->tunnels[i];

                if (!q--)
                        continue;
                k = first[q];
                end = q + 1 < m ? first[q + 1] : n;
                judge_view(p, t, &views[q], end - k - 1);
                if (!views[q].error && t->ssh_config_file && strcmp(t->ssh_config_file, "none") != 0)
                        take_view(t, &views[q]);
        }
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
        free(owner);
}

/* Like sshd's StrictModes: a file that becomes commands (a configuration, an ssh_config
 * with its ProxyCommand, a hook program) and the directory holding it must be writable by
 * root and tunneld's user only (a directory may be sticky, like /tmp). NULL if safe. */
static const char *unsafe_mode(const char *path, const struct stat *st, char *buf, size_t size)
{
        char dir[PATH_MAX];
        struct stat dst;
        char *slash;

        if (st->st_mode & 022) {
                snprintf(buf, size, "writable by group or others (mode %04o): fix with chmod go-w",
                         (unsigned)(st->st_mode & 07777));
                return buf;
        }
        if (st->st_uid != 0 && st->st_uid != geteuid()) {
                snprintf(buf, size, "owned by uid %d, neither root nor tunneld's user (uid %d): fix with chown",
                         (int)st->st_uid, (int)geteuid());
                return buf;
        }
        if ((size_t)snprintf(dir, sizeof(dir), "%s", path) >= sizeof(dir))
                return NULL;            /* too long to be opened anyway */
        slash = strrchr(dir, '/');
        if (!slash)
                return NULL;            /* relative to the working directory: not ours to judge */
        if (slash == dir)
                slash[1] = '\0';
        else
                *slash = '\0';
        if (stat(dir, &dst) < 0)
                return NULL;            /* the file's own check reports what is missing */
        if ((dst.st_mode & 022) && !(dst.st_mode & S_ISVTX)) {
                snprintf(buf, size, "its directory %s is writable by group or others (mode %04o): fix with chmod go-w",
                         dir, (unsigned)(dst.st_mode & 07777));
                return buf;
        }
        if (dst.st_uid != 0 && dst.st_uid != geteuid()) {
                snprintf(buf, size, "its directory %s is owned by uid %d, neither root nor tunneld's user: fix with chown",
                         dir, (int)dst.st_uid);
                return buf;
        }
        return NULL;
}

/* Files ssh will read: they must exist, and a key must not be readable by others (ssh
 * ignores such keys). Paths starting with ~ are ssh's to expand. */
static void check_files(struct parser *p, const struct config *c)
{
        char why[PATH_MAX + 128];

        for (size_t i = 0; i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];
                struct stat st;

                if (!t->enabled)
                        continue;       /* an example, or parked: its files may not exist yet */
                if (t->identity_file && t->identity_file[0] != '~') {
                        if (stat(t->identity_file, &st) < 0)
                                diag_tunnel(p, t, "identity_file", "%s: %s", t->identity_file, strerror(errno));
                        else if (!S_ISREG(st.st_mode))
                                diag_tunnel(p, t, "identity_file", "%s: not a regular file", t->identity_file);
                        else if (st.st_mode & 077)
                                diag_tunnel(p, t, "identity_file",
                                            "%s: readable by group or others (mode %04o): ssh refuses such keys; chmod 600 it",
                                            t->identity_file, st.st_mode & 07777);
                        else if (access(t->identity_file, R_OK) < 0)
                                diag_tunnel(p, t, "identity_file", "%s: %s (tunneld runs as uid %d)", t->identity_file,
                                            strerror(errno), (int)geteuid());
                }
                if (t->ssh_config_file && strcmp(t->ssh_config_file, "none") != 0 && t->ssh_config_file[0] != '~') {
                        if (access(t->ssh_config_file, R_OK) < 0)
                                diag_tunnel(p, t, "ssh_config_file", "%s: %s", t->ssh_config_file, strerror(errno));
                        else if (!p->opts->allow_insecure && stat(t->ssh_config_file, &st) == 0 && S_ISREG(st.st_mode) &&
                                 unsafe_mode(t->ssh_config_file, &st, why, sizeof(why)))
                                diag_tunnel(p, t, "ssh_config_file", "%s: %s (its ProxyCommand would run as "
                                            "tunneld), or run tunneld with --allow-insecure-config",
                                            t->ssh_config_file, why);
                }
                if (t->on_state_change) {
                        if (access(t->on_state_change, X_OK) < 0)
                                diag_tunnel(p, t, "on_state_change", "%s: %s", t->on_state_change, strerror(errno));
                        else if (!p->opts->allow_insecure && stat(t->on_state_change, &st) == 0 &&
                                 unsafe_mode(t->on_state_change, &st, why, sizeof(why)))
                                diag_tunnel(p, t, "on_state_change", "%s: %s, or run tunneld with "
                                            "--allow-insecure-config", t->on_state_change, why);
                }
        }
}

/* A configuration file turns into command lines: see unsafe_mode(). */
static int check_file_permissions(FILE *f, const char *path, const struct config_load_options *opts,
                                  struct config_errors *errs)
{
        char why[PATH_MAX + 128];
        struct stat st;

        if (opts->allow_insecure)
                return 0;
        if (fstat(fileno(f), &st) < 0) {
                push_error(errs, "%s: cannot stat: %s", path, strerror(errno));
                return -errno;
        }
        if (unsafe_mode(path, &st, why, sizeof(why))) {
                push_error(errs, "%s: %s, or run tunneld with --allow-insecure-config", path, why);
                return -EPERM;
        }
        return 0;
}

static int config_new(const char *path, struct config **ret)
{
        struct config *c = calloc(1, sizeof(*c));

        if (!c)
                return -ENOMEM;
        c->path = strdup(path);
        c->ssh = strdup("ssh");
        c->stop_timeout = 5;
        c->log_target = LOG_TARGET_AUTO;
        c->log_level = LOG_INFO;
        c->control_socket = strdup(TUNNELD_CONTROL_SOCKET);
        c->ready = READY_STARTED;
        c->ready_timeout = 60;
        c->max_parallel_starts = 8;
        c->watch_network = true;
        c->hook_timeout = 10;
        if (!c->path || !c->ssh || !c->control_socket) {
                config_free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

static int report_parse_error(config_t *cfg, const char *path, struct config_errors *errs)
{
        const char *file = config_error_file(cfg), *text;

        if (config_error_type(cfg) == CONFIG_ERR_FILE_IO) {
                push_error(errs, "%s: cannot read file (or a file it includes)", file ? file : path);
                return -EIO;
        }
        /* libconfig's text is often just "syntax error": say it once */
        text = config_error_text(cfg);
        if (!text || strncmp(text, "syntax error", 12) == 0)
                push_error(errs, "%s:%d: %s", file ? file : path, config_error_line(cfg), text ? text : "syntax error");
        else
                push_error(errs, "%s:%d: syntax error: %s", file ? file : path, config_error_line(cfg), text);
        return -EINVAL;
}

/* Read one file with libconfig; the caller destroys cfg. */
/* What libconfig would mishandle, refused before it sees the text. Scans strings and skips
 * comments like libconfig does.
 * - A NUL byte, raw or as "\x00", would silently cut a string short: "h\x00-o…" would
 *   reach ssh as "h".
 * - @include: libconfig 1.5's scanner exit()s the whole process when the named file cannot
 *   be read (a directory, say), and an included file would escape the permission check.
 *   Drop-in files in tunneld.d/ do the job, checked like the main file. */
static int check_raw_text(const char *text, size_t len, const char *path, struct config_errors *errs)
{
        bool in_string = false;
        int line = 1;

        for (size_t i = 0; i < len; i++) {
                char c = text[i];

                if (c == '\0') {
                        push_error(errs, "%s:%d: a NUL byte is not allowed in a configuration file", path, line);
                        return -EINVAL;
                }
                if (c == '\n') {
                        line++;
                        continue;
                }
                if (in_string) {
                        if (c == '"')
                                in_string = false;
                        else if (c == '\\' && i + 1 < len) {
                                if (text[i + 1] == 'x' && i + 3 < len && text[i + 2] == '0' && text[i + 3] == '0') {
                                        push_error(errs, "%s:%d: \"\\x00\" is not allowed: a NUL would cut the string short",
                                                   path, line);
                                        return -EINVAL;
                                }
                                i++;
                                if (text[i] == '\n')
                                        line++;
                        }
                        continue;
                }
                if (c == '"')
                        in_string = true;
                else if (c == '@' && len - i >= 8 && strncmp(text + i, "@include", 8) == 0) {
                        push_error(errs, "%s:%d: @include is not supported: put tunnels in drop-in files "
                                   "(*.conf in the .d directory named like the main file, or include_dir)", path, line);
                        return -EINVAL;
                } else if (c == '#' || (c == '/' && i + 1 < len && text[i + 1] == '/')) {
                        while (i + 1 < len && text[i + 1] != '\n' && text[i + 1] != '\0')
                                i++;
                } else if (c == '/' && i + 1 < len && text[i + 1] == '*') {
                        for (i += 2; i + 1 < len && !(text[i] == '*' && text[i + 1] == '/'); i++)
                                if (text[i] == '\n')
                                        line++;
                        i++;
                }
        }
        return 0;
}

#define CONFIG_FILE_MAX (16u << 20)

/* Read one file with libconfig; the caller destroys cfg. */
static int read_file(const char *path, const struct config_load_options *opts, config_t *cfg,
                     struct config_errors *errs)
{
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *text = NULL;
        size_t len = 0, cap = 0;
        int r;

        config_init(cfg);
        config_set_auto_convert(cfg, CONFIG_FALSE);
        f = fopen(path, "re");
        if (!f) {
                r = -errno;
                push_error(errs, "%s: cannot open: %s", path, strerror(-r));
                return r;
        }
        r = check_file_permissions(f, path, opts, errs);
        if (r < 0)
                return r;
        for (;;) {
                size_t n;

                if (len + 4096 + 1 > cap) {
                        char *grown;

                        cap = cap ? 2 * cap : 16384;
                        if (cap > CONFIG_FILE_MAX + 4096 + 1) {
                                push_error(errs, "%s: larger than %u MiB", path, CONFIG_FILE_MAX >> 20);
                                return -EFBIG;
                        }
                        grown = realloc(text, cap);
                        if (!grown)
                                return -ENOMEM;
                        text = grown;
                }
                n = fread(text + len, 1, cap - len - 1, f);
                len += n;
                if (n == 0)
                        break;
        }
        if (ferror(f)) {
                push_error(errs, "%s: cannot read", path);
                return -EIO;
        }
        text[len] = '\0';
        r = check_raw_text(text, len, path, errs);
        if (r < 0)
                return r;
        if (config_read_string(cfg, text) != CONFIG_TRUE)
                return report_parse_error(cfg, path, errs);
        return 0;
}

static int filter_conf(const struct dirent *d)
{
        size_t n = strlen(d->d_name);

        if (d->d_type == DT_DIR)
                return 0;       /* a directory named x.conf is not a drop-in */
        return d->d_name[0] != '.' && n > 5 && strcmp(d->d_name + n - 5, ".conf") == 0;
}

/* Every *.conf of the drop-in directory, in lexical order. A missing directory is fine. */
static int load_dropins(struct parser *p, struct config *c, const struct tunnel_spec *tmpl)
{
        struct dirent **names = NULL;
        int n, r = 0;

        if (!c->include_dir)
                return 0;
        n = scandir(c->include_dir, &names, filter_conf, alphasort);
        if (n < 0) {
                if (errno == ENOENT)
                        return 0;
                push_error(p->errs, "%s: cannot read the drop-in directory: %s", c->include_dir, strerror(errno));
                return -errno;
        }
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *path = NULL;
                config_t cfg;

                if (r >= 0 && asprintf(&path, "%s/%s", c->include_dir, names[i]->d_name) < 0) {
                        path = NULL;
                        r = -ENOMEM;
                }
                if (r >= 0) {
                        struct parser dp = *p;

                        dp.path = path;
                        if (read_file(path, p->opts, &cfg, p->errs) >= 0) {
                                parse_dropin(&dp, config_root_setting(&cfg), c, tmpl);
                                p->seen = dp.seen;      /* it may have grown */
                                if (dp.oom)
                                        r = dp.oom;
                        }
                        config_destroy(&cfg);
                }
                free(names[i]);
        }
        free(names);
        return r;
}

/* Default drop-in directory: the main file's path with ".conf" replaced by ".d"
 * (/etc/tunneld.conf: /etc/tunneld.d; /etc/tunneld/office.conf: /etc/tunneld/office.d), so
 * that tunneld@NAME instances never share one. */
static int default_include_dir(struct config *c)
{
        size_t n = strlen(c->path);

        if (n > 5 && strcmp(c->path + n - 5, ".conf") == 0)
                n -= 5;
        if (asprintf(&c->include_dir, "%.*s.d", (int)n, c->path) < 0) {
                c->include_dir = NULL;
                return -ENOMEM;
        }
        return 0;
}

/* Shared by both loaders: cfg holds the parsed main file. */
static int load_parsed(config_t *cfg, const char *path, const struct config_load_options *opts, bool from_file,
                       struct config **ret, struct config_errors *errs)
{
        _cleanup_config_free_ struct config *c = NULL;
        struct parser p = { .path = path, .opts = opts, .errs = errs };
        struct tunnel_spec tmpl;
        int r;

        r = config_new(path, &c);
        if (r < 0)
                return r;
        spec_set_defaults(&tmpl);
        parse_root(&p, config_root_setting(cfg), c, &tmpl);
        if (!p.oom && from_file) {
                if (!c->include_dir)
                        r = default_include_dir(c);
                else if (strcmp(c->include_dir, "none") == 0)
                        c->include_dir = (free(c->include_dir), NULL);
                if (r >= 0)
                        r = load_dropins(&p, c, &tmpl);
                if (r == -ENOMEM)
                        p.oom = r;
        }
        tunnel_spec_done(&tmpl);
        p.seen = strv_free(p.seen);
        if (p.oom)
                return p.oom;
        /* Across tunnels, among those without errors of their own (so that one mistake does
         * not hide the others); "after" only when every tunnel is there to be named. */
        if (errs->n == 0)
                check_after(&p, c);
        /* ssh's own judgement, of a configuration that is valid so far */
        if (errs->n == 0 && opts->ask_ssh != CONFIG_SSH_SKIP)
                ask_ssh(&p, c);
        check_ports(&p, c);
        if (from_file)
                check_files(&p, c);     /* strings (tests, fuzzing) stay off the filesystem */
        if (p.oom)
                return p.oom;
        if (opts->control_socket) {
                free(c->control_socket);
                c->control_socket = strdup(opts->control_socket);
                if (!c->control_socket)
                        return -ENOMEM;
        }
        c->load_options = *opts;
        if (errs->n > 0)
                return -EINVAL;
        *ret = c;
        c = NULL;
        return 0;
}

static const struct config_load_options default_options;

int config_load(const char *path, const struct config_load_options *opts, struct config **ret,
                struct config_errors *errs)
{
        config_t cfg;
        int r;

        if (!opts)
                opts = &default_options;
        r = read_file(path, opts, &cfg, errs);
        if (r >= 0)
                r = load_parsed(&cfg, path, opts, true, ret, errs);
        config_destroy(&cfg);
        return r;
}

int config_load_string(const char *text, const char *name, struct config **ret, struct config_errors *errs)
{
        config_t cfg;
        int r;

        config_init(&cfg);
        config_set_auto_convert(&cfg, CONFIG_FALSE);
        r = check_raw_text(text, strlen(text), name, errs);
        if (r < 0)
                ;
        else if (config_read_string(&cfg, text) != CONFIG_TRUE)
                r = report_parse_error(&cfg, name, errs);
        else
                r = load_parsed(&cfg, name, &default_options, false, ret, errs);
        config_destroy(&cfg);
        return r;
}
