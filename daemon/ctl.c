/* SPDX-License-Identifier: MIT */
/* ctl: the control socket: listening, who is admitted, what goes to every client (events,
 * the end of a reload or of a check). One client is ctl_conn.c's. */
#include "ctl.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl_internal.h"
#include "ctl_protocol.h"
#include "json_write.h"
#include "log.h"
#include "proc_locks.h"
#include "tunnel_json.h"

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
static struct ctl_conn *eviction_candidate(const struct ctl_server *s, bool for_writer, bool readers_only)
{
        struct ctl_conn *best = NULL;

        for (struct ctl_conn *c = s->conns; c; c = c->next) {
                bool idle = ctl_conn_is_idle(c);

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

        for (const struct ctl_conn *c = s->conns; c; c = c->next)
                n += !c->may_write && c->cred.uid == uid;
        return n;
}

/* Make room for a newcomer, or say why there is none. */
static const char *admit(struct ctl_server *s, bool may_write, uid_t uid)
{
        struct ctl_conn *victim = NULL;

        if (may_write) {
                if (s->n_conns < CTL_CLIENTS_MAX)
                        return NULL;
                victim = eviction_candidate(s, true, false);
        } else {
                if (readers_of(s, uid) >= CTL_READERS_PER_UID)
                        return "too many connections from this user";
                if (s->n_readers < CTL_READERS_MAX && s->n_conns < CTL_CLIENTS_MAX)
                        return NULL;
                victim = eviction_candidate(s, false, true);
        }
        if (!victim)
                return "too many clients";
        ctl_conn_drop(victim, CTL_DROP_EVICTED);
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
        struct ctl_conn *c;
        struct ucred cred;
        socklen_t len = sizeof(cred);
        const char *refused;
        bool may_write;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                close(fd);
                return;
        }
        may_write = peer_may_write(s, fd, &cred);
        refused = admit(s, may_write, cred.uid);
        if (refused) {
                char busy[128];
                int n = snprintf(busy, sizeof(busy), "{\"ok\":false,\"error\":\"%s\"}\n", refused);
                (void)!send(fd, busy, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
                close(fd);
                return;
        }
        if (ctl_conn_new(s, fd, &cred, may_write, &c) < 0) {
                close(fd);
                return;
        }
        c->next = s->conns;
        s->conns = c;
        s->n_conns++;
        s->n_readers += !c->may_write;
        ev_io_start(s->loop, &c->io);
        ev_timer_start(s->loop, &c->timer);
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

/* "held by pid 123 (uid 1000, flock)", or "" if nobody is seen holding it. */
static void lock_holder(const struct stat *st, char *buf, size_t size)
{
        struct proc_locks_holder h;

        buf[0] = '\0';
        if (proc_locks_holder(st, &h) < 0)
                return;
        if (h.uid == (uid_t)-1)
                snprintf(buf, size, "held by pid %d", (int)h.pid);
        else
                snprintf(buf, size, "held by pid %d (uid %d%s%s)", (int)h.pid, (int)h.uid, h.comm[0] ? ", " : "",
                         h.comm);
}

/* A lock file someone else made, or made a link: not ours to take, nor to remove. */
static int refuse_lock(const char *path, const char *lock, const struct stat *st)
{
        char holder[128], what[128];

        lock_holder(st, holder, sizeof(holder));
        if (S_ISLNK(st->st_mode))
                snprintf(what, sizeof(what), "is a symbolic link");
        else if (!S_ISREG(st->st_mode))
                snprintf(what, sizeof(what), "is not a regular file (mode %06o)", (unsigned)st->st_mode);
        else if (st->st_uid != geteuid())
                snprintf(what, sizeof(what), "is owned by uid %d, not by tunneld's user (uid %d)", (int)st->st_uid,
                         (int)geteuid());
        else
                snprintf(what, sizeof(what), "has %lu hard links", (unsigned long)st->st_nlink);
        return log_error_errno(-EADDRINUSE, "control socket %s: its lock file %s %s%s%s: someone else made it; "
                               "not using it (remove it, and keep the socket's directory writable by root only)",
                               path, lock, what, holder[0] ? ", " : "", holder);
}

/* One tunneld per socket path: an exclusive lock on PATH.lock, held for the daemon's life,
 * decides who may (re)create the socket, so two starting at once cannot both pass a check
 * and delete each other's socket. The lock file must be a plain file of ours: a link or
 * another user's file is refused (-EADDRINUSE: tunneld does not start), and a lock held
 * by someone else is refused naming the holder. */
static int lock_path(const char *path, int *ret_fd)
{
        _cleanup_free_ char *lock = NULL;
        struct stat st;
        int fd, r;

        if (asprintf(&lock, "%s.lock", path) < 0) {
                lock = NULL;
                return -ENOMEM;
        }
        fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
        if (fd < 0) {
                r = -errno;
                if (lstat(lock, &st) == 0 && (S_ISLNK(st.st_mode) || st.st_uid != geteuid()))
                        return refuse_lock(path, lock, &st);
                return log_error_errno(r, "control socket: cannot open %s: %m", lock);
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                close(fd);
                return log_error_errno(r, "control socket: %s: %m", lock);
        }
        if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || st.st_nlink != 1) {
                close(fd);
                return refuse_lock(path, lock, &st);
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                r = errno == EWOULDBLOCK ? -EADDRINUSE : -errno;
                close(fd);
                if (r != -EADDRINUSE)
                        return log_error_errno(r, "control socket: cannot lock %s: %m", lock);
                char holder[128];
                lock_holder(&st, holder, sizeof(holder));
                return log_error_errno(r, "control socket %s: its lock file %s is %s: another tunneld uses this "
                                       "socket (or someone holds its lock)", path, lock,
                                       holder[0] ? holder : "locked");
        }
        if ((st.st_mode & 07777) != 0600)
                (void)fchmod(fd, 0600);         /* nobody else may open it to hold it */
        *ret_fd = fd;
        return 0;
}

void ctl_server_events_read(struct ctl_server *s)
{
        uint64_t least = UINT64_MAX;

        for (const struct ctl_conn *c = s->conns; c; c = c->next)
                if (c->subscribed && c->cursor < least)
                        least = c->cursor;
        ctl_events_trim(s->events, least);
}

/* A state change: rendered once into the subscribers' log, then each subscriber takes it
 * (or not: it follows other tunnels) as its socket takes it. Room for it is made by
 * dropping the subscribers still reading the oldest block of a full log. */
static void on_tunnel_event(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata)
{
        struct ctl_server *s = userdata;
        struct tunnel_status st;
        struct buf line = {0};
        struct json_writer w = json_writer_init(&line);
        struct ctl_conn *next;
        uint64_t behind;

        if (!s->n_subscribers || (ev == TUNNEL_EVENT_STATE && old == tunnel_get_state(t)))
                return;
        tunnel_get_status(t, now_mono(), &st);
        tunnel_json_write_event(&w, &st, ev, old);
        buf_puts(&line, "\n");
        if (line.oom) {
                buf_free(&line);
                return;
        }
        ctl_server_events_read(s);
        behind = ctl_events_room(s->events, strlen(st.name), line.len);
        if (behind) {
                for (struct ctl_conn *c = s->conns; c; c = next) {
                        next = c->next;
                        if (c->subscribed && c->cursor < behind)
                                ctl_conn_drop(c, CTL_DROP_BACKLOG);
                }
                ctl_events_trim(s->events, behind);
        }
        if (s->n_subscribers && ctl_events_append(s->events, st.name, line.data, line.len) >= 0)
                ev_prepare_start(s->loop, &s->news);
        buf_free(&line);
}

/* Once per loop iteration with news: the events of a burst (a stop --all) go out in one
 * send per subscriber, not one each. */
static void on_news(struct ev_loop *loop, ev_prepare *w, int revents)
{
        struct ctl_server *s = w->data;
        struct ctl_conn *next;

        (void)revents;
        ev_prepare_stop(loop, w);
        for (struct ctl_conn *c = s->conns; c; c = next) {
                next = c->next;
                if (c->subscribed)
                        ctl_conn_kick(c);
        }
}

/* A reload ended: answer whoever waits for it, then their next requests. */
static void on_reloaded(const char *error, void *userdata)
{
        struct ctl_server *s = userdata;
        unsigned long done = supervisor_reload_result(s->sup, NULL, NULL);
        struct ctl_conn *next;

        (void)error;
        for (struct ctl_conn *c = s->conns; c; c = next) {
                next = c->next;
                if (!c->waiting_reload || c->waiting_reload > done)
                        continue;
                c->waiting_reload = 0;
                ctl_protocol_reload_reply(s->sup, &c->out);
                ctl_conn_answered(c);
        }
}

/* A check job ended: answer whoever asked before it began. */
static void on_checked(unsigned long done, const struct ctl_check_result *res, void *userdata)
{
        struct ctl_server *s = userdata;
        struct ctl_conn *next;

        for (struct ctl_conn *c = s->conns; c; c = next) {
                next = c->next;
                if (!c->waiting_check || c->waiting_check > done)
                        continue;
                c->waiting_check = 0;
                ctl_protocol_check_reply(res, &c->out);
                ctl_conn_answered(c);
        }
}

void ctl_server_answer(struct ctl_conn *c, const char *line, size_t len)
{
        struct ctl_server *s = c->server;
        struct ctl_effect effect;

        ctl_protocol_handle(s->sup, line, len, &(struct ctl_peer){ .uid = c->cred.uid, .may_write = c->may_write },
                            &c->out, &effect);
        if (effect.subscribe) {
                c->subscribed = true;
                c->names = effect.names;
                c->cursor = ctl_events_end(s->events);  /* what happens from now on */
                s->n_subscribers++;
        }
        c->waiting_reload = effect.wait_reload;
        c->stream = effect.stream;
        if (effect.check) {
                unsigned long ticket;
                /* only those who may change tunnels make tunneld run ssh -G */
                int r = ctl_check_ask(s->check, s->sup, c->may_write, &ticket);

                if (r < 0)
                        ctl_protocol_error(&c->out, "cannot check the configuration: %s", strerror(-r));
                else
                        c->waiting_check = ticket;
        }
}

void ctl_server_attach(struct ctl_server *s, struct supervisor *sup)
{
        struct ctl_conn *next;

        s->sup = sup;
        /* two listeners of SUPERVISOR_LISTENERS_MAX exist (this and the publisher) */
        (void)supervisor_add_listener(sup, &(struct supervisor_listener){
                .event = on_tunnel_event, .reloaded = on_reloaded, .userdata = s });
        /* the requests that came before (main.c attaches once the first load is applied, or
         * a moment after start) */
        for (struct ctl_conn *c = s->conns; c; c = next) {
                next = c->next;
                ctl_conn_answered(c);
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
        r = ctl_check_new(loop, on_checked, s, &s->check);
        if (r >= 0)
                r = ctl_events_new(&s->events);
        if (r < 0)
                goto fail;
        ev_io_init(&s->io, on_accept, s->fd, EV_READ);
        ev_timer_init(&s->resume, on_resume, 0., 0.);
        ev_prepare_init(&s->news, on_news);
        s->io.data = s->resume.data = s->news.data = s;
        ev_io_start(loop, &s->io);
        *ret = s;
        return 0;
fail:
        ctl_check_free(s->check);
        ctl_events_free(s->events);
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
        while (s->conns)
                ctl_conn_free(s->conns);
        ctl_check_free(s->check);
        ctl_events_free(s->events);
        ev_io_stop(s->loop, &s->io);
        ev_timer_stop(s->loop, &s->resume);
        ev_prepare_stop(s->loop, &s->news);
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
