#!/usr/bin/env python3
"""Tunnels follow the network (issue 24), each against a real sshd in a test network
namespace, with default settings: a path that moves (the local address removed, the
server routed by another path) costs one handshake; a change that does not touch the
tunnel's path costs nothing; a dead TCP path (a silent blackhole) is found by TCP itself
(dead_path_timeout on ssh's own connection) and the path's return within about a second
(probes of the dead path); a resume from sleep (logind's PrepareForSleep(false), from a
stand-in on a private system bus) gives every up connection a new ssh beside the old one,
no established connection broken."""

import os

os.environ.setdefault("TUNNELTEST_TIMEOUT", "240")

import socket  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import logindstub  # noqa: E402
import netns  # noqa: E402
import tunneltest  # noqa: E402
from netns import NetnsSSHServer, SteadyClient, TaggedEchoServer, TwoPathHost, ip, listener_port  # noqa: E402
from tunneltest import Tunneld, status, wait_until  # noqa: E402

UP_TIMEOUT = 20
WATCH = {"watch_network": True}     # its default (the test harness turns it off elsewhere)


class FollowNetworkTest(unittest.TestCase):
    def setUp(self):
        why = netns.available()
        if why:
            self.skipTest(why)
        self.host = tunneltest.use(self, TwoPathHost())
        self.sshd = tunneltest.use(self, NetnsSSHServer(self.host))
        self.echo = tunneltest.use(self, TaggedEchoServer(self.host))
        self.port = listener_port()

    def tunneld(self, env=None, **settings):
        fwd = f"127.0.0.1:{self.port}:127.0.0.1:{self.echo.port}"
        d = tunneltest.use(self, Tunneld([{"name": "t", "local_forwards": [fwd]}],
                                         {**self.sshd.tunnel_defaults(), **settings}, WATCH, env=env))
        d.wait_log(r"^<\d+>t: up: ", timeout=UP_TIMEOUT)
        wait_until(lambda: self.echo.roundtrip(self.port), 10, what="an echo through the tunnel")
        return d

    def state(self, d):
        return status(d)["t"]

    def test_a_moved_path_costs_one_handshake(self):
        """The path in use loses its address and the server is routed by the other one (a
        laptop moving from Wi-Fi to Ethernet): bytes flow again within 2 s, over a new ssh
        that took the forward over make-before-break, and the log says the path moved."""
        d = self.tunneld()
        pid = self.state(d)["pid"]
        path = self.state(d)["path"]
        self.assertEqual((path["local"].rsplit(":", 1)[0], path["remote"], path["tcp_state"]),
                         (self.host.paths["A"].local_addr, f"{self.host.remote_addr}:22", "established"), path)
        self.assertGreater(path["bytes_received"], 0, path)
        offset = len(d.log())
        t0 = time.monotonic()
        self.host.move("B")
        wait_until(lambda: self.echo.roundtrip(self.port, timeout=0.3), 10, interval=0.05,
                   what="an echo through the tunnel after the move")
        took = time.monotonic() - t0
        print(f"# the path moved: bytes flow again after {took:.2f} s", flush=True)
        self.assertLess(took, 2.0)
        self.assertRegex(d.log()[offset:], r"(?m)^<\d>t: the network path moved \(.*\); make-before-break")
        t = self.state(d)
        self.assertEqual(t["state"], "up", t)
        self.assertNotEqual(t["pid"], pid)
        self.assertEqual(t["failures"], {}, t)
        self.assertEqual(t["path"]["local"].rsplit(":", 1)[0], self.host.paths["B"].local_addr, t["path"])
        wait_until(lambda: not tunneltest.pid_alive(pid), 15, what="the old ssh to end")

    def test_changes_elsewhere_cost_nothing(self):
        """20 changes that do not touch the tunnel's path (a route to elsewhere added and
        removed, the other path's link down and up): the same ssh throughout, and no line
        above debug level."""
        d = self.tunneld()
        pid = self.state(d)["pid"]
        offset = len(d.log())
        other = self.host.paths[self.host.other()]
        for i in range(20):
            if i % 2:
                ip("route", "add", "198.51.100.0/24", "via", other.gateway)
                time.sleep(0.3)
                ip("route", "del", "198.51.100.0/24", "via", other.gateway)
            else:
                self.host.link_down(other.name)
                time.sleep(0.3)
                self.host.link_up(other.name)
            time.sleep(0.3)
        time.sleep(1)
        self.assertEqual(self.state(d)["pid"], pid)
        self.assertTrue(self.echo.roundtrip(self.port))
        self.assertNotRegex(d.log()[offset:], r"(?m)^<[0-6]>", "a line above debug for changes elsewhere")

    def test_a_busy_tunnel_under_a_blackhole(self):
        """A client sends every 100 ms; the path goes silent for 40 s: tunneld stops calling
        the tunnel up within dead_path_timeout (4 s) + 3 s (TCP gives up on the
        unacknowledged data; 4.3 s measured, 6.2 s at a load of 60; ServerAlive alone would
        take 90 s), says the path died (not a failed start), and bytes flow again within 2 s
        of the path's return."""
        d = self.tunneld()
        client = tunneltest.use(self, SteadyClient(self.port, self.echo.tag))
        wait_until(lambda: client.replies, 5, what="the client's first echo")
        offset = len(d.log())
        t0 = time.monotonic()
        self.host.blackhole()
        wait_until(lambda: self.state(d)["state"] != "up", 15, interval=0.05, what="the tunnel no longer up")
        down = time.monotonic() - t0
        print(f"# busy, blackholed: not up after {down:.2f} s", flush=True)
        self.assertLess(down, 4.0 + 3.0)
        time.sleep(max(0.0, 40 - (time.monotonic() - t0)))
        t1 = time.monotonic()
        self.host.unblackhole()
        wait_until(lambda: self.echo.roundtrip(self.port, timeout=0.3), 15, interval=0.05,
                   what="an echo through the tunnel after the blackhole")
        back = time.monotonic() - t1
        print(f"# busy, blackhole lifted: bytes flow again after {back:.2f} s", flush=True)
        self.assertLess(back, 2.0)
        log = d.log()[offset:]
        self.assertRegex(log, r"(?m)^<4>t: ssh .*; its path died \(the server stopped answering a connection "
                              r"that was up\); reconnecting at once")
        self.assertNotRegex(log, r"failed start|restarting in")
        self.assertEqual(self.state(d)["failures"], {})

    def test_an_idle_tunnel_under_a_blackhole(self):
        """No traffic; the path goes silent: ServerAlive's next probe stays unacknowledged,
        and TCP gives up dead_path_timeout later: the tunnel is no longer up within
        server_alive_interval + 5 s, not ServerAlive's interval × count."""
        d = self.tunneld()
        interval = 30        # tunneld's default server_alive_interval
        time.sleep(3)        # the echo's connection closed (ssh's last messages acknowledged): idle
        t0 = time.monotonic()
        self.host.blackhole()
        wait_until(lambda: self.state(d)["state"] != "up", interval + 20, interval=0.2,
                   what="the idle tunnel no longer up")
        down = time.monotonic() - t0
        print(f"# idle, blackholed: not up after {down:.2f} s", flush=True)
        self.assertGreater(down, interval - 5, "not idle: something was in flight")
        self.assertLess(down, interval + 5)
        self.host.unblackhole()
        wait_until(lambda: self.echo.roundtrip(self.port, timeout=0.3), 15, interval=0.05,
                   what="an echo after the blackhole")


class ResumeTest(unittest.TestCase):
    def setUp(self):
        why = netns.available() or logindstub.available()
        if why:
            self.skipTest(why)
        self.host = tunneltest.use(self, TwoPathHost())
        self.sshd = tunneltest.use(self, NetnsSSHServer(self.host))
        self.echo = tunneltest.use(self, TaggedEchoServer(self.host))
        self.bus = tunneltest.use(self, logindstub.PrivateSystemBus())
        self.logind = tunneltest.use(self, logindstub.StandInLogind(self.bus))

    def test_resume_gives_each_up_connection_a_new_ssh(self):
        """PrepareForSleep(true) then (false): every up connection gets a new ssh beside its
        old one (make-before-break): the established connection through the tunnel goes on
        over the old ssh, new ones go over the new."""
        port = listener_port()
        fwd = f"127.0.0.1:{port}:127.0.0.1:{self.echo.port}"
        d = tunneltest.use(self, Tunneld([{"name": "t", "local_forwards": [fwd]}], self.sshd.tunnel_defaults(),
                                         WATCH, env={"DBUS_SYSTEM_BUS_ADDRESS": self.bus.address}))
        d.wait_log(r"^<\d+>t: up: ", timeout=UP_TIMEOUT)
        wait_until(lambda: self.echo.roundtrip(port), 10, what="an echo through the tunnel")
        pid = status(d)["t"]["pid"]
        held = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(held.close)
        held.sendall(b"before\n")
        self.assertEqual(held.recv(4096), b"before\n" + self.echo.tag)
        offset = len(d.log())
        self.logind.sleep(True)
        self.logind.sleep(False)
        d.wait_log(r"^<\d+>resumed from sleep", after=offset, timeout=10)
        d.wait_log(r"^<\d+>t: make-before-break done: ssh pid \d+ has taken every forward over", after=offset,
                   timeout=UP_TIMEOUT)
        t = status(d)["t"]
        self.assertEqual(t["state"], "up")
        self.assertNotEqual(t["pid"], pid)
        held.sendall(b"after\n")
        self.assertEqual(held.recv(4096), b"after\n" + self.echo.tag, "the established connection broke")
        self.assertTrue(tunneltest.pid_alive(pid), "the old ssh went while it carried a connection")
        self.assertTrue(self.echo.roundtrip(port))


if __name__ == "__main__":
    tunneltest.main()
