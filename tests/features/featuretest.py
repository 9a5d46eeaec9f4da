"""featuretest: what the tests under tests/features share (standard library only).

Built on tunneltest. Every test here runs real ssh against a private sshd on 127.0.0.1:

    FeatureTest     a TestCase base: one sshd and one echo server per class, tunneld(...)
                    with settings that keep the tests fast, wait_up(), wait_state()
    tunnelctl()     run tunnelctl on a tunneld's private control socket
    status()        `tunnelctl --json status` as {name: tunnel}
    metrics_text()  `tunnelctl metrics`
    percentile()    nearest-rank percentile, for the timings the tests print as TAP comments

Test files sit next to this one; python puts a script's directory first on sys.path.
"""

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import unittest

import tunneltest
from tunneltest import EchoServer, SSHServer, Tunneld, wait_until

TUNNELCTL = os.path.join(os.path.dirname(tunneltest.TUNNELD), "tunnelctl")
UP_TIMEOUT = 20  # ssh's connect and key exchange on a loaded 2-core machine


def tap_comment(text):
    """Print text as TAP comment lines (between the runner's ok/not ok lines)."""
    for line in text.splitlines() or [""]:
        sys.stdout.write("# " + line + "\n")
    sys.stdout.flush()


def tunnelctl(d, *args, timeout=20):
    """tunnelctl -s <d's control socket> ARGS (tunneltest.tunnelctl, the one helper)."""
    return tunneltest.tunnelctl(d, *args, timeout=timeout)


def control_socket_listens(d):
    """True once a connection to d's control socket is accepted (the file appears at bind(),
    a moment before listen())."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.connect(d.globals["control_socket"])
            return True
        except OSError:
            return False


def status_reply(d):
    """The whole `tunnelctl --json status` reply (a dict)."""
    return tunneltest.status(d)[0]


def status(d):
    """{name: tunnel object} from `tunnelctl --json status`."""
    return tunneltest.status(d)[1]


def metrics_text(d):
    r = tunnelctl(d, "metrics")
    if r.returncode != 0:
        raise AssertionError(f"tunnelctl metrics: exit {r.returncode}: {r.stderr}")
    return r.stdout


def metric_value(text, name, **labels):
    """The value of one sample (labels must match exactly), or None. Loose: for checks of
    content; test_metrics.py has the strict parser."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == series:
            return float(value)
    return None


def echo_at_once(port, payload=b"right at UP\n", timeout=10.0):
    """Connect to 127.0.0.1:port once (no retry) and echo payload. Returns None if the bytes
    came back, else why not: "refused" (nothing listens: the forward is not there), or what
    went wrong after the connection was accepted."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return f"connect: {e}"
    with s:
        try:
            s.sendall(payload)
            got = b""
            deadline = time.monotonic() + timeout
            while len(got) < len(payload):
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    return f"closed after {len(got)} bytes"
                got += chunk
            return None if got == payload else f"got {got!r}"
        except OSError as e:
            return f"after connecting: {e}"


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    v = sorted(values)
    k = max(1, math.ceil(p / 100 * len(v)))
    return v[k - 1]


def group_lines(text, name):
    """The line range (first, last) of tunnel name's group { … } in a render_config() text."""
    lines = text.splitlines()
    at = tunneltest.line_of(text, f'name = "{name}";')
    first = max(n for n in range(1, at + 1) if lines[n - 1].strip() == "{")
    last = min(n for n in range(at, len(lines) + 1) if lines[n - 1].strip() in ("}", "},"))
    return first, last


def make_key(directory, name):
    """A fresh ed25519 key pair in directory (mode 0600); returns the private key's path."""
    path = os.path.join(directory, name)
    subprocess.run([tunneltest.SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "tunneltest", "-f", path],
                   check=True, stdin=subprocess.DEVNULL, timeout=30)
    return path


def listening_socket(port=None):
    """A TCP socket listening on 127.0.0.1:port (a free port unless given) that never
    accepts: a connect succeeds (the kernel's backlog), then nothing is ever said."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.bind(("127.0.0.1", port or tunneltest.free_port()))
    s.listen(16)
    return s


class FeatureTest(unittest.TestCase):
    """One sshd and one echo server for the class; each test runs its own tunneld."""

    sshd_config = ()

    @classmethod
    def setUpClass(cls):
        cls.sshd = tunneltest.use(cls, SSHServer(extra_config=cls.sshd_config))
        cls.echo = tunneltest.use(cls, EchoServer())

    def tunneld(self, tunnels, args=(), globals=None, env=None, wrapper=(), sshd=None, **settings):
        """tunneld with real ssh on tunnels to sshd (ours by default); settings override
        the defaults (short gatetime and backoff, so that the tests run fast)."""
        sshd = sshd or self.sshd
        defaults = {**sshd.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2,
                    **settings}
        tunnels = [{"host": "127.0.0.1", **t} for t in tunnels]
        d = tunneltest.use(self, Tunneld(tunnels, defaults, globals={"ssh": tunneltest.SSH, **(globals or {})},
                                         args=args, env=env, wrapper=wrapper))
        # tunnelctl works from here on, and the tunnels are there (tunneld listens before it
        # loads the file off its loop, and loads it before it spawns the first ssh)
        wait_until(lambda: control_socket_listens(d) or d.proc.poll() is not None, 10, interval=0.01,
                   what="tunneld's control socket to listen")
        wait_until(lambda: d.proc.poll() is not None or tunneltest.loaded(d), 30, interval=0.02,
                   what="tunneld to load its configuration")
        return d

    def local_forward(self, port):
        return f"127.0.0.1:{port}:127.0.0.1:{self.echo.port}"

    def remote_forward(self, port):
        return f"127.0.0.1:{port}:127.0.0.1:{self.echo.port}"

    def wait_up(self, d, name, after=0, timeout=UP_TIMEOUT):
        """Wait for name's UP line; return (match, ssh pid)."""
        m = d.wait_log(rf"^<\d+>{re.escape(name)}: up: ssh \(pid (\d+)\) authenticated", timeout=timeout,
                       after=after)
        return m, int(m.group(1))

    def wait_state(self, d, name, state, timeout=UP_TIMEOUT):
        """Wait until tunnelctl shows name in state; return its status object."""
        def reached():
            t = status(d).get(name)
            return t if t and t["state"] == state else None
        return wait_until(reached, timeout, interval=0.05, what=f"{name} to be {state}")

    def assert_echo(self, port, payload=b"through the tunnel\n"):
        wait_until(lambda: tunneltest.echo_roundtrip(port, payload), 10, what=f"an echo through port {port}")
