"""Does a forward carry bytes? Connect, send a line, read the same line back."""
import errno
import itertools
import selectors
import socket
import time

from .util import listening_ports, now

_seq = itertools.count()


def _payload(port):
    return f"tbench {port} {next(_seq)} {time.time_ns()}\n".encode()


def echo_on(s, msg):
    """Send msg on the connected socket s; True if it came back intact (OSError passes)."""
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(len(msg) - len(got))
        if not chunk:
            return False
        got += chunk
    return got == msg


def echo_ok(host, port, timeout=2.0):
    """One attempt; True if the echo came back intact."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return echo_on(s, _payload(port))
    except OSError:
        return False


def wait_echo(host, port, deadline, retry=0.001, attempt_timeout=1.0):
    """Retry until one attempt echoes; the monotonic time it did, or None at deadline.
    A refused connect (nothing listens yet) is retried after `retry` seconds."""
    while True:
        t = now()
        if t >= deadline:
            return None
        msg = _payload(port)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(min(attempt_timeout, max(0.001, deadline - t)))
        try:
            s.connect((host, port))
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = s.recv(len(msg) - len(got))
                if not chunk:
                    break
                got += chunk
            if got == msg:
                return now()
        except ConnectionRefusedError:
            time.sleep(retry)
        except OSError:
            time.sleep(retry)
        finally:
            s.close()


class MultiProber:
    """Probe many forwards at once from one thread (selectors, non-blocking sockets).

    Per target a new attempt starts every `interval` seconds while fewer than
    `max_outstanding` are in flight; a refused or reset attempt is retried after
    `interval`; an attempt that got no echo within `attempt_timeout` is abandoned.
    With `listen_filter` (loopback targets only) attempts start only once the port is in
    LISTEN state in /proc/net/tcp, re-read every `filter_interval` seconds: probing a
    thousand closed ports every few milliseconds would steal the CPU that the ssh
    handshakes being measured need.
    """

    def __init__(self, targets, interval=0.005, attempt_timeout=2.0, max_outstanding=1,
                 listen_filter=False, filter_interval=0.02, max_total=None):
        self.targets = list(targets)            # (host, port)
        self.max_total = max_total              # attempts in flight over all targets (descriptors)
        self.interval = interval
        self.attempt_timeout = attempt_timeout
        self.max_outstanding = max_outstanding
        self.listen_filter = listen_filter
        self.filter_interval = filter_interval
        self.attempts = 0
        self.first_listening = {}               # with listen_filter: when each port was first seen listening

    def run(self, deadline):
        """{(host, port): monotonic time of the first echo or None}."""
        sel = selectors.DefaultSelector()
        done = {t: None for t in self.targets}
        pending = set(self.targets)
        next_try = {t: 0.0 for t in self.targets}
        inflight = {t: 0 for t in self.targets}
        listening, next_filter = set(), 0.0
        try:
            while pending:
                t = now()
                if t >= deadline:
                    break
                if self.listen_filter and t >= next_filter:
                    listening = listening_ports()
                    next_filter = t + self.filter_interval
                    for tgt in pending:
                        if tgt[1] in listening and tgt not in self.first_listening:
                            self.first_listening[tgt] = t
                for tgt in list(pending):
                    if self.max_total and len(sel.get_map()) >= self.max_total:
                        break
                    if t < next_try[tgt] or inflight[tgt] >= self.max_outstanding:
                        continue
                    if self.listen_filter and tgt[1] not in listening:
                        continue
                    self._start(sel, tgt, inflight)
                    next_try[tgt] = t + self.interval
                timeout = self.interval
                if self.listen_filter:
                    timeout = min(timeout, max(0.0, next_filter - now()))
                for key, ev in sel.select(timeout=max(0.0005, timeout)):
                    self._event(sel, key, ev, done, pending, inflight, next_try)
                t = now()
                for key in list(sel.get_map().values()):
                    a = key.data
                    if t - a["t0"] > self.attempt_timeout:
                        self._close(sel, key.fileobj, a, inflight)
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()
        return done

    def _start(self, sel, tgt, inflight):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        self.attempts += 1
        err = s.connect_ex(tgt)
        if err not in (0, errno.EINPROGRESS):
            s.close()
            return
        a = {"tgt": tgt, "t0": now(), "msg": _payload(tgt[1]), "got": b"", "sent": False}
        inflight[tgt] += 1
        sel.register(s, selectors.EVENT_WRITE, a)

    def _close(self, sel, s, a, inflight):
        sel.unregister(s)
        s.close()
        inflight[a["tgt"]] -= 1

    def _event(self, sel, key, ev, done, pending, inflight, next_try):
        s, a = key.fileobj, key.data
        tgt = a["tgt"]
        if not a["sent"]:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                self._close(sel, s, a, inflight)
                return
            try:
                s.send(a["msg"])
            except OSError:
                self._close(sel, s, a, inflight)
                return
            a["sent"] = True
            sel.modify(s, selectors.EVENT_READ, a)
            return
        try:
            chunk = s.recv(4096)
        except OSError:
            chunk = b""
        if not chunk:
            self._close(sel, s, a, inflight)
            return
        a["got"] += chunk
        if len(a["got"]) < len(a["msg"]):
            return
        ok = a["got"] == a["msg"]
        self._close(sel, s, a, inflight)
        if ok and tgt in pending:
            done[tgt] = now()
            pending.discard(tgt)
