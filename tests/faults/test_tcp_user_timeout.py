#!/usr/bin/env python3
"""A dead path found by TCP, without polling: TCP_USER_TIMEOUT set from outside on ssh's own
server socket (daemon/tcp_tune.c: pidfd_getfd, setsockopt), measured against a real
`ssh -N -L` (ServerAliveInterval 10 × 3: a third of tunneld's default, so that the runs
without the user timeout end within a minute) to an sshd in a test network namespace, under
a silent blackhole.

Four tunnels through one test host, blackholed at the same moment:

    busy        a client sends a line through the forward every 100 ms
    busy + UT   the same, with TCP_USER_TIMEOUT = USER_TIMEOUT_MS on its server socket
    idle        no traffic
    idle + UT   no traffic, with the user timeout

For each, how long until ssh exits and what it says last; and, for the busy one without the
user timeout, when reading tcp_info once a second (tcp_diag, the polling alternative) first
shows data unacknowledged for POLL_THRESHOLD_MS. The figures are printed as TAP comments.
The kernel aborts a connection whose data stays unacknowledged for the user timeout; an
idle connection has no data in flight until ServerAlive's next probe, so it is found at
that probe + the user timeout, not three intervals later.
"""

import os

os.environ.setdefault("TUNNELTEST_TIMEOUT", "150")     # one test waits for ServerAlive's 3 × 10 s

import threading  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import netns  # noqa: E402
import netpathtool  # noqa: E402
import tunneltest  # noqa: E402
from netns import NetnsSSHServer, SSHTunnel, SteadyClient, TaggedEchoServer, TestHost  # noqa: E402

SERVER_ALIVE = 10
USER_TIMEOUT_MS = 5000
POLL_THRESHOLD_MS = 3000
EXIT_WAIT = SERVER_ALIVE * 4 + 30      # ServerAlive gives up at its 4th interval; slack on a loaded machine
SLACK = 4.0


class UserTimeoutTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        why = netns.available()
        if why:
            raise unittest.SkipTest(why)
        netpathtool.require()
        cls.host = tunneltest.use(cls, TestHost())
        cls.sshd = tunneltest.use(cls, NetnsSSHServer(cls.host))
        cls.echo = tunneltest.use(cls, TaggedEchoServer(cls.host))

    def start_tunnel(self, name, busy, user_timeout):
        t = tunneltest.use(self, SSHTunnel(self.sshd, self.echo, server_alive=SERVER_ALIVE))
        conn = netpathtool.run("server", t.pid, self.sshd.port)
        self.assertNotIn("error", conn, conn)
        if user_timeout:
            r = netpathtool.run("user-timeout", t.pid, conn["fd"], conn["local"], conn["remote"], USER_TIMEOUT_MS)
            self.assertEqual((r["kind"], r.get("ms")), ("user-timeout", str(USER_TIMEOUT_MS)), r)
        client = tunneltest.use(self, SteadyClient(t.listen_port, self.echo.tag)) if busy else None
        return {"name": name, "tunnel": t, "conn": conn, "client": client}

    def poll_tcp_info(self, conn, since, stop, out):
        """The polling alternative: tcp_info once a second until stop; out gets the time the
        oldest unacknowledged data was first seen older than POLL_THRESHOLD_MS, and the number
        of reads."""
        reads = 0
        while not stop.wait(1.0):
            d = netpathtool.run("diag", conn["local"], conn["remote"])
            reads += 1
            if d["kind"] != "diag":
                break
            if int(d["unacked"]) > 0 and int(d["last_ack_recv_ms"]) >= POLL_THRESHOLD_MS and "at" not in out:
                out["at"] = time.monotonic() - since
        out["reads"] = reads

    def test_blackhole_found_by_the_user_timeout_not_by_server_alive(self):
        runs = [self.start_tunnel("busy", True, False), self.start_tunnel("busy + UT", True, True),
                self.start_tunnel("idle", False, False), self.start_tunnel("idle + UT", False, True)]
        busy = runs[0]
        tunneltest.wait_until(lambda: all(len(r["client"].replies) >= 5 for r in runs if r["client"]), 15,
                              what="echoes through the busy tunnels")
        stop, polled = threading.Event(), {}
        holed_at = time.monotonic()
        self.host.blackhole()
        poller = threading.Thread(target=self.poll_tcp_info, args=(busy["conn"], holed_at, stop, polled), daemon=True)
        poller.start()
        try:
            deadline = holed_at + EXIT_WAIT
            for r in runs:
                r["status"] = r["tunnel"].wait_exit(max(0.1, deadline - time.monotonic()))
                r["exit"] = r["tunnel"].exited_at - holed_at if r["status"] is not None else None
                lines = [x for x in r["tunnel"].log().splitlines() if x.strip()]
                r["said"] = lines[-1] if lines else ""
        finally:
            stop.set()
            poller.join(10)
        rows = [f"blackhole at t=0; ServerAliveInterval {SERVER_ALIVE} x 3; user timeout {USER_TIMEOUT_MS} ms"]
        for r in runs:
            when = f"{r['exit']:.1f} s" if r["exit"] is not None else f"still running after {EXIT_WAIT} s"
            rows.append(f"{r['name']:<10} ssh exit {r['status']} at {when}: {r['said']}")
        rows.append(f"busy, tcp_info read once a second: unacknowledged data older than {POLL_THRESHOLD_MS} ms "
                    f"seen at {polled.get('at', float('nan')):.1f} s ({polled.get('reads')} reads, one wakeup each)")
        print("\n".join("# " + line for line in rows), flush=True)

        by = {r["name"]: r for r in runs}
        for r in runs:
            self.assertIsNotNone(r["exit"], f"{r['name']}: ssh did not exit within {EXIT_WAIT} s")
            self.assertEqual(r["status"], 255, r)
        ut = USER_TIMEOUT_MS / 1000
        self.assertGreater(by["busy + UT"]["exit"], ut - 1)
        self.assertLess(by["busy + UT"]["exit"], ut + SLACK, "busy: the user timeout after the first lost segment")
        self.assertLess(by["idle + UT"]["exit"], SERVER_ALIVE + ut + SLACK,
                        "idle: ServerAlive's first probe, then the user timeout")
        self.assertGreater(by["idle + UT"]["exit"], ut)
        for name in ("busy", "idle"):
            self.assertGreater(by[name]["exit"], 2 * SERVER_ALIVE, f"{name}: only ServerAlive × 3 ends it")
        self.assertLess(polled.get("at", 99), POLL_THRESHOLD_MS / 1000 + 1 + SLACK)


if __name__ == "__main__":
    tunneltest.main()
