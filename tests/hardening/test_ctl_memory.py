#!/usr/bin/env python3
"""Slow subscribers for a minute (issue 23's measure): ten `tunnelctl events`, five of
another user (control_world_readable) and five of root, each read slower than about 400
state changes a second arrive and run again whenever tunneld drops it (as a shell loop
would). tunneld's RSS grows by less than 5 MB over the minute, every drop is told (exit 5,
"fell … behind") and logged once, root's status is answered within 1 s and a real tunnel
carries bytes throughout. Every sample is printed. The sanitizer build does not check RSS
(AddressSanitizer's quarantine keeps freed memory): it runs the rest."""

import os
import sys
import time
import unittest

os.environ.setdefault("TUNNELTEST_TIMEOUT", "180")     # one test of a minute or so, and its set-up
import tunneltest  # noqa: E402
from tunneltest import EchoServer, SSHServer, Tunneld, echo_roundtrip, free_port, wait_state  # noqa: E402

sys.path.insert(0, os.path.join(tunneltest.SOURCE_ROOT, "tests", "ctl"))
import ctltest  # noqa: E402
from ctltest import EventStorm, NOBODY, SlowReader, rss_kb, served_within  # noqa: E402

STORM = 100
RATE = 400
SECONDS = 60
DROP_LOG = r"^<\d+>control client \(pid \d+, uid \d+.*\): dropped: "


class SlowReadersTest(unittest.TestCase):
    def test_ten_slow_readers_for_a_minute(self):
        sshd = tunneltest.use(self, SSHServer())
        echo = tunneltest.use(self, EchoServer())
        public = ctltest.public_dir(self)
        ctl = ctltest.public_tunnelctl(public)
        sock = os.path.join(public, "control")
        port = free_port()
        real = {"name": "real", "host": "127.0.0.1", "local_forwards": [f"127.0.0.1:{port}:127.0.0.1:{echo.port}"]}
        d = tunneltest.use(self, Tunneld([real, *ctltest.storm_tunnels(STORM)],
                                         {**sshd.tunnel_defaults(), "gatetime": 1},
                                         globals={"ssh": tunneltest.SSH, "control_socket": sock,
                                                  "control_world_readable": True}))
        d.wait_loaded()
        wait_state(sock, "real", "up")
        storm = tunneltest.use(self, EventStorm(sock, STORM, RATE))
        time.sleep(3)           # the storm's own connection at its size
        rss0 = rss_kb(d.pid)
        # each prints about 80 events a second: 2 MiB behind after half a minute or so
        readers = [tunneltest.use(self, SlowReader(sock, user=NOBODY if i % 2 else (), ctl=ctl, chunk=512,
                                                   again=True))
                   for i in range(10)]
        t0, worst, events0 = time.monotonic(), 0, storm.events
        # the minute, and then (storm and sampling going on) until each was dropped once
        while time.monotonic() - t0 < SECONDS or (not all(r.runs for r in readers) and
                                                  time.monotonic() - t0 < SECONDS + 30):
            time.sleep(2)
            rss = rss_kb(d.pid)
            worst = max(worst, rss - rss0)
            took = served_within(sock, "real")
            self.assertTrue(echo_roundtrip(port), "no echo through the real tunnel")
            self.assertIsNone(storm.error)
            print(f"# {time.monotonic() - t0:5.1f} s: RSS {rss} kB (+{rss - rss0}), {storm.events - events0} events, "
                  f"{sum(len(r.runs) for r in readers)} drops, root's status {took * 1000:.0f} ms", flush=True)
        rate = (storm.events - events0) / (time.monotonic() - t0)
        for r in readers:
            r.close()
        runs = [run for r in readers for run in r.runs if run[0] != -9]    # -9: killed by close()
        print(f"# {rate:.0f} events/s for {time.monotonic() - t0:.0f} s: RSS +{worst} kB at most; {len(runs)} drops")
        self.assertGreater(rate, RATE * 0.75, "the storm was slower than asked")
        self.assertGreaterEqual(len(runs), len(readers), "a slow reader was never dropped")
        for status, err, took in runs:
            self.assertEqual(status, 5, err)
            self.assertRegex(err, r"tunnelctl: tunneld dropped the connection: fell \d+ KiB behind the events")
        self.assertGreaterEqual(d.count_log(DROP_LOG), len(runs))
        if tunneltest.SANITIZED:
            print("# sanitizer build: RSS not checked")
        else:
            self.assertLess(worst, 5 * 1024, "tunneld's RSS grew by 5 MB or more")


if __name__ == "__main__":
    tunneltest.main()
