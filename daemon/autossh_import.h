/* SPDX-License-Identifier: MIT */
#pragma once

/* autossh_import: autossh command lines and systemd units running autossh → a tunneld
 * "tunnels = ( … );" block (tunneld --import-autossh). Pure: text in, text out. Every
 * value passes the validator tunneld.conf uses for its setting, so the block passes
 * tunneld -t; anything that would run a command or is shell syntax refuses its entry
 * with FILE:LINE and the line; what tunneld does not need or cannot map becomes a "#"
 * note in the tunnel saying what to do instead. */

#include <stddef.h>
#include <stdio.h>

struct autossh_import;

int autossh_import_new(struct autossh_import **ret);
struct autossh_import *autossh_import_free(struct autossh_import *imp);

/* One file's text. file names it in messages; a name ending in ".service", or a text with
 * a [Service] section, is a unit (autossh-db.service and autossh@db.service name the
 * tunnel "db"), anything else is command lines, one per line. A refused entry adds
 * errors and is left out. 0 or -ENOMEM. */
int autossh_import_text(struct autossh_import *imp, const char *file, const char *text);

/* The errors so far: "FILE:LINE: why" lines, each followed by "FILE:LINE:   the line". */
char *const *autossh_import_errors(const struct autossh_import *imp);

/* The tunnels block: unique names, a forward that would listen where an earlier one
 * does disables its tunnel (with a note). 0 or -ENOMEM. */
int autossh_import_render(struct autossh_import *imp, char **ret);

/* tunneld --import-autossh FILE…: each file ("-": standard input) to out, errors to err.
 * The exit status: 0, or 1 if a file could not be read or an entry was refused. */
int autossh_import_main(char *const *files, FILE *out, FILE *err);
