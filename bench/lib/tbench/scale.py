"""2. Scale and 3. idle cost: N tunnels in one tunneld vs N autossh processes."""
import os
import time

from .fixtures import (AutosshFleet, NotifySocket, Tunneld, ssh_argvs, tunnel_defaults,
                       write_tunneld_conf)
from .probe import MultiProber, echo_ok
from .util import NetlinkCounter, PeakWatch, log, mem_available_kb, median, now, sample, tcp_ext

TRAFFIC_CONNS = 200         # forwarded connections after the idle window
STARTUP_DEADLINE = 180      # s: all forwards must echo within this (plus 0.1 s per tunnel)


def names(n):
    return [f"t{i:04d}" for i in range(n)]


def write_conf(ctx, env, path, ctl, ports, gatetime, max_parallel, extra_tunnel=None):
    keys, sshd, echo = env["keys"], env["sshd"], env["echo"]
    g = {"control_socket": ctl, "log_level": "info"}
    if max_parallel is not None:
        g["max_parallel_starts"] = max_parallel
    tunnels = []
    for i, (name, p) in enumerate(zip(names(len(ports)), ports)):
        t = {"name": name, "local_forwards": [f"127.0.0.1:{p}:127.0.0.1:{echo.port}"]}
        if extra_tunnel:
            t.update(extra_tunnel(i) or {})
        tunnels.append(t)
    write_tunneld_conf(path, g, tunnel_defaults(keys, sshd.addr, sshd.port, gatetime=gatetime), tunnels)


def probe_all(ports, t0, n, max_total=None):
    # Resolution of "all up" is the /proc/net/tcp re-read interval, chosen so that the
    # prober's own CPU stays small next to the handshakes it measures.
    fi = 0.005 if n <= 10 else 0.02 if n <= 100 else 0.05
    pr = MultiProber([("127.0.0.1", p) for p in ports], interval=0.02, attempt_timeout=5.0,
                     listen_filter=True, filter_interval=fi, max_total=max_total)
    done = pr.run(t0 + STARTUP_DEADLINE + 0.1 * n)
    ups = [t - t0 for t in done.values() if t is not None]
    ls = [t - t0 for t in pr.first_listening.values()]
    return {"all_up_s": max(ups) if len(ups) == len(ports) else None,
            "median_up_s": median(ups), "n_up": len(ups), "probe_resolution_s": fi,
            "probe_attempts": pr.attempts,
            "all_listening_s": max(ls) if len(ls) == len(ports) else None, "median_listening_s": median(ls)}


def open_fds(pid):
    """(open descriptors, soft RLIMIT_NOFILE, hard RLIMIT_NOFILE) of pid, as tunneld runs
    with them: it raises its soft limit to the hard one at start."""
    try:
        n = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/limits") as f:
            lim = next(ln[len("Max open files"):].split() for ln in f if ln.startswith("Max open files"))
        return n, lim[0], lim[1]
    except (OSError, StopIteration, IndexError):
        return None, None, None


def idle_window(sup_pids, ssh_pids, seconds, log_path=None, nl=None):
    """nl: a NetlinkCounter started well before: tunneld's network watch waits
    NETWATCH_SETTLE (0.5 s) after an event, so events up to a second before the window can
    still wake it inside the window."""
    t_start = now()
    s0, c0 = sample(sup_pids), sample(ssh_pids)
    l0 = os.path.getsize(log_path) if log_path else 0
    time.sleep(seconds)
    s1, c1 = sample(sup_pids), sample(ssh_pids)
    l1 = os.path.getsize(log_path) if log_path else 0
    netlink = {"msgs": nl.count(t_start - 1.0, now())} if nl else None
    out = {"seconds": seconds, "netlink": netlink,
           "sup_wakeups": (s1["vcs"] + s1["nvcs"]) - (s0["vcs"] + s0["nvcs"]),
           "sup_vcs": s1["vcs"] - s0["vcs"], "sup_nvcs": s1["nvcs"] - s0["nvcs"],
           "sup_cpu_s": s1["cpu_s"] - s0["cpu_s"], "sup_run_s": s1["run_s"] - s0["run_s"],
           "ssh_wakeups": (c1["vcs"] + c1["nvcs"]) - (c0["vcs"] + c0["nvcs"]),
           "ssh_cpu_s": c1["cpu_s"] - c0["cpu_s"], "ssh_run_s": c1["run_s"] - c0["run_s"],
           "sup_alive": (s0["n"], s1["n"]), "ssh_alive": (c0["n"], c1["n"]),
           "log_bytes": l1 - l0}
    if log_path and l1 > l0:
        with open(log_path, "rb") as f:
            f.seek(l0)
            out["log_lines"] = f.read().decode(errors="replace").splitlines()[:10]
    return out


def sshd_log_counts(path, start):
    """Accepted logins and connections that ended before authentication, in sshd's log
    after byte offset start."""
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    return {"accepted": text.count("Accepted publickey"), "preauth": text.count("[preauth]")}


def traffic_window(sup_pids, ssh_pids, ports, conns):
    """conns echo connections through the forwards (round robin): what a forwarded
    connection costs the supervisor (tunneld reads its ssh's stderr, at LogLevel VERBOSE:
    nothing is logged there for a working forwarded connection)."""
    s0, c0 = sample(sup_pids), sample(ssh_pids)
    t0 = now()
    ok = sum(echo_ok("127.0.0.1", ports[i % len(ports)]) for i in range(conns))
    took = now() - t0
    time.sleep(0.2)     # let the supervisor read the last lines
    s1, c1 = sample(sup_pids), sample(ssh_pids)
    return {"conns": conns, "ok": ok, "seconds": took,
            "sup_wakeups": (s1["vcs"] + s1["nvcs"]) - (s0["vcs"] + s0["nvcs"]),
            "sup_cpu_s": s1["cpu_s"] - s0["cpu_s"], "sup_run_s": s1["run_s"] - s0["run_s"],
            "ssh_run_s": c1["run_s"] - c0["run_s"]}


def run_tunneld(ctx, env, n, ports, gatetime, idle_s, max_parallel, label, after_up=None):
    conf = ctx.path(f"scale-{label}-{n}.conf")
    ctl = ctx.path(f"scale-{label}-{n}.ctl")
    write_conf(ctx, env, conf, ctl, ports, gatetime, max_parallel)
    notify = NotifySocket(ctx.path(f"scale-{label}-{n}.notify"))
    mem0 = mem_available_kb()
    sshd0 = sample([env["sshd"].proc.pid])["run_s"]
    lo0 = tcp_ext("ListenOverflows", "ListenDrops")
    log0 = os.path.getsize(env["sshd"].log)
    td = Tunneld(ctx, conf, ctl, name=f"tunneld-scale-{label}-{n}", notify=notify)
    t0 = now()
    td.start()
    r = {"who": label, "n": n, "max_parallel_starts": max_parallel, "gatetime": gatetime}
    r.update(probe_all(ports, t0, n))
    r["notify_msgs"] = notify.count_after(t0)
    lo1 = tcp_ext("ListenOverflows", "ListenDrops")
    r["listen_overflows"] = {k: lo1[k] - lo0[k] for k in lo0}
    r["sshd_log"] = sshd_log_counts(env["sshd"].log, log0)
    sup, ssh_pids = sample([td.pid]), td.ssh_pids()
    kids = sample(ssh_pids)
    r["ssh_run_s"] = kids["run_s"]
    r["sshd_run_s"] = sample([env["sshd"].proc.pid])["run_s"] - sshd0 + sample(env["sshd"].sessions())["run_s"]
    r["sup_fds"], r["sup_nofile_soft"], r["sup_nofile_hard"] = open_fds(td.pid)
    r.update({"sup_rss_kb": sup["rss_kb"], "sup_hwm_at_up_kb": sup["hwm_kb"], "sup_pss_kb": sup["pss_kb"], "sup_uss_kb": sup["uss_kb"],
              "sup_anon_kb": sup["anon_kb"], "sup_pte_kb": sup["pte_kb"], "sup_cpu_s": sup["cpu_s"],
              "sup_run_s": sup["run_s"], "ssh_n": kids["n"], "ssh_rss_kb": kids["rss_kb"],
              "ssh_pss_kb": kids["pss_kb"], "sys_mem_used_kb": mem0 - mem_available_kb()})
    if r["all_up_s"] is None:
        log(f"scale {label} N={n}: only {r['n_up']} of {n} forwards echoed; see {td.log}")
    st = td.status()
    states = {}
    for t in st["tunnels"]:
        states[t["state"]] = states.get(t["state"], 0) + 1
    r["states"] = states
    r["starts_total"] = sum(t.get("starts", 0) for t in st["tunnels"])
    fails = {}
    for t in st["tunnels"]:
        for k, v in (t.get("failures") or {}).items():
            fails[k] = fails.get(k, 0) + v
    r["failures"] = fails
    if idle_s:
        nl = NetlinkCounter()
        # gatetime timers are one-shot: let them fire before the idle window
        time.sleep(max(0.0, t0 + (r["all_up_s"] or 0) + gatetime + 0.5 - now(), 1.0))
        pids_before = set(td.ssh_pids())
        r["idle"] = idle_window([td.pid], list(pids_before), idle_s, td.log, nl)
        nl.stop()
        r["idle"]["ssh_pids_unchanged"] = pids_before == set(td.ssh_pids())
        st = sample([td.pid])
        r["sup_rss_after_idle_kb"] = st["rss_kb"]
        r["traffic"] = traffic_window([td.pid], td.ssh_pids(), ports[:10], TRAFFIC_CONNS)
    if after_up:
        r["after_up"] = after_up(td, notify, conf, ports)
    # VmHWM: tunneld's peak RSS over its whole life so far (startup, idle, traffic and, at the
    # reload N, the reloads): what the RSS target is judged on, not one snapshot.
    r["sup_hwm_kb"] = sample([td.pid])["hwm_kb"] or None
    stk = PeakWatch(td.pid, "VmStk")
    r["stop_s"] = td.stop(timeout=60)
    r["stack_kb_before_stop"], r["stack_kb_peak"] = stk.stop()
    notify.close()
    if not env["sshd"].wait_sessions_gone(60):
        log("sshd sessions still open 60 s after the tunnels stopped")
    log(f"scale {label} N={n}: all up {r['all_up_s']}, tunneld RSS {r['sup_rss_kb']} kB, CPU {r['sup_cpu_s']} s")
    return r


def run_autossh(ctx, env, n, ports, gatetime, idle_s):
    conf = ctx.path(f"scale-autossh-{n}.conf")
    write_conf(ctx, env, conf, ctx.path("unused.ctl"), ports, gatetime, None)
    argvs = [a[1:] for a in ssh_argvs(ctx, conf).values()]
    mem0 = mem_available_kb()
    sshd0 = sample([env["sshd"].proc.pid])["run_s"]
    lo0 = tcp_ext("ListenOverflows", "ListenDrops")
    log0 = os.path.getsize(env["sshd"].log)
    fleet = AutosshFleet(argvs, ctx.tmp)
    launched, t0 = fleet.start()      # all launched stopped, then released together at t0
    r = {"who": "autossh", "n": n, "launch_s": launched}
    r.update(probe_all(ports, t0, n))
    lo1 = tcp_ext("ListenOverflows", "ListenDrops")
    r["listen_overflows"] = {k: lo1[k] - lo0[k] for k in lo0}
    r["sshd_log"] = sshd_log_counts(env["sshd"].log, log0)
    sup, ssh_pids = sample(fleet.pids()), fleet.ssh_pids()
    kids = sample(ssh_pids)
    r["ssh_run_s"] = kids["run_s"]
    r["sshd_run_s"] = sample([env["sshd"].proc.pid])["run_s"] - sshd0 + sample(env["sshd"].sessions())["run_s"]
    r.update({"sup_rss_kb": sup["rss_kb"], "sup_pss_kb": sup["pss_kb"], "sup_uss_kb": sup["uss_kb"],
              "sup_anon_kb": sup["anon_kb"], "sup_pte_kb": sup["pte_kb"], "sup_cpu_s": sup["cpu_s"],
              "sup_run_s": sup["run_s"], "sup_n": sup["n"], "ssh_n": kids["n"], "ssh_rss_kb": kids["rss_kb"],
              "ssh_pss_kb": kids["pss_kb"], "sys_mem_used_kb": mem0 - mem_available_kb()})
    if r["all_up_s"] is None:
        log(f"scale autossh N={n}: only {r['n_up']} of {n} forwards echoed")
    if idle_s:
        nl = NetlinkCounter()
        time.sleep(max(0.0, t0 + (r["all_up_s"] or 0) + gatetime + 0.5 - now(), 1.0))
        pids_before = set(fleet.ssh_pids())
        r["idle"] = idle_window(fleet.pids(), list(pids_before), idle_s, None, nl)
        nl.stop()
        r["idle"]["ssh_pids_unchanged"] = pids_before == set(fleet.ssh_pids())
        r["traffic"] = traffic_window(fleet.pids(), fleet.ssh_pids(), ports[:10], TRAFFIC_CONNS)
    r["stop_s"] = fleet.stop(timeout=60)
    if not env["sshd"].wait_sessions_gone(60):
        log("sshd sessions still open 60 s after the tunnels stopped")
    log(f"scale autossh N={n}: all up {r['all_up_s']}, autossh RSS {r['sup_rss_kb']} kB, CPU {r['sup_cpu_s']} s")
    return r


def run(ctx, env, ns, idle_s, gatetime, default_parallel_ns, reload_hook=None, mem_guard=None):
    """reload_hook: (n, callable) — run callable on tunneld's instance at that n."""
    out = {"ns": ns, "gatetime": gatetime, "idle_s": idle_s, "runs": [], "skipped": []}
    ports_all = ctx.ports.get(max(ns))
    for n in ns:
        if mem_guard and not mem_guard(n, out["runs"]):
            out["skipped"].append(n)
            log(f"scale N={n}: skipped (memory)")
            continue
        ports = ports_all[:n]
        hook = reload_hook[1] if reload_hook and reload_hook[0] == n else None
        out["runs"].append(run_tunneld(ctx, env, n, ports, gatetime, idle_s, n, "tunneld", after_up=hook))
        if n in default_parallel_ns:
            out["runs"].append(run_tunneld(ctx, env, n, ports, gatetime, 0, None, "tunneld-default8"))
        out["runs"].append(run_autossh(ctx, env, n, ports, gatetime, idle_s))
    return out
