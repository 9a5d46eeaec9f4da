#!/usr/bin/env python3
"""Flapping: flap_threshold quick failures within flap_window are reported once (a warning,
`flapping: true` in status, tunneld_tunnel_flapping 1), then that tunnel's churn goes to the
debug level; it ends ("no longer flapping") once a run lasts gatetime."""

import re

import tunneltest
from tunneltest import SSHServer, metric_value, metrics_text, status, wait_until
from featuretest import FeatureTest


class FlappingTest(FeatureTest):
    def test_flapping_reported_once_then_debug_until_a_run_lasts_gatetime(self):
        server = tunneltest.use(self, SSHServer())
        server.stop()  # its port refuses until we start it again: fast failures
        d = self.tunneld([{"name": "flap"}], sshd=server, args=["-d"], gatetime=1, restart_delay=0.05,
                         restart_delay_max=0.2, flap_threshold=5, flap_window=60)
        flap = d.wait_log(r"^<(\d+)>flap: flapping: 5 failed starts within 1 min, the last: ssh exited with status 255 "
                          r"after .*\(refused: ", timeout=20)
        self.assertEqual(flap.group(1), "4", "the flapping report is a warning")
        before = d.log()[:flap.start()]
        # the 4 failed starts before it were warnings, each one
        self.assertEqual(len(re.findall(r"(?m)^<4>flap: ssh exited with status 255 .*\(failed start (\d) in a row\)$",
                                        before)), 4, before)
        t = status(d)["flap"]
        self.assertTrue(t["flapping"], t)
        self.assertEqual(metric_value(metrics_text(d), "tunneld_tunnel_flapping", tunnel="flap"), 1)

        # more failures: logged, but only at debug level
        wait_until(lambda: len(d.findall(r"^<\d+>flap: ssh exited with status 255 ", after=flap.end())) >= 4, 20,
                   what="4 more failed starts")
        later = [l for l in d.log()[flap.end():].splitlines() if l.startswith("<") and ">flap: " in l]
        self.assertTrue(later)
        self.assertEqual([l for l in later if not l.startswith("<7>")], [], "lines above debug while flapping")
        self.assertEqual(d.count_log(r"^<\d+>flap: flapping: "), 1, "reported more than once")
        self.assertTrue(status(d)["flap"]["flapping"])

        # The server comes back: a run lasts gatetime (1 s) and the flapping ends. (gatetime
        # counts from the spawn: on a loaded machine it can pass before ssh is up.)
        server.start()
        up, pid = d.wait_up("flap", after=flap.end())
        end = d.wait_log(r"^<(\d+)>flap: no longer flapping \(a run lasted gatetime\); (\d+) messages were logged at "
                         r"debug level meanwhile$", timeout=10, after=flap.end())
        self.assertEqual(end.group(1), "5", "the end of flapping is a notice")
        meanwhile = [l for l in d.log()[flap.end():end.start()].splitlines()
                     if l.startswith("<7>flap: ") and not re.match(r"<7>flap: ssh: debug\d: ", l)
                     and "ssh has run for gatetime" not in l and "ssh has been up for gatetime" not in l]
        tunneltest.add_diagnostic("lines demoted while flapping", lambda: "\n".join(meanwhile))
        self.assertGreaterEqual(int(end.group(2)), 8, meanwhile)
        t = status(d)["flap"]
        self.assertEqual((t["flapping"], t["state"], t["pid"]), (False, "up", pid), t)
        self.assertEqual(metric_value(metrics_text(d), "tunneld_tunnel_flapping", tunnel="flap"), 0)

        # And the next failure is a warning again.
        server.stop()
        d.wait_log(r"^<4>flap: ssh exited with status 255 after .*\(refused: .*\(failed start 1 in a row\)$",
                   timeout=20, after=end.end())
        self.assertEqual(d.count_log(r"^<\d+>flap: flapping: ", after=end.end()), 0)

    def test_still_flapping_once_per_window(self):
        """While flapping, one transition per flap_window is logged at its own priority
        ("still flapping (N messages at debug level so far): …"), so that the log never
        goes silent on a tunnel that keeps failing; the rest stays at debug level."""
        server = tunneltest.use(self, SSHServer())
        server.stop()
        d = self.tunneld([{"name": "flap"}], sshd=server, gatetime=1, restart_delay=0.05, restart_delay_max=0.2,
                         flap_threshold=3, flap_window=2)
        flap = d.wait_log(r"^<4>flap: flapping: 3 failed starts within 2(?:\.0)? s", timeout=20)
        first = d.wait_log(r"^<4>flap: still flapping \((\d+) messages at debug level so far\): ssh exited with "
                           r"status 255 .*\(refused: ", timeout=10, after=flap.end())
        self.assertGreater(int(first.group(1)), 0)
        second = d.wait_log(r"^<4>flap: still flapping \((\d+) messages at debug level so far\): ", timeout=10,
                            after=first.end())
        self.assertGreater(int(second.group(1)), int(first.group(1)))
        # between them: nothing about this tunnel above debug (tunneld runs without -d here)
        between = [l for l in d.log()[first.end():second.start()].splitlines() if ">flap: " in l]
        self.assertEqual(between, [], "lines between two 'still flapping' reports")


if __name__ == "__main__":
    tunneltest.main()
