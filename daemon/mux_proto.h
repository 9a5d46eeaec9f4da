/* SPDX-License-Identifier: MIT */
#pragma once

/* mux_proto: OpenSSH's multiplexing protocol (PROTOCOL.mux, version 4), the client side:
 * the requests tunneld sends to its ssh master and the replies it reads back. Pure: bytes
 * in, bytes out, no socket. Every reply is length-checked and bounded before a field of it
 * is read; anything else is an error, never a guess. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "util.h"

#define MUX_VERSION 4
#define MUX_PACKET_MAX 16384            /* a reply is a few words and a reason string */
#define MUX_REASON_MAX 1024

enum mux_msg {
        MUX_MSG_HELLO = 0x00000001,
        MUX_C_NEW_SESSION = 0x10000002,
        MUX_C_ALIVE_CHECK = 0x10000004,
        MUX_C_OPEN_FWD = 0x10000006,
        MUX_C_CLOSE_FWD = 0x10000007,
        MUX_C_STOP_LISTENING = 0x10000009,
        MUX_S_OK = 0x80000001,
        MUX_S_PERMISSION_DENIED = 0x80000002,
        MUX_S_FAILURE = 0x80000003,
        MUX_S_EXIT_MESSAGE = 0x80000004,
        MUX_S_ALIVE = 0x80000005,
        MUX_S_SESSION_OPENED = 0x80000006,
        MUX_S_REMOTE_PORT = 0x80000007,
        MUX_S_TTY_ALLOC_FAIL = 0x80000008,
};

/* One message from the master. */
struct mux_reply {
        uint32_t type;                  /* enum mux_msg */
        uint32_t request_id;            /* all but HELLO, EXIT_MESSAGE, TTY_ALLOC_FAIL */
        uint32_t version;               /* HELLO */
        uint32_t value;                 /* ALIVE: the master's pid; REMOTE_PORT: the port; EXIT_MESSAGE: the exit value */
        uint32_t session_id;            /* SESSION_OPENED, EXIT_MESSAGE, TTY_ALLOC_FAIL */
        char reason[MUX_REASON_MAX];    /* FAILURE, PERMISSION_DENIED; control characters escaped */
};

/* Append a request to b. A forward is checked first (mux_forward_fields): a malformed
 * one would make the master fatal(); -EINVAL then, and nothing appended. */
void mux_put_hello(struct buf *b);
int mux_put_open_forward(struct buf *b, uint32_t request_id, const struct forward *f);
int mux_put_close_forward(struct buf *b, uint32_t request_id, const struct forward *f);
void mux_put_alive_check(struct buf *b, uint32_t request_id);
void mux_put_stop_listening(struct buf *b, uint32_t request_id);
/* A passenger session (no tty, no X11, no agent, no escape character) running command, or
 * the subsystem of that name; its stdin, stdout and stderr are sent after it, each with
 * SCM_RIGHTS (mux_send_fd). */
void mux_put_new_session(struct buf *b, uint32_t request_id, const char *command, bool subsystem);
/* One descriptor over the control socket, as ssh's mm_send_fd does (one byte with it). 0
 * or -errno (-EAGAIN: the socket takes nothing now). */
int mux_send_fd(int sock, int fd);

/* The next message at the start of data: 0 and *ret_used = 0 if it is not all there yet,
 * 1 with *ret_used its length and *ret filled, or -EBADMSG (too long, an unknown type,
 * a field that does not fit, a hello of another version). */
int mux_parse_reply(const uint8_t *data, size_t len, size_t *ret_used, struct mux_reply *ret);

const char *mux_msg_name(uint32_t type);
