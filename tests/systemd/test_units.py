#!/usr/bin/env python3
"""The generated systemd units (build/systemd/tunneld.service and tunneld@.service), offline:
`systemd-analyze verify` finds nothing to say about them, `systemd-analyze security` rates
their exposure at most 2.0, and at the number README.md quotes, and their commands agree on
the config file and control socket.

The units name the installed binaries (/usr/local/...); verify wants executables that exist,
so each test copies the units into a temporary directory with the Exec*= paths pointing at the
built tunneld and tunnelctl.
"""

import os
import re
import shutil
import subprocess
import unittest

import tunneltest
from systemdtest import TUNNELCTL, require_tunnelctl

UNIT_DIR = os.path.join(os.path.dirname(tunneltest.TUNNELD), "..", "systemd")
UNITS = ("tunneld.service", "tunneld@.service")
MAX_EXPOSURE = 2.0
README = os.path.join(tunneltest.SOURCE_ROOT, "README.md")


def read_unit(name):
    with open(os.path.join(UNIT_DIR, name)) as f:
        return f.read()


def with_built_binaries(text):
    """The unit text with every Exec*= command's tunneld and tunnelctl the built ones."""
    def fix(m):
        line = re.sub(r"(?<=[=\s])[^\s=]*/tunneld(?=\s|$)", tunneltest.TUNNELD, m.group(0))
        return re.sub(r"(?<=[=\s])[^\s=]*/tunnelctl(?=\s|$)", TUNNELCTL, line)
    return re.sub(r"(?m)^Exec\w+=.*$", fix, text)


def readme_exposure():
    """The exposure README.md quotes for the units ("... `systemd-analyze security
    --offline=true` rates at exposure 1.3"), as printed; AssertionError unless it quotes one."""
    with open(README) as f:
        text = " ".join(f.read().split())
    quoted = set(re.findall(r"`systemd-analyze security[^`]*` rates at exposure (\d+(?:\.\d+)?)", text))
    if len(quoted) != 1:
        raise AssertionError(f"README.md should quote one systemd-analyze security exposure, not {sorted(quoted)}")
    return quoted.pop()


def settings(text, key):
    """Every value of key= in the unit text, in order."""
    return re.findall(rf"(?m)^{re.escape(key)}=(.*)$", text)


class UnitTest(unittest.TestCase):
    def setUp(self):
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze is not installed")
        self.tmp = tunneltest.temp_dir(self)

    def install(self, name):
        """The unit with the built binaries, in our temporary directory; its path."""
        require_tunnelctl()
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(with_built_binaries(read_unit(name)))
        return path

    def analyze(self, *args):
        return subprocess.run(["systemd-analyze", "--no-pager", *args], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, cwd=self.tmp)

    def test_exec_paths_rewritten(self):
        """The unit copies run the built binaries: every Exec*= line starts with one of them."""
        for name in UNITS:
            text = with_built_binaries(read_unit(name))
            execs = re.findall(r"(?m)^Exec\w+=(\S+)", text)
            self.assertEqual(len(execs), 3, f"{name}: ExecStartPre, ExecStart, ExecReload")
            self.assertTrue(set(execs) <= {tunneltest.TUNNELD, TUNNELCTL}, f"{name}: {execs}")

    def test_verify(self):
        """systemd-analyze verify prints nothing about either unit and exits 0."""
        for name in UNITS:
            with self.subTest(name):
                r = self.analyze("verify", "--man=no", self.install(name))
                about_us = [line for line in (r.stdout + r.stderr).splitlines() if "tunneld" in line]
                self.assertEqual(about_us, [], r.stdout + r.stderr)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_security_exposure(self):
        """systemd-analyze security --offline=true rates each unit's exposure at most 2.0, and
        exactly at the number README.md quotes for them."""
        quoted = readme_exposure()
        for name in UNITS:
            with self.subTest(name):
                r = self.analyze("security", "--offline=true", self.install(name))
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                m = re.search(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)", r.stdout)
                self.assertIsNotNone(m, r.stdout + r.stderr)
                problems = "\n".join(line for line in r.stdout.splitlines() if line.startswith("✗"))
                self.assertLessEqual(float(m.group(2)), MAX_EXPOSURE, problems)
                self.assertEqual(m.group(2), quoted, f"README.md quotes exposure {quoted}, systemd-analyze "
                                 f"says {m.group(2)} for {name}: update README.md\n{problems}")

    def test_commands_agree(self):
        """ExecStartPre checks ExecStart's file; ExecReload finds ExecStart's control socket from
        its pid (wherever the configuration put it), and the default socket is in
        RuntimeDirectory."""
        for name in UNITS:
            with self.subTest(name):
                text = read_unit(name)
                (pre,), (start,), (reload,) = (settings(text, k) for k in ("ExecStartPre", "ExecStart", "ExecReload"))
                self.assertEqual(pre.split()[1:], ["-t", *start.split()[1:]])
                self.assertEqual(reload.split()[1:], ["--pid", "$MAINPID", "reload"])
                runtime, = settings(text, "RuntimeDirectory")
                sock = re.search(r"-s (\S+)", start)
                start_sock = sock.group(1) if sock else "/run/tunneld/control"  # tunneld's default
                self.assertEqual(os.path.dirname(start_sock), f"/run/{runtime}")

    def test_documentation_is_shipped(self):
        """Every man: page named in Documentation= has its source in the tree's man/ directory."""
        man_dir = os.path.join(tunneltest.SOURCE_ROOT, "man")
        shipped = os.listdir(man_dir) if os.path.isdir(man_dir) else []
        for name in UNITS:
            for page, section in re.findall(r"man:([\w.@-]+)\((\d)\)", read_unit(name)):
                self.assertTrue(any(f.startswith(f"{page}.{section}") for f in shipped),
                                f"{name}: man:{page}({section}) is not in {man_dir}")


if __name__ == "__main__":
    tunneltest.main()
