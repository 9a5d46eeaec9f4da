#!/usr/bin/env python3
"""Pinned host keys, end to end against real sshds: host_keys (the destination's) and
jump_host_keys (the jump hosts') go into a known_hosts file tunneld writes per tunnel
(RUNTIME_DIR/NAME.known_hosts), which ssh and the jump hosts' ssh check against alone,
strictly: no known_hosts of the user, no writable home, no first login. A key that does
not match fails as host-key. tunneld --keyscan fetches the keys without trusting them,
prints their fingerprints and the lines to paste; through a jump host only once the jump
host's own key is pinned.

None of these tunnels names a known_hosts file of its own in ssh_options (the fixtures'
usual UserKnownHostsFile): only tunneld's file can make them come up.
"""

import os
import pwd
import re
import subprocess
import unittest

import tunneltest
from tunneltest import EchoServer, SSHServer, Tunneld, assert_echo, free_port

UP_TIMEOUT = 30


def pub_key(server):
    """The sshd's host key as host_keys wants it: "KEYTYPE BASE64"."""
    with open(server.host_key + ".pub") as f:
        return " ".join(f.read().split()[:2])


def user_known_hosts():
    """What ssh would read without tunneld's file: the passwd home's known_hosts (ssh ignores $HOME)."""
    path = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".ssh", "known_hosts")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def paste_lines(text, setting):
    """The entries of a pasted `setting = ( "…", "…" );` line of --keyscan's output."""
    m = re.search(rf"^\s+{setting} = \((.*)\);$", text, re.M)
    if not m:
        return None
    return re.findall(r'"([^"]*)"', m.group(1))


class HostKeysTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dest = tunneltest.use(cls, SSHServer())
        cls.jump = tunneltest.use(cls, SSHServer())
        cls.echo = tunneltest.use(cls, EchoServer())
        cls.key = cls.dest.client_key
        with open(cls.key + ".pub") as f:
            pub = f.read()
        with open(cls.jump.authorized_keys, "a") as f:
            f.write(pub)

    def setUp(self):
        self.known_before = user_known_hosts()
        self.home = tunneltest.temp_dir(self)
        os.chmod(self.home, 0o500)      # a home nobody can write to

    def tearDown(self):
        self.assertEqual(user_known_hosts(), self.known_before, "the user's known_hosts was not touched")

    def other_key(self):
        path = os.path.join(tunneltest.temp_dir(self), "other")
        subprocess.run([tunneltest.SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", path],
                       check=True, stdin=subprocess.DEVNULL, timeout=30)
        with open(path + ".pub") as f:
            return " ".join(f.read().split()[:2])

    def tunnel(self, name, port, **extra):
        t = {"name": name, "host": "localhost", "port": self.dest.port,
             "local_forwards": [self.echo.forward(port)], **extra}
        if "jump_host" not in t:
            t.setdefault("ssh_config_file", "/dev/null")
        return t

    def defaults(self):
        return {"user": "root", "identity_file": self.key, "gatetime": 1, "restart_delay": 0.2,
                "restart_delay_max": 30, "connect_timeout": 5}

    def tunneld(self, tunnels):
        return tunneltest.use(self, Tunneld(tunnels, self.defaults(), globals={"ssh": tunneltest.SSH},
                                            env={"HOME": self.home}))

    def keyscan(self, tunnels, name):
        path = os.path.join(tunneltest.temp_dir(self), "scan.conf")
        tunneltest.write_config(path, {"ssh": tunneltest.SSH, "control_socket": "none"}, self.defaults(), tunnels)
        env = dict(os.environ, HOME=self.home)
        return tunneltest.run_tunneld("--keyscan", name, "-c", path, timeout=120, env=env)

    def test_pinned_key_needs_no_known_hosts_of_the_user(self):
        """host_keys alone: up, bytes flow; the file is 0600 in tunneld's 0700 directory,
        holds the key under [localhost]:PORT, and is gone when tunneld stops."""
        port = free_port()
        d = self.tunneld([self.tunnel("pin", port, host_keys=[pub_key(self.dest) + " root@dest"])])
        d.wait_up("pin", timeout=UP_TIMEOUT)
        assert_echo(port)
        path = d.globals["control_socket"] + ".d/pin.known_hosts"
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        with open(path) as f:
            self.assertIn(f"\n[localhost]:{self.dest.port} {pub_key(self.dest)}\n", f.read())
        argv = " ".join(open(f"/proc/{d.children()[0]}/cmdline").read().split("\0"))
        self.assertIn(f"UserKnownHostsFile=\"{path}\"", argv)
        self.assertIn("StrictHostKeyChecking=yes", argv)
        d.stop()
        self.assertFalse(os.path.exists(path), "removed when tunneld stops")

    def test_wrong_key_is_host_key(self):
        """A pinned key the server does not have: class host-key, in the log and in tunnelctl status."""
        d = self.tunneld([self.tunnel("wrong", free_port(), host_keys=[self.other_key()])])
        d.wait_log(r"^<\d+>wrong: ssh exited with status 255 after .*, never up \(host-key: ", timeout=UP_TIMEOUT)
        self.assertIn("REMOTE HOST IDENTIFICATION HAS CHANGED", d.log())
        st = tunneltest.tunnel_status(d, "wrong")
        self.assertEqual(st["last_exit"]["failure"], "host-key")
        r = tunneltest.tunnelctl(d, "status", "wrong")
        self.assertIn("(host-key)", r.stdout)

    def test_reload_with_the_right_key_brings_it_up(self):
        """A change of host_keys is a change of the command line: the reload restarts ssh
        with the new file."""
        port = free_port()
        d = self.tunneld([self.tunnel("fix", port, host_keys=[self.other_key()])])
        d.wait_log(r"^<\d+>fix: ssh exited .*\(host-key: ", timeout=UP_TIMEOUT)
        d.rewrite(tunnels=[self.tunnel("fix", port, host_keys=[pub_key(self.dest)])])
        d.reload()
        d.wait_up("fix", timeout=UP_TIMEOUT)
        assert_echo(port)

    def test_jump_host_and_destination_pinned(self):
        """Both hops checked against tunneld's file: the jump host through the jump hosts'
        ssh_config (its UserKnownHostsFile), the destination through -o."""
        port = free_port()
        jump = f"root@127.0.0.1:{self.jump.port}"
        d = self.tunneld([self.tunnel("both", port, jump_host=jump, host_keys=[pub_key(self.dest)],
                                      jump_host_keys=[f"127.0.0.1:{self.jump.port} {pub_key(self.jump)}"])])
        d.wait_up("both", timeout=UP_TIMEOUT)
        assert_echo(port)
        base = d.globals["control_socket"] + ".d/both"
        with open(base + ".ssh_config") as f:
            self.assertIn(f'\tUserKnownHostsFile "{base}.known_hosts"\n', f.read())

    def test_wrong_jump_host_key_is_host_key_on_the_jump_host(self):
        jump = f"root@127.0.0.1:{self.jump.port}"
        d = self.tunneld([self.tunnel("wj", free_port(), jump_host=jump, host_keys=[pub_key(self.dest)],
                                      jump_host_keys=[f"127.0.0.1:{self.jump.port} {self.other_key()}"])])
        d.wait_log(rf"^<\d+>wj: ssh exited with status 255 after .*\(host-key on the jump host {jump}: ",
                   timeout=UP_TIMEOUT)

    def test_keyscan_direct(self):
        """The fingerprint is the server's own (ssh-keygen -lf of its host key); the pasted
        line brings the tunnel up. Nothing authenticated to the server meanwhile."""
        port = free_port()
        offset = len(self.dest.log())
        r = self.keyscan([self.tunnel("ks", port)], "ks")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(tunneltest.key_fingerprint(self.dest.host_key + ".pub"), r.stdout)
        self.assertIn("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub", r.stdout)
        self.assertNotIn("Accepted publickey", self.dest.log()[offset:], "keyscan never logs in")
        keys = paste_lines(r.stdout, "host_keys")
        self.assertEqual(keys, [pub_key(self.dest)])
        d = self.tunneld([self.tunnel("ks", port, host_keys=keys)])
        d.wait_up("ks", timeout=UP_TIMEOUT)
        assert_echo(port)

    def test_keyscan_through_a_jump_host(self):
        """First the jump host's key only: the destination is not fetched through a jump host
        whose key nobody checked. Pasted, the second scan fetches the destination's through
        it; both pasted, the tunnel comes up."""
        port = free_port()
        jump = f"root@127.0.0.1:{self.jump.port}"
        t = self.tunnel("ksj", port, jump_host=jump)
        r = self.keyscan([t], "ksj")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(tunneltest.key_fingerprint(self.jump.host_key + ".pub"), r.stdout)
        self.assertNotIn(tunneltest.key_fingerprint(self.dest.host_key + ".pub"), r.stdout)
        self.assertIn("jump host's own key is not trusted yet", r.stderr)
        jkeys = paste_lines(r.stdout, "jump_host_keys")
        self.assertEqual(jkeys, [f"127.0.0.1:{self.jump.port} {pub_key(self.jump)}"])
        self.assertIsNone(paste_lines(r.stdout, "host_keys"))

        t["jump_host_keys"] = jkeys
        r = self.keyscan([t], "ksj")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(tunneltest.key_fingerprint(self.dest.host_key + ".pub"), r.stdout)
        t["host_keys"] = paste_lines(r.stdout, "host_keys")
        self.assertEqual(t["host_keys"], [pub_key(self.dest)])
        d = self.tunneld([t])
        d.wait_up("ksj", timeout=UP_TIMEOUT)
        assert_echo(port)

    def test_check_refuses_bad_keys_with_file_and_line(self):
        path = os.path.join(tunneltest.temp_dir(self), "bad.conf")
        blob = pub_key(self.dest).split()[1]
        text = tunneltest.write_config(path, {"control_socket": "none"}, None, [
            {"name": "bad", "host": "h", "host_keys": [f"ssh-rsa {blob}"]},
            {"name": "bad2", "host": "h", "host_keys": [pub_key(self.dest)],
             "ssh_options": ["StrictHostKeyChecking=no"]}])
        r = tunneltest.run_tunneld("-t", "-c", path)
        self.assertEqual(r.returncode, 1)
        line = tunneltest.line_of(text, f"ssh-rsa {blob}")
        self.assertIn(f"{path}:{line}: bad.host_keys: \"ssh-rsa {blob}\" has a key blob of type ssh-ed25519, "
                      "not ssh-rsa", r.stderr)
        self.assertRegex(r.stderr, rf"{re.escape(path)}:\d+: bad2.ssh_options: \"StrictHostKeyChecking=no\" "
                                   "contradicts host_keys")


if __name__ == "__main__":
    tunneltest.main()
