#!/usr/bin/env python3
"""Drop-in configuration: <config dir>/tunneld.d/*.conf (the default include_dir) add
tunnels after the main file's, in lexical order, with the main file's defaults; a name
defined twice is an error naming both places; a drop-in may hold only a tunnels list; a
reload applies added, changed and removed drop-ins as a difference (unchanged tunnels keep
their ssh), and a broken drop-in leaves everything running as it was."""

import os
import re
import shlex

import tunneltest
from tunneltest import (assert_echo, echo_roundtrip, free_port, pid_alive, port_accepts, render_config, status,
                        tunnelctl, wait_until)
from featuretest import FeatureTest, group_lines


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)  # never group-writable, whatever the umask: tunneld would refuse it
    return text


def dropin(tunnels):
    """The text of a drop-in holding tunnels (one setting a line, like render_config)."""
    return render_config(tunnels=tunnels)


class DropinTest(FeatureTest):
    def dropin_dir(self):
        """A directory of prepared drop-ins (copied next to tunneld's config at its start)."""
        return tunneltest.temp_dir(self)

    def tunneld_with_dropins(self, src, tunnels, **kw):
        """tunneld whose tunneld.d/ (next to its config, the default include_dir) holds a
        copy of src's files from before it starts: a wrapper copies them, then execs it."""
        script = ('d="$(dirname "$2")/tunneld.d" && mkdir "$d" && cp "$SRC"/* "$d"/ && chmod 644 "$d"/* '
                  '&& exec "$0" "$@"')
        wrapper = ["env", f"SRC={src}", "sh", "-c", script]
        return self.tunneld(tunnels, wrapper=wrapper, **kw)

    def test_check_lists_dropin_tunnels_in_lexical_order(self):
        """tunneld -t -v: the main file's tunnels, then 10-a.conf's, 20-b.conf's, 3-c.conf's
        (lexical, not numeric, order); other files and hidden ones are not read; the main
        file's defaults apply to drop-in tunnels."""
        tmp = tunneltest.temp_dir(self)
        conf = os.path.join(tmp, "tunneld.conf")
        write(conf, render_config({"ssh": tunneltest.SSH, "control_socket": "none"}, self.sshd.tunnel_defaults(),
                                  [{"name": "main1", "host": "127.0.0.1"}]))
        os.mkdir(os.path.join(tmp, "tunneld.d"))
        files = {"20-b.conf": [{"name": "b", "host": "127.0.0.1"}],
                 "10-a.conf": [{"name": "a1", "host": "127.0.0.1"}, {"name": "a2", "host": "127.0.0.1"}],
                 "3-c.conf": [{"name": "c", "host": "127.0.0.1"}]}
        for name, tunnels in files.items():
            write(os.path.join(tmp, "tunneld.d", name), dropin(tunnels))
        write(os.path.join(tmp, "tunneld.d", "README"), "not a configuration file {\n")
        write(os.path.join(tmp, "tunneld.d", "30-x.conf.disabled"), "garbage\n")
        write(os.path.join(tmp, "tunneld.d", ".99-hidden.conf"), "garbage\n")
        r = tunneltest.run_tunneld("-t", "-v", "-c", conf)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines()[0], "configuration OK: 5 tunnels")
        lines = r.stdout.splitlines()[1:]
        self.assertEqual([l.split(":")[0] for l in lines], ["main1", "a1", "a2", "b", "c"])
        for line in lines:
            argv = shlex.split(line.split(": ", 1)[1])
            self.assertIn(["-p", str(self.sshd.port)], [argv[i:i + 2] for i in range(len(argv))], line)
            self.assertIn(["-i", self.sshd.client_key], [argv[i:i + 2] for i in range(len(argv))], line)
            self.assertEqual(argv[-2:], ["--", "127.0.0.1"], line)
        # include_dir = "none": the drop-ins are ignored
        text = open(conf).read()
        write(conf, 'include_dir = "none";\n' + text)
        r = tunneltest.run_tunneld("-t", "-c", conf)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "configuration OK: 1 tunnel"), r.stderr)

    def test_running_tunneld_starts_dropin_tunnels(self):
        """Drop-ins present at start: their tunnels run, in configuration order, all up."""
        src = self.dropin_dir()
        ports = {n: free_port() for n in ("main", "a", "b")}
        write(os.path.join(src, "20-b.conf"), dropin([{"name": "b", "host": "127.0.0.1",
                                                        "local_forwards": [self.echo.forward(ports["b"])]}]))
        write(os.path.join(src, "10-a.conf"), dropin([{"name": "a", "host": "127.0.0.1",
                                                        "local_forwards": [self.echo.forward(ports["a"])]}]))
        d = self.tunneld_with_dropins(src, [{"name": "main", "local_forwards": [self.echo.forward(ports["main"])]}])
        for name in ("main", "a", "b"):
            d.wait_up(name)
            assert_echo(ports[name])
        self.assertEqual(list(status(d)), ["main", "a", "b"])
        self.assertRegex(d.log(), r"(?m)^<5>tunneld \S+ starting: 3 tunnels from ")

    def test_name_defined_twice_names_both_places(self):
        """x in the main file and in 20-b.conf, y in 10-a.conf and 20-b.conf: each duplicate
        is reported at its FILE:LINE with the FILE:LINE of the first; tunneld does not start."""
        tmp = tunneltest.temp_dir(self)
        conf = os.path.join(tmp, "tunneld.conf")
        main = write(conf, render_config({"ssh": tunneltest.SSH, "control_socket": "none"},
                                         self.sshd.tunnel_defaults(),
                                         [{"name": "w", "host": "127.0.0.1"}, {"name": "x", "host": "127.0.0.1"}]))
        os.mkdir(os.path.join(tmp, "tunneld.d"))
        a_path, b_path = (os.path.join(tmp, "tunneld.d", n) for n in ("10-a.conf", "20-b.conf"))
        a = write(a_path, dropin([{"name": "y", "host": "127.0.0.1"}]))
        b = write(b_path, dropin([{"name": "z", "host": "127.0.0.1"}, {"name": "x", "host": "127.0.0.1"},
                                  {"name": "y", "host": "127.0.0.1"}]))

        for args in (["-t"], []):
            r = tunneltest.run_tunneld(*args, "-c", conf)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            for name, first_path, first_text in (("x", conf, main), ("y", a_path, a)):
                m = re.search(rf'(?m)^(?:<3>)?{re.escape(b_path)}:(\d+): \S*name: "{name}" is already used by the tunnel at '
                              rf"{re.escape(first_path)}:(\d+)$", r.stderr)
                self.assertIsNotNone(m, f"{name}: {r.stderr}")
                lo, hi = group_lines(b, name)
                self.assertTrue(lo <= int(m.group(1)) <= hi, f"{m.group()}: not a line of the second {name} ({lo}-{hi})")
                lo, hi = group_lines(first_text, name)
                self.assertTrue(lo <= int(m.group(2)) <= hi, f"{m.group()}: not a line of the first {name} ({lo}-{hi})")
            self.assertRegex(r.stderr, rf"(?m)^(?:<3>)?tunneld: {re.escape(conf)}: 2 errors, ")

    def test_global_setting_in_a_dropin_is_an_error(self):
        """A drop-in holds a tunnels list only: a global setting, defaults, or anything else
        is an error at its FILE:LINE."""
        tmp = tunneltest.temp_dir(self)
        conf = os.path.join(tmp, "tunneld.conf")
        write(conf, render_config({"ssh": tunneltest.SSH, "control_socket": "none"}, self.sshd.tunnel_defaults(),
                                  [{"name": "m", "host": "127.0.0.1"}]))
        os.mkdir(os.path.join(tmp, "tunneld.d"))
        path = os.path.join(tmp, "tunneld.d", "10-x.conf")
        for key, value in (("stop_timeout", "3"), ("metrics_file", '"/tmp/x.prom"'), ("defaults", '{ user = "u"; }'),
                           ("tunnel", "( )")):
            with self.subTest(key):
                write(path, f'# a drop-in\n{key} = {value};\n' + dropin([{"name": "x", "host": "127.0.0.1"}]))
                r = tunneltest.run_tunneld("-t", "-c", conf)
                self.assertEqual(r.returncode, 1, r.stdout)
                self.assertRegex(r.stderr, rf"(?m)^{re.escape(path)}:2: {key}: a drop-in file holds only a tunnels "
                                           rf"list \(globals and defaults belong in {re.escape(conf)}\)$")

    def test_reload_applies_dropin_changes(self):
        """Reload after: 20-change.conf edited (another forward port), 30-gone.conf deleted,
        40-new.conf added, 10-keep.conf rewritten with the same text. New starts, changed
        moves its forward on the same ssh (the old port closes, the new one works), removed
        stops, unchanged ones (keep, main) keep their ssh."""
        src = self.dropin_dir()
        p = {n: free_port() for n in ("main", "keep", "change", "change2", "gone", "new")}

        def tunnel(name, port):
            return [{"name": name, "host": "127.0.0.1", "local_forwards": [self.echo.forward(port)]}]
        for name in ("keep", "change", "gone"):
            write(os.path.join(src, f"{ {'keep': 10, 'change': 20, 'gone': 30}[name]}-{name}.conf"),
                  dropin(tunnel(name, p[name])))
        d = self.tunneld_with_dropins(src, tunnel("main", p["main"]))
        pids = {n: d.wait_up(n)[1] for n in ("main", "keep", "change", "gone")}
        ddir = os.path.join(d.dir, "tunneld.d")
        self.assertEqual(sorted(os.listdir(ddir)), ["10-keep.conf", "20-change.conf", "30-gone.conf"])

        write(os.path.join(ddir, "10-keep.conf"), dropin(tunnel("keep", p["keep"])))
        write(os.path.join(ddir, "20-change.conf"), dropin(tunnel("change", p["change2"])))
        os.unlink(os.path.join(ddir, "30-gone.conf"))
        write(os.path.join(ddir, "40-new.conf"), dropin(tunnel("new", p["new"])))
        r = tunnelctl(d, "reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        done = d.wait_log(r"^<5>reload done: 4 tunnels \(was 4\), 1 changed$", timeout=10)
        self.assertRegex(d.log(), r"(?m)^<5>gone: removed from the configuration$")
        self.assertRegex(d.log(), r"(?m)^<5>new: added to the configuration$")
        self.assertRegex(d.log(), r"(?m)^<5>change: forwards changed: 1 added, 1 removed on the running ssh")
        d.wait_up("new", after=done.start())
        wait_until(lambda: not pid_alive(pids["gone"]), 10, what="the removed tunnel's ssh to end")
        wait_until(lambda: echo_roundtrip(p["change2"]), 10, what="the changed forward's new port")
        st = status(d)
        self.assertEqual(list(st), ["main", "keep", "change", "new"])
        self.assertEqual({n: st[n]["pid"] for n in ("main", "keep", "change")},
                         {n: pids[n] for n in ("main", "keep", "change")}, "an ssh was restarted")
        self.assertEqual({n: st[n]["state"] for n in st}, dict.fromkeys(st, "up"))
        for name in ("main", "keep", "change2", "new"):
            self.assertTrue(echo_roundtrip(p[name]), name)
        for name in ("gone", "change"):
            self.assertFalse(port_accepts(p[name]), f"{name}'s old port still listens")

    def test_broken_dropin_reload_keeps_everything(self):
        """A reload that meets a drop-in with a global setting is rejected, naming FILE:LINE;
        every tunnel keeps its ssh; once the file is fixed, the reload goes through."""
        src = self.dropin_dir()
        write(os.path.join(src, "10-a.conf"), dropin([{"name": "a", "host": "127.0.0.1"}]))
        d = self.tunneld_with_dropins(src, [{"name": "main"}])
        pids = {n: d.wait_up(n)[1] for n in ("main", "a")}
        bad = os.path.join(d.dir, "tunneld.d", "20-bad.conf")
        write(bad, 'ssh = "/bin/false";\n' + dropin([{"name": "b", "host": "127.0.0.1"}]))
        r = tunnelctl(d, "reload")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn(f"{bad}:1: ssh: a drop-in file holds only a tunnels list", r.stdout + r.stderr)
        d.wait_log(r"^<3>reload rejected: 1 error in .*; the running tunnels are unchanged$", timeout=5)
        self.assertEqual({n: t["pid"] for n, t in status(d).items()}, pids)
        write(bad, dropin([{"name": "b", "host": "127.0.0.1"}]))
        r = tunnelctl(d, "reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        d.wait_up("b")
        self.assertEqual({n: t["pid"] for n, t in status(d).items() if n != "b"}, pids)


if __name__ == "__main__":
    tunneltest.main()
