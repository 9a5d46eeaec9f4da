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

import tunneltest
from tunneltest import (UP_TIMEOUT, assert_echo, duration_slack, echo_roundtrip, free_port, parse_duration, pid_alive,
                        port_accepts, wait_until)


class CoreTest(tunneltest.SSHTestCase):
    def test_local_and_remote_forwards_carry_bytes(self):
        """Bytes go through a -L forward (client side listener) and a -R forward (listener on
        the server), and the tunnel is UP only with the remote forward confirmed: at UP, ssh
        has answered "open" for both, and the -R already listens on the server."""
        lport, rport = free_port(), free_port()
        d = self.tunneld([{"name": "web", "local_forwards": [self.echo.forward(lport)],
                           "remote_forwards": [self.echo.forward(rport)]}])
        d.wait_log(r"^<\d+>web: up: ssh \(pid \d+\) authenticated and every remote forward accepted after ",
                   timeout=UP_TIMEOUT)
        self.assertTrue(port_accepts(rport), "up before the server listens on the -R port")
        t = tunneltest.status(d)["web"]
        self.assertEqual([f["state"] for f in t["forward_states"]], ["open", "open"], t)
        assert_echo(lport)
        assert_echo(rport)
        big = os.urandom(32 * 1024)
        self.assertTrue(echo_roundtrip(lport, big, timeout=10), "32 KiB through -L")
        self.assertTrue(echo_roundtrip(rport, big, timeout=10), "32 KiB through -R")

    def test_killed_ssh_is_restarted(self):
        """kill -9 of the ssh child: tunneld notices, starts a new ssh, and bytes flow again."""
        lport = free_port()
        d = self.tunneld([{"name": "k", "local_forwards": [self.echo.forward(lport)]}])
        m, pid = d.wait_up("k")
        self.assertEqual(d.children(), [pid])
        assert_echo(lport)
        os.kill(pid, signal.SIGKILL)
        m = d.wait_log(r"^<\d+>k: ssh was killed by signal KILL after .*; restarting (?:now|in )", after=m.end())
        m, new = d.wait_up("k", after=m.end())
        self.assertNotEqual(new, pid)
        self.assertFalse(pid_alive(pid))
        self.assertEqual(d.children(), [new])
        assert_echo(lport)

    def test_taken_local_port_is_retried_on_the_same_ssh(self):
        """A local forward whose port is taken: the tunnel is degraded, not restarted (the
        same ssh throughout); ssh's own reason ("Address already in use") shows in the log and
        in status, the failure is counted once as local-forward, and the forward is asked
        for again with growing delays (restart_delay doubling to restart_delay_max, never in
        a tight loop). Once the port is free, the forward opens and the tunnel is up."""
        port = free_port()
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        delay, cap = 0.2, 1.6
        d = self.tunneld([{"name": "busy", "local_forwards": [self.echo.forward(port)]}],
                         gatetime=5, restart_delay=delay, restart_delay_max=cap,
                         args=["-d"])  # -d: the same failure again is logged at debug level
        spec = re.escape(self.echo.forward(port))
        retry = rf"^<\d+>busy: forward L {spec} failed: bind \[127\.0\.0\.1\]:{port}: Address already in use; " \
                r"asked for again in (.+)$"
        d.wait_log(r"^<4>busy: degraded: ssh \(pid (\d+)\) runs, but 1 of 1 forwards failed", timeout=UP_TIMEOUT)
        t0 = time.monotonic()
        wait_until(lambda: len(d.findall(retry)) >= 5, 40, what="5 failed attempts")
        took = time.monotonic() - t0
        decided = [parse_duration(x) for x in d.findall(retry)]
        for n, got in enumerate(decided, 1):
            base = min(delay * 2 ** (n - 1), cap)
            slack = duration_slack(got)
            self.assertTrue(base / 2 - slack <= got <= base + slack, f"attempt {n}: {decided}")
        self.assertEqual(decided[:4], sorted(decided[:4]), f"delays shrink: {decided}")
        self.assertGreaterEqual(took, sum(decided[1:4]) - 0.05, "no spin: the attempts waited their delays")
        self.assertEqual(d.count_log(rf"^<4>busy: forward L {spec} failed: "), 1, "the same failure is news once")
        t = tunneltest.status(d)["busy"]
        self.assertEqual((t["state"], t["starts"], t["failures"]), ("degraded", 1, {"local-forward": 1}), t)
        self.assertEqual(t["forward_states"][0]["reason"], f"bind [127.0.0.1]:{port}: Address already in use", t)
        pid = t["pid"]
        taken.close()
        d.wait_log(rf"^<5>busy: forward L {spec} open again$", timeout=cap + 10)
        d.wait_log(r"^<5>busy: up: ", timeout=5)
        assert_echo(port)
        self.assertEqual(d.children(), [pid], "the same ssh all along")

    def test_sigterm_stops_every_ssh(self):
        """SIGTERM: every ssh child ends, the forwarded ports close, tunneld exits 0."""
        ports = [free_port(), free_port()]
        d = self.tunneld([{"name": f"t{i}", "local_forwards": [self.echo.forward(p)]} for i, p in enumerate(ports)])
        for i, port in enumerate(ports):
            d.wait_up(f"t{i}")
            assert_echo(port)
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
        d = self.tunneld([{"name": "orphan", "local_forwards": [self.echo.forward(port)]}])
        _, pid = d.wait_up("orphan")
        assert_echo(port)
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
            {"name": "web", "host": "127.0.0.1", "local_forwards": [self.echo.forward(free_port())]},
            {"name": "socks", "host": "127.0.0.1", "dynamic_forwards": ["127.0.0.1:1080"]},
        ])
        r = tunneltest.run_tunneld("-t", "-c", good)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^configuration OK: 2 tunnels$")
        r = tunneltest.run_tunneld("-t", "-v", "-c", good)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^web: \S*ssh .*-o ControlMaster=yes -o ControlPath=\S+/web\.mux0 .*-- 127\.0\.0\.1$")
        self.assertRegex(r.stdout, r"(?m)^web: opened over ssh's control socket: -L 127\.0\.0\.1:\d+:127\.0\.0\.1:\d+$")
        self.assertRegex(r.stdout, r"(?m)^socks: opened over ssh's control socket: -D 127\.0\.0\.1:1080$")

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
                          "local_forwards": [self.echo.forward(free_port())]}
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
