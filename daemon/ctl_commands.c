/* SPDX-License-Identifier: MIT */
/* ctl_commands: the one list of control commands, read by tunneld and tunnelctl. */
#include "ctl_commands.h"

#include <string.h>

#include "util.h"

const struct ctl_command ctl_commands[_CTL_CMD_MAX] = {
        [CTL_CMD_STATUS] = {
                "status", CTL_ARGS_NAMES, false, true, "[-l] [NAME...]",
                "show the tunnels (all, or the named ones)",
                "        A table of the named tunnels (default: all): name, state, ssh pid,\n"
                "        uptime of the current ssh, starts (in brackets: those after an exit\n"
                "        tunneld did not ask for), last exit (status or signal, how long ssh\n"
                "        ran, failure class), next retry, forwards (\"R port N\": the port the\n"
                "        server chose for a remote forward of port 0; the first two, and how\n"
                "        many more: -l lists each forward, and why a tunnel is not up, under\n"
                "        its row). States: queued (waiting for a start slot or for the tunnels\n"
                "        it is after), starting (ssh runs, not yet authenticated with every\n"
                "        forward in place), up, degraded (ssh runs without a forward it could\n"
                "        not set up), backoff (waiting to retry), failed (not retrying),\n"
                "        stopping, stopped.\n",
        },
        [CTL_CMD_START] = {
                "start", CTL_ARGS_NAMES_OR_ALL, true, true, "NAME...|--all",
                "start tunnels now",
                "        Start now, resetting backoff and max_starts counters.\n",
        },
        [CTL_CMD_STOP] = {
                "stop", CTL_ARGS_NAMES_OR_ALL, true, true, "NAME...|--all",
                "stop tunnels",
                "        Stop (SIGTERM, SIGKILL after stop_timeout). A stopped tunnel stays\n"
                "        stopped, across reloads too, until started or until tunneld restarts;\n"
                "        it does not count as failed.\n",
        },
        [CTL_CMD_RESTART] = {
                "restart", CTL_ARGS_NAMES_OR_ALL, true, true, "NAME...|--all",
                "stop, then start tunnels",
                "        Stop if running, then start; prints each tunnel's new ssh pid (or\n"
                "        where it went instead) once tunneld has started it.\n",
        },
        [CTL_CMD_WAIT] = {
                "wait", CTL_ARGS_NAMES_NEEDED, false, false, "[--timeout S] NAME...",
                "wait until tunnels are up",
                "        Return as soon as every named tunnel is up (exit 0), or at the\n"
                "        timeout (default 60 s, 0: none) with which one is not and why (exit\n"
                "        1): for scripts and for ExecStartPre= of units that need a tunnel.\n",
        },
        [CTL_CMD_EVENTS] = {
                "events", CTL_ARGS_NAMES, false, true, "[--json] [NAME...]",
                "follow state changes",
                "        Follow state changes as they happen (time, name, old -> new state,\n"
                "        failure class, ssh pid); with --json, one JSON object per line.\n"
                "        A follower that falls behind is dropped (exit 5, saying so).\n",
        },
        [CTL_CMD_RELOAD] = {
                "reload", CTL_ARGS_NONE, true, true, "",
                "re-read the configuration",
                "        Re-read the configuration, like SIGHUP, and wait until it is applied.\n"
                "        Unchanged tunnels keep running untouched. If the file has errors they\n"
                "        are printed and nothing changes.\n",
        },
        [CTL_CMD_CHECK] = {
                "check", CTL_ARGS_NONE, false, true, "",
                "validate the configuration tunneld runs with",
                "        Validate the configuration file tunneld was started with, loaded as\n"
                "        tunneld loads it: what a reload would accept.\n",
        },
        [CTL_CMD_METRICS] = {
                "metrics", CTL_ARGS_NONE, false, true, "",
                "print the Prometheus metrics",
                "        Every tunnel's state and counters in the Prometheus text format\n"
                "        (tunneld_tunnel_up, _state, _starts_total, _failures_total{class},\n"
                "        _uptime_seconds, ...). The metrics_file setting keeps a copy on disk for\n"
                "        node_exporter's textfile collector.\n",
        },
};

const struct ctl_command *ctl_command_find(const char *name)
{
        for (size_t i = 0; name && i < ELEMENTSOF(ctl_commands); i++)
                if (strcmp(ctl_commands[i].name, name) == 0)
                        return &ctl_commands[i];
        return NULL;
}
