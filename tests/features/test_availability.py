#!/usr/bin/env python3
"""Availability, measured: up and down seconds, outages, the longest and the last one, per
tunnel, across a scripted outage against a real sshd (kill -9 of ssh and an sshd that is
away for a while). Up + down is the time tunneld has run for a tunnel that was always
wanted; time a tunnel is stopped on purpose counts in neither. The same numbers in
`--json status`, the AVAIL column, -l, and the Prometheus counters."""

import os
import re
import signal
import time
import unittest

import tunneltest
from tunneltest import (SSHServer, assert_echo, free_port, metric_value, metrics_text, status, status_reply, tunnelctl,
                        wait_state, wait_until)

from featuretest import FeatureTest, tap_comment


def avail(d, name):
    return status(d)[name]["availability"]


class AvailabilityTest(FeatureTest):
    def test_scripted_outage(self):
        """kill -9 of a tunnel's ssh, and its sshd gone for ~2 s: one outage whose length is
        what the test saw (within the loop's margin); a tunnel that never connects is all
        down and has no outage; up + down equals tunneld's uptime for both."""
        sshd = tunneltest.use(self, SSHServer())
        port = free_port()
        d = self.tunneld([{"name": "a", "local_forwards": [self.echo.forward(port)]},
                          {"name": "never", "port": free_port()}],
                         sshd=sshd, restart_delay=0.2, restart_delay_max=0.5)
        _, pid = d.wait_up("a")
        assert_echo(port)
        a = avail(d, "a")
        self.assertEqual((a["outages"], a["current_outage"], a["last_outage"]), (0, None, None), a)
        self.assertGreater(a["down_seconds"], 0, "the first connect is down time")

        # the outage: ssh killed while its server is away; back when the server is
        sshd.stop(kill_sessions=False)     # the listener goes; ssh's session stays for the kill
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: status(d)["a"]["state"] != "up", 10, what="a to notice")
        time.sleep(2)
        during = avail(d, "a")
        self.assertEqual(during["outages"], 1, during)
        self.assertIsNotNone(during["current_outage"], during)
        self.assertGreaterEqual(during["current_outage"], 1.5, during)
        sshd.start()
        wait_until(lambda: status(d)["a"]["state"] == "up", 20, interval=0.05, what="a up again")
        t_up = time.monotonic()
        assert_echo(port)
        after = avail(d, "a")
        self.assertEqual(after["outages"], 1, after)
        self.assertIsNone(after["current_outage"], after)
        self.assertEqual(after["longest_outage"], after["last_outage"], after)
        # it began at the kill (or a moment after: tunneld's notice) and ended at up
        self.assertLessEqual(after["last_outage"], t_up - t_kill + 0.1, after)
        self.assertGreater(after["last_outage"], 2.0, after)
        tap_comment(f"outage seen by the test {t_up - t_kill:.2f} s, by tunneld {after['last_outage']:.2f} s")

        reply = status_reply(d)
        for t in reply["tunnels"]:
            a = t["availability"]
            self.assertAlmostEqual(a["up_seconds"] + a["down_seconds"], reply["uptime"], delta=0.5, msg=t["name"])
        never = {t["name"]: t for t in reply["tunnels"]}["never"]["availability"]
        self.assertEqual((never["up_seconds"], never["ratio"], never["outages"]), (0, 0, 0), never)

        # the Prometheus counters agree with the JSON (one render each: a margin for the time between)
        text = metrics_text(d)
        st = avail(d, "a")
        self.assertAlmostEqual(metric_value(text, "tunneld_tunnel_up_seconds_total", tunnel="a"), st["up_seconds"],
                               delta=1.0)
        self.assertAlmostEqual(metric_value(text, "tunneld_tunnel_down_seconds_total", tunnel="a"),
                               st["down_seconds"], delta=1.0)
        self.assertEqual(metric_value(text, "tunneld_tunnel_outages_total", tunnel="a"), 1)
        self.assertAlmostEqual(metric_value(text, "tunneld_tunnel_longest_outage_seconds", tunnel="a"),
                               st["longest_outage"], delta=0.01)
        self.assertEqual(metric_value(text, "tunneld_tunnel_up_seconds_total", tunnel="never"), 0)

        # the table: AVAIL as a percentage, never rounded up to 100 %; -l the rest
        r = tunnelctl(d, "status")
        rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
        m = re.search(r"  (\d+\.\d\d)%  ", rows["a"])
        self.assertIsNotNone(m, r.stdout)
        self.assertLess(float(m.group(1)), 100.0)
        self.assertIn("  0.00%  ", rows["never"])
        r = tunnelctl(d, "status", "-l", "a")
        self.assertRegex(r.stdout, r"\n    availability: \d+\.\d\d% \(up .*, down .*; 1 outage, longest .*, last .*, "
                                   r".* ago\)\n")

    def test_stopped_on_purpose_counts_nothing(self):
        """tunnelctl stop: neither up nor down grows while it is held, and no outage; a
        restart by request is make-before-break: no outage (the old ssh serves until the new
        one has every forward)."""
        d = self.tunneld([{"name": "a"}])
        d.wait_up("a")
        self.assertEqual(tunnelctl(d, "stop", "a").returncode, 0)
        wait_state(d, "a", "stopped", timeout=10)
        before = avail(d, "a")
        time.sleep(1.5)
        held = avail(d, "a")
        self.assertEqual((held["up_seconds"], held["down_seconds"], held["outages"]),
                         (before["up_seconds"], before["down_seconds"], 0), (before, held))
        self.assertEqual(tunnelctl(d, "start", "a").returncode, 0)
        wait_state(d, "a", "up", timeout=20)
        self.assertEqual(avail(d, "a")["outages"], 0, "started again by hand: the connect is down time, no outage")
        pid = status(d)["a"]["pid"]
        r = tunnelctl(d, "restart", "a")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        wait_until(lambda: status(d)["a"]["state"] == "up" and status(d)["a"]["pid"] != pid, 20,
                   what="a up on a new ssh after its restart")
        self.assertEqual(avail(d, "a")["outages"], 0, "a make-before-break restart is no outage")
        reply = status_reply(d)
        a = reply["tunnels"][0]["availability"]
        self.assertLess(a["up_seconds"] + a["down_seconds"], reply["uptime"] - 1.4, "the held time counted")

    def test_metrics_file_seconds_move_on(self):
        """metrics_file is rewritten without news too (at least every 30 s): not checked by
        waiting 30 s here, but the file's counters are the status's after a change."""
        path = os.path.join(tunneltest.temp_dir(self), "tunneld.prom")
        d = self.tunneld([{"name": "a"}], globals={"metrics_file": path})
        d.wait_up("a")

        def written():
            try:
                with open(path) as f:
                    text = f.read()
            except OSError:
                return None
            return text if 'tunneld_tunnel_up{tunnel="a"} 1' in text else None
        text = wait_until(written, 10, what="the metrics file to say a is up")
        self.assertIsNotNone(metric_value(text, "tunneld_tunnel_up_seconds_total", tunnel="a"))
        self.assertEqual(metric_value(text, "tunneld_tunnel_outages_total", tunnel="a"), 0)


if __name__ == "__main__":
    tunneltest.main()
