#!/usr/bin/env python3
"""tunneld --import-autossh end to end: the three setups of the classic autossh article (a
one-line command, an ~/.ssh/config alias run with -f -T -N, a boot unit with
AUTOSSH_GATETIME=0 and -p) become tunnels that pass tunneld -t and carry bytes through a
real sshd; hostile lines (ssh options that run commands, shell syntax, shell wrappers)
are refused with FILE:LINE and the line, and never reach the output."""

import os
import re
import subprocess
import unittest

import tunneltest
from tunneltest import EchoServer, SSHServer, Tunneld, assert_echo, echo_roundtrip, free_port

SEED_ONE_LINE = ('autossh -M 0 -o "ServerAliveInterval 30" -o "ServerAliveCountMax 3" '
                 '-L 5000:localhost:3306 cytopia@everythingcli.org')
SEED_ALIAS = "autossh -M 0 -f -T -N cli-mysql-tunnel"
SEED_UNIT = """[Unit]
Description=AutoSSH tunnel service everythingcli MySQL on local port 5000
After=network.target

[Service]
Environment="AUTOSSH_GATETIME=0"
ExecStart=/usr/bin/autossh -M 0 -o "ServerAliveInterval 30" -o "ServerAliveCountMax 3" {forward} {dest} -p {port}{extra}

[Install]
WantedBy=multi-user.target
"""


def run_import(*args, stdin=None):
    r = subprocess.run([tunneltest.TUNNELD, "--import-autossh", *args], capture_output=True, text=True,
                       input=stdin, timeout=20)
    tunneltest.check_sanitizer_output(r.stdout + r.stderr, "tunneld --import-autossh")
    return r


class ImportAutosshTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sshd = tunneltest.use(cls, SSHServer())
        cls.echo = tunneltest.use(cls, EchoServer())

    def setUp(self):
        self.dir = tunneltest.temp_dir(self)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def config_with(self, imported):
        """The imported block under a minimal global section of this test's own."""
        globals = {"ssh": tunneltest.SSH, "control_socket": os.path.join(self.dir, "control"),
                   "watch_network": False, "include_dir": "none"}
        head = "".join(f"{k} = {tunneltest.render_value(v)};\n" for k, v in globals.items())
        return head + imported

    def check(self, text):
        """tunneld -t on text: it must pass."""
        path = self.write("check.conf", text)
        r = tunneltest.run_tunneld("-t", "-c", path, timeout=30)
        self.assertEqual(r.returncode, 0, f"{text}\n{r.stdout}{r.stderr}")
        self.assertRegex(r.stdout, r"^configuration OK: \d+ tunnels?")
        return r

    def ssh_test_options(self):
        """What reaches the test sshd as root with its key: as autossh's ssh options."""
        s = self.sshd
        return (f' -i {s.client_key} -o "UserKnownHostsFile {s.known_hosts}" -o GlobalKnownHostsFile=/dev/null '
                f'-o StrictHostKeyChecking=yes -F /dev/null')

    def test_seed_setups_verbatim_pass_check(self):
        """The article's three setups, verbatim, convert and pass tunneld -t: the mappings
        the article's reader would expect, every unmapped option as a note."""
        script = self.write("seed.sh", f"{SEED_ONE_LINE}\n{SEED_ALIAS}\n")
        unit = self.write("autossh-mysql-tunnel.service",
                          SEED_UNIT.format(forward="-NL 5000:localhost:3306", dest="cytopia@everythingcli.org",
                                           port=1022, extra=""))
        r = run_import(script, unit)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        out = r.stdout
        self.assertIn('name = "everythingcli-5000";', out)
        self.assertIn('local_forwards = ( "5000:localhost:3306" );', out)
        self.assertIn("server_alive_interval = 30;", out)
        self.assertIn('name = "cli-mysql-tunnel";\n    host = "cli-mysql-tunnel";\n    gatetime = 0;', out)
        self.assertIn("ssh_config_file", out)
        self.assertIn('name = "mysql-tunnel";\n    enabled = false;', out)  # the same port 5000 as the first
        self.assertIn("port = 1022;", out)
        self.assertRegex(out, r"(?m)^    # -M 0: autossh's monitoring port is not needed")
        self.check(self.config_with(out))

    def test_seed_setups_carry_bytes(self):
        """The three setups aimed at the test sshd (its port and key on the command line; the
        alias's Host block in an ssh config file named as the note says) run under tunneld
        and pass bytes through their forwards."""
        ports = [free_port() for _ in range(3)]
        fwd = [f"{p}:127.0.0.1:{self.echo.port}" for p in ports]
        s = self.sshd
        one_line = (f'autossh -M 0 -o "ServerAliveInterval 30" -o "ServerAliveCountMax 3" -L {fwd[0]} '
                    f"root@127.0.0.1 -p {s.port}{self.ssh_test_options()}")
        ssh_config = self.write("ssh_config", f"""Host cli-mysql-tunnel
    HostName 127.0.0.1
    User root
    Port {s.port}
    IdentityFile {s.client_key}
    LocalForward {ports[1]} 127.0.0.1:{self.echo.port}
    ServerAliveInterval 30
    ServerAliveCountMax 3
    UserKnownHostsFile {s.known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
""")
        os.chmod(ssh_config, 0o600)
        script = self.write("tunnels.sh", f"{one_line}\n{SEED_ALIAS}\n")
        unit = self.write("autossh-mysql-tunnel.service",
                          SEED_UNIT.format(forward=f"-NL {fwd[2]}", dest="root@127.0.0.1", port=s.port,
                                           extra=self.ssh_test_options()))
        r = run_import(script, unit)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        self.assertIn('host = "cli-mysql-tunnel";', out)
        self.assertRegex(out, r'name = "mysql-tunnel";\n    host = "127\.0\.0\.1";\n    user = "root";\n'
                              rf"    port = {s.port};\n")
        self.assertIn("gatetime = 0;", out)
        # what the alias's note says to do: name the file that holds the Host block
        out = out.replace('host = "cli-mysql-tunnel";',
                          f'host = "cli-mysql-tunnel";\n    ssh_config_file = "{ssh_config}";', 1)
        text = self.config_with(out)
        self.check(text)
        names = re.findall(r'(?m)^    name = "([^"]+)";', out)
        self.assertEqual(names, [f"127.0.0.1-{ports[0]}", "cli-mysql-tunnel", "mysql-tunnel"])
        d = tunneltest.use(self, Tunneld(config_text=text))
        for name in names:
            d.wait_up(name)
        for port in ports:
            assert_echo(port, f"through {port}\n".encode())
        self.assertTrue(echo_roundtrip(ports[2], os.urandom(16 * 1024), timeout=10), "16 KiB through the unit's -L")

    def test_standard_input(self):
        """FILE "-" reads standard input, named <stdin> in the output and in errors."""
        r = run_import("-", stdin=SEED_ONE_LINE + "\nautossh -M 0 h.example.org; reboot\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn("# <stdin>:1: autossh -M 0", r.stdout)
        self.assertIn('name = "everythingcli-5000";', r.stdout)
        self.assertRegex(r.stderr, r"(?m)^<stdin>:2: shell syntax ';': refused")
        self.check(self.config_with(r.stdout))

    def test_hostile_lines_are_refused(self):
        """Every hostile line is refused with FILE:LINE, then the line itself; none of it
        reaches the output, which still passes tunneld -t with the harmless tunnel."""
        hostile = [
            "autossh -M 0 -oProxyCommand=nc\\ %h\\ %p -L 5001:a:1 h.example.org",
            "autossh -M 0 -o 'LocalCommand touch /tmp/pwned' h.example.org",
            "autossh -M 0 -L 5002:a:1 h.example.org; touch /tmp/pwned",
            "autossh -M 0 -L $(cat /etc/passwd):a:1 h.example.org",
            "autossh -M 0 -L `id`:a:1 h.example.org",
            "autossh -M 0 -L 5003:a:1 h.example.org | tee /tmp/pwned",
            "autossh -M 0 -L 5004:a:1 h.example.org > /tmp/pwned",
            "bash -c 'autossh -M 0 -L 5005:a:1 h.example.org'",
            "autossh -M 0 -l -oProxyCommand=touch h.example.org",
            "autossh -M 0 -- -oProxyCommand=touch",
        ]
        script = self.write("hostile.sh", "\n".join(["autossh -M 0 -L 5999:a:1 fine.example.org", *hostile]) + "\n")
        unit = self.write("autossh-evil.service",
                          "[Service]\nExecStart=/bin/sh -c 'autossh -M 0 -L 5006:a:1 h.example.org'\n")
        r = run_import(script, unit)
        self.assertEqual(r.returncode, 1)
        for n, line in enumerate(hostile, 2):
            with self.subTest(line=line):
                self.assertRegex(r.stderr, rf"(?m)^{re.escape(script)}:{n}: .*refused|^{re.escape(script)}:{n}: .*must not")
                self.assertIn(f"{script}:{n}:   {line}\n", r.stderr)
        self.assertRegex(r.stderr, rf"(?m)^{re.escape(unit)}:2: runs sh, not autossh: refused")
        self.assertEqual(len(re.findall(r"(?m)^    name = ", r.stdout)), 1, r.stdout)
        self.assertIn('name = "fine-5999";', r.stdout)
        for bad in ("ProxyCommand", "LocalCommand", "pwned", "passwd", "5001", "5006"):
            self.assertNotIn(bad, r.stdout)
        self.check(self.config_with(r.stdout))

    def test_unreadable_file(self):
        """A file that cannot be read: named on stderr, exit 1, the others still converted."""
        good = self.write("good.sh", SEED_ONE_LINE + "\n")
        r = run_import(os.path.join(self.dir, "missing.sh"), good)
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.sh: cannot read: No such file or directory", r.stderr)
        self.assertIn('name = "everythingcli-5000";', r.stdout)


if __name__ == "__main__":
    tunneltest.main()
