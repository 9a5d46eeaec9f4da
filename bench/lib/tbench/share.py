"""7. Shared connections: N tunnels over D destinations (D sshds), tunneld with
`share_connection = true` (one connection, one ssh, per destination) against tunneld unshared
(one per tunnel, the default) and N `autossh -M 0` processes, one after the other: memory, startup, handshakes,
idle and per-connection wakeups, recovery after `kill -9` of the ssh(s) of one destination,
and a silent blackhole of another destination while the rest are probed."""
import os
import signal
import time

from .fixtures import AutosshFleet, EchoServer, Keys, Sshd, Tunneld, ssh_argvs, write_tunneld_conf
from .outage import shared_test_host
from .probe import MultiProber
from .scale import idle_window, open_fds, probe_all, sshd_log_counts, traffic_window
from .util import (BenchError, NetlinkCounter, alive, log, mem_available_kb, median, now, sample,
                   tcp_ext)

KILL_DEADLINE = 120         # s: every tunnel of the killed destination must echo again by then
ROUND_EVERY = 2.0           # s: a probe round over the other destinations' forwards during the blackhole
ROUND_TIMEOUT = 3.0         # s: a forward that does not echo within this in a round counts as down
SETTLE_S = 5.0              # s: the startup-only run samples memory again this long after all up
MEM_PER_SSH_KB = 3400       # scale's N = 1000 run: 3.3 GB MemAvailable drop for 1000 ssh + sshd sessions


def names(n):
    return [f"t{i:04d}" for i in range(n)]


class Dest:
    """One destination: its own keys and known_hosts, its own sshd; the forwards go to an echo
    server next to that sshd (the loopback one, or one inside the test host)."""

    def __init__(self, ctx, k, host, loop_echo):
        self.k = k
        self.keys = Keys(ctx, f"share-keys-{k}")
        self.netns = host.ns if host else None
        self.addr = host.there if host else "127.0.0.1"
        self.sshd = Sshd(ctx, self.keys, self.addr, ctx.ports.one(), netns=self.netns,
                         name=f"sshd-share-{k}").start()
        if host:
            self.echo = EchoServer(ctx, "127.0.0.1", ctx.ports.one(), netns=host.ns, name=f"echo-share-{k}").start()
        else:
            self.echo = loop_echo

    def log_size(self):
        return os.path.getsize(self.sshd.log)


def dest_of(i, d):
    return i % d


def write_conf(path, ctl, dests, ports, share, gatetime, alive_iv, alive_cnt, ssh_config_file="none"):
    """ssh_config_file "none" (ssh -F none); run_startup_only() names a file instead. tunneld
    asks `ssh -G` once per distinct ssh configuration (D here) either way (see README)."""
    d = len(dests)
    g = {"control_socket": ctl, "log_level": "info", "max_parallel_starts": max(8, len(ports))}
    defaults = {"user": "root", "ssh_config_file": ssh_config_file, "gatetime": gatetime,
                "server_alive_interval": alive_iv, "server_alive_count_max": alive_cnt,
                "share_connection": share}
    tunnels = []
    for i, (name, p) in enumerate(zip(names(len(ports)), ports)):
        x = dests[dest_of(i, d)]
        tunnels.append({"name": name, "host": x.addr, "port": x.sshd.port, "identity_file": x.keys.client_key,
                        "ssh_options": [f"UserKnownHostsFile={x.keys.known_hosts}", "StrictHostKeyChecking=yes"],
                        "local_forwards": [f"127.0.0.1:{p}:127.0.0.1:{x.echo.port}"]})
    write_tunneld_conf(path, g, defaults, tunnels)


# ---- the contenders: one interface over a tunneld and over an autossh fleet ----------------

class TunneldContender:
    def __init__(self, ctx, who, conf, ctl):
        self.who = who
        self.td = Tunneld(ctx, conf, ctl, name=f"tunneld-{who}")

    def start(self):
        t0 = now()
        self.td.start()
        return t0

    def sup_pids(self):
        return [self.td.pid]

    def ssh_pids(self):
        return self.td.ssh_pids()

    def pid_by_index(self):
        """{tunnel index: its ssh pid (the shared one under share_connection)} from status."""
        return {int(t["name"][1:]): t.get("pid") for t in self.td.status()["tunnels"]}

    def status_summary(self):
        st = self.td.status()["tunnels"]
        states, fwd, conns, fails, starts = {}, {}, set(), {}, 0
        for t in st:
            states[t["state"]] = states.get(t["state"], 0) + 1
            for f in t.get("forward_states") or []:
                fwd[f["state"]] = fwd.get(f["state"], 0) + 1
            if t.get("connection"):
                conns.add(t["connection"])
            for k, v in (t.get("failures") or {}).items():
                fails[k] = fails.get(k, 0) + v
            starts += t.get("starts", 0)
        return {"states": states, "forward_states": fwd, "connections": len(conns), "failures": fails,
                "starts_total": starts, "distinct_pids": len({t.get("pid") for t in st if t.get("pid")})}

    def log_path(self):
        return self.td.log

    def hwm_kb(self):
        return sample([self.td.pid])["hwm_kb"] or None

    def stop(self):
        return self.td.stop(timeout=60)


class AutosshContender:
    who = "autossh"

    def __init__(self, ctx, argvs):
        self.fleet = AutosshFleet(argvs, ctx.tmp)

    def start(self):
        self.launch_s, t0 = self.fleet.start()
        return t0

    def sup_pids(self):
        return self.fleet.pids()

    def ssh_pids(self):
        return self.fleet.ssh_pids()

    def pid_by_index(self):
        out = {}
        for i, m in enumerate(self.fleet.members):
            p = [c for c in m.ssh_pids() if _comm(c) == "ssh"] if m.proc else []
            out[i] = p[0] if p else None
        return out

    def status_summary(self):
        return None

    def log_path(self):
        return None

    def hwm_kb(self):
        return None

    def stop(self):
        return self.fleet.stop(timeout=60)


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return " ".join(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
    except OSError:
        return None


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


# ---- measurements ---------------------------------------------------------------------------

def _sshd_counts(dests, offsets):
    """Accepted logins and pre-auth ends per destination since the offsets."""
    return [sshd_log_counts(x.sshd.log, o) for x, o in zip(dests, offsets)]


def _sshd_cpu(dests):
    return sum(sample([x.sshd.proc.pid])["run_s"] + sample(x.sshd.sessions())["run_s"] for x in dests)


def _probe_round(ports, timeout):
    """One echo attempt per forward (no retry); the ports that did not echo within timeout."""
    pr = MultiProber([("127.0.0.1", p) for p in ports], interval=timeout + 10, attempt_timeout=timeout)
    done = pr.run(now() + timeout + 0.3)
    return [p for p in ports if done[("127.0.0.1", p)] is None]


def _wait_dead(pids, timeout=10):
    end = now() + timeout
    while now() < end and any(alive(p) for p in pids):
        time.sleep(0.002)
    return not any(alive(p) for p in pids)


def _recover(ports, t_ref, deadline):
    """Times (s after t_ref) at which each port echoed again; None for those that did not."""
    pr = MultiProber([("127.0.0.1", p) for p in ports], interval=0.05, attempt_timeout=10.0,
                     max_outstanding=4, listen_filter=True, filter_interval=0.02)
    done = pr.run(deadline)
    return [None if done[("127.0.0.1", p)] is None else done[("127.0.0.1", p)] - t_ref for p in ports]


def _summary(times):
    v = [t for t in times if t is not None]
    return {"n": len(times), "n_back": len(v), "all_s": max(v) if len(v) == len(times) else None,
            "median_s": median(v), "first_s": min(v) if v else None}


def _kill_one_destination(c, dests, ports, k):
    """kill -9 of every ssh carrying destination k's tunnels (the one shared ssh, or one per
    tunnel); time until each of its tunnels echoes again; the others' ssh pids compared."""
    d = len(dests)
    mine = [i for i in range(len(ports)) if dest_of(i, d) == k]
    before = c.pid_by_index()
    victims = sorted({before[i] for i in mine if before.get(i)})
    if not victims:
        raise BenchError(f"share {c.who}: no ssh pid for destination {k}")
    o = [x.log_size() for x in dests]
    t_k = now()
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    if not _wait_dead(victims):
        raise BenchError(f"share {c.who}: the killed ssh processes did not die")
    times = _recover([ports[i] for i in mine], t_k, t_k + KILL_DEADLINE)
    r = {"dest": k, "killed": len(victims), "tunnels": len(mine)}
    r.update(_summary(times))
    time.sleep(0.3)
    after = c.pid_by_index()
    others = [i for i in range(len(ports)) if dest_of(i, d) != k]
    r["others_pids_changed"] = sum(1 for i in others if after.get(i) != before.get(i))
    r["mine_on_new_pid"] = sum(1 for i in mine if after.get(i) and after.get(i) not in victims)
    r["others_failed_echo_after"] = len(_probe_round([ports[i] for i in others], ROUND_TIMEOUT))
    r["sshd_accepted"] = sum(x["accepted"] for x in _sshd_counts(dests, o))
    log(f"share {c.who}: kill -9 of {len(victims)} ssh (destination {k}): all {len(mine)} back after "
        f"{r['all_s']} s; other destinations: {r['others_pids_changed']} ssh pids changed")
    return r


def _blackhole(c, dests, ports, host, outage_s, max_wait):
    """Blackhole destination 0 (the test host) for outage_s; probe the other destinations'
    forwards in rounds meanwhile; after the restore, time until each of destination 0's
    tunnels echoes again."""
    d = len(dests)
    mine = [i for i in range(len(ports)) if dest_of(i, d) == 0]
    others = [i for i in range(len(ports)) if dest_of(i, d) != 0]
    oports = [ports[i] for i in others]
    failed = _probe_round([ports[i] for i in mine], ROUND_TIMEOUT)
    if failed:
        raise BenchError(f"share {c.who}: {len(failed)} of destination 0's forwards do not echo before the outage")
    before = c.pid_by_index()
    o = [x.log_size() for x in dests]
    rounds = []
    t_b = now()
    host.blackhole()
    log(f"share {c.who}: blackhole of destination 0 ({host.there}) for {outage_s:.0f} s")
    try:
        while now() < t_b + outage_s:
            t = now()
            down = _probe_round(oports, ROUND_TIMEOUT)
            rounds.append({"t": t - t_b, "took": now() - t, "down": len(down), "of": len(oports)})
            time.sleep(max(0.0, min(t + ROUND_EVERY, t_b + outage_s) - now()))
        st = c.status_summary()
        t_r = now()
    finally:
        host.restore()
    mid = c.pid_by_index()
    times = _recover([ports[i] for i in mine], t_r, t_r + max_wait)
    r = {"blackhole_s": t_r - t_b, "tunnels": len(mine), "rounds": rounds,
         "others_down_max": max((x["down"] for x in rounds), default=None),
         "others_down_total": sum(x["down"] for x in rounds), "others_probed": len(oports),
         "mine_pid_changed_during": sum(1 for i in mine if mid.get(i) != before.get(i)),
         "states_at_restore": st["states"] if st else None}
    r.update(_summary(times))
    time.sleep(0.3)
    after = c.pid_by_index()
    r["others_pids_changed"] = sum(1 for i in others if after.get(i) != before.get(i))
    r["others_failed_echo_after"] = len(_probe_round(oports, ROUND_TIMEOUT))
    cnt = _sshd_counts(dests, o)
    r["sshd_accepted_dest0"] = cnt[0]["accepted"]
    r["sshd_accepted_others"] = sum(x["accepted"] for x in cnt[1:])
    log(f"share {c.who}: after the restore all {len(mine)} back after {r['all_s']} s; other destinations "
        f"down at most {r['others_down_max']} of {len(oports)} per round, {r['others_pids_changed']} ssh pids changed")
    return r


def run_contender(c, dests, ports, host, gatetime, idle_s, conns, outage_s, max_wait):
    n = len(ports)
    d = len(dests)
    mem0 = mem_available_kb()
    o = [x.log_size() for x in dests]
    cpu0 = _sshd_cpu(dests)
    lo0 = tcp_ext("ListenOverflows", "ListenDrops")
    r = {"who": c.who, "n": n, "dests": d}
    try:
        t0 = c.start()
        if hasattr(c, "launch_s"):
            r["launch_s"] = c.launch_s
        r.update(probe_all(ports, t0, n))
        lo1 = tcp_ext("ListenOverflows", "ListenDrops")
        r["listen_overflows"] = {k: lo1[k] - lo0[k] for k in lo0}
        cnt = _sshd_counts(dests, o)
        r["sshd_accepted"] = sum(x["accepted"] for x in cnt)
        r["sshd_preauth"] = sum(x["preauth"] for x in cnt)
        r["sshd_run_s"] = _sshd_cpu(dests) - cpu0
        sup, kids = sample(c.sup_pids()), sample(c.ssh_pids())
        r.update({"sup_n": sup["n"], "sup_rss_kb": sup["rss_kb"], "sup_pss_kb": sup["pss_kb"],
                  "sup_uss_kb": sup["uss_kb"], "sup_run_s": sup["run_s"], "ssh_n": kids["n"],
                  "ssh_rss_kb": kids["rss_kb"], "ssh_pss_kb": kids["pss_kb"], "ssh_uss_kb": kids["uss_kb"],
                  "ssh_run_s": kids["run_s"], "sys_mem_used_kb": mem0 - mem_available_kb()})
        if c.who != "autossh":
            r["sup_fds"] = open_fds(c.sup_pids()[0])[0]
        r["ssh_argv_example"] = _cmdline(max(c.ssh_pids(), default=0))
        r["status"] = c.status_summary()
        if r["all_up_s"] is None:
            log(f"share {c.who}: only {r['n_up']} of {n} forwards echoed")
        log(f"share {c.who}: all up after {r['all_up_s']} s; PSS sup+ssh "
            f"{(r['sup_pss_kb'] + r['ssh_pss_kb']) / 1024:.1f} MB, {r['ssh_n']} ssh, "
            f"{r['sshd_accepted']} logins")
        # the one-shot gatetime timers fire first, then the idle window and the traffic
        nl = NetlinkCounter()
        time.sleep(max(0.0, t0 + (r["all_up_s"] or 0) + gatetime + 0.5 - now(), 1.0))
        pids_before = set(c.ssh_pids())
        r["idle"] = idle_window(c.sup_pids(), list(pids_before), idle_s, c.log_path(), nl)
        nl.stop()
        r["idle"]["ssh_pids_unchanged"] = pids_before == set(c.ssh_pids())
        # memory once settled: ssh frees what the first echo through each forward took
        sup, kids = sample(c.sup_pids()), sample(c.ssh_pids())
        r["settled"] = {"after_up_s": now() - t0 - (r["all_up_s"] or 0), "sup_pss_kb": sup["pss_kb"],
                        "sup_uss_kb": sup["uss_kb"], "sup_rss_kb": sup["rss_kb"], "ssh_pss_kb": kids["pss_kb"],
                        "ssh_uss_kb": kids["uss_kb"], "ssh_rss_kb": kids["rss_kb"], "ssh_n": kids["n"]}
        # connections through forwards of every destination (round robin over the first 2·D ports)
        r["traffic"] = traffic_window(c.sup_pids(), c.ssh_pids(), ports[:min(n, 2 * d)], conns)
        r["kill"] = _kill_one_destination(c, dests, ports, d - 1)
        # destination d − 1's tunnels run again; destination 0's ran since the start
        r["outage"] = _blackhole(c, dests, ports, host, outage_s, max_wait)
        r["sup_hwm_kb"] = c.hwm_kb()
        if c.who != "autossh":
            r["status_end"] = c.status_summary()
    finally:
        r["stop_s"] = c.stop()
    for x in dests:
        if not x.sshd.wait_sessions_gone(60):
            log(f"share: {x.sshd.name} sessions still open 60 s after the tunnels stopped")
    return r


def run(ctx, env, n, d, idle_s, gatetime, conns, outage_s, alive_iv, alive_cnt, max_wait):
    if d < 2:
        raise BenchError("share: needs at least 2 destinations (one is killed, one blackholed)")
    if n < d:
        raise BenchError(f"share: {n} tunnels over {d} destinations")
    host = shared_test_host(env)
    dests = [Dest(ctx, k, host if k == 0 else None, env["echo"]) for k in range(d)]
    ports = ctx.ports.get(n)
    out = {"n": n, "dests": d, "gatetime": gatetime, "idle_s": idle_s, "conns": conns, "outage_s": outage_s,
           "server_alive": f"{alive_iv} s x {alive_cnt}", "max_parallel_starts": max(8, n),
           "test_host": f"{host.here} (here) / {host.there} (test host {host.ns})",
           "killed_dest": d - 1, "blackholed_dest": 0, "runs": [], "skipped": []}
    for who, share in (("tunneld-shared", True), ("tunneld-unshared", False)):
        conf, ctl = ctx.path(f"share-{who}.conf"), ctx.path(f"share-{who}.ctl")
        write_conf(conf, ctl, dests, ports, share, gatetime, alive_iv, alive_cnt)
        if not share:
            need = n * MEM_PER_SSH_KB * 1.3 + 1024 * 1024
            if mem_available_kb() < need:
                log(f"share: {who} skipped: needs about {need / 1024:.0f} MB, {mem_available_kb() / 1024:.0f} MB available")
                out["skipped"].append(who)
                continue
        if share:
            out["check"] = [ln for ln in
                            ssh_argvs_text(ctx, conf) if ln.startswith("shared connection")][:3]
        out["runs"].append(run_contender(TunneldContender(ctx, who, conf, ctl), dests, ports, host, gatetime,
                                         idle_s, conns, outage_s, max_wait))
    conf = ctx.path("share-tunneld-unshared.conf")
    amap = ssh_argvs(ctx, conf)
    argvs = [amap[name][1:] for name in names(n)]
    out["autossh_argv_example"] = " ".join(argvs[-1])
    need = n * MEM_PER_SSH_KB * 1.3 + 1024 * 1024
    if mem_available_kb() < need:
        log(f"share: autossh skipped: needs about {need / 1024:.0f} MB, {mem_available_kb() / 1024:.0f} MB available")
        out["skipped"].append("autossh")
    else:
        out["runs"].append(run_contender(AutosshContender(ctx, argvs), dests, ports, host, gatetime, idle_s, conns,
                                         outage_s, max_wait))
    # the same shared tunnels with an ssh config file named (as the other benchmarks do): when
    # this was written tunneld then asked `ssh -G` once per tunnel, now once per connection
    conf, ctl = ctx.path("share-tunneld-shared-F.conf"), ctx.path("share-tunneld-shared-F.ctl")
    write_conf(conf, ctl, dests, ports, True, gatetime, alive_iv, alive_cnt, ssh_config_file="/dev/null")
    out["check_s"] = {"none": check_seconds(ctx, ctx.path("share-tunneld-shared.conf")),
                      "/dev/null": check_seconds(ctx, conf)}
    out["config_file_run"] = run_startup_only(ctx, "tunneld-shared-F", conf, ctl, dests, ports)
    for x in dests:
        if x.netns:
            x.echo.stop()
        x.sshd.stop()
    return out


def run_startup_only(ctx, who, conf, ctl, dests, ports):
    """Startup of one more tunneld configuration: until every forward echoed, then stopped."""
    n = len(ports)
    td = Tunneld(ctx, conf, ctl, name=f"tunneld-{who}")
    o = [x.log_size() for x in dests]
    t0 = now()
    td.start()
    try:
        r = {"who": who, "n": n}
        r.update(probe_all(ports, t0, n))
        sup, kids = sample([td.pid]), sample(td.ssh_pids())
        r.update({"sup_pss_kb": sup["pss_kb"], "ssh_pss_kb": kids["pss_kb"], "ssh_n": kids["n"],
                  "sup_run_s": sup["run_s"]})
        time.sleep(SETTLE_S)
        sup, kids = sample([td.pid]), sample(td.ssh_pids())
        r["settled_pss_kb"] = sup["pss_kb"] + kids["pss_kb"]
        r["sshd_accepted"] = sum(x["accepted"] for x in _sshd_counts(dests, o))
    finally:
        r["stop_s"] = td.stop(timeout=60)
    for x in dests:
        x.sshd.wait_sessions_gone(60)
    log(f"share {who}: all up after {r['all_up_s']} s")
    return r


def check_seconds(ctx, conf):
    """How long `tunneld -t` takes to load and check the configuration (it asks `ssh -G`)."""
    from .util import run as sh
    t0 = now()
    sh([ctx.tunneld, "-t", "-c", conf], timeout=120)
    return now() - t0


def ssh_argvs_text(ctx, conf):
    from .util import run as sh
    return sh([ctx.tunneld, "-t", "-c", conf]).stdout.splitlines()
