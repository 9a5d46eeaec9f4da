"""9. Following the network (issue 24): tunneld against `autossh -M 0` with the same
ServerAlive (30 s × 3 by default, tunneld's own defaults), through a test host reachable by
two paths (tests/lib/netns.py's TwoPathHost):

  (a) the path moves: the local address of the path in use is removed and the server is
      routed by the other path (a laptop moving from Wi-Fi to Ethernet): time until bytes
      flow through each tunnel again;
  (b) a busy tunnel (a client sending a line every 100 ms) under a silent blackhole of both
      paths for --network-blackhole seconds: time until the supervisor notices (tunneld: the
      tunnel is no longer `up`; autossh: its ssh exited), and time from the path's return
      until bytes flow again;
  (c) an idle tunnel under a silent blackhole: time until the supervisor notices (bounded),
      then time from the return until bytes flow again.

Both contenders run at the same time through the same faults, as in the outage benchmark."""
import os
import threading
import time

from .fixtures import (Autossh, EchoServer, Sshd, Tunneld, ssh_commands, standalone_argv, tunnel_defaults,
                       write_tunneld_conf)
from .probe import MultiProber, wait_echo
from .util import BenchError, alive, import_test_lib, log, now, on_cleanup, run_cleanup, spawn, stop_process

NAME = "net"                # tunneld's tunnel
POLL = 0.1                  # s: how often the watch asks tunneld for its state and looks at autossh's ssh
UP_DEADLINE = 60            # s: both tunnels must echo before each scenario
IDLE_QUIET = 3.0            # s: no traffic before the idle blackhole (the last echo's close acknowledged)
CLIENT_EVERY = 0.1          # s: the busy tunnel's client sends a line this often
SETTLE = 1.0                # s: after putting an address back, before the next move (netlink quiet)


def import_netns():
    """tests/lib/netns.py (and the tunneltest harness it stands on: standard library only)."""
    netns = import_test_lib("netns", "network")
    why = netns.available()
    if why:
        raise BenchError(f"network: no test hosts here: {why}")
    return netns


class Watch(threading.Thread):
    """Every POLL seconds: tunneld's state and ssh pid for the tunnel (tunnelctl --json status),
    and autossh's ssh children; each change is recorded with its time since t_ref."""

    def __init__(self, td, a, t_ref):
        super().__init__(daemon=True)
        self.td, self.a, self.t_ref = td, a, t_ref
        self.td_events, self.au_events = [], []
        self.stop_flag = False

    def run(self):
        last_td = last_au = None
        while not self.stop_flag:
            try:
                t = next(x for x in self.td.status()["tunnels"] if x["name"] == NAME)
                cur = (t.get("state"), t.get("pid"))
                if cur != last_td:
                    self.td_events.append([round(now() - self.t_ref, 2), cur[0], cur[1]])
                    last_td = cur
            except Exception:  # noqa: BLE001 - a failed poll is retried at the next one
                pass
            try:
                pids = sorted(p for p in self.a.ssh_pids() if _comm(p) == "ssh")
                if pids != last_au:
                    self.au_events.append([round(now() - self.t_ref, 2), pids])
                    last_au = pids
            except Exception:  # noqa: BLE001
                pass
            time.sleep(POLL)

    def stop(self):
        self.stop_flag = True
        self.join(10)

    def td_not_up(self):
        """Seconds since t_ref until tunneld first said the tunnel was not up, or None."""
        return next((t for t, state, _ in self.td_events if state != "up"), None)

    def au_gone(self, pid):
        """Seconds since t_ref until autossh's ssh `pid` was first seen gone, or None."""
        return next((t for t, pids in self.au_events if pid not in pids), None)


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _log_offset(td):
    try:
        return os.path.getsize(td.log)
    except OSError:
        return 0


def _log_since(td, off, n=8):
    """tunneld's own lines (not ssh's) written since byte offset off: the first n."""
    try:
        with open(td.log, "rb") as f:
            f.seek(off)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if "ssh:" not in ln][:n]


def _td_tunnel(td):
    return next(x for x in td.status()["tunnels"] if x["name"] == NAME)


def _local_addr(td):
    """The local address of tunneld's ssh connection to the server (status --json 'path')."""
    try:
        p = _td_tunnel(td).get("path") or {}
        return (p.get("local") or "").rsplit(":", 1)[0] or None
    except (BenchError, StopIteration, OSError):
        return None


def _both_up(td, ports, why):
    for who, port in ports.items():
        if wait_echo("127.0.0.1", port, now() + UP_DEADLINE) is None:
            raise BenchError(f"network: {who} does not echo {why} (within {UP_DEADLINE} s); see {td.log}")
    end = now() + UP_DEADLINE       # the echo can beat tunneld reading the forward's answer
    while now() < end:
        try:
            if _td_tunnel(td).get("state") == "up":
                return
        except (BenchError, StopIteration, OSError):
            pass
        time.sleep(0.05)
    raise BenchError(f"network: tunneld's tunnel not up {why}; see {td.log}")


def _back(ports, t_ref, deadline):
    """Seconds after t_ref until a new connection through each forward echoes (None: not by
    deadline). An attempt through a dead ssh never answers: it is abandoned after 1 s while
    new ones start every 50 ms, so the resolution stays 50 ms."""
    pr = MultiProber([("127.0.0.1", p) for p in ports.values()], interval=0.05, attempt_timeout=1.0,
                     max_outstanding=20)
    done = pr.run(deadline)
    return {who: None if done[("127.0.0.1", p)] is None else done[("127.0.0.1", p)] - t_ref
            for who, p in ports.items()}


def _floor(ctx, argv, port, deadline_s):
    """A fresh standalone ssh over the path as it is now: spawn to first echo (one handshake)."""
    t0 = now()
    p = spawn(argv, log_path=ctx.path("network-floor-ssh.log"))
    tok = on_cleanup("network floor ssh", lambda: stop_process(p, timeout=5))
    try:
        t = wait_echo("127.0.0.1", port, t0 + deadline_s)
    finally:
        run_cleanup(tok)
    return None if t is None else t - t0


def moved(ctx, host, td, a, ports, floor_argv, p_f, to, max_wait):
    """(a) The path moves to `to`: its old local address removed, the server routed by `to`."""
    frm = host.current
    r = {"from": frm, "to": to, "tunneld_local_before": _local_addr(td)}
    ssh_a = a.ssh_pid()
    off = _log_offset(td)
    t0 = now()
    w = Watch(td, a, t0)
    w.start()
    try:
        host.move(to)
        r["back_s"] = _back(ports, t0, t0 + max_wait)
    finally:
        w.stop()
    r["autossh_ssh_exited_s"] = w.au_gone(ssh_a)
    r["tunneld_events"], r["autossh_events"] = w.td_events, w.au_events
    r["tunneld_local_after"] = _local_addr(td)
    r["tunneld_log"] = _log_since(td, off)
    r["floor_s"] = _floor(ctx, floor_argv, p_f, 60)
    log(f"network (a) path {frm} → {to}: bytes flow again after {r['back_s']}; a fresh ssh over {to}: "
        f"{r['floor_s']} s")
    return r


def busy(netns, host, td, a, ports, blackhole_s, max_wait):
    """(b) A client every 100 ms through each tunnel; both paths blackholed for blackhole_s."""
    clients = {}
    tok = on_cleanup("network clients", lambda: [c.close() for c in clients.values()])
    r = {}
    try:
        for who, port in ports.items():
            c = netns.SteadyClient(port, b"", interval=CLIENT_EVERY)     # the bench's echo adds no tag
            c.start()
            clients[who] = c
        end = now() + 10
        while now() < end and not all(c.replies for c in clients.values()):
            time.sleep(0.05)
        if not all(c.replies for c in clients.values()):
            raise BenchError("network (b): a busy client got no echo before the blackhole")
        pid_t = _td_tunnel(td).get("pid")
        ssh_a = a.ssh_pid()
        off = _log_offset(td)
        t0 = now()
        w = Watch(td, a, t0)
        w.start()
        try:
            host.blackhole()
            log(f"network (b): busy tunnels, both paths blackholed for {blackhole_s:.0f} s")
            time.sleep(max(0.0, t0 + blackhole_s - now()))
            t_r = now()
            host.unblackhole()
            r["back_s"] = _back(ports, t_r, t_r + max_wait)
        finally:
            host.unblackhole()
            w.stop()
        r["blackhole_s"] = t_r - t0
        nt, na = w.td_not_up(), w.au_gone(ssh_a)
        r["noticed_s"] = {"tunneld": nt if nt is not None and nt <= r["blackhole_s"] else None,
                          "autossh": na if na is not None and na <= r["blackhole_s"] else None}
        r["noticed_later_s"] = {"tunneld": nt, "autossh": na}
        r["tunneld_pid_before"] = pid_t
        r["tunneld_log"] = _log_since(td, off)
        r["tunneld_events"], r["autossh_events"] = w.td_events, w.au_events
        r["client"] = {}
        for who, c in clients.items():
            after = c.replies_since(t_r)
            r["client"][who] = {"error": c.error, "lines_sent": len(c.sent), "echoes": len(c.replies),
                                "resumed_s": after[0] - t_r if after else None}
    finally:
        run_cleanup(tok)
    log(f"network (b): noticed after {r['noticed_s']}; after the return, bytes flow again after {r['back_s']}")
    return r


def idle(host, td, a, ports, notice_bound, max_wait):
    """(c) No traffic; both paths blackholed until both supervisors noticed (or notice_bound s)."""
    time.sleep(IDLE_QUIET)
    ssh_a = a.ssh_pid()
    off = _log_offset(td)
    t0 = now()
    w = Watch(td, a, t0)
    w.start()
    r = {}
    try:
        host.blackhole()
        log(f"network (c): idle tunnels, both paths blackholed until both supervisors notice "
            f"(at most {notice_bound:.0f} s)")
        while now() < t0 + notice_bound and (w.td_not_up() is None or w.au_gone(ssh_a) is None):
            time.sleep(0.2)
        t_r = now()
        host.unblackhole()
        r["back_s"] = _back(ports, t_r, t_r + max_wait)
    finally:
        host.unblackhole()
        w.stop()
    r["blackhole_s"] = t_r - t0
    r["noticed_s"] = {"tunneld": w.td_not_up(), "autossh": w.au_gone(ssh_a)}
    for k, v in r["noticed_s"].items():
        if v is not None and v > r["blackhole_s"]:
            r["noticed_s"][k] = None
    r["tunneld_events"], r["autossh_events"] = w.td_events, w.au_events
    r["tunneld_log"] = _log_since(td, off)
    log(f"network (c): noticed after {r['noticed_s']} (blackhole {r['blackhole_s']:.0f} s); bytes flow again "
        f"{r['back_s']} after the return")
    return r


def run(ctx, env, reps, blackhole_s, alive_iv, alive_cnt):
    netns = import_netns()
    keys = env["keys"]
    host = netns.TwoPathHost()
    host_tok = on_cleanup("network test host", host.close)
    host.start()
    sshd = Sshd(ctx, keys, host.remote_addr, ctx.ports.one(), netns=host.ns, name="sshd-net").start()
    echo = EchoServer(ctx, "127.0.0.1", ctx.ports.one(), netns=host.ns, name="echo-net").start()
    p_t, p_a, p_f = ctx.ports.get(3)
    fwd = "127.0.0.1:{}:127.0.0.1:" + str(echo.port)
    conf, ctl = ctx.path("network.conf"), ctx.path("network.ctl")
    alive_opts = {} if (alive_iv, alive_cnt) == (30, 3) else \
        {"server_alive_interval": alive_iv, "server_alive_count_max": alive_cnt}
    write_tunneld_conf(conf, {"control_socket": ctl, "log_level": "info"},
                       tunnel_defaults(keys, host.remote_addr, sshd.port, **alive_opts),
                       [{"name": NAME, "local_forwards": [fwd.format(p_t)]},
                        {"name": "autossh", "local_forwards": [fwd.format(p_a)], "enabled": False},
                        {"name": "floor", "local_forwards": [fwd.format(p_f)], "enabled": False}])
    cmds = ssh_commands(ctx, conf)
    au_args = standalone_argv(cmds["autossh"]["argv"], cmds["autossh"]["forwards"])[1:]
    floor_argv = standalone_argv(cmds["floor"]["argv"], cmds["floor"]["forwards"])
    max_wait = alive_iv * (alive_cnt + 1) + 60.0         # ServerAlive gives up, then one handshake
    notice_bound = alive_iv * (alive_cnt + 2) + 30.0
    res = {"reps_n": reps, "blackhole_s": blackhole_s, "alive_interval": alive_iv, "alive_count": alive_cnt,
           "server_alive": f"{alive_iv} s x {alive_cnt}", "max_wait_s": max_wait, "notice_bound_s": notice_bound,
           "paths": {k: f"{p.outside} {p.local_addr} → {p.gateway}" for k, p in host.paths.items()},
           "server": f"{host.remote_addr} (test host {host.ns})",
           "tunneld_ssh_argv": " ".join(cmds[NAME]["argv"]), "autossh_args": " ".join(au_args), "reps": []}
    td = Tunneld(ctx, conf, ctl, name="tunneld-network").start()
    a = Autossh(au_args, ctx.path("autossh-network.log"))
    tok = on_cleanup("network autossh", a.stop)
    a.start()
    ports = {"tunneld": p_t, "autossh": p_a}
    try:
        td.wait_ctl()
        _both_up(td, ports, "at start")
        for rep in range(reps):
            r = {"rep": rep + 1}
            res["reps"].append(r)
            if host.paths[host.other()].local_addr not in _addresses(netns):
                host.add_address(host.other())      # the path moved away from it last time
                time.sleep(SETTLE)
            r["moved"] = moved(ctx, host, td, a, ports, floor_argv, p_f, host.other(), max_wait)
            _both_up(td, ports, "after the path moved")
            r["busy"] = busy(netns, host, td, a, ports, blackhole_s, max_wait)
            _both_up(td, ports, "after the busy blackhole")
            r["idle"] = idle(host, td, a, ports, notice_bound, max_wait)
            _both_up(td, ports, "after the idle blackhole")
    except BenchError as e:
        res["error"] = str(e)
        log(f"network: {e}")
    finally:
        try:
            with open(td.log, errors="replace") as f:
                res["tunneld_log"] = [ln for ln in f.read().splitlines() if "ssh:" not in ln][-20:]
        except OSError:
            pass
        td.stop()
        run_cleanup(tok)
        echo.stop()
        sshd.stop()
        run_cleanup(host_tok)
    return res


def _addresses(netns):
    """This side's IPv4 addresses."""
    return {w.split("/")[0] for line in netns.ip("-o", "-4", "addr", "show", check=False).stdout.splitlines()
            for w in line.split()[3:4]}
