#!/usr/bin/env python3
"""tunneld end to end: real ssh against a private sshd on 127.0.0.1, with an echo server
behind the tunnels.

One sshd and one echo server serve the whole class; each test runs its own tunneld on its
own ports.
"""

import os
import re
import signal
import socket
import stat
import time
import unittest

import tunneltest
from tunneltest import (EchoServer, SSHServer, Tunneld, duration_slack, echo_roundtrip, free_port, parse_duration,
                        pid_alive, port_accepts, wait_until)

UP_TIMEOUT = 20  # ssh's connect and key exchange on a loaded 2-core machine


class CoreTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sshd = tunneltest.use(cls, SSHServer())
        cls.echo = tunneltest.use(cls, EchoServer())

    def tunneld(self, tunnels, args=(), **settings):
        """tunneld with real ssh on tunnels to our sshd; settings override the defaults."""
        defaults = {**self.sshd.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2,
                    **settings}
        tunnels = [{"host": "127.0.0.1", **t} for t in tunnels]
        return tunneltest.use(self, Tunneld(tunnels, defaults, globals={"ssh": tunneltest.SSH}, args=args))

    def local_forward(self, port):
        return f"127.0.0.1:{port}:127.0.0.1:{self.echo.port}"

    def wait_up(self, d, name, after=0):
        """Wait for name's UP line; return (match, ssh pid)."""
        m = d.wait_log(rf"^<\d+>{name}: up: ssh \(pid (\d+)\) authenticated", timeout=UP_TIMEOUT, after=after)
        return m, int(m.group(1))

    def assert_echo(self, port, payload=b"through the tunnel\n"):
        wait_until(lambda: echo_roundtrip(port, payload), 10, what=f"an echo through port {port}")

    def test_local_and_remote_forwards_carry_bytes(self):
        """Bytes go through a -L forward (client side listener) and a -R forward (listener on
        the server), and the tunnel is UP only with the remote forward confirmed."""
        lport, rport = free_port(), free_port()
        d = self.tunneld([{"name": "web", "local_forwards": [self.local_forward(lport)],
                           "remote_forwards": [f"127.0.0.1:{rport}:127.0.0.1:{self.echo.port}"]}],
                         args=["-d"])  # -d: log ssh's debug1 line that confirms the -R listener
        m = d.wait_log(r"^<\d+>web: up: ssh \(pid \d+\) authenticated and every remote forward accepted after ",
                       timeout=UP_TIMEOUT)
        self.assertLess(d.log().index(f"remote forward success for: listen 127.0.0.1:{rport}"), m.start())
        self.assert_echo(lport)
        self.assert_echo(rport)
        big = os.urandom(32 * 1024)
        self.assertTrue(echo_roundtrip(lport, big, timeout=10), "32 KiB through -L")
        self.assertTrue(echo_roundtrip(rport, big, timeout=10), "32 KiB through -R")

    def test_killed_ssh_is_restarted(self):
        """kill -9 of the ssh child: tunneld notices, starts a new ssh, and bytes flow again."""
        lport = free_port()
        d = self.tunneld([{"name": "k", "local_forwards": [self.local_forward(lport)]}])
        m, pid = self.wait_up(d, "k")
        self.assertEqual(d.children(), [pid])
        self.assert_echo(lport)
        os.kill(pid, signal.SIGKILL)
        m = d.wait_log(r"^<\d+>k: ssh was killed by signal KILL after .*; restarting (?:now|in )", after=m.end())
        m, new = self.wait_up(d, "k", after=m.end())
        self.assertNotEqual(new, pid)
        self.assertFalse(pid_alive(pid))
        self.assertEqual(d.children(), [new])
        self.assert_echo(lport)

    def test_taken_local_port_backs_off(self):
        """A local forward whose port is taken: ssh exits 255 (local-forward failure) and
        tunneld retries with growing delays, a few times, never in a tight loop."""
        port = free_port()
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        delay, cap = 0.2, 1.6
        d = self.tunneld([{"name": "busy", "local_forwards": [self.local_forward(port)]}],
                         gatetime=5, restart_delay=delay, restart_delay_max=cap,
                         args=["-d"])  # -d: a flapping tunnel's messages go to debug level
        backoff = r"^<\d+>busy: ssh exited with status 255 .*\(local-forward: .*restarting in (.+?) \(failed start (\d+) in a row\)$"
        t0 = time.monotonic()
        wait_until(lambda: len(d.findall(backoff)) >= 5, 40, what="5 failed starts")
        took = time.monotonic() - t0
        decided = [(parse_duration(x), int(n)) for x, n in d.findall(backoff)]
        self.assertEqual([n for _, n in decided], list(range(1, len(decided) + 1)))
        for got, n in decided:
            base = min(delay * 2 ** (n - 1), cap)
            slack = duration_slack(got)
            self.assertTrue(base / 2 - slack <= got <= base + slack, f"failure {n}: {decided}")
        delays = [got for got, _ in decided[:4]]  # doubling up to the cap: never shorter
        self.assertEqual(delays, sorted(delays), f"delays shrink: {decided}")
        self.assertIn(f"busy: ssh: bind [127.0.0.1]:{port}: Address already in use", d.log())

        # No spin: 5 starts took at least the first 4 delays; 2 s more add at most 2 starts.
        self.assertGreaterEqual(took, sum(got for got, _ in decided[:4]) - 0.05)
        starts = d.count_log(r"^<\d+>busy: .*: ssh pid \d+ \(start \d+\)$")
        self.assertLessEqual(starts, 6)
        time.sleep(2)
        self.assertLessEqual(d.count_log(r"^<\d+>busy: .*: ssh pid \d+ \(start \d+\)$") - starts, 2)

    def test_sigterm_stops_every_ssh(self):
        """SIGTERM: every ssh child ends, the forwarded ports close, tunneld exits 0."""
        ports = [free_port(), free_port()]
        d = self.tunneld([{"name": f"t{i}", "local_forwards": [self.local_forward(p)]} for i, p in enumerate(ports)])
        for i, port in enumerate(ports):
            self.wait_up(d, f"t{i}")
            self.assert_echo(port)
        pids = d.children()
        self.assertEqual(len(pids), 2)
        self.assertEqual(d.stop(10), 0)
        self.assertEqual([p for p in pids if pid_alive(p)], [])
        self.assertEqual(d.leftovers(), [])
        for port in ports:
            self.assertFalse(port_accepts(port), f"port {port} still accepts")
        self.assertRegex(d.log(), r"(?m)^<\d+>every tunnel stopped; exiting$")

    def test_sigkill_of_tunneld_takes_ssh_along(self):
        """tunneld killed with SIGKILL (no chance to clean up): its ssh children die on their
        own (PR_SET_PDEATHSIG) within about 2 s, and the forwarded port closes."""
        port = free_port()
        d = self.tunneld([{"name": "orphan", "local_forwards": [self.local_forward(port)]}])
        _, pid = self.wait_up(d, "orphan")
        self.assert_echo(port)
        d.signal(signal.SIGKILL)
        self.assertEqual(d.wait_exit(5), -signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 3, what=f"ssh pid {pid} to die with tunneld")
        wait_until(lambda: not port_accepts(port, timeout=0.5), 3, what=f"port {port} to close")

    def test_check_mode(self):
        """-t: "configuration OK: N tunnels" for a good file (-v adds each ssh command line);
        for a host (or user, jump_host) that would be read as an ssh option, exit 1 naming
        FILE:LINE and the setting, and never run anything: not with -t, not when starting."""
        tmp = tunneltest.temp_dir(self)
        good = os.path.join(tmp, "good.conf")
        tunneltest.write_config(good, {"ssh": tunneltest.SSH}, self.sshd.tunnel_defaults(), [
            {"name": "web", "host": "127.0.0.1", "local_forwards": [self.local_forward(free_port())]},
            {"name": "socks", "host": "127.0.0.1", "dynamic_forwards": ["127.0.0.1:1080"]},
        ])
        r = tunneltest.run_tunneld("-t", "-c", good)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^configuration OK: 2 tunnels$")
        r = tunneltest.run_tunneld("-t", "-v", "-c", good)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^web: \S*ssh .*-L 127\.0\.0\.1:\d+:127\.0\.0\.1:\d+ .*-- 127\.0\.0\.1$")
        self.assertRegex(r.stdout, r"(?m)^socks: \S*ssh .*-D 127\.0\.0\.1:1080 .*-- 127\.0\.0\.1$")

        # A file the injected option would create, and a script that creates it without
        # needing a space (which tunneld also rejects in a host).
        pwned = os.path.join(tmp, "pwned")
        evil = os.path.join(tmp, "evil")
        with open(evil, "w") as f:
            f.write(f"#!/bin/sh\ntouch {pwned}\n")
        os.chmod(evil, stat.S_IRWXU)
        cases = [("host", f"-oProxyCommand=touch {pwned}"), ("host", f"-oProxyCommand={evil}"),
                 ("user", f"-oProxyCommand={evil}"), ("jump_host", f"-oProxyCommand={evil}")]
        for setting, value in cases:
            with self.subTest(setting=setting, value=value):
                bad = os.path.join(tmp, "bad.conf")
                tunnel = {"name": "evil", "host": "127.0.0.1", setting: value,
                          "local_forwards": [self.local_forward(free_port())]}
                text = tunneltest.write_config(bad, {"ssh": tunneltest.SSH}, self.sshd.tunnel_defaults(), [tunnel])
                line = tunneltest.line_of(text, value)
                for args in (["-t"], []):
                    r = tunneltest.run_tunneld(*args, "-c", bad)
                    self.assertEqual(r.returncode, 1, f"{args}: {r.stdout} {r.stderr}")
                    # the daemon logs with a priority prefix (<3>: error), -t on a terminal not
                    prefix = "<3>" if not args else ""
                    self.assertRegex(r.stderr, rf"(?m)^{prefix}{re.escape(bad)}:{line}: evil\.{setting}: ")
                    self.assertNotIn("configuration OK", r.stdout)
                self.assertFalse(os.path.exists(pwned), "the injected command ran")


if __name__ == "__main__":
    tunneltest.main()
