#!/usr/bin/env python3
"""A reload never stops tunneld answering. Loading asks ssh -G about every tunnel, and an
ssh_config_file with a slow "Match exec" makes that take seconds: tunneld loads in a child
process meanwhile, so status is served at once during the reload, the reload still ends
applied, a second SIGHUP during it is not lost, and SIGTERM is obeyed at once."""

import os
import signal
import time
import unittest

import tunneltest
from tunneltest import Tunneld, free_port, wait_until

SLOW = 3.0      # seconds each ssh -G of the slow file takes


def slow_ssh_config(directory, seconds=SLOW):
    path = os.path.join(directory, "slow_ssh_config")
    with open(path, "w") as f:
        f.write(f'Match exec "sleep {seconds:g}"\n  Port 2222\n')
    os.chmod(path, 0o600)
    return path


class AsyncReloadTest(unittest.TestCase):
    def tunneld(self, extra=()):
        conf = slow_ssh_config(tunneltest.temp_dir(self))
        # unresolvable: it never connects, it only has to be loaded (ssh -G runs the exec)
        tunnels = [{"name": "slow", "host": "tunneld-test.invalid", "ssh_config_file": conf,
                    "local_forwards": [f"127.0.0.1:{free_port()}:127.0.0.1:22"]}, *extra]
        d = tunneltest.use(self, Tunneld(tunnels, {"restart_delay": 5, "restart_delay_max": 10},
                                         globals={"ssh": tunneltest.SSH, "stop_timeout": 2}))
        # loaded at start like a reload (off the loop, ssh -G's exec included): wait for that
        wait_until(lambda: tunneltest.loaded(d), 30, what="tunneld to load its configuration")
        return d

    def test_status_is_served_during_a_slow_reload(self):
        """SIGHUP, then status every 0.1 s while ssh -G runs its 3 s exec: every reply
        within 1 s; the reload ends applied (a tunnel added by it is there), and a second
        SIGHUP during it runs after it."""
        d = self.tunneld()
        d.rewrite(tunnels=[*d.tunnels, {"name": "added", "host": "tunneld-test.invalid"}])
        t0 = time.monotonic()
        os.kill(d.pid, signal.SIGHUP)
        time.sleep(0.2)
        os.kill(d.pid, signal.SIGHUP)       # while the first one loads
        worst = 0.0
        while time.monotonic() - t0 < SLOW + 0.5:
            r = tunneltest.tunnelctl(d, "--json", "status")
            worst = max(worst, r.took)
            self.assertIn(r.returncode, (0, 1), r.stderr)
            time.sleep(0.1)
        print(f"# slowest status reply during the reload: {worst * 1000:.0f} ms", flush=True)
        self.assertLess(worst, 1.0)
        wait_until(lambda: d.count_log(r"^<\d+>reload done: ") >= 2, 3 * SLOW + 20, what="both reloads done")
        self.assertIn("added", tunneltest.status(d))

    def test_tunnelctl_reload_waits_for_its_reload(self):
        """tunnelctl reload returns when its reload is applied (not before), and another
        client's status is answered meanwhile."""
        d = self.tunneld()
        d.rewrite(tunnels=[*d.tunnels, {"name": "added", "host": "tunneld-test.invalid"}])
        import subprocess
        p = subprocess.Popen([tunneltest.TUNNELCTL, "-s", d.globals["control_socket"], "reload"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        time.sleep(0.5)
        r = tunneltest.tunnelctl(d, "status")
        self.assertLess(r.took, 1.0)
        self.assertIsNone(p.poll(), "tunnelctl reload returned before ssh -G was done")
        out, err = p.communicate(timeout=SLOW + 20)
        took = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, out + err)
        self.assertGreater(took, SLOW - 1.0)
        self.assertIn("added", tunneltest.status(d))

    def test_file_rewritten_during_the_reload_is_read_again(self):
        """The file changes while the reload's child is waiting for ssh -G: the bytes
        ssh judged are not the ones tunneld would apply, so it loads again; what ends up
        applied is the last file, never a mix."""
        d = self.tunneld()
        d.rewrite(tunnels=[*d.tunnels, {"name": "first", "host": "tunneld-test.invalid"}])
        os.kill(d.pid, signal.SIGHUP)
        time.sleep(1.0)         # the child reads the file, then waits for ssh -G
        d.rewrite(tunnels=[*d.tunnels[:1], {"name": "second", "host": "tunneld-test.invalid"}])
        d.wait_log(r"^<\d+>reload: .* changed while it was being loaded: loading it again", timeout=3 * SLOW + 20)
        wait_until(lambda: "second" in tunneltest.status(d), 3 * SLOW + 20, what="the last file applied")
        self.assertNotIn("first", tunneltest.status(d))
        self.assertEqual(d.count_log(r"^<\d+>reload done: "), 1, "applied once, the last file")

    def test_an_empty_main_file_is_a_write_in_progress(self):
        """A reload that finds the main file empty (an editor between truncating and
        writing it) is rejected: "no tunnels" would stop every one."""
        d = self.tunneld()
        open(d.config_path, "w").close()
        os.kill(d.pid, signal.SIGHUP)
        d.wait_log(r"is empty \(being written\?\)", timeout=3 * SLOW + 20)
        d.wait_log(r"^<\d+>reload rejected: ", timeout=10)
        self.assertIn("slow", tunneltest.status(d))

    def test_sigterm_during_a_slow_reload(self):
        """SIGTERM 0.3 s into a reload whose ssh -G takes 3 s: tunneld exits 0 within
        stop_timeout + 1 s, and leaves no process of the reload behind."""
        d = self.tunneld()
        os.kill(d.pid, signal.SIGHUP)
        time.sleep(0.3)
        pid = d.pid
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        rc = d.proc.wait(timeout=20)
        took = time.monotonic() - t0
        print(f"# SIGTERM during the reload: exit {rc} after {took:.2f} s", flush=True)
        self.assertEqual(rc, 0)
        self.assertLess(took, 2 + 1 + (2 if tunneltest.SANITIZED else 0))
        wait_until(lambda: not tunneltest.descendants_of(pid), 5, what="the reload's processes gone")


if __name__ == "__main__":
    tunneltest.main()
