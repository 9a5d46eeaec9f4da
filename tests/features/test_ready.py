#!/usr/bin/env python3
"""ready = "all-up" and required: READY=1 (on our own NOTIFY_SOCKET) waits for the required
tunnels only: a non-required tunnel that never comes up does not hold it back; a required
one does, until ready_timeout. A required tunnel that failed a start counts as settled."""

import time

import tunneltest
from tunneltest import free_port, listening_socket, status
from systemdtest import NotifySocket
from featuretest import FeatureTest


def first_ready(notify, timeout):
    """(arrival time, text) of the first READY=1 on notify, waiting up to timeout s."""
    _, m = notify.wait_kind("READY", timeout)
    return m.at, m.raw


class ReadyTest(FeatureTest):
    def start(self, tunnels, **globals):
        """tunneld with our NOTIFY_SOCKET; returns (tunneld, notify socket, start time)."""
        notify = tunneltest.use(self, NotifySocket())
        t0 = time.monotonic()
        # Tunneld drops NOTIFY_SOCKET from the environment it is given: pass it by env(1)
        d = self.tunneld(tunnels, globals=globals, wrapper=["env", f"NOTIFY_SOCKET={notify.path}"])
        return d, notify, t0

    def hanging(self, **extra):
        """A tunnel to a port that accepts TCP but never speaks SSH: starting for a minute."""
        hole = listening_socket()
        self.addCleanup(hole.close)
        return {"port": hole.getsockname()[1], "connect_timeout": 60, **extra}

    def test_non_required_tunnel_does_not_hold_ready(self):
        d, notify, t0 = self.start([{"name": "good"}, {"name": "hang", "required": False, **self.hanging()}],
                                   ready="all-up", ready_timeout=30)
        up, _ = d.wait_up("good")
        at, text = first_ready(notify, 10)
        self.assertLess(at - t0, 25, "READY waited for the non-required tunnel")
        self.assertIn("STATUS=1/2 tunnels up; starting: hang", text.split("\n"))
        ready = d.wait_log(r"^<5>ready: 1/2 tunnels up; starting: hang$", timeout=5)
        self.assertGreater(ready.start(), up.start(), "READY before the required tunnel was up")
        self.assertEqual(status(d)["hang"]["state"], "starting")
        self.assertEqual(d.count_log(r"ready_timeout"), 0)

    def test_required_tunnel_holds_ready_until_ready_timeout(self):
        timeout = 6
        d, notify, t0 = self.start([{"name": "good"}, {"name": "hang", **self.hanging()}],
                                   ready="all-up", ready_timeout=timeout)
        up, _ = d.wait_up("good")
        up_at = time.monotonic() - t0
        at, text = first_ready(notify, timeout + 10)
        self.assertTrue(timeout - 0.05 <= at - t0 <= timeout + 4,
                        f"READY=1 {at - t0:.2f} s after the start, ready_timeout {timeout} s")
        m = d.wait_log(rf"^<4>ready_timeout {timeout}\.0 s passed before every tunnel was up: reporting ready anyway$",
                       timeout=5)
        self.assertRegex(text, r"(?m)^STATUS=\d/2 tunnels up; starting: (good, )?hang$")
        if up_at < timeout - 1:  # good was up well before: READY still waited for hang
            self.assertGreater(m.start(), up.start())
            self.assertIn("STATUS=1/2 tunnels up; starting: hang", text.split("\n"))
        self.assertEqual(status(d)["hang"]["state"], "starting")
        self.assertEqual(len(notify.messages("READY")), 1)

    def test_required_tunnel_that_failed_a_start_is_settled(self):
        """all-up waits for "up, or failed a start": a refused tunnel in backoff lets READY go."""
        d, notify, t0 = self.start([{"name": "good"}, {"name": "refused", "port": free_port()}],
                                   ready="all-up", ready_timeout=30)
        at, text = first_ready(notify, 25)
        self.assertLess(at - t0, 25)
        self.assertRegex(text, r"(?m)^STATUS=1/2 tunnels up; backoff: refused \(refused, retry at \d\d:\d\d:\d\d\)$")

    def test_ready_started_does_not_wait(self):
        """The default, ready = "started": READY=1 once every tunnel is launched, before any
        is up."""
        d, notify, t0 = self.start([{"name": "good"}, {"name": "hang", **self.hanging()}])
        at, text = first_ready(notify, 10)
        self.assertIn("STATUS=0/2 tunnels up; starting: good, hang", text.split("\n"))
        d.wait_up("good")


if __name__ == "__main__":
    tunneltest.main()
