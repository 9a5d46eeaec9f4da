/* SPDX-License-Identifier: MIT */
#pragma once

#include "config.h"

/* The ssh command line of one tunnel: a pure function of its spec, never run through a shell.
 * ssh is the program (argv[0]); jump_config, if not NULL, is the file of jump_config.h,
 * given to ssh as -F in place of the tunnel's ssh_config_file. 0 or -ENOMEM. */
int ssh_argv_build(const struct tunnel_spec *spec, const char *ssh, const char *jump_config, char ***ret);
