#!/usr/bin/env python3
"""tunneld survives the real world: a fault matrix against real ssh and sshd.

Each test injects one fault, bounded in time, and asserts that the tunnel comes back (bytes
flow through it again) or is reported failed with the right failure class. It records the
detection time (fault -> tunneld notices: ssh exit or probe failure logged) and the
recovery time (fault removed -> bytes flow again); tearDownModule prints the matrix as TAP
comments.

Faults that need a network (sshd killed and restarted, silent blackhole, link down/up, a
probe failure behind a forward) run against an sshd in a network namespace test host
(tests/lib/netns.py) joined by a veth pair; the others use a loopback sshd. The tests run
one after another: every tunneld with watch_network = true sees every netlink event of the
machine, so a test that proves a retry came from its own link-up checks timing around its
own event. tunneld runs with -d throughout: once a tunnel is flapping, its failure lines
go to the debug level.

Times come from a thread that stamps each line of tunneld's log when it appears (10 ms
polling), so they include the log's latency, not ssh's alone. Bytes "flow" when a line sent
through the tunnel comes back from our own echo server, tagged (netns.TaggedEchoServer): a
foreign listener that takes a tunnel's port while its ssh is down cannot fake a recovery.
FAULTS_VERBOSE=1 prints each tunneld's log, stamped, as TAP comments.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

import netns
import tunneltest
from netns import TaggedEchoServer, listener_port
from tunneltest import (SSHServer, Tunneld, UP_TIMEOUT, open_fds, parse_duration, pid_alive, tunnel_status, up_line,
                        wait_state, wait_until, zombie_children)

SETPRIV = shutil.which("setpriv")
SLACK = 1.5              # seconds of scheduling slack on a loaded machine (meson --num-processes 4)
NETWATCH_SETTLE = 0.2    # daemon/netwatch.c: a retry follows the first netlink event by this much
EXIT_RE = r"ssh (?:exited with status \d+|was killed by signal \w+) after "
BACKOFF_RE = r"restarting in ([\d.]+ (?:ms|s|min)(?: [\d.]+ s)?) \(failed start (\d+) in a row\)"

# The matrix: one row per fault, filled by the tests, printed by tearDownModule.
RESULTS = {}
MATRIX_SIZE = 12


def fmt_s(value):
    return "-" if value is None else f"{value:.2f} s"


def tearDownModule():
    rows = [("#", "fault", "result", "detection", "recovery", "(ssh handshake)")]
    for key in range(1, MATRIX_SIZE + 1):
        r = RESULTS.get(key)
        if r is None:               # skipped (no root, no ip netns) or never reached its row
            rows.append((str(key), "-", "NOT RUN", "-", "-", "-"))
            continue
        rows.append((str(key), r["fault"], r["result"], fmt_s(r.get("detection")), fmt_s(r.get("recovery")),
                     fmt_s(r.get("connect"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["fault matrix (detection: fault -> tunneld notices; recovery: fault removed -> bytes flow;",
             "ssh handshake: spawn-to-UP of the ssh that recovered, which may have started before)"]
    for n, row in enumerate(rows):
        lines.append(" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths))
    for key in sorted(RESULTS):
        if RESULTS[key].get("note"):
            lines.append(f"{key}: {RESULTS[key]['note']}")
    print("\n".join("# " + line for line in lines), flush=True)


# ---- helpers ---------------------------------------------------------------------------

class LogTimes(tunneltest.Resource):
    """Stamps every line of a tunneld's log with time.monotonic() when it appears."""

    def __init__(self, tunneld):
        self.tunneld = tunneld
        self.lines = []          # [(t, line)]
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        offset, partial = 0, b""
        while True:
            stop = self.stopping.is_set()
            try:
                with open(self.tunneld.log_path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                data = b""
            now = time.monotonic()
            if data:
                offset += len(data)
                partial += data
                *complete, partial = partial.split(b"\n")
                with self.lock:
                    self.lines += [(now, line.decode(errors="replace")) for line in complete]
            if stop:
                return
            self.stopping.wait(0.01)

    def find(self, regex, since=0.0):
        """(time, match) of the first line at or after `since` matching regex, or None."""
        pattern = re.compile(regex)
        with self.lock:
            lines = list(self.lines)
        for t, line in lines:
            if t >= since:
                m = pattern.search(line)
                if m:
                    return t, m
        return None

    def findall(self, regex, since=0.0):
        pattern = re.compile(regex)
        with self.lock:
            lines = list(self.lines)
        return [(t, m) for t, line in lines if t >= since for m in [pattern.search(line)] if m]

    def wait(self, regex, timeout, since=0.0):
        """Wait for a line matching regex logged at or after `since`; (time, match)."""
        def found():
            hit = self.find(regex, since)
            if hit is None and self.tunneld.proc.poll() is not None:
                time.sleep(0.05)
                hit = self.find(regex, since)
                if hit is None:
                    raise AssertionError(f"tunneld exited ({self.tunneld.proc.returncode}) before logging /{regex}/")
            return hit
        return wait_until(found, timeout, interval=0.02, what=f"/{regex}/ in tunneld's log")

    def when_up(self, name, since=0.0, timeout=UP_TIMEOUT):
        """(time, ssh pid) of tunnel name's next "up" line (tunneltest.up_line()) logged at
        or after `since`."""
        t, m = self.wait(up_line(name), timeout, since)
        return t, int(m.group(1))

    def close(self):
        self.stopping.set()
        if getattr(self, "thread", None):
            self.thread.join(5)
        super().close()


class FaultTest(unittest.TestCase):
    """A fault's row: self.row(number, name) at the start, self.timing[...] as measured; a
    test that does not finish leaves its row marked FAILED with what it measured so far."""

    echo = None  # the TaggedEchoServer behind the tunnels' forwards

    def flows(self, port, timeout=1.0):
        """True if bytes sent to 127.0.0.1:port come back from our echo server."""
        return self.echo.roundtrip(port, b"fault matrix\n", timeout)

    def wait_flow(self, port, timeout):
        """Poll until bytes go through 127.0.0.1:port to our echo server and back; the time
        they first did."""
        return wait_until(lambda: self.flows(port) and time.monotonic(), timeout, interval=0.05,
                          what=f"bytes to flow through port {port}")

    def take_port(self, port):
        """A socket listening on 127.0.0.1:port (closed at cleanup, or earlier to free it)."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        return taken

    def row(self, number, fault):
        self.number, self.timing = number, {"fault": fault, "result": "FAILED"}
        RESULTS[number] = self.timing

    def passed(self, result):
        self.timing["result"] = result

    def start_tunneld(self, tunnels, defaults, globals=None, args=("-d",)):
        g = {"ssh": tunneltest.SSH, **(globals or {})}
        # tunneld dies with this test process, even a SIGKILLed one (and its ssh with it)
        wrapper = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []
        d = tunneltest.use(self, Tunneld(tunnels, defaults, globals=g, args=list(args), wrapper=wrapper))
        times = tunneltest.use(self, LogTimes(d))
        if os.environ.get("FAULTS_VERBOSE"):
            self.addCleanup(self.print_timeline, times)
        return d, times

    @staticmethod
    def print_timeline(times):
        """FAULTS_VERBOSE=1: tunneld's log as TAP comments, each line stamped when it appeared."""
        with times.lock:
            lines = list(times.lines)
        t0 = lines[0][0] if lines else 0.0
        print("\n".join(f"# {t - t0:8.3f} {line}" for t, line in lines), flush=True)

    def recovered(self, times, name, port, t1, start_within, timeout=30):
        """Wait for bytes to flow through port again after the fault was removed at t1;
        record and return the recovery time. The ssh that carries them must have been
        started within start_within s of t1 (or run already): that is tunneld's part of
        the recovery; ssh's own connect and handshake time, long on a loaded machine, is
        reported (note) but not bounded."""
        t_flow = self.wait_flow(port, timeout)
        self.timing["recovery"] = t_flow - t1
        up_re = up_line(name)
        # A -R listener carries bytes a moment before ssh says so and tunneld logs UP.
        hit = times.find(up_re, since=t1)
        if hit is None or hit[0] > t_flow + 0.05:
            try:
                hit = times.wait(up_re, 5, since=t1)
            except AssertionError:
                before = times.findall(up_re)
                self.assertTrue(before, f"bytes flow through {port} but {name} never was up")
                hit = before[-1]
        t_up, m = hit
        pid = int(m.group(1))
        if t_up >= t1:
            t_start, _ = times.find(rf"^<\d+>{re.escape(name)}: .*: ssh pid {pid} \(start \d+\)$")
            self.assertLessEqual(t_start - t1, start_within,
                                 f"{name}: the ssh that recovered started {t_start - t1:.2f} s after the fault was "
                                 f"removed (allowed {start_within:g} s)")
            self.timing["connect"] = t_up - t_start
        return t_flow

    def wait_exit(self, times, name, since, timeout):
        """(time, line match) of name's next "ssh exited / was killed" line."""
        return times.wait(rf"^<\d+>{re.escape(name)}: {EXIT_RE}.*", timeout, since)


# ---- faults against a loopback sshd ----------------------------------------------------

class LoopbackFaults(FaultTest):
    """Faults 1, 5-11: a private sshd on 127.0.0.1 serves the class, an echo server sits
    behind every -L forward, and each test runs its own tunneld (private control socket,
    no network watch)."""

    @classmethod
    def setUpClass(cls):
        cls.sshd = tunneltest.use(cls, SSHServer())
        cls.echo = tunneltest.use(cls, TaggedEchoServer())

    def defaults(self, **settings):
        return {**self.sshd.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2,
                **settings}

    def test_ssh_child_sigkill(self):
        """kill -9 of the ssh child: tunneld notices at once (class killed), restarts it, and
        bytes flow again."""
        self.row(1, "ssh child SIGKILL")
        lport = listener_port()
        d, times = self.start_tunneld([{"name": "k", "host": "127.0.0.1",
                                        "local_forwards": [self.echo.forward(lport)]}], self.defaults())
        t_up, pid = times.when_up("k")
        self.wait_flow(lport, 10)
        time.sleep(max(0.0, t_up + 1.1 - time.monotonic()))  # past gatetime: a good run ends
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        t_det, m = times.wait(r"^<\d+>k: ssh was killed by signal KILL after .*\(killed: .*restarting now", 10, t0)
        self.timing["detection"] = t_det - t0
        self.recovered(times, "k", lport, t0, 0.5 + SLACK)
        _, new = times.when_up("k", since=t_det)
        self.assertNotEqual(new, pid)
        self.assertFalse(pid_alive(pid))
        self.assertEqual(d.children(), [new])
        self.assertEqual(tunnel_status(d, "k")["last_exit"]["failure"], "killed")
        self.assertLess(self.timing["detection"], 0.5 + SLACK)
        self.passed("back up (killed)")

    def attempts(self, times, name, kind, reason):
        """(time, retry delay) of each attempt at name's forward that failed with reason."""
        return [(t, parse_duration(m.group(1))) for t, m in
                times.findall(rf"^<\d+>{name}: forward {kind} \S+ failed: {reason}; asked for again in (.+)$")]

    def test_local_port_taken(self):
        """The -L port is taken: the forward fails (class local-forward, ssh's bind error as
        its reason), the tunnel is degraded, and the forward is asked for again on the same
        ssh with growing delays, never spinning; once the port is free the tunnel comes up."""
        self.row(5, "local forward port taken")
        port = listener_port()
        taken = self.take_port(port)
        delay, cap = 0.2, 1.6
        t0 = time.monotonic()
        d, times = self.start_tunneld([{"name": "busy", "host": "127.0.0.1",
                                        "local_forwards": [self.echo.forward(port)]}],
                                      self.defaults(gatetime=5, restart_delay=delay, restart_delay_max=cap))
        reason = rf"bind \[127\.0\.0\.1\]:{port}: Address already in use"
        t_det, _ = times.wait(rf"^<4>busy: forward L \S+ failed: {reason}; ", 15, t0)
        self.timing["detection"] = t_det - t0
        wait_until(lambda: len(self.attempts(times, "busy", "L", reason)) >= 5, 30, what="5 failed attempts")
        tries = self.attempts(times, "busy", "L", reason)
        for n, (_, got) in enumerate(tries, 1):
            base = min(delay * 2 ** (n - 1), cap)
            self.assertTrue(base / 2 - 0.06 <= got <= base + 0.06, f"attempt {n}: {tries}")
        # No spin: consecutive attempts are at least the decided delay apart.
        for (t_a, got), (t_b, _) in zip(tries, tries[1:]):
            self.assertGreaterEqual(t_b - t_a, got - 0.05, f"{tries}")
        st = tunnel_status(d, "busy")
        self.assertEqual((st["state"], st["starts"], st["failures"]), ("degraded", 1, {"local-forward": 1}), st)

        t1 = time.monotonic()
        taken.close()
        self.recovered(times, "busy", port, t1, cap + SLACK)
        self.assertEqual(tunnel_status(d, "busy")["pid"], st["pid"], "the same ssh throughout")
        self.passed("retried on the same ssh (local-forward), up when freed")

    def test_remote_port_taken(self):
        """The -R port is taken on the server: the forward fails (class remote-forward) and
        is asked for again on the same ssh every ~3 s (jittered into [1.5 s, 3 s]) for 10
        tries, then with the normal backoff; once the port is free the tunnel comes up.

        restart_delay is short (0.1 s), so the knocks cannot be mistaken for the normal
        backoff's first steps; restart_delay_max is 3 s, so whatever the normal backoff
        does after the 10 tries, the forward is asked for within 3 s of the port's release."""
        self.row(6, "remote forward port taken (server side)")
        rport = listener_port()
        taken = self.take_port(rport)
        delay, cap = 0.1, 3.0
        t0 = time.monotonic()
        d, times = self.start_tunneld([{"name": "rf", "host": "127.0.0.1",
                                        "remote_forwards": [f"127.0.0.1:{rport}:127.0.0.1:{self.echo.port}"]}],
                                      self.defaults(gatetime=5, restart_delay=delay, restart_delay_max=cap))
        reason = rf"remote port forwarding failed for listen port {rport}"
        t_det, _ = times.wait(rf"^<4>rf: forward R \S+ failed: {reason}; ", 15, t0)
        self.timing["detection"] = t_det - t0
        self.assertEqual(tunnel_status(d, "rf")["failures"], {"remote-forward": 1})
        wait_until(lambda: len(self.attempts(times, "rf", "R", reason)) >= 11, 50, what="11 failed attempts")
        decided = [got for _, got in self.attempts(times, "rf", "R", reason)][:11]
        for n, got in enumerate(decided[:10], 1):
            self.assertTrue(1.5 - 0.06 <= got <= 3.0 + 0.06, f"try {n}: {decided}")
        # After the 10 tries: a normal backoff delay, jittered into [b/2, b] for one of
        # the steps b = restart_delay * 2^k, capped at restart_delay_max.
        got = decided[10]
        steps = sorted({min(delay * 2 ** k, cap) for k in range(12)})
        self.assertTrue(any(b / 2 - 0.06 <= got <= b + 0.06 for b in steps), f"after 10 tries: {decided}")
        self.timing["note"] = f"delays (s): {', '.join(f'{g:g}' for g in decided)}"

        t1 = time.monotonic()
        taken.close()
        self.recovered(times, "rf", rport, t1, cap + SLACK)
        self.passed("knocks ~3 s x10 (remote-forward) on the same ssh, up when freed")

    def test_wrong_key(self):
        """A key the server does not accept: class auth, "Permission denied" logged, the
        backoff goes to restart_delay_max at once and never hot-loops; with the right key
        back in the file, the next start comes up."""
        self.row(7, "wrong key (auth)")
        tmp = tunneltest.temp_dir(self)
        key = os.path.join(tmp, "wrong_key")
        subprocess.run([tunneltest.SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "wrong", "-f", key],
                       check=True, stdin=subprocess.DEVNULL, timeout=30)
        lport = listener_port()
        cap = 3.0
        t0 = time.monotonic()
        d, times = self.start_tunneld([{"name": "auth", "host": "127.0.0.1",
                                        "local_forwards": [self.echo.forward(lport)]}],
                                      self.defaults(identity_file=key, gatetime=5, restart_delay=0.1,
                                                    restart_delay_max=cap))
        fail = rf"^<\d+>auth: {EXIT_RE}.*\(auth: .*{BACKOFF_RE}$"
        t_det, _ = times.wait(fail, 15, t0)
        self.timing["detection"] = t_det - t0
        self.assertRegex(d.log(), r"auth: ssh: .*Permission denied \(publickey\)")
        window = 8.0
        time.sleep(window)
        decided = [parse_duration(m.group(1)) for _, m in times.findall(fail)]
        for got in decided:  # restart_delay_max at once, jittered into [max/2, max]
            self.assertTrue(cap / 2 - 0.06 <= got <= cap + 0.06, f"{decided}")
        starts = len(times.findall(r"^<\d+>auth: .*: ssh pid \d+ \(start \d+\)$", since=t_det))
        self.assertLessEqual(starts, window / (cap / 2) + 1, f"{starts} starts in {window} s")
        self.assertGreaterEqual(starts, 1)
        self.assertEqual(tunnel_status(d, "auth")["last_exit"]["failure"], "auth")

        t1 = time.monotonic()
        shutil.copy(self.sshd.client_key, key)
        shutil.copy(self.sshd.client_key + ".pub", key + ".pub")  # ssh offers the key named by the .pub
        self.recovered(times, "auth", lport, t1, cap + SLACK)
        self.passed("backs off to max (auth), back up with the key")

    def test_host_key_changed(self):
        """known_hosts holds another key for the server (StrictHostKeyChecking=yes): ssh
        refuses to connect, class host-key, with ssh's warning in the log and the backoff at
        restart_delay_max; with the right key in known_hosts the tunnel comes up."""
        self.row(8, "host key changed (host-key)")
        tmp = tunneltest.temp_dir(self)
        other = os.path.join(tmp, "other_host_key")
        subprocess.run([tunneltest.SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", other],
                       check=True, stdin=subprocess.DEVNULL, timeout=30)
        with open(other + ".pub") as f:
            keytype, blob = f.read().split()[:2]
        known = os.path.join(tmp, "known_hosts")
        with open(known, "w") as f:
            f.write(f"[127.0.0.1]:{self.sshd.port} {keytype} {blob}\n")
        lport = listener_port()
        cap = 3.0
        t0 = time.monotonic()
        d, times = self.start_tunneld(
            [{"name": "hk", "host": "127.0.0.1", "local_forwards": [self.echo.forward(lport)]}],
            self.defaults(gatetime=5, restart_delay=0.1, restart_delay_max=cap,
                          ssh_options=[f"UserKnownHostsFile={known}", "GlobalKnownHostsFile=/dev/null",
                                       "StrictHostKeyChecking=yes"]))
        fail = rf"^<\d+>hk: {EXIT_RE}.*\(host-key: .*{BACKOFF_RE}$"
        t_det, m = times.wait(fail, 15, t0)
        self.timing["detection"] = t_det - t0
        got = parse_duration(m.group(1))
        self.assertTrue(cap / 2 - 0.06 <= got <= cap + 0.06, m.group(0))
        log = d.log()
        self.assertIn("REMOTE HOST IDENTIFICATION HAS CHANGED", log)
        self.assertRegex(log, r"hk: ssh: Host key verification failed\.")
        self.assertEqual(tunnel_status(d, "hk")["last_exit"]["failure"], "host-key")
        self.assertEqual(d.children(), [])  # backoff, no ssh left hanging

        t1 = time.monotonic()
        shutil.copy(self.sshd.known_hosts, known)
        self.recovered(times, "hk", lport, t1, cap + SLACK)
        self.passed("refused (host-key), back up with the key")

    def test_unresolvable_host(self):
        """A host name that does not resolve: class dns, normal (growing) backoff."""
        self.row(9, "unresolvable host name (dns)")
        t0 = time.monotonic()
        d, times = self.start_tunneld([{"name": "dns", "host": "nonexistent.invalid",
                                        "local_forwards": [self.echo.forward(listener_port())]}],
                                      self.defaults(gatetime=5, restart_delay=0.2, restart_delay_max=2))
        fail = rf"^<\d+>dns: {EXIT_RE}.*\(dns: .*{BACKOFF_RE}$"
        t_det, _ = times.wait(fail, 15, t0)
        self.timing["detection"] = t_det - t0
        wait_until(lambda: len(times.findall(fail)) >= 3, 15, what="3 failed starts")
        decided = [(parse_duration(m.group(1)), int(m.group(2))) for _, m in times.findall(fail)]
        for got, n in decided:
            base = min(0.2 * 2 ** (n - 1), 2)
            self.assertTrue(base / 2 - 0.06 <= got <= base + 0.06, f"failure {n}: {decided}")
        self.assertRegex(d.log(), r"dns: ssh: .*Could not resolve hostname nonexistent\.invalid")
        st = tunnel_status(d, "dns")
        self.assertEqual(st["last_exit"]["failure"], "dns")
        self.passed("reported (dns), backing off")

    def test_tunneld_sigkill(self):
        """tunneld itself killed with SIGKILL: no ssh of it remains (PR_SET_PDEATHSIG) within
        about 2 s, and the forwarded port closes."""
        self.row(10, "tunneld SIGKILL")
        ports = [listener_port(), listener_port()]
        d, times = self.start_tunneld([{"name": f"o{i}", "host": "127.0.0.1",
                                        "local_forwards": [self.echo.forward(p)]} for i, p in enumerate(ports)],
                                      self.defaults())
        pids = [times.when_up(f"o{i}")[1] for i in range(len(ports))]
        for p in ports:
            self.wait_flow(p, 10)
        marker = d.marker
        t0 = time.monotonic()
        d.signal(signal.SIGKILL)
        self.assertEqual(d.wait_exit(5), -signal.SIGKILL)
        gone = wait_until(lambda: not any(pid_alive(p) for p in pids) and not tunneltest.procs_with_env(marker)
                          and time.monotonic(), 5, interval=0.02, what="tunneld's ssh children to die")
        self.timing["detection"] = gone - t0
        self.timing["note"] = f"every ssh of the killed tunneld gone {gone - t0:.2f} s after its SIGKILL"
        self.assertLess(self.timing["detection"], 2.0 + SLACK)
        for p in ports:
            self.assertFalse(tunneltest.port_accepts(p, timeout=0.5), f"port {p} still accepts")
        self.passed("no ssh left")

    def test_sighup_burst(self):
        """100 SIGHUPs in a burst, twice: on an unchanged file every tunnel keeps its ssh
        (same pids) and tunneld the very same fds; on a file that changes one tunnel, adds
        one and removes one, the unchanged tunnels keep their ssh, the changed and added
        ones come up, the removed one goes. Bytes flow throughout; no fd leaked (fds of the
        running children's stderr pipes aside), no zombie left."""
        self.row(11, "100 SIGHUPs in a burst (x2)")
        ports = {f"h{i}": listener_port() for i in range(4)}
        rport = listener_port()

        def tunnel(name, **settings):
            return {"name": name, "host": "127.0.0.1", "local_forwards": [self.echo.forward(ports[name])],
                    **settings}
        tunnels = [tunnel("h0"), tunnel("h1"), tunnel("h2"),
                   {"name": "hr", "host": "127.0.0.1",
                    "remote_forwards": [f"127.0.0.1:{rport}:127.0.0.1:{self.echo.port}"]}]
        d, times = self.start_tunneld(tunnels, self.defaults())
        for t in tunnels:
            times.when_up(t["name"])
        for p in [ports["h0"], ports["h1"], ports["h2"], rport]:
            self.wait_flow(p, 10)
        time.sleep(1.2)  # past gatetime: every timer of the start is done

        def snapshot(names):
            kids = d.children()
            pipes = set()
            for k in kids:
                try:
                    pipes.add(os.readlink(f"/proc/{k}/fd/2"))
                except OSError:
                    pass
            fds = {fd: target for fd, target in open_fds(d.pid).items() if target not in pipes}
            return kids, {name: tunnel_status(d, name)["pid"] for name in names}, fds

        def burst():
            """100 SIGHUPs; wait until the reloads are over (1 s without a reload line)."""
            t0 = time.monotonic()
            for _ in range(100):
                os.kill(d.pid, signal.SIGHUP)

            def settled():
                n = len(times.findall(r"^<\d+>reload done: ", since=t0))
                last = max((t for t, _ in times.findall(r"^<\d+>reload", since=t0)), default=t0)
                return n > 0 and time.monotonic() - last > 1.0 and n
            n = wait_until(settled, 30, interval=0.1, what="the reloads to finish")
            self.assertIsNone(d.proc.poll(), "tunneld died")
            self.assertEqual(times.findall(r"^<\d+>reload (?:rejected|failed)"), [])
            return t0, n

        names = ["h0", "h1", "h2", "hr"]
        kids_before, pids_before, fds_before = snapshot(names)
        self.assertEqual(len(kids_before), len(tunnels))
        t0, first = burst()
        self.assertEqual(times.findall(r"^<\d+>\S+: (?:stopped|ssh exited|ssh was killed)", since=t0), [])
        kids_after, pids_after, fds_after = snapshot(names)
        self.assertEqual(pids_after, pids_before)
        self.assertEqual(kids_after, kids_before)
        self.assertEqual(fds_after, fds_before, "fds of tunneld")
        self.assertEqual(zombie_children(d.pid), [])
        for p in [ports["h0"], ports["h1"], ports["h2"], rport]:
            self.assertTrue(self.echo.roundtrip(p, b"after the burst\n"), f"port {p}")

        # Second burst on a changed file: h1 changed, h2 removed, h3 added.
        d.rewrite(tunnels=[tunnel("h0"), tunnel("h1", server_alive_count_max=4), tunnels[3], tunnel("h3")])
        t0, second = burst()
        # h1's connection changed: a new ssh takes its forwards over (make-before-break)
        _, m = times.wait(r"^<\d+>h1: make-before-break done: ssh pid (\d+) has taken every forward over", UP_TIMEOUT,
                          t0)
        new_h1 = int(m.group(1))
        times.when_up("h3", since=t0)
        times.wait(r"^<\d+>h2: stopped: ", 10, t0)
        self.assertEqual(len(times.findall(r"^<\d+>h1: .*make-before-break: a new ssh", since=t0)), 1,
                         "h1 restarted once")
        wait_until(lambda: not pid_alive(pids_before["h1"]), 5, what="h1's old ssh to end, drained")
        for p in [ports["h0"], ports["h1"], ports["h3"], rport]:
            self.wait_flow(p, 10)
        self.assertFalse(self.flows(ports["h2"], timeout=0.5), "the removed tunnel still forwards")
        names = ["h0", "h1", "hr", "h3"]
        kids_after, pids_after, fds_after = snapshot(names)
        self.assertEqual([pids_after[n] for n in ("h0", "hr")], [pids_before[n] for n in ("h0", "hr")])
        self.assertNotIn(pids_before["h1"], kids_after)
        self.assertEqual(pids_after["h1"], new_h1)
        self.assertFalse(pid_alive(pids_before["h2"]))
        self.assertEqual(sorted(kids_after), sorted(pids_after.values()))
        # each connection has one control connection to its ssh: h1's new ssh has a new one,
        # h2's went with it, h3's came: as many sockets as before, every other fd the same
        def split(fds):
            return ({fd: t for fd, t in fds.items() if not t.startswith("socket:")},
                    sum(t.startswith("socket:") for t in fds.values()))
        self.assertEqual(split(fds_after), split(fds_before), "fds of tunneld (children's stderr pipes aside)")
        self.assertEqual(zombie_children(d.pid), [])
        self.timing["note"] = f"{first} + {second} reloads for 2 x 100 SIGHUPs"
        self.passed(f"no tunnel lost ({first}+{second} reloads)")


# ---- faults against an sshd in a network namespace -----------------------------------

class NetworkFaults(FaultTest):
    """Faults 2-4 and 12: each test builds its own test host (network namespace, veth
    pair, sshd, an echo server behind the forward) and runs tunneld with the network watch
    on."""

    def setUp(self):
        why = netns.available()
        if why:
            self.skipTest(why)
        self.host = tunneltest.use(self, netns.TestHost())
        self.sshd = tunneltest.use(self, netns.NetnsSSHServer(self.host))
        self.target = self.echo = tunneltest.use(self, TaggedEchoServer(self.host))

    def tunnel(self, name, lport, **settings):
        return {"name": name, "local_forwards": [self.target.forward(lport)], **settings}

    def start(self, tunnels, **settings):
        defaults = {**self.sshd.tunnel_defaults(), "gatetime": 5, "restart_delay": 0.5, "restart_delay_max": 2,
                    "connect_timeout": 3, **settings}
        return self.start_tunneld(tunnels, defaults, globals={"watch_network": True})

    def test_sshd_killed_and_restarted(self):
        """sshd (listener and sessions) killed: ssh exits at once; tunneld retries (refused)
        with a bounded backoff; sshd back 5 s later: the tunnel is back within
        restart_delay_max and a connect."""
        self.row(2, "sshd killed, back after 5 s")
        lport = listener_port()
        d, times = self.start([self.tunnel("srv", lport)])
        _, pid = times.when_up("srv")
        self.wait_flow(lport, 10)
        t0 = time.monotonic()
        self.sshd.stop()
        t_det, m = self.wait_exit(times, "srv", t0, 10)
        self.timing["detection"] = t_det - t0
        cls = re.search(r"\((\S+): ", m.group(0))
        why = [line for t, line in times.findall(r"^<\d+>srv: ssh: (?!debug)(.*)", since=t0) if t <= t_det]
        self.timing["note"] = (f"the session's end was classified {cls.group(1) if cls else 'none'}"
                               f" (ssh: {why[0].group(1) if why else '-'})")
        self.assertFalse(pid_alive(pid))
        times.wait(rf"^<\d+>srv: {EXIT_RE}.*\(refused: ", 10, t_det)
        time.sleep(max(0.0, t0 + 5 - time.monotonic()))
        self.assertFalse(self.flows(lport, timeout=0.5))
        t1 = time.monotonic()
        self.sshd.start()
        self.recovered(times, "srv", lport, t1, 2 + SLACK)
        self.assertLess(self.timing["detection"], 1 + SLACK)
        self.passed("back up (refused meanwhile)")

    def test_silent_blackhole(self):
        """20 s of silent blackhole (the test host drops its replies to us; no link event):
        ServerAlive (1 s x 2) ends ssh within about interval x (count + 1); retries time out
        meanwhile; after the route is gone the tunnel is back within a connect timeout and
        restart_delay_max."""
        self.row(3, "silent blackhole 20 s")
        lport = listener_port()
        interval, count = 1, 2
        d, times = self.start([self.tunnel("bh", lport)], server_alive_interval=interval,
                              server_alive_count_max=count, connect_timeout=2)
        _, pid = times.when_up("bh")
        self.wait_flow(lport, 10)
        time.sleep(1.5)  # an idle tunnel, its keepalives going
        t0 = time.monotonic()
        self.host.blackhole()
        self.addCleanup(lambda: netns.ip("route", "del", "blackhole", f"{self.host.local_addr}/32",
                                         ns=self.host.ns, check=False))
        t_det, m = self.wait_exit(times, "bh", t0, 15)
        self.timing["detection"] = t_det - t0
        self.assertRegex(m.group(0), r"status 255 .*\(timeout: ")
        self.assertRegex(d.log(), r"bh: ssh: Timeout, server \S+ not responding")
        self.assertFalse(pid_alive(pid))
        self.assertGreaterEqual(self.timing["detection"], interval * count - 0.1)
        self.assertLessEqual(self.timing["detection"], interval * (count + 1) + SLACK)
        time.sleep(max(0.0, t0 + 20 - time.monotonic()))
        self.assertFalse(self.flows(lport, timeout=0.5))
        t1 = time.monotonic()
        self.host.unblackhole()
        # An attempt in flight at t1 either gets through or times out (connect_timeout 2 s)
        # and the next one follows within restart_delay_max (2 s).
        self.recovered(times, "bh", lport, t1, 2 + 2 + SLACK)
        self.passed("back up (timeout meanwhile)")

    def test_link_down_up(self):
        """This side's veth goes down: ServerAlive ends ssh, retries fail at once
        (unreachable) and the backoff is long (restart_delay 30 s); link up: the network watch
        cuts the backoff short: the first ssh started after it carries bytes within the settle
        time (0.2 s) plus that one ssh connect (and a margin), long before the backoff timer."""
        self.row(4, "link down / up (netlink)")
        lport = listener_port()
        d, times = self.start([self.tunnel("link", lport)], server_alive_interval=1, server_alive_count_max=2,
                              restart_delay=30, restart_delay_max=60, gatetime=60)
        _, pid = times.when_up("link")
        self.wait_flow(lport, 10)
        t0 = time.monotonic()
        self.host.link_down()
        self.addCleanup(netns.ip, "link", "set", self.host.outside, "up", check=False)
        t_det, m = self.wait_exit(times, "link", t0, 15)
        self.timing["detection"] = t_det - t0
        # an up tunnel whose server stopped answering: its path died, a new ssh at once,
        # not a failed start; that one fails at once (unreachable) and backs off
        self.assertRegex(m.group(0), r"\(timeout: .*; its path died .*; reconnecting at once: ssh pid ")
        _, m = times.wait(rf"^<\d+>link: {EXIT_RE}.*{BACKOFF_RE}", 15, t0)
        time.sleep(2)  # down for a while: nothing comes up by itself
        # (another test's netlink event may make it retry meanwhile: that retry fails at
        # once, unreachable, and backs off again)
        st = wait_state(d, "link", "backoff", timeout=5)
        retry_in = st["retry_in"]
        self.assertGreater(retry_in, 10, st)
        self.assertFalse(self.flows(lport, timeout=0.5))
        t1 = time.monotonic()
        self.host.link_up()
        t_net, _ = times.wait(r"^<\d+>network changed: \d+ connections? in backoff retr", 10, t1)
        times.wait(r"^<\d+>link: network changed; retrying now, backoff reset: ssh pid ", 10, t1)
        t_up, up_pid = times.when_up("link", since=t1, timeout=15)
        t_flow = self.recovered(times, "link", lport, t1, NETWATCH_SETTLE + SLACK)
        cls = re.search(r"\((\S+): ", m.group(0))
        self.timing["note"] = (f"link-down exit classified {cls.group(1) if cls else 'none'}; network changed "
                               f"{t_net - t1:.2f} s after link-up, when the retry timer had {retry_in:.1f} s left")
        self.assertLess(t_net - t1, NETWATCH_SETTLE + SLACK)
        self.assertLess(t_up - t1, retry_in - 5, "recovery waited for the backoff timer")
        # Back within the settle time and one ssh connect: the first ssh started after
        # link-up is the one that came up (no failed try before the network was back).
        starts = times.findall(r"^<\d+>link: .*: ssh pid (\d+) \(start \d+\)$", since=t1)
        self.assertEqual([int(x.group(1)) for t, x in starts if t <= t_up], [up_pid],
                         "more than one ssh start after link-up")
        connect = self.timing["connect"]
        self.assertLess(t_flow - t1, NETWATCH_SETTLE + connect + SLACK,
                        f"bytes flowed {t_flow - t1:.2f} s after link-up; the settle time is {NETWATCH_SETTLE} s, "
                        f"ssh's connect took {connect:.2f} s")
        self.passed("back up at link-up (network watch)")

    def test_probe_failure(self):
        """The server-side target behind a -L forward stops while ssh stays alive: the probe
        fails `failures` times, tunneld restarts ssh (class probe) and backs off; once the
        target is back, bytes flow again."""
        self.row(12, "probe failure (target stopped)")
        lport = listener_port()
        probe = {"connect": f"127.0.0.1:{lport}", "interval": 1, "timeout": 0.5, "failures": 2,
                 "send": "ping\n", "expect": "ping\n" + self.target.tag.decode()}
        d, times = self.start([self.tunnel("pr", lport, probe=probe)])
        _, pid = times.when_up("pr")
        self.wait_flow(lport, 10)
        time.sleep(1.5)  # a probe or two pass
        t0 = time.monotonic()
        self.target.stop()
        t_det, m = times.wait(r"^<\d+>pr: probe \S+ failed 2 times in a row .* although ssh runs: restarting ssh "
                              r"\(SIGTERM to pid (\d+)", 10, t0)
        self.timing["detection"] = t_det - t0
        self.assertEqual(int(m.group(1)), pid)
        times.wait(r"^<\d+>pr: probe \S+ failed \(1 of 2\)", 1, t0)
        t_exit, m = self.wait_exit(times, "pr", t_det, 10)
        self.assertRegex(m.group(0), r"\(probe: .*" + BACKOFF_RE)
        self.assertFalse(pid_alive(pid))
        self.assertEqual(tunnel_status(d, "pr")["last_exit"]["failure"], "probe")
        self.assertLess(self.timing["detection"], 2 * 1 + 0.5 + SLACK)
        time.sleep(max(0.0, t0 + 5 - time.monotonic()))
        t1 = time.monotonic()
        self.target.start()
        self.recovered(times, "pr", lport, t1, 2 + SLACK)
        self.passed("restarted (probe), back up")


if __name__ == "__main__":
    tunneltest.main()
