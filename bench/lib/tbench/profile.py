"""Where tunneld spends its syscalls and instructions: strace -c -f, strace per phase, callgrind."""
import glob
import os
import re
import signal
import subprocess
import time

from .fixtures import NotifySocket, Tunneld
from .probe import MultiProber, wait_echo
from .scale import write_conf
from .util import BenchError, log, now, run


def perf_works():
    try:
        r = subprocess.run(["perf", "stat", "-e", "instructions", "true"], capture_output=True, text=True,
                           timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    out = r.stderr + r.stdout
    m = re.search(r"^\s*(\S+)\s+instructions", out, re.M)
    if r.returncode != 0 or not m or not m.group(1).replace(",", "").isdigit():
        line = next((ln.strip() for ln in out.splitlines() if "instructions" in ln), out.strip()[:200])
        return False, line
    return True, m.group(0).strip()


def _all_up(ports, deadline):
    pr = MultiProber([("127.0.0.1", p) for p in ports], interval=0.05, attempt_timeout=10.0,
                     listen_filter=True, filter_interval=0.05)
    done = pr.run(deadline)
    return all(v is not None for v in done.values())


def parse_strace_c(path):
    rows, total = [], None
    with open(path, errors="replace") as f:
        for line in f:
            p = line.split()
            if len(p) >= 5 and re.match(r"^\d+\.\d+$", p[0]) and p[-1] != "total":
                errors = int(p[4]) if len(p) == 6 else 0
                rows.append({"syscall": p[-1], "pct": float(p[0]), "seconds": float(p[1]),
                             "calls": int(p[3]), "errors": errors})
            elif p and p[-1] == "total" and re.match(r"^\d+\.\d+$", p[0]):
                total = {"seconds": float(p[1]), "calls": int(p[3]) if len(p) >= 5 else None}
    return rows, total


def strace_c_f(ctx, env, n, gatetime):
    """strace -c -f on tunneld from start to exit: tunneld, its forked children before exec
    and (since -f follows exec) the ssh processes too."""
    ports = ctx.ports.get(n)
    conf, ctl = ctx.path(f"strace-cf-{n}.conf"), ctx.path(f"strace-cf-{n}.ctl")
    write_conf(ctx, env, conf, ctl, ports, gatetime, None)
    out = ctx.path("strace-cf.txt")
    notify = NotifySocket(ctx.path("strace-cf.notify"))
    td = Tunneld(ctx, conf, ctl, name="tunneld-strace-cf", wrapper=["strace", "-c", "-f", "-o", out],
                 notify=notify)
    t0 = now()
    td.start()
    ok = _all_up(ports, t0 + 300)
    up = now() - t0
    td.stop(timeout=120)
    notify.close()
    env["sshd"].wait_sessions_gone(60)
    rows, total = parse_strace_c(out)
    rows.sort(key=lambda r: -r["calls"])
    return {"n": n, "all_up": ok, "all_up_s": up, "rows": rows, "total": total}


def strace_phases(ctx, env, n, gatetime, idle_s):
    """strace -ttt of tunneld alone (no -f): its own syscalls per phase."""
    ports = ctx.ports.get(n)
    conf, ctl = ctx.path(f"strace-ph-{n}.conf"), ctx.path(f"strace-ph-{n}.ctl")
    write_conf(ctx, env, conf, ctl, ports, gatetime, None)
    out = ctx.path("strace-phases.txt")
    notify = NotifySocket(ctx.path("strace-ph.notify"))
    td = Tunneld(ctx, conf, ctl, name="tunneld-strace-ph", wrapper=["strace", "-ttt", "-o", out],
                 notify=notify)
    marks = [("startup", time.time())]
    td.start()
    if not _all_up(ports, now() + 300):
        raise BenchError("strace phases: not every forward came up")
    time.sleep(gatetime + 0.5)
    marks.append(("idle", time.time()))
    time.sleep(idle_s)
    marks.append(("reload", time.time()))
    new = ctx.ports.one()
    ports2 = list(ports)
    ports2[n // 2] = new
    write_conf(ctx, env, conf, ctl, ports2, gatetime, None)
    t0 = now()
    os.kill(td.pid, signal.SIGHUP)
    notify.wait_for("READY=1", t0, 60)
    wait_echo("127.0.0.1", new, now() + 60)
    time.sleep(0.5)
    marks.append(("status", time.time()))
    td.status()
    marks.append(("shutdown", time.time()))
    td.stop(timeout=120)
    marks.append(("end", time.time()))
    notify.close()
    env["sshd"].wait_sessions_gone(60)
    phases = {name: {} for name, _ in marks[:-1]}
    bounds = [(marks[i][0], marks[i][1], marks[i + 1][1]) for i in range(len(marks) - 1)]
    with open(out, errors="replace") as f:
        for line in f:
            m = re.match(r"^(\d+\.\d+) (\w+)\(", line)
            if not m:
                m = re.match(r"^(\d+\.\d+) <\.\.\. (\w+) resumed>", line)
                if not m:
                    continue
                continue        # counted at its start
            t, sc = float(m.group(1)), m.group(2)
            for name, a, b in bounds:
                if a <= t < b:
                    phases[name][sc] = phases[name].get(sc, 0) + 1
                    break
    durations = {name: b - a for name, a, b in bounds}
    return {"n": n, "phases": phases, "durations": durations, "idle_s": idle_s}


_NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")


def parse_callgrind(paths):
    """Self and inclusive (self + calls made) instructions per function, per dump file.

    A small reader of the callgrind format, because callgrind_annotate cannot resolve the
    compressed names of a second dump (they are defined in the first file). Reading the
    files in order keeps one name table across them."""
    names = {"fn": {}, "fl": {}, "ob": {}}
    kind_of = {"fn": "fn", "cfn": "fn", "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl",
               "ob": "ob", "cob": "ob"}
    out = []
    for path in paths:
        funcs, total = {}, None
        cur_fn, cur_fl, cur_ob = None, None, None
        in_call = False
        with open(path, errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line or line[0] == "#":
                    continue
                c = line[0]
                if c.isdigit() or c in "+-*":
                    tok = line.split()
                    cost = int(tok[1]) if len(tok) > 1 and tok[1].isdigit() else 0
                    if cur_fn is None:
                        continue
                    e = funcs.setdefault(cur_fn, {"self": 0, "calls": 0, "obj": cur_ob, "file": cur_fl})
                    if in_call:
                        e["calls"] += cost
                        in_call = False
                    else:
                        e["self"] += cost
                    continue
                key, sep, val = line.partition("=")
                if sep and key in kind_of:
                    m = _NAME.match(val)
                    if m:
                        table_ = names[kind_of[key]]
                        if m.group(2) is not None:
                            table_[m.group(1)] = m.group(2)
                        name = table_.get(m.group(1), f"({m.group(1)})")
                    else:
                        name = val
                    if key == "fn":
                        cur_fn = name
                    elif key == "fl":
                        cur_fl = name
                    elif key == "ob":
                        cur_ob = name
                    continue
                if sep and key == "calls":
                    in_call = True
                    continue
                if line.startswith("summary:") or line.startswith("totals:"):
                    total = int(line.split()[1])
        rows = [{"fn": k, "self": v["self"], "incl": v["self"] + v["calls"], "file": v["file"] or "",
                 "obj": os.path.basename(v["obj"] or "")} for k, v in funcs.items()]
        out.append({"total": total if total is not None else sum(r["self"] for r in rows), "rows": rows})
    return out


def callgrind(ctx, env, n, gatetime):
    """Instruction counts per phase: start to all up, one reload, shutdown."""
    ports = ctx.ports.get(n)
    conf, ctl = ctx.path(f"callgrind-{n}.conf"), ctx.path(f"callgrind-{n}.ctl")
    write_conf(ctx, env, conf, ctl, ports, gatetime, None)
    d = ctx.path("callgrind")
    os.makedirs(d, exist_ok=True)
    notify = NotifySocket(ctx.path("callgrind.notify"))
    td = Tunneld(ctx, conf, ctl, name="tunneld-callgrind", notify=notify,
                 wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.%p",
                          "--dump-instr=no", "--compress-strings=no", "--compress-pos=no", "--vgdb=yes"])
    td.start()
    t0 = now()
    if not _all_up(ports, t0 + 600):
        td.stop()
        raise BenchError("callgrind: not every forward came up")
    up = now() - t0
    time.sleep(gatetime + 0.5)      # gate timers fire: counted in "startup"
    run(["callgrind_control", "-d", "startup", str(td.pid)], timeout=60, check=False)
    new = ctx.ports.one()
    ports2 = list(ports)
    ports2[n // 2] = new
    write_conf(ctx, env, conf, ctl, ports2, gatetime, None)
    t1 = now()
    os.kill(td.pid, signal.SIGHUP)
    notify.wait_for("READY=1", t1, 120)
    wait_echo("127.0.0.1", new, now() + 120)
    time.sleep(0.5)
    run(["callgrind_control", "-d", "reload", str(td.pid)], timeout=60, check=False)
    td.stop(timeout=300)
    notify.close()
    env["sshd"].wait_sessions_gone(60)
    files = sorted(glob.glob(f"{d}/cg.{td.pid}*"), key=os.path.getmtime)
    labels = ["startup", "reload", "shutdown"]
    out = {"n": n, "all_up_s_under_valgrind": up, "phases": []}
    for label, path, parsed in zip(labels, files, parse_callgrind(files)):
        rows = parsed["rows"]
        # callgrind names a function inside a recursion cycle "name'2": summing its calls counts
        # the nested ones again, so its inclusive value means nothing
        own = [r for r in rows if "/daemon/" in r["file"] and "'" not in r["fn"]]
        out["phases"].append({
            "phase": label, "file": os.path.basename(path), "total_ir": parsed["total"],
            "self": sorted(rows, key=lambda r: -r["self"])[:15],
            "inclusive": sorted(own, key=lambda r: -r["incl"])[:15],
            "by_object": _by_object(rows)})
    return out


def _by_object(rows):
    objs = {}
    for r in rows:
        objs[r["obj"]] = objs.get(r["obj"], 0) + r["self"]
    return sorted(objs.items(), key=lambda kv: -kv[1])[:8]


def run_all(ctx, env, n_strace, n_callgrind, gatetime, idle_s):
    res = {}
    ok, line = perf_works()
    res["perf"] = {"works": ok, "detail": line}
    log(f"profile: perf stat -e instructions: {'works' if ok else 'does not work'} ({line})")
    log(f"profile: strace -c -f, N={n_strace}")
    res["strace_cf"] = strace_c_f(ctx, env, n_strace, gatetime)
    log(f"profile: strace -ttt (tunneld alone) per phase, N={n_strace}")
    res["strace_phases"] = strace_phases(ctx, env, n_strace, gatetime, idle_s)
    log(f"profile: callgrind, N={n_callgrind}")
    res["callgrind"] = callgrind(ctx, env, n_callgrind, gatetime)
    return res
