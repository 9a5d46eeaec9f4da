"""logindstub: a private system bus and a stand-in logind on it, for the tests of what
tunneld does around sleep (daemon/sleepwatch.c).

    PrivateSystemBus  Debian's dbus-daemon on a socket of its own, with a permissive
                      policy; `env` points DBUS_SYSTEM_BUS_ADDRESS at it
    StandInLogind     a process on that bus that owns org.freedesktop.login1 (or, as an
                      impostor, does not) and emits PrepareForSleep(b) when asked
    available()       None, or why these cannot run here (no dbus-daemon, no python3-dbus)

The stand-in is a small python3-dbus program run by an interpreter that has the module
(Debian's python3 when the one running the tests is not). Both stop when closed.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import tunneltest
from tunneltest import Resource, add_diagnostic, wait_until

DBUS_DAEMON = shutil.which("dbus-daemon") or "/usr/bin/dbus-daemon"
LOGIND = "org.freedesktop.login1"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"/>
  </policy>
</busconfig>
"""

# argv: bus address, the name to own ("-": none). Reads "sleep 1|0" lines, answers "sent".
STAND_IN = r"""
import sys
import dbus
import dbus.lowlevel
bus = dbus.bus.BusConnection(sys.argv[1])
if sys.argv[2] != "-":
    got = bus.request_name(sys.argv[2], dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
    if got != dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER:
        sys.exit(f"could not own {sys.argv[2]}: {got}")
print("ready", flush=True)
for line in sys.stdin:
    words = line.split()
    if words[:1] == ["sleep"]:
        m = dbus.lowlevel.SignalMessage("/org/freedesktop/login1", "org.freedesktop.login1.Manager",
                                        "PrepareForSleep")
        m.append(words[1] == "1", signature="b")
        bus.send_message(m)
        bus.flush()
        print("sent", flush=True)
"""

_python = []


def python_with_dbus():
    """An interpreter that can import dbus (python3-dbus), or None."""
    if not _python:
        found = None
        for exe in dict.fromkeys((sys.executable, "/usr/bin/python3")):
            if exe and os.access(exe, os.X_OK) and subprocess.run(
                    [exe, "-c", "import dbus"], capture_output=True, timeout=20).returncode == 0:
                found = exe
                break
        _python.append(found)
    return _python[0]


def available():
    if not os.access(DBUS_DAEMON, os.X_OK):
        return "no dbus-daemon (Debian's dbus-daemon package)"
    if python_with_dbus() is None:
        return "no python3 with the dbus module (Debian's python3-dbus package)"
    return None


class PrivateSystemBus(Resource):
    """dbus-daemon on DIR/bus; `address`, and `env`: os.environ with DBUS_SYSTEM_BUS_ADDRESS
    set to it."""

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="tunneltest-bus-")
        self.path = os.path.join(self.dir, "bus")
        conf = os.path.join(self.dir, "bus.conf")
        with open(conf, "w") as f:
            f.write(BUS_CONFIG.format(path=self.path))
        self.log_path = os.path.join(self.dir, "dbus.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([DBUS_DAEMON, f"--config-file={conf}", "--nofork", "--nopidfile"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._diag = add_diagnostic("private system bus", lambda: tunneltest._read_text(self.log_path))
        wait_until(lambda: os.path.exists(self.path) or self.proc.poll() is not None, 10,
                   what="dbus-daemon's socket")
        if self.proc.poll() is not None:
            raise AssertionError(f"dbus-daemon exited: {tunneltest._read_text(self.log_path)}")
        self.address = f"unix:path={self.path}"
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def close(self):
        if getattr(self, "proc", None) is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self._diag.freeze()
            shutil.rmtree(self.dir, ignore_errors=True)
        super().close()


class StandInLogind(Resource):
    """A process on `bus` (a PrivateSystemBus, or a bus address) that owns
    org.freedesktop.login1 (name=None: owns nothing, an impostor whose signals logind's
    watchers must ignore). sleep(True/False) emits PrepareForSleep and returns once the bus
    has it. wrapper: argv run before it (e.g. nsenter into a namespace's system bus)."""

    def __init__(self, bus, name=LOGIND, wrapper=()):
        self.address = bus if isinstance(bus, str) else bus.address
        self.name = name
        self.wrapper = list(wrapper)
        self.proc = None

    def start(self):
        argv = [*self.wrapper, python_with_dbus(), "-c", STAND_IN, self.address, self.name or "-"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise AssertionError(f"stand-in logind did not start: {line!r} {self.proc.stderr.read()}")

    def sleep(self, sleeping):
        self.proc.stdin.write(f"sleep {1 if sleeping else 0}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if line.strip() != "sent":
            raise AssertionError(f"stand-in logind: {line!r} {self.proc.stderr.read() if self.proc.poll() else ''}")

    def close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for f in (self.proc.stdout, self.proc.stderr):
                f.close()
            self.proc = None
        super().close()
