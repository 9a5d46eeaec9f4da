"""tunneltest.sshd: SSHServer: a throwaway sshd on loopback."""

from .base import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .helpers import *  # noqa: F401,F403
from .sanitizers import *  # noqa: F401,F403
from .diagnostics import *  # noqa: F401,F403
from .configfile import *  # noqa: F401,F403
from .fakessh import *  # noqa: F401,F403
from .daemon import *  # noqa: F401,F403
from .diagnostics import _read_text  # noqa: F401

class SSHServer(Resource):
    """A private sshd on 127.0.0.1:port that lets root in with client_key.

    stop() and start() again keep the port, keys and known_hosts (for restart tests)."""

    def __init__(self, client_alive_interval=None, extra_config=(), address="127.0.0.1", port=None):
        self.client_alive_interval = client_alive_interval
        self.extra_config = list(extra_config)
        self.address = address
        self.port = port
        self._own_port = port is None   # ours to swap if someone else takes it
        self.proc = None
        self.dir = None

    def _argv(self, argv):
        """How sshd is run (a subclass runs it inside a network namespace)."""
        return argv

    def _prepare(self):
        self.dir = tempfile.mkdtemp(prefix="tunneltest-sshd-")
        if self.port is None:
            self.port = free_port()
        self.host_key = os.path.join(self.dir, "host_key")
        self.client_key = os.path.join(self.dir, "client_key")
        self.authorized_keys = os.path.join(self.dir, "authorized_keys")
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        self.config_path = os.path.join(self.dir, "sshd_config")
        self.log_path = os.path.join(self.dir, "sshd.log")
        self._diag = add_diagnostic(f"sshd log (port {self.port})",
                                    lambda: "\n".join(_read_text(self.log_path).splitlines()[-25:]))
        for key in (self.host_key, self.client_key):
            subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "tunneltest", "-f", key],
                           check=True, stdin=subprocess.DEVNULL, timeout=30)
        shutil.copy(self.client_key + ".pub", self.authorized_keys)
        self._write_config()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    def _write_config(self):
        with open(self.host_key + ".pub") as f:
            keytype, blob = f.read().split()[:2]
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        with open(self.known_hosts, "w") as f:
            f.write(f"{name} {keytype} {blob}\n")
        conf = [
            f"ListenAddress {self.address}",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "StrictModes no",
            "PermitRootLogin yes",
            "UsePAM no",
            "PidFile none",
            "LogLevel VERBOSE",
            "MaxStartups 100",
            "MaxSessions 100",
            "AllowTcpForwarding yes",
            "GatewayPorts no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UseDNS no",
            "PrintMotd no",
        ]
        if self.client_alive_interval is not None:
            conf += [f"ClientAliveInterval {self.client_alive_interval}", "ClientAliveCountMax 2"]
        conf += self.extra_config
        with open(self.config_path, "w") as f:
            f.write("\n".join(conf) + "\n")

    def start(self):
        """Start sshd (again) and wait until it listens. On its first start, a port that
        something outside this harness took meanwhile is swapped for another one."""
        first = self.dir is None
        if first:
            self._prepare()
        for attempt in range(5):
            try:
                return self._start()
            except AssertionError as e:
                if not first or not self._own_port or "Address already in use" not in str(e) or attempt == 4:
                    raise
                self.port = free_port()
                self._write_config()

    def _start(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        offset = len(_read_text(self.log_path))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self._argv([SSHD, "-D", "-e", "-f", self.config_path]),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        listening = f"Server listening on {self.address} port {self.port}."

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"sshd exited ({self.proc.returncode}):\n{_read_text(self.log_path)[offset:]}")
            return listening in _read_text(self.log_path)[offset:]
        wait_until(ready, 15, what=f"sshd to listen on {self.address}:{self.port}")

    def stop(self, kill_sessions=True):
        """Stop the listener; with kill_sessions, every connection's sshd too (the server
        "goes away"), else connections live on."""
        if self.proc is None:
            return
        table = proc_table()
        sessions = descendants_of(self.proc.pid, table)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if kill_sessions:
            kill_all(sessions)
        self.proc = None

    def log(self):
        return _read_text(self.log_path)

    def known_hosts_line(self, name):
        """This server's host key as a known_hosts line for [name]:port."""
        with open(self.host_key + ".pub") as f:
            keytype, blob = f.read().split()[:2]
        return f"[{name}]:{self.port} {keytype} {blob}\n"

    def tunnel_defaults(self):
        """Tunnel settings (for defaults) that reach this server as root with client_key."""
        return {
            "user": "root",
            "port": self.port,
            "identity_file": self.client_key,
            "ssh_config_file": "/dev/null",
            "ssh_options": [f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null",
                            "StrictHostKeyChecking=yes"],
        }

    def close(self):
        if self.dir:
            self.stop()
            self._diag.freeze()
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        super().close()
