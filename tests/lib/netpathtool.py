"""netpathtool: the built tests/netpath-tool (what tunneld's network modules say: netpath,
tcp_diag, tcp_tune, proc_net, netwatch, sleepwatch), run once or kept running.

    run(*args)      one answer: {"kind": first word, key: value, ...}; "error" in it if the
                    module said -errno (a sanitizer's report on its stderr fails the test)
    Watch           `netpath-tool watch`: its lines stamped as they come (a thread), waited
                    for by regex; it ends when closed (its stdin ends)
"""

import os
import re
import shlex
import subprocess
import threading
import time

import tunneltest
from tunneltest import Resource, add_diagnostic, wait_until

TOOL = os.environ.get("NETPATH_TOOL") or os.path.join(os.path.dirname(tunneltest.TUNNELD), "..", "tests",
                                                      "netpath-tool")


def require():
    """AssertionError unless the tool is built."""
    if not os.access(TOOL, os.X_OK):
        raise AssertionError(f"{TOOL} is not built (tests/meson.build builds netpath-tool)")


def parse(line):
    """'check local=… verdict=same why="…"' → {"kind": "check", "local": …, …}."""
    words = shlex.split(line)
    out = {"kind": words[0] if words else ""}
    for w in words[1:]:
        if "=" in w:
            k, v = w.split("=", 1)
            out[k] = v
    return out


def run(*args, timeout=10):
    """Run the tool once; its first output line parsed, with "_stdout" and "_stderr"."""
    require()
    r = subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    tunneltest.check_sanitizer_output(r.stderr, f"netpath-tool {args[0] if args else ''}")
    lines = r.stdout.splitlines()
    out = parse(lines[0]) if lines else {"kind": "", "error": f"no output (exit {r.returncode})"}
    out["_stdout"], out["_stderr"] = r.stdout, r.stderr
    return out


class Watch(Resource):
    """`netpath-tool watch [--sleep] LOCAL REMOTE ...` running; lines (stdout and stderr)
    stamped with time.monotonic() as they arrive. wrapper: argv run before it, which must
    exec it (its pid is the tool's)."""

    def __init__(self, *args, env=None, wrapper=()):
        self.args = [str(a) for a in args]
        self.env = env
        self.wrapper = list(wrapper)
        self.lines = []             # [(t, stream, text)]
        self.lock = threading.Lock()
        self.proc = None

    def start(self):
        require()
        self.proc = subprocess.Popen([*self.wrapper, TOOL, "watch", *self.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=self.env)
        self._diag = add_diagnostic("netpath-tool watch", lambda: "\n".join(
            f"{t:.3f} {s}: {x}" for t, s, x in self.lines[-60:]))
        self.threads = [threading.Thread(target=self._read, args=(f, name), daemon=True)
                        for f, name in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))]
        for t in self.threads:
            t.start()
        self.wait(r"^watching ", 10)

    def _read(self, f, name):
        for line in f:
            with self.lock:
                self.lines.append((time.monotonic(), name, line.rstrip("\n")))

    def wakeups(self):
        """How many times the tool has slept and woken up so far (voluntary context
        switches of its process)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", f.read()).group(1))

    def find(self, regex, since=0.0, stream=None):
        """[(t, parsed line)] of lines since `since` matching regex."""
        pattern = re.compile(regex)
        with self.lock:
            lines = list(self.lines)
        return [(t, parse(x) if s == "out" else {"kind": "log", "text": x}) for t, s, x in lines
                if t >= since and (stream is None or s == stream) and pattern.search(x)]

    def wait(self, regex, timeout, since=0.0, stream=None):
        """The first (t, parsed line) since `since` matching regex, waited for."""
        def found():
            hits = self.find(regex, since, stream)
            if not hits and self.proc.poll() is not None:
                raise AssertionError(f"netpath-tool watch exited ({self.proc.returncode})")
            return hits[0] if hits else None
        return wait_until(found, timeout, interval=0.02, what=f"/{regex}/ from netpath-tool watch")

    def close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
            for t in self.threads:
                t.join(2)
            self._diag.freeze()
            self.proc = None
            super().close()
            tunneltest.check_sanitizer_output("\n".join(x for _, s, x in self.lines if s == "err"),
                                              "netpath-tool watch")
            return
        super().close()
