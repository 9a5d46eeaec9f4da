#!/usr/bin/env python3
"""UP only when it really is: a tunnel whose key the server refuses is never reported up,
one whose local or remote forward cannot be set up is degraded, never up, however often it
is sampled; a good one is up, and its forwards carry bytes the moment it is. Measures
spawn→UP on loopback."""

import re
import time
import unittest

import tunneltest
from tunneltest import (UP_TIMEOUT, echo_roundtrip, free_port, listening_socket, metric_value, metrics_text,
                        parse_duration, status, tunnelctl, wait_state, wait_until)
from featuretest import FeatureTest, echo_at_once, make_key, percentile, tap_comment

RUNS = 20


class UpStateTest(FeatureTest):
    def test_refused_key_and_failed_forwards_are_never_up(self):
        """Sampled with `tunnelctl --json status` all along several attempts each: a key
        missing from authorized_keys, a taken local port and a taken remote port never show
        "up" (though ssh authenticates in the last two: they are degraded, their forward
        asked for again on the same ssh), while a good tunnel next to them is up and stays
        up."""
        tmp = tunneltest.temp_dir(self)
        bad_key = make_key(tmp, "not_authorized")
        lport, taken_port = free_port(), free_port()
        taken = listening_socket(taken_port)
        self.addCleanup(taken.close)
        remote_taken = listening_socket()  # the server is this machine: its port is taken there
        self.addCleanup(remote_taken.close)
        rport = remote_taken.getsockname()[1]
        bad = ("badkey", "localtaken", "remotetaken")
        d = self.tunneld([
            {"name": "good", "local_forwards": [self.echo.forward(lport)]},
            {"name": "badkey", "identity_file": bad_key, "local_forwards": [self.echo.forward(free_port())]},
            {"name": "localtaken", "local_forwards": [self.echo.forward(taken_port)]},
            {"name": "remotetaken", "remote_forwards": [self.echo.forward(rport)]},
        ], restart_delay=0.1, restart_delay_max=1, args=["-d"])  # auth retries at the cap: 0.5-1 s

        def attempts(name):
            if name == "badkey":
                return now[name]["starts"]
            return d.count_log(rf"^<\d+>{name}: forward [LR] .* failed: ")

        seen = {name: set() for name in ("good", *bad)}
        good_up_since = None
        samples = 0
        deadline = time.monotonic() + 40
        while True:
            now = status(d)
            samples += 1
            for name, t in now.items():
                seen[name].add(t["state"])
                if name in bad:
                    self.assertNotEqual(t["state"], "up", f"{name} shown up: {t}")
            if now["good"]["state"] == "up":
                good_up_since = good_up_since or samples
            elif good_up_since:
                self.fail(f"good left up: {now['good']}")
            if good_up_since and all(attempts(n) >= 4 for n in bad):
                break
            self.assertLess(time.monotonic(), deadline, f"too few attempts: { {n: attempts(n) for n in bad} }")
            time.sleep(0.02)
        tap_comment(f"{samples} status samples; states seen: { {k: sorted(v) for k, v in seen.items()} }")
        # queued: pacing.h holds a rejected key until the server's count leaves room
        self.assertLessEqual(seen["badkey"], {"starting", "backoff", "queued"})
        self.assertIn("starting", seen["badkey"], "no sample caught an attempt in progress")
        for name in ("localtaken", "remotetaken"):
            # queued at first: the credentials they share with good are tried once first
            self.assertLessEqual(seen[name], {"queued", "starting", "degraded"}, name)
            self.assertIn("degraded", seen[name], name)
            self.assertEqual(now[name]["starts"], 1, f"{name}: the same ssh throughout")
        self.assertEqual(d.findall(r"^<\d+>(badkey|localtaken|remotetaken): up: "), [])
        text = metrics_text(d)
        for name in bad:
            self.assertEqual(metric_value(text, "tunneld_tunnel_up", tunnel=name), 0, name)
        self.assertEqual(metric_value(text, "tunneld_tunnel_up", tunnel="good"), 1)
        # ssh did authenticate in the forward cases: authenticated alone is not up.
        self.assertRegex(d.log(), r"(?m)^<\d+>localtaken: ssh: Authenticated to ")
        self.assertRegex(d.log(), r"(?m)^<\d+>remotetaken: ssh: Authenticated to ")
        self.assertRegex(d.log(), r"(?m)^<\d+>badkey: ssh: .*Permission denied \(publickey\)")
        self.assertTrue(echo_roundtrip(lport), "no echo through the good tunnel")

    def test_forwards_work_the_moment_it_is_up(self):
        """At each UP line (5 starts), the -L listener and the -R listener on the server
        carry bytes at the first try: UP is never reported before the forwards are ready."""
        lport, rport = free_port(), free_port()
        d = self.tunneld([{"name": "both", "local_forwards": [self.echo.forward(lport)],
                           "remote_forwards": [self.echo.forward(rport)]}])
        after = 0
        for run in range(5):
            m, pid = d.wait_up("both", after=after)
            self.assertIsNone(echo_at_once(lport), f"run {run}: -L not ready at UP")
            self.assertIsNone(echo_at_once(rport), f"run {run}: -R not ready at UP")
            self.assertEqual(tunnelctl(d, "stop", "both").returncode, 0)
            after = d.wait_log(r"^<\d+>both: stopped: ssh ended after ", after=m.end()).end()
            r = tunnelctl(d, "start", "both")
            self.assertEqual(r.returncode, 0, r.stderr)

    def test_remote_forward_of_port_zero_shows_the_allocated_port(self):
        """`-R 0:…` lets the server choose the port: status (JSON and table) names the port
        ssh was given, bytes flow through it, and a restart (make-before-break: the new ssh
        asks for its own port) shows the new ssh's port only."""
        d = self.tunneld([{"name": "anyport", "remote_forwards": [f"127.0.0.1:0:127.0.0.1:{self.echo.port}"]}])
        m, pid = d.wait_up("anyport")
        for run in range(2):
            t = wait_until(lambda: (lambda t: t if t["pid"] == pid and t["state"] == "up" and t["forwards"]["allocated"]
                                    else None)(status(d)["anyport"]), UP_TIMEOUT, what=f"run {run}: up on ssh {pid}")
            allocated = t["forwards"]["allocated"]
            self.assertEqual(len(allocated), 1, t)
            am = re.fullmatch(rf"(\d+) for remote forward to 127\.0\.0\.1:{self.echo.port}", allocated[0])
            self.assertIsNotNone(am, allocated)
            port = int(am.group(1))
            self.assertGreater(port, 0)
            self.assertTrue(echo_roundtrip(port), f"run {run}: no echo through allocated port {port}")
            r = tunnelctl(d, "status", "anyport")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(f"R port {port}", r.stdout)
            r = tunnelctl(d, "restart", "anyport")
            self.assertEqual(r.returncode, 0, r.stderr)
            pid = int(re.search(r"restarted: ssh pid (\d+)", r.stdout).group(1))

    def test_failed_local_forward_is_not_up(self):
        """A -L that cannot listen at all (its only address taken): ssh's reason in the
        log, the tunnel degraded, never up."""
        taken = listening_socket()
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        d = self.tunneld([{"name": "eoff", "local_forwards": [self.echo.forward(port)]}])
        d.wait_log(rf"^<4>eoff: forward L \S+ failed: bind \[127\.0\.0\.1\]:{port}: Address already in use; ",
                   timeout=UP_TIMEOUT)
        time.sleep(1)
        self.assertEqual(status(d)["eoff"]["state"], "degraded", "up without its local forward")
        self.assertEqual(d.count_log(r"^<\d+>eoff: up: "), 0)

    def test_spawn_to_up_latency(self):
        """A good tunnel comes up; 20 starts (stop, start) measure spawn → UP, as tunneld
        reports it ("up: … after X", timed from its fork) and as seen from outside (from
        tunnelctl start returning to the UP line in the log). p50/p95 go out as comments."""
        lport = free_port()
        d = self.tunneld([{"name": "lat", "local_forwards": [self.echo.forward(lport)]}], gatetime=0.5)
        inside, outside = [], []
        after = 0
        for run in range(RUNS):
            if run:
                m = d.wait_log(r"^<\d+>lat: stopping \(stopped by request\)", after=after)
                m = d.wait_log(r"^<\d+>lat: stopped: ssh ended after ", after=m.end())
                r = tunnelctl(d, "start", "lat")
                t0 = time.monotonic()
                self.assertEqual(r.returncode, 0, r.stderr)
                after = m.end()
            else:
                t0 = time.monotonic()
            launched = d.wait_log(r"^<\d+>lat: starting; launched: ssh pid (\d+) \(start \d+\)$", after=after)
            up = wait_until(lambda: re.compile(r"^<\d+>lat: up: ssh \(pid (\d+)\) authenticated after (.+)$", re.M)
                            .search(d.log(), launched.end()), UP_TIMEOUT, interval=0.002, what="lat's UP line")
            outside.append(time.monotonic() - t0)
            self.assertEqual(up.group(1), launched.group(1), "UP names another ssh than the one launched")
            inside.append(parse_duration(up.group(2)))
            self.assertIsNone(echo_at_once(lport), f"run {run}: no echo right at UP")
            after = up.end()
            r = tunnelctl(d, "stop", "lat")
            self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(inside), RUNS)
        ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
        tap_comment(f"spawn→UP on loopback over {RUNS} runs (tunneld's own measure): p50 {ms(percentile(inside, 50))}, "
                    f"p95 {ms(percentile(inside, 95))}, min {ms(min(inside))}, max {ms(max(inside))}")
        tap_comment(f"tunnelctl start → UP line seen in the log: p50 {ms(percentile(outside, 50))}, "
                    f"p95 {ms(percentile(outside, 95))}")
        self.assertLess(percentile(inside, 50), 5.0, inside)
        wait_state(d, "lat", "stopped", timeout=10)


if __name__ == "__main__":
    tunneltest.main()
