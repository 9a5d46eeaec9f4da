/* SPDX-License-Identifier: MIT */
#include "sockwatch.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "util.h"

#define BUCKETS 1024                    /* thousands of masters starting at once stay cheap */
#define EVENTS_PER_WAKEUP 16            /* reads of the inotify fd: the rest next iteration */

struct sockwatch {
        struct ev_loop *loop;
        int fd;
        ev_io io;
        struct sockwatch_entry *buckets[BUCKETS];
};

static unsigned bucket_of(const char *name)
{
        uint32_t h = 2166136261u;

        for (; *name; name++)
                h = (h ^ (unsigned char)*name) * 16777619u;
        return h % BUCKETS;
}

void sockwatch_add(struct sockwatch *w, struct sockwatch_entry *e)
{
        unsigned b = bucket_of(e->name);

        if (e->added)
                return;
        e->next = w->buckets[b];
        w->buckets[b] = e;
        e->added = true;
}

void sockwatch_remove(struct sockwatch *w, struct sockwatch_entry *e)
{
        if (!w || !e->added)
                return;
        for (struct sockwatch_entry **p = &w->buckets[bucket_of(e->name)]; *p; p = &(*p)->next)
                if (*p == e) {
                        *p = e->next;
                        break;
                }
        e->added = false;
        e->next = NULL;
}

static void on_events(struct ev_loop *loop, ev_io *io, int revents)
{
        struct sockwatch *w = io->data;
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

        (void)loop;
        (void)revents;
        for (int k = 0; k < EVENTS_PER_WAKEUP; k++) {
                ssize_t n = read(w->fd, buf, sizeof(buf));

                if (n <= 0)
                        return;
                for (ssize_t at = 0; at + (ssize_t)sizeof(struct inotify_event) <= n;) {
                        const struct inotify_event *ev = (const struct inotify_event *)(buf + at);
                        struct sockwatch_entry *e;

                        at += (ssize_t)(sizeof(*ev) + ev->len);
                        if (!ev->len)
                                continue;
                        for (e = w->buckets[bucket_of(ev->name)]; e && strcmp(e->name, ev->name) != 0; e = e->next)
                                ;
                        if (!e)
                                continue;
                        sockwatch_remove(w, e);
                        e->appeared(e);         /* may add or remove others */
                }
        }
}

int sockwatch_new(struct ev_loop *loop, const char *dir, struct sockwatch **ret)
{
        struct sockwatch *w = calloc(1, sizeof(*w));

        if (!w)
                return -ENOMEM;
        w->loop = loop;
        w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->fd < 0 || inotify_add_watch(w->fd, dir, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR) < 0) {
                int r = -errno;

                if (w->fd >= 0)
                        close(w->fd);
                free(w);
                return r;
        }
        ev_io_init(&w->io, on_events, w->fd, EV_READ);
        w->io.data = w;
        ev_io_start(loop, &w->io);
        *ret = w;
        return 0;
}

struct sockwatch *sockwatch_free(struct sockwatch *w)
{
        if (!w)
                return NULL;
        ev_io_stop(w->loop, &w->io);
        close(w->fd);
        free(w);
        return NULL;
}
