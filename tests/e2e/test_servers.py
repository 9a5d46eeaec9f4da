#!/usr/bin/env python3
"""The server zoo, end to end: the tunnels that matter against each kind of server users
have (Debian 12's OpenSSH 9.2, Debian 13's OpenSSH 10.0, Dropbear 2022.83), each with two
clients as tunneld's `ssh`: Debian 12's ssh 9.2 and Debian 13's ssh 10.0, on tunneld's one
engine (ssh runs as a master of tunneld's and every forward is opened over its control
socket).

One scenario table (SCENARIOS), one harness (ServerZoo.run_scenario): a row is the
tunnels of one tunneld, with placeholders for ports and keys, and what must hold: up,
with bytes through each forward (checks), or a failed start of a failure class. One
server of each kind per class, reused by every row; it is also its own jump host
(reached as 127.0.0.1, the destination as localhost). Every ssh tunneld runs, a jump
host's hop included, must be the client's own binary, and a tunnel that came up must
not have logged a line of ssh's as a failure. What differs between the servers is in
tunneld(8), COMPATIBILITY.

OpenSSH 10 runs from a Debian 13 root made once (tunneltest.zoo); its tests are skipped,
saying why, only when no Debian archive is reachable to make it.
"""

import os
import shutil
import subprocess
import tempfile
import time
import unittest

import tunneltest
from tunneltest import (DropbearServer, EchoServer, OpenSSH10Server, SSHServer, Tunneld, UP_TIMEOUT, echo_roundtrip,
                        free_port, socks_echo, ssh_children, wait_all)

FAIL_TIMEOUT = 20

# name, the tunnels ({L} {R} {D}: free ports; {echo}: the echo server's; {port}: the
# server's; {other_key}: a client key it does not accept; {other_host_key}: a host key it
# does not have), and then either the checks of a tunnel that is up or the failure class
# of a start that fails.
SCENARIOS = [
    {"name": "local",
     "tunnels": [{"local_forwards": ["127.0.0.1:{L}:127.0.0.1:{echo}"]}],
     "checks": [("echo", "{L}")]},
    {"name": "remote",          # a fixed port and port 0: the server chooses, status shows it
     "tunnels": [{"remote_forwards": ["127.0.0.1:{R}:127.0.0.1:{echo}", "0:127.0.0.1:{echo}"]}],
     "checks": [("echo", "{R}"), ("echo_allocated", "0:127.0.0.1:{echo}")]},
    {"name": "dynamic",
     "tunnels": [{"dynamic_forwards": ["127.0.0.1:{D}"]}],
     "checks": [("socks", "{D}")]},
    {"name": "keepalive",       # ssh asks every second; no answer for 2 s would end it
     "tunnels": [{"server_alive_interval": 1, "server_alive_count_max": 2,
                  "local_forwards": ["127.0.0.1:{L}:127.0.0.1:{echo}"]}],
     "checks": [("stays_up", "4"), ("echo", "{L}")]},
    {"name": "jump_host",       # the server is its own jump host
     "tunnels": [{"host": "localhost", "jump_host": "root@127.0.0.1:{port}",
                  "local_forwards": ["127.0.0.1:{L}:127.0.0.1:{echo}"]}],
     "checks": [("echo", "{L}"), ("hop", "")]},
    {"name": "shared_connection",
     "tunnels": [{"name": "zoo", "share_connection": True, "local_forwards": ["127.0.0.1:{L}:127.0.0.1:{echo}"]},
                 {"name": "zoo2", "share_connection": True, "remote_forwards": ["127.0.0.1:{R}:127.0.0.1:{echo}"]}],
     "checks": [("echo", "{L}"), ("echo", "{R}"), ("one_ssh", "")]},
    {"name": "wrong_key",
     "tunnels": [{"identity_file": "{other_key}", "local_forwards": ["127.0.0.1:{L}:127.0.0.1:{echo}"]}],
     "failure": "auth"},
    {"name": "wrong_host_key",  # pinned: tunneld's own known_hosts file, nothing else
     "tunnels": [{"host_keys": ["{other_host_key}"], "ssh_options": [],
                  "local_forwards": ["127.0.0.1:{L}:127.0.0.1:{echo}"]}],
     "failure": "host-key"},
]

# tunneld's `ssh`: Debian 12's, and Debian 13's OpenSSH 10.0 (a wrapper that ends in exec)
CLIENTS = {
    "ssh92": lambda: tunneltest.SSH,
    "ssh10": tunneltest.openssh10_client,
}


def fill(value, ctx):
    """value with every {placeholder} in its strings replaced from ctx."""
    if isinstance(value, str):
        return value.format(**ctx)
    if isinstance(value, list):
        return [fill(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, ctx) for k, v in value.items()}
    return value


def same_file(a, b):
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class ServerZoo:
    """The harness; a subclass says which server: server_class."""
    server_class = None

    @classmethod
    def setUpClass(cls):
        cls.skip_reason = None
        try:
            cls.server = tunneltest.use(cls, cls.server_class())
        except unittest.SkipTest as e:      # OpenSSH 10: no Debian archive reachable to make its root
            cls.skip_reason = str(e)
            return
        cls.echo = tunneltest.use(cls, EchoServer())
        cls.dir = tempfile.mkdtemp(prefix="tunneltest-zoo-")
        cls.addClassCleanup(shutil.rmtree, cls.dir, True)
        cls.other_key = os.path.join(cls.dir, "other_client")
        other_host = os.path.join(cls.dir, "other_host")
        for path in (cls.other_key, other_host):
            subprocess.run([tunneltest.SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", path],
                           check=True, stdin=subprocess.DEVNULL, timeout=30)
        with open(other_host + ".pub") as f:
            cls.other_host_key = " ".join(f.read().split()[:2])
        # the server under both names: as the jump host (127.0.0.1) and the destination (localhost)
        cls.known_hosts = os.path.join(cls.dir, "known_hosts")
        with open(cls.known_hosts, "w") as f:
            f.write(cls.server.known_hosts_line("127.0.0.1") + cls.server.known_hosts_line("localhost"))

    def setUp(self):
        if self.skip_reason:
            self.skipTest(self.skip_reason)

    def run_scenario(self, scenario, client):
        ssh = CLIENTS[client]()         # SkipTest for ssh10 without its root
        ctx = {"L": free_port(), "R": free_port(), "D": free_port(), "echo": self.echo.port,
               "port": self.server.port, "other_key": self.other_key, "other_host_key": self.other_host_key}
        defaults = {**self.server.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2,
                    "restart_delay_max": 1, "connect_timeout": 10,
                    "ssh_options": [f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null",
                                    "StrictHostKeyChecking=yes"]}
        tunnels = [{"name": "zoo", "host": "127.0.0.1", **t} for t in fill(scenario["tunnels"], ctx)]
        offset = len(self.server.log())
        d = tunneltest.use(self, Tunneld(tunnels, defaults, globals={"ssh": ssh}))
        names = [t["name"] for t in tunnels]
        if "failure" in scenario:
            self.assert_fails(d, names[0], scenario["failure"])
            return
        wait_all(d, names, timeout=UP_TIMEOUT)
        for check, arg in scenario["checks"]:
            getattr(self, "check_" + check)(d, fill(arg, ctx), ssh=ssh, offset=offset)
        self.assert_clean_run(d, names, ssh)

    # -- what a run must show --

    def assert_fails(self, d, name, failure):
        d.wait_log(rf"^<\d+>{name}: ssh exited with status 255 after .*, never up \({failure}: ",
                   timeout=FAIL_TIMEOUT)
        t = tunneltest.tunnel_status(d, name)
        self.assertEqual(t["last_exit"]["failure"], failure, t)
        self.assertNotEqual(t["state"], "up")

    def assert_clean_run(self, d, names, ssh):
        """Up on the first start, no failure counted, none of ssh's lines logged as a
        failure (an OpenSSH 10 warning is not one), and every ssh (master and hops) is the
        client under test."""
        s = tunneltest.status(d)
        for n in names:
            self.assertEqual((s[n]["starts"], s[n]["failures"]), (1, {}), s[n])
        warned = d.findall(rf"^<[0-4]>(?:{'|'.join(names)}|~zoo): ssh: .*$")
        self.assertEqual(warned, [], "ssh's lines logged as failures")
        pids = {s[n]["pid"] for n in names}
        for pid in pids:
            ssh_pids = [pid] + [p for p in tunneltest.descendants_of(pid) if tunneltest._comm(p) == "ssh"]
            for p in ssh_pids:
                self.assertTrue(same_file(f"/proc/{p}/exe", self.client_binary(ssh)),
                                f"ssh pid {p} runs {os.readlink(f'/proc/{p}/exe')}, not the client under test")

    def client_binary(self, ssh):
        if ssh == tunneltest.SSH:
            return os.path.realpath(ssh)
        return os.path.join(tunneltest.openssh10().root, "usr/bin/ssh")

    # -- the checks a scenario names --
    def check_echo(self, d, port, **_):
        self.assertTrue(echo_roundtrip(int(port)), f"an echo through port {port}")

    def check_echo_allocated(self, d, forward, **_):
        t = tunneltest.tunnel_status(d, "zoo")
        ports = [f["allocated_port"] for f in t["forward_states"] if f["forward"] == forward]
        self.assertEqual(len(ports), 1, t["forward_states"])
        self.assertIsInstance(ports[0], int, "the port the server chose, in status")
        self.assertTrue(echo_roundtrip(ports[0]), f"an echo through the allocated port {ports[0]}")

    def check_stays_up(self, d, seconds, **_):
        """The same ssh, still up, seconds later: the server answered its keepalives."""
        pid = tunneltest.tunnel_status(d, "zoo")["pid"]
        time.sleep(float(seconds))
        t = tunneltest.tunnel_status(d, "zoo")
        self.assertEqual((t["state"], t["pid"]), ("up", pid), t)

    def check_socks(self, d, port, **_):
        self.assertTrue(socks_echo(int(port), self.echo.port), f"a SOCKS echo through port {port}")

    def check_hop(self, d, _, ssh, offset):
        """The hop runs (an ssh under the master: assert_clean_run checks it is the client
        under test), and the server saw two logins with the tunnel's key: the hop's and
        the destination's."""
        pid = tunneltest.tunnel_status(d, "zoo")["pid"]
        hops = [p for p in tunneltest.descendants_of(pid) if tunneltest._comm(p) == "ssh"]
        self.assertEqual(len(hops), 1, "one ssh for the hop")
        log = self.server.log()[offset:]
        logins = log.count("Accepted publickey for root") + log.count("Pubkey auth succeeded for 'root'")
        self.assertEqual(logins, 2, log[-2000:])

    def check_one_ssh(self, d, _, **__):
        self.assertEqual(len(ssh_children(d.pid)), 1, "one ssh for both tunnels")


def _add_tests():
    for scenario in SCENARIOS:
        for client in CLIENTS:
            def test(self, scenario=scenario, client=client):
                self.run_scenario(scenario, client)
            test.__name__ = f"test_{scenario['name']}_{client}"
            test.__doc__ = f"{scenario['name']} with {client} as tunneld's ssh"
            setattr(ServerZoo, test.__name__, test)


_add_tests()


class OpenSSH92(ServerZoo, unittest.TestCase):
    server_class = SSHServer


class OpenSSH10(ServerZoo, unittest.TestCase):
    server_class = OpenSSH10Server


class Dropbear(ServerZoo, unittest.TestCase):
    server_class = DropbearServer


if __name__ == "__main__":
    tunneltest.main()
