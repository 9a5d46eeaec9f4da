#!/usr/bin/env python3
"""The RPM spec (packaging/rpm/tunneld.spec): rpmspec parses it, its version is meson's,
rpmbuild -bs makes a source package from a tarball of this tree and the sysusers file,
and its %files covers everything meson installs. Fedora's own macros (%meson, %_unitdir,
%sysusers_create_compat...) are not on a Debian machine: they stay unexpanded here, and
the real build is Fedora's (see README.md, "Installing and running tunneld").

Skipped when rpm's tools (Debian package rpm) are not installed.
"""

import fnmatch
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import unittest

import tunneltest
from tunneltest import project_version

SOURCE_ROOT = tunneltest.SOURCE_ROOT
BUILD_ROOT = os.path.dirname(os.path.dirname(tunneltest.TUNNELD))
SPEC = os.path.join(SOURCE_ROOT, "packaging", "rpm", "tunneld.spec")


def tree_files():
    """The files of the source tree that git knows (committed or not), else all but build
    directories."""
    r = subprocess.run(["git", "-C", SOURCE_ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True)
    if r.returncode == 0:
        return [f for f in r.stdout.decode().split("\0") if f and os.path.isfile(os.path.join(SOURCE_ROOT, f))]
    out = []
    for d, dirs, files in os.walk(SOURCE_ROOT):
        dirs[:] = [x for x in dirs if not x.startswith(("build", ".git"))]
        out += [os.path.relpath(os.path.join(d, f), SOURCE_ROOT) for f in files]
    return out


@unittest.skipUnless(shutil.which("rpmspec") and shutil.which("rpmbuild"),
                     "rpmspec and rpmbuild are not installed (Debian package rpm)")


class SpecTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        r = subprocess.run(["rpmspec", "-P", SPEC], capture_output=True, text=True)
        cls.parsed = r

    def test_spec_parses_with_meson_version(self):
        """rpmspec -P expands the spec; Version is meson.build's, Source1 is the sysusers
        file the %pre scriptlet hands to %sysusers_create_compat; the package owns the
        drop-in directory meson installs empty (introspection does not list it)."""
        self.assertEqual(self.parsed.returncode, 0, self.parsed.stderr)
        text = self.parsed.stdout
        self.assertRegex(text, rf"(?m)^Version:\s+{re.escape(project_version())}$")
        self.assertRegex(text, r"(?m)^Source1:\s+tunneld\.sysusers$")
        self.assertRegex(text, r"(?m)^%sysusers_create_compat \S+/tunneld\.sysusers$")
        for macro in ("%systemd_post tunneld.service", "%systemd_preun tunneld.service",
                      "%systemd_postun_with_restart tunneld.service", "%config(noreplace) /etc/tunneld.conf",
                      "%dir /etc/tunneld.d"):
            with self.subTest(macro=macro):
                self.assertIn(macro, text)

    def test_source_package_builds(self):
        """rpmbuild -bs makes tunneld-VERSION-1.src.rpm from a tarball of the tree."""
        top = tunneltest.temp_dir(self)
        version = project_version()
        os.makedirs(os.path.join(top, "SOURCES"))
        with tarfile.open(os.path.join(top, "SOURCES", f"tunneld-{version}.tar.xz"), "w:xz") as tar:
            for f in tree_files():
                tar.add(os.path.join(SOURCE_ROOT, f), arcname=f"tunneld-{version}/{f}", recursive=False)
        shutil.copy(os.path.join(SOURCE_ROOT, "systemd", "tunneld.sysusers"), os.path.join(top, "SOURCES"))
        r = subprocess.run(["rpmbuild", "-bs", "--define", f"_topdir {top}", SPEC], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        srpm = os.path.join(top, "SRPMS", f"tunneld-{version}-1.src.rpm")
        self.assertTrue(os.path.exists(srpm), r.stdout)
        listed = subprocess.run(["rpm", "-qpl", srpm], capture_output=True, text=True, check=True).stdout.split()
        self.assertEqual(sorted(listed), sorted([f"tunneld-{version}.tar.xz", "tunneld.spec", "tunneld.sysusers"]))

    @unittest.skipUnless(os.path.exists(os.path.join(BUILD_ROOT, "meson-info", "intro-installed.json")),
                         "no meson build directory next to $TUNNELD")
    def test_files_cover_what_meson_installs(self):
        """Every file meson installs (meson introspect --installed) matches an entry of
        %files, by name or as the content of a listed directory."""
        self.assertEqual(self.parsed.returncode, 0, self.parsed.stderr)
        files_section = self.parsed.stdout.split("\n%files", 1)[1].split("\n%changelog", 1)[0]
        entries = []
        for line in files_section.splitlines()[1:]:
            line = re.sub(r"^(%(?:dir|config\(\w+\)|attr\([^)]*\)|doc|license)\s*)+", "", line.strip())
            if line.startswith("/") or line.startswith("%{"):
                entries.append(line)
        with open(os.path.join(BUILD_ROOT, "meson-info", "intro-installed.json")) as f:
            installed = json.load(f).values()
        self.assertGreater(len(installed), 10)
        for path in installed:
            name = os.path.basename(path)
            parent = os.path.basename(os.path.dirname(path))
            with self.subTest(path=path):
                covered = False
                for e in entries:
                    if e.endswith("/"):  # a directory and everything in it
                        covered |= os.path.basename(e.rstrip("/")) == parent
                        continue
                    where = os.path.dirname(e)
                    covered |= fnmatch.fnmatch(name, os.path.basename(e)) and (
                        "%{" in where or os.path.basename(where) == parent)
                self.assertTrue(covered, f"{path} is installed by meson but not in %files")


if __name__ == "__main__":
    tunneltest.main()
