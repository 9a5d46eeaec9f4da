"""1. Recovery after `kill -9` of the ssh child, against the floor of a fresh ssh."""
import os
import signal
import time

from .fixtures import (Autossh, NotifySocket, Tunneld, ssh_commands, standalone_argv, tunnel_defaults,
                       write_tunneld_conf)
from .probe import wait_echo
from .util import BenchError, log, now, pct, spawn, stop_process

GATETIME = 1            # s: tunneld's gatetime here; every kill comes after > GATETIME of uptime
SETTLE = 1.3            # s: uptime of each ssh before it is killed (> gatetime, > restart_delay)
DEADLINE = 60           # s: a recovery that takes longer is recorded as a failure


def run(ctx, env, runs, series_kills):
    keys, sshd, echo = env["keys"], env["sshd"], env["echo"]
    p_t, p_a, p_f = ctx.ports.get(3)
    conf = ctx.path("recovery.conf")
    fwd = "127.0.0.1:{}:127.0.0.1:" + str(echo.port)
    # One config holds the three identical tunnels (different local ports) so that tunneld
    # prints its ssh command line for each; the floor and autossh run it standalone (the same
    # options less the multiplexing ones, the forward on the command line); only "rec" is enabled.
    write_tunneld_conf(conf, {"control_socket": ctx.path("recovery.ctl"), "log_level": "info"},
                       tunnel_defaults(keys, sshd.addr, sshd.port, gatetime=GATETIME),
                       [{"name": "rec", "local_forwards": [fwd.format(p_t)]},
                        {"name": "autossh", "local_forwards": [fwd.format(p_a)], "enabled": False},
                        {"name": "floor", "local_forwards": [fwd.format(p_f)], "enabled": False}])
    cmds = ssh_commands(ctx, conf)
    argv = {k: standalone_argv(v["argv"], v["forwards"]) for k, v in cmds.items()}
    res = {"runs": runs, "gatetime": GATETIME, "settle": SETTLE, "ssh_argv": " ".join(argv["floor"]),
           "tunneld_ssh_argv": " ".join(cmds["rec"]["argv"]),
           "tunneld_forwards": " ".join(" ".join(f) for f in cmds["rec"]["forwards"]),
           "floor": [], "tunneld": [], "autossh": [], "autossh_cold_start": [], "failures": []}

    notify = NotifySocket(ctx.path("recovery.notify"))
    td = Tunneld(ctx, conf, ctx.path("recovery.ctl"), name="tunneld-recovery", notify=notify).start()
    td.wait_ctl()
    if wait_echo("127.0.0.1", p_t, now() + 30) is None:
        raise BenchError("recovery: tunneld's tunnel never came up; see " + td.log)
    ready_at = now()

    def one_floor():
        t0 = now()
        p = spawn(argv["floor"], log_path=ctx.path("floor-ssh.log"))
        t = wait_echo("127.0.0.1", p_f, t0 + DEADLINE)
        stop_process(p, timeout=5)
        return None if t is None else t - t0

    def one_tunneld():
        nonlocal ready_at
        time.sleep(max(0.0, ready_at + SETTLE - now()))
        pids = td.ssh_pids()
        if len(pids) != 1:
            raise BenchError(f"recovery: tunneld has {len(pids)} ssh children")
        t0 = now()
        os.kill(pids[0], signal.SIGKILL)
        t = wait_echo("127.0.0.1", p_t, t0 + DEADLINE)
        ready_at = now()
        return None if t is None else t - t0

    def one_autossh():
        a = Autossh(argv["autossh"][1:], ctx.path("autossh-recovery.log"))
        t0 = now()
        a.start()
        try:
            t = wait_echo("127.0.0.1", p_a, t0 + DEADLINE)
            if t is None:
                raise BenchError("recovery: autossh's tunnel never came up")
            res["autossh_cold_start"].append(t - t0)
            time.sleep(SETTLE)
            pid = a.ssh_pid()
            t0 = now()
            os.kill(pid, signal.SIGKILL)
            t = wait_echo("127.0.0.1", p_a, t0 + DEADLINE)
            return None if t is None else t - t0
        finally:
            a.stop()

    kinds = [("floor", one_floor), ("tunneld", one_tunneld), ("autossh", one_autossh)]
    for i in range(runs):
        # rotate the order so that no contender always runs right after another
        for k, fn in kinds[i % 3:] + kinds[:i % 3]:
            dt = fn()
            if dt is None:
                res["failures"].append(f"{k} run {i + 1}: no echo within {DEADLINE} s")
            res[k].append(dt)
        log(f"recovery run {i + 1}/{runs}: floor {res['floor'][-1]}, tunneld {res['tunneld'][-1]}, "
            f"autossh {res['autossh'][-1]}")

    # Repeated kills of one long-lived supervisor: autossh's grace_time() counts a start that
    # comes less than max(10 s, poll/10 = 60 s) after the previous one as a "fast try" and
    # sleeps after the fifth; tunneld restarts a run that lasted gatetime at once.
    res["series"] = {"kills": series_kills, "tunneld": [], "autossh": []}
    if series_kills:
        for _ in range(series_kills):
            res["series"]["tunneld"].append(one_tunneld())
        a = Autossh(argv["autossh"][1:], ctx.path("autossh-series.log"))
        t0 = now()
        a.start()
        try:
            if wait_echo("127.0.0.1", p_a, t0 + DEADLINE) is None:
                raise BenchError("recovery series: autossh's tunnel never came up")
            for k in range(series_kills):
                time.sleep(SETTLE)
                pid = a.ssh_pid(timeout=120)
                t0 = now()
                os.kill(pid, signal.SIGKILL)
                t = wait_echo("127.0.0.1", p_a, t0 + 120)
                res["series"]["autossh"].append(None if t is None else t - t0)
                log(f"series kill {k + 1}: autossh {res['series']['autossh'][-1]}")
        finally:
            a.stop()

    st = td.status()["tunnels"][0]
    res["tunneld_starts"] = st.get("starts")
    res["tunneld_log_tail"] = open(td.log, errors="replace").read().splitlines()[-6:]
    td.stop()
    notify.close()
    for k in ("floor", "tunneld", "autossh"):
        v = res[k]
        res[k + "_p50"], res[k + "_p95"] = pct(v, 50), pct(v, 95)
        res[k + "_min"] = min((x for x in v if x is not None), default=None)
        res[k + "_max"] = max((x for x in v if x is not None), default=None)
    return res
