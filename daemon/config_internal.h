/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdarg.h>

#include <stdint.h>

/* What the files of the configuration module share (config.c loads, config_parse.c
 * parses, config_check.c checks across tunnels, config_ssh.c asks ssh, spec.c holds the
 * data's helpers). Not for other modules. */

#include <libconfig.h>
#include <stdio.h>

#include "config.h"
#include "util.h"

/* Names and where they were defined ("name\tFILE:LINE"), found by hash: a duplicate name
 * is found among 10,000 tunnels without comparing each with each. */
struct config_names {
        char **slots;                   /* open addressing; NULL: free */
        size_t n, cap;
};
/* The entry of name, or NULL. */
const char *config_names_find(const struct config_names *t, const char *name);
/* Takes entry ("name\tFILE:LINE", malloc'ed; its name not in t yet). 0 or -ENOMEM. */
int config_names_add(struct config_names *t, char *entry);
void config_names_free(struct config_names *t);

struct parser {
        uint64_t digest;                /* of every file read so far (config.h: source_digest) */
        const char *path;
        const struct config_load_options *opts;
        struct config_errors *errs;
        bool defaults_has_host;
        int oom;
        struct config_names seen;       /* every tunnel read so far, valid or not */
        char **warnings;                /* config.h's */
        char **warned;                  /* the settings warned about: one warning each */
        double load_timeout;            /* seconds (config.h: CONFIG_LOAD_TIMEOUT) */
        double deadline;                /* now_mono() by which ssh -G must have answered */
};

/* The names of the enumerations, indexed by value. */
extern const char *const restart_names[_RESTART_MAX];
extern const char *const lifetime_action_names[_LIFETIME_MAX];
extern const char *const log_target_names[_LOG_TARGET_MAX];
extern const char *const log_level_names[LOG_DEBUG + 1];
extern const char *const ready_names[_READY_MAX];

/* Every error line goes through here: formatted, its control characters escaped. 0 or
 * -ENOMEM. */
int config_push_error(struct config_errors *errs, const char *fmt, ...) _printf_(2, 3);
/* "FILE:LINE: NAME.KEY: what", at the tunnel's definition. */
void config_diag_tunnel(struct parser *p, const struct tunnel_spec *t, const char *key, const char *fmt, ...) _printf_(4, 5);
/* One error, "FILE:LINE: TUNNEL.KEY: what" (tunnel NULL: "FILE:LINE: KEY: what"; line < 0:
 * "FILE: KEY (by default): what"); out of memory is p->oom. */
void config_vdiag(struct parser *p, const char *file, int line, const char *tunnel, const char *key,
                  const char *fmt, va_list ap) _printf_(6, 0);

/* config_parse.c */
void config_spec_defaults(struct tunnel_spec *t);
/* One member s of a tunnel's group, key, through the tunnel's table into spec; false if
 * no tunnel setting has that name (nothing said). */
bool config_parse_tunnel_setting(struct parser *p, const config_setting_t *s, const char *key, const char *label,
                                 struct tunnel_spec *spec);

/* config_alts.c: alternatives = ( { host = …; }, … ) into ret (replaced only if all of it
 * is valid); each alternative's effective spec through the pins (and files) checks. */
#define CONFIG_ALTS_MAX 8
void config_alts_parse(struct parser *p, const config_setting_t *s, const char *label, struct tunnel_alts *ret);
void config_alts_check(struct parser *p, const struct config *c, bool files);
void config_parse_root(struct parser *p, const config_setting_t *root, struct config *c, struct tunnel_spec *tmpl);
void config_parse_dropin(struct parser *p, const config_setting_t *root, struct config *c, const struct tunnel_spec *tmpl);

/* config_check.c */
void config_check_after(struct parser *p, const struct config *c);
void config_check_ports(struct parser *p, const struct config *c);
/* config_pins.c: host_keys and jump_host_keys against ssh_options and jump_host. */
void config_pins_check(struct parser *p, const struct config *c);
/* config_ssh.c: ssh -G once per distinct ssh configuration (config.h: config_view), each
 * tunnel with an ssh_config_file given its view; c->ssh_views keeps them. */
void config_ssh_ask(struct parser *p, struct config *c);
/* The same from views found by another load. */
void config_ssh_take_views(struct parser *p, struct config *c, const struct config_views *views);
void config_check_files(struct parser *p, const struct config *c);
/* share_connection: no tunnel waits (after) for one it shares its connection with. */
void config_check_share(struct parser *p, const struct config *c);
/* A configuration file turns into command lines: writable by root and tunneld's user
 * only, and so every directory above it (safe_path.h; unless opts->allow_insecure). */
int config_check_file_permissions(FILE *f, const char *path, const struct config_load_options *opts,
                           struct config_errors *errs);
/* The ssh program (found in PATH now: c->ssh becomes its path), the control socket's and
 * metrics_file's directories, by safe_path.h's rule, at their lines in root. */
void config_check_trusted_paths(struct parser *p, struct config *c, const config_setting_t *root);
/* include_dir itself (0, or -EPERM with the error pushed). */
int config_check_include_dir(struct parser *p, const char *dir, const config_setting_t *root);
