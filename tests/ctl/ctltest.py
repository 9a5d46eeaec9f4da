"""Helpers of the tunnelctl tests (tests/ctl/): check tunnelctl's JSON and its table, talk
to the control socket by hand, storms of events and the clients that follow them. Running
tunnelctl, status and the waits on a tunnel's state are tunneltest's (ctl.py).

Imported by the test files next to it (a script's own directory is on sys.path).
"""

import json
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import tunneltest
from tunneltest import TUNNELCTL, clean_env, parse_duration, wait_until


STATES = {"stopped", "queued", "starting", "up", "backoff", "failed", "stopping", "degraded"}
HEADERS = ["NAME", "STATE", "PID", "UPTIME", "AVAIL", "STARTS", "LAST EXIT", "NEXT RETRY", "FORWARDS"]
ANSI = re.compile(r"\033\[[0-9;]*m")
DURATION = r"[\d.]+ (?:ms|s|min|h|d)(?: [\d.]+ (?:s|min|h))?"


def assert_tunnel_fields(test, t):
    """The documented fields of one tunnel in `tunnelctl --json status`, with their types."""
    documented = ("name", "state", "enabled", "held", "flapping", "reason", "host", "pid", "next_pid", "uptime", "since",
                  "retry_in", "starts", "restarts", "consecutive_failures", "prohibited", "failures", "last_exit", "forwards",
                  "gatetime", "restart", "availability", "multiplex", "connection", "forward_states", "path")
    test.assertEqual(sorted(t), sorted(documented), f"fields of {t.get('name')} (man/tunnelctl.1.scd: JSON OUTPUT)")
    name = t["name"]
    for key in ("enabled", "held", "flapping"):
        test.assertIsInstance(t[key], bool, f"{name}.{key}")
    test.assertTrue(t["reason"] is None or isinstance(t["reason"], str), f"{name}.reason")
    test.assertTrue(t["connection"] is None or t["connection"].startswith("~"), f"{name}.connection")
    test.assertIsInstance(t["host"], str, name)
    test.assertIsInstance(t["since"], (int, float), name)
    test.assertGreaterEqual(t["since"], 0, name)
    test.assertIsInstance(t["consecutive_failures"], int, name)
    test.assertIsInstance(t["prohibited"], int, name)
    test.assertIsInstance(t["failures"], dict, name)
    test.assertTrue(all(isinstance(v, int) and v > 0 for v in t["failures"].values()), f"{name}.failures")
    test.assertIsInstance(t["gatetime"], (int, float), name)
    test.assertIn(t["restart"], ("always", "on-failure", "never"), name)
    test.assertIn(t["state"], STATES, name)
    if t["pid"] is None:
        test.assertIsNone(t["uptime"], f"{name}: uptime without a pid")
    else:
        test.assertIsInstance(t["pid"], int, name)
        test.assertGreater(t["pid"], 1, name)
        test.assertIsInstance(t["uptime"], (int, float), name)
        test.assertGreaterEqual(t["uptime"], 0, name)
    for key in ("starts", "restarts"):
        test.assertIsInstance(t[key], int, f"{name}.{key}")
        test.assertGreaterEqual(t[key], 0, f"{name}.{key}")
    if t["state"] == "backoff":
        test.assertIsInstance(t["retry_in"], (int, float), f"{name}: backoff without retry_in")
    else:
        test.assertIsNone(t["retry_in"], f"{name}: retry_in outside backoff")
    e = t["last_exit"]
    if e is not None:
        test.assertEqual(sorted(e), ["ago", "failure", "ran", "requested", "signal", "status"], f"{name}.last_exit")
        test.assertIsInstance(e["requested"], bool, name)
        test.assertGreaterEqual(e["ago"], 0, name)
        for key in ("status", "signal", "ran", "failure"):
            test.assertIn(key, e, f"{name}.last_exit.{key}")
        test.assertTrue((e["status"] is None) != (e["signal"] is None),
                        f"{name}.last_exit: exactly one of status and signal: {e}")
        if e["status"] is not None:
            test.assertIsInstance(e["status"], int, name)
        if e["signal"] is not None:
            test.assertIsInstance(e["signal"], str, name)
        test.assertIsInstance(e["ran"], (int, float), name)
        test.assertGreaterEqual(e["ran"], 0, name)
        test.assertTrue(e["failure"] is None or isinstance(e["failure"], str), name)
    a = t["availability"]
    test.assertEqual(sorted(a), ["current_outage", "down_seconds", "last_outage", "last_outage_ago", "longest_outage",
                                 "outages", "ratio", "up_seconds"], f"{name}.availability")
    test.assertTrue(a["up_seconds"] >= 0 and a["down_seconds"] >= 0 and a["longest_outage"] >= 0, a)
    test.assertTrue(a["ratio"] is None or 0 <= a["ratio"] <= 1, a)
    test.assertIsInstance(a["outages"], int, name)
    if a["current_outage"] is not None:
        test.assertNotEqual(t["state"], "up", a)
    test.assertEqual(a["last_outage"] is None, a["last_outage_ago"] is None, a)
    test.assertIs(t["multiplex"], True, f"{name}: every tunnel's ssh is a mux master (kept for scripts)")
    test.assertIsInstance(t["forward_states"], list, name)
    for fs in t["forward_states"]:
        test.assertEqual(sorted(fs), ["allocated_port", "forward", "kind", "reason", "state"], name)
        test.assertIn(fs["state"], ("pending", "open", "failed"), name)
    if t["pid"] is None:
        test.assertEqual(t["forward_states"], [], name)
    f = t["forwards"]
    test.assertEqual(sorted(f), ["allocated", "dynamic", "local", "remote"], f"{name}.forwards")
    for kind in ("local", "remote", "dynamic", "allocated"):
        test.assertIsInstance(f[kind], list, f"{name}.forwards.{kind}")
        test.assertTrue(all(isinstance(x, str) for x in f[kind]), f"{name}.forwards.{kind}")


def parse_table(test, text):
    """Check that `tunnelctl status` printed the documented columns, left-aligned, each
    exactly as wide as its widest cell and two spaces apart; return {name: {HEADER: cell}}
    (colour codes removed first)."""
    lines = ANSI.sub("", text).rstrip("\n").split("\n")
    header = lines[0]
    starts, pos = [], 0
    for h in HEADERS:
        i = header.find(h, pos)
        test.assertGreaterEqual(i, 0, f"column {h} missing from the header {header!r}")
        starts.append(i)
        pos = i + len(h)
    test.assertEqual(starts[0], 0, header)
    test.assertEqual(header.rstrip(), header, "trailing blanks in the header")
    test.assertTrue(header.endswith(HEADERS[-1]), header)
    rows = {}
    widths = [len(h) for h in HEADERS]
    for line in [header] + lines[1:]:
        for c in range(1, len(HEADERS)):
            s = starts[c]
            test.assertEqual(line[s - 2:s], "  ", f"column {HEADERS[c]} (at {s}) not aligned in {line!r}")
            test.assertNotEqual(line[s:s + 1], " ", f"column {HEADERS[c]} (at {s}) not aligned in {line!r}")
        cells = [line[a:b].rstrip() if b else line[a:] for a, b in zip(starts, starts[1:] + [None])]
        widths = [max(w, len(cell)) for w, cell in zip(widths, cells)]
        if line is not header:
            test.assertNotIn(cells[0], rows, "a tunnel listed twice")
            rows[cells[0]] = dict(zip(HEADERS, cells))
    for c in range(len(HEADERS) - 1):  # no column wider than its widest cell
        test.assertEqual(starts[c + 1] - starts[c] - 2, widths[c], f"column {HEADERS[c]} is padded too wide")
    return rows


def connect(sock, timeout=5):
    """A raw connection to the control socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(None)      # a blocking connect waits for a backlog slot (non-blocking: EAGAIN)
    s.connect(sock)
    s.settimeout(timeout)
    return s


def read_lines(s, n, timeout=5):
    """Read until n lines arrived (or EOF, an error, or timeout): (lines, why it ended
    early or None)."""
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < n:
        left = deadline - time.monotonic()
        if left <= 0:
            return data.split(b"\n")[:-1], "timeout"
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return data.split(b"\n")[:-1], "timeout"
        except OSError as e:
            return data.split(b"\n")[:-1], e.__class__.__name__
        if not chunk:
            return data.split(b"\n")[:-1], "eof"
        data += chunk
    return data.split(b"\n")[:n], None


def wait_closed(s, timeout):
    """Wait until the peer closes s (EOF or reset), reading and discarding what comes;
    return how it ended: "eof", an exception name, or "timeout"."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        s.settimeout(left)
        try:
            if not s.recv(65536):
                return "eof"
        except socket.timeout:
            return "timeout"
        except OSError as e:
            return e.__class__.__name__


def request(sock, obj_or_bytes, timeout=5):
    """One request on a fresh connection; the decoded reply."""
    data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode() + b"\n"
    with connect(sock, timeout) as s:
        s.sendall(data)
        lines, why = read_lines(s, 1, timeout)
    if not lines:
        raise AssertionError(f"no reply to {data[:80]!r}: {why}")
    return json.loads(lines[0])


def retry_in_seconds(cell):
    """The NEXT RETRY cell "in 30 s" as seconds."""
    assert cell.startswith("in "), cell
    return parse_duration(cell[3:])


# ---- other users -------------------------------------------------------------------------

SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
NOBODY_UID = 65534
NOBODY = ["--reuid", str(NOBODY_UID), "--regid", str(NOBODY_UID), "--clear-groups"]   # setpriv's options


def public_dir(cls):
    """A temporary directory other users may search, removed with the class."""
    path = tempfile.mkdtemp(prefix="tunneltest-ctl-")
    os.chmod(path, 0o755)
    cls.addClassCleanup(shutil.rmtree, path, True)
    return path


def public_tunnelctl(directory):
    """A copy of tunnelctl other users may run (the build tree may be private)."""
    path = os.path.join(directory, "tunnelctl")
    shutil.copy(TUNNELCTL, path)
    os.chmod(path, 0o755)
    return path


class AttackerUser(tunneltest.Resource):
    """A system user made for the test, removed at close."""

    def start(self):
        self.name = f"tatk{os.getpid() % 100000}{random.randrange(100):02d}"
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", self.name],
                       check=True, capture_output=True, timeout=30)
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def run(self, *argv):
        return subprocess.Popen([SETPRIV, "--reuid", str(self.uid), "--regid", str(self.gid), "--clear-groups",
                                 *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)

    def close(self):
        if getattr(self, "name", None):
            subprocess.run(["pkill", "-KILL", "-u", self.name], capture_output=True, timeout=10)
            for _ in range(50):
                if subprocess.run(["userdel", self.name], capture_output=True, timeout=30).returncode in (0, 6):
                    break
                time.sleep(0.1)
            self.name = None
        super().close()


# ---- what tunneld costs ---------------------------------------------------------------------

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def served_within(sock, *names, limit=1.0):
    """root's status of names (all if none) on a new connection, as tunnelctl asks it (but
    without starting a process, whose start a loaded machine delays): how long the answer
    took; AssertionError unless it came, ok, within limit seconds."""
    t0 = time.monotonic()
    with connect(sock, timeout=limit + 5) as s:
        s.sendall(json.dumps({"cmd": "status", **({"tunnels": list(names)} if names else {})}).encode() + b"\n")
        lines, why = read_lines(s, 1, limit + 5)
    took = time.monotonic() - t0
    if why or not json.loads(lines[0]).get("ok") or took >= limit:
        raise AssertionError(f"status {' '.join(names)}: {took:.2f} s (limit {limit:g} s): "
                             f"{why or lines[0][:300]!r}")
    return took


# ---- event storms and the clients that follow them -------------------------------------------

def storm_tunnels(n):
    """A tunnel "gate" that never comes up (its host does not resolve: one ssh, then failed
    for good) and n tunnels s0..sN-1 after it: each waits for gate (queued), stopping one
    makes it stopped and starting it queued again: a state change each, and no process
    started. Events at any rate, cheaply."""
    return ([{"name": "gate", "host": "gate.invalid", "restart": "never"}] +
            [{"name": f"s{i}", "host": "storm.invalid", "after": ["gate"]} for i in range(n)])


class EventStorm(tunneltest.Resource):
    """About `rate` state changes a second for as long as it runs: the storm tunnels
    (storm_tunnels) started and stopped in turn by root over one connection. .events counts
    them; .error says why it stopped early."""

    def __init__(self, sock, n, rate):
        self.sock, self.names, self.rate = sock, [f"s{i}" for i in range(n)], rate
        self.events, self.error = 0, None
        self.stopping = threading.Event()

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        period, k = len(self.names) / self.rate, 0
        due = time.monotonic()
        try:
            with connect(self.sock, timeout=30) as c:
                while not self.stopping.is_set():
                    c.sendall(json.dumps({"cmd": ("start", "stop")[k % 2], "tunnels": self.names}).encode() + b"\n")
                    lines, why = read_lines(c, 1, 30)
                    if why or not json.loads(lines[0]).get("ok"):
                        self.error = why or lines[0][:200]
                        return
                    self.events += len(self.names)
                    k += 1
                    due += period
                    self.stopping.wait(max(0.0, due - time.monotonic()))
        except OSError as e:
            self.error = repr(e)

    def close(self):
        self.stopping.set()
        if getattr(self, "thread", None):
            self.thread.join(40)
        super().close()


class SlowReader(tunneltest.Resource):
    """`tunnelctl CMD ARGS` (events, or wait; as another user with setpriv options in user) whose output is
    taken `chunk` bytes every `interval` seconds, so that it reads tunneld no faster; with
    again=True it is run again whenever it ends, as a shell loop would. .runs: one
    (exit status, stderr, seconds it ran) per run that ended."""

    def __init__(self, sock, *args, cmd="events", user=(), ctl=TUNNELCTL, chunk=1024, interval=0.1, again=False):
        self.argv = [*([SETPRIV, *user] if user else []), ctl, "-s", sock, cmd, *args]
        self.chunk, self.interval, self.again = chunk, interval, again
        self.runs, self.proc = [], None
        self.stopping = threading.Event()

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            err = tempfile.TemporaryFile()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                         env=clean_env())
            fd = self.proc.stdout.fileno()
            while not self.stopping.wait(self.interval):
                if not os.read(fd, self.chunk):
                    break
            if self.stopping.is_set():
                self.proc.kill()
            status = self.proc.wait()
            self.proc.stdout.close()
            err.seek(0)
            self.runs.append((status, err.read().decode(errors="replace"), time.monotonic() - t0))
            err.close()
            if not self.again:
                return

    def wait_ended(self, timeout):
        """The (status, stderr, seconds) of its first run, once it ended."""
        wait_until(lambda: self.runs, timeout, interval=0.2, what=f"{' '.join(self.argv[-3:])} to end")
        return self.runs[0]

    def close(self):
        self.stopping.set()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()        # a read that waits for its output ends
        if getattr(self, "thread", None):
            self.thread.join(20)
        super().close()


def last_line(data):
    """The last complete line of data (bytes), decoded as JSON."""
    return json.loads(data.rstrip(b"\n").rsplit(b"\n", 1)[-1])


def read_all(s, timeout=5):
    """Everything s still holds until EOF (or timeout): bytes."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(1 << 16)
        except socket.timeout:
            break
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data
