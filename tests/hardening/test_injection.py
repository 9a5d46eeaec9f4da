"""Hostile values that would reach ssh's argv: each one is rejected with FILE:LINE and the
setting, tunneld refuses to start, no ssh is ever spawned, and /tmp/pwned never appears."""
import os
import re
import shlex
import subprocess
import unittest

import tunneltest
from tunneltest import FakeSSH, TUNNELD, run_tunneld, use, write_config

PWNED = "/tmp/pwned"
PAYLOAD = f"-oProxyCommand=touch {PWNED}"

# (what, the tunnel's settings, the setting named in the error, text the error must hold:
# a string, or a tuple of strings that must all be there)
HOSTILE = [
    ("host option", {"host": PAYLOAD}, "host", "must not contain whitespace"),
    ("host option, no space", {"host": "-oProxyCommand=id"}, "host", "must not begin with '-'"),
    ("user option", {"user": "-oProxyCommand=id"}, "user", "must not begin with '-'"),
    ("jump_host option", {"jump_host": "-oProxyCommand=id"}, "jump_host", "must not begin with '-'"),
    ("jump_host second hop", {"jump_host": "bastion,-oProxyCommand=id"}, "jump_host", "must not begin with '-'"),
    ("host newline", {"host": "h\n-oProxyCommand=id"}, "host", "must not contain control characters"),
    ("user newline", {"user": "u\nx"}, "user", "must not contain control characters"),
    ("host space", {"host": "h -oProxyCommand=id"}, "host", "must not contain whitespace"),
    ("host tab", {"host": "h\t-p1"}, "host", "control characters"),
    ("host with user@", {"host": "root@h"}, "host", "must not contain '@'"),
    ("host URI", {"host": "ssh://h"}, "host", "may contain only"),
    ("over-long host", {"host": "h" * 300}, "host", "longer than 255"),
    ("over-long user", {"user": "u" * 5000}, "user", "too long"),
    ("forward extra fields", {"local_forwards": ["1:2:3:4:5"]}, "local_forwards", "must be [bind_address:]port"),
    ("forward many fields", {"local_forwards": ["1:2:3:4:5:6:7"]}, "local_forwards", "not a forward"),
    ("forward option", {"local_forwards": ["-oProxyCommand=id"]}, "local_forwards", "must not begin with '-'"),
    ("remote forward space", {"remote_forwards": ["8080:h:80 -oX"]}, "remote_forwards", "whitespace"),
    ("dynamic forward host", {"dynamic_forwards": ["h:1080:x"]}, "dynamic_forwards", "must be"),
    ("identity option", {"identity_file": "-oProxyCommand=id"}, "identity_file", "must not begin with '-'"),
    ("ssh_options newline", {"ssh_options": ["Compression=yes\n-oProxyCommand=id"]}, "ssh_options",
     "control characters"),
    ("ssh_options shared master", {"ssh_options": ["ControlMaster=auto"]}, "ssh_options", "is set by tunneld"),
    ("name with slash", {"name": "a/b"}, "name", "may contain only"),
    ("name dotdot", {"name": ".."}, "name", "must not be"),
]
# Shell metacharacters in a user name: ssh puts the user into commands it runs through the
# shell (%r in ProxyCommand, Match exec, LocalCommand), so a user, and the user part of a
# jump_host hop, may hold only [A-Za-z0-9._-], not beginning with '-'.
SHELL_USERS = ["u$(id)", "u`id`", "u;id", "u|id", "u&id", 'u"x', "u'x", "u\\x"]
HOSTILE += [(f"user {u!r}", {"user": u}, "user", ("user", "invalid character")) for u in SHELL_USERS]
HOSTILE += [(f"jump_host user {u!r}", {"jump_host": f"{u}@127.0.0.1:1"}, "jump_host", ("user", "invalid character"))
            for u in SHELL_USERS + [f"u$(touch${{IFS}}{PWNED})"]]
# with a space in it, the whitespace check is the one that catches it
HOSTILE += [("jump_host user with a command", {"jump_host": f"u$(touch {PWNED})@127.0.0.1:1"}, "jump_host",
             "must not contain whitespace")]
HOSTILE += [("jump_host second hop user", {"jump_host": "bastion,u;id@127.0.0.1:1"}, "jump_host",
             ("user", "invalid character"))]


class Injection(unittest.TestCase):
    def setUp(self):
        if os.path.exists(PWNED):
            os.unlink(PWNED)
        self.dir = tunneltest.temp_dir(self)
        self.fake = use(self, FakeSSH())
        self.fake.plan("h", [(0, 30, True)])
        # The fake ssh files its starts under the destination's name, which is the hostile
        # value itself in some rows (and may not even be a file name): the "ssh" tunneld runs
        # is this recorder, which notes every start, whatever its arguments, then execs it.
        self.started = os.path.join(self.dir, "ssh-started")
        self.ssh = os.path.join(self.dir, "ssh")
        with open(self.ssh, "w") as f:
            f.write(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >>{shlex.quote(self.started)}\n"
                    f"exec {shlex.quote(FakeSSH.path)} \"$@\"\n")
        os.chmod(self.ssh, 0o755)

    def assert_no_ssh_started(self, what):
        """Nothing ran the configured ssh, for any destination."""
        started = tunneltest._read_text(self.started)
        self.assertEqual(started, "", f"{what}: an ssh was started: {started!r}")
        self.assertEqual(self.fake.traces(), [], f"{what}: the fake ssh ran")
        self.assertEqual(self.fake.running(), [], f"{what}: a fake ssh runs")

    def check_rejected(self, what, settings, setting, needle):
        tunnel = {"name": "t", "host": "h"}
        tunnel.update(settings)
        conf = os.path.join(self.dir, "tunneld.conf")
        text = write_config(conf, {"ssh": self.ssh, "control_socket": os.path.join(self.dir, "ctl"),
                                   "watch_network": False}, {}, [tunnel])
        checked = run_tunneld("-t", "-c", conf)
        self.assertEqual(checked.returncode, 1, f"{what}: -t accepted it:\n{checked.stdout}")
        first_line = [l for l in checked.stderr.splitlines() if l.startswith(conf + ":")]
        self.assertTrue(first_line, f"{what}: no FILE:LINE error:\n{checked.stderr}")
        self.assertRegex(first_line[0], rf"^{re.escape(conf)}:\d+: [^ ]*{setting}: ", what)
        for n in (needle,) if isinstance(needle, str) else needle:
            self.assertIn(n, checked.stderr, f"{what}: the error does not say {n!r}")
        # the daemon itself refuses to start, and starts nothing
        env = dict(os.environ, FAKE_SSH_DIR=self.fake.dir)
        try:
            run = subprocess.run([TUNNELD, "-c", conf], capture_output=True, text=True, timeout=10, env=env,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.fail(f"{what}: tunneld started and ran (killed after 10 s); ssh starts: "
                      f"{tunneltest._read_text(self.started)!r}")
        tunneltest.check_sanitizer_output(run.stderr, what)
        self.assertEqual(run.returncode, 1, f"{what}: tunneld started:\n{run.stderr}")
        self.assert_no_ssh_started(what)
        self.assertFalse(os.path.exists(PWNED), f"{what}: {PWNED} exists")
        return text

    def test_hostile_values(self):
        """Every hostile value: -t exit 1 naming FILE:LINE and the setting, no ssh, no pwned."""
        for what, settings, setting, needle in HOSTILE:
            with self.subTest(what):
                self.check_rejected(what, settings, setting, needle)

    def test_nul(self):
        """A NUL, raw or as "\\x00", cannot cut a value short into something valid."""
        for text in ('tunnels = ( { name = "t"; host = "h\\x00-oProxyCommand=id"; } );\n',
                     'tunnels = ( { name = "t"; host = "h\0 -oProxyCommand=id"; } );\n'):
            with self.subTest(repr(text)):
                conf = os.path.join(self.dir, "nul.conf")
                with open(conf, "w") as f:
                    f.write(text)
                checked = run_tunneld("-t", "-c", conf)
                self.assertEqual(checked.returncode, 1, checked.stdout)
                self.assertIn(f"{conf}:1: ", checked.stderr)
                self.assertIn("NUL", checked.stderr)

    def test_valid_destination_after_dashdash(self):
        """A valid configuration's destination comes after "--": nothing after it is an option."""
        conf = os.path.join(self.dir, "ok.conf")
        write_config(conf, {"ssh": "ssh"}, {}, [{"name": "t", "host": "db-1.example.org", "user": "u",
                                                 "jump_host": "a@b:2222", "local_forwards": ["5000:db:3306"]}])
        checked = run_tunneld("-t", "-v", "-c", conf)
        self.assertEqual(checked.returncode, 0, checked.stderr)
        line = [l for l in checked.stdout.splitlines() if l.startswith("t: ")][0]
        self.assertTrue(line.endswith(" -- db-1.example.org"), line)

    def tearDown(self):
        self.assertFalse(os.path.exists(PWNED), f"{PWNED} appeared")


if __name__ == "__main__":
    tunneltest.main()
