/* SPDX-License-Identifier: MIT */
#pragma once

/* ctl_commands: the one list of control commands. tunneld serves the requests of this
 * table (ctl_protocol.c), tunnelctl parses, checks and explains its command line with it
 * (tunnelctl.c), and tests/test-ctl-commands.c holds the shell completions (completions/)
 * to it. A command is added here, nowhere else. */

#include <stdbool.h>

/* What a command takes after its name on tunnelctl's command line. */
enum ctl_args {
        CTL_ARGS_NONE,                  /* reload, check, metrics */
        CTL_ARGS_NAMES,                 /* status, events: names, or none for every tunnel */
        CTL_ARGS_NAMES_OR_ALL,          /* start, stop, restart: names, or --all */
        CTL_ARGS_NAMES_NEEDED,          /* wait: at least one name */
};

enum ctl_command_id {
        CTL_CMD_STATUS,
        CTL_CMD_START,
        CTL_CMD_STOP,
        CTL_CMD_RESTART,
        CTL_CMD_WAIT,
        CTL_CMD_EVENTS,
        CTL_CMD_RELOAD,
        CTL_CMD_CHECK,
        CTL_CMD_METRICS,
        _CTL_CMD_MAX,
};

struct ctl_command {
        const char *name;
        enum ctl_args args;
        bool changes;                   /* needs root, tunneld's user or control_group */
        bool request;                   /* a request tunneld answers (wait is tunnelctl's own, on events) */
        const char *synopsis;           /* what follows the name in tunnelctl's synopsis */
        const char *summary;            /* one line: the completions' description */
        const char *help;               /* tunnelctl --help's paragraph, lines indented by 8 */
};

/* In the order tunnelctl lists them, indexed by enum ctl_command_id. */
extern const struct ctl_command ctl_commands[_CTL_CMD_MAX];

/* The command of that name, or NULL. */
const struct ctl_command *ctl_command_find(const char *name);
static inline enum ctl_command_id ctl_command_id(const struct ctl_command *c) { return (enum ctl_command_id)(c - ctl_commands); }
