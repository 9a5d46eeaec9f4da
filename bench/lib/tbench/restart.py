"""6. Planned restarts and the cost per forwarded connection: tunneld (`tunnelctl restart`:
make-before-break, a new ssh takes the forwards over before the old one goes) against
autossh -M 0 (SIGUSR1: it stops its ssh and starts a new one)."""
import os
import signal
import socket
import threading
import time

from .fixtures import Autossh, Tunneld, ssh_argvs, tunnel_defaults, write_tunneld_conf
from .probe import echo_on, wait_echo
from .scale import traffic_window
from .util import BenchError, log, median, now, on_cleanup, run_cleanup, tcp_ext

GATETIME = 1            # s: the tunnel's gatetime; its one-shot timer fires before the traffic window
SETTLE = 1.3            # s: uptime before the next planned restart of a tunneld tunnel (> restart_delay)
# autossh's grace_time() counts a start less than max(10 s, AUTOSSH_POLL / 10) after the
# previous one as a fast try and sleeps after the fifth (2, 8, 18 … s with the default poll
# of 600 s, for which the limit is 60 s): with AUTOSSH_POLL=100 the limit is 10 s, and each
# planned restart comes 11 s after the previous one (time() has whole seconds).
AUTOSSH_POLL = 100
AUTOSSH_EVERY = 11.0
UP_DEADLINE = 60        # s: a restart whose tunnel is not up again by then fails the benchmark
LINE_EVERY = 0.05       # s: the long-lived connection sends a line this often
LINE_TIMEOUT = 5.0      # s: an echo that does not come back within this breaks the connection
MBB_LINE = "make-before-break: a new ssh takes the forwards over"


class Hammer:
    """A client connecting in a tight loop (connect, close). A refused (or failed) connect
    is counted and retried after 1 ms; an accepted one is also followed by 1 ms: without
    that pause the loop outran ssh's accept() and overflowed the forward's listen queue, and
    the dropped SYN stalled a connect for the kernel's 1 s retransmission about once a second
    with no restart at all. The gap is the longest time between two accepted
    connects: it covers refusals and also a connect that hangs (a SYN lost as a listener
    closes is sent again by the kernel after 1 s)."""

    SLOW = 0.2          # s: an accepted connect that took this long counts as stalled

    def __init__(self, port):
        self.port = port
        self.accepted = self.refused = self.other = self.stalled = 0
        self.max_connect = 0.0
        self.gaps = []                  # (end, s): intervals between accepted connects above 50 ms
        self.stalls = []                # (start, s) of the stalled connects
        self._last_ok = None
        self._stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _loop(self):
        while not self._stop:
            t = now()
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(2.0)
            try:
                s.connect(("127.0.0.1", self.port))
                t1 = now()
                self.accepted += 1
                self.max_connect = max(self.max_connect, t1 - t)
                if t1 - t >= self.SLOW:
                    self.stalled += 1
                    self.stalls.append((t, t1 - t))
                if self._last_ok is not None and t1 - self._last_ok > 0.05:
                    self.gaps.append((t1, t1 - self._last_ok))
                self._last_ok = t1
            except ConnectionRefusedError:
                self.refused += 1
            except OSError:
                self.other += 1
            finally:
                s.close()
            time.sleep(0.001)

    def failed(self):
        return self.refused + self.other

    def stop(self):
        self._stop = True
        self.thread.join(5)


class LongConn:
    """One long-lived connection through the forward: a line every 50 ms, its echo read
    back. When it breaks (reset, EOF, no echo within 5 s) it is counted and opened again."""

    def __init__(self, port):
        self.port = port
        self.lines = self.broken = 0
        self.broken_at = []             # monotonic times
        self.outages = []               # s: from the break until a new connection echoed
        self._stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _connect(self):
        while not self._stop:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=LINE_TIMEOUT)
                s.settimeout(LINE_TIMEOUT)
                return s
            except OSError:
                time.sleep(0.001)
        return None

    def _echo(self, s, k):
        return echo_on(s, f"long-lived {self.port} {k}\n".encode())

    def _loop(self):
        s, k, down_since = self._connect(), 0, None
        while not self._stop and s is not None:
            k += 1
            try:
                ok = self._echo(s, k)
            except OSError:
                ok = False
            if ok:
                self.lines += 1
                if down_since is not None:
                    self.outages.append(now() - down_since)
                    down_since = None
                time.sleep(LINE_EVERY)
                continue
            s.close()
            if down_since is None:
                self.broken += 1
                self.broken_at.append(now())
                down_since = now()
            s = self._connect()
        if s is not None:
            s.close()

    def stop(self):
        self._stop = True
        self.thread.join(LINE_TIMEOUT + 2)


def _count_in_log(path, text):
    with open(path, errors="replace") as f:
        return f.read().count(text)


def _wait_tunnel_up(td, name, old_pid, deadline):
    """Monotonic time at which `tunnelctl status` shows the tunnel up on a new ssh."""
    while now() < deadline:
        try:
            t = next(x for x in td.status()["tunnels"] if x["name"] == name)
            if t.get("state") == "up" and t.get("pid") not in (None, 0, old_pid):
                return now(), t["pid"]
        except (BenchError, StopIteration, OSError):
            pass
        time.sleep(0.01)
    raise BenchError(f"restart: {name} not up on a new ssh within {UP_DEADLINE} s; see {td.log}")


def _restarts(restarts, port, do_restart, spacing):
    """The planned restarts with the two clients running; do_restart() restarts once and
    returns once the tunnel is up again."""
    hammer, conn = Hammer(port).start(), LongConn(port).start()
    tokens = [on_cleanup("restart hammer", hammer.stop), on_cleanup("restart long-lived", conn.stop)]
    time.sleep(0.5)
    per, took, stalls, windows = [], [], [], []
    lo0 = tcp_ext("ListenOverflows", "ListenDrops")
    t_begin = now()
    try:
        for i in range(restarts):
            f0, s0, t0 = hammer.failed(), hammer.stalled, now()
            t_up = do_restart()
            took.append(t_up - t0)
            time.sleep(max(0.0, t_up + SETTLE - now(), t0 + spacing - now()))
            windows.append((t0, now()))
            per.append(hammer.failed() - f0)
            stalls.append(hammer.stalled - s0)
            log(f"restart {i + 1}/{restarts}: up after {(t_up - t0) * 1000:.0f} ms, {per[-1]} refused, "
                f"{stalls[-1]} stalled, "
                f"long-lived connection broken {conn.broken} times so far")
        time.sleep(0.5)
    finally:
        for tok in reversed(tokens):
            run_cleanup(tok)
    gaps = [g for _, g in hammer.gaps]
    lo1 = tcp_ext("ListenOverflows", "ListenDrops")

    def longest_in(a, b):
        return max((g for t, g in hammer.gaps if a <= t < b), default=0.0)
    return {"restarts": restarts, "seconds": now() - t_begin, "accepted": hammer.accepted,
            "refused": hammer.refused, "failed_other": hammer.other, "refused_per_restart": per,
            "stalled": hammer.stalled, "stalled_per_restart": stalls, "max_connect_s": hammer.max_connect,
            "listen_overflows": {k: lo1[k] - lo0[k] for k in lo0},
            "gaps_s": gaps, "longest_gap_s": max(gaps) if gaps else 0.0,
            "gap_per_restart_s": [longest_in(a, b) for a, b in windows],
            "stalls_after_restart_s": [[round(t - a, 3), round(d, 3)] for t, d in hammer.stalls
                                       for a, b in windows if a <= t < b],
            "restart_to_up_s": took, "restart_to_up_median_s": median(took),
            "long_lines": conn.lines, "long_broken": conn.broken, "long_outages_s": conn.outages,
            "long_broken_after_s": [t - t_begin for t in conn.broken_at]}


def _traffic(sup_pids, ssh_pids, port, conns):
    r = traffic_window(sup_pids, ssh_pids, [port], conns)
    r["ssh_n"] = len(ssh_pids)
    return r


def run_tunneld(ctx, env, label, restarts, conns):
    keys, sshd, echo = env["keys"], env["sshd"], env["echo"]
    port = ctx.ports.one()
    conf, ctl = ctx.path(f"restart-{label}.conf"), ctx.path(f"restart-{label}.ctl")
    write_tunneld_conf(conf, {"control_socket": ctl, "log_level": "info"},
                       tunnel_defaults(keys, sshd.addr, sshd.port, gatetime=GATETIME),
                       [{"name": "rs", "local_forwards": [f"127.0.0.1:{port}:127.0.0.1:{echo.port}"]}])
    td = Tunneld(ctx, conf, ctl, name=f"tunneld-restart-{label}").start()
    try:
        td.wait_ctl()
        t0 = now()
        if wait_echo("127.0.0.1", port, t0 + UP_DEADLINE) is None:
            raise BenchError(f"restart {label}: the tunnel never came up; see {td.log}")
        time.sleep(GATETIME + 0.5)      # the gate timer fired: tunneld is idle
        pids = td.ssh_pids()
        res = {"who": label, "traffic": _traffic([td.pid], pids, port, conns)}

        def do_restart():
            old = next(x for x in td.status()["tunnels"] if x["name"] == "rs").get("pid")
            r = td.ctl_cmd("restart", "rs")
            if r.returncode != 0:
                raise BenchError(f"tunnelctl restart rs: exit {r.returncode}: {r.stdout} {r.stderr}")
            return _wait_tunnel_up(td, "rs", old, now() + UP_DEADLINE)[0]

        mbb0 = _count_in_log(td.log, MBB_LINE)
        res.update(_restarts(restarts, port, do_restart, 0.0))
        res["make_before_break"] = _count_in_log(td.log, MBB_LINE) - mbb0
        res["spacing"] = f"{SETTLE} s after up"
        st = next(x for x in td.status()["tunnels"] if x["name"] == "rs")
        res["starts"] = st.get("starts")
        with open(td.log, errors="replace") as f:
            res["log_tail"] = [ln for ln in f.read().splitlines() if "rs:" in ln and "ssh:" not in ln][-60:]
    finally:
        td.stop()
    log(f"restart {label}: {res['refused']} refused (longest gap {res['longest_gap_s'] * 1000:.0f} ms), "
        f"long-lived connection broken {res['long_broken']} times, {res['make_before_break']} make-before-break")
    return res


def run_autossh(ctx, env, restarts, conns):
    keys, sshd, echo = env["keys"], env["sshd"], env["echo"]
    port = ctx.ports.one()
    conf = ctx.path("restart-autossh.conf")
    write_tunneld_conf(conf, {"control_socket": ctx.path("unused.ctl")},
                       tunnel_defaults(keys, sshd.addr, sshd.port, gatetime=GATETIME),
                       [{"name": "rs", "local_forwards": [f"127.0.0.1:{port}:127.0.0.1:{echo.port}"]}])
    argv = ssh_argvs(ctx, conf)["rs"]
    a = Autossh(argv[1:], ctx.path("autossh-restart.log"), {"AUTOSSH_POLL": str(AUTOSSH_POLL)}).start()
    token = on_cleanup("autossh restart", a.stop)
    try:
        t0 = now()
        if wait_echo("127.0.0.1", port, t0 + UP_DEADLINE) is None:
            raise BenchError("restart autossh: the tunnel never came up")
        time.sleep(GATETIME + 0.5)
        ssh = a.ssh_pid()
        res = {"who": "autossh",
               "traffic": _traffic([a.pid], [ssh], port, conns), "autossh_poll": AUTOSSH_POLL}

        def do_restart():
            old = a.ssh_pid()
            os.kill(a.pid, signal.SIGUSR1)
            end = now() + UP_DEADLINE
            while now() < end and old in a.ssh_pids():
                time.sleep(0.002)
            t = wait_echo("127.0.0.1", port, end)
            if t is None or old in a.ssh_pids():
                raise BenchError("restart autossh: no new ssh accepting on the forward after SIGUSR1")
            return t

        res.update(_restarts(restarts, port, do_restart, AUTOSSH_EVERY))
        res["spacing"] = f"{AUTOSSH_EVERY:.0f} s between restarts (AUTOSSH_POLL={AUTOSSH_POLL})"
    finally:
        run_cleanup(token)
    log(f"restart autossh: {res['refused']} refused (longest gap {res['longest_gap_s'] * 1000:.0f} ms), "
        f"long-lived connection broken {res['long_broken']} times")
    return res


def run(ctx, env, restarts, conns):
    out = {"restarts": restarts, "conns": conns, "settle": SETTLE, "runs": []}
    out["runs"].append(run_tunneld(ctx, env, "tunneld", restarts, conns))
    out["runs"].append(run_autossh(ctx, env, restarts, conns))
    if not env["sshd"].wait_sessions_gone(30):
        log("restart: sshd sessions still open 30 s after the tunnels stopped")
    return out
