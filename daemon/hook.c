/* SPDX-License-Identifier: MIT */
#include "hook.h"

#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lines.h"
#include "log.h"
#include "process.h"
#include "util.h"

extern char **environ;

struct pending {
        bool set;
        char *program;
        double timeout;
        char state[16], previous[16], failure[32];
        unsigned long restarts;
};

/* Per event: at most OUTPUT_LOGGED_LINES lines or OUTPUT_LOGGED bytes of a program's
 * output are logged; the rest is counted and dropped, and after OUTPUT_READ_MAX the pipe is
 * closed (a writer that never stops then gets SIGPIPE), so neither the journal nor the loop
 * pays for a chatty hook. */
#define OUTPUT_LOGGED (16u << 10)
#define OUTPUT_LOGGED_LINES 100
#define OUTPUT_READ_MAX (1u << 20)

struct hook {
        struct ev_loop *loop;
        char *tunnel;
        pid_t pid;
        double started;
        int fd;
        size_t out_read;                /* bytes read of this run's output */
        size_t out_logged, lines_logged; /* …logged */
        size_t out_dropped;             /* …not logged */
        ev_child child;
        ev_io out_io;
        ev_timer limit;
        struct lines out;
        struct pending next;
};

static void log_line(struct hook *h, const char *line, int prio)
{
        struct log_ctx ctx = LOG_CTX_INIT;

        ctx.tunnel = h->tunnel;
        log_full(prio, &ctx, "on_state_change: %s", line);
}

static void on_line(const char *line, void *userdata)
{
        struct hook *h = userdata;
        size_t len = strlen(line) + 1;

        if (h->lines_logged >= OUTPUT_LOGGED_LINES || h->out_logged + len > OUTPUT_LOGGED) {
                h->out_dropped += len;
                return;
        }
        h->lines_logged++;
        h->out_logged += len;
        log_line(h, line, LOG_INFO);
}

static void close_output(struct hook *h)
{
        struct log_ctx ctx = LOG_CTX_INIT;

        if (h->fd < 0)
                return;
        lines_flush(&h->out, on_line, h);
        ev_io_stop(h->loop, &h->out_io);
        close(h->fd);
        h->fd = -1;
        ctx.tunnel = h->tunnel;
        if (h->out_read >= OUTPUT_READ_MAX)
                log_full(LOG_WARNING, &ctx, "on_state_change program wrote more than %u KiB: %zu bytes of it were "
                         "not logged, and tunneld stopped reading (the pipe is closed)", OUTPUT_READ_MAX >> 10,
                         h->out_dropped);
        else if (h->out_dropped)
                log_full(LOG_WARNING, &ctx, "on_state_change program's output: %zu bytes not logged "
                         "(at most %d lines or %u KiB are logged per event)", h->out_dropped, OUTPUT_LOGGED_LINES,
                         OUTPUT_LOGGED >> 10);
}

static void read_output(struct hook *h, size_t max)
{
        size_t n = 0;
        bool eof;

        if (h->fd < 0)
                return;
        eof = lines_read(&h->out, h->fd, max, &n, on_line, h);
        h->out_read += n;
        if (eof || h->out_read >= OUTPUT_READ_MAX)
                close_output(h);
}

static void on_output(struct ev_loop *loop, ev_io *w, int revents)
{
        (void)loop;
        (void)revents;
        read_output(w->data, 0);        /* one chunk per wakeup */
}

static void start(struct hook *h);

static void on_exit_(struct ev_loop *loop, ev_child *w, int revents)
{
        struct hook *h = w->data;
        struct log_ctx ctx = LOG_CTX_INIT;
        char sig[16], took[DURATION_MAX];
        int status = w->rstatus;

        (void)revents;
        ev_child_stop(loop, w);
        ev_timer_stop(loop, &h->limit);
        /* what is left in the pipe, bounded: a helper the program left behind may hold the
         * pipe open and write for ever */
        read_output(h, 64u << 10);
        close_output(h);
        h->pid = 0;
        ctx.tunnel = h->tunnel;
        format_duration(now_mono() - h->started, took, sizeof(took));
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                log_full(LOG_DEBUG, &ctx, "on_state_change program finished after %s", took);
        else if (WIFEXITED(status))
                log_full(LOG_WARNING, &ctx, "on_state_change program exited with status %d after %s",
                         WEXITSTATUS(status), took);
        else
                log_full(LOG_WARNING, &ctx, "on_state_change program was killed by signal %s after %s",
                         signal_to_name(WTERMSIG(status), sig, sizeof(sig)), took);
        if (h->next.set)
                start(h);
}

static void on_limit(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct hook *h = w->data;
        struct log_ctx ctx = LOG_CTX_INIT;
        char limit[DURATION_MAX];

        (void)loop;
        (void)revents;
        ctx.tunnel = h->tunnel;
        log_full(LOG_WARNING, &ctx, "on_state_change program (pid %d) still runs after %s: killing it", (int)h->pid,
                 format_duration(now_mono() - h->started, limit, sizeof(limit)));
        process_kill(h->pid, SIGKILL);
}

_printf_(2, 3)
static int env_var(char **ret, const char *fmt, ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(ret, fmt, ap);
        va_end(ap);
        if (r < 0)
                *ret = NULL;
        return r;
}

/* tunneld's environment without TUNNEL_*, then ours. */
static char **build_env(const struct pending *p, const char *tunnel)
{
        char *ours[5] = {0};
        size_t n = 0, k = 0;
        char **env = NULL;

        if (env_var(&ours[0], "TUNNEL_NAME=%s", tunnel) < 0 ||
            env_var(&ours[1], "TUNNEL_STATE=%s", p->state) < 0 ||
            env_var(&ours[2], "TUNNEL_PREVIOUS_STATE=%s", p->previous) < 0 ||
            env_var(&ours[3], "TUNNEL_FAILURE=%s", p->failure) < 0 ||
            env_var(&ours[4], "TUNNEL_RESTARTS=%lu", p->restarts) < 0)
                goto fail;
        while (environ && environ[n])
                n++;
        env = calloc(n + ELEMENTSOF(ours) + 1, sizeof(char *));
        if (!env)
                goto fail;
        for (size_t i = 0; i < n; i++)
                if (strncmp(environ[i], "TUNNEL_", 7) != 0)
                        env[k++] = environ[i];  /* borrowed */
        for (size_t i = 0; i < ELEMENTSOF(ours); i++)
                env[k++] = ours[i];
        return env;
fail:
        for (size_t i = 0; i < ELEMENTSOF(ours); i++)
                free(ours[i]);
        return NULL;
}

static void free_env(char **env)
{
        for (size_t i = 0; env && env[i]; i++)
                if (strncmp(env[i], "TUNNEL_", 7) == 0)
                        free(env[i]);
        free(env);
}

static void start(struct hook *h)
{
        struct pending p = h->next;
        struct log_ctx ctx = LOG_CTX_INIT;
        char *argv[] = { p.program, NULL };
        char **env;
        int r;

        h->next = (struct pending){0};
        ctx.tunnel = h->tunnel;
        env = build_env(&p, h->tunnel);
        if (!env) {
                log_full(LOG_ERR, &ctx, "cannot run on_state_change program: out of memory");
                free(p.program);
                return;
        }
        lines_reset(&h->out);
        h->out_read = h->out_logged = h->lines_logged = h->out_dropped = 0;
        r = process_spawn(argv, env, true, &h->pid, &h->fd);
        free_env(env);
        if (r < 0) {
                log_full_errno(LOG_ERR, r, &ctx, "cannot run on_state_change program %s: %m", p.program);
                free(p.program);
                return;
        }
        h->started = now_mono();
        ev_child_set(&h->child, h->pid, 0);
        ev_child_start(h->loop, &h->child);
        ev_io_set(&h->out_io, h->fd, EV_READ);
        ev_io_start(h->loop, &h->out_io);
        ev_timer_set(&h->limit, p.timeout, 0.);
        ev_timer_start(h->loop, &h->limit);
        ctx.pid = h->pid;
        log_full(LOG_DEBUG, &ctx, "on_state_change %s (state %s, was %s)", p.program, p.state, p.previous);
        free(p.program);
}

void hook_fire(struct hook *h, const char *program, double timeout, const struct hook_event *ev)
{
        struct pending *p = &h->next;

        free(p->program);
        *p = (struct pending){ .set = true, .timeout = timeout, .restarts = ev->restarts };
        p->program = strdup(program);
        if (!p->program) {
                p->set = false;
                return;
        }
        snprintf(p->state, sizeof(p->state), "%s", ev->state);
        snprintf(p->previous, sizeof(p->previous), "%s", ev->previous);
        snprintf(p->failure, sizeof(p->failure), "%s", ev->failure ? ev->failure : "");
        if (h->pid == 0)
                start(h);
}

int hook_new(struct ev_loop *loop, const char *tunnel, struct hook **ret)
{
        struct hook *h = calloc(1, sizeof(*h));

        if (!h)
                return -ENOMEM;
        h->loop = loop;
        h->fd = -1;
        h->tunnel = strdup(tunnel);
        if (!h->tunnel) {
                free(h);
                return -ENOMEM;
        }
        ev_child_init(&h->child, on_exit_, 0, 0);
        ev_io_init(&h->out_io, on_output, -1, EV_READ);
        ev_timer_init(&h->limit, on_limit, 0., 0.);
        h->child.data = h->out_io.data = h->limit.data = h;
        *ret = h;
        return 0;
}

struct hook *hook_free(struct hook *h)
{
        if (!h)
                return NULL;
        if (h->pid > 0)
                process_kill(h->pid, SIGKILL);  /* libev reaps it; nobody waits for it */
        ev_child_stop(h->loop, &h->child);
        ev_io_stop(h->loop, &h->out_io);
        ev_timer_stop(h->loop, &h->limit);
        if (h->fd >= 0)
                close(h->fd);
        free(h->next.program);
        free(h->tunnel);
        free(h);
        return NULL;
}
