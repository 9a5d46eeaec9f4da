"""tunneltest.helpers: small helpers: waiting on a condition, ports, echoes, durations."""

from .base import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403

import struct  # noqa: E402


def wait_until(pred, timeout, interval=0.05, what=None):
    """Poll pred() until it returns something true and return that; AssertionError if it
    still has not after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or getattr(pred, '__name__', pred)}")
        time.sleep(interval)


_held_ports = []


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A TCP port free on 127.0.0.1, below the kernel's ephemeral range (so no outgoing
    connection takes it meanwhile), and reserved against other test processes for as long
    as this one lives (an abstract Unix socket per port: the kernel drops it at exit)."""
    lo, hi = _ephemeral_range()
    first, last = (20000, lo - 1) if lo > 21000 else (hi + 1, 65000)
    return reserve_port(first, last)


def reserve_port(first, last):
    """A port in first..last free on 127.0.0.1 and reserved against other tunneltest
    processes (an abstract Unix socket "tunneltest-port-N" held until this one exits)."""
    for _ in range(500):
        port = random.randint(first, last)
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            lock.bind(f"\0tunneltest-port-{port}")
        except OSError:
            lock.close()
            continue
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            lock.close()
            continue
        finally:
            probe.close()
        _held_ports.append(lock)
        return port
    raise RuntimeError(f"no free port found in {first}-{last}")


TUNNELCTL = os.path.join(os.path.dirname(TUNNELD), "tunnelctl")


def key_fingerprint(pub_path):
    """The SHA256 fingerprint of a public key file, as sshd logs it ("SHA256:…")."""
    r = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", pub_path], capture_output=True, text=True,
                       check=True, timeout=10, stdin=subprocess.DEVNULL)
    return r.stdout.split()[1]


def port_accepts(port, timeout=1.0):
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def ipv6_loopback():
    """True if this machine has ::1 (a socket can bind it)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def listening_socket(port=None):
    """A TCP socket listening on 127.0.0.1:port (a free port unless given) that never
    accepts: a connect succeeds (the kernel's backlog), then nothing is ever said. Also
    a squatter: another program holding a port a forward wants (SO_REUSEADDR: a port a
    forward just let go of, its connections in TIME_WAIT, can be taken)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port or free_port()))
    s.listen(16)
    return s


def echo_roundtrip(port, payload=b"tunneld test payload\n", timeout=5.0, expect=None):
    """Connect to 127.0.0.1:port, send payload, and return True if the same bytes (or
    expect) come back within timeout seconds. Never raises, never hangs."""
    want = payload if expect is None else expect
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(want):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                s.settimeout(left)
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got == want
    except OSError:
        return False


def assert_echo(port, payload=b"through the tunnel\n", timeout=10, attempt_timeout=5.0):
    """Wait until an echo_roundtrip() through 127.0.0.1:port works (each attempt bounded by
    attempt_timeout); AssertionError if none has within timeout seconds."""
    wait_until(lambda: echo_roundtrip(port, payload, timeout=attempt_timeout), timeout,
               what=f"an echo through port {port}")


def parse_duration(text):
    """Seconds from tunneld's format_duration(): "850 ms", "2.1 s", "3 min 2 s", "1 h 5 min"."""
    units = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"([\d.]+) (ms|s|min|h|d)\b", text)
    if not parts:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def duration_slack(seconds):
    """How far format_duration()'s rounding can move a duration shown as `seconds`."""
    if seconds < 1:
        return 0.0006
    if seconds < 10:
        return 0.051
    return 0.51 if seconds < 60 else 30.1


def unix_echo(path, payload=b"through the unix socket\n", timeout=5.0):
    """One echo round trip through a Unix socket forward; True if the bytes came back."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got == payload
    except OSError:
        return False


def socks_echo(socks_port, target_port, payload=b"through socks\n", timeout=5.0):
    """SOCKS5 (no auth) CONNECT to 127.0.0.1:target_port through 127.0.0.1:socks_port,
    then an echo round trip."""
    try:
        with socket.create_connection(("127.0.0.1", socks_port), timeout=timeout) as s:
            def recv_exactly(n):
                got = b""
                while len(got) < n:
                    chunk = s.recv(n - len(got))
                    if not chunk:
                        raise OSError("closed")
                    got += chunk
                return got
            s.sendall(b"\x05\x01\x00")
            if recv_exactly(2) != b"\x05\x00":
                return False
            s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", target_port))
            reply = recv_exactly(10)
            if reply[1] != 0:
                return False
            s.sendall(payload)
            return recv_exactly(len(payload)) == payload
    except OSError:
        return False
