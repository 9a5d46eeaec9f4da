"""What the benchmarks run against: keys, sshd, echo server, test netns, tunneld, autossh."""
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

from .probe import echo_ok
from .util import (BenchError, alive, children, log, now, on_cleanup, run, run_cleanup, spawn,
                   stop_process)

LIB = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ECHO_SERVER = os.path.join(LIB, "echo_server.py")
SSHD = "/usr/sbin/sshd"
AUTOSSH = "autossh"


class Context:
    """The run's temp dir, port allocator and the tunneld binaries (copied, so a rebuild by
    someone else during the run cannot swap them under us)."""

    def __init__(self, tmp, ports, tunneld, tunnelctl, quick):
        self.tmp = tmp
        self.ports = ports
        self.tunneld = tunneld
        self.tunnelctl = tunnelctl
        self.quick = quick
        self._n = 0

    def path(self, name):
        return os.path.join(self.tmp, name)

    def unique(self, prefix):
        self._n += 1
        return self.path(f"{prefix}-{self._n}")


# ---- keys and sshd --------------------------------------------------------------------

class Keys:
    """A host key, a client key, authorized_keys and known_hosts in ctx.path(name): one set per
    sshd that must not share them with another (the shared-connections benchmark's destinations)."""

    def __init__(self, ctx, name="keys"):
        d = ctx.path(name)
        os.makedirs(d, mode=0o700, exist_ok=True)
        self.host_key = os.path.join(d, "host_ed25519")
        self.client_key = os.path.join(d, "client_ed25519")
        for k, c in ((self.host_key, "tbench-host"), (self.client_key, "tbench-client")):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", c, "-f", k])
        self.authorized_keys = os.path.join(d, "authorized_keys")
        with open(self.client_key + ".pub") as f, open(self.authorized_keys, "w") as g:
            g.write(f.read())
        with open(self.host_key + ".pub") as f:
            self.host_pub = " ".join(f.read().split()[:2])
        self.known_hosts = os.path.join(d, "known_hosts")
        open(self.known_hosts, "w").close()

    def trust(self, addr, port):
        with open(self.known_hosts, "a") as f:
            f.write(f"[{addr}]:{port} {self.host_pub}\n")


class Sshd:
    def __init__(self, ctx, keys, addr, port, netns=None, name="sshd"):
        self.ctx, self.keys, self.addr, self.port, self.netns = ctx, keys, addr, port, netns
        self.name = name
        self.conf = ctx.path(f"{name}_config")
        self.log = ctx.path(f"{name}.log")
        self.proc = None
        self.token = None

    def start(self):
        os.makedirs("/run/sshd", exist_ok=True)      # privilege separation directory
        with open(self.conf, "w") as f:
            f.write(f"""# bench/run: a throwaway sshd
ListenAddress {self.addr}
Port {self.port}
HostKey {self.keys.host_key}
AuthorizedKeysFile {self.keys.authorized_keys}
PidFile none
StrictModes no
PermitRootLogin yes
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
UseDNS no
# many tunnels connect at once: never drop unauthenticated connections before 2000
MaxStartups 2000:30:3000
MaxSessions 100
LoginGraceTime 60
""")
        argv = [SSHD, "-D", "-e", "-f", self.conf]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        self.proc = spawn(argv, log_path=self.log)
        self.token = on_cleanup(self.name, self.stop)
        self.keys.trust(self.addr, self.port)
        end = now() + 10
        while now() < end:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection((self.addr, self.port), timeout=1) as s:
                    banner = s.recv(64)
                if banner.startswith(b"SSH-2.0-OpenSSH") and self.proc.poll() is None:
                    time.sleep(0.1)     # someone else's sshd on the port would make ours exit now
                    if self.proc.poll() is None:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        with open(self.log, errors="replace") as f:
            raise BenchError(f"{self.name} did not start on {self.addr}:{self.port}: {f.read()[-500:]}")

    def sessions(self):
        """sshd processes serving connections (below the listener)."""
        from .util import descendants
        return [p for p in descendants(self.proc.pid) if alive(p)] if self.proc else []

    def wait_sessions_gone(self, timeout=30):
        end = now() + timeout
        while now() < end:
            if not self.sessions():
                return True
            time.sleep(0.2)
        return False

    def stop(self):
        if self.proc:
            stop_process(self.proc, timeout=5)
            self.proc = None


class EchoServer:
    def __init__(self, ctx, addr, port, netns=None, name="echo"):
        self.ctx, self.addr, self.port, self.netns, self.name = ctx, addr, port, netns, name
        self.proc = None

    def start(self):
        argv = [sys.executable, ECHO_SERVER, self.addr, str(self.port)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        self.proc = spawn(argv, log_path=self.ctx.path(f"{self.name}.log"), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE)
        on_cleanup(self.name, self.stop)
        line = self.proc.stdout.readline()
        if line.strip() != b"READY":
            raise BenchError(f"echo server {self.addr}:{self.port} did not start")
        if not self.netns and not echo_ok(self.addr, self.port):
            raise BenchError(f"echo server {self.addr}:{self.port} does not echo")
        return self

    def stop(self):
        if self.proc:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            stop_process(self.proc, timeout=5)
            self.proc = None


# ---- sd_notify ------------------------------------------------------------------------

class NotifySocket:
    """Our own NOTIFY_SOCKET: a thread drains it at once (a full datagram queue would block
    tunneld's sd_notify) and timestamps every message on arrival."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.msgs = []
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        on_cleanup("notify socket", self.close)

    def _loop(self):
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            t = now()
            with self.cond:
                self.msgs.append((t, data.decode(errors="replace")))
                self.cond.notify_all()

    def wait_for(self, key, after, timeout):
        """Arrival time of the first message after `after` holding line `key` (e.g. READY=1)."""
        end = now() + timeout
        with self.cond:
            while True:
                for t, m in self.msgs:
                    if t >= after and key in m.split("\n"):
                        return t, m
                left = end - now()
                if left <= 0:
                    return None, None
                self.cond.wait(left)

    def count_after(self, after):
        with self.cond:
            return sum(1 for t, _ in self.msgs if t >= after)

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass


# ---- tunneld --------------------------------------------------------------------------

def _q(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _val(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "( " + ", ".join(_q(x) for x in v) + " )"
    return _q(v)


def write_tunneld_conf(path, globals_, defaults, tunnels):
    """tunnels: list of dicts (name, local_forwards, …) in libconfig syntax."""
    lines = ["# written by bench/run"]
    lines += [f"{k} = {_val(v)};" for k, v in globals_.items()]
    lines.append("defaults = {")
    lines += [f"        {k} = {_val(v)};" for k, v in defaults.items()]
    lines.append("};")
    lines.append("tunnels = (")
    body = []
    for t in tunnels:
        body.append("        { " + " ".join(f"{k} = {_val(v)};" for k, v in t.items()) + " }")
    lines.append(",\n".join(body))
    lines.append(");")
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def tunnel_defaults(keys, addr, port, **extra):
    d = {
        "host": addr,
        "port": port,
        "user": "root",
        "identity_file": keys.client_key,
        "ssh_config_file": "/dev/null",
        "ssh_options": [f"UserKnownHostsFile={keys.known_hosts}", "StrictHostKeyChecking=yes"],
    }
    d.update(extra)
    return d


# The options that make tunneld's ssh a multiplexing master of tunneld's own (and the log
# level tunneld reads it at): a standalone ssh, as autossh or a user runs it, has none of them.
MUX_ONLY_OPTIONS = ("ControlMaster", "ControlPath", "ControlPersist", "ClearAllForwardings", "LogLevel",
                    "LogVerbose")


def ssh_commands(ctx, conf):
    """What `tunneld -t -v` prints, per tunnel: {name: {"argv": the ssh command line tunneld
    runs (for a tunnel on a shared connection, that connection's), "forwards": [flag, spec]
    pairs tunneld opens over ssh's control socket, "shared": "~CARRIER" or None}}."""
    r = run([ctx.tunneld, "-t", "-v", "-c", conf])
    out, carriers = {}, {}
    for line in r.stdout.splitlines()[1:]:
        head, _, rest = line.partition(": ")
        if not rest or head.startswith("shared connection"):
            continue
        name = head.split(" ")[0]                       # "name (disabled)", "~name (the shared connection of …)"
        if rest.startswith("opened over ssh's control socket: "):
            words = rest.split(": ", 1)[1].split()
            out.setdefault(name, {"argv": None, "forwards": [], "shared": None})["forwards"] += \
                [[words[i], words[i + 1]] for i in range(0, len(words) - 1, 2)]
        elif rest == "rides it" or rest.startswith("rides the shared connection "):
            carrier = f"~{name}" if rest == "rides it" else rest.split()[4]
            t = out.setdefault(name, {"argv": None, "forwards": [], "shared": None})
            t["shared"], t["argv"] = carrier, carriers.get(carrier)
        elif name.startswith("~"):
            carriers[name] = shlex.split(rest)
        else:
            out.setdefault(name, {"argv": None, "forwards": [], "shared": None})["argv"] = shlex.split(rest)
    return out


def standalone_argv(argv, forwards):
    """tunneld's ssh command line made the one a user would give autossh (or run bare): the
    same options less the multiplexing ones (MUX_ONLY_OPTIONS), ExitOnForwardFailure=yes, and
    the forwards on the command line instead of over the control socket."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "-o" and i + 1 < len(argv):
            key = argv[i + 1].split("=", 1)[0]
            if key in MUX_ONLY_OPTIONS:
                i += 2
                continue
            if key == "ExitOnForwardFailure":
                out += ["-o", "ExitOnForwardFailure=yes"]
                i += 2
                continue
        if a == "--":
            for flag, spec in forwards:
                out += [flag, spec]
        out.append(a)
        i += 1
    if "--" not in argv:
        raise BenchError(f"no -- before the host in tunneld's ssh command line: {argv}")
    return out


def ssh_argvs(ctx, conf):
    """{name: argv} of a standalone ssh per tunnel not on a shared connection, with the ssh
    options tunneld gives ssh (tunneld -t -v) and the tunnel's forwards on the command line:
    what autossh and the floor run (standalone_argv)."""
    return {name: standalone_argv(t["argv"], t["forwards"])
            for name, t in ssh_commands(ctx, conf).items() if t["argv"] and not t["shared"]}


class Tunneld:
    def __init__(self, ctx, conf, ctl, name="tunneld", wrapper=None, notify=None):
        self.ctx, self.conf, self.ctl, self.name = ctx, conf, ctl, name
        self.wrapper = wrapper or []
        self.notify = notify
        self.log = ctx.path(f"{name}.log")
        self.proc = None
        self.t_start = None
        self._pid = None

    def start(self):
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        if self.notify:
            env["NOTIFY_SOCKET"] = self.notify.path
        self.t_start = now()
        self.proc = spawn(self.wrapper + [self.ctx.tunneld, "-c", self.conf], log_path=self.log, env=env)
        self.token = on_cleanup(self.name, self.stop)
        return self

    @property
    def pid(self):
        """tunneld's own pid (under strace it is strace's child)."""
        if self._pid:
            return self._pid
        if not self.wrapper or self.wrapper[0].endswith("valgrind"):
            self._pid = self.proc.pid
            return self._pid
        end = now() + 10
        real = os.path.realpath(self.ctx.tunneld)
        while now() < end:
            try:
                if os.readlink(f"/proc/{self.proc.pid}/exe") == real:     # prlimit execs it
                    self._pid = self.proc.pid
                    return self._pid
            except OSError:
                pass
            for c in children(self.proc.pid):
                try:
                    if os.readlink(f"/proc/{c}/exe") == os.path.realpath(self.ctx.tunneld):
                        self._pid = c
                        return c
                except OSError:
                    pass
            time.sleep(0.01)
        raise BenchError("cannot find tunneld's pid below its wrapper")

    def ctl_cmd(self, *args, timeout=20):
        return subprocess.run([self.ctx.tunnelctl, "-s", self.ctl, *args], capture_output=True, text=True,
                              timeout=timeout)

    def status(self):
        r = self.ctl_cmd("--json", "status")
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise BenchError(f"tunnelctl status: exit {r.returncode}: {r.stdout[:200]} {r.stderr[:200]}")

    def wait_ctl(self, timeout=10):
        end = now() + timeout
        while now() < end:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            if os.path.exists(self.ctl):
                try:
                    return self.status()
                except (BenchError, subprocess.TimeoutExpired):
                    pass
            time.sleep(0.05)
        raise BenchError(f"{self.name}: no control socket after {timeout} s")

    def ssh_pids(self):
        return [p for p in children(self.pid) if alive(p)]

    def stop(self, timeout=30):
        """SIGTERM; seconds until tunneld exited (it waits for every ssh first)."""
        if not self.proc:
            return None
        took = None
        if self.proc.poll() is None:
            t0 = now()
            try:
                os.kill(self.pid, signal.SIGTERM)
            except (OSError, BenchError):
                pass
            try:
                self.proc.wait(timeout=timeout)
                took = now() - t0
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within {timeout} s")
        stop_process(self.proc, timeout=5)
        self.proc = None
        return took


# ---- autossh --------------------------------------------------------------------------

def autossh_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSSH_")}
    env["AUTOSSH_GATETIME"] = "0"
    env.update(extra or {})
    return env


class Autossh:
    """One `autossh -M 0 SSH_ARGS` (Debian's wrapper execs the real autossh, same pid)."""

    def __init__(self, ssh_args, log_path=None, env_extra=None):
        self.ssh_args = ssh_args
        self.log_path = log_path
        self.env = autossh_env(env_extra)
        self.proc = None

    def start(self, held=False):
        """held: the process stops itself before it execs autossh, so that a fleet can be
        released at once (SIGCONT), like systemd starting N autossh units at boot."""
        argv = [AUTOSSH, "-M", "0"] + self.ssh_args
        if held:
            argv = ["sh", "-c", 'kill -STOP $$; exec "$0" "$@"'] + argv
        self.proc = spawn(argv, log_path=self.log_path, env=self.env)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def ssh_pids(self):
        return [p for p in children(self.proc.pid) if alive(p)]

    def ssh_pid(self, timeout=10):
        end = now() + timeout
        while now() < end:
            for c in self.ssh_pids():
                try:
                    with open(f"/proc/{c}/comm") as f:
                        if f.read().strip() == "ssh":
                            return c
                except OSError:
                    pass
            time.sleep(0.005)
        raise BenchError("autossh has no ssh child")

    def stop(self, timeout=10):
        if self.proc:
            stop_process(self.proc, timeout=timeout)
            self.proc = None


class AutosshFleet:
    """N autossh processes, stopped together (SIGTERM to all, then wait)."""

    def __init__(self, argvs, log_dir, env_extra=None):
        self.members = [Autossh(a, None, env_extra) for a in argvs]
        self.token = None

    def start(self):
        """Launch every member stopped, wait until all are, then release them together; returns
        (launch seconds, monotonic time of the release)."""
        from .util import proc_state
        self.token = on_cleanup("autossh fleet", self.stop)
        t0 = now()
        for m in self.members:
            m.start(held=True)
        end = now() + 120
        waiting = [m.pid for m in self.members]
        while waiting and now() < end:
            waiting = [p for p in waiting if proc_state(p) != "T"]
            if waiting:
                time.sleep(0.01)
        if waiting:
            raise BenchError(f"{len(waiting)} autossh launchers did not reach their stop")
        launched = now() - t0
        t_go = now()
        for m in self.members:
            os.kill(m.pid, signal.SIGCONT)
        return launched, t_go

    def pids(self):
        return [m.pid for m in self.members if m.proc]

    def ssh_pids(self):
        out = []
        for m in self.members:
            if m.proc:
                out += m.ssh_pids()
        return out

    def stop(self, timeout=30):
        live = [m for m in self.members if m.proc]
        if not live:
            return None
        t0 = now()
        for m in live:
            try:
                os.kill(m.pid, signal.SIGTERM)
            except OSError:
                pass
        end = t0 + timeout
        for m in live:
            try:
                m.proc.wait(timeout=max(0.1, end - now()))
            except subprocess.TimeoutExpired:
                pass
        took = now() - t0
        for m in live:
            m.stop(timeout=2)
        return took


def stop_and_forget(token):
    run_cleanup(token)
