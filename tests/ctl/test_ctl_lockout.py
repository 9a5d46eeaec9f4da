#!/usr/bin/env python3
"""An unprivileged local user attacks a world-readable control socket
(control_world_readable = true: every local user may read status).

The control socket cannot be monopolised: root, tunneld's user and control_group are
always served within a second; read-only clients share a bounded part of the table (8 per
user), and a client costs one request line and one reply at a time, whatever it sends.
The attacker is a real user made for the test (useradd; removed at the end), running as
that user through setpriv.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import tunneltest
from tunneltest import EchoServer, SSHServer, Tunneld, cpu_seconds, describe, free_port, tunnelctl, wait_until

from ctltest import AttackerUser, SETPRIV, rss_kb

READERS_PER_UID = 8     # daemon/ctl.h
SERVED_WITHIN = 1.0

# Runs as the attacker: MODE half holds N connections, each with half a request line,
# refreshing them every 2 s (reconnecting the ones tunneld drops); MODE pipeline sends
# status requests on one connection as fast as it can and never reads.
ATTACKER = r"""
import socket, sys, time
sock, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def conn():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(sock)
    return s
if mode == "half":
    held = []
    while True:
        while len(held) < n:
            try:
                s = conn()
                s.sendall(b'{"cmd":"sta')
                held.append(s)
            except OSError:
                break
        time.sleep(2)
        alive = []
        for s in held:
            try:
                s.sendall(b'tu')
                s.setblocking(False)
                try:
                    if s.recv(1) == b"":
                        raise OSError("closed")
                except BlockingIOError:
                    pass
                s.setblocking(True)
                alive.append(s)
            except OSError:
                s.close()
        held = alive
        print(len(held), flush=True)
else:
    s = conn()
    s.settimeout(None)
    while True:
        s.sendall(b'{"cmd":"status"}\n' * 256)
"""


class LockoutTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sshd = tunneltest.use(cls, SSHServer())
        cls.echo = tunneltest.use(cls, EchoServer())
        cls.attacker = tunneltest.use(cls, AttackerUser())
        cls.public = tempfile.mkdtemp(prefix="tunneltest-lockout-")
        os.chmod(cls.public, 0o755)
        cls.addClassCleanup(shutil.rmtree, cls.public, True)
        cls.script = os.path.join(cls.public, "attacker.py")
        with open(cls.script, "w") as f:
            f.write(ATTACKER)
        os.chmod(cls.script, 0o644)

    def setUp(self):
        sock = os.path.join(self.public, f"control-{self._testMethodName}")
        self.addCleanup(lambda: [os.unlink(p) for p in (sock, sock + ".lock") if os.path.lexists(p)])
        port = free_port()
        defaults = {**self.sshd.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2}
        self.d = tunneltest.use(self, Tunneld(
            [{"name": "db", "host": "127.0.0.1", "local_forwards": [f"127.0.0.1:{port}:127.0.0.1:{self.echo.port}"]}],
            defaults, globals={"ssh": tunneltest.SSH, "control_socket": sock, "control_world_readable": True}))
        self.sock = sock
        self.d.wait_loaded()
        self.d.wait_up("db", timeout=20)

    def attack(self, mode, n=40):
        p = self.attacker.run(sys.executable, self.script, self.sock, mode, str(n))
        self.addCleanup(lambda: (p.kill(), p.wait()))
        return p

    def assert_root_served(self, what, rounds=5):
        """root's status, reload and systemd's reload (tunnelctl --pid) each answered within
        SERVED_WITHIN, every time."""
        worst = 0.0
        for _ in range(rounds):
            for args in (("status",), ("reload",), ("--pid", str(self.d.pid), "reload")):
                t = time.monotonic()
                r = tunnelctl(self.sock, *args)
                took = time.monotonic() - t
                worst = max(worst, took)
                self.assertEqual(r.returncode, 0, f"{what}: tunnelctl {' '.join(args)}: {describe(r)}")
                self.assertNotIn("SIGHUP", r.stderr, f"{what}: the socket took the reload itself")
                self.assertLess(took, SERVED_WITHIN, f"{what}: tunnelctl {' '.join(args)} took {took:.2f} s")
        print(f"# {what}: root served in {worst * 1000:.0f} ms at worst")

    def test_half_lines_cannot_lock_out_root(self):
        """40 connections holding half a request line, refreshed every 2 s: the attacker
        keeps at most 8 places; root's status and reloads are served at once throughout,
        and so is another unprivileged user."""
        p = self.attack("half", 40)
        held = [int(p.stdout.readline()) for _ in range(2)]     # what it still holds after each refresh
        self.assertLessEqual(max(held), READERS_PER_UID, f"one user holds more than its share: {held}")
        self.assertGreater(min(held), 0, "a reader is refused for no reason")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            self.assert_root_served("40 half-open connections", rounds=1)
        r = subprocess.run([SETPRIV, "--reuid", "65534", "--regid", "65534", "--clear-groups", tunneltest.TUNNELCTL,
                            "-s", self.sock, "status"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, f"another user: {describe(r)}")

    def test_a_reader_that_pipelines_and_never_reads_costs_nothing(self):
        """Status requests as fast as they can be sent, replies never read: tunneld renders
        one reply, reads no more, and drops the client after 5 s; its RSS and CPU do not
        move, and root is served throughout."""
        rss0, cpu0, t0 = rss_kb(self.d.pid), cpu_seconds(self.d.pid), time.monotonic()
        for _ in range(3):
            self.attack("pipeline")
        time.sleep(0.5)
        self.assert_root_served("3 pipelining clients")
        time.sleep(2)
        cpu = (cpu_seconds(self.d.pid) - cpu0) / (time.monotonic() - t0)
        grew = rss_kb(self.d.pid) - rss0
        print(f"# tunneld: CPU {cpu * 100:.1f} %, RSS +{grew} kB under 3 pipelining clients")
        self.assertLess(cpu, 0.25)
        self.assertLess(grew, 4096)


if __name__ == "__main__":
    tunneltest.main()
