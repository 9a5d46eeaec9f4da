#!/usr/bin/env python3
"""The source's shape, as ARCHITECTURE.md promises it (one concept per file): no include
cycle between the modules of daemon/ (a NAME_internal.h belongs to module NAME), no file
past 700 lines, no function past 80 lines but main() and help texts."""

import collections
import os
import re
import unittest

import tunneltest

DAEMON = os.path.join(tunneltest.SOURCE_ROOT, "daemon")
FILE_MAX = 700
FUNCTION_MAX = 80
LONG_ALLOWED = {"main", "help"}


def module_of(name):
    base = os.path.splitext(name)[0]
    return base[:-len("_internal")] if base.endswith("_internal") else base


def includes():
    """{module: {modules it includes}} over daemon/*.c and *.h."""
    graph = collections.defaultdict(set)
    for name in os.listdir(DAEMON):
        if not name.endswith((".c", ".h")):
            continue
        with open(os.path.join(DAEMON, name)) as f:
            for inc in re.findall(r'^#include "(\w+)\.h"', f.read(), re.M):
                if module_of(inc) != module_of(name):
                    graph[module_of(name)].add(module_of(inc))
    return graph


def find_cycle(graph):
    colour = {}

    def visit(n, path):
        colour[n] = 1
        for m in sorted(graph.get(n, ())):
            if colour.get(m) == 1:
                return path[path.index(m):] + [m]
            if not colour.get(m):
                found = visit(m, path + [m])
                if found:
                    return found
        colour[n] = 2
        return None
    for n in sorted(graph):
        if not colour.get(n):
            found = visit(n, [n])
            if found:
                return found
    return None


class SourceLayoutTest(unittest.TestCase):
    def test_no_include_cycle(self):
        cycle = find_cycle(includes())
        self.assertIsNone(cycle, f"include cycle: {' -> '.join(cycle or [])}")

    def test_files_and_functions_are_small(self):
        for name in sorted(os.listdir(DAEMON)):
            if not name.endswith(".c"):
                continue
            with open(os.path.join(DAEMON, name)) as f:
                lines = f.read().split("\n")
            self.assertLessEqual(len(lines), FILE_MAX, f"daemon/{name}: {len(lines)} lines: two concepts?")
            start, fname = None, None
            for i, line in enumerate(lines):
                m = re.match(r"^[a-z].*?(\w+)\(", line)
                if m and not line.endswith(";"):
                    fname = m.group(1)
                if line == "{":
                    start = i
                elif line == "}" and start is not None:
                    if fname not in LONG_ALLOWED:
                        self.assertLessEqual(i - start, FUNCTION_MAX, f"daemon/{name}: {fname}() is {i - start} lines")
                    start = None


if __name__ == "__main__":
    tunneltest.main()
