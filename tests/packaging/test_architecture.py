#!/usr/bin/env python3
"""ARCHITECTURE.md stays true of the tree: its module table has one row per daemon/*.c
file and none for a file that does not exist; every path under tests/ it names exists,
and so does every test, class or scenario named in parentheses after one; every row of
its invariant table names a test, and the code it points to (a file, a function, a
constant) exists in daemon/."""

import os
import re
import unittest

import tunneltest

ROOT = tunneltest.SOURCE_ROOT
DAEMON = os.path.join(ROOT, "daemon")
DOC = os.environ.get("TUNNELD_ARCHITECTURE") or os.path.join(ROOT, "ARCHITECTURE.md")

RENAMED = {}    # a path ARCHITECTURE.md names → the files it may still be called (a rename in flight)

TEST_PATH = r"tests/[\w./-]+"
IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def section(text, title):
    """The body of the "## title…" section."""
    m = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    return m.group(1) if m else ""


def table_rows(body):
    """The cells of each row of the markdown tables in body (header and rule left out)."""
    rows = []
    lines = [line for line in body.splitlines() if line.startswith("|")]
    for i, line in enumerate(lines):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        if i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            continue    # a header: the rule follows it
        rows.append(cells)
    return rows


def versions(path):
    """The files a path of the document stands for, those that exist."""
    return [p for p in [path, *RENAMED.get(path, [])] if os.path.exists(os.path.join(ROOT, p))]


def daemon_words():
    words = set()
    for name in os.listdir(DAEMON):
        if name.endswith((".c", ".h")):
            words.update(re.findall(r"\w+", read(os.path.join(DAEMON, name))))
    return words


class ArchitectureTest(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.text = read(DOC)

    def test_module_table_is_the_tree(self):
        rows = table_rows(section(self.text, "Modules"))
        self.assertTrue(rows, f"{DOC}: no module table under '## Modules'")
        named = [m.group(1) for cells in rows for m in [re.fullmatch(r"`(\w+\.c)`", cells[0])] if m]
        tree = {n for n in os.listdir(DAEMON) if n.endswith(".c")}
        problems = [f"not one daemon/*.c file: {cells[0]}" for cells in rows
                    if not re.fullmatch(r"`(\w+\.c)`", cells[0])]
        problems += [f"{n}: more than one row" for n in sorted({n for n in named if named.count(n) > 1})]
        problems += [f"{n}: no row" for n in sorted(tree - set(named))]
        problems += [f"{n}: no such file" for n in sorted(set(named) - tree)]
        self.assertEqual(problems, [], "the module table is not daemon/*.c, one row each")

    def test_every_test_path_exists(self):
        missing = sorted({p.rstrip(".") for p in re.findall(TEST_PATH, self.text) if not versions(p.rstrip("."))})
        self.assertEqual(missing, [], "paths under tests/ that ARCHITECTURE.md names and the tree has not")

    def test_named_tests_exist(self):
        """`tests/x.py` (`test_a`, `SomeTest`, `test_b_*`): each name occurs in the file."""
        missing = []
        for m in re.finditer(rf"`({TEST_PATH})`\s*\(([^)]*)\)", self.text):
            files = versions(m.group(1))
            if not files:
                continue        # test_every_test_path_exists says so
            text = "\n".join(read(os.path.join(ROOT, f)) for f in files)
            for name in re.findall(r"`([\w*]+)`", m.group(2)):
                pattern = r"\b" + re.escape(name).replace(r"\*", r"\w*") + r"\b"
                if not re.search(pattern, text):
                    missing.append(f"{m.group(1)}: {name}")
        self.assertEqual(missing, [], "tests named in ARCHITECTURE.md that their file does not have")

    def test_invariants_name_their_test_and_code(self):
        rows = table_rows(section(self.text, "Invariants"))
        self.assertTrue(rows, f"{DOC}: no invariant table under '## Invariants'")
        words = daemon_words()
        problems = []
        for cells in rows:
            if len(cells) != 3:
                problems.append(f"a row of {len(cells)} cells, not 3: {cells[0][:60]}")
                continue
            what, how, test = cells
            if not re.search(TEST_PATH, test):
                problems.append(f"no test for: {what[:80]}")
            for ref in re.findall(r"`([^`]+)`", how):
                ref = re.sub(r"\(.*\)$", "", ref)
                if "/" in ref or ref.endswith((".c", ".h", ".py")):
                    path = ref if "/" in ref else os.path.join("daemon", ref)
                    if not versions(path):
                        problems.append(f"{ref}: no such file (row: {what[:60]})")
                elif IDENTIFIER.match(ref) and ref not in words:
                    problems.append(f"{ref}: not in daemon/ (row: {what[:60]})")
        self.assertEqual(problems, [], "invariant rows that point at nothing")


if __name__ == "__main__":
    tunneltest.main()
