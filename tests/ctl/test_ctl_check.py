#!/usr/bin/env python3
"""`tunnelctl check` (the control socket's check) runs off the event loop, in a child
process like a reload's loading, one at a time: checks asked for while one runs wait for
the next and share its answer. It answers for the file tunneld would read, loaded the way
tunneld loads it, so it agrees with what tunneld runs (and with what a reload would
accept). Against a real sshd: root's status is answered within 1 s throughout, whoever
loops check, and a real tunnel keeps carrying bytes."""

import os
import subprocess
import sys
import time
import unittest

import tunneltest
from tunneltest import (EchoServer, SSHServer, Tunneld, children_of, describe, echo_roundtrip, free_port, tunnelctl,
                        wait_state, wait_until)

import ctltest
from ctltest import NOBODY, SETPRIV, connect, served_within

EXIT_DROPPED = 5            # tunnelctl(1)
SLOW = 16                   # tunnels whose ssh -G takes SLOW_SECONDS (8 run at once: 2 rounds)
SLOW_SECONDS = 1.5

# Runs as another user: N connections, each asking check again as soon as it is answered;
# prints the number of answers every second.
LOOPER = r"""
import json, socket, sys, threading, time
sock, n = sys.argv[1], int(sys.argv[2])
answers = [0]
def loop():
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    f = s.makefile("rb")
    while True:
        s.sendall(b'{"cmd":"check"}\n')
        reply = json.loads(f.readline())
        assert reply["ok"], reply
        answers[0] += 1
for _ in range(n):
    threading.Thread(target=loop, daemon=True).start()
while True:
    time.sleep(1)
    print(answers[0], flush=True)
"""


def check_jobs(pid):
    """tunneld's children that are tunneld (a check's or a reload's loading)."""
    return [p for p in children_of(pid) if tunneltest.processes._comm(p) == "tunneld"]


class CheckTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sshd = tunneltest.use(cls, SSHServer())
        cls.echo = tunneltest.use(cls, EchoServer())
        cls.public = ctltest.public_dir(cls)
        cls.ctl = ctltest.public_tunnelctl(cls.public)
        cls.looper = os.path.join(cls.public, "looper.py")
        with open(cls.looper, "w") as f:
            f.write(LOOPER)
        os.chmod(cls.looper, 0o644)

    def tunneld(self, tunnels=(), ssh=None):
        """tunneld with a real tunnel ("real") and tunnels; (tunneld, socket)."""
        sock = os.path.join(self.public, f"control-{self._testMethodName}")
        self.addCleanup(lambda: [os.unlink(p) for p in (sock, sock + ".lock") if os.path.lexists(p)])
        self.port = free_port()
        defaults = {**self.sshd.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2}
        real = {"name": "real", "host": "127.0.0.1",
                "local_forwards": [f"127.0.0.1:{self.port}:127.0.0.1:{self.echo.port}"]}
        d = tunneltest.use(self, Tunneld([real, *tunnels], defaults,
                                         globals={"ssh": ssh or tunneltest.SSH, "control_socket": sock,
                                                  "control_world_readable": True}))
        d.wait_loaded(timeout=30)
        wait_state(sock, "real", "up")
        return d, sock

    def slow_tunnels(self):
        """A gate that never comes up and SLOW tunnels after it (enabled: ssh -G judges each,
        and none starts) whose ssh_config_file makes ssh -G take SLOW_SECONDS."""
        path = os.path.join(tunneltest.temp_dir(self), "slow_config")
        with open(path, "w") as f:
            f.write(f'Match exec "sleep {SLOW_SECONDS:g}"\n  ServerAliveInterval 7\n')
        # gate fails once (nothing listens on its port) and is never retried
        return ([{"name": "gate", "host": "127.0.0.1", "port": free_port(), "restart": "never"}] +
                [{"name": f"slow{i}", "host": f"slow{i}.invalid", "after": ["gate"], "ssh_config_file": path}
                 for i in range(SLOW)])

    def assert_answered_meanwhile(self, sock, d, procs, limit=60):
        """While procs run: root's status within 1 s each time, at most one check job at a
        time. The worst latency."""
        worst, jobs, t0 = 0.0, 0, time.monotonic()
        while any(p.poll() is None for p in procs) and time.monotonic() - t0 < limit:
            worst = max(worst, served_within(sock, "real"))
            jobs = max(jobs, len(check_jobs(d.pid)))
            time.sleep(0.1)
        self.assertLessEqual(jobs, 1, "more than one check job at a time")
        return worst

    def test_check_runs_off_the_loop(self):
        """root's check of a file whose ssh -G takes seconds (16 tunnels, Match exec sleep):
        root's status is answered within 1 s all along, the check says OK for every tunnel,
        and it ran in a child process."""
        d, sock = self.tunneld(self.slow_tunnels())
        t0 = time.monotonic()
        p = subprocess.Popen([tunneltest.TUNNELCTL, "-s", sock, "check"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.addCleanup(p.kill)
        seen_job = wait_until(lambda: check_jobs(d.pid) or p.poll() is not None, 10, interval=0.02,
                              what="the check's child process")
        worst = self.assert_answered_meanwhile(sock, d, [p])
        out, err = p.communicate(10)
        took = time.monotonic() - t0
        print(f"# check took {took:.1f} s; root's status took {worst * 1000:.0f} ms at worst meanwhile")
        self.assertEqual(p.returncode, 0, f"{out!r} {err!r}")
        self.assertEqual(out, f"configuration OK: {SLOW + 2} tunnels\n")
        self.assertIsInstance(seen_job, list, "no child process loaded the file")
        self.assertGreater(took, SLOW_SECONDS, "ssh -G was not asked")
        self.assertTrue(echo_roundtrip(self.port))

    def test_concurrent_checks_share_one_job(self):
        """Eight checks of another user and two of root's at once: one check job at a time,
        every one answered OK, root's status within 1 s meanwhile."""
        d, sock = self.tunneld(self.slow_tunnels())
        procs = [subprocess.Popen([SETPRIV, *NOBODY, self.ctl, "-s", sock, "check"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(8)]
        procs += [subprocess.Popen([tunneltest.TUNNELCTL, "-s", sock, "check"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for p in procs:
            self.addCleanup(p.kill)
        worst = self.assert_answered_meanwhile(sock, d, procs)
        for p in procs:
            out, err = p.communicate(30)
            self.assertEqual(p.returncode, 0, f"{p.args}: {out!r} {err!r}")
            self.assertRegex(out, rf"^configuration OK: {SLOW + 2} tunnels")
        print(f"# root's status took {worst * 1000:.0f} ms at worst during 10 checks")

    def test_a_user_looping_check_does_not_delay_root(self):
        """Another user asks check on 8 connections, again as soon as answered, of a file of
        10,000 tunnels, for 8 s: root's status is answered within 1 s every time, at most one
        check job runs at a time, and the user's checks are answered too."""
        many = [{"name": f"t{i}", "host": f"h{i}.invalid", "enabled": False} for i in range(10000)]
        d, sock = self.tunneld(many)
        p = subprocess.Popen([SETPRIV, *NOBODY, sys.executable, self.looper, sock, "8"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.addCleanup(p.kill)
        p.stdout.readline()
        t0, worst, jobs = time.monotonic(), 0.0, 0
        while time.monotonic() - t0 < 8:
            self.assertIsNone(p.poll(), p.stderr.read() if p.poll() is not None else "")
            worst = max(worst, served_within(sock, "real"))
            jobs = max(jobs, len(check_jobs(d.pid)))
            time.sleep(0.1)
        p.kill()
        answered = max(int(line) for line in p.stdout.read().split())
        print(f"# {answered} checks answered to the other user; root's status took {worst * 1000:.0f} ms "
              "at worst")
        self.assertGreater(answered, 0)
        self.assertLessEqual(jobs, 1)
        self.assertTrue(echo_roundtrip(self.port))

    def test_check_agrees_with_the_daemon(self):
        """An ssh whose `ssh -G` ends without a word: tunneld runs the file (it warns and
        starts), a reload accepts it, and so does root's check (tunneld -t, stricter, does
        not: it wants ssh's judgement). A file with an error is invalid, FILE:LINE first."""
        wrapper = os.path.join(tunneltest.temp_dir(self), "ssh")
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\n[ "$1" = -G ] && exit 1\nexec {tunneltest.SSH} "$@"\n')
        os.chmod(wrapper, 0o755)
        d, sock = self.tunneld(ssh=wrapper)
        self.assertIn("cannot ask ssh to check the ssh options", d.log())
        r = tunnelctl(sock, "check")
        self.assertEqual((r.returncode, r.stdout), (0, "configuration OK: 1 tunnel\n"), describe(r))
        r = tunnelctl(sock, "reload")
        self.assertEqual(r.returncode, 0, describe(r))
        r = tunneltest.run_tunneld("-t", "-c", d.config_path)
        self.assertNotEqual(r.returncode, 0, "tunneld -t accepts a file ssh did not judge")
        with open(d.config_path, "a") as f:
            f.write("frobnicate = 1;\n")
        r = tunnelctl(sock, "check")
        self.assertEqual(r.returncode, 1, describe(r))
        self.assertRegex(r.stderr, rf"^{d.config_path}:\d+: .*frobnicate")
        self.assertIn("tunnelctl: configuration invalid", r.stderr)

    def test_a_check_waiting_when_evicted_is_told(self):
        """root's check of a slow file waits for its job, idle on a table that fills up: the
        next client of root's evicts it (the quietest), and that tunnelctl exits 5 saying it
        was evicted."""
        d, sock = self.tunneld(self.slow_tunnels())
        p = subprocess.Popen([tunneltest.TUNNELCTL, "-s", sock, "check"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.addCleanup(p.kill)
        wait_until(lambda: check_jobs(d.pid), 10, interval=0.02, what="the check's child process")
        held = [connect(sock) for _ in range(63)]
        self.addCleanup(lambda: [s.close() for s in held])
        time.sleep(0.3)
        served_within(sock, "real")
        out, err = p.communicate(20)
        self.assertEqual(p.returncode, EXIT_DROPPED, f"{out!r} {err!r}")
        self.assertRegex(err, r"tunnelctl: tunneld dropped the connection: evicted")
        self.assertEqual(len(d.findall(r"^<\d+>control client \(pid \d+, uid 0, check\): dropped: evicted")), 1)


if __name__ == "__main__":
    tunneltest.main()
