#!/usr/bin/env python3
"""What tunneld says when a tunnel's ssh fails, end to end against a real loopback sshd:
the failure class and reason in the log, in `tunnelctl --json status` and in the events,
for runs whose ssh is a mux master of tunneld's (every tunnel's is: LogLevel VERBOSE, the
forwards opened over the master's control socket).

- kill -9 of an up tunnel's ssh is class `killed` (as in tests/faults/test_faults.py and
  tests/ctl/test_events.py), not `mux`: the master's control socket closing with it is a
  consequence, not the cause; the tunnel comes back and carries bytes;
- `tunnelctl restart NAME` prints "NAME: restarted( and up)?: ssh pid N (was M)" with the
  new pid, make-before-break or not (tests/ctl/test_ctl_socket.py), one line per tunnel
  in the order asked (tests/ctl/test_tunnelctl.py);
- start_timeout says how far the handshake got: "connected, but the server has not
  completed the handshake" for a server that sent its banner and then nothing
  (tests/faults/test_stalled_server.py), "the server has not answered" for one that never
  says a word (tests/features/test_failure_classes.py);
- the longest tunnel name the configuration allows (64 characters, daemon/validate.c)
  works under a normal control_socket (the master's control path is derived from it):
  `tunneld -t` accepts it, the tunnel comes up and its -L carries bytes, and two such
  names that differ only in their last character work side by side.

A jump host's failures ("on the jump host") are tests/e2e/test_jump_host.py's.
"""

import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time

import tunneltest
from tunneltest import assert_echo, forward_states, free_port, listening_socket, status, wait_state

UP_TIMEOUT = 30         # ssh's connect and key exchange on a loaded 2-core box
RESTART_LINE = r"^{name}: restarted( and up)?: ssh pid (\d+) \(was (\d+)\)\n"
NAME_MAX = 64           # daemon/validate.h NAME_MAX_LEN


class Events:
    """A subscription to tunneld's state changes, the protocol `tunnelctl events --json`
    speaks ({"cmd":"events"}: a reply with every tunnel's status, then one JSON object per
    change). Subscribed once the constructor returns: nothing is missed, no sleep needed."""

    def __init__(self, test, d):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        test.addCleanup(self.sock.close)
        self.sock.settimeout(10)
        self.sock.connect(d.globals["control_socket"])
        self.sock.sendall(b'{"cmd":"events"}\n')
        self.buf = b""
        self.events = []
        reply = self._line(10)
        if reply is None or not json.loads(reply).get("ok"):
            raise AssertionError(f"events refused: {reply!r}")

    def _line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise AssertionError("tunneld closed the events subscription")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def wait(self, pred, timeout, what, since=0):
        """Read events until pred(event) holds for one read as self.events[since] or later;
        return that one (every event read is kept in self.events)."""
        deadline = time.monotonic() + timeout
        for e in self.events[since:]:
            if pred(e):
                return e
        while True:
            line = self._line(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"timed out after {timeout:g} s waiting for the event {what}; "
                                     f"events so far: {self.events}")
            e = json.loads(line)
            self.events.append(e)
            if pred(e):
                return e


class DiagnosticsTest(tunneltest.SSHTestCase):
    KILLS = 5       # kill -9 rounds: a 50/50 race in tunneld passes all of them once in 32 runs
    fast_settings = {**tunneltest.SSHTestCase.fast_settings, "restart_delay_max": 1}

    # -- 1. kill -9 -------------------------------------------------------------------------

    def test_kill_9_is_class_killed_not_mux(self):
        """kill -9 of an up tunnel's ssh: the run is class killed (the event
        up -> starting/backoff says failure "killed", last_exit too, the log line is
        tests/faults/test_faults.py's "ssh was killed by signal KILL after … (killed: …"),
        never mux (the master's control socket closes with it: a consequence, not the
        cause); the tunnel is up again on a new ssh and its -L carries bytes. KILLS rounds:
        which of the socket's EOF and the child's exit tunneld sees first is up to the
        kernel and the loop, so a tunneld that gets it wrong half the time fails here."""
        port = free_port()
        d = self.tunneld([{"name": "k", "local_forwards": [self.echo.forward(port)]}], gatetime=0)
        pid = wait_state(d, "k", "up", timeout=UP_TIMEOUT)["pid"]
        assert_echo(port)
        events = Events(self, d)
        after = 0
        for n in range(1, self.KILLS + 1):
            seen = len(events.events)
            os.kill(pid, signal.SIGKILL)
            left = events.wait(lambda e: e.get("tunnel") == "k" and e.get("from") == "up", 10,
                               what=f"k leaving up (round {n})", since=seen)
            up = events.wait(lambda e: e.get("tunnel") == "k" and e.get("to") == "up", UP_TIMEOUT,
                             what=f"k up again (round {n})", since=seen)
            mine = [e for e in events.events[seen:] if e.get("tunnel") == "k"]
            self.assertIn(left["to"], ("starting", "backoff"), mine)
            self.assertEqual(left["failure"], "killed", f"round {n}: the class of the killed run: {mine}")
            self.assertNotEqual(up["pid"], pid)
            t = status(d)["k"]
            self.assertEqual((t["last_exit"]["failure"], t["last_exit"]["signal"], t["last_exit"]["requested"]),
                             ("killed", "KILL", False), f"round {n}: {t['last_exit']}")
            m = d.wait_log(r"^<\d+>k: ssh was killed by signal KILL after [^(]*\(([\w-]+)\b.*restarting", timeout=5,
                           after=after)
            self.assertEqual(m.group(1), "killed", f"round {n}: {m.group(0)}")
            after = m.end()
            assert_echo(port)
            pid = up["pid"]
        t = status(d)["k"]
        self.assertEqual((t["state"], t["pid"], t["failures"].get("mux", 0)), ("up", pid, 0), t)
        self.assertNotIn("ssh closed its control socket", d.log())

    # -- 2. tunnelctl restart ---------------------------------------------------------------

    def test_restart_prints_the_new_pid(self):
        """`tunnelctl restart NAME` of an up tunnel prints exactly one line,
        "NAME: restarted( and up)?: ssh pid NEW (was OLD)", OLD the ssh before, NEW the one
        status shows after (make-before-break or not, the same line); then
        `tunnelctl restart b a` prints b's line then a's, each with its new ssh."""
        ports = {"a": free_port(), "b": free_port()}
        d = self.tunneld([{"name": n, "local_forwards": [self.echo.forward(p)]} for n, p in ports.items()])
        old = {n: wait_state(d, n, "up", timeout=UP_TIMEOUT)["pid"] for n in ports}
        for p in ports.values():
            assert_echo(p)

        r = tunneltest.tunnelctl(d, "restart", "a", timeout=40)
        self.assertEqual(r.returncode, 0, tunneltest.describe(r))
        m = re.fullmatch(RESTART_LINE.format(name="a").lstrip("^"), r.stdout)
        self.assertIsNotNone(m, f"restart a printed {r.stdout!r}, not one line matching {RESTART_LINE!r}")
        new, was = int(m.group(2)), int(m.group(3))
        self.assertEqual(was, old["a"], r.stdout)
        self.assertNotEqual(new, was, r.stdout)
        self.assertEqual(wait_state(d, "a", "up", not_pid=old["a"], timeout=UP_TIMEOUT)["pid"], new,
                         "the new ssh is the one printed")
        self.assertEqual(status(d)["b"]["pid"], old["b"], "b untouched")
        assert_echo(ports["a"])
        old["a"] = new

        r = tunneltest.tunnelctl(d, "restart", "b", "a", timeout=40)
        self.assertEqual(r.returncode, 0, tunneltest.describe(r))
        want = RESTART_LINE.format(name="b") + RESTART_LINE.format(name="a").lstrip("^")
        self.assertRegex(r.stdout, want + "$")
        m = re.fullmatch(want.lstrip("^"), r.stdout)
        printed = {"b": (int(m.group(2)), int(m.group(3))), "a": (int(m.group(5)), int(m.group(6)))}
        for n, (new, was) in printed.items():
            self.assertEqual(was, old[n], r.stdout)
            self.assertNotEqual(new, was, r.stdout)
            self.assertEqual(wait_state(d, n, "up", not_pid=old[n], timeout=UP_TIMEOUT)["pid"], new,
                             f"{n}: the new ssh is the one printed")
            assert_echo(ports[n])

    # -- 4. start_timeout -------------------------------------------------------------------

    def test_stalled_server_is_connected_but_not_handshaken(self):
        """A server that sends its banner and then nothing, start_timeout 2: the
        line "ssh is not up after start_timeout 2 s (connected, but the server has not
        completed the handshake): restarting ssh (SIGTERM…", then a failed start of class
        timeout."""
        stalled = tunneltest.use(self, tunneltest.StalledServer())
        d = self.tunneld([{"name": "hung", "port": stalled.port, "local_forwards": [self.echo.forward(free_port())]}],
                         start_timeout=2, connect_timeout=1, server_alive_interval=0, restart_delay=0.5,
                         restart_delay_max=2)
        t0 = time.monotonic()
        m = d.wait_log(r"^<\d+>hung: ssh is not up after start_timeout 2(?:\.0)? s \(([^)]*)\): "
                       r"restarting ssh \(SIGTERM", timeout=15)
        took = time.monotonic() - t0
        self.assertEqual(m.group(1), "connected, but the server has not completed the handshake", m.group(0))
        self.assertLess(took, 2 + 5, "the deadline, plus a margin for a loaded machine")
        d.wait_log(r"^<\d+>hung: ssh (?:exited with status \d+|was killed by signal TERM) after [\d.]+ s, "
                   r"never up \(timeout: .*\); restarting in .* \(failed start 1 in a row\)$", after=m.end())
        self.assertEqual(status(d)["hung"]["last_exit"]["failure"], "timeout")

    def test_silent_server_has_not_answered(self):
        """A port that accepts TCP and never says a word (no banner), ConnectTimeout longer
        than start_timeout 2: class timeout, and the deadline says "the server has not
        answered" (ssh logs the server's banner when it comes, LogVerbose: it never came)."""
        silent = listening_socket()
        self.addCleanup(silent.close)
        d = self.tunneld([{"name": "t", "port": silent.getsockname()[1]}], restart_delay=2, restart_delay_max=20,
                         gatetime=5, start_timeout=2, connect_timeout=30)
        m = d.wait_log(r"^<4>t: ssh is not up after start_timeout 2(?:\.0)? s \(([^)]*)\): restarting ssh \(SIGTERM",
                       timeout=2 + 10)
        self.assertEqual(m.group(1), "the server has not answered", m.group(0))
        d.wait_log(r"^<4>t: ssh (?:exited with status \d+|was killed by signal TERM) after .*\(timeout: .*\); "
                   r"restarting in (.+) \(failed start 1 in a row\)$", timeout=10, after=m.end())
        t = status(d)["t"]
        self.assertEqual((t["state"], t["last_exit"]["failure"], t["failures"]), ("backoff", "timeout", {"timeout": 1}),
                         t)

    # -- 5. long names ----------------------------------------------------------------------

    def long_names(self):
        """Two names of NAME_MAX characters (letters, digits, '-', '_') that differ only in
        their last character."""
        stem = ("mux-Diag_0123456789-" * 4)[:NAME_MAX - 1]
        return stem + "a", stem + "b"

    def check_config(self, tunnels, control_socket):
        """`tunneld -t` on the configuration self.tunneld(tunnels) runs, with control_socket."""
        defaults = {**self.sshd.tunnel_defaults(), **self.fast_settings}
        tunnels = [{"host": "127.0.0.1", **t} for t in tunnels]
        path = os.path.join(tunneltest.temp_dir(self), "check.conf")
        tunneltest.write_config(path, {"ssh": tunneltest.SSH, "watch_network": False,
                                       "control_socket": control_socket}, defaults, tunnels)
        r = tunneltest.run_tunneld("-t", "-c", path)
        self.assertEqual(r.returncode, 0, f"tunneld -t with control_socket {control_socket}: {r.stdout}{r.stderr}")
        self.assertRegex(r.stdout, rf"^configuration OK: {len(tunnels)} tunnels?",
                         f"tunneld -t with control_socket {control_socket}: {r.stdout}{r.stderr}")

    def test_longest_name_works(self):
        """A tunnel named with the 64 characters a name may have: `tunneld -t`
        accepts it under the default control_socket /run/tunneld/control and under one as
        long as the test's (/tmp/tunneltest-tunneld-XXXXXXXX/control); the tunnel comes up
        with its forward open over the control socket, and its -L carries bytes."""
        name = self.long_names()[0]
        self.assertEqual(len(name), NAME_MAX)
        port = free_port()
        tunnel = {"name": name, "local_forwards": [self.echo.forward(port)]}
        self.check_config([tunnel], "/run/tunneld/control")
        like_the_tests = tempfile.mkdtemp(prefix="tunneltest-tunneld-")
        self.addCleanup(shutil.rmtree, like_the_tests, True)
        self.check_config([tunnel], os.path.join(like_the_tests, "control"))
        d = self.tunneld([tunnel])
        t = wait_state(d, name, "up", timeout=UP_TIMEOUT)
        self.assertEqual(forward_states(t), {self.echo.forward(port): "open"})
        assert_echo(port)

    def test_two_long_names_differing_at_the_end(self):
        """Two tunnels whose 64-character names differ only in the last
        character: `tunneld -t` accepts them, both are up on two different ssh, each -L
        carries bytes, and a restart of one leaves the other's ssh alone."""
        names = self.long_names()
        ports = {n: free_port() for n in names}
        specs = [{"name": n, "local_forwards": [self.echo.forward(p)]} for n, p in ports.items()]
        self.check_config(specs, "/run/tunneld/control")
        d = self.tunneld(specs)
        pids = {n: wait_state(d, n, "up", timeout=UP_TIMEOUT)["pid"] for n in names}
        self.assertNotEqual(pids[names[0]], pids[names[1]])
        for n, p in ports.items():
            self.assertEqual(forward_states(status(d)[n]),
                             {self.echo.forward(p): "open"}, n)
            assert_echo(p)
        r = tunneltest.tunnelctl(d, "restart", names[0], timeout=40)
        self.assertEqual(r.returncode, 0, tunneltest.describe(r))
        wait_state(d, names[0], "up", not_pid=pids[names[0]], timeout=UP_TIMEOUT)
        self.assertEqual(status(d)[names[1]]["pid"], pids[names[1]], "the other tunnel's ssh is untouched")
        for p in ports.values():
            assert_echo(p)


if __name__ == "__main__":
    tunneltest.main()
