"""5. Outage recovery: a silent blackhole between us and a test host in a netns."""
import os
import re
import threading
import time

from .fixtures import (Autossh, EchoServer, NotifySocket, Sshd, Tunneld, ssh_argvs,
                       tunnel_defaults, write_tunneld_conf)
from .probe import MultiProber, wait_echo
from .util import BenchError, log, now, on_cleanup, run_cleanup
from .util import run as sh

PREFIX = "tbench-"
GUARD_METRIC = "4243"


def _ip(*args, check=True):
    return sh(["ip", *args], check=check, timeout=15)


def sweep_stale():
    """Remove test hosts left by an earlier bench/run that was SIGKILLed (name holds its pid)."""
    r = _ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        m = re.match(rf"{PREFIX}(\d+)\b", line)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            pid = int(m.group(1))
            log(f"removing stale test host {PREFIX}{pid} of a dead bench/run")
            _ip("link", "del", f"tbh{pid % 100000}", check=False)
            _ip("netns", "del", f"{PREFIX}{pid}", check=False)


class TestHost:
    """netns + veth pair in 198.18.0.0/15, guarded by an unreachable catch-all route."""

    def __init__(self):
        pid = os.getpid()
        self.ns = f"{PREFIX}{pid}"
        self.hif, self.nif = f"tbh{pid % 100000}", f"tbn{pid % 100000}"
        a, b = (pid >> 6) % 256, (pid % 64) * 4
        self.here, self.there = f"198.19.{a}.{b + 1}", f"198.19.{a}.{b + 2}"
        self.blackholed = False

    def start(self):
        used = _ip("-o", "-4", "addr", "show").stdout
        if self.here + "/" in used or self.there + "/" in used:
            raise BenchError(f"outage: {self.here}/30 is already in use on this machine")
        _ip("netns", "add", self.ns)
        on_cleanup("netns", lambda: _ip("netns", "del", self.ns, check=False))
        _ip("link", "add", self.hif, "type", "veth", "peer", "name", self.nif)
        on_cleanup("veth", lambda: _ip("link", "del", self.hif, check=False))
        r = _ip("route", "add", "unreachable", "198.18.0.0/15", "metric", GUARD_METRIC, check=False)
        if r.returncode == 0:
            on_cleanup("guard route", lambda: _ip("route", "del", "unreachable", "198.18.0.0/15", "metric",
                                                  GUARD_METRIC, check=False))
        _ip("link", "set", self.nif, "netns", self.ns)
        _ip("addr", "add", self.here + "/30", "dev", self.hif)
        _ip("link", "set", self.hif, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")
        _ip("-n", self.ns, "addr", "add", self.there + "/30", "dev", self.nif)
        _ip("-n", self.ns, "link", "set", self.nif, "up")
        on_cleanup("blackhole", self.restore)
        return self

    def blackhole(self):
        _ip("-n", self.ns, "route", "add", "blackhole", self.here + "/32")
        self.blackholed = True

    def restore(self):
        if self.blackholed:
            _ip("-n", self.ns, "route", "del", "blackhole", self.here + "/32", check=False)
            self.blackholed = False


def shared_test_host(env):
    """The run's one test host, made on first use and kept in env until the final cleanup (its
    names and addresses derive from bench/run's pid, so there can be one at a time)."""
    if "test_host" not in env:
        sweep_stale()
        env["test_host"] = TestHost().start()
    return env["test_host"]


class ChildWatch(threading.Thread):
    """Records when each supervisor's ssh child changes (every 50 ms)."""

    def __init__(self, getters, t_ref):
        super().__init__(daemon=True)
        self.getters, self.t_ref = getters, t_ref
        self.events = {k: [] for k in getters}
        self.stop_flag = False

    def run(self):
        last = {k: None for k in self.getters}
        while not self.stop_flag:
            for k, g in self.getters.items():
                try:
                    cur = tuple(sorted(g()))
                except Exception:  # noqa: BLE001
                    continue
                if cur != last[k]:
                    self.events[k].append((round(now() - self.t_ref, 2), list(cur)))
                    last[k] = cur
            time.sleep(0.05)


def run(ctx, env, outage_s, reps, alive_interval, alive_count, max_wait):
    keys = env["keys"]
    host = shared_test_host(env)
    sshd = Sshd(ctx, keys, host.there, ctx.ports.one(), netns=host.ns, name="sshd-ns").start()
    echo = EchoServer(ctx, "127.0.0.1", ctx.ports.one(), netns=host.ns, name="echo-ns").start()
    p_t, p_a, p_b = ctx.ports.get(3)
    conf = ctx.path("outage.conf")
    fwd = "127.0.0.1:{}:127.0.0.1:" + str(echo.port)
    alive = {"server_alive_interval": alive_interval, "server_alive_count_max": alive_count}
    write_tunneld_conf(conf, {"control_socket": ctx.path("outage.ctl")},
                       tunnel_defaults(keys, host.there, sshd.port, **alive),
                       [{"name": "out", "local_forwards": [fwd.format(p_t)]},
                        {"name": "same-opts", "local_forwards": [fwd.format(p_b)], "enabled": False}])
    td_gatetime = 30        # tunneld's default
    autossh_default = ["-N", "-T", "-F", "/dev/null", "-i", keys.client_key,
                       "-o", f"UserKnownHostsFile={keys.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                       "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                       "-o", f"ServerAliveInterval={alive_interval}", "-o", f"ServerAliveCountMax={alive_count}",
                       "-p", str(sshd.port), "-l", "root", "-L", fwd.format(p_a), host.there]
    autossh_same = ssh_argvs(ctx, conf)["same-opts"][1:]
    res = {"outage_s": outage_s, "server_alive": f"{alive_interval} s x {alive_count}", "reps": [],
           "addresses": f"{host.here} (here) / {host.there} (test host {host.ns})",
           "autossh_default_args": " ".join(autossh_default), "autossh_same_args": " ".join(autossh_same),
           "tunneld_gatetime": td_gatetime}

    notify = NotifySocket(ctx.path("outage.notify"))
    td = Tunneld(ctx, conf, ctx.path("outage.ctl"), name="tunneld-outage", notify=notify).start()
    a1 = Autossh(autossh_default, ctx.path("autossh-outage-default.log"))
    a2 = Autossh(autossh_same, ctx.path("autossh-outage-same.log"))
    tok = on_cleanup("outage autossh", lambda: (a1.stop(), a2.stop()))
    a1.start()
    a2.start()
    targets = {"tunneld": p_t, "autossh": p_a, "autossh+tunneld-ssh-opts": p_b}
    try:
        for who, port in targets.items():
            if wait_echo("127.0.0.1", port, now() + 30) is None:
                raise BenchError(f"outage: {who} never came up through {host.there}")
        for rep in range(reps):
            # tunneld counts a run as a success only after gatetime: let it pass first, as on
            # any long-lived tunnel (autossh has AUTOSSH_GATETIME=0)
            pids = td.ssh_pids()
            st = td.status()["tunnels"][0]
            wait = max(0.0, td_gatetime + 1 - (st.get("uptime") or 0))
            log(f"outage rep {rep + 1}: waiting {wait:.0f} s for tunneld's gatetime to pass")
            time.sleep(wait)
            for who, port in targets.items():
                if wait_echo("127.0.0.1", port, now() + 10) is None:
                    raise BenchError(f"outage: {who} does not echo before the outage")
            t_b = now()
            watch = ChildWatch({"tunneld": td.ssh_pids, "autossh": a1.ssh_pids,
                                "autossh+tunneld-ssh-opts": a2.ssh_pids}, t_b)
            watch.start()
            host.blackhole()
            log(f"outage rep {rep + 1}: blackhole for {outage_s} s")
            time.sleep(outage_s)
            t_r = now()
            host.restore()
            pr = MultiProber([("127.0.0.1", p) for p in targets.values()], interval=0.05,
                             attempt_timeout=10.0, max_outstanding=40)
            done = pr.run(t_r + max_wait)
            time.sleep(0.2)
            watch.stop_flag = True
            watch.join()
            r = {"rep": rep + 1, "blackhole_s": t_r - t_b, "recovery_s": {}, "ssh_changes": watch.events}
            for who, port in targets.items():
                t = done[("127.0.0.1", port)]
                r["recovery_s"][who] = None if t is None else t - t_r
            st = td.status()["tunnels"][0]
            r["tunneld_last_exit"] = st.get("last_exit")
            r["tunneld_state"] = st.get("state")
            res["reps"].append(r)
            log(f"outage rep {rep + 1}: recovery after restore {r['recovery_s']}")
        with open(td.log, errors="replace") as f:
            res["tunneld_log"] = [ln for ln in f.read().splitlines() if "ssh:" not in ln][-12:]
    finally:
        td.stop()
        notify.close()
        run_cleanup(tok)
        echo.stop()
        sshd.stop()
    return res
