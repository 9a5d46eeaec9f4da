/* SPDX-License-Identifier: MIT */
#pragma once

#include "config.h"

/* The ssh command line of one tunnel: a pure function of its spec, never run through a shell.
 * ssh is the program (argv[0]). 0 or -ENOMEM. */
int ssh_argv_build(const struct tunnel_spec *spec, const char *ssh, char ***ret);
