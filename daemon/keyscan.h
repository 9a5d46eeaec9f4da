/* SPDX-License-Identifier: MIT */
#pragma once

/* keyscan: tunneld --keyscan NAME. The host keys of a tunnel's jump hosts and of its
 * destination, fetched by ssh itself with the tunnel's own settings (ssh_config_file,
 * the jump hosts' file of jump_config.h), printed with their SHA256 fingerprints and as
 * host_keys / jump_host_keys lines to paste once they are compared with the servers' own.
 *
 * Nothing is trusted by itself: each key is taken from a connection that stops before
 * authentication (PreferredAuthentications=none, StrictHostKeyChecking=accept-new into a
 * throw-away known_hosts file), and a host behind a jump host is reached only through a
 * jump host whose key ssh checks as the tunnel would (jump_host_keys, or the known_hosts
 * ssh reads): an unknown jump host stops the scan there, to be pinned first. Every child
 * is run without a shell and bounded in time. */

#include <stdio.h>

#include "config.h"

/* The exit status: 0 if every host gave a key, 1 if not (said on stderr). */
int keyscan_run(const struct config *c, const char *name, FILE *out);
