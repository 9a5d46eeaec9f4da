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

#include "ctl_protocol.h"
#include "json_write.h"
#include "log.h"
#include "tunnel_json.h"

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
        bool subscribed;                /* follows state changes (events) */
        unsigned long waiting_reload;   /* its reload's number: the reply comes when it is done */
        char **names;                   /* …of these tunnels; NULL: all */
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
        strv_free(c->names);
        free(c);
}

/* Idle for CTL_IDLE_TIMEOUT, or a reply pending that nobody reads for CTL_STALL_TIMEOUT:
 * the client is dropped then. */
static double client_due(const struct ctl_client *c)
{
        if (has_output(c) || c->backlog)
                return c->last_progress + CTL_STALL_TIMEOUT;
        /* a subscriber waits for news as long as it likes, a reload's asker for its end */
        return c->subscribed || c->waiting_reload ? 1e300 : c->last_active + CTL_IDLE_TIMEOUT;
}

static void client_arm_idle(struct ctl_client *c)
{
        double left = client_due(c) - now_mono();

        ev_timer_stop(c->server->loop, &c->idle);
        if (left > 1e200)
                return;         /* no timer: an idle tunneld makes no wakeups */
        ev_timer_set(&c->idle, left > 0 ? left : 0., 0.);
        ev_timer_start(c->server->loop, &c->idle);
}

/* Read only between replies, and only with room for the rest of a line: a client that
 * pipelines requests and does not read the answers costs one reply, not a rendering loop. */
static void client_update_events(struct ctl_client *c, bool more_requests)
{
        int events = has_output(c) || more_requests ? EV_WRITE : 0;

        if (!c->eof && !c->close_after_flush &&
            (c->subscribed || (!has_output(c) && !more_requests && c->in_len < sizeof(c->in))))
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

        /* not attached yet (tunneld's first load: main.c): the request waits, unread */
        if (has_output(c) || c->close_after_flush || c->subscribed || c->waiting_reload || !c->server->sup ||
            !(nl = memchr(c->in, '\n', c->in_len)))
                return false;
        len = (size_t)(nl - c->in);
        {
                struct ctl_effect effect;

                ctl_protocol_handle(c->server->sup, c->in, len,
                                    &(struct ctl_peer){ .uid = c->cred.uid, .may_write = c->may_write }, &c->out,
                                    &effect);
                if (effect.subscribe) {
                        c->subscribed = true;
                        c->names = effect.names;
                }
                c->waiting_reload = effect.wait_reload;
        }
        if (c->out.oom || c->out.len > CTL_OUTPUT_MAX) {
                buf_free(&c->out);
                ctl_protocol_error(&c->out, "reply too large or out of memory");
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
        if (c->subscribed)
                c->in_len = 0;          /* what a subscriber sends is not read as requests */
        if (!has_output(c) && c->in_len == sizeof(c->in)) {
                ctl_protocol_error(&c->out, "request too long (at most %d bytes per line)", CTL_REQUEST_MAX);
                c->close_after_flush = true;
                c->in_len = 0;
                if (!client_flush(c))
                        return;
        }
        /* answered the most a callback may: come back next loop iteration */
        more = !has_output(c) && !c->close_after_flush && c->server->sup && memchr(c->in, '\n', c->in_len);
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
        if ((revents & EV_READ) && (c->subscribed || !has_output(c)) && c->in_len < sizeof(c->in)) {
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

static bool follows(const struct ctl_client *c, const char *name)
{
        if (!c->subscribed)
                return false;
        if (!c->names)
                return true;
        for (char **n = c->names; *n; n++)
                if (strcmp(*n, name) == 0)
                        return true;
        return false;
}

/* A state change, to every client that follows it: one line each, rendered once. A
 * subscriber that lets CTL_EVENTS_BACKLOG pile up is dropped. */
static void on_tunnel_event(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata)
{
        struct ctl_server *s = userdata;
        struct tunnel_status st;
        struct buf line = {0};
        struct json_writer w = json_writer_init(&line);
        struct ctl_client *next;

        if (ev == TUNNEL_EVENT_CONNECTING || (ev == TUNNEL_EVENT_STATE && old == tunnel_get_state(t)))
                return;
        tunnel_get_status(t, now_mono(), &st);
        for (struct ctl_client *c = s->clients; c; c = next) {
                next = c->next;
                if (!follows(c, st.name))
                        continue;
                if (!line.len) {
                        tunnel_json_write_event(&w, &st, ev == TUNNEL_EVENT_FLAPPING ? "flapping" : "state", old);
                        buf_puts(&line, "\n");
                        if (line.oom)
                                break;
                }
                if (c->out.len - c->out_off + line.len > CTL_EVENTS_BACKLOG) {
                        client_free(c);
                        continue;
                }
                buf_append(&c->out, line.data, line.len);
                if (client_flush(c)) {
                        client_update_events(c, false);
                        client_arm_idle(c);
                }
        }
        buf_free(&line);
}

/* A reload ended: answer whoever waits for it, then their next requests. */
static void on_reloaded(const char *error, void *userdata)
{
        struct ctl_server *s = userdata;
        unsigned long done = supervisor_reload_result(s->sup, NULL, NULL);
        struct ctl_client *next;

        (void)error;
        for (struct ctl_client *c = s->clients; c; c = next) {
                next = c->next;
                if (!c->waiting_reload || c->waiting_reload > done)
                        continue;
                c->waiting_reload = 0;
                ctl_protocol_reload_reply(s->sup, &c->out);
                c->last_active = c->last_progress = now_mono();
                if (client_flush(c))
                        client_serve(c);
        }
}

void ctl_server_attach(struct ctl_server *s, struct supervisor *sup)
{
        struct ctl_client *next;

        s->sup = sup;
        /* two listeners of SUPERVISOR_LISTENERS_MAX exist (this and the publisher) */
        (void)supervisor_add_listener(sup, &(struct supervisor_listener){
                .event = on_tunnel_event, .reloaded = on_reloaded, .userdata = s });
        /* the requests that came before (main.c attaches once the first load is applied, or
         * a moment after start) */
        for (struct ctl_client *c = s->clients; c; c = next) {
                next = c->next;
                client_serve(c);
        }
}

/* Bound and listening under a temporary name, then renamed into place: whoever sees the
 * path can connect (no "Connection refused" between bind and listen). Born with its final
 * mode: no window in which others could connect either. */
static int bind_socket(struct ctl_server *s, bool world_readable)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t len = strlen(s->path);
        mode_t old_umask;
        int r;

        if (len + 4 >= sizeof(sa.sun_path))
                return log_error_errno(-ENAMETOOLONG, "control socket %s: path too long", s->path);
        memcpy(sa.sun_path, s->path, len);
        memcpy(sa.sun_path + len, ".new", 5);
        s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s->fd < 0)
                return log_error_errno(errno, "control socket: %m");
        (void)unlink(sa.sun_path);
        /* connect() needs write permission: 0666 lets anyone read status (changes are still
         * checked per peer), 0660 the group, 0600 only root and our own user */
        old_umask = umask(world_readable ? 0111 : s->has_group ? 0117 : 0177);
        r = bind(s->fd, (struct sockaddr *)&sa, sizeof(sa));
        umask(old_umask);
        if (r < 0)
                return log_error_errno(errno, "control socket %s: bind failed: %m", s->path);
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
        if (listen(s->fd, 16) < 0 || rename(sa.sun_path, s->path) < 0) {
                r = log_error_errno(errno, "control socket %s: cannot listen: %m", s->path);
                (void)unlink(sa.sun_path);
                return r;
        }
        return 0;
}

int ctl_server_new(struct ev_loop *loop, const char *path, const char *group, bool world_readable,
                   struct ctl_server **ret)
{
        struct ctl_server *s;
        int r;

        if (strlen(path) + 4 >= sizeof(((struct sockaddr_un *)NULL)->sun_path))
                return log_error_errno(-ENAMETOOLONG, "control socket %s: path too long", path);
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
        r = bind_socket(s, world_readable);
        if (r < 0)
                goto fail;
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
