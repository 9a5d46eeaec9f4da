/* SPDX-License-Identifier: MIT */
#pragma once

/* What autossh_import.c (files, units, names, output) and autossh_map.c (one autossh
 * command line and its AUTOSSH_ variables → tunneld settings) share. */

#include <stdbool.h>

#include "autossh_words.h"

/* One imported tunnel, every value already validated as tunneld.conf(5) validates it.
 * Numbers are -1 when the source did not set them (tunneld's default applies). */
struct imported {
        char *name;
        char *where;                    /* "FILE:LINE" of its command line */
        char *command;                  /* that line, escaped for a comment */
        char *description;              /* a unit's Description=, escaped */
        char *host, *user, *identity_file, *jump_host, *ssh_config_file;
        int port;
        char **local_forwards, **remote_forwards, **dynamic_forwards, **ssh_options;
        int server_alive_interval, server_alive_count_max, connect_timeout;
        long gatetime, max_starts, max_lifetime;
        bool disabled;
        char **notes;                   /* one comment each: what was not mapped, and what to do */
};

void autossh_imported_init(struct imported *t);
void autossh_imported_done(struct imported *t);

/* A note (a comment in the output); its control characters are escaped there. 0 or -ENOMEM. */
int autossh_imported_note(struct imported *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* autossh_map.c. Each returns 0, -EINVAL with the reason in why (the entry is refused), or
 * -ENOMEM. */
#define IMPORT_WHY_MAX 300
/* One NAME=VALUE of the environment autossh ran with (Environment=, or VAR=x before the
 * command). */
int autossh_import_map_env(struct imported *t, const char *name, const char *value, char why[IMPORT_WHY_MAX]);
/* autossh's arguments, after the program name. */
int autossh_import_map_argv(struct imported *t, char *const *argv, char why[IMPORT_WHY_MAX]);

struct autossh_import {
        struct imported *tunnels;
        size_t n_tunnels;
        char **errors;                  /* NULL-terminated */
};

/* autossh_import.c, for autossh_unit.c */
/* Refuse an entry: "FILE:LINE: why" and "FILE:LINE:   text" into imp's errors. */
int autossh_import_refuse(struct autossh_import *imp, const char *file, int line, const char *why, const char *text);
/* Map argv (argv[0]: the program, which must be autossh) with env (NAME=VALUE), and keep
 * t as a tunnel (t is reset), or refuse the entry. 0 or -ENOMEM. */
int autossh_import_add_command(struct autossh_import *imp, struct imported *t, const char *file, int line, const char *text,
                       char *const *env, char *const *argv, char why[IMPORT_WHY_MAX]);
bool autossh_import_is_var_name(const char *s, size_t n);
bool autossh_import_is_assignment(const char *w);
char *autossh_import_trim(char *s);

/* autossh_unit.c: one unit file. 0 or -ENOMEM. */
int autossh_import_unit(struct autossh_import *imp, const char *file, const char *text);
