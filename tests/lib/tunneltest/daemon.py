"""tunneltest.daemon: Tunneld: tunneld itself, its log and its children."""

from .base import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .helpers import *  # noqa: F401,F403
from .sanitizers import *  # noqa: F401,F403
from .diagnostics import *  # noqa: F401,F403
from .configfile import *  # noqa: F401,F403
from .fakessh import *  # noqa: F401,F403
from .ctl import loaded  # noqa: F401
from .diagnostics import _read_text  # noqa: F401


def up_line(name):
    """The regex of tunnel name's "up" line in tunneld's log ("NAME: up: ssh (pid N)
    authenticated ..."); group 1 is the ssh pid. (A tunnel that rides a shared connection
    says "NAME: up: every forward is open on the shared connection ~FIRST ..." instead.)"""
    return rf"^<\d+>{re.escape(name)}: up: ssh \(pid (\d+)\) authenticated"


class Tunneld(Resource):
    """tunneld on a generated config, in the foreground, logging to a file.

    Tunneld(tunnels, defaults, globals, fake=FakeSSH, args=("-d",), env={...}). Or give
    config_text to write a config by hand. A generated config gets isolation_globals()
    unless globals sets them. Closing stops tunneld (SIGTERM; SIGKILL if it hangs), kills
    every descendant left, and fails if tunneld's output holds a sanitizer report (see
    close())."""

    def __init__(self, tunnels=(), defaults=None, globals=None, *, fake=None, args=(), env=None,
                 config_text=None, wrapper=()):
        self.wrapper = list(wrapper)    # e.g. valgrind and its options: runs in the same process
        self.globals = dict(globals or {})
        self.defaults = dict(defaults or {})
        self.tunnels = [dict(t) for t in tunnels]
        self.fake = fake
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.config_text = config_text
        self.proc = None
        self.dir = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="tunneltest-tunneld-")
        self.config_path = os.path.join(self.dir, "tunneld.conf")
        self.log_path = os.path.join(self.dir, "tunneld.log")
        self.marker = f"TUNNELTEST_TUNNELD={uuid.uuid4().hex}"
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)  # log to the file, never to the journal …
        env.pop("NOTIFY_SOCKET", None)
        env.update(self.extra_env)       # … unless the test asks for them
        env[self.marker.split("=")[0]] = self.marker.split("=", 1)[1]
        for key, value in isolation_globals(self.dir).items():
            self.globals.setdefault(key, value)
        if self.fake:
            self.globals.setdefault("ssh", self.fake.path)
            env["FAKE_SSH_DIR"] = self.fake.dir
        if self.config_text is None:
            self.config_text = write_config(self.config_path, self.globals, self.defaults, self.tunnels)
        else:
            with open(self.config_path, "w") as f:
                f.write(self.config_text)
        self._diag = add_diagnostic("tunneld log", lambda: "\n".join(self.log().splitlines()[-LOG_TAIL_LINES:]))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*self.wrapper, TUNNELD, "-c", self.config_path, *self.args],
                                         stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        self.started_at = time.time()

    def rewrite(self, tunnels=None, defaults=None, globals=None):
        """Write a new config (what is not given stays; the isolation settings and the fake
        ssh stay unless globals sets them). Then reload() to apply it."""
        if tunnels is not None:
            self.tunnels = [dict(t) for t in tunnels]
        if defaults is not None:
            self.defaults = dict(defaults)
        if globals is not None:
            kept = {k: v for k, v in self.globals.items() if k in ("ssh", *isolation_globals(self.dir))}
            self.globals = {**kept, **globals}
        self.config_text = write_config(self.config_path, self.globals, self.defaults, self.tunnels)

    def line_of(self, needle):
        """Line number of needle in the config file."""
        return line_of(self.config_text, needle)

    # -- the log --
    def log(self):
        return _read_text(self.log_path)

    def wait_log(self, regex, timeout=10, after=0):
        """Wait until regex matches the log at or after offset `after`; return the match
        (its .end() is a good `after` for the next wait)."""
        pattern = re.compile(regex, re.M)

        def found():
            m = pattern.search(self.log(), after)
            if m is None and self.proc.poll() is not None:
                m = pattern.search(self.log(), after)
                if m is None:
                    raise AssertionError(f"tunneld exited ({self.proc.returncode}) before logging /{regex}/")
            return m
        return wait_until(found, timeout, what=f"/{regex}/ in tunneld's log")

    def wait_up(self, name, after=0, timeout=UP_TIMEOUT):
        """Wait for tunnel name's next "up" line (up_line()) at or after offset `after` of the
        log; return (match, ssh pid). The match's .end() is the `after` of the next wait."""
        m = self.wait_log(up_line(name), timeout=timeout, after=after)
        return m, int(m.group(1))

    def wait_loaded(self, timeout=30, exit_ok=False):
        """Wait until tunneld answers on its control socket with its configuration loaded
        (it listens before it loads the file off its loop, and loads it before it spawns
        the first ssh): tunnelctl works and the tunnels are there from then on; True. If
        tunneld exits first: AssertionError, or False with exit_ok (the caller judges)."""
        def ready():
            if self.proc.poll() is not None:
                if exit_ok:
                    return "exited"
                raise AssertionError(f"tunneld exited ({self.proc.returncode}) before it answered with its "
                                     "configuration loaded")
            return loaded(self)
        return wait_until(ready, timeout, interval=0.02, what="tunneld to answer with its configuration loaded") is True

    def count_log(self, regex, after=0):
        return len(re.findall(regex, self.log()[after:], re.M))

    def findall(self, regex, after=0):
        return re.findall(regex, self.log()[after:], re.M)

    # -- processes --
    def children(self):
        """Live ssh children of tunneld."""
        return children_of(self.proc.pid)

    def leftovers(self):
        """Live processes, other than tunneld, that inherited tunneld's environment."""
        return [p for p in procs_with_env(self.marker) if p != self.proc.pid]

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self):
        self.signal(signal.SIGHUP)

    def wait_exit(self, timeout=10):
        """Wait for tunneld to exit and return its status; AssertionError if it does not."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tunneld did not exit within {timeout:g} s") from None

    def stop(self, timeout=10):
        """SIGTERM, wait, return the exit status (negative: killed by that signal)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def stop_grace(self):
        """Seconds close() gives tunneld to exit after SIGTERM: its stop_timeout (after which
        it SIGKILLs an ssh that ignores SIGTERM) twice, and some for LeakSanitizer."""
        stop_timeout = self.globals.get("stop_timeout", 5)
        if not isinstance(stop_timeout, (int, float)) or isinstance(stop_timeout, bool):
            stop_timeout = 5
        return min(10 + 2 * stop_timeout, 40)

    def _output_done(self):
        """Called once tunneld is gone: every byte of its stdout and stderr is in the log
        file from now on (a subclass that copies them there waits for its copier)."""

    def close(self):
        """Stop tunneld the way its service manager would: SIGTERM, then SIGKILL only if it
        has not exited within stop_grace() seconds, and kill whatever of its processes is
        left. Then fail (AssertionError, after cleaning up) if its output holds a sanitizer
        report, in any build; or, in the sanitizer build, if that SIGTERM did not end it with
        status 0 (LeakSanitizer reports at that exit, and exits 23 or aborts). A tunneld that
        already exited (the test killed or stopped it) is only scanned."""
        problems = []
        if self.proc is not None:
            try:
                if self.proc.poll() is None:
                    status = self._terminate()
                    if SANITIZED and status is None:
                        problems.append(f"tunneld did not exit within {self.stop_grace():g} s of the SIGTERM at "
                                        "the end of the test: SIGKILLed (sanitizer build: no leak check ran)")
                    elif SANITIZED and status != 0:
                        problems.append(f"tunneld exited {status} on the SIGTERM at the end of the test, "
                                        "not 0 (sanitizer build: see its log)")
            finally:
                if self.proc.poll() is None:  # an exception (a test timeout) interrupted the stop
                    self.proc.kill()
                    self.proc.wait()
                kill_all(self.leftovers())
                self._output_done()
                self._diag.freeze()
            reports = sanitizer_reports(self.log())
            if reports:
                problems.append(f"tunneld's log holds {len(reports)} sanitizer report(s):\n" + "\n\n".join(reports))
            self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        super().close()
        if problems:
            raise AssertionError("\n".join(problems))

    def _terminate(self):
        """SIGTERM tunneld, wait up to stop_grace() seconds (then SIGKILL it), and kill its
        descendants left over; its exit status, None if it had to be killed."""
        table = proc_table()
        kids = children_of(self.proc.pid, table)
        rest = descendants_of(self.proc.pid, table)
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(self.stop_grace())
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            kill_all(rest, groups=kids)  # now ours (subreaper): their pids cannot be reused
            return None
        # Exited by itself: what is left of its descendants was adopted by us (subreaper),
        # so those pids are still theirs; a pid that ended meanwhile may be anyone's now.
        now = proc_table()
        kill_all([p for p in rest if p in now and now[p][0] == os.getpid()])
        return status
