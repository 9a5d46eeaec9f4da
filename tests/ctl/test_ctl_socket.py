#!/usr/bin/env python3
"""tunneld's control socket under other users and under abuse, with real ssh tunnels to a
private sshd on 127.0.0.1.

Who may do what (daemon/ctl.c): the socket is created 0600 (0660 and group-owned with
control_group, 0666 with control_world_readable), so the kernel refuses connect() to anyone
the mode excludes: tunnelctl then exits 3, "cannot reach tunneld ... Permission denied".
Whoever connects may read (status, metrics, check); start, stop, restart and reload need
root, tunneld's own uid, or control_group, which tunneld decides from the peer's SO_PEERCRED
(its uid and effective gid) and SO_PEERGROUPS (the supplementary groups the process
actually holds, not the user database). A refused change exits 4.

Clients run as other users through setpriv; the group is made for the test and removed.
"""

import grp
import json
import os
import pwd
import random
import select
import shutil
import stat
import subprocess
import threading
import time

import tunneltest
from tunneltest import (assert_echo, describe, free_port, open_fds, pid_alive, pids, socket_of, tunnelctl, wait_state,
                        wait_until)

import ctltest
from ctltest import NOBODY_UID, connect, public_dir, read_lines, wait_closed

CLIENTS_MAX = 64        # daemon/ctl.h
READERS_MAX = 32
READERS_PER_UID = 8
REQUEST_MAX = 4096
IDLE_TIMEOUT = 30.0
STALL_TIMEOUT = 5.0


def no_passwd_uid():
    """A uid with no passwd entry."""
    for uid in range(54321, 54421):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise RuntimeError("no free uid")


def run_retrying(argv, what):
    """Run a shadow tool (groupadd, gpasswd, groupdel), retrying while another process
    (a parallel test) holds the /etc/group lock."""
    for _ in range(100):
        r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
        if r.returncode == 0:
            return r
        if "lock" not in r.stderr.lower():
            break
        time.sleep(0.1)
    raise AssertionError(f"{what} failed: {describe(r)}")


class TempGroup(tunneltest.Resource):
    """A system group that exists for one test class; groupdel at close (also at exit)."""

    def start(self):
        self.name = f"tctl{os.getpid() % 100000}{random.randrange(1000):03d}"
        run_retrying(["groupadd", "--system", self.name], "groupadd")
        self.gid = grp.getgrnam(self.name).gr_gid

    def add_member(self, user):
        run_retrying(["gpasswd", "-a", user, self.name], "gpasswd -a")

    def close(self):
        if getattr(self, "name", None):
            try:
                run_retrying(["groupdel", self.name], "groupdel")
            finally:
                self.name = None
        super().close()


class _Base(tunneltest.SSHTestCase):
    def tunneld_per_name(self, names, **globals_):
        """tunneld with a real -L tunnel per name; returns (tunneld, socket, {name: port})."""
        ports = {n: free_port() for n in names}
        d = self.tunneld([{"name": n, "local_forwards": [self.echo.forward(p)]} for n, p in ports.items()],
                         globals=globals_)
        return d, socket_of(d), ports

# ---- permissions --------------------------------------------------------------------------

class PermissionTest(_Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.group = tunneltest.use(cls, TempGroup())
        # Where other users can reach things: the socket's directory (a test's own temp
        # directory is 0700) and a copy of tunnelctl (the build tree may be private).
        cls.public = public_dir(cls)
        cls.ctl_copy = os.path.join(cls.public, "tunnelctl")
        shutil.copy(tunneltest.TUNNELCTL, cls.ctl_copy)
        os.chmod(cls.ctl_copy, 0o755)
        g = cls.group.gid
        cls.outsider = ["--reuid", str(NOBODY_UID), "--regid", str(NOBODY_UID), "--clear-groups"]
        cls.primary_member = ["--reuid", str(NOBODY_UID), "--regid", str(g), "--clear-groups"]
        cls.unnamed_member = ["--reuid", str(no_passwd_uid()), "--regid", str(g), "--clear-groups"]
        cls.supplementary = ["--reuid", str(NOBODY_UID), "--regid", str(NOBODY_UID), "--groups", str(g)]

    def socket_path(self):
        path = os.path.join(self.public, f"control-{self._testMethodName}")
        self.addCleanup(lambda: [os.unlink(p) for p in (path, path + ".lock") if os.path.lexists(p)])
        return path

    def as_user(self, user, sock, *args, rc):
        r = tunnelctl(sock, *args, user=user, ctl=self.ctl_copy)
        self.assertEqual(r.returncode, rc, f"{user}: tunnelctl {' '.join(args)}: {describe(r)}")
        return r

    def test_default_socket_refuses_other_users(self):
        """Without control_group the socket is 0600 root:root: another uid cannot even
        connect, so every command exits 3 ("Permission denied" from connect), never 4."""
        d, sock, ports = self.tunneld_per_name(["web"], control_socket=self.socket_path())
        pid = wait_state(sock, "web", "up")["pid"]
        st = os.stat(sock)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid), (0o600, 0, os.getegid()))
        for user in (self.outsider, self.primary_member, self.supplementary, self.unnamed_member):
            for args in (["status"], ["metrics"], ["restart", "web"], ["stop", "--all"], ["reload"]):
                with self.subTest(user=user, args=args):
                    r = self.as_user(user, sock, *args, rc=3)
                    self.assertIn(f"cannot reach tunneld at {sock}: Permission denied", r.stderr)
        self.assertEqual(pids(sock), {"web": pid})
        self.assertNotIn("requested on the control socket", d.log())
        assert_echo(ports["web"])

    def test_world_readable_socket_reads_for_all_changes_for_few(self):
        """control_world_readable: the socket is 0666, so any user reads status, metrics and
        check (exit 0), while start, stop, restart and reload are refused to them (exit 4,
        "permission denied") and change nothing; root still changes."""
        d, sock, ports = self.tunneld_per_name(["web"], control_socket=self.socket_path(), control_world_readable=True)
        pid = wait_state(sock, "web", "up")["pid"]
        st = os.stat(sock)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o666)
        r = self.as_user(self.outsider, sock, "status", "web", rc=0)
        self.assertIn(str(pid), r.stdout)
        reply = json.loads(self.as_user(self.outsider, sock, "--json", "status", rc=0).stdout)
        self.assertEqual(reply["tunnels"][0]["pid"], pid)
        self.as_user(self.outsider, sock, "metrics", rc=0)
        self.as_user(self.outsider, sock, "check", rc=0)
        for args in (["restart", "web"], ["stop", "--all"], ["start", "web"], ["reload"]):
            with self.subTest(args=args):
                r = self.as_user(self.outsider, sock, *args, rc=4)
                self.assertIn("ermission denied", r.stderr)
                # who may, and who the client is
                self.assertRegex(r.stderr, rf"permission denied: {args[0]} needs root .*control_group.*; "
                                           rf"you are uid {NOBODY_UID}")
        self.assertEqual(pids(sock), {"web": pid})
        self.assertNotIn("requested on the control socket", d.log())
        assert_echo(ports["web"])
        r = tunnelctl(sock, "restart", "web")
        self.assertEqual(r.returncode, 0, describe(r))
        wait_state(sock, "web", "up", not_pid=pid)

    def test_control_group(self):
        """control_group: the socket is 0660 and group-owned. Outside the group: no connect
        (exit 3). Effective gid = the group (SO_PEERCRED), even for a uid without a passwd
        entry: status and restart. The group only as a supplementary group of the process:
        it connects, reads and changes too: tunneld asks the kernel which groups the
        process holds (SO_PEERGROUPS), not the user database."""
        d, sock, ports = self.tunneld_per_name(["web", "db"], control_socket=self.socket_path(),
                                      control_group=self.group.name)
        pid = {n: wait_state(sock, n, "up")["pid"] for n in ports}
        st = os.stat(sock)
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid), (0o660, 0, self.group.gid))

        for args in (["status"], ["restart", "web"]):
            r = self.as_user(self.outsider, sock, *args, rc=3)
            self.assertIn("Permission denied", r.stderr)

        # effective gid: reads and changes
        r = self.as_user(self.primary_member, sock, "status", rc=0)
        self.assertIn(str(pid["web"]), r.stdout)
        reply = json.loads(self.as_user(self.primary_member, sock, "--json", "status", "web", rc=0).stdout)
        self.assertEqual(reply["tunnels"][0]["pid"], pid["web"])
        self.as_user(self.primary_member, sock, "metrics", rc=0)
        self.as_user(self.primary_member, sock, "check", rc=0)
        r = self.as_user(self.primary_member, sock, "restart", "web", rc=0)
        self.assertRegex(r.stdout, r"^web: restarted( and up)?: ssh pid \d+ \(was \d+\)\n$")
        pid["web"] = wait_state(sock, "web", "up", not_pid=pid["web"])["pid"]
        self.assertEqual(pids(sock)["db"], pid["db"])
        assert_echo(ports["web"])
        self.as_user(self.unnamed_member, sock, "restart", "db", rc=0)
        pid["db"] = wait_state(sock, "db", "up", not_pid=pid["db"])["pid"]

        # supplementary group only (the user is not listed in /etc/group): tunneld asks the
        # kernel which groups the process holds (SO_PEERGROUPS), not the user database
        for args in (["status"], ["metrics"], ["check"]):
            self.as_user(self.supplementary, sock, *args, rc=0)
        self.as_user(self.supplementary, sock, "restart", "web", rc=0)
        pid["web"] = wait_state(sock, "web", "up", not_pid=pid["web"])["pid"]
        self.assertEqual(pids(sock)["db"], pid["db"])
        # the old ssh of each make-before-break restart ends once it carries no connection
        wait_until(lambda: tunneltest.children_of(d.pid) == sorted(pid.values()), 5,
                   what="only the new ssh left, the old ones drained")
        assert_echo(ports["web"])
        self.assertEqual(d.count_log(r"^<\d+>web: restart requested on the control socket$"), 2)


# ---- abuse --------------------------------------------------------------------------------

class RobustnessTest(_Base):
    def setUp(self):
        self.d, self.sock, self.ports = self.tunneld_per_name(["a", "b"])
        self.pids = {n: wait_state(self.sock, n, "up")["pid"] for n in self.ports}
        time.sleep(0.2)
        self.fds = open_fds(self.d.pid)

    def assert_serving(self, what):
        """tunnelctl status answers at once, and the tunnels are the same ssh processes."""
        r = tunnelctl(self.sock, "status")
        self.assertEqual(r.returncode, 0, f"after {what}: {describe(r)}")
        self.assertLess(r.took, 3, f"after {what}: status took {r.took:.1f} s")
        self.assertEqual(pids(self.sock), self.pids, f"after {what}")
        for p in self.pids.values():
            self.assertTrue(pid_alive(p), f"after {what}")

    def replies(self, payload, n, timeout=5):
        """Send payload on a new connection and read n reply lines (decoded leniently)."""
        with connect(self.sock) as s:
            s.sendall(payload)
            lines, why = read_lines(s, n, timeout)
        self.assertEqual(len(lines), n, f"{payload[:60]!r}: {len(lines)} of {n} replies ({why})")
        return [json.loads(line.decode(errors="replace")) for line in lines]

    def test_abuse_gets_errors_or_is_dropped(self):
        """Malformed JSON, unknown commands, a line over 4096 bytes, binary garbage, a
        client that stalls mid-line, one that dribbles bytes, one that floods requests
        without reading, 40 connections at once: each gets an error or is dropped, and
        tunneld keeps serving with its tunnels untouched and no fd left over."""
        t0 = time.monotonic()
        stalled = connect(self.sock)
        stalled.sendall(b'{"cmd":"sta')
        dribbler = connect(self.sock)
        dribbled = {}

        def dribble():
            try:
                dribbler.sendall(b'{"cmd":"status"')
                while True:
                    dribbler.sendall(b" ")
                    time.sleep(0.5)
            except OSError as e:
                dribbled["error"], dribbled["at"] = e.__class__.__name__, time.monotonic() - t0
        dribble_thread = threading.Thread(target=dribble, daemon=True)
        dribble_thread.start()
        self.addCleanup(dribbler.close)
        self.addCleanup(stalled.close)
        self.assert_serving("a stalled and a dribbling client")

        # malformed JSON and unknown commands: one error per line, the connection stays usable
        bad = [b'{"cmd":', b'{"cmd":"status"', b"not json", b'{"cmd":"status"}}', b"", b"[]", b'"status"',
               b'{"cmd":42}', b'{"command":"status"}', b'{"cmd":"frobnicate"}', b'{"cmd":"STATUS"}',
               b'{"cmd":"status","tunnels":"a"}', b'{"cmd":"status","tunnels":[1]}', b'{"cmd":"stop"}',
               b'{"cmd":"restart","all":true,"tunnels":["a"]}', b"[" * 2000 + b"]" * 2000]
        got = self.replies(b"\n".join(bad + [b'{"cmd":"status"}']) + b"\n", len(bad) + 1)
        for line, reply in zip(bad, got):
            self.assertIs(reply["ok"], False, f"{line[:40]!r}: {reply}")
            self.assertIsInstance(reply["error"], str)
        self.assertIs(got[-1]["ok"], True, "a good request after bad ones")
        self.assertEqual(got[0]["error"], "request is not valid JSON")
        self.assertEqual(got[bad.index(b'{"cmd":"frobnicate"}')]["error"], 'unknown command "frobnicate"')
        self.assertEqual(got[bad.index(b'{"cmd":42}')]["error"], 'request needs a "cmd" string')
        self.assert_serving("malformed requests")

        # lines of 4096 bytes and more (the limit counts the newline): an error, then closed
        fits = b'{"cmd":"check"}'.ljust(REQUEST_MAX - 1) + b"\n"
        self.assertIs(self.replies(fits, 1)[0]["ok"], True, "a request of 4095 bytes and its newline")
        for size in (REQUEST_MAX, REQUEST_MAX + 1, 64 * 1024):
            with self.subTest(size=size), connect(self.sock) as s:
                try:
                    s.sendall(b'{"cmd":"check"}'.ljust(size) + b"\n")
                except OSError:
                    pass        # closed while we were still sending
                lines, _ = read_lines(s, 1)
                self.assertEqual(json.loads(lines[0]), {"ok": False,
                                                        "error": "request too long (at most 4096 bytes per line)"})
                self.assertIn(wait_closed(s, 5), ("eof", "ConnectionResetError"))
        self.assert_serving("long lines")

        # binary garbage: every line an error, NULs and all; without newlines: too long
        rng = random.Random(4096)
        garbage = bytes(rng.randrange(256) for _ in range(3000)).replace(b"\n", b"") + b"\n"
        garbage = b"\n".join(garbage[i:i + 300] for i in range(0, len(garbage), 300))
        n = garbage.count(b"\n")
        for reply in self.replies(garbage, n):
            self.assertIs(reply["ok"], False, reply)
        with connect(self.sock) as s:
            try:
                s.sendall(bytes(rng.randrange(1, 256) for _ in range(20000)).replace(b"\n", b"\0"))
            except OSError:
                pass        # closed while we were still sending
            lines, _ = read_lines(s, 1)
            self.assertIn(b"request too long", lines[0])
            self.assertIn(wait_closed(s, 5), ("eof", "ConnectionResetError"))
        self.assert_serving("binary garbage")

        # a flood of status requests whose replies are never read: one reply is rendered, no
        # more is read, and the client is dropped STALL_TIMEOUT after it stopped reading
        flooder = connect(self.sock, timeout=30)
        flooded = {}

        def flood():
            start, sent = time.monotonic(), 0
            try:
                while time.monotonic() - start < 30:
                    flooder.sendall(b'{"cmd":"status"}\n' * 64)
                    sent += 64
            except OSError as e:
                flooded["error"] = e.__class__.__name__
            flooded["sent"], flooded["took"] = sent, time.monotonic() - start
        flood_thread = threading.Thread(target=flood, daemon=True)
        flood_thread.start()
        for _ in range(3):
            self.assert_serving("a flood")
        flood_thread.join(40)
        flooder.close()
        self.assertIn(flooded.get("error"), ("BrokenPipeError", "ConnectionResetError"), flooded)
        self.assertLess(flooded["took"], STALL_TIMEOUT + 15, flooded)
        self.assert_serving("a flood")

        # 70 connections at once (root's): the two slow clients above hold 2 of the 64 slots.
        # A full table never locks root out: each newcomer makes room by dropping the
        # quietest client that is between requests (never root's in the middle of one).
        time.sleep(0.3)
        held = [connect(self.sock) for _ in range(70)]
        try:
            time.sleep(0.5)
            dropped = [s for s in held if wait_closed(s, 0.05) == "eof"]
            self.assertEqual(len(dropped), 70 - CLIENTS_MAX + 2, "quiet clients dropped to make room")
            for _ in range(3):
                r = tunnelctl(self.sock, "status")   # served: room is made for it too
                self.assertEqual(r.returncode, 0, describe(r))
        finally:
            for s in held:
                s.close()
        self.assert_serving("40 connections")

        # the stalled and the dribbling client are dropped after the idle timeout, not before,
        # told why in a last line
        last = ctltest.read_all(stalled, IDLE_TIMEOUT + 10 - (time.monotonic() - t0))
        dropped = time.monotonic() - t0
        self.assertTrue(IDLE_TIMEOUT - 1 <= dropped <= IDLE_TIMEOUT + 8,
                        f"stalled client dropped after {dropped:.1f} s")
        self.assertEqual(json.loads(last), {"ok": False, "dropped": "idle",
                                            "error": "no complete request within 30 s"})
        dribble_thread.join(10)
        self.assertIn(dribbled.get("error"), ("BrokenPipeError", "ConnectionResetError"), dribbled)
        self.assertTrue(IDLE_TIMEOUT - 1 <= dribbled["at"] <= IDLE_TIMEOUT + 8, dribbled)

        # everything is as before: same tunnels, bytes flow, no fd left open
        self.assert_serving("the idle timeout")
        for port in self.ports.values():
            assert_echo(port)
        wait_until(lambda: open_fds(self.d.pid) == self.fds, 5, what=f"tunneld's fds to be {self.fds} again")
        self.assertIsNone(self.d.proc.poll())

    def test_full_server_is_reported_consistently(self):
        """With 64 idle clients connected, tunnelctl is still served, every time (the
        quietest idle client makes room): no "Broken pipe", no lock-out."""
        held = [connect(self.sock) for _ in range(CLIENTS_MAX)]
        try:
            time.sleep(0.3)
            outcomes = set()
            for _ in range(20):
                r = tunnelctl(self.sock, "status")
                outcomes.add((r.returncode, "too many clients" in r.stderr))
        finally:
            for s in held:
                s.close()
        self.assert_serving("a full server")
        self.assertEqual(outcomes, {(0, False)})

    def test_replies_are_utf8_even_for_invalid_requests(self):
        """A request that is not UTF-8 is invalid JSON, and a reply is valid UTF-8 JSON even
        when it quotes a request cut in the middle of a character."""
        for payload in (b'{"cmd":"\xff"}\n', b'{"cmd":"status","tunnels":["\xfe\xff"]}\n',
                        b'{"cmd":"a' + "\u00e9".encode() * 40 + b'"}\n'):
            with self.subTest(payload=payload[:30]), connect(self.sock) as s:
                s.sendall(payload)
                lines, why = read_lines(s, 1)
                reply = json.loads(lines[0].decode("utf-8"))   # raises on invalid UTF-8
                self.assertIs(reply["ok"], False)
        self.assert_serving("invalid UTF-8")


if __name__ == "__main__":
    tunneltest.main()
