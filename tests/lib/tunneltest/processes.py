"""tunneltest.processes: processes: a subreaper, the process table, killing what a test left."""

from .base import *  # noqa: F401,F403


def _become_subreaper():
    """Adopt orphaned descendants (ssh children of a killed tunneld, sshd sessions), so that
    we can reap them: this machine's PID 1 does not, and zombies would look alive."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


_become_subreaper()


def proc_table():
    """{pid: (ppid, state, pgid)} of every process, from /proc/PID/stat."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        table[int(name)] = (int(fields[1]), fields[0].decode(), int(fields[2]))
    return table


def _comm(pid):
    """The process's name (a script's file name), or "" if it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _reap(pid):
    """Collect pid if it is an exited child of ours (an orphan we adopted)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pid_alive(pid):
    """True if pid runs (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")


def children_of(pid, table=None):
    """Live direct children of pid, sorted."""
    table = proc_table() if table is None else table
    return sorted(p for p, (ppid, state, _) in table.items() if ppid == pid and state not in "ZX")


def ssh_children(pid):
    """The live ssh processes pid (tunneld) has started, sorted."""
    return [p for p in children_of(pid) if _comm(p) == "ssh"]


def zombie_children(pid):
    """pid's children that have exited and are not reaped yet."""
    return sorted(p for p, (ppid, state, _) in proc_table().items() if ppid == pid and state == "Z")


def open_fds(pid):
    """{fd: what it points to (readlink)} of pid's open file descriptors."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def cpu_seconds(pid):
    """CPU time pid has used so far (user + system), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants_of(pid, table=None):
    """Every descendant of pid (zombies included), parents before children."""
    table = proc_table() if table is None else table
    kids = {}
    for p, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        for child in sorted(kids.get(todo.pop(0), [])):
            out.append(child)
            todo.append(child)
    return out


def procs_with_env(entry):
    """Live processes whose initial environment holds entry ("NAME=value")."""
    needle = entry.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env and pid_alive(int(name)):
            found.append(int(name))
    return sorted(found)


def kill_all(pids, groups=()):
    """SIGKILL pids and process groups, then reap those that are ours. Never raises.
    Never give it a pid that a subprocess.Popen owns: its exit status would be lost."""
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        _reap(pid)
