"""Helpers of the tunnelctl tests (tests/ctl/): run tunnelctl against a test's tunneld,
read its JSON and its table, and talk to the control socket by hand.

Imported by the test files next to it (a script's own directory is on sys.path).
"""

import json
import os
import re
import socket
import subprocess
import time

import tunneltest
from tunneltest import parse_duration, wait_until

TUNNELCTL = os.path.join(os.path.dirname(tunneltest.TUNNELD), "tunnelctl")
UP_TIMEOUT = 20     # ssh's connect and key exchange on a loaded 2-core machine

STATES = {"stopped", "queued", "starting", "up", "backoff", "failed", "stopping", "degraded"}
HEADERS = ["NAME", "STATE", "PID", "UPTIME", "AVAIL", "STARTS", "LAST EXIT", "NEXT RETRY", "FORWARDS"]
ANSI = re.compile(r"\033\[[0-9;]*m")
DURATION = r"[\d.]+ (?:ms|s|min|h|d)(?: [\d.]+ (?:s|min|h))?"


# one set of tunnelctl helpers for every test (tests/lib/tunneltest/ctl.py)
clean_env = tunneltest.clean_env
tunnelctl = tunneltest.tunnelctl
describe = tunneltest.describe
status = tunneltest.status


def tunnels(sock):
    return status(sock)[1]


def wait_serving(d, sock, timeout=10):
    """Wait until tunneld d answers status on sock with its configuration loaded (the socket
    appears a moment after the process starts, the tunnels once ssh -G is done)."""
    def serving():
        if d.proc.poll() is not None:
            raise AssertionError(f"tunneld exited ({d.proc.returncode})")
        return tunneltest.loaded(sock)
    wait_until(serving, timeout, interval=0.05, what=f"tunneld to answer on {sock}")


def wait_tunnel(sock, name, pred, timeout=UP_TIMEOUT, what=None):
    """Poll the status until pred(tunnel) is true; return the tunnel's JSON object."""
    def check():
        t = tunnels(sock).get(name)
        return t if t is not None and pred(t) else None
    return wait_until(check, timeout, interval=0.1, what=what or f"{name} to match {pred}")


def wait_state(sock, name, state, timeout=UP_TIMEOUT):
    return wait_tunnel(sock, name, lambda t: t["state"] == state, timeout, what=f"{name} to be {state}")


def wait_up(sock, name, not_pid=None, timeout=UP_TIMEOUT):
    """Wait until name is up with an ssh pid other than not_pid; return that pid."""
    t = wait_tunnel(sock, name, lambda t: t["state"] == "up" and t["pid"] != not_pid, timeout,
                    what=f"{name} up" + (f" with a pid other than {not_pid}" if not_pid else ""))
    return t["pid"]


def pids(sock):
    """{name: pid} of every tunnel."""
    return {n: t["pid"] for n, t in tunnels(sock).items()}


def assert_tunnel_fields(test, t):
    """The documented fields of one tunnel in `tunnelctl --json status`, with their types."""
    documented = ("name", "state", "enabled", "held", "flapping", "reason", "host", "pid", "uptime", "since",
                  "retry_in", "starts", "restarts", "consecutive_failures", "prohibited", "failures", "last_exit", "forwards",
                  "gatetime", "restart", "availability", "multiplex", "connection", "forward_states")
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
    test.assertIsInstance(t["multiplex"], bool, name)
    test.assertIsInstance(t["forward_states"], list, name)
    for fs in t["forward_states"]:
        test.assertEqual(sorted(fs), ["allocated_port", "forward", "kind", "reason", "state"], name)
        test.assertIn(fs["state"], ("pending", "open", "failed"), name)
    if not t["multiplex"] or t["pid"] is None:
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


def fds(pid):
    """{fd: target} of pid's open files."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def retry_in_seconds(cell):
    """The NEXT RETRY cell "in 30 s" as seconds."""
    assert cell.startswith("in "), cell
    return parse_duration(cell[3:])
