/* SPDX-License-Identifier: MIT */
#pragma once

/* The control socket's own objects, shared by ctl.c (the server: the socket, admission,
 * what goes to every client) and ctl_conn.c (one client: its requests, replies and events,
 * bounded, and its drop). Not for other modules: they use ctl.h. */

#include <ev.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "ctl.h"
#include "ctl_check.h"
#include "ctl_events.h"
#include "ctl_stream.h"
#include "util.h"

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
        struct ctl_conn *conns;
        size_t n_conns;
        size_t n_readers;               /* clients that may only read */
        struct ctl_check *check;        /* check jobs, one at a time */
        struct ctl_events *events;      /* what subscribers have yet to read */
        size_t n_subscribers;
        ev_prepare news;                /* events came: subscribers take them before the loop sleeps */
};

/* Why a client is dropped: its last line's "dropped" (ctl_protocol_dropped). */
enum ctl_drop {
        CTL_DROP_STALLED,               /* nothing it was sent was read for CTL_STALL_TIMEOUT */
        CTL_DROP_BACKLOG,               /* a subscriber CTL_EVENTS_BACKLOG behind the events */
        CTL_DROP_IDLE,                  /* no complete request for CTL_IDLE_TIMEOUT */
        CTL_DROP_EVICTED,               /* its place went to another client */
        _CTL_DROP_MAX,
};

/* One client. What it costs is bounded whatever it does: CTL_REQUEST_MAX of request, one
 * reply at a time (a big one made a part at a time as the socket takes it, as are the
 * events of a subscriber, from the shared log): about CTL_LOW_WATER + CTL_STREAM_PART. */
struct ctl_conn {
        struct ctl_server *server;
        struct ctl_conn *next;
        int fd;
        ev_io io;
        ev_timer timer;                 /* the idle or stall deadline */
        struct ucred cred;
        bool may_write;
        bool eof;                       /* the client shut its side */
        bool close_after_flush;         /* the reply is an error that ends the connection */
        bool subscribed;                /* follows state changes (events) */
        bool backlog;                   /* requests read, waiting for the socket to take replies */
        bool line_open;                 /* the last byte the socket took was not a newline */
        char **names;                   /* subscribed to these tunnels; NULL: all */
        unsigned long waiting_reload;   /* its reload's number: the reply comes when it is done */
        unsigned long waiting_check;    /* its check's number: likewise */
        double last_active;             /* accepted, or its last complete request or reply */
        double last_progress;           /* something is unread: since when, or since it last took some */
        int unread;                     /* bytes in the socket's queue after the last look (SIOCOUTQ) */
        int sndbuf;                     /* the socket's send buffer (SO_SNDBUF) */
        struct ctl_stream *stream;      /* the reply being made a part at a time */
        struct buf out;                 /* to send: out.data[out_off, out.len) */
        size_t out_off;
        uint64_t cursor;                /* a subscriber's next event in the server's log */
        size_t in_len;
        char in[CTL_REQUEST_MAX];
};

/* ctl_conn.c */
int ctl_conn_new(struct ctl_server *s, int fd, const struct ucred *cred, bool may_write, struct ctl_conn **ret);
/* Close and forget it, with no word (tunneld stops; the client left). */
void ctl_conn_free(struct ctl_conn *c);
/* Close it with a last line saying why, logged once. */
void ctl_conn_drop(struct ctl_conn *c, enum ctl_drop why);
/* The log has news: a subscriber takes what follows it, as its socket takes it. */
void ctl_conn_kick(struct ctl_conn *c);
/* The reply it waited for (reload, check) is in c->out: send it, then serve what it asks
 * next. */
void ctl_conn_answered(struct ctl_conn *c);
/* Between requests, with nothing to send: what a newcomer may evict first. */
bool ctl_conn_is_idle(const struct ctl_conn *c);

/* ctl.c: answer one request line of c (a reply in c->out, a stream, or a wait). */
void ctl_server_answer(struct ctl_conn *c, const char *line, size_t len);
/* ctl.c: a subscriber moved past the log's oldest block: free what all have read. */
void ctl_server_events_read(struct ctl_server *s);
