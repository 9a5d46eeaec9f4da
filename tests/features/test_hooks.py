#!/usr/bin/env python3
"""on_state_change: run on up, degraded, failed and flapping with TUNNEL_NAME, TUNNEL_STATE,
TUNNEL_PREVIOUS_STATE, TUNNEL_FAILURE and TUNNEL_RESTARTS; exec'd directly (no shell: its
path may hold shell syntax); its output logged as "NAME: on_state_change: …"; killed at
hook_timeout; one instance per tunnel at a time, the newest waiting event running next."""

import os
import signal
import stat
import time

import tunneltest
from tunneltest import cpu_seconds, free_port, listening_socket, pid_alive, proc_table, status, wait_until
from featuretest import FeatureTest

# A shell script. Each run writes one record file (what it got: argv, parent, cmdline, the
# TUNNEL_* environment) and appends BEGIN/END lines to a shared "runs" file; it says hello on
# stdout and stderr; HOOK_MODE (from tunneld's environment) makes it hang or wait.
HOOK = r"""#!/bin/sh
dir=@DIR@
rec="$dir/rec.$TUNNEL_NAME.$(date +%s%N).$$"
{
  echo "ARGC $#"
  echo "ARG0 $0"
  echo "PPID $PPID"
  printf 'CMDLINE '; tr '\0' '|' < /proc/$$/cmdline; echo
  echo "KEPT ${HOOKTEST_KEPT-unset}"
  env | grep '^TUNNEL_' | sort | sed 's/^/ENV /'
} > "$rec.tmp" && mv "$rec.tmp" "$rec"
echo "BEGIN $$ $(date +%s.%N) $TUNNEL_NAME $TUNNEL_STATE $TUNNEL_RESTARTS" >> "$dir/runs"
echo "hello from the hook: $TUNNEL_NAME is $TUNNEL_STATE (was $TUNNEL_PREVIOUS_STATE)"
echo "and on stderr: failure=[$TUNNEL_FAILURE] restarts=$TUNNEL_RESTARTS" >&2
case "$HOOK_MODE" in
  hang) sleep 60 ;;
  wait-first) [ "$TUNNEL_RESTARTS" = 0 ] && for i in $(seq 600); do [ -e "$dir/release" ] && break; sleep 0.05; done ;;
esac
echo "END $$ $(date +%s.%N) $TUNNEL_NAME $TUNNEL_STATE $TUNNEL_RESTARTS" >> "$dir/runs"
"""


class HookTest(FeatureTest):
    def make_hook(self):
        """The hook in a directory whose name is shell syntax (a shell would expand and split
        it, and run something else). Returns (program path, record directory)."""
        tmp = tunneltest.temp_dir(self)
        records = os.path.join(tmp, "records")
        os.mkdir(records)
        hook_dir = os.path.join(tmp, "on change $TUNNEL_NAME;x")
        os.mkdir(hook_dir)
        path = os.path.join(hook_dir, "hook")
        with open(path, "w") as f:
            f.write(HOOK.replace("@DIR@", "'" + records + "'"))
        os.chmod(path, stat.S_IRWXU)
        return path, records

    @staticmethod
    def records(directory, name=None):
        """The records of every run (of name's), oldest first: dicts with argc, arg0, ppid,
        cmdline, kept and env."""
        out = []
        for f in sorted(os.listdir(directory)):
            parts = f.split(".")
            if parts[0] != "rec" or f.endswith(".tmp") or (name and parts[1] != name):
                continue
            rec = {"env": {}}
            with open(os.path.join(directory, f)) as fh:
                for line in fh.read().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "ENV":
                        k, _, v = value.partition("=")
                        rec["env"][k] = v
                    else:
                        rec[key.lower()] = value
            out.append(rec)
        return out

    @staticmethod
    def runs(directory):
        """[(BEGIN|END, pid, time, name, state, restarts)] from the runs file."""
        try:
            with open(os.path.join(directory, "runs")) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        return [(p[0], int(p[1]), float(p[2]), p[3], p[4], int(p[5])) for p in (l.split() for l in lines)]

    def test_environment_and_exec(self):
        """up (first and after a restart), degraded (a forward's port taken: the forward's
        class), failed (max_starts) and flapping: the hook gets the right TUNNEL_* variables (tunneld's own TUNNEL_* are not passed on, the rest of its
        environment is), runs exec'd directly as a child of tunneld with no argument, and its
        stdout and stderr are logged under the tunnel's name."""
        hook, records = self.make_hook()
        taken = listening_socket()
        self.addCleanup(taken.close)
        d = self.tunneld([
            {"name": "good", "gatetime": 0.5},
            {"name": "half", "local_forwards": [self.echo.forward(taken.getsockname()[1])]},
            {"name": "dies", "port": free_port(), "max_starts": 2},
            {"name": "flaps", "port": free_port(), "flap_threshold": 3, "restart_delay": 0.05,
             "restart_delay_max": 0.1},
        ], on_state_change=hook, env={"TUNNEL_STATE": "bogus", "TUNNEL_EXTRA": "leak", "HOOKTEST_KEPT": "yes"})
        _, pid = d.wait_up("good")
        wait_until(lambda: len(self.records(records, "good")) == 1, 10, what="the hook's run for good up")
        time.sleep(0.6)  # past gatetime: the next exit is a good run, restarted at once
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(self.records(records, "good")) == 2, 15, what="the hook's run for good up again")
        wait_until(lambda: self.records(records, "dies") and self.records(records, "flaps") and
                   self.records(records, "half"), 15, what="the hook's runs for dies, flaps and half")
        time.sleep(0.5)  # nothing else may come

        env = lambda name: [r["env"] for r in self.records(records, name)]  # noqa: E731
        expected = {
            "good": [{"TUNNEL_NAME": "good", "TUNNEL_STATE": "up", "TUNNEL_PREVIOUS_STATE": "starting",
                      "TUNNEL_FAILURE": "", "TUNNEL_RESTARTS": "0"},
                     {"TUNNEL_NAME": "good", "TUNNEL_STATE": "up", "TUNNEL_PREVIOUS_STATE": "starting",
                      "TUNNEL_FAILURE": "", "TUNNEL_RESTARTS": "1"}],
            "half": [{"TUNNEL_NAME": "half", "TUNNEL_STATE": "degraded", "TUNNEL_PREVIOUS_STATE": "starting",
                      "TUNNEL_FAILURE": "local-forward", "TUNNEL_RESTARTS": "0"}],
            "dies": [{"TUNNEL_NAME": "dies", "TUNNEL_STATE": "failed", "TUNNEL_PREVIOUS_STATE": "starting",
                      "TUNNEL_FAILURE": "refused", "TUNNEL_RESTARTS": "1"}],
            "flaps": [{"TUNNEL_NAME": "flaps", "TUNNEL_STATE": "flapping", "TUNNEL_PREVIOUS_STATE": "starting",
                       "TUNNEL_FAILURE": "refused", "TUNNEL_RESTARTS": "2"}],
        }
        for name, want in expected.items():
            self.assertEqual(env(name), want, name)
        self.assertEqual(status(d)["dies"]["state"], "failed")
        self.assertTrue(status(d)["flaps"]["flapping"])

        for rec in self.records(records):
            self.assertEqual(rec["argc"], "0", rec)
            self.assertEqual(rec["arg0"], hook, rec)
            self.assertEqual(int(rec["ppid"]), d.pid, "the hook is not tunneld's own child")
            self.assertEqual(rec["cmdline"], f"/bin/sh|{hook}|", "not exec'd directly (the kernel runs the #! line)")
            self.assertEqual(rec["kept"], "yes", "tunneld's environment was not passed on")

        log = d.log()
        self.assertRegex(log, r"(?m)^<6>good: on_state_change: hello from the hook: good is up \(was starting\)$")
        self.assertRegex(log, r"(?m)^<6>good: on_state_change: and on stderr: failure=\[\] restarts=0$")
        self.assertRegex(log, r"(?m)^<6>dies: on_state_change: hello from the hook: dies is failed \(was starting\)$")
        self.assertRegex(log, r"(?m)^<6>dies: on_state_change: and on stderr: failure=\[refused\] restarts=1$")
        self.assertRegex(log, r"(?m)^<6>flaps: on_state_change: hello from the hook: flaps is flapping \(was starting\)$")
        self.assertNotRegex(log, r"on_state_change program (exited|was killed)")
        self.assertEqual(self.runs(records)[-1][0], "END")

    def test_hung_hook_is_killed_at_hook_timeout(self):
        """A hook that sleeps 60 s is killed at hook_timeout (1 s), with what it started
        (its process group), and that is logged; the tunnel is not disturbed."""
        hook, records = self.make_hook()
        d = self.tunneld([{"name": "good"}], on_state_change=hook, globals={"hook_timeout": 1},
                         env={"HOOK_MODE": "hang"})
        _, ssh = d.wait_up("good")
        wait_until(lambda: self.runs(records), 10, what="the hook to begin")
        begin = self.runs(records)[0]
        hook_pid = begin[1]

        def sleeps():
            table = proc_table()
            return [p for p in tunneltest.descendants_of(hook_pid, table) if tunneltest._comm(p) == "sleep"]
        self.assertTrue(sleeps(), "the hook's sleep is not running")
        still = d.wait_log(rf"^<4>good: on_state_change program \(pid {hook_pid}\) still runs after (.+): killing it$",
                           timeout=10)
        self.assertTrue(0.95 <= tunneltest.parse_duration(still.group(1)) <= 2.5, still.group())
        d.wait_log(r"^<4>good: on_state_change program was killed by signal KILL after (.+)$", timeout=5,
                   after=still.end())
        wait_until(lambda: not pid_alive(hook_pid), 3, what="the hook to be gone")
        leftovers = [p for p in d.leftovers() if p != ssh]
        self.assertEqual(leftovers, [], "the hook left processes behind")
        self.assertEqual([r[0] for r in self.runs(records)], ["BEGIN"], "the hook ran on after its kill")
        t = status(d)["good"]
        self.assertEqual((t["state"], t["pid"]), ("up", ssh))

    def test_one_run_at_a_time_newest_event_next(self):
        """While the first run (up, restarts 0) is held, ssh is killed three times: up with
        restarts 1, 2, 3 queue up. No second instance starts meanwhile; when the first ends,
        only the newest (restarts 3) runs."""
        hook, records = self.make_hook()
        d = self.tunneld([{"name": "good"}], on_state_change=hook, globals={"hook_timeout": 60},
                         env={"HOOK_MODE": "wait-first"}, gatetime=0, restart_delay=0.05)
        m, pid = d.wait_up("good")
        wait_until(lambda: self.runs(records), 10, what="the first run to begin")
        for restarts in (1, 2, 3):
            os.kill(pid, signal.SIGKILL)
            m, pid = d.wait_up("good", after=m.end())
            self.assertEqual(status(d)["good"]["restarts"], restarts)
        time.sleep(0.3)
        self.assertEqual([r[0] for r in self.runs(records)], ["BEGIN"], "a second run started meanwhile")
        open(os.path.join(records, "release"), "w").close()
        wait_until(lambda: len(self.runs(records)) >= 4, 10, what="the next run to end")
        time.sleep(0.5)
        runs = self.runs(records)
        self.assertEqual([(r[0], r[5]) for r in runs], [("BEGIN", 0), ("END", 0), ("BEGIN", 3), ("END", 3)], runs)
        self.assertGreaterEqual(runs[2][2], runs[1][2], "the second run began before the first ended")
        self.assertEqual([r["env"]["TUNNEL_RESTARTS"] for r in self.records(records)], ["0", "3"])

    def test_hook_that_leaves_a_spewing_helper_does_not_freeze_tunneld(self):
        """A hook that starts a helper in a session of its own, writing to the hook's
        stdout for ever (`setsid sh -c 'exec yes' &`), and exits: tunneld reads its output
        in bounded pieces, logs at most 16 KiB of it per event, then closes the pipe (the
        helper dies of SIGPIPE). tunneld answers status all along, uses little CPU, its log
        stays small, and SIGTERM stops it within stop_timeout + 1 s."""
        tmp = tunneltest.temp_dir(self)
        hook = os.path.join(tmp, "spew")
        with open(hook, "w") as f:
            f.write("#!/bin/sh\nsetsid sh -c 'exec yes' &\necho \"helper $!\"\nexit 0\n")
        os.chmod(hook, stat.S_IRWXU)
        d = self.tunneld([{"name": "good"}], on_state_change=hook, globals={"stop_timeout": 2})
        d.wait_up("good")
        m = d.wait_log(r"^<\d+>good: on_state_change: helper (\d+)$", timeout=10)
        helper = int(m.group(1))
        self.addCleanup(lambda: tunneltest.kill_all([helper]))
        worst = 0.0
        cpu0 = cpu_seconds(d.pid)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:
            t = time.monotonic()
            self.assertEqual(status(d)["good"]["state"], "up")
            worst = max(worst, time.monotonic() - t)
            time.sleep(0.1)
        cpu = (cpu_seconds(d.pid) - cpu0) / (time.monotonic() - t0)
        print(f"# status worst {worst * 1000:.0f} ms; tunneld CPU {cpu * 100:.1f} %; log {len(d.log())} bytes")
        self.assertLess(worst, 1.0, "status took over a second")
        self.assertLess(cpu, 0.5, "tunneld spins on the helper's output")
        # the hook exited: what is in the pipe is read (bounded), then the pipe is closed
        wait_until(lambda: not pid_alive(helper), 5, what="the helper to die of SIGPIPE")
        self.assertLess(len(d.log()), 64 * 1024, "the log grows with the helper's output")
        t = time.monotonic()
        d.stop(timeout=5)
        self.assertLess(time.monotonic() - t, 2 + 1)

    def test_hook_that_spews_while_it_runs_is_cut_off(self):
        """A hook that writes megabytes while it runs: 100 lines of it are logged, the rest
        counted; after 1 MiB tunneld closes the pipe and the hook dies of SIGPIPE."""
        tmp = tunneltest.temp_dir(self)
        hook = os.path.join(tmp, "chatty")
        with open(hook, "w") as f:
            f.write("#!/bin/sh\nexec yes\n")
        os.chmod(hook, stat.S_IRWXU)
        d = self.tunneld([{"name": "good"}], on_state_change=hook, globals={"hook_timeout": 30})
        d.wait_up("good")
        d.wait_log(r"^<4>good: on_state_change program wrote more than 1024 KiB: \d+ bytes of it were not logged, "
                   r"and tunneld stopped reading \(the pipe is closed\)$", timeout=10)
        d.wait_log(r"^<4>good: on_state_change program was killed by signal PIPE after ", timeout=10)
        self.assertEqual(d.count_log(r"^<6>good: on_state_change: y$"), 100)
        self.assertEqual(status(d)["good"]["state"], "up")


if __name__ == "__main__":
    tunneltest.main()
