#!/usr/bin/env python3
"""tunnelctl end to end: live per-tunnel status and control of a running tunneld, with real
ssh against a private sshd on 127.0.0.1 and an echo server behind the forwards.

StatusTest shares one tunneld whose tunnels sit in every kind of state (up, backoff, failed
by restart=never and by max_starts, disabled) and only reads it. ControlTest starts a tunneld
per test and changes states: restart, stop/start across reloads, --all, reload, max_lifetime,
SIGUSR1. Socket permissions and abuse are in test_ctl_socket.py.
"""

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import time
import unittest

import tunneltest
from tunneltest import (FakeSSH, Tunneld, assert_echo, describe, free_port, pid_alive, pids, port_accepts, socket_of,
                        status, status_reply, tunnelctl, tunnelctl_ok, wait_state, wait_tunnel, wait_until)

import ctltest
from ctltest import DURATION, assert_tunnel_fields, parse_table

SANITIZED = "address" in os.environ.get("TUNNELD_SANITIZE", "")
STOP_TIMEOUT = 5    # tunneld's default: SIGKILL that long after SIGTERM
LONG_BACKOFF = 120  # a backoff tunnel's retry lies 60 to 120 s ahead: it stays in backoff for the test


def known_bug_if(condition):
    """unittest.expectedFailure when condition holds (TAP: 'not ok ... # TODO known bug')."""
    return unittest.expectedFailure if condition else (lambda f: f)


def proc_ppid_comm(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return int(data[data.rindex(")") + 2:].split()[1]), data[data.index("(") + 1:data.rindex(")")]


class _Base(tunneltest.SSHTestCase):
    ECHO = b"through tunnelctl's tunnel\n"


# ---- reading: one tunneld with tunnels in every state -------------------------------------

class StatusTest(_Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.web_port, cls.multi_port, cls.socks_port, cls.remote_port = (free_port() for _ in range(4))
        refused = {"port": 1}   # nothing listens there: ssh exits 255, "Connection refused"
        cls.d = cls.tunneld(cls, [
            {"name": "web", "local_forwards": [cls.echo.forward(cls.web_port)]},
            {"name": "multi", "local_forwards": [cls.echo.forward(cls.multi_port)],
             "remote_forwards": [cls.echo.forward(cls.remote_port)],
             "dynamic_forwards": [f"127.0.0.1:{cls.socks_port}"]},
            {"name": "refused", **refused, "restart_delay": LONG_BACKOFF, "restart_delay_max": LONG_BACKOFF},
            {"name": "never", **refused, "restart": "never"},
            {"name": "maxed", **refused, "max_starts": 2, "restart_delay": 0.05, "restart_delay_max": 0.1},
            {"name": "off", "enabled": False, "local_forwards": [cls.echo.forward(free_port())]},
        ])
        cls.sock = socket_of(cls.d)
        for name, state in (("web", "up"), ("multi", "up"), ("refused", "backoff"), ("never", "failed"),
                            ("maxed", "failed"), ("off", "stopped")):
            wait_state(cls.sock, name, state)

    def test_status_pids_and_states(self):
        """--json status: the up tunnels' pids are tunneld's ssh children (and nothing else
        runs); backoff has retry_in and the refused exit; failed says why; disabled is
        stopped."""
        reply = status_reply(self.sock)
        t = {x["name"]: x for x in reply["tunnels"]}
        self.assertEqual(reply["pid"], self.d.pid)
        self.assertEqual(reply["config"], self.d.config_path)
        up = {n: t[n]["pid"] for n in ("web", "multi")}
        self.assertEqual(sorted(up.values()), self.d.children(), "status pids vs tunneld's children")
        for name, pid in up.items():
            ppid, comm = proc_ppid_comm(pid)
            self.assertEqual((ppid, comm), (self.d.pid, "ssh"), name)
            self.assertEqual(t[name]["state"], "up")
            self.assertLessEqual(t[name]["uptime"], reply["uptime"] + 0.01)
            self.assertGreater(t[name]["uptime"], 0)
            self.assertIsNone(t[name]["last_exit"])
            self.assertIsNone(t[name]["retry_in"])
            self.assertEqual((t[name]["starts"], t[name]["restarts"]), (1, 0))
        for name in ("refused", "never", "maxed", "off"):
            self.assertIsNone(t[name]["pid"], name)
            self.assertIsNone(t[name]["uptime"], name)

        bo = t["refused"]
        self.assertEqual(bo["state"], "backoff")
        self.assertTrue(0 < bo["retry_in"] <= LONG_BACKOFF, bo)
        self.assertEqual(bo["starts"], 1)
        self.assertEqual(bo["failures"], {"refused": 1})
        e = bo["last_exit"]
        self.assertEqual((e["status"], e["signal"], e["failure"], e["requested"]), (255, None, "refused", False))
        self.assertLess(e["ran"], 15)

        self.assertEqual((t["never"]["state"], t["never"]["reason"]), ("failed", "restart=never"))
        self.assertEqual(t["never"]["last_exit"]["failure"], "refused")
        self.assertEqual((t["maxed"]["state"], t["maxed"]["reason"], t["maxed"]["starts"]),
                         ("failed", "max_starts reached", 2))
        self.assertEqual((t["off"]["state"], t["off"]["enabled"], t["off"]["starts"]), ("stopped", False, 0))
        self.assertRegex(reply["status"], r"^2/\d tunnels up; backoff: refused \(refused, retry at ")

    def test_json_has_the_documented_fields(self):
        """--json status parses with json and has exactly the fields tunnelctl(1) documents
        (name, state, pid, uptime, starts, restarts, last_exit{status,signal,ran,...},
        retry_in, forwards{local,remote,dynamic,allocated}, ...) with their types for every
        tunnel, in configuration order; named status returns only those."""
        r = tunnelctl_ok(self.sock, "--json", "status")
        self.assertEqual(r.stdout.count("\n"), 1, "one JSON object on one line")
        reply = json.loads(r.stdout)
        self.assertIs(reply["ok"], True)
        self.assertEqual([t["name"] for t in reply["tunnels"]], ["web", "multi", "refused", "never", "maxed", "off"])
        for t in reply["tunnels"]:
            with self.subTest(tunnel=t["name"]):
                assert_tunnel_fields(self, t)
        t = {x["name"]: x for x in reply["tunnels"]}
        self.assertEqual(t["web"]["forwards"], {"local": [self.echo.forward(self.web_port)], "remote": [],
                                                "dynamic": [], "allocated": []})
        self.assertEqual(t["multi"]["forwards"], {"local": [self.echo.forward(self.multi_port)],
                                                  "remote": [self.echo.forward(self.remote_port)],
                                                  "dynamic": [f"127.0.0.1:{self.socks_port}"],
                                                  "allocated": []})
        r = tunnelctl_ok(self.sock, "--json", "status", "multi", "web")
        self.assertEqual([x["name"] for x in json.loads(r.stdout)["tunnels"]], ["multi", "web"])
        # not up: exit 1, and the JSON is still printed
        r = tunnelctl_ok(self.sock, "--json", "status", "refused", rc=1)
        self.assertEqual(json.loads(r.stdout)["tunnels"][0]["state"], "backoff")

    def test_table_columns_aligned_and_colour(self):
        """The table has NAME STATE PID UPTIME AVAIL STARTS LAST EXIT NEXT RETRY FORWARDS, aligned,
        with the same facts as the JSON; no colour into a pipe, colour with --color=always
        (also in a terminal with auto, unless NO_COLOR or TERM=dumb)."""
        t = status(self.sock)
        r = tunnelctl_ok(self.sock, "status")
        self.assertEqual(r.stderr, "")
        self.assertNotIn("\033", r.stdout, "colour into a pipe")
        rows = parse_table(self, r.stdout)
        self.assertEqual(list(rows), ["web", "multi", "refused", "never", "maxed", "off"])
        for name in ("web", "multi"):
            row = rows[name]
            self.assertEqual((row["STATE"], row["PID"], row["STARTS"], row["LAST EXIT"], row["NEXT RETRY"]),
                             ("up", str(t[name]["pid"]), "1", "-", "-"), name)
            self.assertRegex(row["UPTIME"], rf"^{DURATION}$")
        self.assertEqual(rows["web"]["FORWARDS"], f"L {self.echo.forward(self.web_port)}")
        self.assertEqual(rows["multi"]["FORWARDS"], f"L {self.echo.forward(self.multi_port)}, "
                                                    f"R {self.echo.forward(self.remote_port)}, "
                                                    f"D 127.0.0.1:{self.socks_port}")
        bo = rows["refused"]
        self.assertEqual((bo["STATE"], bo["PID"], bo["UPTIME"], bo["STARTS"], bo["FORWARDS"]),
                         ("backoff", "-", "-", "1", "-"))
        self.assertRegex(bo["LAST EXIT"], rf"^status 255 after {DURATION} \(refused\)$")
        self.assertRegex(bo["NEXT RETRY"], rf"^in {DURATION}$")
        self.assertTrue(0 < ctltest.retry_in_seconds(bo["NEXT RETRY"]) <= LONG_BACKOFF, bo)
        self.assertEqual((rows["never"]["STATE"], rows["never"]["NEXT RETRY"]), ("failed", "-"))
        self.assertRegex(rows["never"]["LAST EXIT"], r"^status 255 after .* \(refused\)$")
        self.assertEqual((rows["maxed"]["STATE"], rows["maxed"]["STARTS"]), ("failed", "2 (1)"))
        self.assertEqual((rows["off"]["STATE"], rows["off"]["PID"], rows["off"]["STARTS"]), ("disabled", "-", "0"))

        colours = {"web": "32", "multi": "32", "refused": "33", "never": "1;31", "maxed": "1;31", "off": "2"}
        for env in (tunneltest.clean_env(), tunneltest.clean_env(NO_COLOR="1")):   # always beats NO_COLOR
            r = tunnelctl_ok(self.sock, "--color=always", "status", env=env)
            rows_c = parse_table(self, r.stdout)
            self.assertEqual(list(rows_c), list(rows))
            lines = r.stdout.splitlines()
            self.assertNotIn("\033", lines[0], "a coloured header")
            for line in lines[1:]:
                name = line.split()[0]
                self.assertRegex(line, rf"^{name} +\033\[{re.escape(colours[name])}m{rows[name]['STATE']} *\033\[0m  ")
                self.assertEqual(line.count("\033"), 2, f"colour outside the STATE column: {line!r}")
        self.assertNotIn("\033", tunnelctl_ok(self.sock, "--color=never", "status").stdout)

        # auto: colour on a terminal only, and not with NO_COLOR or TERM=dumb
        for extra, coloured in (({"TERM": "xterm"}, True), ({"TERM": "xterm", "NO_COLOR": "1"}, False),
                                ({"TERM": "dumb"}, False)):
            with self.subTest(env=extra):
                out = self.run_on_tty([tunneltest.TUNNELCTL, "-s", self.sock, "status"], tunneltest.clean_env(**extra))
                self.assertIn("NAME", out)
                self.assertEqual("\033[32mup" in out, coloured, repr(out))
        out = self.run_on_tty([tunneltest.TUNNELCTL, "-s", self.sock, "--color=never", "status"],
                              tunneltest.clean_env(TERM="xterm"))
        self.assertNotIn("\033", out)

    def run_on_tty(self, argv, env):
        """Run argv with a pseudo-terminal as stdout; its output."""
        master, slave = pty.openpty()
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.DEVNULL, env=env)
        finally:
            os.close(slave)
        out, deadline = b"", time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:     # EIO: the terminal's other side is closed
                        break
                    if not chunk:
                        break
                    out += chunk
                elif p.poll() is not None:
                    break
        finally:
            os.close(master)
            if p.poll() is None:
                p.kill()
            p.wait()
        self.assertEqual(p.returncode, 0, out)
        return out.decode(errors="replace")

    def test_status_exit_codes(self):
        """status NAME: 0 if every named tunnel is up, 1 if one is not or does not exist (with
        a message); 3 when nothing answers on the socket; TUNNELD_SOCKET is the default."""
        tunnelctl_ok(self.sock, "status", "web")
        tunnelctl_ok(self.sock, "status", "web", "multi")
        tunnelctl_ok(self.sock, "status")        # everything, whatever the states: 0
        for names in (["refused"], ["never"], ["maxed"], ["off"], ["web", "refused"]):
            with self.subTest(names=names):
                r = tunnelctl_ok(self.sock, "status", *names, rc=1)
                self.assertIn(names[-1], r.stdout)
        r = tunnelctl_ok(self.sock, "status", "nope", rc=1)
        self.assertEqual(r.stdout, "")
        self.assertIn("no such tunnel: nope", r.stderr)
        r = tunnelctl_ok(self.sock, "status", "web", "nope", rc=1)
        self.assertIn("no such tunnel: nope", r.stderr)

        r = tunnelctl_ok(None, "status", "web", env=tunneltest.clean_env(TUNNELD_SOCKET=self.sock))
        self.assertIn("web", r.stdout)

        tmp = tunneltest.temp_dir(self)
        stale = os.path.join(tmp, "stale")     # a socket nobody listens on (a dead tunneld's)
        s = socket.socket(socket.AF_UNIX)
        s.bind(stale)
        s.close()
        for path in (os.path.join(tmp, "missing"), stale, os.path.join(tmp, "no", "such", "dir")):
            for args in (["status"], ["restart", "web"], ["reload"], ["metrics"]):
                with self.subTest(path=path, args=args):
                    r = tunnelctl_ok(path, *args, rc=3)
                    self.assertIn(f"cannot reach tunneld at {path}", r.stderr)
                    self.assertEqual(r.stdout, "")
        r = tunnelctl_ok(None, "status", rc=3, env=tunneltest.clean_env(TUNNELD_SOCKET=os.path.join(tmp, "missing")))
        self.assertLess(r.took, 5)

    USAGE_ERRORS = [[], ["frobnicate"], ["restart"], ["stop"], ["start"], ["restart", "--all", "web"],
                    ["status", "--all"], ["reload", "web"], ["check", "x"], ["metrics", "--all"],
                    ["--color=bogus", "status"], ["--bogus", "status"], ["-s"], ["--json"]]

    def test_usage_errors(self):
        """Usage errors exit 2 with a message and send nothing; --help and -V exit 0.
        (Leak checks off: see test_usage_errors_leak_nothing.)"""
        env = tunneltest.clean_env(ASAN_OPTIONS="detect_leaks=0")
        before = pids(self.sock)
        for args in self.USAGE_ERRORS:
            with self.subTest(args=args):
                r = tunnelctl_ok(self.sock, *args, rc=2, env=env)
                self.assertEqual(r.stdout, "")
                self.assertRegex(r.stderr, r"\S")
        self.assertEqual(pids(self.sock), before, "a usage error changed something")
        r = tunnelctl_ok(self.sock, "--help")
        for word in ("status", "start", "stop", "restart", "reload", "check", "metrics", "EXIT STATUS"):
            self.assertIn(word, r.stdout)
        self.assertRegex(tunnelctl_ok(None, "-V").stdout, r"^tunnelctl \S+\n$")

    @unittest.skipUnless(SANITIZED, "needs the AddressSanitizer build (scripts/test builds it)")
    def test_usage_errors_leak_nothing(self):
        """tunnelctl's usage-error exits free what they built: LeakSanitizer stays quiet and
        the exit status is 2."""
        for args in self.USAGE_ERRORS:
            with self.subTest(args=args):
                r = tunnelctl(self.sock, *args)
                self.assertNotIn("LeakSanitizer", r.stderr)
                self.assertEqual(r.returncode, 2, describe(r))

    def test_unknown_name_changes_nothing(self):
        """restart/stop/start with a name that does not exist: exit 1 naming it, and the
        request is refused as a whole (the tunnels named with it are not touched)."""
        before = pids(self.sock)
        for cmd in ("restart", "stop", "start"):
            with self.subTest(cmd=cmd):
                r = tunnelctl_ok(self.sock, cmd, "web", "nope", rc=1)
                self.assertIn("no such tunnel: nope", r.stderr)
        time.sleep(0.3)
        self.assertEqual(pids(self.sock), before)
        self.assertEqual(status(self.sock)["web"]["state"], "up")

    def test_disabled_is_not_started(self):
        """start/restart of a disabled tunnel (its files were never checked): exit 1 saying
        it is disabled and how to run it, the request refused as a whole; start --all and
        stop leave it as it is."""
        before = pids(self.sock)
        for cmd in ("start", "restart"):
            with self.subTest(cmd=cmd):
                r = tunnelctl_ok(self.sock, cmd, "web", "off", rc=1)
                self.assertRegex(r.stderr, r"off is disabled \(enabled = false in \S+\.conf\): set enabled = true "
                                           r"and reload to run it")
        tunnelctl(self.sock, "stop", "off")
        time.sleep(0.3)
        self.assertEqual(pids(self.sock), before)
        self.assertEqual(status(self.sock)["off"]["state"], "stopped")
        self.assertEqual(status(self.sock)["web"]["state"], "up")

    def test_metrics_prometheus_text(self):
        """metrics: Prometheus text format (HELP/TYPE before each family, name{labels} value),
        with each tunnel's up, state, starts and failure counters matching the status."""
        r = tunnelctl_ok(self.sock, "metrics")
        self.assertEqual(r.stderr, "")
        t = status(self.sock)
        typed, samples = {}, {}
        for line in r.stdout.splitlines():
            if line.startswith("# HELP "):
                self.assertRegex(line, r"^# HELP [a-z_]+ \S")
                continue
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                self.assertIn(kind, ("gauge", "counter"))
                typed[name] = kind
                continue
            m = re.match(r'^([a-z_]+)(?:\{((?:[a-z]+="[^"]*",?)*)\})? (-?[0-9.]+(?:e[+-]?\d+)?)$', line)
            self.assertIsNotNone(m, f"not a sample line: {line!r}")
            self.assertIn(m.group(1), typed, f"no TYPE before {line!r}")
            labels = tuple(sorted(re.findall(r'([a-z]+)="([^"]*)"', m.group(2) or "")))
            self.assertNotIn((m.group(1), labels), samples, f"duplicate sample {line!r}")
            samples[m.group(1), labels] = float(m.group(3))
        self.assertTrue(r.stdout.endswith("\n"))
        self.assertEqual(typed.get("tunneld_tunnel_starts_total"), "counter")
        self.assertEqual(samples["tunneld_tunnels", ()], 6)
        for name, tun in t.items():
            with self.subTest(tunnel=name):
                self.assertEqual(samples["tunneld_tunnel_up", (("tunnel", name),)], 1 if tun["state"] == "up" else 0)
                states = {s: samples["tunneld_tunnel_state", (("state", s), ("tunnel", name))] for s in ctltest.STATES}
                self.assertEqual(states, {s: 1 if s == tun["state"] else 0 for s in ctltest.STATES})
                self.assertEqual(samples["tunneld_tunnel_starts_total", (("tunnel", name),)], tun["starts"])
                self.assertEqual(samples["tunneld_tunnel_restarts_total", (("tunnel", name),)], tun["restarts"])
                self.assertEqual(samples["tunneld_tunnel_failures_total", (("class", "refused"), ("tunnel", name))],
                                 tun["failures"].get("refused", 0))
        self.assertGreater(samples["tunneld_tunnel_uptime_seconds", (("tunnel", "web"),)], 0)
        self.assertEqual(samples["tunneld_tunnel_enabled", (("tunnel", "off"),)], 0)
        r = tunnelctl_ok(self.sock, "--json", "metrics")
        self.assertIn("tunneld_tunnel_up{tunnel=\"web\"} 1\n", json.loads(r.stdout)["metrics"])

    def test_check_ok(self):
        """check on the running, valid file: 'configuration OK: 6 tunnels (5 enabled)'."""
        r = tunnelctl_ok(self.sock, "check")
        self.assertEqual(r.stdout, "configuration OK: 6 tunnels (5 enabled)\n")
        reply = json.loads(tunnelctl_ok(self.sock, "--json", "check").stdout)
        self.assertEqual((reply["ok"], reply["tunnels"], reply["enabled"], reply["config"]),
                         (True, 6, 5, self.d.config_path))


# ---- changing: a tunneld per test ---------------------------------------------------------

class ControlTest(_Base):
    def test_restart_changes_only_that_pid(self):
        """restart NAME: that tunnel gets a new ssh (bytes flow again), the others keep theirs;
        an operator's restart is neither a failure nor a 'restart after a lost run'."""
        ports = {n: free_port() for n in ("t1", "t2", "t3")}
        d = self.tunneld([{"name": n, "local_forwards": [self.echo.forward(p)]} for n, p in ports.items()])
        sock = socket_of(d)
        before = {n: wait_state(sock, n, "up")["pid"] for n in ports}
        self.assertEqual(sorted(before.values()), d.children())
        for p in ports.values():
            assert_echo(p, self.ECHO)
        r = tunnelctl_ok(sock, "restart", "t2")
        self.assertRegex(r.stdout, r"^t2: restarted( and up)?: ssh pid \d+ \(was \d+\)\n$")
        new = wait_state(sock, "t2", "up", not_pid=before["t2"])["pid"]
        after = pids(sock)
        self.assertEqual({n: after[n] for n in ("t1", "t3")}, {n: before[n] for n in ("t1", "t3")})
        self.assertEqual(after["t2"], new)
        wait_until(lambda: not pid_alive(before["t2"]), 5, what="the old ssh to end")
        self.assertEqual(d.children(), sorted(after.values()))
        assert_echo(ports["t2"], self.ECHO)
        assert_echo(ports["t1"], self.ECHO)
        t2 = status(sock)["t2"]
        self.assertEqual((t2["starts"], t2["restarts"], t2["failures"], t2["consecutive_failures"]), (2, 0, {}, 0))
        self.assertIs(t2["last_exit"]["requested"], True)
        self.assertIsNone(t2["last_exit"]["failure"])
        self.assertEqual(d.count_log(r"^<\d+>t2: restart requested on the control socket$"), 1)
        self.assertEqual(d.count_log(r"^<\d+>t[13]: .*(?:restart|stop)"), 0)

    def test_stop_survives_reloads_until_start(self):
        """stop NAME: stopped, its ssh gone, its port closed; it stays stopped across a reload
        (tunnelctl and SIGHUP) and a reload that changes it, until start NAME, which runs the
        new spec (bytes flow through the new port, not the old)."""
        pa, pb, pb2 = free_port(), free_port(), free_port()
        d = self.tunneld([{"name": "a", "local_forwards": [self.echo.forward(pa)]},
                          {"name": "b", "local_forwards": [self.echo.forward(pb)]}])
        sock = socket_of(d)
        pid_a, pid_b = wait_state(sock, "a", "up")["pid"], wait_state(sock, "b", "up")["pid"]
        assert_echo(pb, self.ECHO)
        r = tunnelctl_ok(sock, "stop", "b")
        self.assertRegex(r.stdout, r"^b: (stopping|stopped)\n$")
        b = wait_state(sock, "b", "stopped", timeout=10)
        self.assertEqual((b["pid"], b["held"], b["reason"]), (None, True, "stopped by request"))
        self.assertIs(b["last_exit"]["requested"], True)
        wait_until(lambda: not pid_alive(pid_b), 5, what=f"ssh {pid_b} to end")
        wait_until(lambda: not port_accepts(pb, 0.5), 5, what=f"port {pb} to close")
        self.assertEqual(d.children(), [pid_a])
        tunnelctl_ok(sock, "status", "b", rc=1)
        tunnelctl_ok(sock, "status", "a")

        def assert_still_stopped(when):
            time.sleep(1.0)
            t = status(sock)
            self.assertEqual((t["b"]["state"], t["b"]["pid"]), ("stopped", None), when)
            self.assertEqual((t["a"]["state"], t["a"]["pid"]), ("up", pid_a), when)
            self.assertEqual(d.children(), [pid_a], when)
            return t

        self.assertEqual(tunnelctl_ok(sock, "reload").stdout, "reloaded: 2 tunnels\n")
        starts = assert_still_stopped("after an unchanged reload")["b"]["starts"]

        d.rewrite(tunnels=[{"name": "a", "host": "127.0.0.1", "local_forwards": [self.echo.forward(pa)]},
                           {"name": "b", "host": "127.0.0.1", "local_forwards": [self.echo.forward(pb2)],
                            "server_alive_interval": 20}])
        tunnelctl_ok(sock, "reload")
        t = assert_still_stopped("after a reload that changed b")
        self.assertEqual(t["b"]["forwards"]["local"], [self.echo.forward(pb2)], "the new spec is in place")
        self.assertEqual(t["b"]["starts"], starts)
        m = d.wait_log(r"^<\d+>reload done: ")
        d.reload()      # SIGHUP
        d.wait_log(r"^<\d+>reload done: ", after=m.end())
        assert_still_stopped("after SIGHUP")
        self.assertFalse(port_accepts(pb, 0.5) or port_accepts(pb2, 0.5), "a stopped tunnel's port accepts")

        r = tunnelctl_ok(sock, "start", "b")
        self.assertRegex(r.stdout, r"^b: (starting|up)\n$")
        new_b = wait_state(sock, "b", "up")["pid"]
        self.assertNotEqual(new_b, pid_b)
        assert_echo(pb2, self.ECHO)
        self.assertFalse(port_accepts(pb, 0.5), "the old forward is back")
        self.assertEqual(pids(sock)["a"], pid_a)
        self.assertEqual(d.children(), sorted([pid_a, new_b]))

    def test_all_variants(self):
        """stop --all stops everything (a backoff tunnel too), start --all brings them back
        (bytes flow), restart --all gives every running tunnel a new ssh; once tunneld has
        exited, tunnelctl exits 3."""
        ports = {"x": free_port(), "y": free_port()}
        d = self.tunneld([{"name": "x", "local_forwards": [self.echo.forward(ports["x"])]},
                          {"name": "y", "local_forwards": [self.echo.forward(ports["y"])]},
                          {"name": "bo", "port": 1, "restart_delay": LONG_BACKOFF,
                           "restart_delay_max": LONG_BACKOFF}])
        sock = socket_of(d)
        first = {n: wait_state(sock, n, "up")["pid"] for n in ports}
        wait_state(sock, "bo", "backoff")

        r = tunnelctl_ok(sock, "stop", "--all")
        self.assertRegex(r.stdout, r"^x: (stopping|stopped)\ny: (stopping|stopped)\nbo: stopped\n$")
        for n in ("x", "y", "bo"):
            wait_state(sock, n, "stopped", timeout=10)
        wait_until(lambda: d.children() == [], 5, what="every ssh to end")
        for n, p in ports.items():
            wait_until(lambda: not port_accepts(p, 0.5), 5, what=f"port {p} to close")
        tunnelctl_ok(sock, "status")
        tunnelctl_ok(sock, "status", "x", "y", rc=1)

        r = tunnelctl_ok(sock, "start", "--all")
        self.assertRegex(r.stdout, r"^x: starting\ny: starting\nbo: starting\n$")
        second = {n: wait_state(sock, n, "up")["pid"] for n in ports}
        for n in ports:
            self.assertNotEqual(second[n], first[n])
            assert_echo(ports[n], self.ECHO)
        bo = wait_state(sock, "bo", "backoff")
        self.assertEqual(bo["starts"], 2)

        r = tunnelctl_ok(sock, "restart", "--all")
        # in the order asked (the configuration's), each with its new ssh
        self.assertRegex(r.stdout, r"^x: restarted( and up)?: ssh pid \d+ \(was \d+\)\ny: restarted( and up)?: ssh pid \d+ \(was \d+\)\nbo: starting: ssh pid \d+\n$")
        third = {n: wait_state(sock, n, "up", not_pid=second[n])["pid"] for n in ports}
        for n in ports:
            assert_echo(ports[n], self.ECHO)
        wait_until(lambda: d.children() == sorted(third.values()), 5, what="the old ssh of each restart drained")
        self.assertEqual(wait_state(sock, "bo", "backoff")["starts"], 3)

        self.assertEqual(d.stop(10), 0)
        r = tunnelctl_ok(sock, "status", rc=3)
        self.assertIn("cannot reach tunneld", r.stderr)
        tunnelctl_ok(sock, "restart", "--all", rc=3)

    def test_reload_applied_when_it_returns(self):
        """tunnelctl reload returns once the new file is applied: a changed tunnel (another
        forward) has its new forward on the same ssh, an added one is listed, a removed one is
        gone, the unchanged one keeps its ssh. A broken file: exit 1 with every FILE:LINE
        error, every pid unchanged; check reports the same errors, and OK once the file is
        fixed."""
        pk, pc, pg, pc2, pn = (free_port() for _ in range(5))
        d = self.tunneld([{"name": "keep", "local_forwards": [self.echo.forward(pk)]},
                          {"name": "change", "local_forwards": [self.echo.forward(pc)]},
                          {"name": "gone", "local_forwards": [self.echo.forward(pg)]}])
        sock = socket_of(d)
        before = {n: wait_state(sock, n, "up")["pid"] for n in ("keep", "change", "gone")}
        new_tunnels = [{"name": "keep", "host": "127.0.0.1", "local_forwards": [self.echo.forward(pk)]},
                       {"name": "change", "host": "127.0.0.1", "local_forwards": [self.echo.forward(pc2)]},
                       {"name": "new", "host": "127.0.0.1", "local_forwards": [self.echo.forward(pn)]}]
        d.rewrite(tunnels=new_tunnels)
        r = tunnelctl_ok(sock, "reload")
        self.assertEqual(r.stdout, "reloaded: 3 tunnels\n")
        t = status(sock)       # right away: no waiting for the reload to land
        self.assertEqual(list(t), ["keep", "change", "new"])
        self.assertEqual((t["keep"]["state"], t["keep"]["pid"]), ("up", before["keep"]))
        self.assertEqual((t["change"]["state"], t["change"]["pid"]), ("up", before["change"]), t["change"])
        self.assertEqual(t["change"]["forwards"]["local"], [self.echo.forward(pc2)])
        self.assertIn(t["new"]["state"], ("queued", "starting", "up"))

        after = {"keep": before["keep"], "change": before["change"], "new": wait_state(sock, "new", "up")["pid"]}
        assert_echo(pc2, self.ECHO)
        assert_echo(pn, self.ECHO)
        wait_until(lambda: not pid_alive(before["gone"]), 5, what="the removed tunnel's ssh to end")
        wait_until(lambda: not port_accepts(pg, 0.5) and not port_accepts(pc, 0.5), 5, what="old ports to close")
        self.assertEqual(pids(sock), after)
        self.assertEqual(d.children(), sorted(after.values()))

        # A broken file: nothing changes, every error is printed with its line.
        broken = [dict(new_tunnels[0], bogus_setting=1), dict(new_tunnels[1], port=70000), new_tunnels[2]]
        d.rewrite(tunnels=broken)
        errors = [f"{d.config_path}:{d.line_of('bogus_setting')}: keep.bogus_setting: unknown setting",
                  f"{d.config_path}:{d.line_of('port = 70000')}: change.port: "]
        r = tunnelctl_ok(sock, "reload", rc=1)
        self.assertEqual(r.stdout, "")
        for e in errors:
            self.assertRegex(r.stderr, rf"(?m)^{re.escape(e)}")
        self.assertIn("tunnelctl: reload rejected", r.stderr)
        self.assertEqual(pids(sock), after)
        reply = status_reply(sock)
        self.assertIn("reload failed", reply["status"])
        r = tunnelctl_ok(sock, "check", rc=1)
        for e in errors:
            self.assertRegex(r.stderr, rf"(?m)^{re.escape(e)}")
        self.assertIn("tunnelctl: configuration invalid", r.stderr)
        reply = json.loads(tunnelctl_ok(sock, "--json", "check", rc=1).stdout)
        self.assertIs(reply["ok"], False)
        self.assertEqual(len(reply["errors"]), 2, reply)
        time.sleep(0.5)
        self.assertEqual(pids(sock), after)
        self.assertEqual(d.children(), sorted(after.values()))
        assert_echo(pk, self.ECHO)

        d.rewrite(tunnels=new_tunnels)
        self.assertEqual(tunnelctl_ok(sock, "check").stdout, "configuration OK: 3 tunnels\n")
        self.assertEqual(pids(sock), after)

    def test_max_lifetime(self):
        """max_lifetime = 3 restarts ssh every ~3 s with a new pid, not counted as a failure
        (last_exit.requested); with max_lifetime_action = "stop" the tunnel is stopped after
        3 s and stays stopped until started."""
        pl, po = free_port(), free_port()
        d = self.tunneld([{"name": "life", "max_lifetime": 3, "local_forwards": [self.echo.forward(pl)]},
                          {"name": "once", "max_lifetime": 3, "max_lifetime_action": "stop",
                           "local_forwards": [self.echo.forward(po)]}])
        sock = socket_of(d)
        seen = {}       # pid of life -> when first seen
        once_pid = None

        def sample():
            nonlocal once_pid
            t = status(sock)
            if t["life"]["pid"] and t["life"]["pid"] not in seen:
                seen[t["life"]["pid"]] = time.monotonic()
            if t["life"]["uptime"] is not None:     # SIGTERM at 3 s, SIGKILL stop_timeout later
                self.assertLess(t["life"]["uptime"], 3 + STOP_TIMEOUT + 0.5, "ssh outlived max_lifetime")
            once_pid = once_pid or t["once"]["pid"]
            return len(seen) >= 3 and t
        t = wait_until(sample, 3 * 3 + 10, interval=0.1, what="three ssh pids of 'life'")
        born = sorted(seen.values())
        gaps = [b - a for a, b in zip(born, born[1:])]
        for gap in gaps[1:]:     # the first one was seen whenever polling began
            self.assertTrue(2.5 <= gap <= 3 + STOP_TIMEOUT + 1, f"lifetime restarts every {gaps} s")
        life = t["life"]
        e = life["last_exit"]
        self.assertIs(e["requested"], True, e)
        self.assertIsNone(e["failure"], e)
        # make-before-break: the old ssh ends once drained (its connections are read every second)
        self.assertTrue(2.9 <= e["ran"] <= 3 + 2 + STOP_TIMEOUT, e)
        self.assertEqual((life["failures"], life["consecutive_failures"], life["restarts"]), ({}, 0, 0))
        self.assertGreaterEqual(life["starts"], 3)
        self.assertGreaterEqual(d.count_log(r"^<\d+>life: ssh reached max_lifetime 3\.0 s: restarting it$"), 2)
        assert_echo(pl, self.ECHO)

        once = wait_state(sock, "once", "stopped", timeout=3)
        self.assertEqual((once["pid"], once["held"], once["reason"], once["starts"]),
                         (None, True, "max_lifetime reached", 1))
        self.assertIs(once["last_exit"]["requested"], True)
        self.assertTrue(2.9 <= once["last_exit"]["ran"] <= 3 + STOP_TIMEOUT, once)
        self.assertFalse(pid_alive(once_pid))
        self.assertFalse(port_accepts(po, 0.5))
        self.assertEqual(d.count_log(r"^<\d+>once: ssh reached max_lifetime 3\.0 s: stopping the tunnel"), 1)
        tunnelctl_ok(sock, "reload")
        time.sleep(1.0)
        self.assertEqual(status(sock)["once"]["state"], "stopped", "max_lifetime_action=stop: stopped until started")
        tunnelctl_ok(sock, "status", "once", rc=1)
        # start runs it again (ssh may need most of the 3 s to come up on a loaded machine,
        # so wait for the new ssh, not for up) and the lifetime stops it again
        tunnelctl_ok(sock, "start", "once")
        again = wait_tunnel(sock, "once", lambda t: t["pid"] not in (None, once_pid), 5, what="a new ssh for once")
        once = wait_tunnel(sock, "once", lambda t: t["state"] == "stopped" and t["starts"] == 2, 3 + STOP_TIMEOUT + 2,
                           what="once to stop again")
        self.assertEqual((once["reason"], once["held"]), ("max_lifetime reached", True))
        self.assertTrue(2.9 <= once["last_exit"]["ran"] <= 3 + STOP_TIMEOUT, once)
        self.assertFalse(pid_alive(again["pid"]))

    def test_sigusr1_restarts_every_running_tunnel(self):
        """SIGUSR1: every running tunnel gets a new ssh (bytes flow again), a backoff one
        retries at once, a stopped one stays stopped."""
        ports = {"a": free_port(), "b": free_port(), "st": free_port()}
        d = self.tunneld([{"name": n, "local_forwards": [self.echo.forward(p)]} for n, p in ports.items()] +
                         [{"name": "bo", "port": 1, "restart_delay": LONG_BACKOFF,
                           "restart_delay_max": LONG_BACKOFF}])
        sock = socket_of(d)
        before = {n: wait_state(sock, n, "up")["pid"] for n in ports}
        bo = wait_state(sock, "bo", "backoff")
        tunnelctl_ok(sock, "stop", "st")
        wait_state(sock, "st", "stopped", timeout=10)
        m = d.wait_log(r"^<\d+>st: stopped: ")
        d.signal(signal.SIGUSR1)
        d.wait_log(r"^<\d+>received SIGUSR1: restarting every running tunnel$", after=m.end())
        after = {n: wait_state(sock, n, "up", not_pid=before[n])["pid"] for n in ("a", "b")}
        for n in ("a", "b"):
            assert_echo(ports[n], self.ECHO)
        wait_until(lambda: not any(pid_alive(before[n]) for n in ("a", "b")), 5, what="the old ssh to end")
        wait_tunnel(sock, "bo", lambda t: t["starts"] == bo["starts"] + 1 and t["state"] == "backoff", 10,
                    what="bo to retry at once")
        time.sleep(0.5)
        t = status(sock)
        self.assertEqual((t["st"]["state"], t["st"]["pid"]), ("stopped", None))
        self.assertEqual(d.children(), sorted(after.values()))
        self.assertFalse(port_accepts(ports["st"], 0.5))


# ---- states only the fake ssh holds still ------------------------------------------------

class FakeStatesTest(unittest.TestCase):
    def test_starting_queued_and_stopping(self):
        """An ssh that never authenticates is starting (with its pid), the tunnel behind it
        in max_parallel_starts = 1 is queued (with why); once tunneld is stopping, status
        still answers but changes are refused (exit 1), and when it has exited, exit 3."""
        fake = tunneltest.use(self, FakeSSH())
        fake.plan("slow", [(0, 60, False, "noterm")])  # no "Authenticated", ignores SIGTERM
        fake.plan("next", [(0, 60, True)])
        d = tunneltest.use(self, Tunneld([{"name": "slow", "host": "slow"}, {"name": "next", "host": "next"}],
                                         fake=fake, globals={"max_parallel_starts": 1, "stop_timeout": 2}))
        sock = d.globals["control_socket"]
        d.wait_loaded()
        (_, pid), = wait_until(lambda: fake.starts("slow"), 5, what="the fake ssh to start")
        slow = wait_state(sock, "slow", "starting", 5)
        self.assertEqual((slow["pid"], slow["starts"]), (pid, 1))
        self.assertEqual(d.children(), [pid])
        nxt = wait_state(sock, "next", "queued", 5)
        self.assertIsNone(nxt["pid"])
        self.assertRegex(nxt["reason"], r"\S")
        time.sleep(0.5)
        self.assertEqual(status(sock)["next"]["state"], "queued")
        self.assertEqual(fake.starts("next"), [])
        r = tunnelctl(sock, "--color=always", "status")
        rows = parse_table(self, r.stdout)
        self.assertEqual((rows["slow"]["STATE"], rows["slow"]["PID"]), ("starting", str(pid)))
        self.assertEqual((rows["next"]["STATE"], rows["next"]["PID"]), ("queued", "-"))
        self.assertIn("\033[36mstarting", r.stdout)
        for name in ("slow", "next"):
            self.assertEqual(tunnelctl(sock, "status", name).returncode, 1, name)

        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        slow = wait_state(sock, "slow", "stopping", 5)
        self.assertEqual(slow["pid"], pid)
        for args in (["restart", "slow"], ["start", "next"], ["stop", "--all"], ["reload"]):
            with self.subTest(args=args):
                r = tunnelctl(sock, *args)
                self.assertEqual(r.returncode, 1, describe(r))
                self.assertIn("tunnelctl: tunneld is stopping", r.stderr)
        self.assertEqual(tunnelctl(sock, "status").returncode, 0)
        self.assertEqual(d.wait_exit(10), 0)
        self.assertGreaterEqual(time.monotonic() - t0, 2 - 0.1, "SIGKILL before stop_timeout")
        self.assertFalse(pid_alive(pid))
        self.assertEqual(fake.starts("next"), [], "a queued tunnel started during shutdown")
        r = tunnelctl(sock, "status")
        self.assertEqual(r.returncode, 3, describe(r))


class ManyTest(unittest.TestCase):
    def test_many_and_long_names_and_many_forwards(self):
        """300 tunnels with 64-character names in one command (more than tunneld takes in
        one request line: tunnelctl sends several and prints one answer); a tunnel with 50
        forwards prints a short row, and every forward with -l."""
        fake = tunneltest.use(self, FakeSSH())
        names = [f"t{i:03d}-" + "x" * 59 for i in range(300)]
        for n in names:
            fake.plan(n[:8], [(0, 60, True)])
        forwards = [f"127.0.0.1:{20000 + i}:127.0.0.1:{30000 + i}" for i in range(50)]
        d = tunneltest.use(self, Tunneld([{"name": n, "host": n[:8]} for n in names] +
                                         [{"name": "wide", "host": "wide", "local_forwards": forwards}],
                                         fake=fake, globals={"max_parallel_starts": 0}))
        fake.plan("wide", [(0, 60, True)])
        sock = d.globals["control_socket"]
        d.wait_loaded()
        wait_until(lambda: all(t["state"] == "up" for t in status(sock).values()), 30, what="every tunnel up")
        r = tunnelctl(sock, "status", *names)
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertEqual(len(parse_table(self, r.stdout)), 300)
        r = tunnelctl(sock, "--json", "status", *names)
        reply = json.loads(r.stdout)
        self.assertEqual([t["name"] for t in reply["tunnels"]], names)
        self.assertIn("version", reply)
        t0 = time.monotonic()
        # 150 make-before-break restarts at once: 150 new ssh (16 spawned per turn of the
        # loop), each answered when it has taken over; the sanitized tunneld forks slowly
        r = tunnelctl(sock, "restart", *names[:150], timeout=120)
        self.assertEqual(r.returncode, 0, describe(r))
        print(f"# 150 tunnels restarted in {time.monotonic() - t0:.1f} s", flush=True)
        self.assertEqual(len(r.stdout.splitlines()), 150)

        r = tunnelctl(sock, "status", "wide")
        row = parse_table(self, r.stdout)["wide"]
        self.assertEqual(row["FORWARDS"], f"L {forwards[0]}, L {forwards[1]}, L {forwards[2]}, +47 more")
        self.assertLess(max(len(l) for l in r.stdout.splitlines()), 220)
        r = tunnelctl(sock, "status", "-l", "wide")
        for f in forwards:
            self.assertIn(f"\n    L {f}: open\n", r.stdout + "\n")


class PidTest(unittest.TestCase):
    """tunnelctl --pid PID: the socket that tunneld listens on, found from its descriptors
    (what the unit's ExecReload=tunnelctl --pid $MAINPID reload uses, since a configuration
    may move the socket)."""

    def setUp(self):
        self.fake = tunneltest.use(self, FakeSSH())
        self.fake.plan("a", [(0, 60, True)])

    def test_pid_finds_a_moved_socket(self):
        tmp = tunneltest.temp_dir(self)
        sock = os.path.join(tmp, "elsewhere.sock")
        d = tunneltest.use(self, Tunneld([{"name": "a", "host": "a"}], fake=self.fake,
                                         globals={"control_socket": sock}))
        d.wait_loaded()
        wait_state(sock, "a", "up")
        r = tunnelctl(None, "--pid", str(d.pid), "--json", "status")
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertEqual([t["name"] for t in json.loads(r.stdout)["tunnels"]], ["a"])
        r = tunnelctl(None, "--pid", str(d.pid), "reload")
        self.assertEqual((r.returncode, r.stdout), (0, "reloaded: 1 tunnels\n"), describe(r))
        d.wait_log(r"^<\d+>reload requested on the control socket$")

    def test_pid_without_a_socket_reloads_by_signal(self):
        d = tunneltest.use(self, Tunneld([{"name": "a", "host": "a"}], fake=self.fake,
                                         globals={"control_socket": "none"}))
        d.wait_up("a", timeout=10)
        r = tunnelctl(None, "--pid", str(d.pid), "reload")
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertIn("sent SIGHUP", r.stderr)
        d.wait_log(r"^<\d+>reload done: 1 tunnel \(was 1\), 0 changed$")
        r = tunnelctl(None, "--pid", str(d.pid), "status")
        self.assertEqual(r.returncode, 3, describe(r))
        self.assertIn("none found", r.stderr)

    def test_pid_errors(self):
        self.assertEqual(tunnelctl(None, "--pid", "x1", "status").returncode, 2)
        r = tunnelctl(None, "--pid", str(os.getpid()), "status")    # python: no listening socket
        self.assertEqual(r.returncode, 3, describe(r))
        self.assertEqual(tunnelctl(None, "--pid", "999999999", "status").returncode, 3)


if __name__ == "__main__":
    tunneltest.main()
