/* SPDX-License-Identifier: MIT */
#pragma once

/* mux_client: one control connection to a tunnel's ssh master, on the loop. Requests
 * (pipelined: the master answers in order) go out as the socket takes them; each reply
 * comes back to the owner with its request id. Every read is bounded; a master that
 * sends garbage or hangs up ends the connection with a reason, never a hang. */

#include <ev.h>
#include <stdint.h>

#include "forward.h"
#include "mux_proto.h"

struct mux_client;

struct mux_client_ops {
        void (*ready)(void *userdata);          /* the master's hello arrived */
        void (*reply)(const struct mux_reply *r, void *userdata);
        /* the connection ended: -errno and why; the owner frees the client */
        void (*closed)(int error, const char *why, void *userdata);
};

/* Connects to the master's control socket at path (a Unix socket) and says hello. */
int mux_client_new(struct ev_loop *loop, const char *path, const struct mux_client_ops *ops, void *userdata,
                   struct mux_client **ret);
struct mux_client *mux_client_free(struct mux_client *c);
/* Its replies go to someone else from now on (make-before-break: the old master's). */
void mux_client_set_owner(struct mux_client *c, const struct mux_client_ops *ops, void *userdata);

/* Queue a request; *ret_id is the id its reply will carry. */
int mux_client_open_forward(struct mux_client *c, const struct forward *f, uint32_t *ret_id);
int mux_client_close_forward(struct mux_client *c, const struct forward *f, uint32_t *ret_id);
int mux_client_alive_check(struct mux_client *c, uint32_t *ret_id);
