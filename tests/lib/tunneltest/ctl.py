"""tunneltest.ctl: the one set of tunnelctl helpers every test uses. A target is a
Tunneld (its control socket) or a socket path."""

from .base import *  # noqa: F401,F403
from .helpers import TUNNELCTL  # noqa: F401

import json  # noqa: E402


def socket_of(target):
    return target.globals["control_socket"] if hasattr(target, "globals") else target


def clean_env(**extra):
    """The environment for tunnelctl: nothing of ours that changes its output."""
    env = {k: v for k, v in os.environ.items() if k not in ("TUNNELD_SOCKET", "NO_COLOR")}
    env.update(extra)
    return env


def tunnelctl(target, *args, user=(), env=None, timeout=20, ctl=TUNNELCTL):
    """Run tunnelctl -s SOCKET ARGS (as another user with setpriv options in user; no -s
    with target None); CompletedProcess with text stdout/stderr and .took (seconds)."""
    sock = socket_of(target) if target is not None else None
    argv = [ctl, *(["-s", sock] if sock else []), *args]
    if user:
        argv = ["setpriv", *user, *argv]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       env=clean_env() if env is None else env)
    r.took = time.monotonic() - t0
    return r


def describe(r):
    return f"exit {r.returncode}\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}"


LOADING = "loading the configuration"     # tunneld's status while its first load runs
STILL_LOADING = "tunneld is still loading its configuration"


def status(target, *names, while_loading=False):
    """`tunnelctl --json status [NAMES]`: (the whole reply, {name: tunnel}). Raises
    AssertionError unless the reply parses and says ok (exit 1, "not up", still prints it).
    Right after start tunneld may answer before its first load (ssh -G, off its loop) is
    done, with no tunnel: this asks again until it is (up to 30 s), unless while_loading."""
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
    return reply, {t["name"]: t for t in reply["tunnels"]}


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
