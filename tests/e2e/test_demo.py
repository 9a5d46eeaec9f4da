#!/usr/bin/env python3
"""README's first command, scripts/demo, run as a newcomer would: it must start tunneld
with its two tunnels through a throwaway sshd, the pages it tells you to curl must come
through both tunnels, the tunnelctl command it prints must work, and Ctrl-C must leave
nothing behind. (Plain build only: the demo builds and runs build/.)"""

import os
import re
import signal
import subprocess
import time
import unittest
import urllib.request

import tunneltest
from tunneltest import wait_until

DEMO = os.path.join(tunneltest.SOURCE_ROOT, "scripts", "demo")


class DemoTest(unittest.TestCase):
    def setUp(self):
        if os.environ.get("TUNNELD_SANITIZE", "none") not in ("", "none"):
            self.skipTest("the demo builds and runs the plain build")
        self.out = os.path.join(tunneltest.temp_dir(self), "demo.out")

    def output(self):
        with open(self.out, errors="replace") as f:
            return f.read()

    def test_demo_carries_pages_and_cleans_up(self):
        with open(self.out, "w") as out:
            proc = subprocess.Popen([DEMO], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.addCleanup(lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL))
        tunneltest.add_diagnostic("scripts/demo output", self.output)
        text = wait_until(lambda: all(f"<5>{n}: up: " in self.output() for n in ("web", "reverse")) and self.output(),
                          240, interval=0.2, what="both demo tunnels up")
        pages = re.findall(r"curl (http://127\.0\.0\.1:\d+/)", text)
        self.assertEqual(len(pages), 2, text)
        for url in pages:
            with urllib.request.urlopen(url, timeout=10) as r:
                self.assertIn(b"Hello through tunneld", r.read(), url)
        ctl = re.search(r"^\s+(\S+/tunnelctl -s \S+) status\b", text, re.M)
        self.assertIsNotNone(ctl, text)
        r = subprocess.run([*ctl.group(1).split(), "status", "web", "reverse"], capture_output=True, text=True,
                           timeout=20)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        demo_dir = re.search(r"configuration: (/tmp/tunneld-demo\.\w+)/tunneld\.conf", text).group(1)

        os.killpg(proc.pid, signal.SIGINT)      # Ctrl-C
        self.assertIn(proc.wait(30), (0, 130), self.output())
        self.assertIn("every tunnel stopped; exiting", self.output())
        time.sleep(0.2)
        left = subprocess.run(["pgrep", "-f", demo_dir], capture_output=True, text=True).stdout.split()
        self.assertEqual(left, [], f"processes of the demo left: {left}")
        self.assertFalse(os.path.exists(demo_dir), "the demo's directory was left")


if __name__ == "__main__":
    tunneltest.main()
