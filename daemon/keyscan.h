/* SPDX-License-Identifier: MIT */
#pragma once

/* keyscan: tunneld --keyscan NAME. The host keys of a tunnel's jump hosts and of its
 * destination, fetched by ssh itself with the tunnel's own settings (ssh_config_file,
 * the jump hosts' file of jump_config.h), printed with their SHA256 fingerprints and as
 * host_keys / jump_host_keys lines to paste once they are compared with the servers' own.
 *
 * Nothing is trusted by itself, and the scanned host is never logged into: ssh knows no
 * key for it (StrictHostKeyChecking=yes, no known_hosts) and so disconnects at its host
 * key, before any authentication request (even "none"); the key reaches tunneld through
 * KnownHostsCommand, which runs tunneld --keyscan-note (keyscan_note_main). A host behind
 * a jump host is reached only through jump hosts whose keys ssh checks as the tunnel would
 * (jump_host_keys, or the known_hosts ssh reads), and those it does log into, with the
 * tunnel's own credentials: an unknown jump host stops the scan there, to be pinned first.
 * Every child is run without a shell and bounded in time. */

#include <stdio.h>

#include "config.h"

/* The exit status: 0 if every host gave a key, 1 if not (said on stderr). */
int keyscan_run(const struct config *c, const char *name, FILE *out);

/* The option ssh's KnownHostsCommand runs tunneld with: tunneld --keyscan-note FILE TYPE
 * KEY appends "TYPE KEY" to FILE (an existing file, not through a link), prints nothing
 * and returns 0. Not for people. */
#define KEYSCAN_NOTE "--keyscan-note"
int keyscan_note_main(const char *file, const char *type, const char *key);
