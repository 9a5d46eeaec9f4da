"""systemdtest: helpers for tunneld's systemd-facing tests (standard library only).

Built on tunneltest (the shared harness), for the tests under tests/systemd:

    NotifySocket      an AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET; it
                      records every message with its arrival time and sender pid
    JournalSocket     a stand-in for journald's /run/systemd/journal/socket, mounted in a
                      private mount namespace; it records every entry's fields
    SystemdTunneld    tunneltest.Tunneld that keeps the environment systemd would give tunneld
                      (NOTIFY_SOCKET, WATCHDOG_*, JOURNAL_STREAM, which Tunneld strips), and can
                      run it behind a wrapper command, with stderr a pipe or a terminal
    private_run_wrapper()  argv prefix: a private mount namespace with an empty /run
    fd_count()        how many file descriptors a process holds
    SystemdNamespace  a real systemd booted as PID 1 of private pid, mount and network
                      namespaces, with commands run inside it through nsenter;
                      .control(SOCKET): a target for tunneltest's tunnelctl(), status(),
                      wait_state(), wait_all() that runs tunnelctl inside

tunnelctl, status and the waits on a tunnel's state are tunneltest's (tunneltest/ctl.py).

Everything here cleans up after itself when closed, and at exit as a last resort.
"""

import os
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import tty
from unittest import mock

import tunneltest
from tunneltest import wait_until

TUNNELCTL = tunneltest.TUNNELCTL
require_tunnelctl = tunneltest.require_tunnelctl
SYSTEMD = "/lib/systemd/systemd"

Resource = tunneltest.Resource
read_text = tunneltest._read_text


# ---- sd_notify -------------------------------------------------------------------------

class Message:
    """One sd_notify datagram: arrival time (time.monotonic()), sender pid, fields."""

    KINDS = ("READY", "RELOADING", "STOPPING", "WATCHDOG")

    def __init__(self, at, pid, raw):
        self.at, self.pid, self.raw = at, pid, raw
        self.fields = dict(line.split("=", 1) for line in raw.split("\n") if "=" in line)

    @property
    def kind(self):
        """READY, RELOADING, STOPPING or WATCHDOG if the message carries one of them = 1,
        else STATUS (a status update alone)."""
        for k in self.KINDS:
            if self.fields.get(k) == "1":
                return k
        return "STATUS"

    @property
    def status(self):
        return self.fields.get("STATUS")

    def __repr__(self):
        return f"<{self.at:.3f} pid {self.pid} {self.raw!r}>"


class DatagramRecorder(Resource):
    """An AF_UNIX datagram socket in a directory of its own, and a thread that appends what
    self._take() makes of each datagram to self.received (under self.lock)."""

    def _listen(self, prefix, name, option, diag_title, diag):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.path = os.path.join(self.dir, name)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, *option)
        self.lock = threading.Lock()
        self.received = []
        self.stopping = False
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()
        self._diag = tunneltest.add_diagnostic(diag_title, diag)

    def _take(self):
        raise NotImplementedError

    def _receive(self):
        while not self.stopping:
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            try:
                item = self._take()
            except OSError:
                return
            with self.lock:
                self.received.append(item)

    def close(self):
        if getattr(self, "sock", None) is not None:
            self.stopping = True
            self.thread.join(2)
            self.sock.close()
            self.sock = None
            self._diag.freeze()
            shutil.rmtree(self.dir, ignore_errors=True)
        super().close()


class NotifySocket(DatagramRecorder):
    """systemd's side of sd_notify: a datagram socket that records every message.

    env is what a service gets: {"NOTIFY_SOCKET": path}."""

    CREDS = struct.calcsize("3i")

    def start(self):
        self._listen("tunneltest-notify-", "notify", (socket.SO_PASSCRED, 1), "sd_notify messages", self._text)
        self.env = {"NOTIFY_SOCKET": self.path}

    def _take(self):
        data, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(self.CREDS))
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:self.CREDS])[0]
        return Message(time.monotonic(), pid, data.decode("utf-8", "replace"))

    def messages(self, kind=None):
        """Every message so far (of one kind, if given), oldest first."""
        with self.lock:
            out = list(self.received)
        return [m for m in out if kind is None or m.kind == kind]

    def kinds(self, ignore=("WATCHDOG", "STATUS")):
        """The sequence of message kinds, without plain STATUS updates and watchdog pings."""
        return [m.kind for m in self.messages() if m.kind not in ignore]

    def wait(self, pred, timeout=10, after=0, what=None):
        """Wait for the first message at index >= after for which pred(message) is true;
        return (index, message)."""
        def found():
            msgs = self.messages()
            for i in range(after, len(msgs)):
                if pred(msgs[i]):
                    return i, msgs[i]
            return None
        return wait_until(found, timeout, interval=0.02, what=what or "an sd_notify message")

    def wait_kind(self, kind, timeout=10, after=0):
        return self.wait(lambda m: m.kind == kind, timeout, after, what=f"{kind}=1 on the notify socket")

    def wait_status(self, regex, timeout=10, after=0):
        """Wait for a message whose STATUS= matches regex (re.search); return (index, message)."""
        return self.wait(lambda m: m.status is not None and re.search(regex, m.status), timeout, after,
                         what=f"STATUS matching /{regex}/")

    def _text(self):
        return "\n".join(repr(m) for m in self.messages()[-40:])


def private_run_wrapper(journal_dir=None):
    """argv that runs a command (appended) in a mount namespace of its own, private (nothing
    leaks to the host), with an empty tmpfs on /run, or with only journal_dir mounted on
    /run/systemd/journal; it execs the command, which keeps the pid unshare started with."""
    script = "mount -t tmpfs tmpfs /run"
    if journal_dir is not None:
        script += (" && mkdir -p /run/systemd/journal"
                   f" && mount --bind {shlex.quote(journal_dir)} /run/systemd/journal")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script + ' && exec "$0" "$@"']


def parse_journal_entry(data):
    """Fields of one datagram of journald's native protocol: KEY=value lines, or KEY, a
    64-bit little-endian length and the value (for values with a newline)."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            size = struct.unpack("<Q", data[nl + 1:nl + 9])[0]
            value = data[nl + 9:nl + 9 + size]
            i = nl + 9 + size + 1
        fields[key.decode()] = value.decode("utf-8", "replace")
    return fields


class JournalSocket(DatagramRecorder):
    """A stand-in for journald's native socket: dir holds "socket", to be bind-mounted on
    /run/systemd/journal of a private mount namespace (see wrapper()). Records entries."""

    def start(self):
        self._listen("tunneltest-journal-", "socket", (socket.SO_RCVBUF, 4 << 20), "journal entries",
                     lambda: "\n".join(f"<{e.get('PRIORITY')}> {e.get('TUNNEL', '-')} "
                                       f"FAILURE={e.get('FAILURE', '')}: {e.get('MESSAGE')}"
                                       for e in self.entries()[-40:]))

    def _take(self):
        return parse_journal_entry(self.sock.recv(1 << 20))

    def wrapper(self):
        """argv to run a command in a private mount namespace whose journal socket is ours."""
        return private_run_wrapper(journal_dir=self.dir)

    def entries(self, **match):
        """Entries so far whose fields equal every match (e.g. TUNNEL="db"), oldest first."""
        with self.lock:
            out = list(self.received)
        return [e for e in out if all(e.get(k) == v for k, v in match.items())]

    def wait(self, regex, timeout=10, **match):
        """Wait for an entry matching match whose MESSAGE matches regex (re.search); return it."""
        def found():
            for e in self.entries(**match):
                if re.search(regex, e.get("MESSAGE", "")):
                    return e
            return None
        return wait_until(found, timeout, interval=0.02, what=f"a journal entry {match} /{regex}/")


# ---- tunneld with systemd's environment ------------------------------------------------

class SystemdTunneld(tunneltest.Tunneld):
    """tunneltest.Tunneld, started the way systemd would start it.

    systemd_env: environment entries to keep (Tunneld drops NOTIFY_SOCKET and
      JOURNAL_STREAM so that tests never talk to a real systemd by accident).
    wrapper: argv run before tunneld's own, which must exec tunneld in the end (so that
      .pid is tunneld's), e.g. ["unshare", "--mount", ...].
    stderr: what tunneld's stdout and stderr are: "file" (its log file, as Tunneld does),
      "pipe" or "tty" (a pseudo-terminal); a thread copies a pipe or tty into the log file.
    journal_stream: set JOURNAL_STREAM to that pipe's dev:ino, as systemd does for a service
      whose stderr is the journal (implies stderr="pipe").

    All of Tunneld's methods (wait_log, children, stop, close...) work unchanged; close()
    scans what the pipe or tty carried too (sanitizer reports go to stderr, not the journal)."""

    def __init__(self, *args, systemd_env=None, wrapper=(), stderr="file", journal_stream=False, **kw):
        super().__init__(*args, **kw)
        if stderr not in ("file", "pipe", "tty"):
            raise ValueError(f"stderr must be file, pipe or tty, not {stderr!r}")
        # Private names: Tunneld grows attributes of its own (it has a .wrapper now).
        self._sd_env = dict(systemd_env or {})
        self._sd_wrapper = list(wrapper)
        self._sd_stderr = "pipe" if journal_stream else stderr
        self._sd_journal_stream = journal_stream
        self._pump = None

    def _is_tunneld_start(self, argv):
        """True for the command line that starts tunneld itself (Tunneld may run others, such
        as tunneld -t, and put a wrapper of its own in front)."""
        argv = list(argv)
        if tunneltest.TUNNELD not in argv:
            return False
        i = argv.index(tunneltest.TUNNELD)
        return argv[i + 1:i + 3] == ["-c", getattr(self, "config_path", None)]

    def start(self):
        real_popen = subprocess.Popen
        launched = []

        def popen(argv, *args, **kw):
            if launched or not self._is_tunneld_start(argv):
                return real_popen(argv, *args, **kw)
            env = dict(kw.get("env") or os.environ)
            env.update(self._sd_env)
            read_end = None
            if self._sd_stderr == "pipe":
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
            elif self._sd_stderr == "tty":
                read_end, write_end = os.openpty()
                tty.setraw(write_end)  # no "\r\n" in the log
            if read_end is not None:
                if self._sd_journal_stream:
                    st = os.fstat(write_end)
                    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
                kw["stdout"] = kw["stderr"] = write_end
            kw["env"] = env
            try:
                proc = real_popen([*self._sd_wrapper, *argv], *args, **kw)
            finally:
                if read_end is not None:
                    os.close(write_end)
            if read_end is not None:
                self._pump = threading.Thread(target=self._copy_output, args=(read_end,), daemon=True)
                self._pump.start()
            launched.append(proc)
            return proc

        with mock.patch.object(subprocess, "Popen", popen):
            super().start()
        if not launched:
            raise RuntimeError("tunneltest.Tunneld.start() no longer runs tunneld through subprocess.Popen: "
                               "update systemdtest.SystemdTunneld")

    def _copy_output(self, fd):
        with open(self.log_path, "ab", buffering=0) as log:
            try:
                while True:
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:  # EIO: the last holder of the tty is gone
                        return
                    if not chunk:
                        return
                    log.write(chunk)
            finally:
                os.close(fd)

    def _output_done(self):
        """tunneld is gone: let the copier finish, so that close() scans all of its output
        for sanitizer reports."""
        if self._pump is not None:
            self._pump.join(5)
            self._pump = None

    def wait_exit(self, timeout=10):
        """As Tunneld's, and then the log holds all tunneld wrote (the copier has drained
        the pipe), so a test can read its last lines right after stop()."""
        status = super().wait_exit(timeout)
        self._output_done()
        return status

    def close(self):
        try:
            super().close()
        finally:
            self._output_done()


# ---- tunnelctl and /proc ---------------------------------------------------------------

def fd_count(pid):
    """Number of open file descriptors of pid."""
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---- a real systemd in private namespaces ----------------------------------------------

# PID 1 of the namespaces. /tmp and /run are private tmpfs (systemd-tmpfiles would empty
# the host's /tmp at boot otherwise), and /etc and /var (and those of OVERLAYS the test
# asks for, such as /usr) are overlays whose writes land in /run: the tunneld user that
# systemd-sysusers creates, ConfigurationDirectory= and StateDirectory=, systemd's own
# state, an installed package, none of it reaches the host's files. basic.target
# instead of the default target: the host's enabled services (an sshd, a database on the
# host's data directory...) must not start in here. container=: systemd then knows it is not
# the host's init, and its shutdown leaves the host's file systems, swap, loop and DM devices
# alone (a real init remounts / read-only on the way down: the host's own root). MASKED (in
# the private /etc): units that would change kernel-wide state from the host's configuration
# (binfmt rules, flushed again at stop; sysctls; modules; the root's mount options; /dev
# nodes) and every timer (apt, e2scrub...). journald does not import the kernel's log: it
# holds every other namespace journald's lines too.
MASKED_UNITS = ("systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount "
                "systemd-sysctl.service systemd-modules-load.service systemd-remount-fs.service "
                "systemd-tmpfiles-setup-dev.service kmod-static-nodes.service timers.target")
BOOT_SCRIPT = r"""
set -e
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
for d in $OVERLAYS; do
    mkdir -p /run/.overlay/$d/upper /run/.overlay/$d/work
    mount -t overlay overlay -o lowerdir=/$d,upperdir=/run/.overlay/$d/upper,workdir=/run/.overlay/$d/work /$d
done
mkdir -p /run/systemd/system /etc/systemd/system
for unit in $MASKED; do ln -sfn /dev/null /etc/systemd/system/$unit; done
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nReadKMsg=no\n' >/etc/systemd/journald.conf.d/tunneltest.conf
export container=tunneltest
exec "$0" --system --log-target=null --unit=basic.target
"""


def namespace_prerequisites():
    """None if a systemd can be booted in namespaces here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("unshare", "nsenter", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.access(SYSTEMD, os.X_OK):
        return f"{SYSTEMD} is missing"
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read():
            return "no overlay file system"
    return None


class SystemdNamespace(Resource):
    """systemd as PID 1 of private pid, mount and network namespaces (only lo).

    run()/sh() run commands inside through nsenter, put() writes a file inside. close()
    powers it off (SIGRTMIN+4) and waits; SIGKILL of its PID 1 ends everything inside if it
    does not stop in time, and if this process dies first its PID 1 is killed as well.

    overlays: the top-level directories whose writes land in the namespace's /run; /etc and
    /var always are. Add "usr" to install a package inside (dpkg writes /usr: /lib, /bin
    and /sbin are links into it on Debian 12)."""

    def __init__(self, boot_timeout=30, overlays=()):
        self.boot_timeout = boot_timeout
        for d in overlays:
            if not re.fullmatch(r"[a-z]+", d) or not os.path.isdir(f"/{d}") or os.path.islink(f"/{d}"):
                raise ValueError(f"overlays: {d!r} is not a top-level directory")
        self.overlays = " ".join(dict.fromkeys(("etc", "var", *overlays)))
        self.proc = None
        self.pid = None

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="tunneltest-systemd-")
        self.log_path = os.path.join(self.dir, "boot.log")
        self._diag = tunneltest.add_diagnostic("systemd namespace: journal (tail)", self._journal_tail)
        with open(self.log_path, "wb") as log:
            # setpriv: unshare dies with us; --kill-child: the namespace's PID 1 dies with unshare.
            self.proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--",
                 "unshare", "--fork", "--kill-child", "--pid", "--mount", "--mount-proc", "--net",
                 "--propagation", "private", "sh", "-c", BOOT_SCRIPT, SYSTEMD],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "MASKED": MASKED_UNITS,
                     "OVERLAYS": self.overlays})

        def systemd_pid():
            if self.proc.poll() is not None:
                raise AssertionError(f"unshare exited ({self.proc.returncode}): {read_text(self.log_path)}")
            for child in tunneltest.children_of(self.proc.pid):
                try:
                    with open(f"/proc/{child}/cmdline", "rb") as f:
                        if f.read().split(b"\0")[0] == SYSTEMD.encode():
                            return child
                except OSError:
                    pass
            return None
        self.pid = wait_until(systemd_pid, 10, what="systemd to start in the namespaces")

        def booted():
            r = self.run("systemctl", "is-system-running", check=False, timeout=10)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return state
            if state in ("stopping", "offline") or self.proc.poll() is not None:
                raise AssertionError(f"systemd in the namespace: {state}")
            return None
        self.state = wait_until(booted, self.boot_timeout, interval=0.2, what="systemd to finish booting")

    # -- commands inside --
    def command(self, *argv):
        return ["nsenter", "-t", str(self.pid), "-p", "-m", "-n", "--", *argv]

    def run(self, *argv, input=None, check=True, timeout=30):
        """Run argv inside; CompletedProcess (text unless input is bytes)."""
        text = not isinstance(input, bytes)
        r = subprocess.run(self.command(*argv), input=input, capture_output=True, text=text, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} (in the namespace) exited {r.returncode}:\n"
                                 f"{r.stdout}{r.stderr}")
        return r

    def sh(self, script, *args, **kw):
        """Run a sh script inside, with positional args."""
        return self.run("sh", "-c", script, "sh", *args, **kw)

    def put(self, path, data, mode=0o644, owner="root:root"):
        """Write data (str or bytes) to path inside (parent directories created)."""
        if isinstance(data, str):
            data = data.encode()
        self.sh('mkdir -p "$(dirname "$1")" && cat >"$1" && chmod "$2" "$1" && chown "$3" "$1"',
                path, f"{mode:o}", owner, input=data)

    def control(self, sock="/run/tunneld/control", ctl="/usr/bin/tunnelctl"):
        """A tunneltest ctl target: tunnelctl ctl -s sock, run inside."""
        return NamespaceControl(self, sock, ctl)

    def systemctl(self, *args, check=True, timeout=60):
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def show(self, unit, *props):
        """systemctl show unit -p PROP...: a dict."""
        r = self.systemctl("show", unit, *[f"--property={p}" for p in props])
        return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def journal(self, *args):
        """journalctl --no-pager ARGS inside, stdout."""
        return self.run("journalctl", "--no-pager", *args).stdout

    def _journal_tail(self):
        if self.pid is None or self.proc is None or self.proc.poll() is not None:
            return read_text(self.log_path)
        return self.run("journalctl", "--no-pager", "-n", "40", "-o", "short-monotonic", check=False,
                        timeout=10).stdout

    def close(self):
        if self.proc is not None:
            self._diag.freeze()
            if self.proc.poll() is None and self.pid is not None:
                try:
                    os.kill(self.pid, signal.SIGRTMIN + 4)  # poweroff
                except OSError:
                    pass
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc.poll() is None:
                if self.pid is not None:
                    try:
                        os.kill(self.pid, signal.SIGKILL)  # PID 1 of the namespace: all of it
                    except OSError:
                        pass
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
        if getattr(self, "dir", None):
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        super().close()


class NamespaceControl:
    """tunneld's control socket inside a SystemdNamespace, as a target of tunneltest's ctl
    helpers (tunnelctl(), status(), wait_state(), wait_all(), ...): tunnelctl runs inside."""

    def __init__(self, ns, sock, ctl):
        self.ns, self.sock, self.ctl = ns, sock, ctl

    def tunnelctl(self, *args, timeout=20):
        r = self.ns.run(self.ctl, "-s", self.sock, *args, check=False, timeout=timeout)
        r.took = None
        return r

    def __repr__(self):
        return f"{self.sock} in the namespace"
