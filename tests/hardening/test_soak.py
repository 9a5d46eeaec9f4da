"""Soak: 10,000 restart cycles (2,000 in the sanitizer build) of a fast-exiting "ssh" across 50 tunnels, with reloads
mixed in. tunneld's open fds, RSS and children, sampled from /proc, must stay flat, and
no child may linger as a zombie. Every sample is printed (TAP comments) as it is taken, so
a failing run shows the ones before the failure. The sanitizer build does not check RSS
(the test says so in its output): LeakSanitizer at tunneld's exit is the leak check there."""
import json
import os
import signal
import time
import unittest

os.environ.setdefault("TUNNELTEST_TIMEOUT", "200")     # one long test; the sanitizer build is slower
import tunneltest  # noqa: E402
from tunneltest import Tunneld, use  # noqa: E402

TUNNELS = 50
# AddressSanitizer keeps freed memory in quarantine (RSS grows by design) and makes every
# fork slow: there, LeakSanitizer at exit is the leak check, and 2,000 cycles the soak.
SANITIZED = os.environ.get("TUNNELD_SANITIZE", "none") not in ("", "none")
CYCLES = int(os.environ.get("SOAK_CYCLES", "2000" if SANITIZED else "10000"))
DEADLINE = float(os.environ.get("SOAK_DEADLINE", "150"))


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def sample(pid):
    """(open fds other than pipes, VmRSS kB, live children, zombie children, zombie pids,
    pipes) of pid. A child
    caught between its exit and tunneld's next loop iteration is a zombie for an instant;
    one that is still a zombie a second later was never reaped."""
    fds = pipes = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            pipes += 1      # one per running child: its stderr
        else:
            fds += 1
    rss = int(proc_status(pid)["VmRSS"].split()[0])
    live = zombies = 0
    zombie_pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        state, ppid = rest[0], int(rest[1])
        if ppid == pid:
            if state == "Z":
                zombies += 1
                zombie_pids.add(int(entry))
            else:
                live += 1
    return fds, rss, live, zombies, zombie_pids, pipes


def total_starts(socket):
    """(starts summed over every tunnel, tunnels); (0, 0) while tunneld is not answering yet."""
    out = tunneltest.tunnelctl(socket, "--json", "status", timeout=10)
    if out.returncode == 3:
        return 0, 0
    reply = json.loads(out.stdout)
    return sum(t["starts"] for t in reply["tunnels"]), len(reply["tunnels"])


def settled_sample(pid, base, settle=2.0):
    """sample(pid), taken again for up to settle seconds while the open fds differ from
    base: a control client tunneld has not yet seen hang up (the test's own status request,
    on a loaded machine) is open for a moment; a leaked fd stays."""
    deadline = time.monotonic() + settle
    s = sample(pid)
    while s[0] != base[0] and time.monotonic() < deadline:
        time.sleep(0.1)
        s = sample(pid)
    return s


def reloaded(td):
    """SIGHUP, and wait until that reload is over: it is loaded in a child process, and a
    sample taken meanwhile would count the file the daemon's second load holds open."""
    done = r"^<\d+>(reload done|reload rejected)"
    before = td.count_log(done)
    td.reload()
    tunneltest.wait_until(lambda: td.count_log(done) > before, 60, what="the reload to be over")


def tunnels(variant):
    """50 tunnels; the variant changes one tunnel, adds one and removes another, so each
    reload restarts, starts and stops something while the rest churn on."""
    out = []
    for i in range(TUNNELS):
        if variant and i == TUNNELS - 1:
            continue
        t = {"name": f"t{i}", "host": f"h{i}"}
        if i == 0:
            t["restart_delay_max"] = 2 if variant else 1
        out.append(t)
    if variant:
        out.append({"name": "extra", "host": "extra"})
    return out


def show(i, s, starts):
    """One sample as a TAP comment, printed at once (a failing run shows every sample up to
    the failure)."""
    print(f"# {i:3d} {s[0]:5d} {s[5]:6d} {s[1]:7d} {s[2]:9d} {s[3]:8d} {starts:7d}", flush=True)


class Soak(unittest.TestCase):
    def test_10000_cycles_flat(self):
        """10,000 starts of an ssh that exits at once, 50 tunnels, a reload every second:
        fds, RSS and child count flat, no zombies, tunneld still answers and stops cleanly."""
        print(f"# {CYCLES} cycles; " + ("sanitizer build: RSS is sampled but not checked (AddressSanitizer's "
                                        "quarantine grows it by design; LeakSanitizer at exit is the leak check)"
                                        if SANITIZED else "RSS checked"), flush=True)
        # an "ssh" whose server refuses the connection: every run is a failed start, backing
        # off from 50 ms to a 100 ms cap (a refused connection costs nothing at a server
        # that counts failures, so pacing.h does not hold it back; /bin/false's silent
        # exit 1 could have reached a server, and would be paced to one start a second)
        ssh = os.path.join(tunneltest.temp_dir(self), "refused-ssh")
        with open(ssh, "w") as f:
            # (ssh -G: silent exit 1, as /bin/false: "cannot ask ssh ...; starting anyway")
            f.write('#!/bin/sh\nfor a; do [ "$a" = -G ] && exit 1; done\n'
                    'echo "ssh: connect to host h port 22: Connection refused" >&2\nexit 255\n')
        os.chmod(ssh, 0o755)
        defaults = {"gatetime": 0, "restart_delay": 0.05, "restart_delay_max": 0.1}
        td = use(self, Tunneld(tunnels(False), defaults, {"ssh": ssh}))
        socket = td.globals["control_socket"]
        tunneltest.wait_until(lambda: total_starts(socket)[0] >= TUNNELS, 20, what="every tunnel started once")
        time.sleep(1.0)     # warm up: the allocator settles
        # the fewest open fds over a second: the test's own status request may still be
        # open in a loaded tunneld at any one look (a transient only adds; a leak stays)
        looks = []
        for _ in range(10):
            looks.append(sample(td.pid))
            time.sleep(0.1)
        base = min(looks, key=lambda s: s[0])
        samples = [base]
        print("#   t   fds  pipes  rss_kB  children  zombies  starts", flush=True)
        show(0, base, total_starts(socket)[0])
        variant = False
        start = time.monotonic()
        while True:
            time.sleep(1.0)
            # sample first: right after SIGHUP tunneld may hold the config file open
            s = settled_sample(td.pid, base)
            starts, _ = total_starts(socket)
            show(len(samples), s, starts)
            self.check_sample(len(samples), s, samples[-1], base)
            samples.append(s)
            variant = not variant
            tunneltest.write_config(td.config_path, td.globals, defaults, tunnels(variant))
            reloaded(td)
            starts, _ = total_starts(socket)
            if starts >= CYCLES:
                break
            self.assertLess(time.monotonic() - start, DEADLINE, f"only {starts} starts in {DEADLINE:g} s")
        # the last reload settles, then compare with the same config as the baseline
        if variant:
            tunneltest.write_config(td.config_path, td.globals, defaults, tunnels(False))
            reloaded(td)
        time.sleep(1.5)
        end = sample(td.pid)
        starts, count = total_starts(socket)
        elapsed = time.monotonic() - start
        show(len(samples), end, starts)
        print(f"# {starts} starts in {elapsed:.1f} s across {count} tunnels, {len(samples)} reloads", flush=True)
        self.check_sample(len(samples), end, samples[-1], base)
        self.assertLessEqual(end[2], TUNNELS, "more children than tunnels once the last reload settled")
        self.assertEqual(td.stop(), 0)
        self.assertEqual(sample(td.pid)[3] if os.path.exists(f"/proc/{td.pid}") else 0, 0)
        self.assertGreaterEqual(starts, CYCLES)
        self.assertEqual(count, TUNNELS)
        # RSS may settle a little higher than right after start; it must not keep growing
        if SANITIZED:
            print(f"# RSS not checked (sanitizer build): {base[1]} kB after start, {end[1]} kB at the end",
                  flush=True)
        else:
            self.assertLess(end[1] - base[1], 1024, f"RSS grew from {base[1]} to {end[1]} kB")
            mid = samples[len(samples) // 2][1]
            self.assertLess(end[1] - mid, 512, f"RSS still growing: {mid} kB half way, {end[1]} kB at the end")
        self.assertEqual(td.leftovers(), [])

    def check_sample(self, i, s, previous, base):
        """What must hold at every sample: the same open fds as at the start, no child
        unreaped since the previous sample, and no more children (and stderr pipes) than
        tunnels. Every config has 50 tunnels; a reload that removes one and adds another may
        briefly have the removed one's ssh still exiting next to the new one's: 51."""
        self.assertEqual(s[0], base[0], f"open fds changed in sample {i}")
        self.assertEqual(s[4] & previous[4], set(), f"children left unreaped for a second (sample {i})")
        self.assertLessEqual(s[2], TUNNELS + 1, f"more children than tunnels in sample {i}")
        self.assertLessEqual(s[5], TUNNELS + 1, f"more stderr pipes than tunnels in sample {i}")


if __name__ == "__main__":
    tunneltest.main()
