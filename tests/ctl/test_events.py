#!/usr/bin/env python3
"""Following tunneld: tunnelctl events (every state change as it happens), tunnelctl wait
(the moment a tunnel is up, or a timeout that says why), and restart reporting the new ssh
pid. All from a subscription on the control socket, against a real sshd; no polling."""

import json
import os
import re
import signal
import subprocess
import time

import tunneltest
from tunneltest import UP_TIMEOUT, describe, free_port, socket_of, tunnelctl, wait_state, wait_until


class EventsTest(tunneltest.SSHTestCase):
    fast_settings = {"gatetime": 1, "restart_delay": 0.3, "restart_delay_max": 1}

    def follow(self, sock, *args):
        """tunnelctl events ARGS in the background; returns a function giving the lines so far."""
        p = subprocess.Popen([tunneltest.TUNNELCTL, "-s", sock, "events", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.poll() is None and p.terminate(), p.wait(5)))
        lines = []
        os.set_blocking(p.stdout.fileno(), False)

        def read():
            while True:
                chunk = p.stdout.readline()
                if not chunk:
                    return lines
                lines.append(chunk.rstrip("\n"))
        return p, read

    def test_events_follow_kill_and_reload(self):
        """--json: one object per change, with from, to, pid, failure and time: kill -9 of
        ssh (up -> starting or backoff with class killed, then up with the new pid); a
        reload that removes a tunnel (stopping -> stopped). The human form has the same."""
        port = free_port()
        d = self.tunneld([{"name": "a", "local_forwards": [self.echo.forward(port)]},
                          {"name": "b"}])
        sock = socket_of(d)
        pid = wait_state(sock, "a", "up")["pid"]
        wait_state(sock, "b", "up")
        p, read = self.follow(sock, "--json")
        ph, read_human = self.follow(sock, "a")
        time.sleep(0.3)     # subscribed
        t0 = time.time()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: any('"to":"up"' in l and '"tunnel":"a"' in l for l in read()), UP_TIMEOUT,
                   what="a up again")
        events = [json.loads(l) for l in read() if '"tunnel":"a"' in l]
        self.assertEqual(events[0]["from"], "up")
        self.assertIn(events[0]["to"], ("starting", "backoff"))
        self.assertEqual(events[0]["failure"], "killed")
        self.assertEqual(events[-1]["to"], "up")
        self.assertNotEqual(events[-1]["pid"], pid)
        for e in events:
            self.assertEqual(set(e), {"event", "tunnel", "from", "to", "pid", "failure", "reason", "time"})
            self.assertGreaterEqual(e["time"], t0 - 1)
        d.rewrite(tunnels=[t for t in d.tunnels if t["name"] == "a"])
        d.reload()
        wait_until(lambda: any('"tunnel":"b"' in l and '"to":"stopped"' in l for l in read()), 10,
                   what="b stopped by the reload")
        human = read_human()
        self.assertTrue(any(" a: up -> " in l and "(killed)" in l for l in human), human)
        self.assertFalse(any(" b: " in l for l in human), "a filter on a shows b")

    def test_wait_returns_when_up_and_times_out_saying_why(self):
        """wait returns 0 the moment the tunnel is up (well before its timeout), at once if
        it is up already, and 1 at the timeout naming the tunnel that cannot come up, its
        state and its last failure."""
        d = self.tunneld([{"name": "ok"}, {"name": "bad", "port": free_port()}])
        sock = socket_of(d)
        t0 = time.monotonic()
        r = tunnelctl(sock, "wait", "--timeout", "30", "ok")
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertLess(took, 15)
        self.assertEqual(tunnelctl(sock, "status", "ok").returncode, 0)
        t0 = time.monotonic()
        self.assertEqual(tunnelctl(sock, "wait", "ok").returncode, 0)
        self.assertLess(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        r = tunnelctl(sock, "wait", "--timeout", "2", "ok", "bad")
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 1, describe(r))
        self.assertTrue(1.9 <= took < 10, took)
        self.assertRegex(r.stderr, r"tunnelctl: bad is (backoff|starting)")
        self.assertIn("refused", r.stderr)
        self.assertNotIn("ok is", r.stderr)
        r = tunnelctl(sock, "wait", "nosuch")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no such tunnel: nosuch", r.stderr)

    def test_restart_prints_the_new_pid(self):
        """restart prints the new ssh's pid, once tunneld has started it."""
        d = self.tunneld([{"name": "r"}])
        sock = socket_of(d)
        pid = wait_state(sock, "r", "up")["pid"]
        r = tunnelctl(sock, "restart", "r")
        self.assertEqual(r.returncode, 0, describe(r))
        m = re.search(r"^r: restarted: ssh pid (\d+) \(was (\d+)\)$", r.stdout, re.M)
        self.assertIsNotNone(m, r.stdout)
        self.assertEqual(int(m.group(2)), pid)
        self.assertEqual(tunneltest.status(sock)["r"]["pid"], int(m.group(1)))


if __name__ == "__main__":
    tunneltest.main()
