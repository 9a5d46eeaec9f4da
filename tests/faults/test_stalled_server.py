#!/usr/bin/env python3
"""A server that accepts, sends its SSH banner and then says nothing more (an overloaded or
hung sshd). ssh's ConnectTimeout stops at the banner, so without a deadline of tunneld's
own such a tunnel would be `starting` for ever and hold a start slot.

Every state has a bounded exit: `starting` ends in `up` or in a killed run classed
`timeout` within start_timeout. Start slots are fair: a tunnel holds its
max_parallel_starts slot only while ssh could still be connecting (connect_timeout), and
one whose start just failed queues behind the tunnels that waited.
"""

import time

import tunneltest
from tunneltest import StalledServer, assert_echo, free_port


class StalledServerTest(tunneltest.SSHTestCase):
    fast_settings = {"gatetime": 1, "restart_delay": 0.5, "restart_delay_max": 2}

    def setUp(self):
        self.stalled = tunneltest.use(self, StalledServer())

    def test_a_stalled_server_is_a_timeout_within_start_timeout(self):
        """No ServerAlive, a server that never finishes the handshake: tunneld ends the run
        at start_timeout, classes it timeout (a failed start, backing off), and the next
        start is bounded the same way."""
        d = self.tunneld([{"name": "hung", "port": self.stalled.port,
                           "local_forwards": [f"127.0.0.1:{free_port()}:127.0.0.1:{self.echo.port}"]}],
                         start_timeout=2, connect_timeout=1, server_alive_interval=0)
        t0 = time.monotonic()
        m = d.wait_log(r"^<\d+>hung: ssh is not up after start_timeout 2(?:\.0)? s \(connected, but the server has "
                       r"not completed the handshake\): restarting ssh \(SIGTERM", timeout=15)
        took = time.monotonic() - t0
        self.assertLess(took, 2 + 5, "the deadline, plus a margin for a loaded machine")
        m = d.wait_log(r"^<\d+>hung: ssh (?:exited with status \d+|was killed by signal TERM) after [\d.]+ s, "
                       r"never up \(timeout: .*\); "
                       r"restarting in .* \(failed start 1 in a row\)$", after=m.end())
        d.wait_log(r"^<\d+>hung: ssh (?:exited with status \d+|was killed by signal TERM) .*\(timeout: .*"
                   r"\(failed start 2 in a row\)$",
                   after=m.end(), timeout=15)
        t = tunneltest.tunnel_status(d, "hung")
        self.assertGreaterEqual(t["failures"].get("timeout", 0), 2, t)

    def test_stalled_tunnels_do_not_starve_healthy_ones(self):
        """max_parallel_starts = 2, two tunnels to the stalled server listed first, three
        healthy ones after them: the healthy ones come up once the stalled ones have held
        their slots for connect_timeout, long before their start deadline; and when the
        stalled ones retry, they queue behind whoever waited."""
        healthy = {f"ok{i}": free_port() for i in range(3)}
        # two users: two sets of credentials, each tried at once (one set would be tried by
        # one tunnel at a time, the other waiting for its answer: pacing.h)
        tunnels = [{"name": f"hung{i}", "port": self.stalled.port, "start_timeout": 30, "user": f"stall{i}",
                    "local_forwards": [f"127.0.0.1:{free_port()}:127.0.0.1:{self.echo.port}"]} for i in range(2)]
        tunnels += [{"name": n, "local_forwards": [self.echo.forward(p)]}
                    for n, p in healthy.items()]
        t0 = time.monotonic()
        d = self.tunneld(tunnels, globals={"max_parallel_starts": 2}, args=["-d"], connect_timeout=2,
                         server_alive_interval=0)
        for name, port in healthy.items():
            d.wait_up(name, timeout=20)
            assert_echo(port)
        took = time.monotonic() - t0
        print(f"# three healthy tunnels up {took:.2f} s after start, behind two stalled ones "
              "(connect_timeout 2 s, start_timeout 30 s)")
        self.assertLess(took, 15, "healthy tunnels waited behind stalled ones")
        states = {n: t["state"] for n, t in tunneltest.status(d).items()}
        self.assertEqual(states["hung0"], "starting", states)   # still within its deadline
        self.assertEqual(states["hung1"], "starting", states)
        self.assertIn("still connecting after 2", d.log().replace("2.0", "2"))


if __name__ == "__main__":
    tunneltest.main()
