#!/usr/bin/env python3
"""Jump hosts, end to end: a tunnel to a real sshd (the destination) through another real
sshd (the jump host), with the tunnel's own key and known_hosts and no ssh_config_file.

ssh gives the ssh it runs for a ProxyJump hop only -F, none of the command line's -i or -o:
tunneld writes an ssh_config for the hops (daemon/jump_config.c) so that they use the
tunnel's identity_file and ssh_options too. A hop's failure is classed by its cause and
logged "on the jump host H", never as the generic "closed" the destination's ssh prints
after it.

The destination is reached as "localhost" and the jump host as "127.0.0.1": two names, so
the settings tunneld writes for the hop cannot reach the destination by accident (the
known_hosts file has an entry for each name).
"""

import os
import shutil
import signal
import tempfile
import time
import unittest

import tunneltest
from tunneltest import EchoServer, SSHServer, Tunneld, assert_echo, forward_states, free_port

UP_TIMEOUT = 30


class JumpHostTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.jump = tunneltest.use(cls, SSHServer())
        cls.jump2 = tunneltest.use(cls, SSHServer())
        cls.dest = tunneltest.use(cls, SSHServer())
        cls.echo = tunneltest.use(cls, EchoServer())
        cls.dir = tempfile.mkdtemp(prefix="tunneltest-jump-")
        cls.addClassCleanup(shutil.rmtree, cls.dir, True)
        # one key for the tunnel, trusted by the destination and the jump hosts
        cls.key = cls.dest.client_key
        with open(cls.key + ".pub") as f:
            pub = f.read()
        for server in (cls.jump, cls.jump2):
            with open(server.authorized_keys, "a") as f:
                f.write(pub)
        cls.known_hosts = os.path.join(cls.dir, "known_hosts")
        with open(cls.known_hosts, "w") as f:
            f.write(cls.dest.known_hosts_line("localhost"))
            f.write(cls.jump.known_hosts_line("127.0.0.1"))
            f.write(cls.jump2.known_hosts_line("127.0.0.1"))

    def tunneld(self, tunnel, known_hosts=None, env=None, args=()):
        """The README's layout: a key and known_hosts of the tunnel's own, no ssh_config_file."""
        defaults = {"user": "root", "identity_file": self.key, "gatetime": 1, "restart_delay": 0.2,
                    "restart_delay_max": 30, "connect_timeout": 5,
                    "ssh_options": [f"UserKnownHostsFile={known_hosts or self.known_hosts}",
                                    "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes"]}
        t = {"host": "localhost", "port": self.dest.port, **tunnel}
        return tunneltest.use(self, Tunneld([t], defaults, globals={"ssh": tunneltest.SSH}, env=env, args=args))

    def test_jump_host_uses_the_tunnels_key_and_known_hosts(self):
        """The hop authenticates with the tunnel's identity_file and checks the jump host's
        key in the tunnel's UserKnownHostsFile: up, bytes flow; the jump host's sshd saw
        the tunnel's key."""
        port = free_port()
        offset = len(self.jump.log())
        d = self.tunneld({"name": "j", "jump_host": f"root@127.0.0.1:{self.jump.port}",
                          "local_forwards": [self.echo.forward(port)]})
        d.wait_up("j", timeout=UP_TIMEOUT)
        assert_echo(port)
        self.assertEqual(forward_states(tunneltest.tunnel_status(d, "j")), {self.echo.forward(port): "open"},
                         "the forward open over the master's control socket")
        fingerprint = tunneltest.key_fingerprint(self.key + ".pub")
        self.assertIn(fingerprint, self.jump.log()[offset:], "the jump host saw the tunnel's key")
        self.assertIn("Accepted publickey for root", self.jump.log()[offset:])

    def test_jump_host_works_when_the_login_shell_is_nologin(self):
        """ssh runs the hop through $SHELL; under systemd with User=tunneld that is
        /usr/sbin/nologin, which ends every hop at once. tunneld gives ssh /bin/sh."""
        port = free_port()
        d = self.tunneld({"name": "nl", "jump_host": f"root@127.0.0.1:{self.jump.port}",
                          "local_forwards": [self.echo.forward(port)]}, env={"SHELL": "/usr/sbin/nologin"})
        d.wait_up("nl", timeout=UP_TIMEOUT)
        assert_echo(port)

    def test_two_hops(self):
        """jump_host "a,b": both hops get the tunnel's settings."""
        port = free_port()
        d = self.tunneld({"name": "two", "jump_host": f"root@127.0.0.1:{self.jump.port},root@127.0.0.1:{self.jump2.port}",
                          "local_forwards": [self.echo.forward(port)]})
        d.wait_up("two", timeout=UP_TIMEOUT)
        assert_echo(port)

    def test_refused_key_on_the_jump_host_is_auth(self):
        """The jump host refuses the key: class auth, "on the jump host", backoff at the cap
        at once; not the destination's generic "Connection closed" that follows it."""
        other = tunneltest.use(self, SSHServer())    # trusts only its own client key
        with open(self.known_hosts) as f:
            lines = f.read()
        kh = os.path.join(self.dir, "known_hosts-other")
        with open(kh, "w") as f:
            f.write(lines + other.known_hosts_line("127.0.0.1"))
        jump = f"root@127.0.0.1:{other.port}"
        d = self.tunneld({"name": "ja", "jump_host": jump, "local_forwards": [self.echo.forward(free_port())]},
                         known_hosts=kh)
        m = d.wait_log(r"^<\d+>ja: ssh exited with status 255 after .*, never up "
                       rf"\(auth on the jump host {jump}: .*\); restarting in (.+) \(failed start 1 in a row\)$",
                       timeout=UP_TIMEOUT)
        self.assertGreaterEqual(tunneltest.parse_duration(m.group(1)), 15 - 0.05, "auth: half the cap or more")
        self.assertIn("Permission denied (publickey)", d.log())
        self.assertEqual(tunneltest.status(d)["ja"]["last_exit"]["failure"], "auth")

    def test_unknown_jump_host_key_is_host_key(self):
        """The jump host's key is not in the tunnel's known_hosts: class host-key on the jump host."""
        kh = os.path.join(self.dir, "known_hosts-dest-only")
        with open(kh, "w") as f:
            f.write(self.dest.known_hosts_line("localhost"))
        jump = f"root@127.0.0.1:{self.jump.port}"
        d = self.tunneld({"name": "jk", "jump_host": jump, "local_forwards": [self.echo.forward(free_port())]},
                         known_hosts=kh)
        d.wait_log(rf"^<\d+>jk: ssh exited with status 255 after .*\(host-key on the jump host {jump}: ",
                   timeout=UP_TIMEOUT)
        self.assertEqual(tunneltest.status(d)["jk"]["last_exit"]["failure"], "host-key")

    def test_destination_failure_is_not_the_jump_hosts(self):
        """Through a working jump host, the destination refusing the key is plain auth."""
        port = free_port()
        d = self.tunneld({"name": "jd", "jump_host": f"root@127.0.0.1:{self.jump.port}", "user": "nosuchuser",
                          "local_forwards": [self.echo.forward(port)]})
        m = d.wait_log(r"^<\d+>jd: ssh exited with status 255 after .*\((auth[^:]*): ", timeout=UP_TIMEOUT)
        self.assertEqual(m.group(1), "auth")
        self.assertEqual(tunneltest.status(d)["jd"]["last_exit"]["failure"], "auth")

    def test_jump_config_file_is_private_and_removed(self):
        """The file tunneld writes for the hops is 0600 in a 0700 directory of its own, and
        gone when tunneld stops."""
        port = free_port()
        d = self.tunneld({"name": "jf", "jump_host": f"root@127.0.0.1:{self.jump.port}",
                          "local_forwards": [self.echo.forward(port)]})
        d.wait_up("jf", timeout=UP_TIMEOUT)
        assert_echo(port)
        path = d.globals["control_socket"] + ".d/jf.ssh_config"
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.dirname(path)).st_mode & 0o777, 0o700)
        with open(path) as f:
            text = f.read()
        self.assertIn(f"Host 127.0.0.1\n", text)
        self.assertIn(f'\tIdentityFile "{self.key}"\n', text)
        d.stop()
        self.assertFalse(os.path.exists(path))
        self.assertFalse(os.path.exists(os.path.dirname(path)))


if __name__ == "__main__":
    tunneltest.main()
