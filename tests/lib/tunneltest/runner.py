"""tunneltest.runner: the TAP runner meson reads."""

from .base import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .helpers import *  # noqa: F401,F403
from .sanitizers import *  # noqa: F401,F403
from .diagnostics import *  # noqa: F401,F403
from .configfile import *  # noqa: F401,F403
from .fakessh import *  # noqa: F401,F403
from .daemon import *  # noqa: F401,F403
from .sshd import *  # noqa: F401,F403
from .echo import *  # noqa: F401,F403
from .diagnostics import _close_everything, _diagnostics, _drop_closed_diagnostics  # noqa: F401

class TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimeout(f"the test ran longer than {TEST_TIMEOUT:g} s")


_interrupted = []


def _on_term(signum, frame):
    _interrupted.append(f"interrupted by signal {signal.Signals(signum).name}")
    raise KeyboardInterrupt(_interrupted[-1])


def _test_name(test):
    return f"{type(test).__name__}.{test._testMethodName}" if hasattr(test, "_testMethodName") else str(test)


class _TapResult(unittest.TestResult):
    """Prints one TAP line per test as it ends, with the traceback and the diagnostics of
    the helpers it used as '# ' comments when it fails."""

    def __init__(self, out):
        super().__init__()
        self.out = out
        self.number = 0
        self.reported = set()
        self.fixture_errors = []
        self.current = None

    def emit(self, text=""):
        self.out.write(text + "\n")
        self.out.flush()

    def comment(self, text):
        for line in text.rstrip("\n").splitlines() or [""]:
            self.emit("# " + line)

    def startTest(self, test):
        super().startTest(test)
        _drop_closed_diagnostics()
        self.current = test
        self.problems, self.skip, self.todo = [], None, None
        self.started = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)

    def stopTest(self, test):
        signal.setitimer(signal.ITIMER_REAL, 0)
        super().stopTest(test)
        self.current = None
        name = _test_name(test)
        self.number += 1
        self.reported.add(test.id())
        took = time.monotonic() - self.started
        if _interrupted:
            self.problems.append(_interrupted[0])
        if self.problems:
            self.emit(f"not ok {self.number} - {name}")
            for text in self.problems:
                self.comment(text)
            for d in _diagnostics:
                self.comment(f"--- {d.title} (tail) ---\n{d.text()}")
        elif self.todo is not None:
            # a known bug (@unittest.expectedFailure): TAP's TODO, neither a pass nor a failure
            self.emit(f"not ok {self.number} - {name} # TODO known bug")
            self.comment(self.todo)
        elif self.skip is not None:
            self.emit(f"ok {self.number} - {name} # SKIP {self.skip}")
        else:
            self.emit(f"ok {self.number} - {name}")
        self.comment(f"{name}: {took:.2f} s")
        _drop_closed_diagnostics()

    def _problem(self, test, err):
        text = self._exc_info_to_string(err, test)
        if self.current is None:  # setUpClass, tearDownClass, module fixtures
            self.fixture_errors.append(f"{test}: {text}")
            self.comment(f"error in {test}:\n{text}")
        else:
            self.problems.append(text)

    def addError(self, test, err):
        super().addError(test, err)
        self._problem(test, err)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._problem(test, err)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.problems.append(f"{subtest}:\n" + self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skip = reason

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.todo = self._exc_info_to_string(err, test)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.problems.append("unexpected success: the known bug seems fixed; remove @unittest.expectedFailure")


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def main():
    """Run the TestCases of __main__ (or those named on the command line, e.g.
    Class.test_name) and print TAP; exit 1 if any failed."""
    module = sys.modules["__main__"]
    loader = unittest.TestLoader()
    names = sys.argv[1:]
    suite = loader.loadTestsFromNames(names, module) if names else loader.loadTestsFromModule(module)
    tests = list(_flatten(suite))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    result = _TapResult(sys.stdout)
    result.emit(f"1..{len(tests)}")
    result.comment(f"tunneld: {TUNNELD}")
    interrupted = None
    try:
        suite.run(result)
    except KeyboardInterrupt as e:
        interrupted = str(e) or "interrupted"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _close_everything()
    for t in tests:  # not run: a class fixture failed, or we were interrupted
        if t.id() not in result.reported:
            result.number += 1
            why = interrupted or "not run (see the fixture error above)"
            result.emit(f"not ok {result.number} - {_test_name(t)}")
            result.comment(why)
    if interrupted:
        result.emit(f"Bail out! {interrupted}")
    ok = result.wasSuccessful() and not result.fixture_errors and not interrupted
    sys.exit(0 if ok else 1)
