#!/usr/bin/env python3
"""Each failure class produced for real against a loopback sshd, and recognised: the class
in `last_exit.failure`, in the failure counts, in the log line ("(CLASS: hint)"), in the
STATUS text, in tunneld_tunnel_failures_total, and as the journal field FAILURE=; and the
reaction of each (auth and host-key back off to the cap at once, the others back off
normally). A forward's failure (local-forward, remote-forward, forward-denied) does not end
the connection: the tunnel is degraded, the failure counted once by its class, and the
forward asked for again on the same ssh (remote-forward every ~3 s, forward-denied at the
cap, local-forward with the usual backoff)."""

import os
import re
import subprocess
import time

import tunneltest
from tunneltest import (SSHServer, UP_TIMEOUT, duration_slack, free_port, listening_socket, metric_value, metrics_text,
                        parse_duration, status, status_reply, tunnelctl, wait_until)
from systemdtest import JournalSocket
from featuretest import FeatureTest, make_key

NO_SUCH_HOST = "tunneltest-no-such-host.invalid"  # .invalid never resolves (RFC 6761)


def exit_line(name, cls):
    """The first failed start of name: 'ssh exited …(cls: hint); restarting in X (failed start 1 in a row)'."""
    return (rf"^<(\d+)>{name}: ssh exited with status 255 after .*\({re.escape(cls)}: .*\); "
            r"restarting in (.+) \(failed start 1 in a row\)$")


class FailureClassTest(FeatureTest):
    # restart_delay 2 and a cap of 20: a normal first backoff is 1-2 s, the cap's 10-20 s.
    DELAY, CAP = 2, 20

    def run_one(self, tunnel, cls, **settings):
        """tunneld on one tunnel (named "t") that fails with cls; checks every place the class
        shows; returns (tunneld, first backoff delay, status object)."""
        settings = {"restart_delay": self.DELAY, "restart_delay_max": self.CAP, "gatetime": 5, **settings}
        d = self.tunneld([{"name": "t", **tunnel}], **settings)
        delay, t = self.check_failed_start(d, cls)
        return d, delay, t

    def check_failed_start(self, d, cls, after=0):
        """Tunnel t's first failed start (since the last success or requested stop), of class
        cls, as every place shows it; returns (the backoff delay logged, status object)."""
        m = d.wait_log(exit_line("t", cls), timeout=UP_TIMEOUT, after=after)
        self.assertEqual(m.group(1), "4", "a failed start is a warning")
        delay = parse_duration(m.group(2))
        reply = status_reply(d)
        t = {x["name"]: x for x in reply["tunnels"]}["t"]
        self.assertEqual(t["state"], "backoff", t)
        self.assertEqual(t["last_exit"]["failure"], cls, t)
        self.assertEqual(t["last_exit"]["status"], 255, t)
        self.assertFalse(t["last_exit"]["requested"], t)
        self.assertEqual(t["failures"], {cls: 1}, t)
        self.assertEqual(t["consecutive_failures"], 1, t)
        self.assertRegex(reply["status"], rf"^0/1 tunnels up; backoff: t \({re.escape(cls)}, retry at \d\d:\d\d:\d\d\)$")
        # the backoff in force is the one logged: retry_in counts down from it
        self.assertAlmostEqual(t["retry_in"] + t["last_exit"]["ago"], delay, delta=duration_slack(delay) + 0.05)
        text = metrics_text(d)
        self.assertEqual(metric_value(text, "tunneld_tunnel_failures_total", tunnel="t", **{"class": cls}), 1)
        self.assertEqual(metric_value(text, "tunneld_tunnel_up", tunnel="t"), 0)
        return delay, t

    def check_failed_forward(self, d, cls, kind, reason):
        """Tunnel t's forward failed with class cls, ssh's reason as its reason (a regex): the
        tunnel degraded on its first ssh, the failure counted once; returns (the retry delay
        logged, status object)."""
        m = d.wait_log(rf"^<(\d+)>t: forward {kind} \S+ failed: {reason}; asked for again in (.+)$", timeout=UP_TIMEOUT)
        self.assertEqual(m.group(1), "4", "a failed forward is a warning")
        delay = parse_duration(m.group(2))
        t = wait_until(lambda: (lambda t: t if t["state"] == "degraded" else None)(status_reply(d)["tunnels"][0]),
                       10, what="t degraded")
        self.assertEqual((t["starts"], t["failures"], t["last_exit"]), (1, {cls: 1}, None), t)
        self.assertEqual(t["forward_states"][0]["state"], "failed", t)
        self.assertRegex(t["forward_states"][0]["reason"], reason)
        self.assertRegex(status_reply(d)["status"], r"^0/1 tunnels up; degraded: t$")
        text = metrics_text(d)
        self.assertEqual(metric_value(text, "tunneld_tunnel_failures_total", tunnel="t", **{"class": cls}), 1)
        self.assertEqual(metric_value(text, "tunneld_tunnel_up", tunnel="t"), 0)
        return delay, t

    def assert_normal_backoff(self, delay):
        self.assertTrue(self.DELAY / 2 - 0.06 <= delay <= self.DELAY + 0.06,
                        f"first backoff {delay} s, not restart_delay {self.DELAY} s with jitter")

    def assert_capped_backoff(self, d, delay, starts=1):
        """Straight to restart_delay_max: between cap/2 and cap after the first failure, and
        no second start meanwhile. The backoff in force is still the one logged (measured
        from the exit, not from when this test got to look: a loaded machine may take a
        second to get here)."""
        self.assertTrue(self.CAP / 2 - 0.06 <= delay <= self.CAP + 0.51, f"first backoff {delay} s, cap {self.CAP} s")
        time.sleep(1)
        t = status(d)["t"]
        self.assertEqual((t["state"], t["starts"]), ("backoff", starts), t)
        self.assertAlmostEqual(t["retry_in"] + t["last_exit"]["ago"], delay, delta=duration_slack(delay) + 0.05, msg=t)

    def test_auth(self):
        """A key the server does not hold: auth, and the backoff goes to the cap at once."""
        key = make_key(tunneltest.temp_dir(self), "stranger")
        d, delay, _ = self.run_one({"identity_file": key}, "auth")
        self.assertRegex(d.log(), r"(?m)^<4>t: ssh: root@127\.0\.0\.1: Permission denied \(publickey\)\.$")
        self.assert_capped_backoff(d, delay)

    def test_host_key(self):
        """known_hosts holds another key for the server: host-key, backoff to the cap."""
        tmp = tunneltest.temp_dir(self)
        other = make_key(tmp, "other_host_key")
        with open(other + ".pub") as f:
            keytype, blob = f.read().split()[:2]
        known = os.path.join(tmp, "known_hosts")
        with open(known, "w") as f:
            f.write(f"[127.0.0.1]:{self.sshd.port} {keytype} {blob}\n")
        d, delay, _ = self.run_one({"ssh_options": [f"UserKnownHostsFile={known}", "GlobalKnownHostsFile=/dev/null",
                                                    "StrictHostKeyChecking=yes"]}, "host-key")
        self.assertRegex(d.log(), r"(?m)^<4>t: ssh: Host key verification failed\.$")
        self.assertIn("REMOTE HOST IDENTIFICATION HAS CHANGED", d.log())
        self.assert_capped_backoff(d, delay)

    def test_dns(self):
        """A name that does not resolve: dns, normal backoff."""
        d, delay, _ = self.run_one({"host": NO_SUCH_HOST}, "dns")
        self.assertRegex(d.log(), rf"(?m)^<4>t: ssh: ssh: Could not resolve hostname {re.escape(NO_SUCH_HOST)}: ")
        self.assert_normal_backoff(delay)

    def test_refused(self):
        """Nothing listens on the ssh port: refused, normal backoff."""
        port = free_port()
        d, delay, _ = self.run_one({"port": port}, "refused")
        self.assertRegex(d.log(), rf"(?m)^<4>t: ssh: ssh: connect to host 127\.0\.0\.1 port {port}: Connection refused$")
        self.assert_normal_backoff(delay)

    def test_local_forward(self):
        """The local listen port is taken: local-forward (ssh's bind error as the reason),
        asked for again with the normal backoff, on the same ssh."""
        taken = listening_socket()
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        d = self.tunneld([{"name": "t", "local_forwards": [self.echo.forward(port)]}], restart_delay=self.DELAY,
                         restart_delay_max=self.CAP, gatetime=5)
        delay, _ = self.check_failed_forward(d, "local-forward", "L",
                                             rf"bind \[127\.0\.0\.1\]:{port}: Address already in use")
        self.assert_normal_backoff(delay)

    def test_remote_forward(self):
        """The remote listen port is taken on the server: remote-forward, asked for again
        every ~3 s (3 s with jitter: 1.5-3 s) however small restart_delay is, not with a
        growing delay, on the same ssh; once the port is free the tunnel comes up."""
        taken = listening_socket()
        port = taken.getsockname()[1]
        self.addCleanup(taken.close)
        d = self.tunneld([{"name": "t", "remote_forwards": [self.echo.forward(port)]}], restart_delay=0.2,
                         restart_delay_max=self.CAP, gatetime=5, args=["-d"])
        _, t = self.check_failed_forward(d, "remote-forward", "R",
                                         rf"remote port forwarding failed for listen port {port}")
        retry = rf"^<\d+>t: forward R \S+ failed: remote port forwarding failed for listen port {port}; " \
                r"asked for again in (.+)$"
        wait_until(lambda: len(d.findall(retry)) >= 3, 30, what="3 failed attempts")
        delays = [parse_duration(x) for x in d.findall(retry)]
        for n, got in enumerate(delays, 1):
            self.assertTrue(1.5 - 0.06 <= got <= 3.06, f"attempt {n}: {delays}")
        taken.close()
        m, pid = d.wait_up("t", timeout=10)
        self.assertEqual(pid, t["pid"], "the same ssh")
        self.assertTrue(tunneltest.echo_roundtrip(port), "no echo through the remote forward")

    def test_config(self):
        """ssh_config_file edited after tunneld checked it (with ssh -G, at load), then
        tunnelctl restart: the new ssh fails because ssh refuses the file (config), and the
        old one serves on (make-before-break never breaks what works): the restart says so
        and exits 1, the failure is counted, and the restart is tried again at the capped
        backoff, which takes the forward over once the file is fixed."""
        conf = os.path.join(tunneltest.temp_dir(self), "ssh_config")
        with open(conf, "w") as f:
            f.write("ServerAliveCountMax 3\n")
        os.chmod(conf, 0o644)
        port = free_port()
        d = self.tunneld([{"name": "t", "ssh_config_file": conf, "local_forwards": [self.echo.forward(port)]}],
                         restart_delay=self.DELAY, restart_delay_max=self.CAP, gatetime=5)
        _, pid = d.wait_up("t")
        with open(conf, "w") as f:
            f.write("ServerAliveCountMax 3\nNoSuchOption yes\n")
        offset = len(d.log())
        r = tunnelctl(d, "restart", "t")
        self.assertEqual((r.returncode, r.stdout.strip()),
                         (1, f"t: not restarted: the new ssh failed (config); ssh pid {pid} serves on"), r)
        m = d.wait_log(r"^<(\d+)>t: ssh exited with status 255 after .*, never up \(config: .*\); the old ssh "
                       rf"\(pid {pid}\) serves on; make-before-break tried again in (.+)$", after=offset)
        self.assertEqual(m.group(1), "4", "a failed start is a warning")
        delay = parse_duration(m.group(2))
        self.assertTrue(self.CAP / 2 - 0.06 <= delay <= self.CAP + 0.51, f"tried again in {delay} s, cap {self.CAP} s")
        self.assertRegex(d.log()[offset:], rf"(?m)^<4>t: ssh: {re.escape(conf)}: line 2: Bad configuration option: "
                                           r"nosuchoption$")
        self.assertNotRegex(d.log()[offset:], r"(?m)^<\d>t: .*(stopping|SIGTERM|backoff)")
        t = status(d)["t"]
        self.assertEqual((t["state"], t["pid"], t["next_pid"], t["starts"], t["failures"], t["last_exit"]["failure"]),
                         ("up", pid, None, 2, {"config": 1}, "config"), t)
        self.assertTrue(tunneltest.echo_roundtrip(port), "an echo through the old ssh")
        text = metrics_text(d)
        self.assertEqual(metric_value(text, "tunneld_tunnel_failures_total", tunnel="t", **{"class": "config"}), 1)
        self.assertEqual(metric_value(text, "tunneld_tunnel_up", tunnel="t"), 1)
        # fixed: the next try takes the forward over, and the old ssh goes
        with open(conf, "w") as f:
            f.write("ServerAliveCountMax 3\n")
        d.wait_log(rf"^<\d+>t: make-before-break done: ssh pid \d+ has taken every forward over; the old one "
                   rf"\(pid {pid}\)", timeout=self.CAP + UP_TIMEOUT, after=offset)
        wait_until(lambda: not tunneltest.pid_alive(pid), 10, what="the old ssh to end")
        t = status(d)["t"]
        self.assertEqual((t["state"], t["starts"]), ("up", 3), t)
        self.assertNotEqual(t["pid"], pid)
        self.assertTrue(tunneltest.echo_roundtrip(port), "an echo through the new ssh")

    def test_forward_denied(self):
        """An sshd whose policy refuses every -R (PermitListen none; AllowTcpForwarding local
        in a Match block): forward-denied, not remote-forward (a port taken), and the next
        attempt waits the cap at once instead of knocking every 3 s (sshd's reason, its
        SSH2_MSG_DEBUG, is logged at debug level)."""
        for policy in (["PermitListen none"], ["Match User root", "  AllowTcpForwarding local"]):
            with self.subTest(" / ".join(p.strip() for p in policy)):
                sshd = tunneltest.use(self, SSHServer(extra_config=policy))
                port = free_port()
                d = self.tunneld([{"name": "t", "remote_forwards": [self.echo.forward(port)]}], sshd=sshd,
                                 restart_delay=self.DELAY, restart_delay_max=self.CAP, gatetime=5, args=["-d"])
                delay, t = self.check_failed_forward(d, "forward-denied", "R",
                                                     rf"remote port forwarding failed for listen port {port}")
                self.assertRegex(d.log(), r"(?m)^<7>t: ssh: debug1: .*Remote: (Server has disabled port forwarding\.|"
                                          r"port forwarding refused)$")
                self.assertNotIn("remote-forward", str(t["failures"]))
                self.assertTrue(self.CAP / 2 - 0.06 <= delay <= self.CAP + 0.51, f"first retry in {delay} s")
                self.assertFalse(tunneltest.port_accepts(port, timeout=0.5))
                d.close()

    def test_prohibited_connections_are_counted(self):
        """An sshd that lets the tunnel up but refuses to open its -L's target (PermitOpen
        names another one): each connection through the forward is "administratively
        prohibited"; the tunnel stays up on the same ssh, and `prohibited` (status) and
        tunneld_tunnel_prohibited_total count exactly the refused connections."""
        sshd = tunneltest.use(self, SSHServer(extra_config=["PermitOpen 127.0.0.1:1"]))
        lport = free_port()
        d = self.tunneld([{"name": "t", "local_forwards": [self.echo.forward(lport)]}], sshd=sshd)
        _, pid = d.wait_up("t")
        refused = 3
        for i in range(refused):
            self.assertFalse(tunneltest.echo_roundtrip(lport, timeout=5), "an echo through a prohibited forward")
            wait_until(lambda: status(d)["t"]["prohibited"] == i + 1, 10, what=f"{i + 1} prohibited connections")
        self.assertEqual(d.count_log(r"^<4>t: ssh: channel \d+: open failed: administratively prohibited: "), refused)
        t = status(d)["t"]
        self.assertEqual((t["state"], t["pid"], t["starts"], t["prohibited"], t["failures"]),
                         ("up", pid, 1, refused, {}), t)
        self.assertEqual(metric_value(metrics_text(d), "tunneld_tunnel_prohibited_total", tunnel="t"), refused)
        self.assertTrue(tunneltest.pid_alive(pid))

    def test_timeout(self):
        """A server that accepts TCP and never says a word (no banner), ssh's own
        ConnectTimeout longer than start_timeout: tunneld ends the run at start_timeout,
        class timeout, and backs off normally."""
        silent = listening_socket()
        self.addCleanup(silent.close)
        t0 = time.monotonic()
        d = self.tunneld([{"name": "t", "port": silent.getsockname()[1]}], restart_delay=self.DELAY,
                         restart_delay_max=self.CAP, gatetime=5, start_timeout=2, connect_timeout=30)
        d.wait_log(r"^<4>t: ssh is not up after start_timeout 2(?:\.0)? s \(the server has not answered\): "
                   r"restarting ssh \(SIGTERM", timeout=2 + 10)
        took = time.monotonic() - t0
        self.assertGreater(took, 2 - 0.05)
        self.assertLess(took, 2 + 5, "the start deadline came late")
        m = d.wait_log(r"^<4>t: ssh (?:exited with status \d+|was killed by signal TERM) after .*\(timeout: .*\); "
                       r"restarting in (.+) \(failed start 1 in a row\)$", timeout=10)
        delay = parse_duration(m.group(1))
        self.assert_normal_backoff(delay)
        t = status(d)["t"]
        self.assertEqual((t["state"], t["last_exit"]["failure"], t["failures"], t["last_exit"]["requested"]),
                         ("backoff", "timeout", {"timeout": 1}, False), t)
        self.assertEqual(metric_value(metrics_text(d), "tunneld_tunnel_failures_total", tunnel="t",
                                      **{"class": "timeout"}), 1)

    def test_journal_failure_field(self):
        """With log_target = journal, each failed start's entry carries FAILURE=<class> and
        TUNNEL=<name>, for every class above at once."""
        if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
            self.skipTest("unshare --mount is not permitted here")
        journal = tunneltest.use(self, JournalSocket())
        tmp = tunneltest.temp_dir(self)
        key = make_key(tmp, "stranger")
        lt, rt = listening_socket(), listening_socket()
        self.addCleanup(lt.close)
        self.addCleanup(rt.close)
        expect = {"auth": {"identity_file": key}, "dns": {"host": NO_SUCH_HOST}, "refused": {"port": free_port()},
                  "local-forward": {"local_forwards": [self.echo.forward(lt.getsockname()[1])]},
                  "remote-forward": {"remote_forwards": [self.echo.forward(rt.getsockname()[1])]}}
        names = {cls: cls.replace("-", "_") for cls in expect}
        self.tunneld([{"name": names[cls], **t} for cls, t in expect.items()], globals={"log_target": "journal"},
                     wrapper=journal.wrapper(), restart_delay=self.DELAY, restart_delay_max=self.CAP, gatetime=5)

        def entry(cls):  # the first failed start's entry (MESSAGE may begin with "NAME: ")
            if cls in ("local-forward", "remote-forward"):     # a forward's failure: the same ssh goes on
                pattern = re.compile(rf"^(?:{names[cls]}: )?forward [LR] \S+ failed: ")
            else:
                pattern = re.compile(rf"^(?:{names[cls]}: )?ssh exited with status 255 after ")
            for e in journal.entries():
                if e.get("TUNNEL") == names[cls] and pattern.match(e.get("MESSAGE", "")):
                    return e
            return None
        for cls in expect:
            e = wait_until(lambda: entry(cls), UP_TIMEOUT, what=f"the journal entry of {names[cls]}'s failed start")
            self.assertEqual(e.get("FAILURE"), cls, e)
            self.assertEqual(e.get("SYSLOG_IDENTIFIER"), "tunneld", e)
            if cls in ("local-forward", "remote-forward"):
                self.assertEqual(e.get("PRIORITY"), "4", e)
                continue
            self.assertEqual((e.get("PRIORITY"), e.get("EXIT_STATUS"), e.get("TUNNEL_STATE")), ("4", "255", "backoff"), e)
            # ssh's own line that told the class carries it too
            line = re.compile(rf"^(?:{names[cls]}: )?ssh: ")
            self.assertTrue(any(e2.get("TUNNEL") == names[cls] and e2.get("FAILURE") == cls
                                and line.match(e2.get("MESSAGE", "")) for e2 in journal.entries()), cls)


if __name__ == "__main__":
    tunneltest.main()
