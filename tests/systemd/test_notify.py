#!/usr/bin/env python3
"""tunneld's sd_notify protocol, read from our own NOTIFY_SOCKET: READY, RELOADING (with
MONOTONIC_USEC), STOPPING, the STATUS texts, ready="all-up" and ready_timeout, and the
watchdog pings.

Most tests use the scripted fake ssh (tests/fake-ssh); the all-up test uses a real sshd, so
that READY is checked against a forward that really carries bytes.
"""

import os
import re
import signal
import time
import unittest

import tunneltest
from tunneltest import EchoServer, FakeSSH, SSHServer, UP_TIMEOUT, echo_roundtrip, free_port, use, wait_until
from systemdtest import NotifySocket, SystemdTunneld

# "(retry at 14:03:27)", "(refused, retry at 14:03:27)": the failure class is optional; a
# time, not a countdown that would go stale between two STATUS updates
RETRY = r"\((?:[\w-]+, )?retry at \d\d:\d\d:\d\d\)"


def seconds_until(hhmmss):
    """Seconds from now until the local time HH:MM:SS (within the next 12 hours)."""
    now = time.time()
    lt = time.localtime(now)
    h, m, s = (int(x) for x in hhmmss.split(":"))
    delta = (h * 3600 + m * 60 + s) - (lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec) - (now % 1)
    if delta < -12 * 3600:
        delta += 86400
    return delta


class NotifyTest(unittest.TestCase):
    def setUp(self):
        self.fake = use(self, FakeSSH())
        self.notify = use(self, NotifySocket())
        self.tmp = tunneltest.temp_dir(self)

    def tunneld(self, tunnels, globals=None, env=None, **kw):
        """tunneld on the fake ssh, with NOTIFY_SOCKET (and env) as systemd would set them."""
        g = {"control_socket": os.path.join(self.tmp, "control"), **(globals or {})}
        tunnels = [{"host": t["name"], **t} for t in tunnels]
        kw.setdefault("fake", self.fake)
        return use(self, SystemdTunneld(tunnels, globals=g, systemd_env={**self.notify.env, **(env or {})}, **kw))

    def up_forever(self, name):
        """name's fake ssh authenticates at once and lives for a minute."""
        self.fake.plan(name, [(0, 60, True)])

    def assert_no_message(self, kind, seconds):
        time.sleep(seconds)
        self.assertEqual(self.notify.messages(kind), [], f"unexpected {kind}=1")

    # ---- the sequence ----

    def test_ready_reload_stop_sequence(self):
        """Exactly READY, RELOADING (MONOTONIC_USEC of the SIGHUP), READY, STOPPING, all from tunneld's pid; exit 0."""
        self.up_forever("a")
        d = self.tunneld([{"name": "a"}])
        i, ready = self.notify.wait_kind("READY")
        self.assertEqual(ready.status, "0/1 tunnels up; starting: a")
        self.notify.wait_status(r"^1/1 tunnels up$", after=i + 1)

        sent = time.monotonic()
        d.reload()
        j, reloading = self.notify.wait_kind("RELOADING", after=i + 1)
        self.assertEqual(reloading.status, "Reloading configuration…")
        usec = int(reloading.fields["MONOTONIC_USEC"])
        self.assertGreaterEqual(usec / 1e6, sent - 0.005, "MONOTONIC_USEC is older than the SIGHUP")
        self.assertLessEqual(usec / 1e6, reloading.at + 0.005, "MONOTONIC_USEC is in the future")
        k, ready2 = self.notify.wait_kind("READY", after=j + 1)
        self.assertEqual(ready2.status, "1/1 tunnels up")
        d.wait_log(r"^<5>reload done: 1 tunnel \(was 1\), 0 changed$")

        d.signal(signal.SIGTERM)
        _, stopping = self.notify.wait_kind("STOPPING", after=k + 1)
        self.assertTrue(stopping.status, "STOPPING=1 without a STATUS")
        self.assertEqual(d.wait_exit(10), 0)
        self.assertEqual(self.notify.kinds(), ["READY", "RELOADING", "READY", "STOPPING"])
        self.assertEqual({m.pid for m in self.notify.messages()}, {d.pid})

    def test_ready_waits_until_every_first_start_launched(self):
        """ready = started: READY once every enabled tunnel launched its first ssh, not while
        some still wait for a max_parallel_starts slot (each fake ssh here holds its slot
        for 0.4 s: it never authenticates)."""
        for name in ("q1", "q2", "q3"):
            self.fake.plan(name, [(1, 0.4)])
        d = self.tunneld([{"name": n} for n in ("q1", "q2", "q3")], globals={"max_parallel_starts": 1})
        _, ready = self.notify.wait_kind("READY", timeout=10)
        self.assertNotIn("queued", ready.status)
        launched = d.log()   # tunneld logs each launch before it can send READY
        for name in ("q1", "q2", "q3"):
            self.assertRegex(launched, rf"(?m)^<\d+>{name}: .*launched: ssh pid \d+ \(start 1\)$",
                             f"READY before {name} launched: {ready.status}")
        firsts = [wait_until(lambda n=n: self.fake.starts(n), 5, what=f"{n}'s start")[0][0] for n in ("q1", "q2", "q3")]
        starts = sorted(firsts)
        self.assertGreaterEqual(starts[2] - starts[0], 0.6, f"the slot was not held: {starts}")

    def test_sighup_during_stop_sends_nothing(self):
        """A SIGHUP while stopping is ignored: nothing follows STOPPING, no RELOADING, no READY."""
        self.fake.plan("slow", [(0, 60, True, "noterm")])
        d = self.tunneld([{"name": "slow"}], globals={"stop_timeout": 1.5})
        self.notify.wait_status(r"^1/1 tunnels up$")
        d.signal(signal.SIGTERM)
        i, _ = self.notify.wait_kind("STOPPING")
        d.reload()
        self.assertEqual(d.wait_exit(10), 0)
        self.assertEqual(self.notify.kinds(), ["READY", "STOPPING"])
        self.assertEqual(self.notify.messages()[i + 1:], [])

    # ---- STATUS ----

    def test_status_counts_and_names(self):
        """STATUS counts up tunnels among enabled ones and names backoff (retry time) and failed (class) ones."""
        self.up_forever("good")
        self.fake.plan("bad", [(255, 0.01)])
        self.fake.plan("never", [(1, 0.05)])
        self.up_forever("off")
        self.tunneld([{"name": "good"},
                      {"name": "bad", "gatetime": 5, "restart_delay": 1, "restart_delay_max": 1},
                      {"name": "never", "restart": "never", "gatetime": 5},
                      {"name": "off", "enabled": False}])
        _, m = self.notify.wait_status(rf"^1/3 tunnels up; backoff: bad {RETRY}; failed: never \(unknown\)$")
        retry = seconds_until(re.search(r"retry at ([\d:]+)", m.status).group(1))
        self.assertLessEqual(retry, 1.0 + 1.0)  # restart_delay_max 1 s, rounded to the second
        self.assertGreaterEqual(retry, -1.5)
        self.assertEqual(self.fake.starts("off"), [])

    def test_status_follows_a_lost_tunnel(self):
        """STATUS follows a killed ssh: the tunnel shows starting or in backoff, then all up again."""
        self.up_forever("a")
        self.up_forever("b")
        self.tunneld([{"name": "a"}, {"name": "b", "gatetime": 0.2, "restart_delay": 0.3}])
        i, _ = self.notify.wait_status(r"^2/2 tunnels up$")
        wait_until(lambda: len(self.fake.starts("b")) == 1, 5)
        time.sleep(0.3)  # past b's gatetime: losing it now is a good run ending
        os.kill(self.fake.starts("b")[0][1], signal.SIGKILL)
        j, _ = self.notify.wait_status(rf"^1/2 tunnels up; (?:starting: b|backoff: b {RETRY})$", after=i + 1)
        self.notify.wait_status(r"^2/2 tunnels up$", after=j + 1)

    def test_failed_reload_status(self):
        """A rejected reload still sends READY; STATUS begins "reload failed (N errors" until a reload succeeds."""
        self.up_forever("a")
        d = self.tunneld([{"name": "a", "gatetime": 0.2, "restart_delay": 0.2}])
        i, _ = self.notify.wait_status(r"^1/1 tunnels up$")
        good = d.config_text
        with open(d.config_path, "w") as f:
            f.write(good.replace('name = "a";', 'name = "a"; port = 70000; colour = "red";'))
        d.reload()
        j, _ = self.notify.wait_kind("RELOADING", after=i + 1)
        k, ready = self.notify.wait_kind("READY", after=j + 1)
        failed = "reload failed (2 errors, see the journal), running the previous configuration; "
        self.assertEqual(ready.status, failed + "1/1 tunnels up")
        d.wait_log(r"^<3>reload rejected: 2 errors in ")

        time.sleep(0.3)
        os.kill(self.fake.starts("a")[0][1], signal.SIGKILL)  # a STATUS update on its own
        k, _ = self.notify.wait_status(r"^" + re.escape(failed) + r"0/1 tunnels up; ", after=k + 1)
        k, _ = self.notify.wait_status(r"^" + re.escape(failed) + r"1/1 tunnels up$", after=k + 1)

        with open(d.config_path, "w") as f:
            f.write(good)
        d.reload()
        _, ready = self.notify.wait_kind("READY", after=k + 1)
        self.assertEqual(ready.status, "1/1 tunnels up")
        self.assertEqual(self.notify.kinds(), ["READY", "RELOADING", "READY", "RELOADING", "READY"])

    # ---- ready = "all-up" ----

    def test_all_up_ready_timeout(self):
        """ready="all-up", tunnel never up: no READY (even on SIGHUP) until ready_timeout, then READY, warning."""
        self.fake.plan("never", [(0, 60)])  # runs, never authenticates
        t0 = time.monotonic()
        d = self.tunneld([{"name": "never"}], globals={"ready": "all-up", "ready_timeout": 1.5})
        d.wait_log(r"^<6>never: starting; ")
        time.sleep(0.3)
        d.reload()
        self.notify.wait_kind("RELOADING")
        _, ready = self.notify.wait_kind("READY", timeout=10)
        self.assertGreaterEqual(ready.at - t0, 1.5 - 0.01)
        self.assertLess(ready.at - t0, 3.0)
        self.assertEqual(ready.status, "0/1 tunnels up; starting: never")
        self.assertEqual(self.notify.kinds(), ["RELOADING", "READY"])
        self.assertRegex(d.log(), r"(?m)^<4>ready_timeout 1\.5 s passed before every tunnel was up: "
                                  r"reporting ready anyway$")

    def test_all_up_failed_start_counts_as_settled(self):
        """ready="all-up": a tunnel in backoff after a failed start does not hold READY back."""
        self.up_forever("good")
        self.fake.plan("bad", [(255, 0.05)])
        t0 = time.monotonic()
        self.tunneld([{"name": "good"}, {"name": "bad", "gatetime": 5, "restart_delay": 20, "restart_delay_max": 20}],
                     globals={"ready": "all-up", "ready_timeout": 30})
        _, ready = self.notify.wait_kind("READY", timeout=10)
        self.assertLess(ready.at - t0, 5)
        self.assertRegex(ready.status, rf"^1/2 tunnels up; backoff: bad {RETRY}$")

    def test_all_up_ready_after_bytes_flow(self):
        """ready="all-up" with real (slowed) ssh: READY only after the tunnel is up, when bytes already flow."""
        sshd = use(self, SSHServer())
        echo = use(self, EchoServer())
        slow_ssh = os.path.join(self.tmp, "slow-ssh")
        with open(slow_ssh, "w") as f:
            f.write(f'#!/bin/sh\nsleep 1\nexec {tunneltest.SSH} "$@"\n')
        os.chmod(slow_ssh, 0o755)
        port = free_port()
        t0 = time.monotonic()
        web = {"name": "web", "host": "127.0.0.1", "local_forwards": [f"127.0.0.1:{port}:127.0.0.1:{echo.port}"]}
        d = self.tunneld([web],
                         globals={"ready": "all-up", "ready_timeout": 60, "ssh": slow_ssh}, fake=None,
                         defaults=sshd.tunnel_defaults())
        _, ready = self.notify.wait_kind("READY", timeout=UP_TIMEOUT)
        self.assertTrue(echo_roundtrip(port, timeout=2), "READY came before the forward carried bytes")
        self.assertGreaterEqual(ready.at - t0, 1.0)
        self.assertEqual(ready.status, "1/1 tunnels up")
        log = d.log()
        up = re.search(r"(?m)^<5>web: up: ssh \(pid \d+\) authenticated", log)
        self.assertIsNotNone(up, "READY came before tunneld logged the tunnel up")
        self.assertLess(up.start(), log.index("<5>ready: 1/1 tunnels up"))
        self.assertEqual(self.notify.kinds(), ["READY"])

    # ---- watchdog ----

    def test_watchdog_pings_every_half_period(self):
        """WATCHDOG_USEC=1000000: WATCHDOG=1 at start, then steadily every 0.5 s."""
        self.up_forever("a")
        self.tunneld([{"name": "a"}], env={"WATCHDOG_USEC": "1000000"})
        self.notify.wait_kind("READY")
        time.sleep(3.2)
        pings = [m.at for m in self.notify.messages("WATCHDOG")]
        intervals = [b - a for a, b in zip(pings, pings[1:])]
        msg = f"intervals {[round(x, 3) for x in intervals]}"
        self.assertGreaterEqual(len(pings), 6, msg)
        self.assertLessEqual(len(pings), 9, msg)
        self.assertTrue(all(0.25 <= x <= 0.9 for x in intervals), msg)
        mean = (pings[-1] - pings[0]) / len(intervals)
        self.assertTrue(0.45 <= mean <= 0.56, f"mean {mean:.3f}, {msg}")

    def test_watchdog_pid_of_tunneld_pings(self):
        """WATCHDOG_PID equal to tunneld's own pid (exported by a shell that execs it): the watchdog pings."""
        self.up_forever("a")
        self.tunneld([{"name": "a"}], env={"WATCHDOG_USEC": "1000000"},
                     wrapper=["sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"'])
        self.notify.wait_kind("READY")
        wait_until(lambda: len(self.notify.messages("WATCHDOG")) >= 3, 3, what="3 watchdog pings")

    def test_watchdog_pid_of_another_process_is_silent(self):
        """WATCHDOG_PID naming another process: tunneld sends no WATCHDOG=1."""
        self.up_forever("a")
        self.tunneld([{"name": "a"}], env={"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())})
        self.notify.wait_kind("READY")
        self.assert_no_message("WATCHDOG", 1.5)

    def test_malformed_watchdog_usec_warns(self):
        """A malformed WATCHDOG_USEC is logged as a warning and ignored: no ping, the tunnel runs."""
        self.up_forever("a")
        d = self.tunneld([{"name": "a"}], env={"WATCHDOG_USEC": "soon"})
        d.wait_log(r"^<4>Ignoring malformed WATCHDOG_USEC")
        self.notify.wait_status(r"^1/1 tunnels up$")
        self.assert_no_message("WATCHDOG", 1.2)

    # ---- no systemd ----

    def test_runs_without_notify_socket(self):
        """Without NOTIFY_SOCKET, or with nobody listening on it, tunneld runs, reloads and stops without errors."""
        self.up_forever("a")
        self.up_forever("b")
        for name, env in (("a", {}), ("b", {"NOTIFY_SOCKET": os.path.join(self.tmp, "nobody-listens")})):
            with self.subTest(env=env):
                d = use(self, SystemdTunneld([{"name": name, "host": name}], fake=self.fake, systemd_env=env,
                                             globals={"control_socket": os.path.join(self.tmp, f"control-{name}")}))
                m = d.wait_log(rf"^<5>{name}: up: ")
                d.reload()
                d.wait_log(r"^<5>reload done: 1 tunnel \(was 1\), 0 changed$", after=m.end())
                self.assertEqual(d.stop(10), 0)
                self.assertNotRegex(d.log(), r"(?m)^<[0-3]>")
        self.assertEqual(self.notify.messages(), [])


if __name__ == "__main__":
    tunneltest.main()
