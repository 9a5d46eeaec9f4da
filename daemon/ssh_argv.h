/* SPDX-License-Identifier: MIT */
#pragma once

#include "config.h"

/* The ssh command line of one tunnel: a pure function of its spec, never run through a shell.
 * ssh is the program (argv[0]); jump_config, if not NULL, is the file of jump_config.h,
 * given to ssh as -F in place of the tunnel's ssh_config_file; known_hosts, if not NULL,
 * the file of known_hosts.h, which a tunnel with host_keys checks the server's key
 * against (NULL: those options are left out, as for ssh -G). 0 or -ENOMEM. */
int ssh_argv_build(const struct tunnel_spec *spec, const char *ssh, const char *jump_config, const char *known_hosts,
                   char ***ret);
/* ssh binds its control socket under a name 17 bytes longer, which must fit sun_path:
 * a ControlPath longer than this makes the master exit after it authenticated. */
#define SSH_CONTROL_PATH_MAX 90
/* A multiplexed tunnel's control socket, without the digit of its generation (s0 … s9):
 * RUNTIME/NAME.mux/s, or RUNTIME/#HASH.mux/s when that would not fit (a name holds no
 * '#', a carrier's starts with '~'). 0 or -ENOMEM. */
int ssh_control_base(const char *runtime_dir, const char *name, char **ret);
/* "ControlPath=PATH" as ssh reads it (ssh expands %-tokens there: a '%' is written "%%"). */
int ssh_control_path_option(const char *path, char **ret);
/* The same for multiplex = true: ssh as the mux master of control_path, with no forward of
 * its own (tunneld opens every one through the control socket) and LogLevel VERBOSE. */
int ssh_argv_build_master(const struct tunnel_spec *spec, const char *ssh, const char *jump_config,
                          const char *known_hosts, const char *control_path, char ***ret);
