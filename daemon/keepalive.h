/* SPDX-License-Identifier: MIT */
#pragma once

/* keepalive: one session held open through an ssh master, so that the server counts the
 * connection in use. sshd's UnusedConnectionTimeout (9.2 and later) closes a connection
 * with no open channel, and counts neither forward listeners nor a channel not yet
 * running anything (channels.c channel_still_open): a session running a subsystem counts.
 * This opens one over a control connection of its own (OpenSSH's mux protocol,
 * MUX_C_NEW_SESSION, PROTOCOL.mux) running a subsystem (sftp: present on almost every
 * OpenSSH server, and silent until asked), its stdin, stdout and stderr one end of a
 * socket pair that tunneld holds and never writes to: it waits for ever. Closing the
 * control connection ends it (the master closes the session with it).
 *
 * The master blocks reading the descriptors once it has read the request: they are sent
 * with the request, in one go, on a connection with nothing else in flight. */

#include <ev.h>
#include <stdbool.h>

struct keepalive;

struct keepalive_ops {
        /* the server runs the session */
        void (*opened)(void *userdata);
        /* it ended, or never opened (opened false): why, and the exit status the server
         * sent (-1: none). The last call: the owner may free the keepalive from it. */
        void (*ended)(bool opened, int exit_status, const char *why, void *userdata);
};

/* Connect to the master's control socket at control_path and ask for subsystem (as a
 * subsystem) there. 0 or -errno (nothing is called then). */
int keepalive_new(struct ev_loop *loop, const char *control_path, const char *subsystem,
                  const struct keepalive_ops *ops, void *userdata, struct keepalive **ret);
/* End it (the session closes with the control connection). NULL-safe. */
struct keepalive *keepalive_free(struct keepalive *k);
bool keepalive_is_open(const struct keepalive *k);
