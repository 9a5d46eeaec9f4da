/* SPDX-License-Identifier: MIT */
#pragma once

/* sockwatch: one inotify watch on the directory of the connections' control sockets, for
 * every master that waits for its socket to appear (ssh binds it under a temporary name
 * and links it into place once it listens). One inotify instance whatever the number of
 * connections (the kernel allows a user 128), no polling. */

#include <ev.h>
#include <stdbool.h>

struct sockwatch;

struct sockwatch_entry {
        const char *name;               /* the socket's file name in the directory */
        void (*appeared)(struct sockwatch_entry *e);
        struct sockwatch_entry *next;   /* its bucket */
        bool added;
};

/* 0 or -errno. */
int sockwatch_new(struct ev_loop *loop, const char *dir, struct sockwatch **ret);
struct sockwatch *sockwatch_free(struct sockwatch *w);
/* e->appeared is called once e->name appears in the directory (e is removed first). */
void sockwatch_add(struct sockwatch *w, struct sockwatch_entry *e);
void sockwatch_remove(struct sockwatch *w, struct sockwatch_entry *e);
