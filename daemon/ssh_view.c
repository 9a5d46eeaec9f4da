/* SPDX-License-Identifier: MIT */
#include "ssh_view.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process.h"
#include "util.h"

#define OUTPUT_MAX (256u << 10)         /* ssh -G prints ~4 KiB */

void ssh_view_done(struct ssh_view *v)
{
        free(v->error);
        free(v->hostname);
        free(v->user);
        strv_free(v->local_forwards);
        strv_free(v->remote_forwards);
        strv_free(v->dynamic_forwards);
        *v = (struct ssh_view){0};
}

/* "[127.0.0.1]:5000" → "127.0.0.1:5000"; "[::1]:5000" and "[*]:6003" keep what a spec
 * needs ("[::1]:5000", "*:6003"); paths and ports as they are. */
static void put_end(struct buf *b, const char *s, size_t len)
{
        if (len > 2 && s[0] == '[') {
                const char *close = memchr(s, ']', len);
                if (close) {
                        size_t inner = (size_t)(close - s - 1);
                        bool v6 = memchr(s + 1, ':', inner) != NULL;

                        if (v6)
                                buf_append(b, s, inner + 2);
                        else
                                buf_append(b, s + 1, inner);
                        buf_append(b, close + 1, len - (size_t)(close + 1 - s));
                        return;
                }
        }
        buf_append(b, s, len);
}

/* "LISTEN CONNECT" of a -G forward line → "LISTEN:CONNECT"; a reverse SOCKS -R
 * ("[socks]:0") → "LISTEN". */
static int add_forward(char ***v, const char *value)
{
        _cleanup_free_ char *spec = NULL;
        struct buf b = {0};
        size_t listen = strcspn(value, " ");
        const char *connect = value[listen] ? value + listen + 1 : NULL;

        put_end(&b, value, listen);
        if (connect && *connect && strcmp(connect, "[socks]:0") != 0) {
                buf_puts(&b, ":");
                put_end(&b, connect, strlen(connect));
        }
        if (buf_steal(&b, &spec) < 0)
                return -ENOMEM;
        return strv_push(v, spec);
}

static bool yes(const char *value)
{
        return strcasecmp(value, "yes") == 0 || strcasecmp(value, "true") == 0;
}

/* ssh dumps a -L whose target is a Unix socket under dynamicforward too (readconf.c's
 * dump_cfg_forwards tells dynamic ones by a NULL connect host): drop those twins. */
static void drop_dynamic_twins(struct ssh_view *v)
{
        size_t k = 0;

        for (size_t i = 0; v->dynamic_forwards && v->dynamic_forwards[i]; i++) {
                const char *d = v->dynamic_forwards[i];
                bool twin = false;

                for (char **l = v->local_forwards; l && *l && !twin; l++) {
                        size_t n = strlen(d);
                        twin = strncmp(*l, d, n) == 0 && (*l)[n] == ':' && (*l)[n + 1] == '/';
                }
                if (twin)
                        free(v->dynamic_forwards[i]);
                else
                        v->dynamic_forwards[k++] = v->dynamic_forwards[i];
        }
        if (v->dynamic_forwards)
                v->dynamic_forwards[k] = NULL;
}

int ssh_view_parse(const char *text, struct ssh_view *ret)
{
        struct ssh_view v = {0};
        int r = 0;

        for (const char *line = text; *line && r >= 0;) {
                size_t len = strcspn(line, "\n"), key = strcspn(line, " \n");
                _cleanup_free_ char *value = NULL;

                if (key < len) {
                        value = strndup(line + key + 1, len - key - 1);
                        if (!value) {
                                r = -ENOMEM;
                                break;
                        }
                }
#define KEY(k) (key == strlen(k) && strncasecmp(line, k, key) == 0 && value)
                if (KEY("hostname")) {
                        free(v.hostname);
                        v.hostname = value;
                        value = NULL;
                } else if (KEY("user")) {
                        free(v.user);
                        v.user = value;
                        value = NULL;
                } else if (KEY("port"))
                        v.port = atoi(value);
                else if (KEY("localforward"))
                        r = add_forward(&v.local_forwards, value);
                else if (KEY("remoteforward"))
                        r = add_forward(&v.remote_forwards, value);
                else if (KEY("dynamicforward"))
                        r = add_forward(&v.dynamic_forwards, value);
                else if (KEY("forkafterauthentication"))
                        v.fork_after_authentication = yes(value);
                else if (KEY("gatewayports"))
                        v.gateway_ports = yes(value);
#undef KEY
                line += len;
                if (*line == '\n')
                        line++;
        }
        if (r < 0) {
                ssh_view_done(&v);
                return r;
        }
        drop_dynamic_twins(&v);
        v.ran = true;
        *ret = v;
        return 0;
}

/* ---- running ssh -G ---- */

struct job {
        pid_t pid;
        int out, pidfd;
        bool eof, exited;
        int status;
        struct buf text;
};

static char **view_argv(char *const *argv)
{
        size_t n = strv_length(argv);
        char **v = calloc(n + 4, sizeof(char *));

        if (!v)
                return NULL;
        v[0] = argv[0];
        v[1] = (char *)"-G";
        v[2] = (char *)"-o";
        v[3] = (char *)"LogLevel=ERROR";        /* ahead of the DEBUG1 of tunneld's argv: the first value wins */
        for (size_t i = 1; i < n; i++)
                v[i + 3] = argv[i];
        return v;
}

static int start_job(char *const *argv, struct job *j)
{
        _cleanup_free_ char **v = view_argv(argv);
        int r;

        *j = (struct job){ .out = -1, .pidfd = -1 };
        if (!v)
                return -ENOMEM;
        r = process_spawn(v, NULL, true, &j->pid, &j->out);
        if (r < 0)
                return r;
        j->pidfd = pidfd_open(j->pid, 0);       /* NULL-safe below: falls back to EOF alone */
        return 0;
}

/* What the finished job means for its view. */
static int finish_job(struct job *j, struct ssh_view *view, bool timed_out)
{
        _cleanup_free_ char *text = NULL;
        int r;

        if (timed_out) {
                view->timed_out = true;
                return 0;       /* what it printed so far goes with the job (close_job) */
        }
        if (buf_steal(&j->text, &text) < 0)
                return -ENOMEM;
        if (!text && !(text = strdup("")))
                return -ENOMEM;
        if (WIFEXITED(j->status) && WEXITSTATUS(j->status) == 0)
                return ssh_view_parse(text, view);
        /* what ssh said, on one line; or how it ended */
        for (char *p = text, *q = text;; p++) {
                if (*p == '\r')
                        continue;
                if (*p == '\n')
                        *p = p[1] && p[1] != '\r' ? ' ' : '\0';
                if (!(*q++ = *p))
                        break;
        }
        view->ran = *text && !(WIFEXITED(j->status) && WEXITSTATUS(j->status) == 127 &&
                               strstr(text, "tunneld: cannot execute"));
        if (*text)
                r = asprintf(&view->error, "%s", text);
        else if (WIFEXITED(j->status))
                r = asprintf(&view->error, "ssh -G exited with status %d and said nothing", WEXITSTATUS(j->status));
        else
                r = asprintf(&view->error, "ssh -G was killed by signal %d", WTERMSIG(j->status));
        if (r < 0) {
                view->error = NULL;
                return -ENOMEM;
        }
        return 0;
}

static void close_job(struct job *j)
{
        if (j->out >= 0)
                close(j->out);
        if (j->pidfd >= 0)
                close(j->pidfd);
        j->out = j->pidfd = -1;
        buf_free(&j->text);
}

/* Read what is there; reap once both the pipe and the process are done. */
static void poll_job(struct job *j, short revents_out, short revents_pid)
{
        if (revents_out && !j->eof) {
                char chunk[4096];
                ssize_t n = read(j->out, chunk, sizeof(chunk));

                if (n > 0 && j->text.len < OUTPUT_MAX)
                        buf_append(&j->text, chunk, (size_t)n);
                else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                        j->eof = true;
        }
        if ((revents_pid || (j->pidfd < 0 && j->eof)) && !j->exited &&
            waitpid(j->pid, &j->status, j->pidfd < 0 ? 0 : WNOHANG) == j->pid)
                j->exited = true;
}

int ssh_view_query(char **const *argvs, size_t n, double deadline, struct ssh_view *views)
{
        struct job jobs[SSH_VIEW_PARALLEL];
        size_t index[SSH_VIEW_PARALLEL], running = 0, next = 0;
        int r = 0;

        for (size_t i = 0; i < n; i++)
                views[i] = (struct ssh_view){0};
        while (next < n || running) {
                struct pollfd p[2 * SSH_VIEW_PARALLEL];
                double left = deadline - now_mono();

                while (running < SSH_VIEW_PARALLEL && next < n) {
                        if (now_mono() >= deadline) {
                                views[next++].timed_out = true;
                                continue;
                        }
                        r = start_job(argvs[next], &jobs[running]);
                        if (r == -ENOMEM)
                                goto out;
                        if (r < 0) {
                                if (asprintf(&views[next].error, "cannot run ssh -G: %s", strerror(-r)) < 0)
                                        views[next].error = NULL;
                                next++;
                                continue;
                        }
                        index[running++] = next++;
                }
                if (!running)
                        break;
                for (size_t k = 0; k < running; k++) {
                        p[2 * k] = (struct pollfd){ .fd = jobs[k].eof ? -1 : jobs[k].out, .events = POLLIN };
                        p[2 * k + 1] = (struct pollfd){ .fd = jobs[k].exited ? -1 : jobs[k].pidfd, .events = POLLIN };
                }
                if (left > 0 && poll(p, 2 * running, (int)(left * 1000) + 1) < 0 && errno != EINTR) {
                        r = -errno;
                        goto out;
                }
                for (size_t k = 0; k < running;) {
                        struct job *j = &jobs[k];
                        bool timed_out = now_mono() >= deadline;

                        poll_job(j, p[2 * k].revents, p[2 * k + 1].revents);
                        if (!(j->eof && j->exited) && !timed_out) {
                                k++;
                                continue;
                        }
                        if (!j->exited) {
                                process_kill(j->pid, SIGKILL);
                                (void)waitpid(j->pid, &j->status, 0);
                        }
                        r = finish_job(j, &views[index[k]], timed_out && !(j->eof && j->exited));
                        close_job(j);
                        if (r < 0)
                                goto out;
                        /* the slot goes to the last running job */
                        running--;
                        jobs[k] = jobs[running];
                        index[k] = index[running];
                        p[2 * k] = p[2 * running];
                        p[2 * k + 1] = p[2 * running + 1];
                }
        }
out:
        for (size_t k = 0; k < running; k++) {
                process_kill(jobs[k].pid, SIGKILL);
                (void)waitpid(jobs[k].pid, NULL, 0);
                close_job(&jobs[k]);
        }
        return r;
}
