"""4. Reload: SIGHUP on an N-tunnel config that changes one tunnel (its forward's local port:
the forward moves on the tunnel's running ssh, since ssh's command line holds no forward)."""
import os
import signal
import time

from .probe import wait_echo
from .scale import run_tunneld, write_conf
from .util import BenchError, log, now, proc_cpu


def _snapshot(td):
    return {t["name"]: (t.get("pid"), t["state"]) for t in td.status()["tunnels"]}


def make_hook(ctx, env, reps, gatetime):
    def hook(td, notify, conf, ports):
        ports = list(ports)
        n = len(ports)
        out = {"n": n, "reloads": []}
        # reps reloads that each change one tunnel (its local port), then one with no change
        plan = [((k + 1) * n // (reps + 1)) % n for k in range(reps)] + [None]
        for idx in plan:
            before = _snapshot(td)
            if any(s != "up" for _, s in before.values()):
                raise BenchError(f"reload: not every tunnel is up before the reload: {before}")
            new_port = None
            if idx is not None:
                new_port = ctx.ports.one()
                ports[idx] = new_port
            write_conf(ctx, env, conf, td.ctl, ports, gatetime, n)
            c0 = proc_cpu(td.pid)
            t0 = now()
            os.kill(td.pid, signal.SIGHUP)
            t_rel, _ = notify.wait_for("RELOADING=1", t0, 30)
            t_ready, _ = notify.wait_for("READY=1", t0, 30)
            c1 = proc_cpu(td.pid)
            t_up = None
            if new_port:
                t_up = wait_echo("127.0.0.1", new_port, t0 + 60)
            after = _snapshot(td)
            end = now() + 10      # the forward echoing can beat tunneld reading ssh's "Authenticated"
            while any(v[1] != "up" for v in after.values()) and now() < end:
                time.sleep(0.05)
                after = _snapshot(td)
            changed = sorted(k for k in before if before[k][0] != after.get(k, (None,))[0])
            not_up = sorted(k for k, v in after.items() if v[1] != "up")
            name = f"t{idx:04d}" if idx is not None else None
            others = [k for k in changed if k != name]
            r = {"changed_tunnel": name,
                 "reloading_s": None if t_rel is None else t_rel - t0,
                 "ready_s": None if t_ready is None else t_ready - t0,
                 "changed_up_s": None if t_up is None else t_up - t0,
                 "cpu_to_ready_s": c1[0] - c0[0], "run_to_ready_s": (c1[1] or 0) - (c0[1] or 0),
                 "pids_changed": changed, "not_up_after": not_up,
                 # no tunnel but the changed one got a new ssh (the changed one keeps its own
                 # too when only its forwards changed: changed_kept_ssh)
                 "others_changed": others, "changed_kept_ssh": name is not None and name not in changed,
                 "as_expected": not others and (name is None or t_up is not None)}
            out["reloads"].append(r)
            log(f"reload ({name or 'no change'}): READY after {r['ready_s']}, changed tunnel up after "
                f"{r['changed_up_s']}, pids changed: {changed}")
        return out
    return hook


def run_dedicated(ctx, env, n, reps, gatetime):
    """When the scale run has no tunneld with n tunnels, start one just for the reload."""
    ports = ctx.ports.get(n)
    r = run_tunneld(ctx, env, n, ports, gatetime, 0, n, "tunneld-reload",
                    after_up=make_hook(ctx, env, reps, gatetime))
    out = r.pop("after_up")
    out["startup"] = r
    return out
