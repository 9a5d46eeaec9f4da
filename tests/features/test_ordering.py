#!/usr/bin/env python3
"""Ordering with `after`: a tunnel waits (queued, "waiting for X to be up") until the tunnels
it is after are up, whatever the configuration order; at shutdown it gets SIGTERM, and ends,
before them; a cycle or an unknown name is a `tunneld -t` error naming FILE:LINE."""

import os
import re
import signal
import time

import tunneltest
from tunneltest import SSHServer, pid_alive, status, status_reply
from featuretest import FeatureTest, group_lines


class OrderingTest(FeatureTest):
    def test_after_waits_until_up(self):
        """b (first in the file) is after a, whose server refuses: b stays queued, with the
        reason, and never runs ssh; once a's server is back and a is up, b starts."""
        server = tunneltest.use(self, SSHServer())
        server.stop()
        tunnels = [{"name": "b", "after": ["a"]}, {"name": "a", **server.tunnel_defaults()}]
        d = self.tunneld(tunnels, args=["-d"], restart_delay=0.2, restart_delay_max=0.5)
        d.wait_log(r"^<\d+>b: starting; queued: waiting for a to be up$", timeout=10)
        deadline = time.monotonic() + 2.5
        a_states = set()
        while time.monotonic() < deadline:
            reply = status_reply(d)
            t = {x["name"]: x for x in reply["tunnels"]}
            self.assertEqual((t["b"]["state"], t["b"]["reason"], t["b"]["pid"], t["b"]["starts"]),
                             ("queued", "waiting for a to be up", None, 0), t["b"])
            self.assertIn("queued: b (waiting for a to be up)", reply["status"])
            a_states.add(t["a"]["state"])
            time.sleep(0.05)
        self.assertIn("backoff", a_states)
        self.assertGreaterEqual(status(d)["a"]["starts"], 2, "a did not keep retrying")
        self.assertEqual(d.count_log(r"^<\d+>b: .*ssh pid \d+"), 0, "b ran ssh before a was up")

        server.start()
        a_up, _ = d.wait_up("a")
        b_launch = d.wait_log(r"^<\d+>b: .*; launched: ssh pid (\d+) \(start 1\)$", timeout=10)
        self.assertGreater(b_launch.start(), a_up.start(), "b launched before a was up")
        d.wait_up("b", after=b_launch.end())
        self.assertEqual({k: v["state"] for k, v in status(d).items()}, {"a": "up", "b": "up"})

    def chain(self, stop_timeout):
        """c after b after a, listed c, a, b, and an unrelated solo; all up. Returns
        (tunneld, {name: ssh pid})."""
        d = self.tunneld([{"name": "c", "after": ["b"]}, {"name": "a"}, {"name": "b", "after": ["a"]},
                          {"name": "solo"}], globals={"stop_timeout": stop_timeout})
        return d, {name: d.wait_up(name)[1] for name in ("a", "b", "c", "solo")}

    def stop_and_watch(self, d, pids):
        """SIGTERM tunneld; return ({name: seconds from SIGTERM to its ssh seen gone}, the
        log), polling every few ms."""
        died = {}
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        while len(died) < len(pids) and time.monotonic() < t0 + 20:
            for name, pid in pids.items():
                if name not in died and not pid_alive(pid):
                    died[name] = time.monotonic() - t0
            time.sleep(0.002)
        self.assertEqual(d.wait_exit(15), 0)
        self.assertEqual(sorted(died), sorted(pids), died)
        return died, d.log()

    def log_positions(self, log, pids):
        """Offsets in the log of each tunnel's SIGTERM line and of its "stopped" line."""
        def at(regex):
            m = re.search(regex, log, re.M)
            self.assertIsNotNone(m, regex)
            return m.start()
        term = {n: at(rf"^<\d+>{n}: stopping \(tunneld is stopping\): SIGTERM sent to ssh pid {pids[n]}\b")
                for n in pids}
        ended = {n: at(rf"^<\d+>{n}: stopped: ssh ended after .* \(tunneld is stopping\)$") for n in pids}
        return term, ended

    def test_shutdown_stops_dependents_first(self):
        """At SIGTERM, c's ssh is signalled and has ended before b's is signalled, and b's
        before a's; solo does not wait for the chain."""
        d, pids = self.chain(5)
        died, log = self.stop_and_watch(d, pids)
        term, ended = self.log_positions(log, pids)
        self.assertLess(ended["c"], term["b"], "b signalled before c ended")
        self.assertLess(ended["b"], term["a"], "a signalled before b ended")
        self.assertLess(term["solo"], ended["c"], "solo waited for the chain")
        self.assertLessEqual(died["c"], died["b"] + 0.005, died)  # polled: the same pass at worst
        self.assertLessEqual(died["b"], died["a"] + 0.005, died)

    def test_shutdown_order_seen_from_outside(self):
        """The same with a, b and c's ssh frozen (SIGSTOP), so that each ends only at its
        SIGKILL, stop_timeout (1 s) after its SIGTERM: c goes at ~1 s, b at ~2 s, a at
        ~3 s; solo at once. A dependency signalled early would die early."""
        d, pids = self.chain(1)
        for name in ("a", "b", "c"):
            os.kill(pids[name], signal.SIGSTOP)
        died, log = self.stop_and_watch(d, pids)
        self.assertLess(died["solo"], 0.5, died)
        # each waits for the one after it to be killed: never less than stop_timeout apart
        for k, name in enumerate(("c", "b", "a"), 1):
            self.assertTrue(k - 0.1 <= died[name] <= k + 3, f"{name}'s ssh ended at {died[name]:.2f} s: {died}")
        self.assertGreater(died["b"] - died["c"], 0.9, died)
        self.assertGreater(died["a"] - died["b"], 0.9, died)
        kills = re.findall(r"(?m)^<\d+>(\w+): ssh did not exit within 1\.0 s of SIGTERM: sending SIGKILL$", log)
        self.assertEqual(kills, ["c", "b", "a"])
        term, ended = self.log_positions(log, pids)
        self.assertLess(ended["c"], term["b"])
        self.assertLess(ended["b"], term["a"])

    def test_cycle_and_unknown_names_are_check_errors(self):
        """tunneld -t: an after cycle, an unknown name, or a tunnel after itself is an error
        naming FILE:LINE (a line of that tunnel) and NAME.after; tunneld does not start."""
        tmp = tunneltest.temp_dir(self)
        conf = os.path.join(tmp, "t.conf")
        base = {"ssh": tunneltest.SSH, "control_socket": "none"}
        cases = [
            ("cycle", [{"name": "a", "after": ["c"]}, {"name": "b", "after": ["a"]}, {"name": "c", "after": ["b"]}],
             r"is part of a cycle of tunnels waiting for each other: \w+ -> \w+ -> \w+ -> \w+", ("a", "b", "c")),
            ("unknown", [{"name": "a"}, {"name": "b", "after": ["a", "zzz"]}], r'no tunnel is named "zzz"', ("b",)),
            ("self", [{"name": "a", "after": ["a"]}], r"a tunnel cannot wait for itself", ("a",)),
        ]
        for what, tunnels, message, culprits in cases:
            with self.subTest(what):
                text = tunneltest.write_config(conf, base, self.sshd.tunnel_defaults(),
                                               [{"host": "127.0.0.1", **t} for t in tunnels])
                for args in (["-t"], []):
                    r = tunneltest.run_tunneld(*args, "-c", conf)
                    self.assertEqual(r.returncode, 1, f"{args}: {r.stdout} {r.stderr}")
                    self.assertNotIn("configuration OK", r.stdout)
                    errors = re.findall(rf"(?m)^(?:<3>)?{re.escape(conf)}:(\d+): (\w+)\.after: {message}$", r.stderr)
                    self.assertTrue(errors, r.stderr)
                    for line, name in errors:
                        self.assertIn(name, culprits, r.stderr)
                        first, last = group_lines(text, name)
                        self.assertTrue(first <= int(line) <= last, f"line {line} is not in {name}'s group "
                                                                    f"({first}-{last}):\n{r.stderr}")
                    self.assertRegex(r.stderr, rf"(?m)^(?:<3>)?tunneld: {re.escape(conf)}: \d+ errors?, ")


if __name__ == "__main__":
    tunneltest.main()
