/* SPDX-License-Identifier: MIT */
#include "ctl.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "json.h"
#include "log.h"
#include "metrics.h"

struct ctl_client {
        struct ctl_server *server;
        struct ctl_client *next;
        int fd;
        ev_io io;
        ev_timer idle;
        struct ucred cred;
        double last_active;             /* accepted, or last complete request or write */
        double last_progress;           /* a reply is pending: when some of it was last taken */
        bool backlog;                   /* requests read, waiting for the socket to take replies */
        bool may_write;
        bool eof;
        bool close_after_flush;
        char in[CTL_REQUEST_MAX];
        size_t in_len;
        struct buf out;
        size_t out_off;
};

struct ctl_server {
        struct ev_loop *loop;
        struct supervisor *sup;
        char *path;
        gid_t group;
        bool has_group;
        int fd;
        int lock_fd;                    /* flock on PATH.lock: one tunneld per socket */
        ev_io io;
        ev_timer resume;                /* out of descriptors: accept again later */
        struct ctl_client *clients;
        size_t n_clients;
        size_t n_readers;               /* clients that may only read */
};

/* ---- responses ---- */

static void json_key(struct buf *b, const char *key)
{
        buf_json_string(b, key);
        buf_append(b, ":", 1);
}

static void json_number_or_null(struct buf *b, bool valid, double v)
{
        if (valid)
                buf_printf(b, "%.3f", v);
        else
                buf_append(b, "null", 4);
}

static void json_strv(struct buf *b, char *const *v)
{
        buf_append(b, "[", 1);
        for (size_t i = 0; v && v[i]; i++) {
                if (i)
                        buf_append(b, ",", 1);
                buf_json_string(b, v[i]);
        }
        buf_append(b, "]", 1);
}

void ctl_tunnel_json(struct buf *b, const struct tunnel *t, double now)
{
        const struct tunnel_run *run = &t->last_run;
        bool first = true;

        buf_append(b, "{", 1);
        json_key(b, "name");
        buf_json_string(b, t->spec.name);
        buf_append(b, ",", 1);
        json_key(b, "state");
        buf_json_string(b, tunnel_state_to_string(t->state));
        buf_printf(b, ",\"enabled\":%s,\"held\":%s,\"flapping\":%s,", t->spec.enabled ? "true" : "false",
                   t->held ? "true" : "false", t->flapping ? "true" : "false");
        json_key(b, "reason");
        if (t->state == TUNNEL_QUEUED)
                buf_json_string(b, t->wait_reason);
        else if (t->state == TUNNEL_DEGRADED)
                buf_json_string(b, "a forward failed; exit_on_forward_failure = false keeps ssh running");
        else if (t->reason && (t->state == TUNNEL_STOPPED || t->state == TUNNEL_FAILED || t->state == TUNNEL_STOPPING))
                buf_json_string(b, t->reason);
        else
                buf_append(b, "null", 4);
        buf_append(b, ",", 1);
        json_key(b, "host");
        buf_json_string(b, t->spec.host);
        buf_append(b, ",\"pid\":", 7);
        if (t->pid > 0)
                buf_printf(b, "%d", (int)t->pid);
        else
                buf_append(b, "null", 4);
        buf_append(b, ",\"since\":", 9);
        json_number_or_null(b, true, now - t->state_since);
        buf_append(b, ",\"uptime\":", 10);
        json_number_or_null(b, t->pid > 0, now - t->started_at);
        buf_append(b, ",\"retry_in\":", 12);
        json_number_or_null(b, t->state == TUNNEL_BACKOFF, t->retry_at - now);
        buf_printf(b, ",\"starts\":%lu,\"restarts\":%lu,\"consecutive_failures\":%u,\"prohibited\":%lu,",
                   t->total_starts, t->restarts, tunnel_failures_shown(t), t->prohibited);
        json_key(b, "failures");
        buf_append(b, "{", 1);
        for (int c = FAILURE_NONE + 1; c < _FAILURE_MAX; c++) {
                if (!t->total_failures[c])
                        continue;
                if (!first)
                        buf_append(b, ",", 1);
                first = false;
                json_key(b, failure_class_to_string(c));
                buf_printf(b, "%lu", t->total_failures[c]);
        }
        buf_append(b, "},", 2);
        json_key(b, "last_exit");
        if (run->valid) {
                buf_append(b, "{\"status\":", 10);
                if (run->exit_status >= 0)
                        buf_printf(b, "%d", run->exit_status);
                else
                        buf_append(b, "null", 4);
                buf_append(b, ",\"signal\":", 10);
                if (run->exit_signal > 0) {
                        char sig[16];
                        buf_json_string(b, signal_to_name(run->exit_signal, sig, sizeof(sig)));
                } else
                        buf_append(b, "null", 4);
                buf_printf(b, ",\"ran\":%.3f,\"ago\":%.3f,\"requested\":%s,\"failure\":", run->ran,
                           now - run->ended_at, run->requested ? "true" : "false");
                if (run->failure != FAILURE_NONE)
                        buf_json_string(b, failure_class_to_string(run->failure));
                else
                        buf_append(b, "null", 4);
                buf_append(b, "}", 1);
        } else
                buf_append(b, "null", 4);
        buf_append(b, ",\"forwards\":{\"local\":", 21);
        json_strv(b, tunnel_spec_local_forwards(&t->spec));
        buf_append(b, ",\"remote\":", 10);
        json_strv(b, tunnel_spec_remote_forwards(&t->spec));
        buf_append(b, ",\"dynamic\":", 11);
        json_strv(b, tunnel_spec_dynamic_forwards(&t->spec));
        buf_append(b, ",\"allocated\":", 13);
        json_strv(b, t->pid > 0 ? t->allocated : NULL);
        buf_printf(b, "},\"gatetime\":%.3f,", t->spec.gatetime);
        json_key(b, "restart");
        buf_json_string(b, restart_policy_to_string(t->spec.restart));
        buf_append(b, "}", 1);
}

_printf_(2, 3)
static void reply_error(struct buf *out, const char *fmt, ...)
{
        char text[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        buf_append(out, "{\"ok\":false,\"error\":", 20);
        buf_json_string(out, text);
        buf_append(out, "}\n", 2);
}

static void reply_errors(struct buf *out, const char *error, const struct config_errors *errs)
{
        buf_append(out, "{\"ok\":false,\"error\":", 20);
        buf_json_string(out, error);
        buf_append(out, ",\"errors\":", 10);
        json_strv(out, errs->lines);
        buf_append(out, "}\n", 2);
}

/* The tunnels a request names: "tunnels":[…] or "all":true. NULL-terminated array in
 * *ret (borrowed pointers), or an error reply. */
static int select_tunnels(struct supervisor *sup, const struct json *req, bool all_by_default, struct buf *out,
                          struct tunnel ***ret)
{
        const struct json *names = json_get(req, "tunnels");
        bool all = json_get_bool(req, "all", false);
        size_t n = names && names->type == JSON_ARRAY ? names->n : 0;
        struct tunnel **v;

        if (names && names->type != JSON_ARRAY) {
                reply_error(out, "\"tunnels\" must be a list of names");
                return -EINVAL;
        }
        if (all && n) {
                reply_error(out, "give tunnel names or \"all\", not both");
                return -EINVAL;
        }
        if (!all && !n && !all_by_default) {
                reply_error(out, "name at least one tunnel, or set \"all\"");
                return -EINVAL;
        }
        if (all || !n) {
                n = supervisor_count(sup);
                v = calloc(n + 1, sizeof(struct tunnel *));
                if (!v)
                        return -ENOMEM;
                for (size_t i = 0; i < n; i++)
                        v[i] = supervisor_get(sup, i);
                *ret = v;
                return 0;
        }
        v = calloc(n + 1, sizeof(struct tunnel *));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const struct json *name = names->items[i];
                if (name->type != JSON_STRING) {
                        reply_error(out, "\"tunnels\" must be a list of names");
                        free(v);
                        return -EINVAL;
                }
                v[i] = supervisor_find(sup, name->string);
                if (!v[i]) {
                        reply_error(out, "no such tunnel: %s", name->string);
                        free(v);
                        return -ENOENT;
                }
        }
        *ret = v;
        return 0;
}

static void reply_tunnels(struct buf *out, struct supervisor *sup, struct tunnel **v, bool with_daemon)
{
        double now = now_mono();

        buf_append(out, "{\"ok\":true,", 11);
        if (with_daemon) {
                _cleanup_free_ char *status = NULL;
                const struct config *c = supervisor_config(sup);

                buf_printf(out, "\"version\":\"%s\",\"pid\":%d,\"uptime\":%.3f,", TUNNELD_VERSION, (int)getpid(),
                           now - supervisor_started_at(sup));
                json_key(out, "config");
                buf_json_string(out, c->path);
                buf_append(out, ",", 1);
                if (supervisor_status_text(sup, &status) >= 0) {
                        json_key(out, "status");
                        buf_json_string(out, status);
                        buf_append(out, ",", 1);
                }
        }
        json_key(out, "tunnels");
        buf_append(out, "[", 1);
        for (size_t i = 0; v[i]; i++) {
                if (i)
                        buf_append(out, ",", 1);
                ctl_tunnel_json(out, v[i], now);
        }
        buf_append(out, "]}\n", 3);
}

/* As tunneld -t would. Only those who may change tunnels make tunneld ask ssh (a process
 * per distinct set of options): a read-only client gets every check but ssh's. */
static void handle_check(struct supervisor *sup, bool may_write, struct buf *out)
{
        struct config_load_options opts = supervisor_config(sup)->load_options;
        struct config_errors errs = {0};
        struct config *c = NULL;
        const char *path = supervisor_config(sup)->path;

        opts.ask_ssh = may_write ? CONFIG_SSH_STRICT : CONFIG_SSH_SKIP;
        if (config_load(path, &opts, &c, &errs) < 0) {
                reply_errors(out, "configuration invalid", &errs);
                config_errors_clear(&errs);
                return;
        }
        buf_printf(out, "{\"ok\":true,\"tunnels\":%zu,\"enabled\":%zu,", c->n_tunnels, config_enabled_count(c));
        json_key(out, "config");
        buf_json_string(out, path);
        buf_append(out, "}\n", 2);
        config_free(c);
}

static void handle_reload(struct supervisor *sup, struct buf *out)
{
        struct config_errors errs = {0};
        int r;

        log_notice("reload requested on the control socket");
        r = supervisor_reload(sup, &errs);
        if (r < 0) {
                if (errs.n)
                        reply_errors(out, "reload rejected: the running tunnels are unchanged", &errs);
                else
                        reply_error(out, "reload failed: %s", strerror(-r));
                config_errors_clear(&errs);
                return;
        }
        buf_printf(out, "{\"ok\":true,\"tunnels\":%zu}\n", supervisor_count(sup));
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

void ctl_handle_request(struct supervisor *sup, const char *line, size_t len, const struct ctl_peer *peer,
                        struct buf *out)
{
        bool may_write = peer->may_write;
        _cleanup_free_ struct tunnel **v = NULL;
        struct json *req = NULL;
        const char *cmd;
        int r;

        r = json_parse(line, len, &req);
        if (r < 0) {
                reply_error(out, r == -ENOMEM ? "out of memory" : "request is not valid JSON");
                return;
        }
        cmd = json_get_string(req, "cmd");
        if (!cmd) {
                reply_error(out, "request needs a \"cmd\" string");
                goto done;
        }
        if (strcmp(cmd, "status") == 0) {
                if (select_tunnels(sup, req, true, out, &v) >= 0)
                        reply_tunnels(out, sup, v, true);
                goto done;
        }
        if (strcmp(cmd, "check") == 0) {
                handle_check(sup, may_write, out);
                goto done;
        }
        if (strcmp(cmd, "metrics") == 0) {
                _cleanup_free_ char *text = NULL;
                if (metrics_render(sup, &text) < 0) {
                        reply_error(out, "out of memory");
                        goto done;
                }
                buf_printf(out, "{\"ok\":true,\"metrics\":");
                buf_json_string(out, text);
                buf_append(out, "}\n", 2);
                goto done;
        }
        if (strcmp(cmd, "start") != 0 && strcmp(cmd, "stop") != 0 && strcmp(cmd, "restart") != 0 &&
            strcmp(cmd, "reload") != 0) {
                reply_error(out, "unknown command \"%.64s\"", cmd);
                goto done;
        }
        if (!may_write) {
                char who[256];

                who_may_write(sup, who, sizeof(who));
                reply_error(out, "permission denied: %s needs %s; you are uid %d", cmd, who, (int)peer->uid);
                goto done;
        }
        if (supervisor_is_shutting_down(sup)) {
                reply_error(out, "tunneld is stopping");
                goto done;
        }
        if (strcmp(cmd, "reload") == 0) {
                handle_reload(sup, out);
                goto done;
        }
        if (select_tunnels(sup, req, false, out, &v) < 0)
                goto done;
        for (size_t i = 0; v[i]; i++) {
                struct log_ctx ctx = LOG_CTX_INIT;

                ctx.tunnel = v[i]->spec.name;
                log_full(LOG_NOTICE, &ctx, "%s requested on the control socket", cmd);
                if (strcmp(cmd, "start") == 0)
                        tunnel_start(v[i]);
                else if (strcmp(cmd, "stop") == 0)
                        tunnel_hold(v[i], "stopped by request");
                else
                        tunnel_restart(v[i], "restart requested");
        }
        reply_tunnels(out, sup, v, false);
done:
        json_free(req);
}

/* ---- connections ---- */

static bool has_output(const struct ctl_client *c)
{
        return c->out_off < c->out.len;
}

static void client_free(struct ctl_client *c)
{
        struct ctl_server *s = c->server;

        for (struct ctl_client **p = &s->clients; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        s->n_clients--;
        s->n_readers -= !c->may_write;
        ev_io_stop(s->loop, &c->io);
        ev_timer_stop(s->loop, &c->idle);
        close(c->fd);
        buf_free(&c->out);
        free(c);
}

/* Idle for CTL_IDLE_TIMEOUT, or a reply pending that nobody reads for CTL_STALL_TIMEOUT:
 * the client is dropped then. */
static double client_due(const struct ctl_client *c)
{
        return has_output(c) || c->backlog ? c->last_progress + CTL_STALL_TIMEOUT : c->last_active + CTL_IDLE_TIMEOUT;
}

static void client_arm_idle(struct ctl_client *c)
{
        double left = client_due(c) - now_mono();

        ev_timer_stop(c->server->loop, &c->idle);
        ev_timer_set(&c->idle, left > 0 ? left : 0., 0.);
        ev_timer_start(c->server->loop, &c->idle);
}

/* Read only between replies, and only with room for the rest of a line: a client that
 * pipelines requests and does not read the answers costs one reply, not a rendering loop. */
static void client_update_events(struct ctl_client *c, bool more_requests)
{
        int events = has_output(c) || more_requests ? EV_WRITE : 0;

        if (!c->eof && !c->close_after_flush && !has_output(c) && !more_requests && c->in_len < sizeof(c->in))
                events |= EV_READ;
        if (events == (c->io.events & (EV_READ | EV_WRITE)))
                return;
        ev_io_stop(c->server->loop, &c->io);
        ev_io_set(&c->io, c->fd, events);
        if (events)
                ev_io_start(c->server->loop, &c->io);
}

/* false if the client was freed */
static bool client_flush(struct ctl_client *c)
{
        while (has_output(c)) {
                ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                break;
                        client_free(c);
                        return false;
                }
                c->out_off += (size_t)n;
                c->last_active = c->last_progress = now_mono();
        }
        if (!has_output(c)) {
                c->out.len = c->out_off = 0;
                if (c->close_after_flush || (c->eof && !memchr(c->in, '\n', c->in_len))) {
                        client_free(c);
                        return false;
                }
        }
        return true;
}

/* Answer the next complete request, if the last reply is out. true if one was answered. */
static bool client_answer_one(struct ctl_client *c)
{
        char *nl;
        size_t len;

        if (has_output(c) || c->close_after_flush || !(nl = memchr(c->in, '\n', c->in_len)))
                return false;
        len = (size_t)(nl - c->in);
        if (c->server->sup)
                ctl_handle_request(c->server->sup, c->in, len,
                                   &(struct ctl_peer){ .uid = c->cred.uid, .may_write = c->may_write }, &c->out);
        else
                reply_error(&c->out, "tunneld is starting");
        if (c->out.oom || c->out.len > CTL_OUTPUT_MAX) {
                buf_free(&c->out);
                reply_error(&c->out, "reply too large or out of memory");
                c->close_after_flush = true;
        }
        memmove(c->in, nl + 1, c->in_len - len - 1);
        c->in_len -= len + 1;
        c->last_active = c->last_progress = now_mono();
        return true;
}

static void client_serve(struct ctl_client *c)
{
        bool more;

        for (int i = 0; i < CTL_REQUESTS_PER_WAKEUP; i++) {
                if (!client_answer_one(c))
                        break;
                if (!client_flush(c))
                        return;
        }
        if (!has_output(c) && c->in_len == sizeof(c->in)) {
                reply_error(&c->out, "request too long (at most %d bytes per line)", CTL_REQUEST_MAX);
                c->close_after_flush = true;
                c->in_len = 0;
                if (!client_flush(c))
                        return;
        }
        /* answered the most a callback may: come back next loop iteration */
        more = !has_output(c) && !c->close_after_flush && memchr(c->in, '\n', c->in_len);
        /* (the socket reports writable only while its queue is short: a client that does
         * not read is not called back, and its backlog counts as a pending reply) */
        c->backlog = more;
        client_update_events(c, more);
        client_arm_idle(c);
}

static void on_client(struct ev_loop *loop, ev_io *w, int revents)
{
        struct ctl_client *c = w->data;

        (void)loop;
        if ((revents & EV_WRITE) && !client_flush(c))
                return;
        if ((revents & EV_READ) && !has_output(c) && c->in_len < sizeof(c->in)) {
                ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);

                if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                        client_free(c);
                        return;
                }
                if (n == 0) {
                        c->eof = true;
                        /* a last request without a newline still counts */
                        if (c->in_len && c->in_len < sizeof(c->in) && !memchr(c->in, '\n', c->in_len))
                                c->in[c->in_len++] = '\n';
                        if (!c->in_len) {
                                client_free(c);
                                return;
                        }
                }
                if (n > 0)
                        c->in_len += (size_t)n;
        }
        client_serve(c);
}

static void on_idle(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct ctl_client *c = w->data;

        (void)loop;
        (void)revents;
        if (now_mono() < client_due(c)) {
                client_arm_idle(c);     /* it was busy meanwhile */
                return;
        }
        client_free(c);
}

/* Root, our own uid, or a process that holds control_group (as its gid or one of its
 * supplementary groups, as the kernel saw them at connect: SO_PEERGROUPS, not the user
 * database). */
static bool peer_may_write(const struct ctl_server *s, int fd, const struct ucred *cred)
{
        _cleanup_free_ gid_t *groups = NULL;
        socklen_t len = 64 * sizeof(gid_t);

        if (cred->uid == 0 || cred->uid == geteuid())
                return true;
        if (!s->has_group)
                return false;
        if (cred->gid == s->group)
                return true;
        for (int tries = 0; tries < 2; tries++) {
                gid_t *grown = realloc(groups, len);
                if (!grown)
                        return false;
                groups = grown;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) {
                        for (size_t i = 0; i < len / sizeof(gid_t); i++)
                                if (groups[i] == s->group)
                                        return true;
                        return false;
                }
                if (errno != ERANGE)
                        return false;   /* len now says how much room it needs */
        }
        return false;
}

/* The client to drop for a newcomer: among read-only clients (and, for a newcomer who may
 * change state, also among the others if no read-only one is there) the one quiet longest;
 * a read-only client loses its place even in the middle of a request, one that may change
 * state only between requests. NULL: nobody may be dropped. */
static struct ctl_client *eviction_candidate(const struct ctl_server *s, bool for_writer, bool readers_only)
{
        struct ctl_client *best = NULL;

        for (struct ctl_client *c = s->clients; c; c = c->next) {
                bool idle = c->in_len == 0 && !has_output(c);

                if (c->may_write && (readers_only || !idle))
                        continue;
                if (!c->may_write && !for_writer && !idle)
                        continue;
                if (!best || (best->may_write && !c->may_write) ||
                    (best->may_write == c->may_write && c->last_active < best->last_active))
                        best = c;
        }
        return best;
}

static size_t readers_of(const struct ctl_server *s, uid_t uid)
{
        size_t n = 0;

        for (const struct ctl_client *c = s->clients; c; c = c->next)
                n += !c->may_write && c->cred.uid == uid;
        return n;
}

/* Make room for a newcomer, or say why there is none. */
static const char *admit(struct ctl_server *s, bool may_write, uid_t uid)
{
        struct ctl_client *victim = NULL;

        if (may_write) {
                if (s->n_clients < CTL_CLIENTS_MAX)
                        return NULL;
                victim = eviction_candidate(s, true, false);
        } else {
                if (readers_of(s, uid) >= CTL_READERS_PER_UID)
                        return "too many connections from this user";
                if (s->n_readers < CTL_READERS_MAX && s->n_clients < CTL_CLIENTS_MAX)
                        return NULL;
                victim = eviction_candidate(s, false, true);
        }
        if (!victim)
                return "too many clients";
        client_free(victim);
        return NULL;
}

static void on_resume(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct ctl_server *s = w->data;

        (void)revents;
        ev_io_start(loop, &s->io);
}

static void accept_one(struct ctl_server *s, int fd)
{
        struct ctl_client *c;
        socklen_t len = sizeof(struct ucred);
        const char *refused;

        c = calloc(1, sizeof(*c));
        if (!c) {
                close(fd);
                return;
        }
        c->server = s;
        c->fd = fd;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->cred, &len) < 0) {
                close(fd);
                free(c);
                return;
        }
        c->may_write = peer_may_write(s, fd, &c->cred);
        refused = admit(s, c->may_write, c->cred.uid);
        if (refused) {
                char busy[128];
                int n = snprintf(busy, sizeof(busy), "{\"ok\":false,\"error\":\"%s\"}\n", refused);
                (void)!send(fd, busy, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
                close(fd);
                free(c);
                return;
        }
        c->last_active = c->last_progress = now_mono();
        c->next = s->clients;
        s->clients = c;
        s->n_clients++;
        s->n_readers += !c->may_write;
        ev_io_init(&c->io, on_client, fd, EV_READ);
        c->io.data = c;
        ev_io_start(s->loop, &c->io);
        ev_timer_init(&c->idle, on_idle, CTL_IDLE_TIMEOUT, 0.);
        c->idle.data = c;
        ev_timer_start(s->loop, &c->idle);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
        struct ctl_server *s = w->data;

        (void)revents;
        /* a few per wakeup: a flood of connections does not keep out the one that matters,
         * nor starve the rest of the loop */
        for (int i = 0; i < 16; i++) {
                int fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

                if (fd >= 0) {
                        accept_one(s, fd);
                        continue;
                }
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                        /* The connection stays queued, so the socket stays readable: stop
                         * watching it for a second rather than spin (and say so once). */
                        log_warning_errno(errno, "control socket: cannot accept: %m; "
                                          "not accepting for 1 s (raise LimitNOFILE=?)");
                        ev_io_stop(loop, &s->io);
                        ev_timer_set(&s->resume, 1.0, 0.);
                        ev_timer_start(loop, &s->resume);
                } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                        log_warning_errno(errno, "control socket: accept failed: %m");
                return;
        }
}

/* One tunneld per socket path: an exclusive lock on PATH.lock, held for the daemon's life,
 * decides who may (re)create the socket, so two starting at once cannot both pass a check
 * and delete each other's socket. */
static int lock_path(const char *path, int *ret_fd)
{
        _cleanup_free_ char *lock = NULL;
        int fd;

        if (asprintf(&lock, "%s.lock", path) < 0) {
                lock = NULL;
                return -ENOMEM;
        }
        fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return log_error_errno(errno, "control socket: cannot open %s: %m", lock);
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int r = errno == EWOULDBLOCK ? -EADDRINUSE : -errno;
                close(fd);
                if (r == -EADDRINUSE)
                        return log_error_errno(r, "control socket %s: another tunneld uses it (%s is locked)", path, lock);
                return log_error_errno(r, "control socket: cannot lock %s: %m", lock);
        }
        *ret_fd = fd;
        return 0;
}

void ctl_server_attach(struct ctl_server *s, struct supervisor *sup)
{
        s->sup = sup;
}

int ctl_server_new(struct ev_loop *loop, const char *path, const char *group, bool world_readable,
                   struct ctl_server **ret)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct ctl_server *s;
        mode_t old_umask;
        int r;

        if (strlen(path) >= sizeof(sa.sun_path))
                return log_error_errno(-ENAMETOOLONG, "control socket %s: path too long", path);
        memcpy(sa.sun_path, path, strlen(path) + 1);    /* length checked above */

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->loop = loop;
        s->fd = -1;
        s->lock_fd = -1;
        s->path = strdup(path);
        if (!s->path) {
                free(s);
                return -ENOMEM;
        }
        if (group) {
                struct group *gr = getgrnam(group);
                if (!gr) {
                        r = log_error_errno(-ENOENT, "control_group %s: no such group", group);
                        goto fail;
                }
                s->group = gr->gr_gid;
                s->has_group = true;
        }

        {
                /* the directory, if it is ours to make (systemd's RuntimeDirectory= usually is) */
                _cleanup_free_ char *dir = strdup(path);
                char *slash = dir ? strrchr(dir, '/') : NULL;
                if (slash && slash != dir) {
                        *slash = '\0';
                        (void)mkdir(dir, 0755);
                }
        }
        r = lock_path(path, &s->lock_fd);
        if (r < 0)
                goto fail;
        (void)unlink(path);     /* a stale socket of an earlier tunneld: ours now */

        s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s->fd < 0) {
                r = log_error_errno(errno, "control socket: %m");
                goto fail;
        }
        /* Bound and listening under a temporary name, then renamed into place: whoever sees
         * the path can connect (no "Connection refused" between bind and listen). Born with
         * its final mode: no window in which others could connect either. */
        if (strlen(path) + 4 >= sizeof(sa.sun_path)) {
                r = log_error_errno(-ENAMETOOLONG, "control socket %s: path too long", path);
                goto fail;
        }
        memcpy(sa.sun_path + strlen(path), ".new", 5);
        (void)unlink(sa.sun_path);
        /* connect() needs write permission: 0666 lets anyone read status (changes are still
         * checked per peer), 0660 the group, 0600 only root and our own user */
        old_umask = umask(world_readable ? 0111 : s->has_group ? 0117 : 0177);
        r = bind(s->fd, (struct sockaddr *)&sa, sizeof(sa));
        umask(old_umask);
        if (r < 0) {
                r = log_error_errno(errno, "control socket %s: bind failed: %m", path);
                goto fail;
        }
        if (s->has_group && chown(sa.sun_path, (uid_t)-1, s->group) < 0) {
                /* Under the shipped unit (PrivateUsers=yes, no @chown) this is EPERM. Keep the
                 * socket working for root and tunneld's user rather than lose it. */
                log_warning_errno(errno, "control socket %s: cannot give it to group %u: %m; "
                                  "only root and tunneld's user can use it (under systemd, allow it "
                                  "with PrivateUsers=no and SystemCallFilter=@chown in a drop-in)",
                                  sa.sun_path /* not path: GCC 12 + ASan misreads it as NULL */, (unsigned)s->group);
                (void)chmod(sa.sun_path, world_readable ? 0666 : 0600);
                s->has_group = false;
        }
        if (listen(s->fd, 16) < 0 || rename(sa.sun_path, path) < 0) {
                r = log_error_errno(errno, "control socket %s: cannot listen: %m", path);
                (void)unlink(sa.sun_path);
                goto fail;
        }
        ev_io_init(&s->io, on_accept, s->fd, EV_READ);
        ev_timer_init(&s->resume, on_resume, 0., 0.);
        s->io.data = s->resume.data = s;
        ev_io_start(loop, &s->io);
        *ret = s;
        return 0;
fail:
        if (s->fd >= 0) {
                close(s->fd);
                (void)unlink(path);
        }
        if (s->lock_fd >= 0)
                close(s->lock_fd);
        free(s->path);
        free(s);
        return r;
}

struct ctl_server *ctl_server_free(struct ctl_server *s)
{
        if (!s)
                return NULL;
        while (s->clients)
                client_free(s->clients);
        ev_io_stop(s->loop, &s->io);
        ev_timer_stop(s->loop, &s->resume);
        if (s->fd >= 0) {
                close(s->fd);
                (void)unlink(s->path);  /* still ours: we hold the lock */
        }
        if (s->lock_fd >= 0)
                close(s->lock_fd);
        free(s->path);
        free(s);
        return NULL;
}
