/* SPDX-License-Identifier: MIT */
/* config: loading a configuration: the main file and its drop-ins, read with their size,
 * NUL and permission checks, parsed (config_parse.c), checked across tunnels
 * (config_check.c, config_ssh.c). */
#include "config.h"
#include "config_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef TUNNELD_CONTROL_SOCKET
#define TUNNELD_CONTROL_SOCKET "/run/tunneld/control"
#endif

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
                config_push_error(errs, "%s: cannot read file (or a file it includes)", file ? file : path);
                return -EIO;
        }
        /* libconfig's text is often just "syntax error": say it once */
        text = config_error_text(cfg);
        if (!text || strncmp(text, "syntax error", 12) == 0)
                config_push_error(errs, "%s:%d: %s", file ? file : path, config_error_line(cfg), text ? text : "syntax error");
        else
                config_push_error(errs, "%s:%d: syntax error: %s", file ? file : path, config_error_line(cfg), text);
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
                        config_push_error(errs, "%s:%d: a NUL byte is not allowed in a configuration file", path, line);
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
                                        config_push_error(errs, "%s:%d: \"\\x00\" is not allowed: a NUL would cut the string short",
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
                        config_push_error(errs, "%s:%d: @include is not supported: put tunnels in drop-in files "
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

/* O_NONBLOCK: a FIFO named like a drop-in must not hang the load (a reload's child, -t).
 * A drop-in is a regular file; the main file may be a pipe (tunneld -t -c <(…)). */
static int open_file(const char *path, bool main_file, struct config_errors *errs, FILE **ret)
{
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), r = 0;
        struct stat st;
        bool opened = fd >= 0 && fstat(fd, &st) == 0;

        if (opened && !main_file && !S_ISREG(st.st_mode))
                r = -EINVAL;
        else if (!opened || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0 || !(*ret = fdopen(fd, "r")))
                r = -errno;
        if (r == -EINVAL)
                config_push_error(errs, "%s: not a regular file: a drop-in file must be one", path);
        else if (r < 0)
                config_push_error(errs, "%s: cannot open: %s", path, strerror(-r));
        if (r < 0 && fd >= 0)
                close(fd);
        return r;       /* 0: fd is the FILE's now */
}

/* FNV-1a, 64 bits: enough to tell whether two loads read the same files. */
static uint64_t digest_add(uint64_t h, const char *data, size_t len)
{
        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char)data[i]) * 0x100000001b3ull;
        return h;
}

/* Read one file with libconfig (its name and bytes added to *digest); the caller destroys
 * cfg. */
static int read_file(const char *path, const struct config_load_options *opts, config_t *cfg,
                     struct config_errors *errs, uint64_t *digest, bool main_file)
{
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *text = NULL;
        size_t len = 0, cap = 0;
        int r;

        config_init(cfg);
        config_set_auto_convert(cfg, CONFIG_FALSE);
        r = open_file(path, main_file, errs, &f);
        if (r < 0)
                return r;
        r = config_check_file_permissions(f, path, opts, errs);
        if (r < 0)
                return r;
        for (;;) {
                size_t n;

                if (len + 4096 + 1 > cap) {
                        char *grown;

                        cap = cap ? 2 * cap : 16384;
                        if (cap > CONFIG_FILE_MAX + 4096 + 1) {
                                config_push_error(errs, "%s: larger than %u MiB", path, CONFIG_FILE_MAX >> 20);
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
                config_push_error(errs, "%s: cannot read", path);
                return -EIO;
        }
        text[len] = '\0';
        if (main_file && len == 0) {
                /* an editor or a config manager between truncating and writing it: applying
                 * "no tunnels" would stop every one */
                config_push_error(errs, "%s: is empty (being written?); the main file needs at least one setting", path);
                return -EINVAL;
        }
        *digest = digest_add(digest_add(*digest, path, strlen(path) + 1), text, len + 1);
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

/* Every *.conf of the drop-in directory, in lexical order. A missing directory is fine; one
 * others can write is not read at all. Each file is judged like the main file (a symlink
 * must be root's or tunneld's user's, and so must what it leads to and every directory on
 * the way). */
static int load_dropins(struct parser *p, struct config *c, const struct tunnel_spec *tmpl,
                        const config_setting_t *root)
{
        struct dirent **names = NULL;
        int n, r = 0;

        if (!c->include_dir || config_check_include_dir(p, c->include_dir, root) < 0)
                return 0;
        n = scandir(c->include_dir, &names, filter_conf, alphasort);
        if (n < 0) {
                if (errno == ENOENT)
                        return 0;
                config_push_error(p->errs, "%s: cannot read the drop-in directory: %s", c->include_dir, strerror(errno));
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
                        if (read_file(path, p->opts, &cfg, p->errs, &p->digest, false) >= 0) {
                                config_parse_dropin(&dp, config_root_setting(&cfg), c, tmpl);
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
                       uint64_t digest, struct config **ret, struct config_errors *errs)
{
        _cleanup_config_free_ struct config *c = NULL;
        struct parser p = { .digest = digest, .path = path, .opts = opts, .errs = errs,
                            .load_timeout = opts->load_timeout > 0 ? opts->load_timeout : CONFIG_LOAD_TIMEOUT };
        struct tunnel_spec tmpl;
        int r;

        p.deadline = now_mono() + p.load_timeout;
        r = config_new(path, &c);
        if (r < 0)
                return r;
        config_spec_defaults(&tmpl);
        config_parse_root(&p, config_root_setting(cfg), c, &tmpl);
        if (!p.oom && from_file) {
                if (!c->include_dir)
                        r = default_include_dir(c);
                else if (strcmp(c->include_dir, "none") == 0)
                        c->include_dir = (free(c->include_dir), NULL);
                if (r >= 0)
                        r = load_dropins(&p, c, &tmpl, config_root_setting(cfg));
                if (r == -ENOMEM)
                        p.oom = r;
        }
        tunnel_spec_done(&tmpl);
        config_names_free(&p.seen);
        p.warned = strv_free(p.warned);
        c->warnings = p.warnings;
        p.warnings = NULL;
        if (p.oom)
                return p.oom;
        /* Across tunnels, among those without errors of their own (so that one mistake does
         * not hide the others); "after" only when every tunnel is there to be named. */
        config_pins_check(&p, c);
        config_alts_check(&p, c, from_file);
        if (errs->n == 0)
                config_check_after(&p, c);
        /* before anything runs (ssh -G): the ssh program, and where tunneld writes */
        if (from_file)
                config_check_trusted_paths(&p, c, config_root_setting(cfg));
        /* ssh's own judgement, of a configuration that is valid so far */
        if (errs->n == 0 && opts->ask_ssh != CONFIG_SSH_SKIP)
                config_ssh_ask(&p, c);
        else if (errs->n == 0 && opts->views)
                config_ssh_take_views(&p, c, opts->views);
        config_check_ports(&p, c);
        if (errs->n == 0)
                config_check_share(&p, c);
        if (from_file)
                config_check_files(&p, c);     /* strings (tests, fuzzing) stay off the filesystem */
        if (p.oom)
                return p.oom;
        if (opts->control_socket) {
                free(c->control_socket);
                c->control_socket = strdup(opts->control_socket);
                if (!c->control_socket)
                        return -ENOMEM;
        }
        c->load_options = *opts;
        c->source_digest = p.digest;
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
        uint64_t digest = 0xcbf29ce484222325ull;
        config_t cfg;
        int r;

        if (!opts)
                opts = &default_options;
        r = read_file(path, opts, &cfg, errs, &digest, true);
        if (r >= 0)
                r = load_parsed(&cfg, path, opts, true, digest, ret, errs);
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
                r = load_parsed(&cfg, name, &default_options, false, 0, ret, errs);
        config_destroy(&cfg);
        return r;
}

/* Globals read once at start: say so rather than ignore a change silently. */
void config_warn_fixed_globals(const struct config *old, const struct config *c)
{
        if (strcmp_null(old->control_socket, c->control_socket) != 0)
                log_warning("control_socket changed to %s: takes effect when tunneld restarts",
                            c->control_socket ? c->control_socket : "none");
        if (strcmp_null(old->control_group, c->control_group) != 0)
                log_warning("control_group changed to %s: takes effect when tunneld restarts",
                            c->control_group ? c->control_group : "(none)");
        if (old->control_world_readable != c->control_world_readable)
                log_warning("control_world_readable changed to %s: takes effect when tunneld restarts",
                            c->control_world_readable ? "true" : "false");
        if (old->ready != c->ready || old->ready_timeout != c->ready_timeout)
                log_warning("ready/ready_timeout changed: they only matter at start, and take effect when tunneld restarts");
}
