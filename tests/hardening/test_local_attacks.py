#!/usr/bin/env python3
"""An unprivileged local user attacks the files and directories a root tunneld trusts
(issue 23, "Files and directories it trusts without checking"), from the outside, against
the real daemon and a real sshd.

Each attack is refused at `tunneld -t` and at start, with FILE:LINE, the setting and the
reason, before anything is executed; or, where the user explicitly allowed it
(--allow-insecure-config), it is harmless: no write follows a symlink or a swapped
directory, no FIFO is ever opened, and root's `tunnelctl status` is answered within 1 s
throughout. keyscan never authenticates, even to a server that lets anyone in with the
"none" method, and its own messages are its own.

The attacker is a real user made for the test (tunneltest.LocalUser: useradd, removed at
the end), acting through setpriv.
"""

import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

import tunneltest
from tunneltest import (EchoServer, LocalUser, SSHServer, StalledServer, TUNNELD, Tunneld, echo_roundtrip, free_port,
                        run_tunneld, status, tunnelctl, wait_until, write_config)

SERVED_WITHIN = 1.0     # root's status, whatever the attacker does
UP_TIMEOUT = 30


class StatusWatch:
    """Root's `tunnelctl status`, asked again and again from a thread while an attack
    runs: the slowest answer, and every one that failed."""

    def __init__(self, d):
        self.d = d
        self.slowest = 0.0
        self.count = 0
        self.failures = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)
        return False

    def _run(self):
        while not self._stop.is_set():
            try:
                r = tunnelctl(self.d, "--json", "status", timeout=10)
                took, ok = r.took, r.returncode in (0, 1) and '"ok":true' in r.stdout.replace(" ", "")
            except subprocess.TimeoutExpired:
                took, ok = 10.0, False
            self.count += 1
            self.slowest = max(self.slowest, took)
            if not ok:
                self.failures.append(took)
            self._stop.wait(0.1)

    def check(self, test, what):
        print(f"# {what}: root's status answered {self.count} times, slowest {self.slowest:.3f} s", flush=True)
        test.assertGreaterEqual(self.count, 3, f"{what}: status was hardly asked (slowest {self.slowest:.2f} s)")
        test.assertEqual(self.failures, [], f"{what}: status failed or timed out")
        test.assertLess(self.slowest, SERVED_WITHIN, f"{what}: root's status took {self.slowest:.2f} s: the loop "
                                                     "was blocked")


class LocalAttacks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sshd = tunneltest.use(cls, SSHServer())
        cls.echo = tunneltest.use(cls, EchoServer())
        cls.attacker = tunneltest.use(cls, LocalUser())

    # ---- helpers ----

    def public(self, mode):
        """A directory of root's with mode (0777: anyone may rename what is in it; 01777:
        sticky, like /tmp)."""
        path = tempfile.mkdtemp(prefix="tunneltest-public-")
        os.chmod(path, mode)
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def attacker_dir(self):
        """A directory the attacker made (in /tmp) and owns."""
        path = f"/tmp/tunneltest-attacker-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.attacker.python("import os, sys; os.mkdir(sys.argv[1], 0o755)", path)
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def safe_dir(self):
        path = tempfile.mkdtemp(prefix="tunneltest-safe-")
        os.chmod(path, 0o755)
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def marker_ssh(self, where=None, owner=None):
        """An "ssh" that leaves a marker (its arguments, a line per run) when anything runs
        it, then runs the real one. Returns (path, marker)."""
        where = where or self.safe_dir()
        marker = os.path.join(self.safe_dir(), "ran")
        os.chmod(os.path.dirname(marker), 0o777)        # the attacker's ssh may leave it too
        path = os.path.join(where, "myssh")
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\necho \"$@\" >>{marker}\nexec {tunneltest.SSH} \"$@\"\n")
        os.chmod(path, 0o755)
        if owner is not None:
            os.chown(path, owner, -1)
        return path, marker

    def conf(self, globals_, tunnels=None, defaults=None, where=None):
        """A configuration file of root's (0644 in a 0755 directory of root's)."""
        path = os.path.join(where or self.safe_dir(), "tunneld.conf")
        g = {"watch_network": False, **globals_}
        g.setdefault("control_socket", os.path.join(self.safe_dir(), "control"))
        text = write_config(path, g, self.sshd.tunnel_defaults() if defaults is None else defaults,
                            tunnels if tunnels is not None else [{"name": "t", "host": "127.0.0.1"}])
        os.chmod(path, 0o644)
        return path, text

    def assert_refused(self, conf, text, setting, needle, *args, line_needle=None):
        """-t and the daemon both refuse conf: exit 1, "FILE:LINE: setting: …needle…" (a
        regex), and nothing was started. Returns -t's stderr."""
        line = tunneltest.line_of(text, line_needle or f"{setting} = ")
        want = rf"^(?:<3>)?{re.escape(conf)}:{line}: {re.escape(setting)}: .*{needle}"   # <3>: the daemon's level
        checked = run_tunneld("-t", *args, "-c", conf)
        self.assertEqual(checked.returncode, 1, f"-t accepted it:\n{checked.stdout}{checked.stderr}")
        self.assertRegex(checked.stderr, re.compile(want, re.M))
        try:
            run = subprocess.run([TUNNELD, *args, "-c", conf], capture_output=True, text=True, timeout=10,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.fail("tunneld started and ran (killed after 10 s)")
        tunneltest.check_sanitizer_output(run.stderr, "tunneld")
        self.assertEqual(run.returncode, 1, f"tunneld started:\n{run.stderr}")
        self.assertRegex(run.stderr, re.compile(want, re.M))
        return checked.stderr

    # ---- the control socket's directory and the runtime directory ----

    def test_control_socket_in_a_directory_others_can_write(self):
        """control_socket in a directory others can write (0777, sticky 01777, group 0775):
        refused at -t and at start, with the line and what to do; no ssh ran (not even
        -t's ssh -G), no socket, no runtime directory."""
        ssh, marker = self.marker_ssh()
        for mode in (0o777, 0o1777, 0o775):
            with self.subTest(mode=oct(mode)):
                sockdir = self.public(mode)
                conf, text = self.conf({"ssh": ssh, "control_socket": os.path.join(sockdir, "control")})
                err = self.assert_refused(conf, text, "control_socket",
                                          rf"{re.escape(sockdir)} is writable by group or others \(mode {mode:04o}\)")
                self.assertIn("--allow-insecure-config", err)
                self.assertFalse(os.path.exists(marker), "ssh ran")
                self.assertEqual(os.listdir(sockdir), [], "tunneld made files in it")

    def test_runtime_directory_swapped_with_fifos_planted(self):
        """With --allow-insecure-config and the socket in a 0777 directory, the attacker
        renames SOCKET.d, puts a symlink to a directory of their own in its place and plants
        FIFOs (and an ssh_config that would run a command) at every name tunneld ever used.
        A restart of the jump-host tunnel writes nothing there, opens no FIFO, runs no
        command: tunneld says the runtime directory was replaced and answers status
        within 1 s throughout."""
        sockdir = self.public(0o777)
        sock = os.path.join(sockdir, "control")
        port = free_port()
        fwd = self.echo.forward(port)
        # the destination as "localhost", the jump host as "127.0.0.1" (ssh refuses a jump
        # host that is its own destination): one sshd, a known_hosts line for each name
        known_hosts = os.path.join(self.safe_dir(), "known_hosts")
        with open(known_hosts, "w") as f:
            f.write(self.sshd.known_hosts_line("localhost") + self.sshd.known_hosts_line("127.0.0.1"))
        defaults = {"user": "root", "port": self.sshd.port, "identity_file": self.sshd.client_key, "gatetime": 1,
                    "restart_delay": 0.2, "restart_delay_max": 2, "connect_timeout": 5,
                    "ssh_options": [f"UserKnownHostsFile={known_hosts}", "GlobalKnownHostsFile=/dev/null",
                                    "StrictHostKeyChecking=yes"]}
        d = tunneltest.use(self, Tunneld(
            [{"name": "t", "host": "localhost", "jump_host": f"root@127.0.0.1:{self.sshd.port}",
              "local_forwards": [fwd]}], defaults,
            globals={"ssh": tunneltest.SSH, "control_socket": sock}, args=["--allow-insecure-config"]))
        d.wait_up("t", timeout=UP_TIMEOUT)
        echo_roundtrip(port)
        runtime = sock + ".d"
        self.assertTrue(os.path.isfile(os.path.join(runtime, "t.ssh_config")))

        own = self.attacker_dir()
        pwned = os.path.join(own, "pwned")
        names = [f"t.ssh_config.tmp.{d.pid}", f"t.known_hosts.tmp.{d.pid}", "t.known_hosts"] + \
                [f"t.ssh_config.tmp.{d.pid + i}" for i in range(1, 20)]
        self.attacker.python(
            "import os, sys\n"
            "rt, own, pwned = sys.argv[1:4]\n"
            "os.rename(rt, rt + '.old')\n"
            "os.symlink(own, rt)\n"
            "for n in sys.argv[4:]: os.mkfifo(os.path.join(own, n), 0o666)\n"
            "with open(os.path.join(own, 't.ssh_config'), 'w') as f:\n"
            "    f.write('Host *\\n  KnownHostsCommand /usr/bin/touch ' + pwned + '\\n')\n",
            runtime, own, pwned, *names)
        old = status(d)["t"]["pid"]
        with StatusWatch(d) as watch:
            r = tunnelctl(d, "restart", "t", timeout=10)
            d.wait_log(r"runtime directory .* was replaced", timeout=10)
            time.sleep(2)
        watch.check(self, "runtime directory swapped")
        self.assertIsNone(d.proc.poll(), "tunneld exited")
        self.assertFalse(os.path.exists(pwned), "the attacker's ssh_config ran a command as root")
        for n in os.listdir(own):
            st = os.lstat(os.path.join(own, n))
            self.assertEqual(st.st_uid, self.attacker.uid, f"tunneld made {n} in the attacker's directory")
        for n in names:
            self.assertTrue(stat.S_ISFIFO(os.lstat(os.path.join(own, n)).st_mode), n)
        # no ssh ever started with the attacker's files: the old one serves on (make-before-break)
        self.assertEqual((r.returncode, r.stdout.strip()),
                         (1, f"t: not restarted: the new ssh failed (exec); ssh pid {old} serves on"), r)
        t = status(d)["t"]
        self.assertEqual((t["state"], t["pid"], t["next_pid"]), ("up", old, None),
                         f"the tunnel runs another ssh than the one it had: {describe_log(d)}")
        self.assertNotRegex(d.log(), r"(?m)make-before-break done")
        echo_roundtrip(port)

    # ---- the ssh program ----

    def test_ssh_program_others_control(self):
        """An ssh program another user owns, or in a directory another user owns, or that
        anyone can write, or found in PATH in another user's directory: refused at -t and
        at start, before it ever ran."""
        # another user's file, in a directory of root's
        ssh, marker = self.marker_ssh(owner=self.attacker.uid)
        conf, text = self.conf({"ssh": ssh})
        self.assert_refused(conf, text, "ssh", rf"{re.escape(ssh)}: owned by uid {self.attacker.uid}, neither root "
                                               r"nor tunneld's user")
        self.assertFalse(os.path.exists(marker), "the attacker's ssh ran")

        # root's file in another user's directory
        own = self.attacker_dir()
        ssh, marker = self.marker_ssh(where=own, owner=0)
        conf, text = self.conf({"ssh": ssh})
        self.assert_refused(conf, text, "ssh", rf"{re.escape(ssh)}: its directory {re.escape(own)} is owned by uid "
                                               rf"{self.attacker.uid}")
        self.assertFalse(os.path.exists(marker), "an ssh in the attacker's directory ran")

        # root's file that anyone can write
        ssh, marker = self.marker_ssh()
        os.chmod(ssh, 0o777)
        conf, text = self.conf({"ssh": ssh})
        self.assert_refused(conf, text, "ssh", rf"{re.escape(ssh)}: writable by group or others \(mode 0777\)")
        self.assertFalse(os.path.exists(marker), "a world-writable ssh ran")

        # "ssh" looked up in PATH, where another user's directory comes first
        own = self.attacker_dir()
        _, marker = self.marker_ssh(where=own, owner=self.attacker.uid)
        os.rename(os.path.join(own, "myssh"), os.path.join(own, "ssh"))
        conf, text = self.conf({"ssh": "ssh"})
        env = dict(os.environ, PATH=f"{own}:/usr/bin:/bin")
        line = tunneltest.line_of(text, "ssh = ")
        r = run_tunneld("-t", "-c", conf, env=env)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, rf"(?m)^{re.escape(conf)}:{line}: ssh: {re.escape(own)}/ssh: .*owned by uid "
                                   rf"{self.attacker.uid}")
        self.assertFalse(os.path.exists(marker), "the ssh found in the attacker's PATH directory ran")

    # ---- metrics_file ----

    def test_metrics_file_in_a_sticky_directory(self):
        """metrics_file in a sticky world-writable directory (like /tmp): the attacker's
        symlink at its name and FIFOs at every temporary name tunneld ever used change
        nothing: the file is written (root's, regular, current), the symlink's target is
        untouched, no FIFO is opened, status is answered within 1 s throughout."""
        mdir = self.public(0o1777)
        path = os.path.join(mdir, "tunneld.prom")
        victim = os.path.join(self.safe_dir(), "precious")
        with open(victim, "w") as f:
            f.write("precious\n")
        self.attacker.python("import os, sys; os.symlink(sys.argv[1], sys.argv[2])", victim, path)
        port = free_port()
        fwd = self.echo.forward(port)
        d = tunneltest.use(self, Tunneld(
            [{"name": "t", "host": "127.0.0.1", "local_forwards": [fwd]}],
            {**self.sshd.tunnel_defaults(), "gatetime": 1, "restart_delay": 0.2},
            globals={"ssh": tunneltest.SSH, "metrics_file": path}))
        d.wait_up("t", timeout=UP_TIMEOUT)
        tmp_names = [f"tunneld.prom.tmp.{d.pid + i}" for i in range(0, 20)]
        self.attacker.python("import os, sys\nfor p in sys.argv[1:]:\n    try: os.mkfifo(p, 0o666)\n"
                             "    except FileExistsError: pass\n",
                             *[os.path.join(mdir, n) for n in tmp_names])
        with StatusWatch(d) as watch:
            for _ in range(3):
                after = len(d.log())
                r = tunnelctl(d, "restart", "t", timeout=10)
                self.assertEqual(r.returncode, 0, tunneltest.describe(r))
                d.wait_log(r"^<\d+>t: make-before-break done: ssh pid \d+ has taken every forward over", timeout=UP_TIMEOUT,
                           after=after)
            time.sleep(2)       # and the writes after it (at most every 200 ms)
        watch.check(self, "FIFOs at the metrics file's temporary names")
        echo_roundtrip(port)
        wait_until(lambda: 'tunneld_tunnel_up{tunnel="t"} 1\n' in tunneltest._read_text(path), 5,
                   what="the metrics file to say t is up")
        st = os.lstat(path)
        self.assertTrue(stat.S_ISREG(st.st_mode), "the metrics file is not a regular file")
        self.assertEqual(st.st_uid, 0)
        with open(victim) as f:
            self.assertEqual(f.read(), "precious\n", "the write followed the attacker's symlink")
        for n in tmp_names:
            self.assertTrue(stat.S_ISFIFO(os.lstat(os.path.join(mdir, n)).st_mode), n)

    def test_metrics_file_in_a_directory_others_can_write(self):
        """metrics_file in a directory others can write that is not sticky: refused at -t
        and at start, saying where to put it instead."""
        mdir = self.public(0o777)
        conf, text = self.conf({"ssh": tunneltest.SSH, "metrics_file": os.path.join(mdir, "tunneld.prom")})
        err = self.assert_refused(conf, text, "metrics_file",
                                  rf"{re.escape(mdir)} is writable by group or others \(mode 0777\)")
        self.assertRegex(err, r"sticky|only root")

    # ---- include_dir ----

    def test_include_dir_others_can_write(self):
        """include_dir writable by others: refused at its line, at -t and at start."""
        inc = self.public(0o777)
        with open(os.path.join(inc, "a.conf"), "w") as f:
            f.write('tunnels = ( { name = "a"; host = "127.0.0.1"; } );\n')
        conf, text = self.conf({"ssh": tunneltest.SSH, "include_dir": inc})
        self.assert_refused(conf, text, "include_dir", rf"{re.escape(inc)}: writable by group or others \(mode 0777\)")

    def test_include_dir_symlinks(self):
        """In a safe include_dir: another user's symlink (to a file of root's elsewhere) is
        refused; so is root's symlink to a file in a directory others can write; root's
        symlink to a file of root's in a safe directory is read (the documented rule)."""
        inc = self.safe_dir()
        elsewhere = self.safe_dir()
        smuggled = os.path.join(elsewhere, "smuggled.conf")
        with open(smuggled, "w") as f:
            f.write('tunnels = ( { name = "smuggled"; host = "127.0.0.1"; } );\n')
        os.chmod(smuggled, 0o644)
        conf, _ = self.conf({"ssh": tunneltest.SSH, "include_dir": inc})

        link = os.path.join(inc, "evil.conf")
        os.symlink(smuggled, link)
        os.lchown(link, self.attacker.uid, self.attacker.gid)
        r = run_tunneld("-t", "-c", conf)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, rf"(?m)^{re.escape(link)}: .*symbolic link.* owned by uid {self.attacker.uid}")
        os.unlink(link)

        open_dir = self.public(0o777)
        exposed = os.path.join(open_dir, "exposed.conf")
        shutil.copy(smuggled, exposed)
        os.symlink(exposed, link)
        r = run_tunneld("-t", "-c", conf)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, rf"(?m)^{re.escape(link)}: .*{re.escape(open_dir)} is writable by group or "
                                   r"others \(mode 0777\)")
        os.unlink(link)

        os.symlink(smuggled, link)
        r = run_tunneld("-t", "-c", conf)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("2 tunnels", r.stdout)

    def test_include_dir_fifo(self):
        """A FIFO named like a drop-in (with --allow-insecure-config, which lets others
        write the directory): -t neither hangs nor reads it; it is refused as not a regular
        file."""
        inc = self.public(0o777)
        os.mkfifo(os.path.join(inc, "fifo.conf"))
        conf, _ = self.conf({"ssh": tunneltest.SSH, "include_dir": inc})
        t0 = time.monotonic()
        r = run_tunneld("-t", "--allow-insecure-config", "-c", conf, timeout=10)
        self.assertLess(time.monotonic() - t0, 8)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, rf"(?m)^{re.escape(inc)}/fifo.conf: not a regular file")

    # ---- the lock file ----

    def assert_no_tunnel_ssh(self, marker):
        """No ssh ran for a tunnel (the configuration's ssh -G, before the control socket,
        is no tunnel)."""
        runs = tunneltest._read_text(marker).splitlines()
        self.assertEqual([r for r in runs if " -G " not in f" {r} "], [], "an ssh ran for a tunnel")

    def start_expecting_exit(self, conf, *args):
        try:
            return subprocess.run([TUNNELD, *args, "-c", conf], capture_output=True, text=True, timeout=10,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.fail("tunneld ran on (killed after 10 s)")

    def test_lock_held_by_another_user(self):
        """The attacker holds an flock on SOCKET.lock (their own file, the directory being
        theirs to write with --allow-insecure-config): tunneld refuses in one error naming
        the holder's pid and uid, and exits non-zero."""
        sockdir = self.public(0o1777)
        sock = os.path.join(sockdir, "control")
        holder = self.attacker.popen("flock", "-x", sock + ".lock", "sleep", "60")
        self.addCleanup(holder.wait)
        self.addCleanup(holder.kill)
        wait_until(lambda: os.path.exists(sock + ".lock") and
                   subprocess.run(["flock", "-n", "-s", sock + ".lock", "true"]).returncode != 0, 10,
                   what="the attacker's lock")
        ssh, marker = self.marker_ssh()
        conf, _ = self.conf({"ssh": ssh, "control_socket": sock})
        r = self.start_expecting_exit(conf, "--allow-insecure-config")
        self.assertNotEqual(r.returncode, 0, r.stderr)
        lock_lines = [l for l in r.stderr.splitlines() if ".lock" in l]
        self.assertEqual(len(lock_lines), 1, r.stderr)
        self.assertIn(f"pid {holder.pid}", lock_lines[0])
        self.assertIn(f"uid {self.attacker.uid}", lock_lines[0])
        self.assert_no_tunnel_ssh(marker)
        self.assertFalse(os.path.exists(sock), "a control socket was made")

    def test_lock_symlink(self):
        """SOCKET.lock is the attacker's symlink (to a file of their own): one error, exit
        non-zero, no socket, no ssh; the target untouched."""
        sockdir = self.public(0o1777)
        sock = os.path.join(sockdir, "control")
        own = self.attacker_dir()
        target = os.path.join(own, "mine")
        self.attacker.python("import os, sys\nopen(sys.argv[1], 'w').close()\nos.symlink(sys.argv[1], sys.argv[2])",
                             target, sock + ".lock")
        ssh, marker = self.marker_ssh()
        conf, _ = self.conf({"ssh": ssh, "control_socket": sock})
        r = self.start_expecting_exit(conf, "--allow-insecure-config")
        self.assertNotEqual(r.returncode, 0, r.stderr)
        lock_lines = [l for l in r.stderr.splitlines() if ".lock" in l]
        self.assertEqual(len(lock_lines), 1, r.stderr)
        self.assertIn("symbolic link", lock_lines[0])
        self.assert_no_tunnel_ssh(marker)
        self.assertFalse(os.path.exists(sock), "a control socket was made")
        self.assertEqual(os.lstat(target).st_uid, self.attacker.uid)
        self.assertEqual(os.path.getsize(target), 0)

    def test_lock_held_by_another_tunneld(self):
        """A second tunneld on the socket of a running one: refused, naming the first's pid
        and uid, exit 1; the first goes on serving."""
        port = free_port()
        fwd = self.echo.forward(port)
        d = tunneltest.use(self, Tunneld([{"name": "t", "host": "127.0.0.1", "local_forwards": [fwd]}],
                                         self.sshd.tunnel_defaults(), globals={"ssh": tunneltest.SSH}))
        d.wait_up("t", timeout=UP_TIMEOUT)
        conf, _ = self.conf({"ssh": tunneltest.SSH, "control_socket": d.globals["control_socket"]},
                            [{"name": "u", "host": "127.0.0.1"}])
        r = self.start_expecting_exit(conf)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, rf"held by pid {d.pid} \(uid 0\b")
        status(d)
        echo_roundtrip(port)

    # ---- keyscan ----

    def test_keyscan_never_authenticates(self):
        """A server that lets a user in with the "none" method (PermitEmptyPasswords and a
        user with an empty password): plain ssh is let in (the sshd says "Accepted none");
        tunneld --keyscan fetches the key, and the server never accepts it."""
        user = tunneltest.use(self, LocalUser(prefix="tnone", password=""))
        # a Match block: sshd keeps the first value of a setting, and SSHServer says no first
        server = tunneltest.use(self, SSHServer(extra_config=[f"Match User {user.name}", "PasswordAuthentication yes",
                                                              "PermitEmptyPasswords yes"]))
        probe = subprocess.Popen([tunneltest.SSH, "-N", "-o", "BatchMode=yes", "-o", "PreferredAuthentications=none",
                                  "-o", f"UserKnownHostsFile={server.known_hosts}", "-o",
                                  "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                                  "-p", str(server.port), "-l", user.name, "127.0.0.1"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: f"Accepted none for {user.name}" in server.log(), 10,
                       what="the server to let the user in with none")
        finally:
            probe.kill()
            probe.wait()
        accepted_before = server.log().count("Accepted ")

        conf, _ = self.conf({"ssh": tunneltest.SSH, "control_socket": "none"},
                            [{"name": "k", "host": "127.0.0.1", "port": server.port, "user": user.name,
                              "connect_timeout": 3}], defaults={})
        t0 = time.monotonic()
        r = run_tunneld("--keyscan", "k", "--check-as", "root", "-c", conf, timeout=40)
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(server.host_key + ".pub") as f:
            blob = f.read().split()[1]
        self.assertIn(blob, r.stdout)
        self.assertEqual(server.log().count("Accepted "), accepted_before,
                         f"keyscan logged in:\n{server.log()[-2000:]}")
        self.assertLess(took, 10, "keyscan sat on a connection")

    def test_keyscan_timeout_is_its_own_message(self):
        """A server that stalls after its banner: keyscan gives up at its own deadline and
        says so as tunneld, not as a line of ssh's."""
        stalled = tunneltest.use(self, StalledServer())
        conf, _ = self.conf({"ssh": tunneltest.SSH, "control_socket": "none"},
                            [{"name": "k", "host": "127.0.0.1", "port": stalled.port, "connect_timeout": 1}],
                            defaults={})
        r = run_tunneld("--keyscan", "k", "--check-as", "root", "-c", conf, timeout=40)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, r"(?m)^tunneld: .*ssh did not finish within \d+ s")
        for line in r.stderr.splitlines():
            if line.strip().startswith("ssh:"):
                self.assertNotIn("tunneld", line, f"tunneld's own message printed as ssh's: {line!r}")


def describe_log(d):
    return "\n".join(d.log().splitlines()[-30:])


if __name__ == "__main__":
    tunneltest.main()
