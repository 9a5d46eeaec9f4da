/* SPDX-License-Identifier: MIT */
/* autossh_import: the files — systemd units (their [Service] ExecStart= and Environment=,
 * specifiers, ${VAR} expansion) and command lines (VAR=x before autossh, export lines) —
 * into one struct imported per autossh command. The command itself is mapped by
 * autossh_map.c, the output written by autossh_render.c. */
#include "autossh_import.h"
#include "autossh_internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

void autossh_imported_init(struct imported *t)
{
        *t = (struct imported){
                .port = -1, .server_alive_interval = -1, .server_alive_count_max = -1, .connect_timeout = -1,
.gatetime = -1, .max_starts = -1, .max_lifetime = -1,
        };
}

void autossh_imported_done(struct imported *t)
{
        free(t->name);
        free(t->where);
        free(t->command);
        free(t->description);
        free(t->host);
        free(t->user);
        free(t->identity_file);
        free(t->jump_host);
        free(t->ssh_config_file);
        strv_free(t->local_forwards);
        strv_free(t->remote_forwards);
        strv_free(t->dynamic_forwards);
        strv_free(t->ssh_options);
        strv_free(t->notes);
        autossh_imported_init(t);
}

int autossh_imported_note(struct imported *t, const char *fmt, ...)
{
        _cleanup_free_ char *note = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&note, fmt, ap);
        va_end(ap);
        if (r < 0) {
                note = NULL;
                return -ENOMEM;
        }
        return strv_push(&t->notes, note);
}

int autossh_import_new(struct autossh_import **ret)
{
        *ret = calloc(1, sizeof(**ret));
        return *ret ? 0 : -ENOMEM;
}

struct autossh_import *autossh_import_free(struct autossh_import *imp)
{
        if (!imp)
                return NULL;
        for (size_t i = 0; i < imp->n_tunnels; i++)
                autossh_imported_done(&imp->tunnels[i]);
        free(imp->tunnels);
        strv_free(imp->errors);
        free(imp);
        return NULL;
}

char *const *autossh_import_errors(const struct autossh_import *imp)
{
        return imp->errors;
}

/* "FILE:LINE: why" and "FILE:LINE:   the line", control characters escaped. */
int autossh_import_refuse(struct autossh_import *imp, const char *file, int line, const char *why, const char *text)
{
        _cleanup_free_ char *a = NULL, *b = NULL, *ea = NULL, *eb = NULL;

        if (asprintf(&a, "%s:%d: %s", file, line, why) < 0 || asprintf(&b, "%s:%d:   %s", file, line, text) < 0) {
                a = b = NULL;
                return -ENOMEM;
        }
        ea = autossh_words_escape(a, 1000);
        eb = autossh_words_escape(b, 1000);
        if (!ea || !eb || strv_push(&imp->errors, ea) < 0 || strv_push(&imp->errors, eb) < 0)
                return -ENOMEM;
        return 0;
}

bool autossh_import_is_var_name(const char *s, size_t n)
{
        if (n == 0 || isdigit((unsigned char)s[0]))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char)s[i]) && s[i] != '_')
                        return false;
        return true;
}

bool autossh_import_is_assignment(const char *w)
{
        const char *eq = strchr(w, '=');
        return eq && autossh_import_is_var_name(w, (size_t)(eq - w));
}

/* The environment (NAME=VALUE strings, later ones win) → t. */
static int map_env(struct imported *t, char *const *env, char why[IMPORT_WHY_MAX])
{
        for (size_t i = 0; env && env[i]; i++) {
                _cleanup_free_ char *name = strndup(env[i], strcspn(env[i], "="));
                int r;

                if (!name)
                        return -ENOMEM;
                r = autossh_import_map_env(t, name, env[i] + strlen(name) + 1, why);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The program must be autossh itself; say what it is instead. */
static int check_program(const char *program, char why[IMPORT_WHY_MAX])
{
        const char *base = strrchr(program, '/') ? strrchr(program, '/') + 1 : program;
        static const char *const shells[] = { "sh", "bash", "dash", "zsh", "ksh", "ash", "busybox", "env" };

        if (strcmp(base, "autossh") == 0)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(shells); i++)
                if (strcmp(base, shells[i]) == 0) {
                        snprintf(why, IMPORT_WHY_MAX, "runs %s, not autossh: refused (tunneld never runs a shell; "
                                 "import the autossh command line itself)", base);
                        return -EINVAL;
                }
        snprintf(why, IMPORT_WHY_MAX, "runs \"%s\", not autossh: refused", program);
        return -EINVAL;
}

/* Map one autossh command (argv[0] is autossh) and keep it, or refuse it. */
int autossh_import_add_command(struct autossh_import *imp, struct imported *t, const char *file, int line, const char *text,
                       char *const *env, char *const *argv, char why[IMPORT_WHY_MAX])
{
        struct imported *grown;
        int r = check_program(argv[0], why);

        if (r >= 0)
                r = map_env(t, env, why);
        if (r >= 0)
                r = autossh_import_map_argv(t, argv + 1, why);
        if (r == -EINVAL)
                return autossh_import_refuse(imp, file, line, why, text);
        if (r < 0)
                return r;
        if (asprintf(&t->where, "%s:%d", file, line) < 0) {
                t->where = NULL;
                return -ENOMEM;
        }
        t->command = autossh_words_escape(text, 300);
        if (!t->command)
                return -ENOMEM;
        grown = realloc(imp->tunnels, (imp->n_tunnels + 1) * sizeof(*grown));
        if (!grown)
                return -ENOMEM;
        imp->tunnels = grown;
        imp->tunnels[imp->n_tunnels++] = *t;
        autossh_imported_init(t);
        return 0;
}

/* ---- command lines ---- */

char *autossh_import_trim(char *s)
{
        char *end;

        s += strspn(s, " \t\r");
        end = s + strlen(s);
        while (end > s && strchr(" \t\r", end[-1]))
                *--end = '\0';
        return s;
}

static int command_line(struct autossh_import *imp, const char *file, int line, const char *text, char ***file_env)
{
        _cleanup_strv_free_ char **words = NULL, **env = NULL;
        struct imported t;
        char why[IMPORT_WHY_MAX];
        size_t i = 0;
        bool export;
        int r;

        r = autossh_words_split(text, WORDS_SHELL, &words, why);
        if (r == -EINVAL)
                return autossh_import_refuse(imp, file, line, why, text);
        if (r < 0)
                return r;
        export = words[0] && strcmp(words[0], "export") == 0;
        if (export)
                i++;
        if (strv_copy(*file_env, &env) < 0)
                return -ENOMEM;
        for (; words[i] && autossh_import_is_assignment(words[i]); i++)
                if (strv_push(export ? file_env : &env, words[i]) < 0)
                        return -ENOMEM;
        if (!words[i] && i > 0) {
                /* "VAR=x" alone on a line, or "export VAR=x": for the commands that follow */
                for (size_t j = export ? 1 : 0; !export && j < i; j++)
                        if (strv_push(file_env, words[j]) < 0)
                                return -ENOMEM;
                return 0;
        }
        if (!words[i])
                return 0;
        if (strcmp(words[i], "exec") == 0 && words[i + 1])
                i++;
        autossh_imported_init(&t);
        r = autossh_import_add_command(imp, &t, file, line, text, env, words + i, why);
        autossh_imported_done(&t);
        return r;
}

static int command_lines(struct autossh_import *imp, const char *file, const char *text)
{
        _cleanup_strv_free_ char **file_env = NULL;
        size_t pos = 0;
        int line = 0, at;

        for (;;) {
                _cleanup_free_ char *l = NULL;
                char *s;
                int r = autossh_words_next_line(text, &pos, &line, WORDS_SHELL, &at, &l);

                if (r < 0 || !l)
                        return r;
                s = autossh_import_trim(l);
                if (!*s || *s == '#')
                        continue;
                r = command_line(imp, file, at, s, &file_env);
                if (r < 0)
                        return r;
        }
}

static bool is_unit(const char *file, const char *text)
{
        size_t n = strlen(file);

        if (n >= 8 && strcmp(file + n - 8, ".service") == 0)
                return true;
        for (const char *p = text; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
                if (strncmp(p + strspn(p, " \t"), "[Service]", 9) == 0)
                        return true;
        return false;
}

int autossh_import_text(struct autossh_import *imp, const char *file, const char *text)
{
        return is_unit(file, text) ? autossh_import_unit(imp, file, text) : command_lines(imp, file, text);
}

#define INPUT_MAX (1 << 20)

/* A whole file (or standard input) as a string; -EFBIG, -EBADMSG (a NUL byte), -errno. */
static int read_input(const char *path, char **ret)
{
        _cleanup_close_ int fd = strcmp(path, "-") == 0 ? -1 : open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        struct buf b = {0};
        char chunk[8192];
        ssize_t n;

        if (strcmp(path, "-") != 0 && fd < 0)
                return -errno;
        while ((n = read(fd >= 0 ? fd : STDIN_FILENO, chunk, sizeof(chunk))) != 0) {
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 || b.len + (size_t)n > INPUT_MAX || memchr(chunk, '\0', (size_t)n)) {
                        int r = n < 0 ? -errno : b.len + (size_t)n > INPUT_MAX ? -EFBIG : -EBADMSG;
                        buf_free(&b);
                        return r;
                }
                buf_append(&b, chunk, (size_t)n);
        }
        buf_append(&b, "", 0);
        return buf_steal(&b, ret);
}

int autossh_import_main(char *const *files, FILE *out, FILE *err)
{
        struct autossh_import *imp = NULL;
        _cleanup_free_ char *output = NULL;
        int status = 0, r;

        if (!files[0]) {
                fprintf(err, "tunneld: --import-autossh needs a FILE (or - for standard input)\n");
                return 2;
        }
        if (autossh_import_new(&imp) < 0)
                goto oom;
        for (size_t i = 0; files[i]; i++) {
                _cleanup_free_ char *text = NULL;
                const char *name = strcmp(files[i], "-") == 0 ? "<stdin>" : files[i];

                r = read_input(files[i], &text);
                if (r < 0) {
                        fprintf(err, "%s: cannot read: %s\n", name,
                                r == -EFBIG ? "larger than 1 MiB" : r == -EBADMSG ? "holds a NUL byte" : strerror(-r));
                        status = 1;
                        continue;
                }
                if (autossh_import_text(imp, name, text) < 0)
                        goto oom;
        }
        for (char *const *e = autossh_import_errors(imp); e && *e; e++)
                fprintf(err, "%s\n", *e);
        if (autossh_import_errors(imp))
                status = 1;
        if (autossh_import_render(imp, &output) < 0)
                goto oom;
        fputs(output, out);
        autossh_import_free(imp);
        return fflush(out) == 0 ? status : 1;
oom:
        fprintf(err, "tunneld: out of memory\n");
        autossh_import_free(imp);
        return 1;
}
