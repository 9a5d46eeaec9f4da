"""10. A server that penalises failed logins (issue 25): tunneld against `autossh -M 0`, one
after the other, against Debian 13's sshd 10.0 with its default PerSourcePenalties (5 s per
failed authentication, 1 s per connection that never authenticates; from 15 s accrued the
source address is refused for a while).

The scenario: 20 tunnels (`-L` to the echo server) with the key the server accepts and 10
whose key it refuses, all to the same server, the bad ones first (a start queue meets them
first, and the autossh fleet is released in that order). Two variants: the 10 on one
rejected key, and on 10 different rejected keys. Each contender gets a fresh sshd (its own
penalty table) per variant. Measured, per contender and variant:

  * the good tunnels up (a new connection through the forward echoes) 10 s and 30 s after
    start, and the time until all of them are (or "not within" the limit);
  * a blip: every ssh the contender runs is killed (SIGKILL), once each good tunnel that
    came up has been up for 31 s (tunneld's default gatetime is 30 s: an ssh killed earlier
    would be a failed start to tunneld; autossh runs with AUTOSSH_GATETIME=0); then the
    good tunnels back 5 s and 30 s later and the time until all are;
  * from the server's log: failed logins ("Failed publickey"), connections, penalties
    activated and connections dropped for a penalty.

The server is tests/lib/tunneltest's OpenSSH10Server(penalties=True), imported as is (as the
network benchmark imports tests/lib/netns.py): it runs sshd from the Debian 13 root that
scripts/deps --zoo-root makes once. Where that root cannot be made (no Debian archive
reachable), the benchmark is skipped, saying why, as tests/e2e/test_penalties.py is.
"""
import os
import re
import signal
import subprocess
import time
import unittest

from .fixtures import AutosshFleet, Tunneld, ssh_argvs, write_tunneld_conf
from .probe import MultiProber, echo_ok
from .util import BenchError, alive, descendants, import_test_lib, log, now, on_cleanup, run_cleanup
from .util import run as run_cmd

GOOD, BAD = 20, 10                  # the scenario; --quick: QUICK_GOOD, QUICK_BAD
QUICK_GOOD, QUICK_BAD = 6, 3
AT_START = (10.0, 30.0)             # s after start: how many good tunnels are up
AT_BLIP = (5.0, 30.0)               # s after the blip: how many are back; --quick (5, 10)
QUICK_AT_BLIP = (5.0, 10.0)
UP_LIMIT = 60.0                     # s: "all up" is looked for this long after start (--quick 30)
QUICK_UP_LIMIT = 30.0
BACK_LIMIT = 120.0                  # s: "all back" is looked for this long after the blip (--quick 30)
QUICK_BACK_LIMIT = 30.0
UPTIME_BEFORE_BLIP = 31.0           # s: each good tunnel that came up is up this long before the blip
PROBE_EVERY = 0.05                  # s: a new attempt through each forward this often (each given 1 s)
# What sshd logs when it refuses an address for a penalty, or starts to (the regexes of
# tests/e2e/test_penalties.py, which asserts on them).
PENALTY_DROP = re.compile(r"drop connection #\d+ from .*penalty", re.M)
PENALTY_ACTIVE = re.compile(r"(?:new \S+ \S+ active penalty|activating \S+ penalty)", re.M)
CONNECTION = re.compile(r"^Connection from \S+ port \d+", re.M)


def _tunneltest():
    """tests/lib/tunneltest (standard library only), for its OpenSSH10Server."""
    return import_test_lib("tunneltest", "penalties")


def _zoo(tt):
    """The Debian 13 root (made once by scripts/deps --zoo-root): None and the reason to skip
    when no Debian archive is reachable to make it; BenchError for any other failure."""
    try:
        z = tt.openssh10()
        return z, None
    except unittest.SkipTest as e:
        return None, str(e)
    except AssertionError as e:
        raise BenchError(f"penalties: {e}")


def _bad_keys(ctx, n):
    d = ctx.path("penalties-keys")
    os.makedirs(d, mode=0o700, exist_ok=True)
    out = []
    for i in range(n):
        path = os.path.join(d, f"bad{i}")
        run_cmd(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tbench-rejected", "-f", path])
        out.append(path)
    return out


def _server(tt):
    """A fresh sshd 10.0 with its default penalties (its own penalty table)."""
    server = tt.OpenSSH10Server(penalties=True)
    token = on_cleanup("penalties sshd", server.close)
    try:
        server.start()
    except AssertionError as e:
        run_cleanup(token)
        raise BenchError(f"penalties: sshd 10.0 did not start: {e}")
    return server, token


def _config(ctx, label, server, echo_port, keys, good, bad):
    """The scenario as tunneld's configuration (default settings): the bad tunnels first.
    Returns (conf, ctl, names in order, {good name: forward port})."""
    ports = ctx.ports.get(good + bad)
    fwd = "127.0.0.1:{}:127.0.0.1:" + str(echo_port)
    tunnels, good_ports = [], {}
    for i in range(bad):
        tunnels.append({"name": f"bad{i}", "identity_file": keys[i % len(keys)],
                        "local_forwards": [fwd.format(ports[i])]})
    for i in range(good):
        good_ports[f"good{i}"] = ports[bad + i]
        tunnels.append({"name": f"good{i}", "local_forwards": [fwd.format(ports[bad + i])]})
    conf, ctl = ctx.path(f"penalties-{label}.conf"), ctx.path(f"penalties-{label}.ctl")
    write_tunneld_conf(conf, {"control_socket": ctl, "log_level": "info"},
                       {"host": "127.0.0.1", **server.tunnel_defaults()}, tunnels)
    return conf, ctl, [t["name"] for t in tunnels], good_ports


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _first_echo(ports, t_ref, deadline):
    """{name: seconds after t_ref of the first echo through its forward, or None}: a new
    attempt every PROBE_EVERY s per forward, each given 1 s."""
    pr = MultiProber([("127.0.0.1", p) for p in ports.values()], interval=PROBE_EVERY, attempt_timeout=1.0)
    done = pr.run(deadline)
    return {n: None if done[("127.0.0.1", p)] is None else done[("127.0.0.1", p)] - t_ref
            for n, p in ports.items()}


def _count_within(times, limit):
    return sum(1 for t in times.values() if t is not None and t <= limit)


def _all_within(times):
    return None if any(t is None for t in times.values()) else max(times.values())


def _server_log(text):
    drops = PENALTY_DROP.findall(text)
    active = PENALTY_ACTIVE.findall(text)
    return {"failed_publickey": text.count("Failed publickey"), "connections": len(CONNECTION.findall(text)),
            "penalties_activated": len(active), "penalty_drops": len(drops),
            "penalty_lines": [ln for ln in text.splitlines() if "penalty" in ln][:6]}


class _TunneldContender:
    who = "tunneld"

    def __init__(self, ctx, label, conf, ctl, names, good_ports):
        self.td = Tunneld(ctx, conf, ctl, name=f"tunneld-penalties-{label}")
        self.good_ports = good_ports

    def start(self):
        self.td.start()
        return self.td.t_start

    def ssh_pids(self):
        return [p for p in descendants(self.td.pid) if _comm(p) == "ssh" and alive(p)]

    def past_gatetime(self, up):
        """tunneld itself says each good tunnel that came up has been up for its gatetime:
        a kill now is no failed start."""
        try:
            s = {t["name"]: t for t in self.td.status()["tunnels"]}
        except (BenchError, OSError, subprocess.SubprocessError):
            return False
        return all(s.get(n, {}).get("uptime") is not None and s[n]["uptime"] > s[n]["gatetime"]
                   for n, t in up.items() if t is not None)

    def details(self):
        out = {"ssh_started": 0, "failures_good": {}, "failures_bad": {}, "states_bad": {}, "states_good": {}}
        try:
            for t in self.td.status()["tunnels"]:
                bad = t["name"].startswith("bad")
                out["ssh_started"] += t.get("starts") or 0     # ssh launched (a start the pacing held is none)
                f = out["failures_bad" if bad else "failures_good"]
                for k, v in (t.get("failures") or {}).items():
                    f[k] = f.get(k, 0) + v
                st = out["states_bad" if bad else "states_good"]
                st[t.get("state")] = st.get(t.get("state"), 0) + 1
        except (BenchError, OSError, subprocess.SubprocessError, KeyError, TypeError) as e:
            out["error"] = str(e)
        try:
            with open(self.td.log, errors="replace") as f:
                lines = [ln for ln in f.read().splitlines() if "ssh:" not in ln]
            out["log_lines"] = len(lines)
            out["log_penalty_lines"] = sum(1 for ln in lines if "penalty" in ln or "refusing this address" in ln)
            out["log_head"] = lines[:40]
        except OSError:
            pass
        return out

    def stop(self):
        self.td.stop()


class _AutosshContender:
    """One `autossh -M 0` per tunnel (AUTOSSH_GATETIME=0), each with tunneld's ssh options for
    it made standalone (fixtures.ssh_argvs), released together in the configuration's order."""
    who = "autossh"

    def __init__(self, ctx, label, conf, ctl, names, good_ports):
        argvs = ssh_argvs(ctx, conf)
        self.args = [argvs[n][1:] for n in names]
        # autossh's own lines (each with its pid; level 7 for its grace-time sleeps) and its
        # ssh's stderr, all in one file: its ssh starts are counted there, the rest is for
        # --keep-tmp; logging changes nothing autossh does
        self.log = ctx.path(f"autossh-penalties-{label}.log")
        self.fleet = AutosshFleet(self.args, None, {"AUTOSSH_LOGFILE": self.log, "AUTOSSH_LOGLEVEL": "7"})
        for m in self.fleet.members:
            m.log_path = self.log

    def start(self):
        return self.fleet.start()[1]

    def ssh_pids(self):
        return [p for p in self.fleet.ssh_pids() if _comm(p) == "ssh"]

    def past_gatetime(self, up):
        return True

    def details(self):
        out = {"args_example_good": " ".join(self.args[-1]), "args_example_bad": " ".join(self.args[0])}
        try:
            with open(self.log, errors="replace") as f:
                text = f.read()
            out["ssh_started"] = text.count("starting ssh (count ")
            sleeps = [int(x) for x in re.findall(r"sleeping for grace time (\d+) secs", text)]
            out["grace_sleeps"], out["grace_max"] = len(sleeps), max(sleeps, default=0)
        except OSError:
            pass
        return out

    def stop(self):
        self.fleet.stop()


def _one(ctx, tt, env, contender, variant, keys, good, bad, at_blip, up_limit, back_limit):
    label = f"{contender.who}-{variant}"
    server, s_token = _server(tt)
    r = {"who": contender.who, "variant": variant}
    c = None
    try:
        conf, ctl, names, good_ports = _config(ctx, label, server, env["echo"].port, keys, good, bad)
        c = contender(ctx, label, conf, ctl, names, good_ports)
        c_token = on_cleanup(f"penalties {label}", c.stop)
        try:
            log(f"penalties {label}: {good} good and {bad} bad tunnels ({len(set(keys))} rejected key"
                f"{'s' if len(set(keys)) > 1 else ''}), sshd 10.0 on port {server.port}")
            t0 = c.start()
            up = _first_echo(good_ports, t0, t0 + up_limit)
            r["up_s"] = up
            r["up_at"] = {f"{x:g}": _count_within(up, x) for x in AT_START}
            r["all_up_s"] = _all_within(up)
            log(f"penalties {label}: good tunnels up at " +
                ", ".join(f"{k} s: {v}" for k, v in r["up_at"].items()) +
                f"; all up after {r['all_up_s']}")
            # the blip: once each good tunnel that came up has been up UPTIME_BEFORE_BLIP s,
            # and not before the last count after start
            came = [t for t in up.values() if t is not None]
            blip_at = max([t0 + AT_START[-1] + 0.1] + [t0 + t + UPTIME_BEFORE_BLIP for t in came])
            time.sleep(max(0.0, blip_at - now()))
            end = now() + 10
            while now() < end and not c.past_gatetime(up):
                time.sleep(0.2)
            r["up_before_blip"] = sum(1 for p in good_ports.values() if echo_ok("127.0.0.1", p, timeout=2.0))
            log_before = server.log()
            pids = c.ssh_pids()
            tb = now()
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            end = now() + 5
            while now() < end and any(alive(p) for p in pids):
                time.sleep(0.005)
            r["blip_after_s"] = tb - t0
            r["killed"] = len(pids)
            back = _first_echo(good_ports, tb, tb + back_limit)
            r["back_s"] = back
            r["back_at"] = {f"{x:g}": _count_within(back, x) for x in at_blip}
            r["all_back_s"] = _all_within(back)
            log(f"penalties {label}: blip {r['blip_after_s']:.1f} s after start ({r['killed']} ssh killed, "
                f"{r['up_before_blip']} good up just before); back at " +
                ", ".join(f"{k} s: {v}" for k, v in r["back_at"].items()) +
                f"; all back after {r['all_back_s']}")
            text = server.log()
            with open(ctx.path(f"sshd-penalties-{label}.log"), "w") as f:
                f.write(text)           # the server's directory goes with it: a copy for --keep-tmp
            r["server"] = _server_log(text)
            r["server"]["before_blip"] = _server_log(log_before)
            r["server"]["before_blip"].pop("penalty_lines", None)
            r[contender.who] = c.details()
            r["ssh_started"] = r[contender.who].get("ssh_started")
            r["seconds"] = now() - t0
        finally:
            run_cleanup(c_token)
    finally:
        run_cleanup(s_token)
    log(f"penalties {label}: the server saw {r.get('server', {}).get('failed_publickey')} failed logins, "
        f"{r.get('server', {}).get('penalties_activated')} penalties activated, "
        f"{r.get('server', {}).get('penalty_drops')} connections dropped for a penalty")
    return r


def run(ctx, env, quick):
    tt = _tunneltest()
    zoo, why = _zoo(tt)
    good, bad = (QUICK_GOOD, QUICK_BAD) if quick else (GOOD, BAD)
    at_blip = QUICK_AT_BLIP if quick else AT_BLIP
    up_limit = QUICK_UP_LIMIT if quick else UP_LIMIT
    back_limit = QUICK_BACK_LIMIT if quick else BACK_LIMIT
    res = {"good": good, "bad": bad, "at_start": list(AT_START), "at_blip": list(at_blip), "up_limit_s": up_limit,
           "back_limit_s": back_limit,
           "uptime_before_blip_s": UPTIME_BEFORE_BLIP, "probe_every_s": PROBE_EVERY, "runs": []}
    if zoo is None:
        log(f"penalties: skipped: {why}")
        res["skipped"] = why
        return res
    res["server"] = zoo.version().split(",")[0]         # ssh -V of the same packages: "OpenSSH_10.0p2 Debian-…"
    keys = _bad_keys(ctx, bad)
    variants = [("one-key", keys[:1] * bad), ("ten-keys" if bad == 10 else f"{bad}-keys", keys)]
    contenders = [_TunneldContender, _AutosshContender]
    try:
        for i, (variant, vkeys) in enumerate(variants):
            # alternate who goes first, so that load changes on the machine hit both alike
            for contender in (contenders if i % 2 == 0 else contenders[::-1]):
                res["runs"].append(_one(ctx, tt, env, contender, variant, vkeys, good, bad, at_blip, up_limit,
                                        back_limit))
    except BenchError as e:
        res["error"] = str(e)
        log(f"penalties: {e}")
    return res
