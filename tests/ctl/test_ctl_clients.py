#!/usr/bin/env python3
"""Clients that cannot slow or bloat tunneld: subscribers (tunnelctl events, wait) under
event storms, slow readers of another user (control_world_readable) and of root, readers
that never read, and clients evicted for a privileged one. Each is bounded by its cap
whatever it reads, dropped on time under any event rate, told why in a last line
({"ok":false,"dropped":…,"error":…}), and tunnelctl exits 5 saying so; tunneld logs each
drop once. Against a real sshd: a real tunnel's bytes keep flowing and root's status is
answered within 1 s throughout.

The events come from tunnels after a tunnel that never starts (ctltest.storm_tunnels):
started and stopped in turn by root, each makes a state change and no process."""

import json
import os
import time
import unittest

os.environ.setdefault("TUNNELTEST_TIMEOUT", "120")     # the slow readers take a minute
import tunneltest  # noqa: E402
from tunneltest import (EchoServer, SSHServer, Tunneld, describe, echo_roundtrip, free_port, open_fds, tunnelctl,
                        wait_state, wait_until)  # noqa: E402

import ctltest  # noqa: E402
from ctltest import EventStorm, NOBODY, SlowReader, connect, last_line, read_all, rss_kb, served_within  # noqa: E402

STALL_TIMEOUT = 5.0         # daemon/ctl.h
EXIT_DROPPED = 5            # tunnelctl(1)
DROP_LOG = r"^<\d+>control client \(pid \d+, uid \d+.*\): dropped: "
STORM = 100                 # tunnels in the storm


class ClientsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sshd = tunneltest.use(cls, SSHServer())
        cls.echo = tunneltest.use(cls, EchoServer())
        cls.public = ctltest.public_dir(cls)
        cls.ctl = ctltest.public_tunnelctl(cls.public)

    def setUp(self):
        sock = os.path.join(self.public, f"control-{self._testMethodName}")
        self.addCleanup(lambda: [os.unlink(p) for p in (sock, sock + ".lock") if os.path.lexists(p)])
        self.port = free_port()
        defaults = {**self.sshd.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2}
        real = {"name": "real", "host": "127.0.0.1",
                "local_forwards": [f"127.0.0.1:{self.port}:127.0.0.1:{self.echo.port}"]}
        self.d = tunneltest.use(self, Tunneld([real, *ctltest.storm_tunnels(STORM)], defaults,
                                              globals={"ssh": tunneltest.SSH, "control_socket": sock,
                                                       "control_world_readable": True}))
        self.sock = sock
        self.d.wait_loaded()
        wait_state(sock, "real", "up")

    def storm(self, rate):
        return tunneltest.use(self, EventStorm(self.sock, STORM, rate))

    def assert_supervising(self, what):
        """root's status within 1 s, and bytes through the real tunnel."""
        served_within(self.sock, "real")
        self.assertTrue(echo_roundtrip(self.port), f"{what}: no echo through the real tunnel")

    def wait_drops(self, n, timeout, after=0):
        wait_until(lambda: self.d.count_log(DROP_LOG, after) >= n, timeout, interval=0.1,
                   what=f"{n} drop(s) in tunneld's log")

    def test_slow_readers_are_bounded_dropped_and_told(self):
        """Three `tunnelctl events` of another user and three of root, each read slower than
        1000 events/s arrive: each is dropped once it falls behind (not kept growing), exits
        5 saying it fell behind, and tunneld logs each drop once; tunneld's RSS grows by
        less than 5 MB, root is served within 1 s and the real tunnel carries bytes."""
        rss0 = rss_kb(self.d.pid)
        storm = self.storm(1000)
        readers = [tunneltest.use(self, SlowReader(self.sock, user=NOBODY, ctl=self.ctl)) for _ in range(3)]
        readers += [tunneltest.use(self, SlowReader(self.sock)) for _ in range(3)]
        worst, t0 = 0, time.monotonic()
        while not all(r.runs for r in readers) and time.monotonic() - t0 < 80:
            worst = max(worst, rss_kb(self.d.pid) - rss0)
            self.assert_supervising("slow readers")
            time.sleep(0.5)
        print(f"# {storm.events} events in {time.monotonic() - t0:.1f} s; RSS +{worst} kB at most")
        self.assertIsNone(storm.error)
        for r in readers:
            status, err, took = r.wait_ended(1)
            self.assertEqual(status, EXIT_DROPPED, f"{r.argv}: exit {status} after {took:.1f} s: {err!r}")
            self.assertRegex(err, r"tunnelctl: tunneld dropped the connection: fell \d+ KiB behind the events")
        self.assertEqual(self.d.count_log(DROP_LOG), len(readers), "one log line per dropped client")
        self.assertEqual(len(self.d.findall(DROP_LOG + r"fell \d+ KiB behind")), len(readers))
        if not tunneltest.SANITIZED:     # AddressSanitizer's quarantine keeps freed memory
            self.assertLess(worst, 5 * 1024, "tunneld's RSS grew by 5 MB or more")
        self.assert_supervising("after the slow readers")

    def never_reader(self, rate, within):
        """A subscriber that never reads, under rate events/s: dropped STALL_TIMEOUT after
        tunneld first sent it what it leaves unread, or as soon as its socket's buffer is full
        if that comes later (within s); its last line says why."""
        storm = self.storm(rate)
        s = connect(self.sock)
        self.addCleanup(s.close)
        s.sendall(b'{"cmd":"events"}\n')
        t0 = time.monotonic()
        self.wait_drops(1, within)
        took = time.monotonic() - t0
        print(f"# at {rate} events/s, a subscriber that never reads was dropped after {took:.1f} s "
              f"({storm.events} events sent meanwhile)")
        self.assertGreaterEqual(took, STALL_TIMEOUT - 0.5)
        data = read_all(s)
        lines = data.rstrip(b"\n").split(b"\n")
        for line in lines:
            json.loads(line)        # every line whole: no event cut by the drop
        self.assertEqual(json.loads(lines[0])["ok"], True)     # the snapshot
        last = last_line(data)
        self.assertEqual(last["ok"], False)
        self.assertEqual(last["dropped"], "stalled")
        self.assertRegex(last["error"], r"nothing of what tunneld sent was read for 5 s")
        self.assertEqual(len(self.d.findall(DROP_LOG + r".*read for 5 s")), 1)
        self.assert_supervising("a subscriber that never reads")

    def test_a_reader_that_never_reads_is_dropped_on_time_under_a_storm(self):
        """(its socket's buffer is full within a second: dropped at STALL_TIMEOUT)"""
        self.never_reader(800, STALL_TIMEOUT + 10)

    def test_a_reader_that_never_reads_is_dropped_on_time_at_a_steady_rate(self):
        """(at 100 events/s its socket's buffer, about 200 KiB, takes some 10 s to fill: it
        is dropped as soon as tunneld would have to keep anything for it)"""
        self.never_reader(100, 40)

    def test_a_subscriber_busy_elsewhere_is_not_dropped(self):
        """A subscriber that reads nothing for 8 s while a few events wait in its socket (as
        tunnelctl restart does while it asks for the restarts) is not dropped: it reads them
        all afterwards."""
        r = tunnelctl(self.sock, "stop", *[f"s{i}" for i in range(STORM)])     # each restart then a change
        self.assertEqual(r.returncode, 0, describe(r)[:1000])
        s = connect(self.sock)
        self.addCleanup(s.close)
        s.sendall(b'{"cmd":"events"}\n')
        lines, why = ctltest.read_lines(s, 1)
        self.assertIsNone(why)
        r = tunnelctl(self.sock, "--json", "restart", *[f"s{i}" for i in range(STORM)])
        self.assertEqual(r.returncode, 0, describe(r)[:1000])
        time.sleep(STALL_TIMEOUT + 3)
        lines, why = ctltest.read_lines(s, STORM, timeout=5)
        self.assertIsNone(why, f"{len(lines)} events read")
        self.assertEqual({json.loads(l)["tunnel"] for l in lines}, {f"s{i}" for i in range(STORM)})
        self.assertEqual(self.d.count_log(DROP_LOG), 0)

    def test_evicted_subscribers_are_told(self):
        """Another user's `tunnelctl events` and `tunnelctl wait` hold two places; idle
        connections of root fill the table; root's status, twice on a full table, evicts
        the two read-only subscribers, which exit 5 saying they were evicted; tunneld logs
        each once."""
        drops = self.d.count_log(DROP_LOG)
        sockets = lambda: len([t for t in open_fds(self.d.pid).values() if t.startswith("socket:")])  # noqa: E731
        base = sockets()
        ev = tunneltest.use(self, SlowReader(self.sock, "--json", user=NOBODY, ctl=self.ctl))
        wt = tunneltest.use(self, SlowReader(self.sock, "--timeout", "0", "gate", cmd="wait", user=NOBODY,
                                             ctl=self.ctl))
        wait_until(lambda: sockets() >= base + 2, 10, what="both subscribers connected")
        time.sleep(0.5)
        held = [connect(self.sock) for _ in range(62)]
        self.addCleanup(lambda: [s.close() for s in held])
        wait_until(lambda: sockets() >= base + 64, 10, what="the table full")
        full = sockets()
        for _ in range(2):
            r = tunnelctl(self.sock, "status", "real")     # the table is full: a reader makes room
            self.assertEqual(r.returncode, 0, describe(r))
            # tunneld has seen the status client go (else the next one makes room for itself
            # by dropping an idle client: a third drop, by the rules, not by this test's)
            wait_until(lambda: sockets() == full - 1, 10, what="the status client gone, a reader evicted")
            held.append(connect(self.sock))                 # full again
            wait_until(lambda: sockets() == full, 10, what="the table full again")
        for reader in (ev, wt):
            status, err, took = reader.wait_ended(10)
            self.assertEqual(status, EXIT_DROPPED, f"{reader.argv}: {err!r}")
            self.assertRegex(err, r"tunnelctl: tunneld dropped the connection: evicted")
        self.assertEqual(self.d.count_log(DROP_LOG) - drops, 2)
        self.assertEqual(len(self.d.findall(DROP_LOG + r"evicted")), 2)


if __name__ == "__main__":
    tunneltest.main()
