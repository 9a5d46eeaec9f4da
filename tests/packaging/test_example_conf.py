#!/usr/bin/env python3
"""The example configuration (conf/tunneld.conf, installed as /etc/tunneld.conf and as
tunneld.conf.example): it says it lists every setting, commented out, at its default. So
every setting tunneld.conf(5) documents is in it, the values it shows commented out in the
global and defaults sections are the defaults the page states, and the file validates with
tunneld -t as shipped, with those settings uncommented, and with its commented-out example
tunnels uncommented.
"""

import os
import re
import unittest

import tunneltest
from tunneltest import documented_settings, localize_etc, read_utf8, stated_default

SOURCE_ROOT = tunneltest.SOURCE_ROOT
EXAMPLE = os.path.join(SOURCE_ROOT, "conf", "tunneld.conf")
MAN_PAGE = os.path.join(SOURCE_ROOT, "man", "tunneld.conf.5.scd")


def parse_value(v):
    v = v.strip()
    if v.startswith('"'):
        return v.strip('"')
    if v in ("true", "false"):
        return v
    try:
        return float(v)
    except ValueError:
        return v


# "#name = value;" at the start of a line (after indentation), optionally followed by a
# comment: a setting shown commented out, as opposed to prose comments ("# A reverse…").
COMMENTED_SETTING = re.compile(r"^(\s*)#(\w+)( = .*;)(\s+#.*)?$")


def global_and_defaults_part(text):
    """The file up to the tunnels list: the global settings and the defaults group."""
    head, sep, _ = text.partition("\ntunnels = (")
    assert sep, f"no tunnels list in {EXAMPLE}"
    return head


class Files:
    """The /etc/tunneld/ files a configuration names, made in a temporary directory (keys
    and ssh config files 0600, programs 0755), so that enabled tunnels validate."""

    def __init__(self, test):
        self.dir = tunneltest.temp_dir(test)

    def localize(self, text):
        text = localize_etc(text, self.dir)
        # the machine's /etc/tunneld.d must not matter
        return re.sub(r'(?m)^include_dir = .*;', 'include_dir = "none";', text)

    def check(self, text):
        path = os.path.join(self.dir, "tunneld.conf")
        with open(path, "w") as f:
            f.write(text)
        return tunneltest.run_tunneld("-t", "--allow-insecure-config", "-c", path)


class ExampleConfTest(unittest.TestCase):
    def test_every_documented_setting_is_listed(self):
        """Each setting with an entry in tunneld.conf(5) appears in the example as a
        setting (commented out or not), but for those that no longer do anything (loaded
        with a warning, not to be written), and the example sets nothing the page does not
        document."""
        documented = {name: paren for name, (_, paren) in documented_settings().items()}
        page = read_utf8(MAN_PAGE)
        retired = set(re.findall(r"(?m)^\*(\w+)\* \([a-z]+, no longer does anything\)$", page))
        self.assertEqual(retired, {"exit_on_forward_failure", "multiplex"})
        documented = {n: v for n, v in documented.items() if n not in retired}
        self.assertGreater(len(documented), 40, f"could not read the settings of {MAN_PAGE}")
        text = read_utf8(EXAMPLE)
        for name in sorted(documented):
            with self.subTest(setting=name):
                self.assertTrue(re.search(rf"(?m)^\s*#?\s*{name} = ", text),
                                f"{name} is documented in tunneld.conf(5) but not in conf/tunneld.conf")
        listed = set(re.findall(r"(?m)^\s*#?\s*([a-z_]+) = ", text))
        self.assertEqual(sorted(listed - set(documented) - {"defaults", "tunnels"}), [],
                         "settings in conf/tunneld.conf that tunneld.conf(5) does not document")

    def test_example_validates(self):
        """tunneld -t accepts the file as shipped (--allow-insecure-config: a checkout's
        files may be owned by anyone)."""
        r = tunneltest.run_tunneld("-t", "--allow-insecure-config", "-c", EXAMPLE)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout, r"^configuration OK: \d+ tunnels?")
        self.assertEqual(r.stderr, "")

    def test_commented_values_are_the_defaults(self):
        """Each setting shown commented out in the global and defaults sections has the
        default tunneld.conf(5) states (settings without one show an example value), and
        with all of them uncommented the file still validates."""
        documented = {name: paren for name, (_, paren) in documented_settings().items()}
        text = read_utf8(EXAMPLE)
        shown = {}
        for line in global_and_defaults_part(text).splitlines():
            m = COMMENTED_SETTING.match(line)
            if m:
                shown[m.group(2)] = parse_value(m.group(3)[3:-1])
        self.assertGreater(len(shown), 30, "too few commented-out settings found")
        checked = 0
        for name, value in sorted(shown.items()):
            with self.subTest(setting=name):
                self.assertTrue(name in documented, f"{name} is not documented in tunneld.conf(5)")
                default = stated_default(documented[name])
                if default is not None:
                    checked += 1
                    self.assertEqual(value, default, f"{name}: the page's default is {documented[name]!r}")
        self.assertGreater(checked, 20)

        files = Files(self)
        uncommented = "\n".join(COMMENTED_SETTING.sub(r"\1\2\3\4", line) for line in text.splitlines()) + "\n"
        r = files.check(files.localize(uncommented))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_commented_tunnels_validate(self):
        """The example tunnels commented out in the tunnels list validate once uncommented
        (enabled, so their files and ports are checked too), with the defaults uncommented."""
        text = read_utf8(EXAMPLE)
        out, in_block, blocks = [], False, 0
        for line in text.splitlines():
            if re.match(r"^\s*#\{$", line):
                in_block, blocks = True, blocks + 1
            if in_block:
                line = re.sub(r"^(\s*)#", r"\1", line, count=1)
                if re.match(r"^\s*\},?$", line):
                    in_block = False
            else:
                line = COMMENTED_SETTING.sub(r"\1\2\3\4", line)
            out.append(line)
        self.assertFalse(in_block, "a commented-out tunnel without its closing #}")
        self.assertGreaterEqual(blocks, 4, "too few commented-out example tunnels found")
        files = Files(self)
        r = files.check(files.localize("\n".join(out) + "\n"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout, rf"^configuration OK: {blocks + 1} tunnels \({blocks} enabled\)")


if __name__ == "__main__":
    tunneltest.main()
