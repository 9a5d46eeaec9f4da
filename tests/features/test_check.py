#!/usr/bin/env python3
"""A stronger `tunneld -t`: two tunnels listening on the same local port (or the same remote
port on the same server) are reported; so is an after cycle, and an identity file that does
not exist or that others may read; `-t -v` prints each tunnel's exact ssh command line, the
very argv tunneld then runs. ssh itself judges ssh's options (ssh -G, no network): a typo in
ssh_options, a broken ssh_config_file, options that defeat supervision are FILE:LINE
errors; an alias of an ssh_config_file gets its real forwards (status shows them, UP waits
for them, clashes count them)."""

import os
import re
import shlex

import tunneltest
from tunneltest import assert_echo, free_port, status, wait_state, wait_until
from featuretest import FeatureTest, group_lines


class CheckTest(FeatureTest):
    def check(self, tunnels, *args, defaults=None, globals=None):
        """Write tunnels (host 127.0.0.1 unless given) to a file and run tunneld -t ARGS on
        it; returns (CompletedProcess, path, text)."""
        path = os.path.join(tunneltest.temp_dir(self), "tunneld.conf")
        text = tunneltest.write_config(path, {"ssh": tunneltest.SSH, "control_socket": "none", **(globals or {})},
                                       self.sshd.tunnel_defaults() if defaults is None else defaults,
                                       [{"host": "127.0.0.1", **t} for t in tunnels])
        return tunneltest.run_tunneld("-t", *args, "-c", path), path, text

    def assert_errors(self, r, path, text, expected):
        """expected: [(tunnel, setting, message regex)]: exactly these errors, each at a line
        of that tunnel's group; exit 1 and no "configuration OK"."""
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertNotIn("configuration OK", r.stdout)
        lines = [l for l in r.stderr.splitlines() if not l.startswith("tunneld: ")]
        self.assertEqual(len(lines), len(expected), r.stderr)
        for (name, setting, message), line in zip(expected, lines):
            m = re.fullmatch(rf"{re.escape(path)}:(\d+): {name}\.{setting}: {message}", line)
            self.assertIsNotNone(m, f"{line!r} !~ {name}.{setting}: {message}")
            lo, hi = group_lines(text, name)
            self.assertTrue(lo <= int(m.group(1)) <= hi, f"{line}: not a line of {name} ({lo}-{hi})")
        self.assertRegex(r.stderr, rf"(?m)^tunneld: {re.escape(path)}: {len(expected)} errors?, configuration invalid$")

    def test_same_local_port_twice(self):
        """-L P and -L 127.0.0.1:P (both loopback), -D P after -L on all addresses: reported
        on the second, naming the first and its FILE:LINE. Other bind addresses, other ports
        and disabled tunnels are fine."""
        p, q = free_port(), free_port()
        r, path, text = self.check([
            {"name": "a", "local_forwards": [f"{p}:127.0.0.1:22"]},
            {"name": "b", "local_forwards": [f"127.0.0.1:{p}:127.0.0.1:22"]},
            {"name": "c", "local_forwards": [f"*:{q}:127.0.0.1:22"]},
            {"name": "d", "dynamic_forwards": [f"127.0.0.1:{q}"]},
            {"name": "e", "local_forwards": [f"127.0.0.2:{p}:127.0.0.1:22"], "dynamic_forwards": [str(free_port())]},
            {"name": "f", "enabled": False, "local_forwards": [f"{p}:127.0.0.1:22"]},
        ])
        a_line, c_line = group_lines(text, "a")[0], group_lines(text, "c")[0]
        self.assert_errors(r, path, text, [
            ("b", "local_forwards", rf'"127\.0\.0\.1:{p}:127\.0\.0\.1:22" listens on local port {p}, as "{p}:127\.0\.0\.1:22" '
                                    rf"of tunnel a \({re.escape(path)}:{a_line}\) does"),
            ("d", "dynamic_forwards", rf'"127\.0\.0\.1:{q}" listens on local port {q}, as "\*:{q}:127\.0\.0\.1:22" of tunnel c '
                                      rf"\({re.escape(path)}:{c_line}\) does"),
        ])

    def test_same_remote_port_on_the_same_server(self):
        """-R P twice to the same host and ssh port is reported; the same P on another host,
        or on another sshd (port) of the same host, is not."""
        p = free_port()
        r, path, text = self.check([
            {"name": "a", "remote_forwards": [f"{p}:127.0.0.1:80"]},
            {"name": "b", "remote_forwards": [f"localhost:{p}:127.0.0.1:8080"]},
            {"name": "c", "host": "other.example", "remote_forwards": [f"{p}:127.0.0.1:80"]},
            {"name": "d", "port": 2222, "remote_forwards": [f"{p}:127.0.0.1:80"]},
            {"name": "e", "local_forwards": [f"{p}:127.0.0.1:22"]},  # a local port: another namespace
        ])
        self.assert_errors(r, path, text, [
            ("b", "remote_forwards", rf'"localhost:{p}:127\.0\.0\.1:8080" listens on 127\.0\.0\.1 port {p}, as '
                                     rf'"{p}:127\.0\.0\.1:80" of tunnel a \({re.escape(path)}:{group_lines(text, "a")[0]}\) does'),
        ])

    def test_after_cycle(self):
        """An after cycle through three tunnels, next to a good chain, is reported."""
        r, path, text = self.check([
            {"name": "ok1"}, {"name": "ok2", "after": ["ok1"]},
            {"name": "x", "after": ["z"]}, {"name": "y", "after": ["x", "ok2"]}, {"name": "z", "after": ["y"]},
        ])
        self.assertEqual(r.returncode, 1, r.stdout)
        m = re.search(rf"(?m)^{re.escape(path)}:(\d+): (\w+)\.after: is part of a cycle of tunnels waiting for each "
                      r"other: (\w+) -> (\w+) -> (\w+) -> (\w+)$", r.stderr)
        self.assertIsNotNone(m, r.stderr)
        self.assertIn(m.group(2), ("x", "y", "z"))
        # the whole cycle, in waiting order, from the named tunnel back to it
        self.assertEqual(m.group(3), m.group(2))
        self.assertEqual(m.group(6), m.group(2))
        self.assertEqual({m.group(3), m.group(4), m.group(5)}, {"x", "y", "z"})
        lo, hi = group_lines(text, m.group(2))
        self.assertTrue(lo <= int(m.group(1)) <= hi, r.stderr)
        self.assertNotRegex(r.stderr, r"ok\d\.after")

    def test_identity_file_missing_or_readable_by_others(self):
        """A key that does not exist, or is mode 0644: reported (a disabled tunnel's is not
        checked); tunneld will not start on such a file either."""
        tmp = tunneltest.temp_dir(self)
        loose = os.path.join(tmp, "loose_key")
        with open(self.sshd.client_key) as f, open(loose, "w") as g:
            g.write(f.read())
        os.chmod(loose, 0o644)
        missing = os.path.join(tmp, "no_such_key")
        tunnels = [{"name": "good"}, {"name": "gone", "identity_file": missing},
                   {"name": "loose", "identity_file": loose},
                   {"name": "parked", "enabled": False, "identity_file": missing}]
        r, path, text = self.check(tunnels)
        self.assert_errors(r, path, text, [
            ("gone", "identity_file", rf"{re.escape(missing)}: No such file or directory"),
            ("loose", "identity_file", rf"{re.escape(loose)}: readable by group or others \(mode 0644\): "
                                       r"ssh refuses such keys; chmod 600 it"),
        ])
        r2 = tunneltest.run_tunneld("-c", path)
        self.assertEqual(r2.returncode, 1, r2.stderr)
        self.assertRegex(r2.stderr, rf"(?m)^<3>tunneld: {re.escape(path)}: 2 errors, not starting$")
        os.chmod(loose, 0o600)
        r3, path3, text3 = self.check([t for t in tunnels if t["name"] != "gone"])
        self.assertEqual(r3.returncode, 0, r3.stderr)
        self.assertEqual(r3.stdout.strip(), "configuration OK: 3 tunnels (2 enabled)")

    def test_verbose_prints_the_exact_ssh_command_line(self):
        """-t -v: one line per tunnel, "NAME: <shell-quoted argv>", in the documented order
        (tunneld's own options, then port, user, key, jump host, extra options, "--", host),
        then "NAME: opened over ssh's control socket: -L … -R … -D …". Started for real, the
        ssh process's argv is that same list, word for word (an extra option with a space
        and quotes included; the control socket's directory is the daemon's)."""
        lport, rport, dport = free_port(), free_port(), free_port()
        sshd = self.sshd.tunnel_defaults()
        opts = sshd["ssh_options"] + ["SetEnv=GREETING=\"hello world's\""]
        tunnel = {"name": "full", "local_forwards": [self.echo.forward(lport)],
                  "remote_forwards": [self.echo.forward(rport)], "dynamic_forwards": [f"127.0.0.1:{dport}"],
                  "ssh_options": opts, "server_alive_interval": 7, "connect_timeout": 9}
        jump = {"name": "jumpy", "jump_host": "hop@127.0.0.1:2222", "enabled": False}
        r, path, _ = self.check([tunnel, jump], "-v")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.splitlines()
        self.assertEqual(out[0], "configuration OK: 2 tunnels (1 enabled)")
        self.assertEqual(out[2], f"full: opened over ssh's control socket: -L {self.echo.forward(lport)} "
                                 f"-R {self.echo.forward(rport)} -D 127.0.0.1:{dport}")
        # the jump tunnel's line is followed by the ssh_config tunneld writes for its hops
        self.assertTrue(out[4].startswith("jumpy: ") and out[4].endswith(".ssh_config, written at every start:"), out[4])
        self.assertIn("Host 127.0.0.1", out)
        self.assertIn(f"\tIdentityFile \"{self.sshd.client_key}\"", out)
        for o in self.sshd.tunnel_defaults()["ssh_options"]:
            self.assertIn(f"\t{o}", out)
        expected = [tunneltest.SSH, "-N", "-T", "-F", "/dev/null",
                    "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=no", "-o", "ServerAliveInterval=7",
                    "-o", "ServerAliveCountMax=3", "-o", "ConnectTimeout=9", "-o", "ControlMaster=yes",
                    "-o", "ControlPath=DIR/full.mux0", "-o", "ControlPersist=no", "-o", "ClearAllForwardings=yes",
                    "-o", "LogLevel=VERBOSE", "-o", "LogVerbose=*:kex_exchange_identification():*,"
                    "*:ssh_proxy_connect():*,*:ssh_packet_read_poll_seqnr():*",
                    "-p", str(self.sshd.port), "-l", "root", "-i", self.sshd.client_key]
        for o in opts:
            expected += ["-o", o]
        expected += ["--", "127.0.0.1"]

        def control_dir(argv):
            return [re.sub(r"^ControlPath=.*/(\S+\.mux0)$", r"ControlPath=DIR/\1", a) for a in argv]
        self.assertTrue(out[1].startswith("full: "), out[1])
        self.assertEqual(control_dir(shlex.split(out[1][len("full: "):])), expected)
        self.assertTrue(out[3].startswith("jumpy (disabled): "), out[3])
        jargv = shlex.split(out[3].split(": ", 1)[1])
        self.assertEqual(jargv[jargv.index("-J") + 1], "hop@127.0.0.1:2222")
        self.assertLess(jargv.index("-i"), jargv.index("-J"))
        self.assertEqual(jargv[-2:], ["--", "127.0.0.1"])
        self.assertEqual(jargv[jargv.index("-F") + 1], out[4].split(": ", 1)[1].split(", ")[0])

        # The same argv, run for real.
        d = self.tunneld([tunnel], server_alive_interval=7, connect_timeout=9)
        _, pid = d.wait_up("full")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0")[:-1]]
        self.assertEqual(control_dir(argv), expected)
        assert_echo(lport)
        self.assertEqual(status(d)["full"]["state"], "up")

    def test_check_as_the_services_user(self):
        """As root, -t checks the files as the service's user reads them: a key only root
        can read passes as root (with a note saying so) and fails --check-as USER."""
        import pwd
        import subprocess
        user = f"tchk{os.getpid() % 100000}"
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True,
                       capture_output=True, timeout=30)
        self.addCleanup(subprocess.run, ["userdel", user], capture_output=True, timeout=30)
        tmp = tunneltest.temp_dir(self)
        os.chmod(tmp, 0o755)
        key = os.path.join(tmp, "key")
        with open(self.sshd.client_key, "rb") as src, open(key, "wb") as dst:
            dst.write(src.read())
        os.chmod(key, 0o600)    # root's
        path = os.path.join(tmp, "tunneld.conf")
        tunneltest.write_config(path, {"ssh": tunneltest.SSH, "control_socket": "none"},
                                {**self.sshd.tunnel_defaults(), "identity_file": key},
                                [{"name": "k", "host": "127.0.0.1"}])
        os.chmod(path, 0o644)
        r = tunneltest.run_tunneld("-t", "-c", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("checked as root", r.stderr)
        r = tunneltest.run_tunneld("-t", "--check-as", user, "-c", path)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"checking as {user} (uid {pwd.getpwnam(user).pw_uid})", r.stderr)
        self.assertRegex(r.stderr, rf"{re.escape(path)}:\d+: k\.identity_file: {re.escape(key)}: Permission denied "
                                   rf"\(tunneld runs as uid {pwd.getpwnam(user).pw_uid}\)")
        os.chown(key, pwd.getpwnam(user).pw_uid, -1)
        r = tunneltest.run_tunneld("-t", "--check-as", user, "-c", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    # ---- ssh judges ssh's options ----

    def test_ssh_judges_ssh_options(self):
        """A typo in ssh_options is ssh's "Bad configuration option", at the tunnel's line;
        options tunneld sets itself (ClearAllForwardings: it opens every forward itself) are
        refused with why. Many tunnels sharing one bad set (from defaults) are reported once,
        with their count."""
        r, path, text = self.check([
            {"name": "typo", "ssh_options": ["ServerAliveIntervall=10"]},
            {"name": "fine", "ssh_options": ["Compression=yes"]},
        ], defaults={})
        self.assert_errors(r, path, text, [
            ("typo", "ssh_options", r"ssh refuses it: command-line: line 0: Bad configuration option: serveraliveintervall"),
        ])
        r, path, text = self.check([
            {"name": "clear", "ssh_options": ["ClearAllForwardings=yes"], "local_forwards": [f"{free_port()}:x:1"]},
        ], defaults={})
        self.assert_errors(r, path, text, [
            ("clear", "ssh_options", r'"ClearAllForwardings=yes" is set by tunneld: it opens every forward itself .*'),
        ])
        r, path, text = self.check([{"name": "a"}, {"name": "b"}, {"name": "c"}],
                                   defaults={"ssh_options": ["ServerAliveIntervall=10"]})
        self.assert_errors(r, path, text, [
            ("a", "ssh_options", r"ssh refuses it: .*Bad configuration option: serveraliveintervall "
                                 r"\(and 2 other tunnels with these ssh_options\)"),
        ])

    def test_broken_ssh_config_file(self):
        """An ssh_config_file whose Include has bad permissions: ssh's "Bad owner or
        permissions", on the ssh_config_file setting."""
        tmp = tunneltest.temp_dir(self)
        inc = os.path.join(tmp, "included.conf")
        with open(inc, "w") as f:
            f.write("Compression yes\n")
        os.chmod(inc, 0o666)
        conf = os.path.join(tmp, "ssh_config")
        with open(conf, "w") as f:
            f.write(f"Include {inc}\n")
        os.chmod(conf, 0o600)
        r, path, text = self.check([{"name": "inc", "ssh_config_file": conf}],
                                   defaults={k: v for k, v in self.sshd.tunnel_defaults().items() if k != "ssh_config_file"})
        self.assert_errors(r, path, text, [
            ("inc", "ssh_config_file", rf"ssh refuses it: Bad owner or permissions on {re.escape(inc)}.*"),
        ])

    def test_alias_tunnel_forwards_come_from_ssh(self):
        """An alias of an ssh_config_file (the autossh article's ~/.ssh/config setup):
        -t checks its LocalForward against the other tunnels'; running, status shows its
        forwards, and it is up only once the server accepted its RemoteForward too."""
        lport, rport = free_port(), free_port()
        tmp = tunneltest.temp_dir(self)
        conf = os.path.join(tmp, "ssh_config")
        with open(conf, "w") as f:
            f.write(f"Host aliasdb\n  HostName 127.0.0.1\n  Port {self.sshd.port}\n  User root\n"
                    f"  IdentityFile {self.sshd.client_key}\n  UserKnownHostsFile {self.sshd.known_hosts}\n"
                    f"  LocalForward {lport} 127.0.0.1:{self.echo.port}\n"
                    f"  RemoteForward 127.0.0.1:{rport} 127.0.0.1:{self.echo.port}\n")
        os.chmod(conf, 0o600)
        alias = {"name": "al", "host": "aliasdb", "ssh_config_file": conf}
        r, path, text = self.check([alias, {"name": "other", "local_forwards": [f"127.0.0.1:{lport}:x:1"]}], defaults={})
        self.assert_errors(r, path, text, [
            ("other", "local_forwards", rf'"127\.0\.0\.1:{lport}:x:1" listens on local port {lport}, as '
                                        rf'"{lport}:127\.0\.0\.1:{self.echo.port}" of tunnel al .* does'),
        ])
        d = tunneltest.use(self, tunneltest.Tunneld([alias], {"gatetime": 1, "restart_delay": 0.2},
                                                    globals={"ssh": tunneltest.SSH}, args=["-d"]))
        d.wait_log(r"^<\d+>al: up: ssh \(pid \d+\) authenticated and every remote forward accepted", timeout=20)
        t = status(d)["al"]
        self.assertEqual([f["state"] for f in t["forward_states"]], ["open", "open"], t)
        self.assertEqual(t["forwards"]["local"], [f"{lport}:127.0.0.1:{self.echo.port}"])
        self.assertEqual(t["forwards"]["remote"], [f"127.0.0.1:{rport}:127.0.0.1:{self.echo.port}"])
        assert_echo(lport)
        assert_echo(rport)

    def test_alias_forwards_are_its_own_then_its_files(self):
        """A tunnel's own forwards on an alias: ssh -G is asked about the alias once, without
        them, and the tunnel has its own first, then those of the file it does not have
        already (one written the same as the file's is one forward, as ssh makes it); all
        carry bytes. A malformed own forward is tunneld's FILE:LINE error, without ssh."""
        p1, p2, p3 = free_port(), free_port(), free_port()
        tmp = tunneltest.temp_dir(self)
        conf = os.path.join(tmp, "ssh_config")
        with open(conf, "w") as f:
            f.write(f"Host aliasdb\n  HostName 127.0.0.1\n  Port {self.sshd.port}\n  User root\n"
                    f"  IdentityFile {self.sshd.client_key}\n  UserKnownHostsFile {self.sshd.known_hosts}\n"
                    f"  LocalForward 127.0.0.1:{p1} 127.0.0.1:{self.echo.port}\n"
                    f"  LocalForward 127.0.0.1:{p2} 127.0.0.1:{self.echo.port}\n")
        os.chmod(conf, 0o600)
        own = [f"127.0.0.1:{p2}:127.0.0.1:{self.echo.port}", f"127.0.0.1:{p3}:127.0.0.1:{self.echo.port}"]
        alias = {"name": "al", "host": "aliasdb", "ssh_config_file": conf, "local_forwards": own}
        r, path, text = self.check([alias], defaults={})
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r, path, text = self.check([{**alias, "local_forwards": [own[0], f"{p3}:db"]}], defaults={})
        self.assert_errors(r, path, text, [("al", "local_forwards", rf'"{p3}:db" must be \[bind_address:\]port:host:hostport.*')])
        d = tunneltest.use(self, tunneltest.Tunneld([alias], {"gatetime": 1, "restart_delay": 0.2},
                                                    globals={"ssh": tunneltest.SSH}))
        wait_until(lambda: tunneltest.loaded(d), 20, what="tunneld to load its configuration")
        t = wait_state(d, "al", "up")
        self.assertEqual(t["forwards"]["local"], [*own, f"127.0.0.1:{p1}:127.0.0.1:{self.echo.port}"])
        for port in (p1, p2, p3):
            assert_echo(port)

    def test_reload_with_a_typo_is_rejected(self):
        """A reload whose ssh_options ssh refuses is rejected like any invalid file: the
        running tunnel keeps its ssh."""
        d = self.tunneld([{"name": "t", "local_forwards": [self.echo.forward(free_port())]}])
        _, pid = d.wait_up("t")
        d.rewrite(tunnels=[{**d.tunnels[0], "ssh_options": self.sshd.tunnel_defaults()["ssh_options"] +
                            ["ServerAliveIntervall=10"]}])
        r = tunneltest.run_tunneld("-t", "-c", d.config_path)
        self.assertEqual(r.returncode, 1)
        reply = tunneltest.tunnelctl_json(d, "reload")
        self.assertIs(reply["ok"], False, reply)
        self.assertTrue(any("Bad configuration option: serveraliveintervall" in e for e in reply["errors"]), reply)
        self.assertEqual(status(d)["t"]["pid"], pid)


if __name__ == "__main__":
    tunneltest.main()
