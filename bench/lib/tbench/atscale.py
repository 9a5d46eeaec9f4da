"""8. At scale: N tunnels over C shared connections (10,000 over 100; 2,000 over 20) against
one loopback sshd, their hosts in an ssh config file as most users keep them (one Host alias
per connection), beside autossh running the same tunnels the way autossh can: one process
per connection, its ssh holding that connection's N/C forwards. Measured for tunneld:
`tunneld -t` three times (time, and the same verdict), the control socket's first answer after
start, the load's own time, time to all up, memory, status latency, and reloads that change
one forward (the reply, "1 changed", the other tunnels' ssh untouched)."""
import json
import os
import re
import subprocess
import threading
import time

from .fixtures import AutosshFleet, NotifySocket, Tunneld, write_tunneld_conf
from .probe import wait_echo
from .scale import probe_all, sshd_log_counts
from .util import BenchError, log, mem_available_kb, median, now, proc_cpu, sample
from .util import run as sh

LOAD_LINE = re.compile(r"^<\d>configuration loaded: (\d+) tunnels? \(ssh -G and checks took ([\d.]+) s\)", re.M)
RELOAD_LINE = re.compile(r"^<\d>reload done: (\d+) tunnels? \(was (\d+)\), (\d+) changed$", re.M)
STATUS_SAMPLES = 20         # `tunnelctl status NAME` latency samples, idle
FULL_STATUS_SAMPLES = 3     # `tunnelctl --json status` of every tunnel
PROBES_IN_FLIGHT = 2000     # echo attempts at once: the run already holds a socket per port (RLIMIT_NOFILE)


def parse_sizes(text):
    """"2000x20,10000x100" → [(2000, 20), (10000, 100)]."""
    out = []
    for part in text.split(","):
        if part.strip():
            n, _, c = part.lower().partition("x")
            out.append((int(n), int(c or 1)))
    return out


def name(i):
    return f"t{i:05d}"


def write_ssh_config(path, keys, sshd, c):
    with open(path, "w") as f:
        for k in range(c):
            f.write(f"Host conn{k}\n  HostName {sshd.addr}\n  Port {sshd.port}\n  User root\n"
                    f"  IdentityFile {keys.client_key}\n  UserKnownHostsFile {keys.known_hosts}\n"
                    "  StrictHostKeyChecking yes\n")
    os.chmod(path, 0o600)


def write_conf(path, ctl, ssh_config, echo, ports, c, gatetime, moved=None):
    """moved: {index: port}: those tunnels' forward on another port (a reload's edit)."""
    g = {"control_socket": ctl, "log_level": "info", "max_parallel_starts": c}
    defaults = {"ssh_config_file": ssh_config, "share_connection": True, "gatetime": gatetime}
    tunnels = []
    for i, p in enumerate(ports):
        p = (moved or {}).get(i, p)
        tunnels.append({"name": name(i), "host": f"conn{i % c}", "local_forwards": [f"127.0.0.1:{p}:127.0.0.1:{echo.port}"]})
    write_tunneld_conf(path, g, defaults, tunnels)


def check_runs(ctx, conf, runs=3):
    """`tunneld -t` runs times: each one's seconds and exit status, whether every run printed
    the same, and the connection groups it printed."""
    outs, times, codes = [], [], []
    for _ in range(runs):
        t0 = now()
        r = sh([ctx.tunneld, "-t", "-c", conf], timeout=300, check=False)
        times.append(now() - t0)
        codes.append(r.returncode)
        outs.append((r.stdout, r.stderr))
    groups = sum(1 for ln in outs[0][0].splitlines() if ln.startswith("shared connection"))
    return {"seconds": times, "exit": codes, "same": all(o == outs[0] for o in outs), "groups": groups,
            "first_line": (outs[0][0] or outs[0][1]).splitlines()[0] if (outs[0][0] or outs[0][1]) else ""}


def children_cpu(pid):
    """CPU seconds of pid's reaped children (cutime + cstime): a load's child process and the
    ssh -G it ran, once tunneld reaped it."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        rest = f.read().rsplit(b")", 1)[1].split()
    return (int(rest[13]) + int(rest[14])) / os.sysconf("SC_CLK_TCK")


def _ctl(ctx, ctl, *args, timeout=60):
    t0 = now()
    r = subprocess.run([ctx.tunnelctl, "-s", ctl, *args], capture_output=True, text=True, timeout=timeout)
    return r, now() - t0


def first_answer(ctx, td, deadline):
    """Seconds from spawn until the control socket answered a status, and what it said."""
    while now() < deadline:
        if td.proc.poll() is not None:
            raise BenchError(f"{td.name} exited with {td.proc.returncode}; see {td.log}")
        if os.path.exists(td.ctl):
            r, _ = _ctl(ctx, td.ctl, "--json", "status", timeout=30)
            if r.stdout.startswith("{"):
                reply = json.loads(r.stdout)
                return now() - td.t_start, reply.get("status", ""), len(reply.get("tunnels", []))
        time.sleep(0.01)
    return None, None, None


def pids(ctx, td):
    r, took = _ctl(ctx, td.ctl, "--json", "status", timeout=120)
    st = json.loads(r.stdout)["tunnels"]
    return {t["name"]: (t.get("pid"), t["state"]) for t in st}, took, len(r.stdout)


class LatencyWatch:
    """`tunnelctl status NAME` over and over in a thread, each reply's seconds."""

    def __init__(self, ctx, ctl, who):
        self.ctx, self.ctl, self.who = ctx, ctl, who
        self.samples, self._stop = [], False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                _, took = _ctl(self.ctx, self.ctl, "status", self.who, timeout=60)
                self.samples.append(took)
            except subprocess.TimeoutExpired:
                self.samples.append(60.0)
            time.sleep(0.05)

    def stop(self):
        self._stop = True
        self._t.join()
        return self.samples


def reload_one(ctx, td, conf, ssh_config, echo, ports, c, gatetime, moved, idx):
    """Move tunnel idx's forward to a new port (or change nothing: idx None), `tunnelctl
    reload`, and see what changed."""
    before, _, _ = pids(ctx, td)
    new_port = None
    if idx is not None:
        new_port = ctx.ports.one()
        moved[idx] = new_port
    write_conf(conf, td.ctl, ssh_config, echo, ports, c, gatetime, moved)
    log_off = os.path.getsize(td.log)
    watch = LatencyWatch(ctx, td.ctl, name(0))
    c0, k0 = proc_cpu(td.pid), children_cpu(td.pid)
    t0 = now()
    r, took = _ctl(ctx, td.ctl, "reload", timeout=300)
    c1, k1 = proc_cpu(td.pid), children_cpu(td.pid)
    lat = watch.stop()
    t_up = wait_echo("127.0.0.1", new_port, now() + 60) if new_port else None
    with open(td.log, errors="replace") as f:
        f.seek(log_off)
        m = RELOAD_LINE.search(f.read())
    after, _, _ = pids(ctx, td)
    end = now() + 20
    while any(s != "up" for _, s in after.values()) and now() < end:
        time.sleep(0.2)
        after, _, _ = pids(ctx, td)
    changed = sorted(k for k in before if before[k][0] != after.get(k, (None,))[0])
    return {"tunnel": name(idx) if idx is not None else None, "exit": r.returncode, "reply_s": took,
            "changed_logged": int(m.group(3)) if m else None, "tunneld_cpu_s": c1[0] - c0[0],
            "tunneld_run_s": (c1[1] or 0) - (c0[1] or 0), "load_child_cpu_s": k1 - k0,
            "pids_changed": len(changed), "not_up_after": sum(1 for _, s in after.values() if s != "up"),
            "moved_echo_s": None if t_up is None else t_up - t0,
            "status_during_max_s": max(lat) if lat else None, "status_during_n": len(lat)}


def run_tunneld(ctx, env, n, c, ports, gatetime, reloads):
    keys, sshd, echo = env["keys"], env["sshd"], env["echo"]
    ssh_config = ctx.path(f"atscale-{n}.ssh_config")
    conf, ctl = ctx.path(f"atscale-{n}.conf"), ctx.path(f"atscale-{n}.ctl")
    write_ssh_config(ssh_config, keys, sshd, c)
    write_conf(conf, ctl, ssh_config, echo, ports, c, gatetime)
    r = {"who": "tunneld", "n": n, "c": c, "check": check_runs(ctx, conf)}
    log(f"atscale N={n}: tunneld -t {', '.join(f'{t:.2f}' for t in r['check']['seconds'])} s, "
        f"same verdict: {r['check']['same']}, {r['check']['groups']} connections")
    notify = NotifySocket(ctx.path(f"atscale-{n}.notify"))
    mem0 = mem_available_kb()
    log0 = os.path.getsize(sshd.log)
    td = Tunneld(ctx, conf, ctl, name=f"tunneld-atscale-{n}", notify=notify)
    try:
        td.start()
        t0 = td.t_start
        r["first_answer_s"], said, r["first_answer_tunnels"] = first_answer(ctx, td, t0 + 60)
        r["first_answer_loading"] = bool(said and "loading the configuration" in said)
        r.update(probe_all(ports, t0, n, PROBES_IN_FLIGHT))
        t_ready, _ = notify.wait_for("READY=1", t0, 60)
        r["ready_s"] = None if t_ready is None else t_ready - t0
        with open(td.log, errors="replace") as f:
            m = LOAD_LINE.search(f.read())
        r["load_s"] = float(m.group(2)) if m else None
        r["sshd_logins"] = sshd_log_counts(sshd.log, log0)["accepted"]
        sup, kids = sample([td.pid]), sample(td.ssh_pids())
        r.update({"sup_rss_kb": sup["rss_kb"], "sup_pss_kb": sup["pss_kb"], "sup_uss_kb": sup["uss_kb"],
                  "sup_run_s": sup["run_s"], "ssh_n": kids["n"], "ssh_rss_kb": kids["rss_kb"],
                  "ssh_pss_kb": kids["pss_kb"], "ssh_uss_kb": kids["uss_kb"], "ssh_run_s": kids["run_s"],
                  "sys_mem_used_kb": mem0 - mem_available_kb()})
        log(f"atscale N={n}: first answer {r['first_answer_s']} s, loaded in {r['load_s']} s, all up "
            f"{r['all_up_s']} s, tunneld {sup['rss_kb']} kB RSS, {kids['n']} ssh")
        time.sleep(max(0.0, t0 + (r["all_up_s"] or 0) + gatetime + 0.5 - now()))
        one = [_ctl(ctx, ctl, "status", name(i * 7919 % n))[1] for i in range(STATUS_SAMPLES)]
        full = [pids(ctx, td)[1:] for _ in range(FULL_STATUS_SAMPLES)]
        r["status_one_s"] = {"median": median(one), "max": max(one)}
        r["status_all_s"] = {"median": median([t for t, _ in full]), "max": max(t for t, _ in full),
                             "bytes": full[0][1]}
        moved = {}
        plan = [(k + 1) * n // (reloads + 1) for k in range(reloads)] + [None]
        r["reloads"] = [reload_one(ctx, td, conf, ssh_config, echo, ports, c, gatetime, moved, idx) for idx in plan]
        for x in r["reloads"]:
            log(f"atscale N={n}: reload ({x['tunnel'] or 'no change'}): {x['reply_s']:.2f} s, "
                f"{x['changed_logged']} changed, {x['pids_changed']} ssh pids changed, {x['not_up_after']} not up")
        r["sup_hwm_kb"] = sample([td.pid])["hwm_kb"] or None
    finally:
        r["stop_s"] = td.stop(timeout=120)
        notify.close()
    if not sshd.wait_sessions_gone(60):
        log("atscale: sshd sessions still open 60 s after tunneld stopped")
    return r


def autossh_argvs(ssh_config, ports, echo, c):
    """One autossh per connection: its ssh with that connection's forwards, the options
    tunneld gives ssh (a user's autossh line would be the same, less the -o)."""
    argvs = []
    for k in range(c):
        a = ["-N", "-T", "-F", ssh_config, "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
             "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=3", "-o", "ConnectTimeout=15"]
        for i in range(k, len(ports), c):
            a += ["-L", f"127.0.0.1:{ports[i]}:127.0.0.1:{echo.port}"]
        argvs.append(a + ["--", f"conn{k}"])
    return argvs


def run_autossh(ctx, env, n, c, ports):
    sshd, echo = env["sshd"], env["echo"]
    ssh_config = ctx.path(f"atscale-{n}.ssh_config")
    argvs = autossh_argvs(ssh_config, ports, echo, c)
    mem0 = mem_available_kb()
    log0 = os.path.getsize(sshd.log)
    fleet = AutosshFleet(argvs, ctx.tmp)
    r = {"who": "autossh", "n": n, "c": c}
    try:
        r["launch_s"], t0 = fleet.start()
        r.update(probe_all(ports, t0, n, PROBES_IN_FLIGHT))
        r["sshd_logins"] = sshd_log_counts(sshd.log, log0)["accepted"]
        sup, kids = sample(fleet.pids()), sample(fleet.ssh_pids())
        r.update({"sup_n": sup["n"], "sup_rss_kb": sup["rss_kb"], "sup_pss_kb": sup["pss_kb"],
                  "sup_uss_kb": sup["uss_kb"], "sup_run_s": sup["run_s"], "ssh_n": kids["n"],
                  "ssh_rss_kb": kids["rss_kb"], "ssh_pss_kb": kids["pss_kb"], "ssh_uss_kb": kids["uss_kb"],
                  "ssh_run_s": kids["run_s"], "sys_mem_used_kb": mem0 - mem_available_kb()})
        log(f"atscale autossh N={n} ({c} processes): all up {r['all_up_s']} s")
        # one forward changed: autossh has no reload, its process (and every forward of that
        # connection) is restarted with the new command line
        k = 0
        m = fleet.members[k]
        new_port = ctx.ports.one()
        old = next(i for i in range(k, n, c))
        args = [x if x != f"127.0.0.1:{ports[old]}:127.0.0.1:{echo.port}" else
                f"127.0.0.1:{new_port}:127.0.0.1:{echo.port}" for x in m.ssh_args]
        others = {j: fleet.members[j].ssh_pids() for j in range(1, c)}
        t1 = now()
        m.stop(timeout=10)
        m.ssh_args = args
        m.start()
        mine = [ports[i] for i in range(k, n, c) if i != old] + [new_port]
        done = probe_all(mine, t1, len(mine), PROBES_IN_FLIGHT)
        r["restart_one"] = {"tunnels_interrupted": len(mine), "all_back_s": done["all_up_s"],
                            "others_pids_changed": sum(1 for j in range(1, c)
                                                       if fleet.members[j].ssh_pids() != others[j])}
    finally:
        r["stop_s"] = fleet.stop(timeout=120)
    if not sshd.wait_sessions_gone(60):
        log("atscale: sshd sessions still open 60 s after autossh stopped")
    return r


def run(ctx, env, sizes, gatetime, reloads):
    out = {"sizes": sizes, "gatetime": gatetime, "runs": [], "probes_in_flight": PROBES_IN_FLIGHT}
    ports_all = ctx.ports.get(max(n for n, _ in sizes))      # one reservation socket per port, once
    for n, c in sizes:
        if n % c:
            raise BenchError(f"atscale: {n} tunnels do not spread evenly over {c} connections")
        ports = ports_all[:n]
        out["runs"].append(run_tunneld(ctx, env, n, c, ports, gatetime, reloads))
        out["runs"].append(run_autossh(ctx, env, n, c, ports))
    return out
