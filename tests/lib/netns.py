"""netns: throwaway test hosts in network namespaces, for network fault tests (root only).

    TestHost         a network namespace joined to this side by a veth pair, one /30 of
                     198.18.0.0/15 per host; silent blackhole and link down/up faults
    TwoPathHost      a test host reachable by two veth pairs, the server on an address
                     behind both: the path moves (an address removed, the route replaced)
    NetnsSSHServer   an sshd inside a TestHost (keys and known_hosts of its own)
    TaggedEchoServer a line echo server on 127.0.0.1, inside a TestHost (a forward's target
                     on the server side) or here, whose replies carry a tag of its own;
                     stop() and start() again keep its port
    listener_port()  a port for a tunnel's listener, away from bench/'s ports
    SSHTunnel        a bare `ssh -N -L` (no tunneld) to a NetnsSSHServer, up once bytes flow
    SteadyClient     a client sending a line through a forward every 100 ms, its echoes timed

The recipe is the one checked on these machines (/work/shared/network-faults-here.md): no
netem; a silent blackhole is a blackhole route inside the test host for this side's address;
before a link goes down an `unreachable` catch-all (metric 4242) keeps test traffic on the
machine. The namespace's name holds this process's pid and the index of each /30 it uses
(tunneltest-PID-I or tunneltest-PID-I-J-K), the veths' names the index, and each index is
reserved for as long as this process lives (an abstract Unix socket), so concurrent runs
never collide.
Every host removes its namespace, veths, routes and processes when closed, even after a
failure, and a new host first removes what dead runs left behind (a host whose index nobody
reserves any more).
"""

import ipaddress
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import tunneltest
from tunneltest import _read_text, Resource, add_diagnostic, kill_all, pid_alive, wait_until

IP = shutil.which("ip") or "/usr/sbin/ip"
SETPRIV = shutil.which("setpriv")
NET = ipaddress.ip_network("198.18.0.0/15")
GUARD = "198.18.0.0/15"          # the shared catch-all of the recipe
GUARD_METRIC = "4242"
NS_PREFIX = "tunneltest-"        # tunneltest-PID-INDEX[-INDEX...]
LOCK_NAME = "\0tunneltest-netns-lock"
_NS_RE = re.compile(r"^tunneltest-(\d+)-(\d+(?:-\d+)*)$")
_available = []


def ip(*args, check=True, ns=None):
    """Run `ip [-n ns] args`; CompletedProcess (text). CalledProcessError with ip's message
    when check and it fails."""
    argv = [IP] + (["-n", ns] if ns else []) + [str(a) for a in args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise subprocess.CalledProcessError(r.returncode, argv, r.stdout, r.stderr)
    return r


def available():
    """None if test hosts can be made here, else why not (for skipTest). Checked once."""
    if not _available:
        _available.append(_check())
    return _available[0]


def _check():
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not os.path.exists(IP):
        return "no ip(8)"
    name = f"{NS_PREFIX}check{os.getpid()}"
    r = ip("netns", "add", name, check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    ip("netns", "del", name, check=False)
    return None


class _Lock:
    """Test hosts are created and removed, and the shared catch-all route added and
    removed, one process at a time. The lock is an abstract Unix socket name: no file is
    left behind, and the kernel lets go of it when its process dies."""

    def __enter__(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.sock.bind(LOCK_NAME)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.sock.close()
                    raise RuntimeError("another test process holds the netns lock for 60 s") from None
                time.sleep(0.01)

    def __exit__(self, *exc):
        self.sock.close()
        return False


def _reserve(index):
    """Reserve the /30 `index` for as long as this process lives; the socket, or None if
    another live process holds it."""
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        lock.bind(f"\0tunneltest-net-{index}")
    except OSError:
        lock.close()
        return None
    return lock


def _index_addresses(index):
    base = NET.network_address + 4 * index
    return base, str(base + 1), str(base + 2)


def _reserve_free_index(taken=()):
    """A /30 of 198.18.0.0/15 that no address, test host or other index in taken uses:
    (index, its reservation). Call under _Lock()."""
    used = set(taken)
    for line in ip("-o", "-4", "addr", "show", check=False).stdout.splitlines():
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", line)
        if m and ipaddress.ip_address(m.group(1)) in NET:
            used.add((int(ipaddress.ip_address(m.group(1))) - int(NET.network_address)) // 4)
    for _, indices in _live_hosts().values():
        used |= set(indices)
    rng = random.Random(os.getpid() * 7919 + time.monotonic_ns())
    for _ in range(1000):
        index = rng.randrange(1, NET.num_addresses // 4 - 1)
        if index in used or os.path.exists(f"/sys/class/net/tt{index}o"):
            continue
        lock = _reserve(index)
        if lock is not None:
            return index, lock
    raise RuntimeError("no free /30 in 198.18.0.0/15")


def _ns_pids(ns):
    r = ip("netns", "pids", ns, check=False)
    return [int(p) for p in r.stdout.split() if p.isdigit()] if r.returncode == 0 else []


def _live_hosts():
    """{netns name: (pid, [index, ...])} of every test host (of any run) that exists now."""
    r = ip("netns", "list", check=False)
    out = {}
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NS_RE.match(name)
        if m:
            out[name] = (int(m.group(1)), [int(i) for i in m.group(2).split("-")])
    return out


def _remove_host(ns, indices):
    """Kill every process in ns, delete ns, this side's veths and the /30s' routes. Never
    raises (cleanup)."""
    try:
        pids = _ns_pids(ns)
        kill_all(pids)
        if any(pid_alive(p) for p in pids):  # not ours to reap: wait a little longer
            wait_until(lambda: not any(pid_alive(p) for p in pids), 5, what=f"processes in {ns} to die")
    except Exception:
        pass
    ip("netns", "del", ns, check=False)
    for index in indices:
        ip("link", "del", f"tt{index}o", check=False)
        base, _, _ = _index_addresses(index)
        ip("route", "del", "unreachable", f"{base}/30", "metric", GUARD_METRIC, check=False)


def _guard_present():
    r = ip("route", "show", "type", "unreachable", GUARD, check=False)
    return any(f"metric {GUARD_METRIC}" in line for line in r.stdout.splitlines())


def _remove_stale():
    """Remove the test hosts of runs that died without cleaning up: nobody holds their
    /30's reservation any more (a pid alone could be of another pid namespace)."""
    for ns, (pid, indices) in _live_hosts().items():
        if pid == os.getpid():
            continue
        locks = [_reserve(index) for index in indices]
        try:
            if all(lock is not None for lock in locks):
                _remove_host(ns, indices)
        finally:
            for lock in locks:
                if lock is not None:
                    lock.close()


class TestHost(Resource):
    """A network namespace `ns` with a veth pair: `outside` (here, `local_addr`) and
    `inside` (in ns, `remote_addr`), a /30 of 198.18.0.0/15 of its own, lo up in ns.

    From creation on, an `unreachable` route for the /30 with metric 4242 stands behind the
    connected route (so while the link is down, connects fail at once with "Network is
    unreachable" and never leave the machine); link_down() also makes sure the recipe's
    shared catch-all `unreachable 198.18.0.0/15 metric 4242` exists (it is removed when the
    last test host of any run goes)."""

    def __init__(self):
        self.ns = None
        self.index = None
        self._reservation = None

    def _reserve_index(self):
        return _reserve_free_index()

    def start(self):
        with _Lock():
            _remove_stale()
            self.index, self._reservation = self._reserve_index()
            self.ns = f"{NS_PREFIX}{os.getpid()}-{self.index}"
            self.outside, self.inside = f"tt{self.index}o", f"tt{self.index}i"
            base, self.local_addr, self.remote_addr = _index_addresses(self.index)
            self.subnet = f"{base}/30"
            self._diag = add_diagnostic(f"test host {self.ns}", self.describe)
            ip("netns", "add", self.ns)
            ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
            # No IPv6 link-local addresses: their duplicate address detection would send
            # netlink events seconds later, when a test may be timing its own.
            for dev in (self.outside, self.inside):
                ip("link", "set", "dev", dev, "addrgenmode", "none", check=False)
            ip("link", "set", self.inside, "netns", self.ns)
            ip("route", "add", "unreachable", self.subnet, "metric", GUARD_METRIC)
            ip("addr", "add", f"{self.local_addr}/30", "dev", self.outside)
            ip("link", "set", self.outside, "up")
            ip("link", "set", "lo", "up", ns=self.ns)
            ip("addr", "add", f"{self.remote_addr}/30", "dev", self.inside, ns=self.ns)
            ip("link", "set", self.inside, "up", ns=self.ns)

    def describe(self):
        out = []
        for argv in (["addr"], ["route"]):
            out.append(f"[{self.ns}] ip {' '.join(argv)}:\n" + ip(*argv, ns=self.ns, check=False).stdout)
        out.append("ip route (here):\n" + ip("route", check=False).stdout)
        return "\n".join(out)

    # -- running things inside --
    def exec_argv(self, argv):
        """argv run inside the namespace (and killed if this process dies, when setpriv can
        arrange it: `ip netns exec` execs, so the program is our child)."""
        return [IP, "netns", "exec", self.ns, *([SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []), *argv]

    def pids(self):
        return _ns_pids(self.ns)

    # -- faults --
    def blackhole(self):
        """Silent blackhole: the host's replies to this side vanish (no link event here)."""
        ip("route", "add", "blackhole", f"{self.local_addr}/32", ns=self.ns)

    def unblackhole(self):
        ip("route", "del", "blackhole", f"{self.local_addr}/32", ns=self.ns)

    def link_down(self):
        """Take this side's veth down (a real netlink event). The catch-all routes keep test
        traffic on the machine meanwhile."""
        with _Lock():
            if not _guard_present():
                ip("route", "add", "unreachable", GUARD, "metric", GUARD_METRIC, check=False)
        ip("link", "set", self.outside, "down")

    def link_up(self):
        ip("link", "set", self.outside, "up")

    def close(self):
        if self.ns is not None:
            self._diag.freeze()
            with _Lock():
                _remove_host(self.ns, [self.index])
                others = [n for n in _live_hosts() if n != self.ns]
                if not others:
                    ip("route", "del", "unreachable", GUARD, "metric", GUARD_METRIC, check=False)
            self.ns = None
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None
        super().close()


class Path:
    """One of a TwoPathHost's veth pairs: `outside` here with `local_addr`, `inside` in the
    namespace with `gateway`, a /30 of its own (`subnet`)."""

    def __init__(self, name, index):
        base, self.local_addr, self.gateway = _index_addresses(index)
        self.name, self.index = name, index
        self.subnet = f"{base}/30"
        self.outside, self.inside = f"tt{index}o", f"tt{index}i"

    def __repr__(self):
        return f"<path {self.name}: {self.outside} {self.local_addr} -> {self.gateway}>"


class TwoPathHost(TestHost):
    """A test host reachable by two paths, the recipe's "A path that moves"
    (/work/shared/network-faults-here.md): veth pairs A and B (`paths`, each a Path), and
    the server's address `remote_addr`, a /32 on the namespace's lo, behind both. Here it is
    routed by A at first (`current`). A server started inside (NetnsSSHServer(host)) listens
    on remote_addr.

    move(to): what a laptop changing networks does: the current path's local address is
    removed (its routes go with it) and the server is routed by the other path; a new
    connection works at once, one established over the old path is silently dead.
    route_via(name) moves the route alone (the old address stays). Each /30 (A, B and the
    server's) has its `unreachable` catch-all behind it from creation on, so test traffic
    never leaves the machine, whatever is removed."""

    def __init__(self):
        super().__init__()
        self.indices = []
        self._reservations = []
        self.paths = {}
        self.current = None

    def start(self):
        with _Lock():
            _remove_stale()
            for _ in range(3):
                index, lock = _reserve_free_index(self.indices)
                self.indices.append(index)
                self._reservations.append(lock)
            self.index = self.indices[0]
            self.ns = f"{NS_PREFIX}{os.getpid()}-{'-'.join(str(i) for i in self.indices)}"
            self.paths = {"A": Path("A", self.indices[0]), "B": Path("B", self.indices[1])}
            base, self.remote_addr, _ = _index_addresses(self.indices[2])
            self.server_subnet = f"{base}/30"
            self._diag = add_diagnostic(f"test host {self.ns}", self.describe)
            ip("netns", "add", self.ns)
            ip("link", "set", "lo", "up", ns=self.ns)
            ip("addr", "add", f"{self.remote_addr}/32", "dev", "lo", ns=self.ns)
            ip("route", "add", "unreachable", self.server_subnet, "metric", GUARD_METRIC)
            for p in self.paths.values():
                ip("link", "add", p.outside, "type", "veth", "peer", "name", p.inside)
                for dev in (p.outside, p.inside):   # no IPv6 DAD events later (see TestHost)
                    ip("link", "set", "dev", dev, "addrgenmode", "none", check=False)
                ip("link", "set", p.inside, "netns", self.ns)
                ip("route", "add", "unreachable", p.subnet, "metric", GUARD_METRIC)
                ip("addr", "add", f"{p.local_addr}/30", "dev", p.outside)
                ip("link", "set", p.outside, "up")
                ip("addr", "add", f"{p.gateway}/30", "dev", p.inside, ns=self.ns)
                ip("link", "set", p.inside, "up", ns=self.ns)
            self.route_via("A")

    @property
    def local_addr(self):
        """This side's address on the path in use."""
        return self.paths[self.current].local_addr if self.current else None

    # -- moving the path --
    def route_via(self, name):
        """Route the server by path `name` (ip route replace), its local address kept."""
        ip("route", "replace", f"{self.remote_addr}/32", "via", self.paths[name].gateway)
        self.current = name

    def remove_address(self, name):
        ip("addr", "del", f"{self.paths[name].local_addr}/30", "dev", self.paths[name].outside)

    def add_address(self, name):
        ip("addr", "add", f"{self.paths[name].local_addr}/30", "dev", self.paths[name].outside)

    def other(self, name=None):
        return "B" if (name or self.current) == "A" else "A"

    def move(self, to=None, remove_address=True):
        """The path moves to `to` (default: the other one): the current path's address is
        removed (unless remove_address is false), then the server is routed by `to`."""
        to = to or self.other()
        if remove_address:
            self.remove_address(self.current)
        self.route_via(to)

    # -- faults --
    def blackhole(self):
        """Silent blackhole of both paths: the host's replies to this side vanish."""
        for p in self.paths.values():
            ip("route", "add", "blackhole", f"{p.local_addr}/32", ns=self.ns)

    def unblackhole(self):
        for p in self.paths.values():
            ip("route", "del", "blackhole", f"{p.local_addr}/32", ns=self.ns, check=False)

    def link_down(self, name=None):
        with _Lock():
            if not _guard_present():
                ip("route", "add", "unreachable", GUARD, "metric", GUARD_METRIC, check=False)
        ip("link", "set", self.paths[name or self.current].outside, "down")

    def link_up(self, name=None):
        ip("link", "set", self.paths[name or self.current].outside, "up")

    def close(self):
        if self.ns is not None:
            self._diag.freeze()
            with _Lock():
                _remove_host(self.ns, self.indices)
                if not [n for n in _live_hosts() if n != self.ns]:
                    ip("route", "del", "unreachable", GUARD, "metric", GUARD_METRIC, check=False)
            self.ns = None
        for lock in self._reservations:
            lock.close()
        self._reservations = []
        Resource.close(self)


# ---- sshd in a test host ---------------------------------------------------------------

class NetnsSSHServer(tunneltest.SSHServer):
    """sshd on host.remote_addr:22 inside a TestHost; lets root in with client_key.

    stop() and start() again keep keys and known_hosts (the sshd-restart fault)."""

    def __init__(self, host, port=22, extra_config=()):
        self.host = host
        super().__init__(extra_config=extra_config, address=host.remote_addr, port=port)

    def _argv(self, argv):
        return self.host.exec_argv(argv)

    def stop(self):
        """Kill the listener and every session: the server goes away (SIGKILL, no goodbye)."""
        if self.proc is None:
            return
        sessions = tunneltest.descendants_of(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        kill_all(sessions)
        self.proc = None

    def tunnel_defaults(self):
        """Tunnel settings that reach this server as root with client_key."""
        return {"host": self.host.remote_addr, **super().tunnel_defaults()}


# ---- tagged echo server, and ports of listeners that come and go ---------------------

_ECHO_CODE = r"""
import socket, socketserver, sys
TAG = sys.argv[2].encode()
class H(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(60)
        buf = b""
        try:
            while True:
                d = self.request.recv(65536)
                if not d:
                    break
                buf += d
                *lines, buf = buf.split(b"\n")
                if lines:
                    self.request.sendall(b"".join(line + b"\n" + TAG for line in lines))
        except OSError:
            pass
class S(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
s = S(("127.0.0.1", int(sys.argv[1])), H)
print("listening", flush=True)
s.serve_forever()
"""


class TaggedEchoServer(Resource):
    """A line echo server on 127.0.0.1:port, inside a TestHost (host) or here (host None),
    in a process of its own (a thread cannot stay in another namespace). Each line comes
    back followed by `tag`, which no other echo server on the machine adds: a reply proves
    the bytes went through our tunnel to this server, not to whatever else took the port
    meanwhile (tagged_roundtrip()). stop() kills it with every connection; start() again
    listens on the same port."""

    def __init__(self, host=None, port=None, tag=None):
        self.host = host
        self.port = port
        self.proc = None
        self.tag = (tag or f"<tunneltest-echo {os.getpid()}-{random.getrandbits(32):08x}>").encode()

    def start(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.port is None:
            self.port = tunneltest.free_port() if self.host is None else 7
        argv = [sys.executable, "-c", _ECHO_CODE, str(self.port), self.tag.decode()]
        if self.host is not None:
            argv = self.host.exec_argv(argv)
        elif SETPRIV:
            argv = [SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if line.strip() != b"listening":
            err = self.proc.stderr.read() if self.proc.poll() is not None else b""
            self.stop()
            raise AssertionError(f"echo server on port {self.port} did not start: {line!r} {err!r}")

    # the forward spec to this server (127.0.0.1:PORT:127.0.0.1:its port, on its host)
    forward = tunneltest.EchoServer.forward

    def roundtrip(self, port, payload=b"tunneltest payload\n", timeout=1.0):
        """True if a line sent to 127.0.0.1:port comes back from this server (tagged)."""
        return tagged_roundtrip(port, self.tag, payload, timeout)

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            for f in (self.proc.stdout, self.proc.stderr):
                f.close()
            self.proc = None

    def close(self):
        self.stop()
        super().close()


def tagged_roundtrip(port, tag, payload=b"tunneltest payload\n", timeout=1.0):
    """Send payload (one line) to 127.0.0.1:port; True if payload + tag comes back within
    timeout seconds. Never raises, never hangs."""
    return tunneltest.echo_roundtrip(port, payload, timeout, expect=payload + tag)


def listener_port():
    """A port for a listener that comes and goes (a tunnel's -L or -R port: free while ssh
    is down), from 10000-19999, reserved like tunneltest.free_port()'s (same abstract-socket
    names, so other tunneltest processes keep off it too). Not from free_port()'s
    20000-32767: bench/ hands out 20000-32700 to its own forwards without that reservation,
    and a foreign echo once answered on a tunnel's port while its ssh was down."""
    return tunneltest.reserve_port(10000, 19999)


# ---- a bare ssh -N -L through a test host, and a client that keeps it busy --------------

class SSHTunnel(Resource):
    """A bare `ssh -N -L 127.0.0.1:listen_port:127.0.0.1:target_port` (no tunneld) to a
    NetnsSSHServer, with ServerAliveInterval `server_alive` (× 3) and the server's own keys;
    start() returns once a line comes back from `echo` (a TaggedEchoServer in the host)
    through it. `exited_at` is when its exit was seen (a thread waits for it)."""

    def __init__(self, sshd, echo, server_alive=30, extra_options=()):
        self.sshd, self.echo = sshd, echo
        self.server_alive = server_alive
        self.extra_options = list(extra_options)
        self.proc = None
        self.exited_at = None

    def argv(self):
        opts = ["BatchMode=yes", f"UserKnownHostsFile={self.sshd.known_hosts}", "GlobalKnownHostsFile=/dev/null",
                "StrictHostKeyChecking=yes", f"ServerAliveInterval={self.server_alive}", "ServerAliveCountMax=3",
                "ExitOnForwardFailure=yes", "ConnectTimeout=10", "ControlMaster=no", "ControlPath=none",
                *self.extra_options]
        argv = [tunneltest.SSH, "-N", "-F", "/dev/null", "-i", self.sshd.client_key, "-p", str(self.sshd.port)]
        for o in opts:
            argv += ["-o", o]
        return argv + ["-L", f"127.0.0.1:{self.listen_port}:127.0.0.1:{self.echo.port}",
                       f"root@{self.sshd.host.remote_addr}"]

    def start(self):
        self.listen_port = listener_port()
        self.stderr = tempfile.NamedTemporaryFile(prefix="tunneltest-ssh-", suffix=".log", delete=False)
        self._diag = add_diagnostic(f"bare ssh -L {self.listen_port}", lambda: _read_text(self.stderr.name)[-3000:])
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, start_new_session=True)
        self._waiter = threading.Thread(target=self._wait, args=(self.proc,), daemon=True)
        self._waiter.start()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"ssh exited ({self.proc.returncode}): {_read_text(self.stderr.name)}")
            return self.echo.roundtrip(self.listen_port, timeout=1.0)
        wait_until(up, 30, interval=0.1, what=f"bytes through ssh -L {self.listen_port}")

    @property
    def pid(self):
        return self.proc.pid

    def _wait(self, proc):
        proc.wait()
        self.exited_at = time.monotonic()

    def wait_exit(self, timeout):
        """Wait up to timeout s for ssh to exit; its status (None if it still runs)."""
        self._waiter.join(timeout)
        return None if self._waiter.is_alive() else self.proc.returncode

    def log(self):
        return _read_text(self.stderr.name)

    def close(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self._waiter.join(5)
            self.proc = None
            self._diag.freeze()
            self.stderr.close()
            os.unlink(self.stderr.name)
        super().close()


class SteadyClient(Resource):
    """A client that sends a line through 127.0.0.1:port every `interval` s (a busy
    tunnel) and reads the echoes, tagged by `tag`, from a thread. `replies` holds the
    monotonic time of each echo; `sent` of each line sent; it stops by itself on an error
    (the connection broke: `error`)."""

    def __init__(self, port, tag, interval=0.1):
        self.port, self.tag, self.interval = port, tag, interval
        self.sent, self.replies = [], []
        self.error = None
        self.stopping = threading.Event()

    def start(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.sock.setblocking(False)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        buf, n = b"", 0
        line = b"steady client line\n"
        want = line + self.tag
        next_send = time.monotonic()
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                if now >= next_send:
                    try:
                        self.sock.send(line)
                    except BlockingIOError:
                        pass        # the send buffer is full (a dead path): skip this one
                    self.sent.append(now)
                    n += 1
                    next_send += self.interval
                ready, _, _ = select.select([self.sock], [], [], max(0.0, next_send - time.monotonic()))
                if ready:
                    data = self.sock.recv(65536)
                    if not data:
                        self.error = "closed"
                        return
                    buf += data
                    while want in buf:
                        buf = buf[buf.index(want) + len(want):]
                        self.replies.append(time.monotonic())
        except OSError as e:
            self.error = str(e)

    def replies_since(self, t):
        return [r for r in list(self.replies) if r >= t]

    def close(self):
        self.stopping.set()
        if getattr(self, "thread", None):
            self.thread.join(5)
        if getattr(self, "sock", None):
            self.sock.close()
            self.sock = None
        super().close()
