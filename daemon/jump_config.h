/* SPDX-License-Identifier: MIT */
#pragma once

/* jump_config: the ssh_config file tunneld writes for a tunnel with a jump host.
 *
 * ssh runs each ProxyJump hop as a second ssh that gets -F (if given) but none of the
 * command line's -i or -o options, so a hop would use the tunneld user's default key and
 * known_hosts, and fail. tunneld gives ssh -F THIS_FILE instead of the tunnel's own
 * ssh_config_file: a Host block for the jump hosts carries the tunnel's identity_file,
 * ssh_options, BatchMode, ConnectTimeout and ServerAlive settings, and the tunnel's
 * ssh_config_file (or, without one, ~/.ssh/config and /etc/ssh/ssh_config, which ssh reads
 * by default) is included after it. Pure: text in, text out. */

#include "config.h"

/* The file's text, or NULL in *ret when the tunnel has no jump host. With jump_host_keys,
 * known_hosts is the tunnel's known_hosts file (known_hosts.h): the hops check their keys
 * there, strictly, and nowhere else. 0 or -ENOMEM, -EINVAL (a value that cannot be written
 * into an ssh_config file). */
int jump_config_render(const struct tunnel_spec *s, const char *known_hosts, char **ret);

/* ssh_options that name the destination rather than the connection: not given to hops. */
bool jump_config_option_is_destination(const char *option);

/* The hops of jump_host ("a,b,c": 3); 0 for NULL or "none". */
unsigned jump_hop_count(const char *jump_host);
