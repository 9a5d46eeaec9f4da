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
/* "ControlPath=PATH" as ssh reads it (ssh expands %-tokens there: a '%' is written "%%"). */
int ssh_control_path_option(const char *path, char **ret);
/* The same for multiplex = true: ssh as the mux master of control_path, with no forward of
 * its own (tunneld opens every one through the control socket) and LogLevel VERBOSE. */
int ssh_argv_build_master(const struct tunnel_spec *spec, const char *ssh, const char *jump_config,
                          const char *known_hosts, const char *control_path, char ***ret);
