"""tunneltest.echo: EchoServer, a threaded TCP echo server; StalledServer, one that sends an SSH banner and then nothing."""

from .base import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .helpers import *  # noqa: F401,F403
from .sanitizers import *  # noqa: F401,F403
from .diagnostics import *  # noqa: F401,F403
from .configfile import *  # noqa: F401,F403
from .fakessh import *  # noqa: F401,F403
from .daemon import *  # noqa: F401,F403
from .sshd import *  # noqa: F401,F403


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        conns = self.server.conns
        with self.server.lock:
            conns.add(self.request)
        try:
            self.request.settimeout(60)
            while True:
                data = self.request.recv(65536)
                if not data:
                    break
                self.request.sendall(data)
        except OSError:
            pass
        finally:
            with self.server.lock:
                conns.discard(self.request)


class _EchoTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class EchoServer(Resource):
    """TCP echo server on 127.0.0.1:port (a free one unless given), one thread per client."""

    def __init__(self, port=None):
        self.port = port
        self.server = None

    def start(self):
        self.port = self.port or free_port()
        self.server = _EchoTCPServer(("127.0.0.1", self.port), _EchoHandler)
        self.server.conns, self.server.lock = set(), threading.Lock()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def forward(self, port):
        """The forward spec "127.0.0.1:PORT:127.0.0.1:<this server's port>": a -L (or -R)
        listening on port whose bytes come here."""
        return f"127.0.0.1:{port}:127.0.0.1:{self.port}"

    def close(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            with self.server.lock:
                for conn in list(self.server.conns):
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self.thread.join(5)
            self.server = None
        super().close()


class StalledServer(Resource):
    """Accepts on 127.0.0.1, sends "SSH-2.0-OpenSSH_9.2" and then nothing, keeping every
    connection open until closed."""

    def start(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.accepted = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            try:
                c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            except OSError:
                pass
            self.conns.append(c)

    def close(self):
        self.running = False
        if getattr(self, "thread", None):
            self.thread.join(2)
        for c in getattr(self, "conns", []):
            c.close()
        if getattr(self, "sock", None):
            self.sock.close()
        super().close()
