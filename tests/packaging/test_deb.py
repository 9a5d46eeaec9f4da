#!/usr/bin/env python3
"""The Debian package: packaging/build-deb builds it, lintian finds no error in it, and
apt-get installs it: the binaries, units, sysusers and tmpfiles files, man pages and
completions are in place, /etc/tunneld.conf is a conffile that validates (also as the
tunneld user the unit runs as), the tunneld user exists with its directories,
systemd-analyze verify accepts the installed units; apt-get purge then removes all of it
but the user (Debian policy).

Then the unit lifecycle, under a real systemd (DebUnderSystemdTest): the package installed
in a systemd booted in private namespaces (tests/lib/systemdtest.py, with /usr an overlay
too), an instance tunneld@x enabled and running a tunnel to an sshd of the namespace;
apt-get remove stops it as well as tunneld.service, an upgrade restarts it on the new
binary, apt-get purge leaves no tunneld or ssh process, no active unit and no enablement
link of any tunneld unit, and keeps /etc/tunneld.d with the drop-in files in it, whose
tunnels a reinstall then starts.

The install and the purge happen in a private mount namespace whose /etc, /usr and /var
are overlays on the machine's own (and /run a private tmpfs, so no systemd of the host
is told anything): apt-get, dpkg and the maintainer scripts run for real on this
machine's installed system, but nothing they write reaches it, whatever happens to the
test, and tests running at the same time (systemd namespaces with overlays of the
host's /etc) never see a tunneld package or user come and go.

Skipped, with the reason, without root, when the packaging tools or build dependencies
are missing (scripts/deps installs them), and for a sanitizer build (the package is
built from the source tree, not from the build under test: once is enough).
"""

import atexit
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import tunneltest
from tunneltest import project_version, wait_state, wait_until
from systemdtest import SystemdNamespace, namespace_prerequisites

SOURCE_ROOT = tunneltest.SOURCE_ROOT
BUILD_DEB = os.path.join(SOURCE_ROOT, "packaging", "build-deb")
CONTROL = os.path.join(SOURCE_ROOT, "packaging", "debian", "control")
# Building takes most of the time: 20 to 60 s on a 2-core machine.
tunneltest.TEST_TIMEOUT = max(tunneltest.TEST_TIMEOUT, 240)

# What the package must install (paths as on Debian 12).
PACKAGE_FILES = [
    "/usr/sbin/tunneld",
    "/usr/bin/tunnelctl",
    "/lib/systemd/system/tunneld.service",
    "/lib/systemd/system/tunneld@.service",
    "/usr/lib/sysusers.d/tunneld.conf",
    "/usr/lib/tmpfiles.d/tunneld.conf",
    "/etc/tunneld.conf",
    "/etc/tunneld.d",
    "/usr/share/tunneld/tunneld.conf.example",
    "/usr/share/man/man8/tunneld.8.gz",
    "/usr/share/man/man5/tunneld.conf.5.gz",
    "/usr/share/man/man1/tunnelctl.1.gz",
    "/usr/share/bash-completion/completions/tunnelctl",
    "/usr/share/bash-completion/completions/tunneld",
    "/usr/share/zsh/vendor-completions/_tunnelctl",
    "/usr/share/zsh/vendor-completions/_tunneld",
    "/usr/share/doc/tunneld/copyright",
]
ENABLED_LINK = "/etc/systemd/system/multi-user.target.wants/tunneld.service"

# The namespace's root: overlays whose writes land in a private tmpfs on /run.
NAMESPACE_SCRIPT = r"""
set -e
mount -t tmpfs -o mode=755 tmpfs /run
for d in etc usr var; do
    mkdir -p /run/.overlay/$d/upper /run/.overlay/$d/work
    mount -t overlay overlay -o lowerdir=/$d,upperdir=/run/.overlay/$d/upper,workdir=/run/.overlay/$d/work /$d
done
mkdir -p /run/lock
echo ready
exec sleep 86400
"""


def is_sanitizer_build(path):
    sanitize = os.environ.get("TUNNELD_SANITIZE")  # b_sanitize of the build, from tests/meson.build
    if sanitize:
        return sanitize != "none"
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def why_skip():
    """None if the package can be built and installed here, else why not."""
    if os.geteuid() != 0:
        return "needs root (apt-get install in a mount namespace)"
    if is_sanitizer_build(tunneltest.TUNNELD):
        return "sanitizer build: the package is built from the source tree, and tested with the plain build"
    missing = [t for t in ("dpkg-buildpackage", "dh", "dpkg-checkbuilddeps", "apt-get", "unshare", "nsenter")
               if not shutil.which(t)]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/deps installs dpkg-dev and debhelper)"
    r = subprocess.run(["dpkg-checkbuilddeps", CONTROL], capture_output=True, text=True)
    if r.returncode != 0:
        return "build dependencies missing: " + " ".join(r.stderr.split())
    return None


SKIP = why_skip()


class _Build:
    result = None


def build_deb():
    """packaging/build-deb into a temporary directory, once for the whole file:
    (CompletedProcess, seconds it took, the directory, the tunneld_*.deb or None)."""
    if _Build.result is None:
        out = tempfile.mkdtemp(prefix="tunneltest-deb-")
        atexit.register(shutil.rmtree, out, True)
        started = time.monotonic()
        r = subprocess.run([BUILD_DEB, out], capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
        debs = sorted(glob.glob(os.path.join(out, "tunneld_*.deb")))
        _Build.result = (r, time.monotonic() - started, out, debs[-1] if debs else None)
    return _Build.result


class MountNamespace:
    """A process in a private mount namespace with overlays on /etc, /usr and /var;
    run() runs commands in it with nsenter. close() kills it, and with it every change."""

    def __enter__(self):
        self.proc = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--",
             "unshare", "--mount", "--propagation", "private", "--fork", "--kill-child",
             "sh", "-c", NAMESPACE_SCRIPT],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            rest = self.proc.stdout.read() if self.proc.poll() is not None else ""
            self.close()
            raise AssertionError(f"cannot set up the mount namespace: {line} {rest}")
        self.pid = wait_until(lambda: (tunneltest.children_of(self.proc.pid) or [None])[0], 10,
                              what="the namespace's process")
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        if getattr(self, "proc", None) and self.proc.poll() is None:
            tunneltest.kill_all([self.proc.pid])
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if getattr(self, "proc", None) and self.proc.stdout:
            self.proc.stdout.close()

    def run(self, *argv, check=True, timeout=60, env=None):
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
                    "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--", *argv], capture_output=True, text=True,
                           timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r

    def exists(self, path):
        return self.run("test", "-e", path, check=False).returncode == 0 or \
            self.run("test", "-L", path, check=False).returncode == 0


@unittest.skipIf(SKIP, SKIP or "")
class DebTest(unittest.TestCase):
    """In order: build, lint, install, look, purge. Each step needs the ones before."""

    @classmethod
    def setUpClass(cls):
        cls.build, cls.build_seconds, cls.out, cls.deb = build_deb()
        cls.ns = tunneltest.use(cls, MountNamespace())
        cls.installed = False
        cls.purged = False

    def require(self, *steps):
        for step in steps:
            if not getattr(self, step):
                self.fail(f"an earlier step failed: not {step}")

    def test_1_build(self):
        """build-deb makes tunneld_VERSION_ARCH.deb, whose version is meson's, and prints its
        path, and only that (not the path of the tunneld-dbgsym package built beside it)."""
        self.assertEqual(self.build.returncode, 0, f"build-deb failed:\n{self.build.stdout}{self.build.stderr}")
        self.assertIsNotNone(self.deb, f"no .deb in {os.listdir(self.out)}")
        # README's "prints ./dist/tunneld_VERSION_ARCH.deb": that path alone, not the dbgsym package's
        self.assertEqual(self.build.stdout.splitlines(), [self.deb], "build-deb's standard output")
        version = subprocess.run(["dpkg-deb", "-f", self.deb, "Version"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        self.assertTrue(version == project_version() or version.startswith(project_version() + "-"), version)
        depends = subprocess.run(["dpkg-deb", "-f", self.deb, "Depends"], capture_output=True, text=True,
                                 check=True).stdout
        self.assertIn("openssh-client", depends)
        self.assertIn("systemd-sysusers", depends)  # dh_installsysusers: the postinst runs it
        print(f"# built {os.path.basename(self.deb)} in {self.build_seconds:.0f} s")

    @unittest.skipUnless(shutil.which("lintian"), "lintian is not installed")
    def test_2_lintian(self):
        """lintian reports no error and no warning on the package."""
        self.assertIsNotNone(self.deb, "no .deb was built")
        changes = sorted(glob.glob(os.path.join(self.out, "tunneld_*.changes")))[-1]
        # lintian leaves files in TMPDIR (mldbm-elf-*): give it one that goes away
        r = subprocess.run(["lintian", "--fail-on", "error,warning", changes], capture_output=True, text=True,
                           timeout=300, stdin=subprocess.DEVNULL,
                           env={**os.environ, "TMPDIR": tunneltest.temp_dir(self)})
        tags = [line for line in r.stdout.splitlines() if re.match(r"^[EW]: ", line)]
        self.assertEqual(tags, [], r.stdout + r.stderr)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_3_install(self):
        """apt-get installs the .deb: the user is created, the unit enabled."""
        self.assertIsNotNone(self.deb, "no .deb was built")
        ns = self.ns
        before = ns.run("dpkg-query", "-W", "-f", "${Status}", "tunneld", check=False).stdout
        r = ns.run("apt-get", "install", "-y", "--no-install-recommends", self.deb, timeout=200, check=False)
        self.assertEqual(r.returncode, 0, f"apt-get install failed:\n{r.stdout}{r.stderr}")
        status = ns.run("dpkg-query", "-W", "-f", "${Status} ${Version}", "tunneld").stdout
        self.assertRegex(status, rf"^install ok installed {re.escape(project_version())}", f"was: {before!r}")
        type(self).installed = True

    def test_4_files(self):
        """Every file is where Debian wants it; /etc/tunneld.conf is a conffile, the
        pristine example beside it; the unit is enabled; man finds the pages."""
        self.require("installed")
        ns = self.ns
        listed = set(ns.run("dpkg", "-L", "tunneld").stdout.split())
        for path in PACKAGE_FILES:
            with self.subTest(path=path):
                self.assertIn(path, listed)
                self.assertTrue(ns.exists(path), f"{path} is not installed")
        conffiles = ns.run("dpkg-query", "-W", "-f", "${Conffiles}", "tunneld").stdout.split()
        self.assertIn("/etc/tunneld.conf", conffiles)
        self.assertEqual(ns.run("stat", "-c", "%a %U %G", "/etc/tunneld.conf").stdout.split(), ["644", "root", "root"])
        self.assertEqual(ns.run("cmp", "/etc/tunneld.conf", "/usr/share/tunneld/tunneld.conf.example").returncode, 0)
        self.assertTrue(ns.exists(ENABLED_LINK), "tunneld.service is not enabled")
        self.assertEqual(ns.run("tunneld", "--version").stdout.strip(), f"tunneld {project_version()}")
        self.assertEqual(ns.run("tunnelctl", "--version").stdout.strip(), f"tunnelctl {project_version()}")
        for page in ("tunneld", "tunneld.conf", "tunnelctl"):
            with self.subTest(page=page):
                self.assertIn("/usr/share/man/", ns.run("man", "-w", page).stdout)
        unit = ns.run("cat", "/lib/systemd/system/tunneld.service").stdout
        self.assertIn("ExecStart=/usr/sbin/tunneld -c /etc/tunneld.conf", unit)
        self.assertIn("ExecReload=/usr/bin/tunnelctl --pid $MAINPID reload", unit)

    def test_5_config_validates(self):
        """The shipped /etc/tunneld.conf validates, as root and as the tunneld user (the
        unit's ExecStartPre runs tunneld -t as that user, with its permission checks)."""
        self.require("installed")
        ns = self.ns
        for argv in (["tunneld", "-t", "-c", "/etc/tunneld.conf"],
                     ["runuser", "-u", "tunneld", "--", "/usr/sbin/tunneld", "-t", "-c", "/etc/tunneld.conf"]):
            with self.subTest(argv=" ".join(argv)):
                r = ns.run(*argv, check=False)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertRegex(r.stdout, r"^configuration OK: \d+ tunnels? \(0 enabled\)")

    def test_6_user_and_directories(self):
        """systemd-sysusers made the tunneld user and group (home /var/lib/tunneld, no
        shell); systemd-tmpfiles made its directories with the right owners and modes; the
        empty drop-in directory /etc/tunneld.d is the package's (dpkg -S)."""
        self.require("installed")
        ns = self.ns
        ns.run("id", "tunneld")
        fields = ns.run("getent", "passwd", "tunneld").stdout.strip().split(":")
        self.assertEqual(fields[5:], ["/var/lib/tunneld", "/usr/sbin/nologin"])
        self.assertLess(int(fields[2]), 1000, "not a system user")
        ns.run("getent", "group", "tunneld")
        for path, want in (("/var/lib/tunneld", "750 tunneld tunneld"), ("/var/lib/tunneld/.ssh", "700 tunneld tunneld"),
                           ("/etc/tunneld", "750 root tunneld"), ("/etc/tunneld.d", "755 root root")):
            with self.subTest(path=path):
                self.assertEqual(ns.run("stat", "-c", "%a %U %G", path).stdout.strip(), want)
        self.assertEqual(ns.run("dpkg", "-S", "/etc/tunneld.d").stdout.strip(), "tunneld: /etc/tunneld.d")
        self.assertEqual(ns.run("ls", "-A", "/etc/tunneld.d").stdout, "", "/etc/tunneld.d is shipped empty")

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
    def test_7_units_verify(self):
        """systemd-analyze verify accepts the installed units, and says nothing about them."""
        self.require("installed")
        for unit in ("/lib/systemd/system/tunneld.service", "/lib/systemd/system/tunneld@.service"):
            with self.subTest(unit=unit):
                r = self.ns.run("systemd-analyze", "verify", unit, check=False)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertNotIn("tunneld", r.stdout + r.stderr)

    def test_8_purge(self):
        """apt-get purge removes the files, the conffile, the enablement symlink,
        /var/lib/tunneld, the emptied /etc/tunneld and the empty /etc/tunneld.d; the user
        stays (Debian policy)."""
        self.require("installed")
        ns = self.ns
        r = ns.run("apt-get", "purge", "-y", "tunneld", timeout=120, check=False)
        self.assertEqual(r.returncode, 0, f"apt-get purge failed:\n{r.stdout}{r.stderr}")
        status = ns.run("dpkg-query", "-W", "-f", "${Status}", "tunneld", check=False)
        self.assertTrue(status.returncode != 0 or "not-installed" in status.stdout, status.stdout)
        for path in PACKAGE_FILES + [ENABLED_LINK, "/var/lib/tunneld", "/etc/tunneld"]:
            with self.subTest(path=path):
                self.assertFalse(ns.exists(path), f"{path} is still there after the purge")
        self.assertEqual(ns.run("id", "tunneld", check=False).returncode, 0, "the user is kept on purge")
        type(self).purged = True


# Under the namespace's systemd: where the package and the test's files go inside.
PKGTEST = "/run/tunneld-pkgtest"
SSH_PORT = 22  # the namespace's own loopback: nothing else listens there
DROPIN = "/etc/tunneld.d/50-pkgtest.conf"
INSTANCE = "tunneld@x.service"
INSTANCE_SOCKET = "/run/tunneld-x/control"


def why_skip_systemd():
    if SKIP:
        return SKIP
    why = namespace_prerequisites()
    if why:
        return why
    for tool in (tunneltest.SSHD, tunneltest.SSH, tunneltest.SSH_KEYGEN):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing"
    return None


SKIP_SYSTEMD = why_skip_systemd()


@unittest.skipIf(SKIP_SYSTEMD, SKIP_SYSTEMD or "")
class DebUnderSystemdTest(unittest.TestCase):
    """In order: install, run an instance, remove, reinstall and upgrade, purge, reinstall
    after the purge, purge again. Each step needs the ones before. One systemd namespace
    (with /usr, /etc and /var overlays) for all of them; an sshd of its own on its
    loopback, for the tunnels of the instance and of a drop-in file."""

    @classmethod
    def setUpClass(cls):
        cls.build, _, _, cls.deb = build_deb()
        cls.done = set()
        if cls.deb is None:
            return
        cls.ns = tunneltest.use(cls, SystemdNamespace(overlays=("usr",)))
        ns = cls.ns
        # A Debian image may refuse service starts from maintainer scripts (Docker's
        # policy-rc.d exits 101): not in here. man-db's trigger would rebuild its index
        # after every dpkg run; nothing here reads it.
        ns.run("rm", "-f", "/usr/sbin/policy-rc.d", "/var/lib/man-db/auto-update")
        with open(cls.deb, "rb") as f:
            ns.put(f"{PKGTEST}/{os.path.basename(cls.deb)}", f.read())
        cls.deb_inside = f"{PKGTEST}/{os.path.basename(cls.deb)}"
        keys = tempfile.mkdtemp(prefix="tunneltest-keys-")
        try:
            for key in ("host_key", "client_key"):
                subprocess.run([tunneltest.SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "tunneltest", "-f",
                                os.path.join(keys, key)], check=True, stdin=subprocess.DEVNULL, timeout=30)
            cls.keys = {}
            for name in ("host_key", "host_key.pub", "client_key", "client_key.pub"):
                with open(os.path.join(keys, name), "rb") as f:
                    cls.keys[name] = f.read()
        finally:
            shutil.rmtree(keys, ignore_errors=True)
        ns.put(f"{PKGTEST}/sshd/host_key", cls.keys["host_key"], 0o600)
        ns.put(f"{PKGTEST}/sshd/authorized_keys", cls.keys["client_key.pub"])
        ns.put(f"{PKGTEST}/sshd/sshd_config", "\n".join([
            "ListenAddress 127.0.0.1", f"Port {SSH_PORT}", f"HostKey {PKGTEST}/sshd/host_key",
            f"AuthorizedKeysFile {PKGTEST}/sshd/authorized_keys", "StrictModes no", "PermitRootLogin yes",
            "UsePAM no", "PidFile none", "AllowTcpForwarding yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UseDNS no", "PrintMotd no"]) + "\n")
        ns.run("mkdir", "-p", "-m", "0755", "/run/sshd")
        ns.run("systemd-run", "--unit=tunneltest-sshd", "--service-type=exec", tunneltest.SSHD, "-D", "-e",
               "-f", f"{PKGTEST}/sshd/sshd_config")

    def setUp(self):
        if self.deb is None:
            self.fail(f"build-deb made no .deb:\n{self.build.stdout}{self.build.stderr}")

    def require(self, *steps):
        for step in steps:
            if step not in self.done:
                self.fail(f"an earlier step failed: not {step}")

    # -- helpers --

    def apt(self, *args):
        r = self.ns.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q", *args, check=False,
                        timeout=200)
        self.assertEqual(r.returncode, 0, f"apt-get {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
        return r

    def package_status(self):
        r = self.ns.run("dpkg-query", "-W", "-f", "${Status}", "tunneld", check=False)
        return r.stdout.strip() if r.returncode == 0 else "unknown"

    def tunnel_files(self):
        """The instance's configuration, key and known_hosts in /etc/tunneld (made by the
        package's tmpfiles), and the same defaults for the drop-in's tunnel."""
        ns = self.ns
        ns.put("/etc/tunneld/x_key", self.keys["client_key"], 0o600, "tunneld:tunneld")
        keytype, blob = self.keys["host_key.pub"].decode().split()[:2]
        ns.put("/etc/tunneld/x_known_hosts", f"127.0.0.1 {keytype} {blob}\n")
        return {"host": "127.0.0.1", "port": SSH_PORT, "user": "root", "identity_file": "/etc/tunneld/x_key",
                "ssh_config_file": "/dev/null", "gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2,
                "ssh_options": ["UserKnownHostsFile=/etc/tunneld/x_known_hosts", "GlobalKnownHostsFile=/dev/null",
                                "StrictHostKeyChecking=yes"]}

    def main_pid(self, unit):
        props = self.ns.show(unit, "ActiveState", "MainPID")
        self.assertEqual(props["ActiveState"], "active", f"{unit}: {props}")
        return props["MainPID"]

    def tunneld_units(self):
        """{unit: ACTIVE state} of every unit systemd knows whose name starts with tunneld."""
        out = self.ns.systemctl("list-units", "--all", "--plain", "--no-legend", "--full", "tunneld*").stdout
        return {f[0]: f[2] for f in (line.split() for line in out.splitlines()) if len(f) >= 3}

    def wants_links(self):
        """Every link in /etc/systemd/system that names a tunneld unit (enablements)."""
        r = self.ns.run("find", "/etc/systemd/system", "-type", "l", "(", "-name", "tunneld.service", "-o", "-name",
                        "tunneld@*.service", ")")
        return sorted(r.stdout.split())

    def assert_nothing_runs(self):
        """No tunneld and no ssh process, and no tunneld unit active, starting or stopping."""
        for comm in ("tunneld", "ssh"):
            r = self.ns.run("pgrep", "-a", "-x", comm, check=False)
            self.assertEqual(r.stdout, "", f"{comm} still runs")
        busy = {u: state for u, state in self.tunneld_units().items() if state != "inactive"}
        self.assertEqual(busy, {}, "tunneld units not inactive")

    # -- the steps --

    def test_1_install(self):
        """apt-get install under systemd: tunneld.service runs (the shipped file, no tunnel);
        /etc/tunneld.d is there, empty, the package's."""
        self.apt("install", "--no-install-recommends", self.deb_inside)
        self.assertEqual(self.package_status(), "install ok installed")
        self.main_pid("tunneld.service")
        self.assertEqual(self.ns.run("stat", "-c", "%a %U %G", "/etc/tunneld.d").stdout.strip(), "755 root root")
        self.assertEqual(self.ns.run("ls", "-A", "/etc/tunneld.d").stdout, "")
        self.assertEqual(self.ns.run("dpkg", "-S", "/etc/tunneld.d").stdout.strip(), "tunneld: /etc/tunneld.d")
        self.done.add("installed")

    def test_2_instance(self):
        """systemctl enable --now tunneld@x with a valid /etc/tunneld/x.conf: its tunnel is up
        (an ssh runs), and multi-user.target wants it."""
        self.require("installed")
        ns = self.ns
        text = tunneltest.render_config({}, self.tunnel_files(),
                                        [{"name": "x", "local_forwards": ["127.0.0.1:16001:127.0.0.1:22"]}])
        ns.put("/etc/tunneld/x.conf", text)
        ns.run("runuser", "-u", "tunneld", "--", "/usr/sbin/tunneld", "-t", "-c", "/etc/tunneld/x.conf")
        ns.systemctl("enable", "--now", INSTANCE)
        ssh = wait_state(self.ns.control(INSTANCE_SOCKET), "x", "up", timeout=30)["pid"]
        self.assertEqual(ns.run("pgrep", "-x", "ssh").stdout.split(), [str(ssh)])
        self.assertIn(f"/etc/systemd/system/multi-user.target.wants/{INSTANCE}", self.wants_links())
        self.done.add("instance")

    def test_3_remove(self):
        """apt-get remove stops the instance as well as tunneld.service: no tunneld, no ssh,
        no active unit. The configuration stays (x.conf, the instance's enablement)."""
        self.require("instance")
        self.apt("remove", "tunneld")
        self.assertEqual(self.package_status(), "deinstall ok config-files")
        self.assert_nothing_runs()
        self.assertTrue(self.ns.run("test", "-f", "/etc/tunneld/x.conf", check=False).returncode == 0)
        self.assertIn(f"/etc/systemd/system/multi-user.target.wants/{INSTANCE}", self.wants_links())
        self.done.add("removed")

    def test_4_reinstall_and_upgrade(self):
        """Installed again: tunneld.service runs, the instance is still enabled and starts;
        an upgrade (apt-get install --reinstall) restarts it on the new binary (new main pid,
        its tunnel up again). A drop-in file's tunnel runs under tunneld.service."""
        self.require("removed")
        ns = self.ns
        self.apt("install", "--no-install-recommends", self.deb_inside)
        self.main_pid("tunneld.service")
        self.assertEqual(ns.systemctl("is-enabled", INSTANCE, check=False).stdout.strip(), "enabled")
        ns.systemctl("start", INSTANCE)
        wait_state(self.ns.control(INSTANCE_SOCKET), "x", "up", timeout=30)
        before = self.main_pid(INSTANCE)
        self.apt("install", "--reinstall", "--no-install-recommends", self.deb_inside)
        after = self.main_pid(INSTANCE)
        self.assertNotEqual(after, before, "the instance still runs the binary of before the upgrade")
        wait_state(self.ns.control(INSTANCE_SOCKET), "x", "up", timeout=30)

        ns.put(DROPIN, tunneltest.render_config(None, None, [
            {**self.tunnel_files(), "name": "dropin",
             "local_forwards": ["127.0.0.1:16002:127.0.0.1:22"]}]))
        ns.systemctl("reload", "tunneld.service")
        wait_state(self.ns.control("/run/tunneld/control"), "dropin", "up", timeout=30)
        self.done.add("reinstalled")

    def test_5_purge(self):
        """apt-get purge: no tunneld or ssh process, no active unit, no link of any tunneld
        unit (the instance's enablement is gone too), no /var/lib/tunneld. /etc/tunneld.d
        is not empty: kept with its drop-in file, and postrm says so; /etc/tunneld too."""
        self.require("reinstalled")
        ns = self.ns
        r = self.apt("purge", "tunneld")
        self.assertIn(self.package_status(), ("unknown", "not-installed", "unknown ok not-installed"))
        self.assert_nothing_runs()
        self.assertEqual(self.wants_links(), [])
        self.assertEqual(ns.run("ls", "-A", "/var/lib/tunneld", check=False).returncode, 2, "/var/lib/tunneld is left")
        self.assertEqual(ns.run("ls", "-A", "/etc/tunneld.d").stdout.split(), [os.path.basename(DROPIN)])
        self.assertIn("tunneld: /etc/tunneld.d is not empty: kept", r.stdout + r.stderr)
        self.assertIn("tunneld: /etc/tunneld is not empty: kept", r.stdout + r.stderr)
        self.done.add("purged")

    def test_6_reinstall_after_purge(self):
        """Installed after the purge: tunneld.service starts the tunnel of the drop-in file
        that stayed; the instance is not enabled (its configuration in /etc/tunneld stayed,
        but not its link) and does not run. Purged again with /etc/tunneld.d and
        /etc/tunneld emptied, both go."""
        self.require("purged")
        ns = self.ns
        self.apt("install", "--no-install-recommends", self.deb_inside)
        self.main_pid("tunneld.service")
        wait_state(self.ns.control("/run/tunneld/control"), "dropin", "up", timeout=30)
        self.assertEqual(ns.systemctl("is-enabled", INSTANCE, check=False).stdout.strip(), "disabled")
        self.assertEqual(ns.systemctl("is-active", INSTANCE, check=False).stdout.strip(), "inactive")
        self.assertEqual(self.wants_links(), ["/etc/systemd/system/multi-user.target.wants/tunneld.service"])

        ns.run("sh", "-c", "rm -f /etc/tunneld.d/* /etc/tunneld/x.conf /etc/tunneld/x_key /etc/tunneld/x_known_hosts")
        r = self.apt("purge", "tunneld")
        self.assert_nothing_runs()
        self.assertEqual(self.wants_links(), [])
        for path in ("/etc/tunneld.d", "/etc/tunneld", "/var/lib/tunneld"):
            with self.subTest(path=path):
                self.assertNotEqual(ns.run("test", "-e", path, check=False).returncode, 0, f"{path} is left")
        self.assertNotIn("is not empty", r.stdout + r.stderr)


if __name__ == "__main__":
    tunneltest.main()
