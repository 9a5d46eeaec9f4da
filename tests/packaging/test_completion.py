#!/usr/bin/env python3
"""The bash completion of tunnelctl, run for real: bash sources completions/tunnelctl.bash
(without the bash-completion package, the path the script takes on a bare system), fills
COMP_WORDS as readline would, calls _tunnelctl and prints COMPREPLY. Commands, options and
their values, and the names of the tunnels a running tunneld (fake ssh) has, asked over
its socket given with -s or found with --pid."""

import os
import subprocess
import unittest

import tunneltest
from tunneltest import FakeSSH, Tunneld, wait_until

SCRIPT = os.path.join(tunneltest.SOURCE_ROOT, "completions", "tunnelctl.bash")
BIN_DIR = os.path.dirname(tunneltest.TUNNELD)     # tunnelctl is built next to tunneld


def complete(*words):
    """COMPREPLY for the command line `words` with the cursor at the end of the last word."""
    script = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); '
              'COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; _tunnelctl; printf "%s\\n" "${COMPREPLY[@]}"')
    env = {**os.environ, "PATH": f"{BIN_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "complete", SCRIPT, *words],
                       capture_output=True, text=True, timeout=30, env=env)
    if r.returncode != 0:
        raise AssertionError(f"bash: {r.returncode}: {r.stderr}")
    return sorted(w for w in r.stdout.splitlines() if w)


class CompletionTest(unittest.TestCase):
    def test_commands_and_options(self):
        self.assertEqual(complete("tunnelctl", ""),
                         ["check", "events", "metrics", "reload", "restart", "start", "status", "stop", "wait"])
        self.assertEqual(complete("tunnelctl", "st"), ["start", "status", "stop"])
        self.assertEqual(complete("tunnelctl", "--p"), ["--pid"])
        self.assertEqual(complete("tunnelctl", "--color", "a"), ["always", "auto"])
        self.assertIn("--all", complete("tunnelctl", "stop", "--"))
        self.assertNotIn("--all", complete("tunnelctl", "status", "--"))
        self.assertEqual(complete("tunnelctl", "reload", ""), [])

    def test_tunnel_names_from_the_running_tunneld(self):
        fake = tunneltest.use(self, FakeSSH())
        for name in ("db", "web", "dash"):
            fake.plan(name, [(0, 60, True)])
        d = tunneltest.use(self, Tunneld([{"name": n, "host": n} for n in ("db", "web", "dash")], fake=fake))
        sock = d.globals["control_socket"]
        wait_until(lambda: tunneltest.loaded(sock), 30, what="tunneld's first load")     # names to complete
        self.assertEqual(complete("tunnelctl", "-s", sock, "restart", ""), ["dash", "db", "web"])
        self.assertEqual(complete("tunnelctl", "-s", sock, "status", "d"), ["dash", "db"])
        self.assertEqual(complete("tunnelctl", "-s", sock, "wait", "--timeout", "5", "w"), ["web"])
        self.assertEqual(complete("tunnelctl", "--pid", str(d.pid), "stop", "w"), ["web"])
        # no tunneld on the socket: no names, and no error
        self.assertEqual(complete("tunnelctl", "-s", sock + ".none", "restart", ""), [])


if __name__ == "__main__":
    tunneltest.main()
