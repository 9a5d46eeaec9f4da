#!/usr/bin/env python3
"""Forwards the world can break, end to end against a real sshd: a Unix socket left behind
by a killed ssh, a local port half taken by another program, the same through an alias of
an ssh_config_file.

"up" means every forward tunneld was asked for is in place: a forward that bound only one
of its addresses (127.0.0.1 taken, ::1 free) is a failed forward (local-forward): the
tunnel is degraded, never up, and the forward is asked for again on the same ssh until it
opens. A crash never poisons the next start: a socket nobody listens on is removed before
ssh binds it again.
"""

import os
import re
import signal
import socket
import threading
import time
import unittest

import tunneltest
from tunneltest import Tunneld, UP_TIMEOUT, assert_echo, free_port, ipv6_loopback, unix_echo, wait_until


class Squatter:
    """Another program that holds 127.0.0.1:port (and answers with its own banner)."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            with c:
                try:
                    c.sendall(b"SQUATTER\n")
                except OSError:
                    pass

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


class ForwardTest(tunneltest.SSHTestCase):
    fast_settings = {**tunneltest.SSHTestCase.fast_settings, "restart_delay_max": 1}

    # ---- Unix sockets ----

    def test_unix_socket_forward_survives_kill_9(self):
        """-L /path/db.sock:host:port: kill -9 of ssh leaves the socket file; the next start
        removes it (nobody listens on it) instead of failing "Address already in use" for
        ever, and bytes flow through the socket again."""
        path = os.path.join(tunneltest.temp_dir(self), "db.sock")
        d = self.tunneld([{"name": "ux", "local_forwards": [f"{path}:127.0.0.1:{self.echo.port}"]}])
        m, pid = d.wait_up("ux")
        wait_until(lambda: unix_echo(path), 10, what="an echo through the Unix socket")
        for _ in range(2):
            os.kill(pid, signal.SIGKILL)
            m = d.wait_log(r"^<\d+>ux: ssh was killed by signal KILL ", after=m.end())
            self.assertTrue(os.path.exists(path), "ssh leaves its socket behind")
            m, pid = d.wait_up("ux", after=m.end())
            wait_until(lambda: unix_echo(path), 10, what="an echo through the Unix socket after kill -9")
        self.assertIn(f"ux: removed {path}: a socket nobody listens on", d.log())
        self.assertNotIn("Address already in use", d.log())

    def test_unix_socket_of_a_live_listener_is_left_alone(self):
        """A socket someone listens on is theirs: never removed; the forward fails
        (local-forward, ssh's own words in status) and the tunnel is degraded until they
        let go; then the forward opens on the same ssh."""
        path = os.path.join(tunneltest.temp_dir(self), "taken.sock")
        owner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        owner.bind(path)
        owner.listen(4)
        try:
            d = self.tunneld([{"name": "ul", "local_forwards": [f"{path}:127.0.0.1:{self.echo.port}"]}])
            d.wait_log(rf"^<4>ul: forward L {re.escape(path)}:127\.0\.0\.1:\d+ failed: unix_listener: cannot bind "
                       rf"to path {re.escape(path)}: Address already in use; ", timeout=UP_TIMEOUT)
            d.wait_log(r"^<4>ul: degraded: ", timeout=5)
            self.assertTrue(os.path.exists(path))
            self.assertNotIn("removed", d.log())
            t = tunneltest.status(d)["ul"]
            self.assertEqual(t["failures"], {"local-forward": 1}, t)
        finally:
            owner.close()
        os.unlink(path)     # its owner goes away, and removes it
        m, pid = d.wait_up("ul")
        self.assertEqual(pid, t["pid"], "the same ssh")
        wait_until(lambda: unix_echo(path), 10, what="an echo through the Unix socket")

    # ---- a port half taken ----

    @unittest.skipUnless(ipv6_loopback(), "no ::1 here: ssh binds 127.0.0.1 alone and fails outright")
    def test_half_taken_port_is_a_forward_failure_then_comes_up(self):
        """"P:127.0.0.1:E" binds localhost: 127.0.0.1 and ::1. Another program holds
        127.0.0.1:P: ssh binds only ::1 and answers "open". tunneld does not call that up:
        the forward failed (ssh's bind line is its reason), the tunnel is degraded and the
        forward is asked for again on the same ssh; once the port is free the tunnel comes
        up and clients of 127.0.0.1:P reach the tunnel, not the squatter."""
        port = free_port()
        squatter = Squatter(port)
        self.addCleanup(squatter.close)
        d = self.tunneld([{"name": "half", "local_forwards": [f"{port}:127.0.0.1:{self.echo.port}"]}])
        d.wait_log(rf"^<4>half: forward L {port}:127\.0\.0\.1:\d+ failed: bind \[127\.0\.0\.1\]:{port}: "
                   r"Address already in use; asked for again in ", timeout=UP_TIMEOUT)
        m = d.wait_log(r"^<4>half: degraded: ssh \(pid (\d+)\) runs, but 1 of 1 forwards failed", timeout=5)
        pid = int(m.group(1))
        reply = tunneltest.status_reply(d, "half")
        t = reply["tunnels"][0]
        self.assertEqual(t["state"], "degraded")
        self.assertIn("degraded: half", reply["status"])
        self.assertEqual(t["forward_states"][0]["state"], "failed", t)
        self.assertEqual(t["forward_states"][0]["reason"], f"bind [127.0.0.1]:{port}: Address already in use", t)
        time.sleep(1.5)     # past gatetime: still not up
        self.assertNotRegex(d.log(), r"half: up: ")
        squatter.close()
        _, up_pid = d.wait_up("half")
        self.assertEqual(up_pid, pid, "the same ssh")
        assert_echo(port)

    @unittest.skipUnless(ipv6_loopback(), "no ::1 here")
    def test_exit_on_forward_failure_false_is_the_same_and_warned(self):
        """exit_on_forward_failure no longer does anything (a failed forward is always asked
        for again on the running ssh): set to false it loads with one warning, and the tunnel
        is degraded, never up, exactly as without it."""
        port = free_port()
        squatter = Squatter(port)
        self.addCleanup(squatter.close)
        d = self.tunneld([{"name": "deg", "exit_on_forward_failure": False,
                           "local_forwards": [f"{port}:127.0.0.1:{self.echo.port}"]}])
        d.wait_log(r"^<4>\S+:\d+: deg\.exit_on_forward_failure: no longer does anything \(", timeout=5)
        d.wait_log(r"^<\d+>deg: degraded: ssh \(pid \d+\) runs, but 1 of 1 forwards failed", timeout=UP_TIMEOUT)
        self.assertEqual(tunneltest.tunnel_status(d, "deg")["state"], "degraded")
        time.sleep(1.5)
        self.assertNotRegex(d.log(), r"deg: up: ")

    @unittest.skipUnless(ipv6_loopback(), "no ::1 here")
    def test_half_taken_local_forward_of_an_ssh_config_alias(self):
        """The same with a LocalForward of the tunnel's ssh_config_file (an alias tunnel,
        as the autossh article sets it up): ssh -G tells tunneld of the forward, which it
        opens over the control socket like any other: degraded while half taken, up once free."""
        port = free_port()
        squatter = Squatter(port)
        self.addCleanup(squatter.close)
        conf = os.path.join(tunneltest.temp_dir(self), "ssh_config")
        with open(conf, "w") as f:
            f.write(f"Host aliasdb\n  HostName 127.0.0.1\n  Port {self.sshd.port}\n  User root\n"
                    f"  IdentityFile {self.sshd.client_key}\n  UserKnownHostsFile {self.sshd.known_hosts}\n"
                    f"  LocalForward {port} 127.0.0.1:{self.echo.port}\n")
        os.chmod(conf, 0o600)
        d = tunneltest.use(self, Tunneld([{"name": "al", "host": "aliasdb", "ssh_config_file": conf}],
                                         {"gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 1},
                                         globals={"ssh": tunneltest.SSH}))
        d.wait_log(rf"^<4>al: forward L .*{port}.* failed: bind \[127\.0\.0\.1\]:{port}: Address already in use",
                   timeout=UP_TIMEOUT)
        squatter.close()
        d.wait_up("al")
        assert_echo(port)


if __name__ == "__main__":
    tunneltest.main()
