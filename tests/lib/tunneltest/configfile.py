"""tunneltest.configfile: tunneld.conf written from Python values."""

from .base import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .helpers import *  # noqa: F401,F403
from .sanitizers import *  # noqa: F401,F403
from .diagnostics import *  # noqa: F401,F403

def quote(s):
    """A libconfig string literal."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def render_value(v):
    """A Python value as libconfig: str, bool, int, float, list/tuple (of scalars), dict."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"libconfig has no {v}")
        r = repr(v)
        return r if any(c in r for c in ".eE") else r + ".0"
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, (list, tuple)):
        return "( " + ", ".join(render_value(x) for x in v) + " )" if v else "( )"
    if isinstance(v, dict):
        return "{ " + " ".join(f"{k} = {render_value(x)};" for k, x in v.items()) + " }"
    raise TypeError(f"cannot render {type(v).__name__} as libconfig")


def render_config(globals=None, defaults=None, tunnels=()):
    """libconfig text, one setting per line (so a test can find the line of any setting)."""
    lines = [f"{k} = {render_value(v)};" for k, v in (globals or {}).items()]
    if defaults:
        lines.append("defaults = {")
        lines += [f"  {k} = {render_value(v)};" for k, v in defaults.items()]
        lines.append("};")
    lines.append("tunnels = (")
    for i, t in enumerate(tunnels):
        lines.append("  {")
        lines += [f"    {k} = {render_value(v)};" for k, v in t.items()]
        lines.append("  }" + ("," if i < len(tunnels) - 1 else ""))
    lines.append(");")
    return "\n".join(lines) + "\n"


def write_config(path, globals=None, defaults=None, tunnels=()):
    """Write render_config(...) to path and return the text."""
    text = render_config(globals, defaults, tunnels)
    with open(path, "w") as f:
        f.write(text)
    return text


def line_of(text, needle):
    """1-based number of the first line of text containing needle."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise ValueError(f"{needle!r} not in the text")


def use(test, cm):
    """Enter context manager cm for the rest of a TestCase test (or class, given the
    class in setUpClass): it is closed by the test's (class's) cleanups."""
    value = cm.__enter__()
    add = test.addClassCleanup if isinstance(test, type) else test.addCleanup
    add(cm.__exit__, None, None, None)
    return value


def temp_dir(test):
    """A temporary directory removed by test's cleanups."""
    path = tempfile.mkdtemp(prefix="tunneltest-")
    test.addCleanup(shutil.rmtree, path, True)
    return path


_accepted_globals = {}


def tunneld_accepts_global(key, value):
    """True if this tunneld's configuration knows the global setting key (checked once
    with -t on a one-tunnel file)."""
    if key not in _accepted_globals:
        path = tempfile.mkdtemp(prefix="tunneltest-probe-")
        try:
            conf = os.path.join(path, "probe.conf")
            write_config(conf, {key: value}, None, [{"name": "probe", "host": "probe"}])
            _accepted_globals[key] = run_tunneld("-t", "-c", conf).returncode == 0
        except (OSError, subprocess.SubprocessError):
            _accepted_globals[key] = False
        finally:
            shutil.rmtree(path, ignore_errors=True)
    return _accepted_globals[key]


def isolation_globals(private_dir):
    """Global settings that keep one test's tunneld from being disturbed by, or disturbing,
    the rest of the machine, for the settings this tunneld knows: no network watch (another
    test adding an interface would cut a backoff short), and a control socket of its own
    (the default path is shared by every tunneld)."""
    wanted = {"watch_network": False, "control_socket": os.path.join(private_dir, "control")}
    return {k: v for k, v in wanted.items() if tunneld_accepts_global(k, v)}


def run_tunneld(*args, timeout=10, env=None):
    """Run tunneld to completion (for -t); CompletedProcess with text stdout and stderr.
    AssertionError if its output holds a sanitizer report (LeakSanitizer reports at exit)."""
    r = subprocess.run([TUNNELD, *args], capture_output=True, text=True, timeout=timeout,
                       env=env, stdin=subprocess.DEVNULL)
    check_sanitizer_output(r.stderr + r.stdout, f"tunneld {' '.join(args)}")
    return r
