#!/usr/bin/env python3
"""Backup relays (issue 26): a tunnel with alternatives for its destination, against two
real sshds, each in a test network namespace of its own with an echo server on the same
port (7) behind it, whose replies carry the relay's tag: relay1 is the tunnel's own host,
relay2 its alternative. Failover to the backup when the primary fails (a silent blackhole,
default dead-path detection), fail-back by make-before-break once the primary has been up
for gatetime, a primary with a wrong host key reported and not hammered, both down backing
off as one connection does, and a reload that reorders or removes alternatives applied as a
difference."""

import os

os.environ.setdefault("TUNNELTEST_TIMEOUT", "240")

import re  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import netns  # noqa: E402
import tunneltest  # noqa: E402
from netns import NetnsSSHServer, SteadyClient, TaggedEchoServer, TestHost, listener_port  # noqa: E402
from tunneltest import Tunneld, status, wait_until  # noqa: E402

UP_TIMEOUT = 20
GATETIME = 3.0
DELAY_MAX = 4.0
# fast enough for a test, and nothing else changed: dead_path_timeout, ServerAlive are the defaults
SETTINGS = {"gatetime": GATETIME, "restart_delay": 0.5, "restart_delay_max": DELAY_MAX, "connect_timeout": 3,
            "drain_timeout": 30}


def pub_key(server):
    """The sshd's host key as host_keys wants it: "KEYTYPE BASE64"."""
    with open(server.host_key + ".pub") as f:
        return " ".join(f.read().split()[:2])


def tagged(port, tag, timeout=0.5):
    return netns.tagged_roundtrip(port, tag, timeout=timeout)


class RelaysTest(unittest.TestCase):
    def setUp(self):
        why = netns.available()
        if why:
            self.skipTest(why)
        self.hosts = [tunneltest.use(self, TestHost()) for _ in range(2)]
        self.sshds = [tunneltest.use(self, NetnsSSHServer(h)) for h in self.hosts]
        self.echos = [tunneltest.use(self, TaggedEchoServer(h)) for h in self.hosts]
        self.assertEqual(self.echos[0].port, self.echos[1].port)
        with open(self.sshds[0].client_key + ".pub") as f:
            pub = f.read()
        with open(self.sshds[1].authorized_keys, "a") as f:
            f.write(pub)
        self.port = listener_port()

    def tunnel(self, primary_key=None, alternatives=None):
        a, b = self.sshds
        return {
            "name": "t",
            "host": a.host.remote_addr,
            "host_keys": [primary_key or pub_key(a)],
            "local_forwards": [f"127.0.0.1:{self.port}:127.0.0.1:{self.echos[0].port}"],
            "alternatives": alternatives if alternatives is not None else [
                {"host": b.host.remote_addr, "host_keys": [pub_key(b)]}],
        }

    def defaults(self, **extra):
        return {"user": "root", "identity_file": self.sshds[0].client_key, "ssh_config_file": "/dev/null",
                **SETTINGS, **extra}

    def tunneld(self, tunnel=None, **extra):
        return tunneltest.use(self, Tunneld([tunnel or self.tunnel()], self.defaults(**extra)))

    def state(self, d):
        return status(d)["t"]

    def serving(self, d):
        alt = self.state(d).get("alternative")
        return alt["index"] if alt else None

    def through(self, i):
        """Bytes flow through the tunnel to relay i."""
        return tagged(self.port, self.echos[i].tag)

    def test_blackholed_primary_fails_over_and_back(self):
        """A busy tunnel on relay1; relay1's path goes silent: TCP notices within
        dead_path_timeout, and bytes flow through relay2 within 2 s of that; status says
        relay2 serves and relay1 failed (timeout); the failover is counted. relay1's path
        back: the tunnel returns to relay1 after gatetime, by make-before-break: a
        connection established through relay2 goes on."""
        d = self.tunneld()
        d.wait_log(r"^<\d+>t: up: ", timeout=UP_TIMEOUT)
        wait_until(lambda: self.through(0), 10, what="an echo through relay1")
        self.assertEqual(self.serving(d), 0)
        client = tunneltest.use(self, SteadyClient(self.port, self.echos[0].tag))
        wait_until(lambda: client.replies, 5, what="the client's first echo")
        offset = len(d.log())
        t0 = time.monotonic()
        self.hosts[0].blackhole()
        wait_until(lambda: self.state(d)["state"] != "up" or self.serving(d) == 1, 15, interval=0.05,
                   what="relay1's ssh to notice")
        noticed = time.monotonic()
        wait_until(lambda: self.through(1), 10, interval=0.05, what="an echo through relay2")
        took = time.monotonic() - noticed
        print(f"# relay1 blackholed: noticed after {noticed - t0:.2f} s, bytes through relay2 {took:.2f} s later",
              flush=True)
        self.assertLess(noticed - t0, 4.0 + 3.0)
        self.assertLess(took, 2.0)
        log = d.log()[offset:]
        self.assertRegex(log, rf"(?m)^<\d>t: .*its path died .*; failing over to "
                              rf"{self.hosts[1].remote_addr} \(timeout at {self.hosts[0].remote_addr}\)")
        t = self.state(d)
        self.assertEqual((t["state"], t["alternative"]["index"], t["alternative"]["host"]),
                         ("up", 1, self.hosts[1].remote_addr), t)
        self.assertEqual(t["alternatives"][0]["last_failure"], "timeout", t["alternatives"])
        self.assertTrue(t["alternatives"][1]["serving"])
        self.assertEqual(t["failovers"], 1)
        metrics = tunneltest.metrics_text(d)
        self.assertEqual(tunneltest.metric_value(metrics, "tunneld_tunnel_alternative", tunnel="t"), 1)
        self.assertEqual(tunneltest.metric_value(metrics, "tunneld_tunnel_failovers_total", tunnel="t"), 1)

        # a connection through relay2, held across the fail-back
        held = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(held.close)
        held.sendall(b"before\n")
        self.assertEqual(held.recv(4096), b"before\n" + self.echos[1].tag)
        pid = t["pid"]
        offset = len(d.log())
        t1 = time.monotonic()
        self.hosts[0].unblackhole()
        d.wait_log(r"^<\d+>t: .*answers again \(ssh pid \d+\)", after=offset, timeout=DELAY_MAX + 15)
        answered = time.monotonic()
        self.assertEqual(self.serving(d), 1, "the forwards moved before gatetime")
        self.assertTrue(self.through(1))
        d.wait_log(r"^<\d+>t: back on ", after=offset, timeout=GATETIME + 10)
        back = time.monotonic()
        print(f"# relay1 back: a candidate up after {answered - t1:.2f} s, the forwards on it {back - answered:.2f} s "
              "later", flush=True)
        self.assertGreater(back - answered, GATETIME - 0.5)
        wait_until(lambda: self.through(0), 5, what="an echo through relay1 again")
        t = self.state(d)
        self.assertEqual((t["state"], t["alternative"]["index"]), ("up", 0), t)
        self.assertNotEqual(t["pid"], pid)
        held.sendall(b"after\n")
        self.assertEqual(held.recv(4096), b"after\n" + self.echos[1].tag, "the established connection broke")
        self.assertTrue(tunneltest.pid_alive(pid), "relay2's ssh went while it carried a connection")
        self.assertEqual(t["failovers"], 1, "a fail-back is no failover")

    def test_wrong_host_key_on_the_primary(self):
        """relay1 shows another key than the pinned one: relay2 serves; status and the log say
        host-key at relay1; relay1 is tried again on its own backoff (host-key: at
        restart_delay_max at once), not hammered."""
        wrong = pub_key(self.sshds[1])      # a real key, not relay1's
        d = self.tunneld(self.tunnel(primary_key=wrong))
        d.wait_log(r"^<\d+>t: up: ", timeout=UP_TIMEOUT)
        wait_until(lambda: self.through(1), 10, what="an echo through relay2")
        self.assertRegex(d.log(), rf"(?m)^<4>t: .*\(host-key: .*; failing over to {self.hosts[1].remote_addr} "
                                  rf"\(host-key at {self.hosts[0].remote_addr}\)")
        t0 = time.monotonic()
        tries0 = self.state(d)["alternatives"][0]["starts"]
        window = 12.0
        time.sleep(window)
        t = self.state(d)
        tries = t["alternatives"][0]["starts"] - tries0
        print(f"# a wrong key on relay1: {tries} tries of it in {time.monotonic() - t0:.1f} s "
              f"(restart_delay_max {DELAY_MAX} s)", flush=True)
        # host-key backs off to the cap at once; jittered between half of it and all of it
        self.assertLessEqual(tries, int(window / (DELAY_MAX / 2)) + 1)
        self.assertGreaterEqual(tries, 1)
        self.assertEqual(t["alternative"]["index"], 1)
        self.assertEqual(t["alternatives"][0]["last_failure"], "host-key")
        self.assertGreaterEqual(t["failures"].get("host-key", 0), 1, t["failures"])
        self.assertRegex(d.log(), r"(?m)^<4>t: failing back to .* failed: .*\(host-key: .*; .* serves on")
        self.assertTrue(self.through(1))
        self.assertEqual(t["failovers"], 1)

    def test_both_down_back_off_across_both(self):
        """Neither relay answers (both sshds stopped): each round tries relay1 then relay2 at
        once, and only then backs off, one step per round: no tight loop. relay2 back: up
        through it at its next try."""
        for s in self.sshds:
            s.stop()
        d = self.tunneld()
        d.wait_log(r"^<\d+>t: .*failing over to ", timeout=UP_TIMEOUT)
        t = self.state(d)
        starts0, per0 = t["starts"], [a["starts"] for a in t["alternatives"]]
        window = 10.0
        time.sleep(window)
        t = self.state(d)
        starts = t["starts"] - starts0
        per = [a["starts"] - p for a, p in zip(t["alternatives"], per0)]
        print(f"# both down: {starts} starts in {window:.0f} s ({per[0]} of relay1, {per[1]} of relay2)", flush=True)
        # a round is relay1 then relay2 at once; backoffs of at least 0.25, 0.5, 1, 2, 2, … s
        # between rounds: at most 8 rounds in 10 s (a tight loop would make hundreds)
        self.assertLessEqual(starts, 18)
        self.assertGreaterEqual(starts, 4)
        self.assertLessEqual(abs(per[0] - per[1]), 1, per)
        self.assertRegex(d.log(), r"restarting in ")
        t = self.state(d)
        self.assertEqual({a["last_failure"] for a in t["alternatives"]}, {"refused"}, t["alternatives"])
        self.sshds[1].start()
        wait_until(lambda: self.through(1), DELAY_MAX + 10, interval=0.1, what="an echo through relay2")

    def test_reload_applies_alternatives_as_a_difference(self):
        """relay1 serves; a reload reorders the alternatives (a third that never answers
        added first): the same ssh serves on. relay1 down, relay2 serves; relay1 back and a
        reload removes relay2: the forwards move to relay1 by make-before-break, a
        connection through relay2 goes on."""
        b = self.sshds[1]
        ghost = {"host": self.hosts[1].remote_addr, "port": 2, "host_keys": [pub_key(b)]}
        second = {"host": b.host.remote_addr, "host_keys": [pub_key(b)]}
        # restart_delay 30: relay1 is not tried again (failing back) while the test runs
        d = self.tunneld(self.tunnel(alternatives=[second, ghost]), restart_delay=30, restart_delay_max=60)
        d.wait_log(r"^<\d+>t: up: ", timeout=UP_TIMEOUT)
        wait_until(lambda: self.through(0), 10, what="an echo through relay1")
        pid = self.state(d)["pid"]
        offset = len(d.log())
        d.rewrite(tunnels=[self.tunnel(alternatives=[ghost, second])])
        d.reload()
        d.wait_log(r"^<\d+>t: alternatives changed: the ssh that serves stays", after=offset, timeout=10)
        t = self.state(d)
        self.assertEqual((t["pid"], t["alternative"]["index"]), (pid, 0))
        self.assertEqual([a["port"] for a in t["alternatives"]][1:], [2, None])

        # relay1 down: the ghost fails, relay2 serves (the order of the file)
        self.sshds[0].stop()
        wait_until(lambda: self.through(1), UP_TIMEOUT, interval=0.1, what="an echo through relay2")
        self.assertEqual(self.serving(d), 2)
        held = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(held.close)
        held.sendall(b"before\n")
        self.assertEqual(held.recv(4096), b"before\n" + self.echos[1].tag)
        pid = self.state(d)["pid"]
        self.sshds[0].start()
        offset = len(d.log())
        d.rewrite(tunnels=[self.tunnel(alternatives=[ghost])])
        d.reload()
        d.wait_log(r"^<\d+>t: alternatives changed: the one that served was removed", after=offset, timeout=10)
        wait_until(lambda: self.through(0), UP_TIMEOUT, interval=0.1, what="an echo through relay1")
        t = self.state(d)
        self.assertEqual((t["state"], t["alternative"]["index"]), ("up", 0), t)
        self.assertNotEqual(t["pid"], pid)
        held.sendall(b"after\n")
        self.assertEqual(held.recv(4096), b"after\n" + self.echos[1].tag, "the established connection broke")

    def test_a_shared_connection_fails_over_with_its_tunnels(self):
        """Two tunnels that share one connection (the same alternatives): relay1 refuses,
        so the one ssh goes to relay2, and both tunnels carry bytes through it; each
        tunnel's status names relay2, and it is one ssh, not two."""
        self.sshds[0].stop()
        second = self.tunnel()
        second.update(name="u", local_forwards=[f"127.0.0.1:{listener_port()}:127.0.0.1:{self.echos[0].port}"])
        port_u = int(second["local_forwards"][0].split(":")[1])
        d = tunneltest.use(self, Tunneld([self.tunnel(), second], self.defaults(share_connection=True)))
        wait_until(lambda: self.through(1), UP_TIMEOUT, interval=0.1, what="an echo through t on relay2")
        wait_until(lambda: tagged(port_u, self.echos[1].tag), UP_TIMEOUT, interval=0.1,
                   what="an echo through u on relay2")
        s = status(d)
        for name in ("t", "u"):
            self.assertEqual((s[name]["state"], s[name]["alternative"]["index"]), ("up", 1), s[name])
            self.assertEqual(s[name]["alternatives"][0]["last_failure"], "refused", s[name])
        self.assertEqual(s["t"]["pid"], s["u"]["pid"], "two ssh for one shared connection")
        self.assertRegex(d.log(), rf"(?m)^<4>~t: .*failing over to {self.hosts[1].remote_addr} "
                                  rf"\(refused at {self.hosts[0].remote_addr}\)")

    def test_keyscan_scans_each_destination(self):
        """--keyscan NAME fetches the keys of the tunnel's own host, then of each
        alternative, with a line to paste for each, and logs into neither."""
        t = self.tunnel(alternatives=[{"host": self.hosts[1].remote_addr}])
        del t["host_keys"]
        path = os.path.join(tunneltest.temp_dir(self), "scan.conf")
        tunneltest.write_config(path, {"control_socket": "none"}, self.defaults(), [t])
        offsets = [len(s.log()) for s in self.sshds]
        r = tunneltest.run_tunneld("--keyscan", "t", "-c", path, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        for s in self.sshds:
            self.assertIn(tunneltest.key_fingerprint(s.host_key + ".pub"), r.stdout)
        self.assertIn("alternatives[1] of the tunnel \"t\"", r.stdout)
        pasted = re.findall(r'^\s+host_keys = \( "([^"]*)" \);$', r.stdout, re.M)
        self.assertEqual(pasted, [pub_key(self.sshds[0]), pub_key(self.sshds[1])], r.stdout)
        for s, offset in zip(self.sshds, offsets):
            self.assertNotIn("Accepted publickey", s.log()[offset:], "keyscan never logs in")


if __name__ == "__main__":
    tunneltest.main()
