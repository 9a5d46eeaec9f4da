/* SPDX-License-Identifier: MIT */
/* autossh_unit: a systemd unit running autossh → its command: the [Service] section's
 * ExecStart= (prefixes, quoting, specifiers, ${VAR} and $VAR from Environment=) and
 * Environment=, the tunnel's name from the unit's; the rest of the unit as notes where
 * it matters. */
#include "autossh_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct unit {
        const char *file;
        char *name;                     /* the file's base name, "autossh@db.service" */
        char *stem;                     /* "autossh@db" */
        char *prefix, *instance;        /* "autossh", "db" (NULL: not a template instance) */
        char *exec;                     /* ExecStart=, and its line */
        int exec_line;
        char **env;
        bool env_file;
};

static void unit_done(struct unit *u)
{
        free(u->name);
        free(u->stem);
        free(u->prefix);
        free(u->instance);
        free(u->exec);
        strv_free(u->env);
}

/* %i, %n, %p … in one word. */
static int unit_specifiers(const struct unit *u, const char *w, char **ret, char why[IMPORT_WHY_MAX])
{
        struct buf b = {0};

        for (const char *p = w; *p; p++) {
                if (*p != '%') {
                        buf_append(&b, p, 1);
                        continue;
                }
                p++;
                if (*p == '%')
                        buf_append(&b, "%", 1);
                else if ((*p == 'i' || *p == 'I') && u->instance && *u->instance)
                        buf_puts(&b, u->instance);
                else if (*p == 'n')
                        buf_puts(&b, u->name);
                else if (*p == 'N')
                        buf_puts(&b, u->stem);
                else if (*p == 'p' || *p == 'P')
                        buf_puts(&b, u->prefix);
                else {
                        buf_free(&b);
                        if (*p == 'i' || *p == 'I')
                                snprintf(why, IMPORT_WHY_MAX, "%%%c: this template has no instance: import a copy "
                                         "named after it (autossh@NAME.service)", *p);
                        else
                                snprintf(why, IMPORT_WHY_MAX, "the specifier %%%c cannot be resolved here: write "
                                         "its value", *p ? *p : ' ');
                        return -EINVAL;
                }
        }
        buf_append(&b, "", 0);
        return buf_steal(&b, ret);
}

static const char *unit_env(const struct unit *u, const char *name, size_t n)
{
        const char *found = NULL;

        for (char **e = u->env; e && *e; e++)
                if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
                        found = *e + n + 1;     /* the last assignment wins */
        return found;
}

/* ${VAR} in a word, and $$; the variables come from the unit's Environment= only. */
static int unit_expand(const struct unit *u, struct imported *t, const char *w, char **ret, char why[IMPORT_WHY_MAX])
{
        struct buf b = {0};

        for (const char *p = w; *p; p++) {
                const char *end, *value;

                if (p[0] != '$' || (p[1] != '$' && p[1] != '{')) {
                        buf_append(&b, p, 1);
                        continue;
                }
                if (p[1] == '$') {
                        buf_append(&b, "$", 1);
                        p++;
                        continue;
                }
                end = strchr(p + 2, '}');
                value = end && autossh_import_is_var_name(p + 2, (size_t)(end - p - 2)) ? unit_env(u, p + 2, (size_t)(end - p - 2)) : NULL;
                if (!value) {
                        buf_free(&b);
                        snprintf(why, IMPORT_WHY_MAX, "%.*s is not set by this unit's Environment=%s: write its value",
                                 end ? (int)(end - p + 1) : (int)strlen(p), p,
                                 u->env_file ? " (EnvironmentFile= is not read)" : "");
                        return -EINVAL;
                }
                if (autossh_imported_note(t, "%.*s: expanded from the unit's Environment= to \"%s\"", (int)(end - p + 1), p,
                                  value) < 0) {
                        buf_free(&b);
                        return -ENOMEM;
                }
                buf_puts(&b, value);
                p = end;
        }
        buf_append(&b, "", 0);
        return buf_steal(&b, ret);
}

/* A whole word "$VAR": its value split at whitespace (systemd.service(5)). */
static int unit_split_var(const struct unit *u, struct imported *t, const char *w, char ***argv, bool *done,
                          char why[IMPORT_WHY_MAX])
{
        _cleanup_strv_free_ char **words = NULL;
        const char *value;
        int r;

        *done = w[0] == '$' && autossh_import_is_var_name(w + 1, strlen(w + 1));
        if (!*done)
                return 0;
        value = unit_env(u, w + 1, strlen(w + 1));
        if (!value) {
                snprintf(why, IMPORT_WHY_MAX, "%s is not set by this unit's Environment=%s: write its value", w,
                         u->env_file ? " (EnvironmentFile= is not read)" : "");
                return -EINVAL;
        }
        if (autossh_imported_note(t, "%s: expanded from the unit's Environment= to \"%s\"", w, value) < 0)
                return -ENOMEM;
        r = autossh_words_split(value, WORDS_UNIT, &words, why);
        if (r < 0)
                return r;       /* its value's own syntax: refused with why, not out of memory */
        for (char **x = words; *x; x++)
                if (strv_push(argv, *x) < 0)
                        return -ENOMEM;
        return 0;
}

/* ExecStart= → argv: prefixes, quoting, specifiers, variables. */
static int unit_argv(const struct unit *u, struct imported *t, char ***ret, char why[IMPORT_WHY_MAX])
{
        _cleanup_strv_free_ char **words = NULL, **argv = NULL;
        const char *s = u->exec;
        bool argv0 = false, expand = true;
        int r;

        for (; *s && strchr("-@:+!", *s); s++) {
                argv0 = argv0 || *s == '@';
                expand = expand && *s != ':';
        }
        r = autossh_words_split(s, WORDS_UNIT, &words, why);
        if (r < 0)
                return r;
        argv = calloc(1, sizeof(char *));
        if (!argv)
                return -ENOMEM;
        for (size_t i = 0; words[i]; i++) {
                _cleanup_free_ char *a = NULL, *b = NULL;
                bool done = false;

                if (strcmp(words[i], ";") == 0)
                        return snprintf(why, IMPORT_WHY_MAX, "';' runs a second command: refused"), -EINVAL;
                if (argv0 && i == 1)
                        continue;       /* "@/usr/bin/autossh NAME": NAME is only argv[0] */
                r = unit_specifiers(u, words[i], &a, why);
                if (r >= 0 && expand)
                        r = unit_split_var(u, t, a, &argv, &done, why);
                if (r >= 0 && !done)
                        r = expand ? unit_expand(u, t, a, &b, why) : 0;
                if (r < 0)
                        return r;
                if (!done && (r = strv_push(&argv, b ? b : a)) < 0)
                        return r;
        }
        if (!argv[0])
                return snprintf(why, IMPORT_WHY_MAX, "ExecStart= names no program"), -EINVAL;
        *ret = argv;
        argv = NULL;
        return 0;
}

/* The name parts of a unit file: autossh-db.service, autossh@db.service, autossh@.service. */
static int unit_names(struct unit *u, const char *file)
{
        const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
        size_t n = strlen(base);
        const char *at;

        if (n > 8 && strcmp(base + n - 8, ".service") == 0)
                n -= 8;
        u->name = strdup(base);
        u->stem = strndup(base, n);
        if (!u->name || !u->stem)
                return -ENOMEM;
        at = memchr(u->stem, '@', n);
        u->prefix = strndup(u->stem, at ? (size_t)(at - u->stem) : n);
        u->instance = at ? strdup(at + 1) : NULL;
        return !u->prefix || (at && !u->instance) ? -ENOMEM : 0;
}

/* The tunnel's name from the unit's: the instance, else the name without "autossh". */
static int unit_tunnel_name(const struct unit *u, char **ret)
{
        const char *s = u->instance && *u->instance ? u->instance : u->prefix;
        size_t n = strlen(s);

        if (!u->instance || !*u->instance) {
                if (strncmp(s, "autossh", 7) == 0 && strchr("-_.", s[7]) && s[7])
                        s += 8, n -= 8;
                else if (n > 8 && strcmp(s + n - 8, "-autossh") == 0)
                        n -= 8;
                else if (strcmp(s, "autossh") == 0)
                        n = 0;
        }
        *ret = n ? strndup(s, n) : NULL;
        return n && !*ret ? -ENOMEM : 0;
}

/* One Key=Value line of [Service] or [Unit]. */
static int unit_setting(struct autossh_import *imp, struct unit *u, struct imported *t, const char *section,
                        const char *key, const char *value, int line, const char *text)
{
        if (strcmp(section, "Unit") == 0 && strcmp(key, "Description") == 0 && !t->description)
                return (t->description = autossh_words_escape(value, 200)) ? 0 : -ENOMEM;
        if (strcmp(section, "Service") != 0)
                return 0;
        if (strcmp(key, "ExecStart") == 0) {
                if (u->exec && *value)
                        return autossh_import_refuse(imp, u->file, line, "a second ExecStart=: import one command per unit", text);
                free(u->exec);
                u->exec = *value ? strdup(value) : NULL;        /* empty: reset, as in a drop-in */
                u->exec_line = line;
                return *value && !u->exec ? -ENOMEM : 0;
        }
        if (strcmp(key, "Environment") == 0) {
                _cleanup_strv_free_ char **words = NULL;
                char why[WORDS_WHY_MAX];
                int r;

                if (!*value)
                        return (u->env = strv_free(u->env)), 0;
                r = autossh_words_split(value, WORDS_UNIT, &words, why);
                if (r == -EINVAL)
                        return autossh_import_refuse(imp, u->file, line, why, text);
                for (char **w = words; r >= 0 && *w; w++)
                        r = autossh_import_is_assignment(*w) ? strv_push(&u->env, *w)
                                              : autossh_imported_note(t, "Environment=%s: not NAME=VALUE: ignored", *w);
                return r;
        }
        if (strcmp(key, "EnvironmentFile") == 0) {
                u->env_file = true;
                return autossh_imported_note(t, "EnvironmentFile=%s: not read: if it sets AUTOSSH_ variables, set the "
                                     "settings they map to here", value);
        }
        if (strcmp(key, "User") == 0)
                return autossh_imported_note(t, "User=%s: tunneld runs every ssh as its own user (tunneld): its key and "
                                     "known_hosts must be readable by that user", value);
        if (strncmp(key, "ExecStartPre", 12) == 0 || strncmp(key, "ExecStartPost", 13) == 0 ||
            strncmp(key, "ExecStop", 8) == 0 || strcmp(key, "ExecReload") == 0)
                return autossh_imported_note(t, "%s=%s: not run: tunneld runs no command around a tunnel (see on_state_change "
                                     "for a program run on each change of state)", key, value);
        return 0;
}

static int unit_lines(struct autossh_import *imp, struct unit *u, struct imported *t, const char *text)
{
        char section[64] = "";
        size_t pos = 0;
        int line = 0, at;

        for (;;) {
                _cleanup_free_ char *l = NULL;
                char *s, *eq, *key;
                int r = autossh_words_next_line(text, &pos, &line, WORDS_UNIT, &at, &l);
                if (r < 0 || !l)
                        return r;
                s = autossh_import_trim(l);
                if (!*s || *s == '#' || *s == ';')
                        continue;
                if (*s == '[') {
                        size_t n = strcspn(s + 1, "]");
                        snprintf(section, sizeof(section), "%.*s", (int)(n < sizeof(section) ? n : 0), s + 1);
                        continue;
                }
                eq = strchr(s, '=');
                if (!eq)
                        continue;
                *eq = '\0';
                key = autossh_import_trim(s);
                r = unit_setting(imp, u, t, section, key, autossh_import_trim(eq + 1), at, s);
                *eq = '=';
                if (r < 0)
                        return r;
        }
}

int autossh_import_unit(struct autossh_import *imp, const char *file, const char *text)
{
        _cleanup_strv_free_ char **argv = NULL;
        struct unit u = { .file = file };
        size_t errors = strv_length(imp->errors);
        struct imported t;
        int r;

        autossh_imported_init(&t);
        r = unit_names(&u, file);
        if (r >= 0)
                r = unit_lines(imp, &u, &t, text);
        if (r >= 0 && strv_length(imp->errors) == errors && !u.exec)
                r = autossh_import_refuse(imp, file, 1, "no ExecStart= in a [Service] section", u.name);
        if (r >= 0 && strv_length(imp->errors) == errors && u.exec) {
                char why[IMPORT_WHY_MAX];

                r = unit_argv(&u, &t, &argv, why);
                if (r >= 0)
                        r = unit_tunnel_name(&u, &t.name);
                if (r >= 0)
                        r = autossh_import_add_command(imp, &t, file, u.exec_line, u.exec, u.env, argv, why);
                else if (r == -EINVAL)
                        r = autossh_import_refuse(imp, file, u.exec_line, why, u.exec);
        }
        autossh_imported_done(&t);
        unit_done(&u);
        return r;
}

