/* SPDX-License-Identifier: MIT */
#pragma once

/* known_hosts: the known_hosts file tunneld writes for a tunnel with host_keys or
 * jump_host_keys (pure: spec → text), and how ssh is told to use it.
 *
 * With host_keys, the destination's ssh gets -o UserKnownHostsFile=THAT_FILE,
 * GlobalKnownHostsFile=/dev/null (only the pinned keys count: no key, @cert-authority or
 * @revoked line of /etc/ssh/ssh_known_hosts widens or narrows the pin),
 * StrictHostKeyChecking=yes, UpdateHostKeys=no (ssh learns no other key) and
 * HostKeyAlias=NAME, NAME being the tunnel's host ("[host]:port" unless port is 22 or
 * unset) or the HostKeyAlias the tunnel's ssh_options give: the file's line is found
 * under that name whatever HostName or Port an ssh config file maps the host to. With
 * jump_host_keys, the hops get the same through jump_config.h's Host block; each hop's
 * line is under "host" or "[host]:port" as its entry names it (ssh has no alias per hop).
 * No home directory, writable or not, and no first login are needed. */

#include <string.h>

#include "config.h"

/* host_keys holds at least one key ("()" pins nothing); jump_host_keys too, and there is
 * a jump host (jump_host_keys in defaults may name jump hosts some tunnels do not use). */
static inline bool known_hosts_pins_destination(const struct tunnel_spec *s) { return s->host_keys && s->host_keys[0]; }
static inline bool known_hosts_pins_jump_hosts(const struct tunnel_spec *s)
{
        return s->jump_host_keys && s->jump_host_keys[0] && s->jump_host && strcmp(s->jump_host, "none") != 0;
}

/* The file's text, or NULL in *ret when the tunnel has neither setting. 0 or -ENOMEM. */
int known_hosts_render(const struct tunnel_spec *s, char **ret);

/* "host" for port 22 (or 0: ssh's default), else "[host]:port": ssh's own form. */
void known_hosts_pattern(const char *host, int port, char *buf, size_t size);
/* The name the destination's key is filed under (see above). */
void known_hosts_destination_name(const struct tunnel_spec *s, char *buf, size_t size);
/* The value of a HostKeyAlias of ssh_options, or NULL. */
const char *known_hosts_user_alias(const struct tunnel_spec *s);

/* A path as one ssh_config argument: in double quotes with '\' and '"' escaped, '%'
 * doubled (ssh expands %-tokens in UserKnownHostsFile). 0 or -ENOMEM. */
int known_hosts_quote_path(const char *path, char **ret);
