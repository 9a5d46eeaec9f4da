#!/usr/bin/env python3
"""Configuration reload with real ssh: tunnels added, removed, changed and unchanged, a
rejected file, and a burst of SIGHUPs, checked by bytes through the forwards, ssh pids, and
`tunnelctl --json status`.

One sshd and one echo server serve the whole class; each test runs its own tunneld with its
own control socket and notify socket.
"""

import os
import re
import signal
import time
import unittest

import tunneltest
from tunneltest import EchoServer, SSHServer, echo_roundtrip, free_port, pid_alive, port_accepts, use, wait_until
from systemdtest import NotifySocket, SystemdTunneld, fd_count, status_json, tunnelctl, zombies_of

UP_TIMEOUT = 20  # ssh's connect and key exchange on a loaded 2-core machine


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
                "local_forwards": [f"127.0.0.1:{port}:127.0.0.1:{self.echo.port}"], **settings}

    def tunneld(self, tunnels, **global_settings):
        defaults = {**self.sshd.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2}
        globals_ = {"ssh": tunneltest.SSH, "control_socket": self.ctl, "stop_timeout": 3, **global_settings}
        d = use(self, SystemdTunneld(tunnels, defaults, globals_, systemd_env=self.notify.env))
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

    def status(self):
        return status_json(self.ctl)["by_name"]

    def wait_up(self, *names):
        """Wait until every named tunnel is up; return {name: pid}."""
        def up():
            tunnels = self.status()
            if all(n in tunnels and tunnels[n]["state"] == "up" for n in names):
                return {n: tunnels[n]["pid"] for n in names}
            return None
        return wait_until(up, UP_TIMEOUT, interval=0.1, what=f"{', '.join(names)} up")

    def assert_echo(self, port):
        wait_until(lambda: echo_roundtrip(port, timeout=2), 10, what=f"an echo through port {port}")

    def assert_closed(self, port):
        wait_until(lambda: not port_accepts(port, timeout=0.5), 5, what=f"port {port} to close")

    # -- tests --

    def test_added_tunnel_starts(self):
        """A tunnel added to the file starts on reload and carries bytes; the existing one keeps its ssh."""
        pa, pb = free_port(), free_port()
        d = self.tunneld([self.tunnel("a", pa)])
        before = self.wait_up("a")
        self.rewrite(d, [self.tunnel("a", pa), self.tunnel("b", pb)])
        self.reload()
        now = self.status()
        self.assertIn(now["b"]["state"], ("starting", "up"), "b not started when reload returned")
        after = self.wait_up("a", "b")
        self.assertEqual(after["a"], before["a"])
        self.assert_echo(pb)
        self.assert_echo(pa)
        self.assertRegex(d.log(), r"(?m)^<5>b: added to the configuration$")
        self.assertRegex(d.log(), r"(?m)^<5>reload done: 2 tunnels \(was 1\), 0 changed$")

    def test_removed_tunnel_stops(self):
        """A removed tunnel's ssh ends (reaped), its port closes, it leaves the status; the other keeps its ssh."""
        pa, pb = free_port(), free_port()
        d = self.tunneld([self.tunnel("a", pa), self.tunnel("b", pb)])
        before = self.wait_up("a", "b")
        self.assert_echo(pb)
        self.rewrite(d, [self.tunnel("a", pa)])
        self.reload()
        self.assertNotIn("b", self.status())
        wait_until(lambda: not pid_alive(before["b"]), 5, what=f"b's ssh (pid {before['b']}) to end")
        self.assert_closed(pb)
        self.assertEqual(zombies_of(d.pid), [])
        self.assertEqual(d.children(), [before["a"]])
        self.assertEqual(self.status()["a"]["pid"], before["a"])
        self.assert_echo(pa)
        d.wait_log(r"^<5>b: removed from the configuration$")
        d.wait_log(r"^<5>b: stopped")

    def test_changed_forward_restarts(self):
        """Changed port: new spec shown when tunnelctl reload returns, new ssh on the new port, old port closed."""
        p1, p2, pb = free_port(), free_port(), free_port()
        d = self.tunneld([self.tunnel("a", p1), self.tunnel("b", pb)])
        before = self.wait_up("a", "b")
        self.assert_echo(p1)
        self.rewrite(d, [self.tunnel("a", p2), self.tunnel("b", pb)])
        self.reload()
        now = self.status()
        self.assertEqual(now["a"]["forwards"]["local"], [f"127.0.0.1:{p2}:127.0.0.1:{self.echo.port}"])
        self.assertIn(now["a"]["state"], ("stopping", "starting", "up"))
        self.assertEqual(now["b"]["pid"], before["b"])
        after = self.wait_up("a", "b")
        self.assertNotEqual(after["a"], before["a"])
        self.assertFalse(pid_alive(before["a"]))
        self.assertEqual(after["b"], before["b"])
        self.assert_echo(p2)
        self.assert_closed(p1)
        self.assertRegex(d.log(), r"(?m)^<5>reload done: 2 tunnels \(was 2\), 1 changed$")

    def test_unchanged_tunnel_untouched(self):
        """Reloads leaving a tunnel's settings alone keep its ssh pid, counters and state (reorder, stop_timeout)."""
        pa, pb, pb2 = free_port(), free_port(), free_port()
        d = self.tunneld([self.tunnel("a", pa), self.tunnel("b", pb)])
        self.wait_up("a", "b")
        before = self.status()["a"]
        offset = len(d.log())
        self.reload()
        self.rewrite(d, text="# reordered\n" + tunneltest.render_config(
            {**d.globals, "stop_timeout": 4}, d.defaults, [self.tunnel("b", pb2), self.tunnel("a", pa)]))
        os.kill(d.pid, signal.SIGHUP)
        d.wait_log(r"^<5>reload done: 2 tunnels \(was 2\), 1 changed$")
        self.wait_up("a", "b")
        self.assert_echo(pa)
        after = self.status()["a"]
        for key in ("pid", "state", "starts", "restarts", "consecutive_failures", "failures", "last_exit", "forwards"):
            self.assertEqual(after[key], before[key], key)
        self.assertGreater(after["since"], before["since"], "a changed state meanwhile")
        self.assertEqual(d.findall(r"^<\d>a: .*", after=offset), [], "a logged something")

    def test_invalid_file_changes_nothing(self):
        """A bad file: errors logged as FILE:LINE, pids kept, READY sent, tunnelctl reload exits 1 with the errors."""
        pa, pb = free_port(), free_port()
        d = self.tunneld([self.tunnel("a", pa), self.tunnel("b", pb)])
        before = self.wait_up("a", "b")
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

        now = self.status()
        self.assertEqual({n: now[n]["pid"] for n in before}, before)
        self.assertEqual(sorted(d.children()), sorted(before.values()))
        self.assert_echo(pa)
        self.assert_echo(pb)

        self.rewrite(d, text=good)
        self.reload()
        self.assertEqual(status_json(self.ctl)["status"], "2/2 tunnels up")
        self.assertEqual({n: t["pid"] for n, t in self.status().items()}, before)

    def test_burst_of_sighups(self):
        """20 SIGHUPs while the file changes: untouched ssh kept, last file wins, no zombie, same fd count."""
        pa, pb, c1, c2, pd = (free_port() for _ in range(5))

        def version(k):  # k = 0 is the start; 20 is the same file again
            tunnels = [self.tunnel("a", pa), self.tunnel("b", pb), self.tunnel("c", c2 if k % 2 else c1)]
            return tunnels + ([] if k % 2 else [self.tunnel("d", pd)])

        d = self.tunneld(version(0))
        before = self.wait_up("a", "b", "c", "d")
        for port in (pa, pb, c1, pd):
            self.assert_echo(port)
        fds = fd_count(d.pid)

        for k in range(1, 21):
            self.rewrite(d, version(k))
            os.kill(d.pid, signal.SIGHUP)
            time.sleep(0.02)
        self.reload()  # the last file is applied when this returns, whatever the signals merged into
        after = self.wait_up("a", "b", "c", "d")
        reloads = d.count_log(r"^<5>reload done: ")
        self.assertGreaterEqual(reloads, 3, "the SIGHUPs did not reload")
        self.assertEqual((after["a"], after["b"]), (before["a"], before["b"]), f"after {reloads} reloads")
        for port in (pa, pb, c1, pd):
            self.assert_echo(port)
        self.assert_closed(c2)

        def settled():
            kids = d.children()
            return (sorted(kids) == sorted(after.values()) and not zombies_of(d.pid)
                    and fd_count(d.pid) == fds)
        try:
            wait_until(settled, 10, what="tunneld's children and fds to settle")
        except AssertionError:
            self.fail(f"children {d.children()} (expected {sorted(after.values())}), zombies {zombies_of(d.pid)}, "
                      f"fds {fd_count(d.pid)} (before {fds}): {os.listdir(f'/proc/{d.pid}/fd')}")
        self.assertEqual(sorted(tunneltest.descendants_of(d.pid)), sorted(after.values()))
        self.assertIsNone(d.proc.poll())


if __name__ == "__main__":
    tunneltest.main()
