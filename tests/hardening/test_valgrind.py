"""tunneld under valgrind through a whole life: start against a real sshd, an ssh killed
and restarted, a reload that adds, changes and removes tunnels, a bad reload, a tunnelctl
session, and SIGTERM. valgrind --leak-check=full --errors-for-leak-kinds=definite
--error-exitcode=1 must find no memory error and no definite leak ("ERROR SUMMARY: 0
errors"), and tunneld must exit 0."""
import os
import re
import shutil
import signal
import unittest

os.environ.setdefault("TUNNELTEST_TIMEOUT", "200")     # valgrind runs tunneld ~20× slower
import tunneltest  # noqa: E402
from tunneltest import EchoServer, SSHServer, Tunneld, echo_roundtrip, free_port, use, wait_until  # noqa: E402

UP = 60


@unittest.skipIf(os.environ.get("TUNNELD_SANITIZE", "none") not in ("", "none"),
                 "the sanitizer build has its own checker; valgrind cannot run it")
@unittest.skipUnless(shutil.which("valgrind"), "valgrind is not installed")
class Valgrind(unittest.TestCase):
    def test_whole_life_is_clean(self):
        """start, restart, reload (add/change/remove), rejected reload, tunnelctl, stop:
        no memory errors, no definite leaks, exit 0."""
        sshd = use(self, SSHServer())
        echo = use(self, EchoServer())
        vdir = tunneltest.temp_dir(self)
        ports = [free_port() for _ in range(3)]
        defaults = {**sshd.tunnel_defaults(), "host": "127.0.0.1", "gatetime": 1, "restart_delay": 0.2,
                    "restart_delay_max": 1}

        def tunnels(step):
            t = [{"name": "a", "local_forwards": [echo.forward(ports[0])]},
                 {"name": "b", "local_forwards": [echo.forward(ports[1])],
                  "probe": {"connect": f"127.0.0.1:{ports[1]}", "interval": 0.5, "timeout": 0.3,
                            "send": "x", "expect": "x"}}]
            if step:
                t[0]["server_alive_interval"] = 10                  # changed
                t[1:] = [{"name": "c", "remote_forwards": [echo.forward(ports[2])]}]
            return t

        # Without --quiet: the report ends with "ERROR SUMMARY: N errors", which tells
        # valgrind's verdict apart from tunneld's own exit status (both may be 1). A log per
        # process (%p): a forked child that fails before its exec reports on its own.
        d = use(self, Tunneld(tunnels(0), defaults, {"ssh": tunneltest.SSH},
                              wrapper=["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
                                       "--error-exitcode=1", f"--log-file={vdir}/valgrind.%p.log"]))
        # /usr/bin/valgrind is a script that execs the tool in the same process
        wait_until(lambda: "memcheck" in os.readlink(f"/proc/{d.pid}/exe"), 10, what="tunneld under valgrind")
        m, pid = d.wait_up("a", timeout=UP)
        d.wait_up("b", timeout=UP)
        wait_until(lambda: echo_roundtrip(ports[0]), 20, what="bytes through a")

        os.kill(pid, signal.SIGKILL)                                # a restart
        d.wait_up("a", timeout=UP, after=m.end())
        wait_until(lambda: echo_roundtrip(ports[0]), 20, what="bytes through a again")

        socket = d.globals["control_socket"]
        out = tunneltest.tunnelctl(socket, "--json", "status", timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("tunneld_tunnel_up", tunneltest.metrics_text(socket))

        mark = len(d.log())
        tunneltest.write_config(d.config_path, d.globals, defaults, tunnels(1))
        d.reload()                                                  # add c, change a, remove b
        d.wait_log(r"^<\d+>c: up: ssh", timeout=UP, after=mark)
        d.wait_log(r"^<\d+>a: make-before-break done: ssh pid \d+ has taken every forward over", timeout=UP, after=mark)
        wait_until(lambda: echo_roundtrip(ports[2]), 20, what="bytes through c")

        with open(d.config_path, "a") as f:
            f.write("\nbroken = ;\n")
        mark = len(d.log())
        d.reload()                                                  # rejected
        d.wait_log(r"reload rejected", timeout=30, after=mark)

        pid = d.pid
        status = d.stop(timeout=60)
        main_log = os.path.join(vdir, f"valgrind.{pid}.log")
        report = tunneltest._read_text(main_log)
        print(f"# valgrind's report on tunneld (pid {pid}): {len(report.splitlines())} lines")
        for line in report.splitlines():
            print(f"# valgrind: {line}")
        others = {name: tunneltest._read_text(os.path.join(vdir, name))
                  for name in sorted(os.listdir(vdir)) if os.path.join(vdir, name) != main_log}
        print(f"# valgrind: {len(others)} more logs, of children between fork and exec; "
              f"{sum('ERROR SUMMARY' in t for t in others.values())} of them with an ERROR SUMMARY")
        summary = re.findall(r"ERROR SUMMARY: (\d+) errors", report)
        self.assertTrue(summary, f"valgrind's report has no ERROR SUMMARY (did it finish?):\n{report}")
        self.assertEqual(summary[-1], "0", f"valgrind found errors (its exit status {status} is not tunneld's):\n"
                                           f"{report}")
        self.assertNotRegex(report, r"definitely lost: [1-9]")
        self.assertFalse(re.search(r"Invalid (read|write|free)|uninitialised|Mismatched", report), report)
        for name, text in others.items():
            self.assertNotRegex(text, r"ERROR SUMMARY: [1-9]", f"{name}:\n{text}")
        # valgrind found nothing, so a non-zero status is tunneld's own
        self.assertEqual(status, 0, f"tunneld exited {status} (valgrind found no error)")


if __name__ == "__main__":
    tunneltest.main()
