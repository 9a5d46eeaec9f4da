#!/usr/bin/env python3
"""status and metrics at any size: tunneld streams a big reply, written as the socket takes
it and made a bounded part per wakeup, so that 10,000 tunnels (disabled ones: the size of
a reply does not depend on it) are answered in full, no client waits behind another's
reply, and a client that does not read costs a part, not the reply. One real tunnel to a
real sshd carries bytes throughout."""

import json
import os
import re
import threading
import time
import unittest

import tunneltest
from tunneltest import (EchoServer, SSHServer, Tunneld, describe, echo_roundtrip, free_port, status_reply, tunnelctl,
                        wait_state)

import ctltest
from ctltest import NOBODY, connect, last_line, read_all, rss_kb, served_within

N = 10000
TUNNELS = N + 1                     # and the real one
STATES = 8
DROP_LOG = r"^<\d+>control client \(pid \d+, uid \d+.*\): dropped: "
SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (-?[0-9.]+)$')


def families(text):
    """Prometheus text → {family: [(labels, value)]}, checking that each family is one
    contiguous group led by its HELP and TYPE lines."""
    out, current, seen = {}, None, set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
            assert current not in seen, f"{current} twice"
            seen.add(current)
            out[current] = []
            continue
        if line.startswith("# TYPE "):
            assert line.split()[2] == current, line
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample: {line!r}"
        assert m.group(1) == current, f"{m.group(1)} inside {current}'s group"
        out[current].append((m.group(2), float(m.group(3))))
    return out


class SizeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sshd = tunneltest.use(cls, SSHServer())
        cls.echo = tunneltest.use(cls, EchoServer())
        cls.public = ctltest.public_dir(cls)
        cls.ctl = ctltest.public_tunnelctl(cls.public)
        cls.sock = os.path.join(cls.public, "control")
        cls.port = free_port()
        defaults = {**cls.sshd.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2}
        real = {"name": "real", "host": "127.0.0.1",
                "local_forwards": [f"127.0.0.1:{cls.port}:127.0.0.1:{cls.echo.port}"]}
        many = [{"name": f"t{i}", "host": f"h{i}.invalid", "enabled": False,
                 "local_forwards": [f"127.0.0.1:{20000 + i % 1000}:127.0.0.1:22"]} for i in range(N)]
        cls.d = tunneltest.use(cls, Tunneld([real, *many], defaults,
                                            globals={"ssh": tunneltest.SSH, "control_socket": cls.sock,
                                                     "control_world_readable": True}))
        cls.d.wait_loaded(timeout=30)
        wait_state(cls.sock, "real", "up")

    def test_metrics_of_10000_tunnels(self):
        """tunnelctl metrics: every family once, in one group, a sample per tunnel (per state,
        per class); --json prints tunneld's reply, one object on one line, with the same
        text."""
        r = tunnelctl(self.sock, "metrics", timeout=60)
        self.assertEqual(r.returncode, 0, describe(r)[:2000])
        print(f"# metrics of {TUNNELS} tunnels: {len(r.stdout)} bytes in {r.took:.2f} s")
        fams = families(r.stdout)
        self.assertEqual(fams["tunneld_tunnels"], [(None, TUNNELS)])
        self.assertEqual(len(fams["tunneld_tunnel_up"]), TUNNELS)
        self.assertEqual(len(fams["tunneld_tunnel_state"]), TUNNELS * STATES)
        self.assertEqual(fams["tunneld_tunnel_up"][0], ('{tunnel="real"}', 1.0))
        self.assertEqual(fams["tunneld_tunnel_up"][-1], (f'{{tunnel="t{N - 1}"}}', 0.0))
        for name in ("tunneld_tunnel_enabled", "tunneld_tunnel_starts_total", "tunneld_tunnel_outages_total"):
            self.assertEqual(len(fams[name]), TUNNELS, name)
        r = tunnelctl(self.sock, "--json", "metrics", timeout=60)
        self.assertEqual(r.returncode, 0, describe(r)[:2000])
        self.assertEqual(r.stdout.count("\n"), 1)
        reply = json.loads(r.stdout)
        self.assertEqual(sorted(reply), ["metrics", "ok"])
        self.assertEqual({k: len(v) for k, v in families(reply["metrics"]).items()},
                         {k: len(v) for k, v in fams.items()})

    def test_status_of_10000_tunnels(self):
        """status: every tunnel in configuration order, in the table and in --json; and the
        status of a thousand named ones."""
        reply = status_reply(self.sock)
        self.assertEqual(len(reply["tunnels"]), TUNNELS)
        self.assertEqual([t["name"] for t in reply["tunnels"][:3]], ["real", "t0", "t1"])
        self.assertEqual(reply["tunnels"][-1]["name"], f"t{N - 1}")
        r = tunnelctl(self.sock, "status", timeout=60)
        self.assertEqual(r.returncode, 0, describe(r)[:2000])
        self.assertEqual(len(r.stdout.splitlines()), TUNNELS + 1)
        names = [f"t{i}" for i in range(0, N, 10)]
        reply = status_reply(self.sock, *names)
        self.assertEqual([t["name"] for t in reply["tunnels"]], names)

    def test_root_is_served_while_others_pull_metrics(self):
        """Another user pulls the metrics of 10,000 tunnels on four connections, again and
        again: root's status of one tunnel is answered within 1 s every time, root's status
        of all of them in full."""
        alone = min(tunnelctl(self.sock, "--json", "status", timeout=60).took for _ in range(2))
        stop, pulled, errors = threading.Event(), [0], []

        def pull():
            while not stop.is_set():
                r = tunnelctl(self.sock, "metrics", user=NOBODY, ctl=self.ctl, timeout=60)
                if r.returncode != 0:
                    errors.append(describe(r)[:500])
                    return
                pulled[0] += 1
        threads = [threading.Thread(target=pull, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        self.addCleanup(lambda: (stop.set(), [t.join(60) for t in threads]))
        time.sleep(1)
        worst, full, t0 = 0.0, [], time.monotonic()
        while time.monotonic() - t0 < 10:
            worst = max(worst, served_within(self.sock, "real"))
            r = tunnelctl(self.sock, "--json", "status", timeout=60)
            self.assertEqual(r.returncode, 0, describe(r)[:2000])
            full.append(r.took)
        stop.set()
        for t in threads:
            t.join(60)
        print(f"# while another user pulled metrics {pulled[0]} times: root's status of one tunnel "
              f"{worst * 1000:.0f} ms at worst, of {TUNNELS} {max(full):.2f} s at worst ({alone:.2f} s alone)")
        self.assertEqual(errors, [])
        self.assertGreater(pulled[0], 0)
        self.assertTrue(echo_roundtrip(self.port))

    def test_replies_nobody_reads_cost_a_part(self):
        """Eight connections ask for the status and the metrics of every tunnel and never
        read: tunneld's RSS grows by less than 5 MB, root is served within 1 s meanwhile,
        and each is dropped, its reply cut by a newline and the line that says why."""
        rss0 = rss_kb(self.d.pid)
        conns = []
        for i in range(8):
            s = connect(self.sock)
            self.addCleanup(s.close)
            s.sendall(b'{"cmd":"status"}\n' if i % 2 else b'{"cmd":"metrics"}\n')
            conns.append(s)
        drops = self.d.count_log(DROP_LOG)
        worst, t0 = 0, time.monotonic()
        while self.d.count_log(DROP_LOG) < drops + len(conns):
            self.assertLess(time.monotonic() - t0, 20, "not dropped within 20 s")
            worst = max(worst, rss_kb(self.d.pid) - rss0)
            served_within(self.sock, "real")
            time.sleep(0.2)
        print(f"# 8 replies of {TUNNELS} tunnels unread: RSS +{worst} kB")
        if not tunneltest.SANITIZED:
            self.assertLess(worst, 5 * 1024)
        for s in conns:
            data = read_all(s, timeout=20)
            self.assertEqual(last_line(data)["dropped"], "stalled", data[-300:])
            self.assertGreater(len(data), 64 * 1024)


if __name__ == "__main__":
    tunneltest.main()
