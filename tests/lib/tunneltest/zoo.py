"""tunneltest.zoo: the server zoo: OpenSSH 10.0 (Debian 13's own packages) as server and
client, and Dropbear (Debian 12's) as server, beside Debian 12's OpenSSH 9.2 (SSHServer).

OpenSSH 10's binaries need Debian 13's libc. They run from a Debian 13 root that
`scripts/deps --zoo-root` makes once with debootstrap (one to five minutes; cached in
/var/cache/tunneld-tests and reused; scripts/deps --test makes it on a fresh machine), in a
private mount namespace whose /usr is the root's: /tmp, /run, /etc/passwd and the tests'
keys stay this machine's, and sshd 10 finds its sshd-session at its compiled-in path.

    openssh10()          the root and its two wrappers; unittest.SkipTest (with the reason)
                         only when no Debian archive is reachable to make it
    openssh10_client()   an absolute path that runs OpenSSH 10's ssh, for tunneld's `ssh`
                         (it ends in exec: the pid tunneld spawned is ssh's). Its ProxyJump
                         hops run in the same namespace: OpenSSH 10 too
    OpenSSH10Server      SSHServer, but Debian 13's sshd 10.0
    DropbearServer       SSHServer's keys, files and interface, but Dropbear

Dropbear has no AuthorizedKeysFile: it reads ~USER/.ssh/authorized_keys. It runs in a
private mount namespace too, with the server's directory bound over root's home, so the
machine's own /root is never read or written.
"""

from .base import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .helpers import *  # noqa: F401,F403
from .diagnostics import *  # noqa: F401,F403
from .sshd import SSHServer
from .diagnostics import _read_text  # noqa: F401

import pwd  # noqa: E402

DROPBEAR = shutil.which("dropbear") or "/usr/sbin/dropbear"
DROPBEARCONVERT = shutil.which("dropbearconvert") or "/usr/bin/dropbearconvert"

_openssh10 = []


class OpenSSH10:
    """The Debian 13 root (root), `run COMMAND...` there (run), its ssh (ssh)."""

    def __init__(self, root, run, ssh):
        self.root, self.run, self.ssh = root, run, ssh

    def version(self):
        r = subprocess.run([self.ssh, "-V"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        return r.stderr.strip()


def openssh10():
    """The Debian 13 root, made (or checked) once per process by scripts/deps --zoo-root.
    SkipTest if no Debian archive is reachable to make it; AssertionError for anything else
    (a machine that should have it)."""
    if not _openssh10:
        try:
            r = subprocess.run([os.path.join(SOURCE_ROOT, "scripts", "deps"), "--zoo-root"], capture_output=True,
                               text=True, timeout=900, stdin=subprocess.DEVNULL)
            fields = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
            if r.returncode == 0:
                _openssh10.append(OpenSSH10(fields["root"], fields["run"], fields["ssh"]))
            elif r.returncode == 3:
                _openssh10.append(unittest.SkipTest(f"no OpenSSH 10: {r.stderr.strip()}"))
            else:
                _openssh10.append(AssertionError(f"scripts/deps --zoo-root failed ({r.returncode}): "
                                                 f"{r.stderr.strip()}"))
        except (OSError, subprocess.SubprocessError, KeyError) as e:
            _openssh10.append(AssertionError(f"scripts/deps --zoo-root: {e}"))
    if isinstance(_openssh10[0], Exception):
        raise _openssh10[0]
    return _openssh10[0]


def openssh10_client():
    """An absolute path that runs Debian 13's ssh 10.0: tunneld's `ssh = "…"`."""
    return openssh10().ssh


class OpenSSH10Server(SSHServer):
    """SSHServer run by Debian 13's sshd 10.0. PerSourcePenalties is off unless
    penalties=True: a test's failing tunnels would otherwise make the server refuse
    127.0.0.1 to the tests after them (sshd 10 counts 5 s per failed login and refuses an
    address from 15 s on)."""

    def __init__(self, *args, penalties=False, **kwargs):
        super().__init__(*args, **kwargs)
        if not penalties:
            self.extra_config.append("PerSourcePenalties no")   # after the caller's: the first one wins
        self.zoo = None

    def start(self):
        self.zoo = openssh10()          # first: no keys made for a server that cannot run
        return super().start()

    def _argv(self, argv):
        return [self.zoo.run, *argv]


class DropbearServer(SSHServer):
    """Dropbear on 127.0.0.1:port that lets root in with client_key: SSHServer's keys,
    known_hosts, authorized_keys (here the file Dropbear reads, in the home it sees) and
    interface. client_alive_interval is Dropbear's -K; extra_args more of its options.
    stop() and start() again keep the port and keys."""

    def __init__(self, client_alive_interval=None, extra_args=(), address="127.0.0.1", port=None):
        super().__init__(client_alive_interval=client_alive_interval, address=address, port=port)
        self.extra_args = list(extra_args)

    def _prepare(self):
        super()._prepare()
        # the home Dropbear sees for root: 0700 directories of root's, as it checks
        self.home = os.path.join(self.dir, "home")
        os.makedirs(os.path.join(self.home, ".ssh"), mode=0o700)
        os.chmod(self.home, 0o700)
        path = os.path.join(self.home, ".ssh", "authorized_keys")
        os.replace(self.authorized_keys, path)
        self.authorized_keys = path
        self.config_path = None             # no sshd_config: Dropbear takes options

    def _write_config(self):
        with open(self.host_key + ".pub") as f:
            keytype, blob = f.read().split()[:2]
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        with open(self.known_hosts, "w") as f:
            f.write(f"{name} {keytype} {blob}\n")
        self.dropbear_key = self.host_key + ".dropbear"
        if not os.path.exists(self.dropbear_key):
            subprocess.run([DROPBEARCONVERT, "openssh", "dropbear", self.host_key, self.dropbear_key],
                           check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=30)

    def _argv(self, argv):
        """Dropbear in a mount namespace of its own, this server's home over root's."""
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                'mount --bind "$0" "$1" && shift && exec "$@"', self.home, pwd.getpwnam("root").pw_dir, *argv]

    def _listening(self):
        """True once the server's own process has a listening socket on address:port."""
        inodes = set()
        try:
            for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
            with open(f"/proc/{self.proc.pid}/net/tcp") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            return False
        want = f"{socket.inet_aton(self.address)[::-1].hex().upper()}:{self.port:04X}"
        return any(fields[1] == want and fields[3] == "0A" and fields[9] in inodes
                   for fields in (line.split() for line in lines))

    def _start(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        offset = len(_read_text(self.log_path))
        # -P: Dropbear unlinks its pid file when it exits (so never -P /dev/null)
        argv = [DROPBEAR, "-F", "-E", "-p", f"{self.address}:{self.port}", "-r", self.dropbear_key,
                "-P", os.path.join(self.dir, "dropbear.pid")]
        if self.client_alive_interval is not None:
            argv += ["-K", str(self.client_alive_interval)]
        argv += self.extra_args
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self._argv(argv), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"dropbear exited ({self.proc.returncode}):\n"
                                     f"{_read_text(self.log_path)[offset:]}")
            return self._listening()
        wait_until(ready, 15, what=f"dropbear to listen on {self.address}:{self.port}")
