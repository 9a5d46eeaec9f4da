#!/usr/bin/env python3
"""The connection, end to end against a real sshd: every tunnel rides one ssh run as a
multiplexing master of tunneld's (the only engine: no setting turns it on), and every
forward is opened over that master's control socket, each with ssh's own reply.

Per-forward truth: status shows each forward open or failed with ssh's reason; a forward
that fails (its port taken, here or on the server) leaves the tunnel degraded, not torn
down: its other forwards keep working, and the failed one is asked for again over the live
connection until it opens. No wakeup of tunneld per forwarded connection: ssh logs
nothing for one that works (LogLevel VERBOSE)."""

import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

import tunneltest
from tunneltest import (Tunneld, UP_TIMEOUT, describe, echo_roundtrip, forward_states, free_port, ipv6_loopback,
                        listening_socket, metrics_text, socks_echo, tunnel_status, tunnelctl, wait_state, wait_tunnel,
                        wait_until)


def listener_pid(port):
    """The pid of the process listening on 127.0.0.1:port (ss -ltnp), or None."""
    r = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=10)
    m = re.search(r"pid=(\d+)", r.stdout)
    return int(m.group(1)) if m else None


def signal_if_alive(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def ctx_switches(pid):
    """Voluntary context switches of pid: each is a wakeup of its event loop."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


class ConnectionTest(tunneltest.SSHTestCase):
    fast_settings = {**tunneltest.SSHTestCase.fast_settings, "restart_delay_max": 1}

    def test_every_kind_of_forward_through_the_master(self):
        """-L, -R (a fixed port and port 0) and -D opened over the control socket: up once
        each has its reply, bytes flow through each, status shows each open (and the port
        the server chose), the argv has no -L/-R/-D of its own, and ssh stays a master
        with its socket in tunneld's runtime directory."""
        lport, rport, dport = free_port(), free_port(), free_port()
        d = self.tunneld([{"name": "mx", "local_forwards": [self.echo.forward(lport)],
                           "remote_forwards": [self.echo.forward(rport), f"0:127.0.0.1:{self.echo.port}"],
                           "dynamic_forwards": [f"127.0.0.1:{dport}"]}])
        m, pid = d.wait_up("mx")
        t = tunnel_status(d, "mx")
        self.assertTrue(t["multiplex"])
        states = {f["forward"]: f for f in t["forward_states"]}
        self.assertEqual({k: v["state"] for k, v in states.items()},
                         {self.echo.forward(lport): "open", self.echo.forward(rport): "open",
                          f"0:127.0.0.1:{self.echo.port}": "open", f"127.0.0.1:{dport}": "open"})
        allocated = states[f"0:127.0.0.1:{self.echo.port}"]["allocated_port"]
        self.assertIsInstance(allocated, int)
        self.assertTrue(echo_roundtrip(lport))
        self.assertTrue(echo_roundtrip(rport), "the -R listens on the server (loopback here)")
        self.assertTrue(echo_roundtrip(allocated), "the -R 0 on the port the server chose")
        self.assertTrue(socks_echo(dport, self.echo.port), "the -D")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        self.assertNotIn(b"-L", argv)
        self.assertNotIn(b"-R", argv)
        self.assertIn(b"ControlMaster=yes", argv)
        path = [a for a in argv if a.startswith(b"ControlPath=")][0][len("ControlPath="):].decode()
        self.assertTrue(os.path.exists(path), path)
        self.assertEqual(os.stat(os.path.dirname(path)).st_mode & 0o777, 0o700)
        text = metrics_text(d)
        self.assertIn(f'tunneld_forward_up{{tunnel="mx",kind="L",forward="{self.echo.forward(lport)}"}} 1', text)

    def test_no_wakeup_per_forwarded_connection(self):
        """50 connections through a -L: ssh writes nothing for them, so tunneld wakes up
        only for its own timers (a margin of 10 for the loaded machine). The measure itself
        is checked with 50 connections through a forward whose target refuses them: ssh
        writes a line for each ("open failed"), and tunneld reads them."""
        port, dead = free_port(), free_port()
        d = self.tunneld([{"name": "quiet", "local_forwards": [self.echo.forward(port)]},
                          {"name": "loud", "local_forwards": [f"127.0.0.1:{dead}:127.0.0.1:{free_port()}"]}],
                         gatetime=0)
        d.wait_up("quiet")
        d.wait_up("loud")
        self.assertTrue(echo_roundtrip(port))
        woke = {}
        for name, p in (("quiet", port), ("loud", dead)):
            time.sleep(0.5)
            before = ctx_switches(d.pid)
            for _ in range(50):
                ok = echo_roundtrip(p)
                self.assertEqual(ok, name == "quiet")
            time.sleep(0.3)
            woke[name] = ctx_switches(d.pid) - before
        print(f"# tunneld woke {woke['quiet']} times for 50 forwarded connections, {woke['loud']} for 50 that "
              f"ssh logs", flush=True)
        self.assertLess(woke["quiet"], 10)
        # a loaded sanitized tunneld reads several of ssh's lines per wakeup (25 seen for 50)
        self.assertGreaterEqual(woke["loud"], 15, "the measure itself: ssh's lines wake tunneld")

    @unittest.skipUnless(ipv6_loopback(), "no ::1 here")
    def test_a_taken_local_port_degrades_and_comes_back(self):
        """Of two -L, one's port is held by another program on 127.0.0.1 (ssh binds only
        ::1 and its reply says OK: tunneld fails it from ssh's bind error): the tunnel is
        degraded, the other forward works; once the port is free the forward is asked for
        again over the same ssh and the tunnel is up, with the same pid."""
        good, taken = free_port(), free_port()
        squatter = listening_socket(taken)
        d = self.tunneld([{"name": "deg",
                           "local_forwards": [self.echo.forward(good), f"{taken}:127.0.0.1:{self.echo.port}"]}])
        m = d.wait_log(r"^<\d+>deg: degraded: ssh \(pid (\d+)\) runs, but 1 of 2 forwards failed", timeout=UP_TIMEOUT)
        pid = int(m.group(1))
        st = {f["forward"]: f for f in tunnel_status(d, "deg")["forward_states"]}
        self.assertEqual(st[self.echo.forward(good)]["state"], "open")
        self.assertEqual(st[f"{taken}:127.0.0.1:{self.echo.port}"]["state"], "failed")
        self.assertIn("Address already in use", st[f"{taken}:127.0.0.1:{self.echo.port}"]["reason"])
        self.assertTrue(echo_roundtrip(good), "the other forward works meanwhile")
        squatter.close()
        wait_state(d, "deg", "up", timeout=40)
        self.assertEqual(tunnel_status(d, "deg")["pid"], pid, "the same ssh: no restart")
        wait_until(lambda: echo_roundtrip(taken), 10, what="an echo through the freed port")
        self.assertIn(f"deg: forward L {taken}:127.0.0.1:{self.echo.port} open again", d.log())

    def test_a_stale_remote_listener_does_not_cost_the_tunnel(self):
        """The server's port for a -R is held (a squatter on the server side: the same
        loopback here): the -R fails with ssh's reason, the -L keeps working throughout;
        the squatter goes and the -R is back within 5 s, on the same ssh."""
        lport, rport = free_port(), free_port()
        squatter = listening_socket(rport)
        d = self.tunneld([{"name": "rr", "local_forwards": [self.echo.forward(lport)],
                           "remote_forwards": [self.echo.forward(rport)]}])
        m = d.wait_log(r"^<\d+>rr: degraded: ssh \(pid (\d+)\) runs, but 1 of 2 forwards failed", timeout=UP_TIMEOUT)
        pid = int(m.group(1))
        st = {f["forward"]: f for f in tunnel_status(d, "rr")["forward_states"]}
        self.assertEqual(st[self.echo.forward(rport)]["state"], "failed")
        self.assertIn("remote port forwarding failed", st[self.echo.forward(rport)]["reason"])
        self.assertTrue(echo_roundtrip(lport))
        # let a few retries pass: the -L never stops working
        for _ in range(10):
            self.assertTrue(echo_roundtrip(lport))
            time.sleep(0.2)
        squatter.close()
        t0 = time.monotonic()
        # the retry delay doubles from 1 s; by now it is at most 8 s: allow it, then 5 s
        wait_state(d, "rr", "up", timeout=40)
        print(f"# -R back {time.monotonic() - t0:.2f} s after the squatter left", flush=True)
        self.assertEqual(tunnel_status(d, "rr")["pid"], pid)
        self.assertTrue(echo_roundtrip(rport))

    def test_reload_changes_forwards_on_the_running_ssh(self):
        """A reload that adds a -L and removes another applies both on the running master:
        the same ssh pid, a connection open through the kept forward goes on carrying
        bytes across the reload, the added one works, the removed one's port is closed."""
        keep, gone, new = free_port(), free_port(), free_port()
        d = self.tunneld([{"name": "live", "local_forwards": [self.echo.forward(keep), self.echo.forward(gone)]}])
        m, pid = d.wait_up("live")
        conn = socket.create_connection(("127.0.0.1", keep), timeout=5)
        self.addCleanup(conn.close)
        conn.sendall(b"before\n")
        self.assertEqual(conn.recv(64), b"before\n")
        d.rewrite(tunnels=[{**d.tunnels[0], "local_forwards": [self.echo.forward(keep), self.echo.forward(new)]}])
        d.reload()
        d.wait_log(r"^<\d+>live: forwards changed: 1 added, 1 removed on the running ssh \(pid \d+\)", timeout=10)
        want = {self.echo.forward(keep): "open", self.echo.forward(new): "open"}
        wait_until(lambda: forward_states(tunnel_status(d, "live")) == want, 10, what="the new forward open")
        self.assertEqual(tunnel_status(d, "live")["pid"], pid, "the same ssh")
        self.assertEqual(tunnel_status(d, "live")["state"], "up")
        conn.sendall(b"after\n")
        self.assertEqual(conn.recv(64), b"after\n", "the open connection survived the reload")
        self.assertTrue(echo_roundtrip(new))
        wait_until(lambda: not tunneltest.port_accepts(gone, 0.5), 5, what="the removed forward's port closed")

    def test_restarts_move_remote_forwards_without_a_failure(self):
        """Ten planned restarts of a tunnel with four -R: each -R moves to the new ssh,
        although the old ssh's cancel of its port reaches the server without an answer
        and the new one may ask for the port first: the tunnel is never degraded, no
        forward fails, no outage, and every -R carries bytes after each restart."""
        ports = [free_port() for _ in range(4)]
        d = self.tunneld([{"name": "rr", "remote_forwards": [self.echo.forward(p) for p in ports]}], gatetime=0)
        m, pid = d.wait_up("rr")
        for i in range(10):
            # every other restart, the server's session of the old ssh (the process that
            # listens on the -R ports) is slow: stopped for 0.5 s, so its cancel comes late
            session = listener_pid(ports[0]) if i % 2 else None
            if session:
                os.kill(session, signal.SIGSTOP)
                threading.Timer(0.5, signal_if_alive, (session, signal.SIGCONT)).start()
                self.addCleanup(signal_if_alive, session, signal.SIGCONT)
            r = tunnelctl(d, "restart", "rr", timeout=30)
            self.assertEqual(r.returncode, 0, describe(r))
            new = int(r.stdout.split("ssh pid ")[1].split()[0])
            self.assertNotEqual(new, pid, f"restart {i}")
            pid = new
            wait_until(lambda: tunnel_status(d, "rr")["pid"] == pid, UP_TIMEOUT, what=f"restart {i} taken over")
            for p in ports:
                self.assertTrue(echo_roundtrip(p), f"-R {p} after restart {i}")
        t = tunnel_status(d, "rr")
        self.assertEqual((t["state"], t["failures"], t["availability"]["outages"]), ("up", {}, 0), t)
        self.assertEqual(d.findall(r"^<\d+>rr: (?:degraded|forward .* failed).*$"), [])

    def test_restart_while_a_planned_restart_is_queued(self):
        """SIGUSR1 with max_parallel_starts 1: the tunnels' new ssh queue for the slot, the
        old ones serving; tunnelctl restart of one of them meanwhile is that restart (said
        so), and it completes: tunneld stays up (it once dereferenced the new master that
        did not exist yet and crashed), every tunnel ends up on a new ssh."""
        ports = [free_port() for _ in range(4)]
        d = self.tunneld([{"name": f"q{i}", "local_forwards": [self.echo.forward(p)]} for i, p in enumerate(ports)],
                         globals={"max_parallel_starts": 1})
        old = {f"q{i}": d.wait_up(f"q{i}")[1] for i in range(4)}
        os.kill(d.pid, signal.SIGUSR1)
        d.wait_log(r"^<\d+>q3: SIGUSR1; queued: ", timeout=10)
        r = tunnelctl(d, "restart", "q3", timeout=30)
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertRegex(r.stdout, rf"^q3: restarted: ssh pid \d+ \(was {old['q3']}\)\n$")
        self.assertRegex(d.log(), r"(?m)^<\d+>q3: restart requested: a make-before-break restart is under way "
                                  r"already \(its new ssh is queued: ")
        wait_until(lambda: all(tunnel_status(d, n)["pid"] not in (None, old[n]) for n in old), UP_TIMEOUT,
                   what="every tunnel on a new ssh")
        self.assertIsNone(d.proc.poll(), "tunneld is running")
        for p in ports:
            self.assertTrue(echo_roundtrip(p))

    def test_planned_restart_is_make_before_break(self):
        """tunnelctl restart of an up tunnel: a new ssh takes the forwards over
        while the old one keeps a connection opened before the restart working (bytes both
        ways after it); a client connecting in a tight loop meanwhile is refused for a few
        ms at most; once that connection closes, the old ssh ends (drained)."""
        port = free_port()
        d = self.tunneld([{"name": "mbb", "local_forwards": [self.echo.forward(port)]}])
        m, old = d.wait_up("mbb")
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(conn.close)
        conn.sendall(b"before\n")
        self.assertEqual(conn.recv(64), b"before\n")

        refused, ok, stop = [0], [0], [False]

        def hammer():
            while not stop[0]:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=2):
                        ok[0] += 1
                except OSError:
                    refused[0] += 1
                    time.sleep(0.001)
        import threading
        th = threading.Thread(target=hammer, daemon=True)
        th.start()
        r = tunnelctl(d, "restart", "mbb", timeout=30)
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertRegex(r.stdout, rf"^mbb: restarted: ssh pid (\d+) \(was {old}\)\n$")
        printed = int(r.stdout.split("ssh pid ")[1].split()[0])
        # status shows the ssh that serves: the old one until the new one has every forward
        new = wait_state(d, "mbb", "up", not_pid=old)["pid"]
        self.assertEqual(new, printed, "the ssh tunnelctl named serves now")
        time.sleep(0.5)
        stop[0] = True
        th.join(5)
        self.assertNotEqual(new, old)
        self.assertTrue(tunneltest.pid_alive(old), "the old ssh drains its connection")
        self.assertEqual(tunneltest.status(d)["mbb"]["availability"]["outages"], 0,
                         "a make-before-break restart is no outage: the old ssh served throughout")
        conn.sendall(b"after\n")
        self.assertEqual(conn.recv(64), b"after\n", "the connection opened before the restart works after it")
        self.assertTrue(echo_roundtrip(port), "new connections go to the new ssh")
        print(f"# make-before-break: {refused[0]} refused and {ok[0]} accepted connection attempts across it",
              flush=True)
        self.assertLess(refused[0], 50, "refused for more than a few ms")
        # a second planned restart while the first old ssh still drains: make-before-break too
        r = tunnelctl(d, "restart", "mbb", timeout=30)
        self.assertEqual(r.returncode, 0, describe(r))
        wait_tunnel(d, "mbb", lambda t: t["state"] == "up" and t["pid"] not in (old, new), what="up on a third ssh")
        conn.sendall(b"twice\n")
        self.assertEqual(conn.recv(64), b"twice\n", "the connection survives a second restart too")
        self.assertTrue(tunneltest.pid_alive(old), "the first old ssh still drains")
        self.assertTrue(echo_roundtrip(port))
        conn.close()
        wait_until(lambda: not tunneltest.pid_alive(old), 10, what="the old ssh to end once drained")
        d.wait_log(r"^<\d+>mbb: the old ssh \(pid \d+\) carries no connection any more", timeout=5)

    def test_max_lifetime_restart_is_make_before_break(self):
        """max_lifetime of a tunnel restarts it make-before-break too: a
        connection across the restart keeps working."""
        port = free_port()
        d = self.tunneld([{"name": "life", "local_forwards": [self.echo.forward(port)], "max_lifetime": 3}])
        m, _ = d.wait_up("life")
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(conn.close)
        d.wait_log(r"^<\d+>life: .*make-before-break: a new ssh takes the forwards over", timeout=15)
        d.wait_log(r"^<5>life: make-before-break done: ssh pid \d+ has taken every forward over", timeout=UP_TIMEOUT,
                   after=m.end())
        conn.sendall(b"across\n")
        self.assertEqual(conn.recv(64), b"across\n")

    def test_policy_reload_keeps_the_forward_states(self):
        """A reload that changes only a supervision setting of a tunnel keeps
        its ssh, and the forward states name their forwards right after it (they own
        their strings: the old spec is freed)."""
        port = free_port()
        d = self.tunneld([{"name": "pol", "local_forwards": [self.echo.forward(port)]}])
        m, _ = d.wait_up("pol")
        for delay in (0.5, 0.7, 0.9):
            d.rewrite(tunnels=[{**d.tunnels[0], "restart_delay": delay}])
            d.reload()
            d.wait_log(r"^<\d+>pol: supervision settings changed", timeout=20, after=m.end())
            m = d.wait_log(r"^<\d+>reload done: ", timeout=20, after=m.end())
            self.assertEqual(forward_states(tunnel_status(d, "pol")), {self.echo.forward(port): "open"})
        self.assertEqual(tunnel_status(d, "pol")["pid"], int(d.findall(r"^<\d+>pol: up: ssh \(pid (\d+)\)")[0]))
        self.assertTrue(echo_roundtrip(port))

    def test_kill_9_of_the_master_restarts_cleanly(self):
        """kill -9 of the master leaves its socket file behind: the next start removes it
        (a stale one would make ssh run without multiplexing) and the tunnel is up again
        with every forward open."""
        port = free_port()
        d = self.tunneld([{"name": "k", "local_forwards": [self.echo.forward(port)]}])
        m, _ = d.wait_up("k")
        os.kill(int(m.group(1)), signal.SIGKILL)
        m, _ = d.wait_up("k", after=m.end())
        self.assertEqual(set(forward_states(tunnel_status(d, "k")).values()), {"open"})
        wait_until(lambda: echo_roundtrip(port), 10, what="an echo after the restart")
        self.assertNotIn("disabling multiplexing", d.log())


FAKE_MASTER = r"""#!/usr/bin/env python3
# A misbehaving mux master: says it authenticated, creates the control socket, then does
# what its host name says: "garbage" (bytes that are not the protocol), "close" (hangs up
# after the hello), "silent" (never creates the socket).
import os, socket, struct, sys, time
args = sys.argv[1:]
if "-G" in args:
    sys.exit(0)
path = next(a.split("=", 1)[1] for i, a in enumerate(args) if a.startswith("ControlPath=")).replace("%%", "%")
mode = args[-1]
sys.stderr.write('Authenticated to %s ([127.0.0.1]:22) using "publickey".\n' % mode)
sys.stderr.flush()
if mode == "silent":
    time.sleep(600)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path + ".tmp")       # as ssh does: bound and listening, then linked into place
s.listen(1)
os.link(path + ".tmp", path)
c, _ = s.accept()
c.recv(64)
if mode == "garbage":
    c.sendall(struct.pack(">II", 8, 0x12345678) + b"\x00" * 4)
elif mode == "close":
    c.sendall(struct.pack(">III", 8, 1, 4))
    c.close()
time.sleep(600)
"""


def last_failure(t):
    """The failure class of a tunnel's last run, None before it ended."""
    return t["last_exit"] and t["last_exit"]["failure"]


class BrokenMasterTest(unittest.TestCase):
    """What a master that is not one gets: a failed run with class mux and a reason, or
    the start deadline, never a hang."""

    def tunneld(self, host, **settings):
        d = tunneltest.temp_dir(self)
        fake = os.path.join(d, "fake-master")
        with open(fake, "w") as f:
            f.write(FAKE_MASTER)
        os.chmod(fake, 0o755)
        port = free_port()
        return tunneltest.use(self, Tunneld([{"name": "m", "host": host,
                                               "local_forwards": [f"127.0.0.1:{port}:127.0.0.1:9"]}],
                                             {"restart_delay": 30, "restart_delay_max": 60, **settings},
                                             globals={"ssh": fake}))

    def test_garbage_on_the_control_socket(self):
        d = self.tunneld("garbage")
        d.wait_log(r"^<\d+>m: ssh's control socket sent a malformed message", timeout=20)
        wait_tunnel(d, "m", lambda t: last_failure(t) == "mux", 20, what="the run ended as mux")

    def test_master_hangs_up_after_hello(self):
        d = self.tunneld("close")
        # its hang-up is seen on the read, or on the write of the first request
        d.wait_log(r"^<\d+>m: (ssh closed its control socket|cannot (write to|read) ssh's control socket)",
                   timeout=20)
        wait_tunnel(d, "m", lambda t: last_failure(t) == "mux", 20, what="the run ended as mux")

    def test_master_that_never_creates_its_socket(self):
        d = self.tunneld("silent", start_timeout=2)
        wait_tunnel(d, "m", lambda t: last_failure(t) == "timeout", 20, what="the run ended at the start deadline")


if __name__ == "__main__":
    tunneltest.main()
