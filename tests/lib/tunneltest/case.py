"""tunneltest.case: SSHTestCase, the base of the tests that run tunneld with real ssh
against a private sshd on 127.0.0.1 and an echo server behind the forwards."""

from .base import *  # noqa: F401,F403
from .helpers import *  # noqa: F401,F403
from .configfile import use  # noqa: F401
from .daemon import Tunneld  # noqa: F401
from .sshd import SSHServer  # noqa: F401
from .echo import EchoServer  # noqa: F401


class SSHTestCase(unittest.TestCase):
    """One sshd (self.sshd, with sshd_config lines sshd_config) and one echo server
    (self.echo) per class; each test runs its own tunneld(...)."""

    sshd_config = ()
    # tunnel defaults that keep the tests fast: a short gatetime and backoff
    fast_settings = {"gatetime": 1, "restart_delay": 0.2, "restart_delay_max": 2}

    @classmethod
    def setUpClass(cls):
        cls.sshd = use(cls, SSHServer(extra_config=cls.sshd_config))
        cls.echo = use(cls, EchoServer())

    def tunneld(self, tunnels, args=(), globals=None, env=None, wrapper=(), sshd=None, **settings):
        """tunneld with real ssh on tunnels (host 127.0.0.1 unless they say) to sshd (the
        class's by default): the defaults are sshd's tunnel_defaults() and fast_settings,
        overridden by settings. Returns once tunneld answers on its control socket with its
        configuration loaded (Tunneld.wait_loaded()), or has exited (the test judges that);
        closed by the test's cleanups."""
        sshd = sshd or self.sshd
        defaults = {**sshd.tunnel_defaults(), **self.fast_settings, **settings}
        tunnels = [{"host": "127.0.0.1", **t} for t in tunnels]
        d = use(self, Tunneld(tunnels, defaults, globals={"ssh": SSH, **(globals or {})}, args=args, env=env,
                              wrapper=wrapper))
        d.wait_loaded(exit_ok=True)
        return d
