#!/usr/bin/env python3
"""Supervision policy of tunneld, timed against the scripted fake ssh (no network).

Each test plans what every start of a fake ssh does (exit status, how long it lives, whether
it prints ssh's "Authenticated to" line), runs tunneld on it, and reads the fake's own start
log for timing and tunneld's log for its decisions. Tolerances are generous: the machine is
small and meson runs test files in parallel.

Tests that read many consecutive failures run tunneld with -d: a tunnel that fails often
("flapping") has its routine state messages logged at debug level only.
"""

import os
import re
import signal
import time
import unittest

import tunneltest
from tunneltest import FakeSSH, Tunneld, duration_slack, parse_duration, pid_alive, wait_until

DUR = r"[\d.]+ (?:ms|s)"  # a short duration as tunneld writes it: "850 ms", "1.2 s"
# "... restarting in 410 ms (failed start 3 in a row)"
BACKOFF_RE = r"restarting in ([\d.]+ (?:ms|s|min)(?: [\d.]+ s)?) \(failed start (\d+) in a row\)"


def tunnel(name, **settings):
    """A tunnel whose fake ssh is driven by the plan of host `name`."""
    return {"name": name, "host": name, **settings}


class PolicyTest(unittest.TestCase):
    def setUp(self):
        self.fake = tunneltest.use(self, FakeSSH())

    def tunneld(self, tunnels, **kw):
        return tunneltest.use(self, Tunneld(tunnels, fake=self.fake, **kw))

    def wait_starts(self, host, n, timeout=10):
        """Wait until host's fake ssh has started n times; return the starts."""
        return wait_until(lambda: len(self.fake.starts(host)) >= n and self.fake.starts(host), timeout,
                          what=f"{n} starts of {host}")

    def assert_starts_stay(self, host, n, settle=1.0):
        """host's fake ssh started exactly n times and does not start again within settle s."""
        time.sleep(settle)
        self.assertEqual(len(self.fake.starts(host)), n, f"starts of {host}")

    # ---- gatetime and fail_fast ----

    def test_fail_fast_first_start_fails(self):
        """fail_fast: a first start that dies before gatetime is FAILED, never retried, and
        tunneld itself keeps running."""
        self.fake.plan("ff", [(1, 0.05)])
        d = self.tunneld([tunnel("ff", gatetime=2, fail_fast=True, restart_delay=0.1)])
        d.wait_log(r"^<\d+>ff: ssh exited with status 1 .*never up.*not restarting \(fail_fast")
        self.assert_starts_stay("ff", 1)
        self.assertEqual(d.children(), [])
        self.assertIsNone(d.proc.poll(), "tunneld must keep running with a failed tunnel")

    def test_fail_fast_after_a_good_run_backs_off(self):
        """fail_fast only judges the first start: once a run passed gatetime, later quick
        failures back off and retry as usual."""
        self.fake.plan("ffok", [(1, 0.9, True), (1, 0.02)])
        d = self.tunneld([tunnel("ffok", gatetime=0.5, fail_fast=True, restart_delay=0.1, restart_delay_max=0.2)],
                         args=["-d"])
        self.wait_starts("ffok", 5)
        d.wait_log(rf"^<\d+>ffok: ssh exited with status 1 after {DUR} .*; restarting now")
        d.wait_log(r"^<\d+>ffok: .*restarting in .*\(failed start 2 in a row\)")
        self.assertNotIn("fail_fast", d.log())

    def test_fail_fast_survives_requested_restarts(self):
        """A restart tunneld asked for (here max_lifetime) does not make the next start a
        first one: after a good run, a quick failure of the new ssh backs off (the old one
        serving on meanwhile) instead of failing the tunnel for good."""
        self.fake.plan("ffl", [(0, 30, True), (1, 0.05)])
        d = self.tunneld([tunnel("ffl", gatetime=0.3, fail_fast=True, max_lifetime=1, restart_delay=0.1,
                                 restart_delay_max=0.2)], args=["-d"])
        m = d.wait_log(r"^<\d+>ffl: ssh reached max_lifetime 1(?:\.0)? s: restarting it")
        d.wait_log(r"^<4>ffl: ssh exited with status 1 .*; the old ssh \(pid \d+\) serves on; make-before-break "
                   r"tried again in ", after=m.end())
        self.wait_starts("ffl", 4)
        self.assertNotIn("fail_fast", d.log())
        self.assertEqual(tunneltest.status(d)["ffl"]["state"], "up")

    def test_fail_fast_judges_a_changed_configuration_again(self):
        """A reload that changes the tunnel makes its next start a first one again: if the
        new configuration fails at once, fail_fast gives it up (whereas a restart of the
        same configuration would back off, as above); the old ssh, which works, serves on."""
        self.fake.plan("ffc", [(0, 30, True), (1, 0.05)])
        settings = {"gatetime": 0.3, "fail_fast": True, "restart_delay": 0.1, "restart_delay_max": 0.2}
        d = self.tunneld([tunnel("ffc", **settings)], args=["-d"])
        m = d.wait_log(r"^<7>ffc: ssh has been up for gatetime ")
        # a change to ssh's command line (a supervision setting alone is applied in place)
        d.rewrite(tunnels=[tunnel("ffc", **{**settings, "server_alive_interval": 29})])
        d.reload()
        d.wait_log(r"^<3>ffc: ssh exited with status 1 .*; the old ssh \(pid \d+\) serves on, and is not restarted "
                   r"\(fail_fast: the first start failed", after=m.end())
        self.assert_starts_stay("ffc", 2)
        self.assertEqual(tunneltest.status(d)["ffc"]["state"], "up")

    def test_probe_restarts_back_off(self):
        """A run the probe ends is a failed start however long it was up: consecutive probe
        restarts count up and back off, never retrying at once forever."""
        self.fake.plan("pr", [(0, 30, True)])
        closed = tunneltest.free_port()     # nobody listens: every probe is refused
        d = self.tunneld([tunnel("pr", gatetime=0.1, restart_delay=0.2, restart_delay_max=5,
                                 probe={"connect": f"127.0.0.1:{closed}", "interval": 0.3, "timeout": 0.2,
                                        "failures": 2})], args=["-d"])
        after = 0
        delays = []
        for n in (1, 2, 3):
            m = d.wait_log(r"^<\d+>pr: .*\(probe: .*" + BACKOFF_RE, after=after, timeout=15)
            self.assertEqual(int(m.group(2)), n, m.group(0))
            delays.append(parse_duration(m.group(1)))
            after = m.end()
        self.assertGreater(delays[2], delays[0], f"no backoff growth: {delays}")

    def test_auth_failure_with_gatetime_zero_backs_off_to_the_cap(self):
        """gatetime 0 counts a run as good only if ssh did not say why it failed: a refused
        key backs off to restart_delay_max at once, as with any gatetime."""
        self.fake.plan("den", [(255, 0.02, "denied")])
        d = self.tunneld([tunnel("den", gatetime=0, restart_delay=0.1, restart_delay_max=2)], args=["-d"])
        m = d.wait_log(r"^<\d+>den: ssh exited with status 255 .*\(auth: .*" + BACKOFF_RE)
        self.assertEqual(m.group(2), "1")
        self.assertGreaterEqual(parse_duration(m.group(1)), 1.0, m.group(0))     # 2 s, jitter 0.5-1
        self.assert_starts_stay("den", 1, settle=0.8)

    def test_authenticated_tunnel_frees_its_start_slot(self):
        """max_parallel_starts counts ssh that are still connecting: one authenticated but
        never up (its local listener never came up) does not keep the next tunnel queued."""
        self.fake.plan("half", [(0, 30, "authonly")])
        self.fake.plan("next", [(0, 30, True)])
        d = self.tunneld([tunnel("half"), tunnel("next")], globals={"max_parallel_starts": 1})
        d.wait_up("next", timeout=5)
        self.assertEqual(d.count_log(r"^<\d+>half: up: "), 0)

    def test_no_start_after_sigterm(self):
        """SIGTERM while a restart is under way (SIGUSR1 asked for it: a second ssh takes the
        forwards over, make-before-break; both ignore SIGTERM): both are stopped (SIGKILL after
        stop_timeout), nothing starts again, exit 0."""
        self.fake.plan("late", [(0, 30, "auth", "noterm")])
        d = self.tunneld([tunnel("late")], globals={"stop_timeout": 0.5})
        d.wait_up("late", timeout=10)
        d.signal(signal.SIGUSR1)
        d.wait_log(r"^<\d+>late: SIGUSR1; make-before-break: a new ssh takes the forwards over: ssh pid \d+ "
                   r"\(start 2\)$")
        self.wait_starts("late", 2)
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(10), 0)
        self.assertEqual(len(self.fake.starts("late")), 2, d.log())
        self.assertEqual(d.count_log(r"starting again"), 0)
        self.assertEqual(self.fake.running(), [], "an ssh survived")

    def test_debug_survives_reload(self):
        """tunneld -d keeps logging at debug level after a reload (log_level = info in the
        file)."""
        self.fake.plan("dbg", [(0, 30, True)])
        d = self.tunneld([tunnel("dbg", gatetime=0.3)], globals={"log_level": "info"}, args=["-d"])
        d.wait_log(r"^<7>dbg: ssh has been up for gatetime ")
        d.reload()
        m = d.wait_log(r"^<\d+>reload done: ")
        d.signal(signal.SIGUSR1)    # a new run: its gatetime line is at debug level
        d.wait_log(r"^<7>dbg: ssh has been up for gatetime ", after=m.end())

    def test_removing_a_stopped_tunnel(self):
        """A disabled tunnel removed by a reload goes away cleanly (the sanitizer build
        checks it is freed: a leak fails tunneld's exit)."""
        self.fake.plan("keep", [(0, 30, True)])
        d = self.tunneld([tunnel("keep"), tunnel("off", enabled=False)])
        d.wait_up("keep", timeout=10)
        d.rewrite(tunnels=[tunnel("keep")])
        d.reload()
        d.wait_log(r"^<\d+>reload done: 1 tunnel \(was 2\), 0 changed")
        self.assertEqual(d.stop(), 0)

    def test_reload_reports_settings_it_cannot_apply(self):
        """Globals read only at start (control socket, its group and mode, ready) changed by a
        reload are reported, each naming the setting, and the running tunnel is untouched."""
        self.fake.plan("g", [(0, 30, True)])
        d = self.tunneld([tunnel("g")])
        m, _ = d.wait_up("g", timeout=10)
        moved = os.path.join(d.dir, "moved.sock")
        d.rewrite(globals={"control_socket": moved, "control_group": "root", "control_world_readable": True,
                           "ready": "all-up"})
        d.reload()
        done = d.wait_log(r"^<5>reload done: 1 tunnel \(was 1\), 0 changed$", after=m.end())
        text = d.log()[m.end():done.start()]
        for line in (rf"control_socket changed to {re.escape(moved)}: takes effect when tunneld restarts",
                     r"control_group changed to root: takes effect when tunneld restarts",
                     r"control_world_readable changed to true: takes effect when tunneld restarts",
                     r"ready/ready_timeout changed: they only matter at start"):
            self.assertRegex(text, rf"(?m)^<4>{line}", text)
        self.assertFalse(os.path.exists(moved), "the socket moved at run time")
        self.assertEqual(len(self.fake.starts("g")), 1)

    def test_queued_tunnels_start_in_configuration_order(self):
        """With max_parallel_starts = 1, tunnels start one after another in configuration
        order, each once the previous one's ssh has given up its slot."""
        names = ["q4", "q1", "q3", "q2"]      # configuration order, not alphabetical
        for name in names:
            self.fake.plan(name, [(1, 0.3)])   # never authenticates: holds its slot until it exits
        self.tunneld([tunnel(n, restart_delay=30, restart_delay_max=60) for n in names],
                     globals={"max_parallel_starts": 1})
        firsts = {n: self.wait_starts(n, 1)[0][0] for n in names}
        self.assertEqual(sorted(names, key=firsts.get), names, firsts)
        gaps = [firsts[b] - firsts[a] for a, b in zip(names, names[1:])]
        self.assertTrue(all(g >= 0.25 for g in gaps), f"a slot was shared: {gaps}")

    def test_ssh_that_cannot_run_is_class_exec(self):
        """An ssh that cannot be executed (here not executable) is failure class exec,
        logged with the reason, and backs off like any failed start."""
        ssh = os.path.join(tunneltest.temp_dir(self), "ssh")
        with open(ssh, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(ssh, 0o644)
        d = self.tunneld([tunnel("nx", restart_delay=0.2, restart_delay_max=1)], globals={"ssh": ssh}, args=["-d"])
        m = d.wait_log(r"^<\d+>nx: .*\(exec: .*" + BACKOFF_RE)
        self.assertEqual(m.group(2), "1")
        d.wait_log(r"^<\d+>nx: .*\(exec: .*\(failed start 2 in a row\)", after=m.end())

    # ---- restart policies ----

    def test_restart_always(self):
        """restart=always restarts after exit status 0 (ssh -N's answer to SIGTERM) and
        after 255 (ssh's own failure)."""
        self.fake.plan("al", [(0, 0.05), (255, 0.05), (0, 30)])
        d = self.tunneld([tunnel("al", restart="always", gatetime=1, restart_delay=0.1)])
        self.wait_starts("al", 3)
        m = d.wait_log(r"^<\d+>al: ssh exited with status 0 .*; restarting in ")
        d.wait_log(r"^<\d+>al: ssh exited with status 255 .*; restarting in ", after=m.end())
        self.assertEqual([e[2] for e in self.fake.exits("al")], [0, 255])

    def test_restart_on_failure(self):
        """restart=on-failure: exit status 0 is final (FAILED); a non-zero status or a
        signal is restarted."""
        self.fake.plan("zero", [(0, 0.05)])
        self.fake.plan("one", [(1, 0.05), (0, 30)])
        d = self.tunneld([tunnel("zero", restart="on-failure", gatetime=1, restart_delay=0.1),
                          tunnel("one", restart="on-failure", gatetime=1, restart_delay=0.1)])
        d.wait_log(r"^<\d+>zero: ssh exited with status 0 .*not restarting \(restart=on-failure")
        starts = self.wait_starts("one", 2)
        os.kill(starts[1][1], signal.SIGKILL)
        d.wait_log(r"^<\d+>one: ssh was killed by signal KILL .*restarting")
        self.wait_starts("one", 3)
        self.assert_starts_stay("zero", 1, settle=0.5)
        self.assertIn("one: ssh exited with status 1", d.log())

    def test_restart_never(self):
        """restart=never: exit status 0, status 1 and a signal all end in FAILED, one start
        each."""
        for host in ("n0", "n1"):
            self.fake.plan(host, [(int(host[1]), 0.05)])
        self.fake.plan("nk", [(0, 30)])
        d = self.tunneld([tunnel(h, restart="never", gatetime=1, restart_delay=0.1) for h in ("n0", "n1", "nk")])
        (_, pid), = self.wait_starts("nk", 1)
        os.kill(pid, signal.SIGKILL)
        d.wait_log(r"^<\d+>n0: ssh exited with status 0 .*not restarting \(restart=never\)")
        d.wait_log(r"^<\d+>n1: ssh exited with status 1 .*not restarting \(restart=never\)")
        d.wait_log(r"^<\d+>nk: ssh was killed by signal KILL .*not restarting \(restart=never\)")
        time.sleep(0.8)
        for host in ("n0", "n1", "nk"):
            self.assertEqual(len(self.fake.starts(host)), 1, host)
        self.assertEqual(d.children(), [])

    # ---- backoff ----

    def test_backoff_grows_to_the_cap_without_spinning(self):
        """Failed starts back off restart_delay * 2^(n-1), jittered into [base/2, base] and
        capped at restart_delay_max: delays never shrink before the cap, stay within
        [cap/2, cap] at it, and the tunnel never restarts in a tight loop."""
        delay, cap = 0.2, 0.8
        self.fake.plan("bo", [(1, 0.01)])
        d = self.tunneld([tunnel("bo", gatetime=5, restart_delay=delay, restart_delay_max=cap)], args=["-d"])
        starts = self.wait_starts("bo", 8, timeout=20)
        times = [t for t, _ in starts][:8]

        # What tunneld decided: exact delays, one per failed start, counted 1, 2, 3, ...
        decided = [(parse_duration(x), int(n)) for x, n in d.findall(r"^<\d+>bo: .*" + BACKOFF_RE)][:7]
        self.assertEqual([n for _, n in decided], list(range(1, len(decided) + 1)))
        for got, n in decided:
            base = min(delay * 2 ** (n - 1), cap)
            self.assertGreaterEqual(got, base / 2 - duration_slack(got), f"failure {n}: {decided}")
            self.assertLessEqual(got, base + duration_slack(got), f"failure {n}: {decided}")

        # What happened: the fake's own clock. An interval is a delay plus the short run.
        intervals = [b - a for a, b in zip(times, times[1:])]
        msg = f"intervals {[round(i, 3) for i in intervals]}, decided {decided}"
        for (got, _), interval in zip(decided, intervals):
            self.assertGreaterEqual(interval, got - 0.02, msg)
            self.assertLessEqual(interval, got + 0.4, msg)
        for a, b in zip(intervals[:3], intervals[1:3]):  # doubling: d_n <= base_n <= d_n+1
            self.assertLessEqual(a, b + 0.15, msg)
        self.assertTrue(all(i <= cap + 0.4 for i in intervals), msg)
        self.assertTrue(all(i >= cap / 2 - 0.02 for i in intervals[2:]), msg)

        # No spin: 7 delays of at least 0.1, 0.2, 0.4, 0.4, ... and at most 3 starts a second now.
        self.assertGreaterEqual(times[-1] - times[0], 0.1 + 0.2 + 0.4 * 5 - 0.05, msg)
        n = len(self.fake.starts("bo"))
        time.sleep(1.0)
        self.assertLessEqual(len(self.fake.starts("bo")) - n, 3, "starts in one second at the cap")

    def test_gatetime_zero_restarts_every_restart_delay(self):
        """With gatetime 0 every run that came up counts as good: an ssh that comes up and
        exits at once restarts every restart_delay, evenly, with no growth and no hot loop."""
        delay = 0.3
        # up for 0.15 s: long enough for a loaded tunneld to see it up (its control socket
        # answered), well within restart_delay, which times the restarts
        self.fake.plan("g0", [(1, 0.15, True)])
        d = self.tunneld([tunnel("g0", gatetime=0, restart_delay=delay, restart_delay_max=5)])
        times = [t for t, _ in self.wait_starts("g0", 9, timeout=15)][:9]
        intervals = [b - a for a, b in zip(times, times[1:])]
        msg = f"intervals {[round(i, 3) for i in intervals]}"
        # each start is stamped by the fake itself, after its own exec: under load one stamp
        # can be late and the next on time, so single intervals are noisy; their mean is not
        mean = sum(intervals) / len(intervals)
        self.assertGreaterEqual(mean, delay - 0.03, msg)
        self.assertLessEqual(mean, delay + 0.15, msg)
        for i in intervals:
            self.assertGreaterEqual(i, delay / 2, msg)      # never a hot loop
            # one interval may be late by a loaded machine's scheduling (0.78 s seen under
            # ASan at a load of 12); growth is what the means below catch
            self.assertLessEqual(i, delay * 3, msg)
        self.assertLessEqual(sum(intervals[-3:]) / 3, sum(intervals[:3]) / 3 + 0.15, "delays grow: " + msg)
        self.assertNotIn("failed start", d.log())
        d.wait_log(rf"^<\d+>g0: ssh exited with status 1 after {DUR} .*; restarting in \d+ ms$")

    def test_max_starts(self):
        """max_starts=3: the third start's exit is final, whatever restart says."""
        self.fake.plan("ms", [(1, 0.01)])
        d = self.tunneld([tunnel("ms", max_starts=3, gatetime=0, restart_delay=0.05)])
        d.wait_log(r"^<\d+>ms: ssh exited with status 1 .*not restarting \(started 3 times, max_starts 3\)")
        self.assert_starts_stay("ms", 3, settle=0.6)

    def test_healthy_run_restarts_at_once_and_resets_backoff(self):
        """A run longer than gatetime that ends is restarted at once, and it resets the
        failure count: the next failure backs off from restart_delay again."""
        self.fake.plan("hr", [(1, 0.02)] * 3 + [(0, 0.8, True), (1, 0.02), (0, 30)])
        d = self.tunneld([tunnel("hr", gatetime=0.5, restart_delay=0.1, restart_delay_max=1.6)], args=["-d"])
        starts = self.wait_starts("hr", 6, timeout=15)
        healthy_exit = self.fake.exits("hr")[3]
        self.assertEqual(healthy_exit[1], starts[3][1])
        self.assertLess(starts[4][0] - healthy_exit[0], 0.5, "restart after a healthy run")
        m = d.wait_log(r"^<\d+>hr: .*\(failed start 3 in a row\)")
        m = d.wait_log(rf"^<\d+>hr: ssh exited with status 0 after {DUR} .*; restarting now: ssh pid \d+", after=m.end())
        m = d.wait_log(r"^<\d+>hr: .*" + BACKOFF_RE, after=m.end())
        self.assertEqual(m.group(2), "1")
        self.assertLessEqual(parse_duration(m.group(1)), 0.1 + duration_slack(0.1))

    # ---- UP ----

    def test_up_only_after_authenticated(self):
        """A tunnel is UP only once ssh says "Authenticated to", its control socket answers,
        and ssh answered "open" for every forward: one that never authenticates, one whose
        control socket never appears and one whose forwards ssh refuses are not up."""
        self.fake.plan("quiet", [(0, 30)])
        self.fake.plan("authd", [(0, 30, True)])
        self.fake.plan("remote", [(0, 30, "auth", "refuse")])
        self.fake.plan("nobind", [(0, 30, "authonly")])
        d = self.tunneld([tunnel("quiet"), tunnel("authd"),
                          tunnel("remote", remote_forwards=["127.0.0.1:23456:127.0.0.1:22"]),
                          tunnel("nobind", local_forwards=["127.0.0.1:23457:127.0.0.1:22"])])
        up = d.wait_log(r"^<\d+>authd: up: ssh \(pid (\d+)\) authenticated after ")
        auth = d.wait_log(r'^<\d+>authd: ssh: Authenticated to authd \(\[127\.0\.0\.1\]:22\) using "publickey"\.$')
        self.assertLess(auth.start(), up.start(), "UP logged before ssh's Authenticated line")
        self.assertEqual(int(up.group(1)), self.fake.starts("authd")[0][1])
        self.wait_starts("quiet", 1)
        self.wait_starts("remote", 1)
        self.wait_starts("nobind", 1)
        d.wait_log(r"^<4>remote: forward R 127\.0\.0\.1:23456:127\.0\.0\.1:22 failed: Port forwarding failed; "
                   r"asked for again in ")
        d.wait_log(r"^<4>remote: degraded: ssh \(pid \d+\) runs, but 1 of 1 forwards failed")
        time.sleep(1.0)
        # authenticated is not enough: the control socket must answer, and every forward be open
        self.assertNotRegex(d.log(), r"(quiet|remote|nobind): up:")
        for host in ("quiet", "authd", "remote", "nobind"):
            argv = self.fake.argv(host)
            self.assertIn("LogLevel=VERBOSE", argv)
            self.assertIn("ControlMaster=yes", argv)
        self.assertEqual(self.fake.argv("authd")[-2:], ["--", "authd"])

    # ---- stopping ----

    def test_sigterm_stops_every_child_and_exits_0(self):
        """SIGTERM: tunneld TERMs every ssh, waits for them, logs the end and exits 0,
        leaving no process behind."""
        for host in ("s1", "s2"):
            self.fake.plan(host, [(0, 30, True)])
        d = self.tunneld([tunnel("s1"), tunnel("s2")])
        d.wait_up("s1", timeout=10)
        d.wait_up("s2", timeout=10)
        pids = d.children()
        self.assertEqual(len(pids), 2)
        t0 = time.monotonic()
        self.assertEqual(d.stop(5), 0)
        self.assertLess(time.monotonic() - t0, 3)
        for host in ("s1", "s2"):
            self.assertEqual(len(self.fake.terms(host)), 1, f"{host} got SIGTERM once")
        self.assertFalse([p for p in pids if pid_alive(p)])
        self.assertEqual(self.fake.running(), [])
        self.assertRegex(d.log(), r"(?m)^<\d+>s1: stopped: ssh ended after .*\(tunneld is stopping\)$")
        self.assertRegex(d.log(), r"(?m)^<\d+>every tunnel stopped; exiting$")

    def test_sigterm_ignored_ssh_gets_sigkill_after_stop_timeout(self):
        """An ssh that ignores SIGTERM is SIGKILLed (with its process group) after
        stop_timeout, and tunneld still exits 0 promptly."""
        self.fake.plan("stubborn", [(0, 30, True, "noterm")])
        d = self.tunneld([tunnel("stubborn")], globals={"stop_timeout": 0.5})
        d.wait_up("stubborn", timeout=10)
        t0 = time.monotonic()
        self.assertEqual(d.stop(10), 0)
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.45)
        self.assertLess(took, 3)
        d.wait_log(r"^<\d+>stubborn: ssh did not exit within 500 ms of SIGTERM: sending SIGKILL$")
        self.assertEqual(self.fake.terms("stubborn"), [])
        self.assertEqual(self.fake.running(), [], "the fake or its sleep survived")

    # ---- configuration ----

    def test_invalid_config_exits_1_naming_file_and_line(self):
        """An invalid configuration: exit 1 with FILE:LINE: setting: why, both with -t and
        when starting, and no ssh is ever started."""
        path = os.path.join(tunneltest.temp_dir(self), "bad.conf")
        with open(path, "w") as f:
            f.write(f'ssh = "{FakeSSH.path}";\n'
                    "tunnels = (\n"
                    "  {\n"
                    '    name = "bad";\n'
                    '    restart = "sometimes";\n'
                    "    gatetime = -1;\n"
                    '    host = "bad";\n'
                    "  }\n"
                    ");\n")
        env = dict(os.environ, FAKE_SSH_DIR=self.fake.dir)
        for args in (["-t"], []):
            with self.subTest(args=args):
                r = tunneltest.run_tunneld(*args, "-c", path, env=env)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(f"{path}:5: bad.restart: \"sometimes\" must be", r.stderr)
                self.assertIn(f"{path}:6: bad.gatetime: must be from", r.stderr)
                self.assertRegex(r.stderr, "2 errors, " + ("configuration invalid" if args else "not starting"))
        self.assertEqual(self.fake.starts("bad"), [])

        with open(path, "w") as f:
            f.write('tunnels = (\n  { name = "x"; host = "x" }\n  { name = "y"; }\n);\n')
        r = tunneltest.run_tunneld("-t", "-c", path)
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, rf"{re.escape(path)}:\d+: syntax error")


if __name__ == "__main__":
    tunneltest.main()
