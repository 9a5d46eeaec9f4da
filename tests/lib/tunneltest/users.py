"""tunneltest.users: LocalUser: a real unprivileged local user, made for a test, to act as
an attacker on the local machine (files, directories, sockets) through setpriv."""

from .base import *  # noqa: F401,F403
from .diagnostics import *  # noqa: F401,F403

SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


class LocalUser(Resource):
    """A system user (useradd, no home, nologin shell) removed at close with whatever it
    still runs. password="" gives it an empty password (for an sshd that lets such users
    in with the "none" method)."""

    def __init__(self, prefix="tatk", password=None):
        self.prefix = prefix
        self.password = password
        self.name = None

    def start(self):
        import pwd
        self.name = f"{self.prefix}{os.getpid() % 100000}{random.randrange(100):02d}"
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", self.name],
                       check=True, capture_output=True, timeout=30)
        if self.password == "":
            subprocess.run(["passwd", "-d", self.name], check=True, capture_output=True, timeout=30)
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def argv(self, *argv):
        """argv run as this user (setpriv: its uid and gid, no supplementary groups)."""
        return [SETPRIV, "--reuid", str(self.uid), "--regid", str(self.gid), "--clear-groups", *argv]

    def popen(self, *argv, **kwargs):
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(*argv), **kwargs)

    def run(self, *argv, timeout=20):
        """Run argv as this user to completion; CompletedProcess (text), AssertionError unless
        it exits 0."""
        r = subprocess.run(self.argv(*argv), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} as {self.name}: exit {r.returncode}: {r.stderr}")
        return r

    def python(self, code, *args, timeout=20):
        """Run a Python snippet as this user (sys.argv[1:] = args)."""
        return self.run(sys.executable, "-c", code, *map(str, args), timeout=timeout)

    def close(self):
        if self.name:
            subprocess.run(["pkill", "-KILL", "-u", self.name], capture_output=True, timeout=10)
            for _ in range(50):
                if subprocess.run(["userdel", self.name], capture_output=True, timeout=30).returncode in (0, 6):
                    break
                time.sleep(0.1)
            self.name = None
        super().close()
