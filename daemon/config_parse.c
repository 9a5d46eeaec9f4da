/* SPDX-License-Identifier: MIT */
/* config_parse: libconfig's tree → tunnel specs and globals, through one table of settings
 * (name, type, where it goes, how it is checked); every problem as "FILE:LINE: setting:
 * what". */
#include "config.h"
#include "config_internal.h"
#include "host_key.h"

#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DURATION_MAX_S 86400.0

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
int config_push_error(struct config_errors *errs, const char *fmt, ...)
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
        va_list ap;

        va_start(ap, fmt);
        config_vdiag(p, setting_file(p, s), s ? (int)config_setting_source_line(s) : 0, NULL, label, fmt, ap);
        va_end(ap);
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

enum kind { K_STRING, K_BOOL, K_INT, K_DURATION, K_STRV, K_ENUM, K_GROUP, K_OBSOLETE, K_ALTS };

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
        const char *obsolete;                   /* K_OBSOLETE: why it no longer does anything */
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
        { .name = "local_forwards", .kind = K_STRV, .offset = F(local_forwards), .validate = forward_validate_local },
        { .name = "remote_forwards", .kind = K_STRV, .offset = F(remote_forwards), .validate = forward_validate_remote },
        { .name = "dynamic_forwards", .kind = K_STRV, .offset = F(dynamic_forwards), .validate = forward_validate_dynamic },
        { .name = "ssh_options", .kind = K_STRV, .offset = F(ssh_options), .validate = validate_ssh_option },
        { .name = "host_keys", .kind = K_STRV, .offset = F(host_keys), .validate = host_key_validate },
        { .name = "jump_host_keys", .kind = K_STRV, .offset = F(jump_host_keys), .validate = host_key_validate_jump },
        { .name = "alternatives", .kind = K_ALTS, .offset = F(alts) },
        { .name = "server_alive_interval", .kind = K_INT, .offset = F(server_alive_interval), .min = 0, .max = 86400 },
        { .name = "server_alive_count_max", .kind = K_INT, .offset = F(server_alive_count_max), .min = 1, .max = 1000 },
        /* settings of the engine before connections; accepted with one warning each */
        { .name = "exit_on_forward_failure", .kind = K_OBSOLETE,
          .obsolete = "a forward that fails is asked for again on the running connection (the tunnel is "
                      "degraded meanwhile, its other forwards keep working) whatever it says" },
        { .name = "multiplex", .kind = K_OBSOLETE,
          .obsolete = "every tunnel's ssh is a multiplexing master of tunneld's own, its forwards opened "
                      "over the control socket" },
        { .name = "share_connection", .kind = K_BOOL, .offset = F(share_connection) },
        { .name = "drain_timeout", .kind = K_DURATION, .offset = F(sup.drain_timeout), .min = 0, .max = DURATION_MAX_S },
        { .name = "dead_path_timeout", .kind = K_DURATION, .offset = F(sup.dead_path_timeout), .min = 0, .max = 3600 },
        { .name = "connect_timeout", .kind = K_INT, .offset = F(connect_timeout), .min = 1, .max = 3600 },
        { .name = "start_timeout", .kind = K_DURATION, .offset = F(sup.start_timeout), .min = 0, .max = DURATION_MAX_S },
        { .name = "gatetime", .kind = K_DURATION, .offset = F(sup.gatetime), .min = 0, .max = DURATION_MAX_S },
        { .name = "fail_fast", .kind = K_BOOL, .offset = F(sup.fail_fast) },
        { .name = "restart", .kind = K_ENUM, .offset = F(sup.restart), ENUM(restart_names) },
        { .name = "restart_delay", .kind = K_DURATION, .offset = F(sup.restart_delay), .min = 0.05, .max = DURATION_MAX_S },
        { .name = "restart_delay_max", .kind = K_DURATION, .offset = F(sup.restart_delay_max), .min = 0.05, .max = DURATION_MAX_S },
        { .name = "max_starts", .kind = K_INT, .offset = F(sup.max_starts), .min = 0, .max = INT_MAX },
        { .name = "max_lifetime", .kind = K_DURATION, .offset = F(sup.max_lifetime), .min = 0, .max = 365 * DURATION_MAX_S },
        { .name = "max_lifetime_action", .kind = K_ENUM, .offset = F(sup.max_lifetime_action), ENUM(lifetime_action_names) },
        { .name = "after", .kind = K_STRV, .offset = F(after), .validate = validate_tunnel_name },
        { .name = "required", .kind = K_BOOL, .offset = F(required) },
        { .name = "on_state_change", .kind = K_STRING, .offset = F(on_state_change), .validate = validate_absolute_path },
        { .name = "flap_threshold", .kind = K_INT, .offset = F(sup.flap_threshold), .min = 2, .max = 64 },
        { .name = "flap_window", .kind = K_DURATION, .offset = F(sup.flap_window), .min = 1, .max = DURATION_MAX_S },
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

const char *config_tunnel_setting_name(size_t i)
{
        return i < ELEMENTSOF(tunnel_settings) ? tunnel_settings[i].name : NULL;
}
#define find_global_setting(name) find_setting(global_settings, ELEMENTSOF(global_settings), name)

void config_spec_defaults(struct tunnel_spec *t)
{
        *t = (struct tunnel_spec){
                .enabled = true,
                .server_alive_interval = 30,
                .server_alive_count_max = 3,
                .sup.drain_timeout = 60,
                .sup.dead_path_timeout = 4,
                .connect_timeout = 15,
                .sup.gatetime = 30,
                .sup.restart = RESTART_ALWAYS,
                .sup.restart_delay = 1,
                .sup.restart_delay_max = 60,
                .sup.max_lifetime_action = LIFETIME_RESTART,
                .probe = { .interval = 30, .timeout = 5, .failures = 3 },
                .required = true,
                .sup.flap_threshold = 5,
                .sup.flap_window = 60,
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

/* A setting that no longer does anything: one warning for it, however often it is set. */
static void warn_obsolete(struct parser *p, const struct setting *d, const config_setting_t *s, const char *label)
{
        _cleanup_free_ char *line = NULL;

        for (char **w = p->warned; w && *w; w++)
                if (strcmp(*w, d->name) == 0)
                        return;
        if (strv_push(&p->warned, d->name) < 0 ||
            asprintf(&line, "%s:%d: %s: no longer does anything (%s): remove it", setting_file(p, s),
                     config_setting_source_line(s), label, d->obsolete) < 0 ||
            strv_push(&p->warnings, line) < 0)
                p->oom = -ENOMEM;
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
        case K_OBSOLETE:
                if (get_bool(p, s, label, &b))
                        warn_obsolete(p, d, s, label);
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
                if (!(str = get_string(p, s, label)))
                        return;
                for (size_t i = 0; i < d->n_names; i++)
                        if (d->names[i] && strcmp(d->names[i], str) == 0) {
                                *(int *)field = (int)i;
                                return;
                        }
                diag_enum(p, s, label, str, d);
                return;
        case K_ALTS:
                config_alts_parse(p, s, label, field);
                return;
        case K_GROUP: {
                int n = config_setting_length(s);
                if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
                        diag(p, s, label, "must be a group { … }, not %s", type_name(config_setting_type(s)));
                        return;
                }
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

bool config_parse_tunnel_setting(struct parser *p, const config_setting_t *s, const char *key, const char *label,
                                 struct tunnel_spec *spec)
{
        const struct setting *d = find_tunnel_setting(key);

        if (!d)
                return false;
        parse_setting(p, d, s, label, spec);
        return true;
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
        if (t->sup.restart_delay_max < t->sup.restart_delay) {
                snprintf(label, sizeof(label), "%s.restart_delay_max", prefix);
                diag(p, g, label, "%g s is less than restart_delay %g s", t->sup.restart_delay_max, t->sup.restart_delay);
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
                                /* against every tunnel so far, also those with errors of their own */
                                const char *w = config_names_find(&p->seen, name);
                                char *where = NULL;

                                if (w)
                                        diag(p, ns, label, "\"%s\" is already used by the tunnel at %s", name,
                                             w + strlen(name) + 1);
                                else if (asprintf(&where, "%s\t%s:%d", name, setting_file(p, g),
                                                  config_setting_source_line(g)) < 0 ||
                                         config_names_add(&p->seen, where) < 0)
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
void config_parse_root(struct parser *p, const config_setting_t *root, struct config *c, struct tunnel_spec *tmpl)
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
void config_parse_dropin(struct parser *p, const config_setting_t *root, struct config *c,
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

