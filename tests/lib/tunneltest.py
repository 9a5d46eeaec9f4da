"""tunneltest: the shared harness of tunneld's Python tests (standard library only).

A test file defines unittest.TestCase classes and ends with

    if __name__ == "__main__":
        tunneltest.main()

main() runs them and prints TAP for meson. The helpers start what the tests need and always
clean up after themselves, even when a test fails or times out:

    FakeSSH     a scripted stand-in for ssh (tests/fake-ssh) for supervisor timing tests
    SSHServer   a throwaway sshd on 127.0.0.1 with its own host and client keys
    EchoServer  a threaded TCP echo server; echo_roundtrip() checks bytes through a tunnel
    Tunneld     tunneld itself on a config written by write_config(), its log, its children

Everything listens on 127.0.0.1 only. Ports come from free_port(), which keeps concurrently
running test files (meson test --num-processes N) from picking the same port.
"""

import atexit
import ctypes
import math
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.abspath(os.environ.get("TUNNELD_SOURCE_ROOT") or os.path.join(HERE, "..", ".."))
TUNNELD = os.path.abspath(os.environ.get("TUNNELD") or os.path.join(SOURCE_ROOT, "build", "daemon", "tunneld"))
FAKE_SSH = os.path.join(SOURCE_ROOT, "tests", "fake-ssh")
SSHD = os.environ.get("SSHD", "/usr/sbin/sshd")
SSH = shutil.which("ssh") or "/usr/bin/ssh"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"

# A test that runs longer than this fails with TestTimeout (and its cleanups still run).
TEST_TIMEOUT = float(os.environ.get("TUNNELTEST_TIMEOUT", "60"))
LOG_TAIL_LINES = 60
# meson's b_sanitize of the build under test (tests/meson.build sets it): "none" or e.g.
# "address,undefined". In that build a tunneld still running when its test ends must exit 0
# on SIGTERM: that exit is where LeakSanitizer reports.
SANITIZE = os.environ.get("TUNNELD_SANITIZE", "none")
SANITIZED = SANITIZE not in ("", "none")


# ---- processes -------------------------------------------------------------------------

def _become_subreaper():
    """Adopt orphaned descendants (ssh children of a killed tunneld, sshd sessions), so that
    we can reap them: this machine's PID 1 does not, and zombies would look alive."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


_become_subreaper()


def proc_table():
    """{pid: (ppid, state, pgid)} of every process, from /proc/PID/stat."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        table[int(name)] = (int(fields[1]), fields[0].decode(), int(fields[2]))
    return table


def _comm(pid):
    """The process's name (a script's file name), or "" if it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _reap(pid):
    """Collect pid if it is an exited child of ours (an orphan we adopted)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pid_alive(pid):
    """True if pid runs (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")


def children_of(pid, table=None):
    """Live direct children of pid, sorted."""
    table = proc_table() if table is None else table
    return sorted(p for p, (ppid, state, _) in table.items() if ppid == pid and state not in "ZX")


def descendants_of(pid, table=None):
    """Every descendant of pid (zombies included), parents before children."""
    table = proc_table() if table is None else table
    kids = {}
    for p, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        for child in sorted(kids.get(todo.pop(0), [])):
            out.append(child)
            todo.append(child)
    return out


def procs_with_env(entry):
    """Live processes whose initial environment holds entry ("NAME=value")."""
    needle = entry.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env and pid_alive(int(name)):
            found.append(int(name))
    return sorted(found)


def kill_all(pids, groups=()):
    """SIGKILL pids and process groups, then reap those that are ours. Never raises.
    Never give it a pid that a subprocess.Popen owns: its exit status would be lost."""
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        _reap(pid)


# ---- small helpers ---------------------------------------------------------------------

def wait_until(pred, timeout, interval=0.05, what=None):
    """Poll pred() until it returns something true and return that; AssertionError if it
    still has not after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or getattr(pred, '__name__', pred)}")
        time.sleep(interval)


_held_ports = []


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A TCP port free on 127.0.0.1, below the kernel's ephemeral range (so no outgoing
    connection takes it meanwhile), and reserved against other test processes for as long
    as this one lives (an abstract Unix socket per port: the kernel drops it at exit)."""
    lo, hi = _ephemeral_range()
    first, last = (20000, lo - 1) if lo > 21000 else (hi + 1, 65000)
    return reserve_port(first, last)


def reserve_port(first, last):
    """A port in first..last free on 127.0.0.1 and reserved against other tunneltest
    processes (an abstract Unix socket "tunneltest-port-N" held until this one exits)."""
    for _ in range(500):
        port = random.randint(first, last)
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            lock.bind(f"\0tunneltest-port-{port}")
        except OSError:
            lock.close()
            continue
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            lock.close()
            continue
        finally:
            probe.close()
        _held_ports.append(lock)
        return port
    raise RuntimeError(f"no free port found in {first}-{last}")


TUNNELCTL = os.path.join(os.path.dirname(TUNNELD), "tunnelctl")


def tunnelctl_json(d, *args, timeout=20):
    """`tunnelctl --json ARGS` against tunneld d's socket: the reply as a dict (its "ok"
    may be false: check it)."""
    import json
    r = subprocess.run([TUNNELCTL, "-s", d.globals["control_socket"], "--json", *args], capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if not r.stdout.strip():
        raise AssertionError(f"tunnelctl {' '.join(args)}: no reply (exit {r.returncode}): {r.stderr}")
    return json.loads(r.stdout.splitlines()[0])


def key_fingerprint(pub_path):
    """The SHA256 fingerprint of a public key file, as sshd logs it ("SHA256:…")."""
    r = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", pub_path], capture_output=True, text=True,
                       check=True, timeout=10, stdin=subprocess.DEVNULL)
    return r.stdout.split()[1]


def port_accepts(port, timeout=1.0):
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def echo_roundtrip(port, payload=b"tunneld test payload\n", timeout=5.0, expect=None):
    """Connect to 127.0.0.1:port, send payload, and return True if the same bytes (or
    expect) come back within timeout seconds. Never raises, never hangs."""
    want = payload if expect is None else expect
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(want):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                s.settimeout(left)
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got == want
    except OSError:
        return False


def parse_duration(text):
    """Seconds from tunneld's format_duration(): "850 ms", "2.1 s", "3 min 2 s", "1 h 5 min"."""
    units = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"([\d.]+) (ms|s|min|h|d)\b", text)
    if not parts:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def duration_slack(seconds):
    """How far format_duration()'s rounding can move a duration shown as `seconds`."""
    if seconds < 1:
        return 0.0006
    if seconds < 10:
        return 0.051
    return 0.51 if seconds < 60 else 30.1


# ---- sanitizer reports -----------------------------------------------------------------

# The first line of every AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer
# report ("==PID==ERROR: AddressSanitizer: ...", "path:line:col: runtime error: ..."), and
# the SUMMARY line that ends one.
SANITIZER_REPORT = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:"
                              r"|SUMMARY: UndefinedBehaviorSanitizer|==ERROR")
_REPORT_LINES = 150


def sanitizer_reports(text):
    """The sanitizer reports in text (a process's stderr), each from its first line through
    its SUMMARY line (at most _REPORT_LINES lines), or [] if there is none. Cheap: every
    build's tunneld output is scanned, whatever the build."""
    lines = text.splitlines()
    reports, i = [], 0
    while i < len(lines):
        if not SANITIZER_REPORT.search(lines[i]):
            i += 1
            continue
        end = i + 1  # one past the report's last line: its SUMMARY, or before the next report
        while (end < len(lines) and end - i < _REPORT_LINES and not lines[end - 1].startswith("SUMMARY:")
               and not (SANITIZER_REPORT.search(lines[end]) and not lines[end].startswith("SUMMARY:"))):
            end += 1
        reports.append("\n".join(lines[i:end]))
        i = end
    return reports


def check_sanitizer_output(text, what="tunneld"):
    """AssertionError with the reports if text (what's stderr) holds a sanitizer report."""
    reports = sanitizer_reports(text)
    if reports:
        raise AssertionError(f"{what} printed {len(reports)} sanitizer report(s):\n" + "\n\n".join(reports))


# ---- diagnostics for failed tests ------------------------------------------------------

class _Diagnostic:
    """Text shown under a failed test: read live while the source exists, frozen at close."""

    def __init__(self, title, source):
        self.title, self.source, self.frozen = title, source, None

    def freeze(self):
        if self.frozen is None:
            self.frozen = self._read()

    def _read(self):
        try:
            return self.source()
        except Exception as e:  # a diagnostic must never hide the real failure
            return f"(cannot read: {e})"

    def text(self):
        return self.frozen if self.frozen is not None else self._read()


_diagnostics = []
_open_resources = []


def _drop_closed_diagnostics():
    """Keep only the diagnostics of live helpers (a class's sshd outlives its tests)."""
    _diagnostics[:] = [d for d in _diagnostics if d.frozen is None]


def add_diagnostic(title, source):
    """Show source() (the tail of it) as TAP comments if the current test fails."""
    d = _Diagnostic(title, source)
    _diagnostics.append(d)
    return d


def _read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Resource:
    """Base of the context managers: registers itself for last-resort cleanup at exit."""

    def __enter__(self):
        _open_resources.append(self)
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self):
        pass

    def close(self):
        if self in _open_resources:
            _open_resources.remove(self)


@atexit.register
def _close_everything():
    for r in reversed(list(_open_resources)):
        try:
            r.close()
        except Exception:
            pass


# ---- configuration ---------------------------------------------------------------------

def quote(s):
    """A libconfig string literal."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def render_value(v):
    """A Python value as libconfig: str, bool, int, float, list/tuple (of scalars), dict."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"libconfig has no {v}")
        r = repr(v)
        return r if any(c in r for c in ".eE") else r + ".0"
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, (list, tuple)):
        return "( " + ", ".join(render_value(x) for x in v) + " )" if v else "( )"
    if isinstance(v, dict):
        return "{ " + " ".join(f"{k} = {render_value(x)};" for k, x in v.items()) + " }"
    raise TypeError(f"cannot render {type(v).__name__} as libconfig")


def render_config(globals=None, defaults=None, tunnels=()):
    """libconfig text, one setting per line (so a test can find the line of any setting)."""
    lines = [f"{k} = {render_value(v)};" for k, v in (globals or {}).items()]
    if defaults:
        lines.append("defaults = {")
        lines += [f"  {k} = {render_value(v)};" for k, v in defaults.items()]
        lines.append("};")
    lines.append("tunnels = (")
    for i, t in enumerate(tunnels):
        lines.append("  {")
        lines += [f"    {k} = {render_value(v)};" for k, v in t.items()]
        lines.append("  }" + ("," if i < len(tunnels) - 1 else ""))
    lines.append(");")
    return "\n".join(lines) + "\n"


def write_config(path, globals=None, defaults=None, tunnels=()):
    """Write render_config(...) to path and return the text."""
    text = render_config(globals, defaults, tunnels)
    with open(path, "w") as f:
        f.write(text)
    return text


def line_of(text, needle):
    """1-based number of the first line of text containing needle."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise ValueError(f"{needle!r} not in the text")


def use(test, cm):
    """Enter context manager cm for the rest of a TestCase test (or class, given the
    class in setUpClass): it is closed by the test's (class's) cleanups."""
    value = cm.__enter__()
    add = test.addClassCleanup if isinstance(test, type) else test.addCleanup
    add(cm.__exit__, None, None, None)
    return value


def temp_dir(test):
    """A temporary directory removed by test's cleanups."""
    path = tempfile.mkdtemp(prefix="tunneltest-")
    test.addCleanup(shutil.rmtree, path, True)
    return path


_accepted_globals = {}


def tunneld_accepts_global(key, value):
    """True if this tunneld's configuration knows the global setting key (checked once
    with -t on a one-tunnel file)."""
    if key not in _accepted_globals:
        path = tempfile.mkdtemp(prefix="tunneltest-probe-")
        try:
            conf = os.path.join(path, "probe.conf")
            write_config(conf, {key: value}, None, [{"name": "probe", "host": "probe"}])
            _accepted_globals[key] = run_tunneld("-t", "-c", conf).returncode == 0
        except (OSError, subprocess.SubprocessError):
            _accepted_globals[key] = False
        finally:
            shutil.rmtree(path, ignore_errors=True)
    return _accepted_globals[key]


def isolation_globals(private_dir):
    """Global settings that keep one test's tunneld from being disturbed by, or disturbing,
    the rest of the machine, for the settings this tunneld knows: no network watch (another
    test adding an interface would cut a backoff short), and a control socket of its own
    (the default path is shared by every tunneld)."""
    wanted = {"watch_network": False, "control_socket": os.path.join(private_dir, "control")}
    return {k: v for k, v in wanted.items() if tunneld_accepts_global(k, v)}


def run_tunneld(*args, timeout=10, env=None):
    """Run tunneld to completion (for -t); CompletedProcess with text stdout and stderr.
    AssertionError if its output holds a sanitizer report (LeakSanitizer reports at exit)."""
    r = subprocess.run([TUNNELD, *args], capture_output=True, text=True, timeout=timeout,
                       env=env, stdin=subprocess.DEVNULL)
    check_sanitizer_output(r.stderr + r.stdout, f"tunneld {' '.join(args)}")
    return r


# ---- fake ssh --------------------------------------------------------------------------

class FakeSSH(Resource):
    """The fake ssh's working directory: its plans and its start logs, one pair per host.

    Use each host in one tunnel only. Give it to Tunneld(fake=...), which sets the ssh
    program and FAKE_SSH_DIR."""

    path = FAKE_SSH

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="tunneltest-fake-")
        self.env_entry = f"FAKE_SSH_DIR={self.dir}"
        self._diag = add_diagnostic("fake ssh logs", self._logs_text)

    def plan(self, host, steps):
        """steps: (status, delay[, auth[, "flag ..."]]) per start; the last repeats forever."""
        lines = []
        for step in steps:
            status, delay, *rest = step
            flags = []
            if rest and rest[0]:
                flags.append("auth" if rest[0] is True else str(rest[0]))
            flags += [str(f) for f in rest[1:] if f]
            lines.append(" ".join([str(int(status)), f"{float(delay):g}", *flags]))
        with open(os.path.join(self.dir, f"{host}.plan"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def events(self, host):
        """[(time, event, pid, rest...)] from HOST.log: start, exit (with status), term."""
        out = []
        for line in _read_text(os.path.join(self.dir, f"{host}.log")).splitlines():
            parts = line.split()
            if len(parts) >= 3:
                out.append((float(parts[0]), parts[1], int(parts[2]), *parts[3:]))
        return out

    def starts(self, host):
        """[(time, pid)] of every start of host's fake ssh, oldest first."""
        return [(e[0], e[2]) for e in self.events(host) if e[1] == "start"]

    def exits(self, host):
        """[(time, pid, status)] of every fake ssh that exited on its own."""
        return [(e[0], e[2], int(e[3])) for e in self.events(host) if e[1] == "exit"]

    def terms(self, host):
        """[(time, pid)] of every fake ssh that got SIGTERM."""
        return [(e[0], e[2]) for e in self.events(host) if e[1] == "term"]

    def argv(self, host):
        """The arguments of host's latest start."""
        return _read_text(os.path.join(self.dir, f"{host}.argv")).splitlines()

    def intervals(self, host):
        """Seconds between consecutive starts."""
        t = [s[0] for s in self.starts(host)]
        return [b - a for a, b in zip(t, t[1:])]

    def traces(self):
        """The files fake ssh starts left here (HOST.log, .count, .argv), whatever the host:
        [] if it never ran. (A destination with a '/' leaves none: the test's own ssh
        wrapper must record such starts.)"""
        return sorted(n for n in os.listdir(self.dir) if not n.endswith(".plan"))

    def running(self):
        """Live fake ssh processes of this directory, and their sleep."""
        return [p for p in procs_with_env(self.env_entry) if _comm(p) in ("fake-ssh", "sleep")]

    def _logs_text(self):
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".log"):
                out.append(f"{name}:")
                out += ["  " + l for l in _read_text(os.path.join(self.dir, name)).splitlines()[-15:]]
        return "\n".join(out)

    def close(self):
        if getattr(self, "dir", None):
            self._diag.freeze()
            kill_all(self.running())  # tunneld's own cleanup takes the rest
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        super().close()


# ---- tunneld ---------------------------------------------------------------------------

class Tunneld(Resource):
    """tunneld on a generated config, in the foreground, logging to a file.

    Tunneld(tunnels, defaults, globals, fake=FakeSSH, args=("-d",), env={...}). Or give
    config_text to write a config by hand. A generated config gets isolation_globals()
    unless globals sets them. Closing stops tunneld (SIGTERM; SIGKILL if it hangs), kills
    every descendant left, and fails if tunneld's output holds a sanitizer report (see
    close())."""

    def __init__(self, tunnels=(), defaults=None, globals=None, *, fake=None, args=(), env=None,
                 config_text=None, wrapper=()):
        self.wrapper = list(wrapper)    # e.g. valgrind and its options: runs in the same process
        self.globals = dict(globals or {})
        self.defaults = dict(defaults or {})
        self.tunnels = [dict(t) for t in tunnels]
        self.fake = fake
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.config_text = config_text
        self.proc = None
        self.dir = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="tunneltest-tunneld-")
        self.config_path = os.path.join(self.dir, "tunneld.conf")
        self.log_path = os.path.join(self.dir, "tunneld.log")
        self.marker = f"TUNNELTEST_TUNNELD={uuid.uuid4().hex}"
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)  # log to the file, never to the journal …
        env.pop("NOTIFY_SOCKET", None)
        env.update(self.extra_env)       # … unless the test asks for them
        env[self.marker.split("=")[0]] = self.marker.split("=", 1)[1]
        for key, value in isolation_globals(self.dir).items():
            self.globals.setdefault(key, value)
        if self.fake:
            self.globals.setdefault("ssh", self.fake.path)
            env["FAKE_SSH_DIR"] = self.fake.dir
        if self.config_text is None:
            self.config_text = write_config(self.config_path, self.globals, self.defaults, self.tunnels)
        else:
            with open(self.config_path, "w") as f:
                f.write(self.config_text)
        self._diag = add_diagnostic("tunneld log", lambda: "\n".join(self.log().splitlines()[-LOG_TAIL_LINES:]))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*self.wrapper, TUNNELD, "-c", self.config_path, *self.args],
                                         stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        self.started_at = time.time()

    def rewrite(self, tunnels=None, defaults=None, globals=None):
        """Write a new config (what is not given stays; the isolation settings and the fake
        ssh stay unless globals sets them). Then reload() to apply it."""
        if tunnels is not None:
            self.tunnels = [dict(t) for t in tunnels]
        if defaults is not None:
            self.defaults = dict(defaults)
        if globals is not None:
            kept = {k: v for k, v in self.globals.items() if k in ("ssh", *isolation_globals(self.dir))}
            self.globals = {**kept, **globals}
        self.config_text = write_config(self.config_path, self.globals, self.defaults, self.tunnels)

    def line_of(self, needle):
        """Line number of needle in the config file."""
        return line_of(self.config_text, needle)

    # -- the log --
    def log(self):
        return _read_text(self.log_path)

    def wait_log(self, regex, timeout=10, after=0):
        """Wait until regex matches the log at or after offset `after`; return the match
        (its .end() is a good `after` for the next wait)."""
        pattern = re.compile(regex, re.M)

        def found():
            m = pattern.search(self.log(), after)
            if m is None and self.proc.poll() is not None:
                m = pattern.search(self.log(), after)
                if m is None:
                    raise AssertionError(f"tunneld exited ({self.proc.returncode}) before logging /{regex}/")
            return m
        return wait_until(found, timeout, what=f"/{regex}/ in tunneld's log")

    def count_log(self, regex, after=0):
        return len(re.findall(regex, self.log()[after:], re.M))

    def findall(self, regex, after=0):
        return re.findall(regex, self.log()[after:], re.M)

    # -- processes --
    def children(self):
        """Live ssh children of tunneld."""
        return children_of(self.proc.pid)

    def leftovers(self):
        """Live processes, other than tunneld, that inherited tunneld's environment."""
        return [p for p in procs_with_env(self.marker) if p != self.proc.pid]

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self):
        self.signal(signal.SIGHUP)

    def wait_exit(self, timeout=10):
        """Wait for tunneld to exit and return its status; AssertionError if it does not."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tunneld did not exit within {timeout:g} s") from None

    def stop(self, timeout=10):
        """SIGTERM, wait, return the exit status (negative: killed by that signal)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def stop_grace(self):
        """Seconds close() gives tunneld to exit after SIGTERM: its stop_timeout (after which
        it SIGKILLs an ssh that ignores SIGTERM) twice, and some for LeakSanitizer."""
        stop_timeout = self.globals.get("stop_timeout", 5)
        if not isinstance(stop_timeout, (int, float)) or isinstance(stop_timeout, bool):
            stop_timeout = 5
        return min(10 + 2 * stop_timeout, 40)

    def _output_done(self):
        """Called once tunneld is gone: every byte of its stdout and stderr is in the log
        file from now on (a subclass that copies them there waits for its copier)."""

    def close(self):
        """Stop tunneld the way its service manager would: SIGTERM, then SIGKILL only if it
        has not exited within stop_grace() seconds, and kill whatever of its processes is
        left. Then fail (AssertionError, after cleaning up) if its output holds a sanitizer
        report, in any build; or, in the sanitizer build, if that SIGTERM did not end it with
        status 0 (LeakSanitizer reports at that exit, and exits 23 or aborts). A tunneld that
        already exited (the test killed or stopped it) is only scanned."""
        problems = []
        if self.proc is not None:
            try:
                if self.proc.poll() is None:
                    status = self._terminate()
                    if SANITIZED and status is None:
                        problems.append(f"tunneld did not exit within {self.stop_grace():g} s of the SIGTERM at "
                                        "the end of the test: SIGKILLed (sanitizer build: no leak check ran)")
                    elif SANITIZED and status != 0:
                        problems.append(f"tunneld exited {status} on the SIGTERM at the end of the test, "
                                        "not 0 (sanitizer build: see its log)")
            finally:
                if self.proc.poll() is None:  # an exception (a test timeout) interrupted the stop
                    self.proc.kill()
                    self.proc.wait()
                kill_all(self.leftovers())
                self._output_done()
                self._diag.freeze()
            reports = sanitizer_reports(self.log())
            if reports:
                problems.append(f"tunneld's log holds {len(reports)} sanitizer report(s):\n" + "\n\n".join(reports))
            self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        super().close()
        if problems:
            raise AssertionError("\n".join(problems))

    def _terminate(self):
        """SIGTERM tunneld, wait up to stop_grace() seconds (then SIGKILL it), and kill its
        descendants left over; its exit status, None if it had to be killed."""
        table = proc_table()
        kids = children_of(self.proc.pid, table)
        rest = descendants_of(self.proc.pid, table)
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(self.stop_grace())
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            kill_all(rest, groups=kids)  # now ours (subreaper): their pids cannot be reused
            return None
        # Exited by itself: what is left of its descendants was adopted by us (subreaper),
        # so those pids are still theirs; a pid that ended meanwhile may be anyone's now.
        now = proc_table()
        kill_all([p for p in rest if p in now and now[p][0] == os.getpid()])
        return status


# ---- sshd ------------------------------------------------------------------------------

class SSHServer(Resource):
    """A private sshd on 127.0.0.1:port that lets root in with client_key.

    stop() and start() again keep the port, keys and known_hosts (for restart tests)."""

    def __init__(self, client_alive_interval=None, extra_config=(), address="127.0.0.1", port=None):
        self.client_alive_interval = client_alive_interval
        self.extra_config = list(extra_config)
        self.address = address
        self.port = port
        self._own_port = port is None   # ours to swap if someone else takes it
        self.proc = None
        self.dir = None

    def _argv(self, argv):
        """How sshd is run (a subclass runs it inside a network namespace)."""
        return argv

    def _prepare(self):
        self.dir = tempfile.mkdtemp(prefix="tunneltest-sshd-")
        if self.port is None:
            self.port = free_port()
        self.host_key = os.path.join(self.dir, "host_key")
        self.client_key = os.path.join(self.dir, "client_key")
        self.authorized_keys = os.path.join(self.dir, "authorized_keys")
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        self.config_path = os.path.join(self.dir, "sshd_config")
        self.log_path = os.path.join(self.dir, "sshd.log")
        self._diag = add_diagnostic(f"sshd log (port {self.port})",
                                    lambda: "\n".join(_read_text(self.log_path).splitlines()[-25:]))
        for key in (self.host_key, self.client_key):
            subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "tunneltest", "-f", key],
                           check=True, stdin=subprocess.DEVNULL, timeout=30)
        shutil.copy(self.client_key + ".pub", self.authorized_keys)
        self._write_config()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    def _write_config(self):
        with open(self.host_key + ".pub") as f:
            keytype, blob = f.read().split()[:2]
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        with open(self.known_hosts, "w") as f:
            f.write(f"{name} {keytype} {blob}\n")
        conf = [
            f"ListenAddress {self.address}",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "StrictModes no",
            "PermitRootLogin yes",
            "UsePAM no",
            "PidFile none",
            "LogLevel VERBOSE",
            "MaxStartups 100",
            "MaxSessions 100",
            "AllowTcpForwarding yes",
            "GatewayPorts no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UseDNS no",
            "PrintMotd no",
        ]
        if self.client_alive_interval is not None:
            conf += [f"ClientAliveInterval {self.client_alive_interval}", "ClientAliveCountMax 2"]
        conf += self.extra_config
        with open(self.config_path, "w") as f:
            f.write("\n".join(conf) + "\n")

    def start(self):
        """Start sshd (again) and wait until it listens. On its first start, a port that
        something outside this harness took meanwhile is swapped for another one."""
        first = self.dir is None
        if first:
            self._prepare()
        for attempt in range(5):
            try:
                return self._start()
            except AssertionError as e:
                if not first or not self._own_port or "Address already in use" not in str(e) or attempt == 4:
                    raise
                self.port = free_port()
                self._write_config()

    def _start(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        offset = len(_read_text(self.log_path))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self._argv([SSHD, "-D", "-e", "-f", self.config_path]),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        listening = f"Server listening on {self.address} port {self.port}."

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"sshd exited ({self.proc.returncode}):\n{_read_text(self.log_path)[offset:]}")
            return listening in _read_text(self.log_path)[offset:]
        wait_until(ready, 15, what=f"sshd to listen on {self.address}:{self.port}")

    def stop(self, kill_sessions=True):
        """Stop the listener; with kill_sessions, every connection's sshd too (the server
        "goes away"), else connections live on."""
        if self.proc is None:
            return
        table = proc_table()
        sessions = descendants_of(self.proc.pid, table)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if kill_sessions:
            kill_all(sessions)
        self.proc = None

    def log(self):
        return _read_text(self.log_path)

    def tunnel_defaults(self):
        """Tunnel settings (for defaults) that reach this server as root with client_key."""
        return {
            "user": "root",
            "port": self.port,
            "identity_file": self.client_key,
            "ssh_config_file": "/dev/null",
            "ssh_options": [f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null",
                            "StrictHostKeyChecking=yes"],
        }

    def close(self):
        if self.dir:
            self.stop()
            self._diag.freeze()
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        super().close()


# ---- echo server -----------------------------------------------------------------------

class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        conns = self.server.conns
        with self.server.lock:
            conns.add(self.request)
        try:
            self.request.settimeout(60)
            while True:
                data = self.request.recv(65536)
                if not data:
                    break
                self.request.sendall(data)
        except OSError:
            pass
        finally:
            with self.server.lock:
                conns.discard(self.request)


class _EchoTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class EchoServer(Resource):
    """TCP echo server on 127.0.0.1:port (a free one unless given), one thread per client."""

    def __init__(self, port=None):
        self.port = port
        self.server = None

    def start(self):
        self.port = self.port or free_port()
        self.server = _EchoTCPServer(("127.0.0.1", self.port), _EchoHandler)
        self.server.conns, self.server.lock = set(), threading.Lock()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def close(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            with self.server.lock:
                for conn in list(self.server.conns):
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self.thread.join(5)
            self.server = None
        super().close()


# ---- TAP runner ------------------------------------------------------------------------

class TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimeout(f"the test ran longer than {TEST_TIMEOUT:g} s")


_interrupted = []


def _on_term(signum, frame):
    _interrupted.append(f"interrupted by signal {signal.Signals(signum).name}")
    raise KeyboardInterrupt(_interrupted[-1])


def _test_name(test):
    return f"{type(test).__name__}.{test._testMethodName}" if hasattr(test, "_testMethodName") else str(test)


class _TapResult(unittest.TestResult):
    """Prints one TAP line per test as it ends, with the traceback and the diagnostics of
    the helpers it used as '# ' comments when it fails."""

    def __init__(self, out):
        super().__init__()
        self.out = out
        self.number = 0
        self.reported = set()
        self.fixture_errors = []
        self.current = None

    def emit(self, text=""):
        self.out.write(text + "\n")
        self.out.flush()

    def comment(self, text):
        for line in text.rstrip("\n").splitlines() or [""]:
            self.emit("# " + line)

    def startTest(self, test):
        super().startTest(test)
        _drop_closed_diagnostics()
        self.current = test
        self.problems, self.skip, self.todo = [], None, None
        self.started = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)

    def stopTest(self, test):
        signal.setitimer(signal.ITIMER_REAL, 0)
        super().stopTest(test)
        self.current = None
        name = _test_name(test)
        self.number += 1
        self.reported.add(test.id())
        took = time.monotonic() - self.started
        if _interrupted:
            self.problems.append(_interrupted[0])
        if self.problems:
            self.emit(f"not ok {self.number} - {name}")
            for text in self.problems:
                self.comment(text)
            for d in _diagnostics:
                self.comment(f"--- {d.title} (tail) ---\n{d.text()}")
        elif self.todo is not None:
            # a known bug (@unittest.expectedFailure): TAP's TODO, neither a pass nor a failure
            self.emit(f"not ok {self.number} - {name} # TODO known bug")
            self.comment(self.todo)
        elif self.skip is not None:
            self.emit(f"ok {self.number} - {name} # SKIP {self.skip}")
        else:
            self.emit(f"ok {self.number} - {name}")
        self.comment(f"{name}: {took:.2f} s")
        _drop_closed_diagnostics()

    def _problem(self, test, err):
        text = self._exc_info_to_string(err, test)
        if self.current is None:  # setUpClass, tearDownClass, module fixtures
            self.fixture_errors.append(f"{test}: {text}")
            self.comment(f"error in {test}:\n{text}")
        else:
            self.problems.append(text)

    def addError(self, test, err):
        super().addError(test, err)
        self._problem(test, err)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._problem(test, err)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.problems.append(f"{subtest}:\n" + self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skip = reason

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.todo = self._exc_info_to_string(err, test)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.problems.append("unexpected success: the known bug seems fixed; remove @unittest.expectedFailure")


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def main():
    """Run the TestCases of __main__ (or those named on the command line, e.g.
    Class.test_name) and print TAP; exit 1 if any failed."""
    module = sys.modules["__main__"]
    loader = unittest.TestLoader()
    names = sys.argv[1:]
    suite = loader.loadTestsFromNames(names, module) if names else loader.loadTestsFromModule(module)
    tests = list(_flatten(suite))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    result = _TapResult(sys.stdout)
    result.emit(f"1..{len(tests)}")
    result.comment(f"tunneld: {TUNNELD}")
    interrupted = None
    try:
        suite.run(result)
    except KeyboardInterrupt as e:
        interrupted = str(e) or "interrupted"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _close_everything()
    for t in tests:  # not run: a class fixture failed, or we were interrupted
        if t.id() not in result.reported:
            result.number += 1
            why = interrupted or "not run (see the fixture error above)"
            result.emit(f"not ok {result.number} - {_test_name(t)}")
            result.comment(why)
    if interrupted:
        result.emit(f"Bail out! {interrupted}")
    ok = result.wasSuccessful() and not result.fixture_errors and not interrupted
    sys.exit(0 if ok else 1)
