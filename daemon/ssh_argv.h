/* SPDX-License-Identifier: MIT */
#pragma once

#include "config.h"

/* The ssh command line of one connection: a pure function of its spec, never run through a
 * shell. ssh runs as a multiplexing master of control_path (tunneld opens every forward
 * over it, so none is on the command line) at LogLevel VERBOSE. ssh is the program
 * (argv[0]); jump_config, if not NULL, is the file of jump_config.h, given to ssh as -F in
 * place of the tunnel's ssh_config_file; known_hosts, if not NULL, the file of
 * known_hosts.h, which a tunnel with host_keys checks the server's key against (NULL: those
 * options are left out, as for ssh -G). 0 or -ENOMEM. */
int ssh_argv_build(const struct tunnel_spec *spec, const char *ssh, const char *jump_config, const char *known_hosts,
                   const char *control_path, char ***ret);
/* What `ssh -G` is asked about a tunnel: its options and forwards as ssh would read them
 * (ssh -G prints the forwards of an ssh_config_file with them), none of the master's. */
int ssh_argv_build_view(const struct tunnel_spec *spec, const char *ssh, char ***ret);
/* ssh binds its control socket under a name 17 bytes longer, which must fit sun_path:
 * a ControlPath longer than this makes the master exit after it authenticated. */
#define SSH_CONTROL_PATH_MAX 90
/* A connection's control socket, without the digit of its generation (0 … 9):
 * DIR/NAME.mux, or DIR/#HASH.mux when that would not fit (a name holds no '#', a shared
 * connection's starts with '~'). 0 or -ENOMEM. */
int ssh_control_base(const char *runtime_dir, const char *name, char **ret);
/* "ControlPath=PATH" as ssh reads it (ssh expands %-tokens there: a '%' is written "%%"). */
int ssh_control_path_option(const char *path, char **ret);
