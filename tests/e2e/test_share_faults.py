#!/usr/bin/env python3
"""share_connection under attack, end to end against real sshds: what the world (a taken
port, a stale -R, a restarted server, a failing probe) and the operator (reloads at the
worst moment, stop, restart, SIGUSR1, SIGTERM, max_lifetime) can do to tunnels that ride
one ssh. The promises checked: a fault of one tunnel's forwards touches only that tunnel;
a fault of the connection is judged once and applied to every tunnel on it; the
connection ends with its last tunnel, leaving no ssh, no zombie and no socket; the hidden
carrier ("~NAME") is never a tunnel of status, metrics, events or hooks.

Tests that fail here document tunneld bugs found when they were written (daemon/ is not
this file's to fix): a rider's forward news logged under ~NAME (taken_local_port,
remote_port_zero); riders flipping to starting during a make-before-break (sigusr1_keeps,
max_lifetime); riders up with dead ports when the old ssh dies mid-handover
(old_ssh_killed_before); a flapping connection never making its riders flapping
(flapping_connection); a rider leaving the connection or disabled started on its own ssh
with its old argv first (share_off, disabled, reload_while_starting); a supervision-only
reload of every rider tearing the connection down (supervision_change)."""

import json
import os
import select
import signal
import socket
import stat
import subprocess
import threading
import time

import tunneltest
from tunneltest import (EchoServer, Resource, SSHServer, all_in_state, echo_roundtrip, free_port, listening_socket,
                        metrics_text, status, tunnel_states, tunnelctl_ok, wait_all, wait_state, wait_until)

UP_TIMEOUT = 25          # ssh's connect and key exchange on a loaded 2-core machine
FWD_BACK_TIMEOUT = 40    # a failed forward is asked for again 1, 2, 4, 8 … s apart


def sockets_under(path):
    """Every Unix socket file under path (the masters' control sockets)."""
    found = []
    for root, _, files in os.walk(path):
        for f in files:
            try:
                if stat.S_ISSOCK(os.lstat(os.path.join(root, f)).st_mode):
                    found.append(os.path.join(root, f))
            except OSError:
                pass
    return found


class GateProxy(Resource):
    """A TCP proxy to 127.0.0.1:upstream that accepts connections at once but holds them
    (no byte either way) until release(): an ssh through it stays "starting" for as long
    as the test wants."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.released = threading.Event()
        self.closing = threading.Event()
        self.socks = []
        self.lock = threading.Lock()
        self.accepted = 0

    def start(self):
        self.port = free_port()
        self.listener = listening_socket(self.port)
        self.listener.settimeout(0.1)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def release(self):
        self.released.set()

    def hold(self):
        """From now on new connections wait again (those piped already go on)."""
        self.released.clear()

    def _track(self, s):
        with self.lock:
            self.socks.append(s)

    def _accept(self):
        while not self.closing.is_set():
            try:
                c, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            self._track(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        while not self.released.wait(0.05):
            if self.closing.is_set():
                return
        try:
            u = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        except OSError:
            c.close()
            return
        self._track(u)
        pair = {c: u, u: c}
        try:
            while not self.closing.is_set():
                r, _, _ = select.select(list(pair), [], [], 0.2)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)
        except OSError:
            pass
        finally:
            for s in (c, u):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.closing.set()
        try:
            self.listener.close()
        except (OSError, AttributeError):
            pass
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass
        super().close()


HOOK = r"""#!/bin/sh
echo "$TUNNEL_NAME $TUNNEL_STATE $TUNNEL_PREVIOUS_STATE [$TUNNEL_FAILURE] $TUNNEL_RESTARTS" >> @FILE@
"""


class ShareFaultTest(tunneltest.SSHTestCase):
    maxDiff = None
    fast_settings = {**tunneltest.SSHTestCase.fast_settings, "restart_delay_max": 1, "share_connection": True}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sshd2 = tunneltest.use(cls, SSHServer())

    # -- helpers --

    def through(self, proxy):
        """Settings that reach self.sshd through proxy (its host key known for that port)."""
        with open(self.sshd.host_key + ".pub") as f:
            keytype, blob = f.read().split()[:2]
        kh = os.path.join(tunneltest.temp_dir(self), "known_hosts")
        with open(kh, "w") as f:
            f.write(f"[127.0.0.1]:{proxy.port} {keytype} {blob}\n")
        return {"port": proxy.port, "ssh_options": [f"UserKnownHostsFile={kh}", "GlobalKnownHostsFile=/dev/null",
                                                    "StrictHostKeyChecking=yes"]}

    def up_on_one_new_ssh(self, d, names, old):
        """Every tunnel of names up on one ssh that is none of old, with every forward open
        (during a make-before-break status names the new ssh while the old one still
        serves: the forwards are pending on the new one until it has them)."""
        if not all_in_state(d, names):
            return False
        s = status(d)
        pids = {s[n]["pid"] for n in names}
        return (len(pids) == 1 and None not in pids and not pids & set(old) and
                all(f["state"] == "open" for n in names for f in s[n]["forward_states"]))

    def follow_events(self, d):
        """`tunnelctl events --json` running (killed at cleanup), subscribed."""
        events = subprocess.Popen([tunneltest.TUNNELCTL, "-s", d.globals["control_socket"], "events", "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  env=tunneltest.clean_env())
        self.addCleanup(lambda: (events.poll() is None and events.kill(), events.wait()))
        time.sleep(0.3)         # subscribed
        return events

    def reload(self, d, tunnels=None, defaults=None):
        off = len(d.log())
        d.rewrite(tunnels=[{"host": "127.0.0.1", **t} for t in tunnels] if tunnels is not None else None,
                  defaults=defaults)
        r = tunneltest.tunnelctl(d, "reload", timeout=30)
        self.assertEqual(r.returncode, 0, tunneltest.describe(r))
        return off

    def three(self):
        self.ports = {"a": free_port(), "b": free_port(), "c": free_port()}
        return [{"name": n, "local_forwards": [self.echo.forward(self.ports[n])]} for n in "abc"]

    def connect(self, port):
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(conn.close)
        self.assert_alive(conn, "before")
        return conn

    def assert_alive(self, conn, word, msg=None):
        payload = f"{word}\n".encode()
        conn.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = conn.recv(64)
            if not chunk:
                break
            got += chunk
        self.assertEqual(got, payload, msg or f"an established connection carries {word!r}")

    def assert_no_carrier_visible(self, d):
        """The connection itself is no tunnel: not in status (JSON and text), not in metrics."""
        reply = tunneltest.status_reply(d)
        names = [t["name"] for t in reply["tunnels"]]
        self.assertFalse([n for n in names if n.startswith("~")], names)
        text = metrics_text(d)
        self.assertNotIn('tunnel="~', text, "no connection among the metrics' tunnels")
        rows = tunneltest.tunnelctl(d, "status").stdout.splitlines()
        self.assertFalse([r for r in rows if r.lstrip().startswith("~")], rows)

    def make_hook(self):
        tmp = tunneltest.temp_dir(self)
        records = os.path.join(tmp, "records")
        path = os.path.join(tmp, "hook")
        with open(path, "w") as f:
            f.write(HOOK.replace("@FILE@", "'" + records + "'"))
        os.chmod(path, 0o755)
        return path, records

    @staticmethod
    def hook_records(records):
        try:
            with open(records) as f:
                return [tuple(line.split()) for line in f.read().splitlines()]
        except FileNotFoundError:
            return []

    # -- a fault of one tunnel's forwards is that tunnel's --
    def test_taken_local_port_degrades_only_its_rider(self):
        """b's -L port is held by another program: b is degraded with ssh's reason, a and c
        are up with their forwards working, on the same one ssh; the port freed, b's
        forward is asked for again over that ssh and b is up, what its log says under its
        own name (TUNNEL=b in the journal), the others never had an outage."""
        tunnels = self.three()
        squatter = listening_socket(self.ports["b"])
        self.addCleanup(squatter.close)
        d = self.tunneld(tunnels)
        wait_until(lambda: tunnel_states(d, "abc") == {"a": "up", "b": "degraded", "c": "up"}, UP_TIMEOUT,
                   what="a and c up, b degraded")
        s = status(d)
        pid = s["a"]["pid"]
        self.assertEqual(tunneltest.ssh_children(d.pid), [pid], "one ssh")
        self.assertEqual(s["b"]["pid"], pid)
        (fb,) = s["b"]["forward_states"]
        self.assertEqual(fb["state"], "failed")
        self.assertTrue(fb["reason"], "ssh's reason")
        self.assertRegex(d.log(), rf"(?m)^<\d+>b: forward L {self.echo.forward(self.ports['b'])} failed: ")
        self.assertRegex(d.log(), r"(?m)^<\d+>b: degraded: 1 of 1 forwards failed on the shared connection ~a")
        for n in "ac":
            self.assertEqual([f["state"] for f in s[n]["forward_states"]], ["open"], n)
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
        conn = self.connect(self.ports["a"])
        squatter.close()
        wait_until(lambda: status(d)["b"]["state"] == "up", FWD_BACK_TIMEOUT, interval=0.1, what="b up again")
        wait_until(lambda: echo_roundtrip(self.ports["b"]), 10, what="an echo through b's freed port")
        self.assertEqual(tunneltest.ssh_children(d.pid), [pid], "the same ssh: no restart")
        self.assert_alive(conn, "after")
        s = status(d)
        for n in "ac":
            self.assertEqual(s[n]["availability"]["outages"], 0, n)
            self.assertEqual(s[n]["starts"], 1, n)
        self.assert_no_carrier_visible(d)
        # its failure was logged as b's; its recovery must be too
        about = [l for l in d.log().splitlines() if f"forward L {self.echo.forward(self.ports['b'])}" in l]
        self.assertIn(f"b: forward L {self.echo.forward(self.ports['b'])} open again",
                      [l.split(">", 1)[1] for l in about],
                      "the recovery of b's forward is logged under b's name (TUNNEL=b), like its failure")

    def test_stale_remote_port_degrades_only_its_rider(self):
        """The server's port of b's -R is held (a stale listener): b is degraded with ssh's
        "remote port forwarding failed", a keeps working throughout; the port freed, b is
        up on the same ssh and its -R carries bytes."""
        pa, rport = free_port(), free_port()
        squatter = listening_socket(rport)
        self.addCleanup(squatter.close)
        d = self.tunneld([{"name": "a", "local_forwards": [self.echo.forward(pa)]},
                          {"name": "b", "remote_forwards": [self.echo.forward(rport)]}])
        wait_until(lambda: tunnel_states(d, "ab") == {"a": "up", "b": "degraded"}, UP_TIMEOUT,
                   what="a up, b degraded")
        s = status(d)
        pid = s["a"]["pid"]
        (fb,) = s["b"]["forward_states"]
        self.assertEqual(fb["state"], "failed")
        self.assertIn("remote port forwarding failed", fb["reason"])
        conn = self.connect(pa)
        for i in range(5):
            self.assertTrue(echo_roundtrip(pa), "a works while b's -R is retried")
            time.sleep(0.2)
        squatter.close()
        wait_until(lambda: status(d)["b"]["state"] == "up", FWD_BACK_TIMEOUT, interval=0.1, what="b up again")
        self.assertTrue(echo_roundtrip(rport), "b's -R on the server")
        self.assertEqual(tunneltest.ssh_children(d.pid), [pid])
        self.assert_alive(conn, "after")
        self.assertEqual(status(d)["a"]["availability"]["outages"], 0)

    def test_remote_port_zero_on_a_rider(self):
        """b's -R 0 (the server picks the port): b's status has the port, bytes flow through
        it, the news is logged under b's name; after SIGUSR1 (a new master) b shows the new
        master's port, which works."""
        pa = free_port()
        spec = f"0:127.0.0.1:{self.echo.port}"
        d = self.tunneld([{"name": "a", "local_forwards": [self.echo.forward(pa)]},
                          {"name": "b", "remote_forwards": [spec]}])
        wait_all(d, "ab", timeout=UP_TIMEOUT)
        old = status(d)["a"]["pid"]
        (fb,) = status(d)["b"]["forward_states"]
        port = fb["allocated_port"]
        self.assertIsInstance(port, int, fb)
        self.assertTrue(echo_roundtrip(port), "b's -R 0 on the port the server chose")
        os.kill(d.pid, signal.SIGUSR1)
        wait_until(lambda: self.up_on_one_new_ssh(d, "ab", [old]), UP_TIMEOUT, what="a and b on the new ssh")
        (fb,) = status(d)["b"]["forward_states"]
        self.assertIsInstance(fb["allocated_port"], int, fb)
        self.assertTrue(echo_roundtrip(fb["allocated_port"]), "the new master's port")
        about = [l.split(">", 1)[1] for l in d.log().splitlines() if f"forward R {spec}" in l]
        self.assertIn(f"b: forward R {spec}: the server allocated port {port}", about,
                      "the port b got is b's news (TUNNEL=b), not the hidden connection's")

    # -- a fault of the connection is every tunnel's, judged once --
    def test_sshd_restart_brings_every_rider_back_one_failure_each(self):
        """The server goes away with every session (sshd restarted): every tunnel on the
        connection sees the same failures, as many as the connection had (judged once, not
        once per tunnel); with the server back all are up on one new ssh; events and
        status never show the connection as a tunnel."""
        server = tunneltest.use(self, SSHServer())
        tunnels = self.three()
        d = self.tunneld(tunnels, sshd=server)
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        old = status(d)["a"]["pid"]
        events = self.follow_events(d)
        off = len(d.log())
        server.stop(kill_sessions=True)
        wait_until(lambda: not any(v == "up" for v in tunnel_states(d, "abc").values()), 15,
                   what="every tunnel down with the connection")
        server.start()
        wait_until(lambda: self.up_on_one_new_ssh(d, "abc", [old]), UP_TIMEOUT, what="a, b and c up on a new ssh")
        self.assertEqual(len(tunneltest.ssh_children(d.pid)), 1)
        s = status(d)
        judged = d.count_log(r"^<\d+>~a: ssh (exited|was killed)", after=off)
        self.assertGreaterEqual(judged, 1)
        for n in "abc":
            self.assertEqual(s[n]["failures"], s["a"]["failures"], n)
            self.assertEqual(sum(s[n]["failures"].values()), judged,
                             f"{n}: one failure per failed run of the connection ({s[n]['failures']})")
            # one line of its own per failed run: into backoff ("is down"), or, for a run that had
            # lasted gatetime (a slow machine's), straight to a new ssh ("opened again")
            said = d.count_log(rf"^<\d+>{n}: (the shared connection ~a is down|restarting: its forwards are opened "
                               rf"again on ssh pid)", after=off)
            self.assertEqual(said, judged, n)
            self.assertEqual(s[n]["last_exit"]["failure"], s["a"]["last_exit"]["failure"], n)
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
        self.assertEqual(d.count_log(r"^<\d+>[abc]: ssh (exited|was killed)", after=off), 0,
                         "the tunnels do not judge the connection's exit themselves")
        events.terminate()
        out, _ = events.communicate(timeout=10)
        names = set()
        for line in out.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            names.update(t.get("name") for t in ev.get("tunnels", []) if isinstance(t, dict))
            if "tunnel" in ev:
                names.add(ev["tunnel"] if isinstance(ev["tunnel"], str) else ev["tunnel"].get("name"))
            if "name" in ev:
                names.add(ev["name"])
        self.assertTrue(names & set("abc"), f"the events name the tunnels: {out[:500]!r}")
        self.assertFalse({n for n in names if n and n.startswith("~")}, "no event of the connection itself")
        self.assert_no_carrier_visible(d)

    def test_probe_failure_on_a_rider_is_one_failure_of_the_connection(self):
        """b's probe fails (twice in a row): the shared connection is ended once, class
        probe, and every tunnel on it counts that one failure and comes back with it."""
        probed = EchoServer()
        probed.__enter__()
        self.addCleanup(lambda: probed.close())
        probe_port = probed.port
        tunnels = self.three()
        tunnels[1]["probe"] = {"connect": f"127.0.0.1:{probe_port}", "interval": 1, "timeout": 0.5, "failures": 2}
        d = self.tunneld(tunnels)
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        old = status(d)["a"]["pid"]
        time.sleep(2.5)         # the probe passes a few times
        self.assertEqual(d.count_log(r"probe .* failed"), 0, "the probe passes while its service runs")
        off = len(d.log())
        probed.close()          # the probed service goes away
        d.wait_log(rf"^<\d+>~a: .*probe 127\.0\.0\.1:{probe_port} of tunnel b failed 2 times in a row", timeout=15,
                   after=off)
        # the service comes back (same port) before the connection's next run probes it
        probed = EchoServer(port=probe_port)
        probed.__enter__()
        wait_until(lambda: self.up_on_one_new_ssh(d, "abc", [old]), UP_TIMEOUT, what="all back on a new ssh")
        s = status(d)
        for n in "abc":
            self.assertEqual(s[n]["last_exit"]["failure"], "probe", (n, s[n]["last_exit"]))
            self.assertEqual(s[n]["failures"], {"probe": 1}, n)
        self.assertEqual(d.count_log(r"^<\d+>~a: .*probe .* of tunnel b failed \d+ times in a row", after=off), 1)
        self.assertEqual(d.count_log(r"^<\d+>~a: ssh exited .*\(probe: ", after=off), 1, "judged once")
        time.sleep(2.5)         # b's probe passes on the new connection
        self.assertEqual(tunneltest.ssh_children(d.pid), [status(d)["a"]["pid"]])
        self.assertTrue(all_in_state(d, "abc"))

    def test_flapping_connection_flaps_every_rider(self):
        """A connection that keeps failing (nothing listens) flaps: each tunnel on it is
        flapping in status and metrics, its on_state_change runs with "flapping", and its
        churn is demoted to debug like a flapping tunnel's own."""
        hook, records = self.make_hook()
        d = self.tunneld(self.three(), port=free_port(), restart_delay=0.05, restart_delay_max=0.2,
                         flap_threshold=3, flap_window=20, on_state_change=hook)
        d.wait_log(r"^<\d+>~a: flapping: 3 failed starts", timeout=20)
        wait_until(lambda: tunnel_states(d, "abc") is not None, 10, what="the control socket")
        time.sleep(1)           # a few more failed starts
        s = status(d)
        text = metrics_text(d)
        recs = {r[:2] for r in self.hook_records(records)}
        flap = d.log().index("~a: flapping: ")
        loud = [l for l in d.log()[flap:].splitlines() if l.startswith(("<4>a:", "<4>b:", "<4>c:"))]
        seen = {"status": {n: s[n]["flapping"] for n in "abc"},
                "metrics": {n: f'tunneld_tunnel_flapping{{tunnel="{n}"}} 1' in text for n in "abc"},
                "hooks": sorted(r for r in recs if r[1] == "flapping"),
                "loud lines after the connection flapped (at most one per tunnel)": len(loud) <= 3}
        self.assertEqual(seen, {"status": {n: True for n in "abc"}, "metrics": {n: True for n in "abc"},
                                "hooks": [(n, "flapping") for n in "abc"],
                                "loud lines after the connection flapped (at most one per tunnel)": True},
                         "every tunnel on a flapping connection is flapping:\n" + "\n".join(loud[:9]))

    def test_sigusr1_in_backoff_is_one_retry_of_the_connection(self):
        """SIGUSR1 while the connection is in a long backoff: one retry of the connection
        (one ssh started), not one per tunnel; they are all in backoff again after it."""
        d = self.tunneld(self.three(), port=free_port(), restart_delay=30, restart_delay_max=60)
        wait_all(d, "abc", "backoff", timeout=UP_TIMEOUT)
        off = len(d.log())
        os.kill(d.pid, signal.SIGUSR1)
        d.wait_log(r"^<\d+>~a: .*ssh pid \d+ \(start 2\)", timeout=10, after=off)
        wait_until(lambda: all_in_state(d, "abc", "backoff") and
                   d.count_log(r"^<\d+>[abc]: the shared connection ~a is down", after=off) == 3,
                   15, what="all in backoff again")
        self.assertEqual(d.count_log(r"ssh pid \d+ \(start", after=off), 1, "one retry")
        self.assertEqual({sum(v["failures"].values()) for v in status(d).values()}, {2})

    def test_old_ssh_dying_while_it_drains_is_no_failure(self):
        """After SIGUSR1 the old ssh drains a connection opened before; kill -9 of that old
        ssh is no failure of the tunnels, which stay up on the new one."""
        d = self.tunneld(self.three())
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        old = status(d)["a"]["pid"]
        conn = self.connect(self.ports["a"])
        os.kill(d.pid, signal.SIGUSR1)
        wait_until(lambda: self.up_on_one_new_ssh(d, "abc", [old]), UP_TIMEOUT, what="every tunnel on the new ssh")
        new = status(d)["a"]["pid"]
        self.assert_alive(conn, "draining")
        self.assertTrue(tunneltest.pid_alive(old))
        off = len(d.log())
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: not tunneltest.pid_alive(old), 5, what="the old ssh gone")
        time.sleep(1)
        s = status(d)
        for n in "abc":
            self.assertEqual((s[n]["state"], s[n]["pid"], s[n]["failures"]), ("up", new, {}), n)
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
        self.assertEqual(tunneltest.ssh_children(d.pid), [new])
        self.assertEqual(d.count_log(r"^<\d+>[abc]: ", after=off), 0, d.log()[off:])

    # -- reloads --
    def test_sigusr1_keeps_every_rider_up_throughout(self):
        """SIGUSR1 (make-before-break): the tunnels on the connection stay up from the
        old ssh to the new one: no state change of theirs (no event, no hook run, no
        "connecting"), however ssh's replies to their forwards are ordered."""
        hook, records = self.make_hook()
        d = self.tunneld(self.three(), on_state_change=hook)
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        wait_until(lambda: len(self.hook_records(records)) == 3, 10, what="the three up hooks")
        old = status(d)["a"]["pid"]
        events = self.follow_events(d)
        off = len(d.log())
        for _ in range(3):      # the order of ssh's replies varies: three rounds
            at = len(d.log())
            os.kill(d.pid, signal.SIGUSR1)
            d.wait_log(r"^<\d+>~a: up: ssh \(pid \d+\)", timeout=UP_TIMEOUT, after=at)
            wait_until(lambda: self.up_on_one_new_ssh(d, "abc", [old]), UP_TIMEOUT, what="every tunnel on the new ssh")
            wait_until(lambda: not tunneltest.pid_alive(old), 10, what="the old ssh to end (nothing to drain)")
            old = status(d)["a"]["pid"]
        time.sleep(0.5)
        events.terminate()
        out, _ = events.communicate(timeout=10)
        changes = [e for e in (json.loads(l) for l in out.splitlines() if l.strip()) if e.get("event") and e["event"] != "ssh"]
        s = status(d)
        seen = {"log": d.findall(r"^<\d+>([abc]: .*)$", after=off),
                "events": [(e.get("tunnel"), e.get("from"), e.get("to")) for e in changes],
                "hook runs": self.hook_records(records)[3:],
                "outages": {n: s[n]["availability"]["outages"] for n in "abc"}}
        self.assertEqual(seen, {"log": [], "events": [], "hook runs": [], "outages": {"a": 0, "b": 0, "c": 0}},
                         "the tunnels stay up across the connection's make-before-break restart")

    def test_old_ssh_killed_before_the_new_one_is_up(self):
        """SIGUSR1 while the server holds new connections back, then kill -9 of the old ssh:
        nothing carries the forwards any more; every tunnel on the connection says so alike
        (none claims up while its port is dead), and all are up once the server answers."""
        proxy = tunneltest.use(self, GateProxy(self.sshd.port))
        proxy.release()
        d = self.tunneld(self.three(), connect_timeout=30, start_timeout=60, **self.through(proxy))
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        old = status(d)["a"]["pid"]
        proxy.hold()
        accepted = proxy.accepted
        os.kill(d.pid, signal.SIGUSR1)
        wait_until(lambda: proxy.accepted > accepted, 10, what="the new ssh to connect (held)")
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: not tunneltest.pid_alive(old), 5, what="the old ssh gone")
        time.sleep(1.5)
        s = status(d)
        seen = {n: (s[n]["state"], echo_roundtrip(self.ports[n], timeout=1)) for n in "abc"}
        self.assertEqual(len({v[0] for v in seen.values()}), 1, f"the same state for every tunnel: {seen}")
        for n, (state, works) in seen.items():
            self.assertFalse(state == "up" and not works, f"{n} is up but its port is dead: {seen}")
        proxy.release()
        wait_until(lambda: self.up_on_one_new_ssh(d, "abc", [old]), UP_TIMEOUT, what="every tunnel on the new ssh")
        s = status(d)
        for n in "abc":
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
            self.assertEqual((s[n]["starts"], s[n]["failures"]), (s["a"]["starts"], s["a"]["failures"]), n)

    def test_reload_turns_share_off_for_one_and_on_for_another(self):
        """One reload: c stops sharing (it gets an ssh of its own, started once) and d, a
        tunnel with a connection of its own to the same server, starts sharing (its own ssh ends, it joins the
        connection); a and b keep the same ssh and an established connection through a
        carries on."""
        tunnels = self.three()
        self.ports["d"] = free_port()
        tunnels.append({"name": "d", "share_connection": False, "local_forwards": [self.echo.forward(self.ports["d"])]})
        d = self.tunneld(tunnels)
        wait_all(d, "abcd", timeout=UP_TIMEOUT)
        s = status(d)
        shared, own_d = s["a"]["pid"], s["d"]["pid"]
        self.assertNotEqual(shared, own_d)
        self.assertIsNone(s["d"].get("connection"))
        self.assertEqual(sorted(tunneltest.ssh_children(d.pid)), sorted([shared, own_d]))
        conn = self.connect(self.ports["a"])
        tunnels[2] = {**tunnels[2], "share_connection": False}
        tunnels[3] = {**tunnels[3], "share_connection": True}
        off = self.reload(d, tunnels)

        def settled():
            if not all_in_state(d, "abcd"):
                return False
            s = status(d)
            return (s["a"]["pid"] == s["b"]["pid"] == s["d"]["pid"] == shared and s["c"]["pid"] not in (None, shared)
                    and not tunneltest.pid_alive(own_d))
        wait_until(settled, UP_TIMEOUT, what="c on its own ssh, d on the shared one, d's own ssh gone")
        s = status(d)
        c_pid = s["c"]["pid"]
        self.assertEqual(s["d"]["connection"], "~a")
        self.assertIsNone(s["c"].get("connection"), s["c"])
        self.assertEqual(sorted(tunneltest.ssh_children(d.pid)), sorted([shared, c_pid]))
        for n in "abcd":
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
        self.assert_alive(conn, "after", "a's connection is untouched by the others' moves")
        self.assertEqual(s["a"]["availability"]["outages"], 0)
        self.assertEqual(s["b"]["availability"]["outages"], 0)
        self.assert_no_carrier_visible(d)
        spawned = d.findall(r"^<\d+>c: .*ssh pid (\d+) \(start \d+\)", after=off)
        self.assertEqual(len(spawned), 1, f"c leaving the connection starts one ssh of its own, not {spawned}")

    def test_reload_changing_the_connection_of_every_rider(self):
        """A reload that changes a connection setting (server_alive_interval) of every
        tunnel on it: they all move to one new connection, the old ssh ends, and only one
        ssh is left."""
        tunnels = self.three()
        d = self.tunneld(tunnels, server_alive_interval=15)
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        old = status(d)["a"]["pid"]
        self.reload(d, defaults={**d.defaults, "server_alive_interval": 20})
        wait_until(lambda: self.up_on_one_new_ssh(d, "abc", [old]), UP_TIMEOUT, what="all up on one new ssh")
        wait_until(lambda: not tunneltest.pid_alive(old), 15, what="the old connection's ssh to end")
        s = status(d)
        new = s["a"]["pid"]
        self.assertEqual(tunneltest.ssh_children(d.pid), [new], "one ssh left")
        self.assertEqual(len({s[n]["connection"] for n in "abc"}), 1)
        with open(f"/proc/{new}/cmdline", "rb") as f:
            self.assertIn(b"ServerAliveInterval=20", f.read().split(b"\0"))
        for n in "abc":
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
        self.assert_no_carrier_visible(d)
        time.sleep(1.5)         # nothing of the old connection comes back
        self.assertEqual(tunneltest.ssh_children(d.pid), [new])

    def test_reload_while_the_connection_is_starting(self):
        """The connection's ssh is connecting (the server held back) when a reload adds a
        forward to a, adds a tunnel c and disables b: once the server answers, a and c are up
        with their forwards, b is stopped and its port closed, all on one ssh."""
        proxy = tunneltest.use(self, GateProxy(self.sshd.port))
        pa, pa2, pb, pc = free_port(), free_port(), free_port(), free_port()
        tunnels = [{"name": "a", "local_forwards": [self.echo.forward(pa)]},
                   {"name": "b", "local_forwards": [self.echo.forward(pb)]}]
        d = self.tunneld(tunnels, connect_timeout=30, start_timeout=60, **self.through(proxy))
        wait_until(lambda: all_in_state(d, "ab", "starting") and proxy.accepted >= 1, 15,
                   what="a and b starting, ssh connected to the held server")
        (pid,) = tunneltest.ssh_children(d.pid)
        tunnels = [{"name": "a", "local_forwards": [self.echo.forward(pa), self.echo.forward(pa2)]},
                   {"name": "b", "enabled": False, "local_forwards": [self.echo.forward(pb)]},
                   {"name": "c", "local_forwards": [self.echo.forward(pc)]}]
        off = self.reload(d, tunnels)
        d.wait_log(r"^<\d+>reload done: ", timeout=10, after=off)
        self.assertEqual(status(d)["b"]["state"], "stopped")
        self.assertEqual(tunneltest.ssh_children(d.pid), [pid], "the connecting ssh is kept")
        proxy.release()
        wait_all(d, "ac", timeout=UP_TIMEOUT)
        s = status(d)
        self.assertEqual(s["a"]["pid"], pid)
        self.assertEqual(s["c"]["pid"], pid)
        self.assertEqual(s["b"]["state"], "stopped")
        self.assertEqual(sorted(f["forward"] for f in s["a"]["forward_states"]),
                         sorted([self.echo.forward(pa), self.echo.forward(pa2)]))
        for p in (pa, pa2, pc):
            self.assertTrue(echo_roundtrip(p), p)
        self.assertFalse(tunneltest.port_accepts(pb, 0.5), "disabled b's port is not forwarded")
        self.assertEqual(tunneltest.ssh_children(d.pid), [pid])
        self.assertEqual(d.count_log(r"^<\d+>b: .*ssh pid \d+ \(start \d+\)", after=off), 0,
                         "disabling b starts no ssh for it")

    def test_reload_while_the_connection_is_in_backoff(self):
        """The connection is in a long backoff (nothing listens on its port) when a reload
        points it at the server: every tunnel is up well before that backoff would have
        ended, on one ssh, and no retry of the old connection starts a second one."""
        dead = free_port()
        tunnels = self.three()
        d = self.tunneld(tunnels, port=dead, restart_delay=40, restart_delay_max=60)
        wait_all(d, "abc", "backoff", timeout=UP_TIMEOUT)
        s = status(d)
        self.assertGreater(s["a"]["retry_in"], 10)
        retry = [s[n]["retry_in"] for n in "abc"]
        self.assertLess(max(retry) - min(retry), 0.1, f"one backoff for all: {retry}")
        self.assertEqual(tunneltest.ssh_children(d.pid), [])
        t0 = time.monotonic()
        self.reload(d, defaults={**d.defaults, "port": self.sshd.port})
        wait_until(lambda: self.up_on_one_new_ssh(d, "abc", []), UP_TIMEOUT, what="a, b and c up")
        self.assertLess(time.monotonic() - t0, 20, "not after the old backoff")
        (pid,) = tunneltest.ssh_children(d.pid)
        for n in "abc":
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
        time.sleep(1.5)
        self.assertEqual(tunneltest.ssh_children(d.pid), [pid], "nothing of the old connection starts")
        self.assert_no_carrier_visible(d)

    def test_reload_moving_a_connecting_connection(self):
        """The connection's ssh is still connecting (the server held back) when a reload
        points every tunnel at another server: the connecting ssh is ended, all are up on
        one ssh to the new server."""
        proxy = tunneltest.use(self, GateProxy(self.sshd.port))
        d = self.tunneld(self.three(), connect_timeout=30, start_timeout=60, **self.through(proxy))
        wait_until(lambda: all_in_state(d, "abc", "starting") and proxy.accepted >= 1, 15, what="starting")
        (held,) = tunneltest.ssh_children(d.pid)
        self.reload(d, defaults={**d.defaults, **self.sshd2.tunnel_defaults()})
        wait_until(lambda: self.up_on_one_new_ssh(d, "abc", [held]), UP_TIMEOUT, what="all up on the other server")
        wait_until(lambda: not tunneltest.pid_alive(held), 10, what="the connecting ssh to end")
        self.assertEqual(len(tunneltest.ssh_children(d.pid)), 1)
        for n in "abc":
            self.assertTrue(echo_roundtrip(self.ports[n]), n)

    def test_reload_during_a_make_before_break_restart(self):
        """SIGUSR1, and while the new ssh is still connecting (the server held back) a
        reload adds a forward to a and a tunnel d: once the server answers every tunnel is
        on the new ssh with every forward, the old ssh ends, a connection opened before
        carries on."""
        proxy = tunneltest.use(self, GateProxy(self.sshd.port))
        proxy.release()
        tunnels = self.three()
        d = self.tunneld(tunnels, connect_timeout=30, start_timeout=60, **self.through(proxy))
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        old = status(d)["a"]["pid"]
        conn = self.connect(self.ports["b"])
        proxy.hold()
        accepted = proxy.accepted
        os.kill(d.pid, signal.SIGUSR1)
        wait_until(lambda: proxy.accepted > accepted, 10, what="the new ssh to connect (held)")
        extra, pd = free_port(), free_port()
        tunnels[0] = {**tunnels[0], "local_forwards": [self.echo.forward(self.ports["a"]), self.echo.forward(extra)]}
        tunnels.append({"name": "d", "local_forwards": [self.echo.forward(pd)]})
        off = self.reload(d, tunnels)
        d.wait_log(r"^<\d+>reload done: ", timeout=10, after=off)
        self.assertTrue(echo_roundtrip(self.ports["c"]), "the old ssh serves meanwhile")
        proxy.release()
        wait_until(lambda: self.up_on_one_new_ssh(d, "abcd", [old]), UP_TIMEOUT, what="every tunnel on the new ssh")
        for p in (*self.ports.values(), extra, pd):
            self.assertTrue(echo_roundtrip(p), p)
        self.assert_alive(conn, "across")
        conn.close()
        wait_until(lambda: not tunneltest.pid_alive(old), 10, what="the old ssh to end once drained")
        self.assertEqual(len(tunneltest.ssh_children(d.pid)), 1)

    def test_reload_unchanged_touches_nothing(self):
        """A reload of the same file: the same ssh, no line about any tunnel."""
        d = self.tunneld(self.three())
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        pid = status(d)["a"]["pid"]
        off = self.reload(d, d.tunnels and [{k: v for k, v in t.items()} for t in d.tunnels])
        d.wait_log(r"^<\d+>reload done: 3 tunnels \(was 3\), 0 changed", timeout=10, after=off)
        self.assertEqual(d.findall(r"^<\d+>([~abc][^:]*: .*)$", after=off), [])
        self.assertEqual(tunneltest.ssh_children(d.pid), [pid])

    def test_reload_supervision_change_of_every_rider_keeps_the_ssh(self):
        """A reload that changes only supervision settings (restart_delay, max_starts) of
        every tunnel on the connection, in defaults: tunneld.conf(5) says such a change "is
        applied in place: the same ssh keeps running" -- the same ssh, established
        connections carry on, no tunnel goes down."""
        tunnels = self.three()
        d = self.tunneld(tunnels)
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        pid = status(d)["a"]["pid"]
        conn = self.connect(self.ports["a"])
        off = self.reload(d, defaults={**d.defaults, "restart_delay": 0.3, "max_starts": 100})
        d.wait_log(r"^<\d+>reload done: ", timeout=10, after=off)
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        time.sleep(0.5)
        s = status(d)
        try:
            conn.sendall(b"kept\n")
            kept = conn.recv(64) == b"kept\n"
        except OSError:
            kept = False
        seen = {"pids": {n: s[n]["pid"] for n in "abc"}, "ssh": tunneltest.ssh_children(d.pid), "connection kept": kept,
                "outages": {n: s[n]["availability"]["outages"] for n in "abc"}}
        self.assertEqual(seen, {"pids": {n: pid for n in "abc"}, "ssh": [pid], "connection kept": True,
                                "outages": {n: 0 for n in "abc"}},
                         "a supervision-only change is applied in place:\n"
                         + "\n".join(d.log()[off:].splitlines()[:20]))

    def test_reload_policy_change_of_one_rider_splits_it_off(self):
        """A reload that changes a supervision setting (restart_delay) of b only: b no
        longer shares a's and c's connection (supervision is part of it) and rides a
        connection of its own; a's and c's ssh and connections are untouched."""
        tunnels = self.three()
        d = self.tunneld(tunnels)
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        pid = status(d)["a"]["pid"]
        conn = self.connect(self.ports["c"])
        tunnels[1] = {**tunnels[1], "restart_delay": 0.3}
        self.reload(d, tunnels)

        def split():
            if not all_in_state(d, "abc"):
                return False
            s = status(d)
            return (s["a"]["pid"] == s["c"]["pid"] == pid and s["b"]["pid"] not in (None, pid)
                    and s["b"]["connection"] not in (None, s["a"]["connection"]))
        wait_until(split, UP_TIMEOUT, what="b on a connection of its own")
        s = status(d)
        self.assertEqual(sorted(tunneltest.ssh_children(d.pid)), sorted([pid, s["b"]["pid"]]))
        for n in "abc":
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
        self.assert_alive(conn, "after")
        self.assertEqual((s["a"]["availability"]["outages"], s["c"]["availability"]["outages"]), (0, 0))
        self.assert_no_carrier_visible(d)

    def test_rider_disabled_and_enabled_in_reloads(self):
        """A reload that disables b: b stopped, its port closed, no ssh started for it, a and
        c untouched (same ssh, an established connection carries on); enabled again: b is
        up on that same ssh; every tunnel disabled: no ssh left."""
        tunnels = self.three()
        d = self.tunneld(tunnels)
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        pid = status(d)["a"]["pid"]
        conn = self.connect(self.ports["a"])
        tunnels[1] = {**tunnels[1], "enabled": False}
        off = self.reload(d, tunnels)
        wait_state(d, "b", "stopped", timeout=10)
        wait_until(lambda: not tunneltest.pid_alive(int(d.findall(r"^<\d+>b: .*ssh pid (\d+) \(start", after=off)[0]))
                   if d.findall(r"^<\d+>b: .*ssh pid (\d+) \(start", after=off) else True, 10,
                   what="an ssh started for b to end")
        wait_until(lambda: not tunneltest.port_accepts(self.ports["b"], 0.5), 10, what="b's port closed")
        spawned_for_b = d.findall(r"^<\d+>(b: .*ssh pid \d+ \(start \d+\))", after=off)
        self.assertEqual(tunneltest.ssh_children(d.pid), [pid])
        self.assert_alive(conn, "disabled")
        self.assertTrue(echo_roundtrip(self.ports["c"]))
        tunnels[1] = {**tunnels[1], "enabled": True}
        self.reload(d, tunnels)
        wait_state(d, "b", "up", timeout=UP_TIMEOUT)
        self.assertEqual(status(d)["b"]["pid"], pid)
        self.assertTrue(echo_roundtrip(self.ports["b"]))
        self.assert_alive(conn, "enabled")
        self.reload(d, [{**t, "enabled": False} for t in tunnels])
        wait_until(lambda: not tunneltest.ssh_children(d.pid), 15, what="no ssh once every tunnel is disabled")
        self.assertFalse(tunneltest.pid_alive(pid))
        self.assertEqual(spawned_for_b, [], "disabling b starts no ssh for it")

    def test_reload_removing_every_rider_and_adding_them_back(self):
        """A reload that removes every tunnel of a connection: its ssh ends, status is
        empty, no control socket is left; a reload that adds them back makes a working
        connection again."""
        tunnels = self.three()
        d = self.tunneld(tunnels)
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        pid = status(d)["a"]["pid"]
        runtime = d.globals["control_socket"] + ".d"
        self.reload(d, [])
        wait_until(lambda: not tunneltest.pid_alive(pid), 10, what="the shared ssh to end")
        self.assertEqual(tunneltest.status_reply(d)["tunnels"], [])
        wait_until(lambda: not sockets_under(runtime), 5, what="no control socket left")
        self.assertEqual(tunneltest.ssh_children(d.pid), [])
        self.reload(d, tunnels)
        wait_until(lambda: self.up_on_one_new_ssh(d, "abc", [pid]), UP_TIMEOUT, what="a, b and c up again")
        for n in "abc":
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
        self.assertEqual(len(tunneltest.ssh_children(d.pid)), 1)
        self.assert_no_carrier_visible(d)

    # -- the operator --
    def test_stop_every_rider_leaves_nothing_behind(self):
        """tunnelctl stop of every tunnel on the connection: its ssh ends, no zombie, no
        control socket left in the runtime directory; a start afterwards makes a new
        connection that works."""
        tunnels = self.three()
        d = self.tunneld(tunnels)
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        pid = status(d)["a"]["pid"]
        runtime = d.globals["control_socket"] + ".d"
        self.assertTrue(sockets_under(runtime), "the master's socket while it runs")
        tunnelctl_ok(d, "stop", "a", "b", "c", timeout=30)
        wait_until(lambda: not tunneltest.pid_alive(pid), 10, what="the shared ssh to end")
        wait_until(lambda: not tunneltest.zombie_children(d.pid), 5, what="no zombie child of tunneld")
        self.assertEqual(tunneltest.ssh_children(d.pid), [])
        self.assertTrue(all_in_state(d, "abc", "stopped"))
        s = status(d)
        self.assertEqual([s[n]["pid"] for n in "abc"], [None] * 3)
        wait_until(lambda: not sockets_under(runtime), 5, what="no control socket left")
        self.assertEqual([e for e in os.listdir(runtime) if e.endswith((".ssh_config", ".known_hosts"))], [])
        time.sleep(1)           # nothing restarts by itself
        self.assertEqual(tunneltest.ssh_children(d.pid), [])
        tunnelctl_ok(d, "start", "b", timeout=30)
        wait_state(d, "b", "up", timeout=UP_TIMEOUT)
        self.assertTrue(echo_roundtrip(self.ports["b"]))
        self.assertEqual(tunnel_states(d, "ac"), {"a": "stopped", "c": "stopped"})
        self.assertEqual(len(tunneltest.ssh_children(d.pid)), 1)

    def test_stop_every_rider_in_backoff_cancels_the_retry(self):
        """The connection in backoff, every tunnel on it stopped: no retry starts an ssh."""
        # the retry lies 5 to 10 s ahead: the checks and the stop (a sanitized tunnelctl on
        # a loaded machine takes a second or more) land before it, and the watch outlasts it
        d = self.tunneld(self.three(), port=free_port(), restart_delay=10, restart_delay_max=10)
        wait_all(d, "abc", "backoff", timeout=UP_TIMEOUT)
        retry_at = time.monotonic() + status(d)["a"]["retry_in"]
        self.assert_no_carrier_visible(d)       # in backoff too
        off = len(d.log())
        tunnelctl_ok(d, "stop", "a", "b", "c", timeout=30)
        self.assertTrue(all_in_state(d, "abc", "stopped"))
        self.assertLess(time.monotonic(), retry_at, "the stop came after the retry: the test proves nothing")
        deadline = retry_at + 1
        while time.monotonic() < deadline:
            self.assertEqual(tunneltest.ssh_children(d.pid), [], "a retry started an ssh with every tunnel stopped")
            time.sleep(0.05)
        self.assertEqual(d.count_log(r"ssh pid \d+ \(start", after=off), 0, d.log()[off:])

    def test_restart_one_rider_keeps_the_others_connections(self):
        """tunnelctl restart b: b's forwards are closed and opened again on the same ssh; a's
        and c's established connections carry on, they count no start and no outage."""
        d = self.tunneld(self.three())
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        pid = status(d)["a"]["pid"]
        ca, cc = self.connect(self.ports["a"]), self.connect(self.ports["c"])
        off = len(d.log())
        tunnelctl_ok(d, "restart", "b", timeout=30)
        d.wait_log(r"^<\d+>b: up: ", timeout=UP_TIMEOUT, after=off)     # a rider: "up: every forward is open on ..."
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        self.assertTrue(echo_roundtrip(self.ports["b"]))
        self.assertEqual(tunneltest.ssh_children(d.pid), [pid], "the same ssh")
        self.assert_alive(ca, "after")
        self.assert_alive(cc, "after")
        s = status(d)
        for n in "ac":
            self.assertEqual(s[n]["starts"], 1, n)
            self.assertEqual(s[n]["availability"]["outages"], 0, n)
        self.assertEqual(d.count_log(r"^<\d+>[ac]: ", after=off), 0, "a and c have nothing to say")

    def test_max_lifetime_restarts_the_connection_make_before_break(self):
        """max_lifetime on the connection: it restarts once (not once per tunnel), make-
        before-break: every tunnel moves to the new ssh, a connection opened before carries
        bytes after, no tunnel counts an outage; the old ssh ends once that connection
        closes."""
        d = self.tunneld(self.three(), max_lifetime=4)
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        old = status(d)["a"]["pid"]
        conn = self.connect(self.ports["b"])
        wait_until(lambda: self.up_on_one_new_ssh(d, "abc", [old]), 20, what="every tunnel on the new ssh")
        self.assert_alive(conn, "across", "the connection opened before the restart")
        s = status(d)
        for n in "abc":
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
        self.assertEqual(d.count_log(r"^<\d+>[abc]: .*make-before-break"), 0, "the tunnels do not restart themselves")
        self.assertGreaterEqual(d.count_log(r"^<\d+>~a: .*make-before-break"), 1)
        conn.close()
        wait_until(lambda: not tunneltest.pid_alive(old), 10, what="the old ssh to end once drained")
        self.assertEqual({n: s[n]["availability"]["outages"] for n in "abc"}, {"a": 0, "b": 0, "c": 0},
                         "a make-before-break restart is no outage of any tunnel")

    def test_hooks_fire_per_rider_with_the_failure_class(self):
        """on_state_change runs for each tunnel on the connection under its own name: up
        for each, degraded only for the one whose forward failed, failed for each with the
        connection's failure class; never for the connection."""
        server = tunneltest.use(self, SSHServer())
        hook, records = self.make_hook()
        pa, pb = free_port(), free_port()
        squatter = listening_socket(pb)
        self.addCleanup(squatter.close)
        d = self.tunneld([{"name": "a", "local_forwards": [self.echo.forward(pa)]},
                          {"name": "b", "local_forwards": [self.echo.forward(pb)]}],
                         sshd=server, on_state_change=hook, max_starts=2)
        wait_until(lambda: {("a", "up"), ("b", "degraded")} <= {r[:2] for r in self.hook_records(records)}, UP_TIMEOUT,
                   what="the hooks of a up and b degraded")
        squatter.close()
        wait_until(lambda: ("b", "up") in {r[:2] for r in self.hook_records(records)}, FWD_BACK_TIMEOUT,
                   what="the hook of b up")
        server.stop(kill_sessions=True)     # the connection is lost; its next start is refused: failed
        wait_all(d, "ab", "failed", timeout=UP_TIMEOUT)
        wait_until(lambda: len([r for r in self.hook_records(records) if r[1] == "failed"]) >= 2, 10,
                   what="the hooks of a and b failed")
        time.sleep(0.5)         # any extra run would be in by now
        recs = self.hook_records(records)
        self.assertFalse([r for r in recs if r[0].startswith("~")], recs)
        self.assertEqual(sorted(r[:2] for r in recs),
                         sorted([("a", "up"), ("b", "degraded"), ("b", "up"), ("a", "failed"), ("b", "failed")]), recs)
        s = status(d)
        failed = {r[0]: r for r in recs if r[1] == "failed"}
        for n in "ab":
            cls = s[n]["last_exit"]["failure"]
            self.assertTrue(cls, s[n]["last_exit"])
            self.assertEqual(failed[n][3], f"[{cls}]", (n, failed[n]))
        self.assertEqual(failed["a"][3], failed["b"][3], "the same verdict for both")

    def test_stop_then_start_at_once_while_the_connection_stops(self):
        """Every tunnel stopped, and one started again at once, while the connection's ssh
        is still ending: that tunnel comes up on a new ssh, the only one."""
        d = self.tunneld(self.three())
        wait_all(d, "abc", timeout=UP_TIMEOUT)
        pid = status(d)["a"]["pid"]
        r = tunneltest.tunnelctl(d, "stop", "a", "b", "c")
        self.assertEqual(r.returncode, 0, tunneltest.describe(r))
        tunnelctl_ok(d, "start", "c", timeout=30)
        wait_until(lambda: self.up_on_one_new_ssh(d, "c", [pid]), UP_TIMEOUT, what="c up on a new ssh")
        self.assertFalse(tunneltest.pid_alive(pid))
        self.assertEqual(tunneltest.ssh_children(d.pid), [status(d)["c"]["pid"]])
        self.assertTrue(echo_roundtrip(self.ports["c"]))
        self.assertEqual(tunnel_states(d, "ab"), {"a": "stopped", "b": "stopped"})

    def test_stop_riders_while_the_connection_is_starting(self):
        """Tunnels stopped while their connection is still connecting: a stopped one stays
        stopped (its port never forwarded) once the connection is up; the last one stopped
        ends the connecting ssh."""
        proxy = tunneltest.use(self, GateProxy(self.sshd.port))
        d = self.tunneld(self.three(), connect_timeout=30, start_timeout=60, **self.through(proxy))
        wait_until(lambda: all_in_state(d, "abc", "starting") and proxy.accepted >= 1, 15, what="starting")
        (pid,) = tunneltest.ssh_children(d.pid)
        tunnelctl_ok(d, "stop", "b", timeout=30)
        proxy.release()
        wait_all(d, "ac", timeout=UP_TIMEOUT)
        self.assertEqual(status(d)["b"]["state"], "stopped")
        self.assertFalse(tunneltest.port_accepts(self.ports["b"], 0.5), "stopped b's port is not forwarded")
        self.assertEqual(tunneltest.ssh_children(d.pid), [pid])
        proxy2 = tunneltest.use(self, GateProxy(self.sshd.port))
        d2 = self.tunneld([{"name": "x", "local_forwards": [self.echo.forward(free_port())]},
                           {"name": "y", "local_forwards": [self.echo.forward(free_port())]}],
                          connect_timeout=30, start_timeout=60, **self.through(proxy2))
        wait_until(lambda: all_in_state(d2, "xy", "starting") and proxy2.accepted >= 1, 15, what="x, y starting")
        (pid2,) = tunneltest.ssh_children(d2.pid)
        tunnelctl_ok(d2, "stop", "x", "y", timeout=30)
        wait_until(lambda: not tunneltest.pid_alive(pid2), 10, what="the connecting ssh to end")
        self.assertTrue(all_in_state(d2, "xy", "stopped"))
        wait_until(lambda: not tunneltest.zombie_children(d2.pid), 5, what="no zombie")

    # -- SIGTERM of tunneld --
    def test_sigterm_with_shared_connections_exits_cleanly(self):
        """SIGTERM with two shared connections up (one with an established connection, one
        with an old ssh still draining after SIGUSR1): tunneld exits 0 within its bound, no
        ssh outlives it, its runtime directory is gone."""
        p = {n: free_port() for n in ("x1", "x2", "y1", "y2")}
        d = self.tunneld([{"name": "x1", "local_forwards": [self.echo.forward(p["x1"])]},
                          {"name": "x2", "local_forwards": [self.echo.forward(p["x2"])]},
                          *({**self.sshd2.tunnel_defaults(), "name": n, "local_forwards": [self.echo.forward(p[n])]}
                            for n in ("y1", "y2"))],
                         globals={"stop_timeout": 3})
        names = ["x1", "x2", "y1", "y2"]
        wait_all(d, names, timeout=UP_TIMEOUT)
        self.assertEqual(len(tunneltest.ssh_children(d.pid)), 2)
        old = status(d)["x1"]["pid"]
        conn_x = self.connect(p["x1"])
        conn_y = self.connect(p["y2"])
        os.kill(d.pid, signal.SIGUSR1)
        wait_until(lambda: self.up_on_one_new_ssh(d, ["x1", "x2"], [old]), UP_TIMEOUT, what="x's new ssh")
        self.assertTrue(tunneltest.pid_alive(old), "the old ssh drains conn_x")
        self.assert_alive(conn_x, "drain")
        self.assert_alive(conn_y, "y")
        runtime = d.globals["control_socket"] + ".d"
        t0 = time.monotonic()
        rc = d.stop(timeout=15)
        took = time.monotonic() - t0
        print(f"# tunneld exited {rc} {took:.2f} s after SIGTERM", flush=True)
        self.assertEqual(rc, 0)
        self.assertLess(took, 10, "bounded by stop_timeout (3 s) and some")
        wait_until(lambda: not d.leftovers(), 5, what="no process of tunneld's left")
        self.assertFalse(os.path.exists(runtime), "the runtime directory is removed")

    def test_sigterm_while_the_connection_is_starting(self):
        """SIGTERM while the shared ssh is still connecting (the server held back): a bounded
        exit 0, nothing left."""
        proxy = tunneltest.use(self, GateProxy(self.sshd.port))
        d = self.tunneld(self.three(), connect_timeout=30, start_timeout=60, **self.through(proxy),
                         globals={"stop_timeout": 3})
        wait_until(lambda: all_in_state(d, "abc", "starting") and proxy.accepted >= 1, 15, what="starting")
        t0 = time.monotonic()
        rc = d.stop(timeout=15)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 10)
        wait_until(lambda: not d.leftovers(), 5, what="no process of tunneld's left")

    # -- tunneld -t --
    def test_check_groups_follow_the_connection_identity(self):
        """tunneld -t: a supervision setting of its own puts a tunnel on a connection of its
        own (said so), a disabled tunnel is in no group, and `after` between tunnels of two
        connections is accepted."""
        path = os.path.join(tunneltest.temp_dir(self), "t.conf")
        base = {**self.sshd.tunnel_defaults(), "share_connection": True}
        fwd = lambda: self.echo.forward(free_port())     # noqa: E731
        tunneltest.write_config(path, {"ssh": tunneltest.SSH}, base, [
            {"name": "a", "host": "127.0.0.1", "local_forwards": [fwd()]},
            {"name": "b", "host": "127.0.0.1", "local_forwards": [fwd()]},
            {"name": "c", "host": "127.0.0.1", "restart_delay": 3, "after": ["a"], "local_forwards": [fwd()]},
            {"name": "d", "host": "127.0.0.1", "enabled": False, "local_forwards": [fwd()]}])
        r = tunneltest.run_tunneld("-t", "-c", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        groups = [l for l in r.stdout.splitlines() if l.startswith("shared connection ")]
        self.assertEqual(len(groups), 2, r.stdout)
        self.assertTrue(groups[0].startswith("shared connection ~a: a, b (one ssh to root@127.0.0.1)"), groups)
        self.assertTrue(groups[1].startswith("shared connection ~c: c (alone"), groups)
        self.assertNotIn("d", [n.strip() for g in groups for n in g.split(":", 1)[1].split("(")[0].split(",")])

    # -- a jump host --
    def test_jump_host_shared_connection(self):
        """Tunnels through a jump host share one ssh (one session on the jump host), each
        with its forwards; kill -9 of that ssh is one failure for each, and they come back
        through the jump host together; the hops' config file is the connection's, gone at
        exit."""
        jump = tunneltest.use(self, SSHServer())
        dest = self.sshd2
        with open(dest.client_key + ".pub") as f:
            pub = f.read()
        with open(jump.authorized_keys, "a") as f:
            f.write(pub)
        kh = os.path.join(tunneltest.temp_dir(self), "known_hosts")

        def line(server, name):
            with open(server.host_key + ".pub") as f:
                keytype, blob = f.read().split()[:2]
            return f"[{name}]:{server.port} {keytype} {blob}\n"
        with open(kh, "w") as f:
            f.write(line(dest, "localhost") + line(jump, "127.0.0.1"))
        pa, pb = free_port(), free_port()
        offset = len(jump.log())
        d = self.tunneld([{"name": "a", "host": "localhost", "local_forwards": [self.echo.forward(pa)]},
                          {"name": "b", "host": "localhost", "local_forwards": [self.echo.forward(pb)]}],
                         sshd=dest, jump_host=f"root@127.0.0.1:{jump.port}", connect_timeout=10,
                         ssh_options=[f"UserKnownHostsFile={kh}", "GlobalKnownHostsFile=/dev/null",
                                      "StrictHostKeyChecking=yes"])
        wait_until(lambda: all_in_state(d, "ab"), 30, what="a and b up through the jump host")
        s = status(d)
        pid = s["a"]["pid"]
        self.assertEqual(s["b"]["pid"], pid)
        self.assertEqual(tunneltest.ssh_children(d.pid), [pid])
        self.assertTrue(echo_roundtrip(pa))
        self.assertTrue(echo_roundtrip(pb))
        self.assertEqual(jump.log()[offset:].count("Accepted publickey for root"), 1, "one session on the jump host")
        runtime = d.globals["control_socket"] + ".d"
        self.assertTrue(os.path.exists(os.path.join(runtime, "~a.ssh_config")), os.listdir(runtime))
        off = len(d.log())
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: self.up_on_one_new_ssh(d, "ab", [pid]), 30, what="a and b back on a new ssh")
        s = status(d)
        for n in "ab":
            self.assertEqual(s[n]["failures"], {"killed": 1}, n)
        self.assertEqual(d.count_log(r"^<\d+>~a: ssh was killed by signal KILL", after=off), 1)
        self.assertTrue(echo_roundtrip(pa))
        self.assertTrue(echo_roundtrip(pb))
        self.assertEqual(d.stop(timeout=15), 0)
        self.assertFalse(os.path.exists(runtime))
        wait_until(lambda: not d.leftovers(), 5, what="no process of tunneld's left")


if __name__ == "__main__":
    tunneltest.main()
