"""Limits: tunneld at the edge of its process limits (run by default, about a minute).

Not a benchmark: two reproducers for limits the scale numbers point at.
* open files: tunneld holds one descriptor per tunnel; under a small RLIMIT_NOFILE the
  tunnels beyond it cannot start. (tunneld raises its soft limit to the hard one at start;
  prlimit sets both here, so there is nothing to raise.)
* stack: stopping N tunnels recurses once per tunnel (tunnel_stop -> set_state -> the
  supervisor's observer -> check_shutdown_done -> shutdown_step -> tunnel_stop …); with a
  small stack limit the SIGTERM path overflows it.
"""
import os
import signal
import subprocess
import time

from .fixtures import NotifySocket, Tunneld
from .probe import MultiProber
from .scale import write_conf
from .util import PeakWatch, log, now, proc_cpu


def _start(ctx, env, n, label, limit_args):
    ports = ctx.ports.get(n)
    conf, ctl = ctx.path(f"limits-{label}.conf"), ctx.path(f"limits-{label}.ctl")
    write_conf(ctx, env, conf, ctl, ports, 2, n)
    notify = NotifySocket(ctx.path(f"limits-{label}.notify"))
    td = Tunneld(ctx, conf, ctl, name=f"tunneld-limits-{label}", notify=notify,
                 wrapper=["prlimit", *limit_args, "--"])
    td.start()
    return td, ports, notify


def nofile(ctx, env, n=60, limit=48):
    td, ports, notify = _start(ctx, env, n, "nofile", [f"--nofile={limit}:{limit}"])
    try:
        pr = MultiProber([("127.0.0.1", p) for p in ports], interval=0.05, listen_filter=True,
                         filter_interval=0.05)
        done = pr.run(now() + 20)
        up = sum(1 for v in done.values() if v is not None)
        with open(td.log, errors="replace") as f:
            text = f.read()
        # one line per failed start (a second one, "…; restarting in …", says what happens next)
        emfile = [ln for ln in text.splitlines() if ln.endswith("cannot start ssh: Too many open files")]
        resets = sum(1 for ln in text.splitlines() if "network changed: backoff reset" in ln)
        # a tunnelctl connection while tunneld has no descriptor left
        size0, cpu0, t0 = os.path.getsize(td.log), proc_cpu(td.pid), now()
        try:
            r = td.ctl_cmd("--json", "status", timeout=5)
            ctl_ok = r.returncode == 0
        except subprocess.TimeoutExpired:
            ctl_ok = False
        time.sleep(3)
        size1, cpu1, t1 = os.path.getsize(td.log), proc_cpu(td.pid), now()
        with open(td.log, "rb") as f:
            f.seek(size0)
            after = f.read(size1 - size0).decode(errors="replace").splitlines()
        # "control socket: cannot accept: …; not accepting for 1 s" (out of descriptors: it
        # pauses the socket) or "control socket: accept failed: …" (anything else)
        accept = [ln for ln in after if "control socket:" in ln and "accept" in ln]
        res = {"n": n, "limit": limit, "forwards_up": up, "emfile_starts": len(emfile),
               "first_emfile": emfile[0] if emfile else None, "network_resets": resets,
               "tunnelctl_status_ok": ctl_ok, "fds": len(os.listdir(f"/proc/{td.pid}/fd")),
               "after_ctl_s": t1 - t0, "after_ctl_cpu_s": (cpu1[1] or 0) - (cpu0[1] or 0),
               "after_ctl_log_bytes": size1 - size0, "after_ctl_log_lines": len(after),
               "after_ctl_accept_lines": len(accept), "first_accept_line": accept[0] if accept else None,
               "after_ctl_log_head": after[:5]}
    finally:
        td.stop(timeout=60)
        notify.close()
        env["sshd"].wait_sessions_gone(60)
    log(f"limits nofile: {res}")
    return res


def stack(ctx, env, n=200, limit_kb=256):
    td, ports, notify = _start(ctx, env, n, "stack", [f"--stack={limit_kb * 1024}"])
    try:
        pr = MultiProber([("127.0.0.1", p) for p in ports], interval=0.05, listen_filter=True,
                         filter_interval=0.05)
        done = pr.run(now() + 120)
        up = sum(1 for v in done.values() if v is not None)
        time.sleep(2.5)
        pid = td.pid
        w = PeakWatch(pid, "VmStk")
        os.kill(pid, signal.SIGTERM)
        try:
            td.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        first, peak = w.stop()
        rc = td.proc.returncode        # prlimit execs tunneld: same pid, its status
        res = {"n": n, "stack_limit_kb": limit_kb, "forwards_up": up, "vmstk_kb_before": first,
               "vmstk_kb_peak": peak, "exit": rc,
               "killed_by": signal.Signals(-rc).name if rc is not None and rc < 0 else None}
    finally:
        td.stop(timeout=30)
        notify.close()
        env["sshd"].wait_sessions_gone(60)
    log(f"limits stack: {res}")
    return res


def run(ctx, env):
    return {"nofile": nofile(ctx, env), "stack": stack(ctx, env)}
