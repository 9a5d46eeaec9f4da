#!/usr/bin/env python3
"""Metrics: `tunnelctl metrics` and metrics_file, checked with a strict parser of the
Prometheus text exposition format 0.0.4 (and with `promtool check metrics` when the Debian
package prometheus is installed); the file is replaced atomically (never seen half-written
while tunnels change state quickly, no temporary file left) and follows state changes."""

import errno
import math
import os
import re
import shutil
import stat
import subprocess
import time
import unittest

import tunneltest
from tunneltest import assert_echo, free_port, metrics_text, status, tunnelctl, wait_until
from featuretest import FeatureTest, tap_comment

PROMTOOL = shutil.which("promtool")

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
VALUE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN")
TIMESTAMP = re.compile(r"-?\d+")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")

# What daemon/metrics.c exposes: family → (type, label names).
FAMILIES = {
    "tunneld_tunnels": ("gauge", ()),
    "tunneld_tunnel_up": ("gauge", ("tunnel",)),
    "tunneld_tunnel_state": ("gauge", ("tunnel", "state")),
    "tunneld_tunnel_enabled": ("gauge", ("tunnel",)),
    "tunneld_tunnel_flapping": ("gauge", ("tunnel",)),
    "tunneld_tunnel_starts_total": ("counter", ("tunnel",)),
    "tunneld_tunnel_restarts_total": ("counter", ("tunnel",)),
    "tunneld_tunnel_prohibited_total": ("counter", ("tunnel",)),
    "tunneld_tunnel_failures_total": ("counter", ("tunnel", "class")),
    "tunneld_tunnel_uptime_seconds": ("gauge", ("tunnel",)),
    "tunneld_tunnel_state_since_timestamp_seconds": ("gauge", ("tunnel",)),
    "tunneld_tunnel_up_seconds_total": ("counter", ("tunnel",)),
    "tunneld_tunnel_down_seconds_total": ("counter", ("tunnel",)),
    "tunneld_tunnel_outages_total": ("counter", ("tunnel",)),
    "tunneld_tunnel_longest_outage_seconds": ("gauge", ("tunnel",)),
    "tunneld_tunnel_rtt_seconds": ("gauge", ("tunnel",)),
    "tunneld_tunnel_sent_bytes_total": ("counter", ("tunnel",)),
    "tunneld_tunnel_received_bytes_total": ("counter", ("tunnel",)),
    "tunneld_tunnel_retransmitted_segments_total": ("counter", ("tunnel",)),
    "tunneld_tunnel_alternative": ("gauge", ("tunnel",)),          # tunnels with alternatives only
    "tunneld_tunnel_failovers_total": ("counter", ("tunnel",)),
    "tunneld_forward_up": ("gauge", ("tunnel", "kind", "forward")),
}
STATES = ("stopped", "starting", "up", "backoff", "failed", "stopping", "queued", "degraded")
CLASSES = ("auth", "host-key", "dns", "refused", "unreachable", "timeout", "closed", "penalty", "local-forward", "remote-forward",
           "exec", "killed", "lost", "probe", "config", "forward-denied", "mux", "unknown")


class ExpositionError(ValueError):
    pass


def _parse_labels(text, pos, where):
    """Parse '{name="value",…}' from text[pos] == '{'; return (labels dict, position after '}')."""
    labels = {}
    pos += 1
    if text[pos:pos + 1] == "}":
        return labels, pos + 1
    while True:
        m = LABEL_NAME.match(text, pos)
        if not m:
            raise ExpositionError(f"{where}: bad label name at column {pos + 1}")
        name = m.group()
        if name.startswith("__"):
            raise ExpositionError(f"{where}: label name {name} is reserved")
        if name in labels:
            raise ExpositionError(f"{where}: label {name} twice")
        pos = m.end()
        if text[pos:pos + 2] != '="':
            raise ExpositionError(f"{where}: expected '=\"' after label {name}")
        pos += 2
        value = []
        while True:
            if pos >= len(text):
                raise ExpositionError(f"{where}: unterminated label value")
            c = text[pos]
            if c == "\\":
                nxt = text[pos + 1:pos + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ExpositionError(f"{where}: bad escape \\{nxt} in a label value")
                value.append("\n" if nxt == "n" else nxt)
                pos += 2
            elif c == '"':
                pos += 1
                break
            elif c == "\n":
                raise ExpositionError(f"{where}: raw newline in a label value")
            else:
                value.append(c)
                pos += 1
        labels[name] = "".join(value)
        c = text[pos:pos + 1]
        if c == "}":
            return labels, pos + 1
        if c != ",":
            raise ExpositionError(f"{where}: expected ',' or '}}' after label {name}")
        pos += 1


def parse_exposition(text):
    """Strictly parse Prometheus text format 0.0.4; return {family: {"type", "help",
    "samples": [(name, labels, value)]}} in order, or raise ExpositionError.

    Stricter than Prometheus where tunneld has no excuse: every family has one HELP and one
    TYPE line, both before its samples; a family's lines form one group; counters end in
    _total; no blank lines; the text ends in a newline."""
    if not text:
        raise ExpositionError("empty")
    if not text.endswith("\n"):
        raise ExpositionError("no trailing newline")
    families, done, current = {}, set(), None
    series = set()

    def enter(name, where):
        nonlocal current
        if name != current:
            if name in done:
                raise ExpositionError(f"{where}: {name} again after other families (one group per family)")
            if current is not None:
                done.add(current)
            current = name
        return families.setdefault(name, {"type": None, "help": None, "samples": []})

    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n} {line!r}"
        if line == "":
            raise ExpositionError(f"{where}: blank line")
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (\S+)(?: (.*))?", line)
            if not m:
                if re.match(r"#\s*(HELP|TYPE)\b", line):
                    raise ExpositionError(f"{where}: malformed {line.split()[1]} line")
                continue  # a plain comment
            kind, name, rest = m.group(1), m.group(2), m.group(3) or ""
            if not METRIC_NAME.fullmatch(name):
                raise ExpositionError(f"{where}: bad metric name {name!r}")
            fam = enter(name, where)
            if fam["samples"]:
                raise ExpositionError(f"{where}: {kind} after samples of {name}")
            if kind == "HELP":
                if fam["help"] is not None:
                    raise ExpositionError(f"{where}: second HELP for {name}")
                if re.search(r"\\[^\\n]|\\$", rest):
                    raise ExpositionError(f"{where}: bad escape in HELP")
                fam["help"] = rest
            else:
                if fam["type"] is not None:
                    raise ExpositionError(f"{where}: second TYPE for {name}")
                if rest not in TYPES:
                    raise ExpositionError(f"{where}: unknown type {rest!r}")
                fam["type"] = rest
            continue
        m = METRIC_NAME.match(line)
        if not m:
            raise ExpositionError(f"{where}: bad metric name")
        name, pos = m.group(), m.end()
        labels = {}
        if line[pos:pos + 1] == "{":
            labels, pos = _parse_labels(line, pos, where)
        rest = line[pos:]
        if not rest.startswith(" "):
            raise ExpositionError(f"{where}: expected a space before the value")
        fields = rest[1:].split(" ")
        if len(fields) not in (1, 2) or not VALUE.fullmatch(fields[0]):
            raise ExpositionError(f"{where}: bad value/timestamp {rest[1:]!r}")
        if len(fields) == 2 and not TIMESTAMP.fullmatch(fields[1]):
            raise ExpositionError(f"{where}: bad timestamp {fields[1]!r}")
        value = float(fields[0])
        fam_name = name
        if name not in families or name != current:
            for suffix in ("_bucket", "_sum", "_count"):
                base = name[:-len(suffix)]
                if name.endswith(suffix) and families.get(base, {}).get("type") in ("histogram", "summary"):
                    fam_name = base
        fam = enter(fam_name, where)
        if fam["help"] is None or fam["type"] is None:
            raise ExpositionError(f"{where}: sample of {fam_name} before its HELP and TYPE")
        if fam["type"] in ("counter", "gauge", "untyped") and name != fam_name:
            raise ExpositionError(f"{where}: {name} in family {fam_name}")
        if fam["type"] == "counter":
            if not fam_name.endswith("_total"):
                raise ExpositionError(f"{where}: counter {fam_name} does not end in _total")
            if not value >= 0:
                raise ExpositionError(f"{where}: counter below 0 or NaN")
        key = (name, tuple(sorted(labels.items())))
        if key in series:
            raise ExpositionError(f"{where}: duplicate series")
        series.add(key)
        fam["samples"].append((name, labels, value))
    return families


class ParserTest(unittest.TestCase):
    """The parser itself: it must refuse what the format forbids, or the other tests prove nothing."""

    GOOD = "# HELP x_total A counter.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"\\\\\\n\"} 3\nx_total 1e3\n"

    def test_accepts_valid_text(self):
        fam = parse_exposition(self.GOOD + "# HELP g G.\n# TYPE g gauge\ng NaN\ng{x=\"y\"} -Inf 1700000000000\n")
        self.assertEqual(fam["x_total"]["samples"][0][1], {"a": "1", "b": 'q"\\\n'})
        self.assertTrue(math.isnan(fam["g"]["samples"][0][2]))

    def test_rejects_invalid_text(self):
        bad = {
            "no trailing newline": self.GOOD[:-1],
            "blank line": self.GOOD + "\n",
            "sample before TYPE": "# HELP y Y.\ny 1\n# TYPE y gauge\n",
            "no HELP": "# TYPE y gauge\ny 1\n",
            "family twice": self.GOOD + "# HELP g G.\n# TYPE g gauge\ng 1\nx_total 2\n",
            "second TYPE": self.GOOD.replace("# TYPE x_total counter\n", "# TYPE x_total counter\n# TYPE x_total counter\n"),
            "counter without _total": "# HELP y Y.\n# TYPE y counter\ny 1\n",
            "bad metric name": "# HELP 1y Y.\n# TYPE 1y gauge\n1y 1\n",
            "bad label name": '# HELP y Y.\n# TYPE y gauge\ny{1a="x"} 1\n',
            "unquoted label value": "# HELP y Y.\n# TYPE y gauge\ny{a=x} 1\n",
            "bad escape": '# HELP y Y.\n# TYPE y gauge\ny{a="\\t"} 1\n',
            "duplicate label": '# HELP y Y.\n# TYPE y gauge\ny{a="1",a="2"} 1\n',
            "duplicate series": '# HELP y Y.\n# TYPE y gauge\ny{a="1",b="2"} 1\ny{b="2",a="1"} 2\n',
            "bad value": "# HELP y Y.\n# TYPE y gauge\ny one\n",
            "two spaces": "# HELP y Y.\n# TYPE y gauge\ny  1\n",
            "unknown type": "# HELP y Y.\n# TYPE y meter\ny 1\n",
            "trailing comma": '# HELP y Y.\n# TYPE y gauge\ny{a="1",} 1\n',
        }
        for what, text in bad.items():
            with self.subTest(what):
                self.assertRaises(ExpositionError, parse_exposition, text)


class MetricsTest(FeatureTest):
    def check_tunneld_metrics(self, text, names):
        """Strict parse, then what tunneld's metrics must hold for the tunnels names."""
        fams = parse_exposition(text)
        self.assertEqual(list(fams), list(FAMILIES), "families (in metrics.c's order)")
        for fam, (kind, label_names) in FAMILIES.items():
            self.assertEqual(fams[fam]["type"], kind, fam)
            self.assertTrue(fams[fam]["help"], fam)
            for _, labels, _ in fams[fam]["samples"]:
                self.assertEqual(tuple(labels), label_names, fam)
        self.assertEqual(fams["tunneld_tunnels"]["samples"], [("tunneld_tunnels", {}, float(len(names)))])
        for fam in ("tunneld_tunnel_up", "tunneld_tunnel_enabled", "tunneld_tunnel_flapping",
                    "tunneld_tunnel_starts_total", "tunneld_tunnel_restarts_total", "tunneld_tunnel_uptime_seconds",
                    "tunneld_tunnel_state_since_timestamp_seconds"):
            self.assertEqual([l["tunnel"] for _, l, _ in fams[fam]["samples"]], list(names), fam)
        state = {}
        for _, l, v in fams["tunneld_tunnel_state"]["samples"]:
            state.setdefault(l["tunnel"], {})[l["state"]] = v
        for name in names:
            self.assertEqual(sorted(state[name]), sorted(STATES), name)
            self.assertEqual(sorted(state[name].values()), [0.0] * (len(STATES) - 1) + [1.0], f"{name}: one state")
        classes = {}
        for _, l, v in fams["tunneld_tunnel_failures_total"]["samples"]:
            classes.setdefault(l["tunnel"], {})[l["class"]] = v
        self.assertEqual(sorted(classes), sorted(names))
        for name in names:
            self.assertEqual(sorted(classes[name]), sorted(CLASSES), name)
        values = {fam: {l.get("tunnel"): v for _, l, v in fams[fam]["samples"]} for fam in FAMILIES}
        for name in names:
            self.assertIn(values["tunneld_tunnel_up"][name], (0, 1))
            self.assertEqual(values["tunneld_tunnel_up"][name], state[name]["up"])
            self.assertGreaterEqual(values["tunneld_tunnel_uptime_seconds"][name], 0)
            since = values["tunneld_tunnel_state_since_timestamp_seconds"][name]
            self.assertLess(abs(since - time.time()), 120, f"{name}: state since {since} is no Unix time of now")
            # its ssh's own TCP connection, while one runs: bytes both ways (the key exchange at least)
            if state[name]["up"]:
                self.assertGreater(values["tunneld_tunnel_sent_bytes_total"][name], 0, name)
                self.assertGreater(values["tunneld_tunnel_received_bytes_total"][name], 0, name)
                self.assertGreaterEqual(values["tunneld_tunnel_rtt_seconds"][name], 0, name)
                self.assertGreaterEqual(values["tunneld_tunnel_retransmitted_segments_total"][name], 0, name)
            elif state[name]["backoff"] or state[name]["failed"] or state[name]["stopped"]:
                # no ssh, no path (a tunnel starting may have one: authenticated, its forwards
                # not yet open; a loaded sanitized tunneld was seen there)
                self.assertNotIn(name, values["tunneld_tunnel_rtt_seconds"], name)
        return fams, state, classes, values

    def promtool(self, text):
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""), "promtool check metrics")

    def three_tunnels(self, **globals):
        return self.tunneld([{"name": "web.1"}, {"name": "db_2-x", "port": free_port()},
                             {"name": "off", "enabled": False}], globals=globals, restart_delay=1, restart_delay_max=2)

    def test_tunnelctl_metrics(self):
        """`tunnelctl metrics` with an up, a failing and a disabled tunnel: strictly valid,
        every family once, and the values agree with `tunnelctl --json status`."""
        d = self.three_tunnels()
        d.wait_up("web.1")
        d.wait_log(r"^<\d+>db_2-x: ssh exited with status 255 .*\(refused: ", timeout=15)
        names = ("web.1", "db_2-x", "off")

        def agreeing():
            # db_2-x goes on failing (backoff 0.5-2 s): a status before and one after the
            # metrics must agree, or its state may have moved between the two reads
            before = status(d)
            text = metrics_text(d)
            after = status(d)
            same = all((before[n]["state"], before[n]["starts"]) == (after[n]["state"], after[n]["starts"])
                       for n in names)
            return (text, after) if same else None
        text, st = wait_until(agreeing, 15, what="a metrics read that no state change straddles")
        fams, state, classes, values = self.check_tunneld_metrics(text, names)
        for name in names:
            self.assertEqual(state[name][st[name]["state"]], 1, f"{name}: {st[name]['state']}")
            self.assertEqual(values["tunneld_tunnel_starts_total"][name], st[name]["starts"], name)
            for cls in CLASSES:
                self.assertEqual(classes[name][cls], st[name]["failures"].get(cls, 0), f"{name} {cls}")
        self.assertEqual(values["tunneld_tunnel_up"], {"web.1": 1, "db_2-x": 0, "off": 0})
        self.assertEqual(values["tunneld_tunnel_enabled"], {"web.1": 1, "db_2-x": 1, "off": 0})
        self.assertGreaterEqual(classes["db_2-x"]["refused"], 1)
        self.assertEqual(state["off"]["stopped"], 1)
        self.assertGreater(values["tunneld_tunnel_uptime_seconds"]["web.1"], 0)

    def test_promtool_check_metrics(self):
        """promtool (Debian's prometheus package) agrees: no errors, no lint problems, for
        tunnelctl's text and the metrics file."""
        if not PROMTOOL:
            self.skipTest("promtool not installed (apt-get install --no-install-recommends prometheus)")
        path = os.path.join(tunneltest.temp_dir(self), "tunneld.prom")
        d = self.three_tunnels(metrics_file=path)
        d.wait_up("web.1")
        d.wait_log(r"^<\d+>db_2-x: ssh exited with status 255 ", timeout=15)
        self.promtool(metrics_text(d))
        wait_until(lambda: 'tunneld_tunnel_up{tunnel="web.1"} 1\n' in tunneltest._read_text(path), 5,
                   what="the metrics file to show web.1 up")
        self.promtool(tunneltest._read_text(path))

    def test_metrics_file_is_replaced_atomically_and_follows_state(self):
        """Four tunnels failing every ~0.1 s keep tunneld rewriting metrics_file; a reader
        polling it for 3 s never sees a partial or invalid file; stop/start of a good tunnel
        flips tunneld_tunnel_up in the file; afterwards the directory holds the file only,
        mode 0644."""
        mdir = tunneltest.temp_dir(self)
        path = os.path.join(mdir, "tunneld.prom")
        churn = [{"name": f"churn{i}", "port": free_port(), "restart_delay": 0.05, "restart_delay_max": 0.1}
                 for i in range(4)]
        d = self.tunneld([{"name": "good"}, *churn], globals={"metrics_file": path}, args=["-d"])
        names = ["good"] + [t["name"] for t in churn]
        d.wait_up("good")
        wait_until(lambda: os.path.exists(path), 5, what="the metrics file")

        versions, problems, seen_dir = set(), [], set()
        stop = time.monotonic() + 3
        while time.monotonic() < stop:
            with open(path) as f:
                text = f.read()
            seen_dir.update(os.listdir(mdir))
            if text in versions:
                continue
            versions.add(text)
            try:
                self.check_tunneld_metrics(text, names)
            except (ExpositionError, AssertionError) as e:
                problems.append(f"{e}\n{text}")
        self.assertEqual(problems[:1], [], f"{len(problems)} bad versions of {len(versions)}")
        tap_comment(f"metrics file: {len(versions)} versions read in 3 s, all complete and valid")
        self.assertGreaterEqual(len(versions), 10, "the file was not rewritten often")
        self.assertTrue(all(n == "tunneld.prom" or re.fullmatch(r"tunneld\.prom\.tmp\.\d+", n) for n in seen_dir),
                        seen_dir)

        def up_in_file(value):
            return lambda: f'tunneld_tunnel_up{{tunnel="good"}} {value}\n' in tunneltest._read_text(path)
        self.assertTrue(up_in_file(1)())
        self.assertEqual(tunnelctl(d, "stop", "good").returncode, 0)
        wait_until(up_in_file(0), 5, what="the file to show good down")
        wait_until(lambda: 'tunneld_tunnel_state{tunnel="good",state="stopped"} 1\n' in tunneltest._read_text(path),
                   5, what="the file to show good stopped")
        self.assertEqual(tunnelctl(d, "start", "good").returncode, 0)
        d.wait_up("good", after=d.wait_log(r"^<\d+>good: stopped").end())
        wait_until(up_in_file(1), 5, what="the file to show good up again")

        self.assertEqual(d.stop(), 0)
        self.assertEqual(os.listdir(mdir), ["tunneld.prom"], "temporary files left behind")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)
        parse_exposition(tunneltest._read_text(path))

    def test_metrics_file_after_exit_does_not_claim_up(self):
        """After a clean exit metrics_file shows the tunnels stopped: node_exporter must not
        go on exporting them as up."""
        path = os.path.join(tunneltest.temp_dir(self), "tunneld.prom")
        d = self.tunneld([{"name": "good"}], globals={"metrics_file": path})
        d.wait_up("good")
        wait_until(lambda: 'tunneld_tunnel_up{tunnel="good"} 1\n' in tunneltest._read_text(path), 5,
                   what="the file to show good up")
        self.assertEqual(d.stop(), 0)
        text = tunneltest._read_text(path)
        self.assertFalse(text and 'tunneld_tunnel_up{tunnel="good"} 1\n' in text,
                         "tunneld has exited, yet its metrics file says the tunnel is up")

    def test_metrics_file_on_a_full_filesystem(self):
        """metrics_file on a full tmpfs: tunneld warns once ("cannot write …; retrying"),
        runs on with its tunnel up, retries on a timer that is no busy loop (one warning, a
        few ms of CPU while the disk stays full), and once space is freed writes the file
        again within its retry delay, logs the recovery once, and the file is valid and
        says the tunnel is up."""
        mdir = tunneltest.temp_dir(self)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tunneltest", mdir],
                           capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        # after tunneld's own cleanup (which writes the file a last time), before the rmtree
        self.addCleanup(subprocess.run, ["umount", "-l", mdir], timeout=10, stdin=subprocess.DEVNULL)
        filler = os.path.join(mdir, "filler")
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC, e)
        self.assertEqual(os.statvfs(mdir).f_bavail, 0, "the tmpfs is not full")

        path = os.path.join(mdir, "tunneld.prom")
        lport = free_port()
        d = self.tunneld([{"name": "t", "local_forwards": [self.echo.forward(lport)]}],
                         globals={"metrics_file": path})
        failed = rf"^<4>cannot write metrics_file {re.escape(path)}: No space left on device; retrying$"
        again = rf"^<5>metrics_file {re.escape(path)} written again$"
        d.wait_log(failed, timeout=10)
        t_failed = time.monotonic()
        _, pid = d.wait_up("t")
        assert_echo(lport)

        # while the disk stays full: retries, but not a busy loop, and one warning only
        def cpu_ticks():
            with open(f"/proc/{d.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        ticks0, t0 = cpu_ticks(), time.monotonic()
        time.sleep(3)
        used = (cpu_ticks() - ticks0) / os.sysconf("SC_CLK_TCK")
        span = time.monotonic() - t0
        tap_comment(f"tunneld on a full metrics_file filesystem: {used * 1000:.0f} ms of CPU in {span:.1f} s")
        self.assertLess(used, 0.3, f"tunneld used {used:.2f} s of CPU in {span:.1f} s: a busy retry loop?")
        self.assertIsNone(d.proc.poll(), "tunneld exited")
        self.assertEqual(d.count_log(failed), 1, "the failure is logged once, not per retry")
        self.assertEqual(d.count_log(again), 0)
        self.assertFalse(os.path.exists(path))
        self.assertEqual(sorted(os.listdir(mdir)), ["filler"], "a temporary file left behind")
        st = status(d)["t"]
        self.assertEqual((st["state"], st["pid"]), ("up", pid), st)

        # free space: the next retry succeeds. The delay doubles from 1 s at each failed
        # write (a state change's write too), so the one pending when space is freed is at
        # most about as long as the disk has been full, plus a doubling's worth.
        os.unlink(filler)
        t_free = time.monotonic()
        full_for = t_free - t_failed
        d.wait_log(again, timeout=full_for + 20)
        took = time.monotonic() - t_free
        tap_comment(f"metrics_file written again {took:.2f} s after space was freed (full for {full_for:.1f} s)")
        self.assertLess(took, full_for + 3 + 1.5, "the retry came later than its doubling delay")
        text = tunneltest._read_text(path)
        fams, state, _, values = self.check_tunneld_metrics(text, ["t"])
        self.assertEqual(values["tunneld_tunnel_up"]["t"], 1, text)
        self.assertEqual(state["t"]["up"], 1, text)
        self.assertEqual(sorted(os.listdir(mdir)), ["tunneld.prom"])
        self.assertEqual(d.count_log(failed), 1)
        self.assertEqual(d.count_log(again), 1)
        self.assertEqual(status(d)["t"]["pid"], pid, "the tunnel was restarted")
        assert_echo(lport)


if __name__ == "__main__":
    tunneltest.main()
