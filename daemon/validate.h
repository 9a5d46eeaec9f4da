/* SPDX-License-Identifier: MIT */
#pragma once

/* validate: one configuration value at a time. Pure functions: NULL if the value is fine,
 * else a static reason ("must not begin with '-'"), which config.c prefixes with
 * FILE:LINE and the setting. Everything that reaches ssh's argv passes one of these. */

#include <stdbool.h>
#include <stddef.h>

#define NAME_MAX_LEN 64                 /* tunnel names */
#define VALUE_MAX_LEN 1024              /* any string setting */

/* No whitespace, no control bytes, not empty, not too long: one argv word. */
const char *validate_argv_word(const char *s);
bool validate_host_char(char c);              /* letters, digits, "._-:%" */
bool validate_user_chars(const char *s);      /* letters, digits, "._-+@" and non-ASCII */
/* A decimal port from min to 65535, no sign or spaces; *ret may be NULL. */
bool validate_parse_port(const char *s, int min, int *ret);

const char *validate_tunnel_name(const char *s);
const char *validate_host(const char *s);
const char *validate_user(const char *s);
const char *validate_jump_host(const char *s);
const char *validate_ssh_option(const char *s);
const char *validate_path(const char *s);
const char *validate_socket_path(const char *s);
const char *validate_probe_address(const char *s);
const char *validate_probe_data(const char *s);
const char *validate_absolute_path(const char *s);
const char *validate_include_dir(const char *s);
const char *validate_group_name(const char *s);
const char *validate_program(const char *s);

/* One hop of jump_host ("[user@]host[:port]", "ssh://[user@]host[:port]", "[v6]:port",
 * len bytes of it) → its host (brackets off) and port (0: none given, -1: not a valid
 * port). false if it does not fit in size or has a bracket unclosed. */
bool validate_jump_hop_split(const char *hop, size_t len, char *host, size_t size, int *ret_port);
