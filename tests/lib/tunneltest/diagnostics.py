"""tunneltest.diagnostics: what a failed test prints, and resources that always clean up."""

from .base import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .helpers import *  # noqa: F401,F403
from .sanitizers import *  # noqa: F401,F403

class _Diagnostic:
    """Text shown under a failed test: read live while the source exists, frozen at close."""

    def __init__(self, title, source):
        self.title, self.source, self.frozen = title, source, None

    def freeze(self):
        if self.frozen is None:
            self.frozen = self._read()

    def _read(self):
        try:
            return self.source()
        except Exception as e:  # a diagnostic must never hide the real failure
            return f"(cannot read: {e})"

    def text(self):
        return self.frozen if self.frozen is not None else self._read()


_diagnostics = []
_open_resources = []


def _drop_closed_diagnostics():
    """Keep only the diagnostics of live helpers (a class's sshd outlives its tests)."""
    _diagnostics[:] = [d for d in _diagnostics if d.frozen is None]


def add_diagnostic(title, source):
    """Show source() (the tail of it) as TAP comments if the current test fails."""
    d = _Diagnostic(title, source)
    _diagnostics.append(d)
    return d


def _read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Resource:
    """Base of the context managers: registers itself for last-resort cleanup at exit."""

    def __enter__(self):
        _open_resources.append(self)
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self):
        pass

    def close(self):
        if self in _open_resources:
            _open_resources.remove(self)


@atexit.register
def _close_everything():
    for r in reversed(list(_open_resources)):
        try:
            r.close()
        except Exception:
            pass
