#!/usr/bin/env python3
"""The man pages: each one meson built renders with no groff or man warnings, and what
they say matches the code: every setting of daemon/config.c's tables is documented in
tunneld.conf(5) with the default the code uses, every example there validates with
tunneld -t, and every option and command of tunneld --help and tunnelctl --help is in
tunneld(8) and tunnelctl(1).

The rendering tests read the pages from the build directory (next to daemon/, found
from $TUNNELD); they are skipped when the build has no man pages (-Dman=auto without
scdoc, or -Dman=disabled). The source checks always run.
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import tunneltest
from tunneltest import documented_settings, localize_etc, read_utf8, stated_default

SOURCE_ROOT = tunneltest.SOURCE_ROOT
BUILD_ROOT = os.path.dirname(os.path.dirname(tunneltest.TUNNELD))
MAN_SRC = os.path.join(SOURCE_ROOT, "man")
MAN_BUILD = os.path.join(BUILD_ROOT, "man")
PAGES = ["tunneld.8", "tunneld.conf.5", "tunnelctl.1"]
# The settings tables, their defaults and config_new() live in these files.
CONFIG_SOURCES = [os.path.join(SOURCE_ROOT, "daemon", f)
                  for f in ("config_parse.c", "config.c", "spec.c", "config_check.c")]
CONFIG_C = ", ".join(os.path.relpath(p, SOURCE_ROOT) for p in CONFIG_SOURCES)


def source(page):
    return read_utf8(os.path.join(MAN_SRC, page + ".scd"))


def config_text():
    return "\n".join(read_utf8(p) for p in CONFIG_SOURCES)


def settings_tables():
    """{table: [setting names]} of daemon/config_parse.c, in table order."""
    text = config_text()
    tables = {}
    for table in ("global_settings", "tunnel_settings", "probe_settings"):
        m = re.search(r"static const struct setting " + table + r"\[\] = \{(.*?)\n\};", text, re.S)
        assert m, f"{table} not found in {CONFIG_C}"
        tables[table] = re.findall(r'\.name = "(\w+)"', m.group(1))
        assert tables[table], f"{table} is empty?"
    return tables


def code_defaults():
    """{setting: default} from config_spec_defaults() and config_new(): numbers, booleans,
    enum names and string literals (what the code sets explicitly; the rest is zero)."""
    text = config_text()
    enum_names = dict(re.findall(r'\[(\w+)\] = "([^"]+)"', text))
    fields = {}
    for table, member in (("global_settings", "G"), ("tunnel_settings", "F"), ("probe_settings", "P")):
        body = re.search(r"static const struct setting " + table + r"\[\] = \{(.*?)\n\};", text, re.S).group(1)
        for name, field in re.findall(r'\.name = "(\w+)".*?\.offset = ' + member + r"\((?:sup\.)?(\w+)\)", body):
            fields[(table, field)] = name

    def value(v):
        v = v.strip()
        if v in ("true", "false"):
            return v
        if v in enum_names:
            return enum_names[v]
        m = re.fullmatch(r'strdup\("([^"]*)"\)', v)
        if m:
            return m.group(1)
        try:
            return float(v)
        except ValueError:
            return None  # a macro or an expression: not checked

    defaults = {}
    spec = re.search(r"^(?:static )?void config_spec_defaults\(.*?\n\}", text, re.S | re.M).group(0)
    probe = re.search(r"\.probe = \{(.*?)\}", spec).group(1)
    for field, v in re.findall(r"\.(\w+) = ([^,{}]+)", probe):
        defaults[fields[("probe_settings", field)]] = value(v)
    for field, v in re.findall(r"^\s*\.(?:sup\.)?(\w+) = ([^,{}\n]+),", spec, re.M):
        if ("tunnel_settings", field) in fields:
            defaults[fields[("tunnel_settings", field)]] = value(v)
    new = re.search(r"static int config_new\(.*?\n\}", text, re.S).group(0)
    for field, v in re.findall(r"c->(\w+) = ([^;]+);", new):
        if ("global_settings", field) in fields:
            defaults[fields[("global_settings", field)]] = value(v)
    return {k: v for k, v in defaults.items() if v is not None}


class Configs:
    """Write configurations into a temporary directory and run tunneld -t on them; the
    /etc/tunneld/ files the examples name are made there (keys 0600, programs 0755)."""

    def __init__(self, test):
        self.dir = tunneltest.temp_dir(test)
        self.n = 0

    def check(self, text):
        self.n += 1
        path = os.path.join(self.dir, f"example-{self.n}.conf")
        with open(path, "w") as f:
            # no drop-ins: the machine's /etc/tunneld.d must not matter
            f.write('include_dir = "none";\n' if "include_dir" not in text else "")
            f.write(localize_etc(text, self.dir))
        r = tunneltest.run_tunneld("-t", "-c", path)
        return r, path


class ManSourceTest(unittest.TestCase):
    def test_every_setting_is_documented_in_its_section(self):
        """Every setting of the code's tables has its own entry in tunneld.conf(5), in the
        right section, and the page documents no setting the code does not have."""
        text = source("tunneld.conf.5")
        documented = documented_settings(text)
        tables = settings_tables()
        sections = {"global_settings": "GLOBAL SETTINGS", "tunnel_settings": "TUNNEL SETTINGS",
                    "probe_settings": "PROBE SETTINGS"}
        known = {"name"}
        for table, names in tables.items():
            for name in names:
                known.add(name)
                with self.subTest(setting=name):
                    self.assertIn(name, documented, f"{name} ({table}) is not documented in tunneld.conf.5.scd")
                    self.assertEqual(documented[name][0], sections[table], f"{name} is in the wrong section")
        self.assertIn("name", documented)
        self.assertEqual(sorted(set(documented) - known), [], "documented settings the code does not know")

    def test_defaults_match_the_code(self):
        """The default each entry states is the one spec_set_defaults() or config_new()
        sets (or zero/false when they set none)."""
        documented = documented_settings(source("tunneld.conf.5"))
        defaults = code_defaults()
        self.assertGreater(len(defaults), 20, "could not read the defaults from config.c")
        for name, (_, paren) in documented.items():
            with self.subTest(setting=name):
                stated = stated_default(paren)
                if name in defaults:
                    self.assertEqual(stated, defaults[name], f"{name}: the page says {paren!r}")
                elif stated is not None:
                    self.assertIn(stated, (0.0, "false"), f"{name}: the code sets no default, the page says {paren!r}")

    def test_setting_examples_validate(self):
        """Each entry's 'Example:' validates with tunneld -t where that setting belongs."""
        configs = Configs(self)
        section = None
        examples = []
        for line in source("tunneld.conf.5").splitlines():
            if line.startswith("# "):
                section = line[2:].strip()
            m = re.match(r"^\tExample: \*(.*)\*$", line)
            if m:
                examples.append((section, m.group(1).replace("\\_", "_")))
        self.assertGreater(len(examples), 40)
        for section, snippet in examples:
            with self.subTest(example=snippet):
                tunnel = 'name = "t"; host = "h.example.org";'
                if section == "GLOBAL SETTINGS":
                    text = f"{snippet}\ntunnels = ( {{ {tunnel} }} );\n"
                elif section == "TUNNEL SETTINGS":
                    body = snippet if snippet.startswith(("name =", "host =")) else f"{tunnel} {snippet}"
                    if snippet.startswith("name ="):
                        body += ' host = "h.example.org";'
                    elif snippet.startswith("host ="):
                        body += ' name = "t";'
                    others = ' { name = "bastion"; host = "b.example.org"; },' if "bastion" in snippet else ""
                    text = f"tunnels = ({others} {{ {body} }} );\n"
                elif section == "PROBE SETTINGS":
                    probe = snippet if snippet.startswith("connect") else f'connect = "127.0.0.1:5000"; {snippet}'
                    text = f"tunnels = ( {{ {tunnel} probe = {{ {probe} }}; }} );\n"
                else:
                    self.fail(f"an example in section {section}")
                r, path = configs.check(text)
                self.assertEqual(r.returncode, 0, f"{text}\n{r.stdout}{r.stderr}")

    def test_configuration_examples_validate(self):
        """Every configuration in a literal block of tunneld.conf(5) validates."""
        configs = Configs(self)
        blocks = re.findall(r"^```\n(.*?)^```$", source("tunneld.conf.5"), re.S | re.M)
        blocks = [b for b in blocks if "tunnels = (" in b]
        self.assertGreaterEqual(len(blocks), 5)
        for block in blocks:
            with self.subTest(block=block.splitlines()[0]):
                r, path = configs.check(block)
                self.assertEqual(r.returncode, 0, f"{block}\n{r.stdout}{r.stderr}")
                self.assertRegex(r.stdout, r"^configuration OK: \d+ tunnels?")

    def test_alert_rules_and_query_are_valid(self):
        """tunnelctl(1)'s alert rules pass `promtool check rules`, and its availability
        query names only metrics tunneld exports (promtool: Debian's prometheus package)."""
        promtool = shutil.which("promtool")
        if not promtool:
            self.skipTest("promtool not installed (apt-get install --no-install-recommends prometheus)")
        blocks = re.findall(r"^\t```\n(.*?)^\t```", source("tunnelctl.1"), re.S | re.M)
        rules = [b for b in blocks if "- alert:" in b]
        self.assertEqual(len(rules), 1, "one block of alert rules")
        body = "".join("    " + line[1:] + "\n" for line in rules[0].splitlines())
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
            f.write("groups:\n  - name: tunneld\n    rules:\n" + body)
            f.flush()
            r = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        metrics_c = read_utf8(os.path.join(SOURCE_ROOT, "daemon", "metrics.c"))
        for b in blocks:
            for name in re.findall(r"\btunneld_\w+", b):
                self.assertIn(f'"{name}"', metrics_c, f"{name} in tunnelctl(1) is not a metric tunneld exports")

    def test_options_and_commands_are_documented(self):
        """Every option of tunneld --help is in tunneld(8); every option and command of
        tunnelctl --help is in tunnelctl(1)."""
        for program, page in ((tunneltest.TUNNELD, "tunneld.8"), (tunneltest.TUNNELCTL, "tunnelctl.1")):
            help_text = subprocess.run([program, "--help"], capture_output=True, text=True, check=True).stdout
            text = source(page)
            options = set()
            for line in help_text.splitlines():
                m = re.match(r"^\s+(-[A-Za-z])?(?:, )?(--[a-z][\w-]*)?", line)
                if line.strip().startswith("-") and m:
                    options.update(o for o in m.groups() if o)
            self.assertGreaterEqual(len(options), 8, f"options of {program} --help")
            for opt in sorted(options):
                with self.subTest(page=page, option=opt):
                    self.assertTrue(f"*{opt}*" in text, f"{opt} of {os.path.basename(program)} --help is not in {page}.scd")
        help_text = subprocess.run([tunneltest.TUNNELCTL, "--help"], capture_output=True, text=True, check=True).stdout
        commands = re.findall(r"^    (\w+)(?: |$)", help_text.split("COMMANDS")[1].split("OPTIONS")[0], re.M)
        self.assertEqual(commands, ["status", "start", "stop", "restart", "wait", "events", "reload", "check", "metrics"])
        for cmd in commands:
            with self.subTest(command=cmd):
                self.assertRegex(source("tunnelctl.1"), rf"(?m)^\*{cmd}\*")

    def test_failure_classes_are_documented(self):
        """Every failure class of daemon/ssh_output.c is explained in tunneld(8)."""
        text = read_utf8(os.path.join(SOURCE_ROOT, "daemon", "ssh_output.c"))
        names = re.findall(r'\[FAILURE_\w+\] = "([\w-]+)"', text)
        self.assertIn("auth", names)
        page = source("tunneld.8")
        for name in names:
            if name != "none":
                with self.subTest(failure=name):
                    self.assertRegex(page, rf"(?m)^\*{re.escape(name)}\*$")


@unittest.skipUnless(os.path.isdir(MAN_BUILD) and all(os.path.exists(os.path.join(MAN_BUILD, p)) for p in PAGES),
                     f"the man pages are not built in {MAN_BUILD} (scdoc "
                     f"{'is installed: is -Dman disabled?' if shutil.which('scdoc') else 'is not installed'})")


class ManRenderTest(unittest.TestCase):
    def run_quiet(self, argv, env=None):
        r = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, f"{' '.join(argv)}: exit {r.returncode}\n{r.stderr}")
        self.assertEqual(r.stderr, "", f"{' '.join(argv)} warned")
        return r.stdout

    def test_pages_render_without_warnings(self):
        """groff -ww (all warnings) with the man macros and tbl, as text and as
        terminal output, and man itself (as lintian runs it) print no warning."""
        env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
        for page in PAGES:
            path = os.path.join(MAN_BUILD, page)
            with self.subTest(page=page):
                self.run_quiet(["groff", "-man", "-t", "-ww", "-z", path])
                text = re.sub(r".\x08", "", self.run_quiet(["groff", "-man", "-t", "-ww", "-Tutf8", path]))
                self.assertTrue(re.search(r"(?m)^NAME$", text), "no NAME section in the rendered page")
                if shutil.which("man"):
                    self.run_quiet(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path], env=env)
                    shown = re.sub(r".\x08", "", self.run_quiet(["man", "-P", "cat", "-l", path], env=env))
                    self.assertTrue(re.search(r"(?m)^SEE ALSO$", shown), "no SEE ALSO in man's output")

    def test_pages_have_their_paths_filled_in(self):
        """The @config_file@-style placeholders are replaced by the build's paths, and
        each page has the header of its section."""
        for page in PAGES:
            with self.subTest(page=page):
                text = read_utf8(os.path.join(MAN_BUILD, page))
                self.assertNotRegex(text, r"@[a-z_]+@")
                name, section = page.rsplit(".", 1)
                self.assertRegex(text, rf'(?m)^\.TH "{re.escape(name)}" "{section}"')

    def test_pages_name_no_line_too_wide(self):
        """At 80 columns no line of a page is wider than the terminal (literal blocks are
        not wrapped)."""
        env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
        for page in PAGES:
            shown = self.run_quiet(["man", "-P", "cat", "-l", os.path.join(MAN_BUILD, page)], env=env)
            for line in shown.splitlines():
                with self.subTest(page=page):
                    self.assertLessEqual(len(re.sub(r".\x08", "", line)), 80, line)


if __name__ == "__main__":
    tunneltest.main()
