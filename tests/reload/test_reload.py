#!/usr/bin/env python3
"""Configuration reload with real ssh: tunnels added, removed, changed and unchanged, a
rejected file, and supervision settings applied in place (the running ssh and its timers
kept), checked by bytes through the forwards, ssh pids, and `tunnelctl --json status`.
(A burst of SIGHUPs is the fault matrix's: tests/faults/test_faults.py, test_sighup_burst;
forwards changed on the running ssh: tests/e2e/test_connection.py.)

One sshd and one echo server serve the whole class; each test runs its own tunneld with its
own control socket and notify socket.
"""

import os
import re
import signal
import time
import unittest

import tunneltest
from tunneltest import (EchoServer, SSHServer, UP_TIMEOUT, assert_echo, free_port, pid_alive, pids, port_accepts,
                        status, status_reply, tunnelctl, use, wait_all, wait_state, wait_until, zombie_children)
from systemdtest import NotifySocket, SystemdTunneld, fd_count


def tunneltest_comment(text):
    """A measurement, as a TAP comment line."""
    print(f"# {text}", flush=True)


class ReloadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sshd = use(cls, SSHServer())
        cls.echo = use(cls, EchoServer())

    def setUp(self):
        self.tmp = tunneltest.temp_dir(self)
        self.ctl = os.path.join(self.tmp, "control")
        self.notify = use(self, NotifySocket())

    # -- helpers --

    def tunnel(self, name, port, **settings):
        return {"name": name, "host": "127.0.0.1",
                "local_forwards": [self.echo.forward(port)], **settings}

    def tunneld(self, tunnels, args=(), **global_settings):
        defaults = {**self.sshd.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2}
        globals_ = {"ssh": tunneltest.SSH, "control_socket": self.ctl, "stop_timeout": 3, **global_settings}
        d = use(self, SystemdTunneld(tunnels, defaults, globals_, systemd_env=self.notify.env, args=args))
        self.notify.wait_kind("READY")  # the control socket listens by then
        return d

    def rewrite(self, d, tunnels=None, text=None, **global_settings):
        """Replace d's configuration file at once (rename), by tunnels or by text; return the text."""
        if text is None:
            text = tunneltest.render_config({**d.globals, **global_settings}, d.defaults, tunnels)
        tmp = d.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, d.config_path)
        return text

    def reload(self):
        """tunnelctl reload, which returns once the new configuration is applied."""
        r = tunnelctl(self.ctl, "reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def assert_closed(self, port):
        wait_until(lambda: not port_accepts(port, timeout=0.5), 5, what=f"port {port} to close")

    # -- tests --

    def test_added_tunnel_starts(self):
        """A tunnel added to the file starts on reload and carries bytes; the existing one keeps its ssh."""
        pa, pb = free_port(), free_port()
        d = self.tunneld([self.tunnel("a", pa)])
        wait_all(self.ctl, ["a"])
        before = pids(self.ctl)
        self.rewrite(d, [self.tunnel("a", pa), self.tunnel("b", pb)])
        self.reload()
        now = status(self.ctl)
        self.assertIn(now["b"]["state"], ("starting", "up"), "b not started when reload returned")
        wait_all(self.ctl, ["a", "b"])
        after = pids(self.ctl)
        self.assertEqual(after["a"], before["a"])
        assert_echo(pb, attempt_timeout=2)
        assert_echo(pa, attempt_timeout=2)
        self.assertRegex(d.log(), r"(?m)^<5>b: added to the configuration$")
        self.assertRegex(d.log(), r"(?m)^<5>reload done: 2 tunnels \(was 1\), 0 changed$")

    def test_removed_tunnel_stops(self):
        """A removed tunnel's ssh ends (reaped), its port closes, it leaves the status; the other keeps its ssh."""
        pa, pb = free_port(), free_port()
        d = self.tunneld([self.tunnel("a", pa), self.tunnel("b", pb)])
        wait_all(self.ctl, ["a", "b"])
        before = pids(self.ctl)
        assert_echo(pb, attempt_timeout=2)
        self.rewrite(d, [self.tunnel("a", pa)])
        self.reload()
        self.assertNotIn("b", status(self.ctl))
        wait_until(lambda: not pid_alive(before["b"]), 5, what=f"b's ssh (pid {before['b']}) to end")
        self.assert_closed(pb)
        self.assertEqual(zombie_children(d.pid), [])
        self.assertEqual(d.children(), [before["a"]])
        self.assertEqual(status(self.ctl)["a"]["pid"], before["a"])
        assert_echo(pa, attempt_timeout=2)
        d.wait_log(r"^<5>b: removed from the configuration$")
        d.wait_log(r"^<5>b: stopped")

    def test_changed_forward_moves_on_the_same_ssh(self):
        """Changed port: new spec shown when tunnelctl reload returns, the same ssh serves the
        new port (opened over its control socket), the old port closed."""
        p1, p2, pb = free_port(), free_port(), free_port()
        d = self.tunneld([self.tunnel("a", p1), self.tunnel("b", pb)])
        wait_all(self.ctl, ["a", "b"])
        before = pids(self.ctl)
        assert_echo(p1, attempt_timeout=2)
        self.rewrite(d, [self.tunnel("a", p2), self.tunnel("b", pb)])
        self.reload()
        now = status(self.ctl)
        self.assertEqual(now["a"]["forwards"]["local"], [self.echo.forward(p2)])
        self.assertIn(now["a"]["state"], ("starting", "up"))
        self.assertEqual(now["b"]["pid"], before["b"])
        wait_all(self.ctl, ["a", "b"])
        after = pids(self.ctl)
        self.assertEqual(after, before, "an ssh was restarted")
        assert_echo(p2, attempt_timeout=2)
        self.assert_closed(p1)
        self.assertRegex(d.log(), r"(?m)^<5>reload done: 2 tunnels \(was 2\), 1 changed$")

    def test_unchanged_tunnel_untouched(self):
        """Reloads leaving a tunnel's settings alone keep its ssh pid, counters and state (reorder, stop_timeout)."""
        pa, pb, pb2 = free_port(), free_port(), free_port()
        d = self.tunneld([self.tunnel("a", pa), self.tunnel("b", pb)])
        wait_all(self.ctl, ["a", "b"])
        before = status(self.ctl)["a"]
        offset = len(d.log())
        self.reload()
        self.rewrite(d, text="# reordered\n" + tunneltest.render_config(
            {**d.globals, "stop_timeout": 4}, d.defaults, [self.tunnel("b", pb2), self.tunnel("a", pa)]))
        os.kill(d.pid, signal.SIGHUP)
        d.wait_log(r"^<5>reload done: 2 tunnels \(was 2\), 1 changed$")
        wait_all(self.ctl, ["a", "b"])
        assert_echo(pa, attempt_timeout=2)
        after = status(self.ctl)["a"]
        for key in ("pid", "state", "starts", "restarts", "consecutive_failures", "failures", "last_exit", "forwards"):
            self.assertEqual(after[key], before[key], key)
        self.assertGreater(after["since"], before["since"], "a changed state meanwhile")
        self.assertEqual(d.findall(r"^<\d>a: .*", after=offset), [], "a logged something")

    def test_invalid_file_changes_nothing(self):
        """A bad file: errors logged as FILE:LINE, pids kept, READY sent, tunnelctl reload exits 1 with the errors."""
        pa, pb = free_port(), free_port()
        d = self.tunneld([self.tunnel("a", pa), self.tunnel("b", pb)])
        wait_all(self.ctl, ["a", "b"])
        before = pids(self.ctl)
        i, _ = self.notify.wait_kind("READY")
        good = d.config_text
        bad = self.rewrite(d, text=good.replace("tunnels = (", 'colour = "red";\ntunnels = (', 1)
                           .replace(f'"127.0.0.1:{pb}:', f'"127.0.0.1:{pb}0000:', 1))
        expected = [rf"{re.escape(d.config_path)}:{tunneltest.line_of(bad, 'colour')}: colour: unknown setting",
                    rf"{re.escape(d.config_path)}:{tunneltest.line_of(bad, f'{pb}0000')}: b\.local_forwards\b.*"]
        failed = "reload failed (2 errors, see the journal), running the previous configuration; 2/2 tunnels up"

        d.reload()
        j, _ = self.notify.wait_kind("RELOADING", after=i + 1)
        k, ready = self.notify.wait_kind("READY", after=j + 1)
        self.assertEqual(ready.status, failed)
        m = d.wait_log(rf"^<3>reload rejected: 2 errors in {re.escape(d.config_path)}; "
                       r"the running tunnels are unchanged$")
        for regex in expected:
            self.assertRegex(d.log()[:m.start()], rf"(?m)^<3>{regex}$")

        r = tunnelctl(self.ctl, "reload")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        for regex in expected:
            self.assertRegex(r.stderr, rf"(?m)^{regex}$")
        self.assertRegex(r.stderr, r"(?m)^tunnelctl: reload rejected: the running tunnels are unchanged$")
        _, ready = self.notify.wait_kind("READY", after=k + 1)
        self.assertEqual(ready.status, failed)

        self.rewrite(d, text=good.replace("tunnels = (", "tunnels = ((", 1))
        r = tunnelctl(self.ctl, "reload")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, rf"(?m)^{re.escape(d.config_path)}:\d+: syntax error")

        now = status(self.ctl)
        self.assertEqual({n: now[n]["pid"] for n in before}, before)
        self.assertEqual(sorted(d.children()), sorted(before.values()))
        assert_echo(pa, attempt_timeout=2)
        assert_echo(pb, attempt_timeout=2)

        self.rewrite(d, text=good)
        self.reload()
        self.assertEqual(status_reply(self.ctl)["status"], "2/2 tunnels up")
        self.assertEqual({n: t["pid"] for n, t in status(self.ctl).items()}, before)

    def up_since(self, name):
        """When (time.monotonic()) name came up: status's "since" is the time in its state."""
        t = status(self.ctl)[name]
        self.assertEqual(t["state"], "up", t)
        return time.monotonic() - t["since"]

    def started_at(self, name):
        """When (time.monotonic()) name's ssh started: status's "uptime" counts from the spawn."""
        t = status(self.ctl)[name]
        self.assertIsNotNone(t["uptime"], t)
        return time.monotonic() - t["uptime"]

    def test_supervision_settings_keep_the_ssh(self):
        """A reload that changes only restart_delay, restart_delay_max, gatetime, the probe,
        max_lifetime and on_state_change keeps the running ssh (same pid, bytes flow, no
        restart), says so, and the new settings are in force: the status shows them, the
        probe runs against the forward without ending the tunnel, and the new hook runs on
        the next change."""
        pa = free_port()
        hook_dir = os.path.join(self.tmp, "hook")
        os.mkdir(hook_dir)
        hook = os.path.join(hook_dir, "hook")
        with open(hook, "w") as f:
            f.write(f'#!/bin/sh\necho "$TUNNEL_NAME $TUNNEL_STATE" >> "{hook_dir}/runs"\n')
        os.chmod(hook, 0o700)
        d = self.tunneld([self.tunnel("a", pa)])
        wait_all(self.ctl, ["a"])
        before = pids(self.ctl)
        assert_echo(pa, attempt_timeout=2)
        offset = len(d.log())
        self.rewrite(d, [self.tunnel("a", pa, restart_delay=0.5, restart_delay_max=7, gatetime=2.5, max_lifetime=3600,
                                     on_state_change=hook,
                                     probe={"connect": f"127.0.0.1:{pa}", "interval": 0.5, "timeout": 0.4,
                                            "failures": 2})])
        self.reload()
        d.wait_log(rf"^<6>a: supervision settings changed: applied to the running ssh \(pid {before['a']}\)$",
                   after=offset)
        d.wait_log(r"^<5>reload done: 1 tunnel \(was 1\), 1 changed$", after=offset)
        time.sleep(1.5)  # several probe intervals
        t = status(self.ctl)["a"]
        self.assertEqual((t["state"], t["pid"], t["starts"], t["restarts"]), ("up", before["a"], 1, 0), t)
        self.assertEqual(t["gatetime"], 2.5, t)
        self.assertEqual(d.children(), [before["a"]])
        assert_echo(pa, attempt_timeout=2)
        self.assertEqual(d.findall(r"^<\d>a: (?!supervision settings changed).*", after=offset), [],
                         "a logged more than the change")
        self.assertFalse(os.path.exists(os.path.join(hook_dir, "runs")), "the hook ran with no change of state")

        # the new on_state_change runs on the next change (a stop and a start: a new ssh)
        self.assertEqual(tunnelctl(self.ctl, "stop", "a").returncode, 0)
        wait_state(self.ctl, "a", "stopped", timeout=10)
        r = tunnelctl(self.ctl, "start", "a")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_all(self.ctl, ["a"])
        after = pids(self.ctl)
        self.assertNotEqual(after["a"], before["a"])
        wait_until(lambda: "a up\n" in tunneltest._read_text(os.path.join(hook_dir, "runs")), 10,
                   what="the new hook to run for a up")
        assert_echo(pa, attempt_timeout=2)

        # a probe changed by a reload runs against the running ssh: one that fails ends it
        dead = free_port()
        offset = len(d.log())
        self.rewrite(d, [self.tunnel("a", pa, restart_delay=0.5, restart_delay_max=7, gatetime=2.5, max_lifetime=3600,
                                     on_state_change=hook,
                                     probe={"connect": f"127.0.0.1:{dead}", "interval": 0.5, "timeout": 0.4,
                                            "failures": 1})])
        self.reload()
        d.wait_log(rf"^<6>a: supervision settings changed: applied to the running ssh \(pid {after['a']}\)$",
                   after=offset)
        d.wait_log(rf"^<4>a: probe 127\.0\.0\.1:{dead} failed 1 times in a row \(connect: Connection refused\) "
                   rf"although ssh runs: restarting ssh \(SIGTERM to pid {after['a']}\b", after=offset, timeout=5)
        d.wait_log(r"^<4>a: ssh exited with status \d+ after .*\(probe: ", after=offset, timeout=10)
        self.assertEqual(status(self.ctl)["a"]["last_exit"]["failure"], "probe")
        self.assertFalse(pid_alive(after["a"]))

    def test_gatetime_lowered_by_reload_rearms_the_gate(self):
        """A run up on gatetime 30 (after a failed one, so consecutive_failures shows 1):
        reloaded to a gatetime it has already been up for, the gate passes at once (the run
        is a success: consecutive_failures 0); reloaded to a longer one, it passes when the
        run has been up for the new gatetime, counted from UP, not from the reload."""
        pa, pb = free_port(), free_port()
        tunnels = [self.tunnel("short", pa, gatetime=30), self.tunnel("left", pb, gatetime=30)]
        d = self.tunneld(tunnels, args=["-d"])
        wait_all(self.ctl, ["short", "left"])
        first = pids(self.ctl)
        for name in first:
            os.kill(first[name], signal.SIGKILL)  # up for less than gatetime: a failure
        def again():
            st = status(self.ctl)
            return all(st[n]["state"] == "up" and st[n]["pid"] != first[n] for n in first) and st
        st = wait_until(again, UP_TIMEOUT, what="both up again with a new ssh")
        for name in first:
            self.assertEqual((st[name]["consecutive_failures"], st[name]["failures"]), (1, {"killed": 1}), st[name])
        wait_until(lambda: status(self.ctl)["short"]["since"] >= 1.2, 5, what="short up for 1.2 s")
        up_left = self.up_since("left")
        uptime = time.monotonic() - up_left
        if uptime > 3:
            self.skipTest(f"too slow: left was up for {uptime:.1f} s already, more than the gatetime to test")
        pid_short, pid_left = st["short"]["pid"], st["left"]["pid"]
        offset = len(d.log())
        self.rewrite(d, [self.tunnel("short", pa, gatetime=1), self.tunnel("left", pb, gatetime=4)])
        t_reload = time.monotonic()
        self.reload()
        took = time.monotonic() - t_reload
        now = status(self.ctl)
        self.assertEqual((now["short"]["pid"], now["left"]["pid"]), (pid_short, pid_left))
        self.assertEqual(now["short"]["consecutive_failures"], 0, f"short's gate not passed at the reload: {now['short']}")
        self.assertRegex(d.log()[offset:], r"(?m)^<7>short: ssh has been up for gatetime 1(?:\.0)? s: "
                                           r"this start counts as a success$")
        tunneltest_comment(f"gatetime 30 -> 1 s at an uptime of 1.2 s: gate passed when tunnelctl reload "
                           f"returned ({took:.2f} s)")
        # left: 4 s from its UP (up_left is late by a status query's latency, at most)
        shown = status(self.ctl)["left"]["consecutive_failures"]
        if time.monotonic() < up_left + 3:
            self.assertEqual(shown, 1, "left's gate passed early")
        wait_until(lambda: status(self.ctl)["left"]["consecutive_failures"] == 0, 10, interval=0.02,
                   what="left's gate to pass")
        passed = time.monotonic() - up_left
        tunneltest_comment(f"gatetime 30 -> 4 s at an uptime of {uptime:.1f} s: gate passed {passed:.2f} s after UP")
        self.assertGreater(passed, 4 - 1, "left's gate passed before it was up for 4 s")
        self.assertLess(passed, 4 + 1.5, "left's gate was not re-armed for what was left of it")
        d.wait_log(r"^<7>left: ssh has been up for gatetime 4(?:\.0)? s: this start counts as a success$",
                   after=offset)
        now = status(self.ctl)
        self.assertEqual((now["short"]["pid"], now["left"]["pid"]), (pid_short, pid_left))
        assert_echo(pa, attempt_timeout=2)
        assert_echo(pb, attempt_timeout=2)

    def test_max_lifetime_lowered_by_reload(self):
        """max_lifetime lowered by a reload: below the run's age, the run ends at once (a
        requested restart, a new ssh, no failure); above it, the run ends when it reaches
        the new max_lifetime counted from its start, not from the reload."""
        pa, pb = free_port(), free_port()
        d = self.tunneld([self.tunnel("old", pa, max_lifetime=600), self.tunnel("left", pb, max_lifetime=600)])
        wait_all(self.ctl, ["old", "left"])
        first = pids(self.ctl)
        wait_until(lambda: all(t["uptime"] >= 3 for t in status(self.ctl).values()), 10, what="both up for 3 s")
        started_left = self.started_at("left")
        offset = len(d.log())
        self.rewrite(d, [self.tunnel("old", pa, max_lifetime=1), self.tunnel("left", pb, max_lifetime=6)])
        t_reload = time.monotonic()
        self.reload()
        d.wait_log(rf"^<6>old: supervision settings changed: applied to the running ssh \(pid {first['old']}\)$",
                   after=offset)
        d.wait_log(r"^<5>old: ssh reached max_lifetime 1(?:\.0)? s: restarting it$", after=offset, timeout=5)
        ended = time.monotonic() - t_reload
        tunneltest_comment(f"max_lifetime 600 -> 1 s at an age of 3+ s: restart {ended:.2f} s after the reload")
        self.assertLess(ended, 1.5, "the run outlived its new max_lifetime")
        wait_state(self.ctl, "old", "up", not_pid=first["old"])
        # make-before-break: the old ssh goes once it carries no connection (checked each second)
        wait_until(lambda: not pid_alive(first["old"]), 5, what="the old ssh to end, drained")
        st = status(self.ctl)["old"]
        self.assertEqual((st["last_exit"]["requested"], st["failures"], st["consecutive_failures"]), (True, {}, 0), st)
        assert_echo(pa, attempt_timeout=2)

        d.wait_log(r"^<5>left: ssh reached max_lifetime 6(?:\.0)? s: restarting it$", after=offset, timeout=15)
        at = time.monotonic() - started_left
        tunneltest_comment(f"max_lifetime 600 -> 6 s at an age of {t_reload - started_left:.1f} s: "
                           f"restart at an age of {at:.2f} s")
        self.assertGreater(at, 6 - 1, "the run ended before it reached max_lifetime")
        self.assertLess(at, 6 + 1.5, "max_lifetime counted from the reload, not from the start")
        wait_state(self.ctl, "left", "up", not_pid=first["left"])
        wait_until(lambda: not pid_alive(first["left"]), 5, what="left's old ssh to end, drained")
        st = status(self.ctl)["left"]
        self.assertEqual((st["last_exit"]["requested"], st["failures"]), (True, {}), st)
        assert_echo(pb, attempt_timeout=2)


if __name__ == "__main__":
    tunneltest.main()
