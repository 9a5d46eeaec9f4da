#!/usr/bin/env python3
"""A server's idle limit: sshd's UnusedConnectionTimeout (9.2 and later) closes a
connection with no open channel, and forward listeners do not count: every idle tunnel
qualifies. tunneld takes the first close for what it is (not a failure, reconnected at
once), then holds a session open on the connection (the sftp subsystem, through the
master), which the server counts as in use, so that the tunnel stays usable all the time.
A server that will not run that session is said once, and each idle close is reconnected
without counting a failure.

Against Debian 12's sshd 9.2 and Debian 13's sshd 10.0 (skipped, saying why, only when the
Debian 13 root cannot be made), each with UnusedConnectionTimeout 3 and tunneld's default
settings (gatetime 30 s: before this, every close was a failed start).
"""

import os

os.environ.setdefault("TUNNELTEST_TIMEOUT", "150")  # a tunnel idle for 60 s, its setup, its stop

import re  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import tunneltest  # noqa: E402
from tunneltest import EchoServer, OpenSSH10Server, SSHServer, Tunneld, echo_roundtrip, free_port, wait_until  # noqa: E402

IDLE_LIMIT = 3          # UnusedConnectionTimeout
IDLE_FOR = 60           # the test: a tunnel idle for 60 s…
PROBE_EVERY = 8         # …probed every 8 s through its -L
FIRST_CLOSE = r"the server closed the connection after .* up with no channel open: an idle limit"
HELD = r"holding a session open on ssh's connection \(the sftp subsystem\)"
REFUSED = r"the server would not run the session that keeps the connection in use"


class IdleLimits:
    """The tests; a subclass says which server: server_class."""
    server_class = None

    def server(self, subsystem=True):
        extra = [f"UnusedConnectionTimeout {IDLE_LIMIT}"]
        if subsystem:
            extra.append("Subsystem sftp internal-sftp")
        try:
            return tunneltest.use(self, self.server_class(extra_config=extra))
        except unittest.SkipTest as e:
            self.skipTest(str(e))

    def tunneld(self, server, port):
        self.echo = tunneltest.use(self, EchoServer())
        tunnel = {"name": "idle", "host": "127.0.0.1",
                  "local_forwards": [f"127.0.0.1:{port}:127.0.0.1:{self.echo.port}"]}
        return tunneltest.use(self, Tunneld([tunnel], server.tunnel_defaults(), globals={"ssh": tunneltest.SSH}))

    def status(self, d):
        return tunneltest.tunnel_status(d, "idle")

    def assert_no_failure(self, d, t):
        self.assertEqual(t["failures"], {}, t)
        self.assertEqual(t["consecutive_failures"], 0, t)
        self.assertFalse(t["flapping"], t)
        self.assertEqual(d.findall(r"^<\d+>idle: .*(?:flapping|before authentication|failed start).*$"), [])

    def test_an_idle_tunnel_stays_usable(self):
        """The server closes the idle connection once (UnusedConnectionTimeout 3): tunneld
        says so, reconnects at once without counting a failure, and holds a session open.
        Then the tunnel, idle for 60 s and probed every 8 s through its -L, answers every
        probe on the same ssh: the server closed nothing more, and no start failed."""
        server = self.server()
        port = free_port()
        d = self.tunneld(server, port)
        d.wait_log(r"^<\d+>idle: up: ", timeout=30)
        m = d.wait_log(rf"^<5>idle: {FIRST_CLOSE}", timeout=30)
        m = d.wait_log(rf"^<6>idle: ssh ended: the server closed the idle connection after .* up; reconnecting now: "
                       r"ssh pid (\d+) \(start 2\)$", after=m.end(), timeout=10)
        pid = int(m.group(1))
        d.wait_log(rf"^<5>idle: {HELD}", after=m.end(), timeout=30)
        t = self.status(d)
        self.assertEqual((t["state"], t["pid"], t["starts"], t["restarts"]), ("up", pid, 2, 1), t)
        self.assert_no_failure(d, t)

        answered, t0 = 0, time.monotonic()
        for i in range(-(-IDLE_FOR // PROBE_EVERY) + 1):      # 0, 8, … 64 s
            wait_until(lambda: time.monotonic() >= t0 + i * PROBE_EVERY, PROBE_EVERY + 1, interval=0.2,
                       what=f"probe {i}'s time")
            self.assertTrue(echo_roundtrip(port), f"probe {i} ({time.monotonic() - t0:.1f} s idle) not answered")
            answered += 1
        print(f"# {answered} probes answered over {time.monotonic() - t0:.0f} s idle")
        t = self.status(d)
        self.assertEqual((t["state"], t["pid"], t["starts"]), ("up", pid, 2), t)
        self.assert_no_failure(d, t)
        self.assertEqual(len(d.findall(FIRST_CLOSE)), 1)
        self.assertEqual(server.log().count("terminating inactive connection"), 1, server.log()[-2000:])

    def test_a_server_that_refuses_the_session_is_reconnected_each_time(self):
        """Without an sftp subsystem the server refuses the session: said once (a warning),
        and every idle close after is reconnected at once, without counting a failure and
        without flapping, each with a line that says what the server did."""
        server = self.server(subsystem=False)
        d = self.tunneld(server, free_port())
        m = d.wait_log(rf"^<5>idle: {FIRST_CLOSE}", timeout=30)
        m = d.wait_log(rf"^<4>idle: {REFUSED} \(.*\): it will close the connection whenever no channel is open, "
                       r"and tunneld reconnects each time, without counting a failure$", after=m.end(), timeout=30)
        # five more closes, each reconnected (flapping would be the fifth failed start)
        for n in range(2, 7):
            m = d.wait_log(r"^<\d+>idle: ssh ended: the server closed the idle connection after .* up; "
                           rf"reconnecting now: ssh pid \d+ \(start {n + 1}\)$", after=m.end(), timeout=30)
        wait_until(lambda: self.status(d)["state"] == "up", 30, what="idle up again")
        t = self.status(d)
        self.assertGreaterEqual(t["restarts"], 6, t)
        self.assert_no_failure(d, t)
        self.assertEqual(len(d.findall(REFUSED)), 1, "the refusal said once")
        self.assertEqual(t["last_exit"]["failure"], None, t)


class OpenSSH92(IdleLimits, unittest.TestCase):
    server_class = SSHServer


class OpenSSH10(IdleLimits, unittest.TestCase):
    server_class = OpenSSH10Server


if __name__ == "__main__":
    tunneltest.main()
