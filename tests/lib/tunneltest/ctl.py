"""tunneltest.ctl: the one set of control-socket helpers every test uses: tunnelctl, its
JSON, status, metrics, and waits on a tunnel's state.

A target is a Tunneld (its control socket), a socket path, or an object with a method
tunnelctl(*args, timeout=...) returning a CompletedProcess (a tunneld elsewhere, such as
systemdtest.NamespaceControl: tunnelctl inside a namespace).
"""

from .base import *  # noqa: F401,F403
from .helpers import TUNNELCTL, wait_until  # noqa: F401

import json  # noqa: E402


def socket_of(target):
    """The control socket path of a target (a Tunneld's, or the path itself)."""
    return target.globals["control_socket"] if hasattr(target, "globals") else target


def clean_env(**extra):
    """The environment for tunnelctl: nothing of ours that changes its output."""
    env = {k: v for k, v in os.environ.items() if k not in ("TUNNELD_SOCKET", "NO_COLOR")}
    env.update(extra)
    return env


def require_tunnelctl(ctl=TUNNELCTL):
    """AssertionError unless tunnelctl was built next to tunneld."""
    if not os.access(ctl, os.X_OK):
        raise AssertionError(f"{ctl} is not built: run ninja in the build directory "
                             "(meson test builds only what tests/meson.build lists in depends:)")


def tunnelctl(target, *args, user=(), env=None, timeout=20, ctl=TUNNELCTL):
    """Run tunnelctl -s SOCKET ARGS (as another user with setpriv options in user; no -s
    with target None); CompletedProcess with text stdout/stderr and .took (seconds)."""
    if hasattr(target, "tunnelctl"):
        return target.tunnelctl(*args, timeout=timeout)
    require_tunnelctl(ctl)
    sock = socket_of(target) if target is not None else None
    argv = [ctl, *(["-s", sock] if sock else []), *args]
    if user:
        argv = ["setpriv", *user, *argv]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       env=clean_env() if env is None else env)
    r.took = time.monotonic() - t0
    return r


def tunnelctl_ok(target, *args, rc=0, **kw):
    """tunnelctl(target, ARGS, **kw), asserting it exits rc (0: it worked); its
    CompletedProcess."""
    r = tunnelctl(target, *args, **kw)
    if r.returncode != rc:
        raise AssertionError(f"tunnelctl {' '.join(args)}: exit {r.returncode}, not {rc}: {describe(r)}")
    return r


def describe(r):
    """A CompletedProcess for an assertion message: exit status, stdout, stderr."""
    return f"exit {r.returncode}\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}"


def tunnelctl_json(target, *args, timeout=20):
    """`tunnelctl --json ARGS`: its first reply line as a dict (its "ok" may be false:
    check it). AssertionError if tunnelctl printed no JSON."""
    r = tunnelctl(target, "--json", *args, timeout=timeout)
    try:
        return json.loads(r.stdout.splitlines()[0])
    except (IndexError, ValueError):
        raise AssertionError(f"tunnelctl --json {' '.join(args)} printed no JSON: {describe(r)}") from None


LOADING = "loading the configuration"     # tunneld's status while its first load runs
STILL_LOADING = "tunneld is still loading its configuration"


def status_reply(target, *names, while_loading=False):
    """The whole `tunnelctl --json status [NAMES]` reply (a dict). AssertionError unless it
    parses and says ok (exit 1, "not up", still prints it). Right after start tunneld may
    answer before its first load (ssh -G, off its loop) is done, with no tunnel: this asks
    again until it is (up to 30 s), unless while_loading."""
    deadline = time.monotonic() + 30
    while True:
        r = tunnelctl(target, "--json", "status", *names)
        try:
            reply = json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"tunnelctl --json status did not print JSON: {describe(r)}") from None
        loading = LOADING in reply.get("status", "") or STILL_LOADING in reply.get("error", "")
        if while_loading or not loading or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not reply.get("ok"):
        raise AssertionError(f"status failed: {describe(r)}")
    return reply


def status(target, *names, while_loading=False):
    """{name: tunnel object} from `tunnelctl --json status [NAMES]` (status_reply())."""
    return {t["name"]: t for t in status_reply(target, *names, while_loading=while_loading)["tunnels"]}


def tunnel_status(target, name):
    """The status object of one tunnel (`tunnelctl --json status NAME`)."""
    tunnels = status(target, name)
    if name not in tunnels:
        raise AssertionError(f"no tunnel {name} in the status: {sorted(tunnels)}")
    return tunnels[name]


def pids(target):
    """{name: ssh pid (None without one)} of every tunnel in the status."""
    return {n: t["pid"] for n, t in status(target).items()}


def forward_states(tunnel):
    """{forward: its state ("pending", "open", "failed")} of a tunnel's status object."""
    return {f["forward"]: f["state"] for f in tunnel["forward_states"]}


def loaded(target):
    """True once tunneld answers status with its configuration loaded. It answers from the
    start, but with no tunnel and a status saying "loading the configuration" until its
    load off the loop (ssh -G included) is done."""
    r = tunnelctl(target, "--json", "status")
    try:
        reply = json.loads(r.stdout)
    except ValueError:
        return False
    return bool(reply.get("ok")) and LOADING not in reply.get("status", "")


def metrics_text(target):
    """`tunnelctl metrics`: the OpenMetrics text. AssertionError unless it exits 0."""
    r = tunnelctl(target, "metrics")
    if r.returncode != 0:
        raise AssertionError(f"tunnelctl metrics failed: {describe(r)}")
    return r.stdout


def metric_value(text, name, **labels):
    """The value of one sample of a metrics_text() (labels must match exactly, in order),
    or None. Loose: for checks of content; tests/features/test_metrics.py has the strict
    parser."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == series:
            return float(value)
    return None


def _poll_status(target):
    """status(target) for a wait: None while tunneld does not answer yet (tunnelctl exit 3:
    not listening yet, or still loading); AssertionError at once if a Tunneld target has
    exited."""
    proc = getattr(target, "proc", None)
    if proc is not None and proc.poll() is not None:
        raise AssertionError(f"tunneld exited ({proc.returncode})")
    r = tunnelctl(target, "--json", "status")
    if r.returncode == 3:
        return None
    try:
        reply = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"tunnelctl --json status did not print JSON: {describe(r)}") from None
    if STILL_LOADING in reply.get("error", ""):
        return None
    if not reply.get("ok"):
        raise AssertionError(f"status failed: {describe(r)}")
    if LOADING in reply.get("status", ""):
        return None
    return {t["name"]: t for t in reply["tunnels"]}


def tunnel_states(target, names):
    """{name: state} of names from the status, or None while tunneld does not answer yet
    (AssertionError if a Tunneld target has exited)."""
    tunnels = _poll_status(target)
    return None if tunnels is None else {n: tunnels[n]["state"] for n in names}


def all_in_state(target, names, state="up"):
    """True if the status shows every one of names in state; False while tunneld does not
    answer yet."""
    states = tunnel_states(target, names)
    return states is not None and all(s == state for s in states.values())


def wait_tunnel(target, name, pred, timeout=UP_TIMEOUT, what=None, interval=0.1):
    """Poll the status until pred(name's tunnel object) is true; return that object."""
    def check():
        t = (_poll_status(target) or {}).get(name)
        return t if t is not None and pred(t) else None
    return wait_until(check, timeout, interval=interval, what=what or f"{name} to match {pred}")


def wait_state(target, name, state, not_pid=None, timeout=UP_TIMEOUT):
    """Wait until the status shows name in state (with an ssh other than not_pid, if
    given); return its status object."""
    return wait_tunnel(target, name, lambda t: t["state"] == state and (not_pid is None or t["pid"] != not_pid),
                       timeout, what=f"{name} to be {state}" + (f" on an ssh other than pid {not_pid}" if not_pid
                                                                 else ""))


def wait_all(target, names, state="up", timeout=UP_TIMEOUT, interval=0.1):
    """Wait until the status shows every one of names in state (all_in_state()), asking
    every interval seconds; return {name: tunnel}."""
    def check():
        tunnels = _poll_status(target) or {}
        if all(n in tunnels and tunnels[n]["state"] == state for n in names):
            return {n: tunnels[n] for n in names}
        return None
    what = f"{', '.join(names)} to be {state}" if len(names) <= 10 else f"{len(names)} tunnels to be {state}"
    return wait_until(check, timeout, interval=interval, what=what)
