"""tunneltest.fakessh: FakeSSH: a scripted stand-in for ssh."""

from .base import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .helpers import *  # noqa: F401,F403
from .sanitizers import *  # noqa: F401,F403
from .diagnostics import *  # noqa: F401,F403
from .configfile import *  # noqa: F401,F403
from .processes import _comm  # noqa: F401
from .diagnostics import _read_text  # noqa: F401

class FakeSSH(Resource):
    """The fake ssh's (tests/fake-ssh.c) working directory: its plans and its start logs,
    one pair per host.

    Use each host in one tunnel only. Give it to Tunneld(fake=...), which sets the ssh
    program and FAKE_SSH_DIR."""

    path = FAKE_SSH

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="tunneltest-fake-")
        self.env_entry = f"FAKE_SSH_DIR={self.dir}"
        self._diag = add_diagnostic("fake ssh logs", self._logs_text)

    def plan(self, host, steps):
        """steps: (status, delay[, auth[, "flag ..."]]) per start; the last repeats forever."""
        lines = []
        for step in steps:
            status, delay, *rest = step
            flags = []
            if rest and rest[0]:
                flags.append("auth" if rest[0] is True else str(rest[0]))
            flags += [str(f) for f in rest[1:] if f]
            lines.append(" ".join([str(int(status)), f"{float(delay):g}", *flags]))
        with open(os.path.join(self.dir, f"{host}.plan"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def events(self, host):
        """[(time, event, pid, rest...)] from HOST.log: start, exit (with status), term."""
        out = []
        for line in _read_text(os.path.join(self.dir, f"{host}.log")).splitlines():
            parts = line.split()
            if len(parts) >= 3:
                out.append((float(parts[0]), parts[1], int(parts[2]), *parts[3:]))
        return out

    def starts(self, host):
        """[(time, pid)] of every start of host's fake ssh, oldest first."""
        return [(e[0], e[2]) for e in self.events(host) if e[1] == "start"]

    def exits(self, host):
        """[(time, pid, status)] of every fake ssh that exited on its own."""
        return [(e[0], e[2], int(e[3])) for e in self.events(host) if e[1] == "exit"]

    def terms(self, host):
        """[(time, pid)] of every fake ssh that got SIGTERM."""
        return [(e[0], e[2]) for e in self.events(host) if e[1] == "term"]

    def argv(self, host):
        """The arguments of host's latest start."""
        return _read_text(os.path.join(self.dir, f"{host}.argv")).splitlines()

    def intervals(self, host):
        """Seconds between consecutive starts."""
        t = [s[0] for s in self.starts(host)]
        return [b - a for a, b in zip(t, t[1:])]

    def traces(self):
        """The files fake ssh starts left here (HOST.log, .count, .argv), whatever the host:
        [] if it never ran. (A destination with a '/' leaves none: the test's own ssh
        wrapper must record such starts.)"""
        return sorted(n for n in os.listdir(self.dir) if not n.endswith(".plan"))

    def running(self):
        """Live fake ssh processes of this directory."""
        return [p for p in procs_with_env(self.env_entry) if _comm(p) == "fake-ssh"]

    def _logs_text(self):
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".log"):
                out.append(f"{name}:")
                out += ["  " + l for l in _read_text(os.path.join(self.dir, name)).splitlines()[-15:]]
        return "\n".join(out)

    def close(self):
        if getattr(self, "dir", None):
            self._diag.freeze()
            kill_all(self.running())  # tunneld's own cleanup takes the rest
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        super().close()
