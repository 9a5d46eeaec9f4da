#!/usr/bin/env python3
"""Tunnels follow the network, the mechanisms (issue 24): what tunneld's modules say of a real
ssh connection, against the real kernel, through tests/netpath-tool.

A test host reachable by two paths (netns.TwoPathHost: veth pairs A and B, the server on an
address behind both) runs a real sshd; a bare `ssh -N -L` (netns.SSHTunnel) connects over A:

- proc_net finds the ssh's own connection to its server from its pid (and, with a
  ProxyCommand, its helper's connection to the first hop);
- netpath: its local address removed and the server routed by B → gone; the route alone
  moved to B → moved (source and interface); twenty changes that do not touch its path
  (an unrelated route added and removed, the other link down and up) → same, each time,
  each seen by netwatch as a burst of the kind of change it was;
- tcp_diag: its figures under traffic (bytes acknowledged and received grow, an RTT) and
  under a silent blackhole (segments stay unacknowledged, the bytes not acknowledged and
  the time since the last ACK grow, retransmissions count), and recovered after it;
- sleepwatch: logind's PrepareForSleep(true) then (false) from a stand-in logind on a
  private system bus, and nothing from an impostor; an idle bus costs no wakeup; without
  logind, or without a bus, it says so once and netwatch goes on.
"""

import ipaddress
import os
import time
import unittest

import logindstub
import netns
import netpathtool
import tunneltest
from netns import NetnsSSHServer, SSHTunnel, SteadyClient, TaggedEchoServer, TwoPathHost

CHECK_WITHIN = 2.0       # a netlink burst settles in 0.2 s; the rest is a loaded 2-core machine's slack


def endpoints(conn):
    return conn["local"], conn["remote"]


class PathTest(unittest.TestCase):
    host = None

    @classmethod
    def setUpClass(cls):
        why = netns.available()
        if why:
            raise unittest.SkipTest(why)
        netpathtool.require()
        cls.host = tunneltest.use(cls, TwoPathHost())
        cls.sshd = tunneltest.use(cls, NetnsSSHServer(cls.host))
        cls.echo = tunneltest.use(cls, TaggedEchoServer(cls.host))

    def setUp(self):
        self.addCleanup(self.restore)

    def restore(self):
        """Path A as it was: both addresses, the server routed by A, no blackhole."""
        self.host.unblackhole()
        for name, p in self.host.paths.items():
            netns.ip("addr", "add", f"{p.local_addr}/30", "dev", p.outside, check=False)
            netns.ip("link", "set", p.outside, "up", check=False)
        self.host.route_via("A")

    def tunnel(self):
        """A bare ssh -L over the path in use, and its connection to the server as proc_net
        finds it from the pid."""
        t = tunneltest.use(self, SSHTunnel(self.sshd, self.echo))
        conn = netpathtool.run("server", t.pid, self.sshd.port)
        self.assertNotIn("error", conn, conn)
        return t, conn

    def check(self, conn, *extra):
        r = netpathtool.run("check", *endpoints(conn), *extra)
        self.assertEqual(r["kind"], "check", r)
        return r

    # -- proc_net --
    def test_proc_net_finds_the_server_connection_of_a_real_ssh(self):
        t, conn = self.tunnel()
        path = self.host.paths["A"]
        self.assertEqual(int(conn["pid"]), t.pid)
        self.assertTrue(conn["local"].startswith(path.local_addr + ":"), conn)
        self.assertEqual(conn["remote"], f"{self.host.remote_addr}:{self.sshd.port}")
        # the same socket as the kernel's sock_diag sees it, by 4-tuple and by inode
        d = netpathtool.run("diag", *endpoints(conn))
        self.assertEqual((d.get("state"), d.get("inode")), ("established", conn["inode"]), d)
        by_inode = netpathtool.run("diag-inode", 4, conn["inode"])
        self.assertEqual((by_inode.get("local"), by_inode.get("remote")), endpoints(conn), by_inode)
        # the forward's own connections (a client through -L) are not the server's
        with SteadyClient(t.listen_port, self.echo.tag):
            again = netpathtool.run("server", t.pid, 0)
            self.assertEqual(again.get("inode"), conn["inode"], again)

    def test_proc_net_finds_a_proxy_helpers_connection_to_the_first_hop(self):
        s = self.sshd
        proxy = (f"ProxyCommand={tunneltest.SSH} -F /dev/null -i {s.client_key} -o BatchMode=yes "
                 f"-o UserKnownHostsFile={s.known_hosts} -o StrictHostKeyChecking=yes -p {s.port} "
                 f"-W %h:%p root@{self.host.remote_addr}")
        t = tunneltest.use(self, SSHTunnel(s, self.echo, extra_options=[proxy]))
        own = netpathtool.run("server", t.pid, s.port)
        self.assertEqual(own.get("errno"), "2", f"the master talks through a pipe, not TCP: {own}")
        hop = netpathtool.run("proxy", t.pid, s.port)
        self.assertNotIn("error", hop, hop)
        self.assertNotEqual(int(hop["pid"]), t.pid)
        self.assertIn(int(hop["pid"]), tunneltest.descendants_of(t.pid))
        self.assertEqual(hop["remote"], f"{self.host.remote_addr}:{s.port}")
        self.assertEqual(netpathtool.run("check", *endpoints(hop))["verdict"], "same")

    # -- netpath --
    def test_address_removed_is_gone_and_a_new_connection_works(self):
        t, conn = self.tunnel()
        self.assertEqual(self.check(conn)["verdict"], "same")
        with netpathtool.Watch(*endpoints(conn)) as w:
            moved_at = time.monotonic()
            self.host.move("B")        # A's address removed, the server routed by B
            at, line = w.wait(r"^check .*verdict=(?!same)", CHECK_WITHIN + 3, since=moved_at)
            self.assertEqual(line["verdict"], "gone", line)
            self.assertLess(at - moved_at, CHECK_WITHIN, f"checked {at - moved_at:.2f} s after the move")
            change = w.find(r"^change ", since=moved_at)
            self.assertIn("addr-removed", change[0][1]["kinds"], change)
        self.assertIn(self.host.paths["A"].local_addr, line["why"])
        # the old connection carries nothing now; a new one over B does
        self.assertFalse(self.echo.roundtrip(t.listen_port, timeout=1.0))
        t2, conn2 = self.tunnel()
        self.assertTrue(conn2["local"].startswith(self.host.paths["B"].local_addr + ":"), conn2)
        self.assertEqual(self.check(conn2)["verdict"], "same")

    def test_route_moved_to_the_other_path_is_moved(self):
        t, conn = self.tunnel()
        a, b = self.host.paths["A"], self.host.paths["B"]
        first = self.check(conn)
        self.assertEqual((first["verdict"], first["conn_ifname"]), ("same", a.outside), first)
        with netpathtool.Watch(*endpoints(conn)) as w:
            moved_at = time.monotonic()
            self.host.route_via("B")    # A's address stays
            at, line = w.wait(r"^check .*verdict=(?!same)", CHECK_WITHIN + 3, since=moved_at)
        self.assertEqual(line["verdict"], "moved", line)
        self.assertLess(at - moved_at, CHECK_WITHIN)
        self.assertEqual(line["changed"], "source,interface", line)
        self.assertEqual((line["fresh_src"], line["fresh_ifname"]), (b.local_addr, b.outside), line)
        self.assertEqual(line["conn_ifname"], b.outside, "the connection's own packets leave by B now")
        self.assertIn(b.local_addr, line["why"])
        # without a remembered interface only the source tells: still moved
        self.assertEqual(self.check(conn)["changed"], "source")

    def test_no_route_here_is_unreachable_not_gone(self):
        """A blackhole, prohibit or unreachable route to the server on this side: nothing to
        move to yet, but the connection's address is still there."""
        t, conn = self.tunnel()
        server = f"{self.host.remote_addr}/32"
        for kind, why in (("blackhole", "a blackhole route"), ("prohibit", "Permission denied"),
                          ("unreachable", "No route to host")):
            netns.ip("route", "replace", kind, server)
            r = self.check(conn)
            self.assertEqual(r["verdict"], "unreachable", f"{kind}: {r}")
            self.assertIn(why, r["why"])
        self.host.route_via("A")
        self.assertEqual(self.check(conn)["verdict"], "same")

    def test_unrelated_changes_leave_the_path_the_same(self):
        t, conn = self.tunnel()
        b = self.host.paths["B"]
        # an address beside the server's, routed by B: a route that is not the tunnel's
        unrelated = str(ipaddress.ip_network(self.host.server_subnet).network_address + 2) + "/32"
        add = ("route added", lambda: netns.ip("route", "add", unrelated, "via", b.gateway), "route-added")
        remove = ("route removed", lambda: netns.ip("route", "del", unrelated), "route-removed")
        down = ("link B down", lambda: self.host.link_down("B"), "link-down")
        up = ("link B up", lambda: self.host.link_up("B"), "link-up")
        changes = [add, remove] * 3 + [down, up] + [add, remove] * 3 + [down, up] + [add, remove] * 2
        self.assertEqual(len(changes), 20)
        with netpathtool.Watch(*endpoints(conn)) as w:
            for n, (what, change, kind) in enumerate(changes, 1):
                since = time.monotonic()
                change()
                at, line = w.wait(r"^check ", CHECK_WITHIN + 3, since=since)
                self.assertEqual(line["verdict"], "same", f"change {n} ({what}): {line}")
                kinds = [c[1]["kinds"] for c in w.find(r"^change ", since=since)]
                self.assertTrue(any(kind in k for k in kinds), f"change {n} ({what}): netwatch said {kinds}")
                time.sleep(0.3)    # past the settle time: each change its own burst
        self.assertIsNone(t.proc.poll())
        self.assertTrue(self.echo.roundtrip(t.listen_port, timeout=2.0), "bytes still flow through the tunnel")

    # -- tcp_diag --
    def diag(self, conn):
        d = netpathtool.run("diag", *endpoints(conn))
        self.assertEqual(d["kind"], "diag", d)
        return {k: (int(v) if v.isdigit() else v) for k, v in d.items() if not k.startswith("_")}

    def test_tcp_diag_figures_under_traffic_and_under_a_blackhole(self):
        t, conn = self.tunnel()
        with SteadyClient(t.listen_port, self.echo.tag) as client:
            tunneltest.wait_until(lambda: len(client.replies) >= 5, 10, what="echoes through the tunnel")
            d1 = self.diag(conn)
            time.sleep(1.0)
            d2 = self.diag(conn)
            tunneltest.add_diagnostic("tcp_diag samples", lambda: f"{d1}\n{d2}")
            self.assertEqual((d1["state"], d1["has_info"], d1["has_bytes_sent"]), ("established", 1, 1))
            self.assertGreater(d2["bytes_acked"], d1["bytes_acked"])
            self.assertGreater(d2["bytes_received"], d1["bytes_received"])
            self.assertGreaterEqual(d2["bytes_sent"], d2["bytes_acked"] - 1)    # the SYN counts as acked
            self.assertGreater(d2["rtt_us"], 0)
            self.assertLess(d2["last_ack_recv_ms"], 1000, "acked within the last second under traffic")

            holed_at = time.monotonic()
            self.host.blackhole()
            time.sleep(1.5)
            h1 = self.diag(conn)
            time.sleep(1.5)
            h2 = self.diag(conn)
            tunneltest.add_diagnostic("tcp_diag under the blackhole", lambda: f"{h1}\n{h2}")
            # In loss recovery the kernel keeps one segment in flight (cwnd 1): tcpi_unacked
            # stays ≥ 1 while the bytes not acknowledged (idiag_wqueue) pile up behind it.
            self.assertGreater(h1["unacked"], 0)
            self.assertGreaterEqual(h2["unacked"], h1["unacked"])
            self.assertGreater(h2["wqueue"], h1["wqueue"], "unacknowledged bytes pile up")
            self.assertGreater(h2["bytes_sent"], h2["bytes_acked"])
            self.assertGreaterEqual(h1["last_ack_recv_ms"], 1000)
            self.assertGreater(h2["last_ack_recv_ms"], h1["last_ack_recv_ms"] + 1000)
            self.assertGreater(h2["total_retrans"], d2["total_retrans"], "the kernel retransmits")
            self.assertGreater(h2["retransmits"], 0)
            self.assertEqual(h2["state"], "established", "nothing but tcp_info tells the path is dead")
            self.assertFalse(client.replies_since(holed_at + 0.5), "no echo crosses a blackhole")

            back_at = time.monotonic()
            self.host.unblackhole()
            tunneltest.wait_until(lambda: client.replies_since(back_at), 20, what="echoes after the blackhole")
            r = tunneltest.wait_until(lambda: (lambda d: d if d["unacked"] <= 2 else None)(self.diag(conn)), 10,
                                      what="the backlog acknowledged")
            self.assertLess(r["last_ack_recv_ms"], 1000)


class SleepTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        why = logindstub.available()
        if why:
            raise unittest.SkipTest(why)
        netpathtool.require()
        cls.bus = tunneltest.use(cls, logindstub.PrivateSystemBus())

    def test_prepare_for_sleep_from_logind(self):
        with logindstub.StandInLogind(self.bus) as logind, \
                netpathtool.Watch("--sleep", env=self.bus.env) as w:
            w.wait(r"watching logind for sleep and resume", 10)
            since = time.monotonic()
            logind.sleep(True)
            w.wait(r"^sleep sleeping=1$", 5, since=since)
            logind.sleep(False)
            w.wait(r"^sleep sleeping=0$", 5, since=since)
            said = [line["sleeping"] for _, line in w.find(r"^sleep ", since=since)]
            self.assertEqual(said, ["1", "0"])

    def test_an_idle_bus_costs_no_wakeup(self):
        """Once sleepwatch has its answers, nothing wakes it but the bus: in a network
        namespace of its own (no netlink news of other jobs) the tool sleeps for 3 s."""
        with logindstub.StandInLogind(self.bus), \
                netpathtool.Watch("--sleep", env=self.bus.env, wrapper=["unshare", "--net"]) as w:
            w.wait(r"watching logind for sleep and resume", 10)
            time.sleep(0.5)
            before = w.wakeups()
            time.sleep(3)
            self.assertEqual(w.wakeups() - before, 0, "the tool woke up with nothing to do")

    def test_an_impostor_is_not_logind(self):
        with logindstub.StandInLogind(self.bus) as logind, \
                logindstub.StandInLogind(self.bus, name=None) as impostor, \
                netpathtool.Watch("--sleep", env=self.bus.env) as w:
            w.wait(r"watching logind for sleep and resume", 10)
            since = time.monotonic()
            impostor.sleep(True)
            logind.sleep(False)        # after the impostor's: once it is here, the impostor's was dropped
            w.wait(r"^sleep sleeping=0$", 5, since=since)
            self.assertEqual([line["sleeping"] for _, line in w.find(r"^sleep ", since=since)], ["0"])

    def test_without_logind_it_says_so_once_and_hears_it_once_it_comes(self):
        with netpathtool.Watch("--sleep", env=self.bus.env) as w:
            w.wait(r"logind is not on the system bus", 10)
            time.sleep(0.5)
            self.assertEqual(len(w.find(r"logind|system bus", stream="err")), 1, w.find(r"", stream="err"))
            # the match names logind, not its connection: a logind that starts later is heard
            with logindstub.StandInLogind(self.bus) as logind:
                since = time.monotonic()
                logind.sleep(False)
                w.wait(r"^sleep sleeping=0$", 5, since=since)

    def test_without_a_bus_it_says_so_once_and_goes_on(self):
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.bus.dir}/nothing-here"}
        with netpathtool.Watch("--sleep", env=env) as w:
            w.wait(r"no system bus .*a resume from sleep is not noticed", 5, stream="err")
            self.assertIsNone(w.proc.poll(), "it goes on")
            self.assertEqual(len(w.find(r"system bus", stream="err")), 1)


if __name__ == "__main__":
    tunneltest.main()
