#!/usr/bin/env python3
"""tunneld's log output: "<N>" priority prefixes on a pipe, a clock on a terminal, stderr as
the fallback when the journal is the target but cannot be reached (a private mount namespace
with an empty /run, so /run/systemd/journal/socket is absent), and the structured fields it
sends to the journal (our own socket on /run/systemd/journal/socket in such a namespace).

Real ssh against one sshd for the class; journalctl on a real journal is checked under a real
systemd in test_systemd_ns.py.
"""

import os
import re
import shutil
import signal
import socket
import unittest

import tunneltest
from tunneltest import (EchoServer, FakeSSH, SSHServer, UP_TIMEOUT, echo_roundtrip, free_port, use, wait_state,
                        wait_until)
from systemdtest import JournalSocket, SystemdTunneld, private_run_wrapper


def run_mounts():
    """The mounts at or under /run in our mount namespace, but network namespaces' (nsfs:
    other tests running meanwhile make and remove theirs under /run/netns)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if re.match(r"/run(/|$)", fields[4]) and fstype != "nsfs":
                found.append(fields[4])
    return sorted(found)


class JournalTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sshd = use(cls, SSHServer())
        cls.echo = use(cls, EchoServer())

    def setUp(self):
        self.tmp = tunneltest.temp_dir(self)

    def tunneld(self, tunnels, globals=None, **kw):
        """tunneld with real ssh to our sshd (a "down" port for failing tunnels)."""
        defaults = {**self.sshd.tunnel_defaults(), "gatetime": 5, "restart_delay": 0.5, "restart_delay_max": 1}
        g = {"ssh": tunneltest.SSH, "control_socket": os.path.join(self.tmp, "control"), **(globals or {})}
        tunnels = [{"host": "127.0.0.1", **t} for t in tunnels]
        return use(self, SystemdTunneld(tunnels, defaults, g, **kw))

    def good(self, name="good"):
        port = free_port()
        return {"name": name, "local_forwards": [f"127.0.0.1:{port}:127.0.0.1:{self.echo.port}"]}, port

    def need_unshare(self):
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            self.skipTest("needs root and unshare")

    def assert_every_line_prefixed(self, log):
        for line in log.splitlines():
            self.assertRegex(line, r"^<[0-7]>\S", "a line without a <N> priority prefix")

    def test_pipe_priorities(self):
        """stderr a pipe: every line is "<N>message", with the right syslog priority for each kind of event."""
        good, port = self.good()
        down = free_port()  # nothing listens there
        # never logs in as another user: its own credentials, its own ssh (with down's,
        # it would wait for down's attempt and take its failure: pacing.h)
        d = self.tunneld([good, {"name": "down", "port": down}, {"name": "never", "port": down, "restart": "never", "user": "never"}],
                         stderr="pipe")
        d.wait_log(r"^<5>good: up: ssh \(pid \d+\) authenticated", timeout=UP_TIMEOUT)
        self.assertTrue(echo_roundtrip(port))
        d.wait_log(r"^<4>down: ssh exited with status 255 after [\d.]+ m?s, never up \(refused: "
                   r".*\); restarting in [\d.]+ m?s \(failed start 1 in a row\)$")
        d.wait_log(r"^<3>never: ssh exited with status 255 .*; not restarting \(restart=never\)$")
        self.assertEqual(d.stop(10), 0)
        log = d.log()
        self.assert_every_line_prefixed(log)
        for regex in (r"<5>tunneld \S+ starting: 3 tunnels from .*",
                      r"<6>good: starting; launched: ssh pid \d+ \(start 1\)",
                      rf'<6>good: ssh: Authenticated to 127\.0\.0\.1 \(\[127\.0\.0\.1\]:{self.sshd.port}\) '
                      r'using "publickey"\.',
                      rf"<4>down: ssh: ssh: connect to host 127\.0\.0\.1 port {down}: Connection refused",
                      r"<5>received SIGTERM: stopping every tunnel",
                      r"<5>good: stopped: ssh ended after .* \(tunneld is stopping\)",
                      r"<5>every tunnel stopped; exiting"):
            self.assertRegex(log, rf"(?m)^{regex}$")

    def test_log_level_filters(self):
        """log_level="warning": nothing above priority 4 reaches stderr, warnings still do."""
        fake = use(self, FakeSSH())
        fake.plan("up", [(0, 60, True)])
        fake.plan("bad", [(255, 0.01)])
        d = use(self, SystemdTunneld([{"name": "up", "host": "up"}, {"name": "bad", "host": "bad", "gatetime": 5}],
                                     globals={"log_level": "warning", "control_socket": os.path.join(self.tmp, "c")},
                                     fake=fake, stderr="pipe"))
        d.wait_log(r"^<4>bad: ssh exited with status 255 ")
        wait_until(lambda: len(fake.starts("up")) == 1, 5)
        self.assertEqual(d.stop(10), 0)
        self.assert_every_line_prefixed(d.log())
        self.assertEqual(d.findall(r"^<[5-7]>.*"), [])

    def test_tty_shows_a_clock(self):
        """stderr a terminal: lines begin with HH:MM:SS, the level as a word (coloured:
        the terminal's TERM is not dumb) and the tunnel name, without <N>."""
        good, port = self.good()
        d = self.tunneld([good], stderr="tty")
        color = r"(?:\x1b\[[\d;]*m)?"
        d.wait_log(rf"^\d\d:\d\d:\d\d {color}notice{color} +good: up: ssh \(pid \d+\) authenticated",
                   timeout=UP_TIMEOUT)
        self.assertEqual(d.stop(10), 0)
        for line in d.log().splitlines():
            self.assertRegex(line, rf"^\d\d:\d\d:\d\d {color}(?:error|warning|notice|info|debug){color} +\S")
            self.assertNotRegex(line, r"^<\d>")

    def test_journal_stream_of_another_file(self):
        """JOURNAL_STREAM naming another file than stderr: log_target="auto" keeps "<N>" lines on stderr."""
        st = os.stat(self.tmp)
        good, port = self.good()
        d = self.tunneld([good], stderr="pipe", systemd_env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        d.wait_log(r"^<5>good: up: ", timeout=UP_TIMEOUT)
        self.assertEqual(d.stop(10), 0)
        self.assert_every_line_prefixed(d.log())

    def fallback_run(self, wrapper, **kw):
        """Run a tunnel whose log cannot reach the journal; wait until it is up (asking
        tunnelctl, not the log), stop tunneld, and return its stderr."""
        good, port = self.good()
        d = self.tunneld([good], wrapper=wrapper, **kw)
        wait_state(d, "good", "up")
        self.assertTrue(echo_roundtrip(port))
        self.assertEqual(d.stop(10), 0)
        return d.log()

    def assert_fallback(self, log):
        self.assertRegex(log, r"(?m)^<6>good: ssh: Authenticated to 127\.0\.0\.1 .* using \"publickey\"\.$")
        self.assertRegex(log, r"(?m)^<5>good: up: ssh \(pid \d+\) authenticated")
        self.assertRegex(log, r"(?m)^<5>every tunnel stopped; exiting$")
        self.assert_every_line_prefixed(log)

    def test_journal_refusing_falls_back_to_stderr(self):
        """Journal as target but its socket refuses: every line, ssh's own too, falls back to stderr."""
        self.need_unshare()
        mounts = run_mounts()
        stale = os.path.join(self.tmp, "journal")
        os.mkdir(stale)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(os.path.join(stale, "socket"))
        for what, kw in (("log_target=journal", {"globals": {"log_target": "journal"}, "stderr": "pipe"}),
                         ("auto, JOURNAL_STREAM", {"journal_stream": True})):
            with self.subTest(what):
                self.assert_fallback(self.fallback_run(private_run_wrapper(journal_dir=stale), **kw))
        self.assertEqual(run_mounts(), mounts, "a mount leaked out of the namespace")

    # libsystemd's sd_journal_sendv() returns 0 when /run/systemd/journal/socket does not
    # exist (ENOENT: "fail silently"); log.c looks for the socket first.
    def test_journal_missing_falls_back_to_stderr(self):
        """log_target="journal" with no journal socket at all falls back to stderr."""
        self.need_unshare()
        mounts = run_mounts()
        log = self.fallback_run(private_run_wrapper(), globals={"log_target": "journal"}, stderr="pipe")
        self.assertEqual(run_mounts(), mounts, "a mount leaked out of the namespace")
        self.assert_fallback(log)

    def test_journal_fields(self):
        """log_target="journal": entries carry TUNNEL, SSH_PID, TUNNEL_STATE, EXIT_*, FAILURE; stderr stays empty."""
        self.need_unshare()
        journal = use(self, JournalSocket())
        good, port = self.good()
        down = free_port()
        d = self.tunneld([good, {"name": "down", "port": down}], globals={"log_target": "journal"},
                         stderr="pipe", wrapper=journal.wrapper())
        up = journal.wait(r"^good: up: ssh \(pid \d+\) authenticated", timeout=UP_TIMEOUT, TUNNEL="good")
        pid = int(up["SSH_PID"])
        self.assertEqual((up["PRIORITY"], up["TUNNEL_STATE"], up["SYSLOG_IDENTIFIER"]), ("5", "up", "tunneld"))
        self.assertIn(f"(pid {pid})", up["MESSAGE"])
        auth = journal.wait(r'^good: ssh: Authenticated to 127\.0\.0\.1 .* using "publickey"\.$', TUNNEL="good")
        self.assertEqual((auth["PRIORITY"], auth["SSH_PID"]), ("6", str(pid)))
        self.assertTrue(echo_roundtrip(port))

        failed = journal.wait(r"^down: ssh exited with status 255 .*restarting in ", TUNNEL="down")
        self.assertEqual({k: failed.get(k) for k in ("PRIORITY", "EXIT_STATUS", "FAILURE", "TUNNEL_STATE")},
                         {"PRIORITY": "4", "EXIT_STATUS": "255", "FAILURE": "refused", "TUNNEL_STATE": "backoff"})
        refused = journal.wait(rf"^down: ssh: ssh: connect to host 127\.0\.0\.1 port {down}: Connection refused$",
                               TUNNEL="down")
        self.assertEqual((refused["PRIORITY"], refused["FAILURE"]), ("4", "refused"))

        os.kill(pid, signal.SIGKILL)
        killed = journal.wait(r"^good: ssh was killed by signal KILL ", TUNNEL="good")
        self.assertEqual((killed["EXIT_SIGNAL"], killed["FAILURE"], killed["PRIORITY"]), ("KILL", "killed", "4"))
        self.assertNotIn("EXIT_STATUS", killed)
        wait_until(lambda: len(journal.entries(TUNNEL="good", TUNNEL_STATE="up")) == 2, UP_TIMEOUT,
                   what="good up again")

        self.assertEqual(d.stop(10), 0)
        journal.wait(r"^every tunnel stopped; exiting$")
        for e in journal.entries():
            self.assertTrue({"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER"} <= e.keys(), e)
            self.assertEqual(e["SYSLOG_IDENTIFIER"], "tunneld")
        start = journal.wait(r"^tunneld \S+ starting: 2 tunnels from ")
        self.assertNotIn("TUNNEL", start)
        self.assertEqual(d.log(), "", "lines went to stderr with the journal reachable")

    # SSH_PID of an exit entry is the ssh that exited, also when the next one starts at once
    # ("…; restarting now: ssh pid NEW"): `journalctl SSH_PID=N` finds N's exit.
    def test_exit_entry_names_the_ssh_that_exited(self):
        """An exit entry's SSH_PID is the ssh that exited (backoff and immediate restart)."""
        self.need_unshare()
        fake = use(self, FakeSSH())
        journal = use(self, JournalSocket())
        fake.plan("now", [(0, 0.3, True)])   # a good run (> gatetime): restarted at once
        fake.plan("later", [(1, 0.05)])      # a failed start: backoff
        use(self, SystemdTunneld([{"name": "now", "host": "now", "gatetime": 0.1, "restart_delay": 0.05},
                                  {"name": "later", "host": "later", "gatetime": 5, "restart_delay": 0.2}],
                                 globals={"log_target": "journal", "control_socket": os.path.join(self.tmp, "c")},
                                 fake=fake, stderr="pipe", wrapper=journal.wrapper()))
        for name in ("now", "later"):
            exited = wait_until(lambda: [e for e in journal.entries(TUNNEL=name) if "EXIT_STATUS" in e], 10,
                                what=f"an exit entry of {name}")[0]
            first = fake.starts(name)[0][1]
            self.assertEqual(exited.get("SSH_PID"), str(first), f"{name}: {exited}")


if __name__ == "__main__":
    tunneltest.main()
