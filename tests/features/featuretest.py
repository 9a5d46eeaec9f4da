"""featuretest: what the tests under tests/features share (standard library only).

Built on tunneltest, whose helpers they use directly (status(), metrics_text(), wait_state(),
Tunneld.wait_up(), assert_echo(), ...). Every test here runs real ssh against a private sshd
on 127.0.0.1:

    FeatureTest     tunneltest.SSHTestCase: one sshd and one echo server per class,
                    tunneld(...) with settings that keep the tests fast
    echo_at_once()  one connection, no retry: did the bytes come back, and if not, why
    percentile()    nearest-rank percentile, for the timings the tests print as TAP comments
    tap_comment(), group_lines(), make_key()

Test files sit next to this one; python puts a script's directory first on sys.path.
"""

import math
import os
import socket
import subprocess
import sys
import time

import tunneltest


def tap_comment(text):
    """Print text as TAP comment lines (between the runner's ok/not ok lines)."""
    for line in text.splitlines() or [""]:
        sys.stdout.write("# " + line + "\n")
    sys.stdout.flush()


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


class FeatureTest(tunneltest.SSHTestCase):
    """One sshd and one echo server for the class; each test runs its own tunneld."""
