#!/usr/bin/env python3
"""share_connection = true, end to end against real sshds: tunnels to the same destination
ride one ssh (a mux master of tunneld's), each with its own forwards, state, counters and
commands. Stopping, restarting or reloading one tunnel touches only its forwards; a
connection failure is judged once and comes back for every tunnel on it; the connection
stops with its last tunnel."""

import os
import signal
import socket
import time

import tunneltest
from tunneltest import (SSHServer, UP_TIMEOUT, all_in_state, echo_roundtrip, free_port, metrics_text, socks_echo,
                        ssh_children, status, tunnelctl, wait_all, wait_state, wait_until)


class ShareTest(tunneltest.SSHTestCase):
    fast_settings = {**tunneltest.SSHTestCase.fast_settings, "restart_delay_max": 1, "share_connection": True}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sshd2 = tunneltest.use(cls, SSHServer())

    def three(self):
        self.ports = {"a": free_port(), "b": free_port(), "c": free_port()}
        self.rport, self.dport = free_port(), free_port()
        return [{"name": "a", "local_forwards": [self.echo.forward(self.ports["a"])]},
                {"name": "b", "local_forwards": [self.echo.forward(self.ports["b"])],
                 "remote_forwards": [self.echo.forward(self.rport)]},
                {"name": "c", "local_forwards": [self.echo.forward(self.ports["c"])],
                 "dynamic_forwards": [f"127.0.0.1:{self.dport}"]}]

    def test_three_tunnels_ride_one_ssh(self):
        """Three tunnels to one destination: one ssh in all, each tunnel up with its own
        forwards open (-L, -R, -D carry bytes), status names the shared connection and
        the same ssh pid for each, metrics have each tunnel's forwards."""
        d = self.tunneld(self.three())
        wait_all(d, "abc")
        s = status(d)
        self.assertEqual(len(ssh_children(d.pid)), 1, "one ssh for the three")
        self.assertEqual({s[n]["pid"] for n in "abc"}, set(ssh_children(d.pid)))
        self.assertEqual({s[n]["connection"] for n in "abc"}, {"~a"})
        self.assertEqual([f["state"] for f in s["b"]["forward_states"]], ["open", "open"])
        for n in "abc":
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
        self.assertTrue(echo_roundtrip(self.rport), "b's -R on the server")
        self.assertTrue(socks_echo(self.dport, self.echo.port), "c's -D")
        text = metrics_text(d)
        self.assertIn(f'tunneld_forward_up{{tunnel="b",kind="R",forward="{self.echo.forward(self.rport)}"}} 1', text)
        self.assertNotIn('tunnel="~a"', text, "the connection itself is no tunnel of the metrics")
        self.assertIn("shared connection: ~a", tunnelctl(d, "status", "-l", "a", timeout=30).stdout)

    def test_stop_and_start_one_touches_only_its_forwards(self):
        """tunnelctl stop b: b's port is closed, a and c keep their forwards, a connection
        open through a carries on, the ssh is the same; start b: up again on it."""
        d = self.tunneld(self.three())
        wait_all(d, "abc")
        pid = status(d)["a"]["pid"]
        conn = socket.create_connection(("127.0.0.1", self.ports["a"]), timeout=5)
        self.addCleanup(conn.close)
        conn.sendall(b"before\n")
        self.assertEqual(conn.recv(64), b"before\n")
        r = tunnelctl(d, "restart", "b", timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout, rf"^b: restarted: its forwards opened again on the shared connection ~a "
                                   rf"\(ssh pid {pid}\)\n$")
        wait_state(d, "b", "up", timeout=UP_TIMEOUT)
        self.assertEqual(ssh_children(d.pid), [pid], "a restart of one tunnel keeps the shared ssh")
        conn.sendall(b"restart\n")
        self.assertEqual(conn.recv(64), b"restart\n", "a's open connection is untouched by b's restart")
        self.assertEqual(tunnelctl(d, "stop", "b", timeout=30).returncode, 0)
        wait_state(d, "b", "stopped", timeout=10)
        wait_until(lambda: not echo_roundtrip(self.ports["b"]), 10, what="b's port closed")
        self.assertTrue(echo_roundtrip(self.ports["c"]))
        conn.sendall(b"during\n")
        self.assertEqual(conn.recv(64), b"during\n", "a's open connection is untouched")
        self.assertEqual(ssh_children(d.pid), [pid])
        self.assertEqual(status(d)["b"]["pid"], None)
        r = tunnelctl(d, "start", "b", timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        wait_state(d, "b", "up", timeout=UP_TIMEOUT)
        self.assertTrue(echo_roundtrip(self.ports["b"]))
        self.assertEqual(ssh_children(d.pid), [pid], "on the same ssh")
        conn.sendall(b"after\n")
        self.assertEqual(conn.recv(64), b"after\n")

    def test_kill_9_is_one_failure_for_every_tunnel(self):
        """kill -9 of the shared ssh: every tunnel on it sees the same failure (killed),
        and all come back together on one new ssh."""
        d = self.tunneld(self.three())
        wait_all(d, "abc")
        pid = status(d)["a"]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: all_in_state(d, "abc") and status(d)["a"]["pid"] not in (None, pid), UP_TIMEOUT,
                   what="a, b and c up on a new ssh")
        s = status(d)
        self.assertEqual(len(ssh_children(d.pid)), 1)
        for n in "abc":
            self.assertEqual(s[n]["last_exit"]["failure"], "killed", (n, s[n]["last_exit"]))
            self.assertEqual(s[n]["failures"], {"killed": 1}, n)
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
        self.assertEqual(d.count_log(r"^<\d+>~a: ssh was killed by signal KILL"), 1,
                         "the connection's failure is judged once")
        # once the run has passed gatetime the connection restarts at once, with no backoff:
        # the failure is each tunnel's all the same
        pid = s["a"]["pid"]
        time.sleep(1.5)         # gatetime 1
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: all_in_state(d, "abc") and status(d)["a"]["pid"] not in (None, pid), UP_TIMEOUT,
                   what="a, b and c up on a third ssh")
        s = status(d)
        for n in "abc":
            self.assertEqual(s[n]["failures"], {"killed": 2}, n)
            self.assertEqual(s[n]["last_exit"]["failure"], "killed", n)
            self.assertGreaterEqual(s[n]["restarts"], 1, n)

    def test_reload_changes_one_tunnels_forwards_on_the_running_ssh(self):
        """A reload that adds a forward to a and removes c: applied on the running ssh; a
        connection open through b survives, c's port is closed, a's new one works."""
        tunnels = self.three()
        d = self.tunneld(tunnels)
        wait_all(d, "abc")
        pid = status(d)["a"]["pid"]
        conn = socket.create_connection(("127.0.0.1", self.ports["b"]), timeout=5)
        self.addCleanup(conn.close)
        extra = free_port()
        tunnels[0]["local_forwards"].append(self.echo.forward(extra))
        d.rewrite(tunnels=[{"host": "127.0.0.1", **t} for t in tunnels[:2]])
        r = tunnelctl(d, "reload", timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        wait_until(lambda: echo_roundtrip(extra), UP_TIMEOUT, what="a's new forward")
        wait_until(lambda: not echo_roundtrip(self.ports["c"]), 10, what="c's port closed")
        self.assertEqual(ssh_children(d.pid), [pid], "the same ssh")
        conn.sendall(b"kept\n")
        self.assertEqual(conn.recv(64), b"kept\n", "b's open connection survives the reload")
        self.assertEqual(sorted(status(d)), ["a", "b"])

    def test_sigusr1_restarts_the_connection_make_before_break(self):
        """SIGUSR1: the shared connection restarts once, make-before-break: every tunnel on
        it moves to the new ssh, a connection opened before carries on."""
        d = self.tunneld(self.three())
        wait_all(d, "abc")
        old = status(d)["a"]["pid"]
        conn = socket.create_connection(("127.0.0.1", self.ports["c"]), timeout=5)
        self.addCleanup(conn.close)
        os.kill(d.pid, signal.SIGUSR1)
        wait_until(lambda: all_in_state(d, "abc") and status(d)["a"]["pid"] != old, UP_TIMEOUT,
                   what="every tunnel on the new ssh")
        self.assertEqual(len({status(d)[n]["pid"] for n in "abc"}), 1)
        conn.sendall(b"across\n")
        self.assertEqual(conn.recv(64), b"across\n", "the connection opened before the restart")
        for n in "abc":
            self.assertTrue(echo_roundtrip(self.ports[n]), n)
            self.assertEqual(status(d)[n]["availability"]["outages"], 0, n)

    def test_two_destinations_two_ssh_and_the_last_tunnel_stops_it(self):
        """Tunnels to two sshds ride two connections; stopping both tunnels of one ends its
        ssh, the other is untouched."""
        p1, p2, p3 = free_port(), free_port(), free_port()
        d = self.tunneld([{"name": "x1", "local_forwards": [self.echo.forward(p1)]},
                          {"name": "x2", "local_forwards": [self.echo.forward(p2)]},
                          {**self.sshd2.tunnel_defaults(), "name": "y1", "local_forwards": [self.echo.forward(p3)]}])
        wait_all(d, ["x1", "x2", "y1"])
        s = status(d)
        self.assertEqual(len(ssh_children(d.pid)), 2)
        self.assertEqual((s["x1"]["connection"], s["x2"]["connection"], s["y1"]["connection"]), ("~x1", "~x1", "~y1"))
        xpid = s["x1"]["pid"]
        self.assertEqual(tunnelctl(d, "stop", "x1", "x2", timeout=30).returncode, 0)
        wait_until(lambda: not tunneltest.pid_alive(xpid), 10, what="the ssh of x1 and x2 to end")
        self.assertEqual(ssh_children(d.pid), [s["y1"]["pid"]])
        self.assertTrue(echo_roundtrip(p3))
        self.assertEqual(tunnelctl(d, "start", "x2", timeout=30).returncode, 0)
        wait_state(d, "x2", "up", timeout=UP_TIMEOUT)
        self.assertTrue(echo_roundtrip(p2))
        self.assertEqual(status(d)["x1"]["state"], "stopped")
        self.assertFalse(echo_roundtrip(p1))

    def test_check_explains_and_refuses(self):
        """tunneld -t names the tunnels that share a connection, and refuses an `after`
        between two of them (FILE:LINE, the setting)."""
        path = os.path.join(tunneltest.temp_dir(self), "t.conf")
        base = {**self.sshd.tunnel_defaults(), "share_connection": True}
        tunneltest.write_config(path, {"ssh": tunneltest.SSH}, base,
                                [{"name": "a", "host": "127.0.0.1", "local_forwards": [self.echo.forward(free_port())]},
                                 {"name": "b", "host": "127.0.0.1", "local_forwards": [self.echo.forward(free_port())]},
                                 {"name": "c", "host": "127.0.0.1", "share_connection": False,
                                  "local_forwards": [self.echo.forward(free_port())]}])
        r = tunneltest.run_tunneld("-t", "-c", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("shared connection ~a: a, b", r.stdout)
        self.assertNotIn(", c", r.stdout)
        tunneltest.write_config(path, {"ssh": tunneltest.SSH}, base,
                                [{"name": "a", "host": "127.0.0.1", "local_forwards": [self.echo.forward(free_port())]},
                                 {"name": "b", "host": "127.0.0.1", "after": ["a"],
                                  "local_forwards": [self.echo.forward(free_port())]}])
        r = tunneltest.run_tunneld("-t", "-c", path)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr + r.stdout, r"t\.conf:\d+: b\.after: \"a\" shares this tunnel's connection")


if __name__ == "__main__":
    tunneltest.main()
