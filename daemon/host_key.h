/* SPDX-License-Identifier: MIT */
#pragma once

/* host_key: one pinned host key as configured, checked down to its blob (pure).
 *
 * host_keys entries are "KEYTYPE BASE64 [COMMENT]" (a line of the server's
 * /etc/ssh/ssh_host_*_key.pub): the tunnel's own host needs no name. jump_host_keys
 * entries name their jump host: "HOST[:PORT] KEYTYPE BASE64 [COMMENT]", HOST[:PORT] as in
 * jump_host ("[v6]:port" too). The base64 must decode to an SSH public key blob whose
 * embedded type is KEYTYPE and whose fields fit that type. */

#include <stdbool.h>
#include <stddef.h>

#define HOST_KEY_MAX_LEN 8192           /* an entry, comment included (an RSA-16384 key fits) */

struct host_key {
        char host[256];                 /* jump_host_keys: the host it names; "" for host_keys */
        int port;                       /* jump_host_keys: the port it names; 0: none given */
        char type[48];
        const char *base64;             /* into the parsed string, not NUL-terminated */
        size_t base64_len;
};

/* NULL and *ret filled, or why the entry is wrong (a static string, or one in a static
 * buffer overwritten by the next call). with_host: the jump_host_keys form. */
const char *host_key_parse(const char *s, bool with_host, struct host_key *ret);

/* For the settings table: host_keys and jump_host_keys elements. */
const char *host_key_validate(const char *s);
const char *host_key_validate_jump(const char *s);

bool host_key_type_known(const char *type);
/* "ssh-ed25519, ecdsa-sha2-nistp256, …": for messages. */
const char *host_key_types_list(void);
