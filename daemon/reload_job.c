/* SPDX-License-Identifier: MIT */
#include "reload_job.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json.h"
#include "json_write.h"
#include "log.h"
#include "process.h"
#include "ssh_view.h"
#include "util.h"

#define REPORT_MAX (8u << 20)           /* a report is a few bytes per tunnel */
#define READ_CHUNK 65536
/* The child fails its load itself at the load's limit (config.h); this is for a child
 * stuck anywhere else. */
#define JOB_MARGIN 5.0

struct reload_job {
        struct ev_loop *loop;
        pid_t pid;
        int fd;
        ev_io io;
        ev_child child;
        ev_timer timer;
        double timeout;                 /* seconds */
        struct buf report;
        bool eof, exited;
        int status;
        char *path;
        struct config_load_options opts;
        reload_job_done_t done;
        reload_job_checked_t checked;   /* a check's: its verdict only */
        void *userdata;
};

/* ---- the report: what the child found ---- */

/* A stamp as "DEV:INO:SIZE:MTIME_NS" in hex: JSON's numbers would not hold 64 bits. */
static void write_stamp(struct json_writer *w, const char *key, const struct file_stamp *s)
{
        char text[4 * 17 + 4];

        snprintf(text, sizeof(text), "%" PRIx64 ":%" PRIx64 ":%" PRIx64 ":%" PRIx64, s->dev, s->ino, s->size,
                 (uint64_t)s->mtime_ns);
        json_field_string(w, key, text);
}

static int parse_stamp(const char *text, struct file_stamp *ret)
{
        uint64_t v[4];
        const char *p = text;

        for (int i = 0; i < 4; i++) {
                char *end;

                if (!p || !isxdigit((unsigned char)*p))
                        return -EBADMSG;
                errno = 0;
                v[i] = strtoull(p, &end, 16);
                if (errno || end == p || (*end != (i < 3 ? ':' : '\0')))
                        return -EBADMSG;
                p = end + 1;
        }
        *ret = (struct file_stamp){ .dev = v[0], .ino = v[1], .size = v[2], .mtime_ns = (int64_t)v[3] };
        return 0;
}

int reload_job_report(int r, const struct config *c, const struct config_errors *errs, char **ret)
{
        struct buf b = {0};
        struct json_writer w = json_writer_init(&b);

        json_begin_object(&w);
        json_field_int(&w, "r", r);
        if (r >= 0) {
                char hex[17];

                /* as a string: a double would not hold 64 bits */
                snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)c->source_digest);
                json_field_string(&w, "digest", hex);
                json_field_uint(&w, "tunnels", c->n_tunnels);          /* for a check's answer */
                json_field_uint(&w, "enabled", config_enabled_count(c));
        }
        if (r < 0) {
                json_field_strv(&w, "errors", errs->lines);
        } else {
                /* one per ssh configuration, in the order of their keys */
                json_write_key(&w, "views");
                json_begin_array(&w);
                for (size_t i = 0; i < c->ssh_views.n; i++) {
                        const struct config_view *v = &c->ssh_views.v[i];

                        json_begin_object(&w);
                        json_field_string(&w, "key", v->key);
                        json_field_string(&w, "hostname", v->hostname);
                        json_field_int(&w, "port", v->port);
                        json_field_strv(&w, "local", v->local_forwards);
                        json_field_strv(&w, "remote", v->remote_forwards);
                        json_field_strv(&w, "dynamic", v->dynamic_forwards);
                        json_field_bool(&w, "gateway_ports", v->gateway_ports);
                        json_field_bool(&w, "reusable", v->reusable);
                        write_stamp(&w, "file", &v->file);
                        write_stamp(&w, "program", &v->program);
                        json_end_object(&w);
                }
                json_end_array(&w);
        }
        json_end_object(&w);
        return buf_steal(&b, ret);
}

/* A whole number within [lo, hi] at key (dflt if absent), else the message is bad: a
 * report's numbers are never cast out of range. */
static int get_whole(const struct json *obj, const char *key, double lo, double hi, double dflt, double *ret)
{
        double v = json_get_number(obj, key, dflt);

        if (!(v >= lo && v <= hi) || v != (double)(long long)v)
                return -EBADMSG;
        *ret = v;
        return 0;
}

/* An array of strings, or NULL for an empty one (as ssh -G's parser leaves it). */
static int get_strv(const struct json *obj, const char *key, char ***ret)
{
        const struct json *a = json_get(obj, key);

        *ret = NULL;
        if (!a || a->type != JSON_ARRAY)
                return -EBADMSG;
        for (size_t i = 0; i < a->n; i++)
                if (a->items[i]->type != JSON_STRING || strv_push(ret, a->items[i]->string) < 0)
                        return -EBADMSG;
        return 0;
}

/* One view; keys strictly increasing (the daemon looks them up by bisection). */
static int parse_view(const struct json *o, const struct config_view *previous, struct config_view *v)
{
        const char *key = o->type == JSON_OBJECT ? json_get_string(o, "key") : NULL;
        const char *host = o->type == JSON_OBJECT ? json_get_string(o, "hostname") : NULL;
        double port;

        if (!key || (previous && strcmp(previous->key, key) >= 0) || !(v->key = strdup(key)) ||
            (host && !(v->hostname = strdup(host))))
                return -EBADMSG;
        if (get_whole(o, "port", 0, 65535, 0, &port) < 0)
                return -EBADMSG;
        v->port = (int)port;
        v->gateway_ports = json_get_bool(o, "gateway_ports", false);
        /* a report without stamps (or with bad ones): the view is not reused by a reload */
        v->reusable = json_get_bool(o, "reusable", false) &&
                      parse_stamp(json_get_string(o, "file"), &v->file) >= 0 &&
                      parse_stamp(json_get_string(o, "program"), &v->program) >= 0;
        if (get_strv(o, "local", &v->local_forwards) < 0 || get_strv(o, "remote", &v->remote_forwards) < 0 ||
            get_strv(o, "dynamic", &v->dynamic_forwards) < 0)
                return -EBADMSG;
        return 0;
}

int reload_job_parse_report(const char *text, size_t len, struct config_views *ret_views,
                            struct config_errors *ret_errs, int *ret_r, uint64_t *ret_digest)
{
        struct json *j = NULL;
        const struct json *list;
        double number;
        int r = json_parse(text, len, &j);

        *ret_views = (struct config_views){ 0 };
        *ret_errs = (struct config_errors){ 0 };
        if (r < 0 || j->type != JSON_OBJECT || !json_get(j, "r")) {
                json_free(j);
                return -EBADMSG;
        }
        if (get_whole(j, "r", INT_MIN, 0, -EINVAL, &number) < 0) {
                json_free(j);
                return -EBADMSG;
        }
        *ret_r = (int)number;
        if (*ret_r < 0) {
                list = json_get(j, "errors");
                for (size_t i = 0; list && list->type == JSON_ARRAY && i < list->n; i++)
                        if (list->items[i]->type == JSON_STRING && strv_push(&ret_errs->lines, list->items[i]->string) >= 0)
                                ret_errs->n++;
                json_free(j);
                return 0;
        }
        {
                const char *hex = json_get_string(j, "digest");
                char *end = NULL;

                *ret_digest = hex ? strtoull(hex, &end, 16) : 0;
                if (!hex || *end)
                        r = -EBADMSG;
                else
                        r = 0;
        }
        list = json_get(j, "views");
        if (r >= 0 && (!list || list->type != JSON_ARRAY ||
                       !(ret_views->v = calloc(list->n + 1, sizeof(struct config_view)))))
                r = -EBADMSG;
        for (size_t i = 0; r >= 0 && list && i < list->n; i++) {
                r = parse_view(list->items[i], i ? &ret_views->v[i - 1] : NULL, &ret_views->v[i]);
                ret_views->n++;
        }
        json_free(j);
        if (r < 0)
                config_views_clear(ret_views);
        return r;
}

/* ---- the child ---- */

static _Noreturn void run_child(int fd, const char *path, const struct config_load_options *opts)
{
        struct config_errors errs = {0};
        struct config *c = NULL;
        char *text = NULL;
        int r = config_load(path, opts, &c, &errs);

        if (reload_job_report(r, c, &errs, &text) >= 0) {
                size_t n = strlen(text), off = 0;

                while (off < n) {
                        ssize_t k = write(fd, text + off, n - off);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k <= 0)
                                break;
                        off += (size_t)k;
                }
        }
        free(text);
        config_free(c);
        config_errors_clear(&errs);
        _exit(0);       /* no atexit handler of the daemon's, no flushing of its buffers */
}

/* ---- the parent ---- */

/* A check's verdict: the child's report as it is. */
static void finish_check(struct reload_job *j)
{
        struct config_views views = {0};
        struct config_errors errs = {0};
        struct json *report = NULL;
        uint64_t digest = 0;
        int r, child_r = 0;
        size_t tunnels = 0, enabled = 0;

        ev_timer_stop(j->loop, &j->timer);
        r = reload_job_parse_report(j->report.data ? j->report.data : "", j->report.len, &views, &errs, &child_r,
                                    &digest);
        if (r < 0) {
                char *line = NULL;

                if (asprintf(&line, "%s: checking %s before it was done (an ssh_config_file whose Match exec "
                             "hangs?)", j->path, j->exited && WIFSIGNALED(j->status) ? "was stopped" : "failed") >= 0 &&
                    strv_push(&errs.lines, line) >= 0)
                        errs.n++;
                free(line);
                r = -ETIMEDOUT;
        } else if (child_r < 0)
                r = child_r;
        else if (json_parse(j->report.data, j->report.len, &report) >= 0) {
                double n;

                if (get_whole(report, "tunnels", 0, 1e9, 0, &n) >= 0)
                        tunnels = (size_t)n;
                if (get_whole(report, "enabled", 0, 1e9, 0, &n) >= 0)
                        enabled = (size_t)n;
        }
        json_free(report);
        config_views_clear(&views);
        j->checked(r, tunnels, enabled, &errs, j->userdata);
}

static void finish(struct reload_job *j)
{
        struct config_views views = {0};
        struct config_errors errs = {0};
        struct config *c = NULL;
        struct config_load_options again = j->opts;
        uint64_t digest = 0;
        int r, child_r = 0;

        ev_timer_stop(j->loop, &j->timer);
        r = reload_job_parse_report(j->report.data ? j->report.data : "", j->report.len, &views, &errs, &child_r,
                                    &digest);
        if (r < 0) {
                /* killed at the timeout (an ssh -G that hangs), or a crash: nothing is known */
                char *line = NULL;

                if (asprintf(&line, "%s: the reload's loading %s before it was done (an ssh_config_file whose "
                             "Match exec hangs?); nothing changed", j->path,
                             j->exited && WIFSIGNALED(j->status) ? "was stopped" : "failed") >= 0 &&
                    strv_push(&errs.lines, line) >= 0)
                        errs.n++;
                free(line);
                r = -ETIMEDOUT;
        } else if (child_r < 0) {
                r = child_r;
        } else {
                again.ask_ssh = CONFIG_SSH_SKIP;
                again.views = &views;
                r = config_load(j->path, &again, &c, &errs);
                if (r >= 0 && c->source_digest != digest) {
                        /* the files changed between the child's reading and ours (an editor
                         * saving, a config manager writing): ssh judged other bytes */
                        c = config_free(c);
                        r = -EAGAIN;
                } else if (r >= 0) {
                        c->load_options = j->opts;      /* the next reload asks ssh again … */
                        c->load_options.known = NULL;
                        c->ssh_views = views;           /* … but for what stands (config_ssh.c) */
                        views = (struct config_views){ 0 };
                }
        }
        config_views_clear(&views);
        j->done(r, r >= 0 ? c : NULL, &errs, j->userdata);
}

static void maybe_finish(struct reload_job *j)
{
        if (j->eof && j->exited)
                (j->checked ? finish_check : finish)(j);        /* the callee may free j */
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
        struct reload_job *j = w->data;
        char chunk[READ_CHUNK];
        ssize_t n = read(j->fd, chunk, sizeof(chunk));

        (void)revents;
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return;
        if (n > 0 && j->report.len + (size_t)n <= REPORT_MAX) {
                buf_append(&j->report, chunk, (size_t)n);
                return;
        }
        /* EOF, an error, or more than a report can be: what came is what is judged */
        ev_io_stop(loop, w);
        close(j->fd);
        j->fd = -1;
        j->eof = true;
        maybe_finish(j);
}

static void on_exit_child(struct ev_loop *loop, ev_child *w, int revents)
{
        struct reload_job *j = w->data;

        (void)revents;
        ev_child_stop(loop, w);
        j->exited = true;
        j->status = w->rstatus;
        j->pid = 0;
        maybe_finish(j);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct reload_job *j = w->data;

        (void)loop;
        (void)revents;
        log_warning("loading the configuration took longer than %.0f s: stopped", j->timeout);
        if (j->pid > 0)
                (void)kill(-j->pid, SIGKILL);   /* its process group: ssh -G too */
}

int reload_job_start(struct ev_loop *loop, const char *path, const struct config_load_options *opts,
                     reload_job_done_t done, void *userdata, struct reload_job **ret)
{
        struct reload_job *j = calloc(1, sizeof(*j));
        int fds[2];

        if (!j)
                return -ENOMEM;
        j->path = strdup(path);
        if (!j->path) {
                free(j);
                return -ENOMEM;
        }
        if (pipe2(fds, O_CLOEXEC) < 0) {
                int r = -errno;
                free(j->path);
                free(j);
                return r;
        }
        j->loop = loop;
        j->opts = *opts;
        j->done = done;
        j->userdata = userdata;
        j->pid = fork();
        if (j->pid < 0) {
                int r = -errno;
                close(fds[0]);
                close(fds[1]);
                free(j->path);
                free(j);
                return r;
        }
        if (j->pid == 0) {
                /* its own process group (killed whole at the timeout); the daemon's signals
                 * are not its business */
                sigset_t none;

                (void)setpgid(0, 0);
                /* default dispositions: libev's handlers (SIGCHLD above all: ssh -G's exit
                 * is waited for here) are the daemon's */
                for (int sig = 1; sig < NSIG; sig++)
                        (void)signal(sig, SIG_DFL);
                sigemptyset(&none);
                (void)sigprocmask(SIG_SETMASK, &none, NULL);
                close(fds[0]);
                free(j->path);          /* the child needs the caller's path and opts only */
                free(j);
                run_child(fds[1], path, opts);
        }
        (void)setpgid(j->pid, j->pid);
        close(fds[1]);
        j->fd = fds[0];
        (void)fcntl(j->fd, F_SETFL, O_NONBLOCK);
        ev_child_init(&j->child, on_exit_child, j->pid, 0);
        ev_io_init(&j->io, on_read, j->fd, EV_READ);
        j->timeout = (opts->load_timeout > 0 ? opts->load_timeout : CONFIG_LOAD_TIMEOUT) + JOB_MARGIN;
        ev_timer_init(&j->timer, on_timeout, j->timeout, 0.);
        j->child.data = j->io.data = j->timer.data = j;
        ev_child_start(loop, &j->child);
        ev_io_start(loop, &j->io);
        ev_timer_start(loop, &j->timer);
        *ret = j;
        return 0;
}

int reload_job_start_check(struct ev_loop *loop, const char *path, const struct config_load_options *opts,
                           reload_job_checked_t checked, void *userdata, struct reload_job **ret)
{
        int r = reload_job_start(loop, path, opts, NULL, userdata, ret);

        if (r >= 0)
                (*ret)->checked = checked;
        return r;
}

struct reload_job *reload_job_free(struct reload_job *j)
{
        if (!j)
                return NULL;
        ev_timer_stop(j->loop, &j->timer);
        ev_io_stop(j->loop, &j->io);
        if (j->pid > 0) {
                /* reaped by libev's SIGCHLD handler (it reaps every child): no zombie stays */
                (void)kill(-j->pid, SIGKILL);
                ev_child_stop(j->loop, &j->child);
        }
        if (j->fd >= 0)
                close(j->fd);
        buf_free(&j->report);
        free(j->path);
        free(j);
        return NULL;
}
