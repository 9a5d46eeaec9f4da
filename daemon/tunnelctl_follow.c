/* SPDX-License-Identifier: MIT */
/* tunnelctl_follow: what tunnelctl learns from a subscription to tunneld's state changes
 * ({"cmd":"events"}, ctl_protocol.h): events, wait, and the outcome of a restart. No
 * polling: tunneld sends a line per change, and tunnelctl waits in poll() for the next. */
#include "tunnelctl_follow.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tunnelctl_conn.h"
#include "json.h"
#include "util.h"

struct follow {
        int fd;
        struct json *snapshot;          /* the subscription's reply: every tunnel's status */
        struct buf pending;             /* events read ahead: pending.data[taken, len) */
        size_t taken;
        bool eof;
};

struct follow *follow_close(struct follow *f)
{
        if (!f)
                return NULL;
        if (f->fd >= 0) {
                tunnelctl_conn_meanwhile(-1, NULL, NULL);
                close(f->fd);
        }
        json_free(f->snapshot);
        buf_free(&f->pending);
        free(f);
        return NULL;
}

int follow_open(const char *path, struct follow **ret)
{
        struct follow *f = calloc(1, sizeof(*f));
        _cleanup_free_ char *reply = NULL;
        int r;

        if (!f)
                return -ENOMEM;
        f->fd = -1;
        r = tunnelctl_conn_open(path, &f->fd);
        if (r >= 0)
                r = tunnelctl_conn_exchange(f->fd, "{\"cmd\":\"events\"}\n", &reply);
        if (r >= 0 && json_parse(reply, strcspn(reply, "\n"), &f->snapshot) < 0) {
                /* cut short when tunneld dropped us: the next line says why */
                free(reply);
                reply = NULL;
                if (tunnelctl_conn_read_line(f->fd, 1000, &reply) >= 0)
                        (void)json_parse(reply, strcspn(reply, "\n"), &f->snapshot);
        }
        if (r >= 0 && tunnelctl_conn_dropped(f->snapshot)) {
                fprintf(stderr, "tunnelctl: tunneld dropped the connection: %s\n", tunnelctl_conn_dropped(f->snapshot));
                r = -ECONNABORTED;
        } else if (r >= 0 && !json_get_bool(f->snapshot, "ok", false)) {
                const char *error = f->snapshot ? json_get_string(f->snapshot, "error") : NULL;
                fprintf(stderr, "tunnelctl: tunneld refused to send events: %s\n", error ? error : "bad reply");
                r = -EPROTO;
        }
        if (r < 0) {
                follow_close(f);
                return r;
        }
        *ret = f;
        return 0;
}

const struct json *follow_tunnel(const struct follow *f, const char *name)
{
        const struct json *list = json_get(f->snapshot, "tunnels");

        for (size_t i = 0; list && list->type == JSON_ARRAY && i < list->n; i++) {
                const char *n = json_get_string(list->items[i], "name");
                if (n && strcmp(n, name) == 0)
                        return list->items[i];
        }
        return NULL;
}

/* Take what the socket has now (all of it, or one chunk), without waiting. */
static void follow_take(struct follow *f, bool all)
{
        char chunk[65536];

        for (;;) {
                /* (tunneld sends 16 KiB at a time: taking as much frees one of its sends) */
                ssize_t n = recv(f->fd, chunk, all ? sizeof(chunk) : 16384, MSG_DONTWAIT);

                if (n > 0) {
                        buf_append(&f->pending, chunk, (size_t)n);
                        if (all)
                                continue;
                        return;
                }
                if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                        f->eof = true;
                if (n == 0 || errno != EINTR)
                        return;
        }
}

/* tunneld must not see us stop reading while we wait for something else (restart's
 * replies): all the socket has goes to memory. */
static void follow_pump(void *userdata)
{
        follow_take(userdata, true);
}

void follow_read_meanwhile(struct follow *f)
{
        tunnelctl_conn_meanwhile(f->fd, follow_pump, f);
}

/* The next line, from what was read ahead, else from the socket: as
 * tunnelctl_conn_read_line. */
static int follow_line(struct follow *f, int timeout_ms, char **ret)
{
        double deadline = now_mono() + timeout_ms / 1000.0;

        for (;;) {
                const char *start = f->pending.data ? f->pending.data + f->taken : NULL;
                const char *nl = start ? memchr(start, '\n', f->pending.len - f->taken) : NULL;
                int left = timeout_ms < 0 ? -1 : (int)((deadline - now_mono()) * 1000) + 1;
                struct pollfd p = { .fd = f->fd, .events = POLLIN };
                int r;

                if (nl) {
                        *ret = strndup(start, (size_t)(nl - start) + 1);
                        f->taken += (size_t)(nl - start) + 1;
                        if (f->taken == f->pending.len)
                                f->pending.len = f->taken = 0;
                        return *ret ? 0 : -ENOMEM;
                }
                if (f->eof)
                        return -ECONNRESET;
                r = poll(&p, 1, timeout_ms < 0 ? -1 : left > 0 ? left : 0);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return -ETIMEDOUT;
                /* a chunk at a time: a follower that prints slowly keeps taking from the
                 * socket as it prints, rather than in gulps tunneld would see as a stall */
                follow_take(f, false);
        }
}

/* tunneld's last line to us, if line is it: said on stderr. */
static bool said_dropped(const struct json *line)
{
        const char *why = tunnelctl_conn_dropped(line);

        if (why)
                fprintf(stderr, "tunnelctl: tunneld dropped the connection: %s\n", why);
        return why;
}

/* The next event, parsed; -ETIMEDOUT when the deadline (CLOCK_MONOTONIC; 0: none)
 * passes, -ECONNRESET when tunneld goes away, -ECONNABORTED when it dropped us (said). */
static int follow_next(struct follow *f, double deadline, struct json **ret)
{
        _cleanup_free_ char *line = NULL;
        int timeout = deadline > 0 ? (int)fmax(0, (deadline - now_mono()) * 1000) : -1;
        int r = follow_line(f, timeout, &line);

        if (r < 0)
                return r;
        if (json_parse(line, strcspn(line, "\n"), ret) < 0)
                return -EPROTO;
        if (said_dropped(*ret)) {
                *ret = json_free(*ret);
                return -ECONNABORTED;
        }
        return 0;
}

static void print_event(const struct json *e)
{
        const char *failure = json_get_string(e, "failure"), *reason = json_get_string(e, "reason");
        const struct json *pid = json_get(e, "pid");
        time_t when = (time_t)json_get_number(e, "time", 0);
        char stamp[16] = "";
        struct tm tm;

        if (localtime_r(&when, &tm))
                strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
        if (strcmp(json_get_string(e, "event") ? json_get_string(e, "event") : "", "flapping") == 0) {
                printf("%s %s: flapping\n", stamp, json_get_string(e, "tunnel"));
                return;
        }
        if (strcmp(json_get_string(e, "event") ? json_get_string(e, "event") : "", "ssh") == 0) {
                if (failure)
                        printf("%s %s: the new ssh failed (%s); ssh pid %.0f serves on\n", stamp,
                               json_get_string(e, "tunnel"), failure, json_get_number(e, "pid", 0));
                else
                        printf("%s %s: ssh pid %.0f serves it now (make-before-break)\n", stamp,
                               json_get_string(e, "tunnel"), json_get_number(e, "pid", 0));
                return;
        }
        printf("%s %s: %s -> %s", stamp, json_get_string(e, "tunnel"), json_get_string(e, "from"),
               json_get_string(e, "to"));
        if (failure)
                printf(" (%s)", failure);
        else if (reason)
                printf(" (%s)", reason);
        if (pid && pid->type == JSON_NUMBER)
                printf(", ssh pid %.0f", pid->number);
        printf("\n");
}

static bool named(char *const *names, int n, const char *name)
{
        if (n == 0)
                return true;
        for (int i = 0; i < n; i++)
                if (name && strcmp(names[i], name) == 0)
                        return true;
        return false;
}

int follow_events(const char *path, char *const *names, int n, bool json)
{
        struct follow *f = NULL;
        int r = follow_open(path, &f);

        if (r < 0)
                return r == -ECONNABORTED ? 5 : 3;
        for (int i = 0; i < n; i++)
                if (!follow_tunnel(f, names[i])) {
                        fprintf(stderr, "tunnelctl: no such tunnel: %s\n", names[i]);
                        follow_close(f);
                        return 1;
                }
        setvbuf(stdout, NULL, _IOLBF, 0);       /* a line as soon as it happens, into a pipe too */
        for (;;) {
                _cleanup_free_ char *line = NULL;
                struct json *e = NULL;

                r = follow_line(f, -1, &line);
                if (r < 0)
                        break;
                line[strcspn(line, "\n")] = '\0';
                if (json_parse(line, strlen(line), &e) < 0)
                        continue;
                if (said_dropped(e)) {
                        json_free(e);
                        r = -ECONNABORTED;
                        break;
                }
                if (named(names, n, json_get_string(e, "tunnel"))) {
                        if (json)
                                printf("%s\n", line);  /* as tunneld sent it */
                        else
                                print_event(e);
                }
                json_free(e);
        }
        follow_close(f);
        if (r == -ECONNABORTED)
                return 5;
        /* no last line: tunneld stopped */
        if (r == -ECONNRESET)
                fprintf(stderr, "tunnelctl: tunneld closed the connection\n");
        return r == -ECONNRESET ? 0 : 3;
}

/* Why t is not up, for wait's timeout. */
static void print_not_up(const struct json *t)
{
        const char *state = json_get_string(t, "state"), *reason = json_get_string(t, "reason");
        const struct json *last = json_get(t, "last_exit");
        const char *failure = last && last->type == JSON_OBJECT ? json_get_string(last, "failure") : NULL;

        fprintf(stderr, "tunnelctl: %s is %s", json_get_string(t, "name"), state ? state : "?");
        if (reason)
                fprintf(stderr, ": %s", reason);
        if (failure)
                fprintf(stderr, " (last failure: %s)", failure);
        if (json_get(t, "retry_in") && json_get(t, "retry_in")->type == JSON_NUMBER) {
                char in[DURATION_MAX];
                fprintf(stderr, ", retrying in %s", format_duration(json_get_number(t, "retry_in", 0), in, sizeof(in)));
        }
        fprintf(stderr, "\n");
}

int follow_wait(const char *path, char *const *names, int n, double timeout)
{
        _cleanup_free_ bool *up = calloc((size_t)n + 1, sizeof(bool));
        double deadline = timeout > 0 ? now_mono() + timeout : 0;
        struct follow *f = NULL;
        int left = 0, r;

        if (!up)
                return 3;
        r = follow_open(path, &f);
        if (r < 0)
                // cppcheck-suppress memleak ; up is _cleanup_free_, which cppcheck does not know
                return r == -ECONNABORTED ? 5 : 3;
        for (int i = 0; i < n; i++) {
                const struct json *t = follow_tunnel(f, names[i]);
                const char *state = t ? json_get_string(t, "state") : NULL;

                if (!t) {
                        fprintf(stderr, "tunnelctl: no such tunnel: %s\n", names[i]);
                        follow_close(f);
                        return 1;
                }
                up[i] = state && strcmp(state, "up") == 0;
                left += !up[i];
        }
        while (left > 0) {
                struct json *e = NULL;
                const char *name, *to;

                r = follow_next(f, deadline, &e);
                if (r == -ETIMEDOUT) {
                        /* the states as they are now, with why */
                        struct follow *now = NULL;

                        fprintf(stderr, "tunnelctl: not up after %g s:\n", timeout);
                        if (follow_open(path, &now) >= 0) {
                                for (int i = 0; i < n; i++)
                                        if (!up[i] && follow_tunnel(now, names[i]))
                                                print_not_up(follow_tunnel(now, names[i]));
                                follow_close(now);
                        }
                        follow_close(f);
                        return 1;
                }
                if (r < 0) {
                        if (r != -ECONNABORTED)
                                fprintf(stderr, "tunnelctl: tunneld went away while waiting\n");
                        follow_close(f);
                        return r == -ECONNABORTED ? 5 : 3;
                }
                name = json_get_string(e, "tunnel");
                to = json_get_string(e, "to");
                for (int i = 0; name && to && i < n; i++)
                        if (strcmp(names[i], name) == 0 && up[i] != (strcmp(to, "up") == 0)) {
                                up[i] = !up[i];
                                left += up[i] ? -1 : 1;
                        }
                json_free(e);
        }
        follow_close(f);
        return 0;
}

/* After a restart: each named tunnel's new ssh, or where it went instead, as one line
 * in lines[i] (the caller prints them in the order it asked). */
int follow_restarted(struct follow *f, char *const *names, const double *old_pids, char **lines, int n,
                     double timeout)
{
        double deadline = now_mono() + timeout;
        int left = n, ret = 0;

        while (left > 0) {
                struct json *e = NULL;
                const char *name, *to;
                const struct json *pid;
                int r = follow_next(f, deadline, &e);

                if (r < 0) {
                        if (r == -ECONNABORTED)
                                ret = 5;        /* said */
                        break;
                }
                name = json_get_string(e, "tunnel");
                to = json_get_string(e, "to");
                pid = json_get(e, "pid");
                /* make-before-break: its state stays, a new ssh serves ("event": "ssh"), or
                 * the new one failed and the old one serves on (with "failure") */
                if (json_get_string(e, "event") && strcmp(json_get_string(e, "event"), "ssh") == 0)
                        to = json_get_string(e, "failure") ? "ssh-failed" : "starting";
                for (int i = 0; name && to && i < n; i++) {
                        double new_pid = pid && pid->type == JSON_NUMBER ? pid->number : -1;
                        bool new_ssh = new_pid > 0 && new_pid != old_pids[i];
                        const char *reason = json_get_string(e, "reason");

                        if (lines[i] || strcmp(names[i], name) != 0 || strcmp(to, "stopping") == 0)
                                continue;
                        if ((strcmp(to, "starting") == 0 || strcmp(to, "up") == 0) && !new_ssh)
                                continue;
                        if (strcmp(to, "ssh-failed") == 0) {
                                r = asprintf(&lines[i], "%s: not restarted: the new ssh failed (%s); ssh pid %.0f serves on",
                                             name, json_get_string(e, "failure"), old_pids[i]);
                                ret = 1;
                        } else if (strcmp(to, "starting") == 0)
                                r = asprintf(&lines[i], "%s: restarted: ssh pid %.0f (was %.0f)", name,
                                             new_pid, old_pids[i]);
                        else if (strcmp(to, "up") == 0)
                                r = asprintf(&lines[i], "%s: restarted and up: ssh pid %.0f (was %.0f)", name,
                                             new_pid, old_pids[i]);
                        else {
                                r = asprintf(&lines[i], "%s: stopped ssh pid %.0f; now %s%s%s", name, old_pids[i],
                                             to, reason ? ": " : "", reason ? reason : "");
                                ret = 1;
                        }
                        if (r < 0)
                                lines[i] = NULL;
                        left--;
                }
                json_free(e);
        }
        for (int i = 0; i < n; i++)
                if (!lines[i]) {
                        if (asprintf(&lines[i], "%s: not restarted within %g s (ssh pid %.0f still stopping?)",
                                     names[i], timeout, old_pids[i]) < 0)
                                lines[i] = NULL;
                        ret = ret ? ret : 1;
                }
        return ret;
}
