#!/usr/bin/env python3
"""The network modules under tunneld.service's hardening, in the namespaced real systemd
(tests/lib/systemdtest.py): which of netlink (NETLINK_ROUTE), sock_diag, /proc, pidfd_getfd
and the system bus work with the unit's restrictions, and what the unit would need.

A unit made from the built build/systemd/tunneld.service keeps every setting of its
[Service] section (User=tunneld, NoNewPrivileges=, CapabilityBoundingSet=,
RestrictAddressFamilies=, SystemCallFilter=, ProtectProc=, ProcSubset= ...) and runs
`netpath-tool selfcheck` instead of tunneld: it forks a child that holds a loopback TCP
connection (as tunneld's ssh would) and asks each module once: proc_net (the child's
connection from its pid), netpath (NETLINK_ROUTE), tcp_diag (NETLINK_SOCK_DIAG), tcp_tune
(pidfd_open + pidfd_getfd + setsockopt TCP_USER_TIMEOUT), netwatch, and sleepwatch on the
namespace's real system bus, where a stand-in logind (root may own org.freedesktop.login1
under Debian's bus policy; the real logind is masked) emits PrepareForSleep(true), (false).

Found: everything works under the unit as it was but pidfd_getfd, which systemd puts in its
@debug set, outside @system-service (EPERM from the seccomp filter). With one line more,
`SystemCallFilter=pidfd_getfd`, it works too, and the units have it now: nothing else (no capability, ptrace rules
are met by a parent of the same user) stands in its way.
"""

import os
import re
import unittest

import logindstub
import netpathtool
import tunneltest
from systemdtest import SystemdNamespace, namespace_prerequisites
from tunneltest import wait_until

BASE = "/run/netpath-test"
TOOL = f"{BASE}/netpath-tool"
UNIT = "netpath-check.service"
OUT = "/run/netpath-check.out"
SANITIZE = os.environ.get("TUNNELD_SANITIZE", "none")
# The settings that make tunneld.service what it is, not how this check runs.
NOT_COPIED = re.compile(r"^(Type|ExecStartPre|ExecStart|ExecReload|Restart|RestartSec|WatchdogSec|KillMode|"
                        r"TimeoutStopSec|StandardOutput|StandardError)=")
SLEEP_WAIT = 20          # seconds the selfcheck listens on the bus


def hardened_unit(extra=(), drop=()):
    """netpath-check.service: tunneld.service's [Service] settings, running the selfcheck."""
    with open(os.path.join(os.path.dirname(tunneltest.TUNNELD), "..", "systemd", "tunneld.service")) as f:
        text = f.read()
    service = text.split("[Service]", 1)[1].split("\n[", 1)[0]
    kept = [line for line in service.splitlines() if line.strip() and not line.startswith("#")
            and not NOT_COPIED.match(line) and line not in drop]
    lines = ["[Unit]", "Description=netpath selfcheck under tunneld.service's hardening", "", "[Service]",
             "Type=exec", f"ExecStart={TOOL} selfcheck {SLEEP_WAIT}", f"StandardOutput=file:{OUT}",
             "StandardError=inherit", *kept, *extra]
    if SANITIZE not in ("", "none"):
        # LeakSanitizer stops the world with ptrace, which SystemCallFilter= forbids
        lines.append("Environment=ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
    return "\n".join(lines) + "\n", kept


class NetpathUnderTheUnitTest(unittest.TestCase):
    ns = None

    @classmethod
    def setUpClass(cls):
        why = namespace_prerequisites() or logindstub.available()
        if why:
            raise unittest.SkipTest(why)
        netpathtool.require()
        cls.ns = tunneltest.use(cls, SystemdNamespace())
        with open(netpathtool.TOOL, "rb") as f:
            cls.ns.put(TOOL, f.read(), 0o755)
        cls.ns.run("chmod", "755", BASE)
        with open(os.path.join(tunneltest.SOURCE_ROOT, "systemd", "tunneld.sysusers")) as f:
            cls.ns.put(f"{BASE}/tunneld.sysusers", f.read())
        cls.ns.run("systemd-sysusers", f"{BASE}/tunneld.sysusers")
        # the stand-in takes logind's name on the real bus: the real one must not hold it
        cls.ns.systemctl("mask", "--runtime", "--now", "systemd-logind.service", check=False)
        cls.ns.systemctl("start", "dbus.socket")

    def selfcheck(self, extra=(), drop=()):
        """Run the selfcheck under the unit (+ extra lines); emit PrepareForSleep once it
        listens; its output."""
        text, kept = hardened_unit(extra, drop)
        for setting in ("User=tunneld", "NoNewPrivileges=yes", "CapabilityBoundingSet=",
                        "SystemCallFilter=@system-service", "ProcSubset=pid",
                        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"):
            self.assertIn(setting, kept, "tunneld.service changed: this test copies its settings")
        self.ns.put(f"/run/systemd/system/{UNIT}", text)
        self.ns.systemctl("daemon-reload")
        self.ns.run("rm", "-f", OUT)

        def out():
            return self.ns.run("cat", OUT, check=False).stdout
        # logind is on the bus before tunneld starts, as on a real machine
        with logindstub.StandInLogind("unix:path=/run/dbus/system_bus_socket", wrapper=self.ns.command()) as logind:
            self.addCleanup(self.ns.systemctl, "stop", UNIT, check=False)
            self.ns.systemctl("start", UNIT)
            wait_until(lambda: re.search(r"(?m)^sleepwatch ", out()), 20, interval=0.2,
                       what="the selfcheck's modules")
            if re.search(r"(?m)^sleepwatch ok", out()):
                wait_until(lambda: "watching logind" in out() or "logind is not" in out(), 10, interval=0.2,
                           what="sleepwatch's first answer from the bus")
                logind.sleep(True)
                logind.sleep(False)
                wait_until(lambda: "sleep sleeping=0" in out(), 10, interval=0.2, what="PrepareForSleep(false)")
        self.ns.systemctl("stop", UNIT)
        text = out()
        tunneltest.check_sanitizer_output(text, "netpath-tool selfcheck")
        print("\n".join("# " + line for line in text.splitlines()), flush=True)
        uid = self.ns.run("id", "-u", "tunneld").stdout.strip()
        self.assertRegex(text, rf"(?m)^selfcheck uid={uid}$", "the check runs as the unit's user")
        return text

    def assert_works(self, text, what, pattern):
        self.assertRegex(text, rf"(?m)^{what} {pattern}", f"{what} under the unit:\n{text}")

    def test_modules_under_the_unit_as_it_is(self):
        text = self.selfcheck()
        self.assert_works(text, "proc_net", "ok ")
        self.assert_works(text, "netpath check", r".*verdict=same")
        self.assert_works(text, "tcp_diag", "ok state=established has_info=1")
        self.assert_works(text, "netwatch", "ok")
        self.assert_works(text, "sleepwatch", "ok")
        self.assertIn("watching logind for sleep and resume", text)
        self.assertEqual(re.findall(r"(?m)^sleep sleeping=(\d)$", text), ["1", "0"])
        # dead_path_timeout: the unit allows pidfd_getfd (in @debug, not @system-service)
        self.assert_works(text, "pidfd_getfd", "ok user_timeout_ms=4321")

    def test_pidfd_getfd_is_the_units_own_line(self):
        """Without the unit's SystemCallFilter=pidfd_getfd (@system-service alone) it is
        refused: the line is what makes dead_path_timeout work under the unit."""
        text = self.selfcheck(drop=["SystemCallFilter=pidfd_getfd"])
        self.assertRegex(text, r"(?m)^pidfd_getfd error=Operation not permitted errno=1$")
        self.assert_works(text, "tcp_diag", "ok")


if __name__ == "__main__":
    tunneltest.main()
