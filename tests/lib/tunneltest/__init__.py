"""tunneltest: the shared harness of tunneld's Python tests (standard library only).

A test file defines unittest.TestCase classes and ends with

    if __name__ == "__main__":
        tunneltest.main()

main() runs them and prints TAP for meson. The helpers start what the tests need and always
clean up after themselves, even when a test fails or times out:

    FakeSSH     a scripted stand-in for ssh (tests/fake-ssh) for supervisor timing tests
    SSHServer   a throwaway sshd on 127.0.0.1 with its own host and client keys
    EchoServer  a threaded TCP echo server; echo_roundtrip() checks bytes through a tunnel
    Tunneld     tunneld itself on a config written by write_config(), its log, its children
    SSHTestCase a TestCase base: one SSHServer and one EchoServer per class, tunneld() on them
    LocalUser   a real unprivileged local user made for the test (an attacker, through setpriv)
    OpenSSH10Server, DropbearServer, openssh10_client()
                the server zoo: OpenSSH 10.0 (Debian 13's, server and client) and Dropbear

Everything listens on 127.0.0.1 only. Ports come from free_port(), which keeps concurrently
running test files (meson test --num-processes N) from picking the same port.

The package, one module per concept (base, processes, helpers, sanitizers, diagnostics,
configfile, fakessh, daemon, sshd, zoo, echo, runner, ctl, case, source, users); everything
is importable from here. Each helper is defined once: ctl holds those of the control socket
(tunnelctl, status, metrics, the waits on a tunnel's state), helpers the waits on a
condition and the round trips through a forward, Tunneld the waits on tunneld's log
(wait_log, wait_up, wait_loaded), source what the packaging tests read of the source tree.
"""

from .base import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .helpers import *  # noqa: F401,F403
from .sanitizers import *  # noqa: F401,F403
from .diagnostics import *  # noqa: F401,F403
from .configfile import *  # noqa: F401,F403
from .fakessh import *  # noqa: F401,F403
from .daemon import *  # noqa: F401,F403
from .sshd import *  # noqa: F401,F403
from .zoo import DROPBEAR, DropbearServer, OpenSSH10, OpenSSH10Server, openssh10, openssh10_client  # noqa: F401
from .echo import *  # noqa: F401,F403
from .runner import *  # noqa: F401,F403
from .ctl import *  # noqa: F401,F403
from .case import SSHTestCase  # noqa: F401
from .source import *  # noqa: F401,F403
from .users import LocalUser  # noqa: F401
from .diagnostics import _Diagnostic  # noqa: F401
from .echo import _EchoHandler  # noqa: F401
from .echo import _EchoTCPServer  # noqa: F401
from .sanitizers import _REPORT_LINES  # noqa: F401
from .runner import _TapResult  # noqa: F401
from .configfile import _accepted_globals  # noqa: F401
from .processes import _become_subreaper  # noqa: F401
from .diagnostics import _close_everything  # noqa: F401
from .processes import _comm  # noqa: F401
from .diagnostics import _diagnostics  # noqa: F401
from .diagnostics import _drop_closed_diagnostics  # noqa: F401
from .helpers import _ephemeral_range  # noqa: F401
from .runner import _flatten  # noqa: F401
from .helpers import _held_ports  # noqa: F401
from .runner import _interrupted  # noqa: F401
from .runner import _on_alarm  # noqa: F401
from .runner import _on_term  # noqa: F401
from .diagnostics import _open_resources  # noqa: F401
from .diagnostics import _read_text  # noqa: F401
from .processes import _reap  # noqa: F401
from .runner import _test_name  # noqa: F401
