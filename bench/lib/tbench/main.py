"""bench/run: measure tunneld against autossh and against the physical floor."""
import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback

from . import atscale, limits, network, outage, penalties, profile, recovery, reload, report, restart, scale, share
from .fixtures import Context, EchoServer, Keys, Sshd
from .util import (BenchError, PortAllocator, cleanup_all, loadavg, log, mem_available_kb, now,
                   set_child_subreaper)

BENCH = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOP = os.path.dirname(BENCH)
ALL = ["recovery", "scale", "reload", "outage", "restart", "share", "network", "limits", "profile"]
OPTIONAL = ["atscale", "penalties"]     # only with --only: atscale minutes of the machine's whole CPU; penalties about 7 min


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark tunneld against autossh (-M 0) and against a bare ssh, on a throwaway "
                    "loopback sshd (and test network namespaces for the outage and the network benchmark). Needs root.")
    ap.add_argument("--quick", action="store_true", help="smoke run of every benchmark: tiny N, few repetitions")
    ap.add_argument("--only", default=",".join(ALL),
                    help=f"comma-separated subset of {','.join(ALL)} (default: all of them), or the optional "
                         f"{','.join(OPTIONAL)}")
    ap.add_argument("--runs", type=int, help="recovery: kills per contender (default 30, quick 3)")
    ap.add_argument("--series", type=int, help="recovery: repeated kills of one long-lived supervisor (default 8, quick 2)")
    ap.add_argument("--scale", help="scale: comma-separated tunnel counts (default 1,100,500,1000; quick 1,10); "
                                    "1000 and above only run if memory allows")
    ap.add_argument("--default-parallel", help="scale: N at which tunneld also runs with the default "
                                               "max_parallel_starts 8 (default 500,1000; quick none)")
    ap.add_argument("--idle", type=float, help="idle window in seconds, scale and share (default 30, quick 5)")
    ap.add_argument("--scale-gatetime", type=float, help="gatetime of the scale and share tunnels (default 5, quick 2)")
    ap.add_argument("--reload-n", type=int, help="reload: tunnels (default 500, quick 20)")
    ap.add_argument("--reload-reps", type=int, help="reload: reloads that change one tunnel (default 5, quick 2)")
    ap.add_argument("--outage", type=float, help="outage: blackhole seconds (default 30, quick 5)")
    ap.add_argument("--outage-reps", type=int, help="outage: repetitions (default 2, quick 1)")
    ap.add_argument("--alive", help="outage and share: ServerAliveInterval x ServerAliveCountMax for all (default 5x3, quick 1x2)")
    ap.add_argument("--restarts", type=int, help="restart: planned restarts per contender (default 20, quick 3)")
    ap.add_argument("--restart-conns", type=int, help="restart: forwarded connections for the cost per "
                                                      "connection (default 200, quick 20)")
    ap.add_argument("--share-n", type=int, help="share: tunnels, spread round robin over the destinations "
                                                "(default 1000, quick 20)")
    ap.add_argument("--share-dests", type=int, help="share: destinations, one sshd each (default 10, quick 2)")
    ap.add_argument("--share-conns", type=int, help="share: forwarded connections for the cost per connection "
                                                    "(default 200, quick 20)")
    ap.add_argument("--share-outage", type=float, help="share: blackhole seconds of one destination "
                                                       "(default 30, quick 5)")
    ap.add_argument("--network-reps", type=int, help="network: repetitions of the three scenarios (default 2, quick 1)")
    ap.add_argument("--network-blackhole", type=float, help="network: blackhole seconds of the busy tunnel "
                                                           "(default 40, quick 10)")
    ap.add_argument("--network-alive", help="network: ServerAliveInterval x ServerAliveCountMax for both "
                                            "(default 30x3, tunneld's defaults; quick 5x2)")
    ap.add_argument("--atscale", help="atscale: TUNNELSxCONNECTIONS sizes (default 2000x20,10000x100; quick 200x4)")
    ap.add_argument("--atscale-reloads", type=int, help="atscale: reloads that change one forward, per size "
                                                        "(default 3, quick 1), then one that changes nothing")
    ap.add_argument("--profile-n", type=int, help="profile: tunnels under strace (default 500, quick 10)")
    ap.add_argument("--callgrind-n", type=int, help="profile: tunnels under callgrind (default 200, quick 10)")
    ap.add_argument("--tunneld", default=os.path.join(TOP, "build/daemon/tunneld"))
    ap.add_argument("--tunnelctl", default=os.path.join(TOP, "build/daemon/tunnelctl"))
    ap.add_argument("--output", help="Markdown results (default bench/RESULTS.md; quick: bench/RESULTS-quick.md)")
    ap.add_argument("--json", help="raw results (default bench/results.json; quick: bench/results-quick.json)")
    ap.add_argument("--render", metavar="JSON", help="only rewrite the Markdown (--output) from the raw "
                                                     "results of an earlier run; runs nothing")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, configs) for inspection")
    ap.add_argument("--time-limit", type=float, help="abort (and clean up) after this many seconds "
                                                     "(default 3600, quick 600)")
    a = ap.parse_args(argv)
    q = a.quick

    def d(v, full, quick):
        return v if v is not None else (quick if q else full)
    a.runs = d(a.runs, 30, 3)
    a.series = d(a.series, 8, 2)
    a.scale = [int(x) for x in d(a.scale, "1,100,500,1000", "1,10").split(",") if x]
    a.default_parallel = [int(x) for x in d(a.default_parallel, "500,1000", "").split(",") if x]
    a.idle = d(a.idle, 30.0, 5.0)
    a.scale_gatetime = d(a.scale_gatetime, 5, 2)
    a.reload_n = d(a.reload_n, 500, 20)
    a.reload_reps = d(a.reload_reps, 5, 2)
    a.outage = d(a.outage, 30.0, 5.0)
    a.outage_reps = d(a.outage_reps, 2, 1)
    a.alive = d(a.alive, "5x3", "1x2")
    a.restarts = d(a.restarts, 20, 3)
    a.restart_conns = d(a.restart_conns, 200, 20)
    a.share_n = d(a.share_n, 1000, 20)
    a.share_dests = d(a.share_dests, 10, 2)
    a.share_conns = d(a.share_conns, 200, 20)
    a.share_outage = d(a.share_outage, 30.0, 5.0)
    a.network_reps = d(a.network_reps, 2, 1)
    a.network_blackhole = d(a.network_blackhole, 40.0, 10.0)
    a.network_alive = d(a.network_alive, "30x3", "5x2")
    a.atscale = atscale.parse_sizes(d(a.atscale, "2000x20,10000x100", "200x4"))
    a.atscale_reloads = d(a.atscale_reloads, 3, 1)
    a.profile_n = d(a.profile_n, 500, 10)
    a.callgrind_n = d(a.callgrind_n, 200, 10)
    a.output = d(a.output, os.path.join(BENCH, "RESULTS.md"), os.path.join(BENCH, "RESULTS-quick.md"))
    a.json = d(a.json, os.path.join(BENCH, "results.json"), os.path.join(BENCH, "results-quick.json"))
    a.time_limit = d(a.time_limit, 3600.0, 600.0)
    a.only = [x.strip() for x in a.only.split(",") if x.strip()]
    for x in a.only:
        if x not in ALL + OPTIONAL:
            ap.error(f"--only: unknown benchmark {x}")
    return a


def _cmd(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"


def machine(args):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    git = _cmd(["git", "-C", TOP, "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", TOP, "status", "--porcelain", "--", "daemon"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "debian": _cmd(["cat", "/etc/debian_version"]),
        "openssh": _cmd(["ssh", "-V"]),
        "autossh": _cmd(["/usr/lib/autossh/autossh", "-V"]) + " (Debian " +
                   _cmd(["dpkg-query", "-W", "-f", "${Version}", "autossh"]) + ")",
        "python": platform.python_version(),
        "tunneld": _cmd([args.tunneld, "--version"]) + f" (git {git}{', daemon/ modified in the working tree' if dirty else ''})",
        "tunneld_binary": args.tunneld,
        "nofile": "%d soft / %d hard" % resource.getrlimit(resource.RLIMIT_NOFILE),
        "loadavg_start": loadavg(),
    }


def check_tools(args):
    missing = [t for t in ("ssh", "ssh-keygen", "autossh", "ip") if not shutil.which(t)]
    if "profile" in args.only:
        missing += [t for t in ("strace", "valgrind", "callgrind_control") if not shutil.which(t)]
    if not os.path.exists("/usr/sbin/sshd"):
        missing.append("/usr/sbin/sshd")
    if missing:
        raise BenchError("missing: " + ", ".join(missing) +
                         " (apt-get install openssh-server openssh-client autossh strace valgrind iproute2)")
    for b in (args.tunneld, args.tunnelctl):
        if not os.access(b, os.X_OK):
            raise BenchError(f"{b} not found: build first (ninja -C build)")


class Abort(BaseException):
    """Ctrl-C, SIGTERM/SIGHUP or the time limit: not caught by a single benchmark."""


def _on_signal(signum, frame):
    raise Abort(f"signal {signal.Signals(signum).name}")


def _on_alarm(signum, frame):
    raise Abort("time limit reached")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:
        with open(args.render) as f:
            results = json.load(f)
        saved = results.get("args", {})
        args.quick = saved.get("quick", args.quick)
        if not any(a.startswith("--output") for a in (sys.argv[1:] if argv is None else argv)):
            args.output = saved.get("output", args.output)
        text = report.render(results, args)
        # The hand-written Analysis at the end of the file is about these same results: keep it.
        try:
            with open(args.output) as f:
                old = f.read()
            i = old.find("\n## Analysis")
            if i >= 0:
                text = text.rstrip("\n") + "\n\n" + old[i:].lstrip("\n")
        except FileNotFoundError:
            pass
        with open(args.output, "w") as f:
            f.write(text)
        print(f"wrote {args.output}")
        return 0
    if os.geteuid() != 0:
        print("bench/run: needs root (sshd, network namespaces)", file=sys.stderr)
        return 2
    check_tools(args)
    set_child_subreaper()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(int(args.time_limit))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 65536 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, hard))    # the prober holds many sockets
    tmp = tempfile.mkdtemp(prefix="tbench-")
    os.chmod(tmp, 0o700)
    t_start = now()
    results = {"args": {k: v for k, v in vars(args).items()}, "errors": {}}
    try:
        bindir = os.path.join(tmp, "bin")
        os.makedirs(bindir)
        for b in (args.tunneld, args.tunnelctl):
            shutil.copy2(b, bindir)
        results["machine"] = machine(args)
        ctx = Context(tmp, PortAllocator(), os.path.join(bindir, "tunneld"), os.path.join(bindir, "tunnelctl"),
                      args.quick)
        log(f"bench/run {'--quick ' if args.quick else ''}in {tmp}; load average {loadavg()}")
        keys = Keys(ctx)
        sshd = Sshd(ctx, keys, "127.0.0.1", ctx.ports.one()).start()
        echo = EchoServer(ctx, "127.0.0.1", ctx.ports.one()).start()
        env = {"keys": keys, "sshd": sshd, "echo": echo}

        def bench(name, fn):
            if name not in args.only:
                return
            log(f"== {name}")
            t0 = now()
            try:
                results[name] = fn()
                if isinstance(results[name], dict) and results[name].get("error"):
                    results["errors"][name] = results[name]["error"]      # partial results kept
            except (BenchError, OSError, subprocess.SubprocessError) as e:
                results["errors"][name] = f"{type(e).__name__}: {e}"
                log(f"{name} FAILED: {e}")
                traceback.print_exc()
            results.setdefault("durations", {})[name] = now() - t0
            results.setdefault("loadavg", {})[name] = loadavg()

        bench("recovery", lambda: recovery.run(ctx, env, args.runs, args.series))

        reload_hook = None
        if "reload" in args.only and "scale" in args.only and args.reload_n in args.scale:
            reload_hook = (args.reload_n, reload.make_hook(ctx, env, args.reload_reps, args.scale_gatetime))

        def mem_guard(n, done):
            if n < 1000:
                return True
            per = [r["sys_mem_used_kb"] / r["n"] for r in done if r["n"] >= 100 and r.get("sys_mem_used_kb")]
            need = (max(per) if per else 8000) * n * 1.3 + 1024 * 1024
            ok = mem_available_kb() > need
            if not ok:
                log(f"N={n} needs about {need / 1024:.0f} MB, {mem_available_kb() / 1024:.0f} MB available")
            return ok

        bench("scale", lambda: scale.run(ctx, env, args.scale, args.idle, args.scale_gatetime,
                                         args.default_parallel, reload_hook, mem_guard))
        if reload_hook:
            if "scale" in results:
                for r in results["scale"]["runs"]:
                    if "after_up" in r:
                        results["reload"] = r.pop("after_up")
                        results["reload"]["startup"] = {k: v for k, v in r.items() if k != "idle"}
        else:
            bench("reload", lambda: reload.run_dedicated(ctx, env, args.reload_n, args.reload_reps,
                                                         args.scale_gatetime))

        iv, cnt = (int(x) for x in args.alive.lower().split("x"))
        bench("outage", lambda: outage.run(ctx, env, args.outage, args.outage_reps, iv, cnt,
                                           120.0 if args.quick else 300.0))
        bench("restart", lambda: restart.run(ctx, env, args.restarts, args.restart_conns))
        bench("share", lambda: share.run(ctx, env, args.share_n, args.share_dests, args.idle, args.scale_gatetime,
                                         args.share_conns, args.share_outage, iv, cnt,
                                         120.0 if args.quick else 300.0))
        niv, ncnt = (int(x) for x in args.network_alive.lower().split("x"))
        bench("network", lambda: network.run(ctx, env, args.network_reps, args.network_blackhole, niv, ncnt))
        bench("atscale", lambda: atscale.run(ctx, env, args.atscale, args.scale_gatetime, args.atscale_reloads))
        bench("penalties", lambda: penalties.run(ctx, env, args.quick))
        bench("limits", lambda: limits.run(ctx, env))
        bench("profile", lambda: profile.run_all(ctx, env, args.profile_n, args.callgrind_n,
                                                 args.scale_gatetime, 2.0 if args.quick else 5.0))
    except Abort as e:
        log(f"aborted ({e}): cleaning up")
        results["errors"]["run"] = f"aborted: {e}"
        results["aborted"] = True
    finally:
        signal.alarm(0)
        cleanup_all()
        results.setdefault("machine", {})["loadavg_end"] = loadavg()
        results["total_s"] = now() - t_start
        try:
            text = report.render(results, args)
            with open(args.output, "w") as f:
                f.write(text)
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=str)
            print(text)
            log(f"wrote {args.output} and {args.json} in {results['total_s']:.0f} s")
        except Exception:  # noqa: BLE001 - the report must not hide the cleanup
            traceback.print_exc()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if results.get("aborted"):
        return 130
    return 1 if results["errors"] else 0
