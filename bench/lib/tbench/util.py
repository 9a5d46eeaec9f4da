"""Process bookkeeping, cleanup, /proc readers, ports, statistics."""
import ctypes
import math
import importlib
import os
import signal
import socket
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
_T0 = time.monotonic()


def now():
    return time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---- cleanup ------------------------------------------------------------------------

_cleanups = []          # stack of (label, callable)
_popen_pids = set()     # pids the subprocess module waits for itself


def on_cleanup(label, fn):
    """Register fn to run at cleanup (last registered runs first); returns a token."""
    item = (label, fn)
    _cleanups.append(item)
    return item


def cancel_cleanup(token):
    try:
        _cleanups.remove(token)
    except ValueError:
        pass


def run_cleanup(token):
    """Run one registered cleanup now and forget it."""
    cancel_cleanup(token)
    try:
        token[1]()
    except Exception as e:  # noqa: BLE001 - cleanup must go on
        log(f"cleanup {token[0]}: {e}")


def cleanup_all():
    """Undo everything, newest first, then kill any process still below us."""
    # a second Ctrl-C (or a SIGTERM, or the time limit) must not stop the cleanup
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        while _cleanups:
            label, fn = _cleanups.pop()
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                log(f"cleanup {label}: {e}")
        kill_tree(os.getpid(), include_root=False)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def set_child_subreaper():
    """Orphans of our children (autossh's ssh after autossh died, sshd sessions) become
    our children, so the final sweep finds them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)      # PR_SET_CHILD_SUBREAPER
    except OSError:
        pass


# ---- /proc ----------------------------------------------------------------------------

def _ppid_map():
    m = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(b")") + 2:].split()
        m.setdefault(int(rest[1]), []).append(int(d))
    return m


def descendants(pid, m=None):
    m = m if m is not None else _ppid_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in m.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
        return s[s.rfind(b")") + 2:s.rfind(b")") + 3].decode()
    except OSError:
        return None


def alive(pid):
    st = proc_state(pid)
    return st is not None and st not in ("Z", "X")


def reap_orphans():
    """waitpid the zombies that are our children but not subprocess.Popen objects."""
    for c in _ppid_map().get(os.getpid(), []):
        if c in _popen_pids:
            continue
        if proc_state(c) == "Z":
            try:
                os.waitpid(c, os.WNOHANG)
            except ChildProcessError:
                pass


def kill_tree(pid, include_root=True, grace=3.0):
    """SIGTERM pid and everything below it (pids collected first), SIGKILL what remains."""
    pids = descendants(pid)
    if include_root:
        pids.insert(0, pid)
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    end = now() + grace
    while now() < end and any(alive(p) for p in pids):
        reap_orphans()
        time.sleep(0.05)
    for p in pids:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
    time.sleep(0.05)
    reap_orphans()


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def proc_status(pid):
    """VmRSS (kB) and context switches from /proc/PID/status."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "VmPTE", "VmStk", "voluntary_ctxt_switches",
                         "nonvoluntary_ctxt_switches"):
                    out[k] = int(v.split()[0])
    except OSError:
        return None
    return out


def proc_cpu(pid):
    """(utime+stime in seconds, on-CPU time in seconds from schedstat or None)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
        rest = s[s.rfind(b")") + 2:].split()
        ticks = int(rest[11]) + int(rest[12])
    except OSError:
        return None
    run = None
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            run = int(f.read().split()[0]) / 1e9
    except OSError:
        pass
    return ticks / CLK_TCK, run


def proc_smaps(pid):
    """Pss and Uss (Private_Clean + Private_Dirty) in kB from smaps_rollup."""
    out = {"pss": 0, "uss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == "Pss":
                    out["pss"] = int(v.split()[0])
                elif k in ("Private_Clean", "Private_Dirty"):
                    out["uss"] += int(v.split()[0])
    except OSError:
        return None
    return out


def sample(pids):
    """Summed rss/pss kB, peak rss (VmHWM) kB, cpu s (ticks and schedstat), ctx switches of
    live pids."""
    tot = {"n": 0, "rss_kb": 0, "hwm_kb": 0, "pss_kb": 0, "uss_kb": 0, "anon_kb": 0, "pte_kb": 0, "cpu_s": 0.0,
           "run_s": 0.0, "vcs": 0, "nvcs": 0}
    for p in pids:
        st, cpu = proc_status(p), proc_cpu(p)
        if not st or not cpu:
            continue
        sm = proc_smaps(p) or {}
        tot["n"] += 1
        tot["rss_kb"] += st.get("VmRSS", 0)
        tot["hwm_kb"] += st.get("VmHWM", 0)
        tot["anon_kb"] += st.get("RssAnon", 0)
        tot["pte_kb"] += st.get("VmPTE", 0)
        tot["pss_kb"] += sm.get("pss", 0)
        tot["uss_kb"] += sm.get("uss", 0)
        tot["cpu_s"] += cpu[0]
        tot["run_s"] += cpu[1] or 0.0
        tot["vcs"] += st.get("voluntary_ctxt_switches", 0)
        tot["nvcs"] += st.get("nonvoluntary_ctxt_switches", 0)
    return tot


class PeakWatch:
    """Polls one /proc/PID/status field (kB) every few ms in a thread; .peak is the largest
    value seen (VmStk only grows: it shows the deepest stack the process ever used)."""

    def __init__(self, pid, field="VmStk", interval=0.002):
        import threading
        self.pid, self.field, self.interval = pid, field, interval
        self.peak, self.first = None, None
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            st = proc_status(self.pid)
            if not st:
                break
            v = st.get(self.field)
            if v is not None:
                self.first = v if self.first is None else self.first
                self.peak = v if self.peak is None else max(self.peak, v)
            time.sleep(self.interval)

    def stop(self):
        self._stop = True
        self._t.join(timeout=5)
        return self.first, self.peak


def tcp_ext(*names):
    """Counters from the TcpExt lines of /proc/net/netstat (this namespace, system-wide)."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for a, b in zip(lines, lines[1:]):
        if a.startswith("TcpExt:") and b.startswith("TcpExt:"):
            m = dict(zip(a.split()[1:], b.split()[1:]))
            return {n: int(m.get(n, 0)) for n in names}
    return {n: 0 for n in names}


class NetlinkCounter:
    """Counts rtnetlink messages of the groups tunneld's netwatch listens to (link, IPv4/IPv6
    address and route changes) while running: other jobs' interfaces wake tunneld too."""

    GROUPS = 0x1 | 0x10 | 0x100 | 0x40 | 0x400

    def __init__(self):
        import threading
        self.msgs, self.kinds, self.times = 0, {}, []
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, self.GROUPS))
        self.sock.settimeout(0.2)
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        import struct
        names = {16: "NEWLINK", 17: "DELLINK", 20: "NEWADDR", 21: "DELADDR", 24: "NEWROUTE", 25: "DELROUTE"}
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            off = 0
            while off + 16 <= len(data):
                ln, typ = struct.unpack_from("=IH", data, off)
                if ln < 16:
                    break
                self.msgs += 1
                self.times.append(now())
                k = names.get(typ, str(typ))
                self.kinds[k] = self.kinds.get(k, 0) + 1
                off += (ln + 3) & ~3

    def count(self, a, b):
        return sum(1 for t in list(self.times) if a <= t <= b)

    def stop(self):
        self._stop = True
        self._t.join(timeout=2)
        self.sock.close()
        return {"msgs": self.msgs, "kinds": self.kinds}


def listening_ports():
    """Local TCP ports in LISTEN state on 127.0.0.1 or 0.0.0.0 (this namespace)."""
    ports = set()
    with open("/proc/net/tcp", "rb") as f:
        f.readline()
        for line in f:
            parts = line.split(None, 4)
            if parts[3] != b"0A":
                continue
            addr, _, port = parts[1].partition(b":")
            if addr in (b"0100007F", b"00000000"):
                ports.add(int(port, 16))
    return ports


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def mem_available_kb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


# ---- processes ------------------------------------------------------------------------

def spawn(argv, log_path=None, env=None, stdin=subprocess.DEVNULL, stdout=None, **kw):
    """Start a process in its own process group (a Ctrl-C on the terminal reaches only us;
    we stop everything in order), but in our session: with the kernel's autogroup
    scheduling (sched_autogroup_enabled) every session is a scheduling group of its own, and
    N autossh processes in N sessions would get N shares of a busy CPU against tunneld's
    one. Output goes to log_path."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    if sys.version_info >= (3, 11):
        kw.setdefault("process_group", 0)
    else:
        kw.setdefault("preexec_fn", os.setpgrp)
    try:
        p = subprocess.Popen(argv, stdin=stdin, stdout=stdout if stdout is not None else out,
                             stderr=out, env=env, close_fds=True, **kw)
    finally:
        if log_path:
            out.close()
    _popen_pids.add(p.pid)
    return p


def stop_process(p, sig=signal.SIGTERM, timeout=10.0, tree=True):
    """Signal p, wait up to timeout, then SIGKILL it and whatever it left below it."""
    if p is None:
        return None
    below = descendants(p.pid) if tree else []
    t0 = now()
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except OSError:
            pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"pid {p.pid} ({p.args[0]}) did not exit within {timeout:.0f} s of signal {sig}: SIGKILL")
            try:
                os.kill(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait(timeout=10)
    took = now() - t0
    leftover = [q for q in below if alive(q)]
    if leftover:
        kill_tree(p.pid, include_root=False)
        for q in leftover:
            if alive(q):
                try:
                    os.kill(q, signal.SIGKILL)
                except OSError:
                    pass
    _popen_pids.discard(p.pid)
    reap_orphans()
    return took


def run(argv, timeout=30, check=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


# ---- ports ----------------------------------------------------------------------------

class PortAllocator:
    """Hands out TCP ports below the ephemeral range (32768+), so that the many outgoing
    connections of a scale run can never take a port a forward wants to bind."""

    def __init__(self, lo=20000, hi=32700):
        self.lo, self.hi = lo, hi
        self.next = lo + (os.getpid() * 7919) % (hi - lo)
        self.used = set()
        self._locks = []

    def _free(self, port):
        for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")):
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                s.bind((addr, port))
            except OSError:
                return False
            finally:
                s.close()
        return True

    def _reserve(self, port):
        """Hold the abstract socket "tunneltest-port-N" as the test suite's free_port() does
        (tests/lib/tunneltest/helpers.py): a test running at the same time then never takes a
        port of ours, and a port a test holds is skipped. The kernel drops them when we exit."""
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            lock.bind(f"\0tunneltest-port-{port}")
        except OSError:
            lock.close()
            return False
        self._locks.append(lock)
        return True

    def get(self, n=1):
        out = []
        busy = listening_ports()
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > (self.hi - self.lo) * 2:
                raise BenchError("no free ports left")
            p = self.next
            self.next = self.lo if self.next + 1 >= self.hi else self.next + 1
            if p in self.used or p in busy or not self._free(p) or not self._reserve(p):
                continue
            self.used.add(p)
            out.append(p)
        return out

    def one(self):
        return self.get(1)[0]


# ---- statistics -----------------------------------------------------------------------

def pct(values, q):
    """Nearest-rank percentile (q in 0..100): the smallest sample with at least q% of the
    samples at or below it. p50 of an even count is the lower middle sample."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    k = max(1, math.ceil(q / 100.0 * len(v)))
    return v[k - 1]


def median(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def fmt_ms(s, digits=1):
    return "—" if s is None else f"{s * 1000:.{digits}f}"


def fmt_s(s, digits=2):
    return "—" if s is None else f"{s:.{digits}f}"


def fmt_kb(kb):
    if kb is None:
        return "—"
    return f"{kb / 1024:.1f} MB" if kb >= 1024 else f"{kb} kB"


def table(headers, rows, align=None):
    """A Markdown table (also readable on a terminal)."""
    cols = len(headers)
    cells = [[str(c) for c in r] for r in rows]
    w = [max([len(headers[i])] + [len(r[i]) for r in cells]) for i in range(cols)]
    align = align or (["l"] + ["r"] * (cols - 1))

    def line(r):
        return "| " + " | ".join(r[i].ljust(w[i]) if align[i] == "l" else r[i].rjust(w[i])
                                 for i in range(cols)) + " |"
    sep = "|" + "|".join(("-" * (w[i] + 1) + ":") if align[i] == "r" else ("-" * (w[i] + 2))
                         for i in range(cols)) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in cells])


TESTS_LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                         "tests", "lib")


def import_test_lib(module, who):
    """A module of tests/lib (standard library only: netns, tunneltest), or BenchError
    naming the benchmark who needs it."""
    if TESTS_LIB not in sys.path:
        sys.path.insert(0, TESTS_LIB)
    try:
        return importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure is the same answer
        raise BenchError(f"{who}: cannot import {TESTS_LIB}/{module}: {type(e).__name__}: {e}") from None
