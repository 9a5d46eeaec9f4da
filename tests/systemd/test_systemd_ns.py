#!/usr/bin/env python3
"""tunneld.service under a real systemd: systemd booted as PID 1 of private pid, mount and
network namespaces (tests/lib/systemdtest.py, SystemdNamespace), with the built unit, the
tunneld user from the sysusers file, an sshd and an echo server of its own on the
namespace's loopback.

The unit is the generated build/systemd/tunneld.service (and tunneld@.service) with only its
paths changed: the binaries are copied to /run/tunneld-test/bin and the configuration is
/run/tunneld-test/tunneld.conf (/run is a tmpfs of the namespace). Its hardening is untouched.
One namespace serves the whole file; each test starts tunneld and stops it again.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import tunneltest
from tunneltest import forward_states, pids, status, tunnel_status, wait_all, wait_state, wait_until
from systemdtest import TUNNELCTL, SystemdNamespace, namespace_prerequisites, require_tunnelctl

BASE = "/run/tunneld-test"
BIN = f"{BASE}/bin"
CONFIG = f"{BASE}/tunneld.conf"
CTL = f"{BIN}/tunnelctl"
SSH_PORT = 22  # the namespace's own loopback: nothing else listens there
ECHO_PORT = 7777
SANITIZE = os.environ.get("TUNNELD_SANITIZE", "none")  # meson's b_sanitize of this build

ECHO_SERVER = r"""
import socketserver, sys

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

Server(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"""

# Exit 0 if random bytes come back from 127.0.0.1:PORT, 1 if not, 2 if nothing accepts.
ECHO_CLIENT = r"""
import os, socket, sys
data = os.urandom(int(sys.argv[2]))
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
except OSError:
    sys.exit(2)
try:
    s.settimeout(3)
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
except OSError:
    sys.exit(1)
sys.exit(0 if got == data else 1)
"""


def unit_for_namespace(name):
    """The generated unit with the binaries in BIN and the configuration files in BASE."""
    with open(os.path.join(os.path.dirname(tunneltest.TUNNELD), "..", "systemd", name)) as f:
        text = f.read()

    def fix(m):
        line = re.sub(r"(?<=[=\s])[^\s=]*/(tunneld|tunnelctl)(?=\s|$)", rf"{BIN}/\1", m.group(0))
        return re.sub(r"(?<=\s)/\S*?(tunneld|%i)\.conf(?=\s|$)", rf"{BASE}/\1.conf", line)
    return re.sub(r"(?m)^Exec\w+=.*$", fix, text)


class SystemdNamespaceTest(unittest.TestCase):
    ns = None
    skip_reason = None

    @classmethod
    def setUpClass(cls):
        cls.skip_reason = namespace_prerequisites()
        for tool in (tunneltest.SSHD, tunneltest.SSH, "/usr/bin/python3"):
            if not cls.skip_reason and not os.access(tool, os.X_OK):
                cls.skip_reason = f"{tool} is missing"
        if cls.skip_reason:
            return
        require_tunnelctl()
        cls.ns = tunneltest.use(cls, SystemdNamespace())
        cls.ctl = cls.ns.control(ctl=CTL)     # the unit's control socket, tunnelctl inside
        cls.install()

    @classmethod
    def install(cls):
        """Binaries, the tunneld user, keys, an sshd and an echo server, the units."""
        ns = cls.ns
        keys = tempfile.mkdtemp(prefix="tunneltest-keys-")
        try:
            for key in ("host_key", "client_key"):
                subprocess.run([tunneltest.SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "tunneltest", "-f",
                                os.path.join(keys, key)], check=True, stdin=subprocess.DEVNULL, timeout=30)
            files = {}
            for name in ("host_key", "client_key", "client_key.pub", "host_key.pub"):
                with open(os.path.join(keys, name), "rb") as f:
                    files[name] = f.read()
        finally:
            shutil.rmtree(keys, ignore_errors=True)
        for path in (tunneltest.TUNNELD, TUNNELCTL):
            with open(path, "rb") as f:
                ns.put(f"{BIN}/{os.path.basename(path)}", f.read(), 0o755)
        with open(os.path.join(tunneltest.SOURCE_ROOT, "systemd", "tunneld.sysusers")) as f:
            ns.put(f"{BASE}/tunneld.sysusers", f.read())
        ns.run("systemd-sysusers", f"{BASE}/tunneld.sysusers")
        ns.run("chmod", "755", BASE)

        ns.put(f"{BASE}/sshd/host_key", files["host_key"], 0o600)
        ns.put(f"{BASE}/sshd/authorized_keys", files["client_key.pub"])
        ns.put(f"{BASE}/sshd/sshd_config", "\n".join([
            "ListenAddress 127.0.0.1", f"Port {SSH_PORT}", f"HostKey {BASE}/sshd/host_key",
            f"AuthorizedKeysFile {BASE}/sshd/authorized_keys", "StrictModes no", "PermitRootLogin yes",
            "UsePAM no", "PidFile none", "LogLevel VERBOSE", "AllowTcpForwarding yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UseDNS no", "PrintMotd no"]) + "\n")
        keytype, blob = files["host_key.pub"].decode().split()[:2]
        ns.put(f"{BASE}/known_hosts", f"127.0.0.1 {keytype} {blob}\n")
        ns.put(f"{BASE}/client_key", files["client_key"], 0o600, "tunneld:tunneld")
        ns.put(f"{BASE}/echo.py", ECHO_SERVER)

        ns.run("mkdir", "-p", "-m", "0755", "/run/sshd")
        ns.run("systemd-run", "--unit=tunneltest-sshd", "--service-type=exec", tunneltest.SSHD, "-D", "-e",
               "-f", f"{BASE}/sshd/sshd_config")
        ns.run("systemd-run", "--unit=tunneltest-echo", "--service-type=exec", "/usr/bin/python3",
               f"{BASE}/echo.py", str(ECHO_PORT))
        for port in (SSH_PORT, ECHO_PORT):
            wait_until(lambda: cls.accepts(port), 15, interval=0.2, what=f"port {port} in the namespace")

        for name in ("tunneld.service", "tunneld@.service"):
            ns.put(f"/run/systemd/system/{name}", unit_for_namespace(name))
            if SANITIZE not in ("", "none"):
                # LeakSanitizer stops the world with ptrace, which SystemCallFilter= forbids (a
                # "fatal error" at exit); ASan's and UBSan's other checks stay on.
                ns.put(f"/run/systemd/system/{name}.d/sanitizer.conf",
                       "[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 "
                       "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1\n")
        ns.systemctl("daemon-reload")

    # -- helpers --

    @classmethod
    def echo(cls, port, size=4096):
        """0: bytes came back through 127.0.0.1:port in the namespace; 1: not; 2: refused."""
        return cls.ns.run("/usr/bin/python3", "-c", ECHO_CLIENT, str(port), str(size), check=False,
                          timeout=20).returncode

    @classmethod
    def accepts(cls, port):
        return cls.echo(port, 1) != 2

    def setUp(self):
        if self.skip_reason:
            self.skipTest(self.skip_reason)
        self.ns.systemctl("reset-failed", "tunneld.service", check=False)

    def tunnel(self, name, port):
        return {"name": name, "local_forwards": [f"127.0.0.1:{port}:127.0.0.1:{ECHO_PORT}"]}

    def write_config(self, tunnels, path=CONFIG, **global_settings):
        defaults = {"host": "127.0.0.1", "port": SSH_PORT, "user": "root", "identity_file": f"{BASE}/client_key",
                    "ssh_config_file": "/dev/null", "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2,
                    "ssh_options": [f"UserKnownHostsFile={BASE}/known_hosts", "GlobalKnownHostsFile=/dev/null",
                                    "StrictHostKeyChecking=yes"]}
        text = tunneltest.render_config(global_settings, defaults, tunnels)
        self.ns.put(path, text)
        return text

    def start(self, tunnels, unit="tunneld.service"):
        """Write the configuration, systemctl start (it returns after READY=1), stop at cleanup."""
        self.write_config(tunnels)
        self.addCleanup(self.ns.systemctl, "stop", unit, check=False)
        self.ns.systemctl("start", unit)

    def show(self, *props, unit="tunneld.service"):
        return self.ns.show(unit, *props)

    def assert_echo(self, port):
        wait_until(lambda: self.echo(port) == 0, 10, interval=0.2, what=f"bytes through port {port}")

    def assert_closed(self, port):
        wait_until(lambda: self.echo(port, 1) == 2, 10, interval=0.2, what=f"port {port} to close")

    def ssh_pids(self):
        r = self.ns.run("pgrep", "-x", "ssh", check=False)
        return sorted(int(p) for p in r.stdout.split())

    def user_of(self, pid):
        return self.ns.run("ps", "-o", "user=", "-p", str(pid)).stdout.strip()

    # -- tests --

    def test_start_runs_hardened_and_carries_bytes(self):
        """systemctl start: active after READY, runs as tunneld under the hardening, bytes flow, Status: shown."""
        self.start([self.tunnel("web", 15000)])
        props = self.show("ActiveState", "SubState", "MainPID", "NRestarts", "Type")
        self.assertEqual((props["ActiveState"], props["SubState"], props["Type"]), ("active", "running", "notify"))
        pid = wait_state(self.ctl, "web", "up")["pid"]
        self.assert_echo(15000)
        self.assertEqual(self.user_of(props["MainPID"]), "tunneld")
        self.assertEqual(self.user_of(pid), "tunneld")
        self.assertEqual(self.ssh_pids(), [pid])
        status = wait_until(lambda: (lambda out: 'Status: "1/1 tunnels up"' in out and out)(
            self.ns.systemctl("status", "tunneld.service", check=False).stdout), 10,
            what='Status: "1/1 tunnels up" in systemctl status')
        self.assertIn(f"{BIN}/tunneld -c {CONFIG}", status)
        self.assertEqual(self.show("NRestarts")["NRestarts"], "0")

    def test_ssh_records_a_new_host_key_under_the_sandbox(self):
        """Under the hardened unit ssh can write the tunneld user's ~/.ssh/known_hosts (home
        /var/lib/tunneld, the unit's StateDirectory=): with StrictHostKeyChecking=accept-new
        and no known_hosts given, the tunnel comes up and the server's key is recorded."""
        self.ns.run("rm", "-rf", "/var/lib/tunneld/.ssh", check=False)
        tunnel = {**self.tunnel("fresh", 15005),
                  "ssh_options": ["StrictHostKeyChecking=accept-new", "GlobalKnownHostsFile=/dev/null"]}
        self.start([tunnel])
        pid = wait_state(self.ctl, "fresh", "up")["pid"]
        self.assert_echo(15005)
        self.assertEqual(self.user_of(pid), "tunneld")
        r = self.ns.run("stat", "-c", "%U %a", "/var/lib/tunneld/.ssh/known_hosts")
        self.assertEqual(r.stdout.split()[0], "tunneld", r.stdout)
        known = self.ns.run("cat", "/var/lib/tunneld/.ssh/known_hosts").stdout
        keytype = self.ns.run("cat", f"{BASE}/known_hosts").stdout.split()[1]
        host = "127\\.0\\.0\\.1" if SSH_PORT == 22 else rf"\[127\.0\.0\.1\]:{SSH_PORT}"
        self.assertRegex(known, rf"(?m)^{host} {re.escape(keytype)} ", known)

    def test_reload_applies_changes_and_waits(self):
        """systemctl reload returns once applied (pids kept: a moved forward moves on the same
        ssh, its new port works); a bad file fails it, unit untouched."""
        self.start([self.tunnel("keep", 15001), self.tunnel("move", 15002)])
        wait_all(self.ctl, ["keep", "move"])
        before = pids(self.ctl)
        main = self.show("MainPID")["MainPID"]
        self.assert_echo(15002)

        text = self.write_config([self.tunnel("keep", 15001), self.tunnel("move", 15003)])
        self.ns.systemctl("reload", "tunneld.service")
        now = status(self.ctl)
        self.assertEqual(now["move"]["forwards"]["local"], [f"127.0.0.1:15003:127.0.0.1:{ECHO_PORT}"])
        self.assertIn(now["move"]["state"], ("starting", "up"))
        self.assertEqual(now["keep"]["pid"], before["keep"])
        wait_all(self.ctl, ["keep", "move"])
        after = pids(self.ctl)
        self.assertEqual(after, before, "an ssh was restarted")
        self.assert_echo(15003)
        self.assert_closed(15002)
        self.assertEqual(self.show("MainPID")["MainPID"], main)

        self.ns.put(CONFIG, text.replace("tunnels = (", 'colour = "red";\ntunnels = (', 1))
        r = self.ns.systemctl("reload", "tunneld.service", check=False)
        self.assertNotEqual(r.returncode, 0, "systemctl reload of a broken file succeeded")
        props = self.show("ActiveState", "SubState", "MainPID")
        self.assertEqual((props["ActiveState"], props["SubState"], props["MainPID"]), ("active", "running", main))
        failed = "reload failed (1 error, see the journal), running the previous configuration; 2/2 tunnels up"
        wait_until(lambda: self.show("StatusText")["StatusText"] == failed, 5, what=f"StatusText {failed!r}")
        self.assertEqual({n: t["pid"] for n, t in status(self.ctl).items()}, after)
        line = tunneltest.line_of(text.replace("tunnels = (", 'colour = "red";\ntunnels = (', 1), "colour")
        wait_until(lambda: f"{CONFIG}:{line}: colour: unknown setting" in self.ns.journal("-u", "tunneld.service",
                                                                                          "-o", "cat"),
                   10, what="the error in the journal")
        self.assert_echo(15001)

    def test_connection_under_the_unit(self):
        """The connection engine under the hardened unit: the master's socket in the runtime
        directory (inotify there), up with its forward open, a reload that adds a forward
        applies it on the same ssh, and tunnelctl restart is make-before-break."""
        mux = self.tunnel("mux", 15006)
        self.start([mux])
        pid = wait_state(self.ctl, "mux", "up")["pid"]
        self.assert_echo(15006)
        self.assertEqual(list(forward_states(tunnel_status(self.ctl, "mux")).values()), ["open"])
        self.write_config([{**mux, "local_forwards": [*mux["local_forwards"],
                                                      f"127.0.0.1:15007:127.0.0.1:{ECHO_PORT}"]}])
        self.ns.systemctl("reload", "tunneld.service")
        self.assert_echo(15007)
        self.assertEqual(status(self.ctl)["mux"]["pid"], pid, "forwards added on the running ssh")
        self.ns.run(CTL, "restart", "mux")
        after = wait_state(self.ctl, "mux", "up", not_pid=pid)["pid"]
        self.assertNotEqual(after, pid)
        self.assert_echo(15006)
        self.assert_echo(15007)

    def test_journal_has_each_tunnels_lines(self):
        """journalctl TUNNEL=NAME shows that tunnel's lines, ssh's own included, with SSH_PID and the unit."""
        self.start([self.tunnel("web", 15004), self.tunnel("other", 15005)])
        pid = wait_all(self.ctl, ["web", "other"])["web"]["pid"]

        def entries():
            out = self.ns.journal("TUNNEL=web", "-o", "json")
            return [json.loads(line) for line in out.splitlines() if line.strip()]

        def complete():
            got = entries()
            messages = [e.get("MESSAGE") for e in got]
            return any(m and m.startswith("web: up: ssh") for m in messages) and got
        got = wait_until(complete, 10, interval=0.2, what="web's up line in the journal")
        auth = [e for e in got if re.match(rf'^web: ssh: Authenticated to 127\.0\.0\.1 \(\[127\.0\.0\.1\]:{SSH_PORT}\) '
                                           r'using "publickey"\.$', e.get("MESSAGE", ""))]
        self.assertTrue(auth, [e.get("MESSAGE") for e in got])
        up = [e for e in got if e.get("MESSAGE", "").startswith("web: up: ssh")]
        for e in auth + up:
            self.assertEqual(e.get("SSH_PID"), str(pid))
        self.assertEqual(up[-1].get("PRIORITY"), "5")
        self.assertEqual(up[-1].get("TUNNEL_STATE"), "up")
        for e in got:
            self.assertEqual((e.get("TUNNEL"), e.get("SYSLOG_IDENTIFIER"), e.get("_SYSTEMD_UNIT")),
                             ("web", "tunneld", "tunneld.service"))
        text = self.ns.journal("-u", "tunneld.service", "-o", "cat")
        self.assertIn("configuration OK: 2 tunnels", text)  # ExecStartPre's tunneld -t

    def test_stop_is_inactive_not_failed(self):
        """systemctl stop ends inactive (not failed), exit 0, no ssh left, the forwarded port closed."""
        self.start([self.tunnel("web", 15006)])
        wait_all(self.ctl, ["web"])
        self.assert_echo(15006)
        self.ns.systemctl("stop", "tunneld.service")
        props = self.show("ActiveState", "SubState", "Result", "ExecMainStatus", "ExecMainCode")
        self.assertEqual((props["ActiveState"], props["SubState"], props["Result"]), ("inactive", "dead", "success"),
                         props)
        self.assertEqual(props["ExecMainStatus"], "0")
        self.assertEqual(self.ssh_pids(), [])
        self.assert_closed(15006)
        self.assertIn("every tunnel stopped; exiting", self.ns.journal("-u", "tunneld.service", "-o", "cat"))

    def test_crash_restarts(self):
        """A crash, SIGKILL or SIGSEGV of the main pid: Restart=on-abnormal brings tunneld back
        (a new main pid, active again) and the tunnel carries bytes again."""
        self.start([self.tunnel("crashy", 15007)])
        for sig in ("KILL", "SEGV"):
            with self.subTest(signal=sig):
                old_ssh = wait_state(self.ctl, "crashy", "up")["pid"]
                props = self.show("MainPID", "NRestarts")
                self.ns.run("kill", f"-{sig}", props["MainPID"])

                def restarted():
                    p = self.show("ActiveState", "SubState", "MainPID", "NRestarts")
                    return (p["ActiveState"], p["SubState"]) == ("active", "running") and \
                        p["MainPID"] not in ("0", props["MainPID"]) and p
                now = wait_until(restarted, 20, interval=0.2, what=f"systemd to restart tunneld after SIG{sig}")
                self.assertEqual(int(now["NRestarts"]), int(props["NRestarts"]) + 1)
                new_ssh = wait_state(self.ctl, "crashy", "up")["pid"]
                self.assertNotEqual(new_ssh, old_ssh)
                self.assertEqual(self.ssh_pids(), [new_ssh])
                self.assert_echo(15007)

    def test_bad_config_fails_and_is_not_restarted(self):
        """A running tunneld restarted on a file with an error (`bogus_setting = 1;`): its
        ExecStartPre tunneld -t fails, and the unit ends failed at once, not activating
        (auto-restart) every RestartSec= forever; systemctl status shows the FILE:LINE error
        and nothing runs. Also for an instance of tunneld@.service. A fixed file starts."""
        units = (("tunneld.service", CONFIG, "/run/tunneld/control"),
                 ("tunneld@broken.service", f"{BASE}/broken.conf", "/run/tunneld-broken/control"))
        good = {}
        for unit, path, sock in units:
            with self.subTest(unit=unit):
                good[unit] = self.write_config([self.tunnel("broken", 15010)], path=path)
                self.addCleanup(self.ns.systemctl, "reset-failed", unit, check=False)
                self.addCleanup(self.ns.systemctl, "stop", unit, check=False)
                self.ns.systemctl("start", unit)
                wait_all(self.ns.control(sock, CTL), ["broken"])
                self.ns.put(path, "bogus_setting = 1;\n" + good[unit])
                r = self.ns.systemctl("restart", unit, check=False)
                self.assertNotEqual(r.returncode, 0, "systemctl restart on a broken file succeeded")
                # systemctl restart returns once the start job is done: the state is final
                props = self.show("ActiveState", "SubState", "Result", "NRestarts", unit=unit)
                self.assertEqual((props["ActiveState"], props["SubState"], props["Result"], props["NRestarts"]),
                                 ("failed", "failed", "exit-code", "0"), props)
                error = f"{path}:1: bogus_setting: unknown setting"

                def status_shows_error():
                    out = self.ns.systemctl("status", unit, check=False).stdout
                    return error in out and out
                status = wait_until(status_shows_error, 10, interval=0.2, what=f"{error!r} in systemctl status")
                self.assertRegex(status, r"(?m)^\s*Active: failed \(Result: exit-code\)")
                self.assertRegex(status, r"ExecStartPre=\S*tunneld -t .*\(code=exited, status=1/FAILURE\)")
                self.assertEqual(self.ssh_pids(), [])
        # Longer than RestartSec= later: still failed, never restarted.
        self.assertEqual(self.show("RestartUSec")["RestartUSec"], "2s")
        time.sleep(3)
        for unit, path, sock in units:
            with self.subTest(unit=unit, fixed=True):
                props = self.show("ActiveState", "NRestarts", unit=unit)
                self.assertEqual((props["ActiveState"], props["NRestarts"]), ("failed", "0"), props)
                self.ns.put(path, good[unit])
                self.ns.systemctl("start", unit)
                wait_all(self.ns.control(sock, CTL), ["broken"])
                self.ns.systemctl("stop", unit)

    def test_watchdog_is_fed(self):
        """With WatchdogSec=2 (a test drop-in) systemd gets tunneld's pings and never restarts it."""
        dropin = "/run/systemd/system/tunneld.service.d/watchdog.conf"
        self.ns.put(dropin, "[Service]\nWatchdogSec=2\n")
        self.addCleanup(self.ns.systemctl, "daemon-reload")
        self.addCleanup(self.ns.run, "rm", "-f", dropin)
        self.ns.systemctl("daemon-reload")
        self.start([self.tunnel("web", 15008)])
        props = self.show("MainPID", "WatchdogUSec", "WatchdogTimestampMonotonic")
        self.assertEqual(props["WatchdogUSec"], "2s")
        time.sleep(5)
        now = self.show("ActiveState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic", "Result")
        self.assertEqual((now["ActiveState"], now["MainPID"], now["NRestarts"]), ("active", props["MainPID"], "0"), now)
        self.assertGreater(int(now["WatchdogTimestampMonotonic"]), int(props["WatchdogTimestampMonotonic"]))
        self.assertGreaterEqual(int(now["WatchdogTimestampMonotonic"]) - int(props["WatchdogTimestampMonotonic"]),
                                4_000_000, "no watchdog ping for seconds")

    def test_template_instance(self):
        """tunneld@NAME.service: starts on NAME.conf, carries bytes, reloads on its own socket, stops inactive."""
        unit = "tunneld@edge.service"
        self.write_config([self.tunnel("edge", 15009)], path=f"{BASE}/edge.conf")
        self.addCleanup(self.ns.systemctl, "stop", unit, check=False)
        self.ns.systemctl("start", unit)
        sock = "/run/tunneld-edge/control"
        pid = wait_state(self.ns.control(sock, CTL), "edge", "up")["pid"]
        self.assert_echo(15009)
        self.ns.systemctl("reload", unit)
        self.assertEqual(status(self.ns.control(sock, CTL))["edge"]["pid"], pid)
        self.ns.systemctl("stop", unit)
        props = self.show("ActiveState", "Result", unit=unit)
        self.assertEqual((props["ActiveState"], props["Result"]), ("inactive", "success"))


if __name__ == "__main__":
    tunneltest.main()
