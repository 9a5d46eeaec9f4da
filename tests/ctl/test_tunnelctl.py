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
from tunneltest import (EchoServer, FakeSSH, SSHServer, Tunneld, echo_roundtrip, free_port, pid_alive, port_accepts,
                        wait_until)

import ctltest
from ctltest import (DURATION, assert_tunnel_fields, describe, parse_table, pids, status, tunnelctl,
                     tunnels, wait_state, wait_tunnel, wait_up)

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


class _Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sshd = tunneltest.use(cls, SSHServer())
        cls.echo = tunneltest.use(cls, EchoServer())

    @classmethod
    def settings(cls, **over):
        return {**cls.sshd.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2, **over}

    @classmethod
    def fwd(cls, port):
        return f"127.0.0.1:{port}:127.0.0.1:{cls.echo.port}"

    @classmethod
    def start_tunneld(cls, owner, tunnels, args=(), **settings):
        """tunneld with real ssh; tunnels default to host 127.0.0.1. Returns (tunneld, socket)."""
        tunnels = [{"host": "127.0.0.1", **t} for t in tunnels]
        d = tunneltest.use(owner, Tunneld(tunnels, cls.settings(**settings), globals={"ssh": tunneltest.SSH},
                                          args=args))
        sock = d.globals["control_socket"]
        ctltest.wait_serving(d, sock)
        return d, sock

    def assert_echo(self, port):
        wait_until(lambda: echo_roundtrip(port, b"through tunnelctl's tunnel\n"), 10,
                   what=f"an echo through port {port}")

    def ctl(self, sock, *args, rc=0, **kw):
        r = tunnelctl(sock, *args, **kw)
        if rc is not None:
            self.assertEqual(r.returncode, rc, f"tunnelctl {' '.join(args)}: {describe(r)}")
        return r


# ---- reading: one tunneld with tunnels in every state -------------------------------------

class StatusTest(_Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.web_port, cls.multi_port, cls.socks_port, cls.remote_port = (free_port() for _ in range(4))
        refused = {"port": 1}   # nothing listens there: ssh exits 255, "Connection refused"
        cls.d, cls.sock = cls.start_tunneld(cls, [
            {"name": "web", "local_forwards": [cls.fwd(cls.web_port)]},
            {"name": "multi", "local_forwards": [cls.fwd(cls.multi_port)],
             "remote_forwards": [cls.fwd(cls.remote_port)], "dynamic_forwards": [f"127.0.0.1:{cls.socks_port}"]},
            {"name": "refused", **refused, "restart_delay": LONG_BACKOFF, "restart_delay_max": LONG_BACKOFF},
            {"name": "never", **refused, "restart": "never"},
            {"name": "maxed", **refused, "max_starts": 2, "restart_delay": 0.05, "restart_delay_max": 0.1},
            {"name": "off", "enabled": False, "local_forwards": [cls.fwd(free_port())]},
        ])
        for name, state in (("web", "up"), ("multi", "up"), ("refused", "backoff"), ("never", "failed"),
                            ("maxed", "failed"), ("off", "stopped")):
            wait_state(cls.sock, name, state)

    def test_status_pids_and_states(self):
        """--json status: the up tunnels' pids are tunneld's ssh children (and nothing else
        runs); backoff has retry_in and the refused exit; failed says why; disabled is
        stopped."""
        reply, t = status(self.sock)
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
        r = self.ctl(self.sock, "--json", "status")
        self.assertEqual(r.stdout.count("\n"), 1, "one JSON object on one line")
        reply = json.loads(r.stdout)
        self.assertIs(reply["ok"], True)
        self.assertEqual([t["name"] for t in reply["tunnels"]], ["web", "multi", "refused", "never", "maxed", "off"])
        for t in reply["tunnels"]:
            with self.subTest(tunnel=t["name"]):
                assert_tunnel_fields(self, t)
        t = {x["name"]: x for x in reply["tunnels"]}
        self.assertEqual(t["web"]["forwards"], {"local": [self.fwd(self.web_port)], "remote": [], "dynamic": [],
                                                "allocated": []})
        self.assertEqual(t["multi"]["forwards"], {"local": [self.fwd(self.multi_port)],
                                                  "remote": [self.fwd(self.remote_port)],
                                                  "dynamic": [f"127.0.0.1:{self.socks_port}"],
                                                  "allocated": []})
        r = self.ctl(self.sock, "--json", "status", "multi", "web")
        self.assertEqual([x["name"] for x in json.loads(r.stdout)["tunnels"]], ["multi", "web"])
        # not up: exit 1, and the JSON is still printed
        r = self.ctl(self.sock, "--json", "status", "refused", rc=1)
        self.assertEqual(json.loads(r.stdout)["tunnels"][0]["state"], "backoff")

    def test_table_columns_aligned_and_colour(self):
        """The table has NAME STATE PID UPTIME AVAIL STARTS LAST EXIT NEXT RETRY FORWARDS, aligned,
        with the same facts as the JSON; no colour into a pipe, colour with --color=always
        (also in a terminal with auto, unless NO_COLOR or TERM=dumb)."""
        t = tunnels(self.sock)
        r = self.ctl(self.sock, "status")
        self.assertEqual(r.stderr, "")
        self.assertNotIn("\033", r.stdout, "colour into a pipe")
        rows = parse_table(self, r.stdout)
        self.assertEqual(list(rows), ["web", "multi", "refused", "never", "maxed", "off"])
        for name in ("web", "multi"):
            row = rows[name]
            self.assertEqual((row["STATE"], row["PID"], row["STARTS"], row["LAST EXIT"], row["NEXT RETRY"]),
                             ("up", str(t[name]["pid"]), "1", "-", "-"), name)
            self.assertRegex(row["UPTIME"], rf"^{DURATION}$")
        self.assertEqual(rows["web"]["FORWARDS"], f"L {self.fwd(self.web_port)}")
        self.assertEqual(rows["multi"]["FORWARDS"], f"L {self.fwd(self.multi_port)}, R {self.fwd(self.remote_port)}, "
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
        for env in (ctltest.clean_env(), ctltest.clean_env(NO_COLOR="1")):   # always beats NO_COLOR
            r = self.ctl(self.sock, "--color=always", "status", env=env)
            rows_c = parse_table(self, r.stdout)
            self.assertEqual(list(rows_c), list(rows))
            lines = r.stdout.splitlines()
            self.assertNotIn("\033", lines[0], "a coloured header")
            for line in lines[1:]:
                name = line.split()[0]
                self.assertRegex(line, rf"^{name} +\033\[{re.escape(colours[name])}m{rows[name]['STATE']} *\033\[0m  ")
                self.assertEqual(line.count("\033"), 2, f"colour outside the STATE column: {line!r}")
        self.assertNotIn("\033", self.ctl(self.sock, "--color=never", "status").stdout)

        # auto: colour on a terminal only, and not with NO_COLOR or TERM=dumb
        for extra, coloured in (({"TERM": "xterm"}, True), ({"TERM": "xterm", "NO_COLOR": "1"}, False),
                                ({"TERM": "dumb"}, False)):
            with self.subTest(env=extra):
                out = self.run_on_tty([ctltest.TUNNELCTL, "-s", self.sock, "status"], ctltest.clean_env(**extra))
                self.assertIn("NAME", out)
                self.assertEqual("\033[32mup" in out, coloured, repr(out))
        out = self.run_on_tty([ctltest.TUNNELCTL, "-s", self.sock, "--color=never", "status"],
                              ctltest.clean_env(TERM="xterm"))
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
        self.ctl(self.sock, "status", "web")
        self.ctl(self.sock, "status", "web", "multi")
        self.ctl(self.sock, "status")        # everything, whatever the states: 0
        for names in (["refused"], ["never"], ["maxed"], ["off"], ["web", "refused"]):
            with self.subTest(names=names):
                r = self.ctl(self.sock, "status", *names, rc=1)
                self.assertIn(names[-1], r.stdout)
        r = self.ctl(self.sock, "status", "nope", rc=1)
        self.assertEqual(r.stdout, "")
        self.assertIn("no such tunnel: nope", r.stderr)
        r = self.ctl(self.sock, "status", "web", "nope", rc=1)
        self.assertIn("no such tunnel: nope", r.stderr)

        r = self.ctl(None, "status", "web", env=ctltest.clean_env(TUNNELD_SOCKET=self.sock))
        self.assertIn("web", r.stdout)

        tmp = tunneltest.temp_dir(self)
        stale = os.path.join(tmp, "stale")     # a socket nobody listens on (a dead tunneld's)
        s = socket.socket(socket.AF_UNIX)
        s.bind(stale)
        s.close()
        for path in (os.path.join(tmp, "missing"), stale, os.path.join(tmp, "no", "such", "dir")):
            for args in (["status"], ["restart", "web"], ["reload"], ["metrics"]):
                with self.subTest(path=path, args=args):
                    r = self.ctl(path, *args, rc=3)
                    self.assertIn(f"cannot reach tunneld at {path}", r.stderr)
                    self.assertEqual(r.stdout, "")
        r = self.ctl(None, "status", rc=3, env=ctltest.clean_env(TUNNELD_SOCKET=os.path.join(tmp, "missing")))
        self.assertLess(r.took, 5)

    USAGE_ERRORS = [[], ["frobnicate"], ["restart"], ["stop"], ["start"], ["restart", "--all", "web"],
                    ["status", "--all"], ["reload", "web"], ["check", "x"], ["metrics", "--all"],
                    ["--color=bogus", "status"], ["--bogus", "status"], ["-s"], ["--json"]]

    def test_usage_errors(self):
        """Usage errors exit 2 with a message and send nothing; --help and -V exit 0.
        (Leak checks off: see test_usage_errors_leak_nothing.)"""
        env = ctltest.clean_env(ASAN_OPTIONS="detect_leaks=0")
        before = pids(self.sock)
        for args in self.USAGE_ERRORS:
            with self.subTest(args=args):
                r = self.ctl(self.sock, *args, rc=2, env=env)
                self.assertEqual(r.stdout, "")
                self.assertRegex(r.stderr, r"\S")
        self.assertEqual(pids(self.sock), before, "a usage error changed something")
        r = self.ctl(self.sock, "--help")
        for word in ("status", "start", "stop", "restart", "reload", "check", "metrics", "EXIT STATUS"):
            self.assertIn(word, r.stdout)
        self.assertRegex(self.ctl(None, "-V").stdout, r"^tunnelctl \S+\n$")

    @unittest.skipUnless(SANITIZED, "needs the AddressSanitizer build (scripts/test builds it)")
    def test_usage_errors_leak_nothing(self):
        """tunnelctl's usage-error exits free what they built: LeakSanitizer stays quiet and
        the exit status is 2."""
        for args in self.USAGE_ERRORS:
            with self.subTest(args=args):
                r = self.ctl(self.sock, *args, rc=None)
                self.assertNotIn("LeakSanitizer", r.stderr)
                self.assertEqual(r.returncode, 2, describe(r))

    def test_unknown_name_changes_nothing(self):
        """restart/stop/start with a name that does not exist: exit 1 naming it, and the
        request is refused as a whole (the tunnels named with it are not touched)."""
        before = pids(self.sock)
        for cmd in ("restart", "stop", "start"):
            with self.subTest(cmd=cmd):
                r = self.ctl(self.sock, cmd, "web", "nope", rc=1)
                self.assertIn("no such tunnel: nope", r.stderr)
        time.sleep(0.3)
        self.assertEqual(pids(self.sock), before)
        self.assertEqual(tunnels(self.sock)["web"]["state"], "up")

    def test_disabled_is_not_started(self):
        """start/restart of a disabled tunnel (its files were never checked): exit 1 saying
        it is disabled and how to run it, the request refused as a whole; start --all and
        stop leave it as it is."""
        before = pids(self.sock)
        for cmd in ("start", "restart"):
            with self.subTest(cmd=cmd):
                r = self.ctl(self.sock, cmd, "web", "off", rc=1)
                self.assertRegex(r.stderr, r"off is disabled \(enabled = false in \S+\.conf\): set enabled = true "
                                           r"and reload to run it")
        self.ctl(self.sock, "stop", "off", rc=None)
        time.sleep(0.3)
        self.assertEqual(pids(self.sock), before)
        self.assertEqual(tunnels(self.sock)["off"]["state"], "stopped")
        self.assertEqual(tunnels(self.sock)["web"]["state"], "up")

    def test_metrics_prometheus_text(self):
        """metrics: Prometheus text format (HELP/TYPE before each family, name{labels} value),
        with each tunnel's up, state, starts and failure counters matching the status."""
        r = self.ctl(self.sock, "metrics")
        self.assertEqual(r.stderr, "")
        t = tunnels(self.sock)
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
        r = self.ctl(self.sock, "--json", "metrics")
        self.assertIn("tunneld_tunnel_up{tunnel=\"web\"} 1\n", json.loads(r.stdout)["metrics"])

    def test_check_ok(self):
        """check on the running, valid file: 'configuration OK: 6 tunnels (5 enabled)'."""
        r = self.ctl(self.sock, "check")
        self.assertEqual(r.stdout, "configuration OK: 6 tunnels (5 enabled)\n")
        reply = json.loads(self.ctl(self.sock, "--json", "check").stdout)
        self.assertEqual((reply["ok"], reply["tunnels"], reply["enabled"], reply["config"]),
                         (True, 6, 5, self.d.config_path))


# ---- changing: a tunneld per test ---------------------------------------------------------

class ControlTest(_Base):
    def tunneld(self, tunnels, **settings):
        return self.start_tunneld(self, tunnels, **settings)

    def test_restart_changes_only_that_pid(self):
        """restart NAME: that tunnel gets a new ssh (bytes flow again), the others keep theirs;
        an operator's restart is neither a failure nor a 'restart after a lost run'."""
        ports = {n: free_port() for n in ("t1", "t2", "t3")}
        d, sock = self.tunneld([{"name": n, "local_forwards": [self.fwd(p)]} for n, p in ports.items()])
        before = {n: wait_up(sock, n) for n in ports}
        self.assertEqual(sorted(before.values()), d.children())
        for p in ports.values():
            self.assert_echo(p)
        r = self.ctl(sock, "restart", "t2")
        self.assertRegex(r.stdout, r"^t2: restarted( and up)?: ssh pid \d+ \(was \d+\)\n$")
        new = wait_up(sock, "t2", not_pid=before["t2"])
        after = pids(sock)
        self.assertEqual({n: after[n] for n in ("t1", "t3")}, {n: before[n] for n in ("t1", "t3")})
        self.assertEqual(after["t2"], new)
        wait_until(lambda: not pid_alive(before["t2"]), 5, what="the old ssh to end")
        self.assertEqual(d.children(), sorted(after.values()))
        self.assert_echo(ports["t2"])
        self.assert_echo(ports["t1"])
        t2 = tunnels(sock)["t2"]
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
        d, sock = self.tunneld([{"name": "a", "local_forwards": [self.fwd(pa)]},
                                {"name": "b", "local_forwards": [self.fwd(pb)]}])
        pid_a, pid_b = wait_up(sock, "a"), wait_up(sock, "b")
        self.assert_echo(pb)
        r = self.ctl(sock, "stop", "b")
        self.assertRegex(r.stdout, r"^b: (stopping|stopped)\n$")
        b = wait_state(sock, "b", "stopped", timeout=10)
        self.assertEqual((b["pid"], b["held"], b["reason"]), (None, True, "stopped by request"))
        self.assertIs(b["last_exit"]["requested"], True)
        wait_until(lambda: not pid_alive(pid_b), 5, what=f"ssh {pid_b} to end")
        wait_until(lambda: not port_accepts(pb, 0.5), 5, what=f"port {pb} to close")
        self.assertEqual(d.children(), [pid_a])
        self.ctl(sock, "status", "b", rc=1)
        self.ctl(sock, "status", "a")

        def assert_still_stopped(when):
            time.sleep(1.0)
            t = tunnels(sock)
            self.assertEqual((t["b"]["state"], t["b"]["pid"]), ("stopped", None), when)
            self.assertEqual((t["a"]["state"], t["a"]["pid"]), ("up", pid_a), when)
            self.assertEqual(d.children(), [pid_a], when)
            return t

        self.assertEqual(self.ctl(sock, "reload").stdout, "reloaded: 2 tunnels\n")
        starts = assert_still_stopped("after an unchanged reload")["b"]["starts"]

        d.rewrite(tunnels=[{"name": "a", "host": "127.0.0.1", "local_forwards": [self.fwd(pa)]},
                           {"name": "b", "host": "127.0.0.1", "local_forwards": [self.fwd(pb2)],
                            "server_alive_interval": 20}])
        self.ctl(sock, "reload")
        t = assert_still_stopped("after a reload that changed b")
        self.assertEqual(t["b"]["forwards"]["local"], [self.fwd(pb2)], "the new spec is in place")
        self.assertEqual(t["b"]["starts"], starts)
        m = d.wait_log(r"^<\d+>reload done: ")
        d.reload()      # SIGHUP
        d.wait_log(r"^<\d+>reload done: ", after=m.end())
        assert_still_stopped("after SIGHUP")
        self.assertFalse(port_accepts(pb, 0.5) or port_accepts(pb2, 0.5), "a stopped tunnel's port accepts")

        r = self.ctl(sock, "start", "b")
        self.assertRegex(r.stdout, r"^b: (starting|up)\n$")
        new_b = wait_up(sock, "b")
        self.assertNotEqual(new_b, pid_b)
        self.assert_echo(pb2)
        self.assertFalse(port_accepts(pb, 0.5), "the old forward is back")
        self.assertEqual(pids(sock)["a"], pid_a)
        self.assertEqual(d.children(), sorted([pid_a, new_b]))

    def test_all_variants(self):
        """stop --all stops everything (a backoff tunnel too), start --all brings them back
        (bytes flow), restart --all gives every running tunnel a new ssh; once tunneld has
        exited, tunnelctl exits 3."""
        ports = {"x": free_port(), "y": free_port()}
        d, sock = self.tunneld([{"name": "x", "local_forwards": [self.fwd(ports["x"])]},
                                {"name": "y", "local_forwards": [self.fwd(ports["y"])]},
                                {"name": "bo", "port": 1, "restart_delay": LONG_BACKOFF,
                                 "restart_delay_max": LONG_BACKOFF}])
        first = {n: wait_up(sock, n) for n in ports}
        wait_state(sock, "bo", "backoff")

        r = self.ctl(sock, "stop", "--all")
        self.assertRegex(r.stdout, r"^x: (stopping|stopped)\ny: (stopping|stopped)\nbo: stopped\n$")
        for n in ("x", "y", "bo"):
            wait_state(sock, n, "stopped", timeout=10)
        wait_until(lambda: d.children() == [], 5, what="every ssh to end")
        for n, p in ports.items():
            wait_until(lambda: not port_accepts(p, 0.5), 5, what=f"port {p} to close")
        self.ctl(sock, "status")
        self.ctl(sock, "status", "x", "y", rc=1)

        r = self.ctl(sock, "start", "--all")
        self.assertRegex(r.stdout, r"^x: starting\ny: starting\nbo: starting\n$")
        second = {n: wait_up(sock, n) for n in ports}
        for n in ports:
            self.assertNotEqual(second[n], first[n])
            self.assert_echo(ports[n])
        bo = wait_state(sock, "bo", "backoff")
        self.assertEqual(bo["starts"], 2)

        r = self.ctl(sock, "restart", "--all")
        # in the order asked (the configuration's), each with its new ssh
        self.assertRegex(r.stdout, r"^x: restarted( and up)?: ssh pid \d+ \(was \d+\)\ny: restarted( and up)?: ssh pid \d+ \(was \d+\)\nbo: starting: ssh pid \d+\n$")
        third = {n: wait_up(sock, n, not_pid=second[n]) for n in ports}
        for n in ports:
            self.assert_echo(ports[n])
        wait_until(lambda: d.children() == sorted(third.values()), 5, what="the old ssh of each restart drained")
        self.assertEqual(wait_state(sock, "bo", "backoff")["starts"], 3)

        self.assertEqual(d.stop(10), 0)
        r = self.ctl(sock, "status", rc=3)
        self.assertIn("cannot reach tunneld", r.stderr)
        self.ctl(sock, "restart", "--all", rc=3)

    def test_reload_applied_when_it_returns(self):
        """tunnelctl reload returns once the new file is applied: a changed tunnel (another
        forward) has its new forward on the same ssh, an added one is listed, a removed one is
        gone, the unchanged one keeps its ssh. A broken file: exit 1 with every FILE:LINE
        error, every pid unchanged; check reports the same errors, and OK once the file is
        fixed."""
        pk, pc, pg, pc2, pn = (free_port() for _ in range(5))
        d, sock = self.tunneld([{"name": "keep", "local_forwards": [self.fwd(pk)]},
                                {"name": "change", "local_forwards": [self.fwd(pc)]},
                                {"name": "gone", "local_forwards": [self.fwd(pg)]}])
        before = {n: wait_up(sock, n) for n in ("keep", "change", "gone")}
        new_tunnels = [{"name": "keep", "host": "127.0.0.1", "local_forwards": [self.fwd(pk)]},
                       {"name": "change", "host": "127.0.0.1", "local_forwards": [self.fwd(pc2)]},
                       {"name": "new", "host": "127.0.0.1", "local_forwards": [self.fwd(pn)]}]
        d.rewrite(tunnels=new_tunnels)
        r = self.ctl(sock, "reload")
        self.assertEqual(r.stdout, "reloaded: 3 tunnels\n")
        t = tunnels(sock)       # right away: no waiting for the reload to land
        self.assertEqual(list(t), ["keep", "change", "new"])
        self.assertEqual((t["keep"]["state"], t["keep"]["pid"]), ("up", before["keep"]))
        self.assertEqual((t["change"]["state"], t["change"]["pid"]), ("up", before["change"]), t["change"])
        self.assertEqual(t["change"]["forwards"]["local"], [self.fwd(pc2)])
        self.assertIn(t["new"]["state"], ("queued", "starting", "up"))

        after = {"keep": before["keep"], "change": before["change"], "new": wait_up(sock, "new")}
        self.assert_echo(pc2)
        self.assert_echo(pn)
        wait_until(lambda: not pid_alive(before["gone"]), 5, what="the removed tunnel's ssh to end")
        wait_until(lambda: not port_accepts(pg, 0.5) and not port_accepts(pc, 0.5), 5, what="old ports to close")
        self.assertEqual(pids(sock), after)
        self.assertEqual(d.children(), sorted(after.values()))

        # A broken file: nothing changes, every error is printed with its line.
        broken = [dict(new_tunnels[0], bogus_setting=1), dict(new_tunnels[1], port=70000), new_tunnels[2]]
        d.rewrite(tunnels=broken)
        errors = [f"{d.config_path}:{d.line_of('bogus_setting')}: keep.bogus_setting: unknown setting",
                  f"{d.config_path}:{d.line_of('port = 70000')}: change.port: "]
        r = self.ctl(sock, "reload", rc=1)
        self.assertEqual(r.stdout, "")
        for e in errors:
            self.assertRegex(r.stderr, rf"(?m)^{re.escape(e)}")
        self.assertIn("tunnelctl: reload rejected", r.stderr)
        self.assertEqual(pids(sock), after)
        reply, _ = status(sock)
        self.assertIn("reload failed", reply["status"])
        r = self.ctl(sock, "check", rc=1)
        for e in errors:
            self.assertRegex(r.stderr, rf"(?m)^{re.escape(e)}")
        self.assertIn("tunnelctl: configuration invalid", r.stderr)
        reply = json.loads(self.ctl(sock, "--json", "check", rc=1).stdout)
        self.assertIs(reply["ok"], False)
        self.assertEqual(len(reply["errors"]), 2, reply)
        time.sleep(0.5)
        self.assertEqual(pids(sock), after)
        self.assertEqual(d.children(), sorted(after.values()))
        self.assert_echo(pk)

        d.rewrite(tunnels=new_tunnels)
        self.assertEqual(self.ctl(sock, "check").stdout, "configuration OK: 3 tunnels\n")
        self.assertEqual(pids(sock), after)

    def test_max_lifetime(self):
        """max_lifetime = 3 restarts ssh every ~3 s with a new pid, not counted as a failure
        (last_exit.requested); with max_lifetime_action = "stop" the tunnel is stopped after
        3 s and stays stopped until started."""
        pl, po = free_port(), free_port()
        d, sock = self.tunneld([{"name": "life", "max_lifetime": 3, "local_forwards": [self.fwd(pl)]},
                                {"name": "once", "max_lifetime": 3, "max_lifetime_action": "stop",
                                 "local_forwards": [self.fwd(po)]}])
        seen = {}       # pid of life -> when first seen
        once_pid = None

        def sample():
            nonlocal once_pid
            t = tunnels(sock)
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
        self.assert_echo(pl)

        once = wait_state(sock, "once", "stopped", timeout=3)
        self.assertEqual((once["pid"], once["held"], once["reason"], once["starts"]),
                         (None, True, "max_lifetime reached", 1))
        self.assertIs(once["last_exit"]["requested"], True)
        self.assertTrue(2.9 <= once["last_exit"]["ran"] <= 3 + STOP_TIMEOUT, once)
        self.assertFalse(pid_alive(once_pid))
        self.assertFalse(port_accepts(po, 0.5))
        self.assertEqual(d.count_log(r"^<\d+>once: ssh reached max_lifetime 3\.0 s: stopping the tunnel"), 1)
        self.ctl(sock, "reload")
        time.sleep(1.0)
        self.assertEqual(tunnels(sock)["once"]["state"], "stopped", "max_lifetime_action=stop: stopped until started")
        self.ctl(sock, "status", "once", rc=1)
        # start runs it again (ssh may need most of the 3 s to come up on a loaded machine,
        # so wait for the new ssh, not for up) and the lifetime stops it again
        self.ctl(sock, "start", "once")
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
        d, sock = self.tunneld([{"name": n, "local_forwards": [self.fwd(p)]} for n, p in ports.items()] +
                               [{"name": "bo", "port": 1, "restart_delay": LONG_BACKOFF,
                                 "restart_delay_max": LONG_BACKOFF}])
        before = {n: wait_up(sock, n) for n in ports}
        bo = wait_state(sock, "bo", "backoff")
        self.ctl(sock, "stop", "st")
        wait_state(sock, "st", "stopped", timeout=10)
        m = d.wait_log(r"^<\d+>st: stopped: ")
        d.signal(signal.SIGUSR1)
        d.wait_log(r"^<\d+>received SIGUSR1: restarting every running tunnel$", after=m.end())
        after = {n: wait_up(sock, n, not_pid=before[n]) for n in ("a", "b")}
        for n in ("a", "b"):
            self.assert_echo(ports[n])
        wait_until(lambda: not any(pid_alive(before[n]) for n in ("a", "b")), 5, what="the old ssh to end")
        wait_tunnel(sock, "bo", lambda t: t["starts"] == bo["starts"] + 1 and t["state"] == "backoff", 10,
                    what="bo to retry at once")
        time.sleep(0.5)
        t = tunnels(sock)
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
        ctltest.wait_serving(d, sock)
        (_, pid), = wait_until(lambda: fake.starts("slow"), 5, what="the fake ssh to start")
        slow = wait_state(sock, "slow", "starting", 5)
        self.assertEqual((slow["pid"], slow["starts"]), (pid, 1))
        self.assertEqual(d.children(), [pid])
        nxt = wait_state(sock, "next", "queued", 5)
        self.assertIsNone(nxt["pid"])
        self.assertRegex(nxt["reason"], r"\S")
        time.sleep(0.5)
        self.assertEqual(tunnels(sock)["next"]["state"], "queued")
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
        ctltest.wait_serving(d, sock)
        wait_until(lambda: all(t["state"] == "up" for t in tunnels(sock).values()), 30, what="every tunnel up")
        r = tunnelctl(sock, "status", *names)
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertEqual(len(parse_table(self, r.stdout)), 300)
        r = tunnelctl(sock, "--json", "status", *names)
        reply = json.loads(r.stdout)
        self.assertEqual([t["name"] for t in reply["tunnels"]], names)
        self.assertIn("version", reply)
        r = tunnelctl(sock, "restart", *names[:150])
        self.assertEqual(r.returncode, 0, describe(r))
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
        ctltest.wait_serving(d, sock)
        wait_up(sock, "a")
        r = tunnelctl(None, "--pid", str(d.pid), "--json", "status")
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertEqual([t["name"] for t in json.loads(r.stdout)["tunnels"]], ["a"])
        r = tunnelctl(None, "--pid", str(d.pid), "reload")
        self.assertEqual((r.returncode, r.stdout), (0, "reloaded: 1 tunnels\n"), describe(r))
        d.wait_log(r"^<\d+>reload requested on the control socket$")

    def test_pid_without_a_socket_reloads_by_signal(self):
        d = tunneltest.use(self, Tunneld([{"name": "a", "host": "a"}], fake=self.fake,
                                         globals={"control_socket": "none"}))
        d.wait_log(r"^<\d+>a: up: ")
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
