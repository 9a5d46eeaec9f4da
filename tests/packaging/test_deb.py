#!/usr/bin/env python3
"""The Debian package: packaging/build-deb builds it, lintian finds no error in it, and
apt-get installs it: the binaries, units, sysusers and tmpfiles files, man pages and
completions are in place, /etc/tunneld.conf is a conffile that validates (also as the
tunneld user the unit runs as), the tunneld user exists with its directories,
systemd-analyze verify accepts the installed units; apt-get purge then removes all of it
but the user (Debian policy).

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

import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import tunneltest
from tunneltest import wait_until

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


def meson_version():
    with open(os.path.join(SOURCE_ROOT, "meson.build")) as f:
        return re.search(r"version:\s*'([^']+)'", f.read()).group(1)


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
        cls.out = tempfile.mkdtemp(prefix="tunneltest-deb-")
        cls.addClassCleanup(shutil.rmtree, cls.out, True)
        started = time.monotonic()
        r = subprocess.run([BUILD_DEB, cls.out], capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
        cls.build_seconds = time.monotonic() - started
        cls.build = r
        debs = sorted(glob.glob(os.path.join(cls.out, "tunneld_*.deb")))
        cls.deb = debs[-1] if debs else None
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
        self.assertTrue(version == meson_version() or version.startswith(meson_version() + "-"), version)
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
        self.assertRegex(status, rf"^install ok installed {re.escape(meson_version())}", f"was: {before!r}")
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
        self.assertEqual(ns.run("tunneld", "--version").stdout.strip(), f"tunneld {meson_version()}")
        self.assertEqual(ns.run("tunnelctl", "--version").stdout.strip(), f"tunnelctl {meson_version()}")
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
        shell); systemd-tmpfiles made its directories with the right owners and modes."""
        self.require("installed")
        ns = self.ns
        ns.run("id", "tunneld")
        fields = ns.run("getent", "passwd", "tunneld").stdout.strip().split(":")
        self.assertEqual(fields[5:], ["/var/lib/tunneld", "/usr/sbin/nologin"])
        self.assertLess(int(fields[2]), 1000, "not a system user")
        ns.run("getent", "group", "tunneld")
        for path, want in (("/var/lib/tunneld", "750 tunneld tunneld"), ("/var/lib/tunneld/.ssh", "700 tunneld tunneld"),
                           ("/etc/tunneld", "750 root tunneld")):
            with self.subTest(path=path):
                self.assertEqual(ns.run("stat", "-c", "%a %U %G", path).stdout.strip(), want)

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
        /var/lib/tunneld and the emptied /etc/tunneld; the user stays (Debian policy)."""
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


if __name__ == "__main__":
    tunneltest.main()
