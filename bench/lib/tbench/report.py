"""RESULTS.md from the raw results."""
from .share import ROUND_EVERY as ROUND_EVERY_S, ROUND_TIMEOUT as ROUND_TIMEOUT_S, SETTLE_S
from .util import fmt_kb, fmt_ms, fmt_s, median, table

# systemd's DefaultLimitNOFILE for services (since v240): soft 1024, hard 524288. The units
# in systemd/ set no LimitNOFILE, so tunneld starts with these.
SYSTEMD_NOFILE = (1024, 524288)
RSS_TARGET_KB = 10 * 1024


def _ms(v, d=1):
    return fmt_ms(v, d)


def _yes(ok):
    return "**met**" if ok else "**not met**"


def _range(values, fmt=".0f"):
    """'a–b' of the values as printed with fmt (one value if they print alike)."""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def _machine(m):
    rows = [("date", m.get("date")), ("kernel (uname -r)", m.get("kernel")), ("CPU", m.get("cpu")),
            ("cores", m.get("cores")), ("memory", f"{m.get('memory_gb')} GB"), ("Debian", m.get("debian")),
            ("OpenSSH", m.get("openssh")), ("autossh", m.get("autossh")), ("tunneld", m.get("tunneld")),
            ("Python", m.get("python")), ("open files limit (inherited by tunneld)", m.get("nofile")),
            ("load average at start / end", f"{m.get('loadavg_start')} / {m.get('loadavg_end')}")]
    return table(["", "value"], rows, ["l", "l"])


def _recovery(r, out, targets):
    out.append("## 1. Recovery after `kill -9` of the ssh child\n")
    out.append(
        "Time from `kill -9` of the ssh child until the forwarded port accepts a connection and echoes a line "
        "back (probe: connect, send, read; a refused connect is retried after 1 ms). "
        f"**Floor**: the same ssh command started from scratch by the benchmark (time from spawn to echo). "
        f"tunneld's tunnel has `gatetime = {r['gatetime']}` s and every kill comes after ≥ {r['settle']} s of "
        "uptime, so each killed run counts as a success and tunneld restarts ssh at once (`restart_delay` 1 s "
        "is also passed). autossh runs as `autossh -M 0` with `AUTOSSH_GATETIME=0`; each autossh run is a "
        "fresh process whose ssh is killed once (its first restart, no grace sleep — the same path a "
        "long-lived autossh takes when its ssh ran ≥ 60 s). "
        + ("tunneld runs its ssh as a multiplexing master of its own and opens the forward over ssh's control "
           "socket once ssh has authenticated:\n\n"
           f"`{r['tunneld_ssh_argv']}` + `{r.get('tunneld_forwards', '')}` over the control socket\n\n"
           "The floor and autossh run the same ssh options less the multiplexing ones (ControlMaster, "
           "ControlPath, ControlPersist, ClearAllForwardings, LogLevel, LogVerbose), with "
           "`ExitOnForwardFailure=yes` and the forward on the command line:\n"
           if r.get("tunneld_ssh_argv") else "All three run the identical ssh command:\n"))
    out.append(f"`{r['ssh_argv']}`\n")
    rows = []
    for k, label in (("floor", "floor: fresh ssh"), ("tunneld", "tunneld"), ("autossh", "autossh -M 0")):
        v = [x for x in r[k] if x is not None]
        rows.append([label, len(v), _ms(r[k + "_p50"]), _ms(r[k + "_p95"]), _ms(r[k + "_min"]), _ms(r[k + "_max"])])
    out.append(table(["", "runs", "p50 ms", "p95 ms", "min ms", "max ms"], rows))
    f50, t50, a50 = r["floor_p50"], r["tunneld_p50"], r["autossh_p50"]
    if f50 is not None and t50 is not None:
        ok = t50 <= f50 + 0.050
        out.append(f"\ntunneld p50 − floor p50 = **{(t50 - f50) * 1000:+.1f} ms**; autossh p50 − floor p50 = "
                   f"{(a50 - f50) * 1000 if a50 is not None else float('nan'):+.1f} ms. "
                   f"Target tunneld p50 ≤ floor p50 + 50 ms: {_yes(ok)}.")
        targets.append(("recovery: tunneld p50 ≤ floor p50 + 50 ms",
                        f"tunneld {_ms(t50)} ms, floor {_ms(f50)} ms ({(t50 - f50) * 1000:+.1f} ms)", ok))
    if r.get("autossh_cold_start"):
        out.append(f" autossh's cold start (spawn to echo) p50: {_ms(median(r['autossh_cold_start']))} ms.")
    if r.get("failures"):
        out.append("\nFailures: " + "; ".join(r["failures"]))
    s = r.get("series") or {}
    if s.get("kills"):
        out.append(f"\n\n**Repeated kills of one long-lived supervisor** ({s['kills']} kills, each {r['settle']} s "
                   "after the tunnel echoed again): autossh's `grace_time()` counts a start less than "
                   "max(10 s, poll/10 = 60 s) after the previous one as a fast try and sleeps after the fifth "
                   "(2, 8, 18 … s); tunneld restarts a run that lasted `gatetime` at once.\n")
        rows = [[i + 1, _ms(a), _ms(b)] for i, (a, b) in enumerate(zip(s["tunneld"], s["autossh"]))]
        out.append(table(["kill #", "tunneld ms", "autossh ms"], rows))
    out.append("")


def _scale(r, out, targets, machine_nofile="?"):
    out.append("## 2. Scale\n")
    out.append(
        f"N tunnels (`-L` to the echo server) in one tunneld against one sshd, versus N `autossh -M 0` "
        f"processes with the same ssh command. tunneld runs with `max_parallel_starts = N` (raised from the "
        f"default 8 so that, like N autossh processes, every ssh starts at once); rows `tunneld-default8` keep "
        f"the default 8. `gatetime = {r['gatetime']}` s. The N autossh processes are launched stopped and "
        "released together (SIGCONT), as systemd starts N autossh units at boot; tunneld with "
        "`max_parallel_starts = N` also starts every ssh at once. **all up** = from spawning tunneld (or "
        "releasing the autossh processes) until every forward has echoed once (a port is probed once /proc/net/tcp shows it "
        "listening; resolution = the re-read interval, last column). Memory at that moment: RSS = VmRSS; "
        "USS = private pages (Private_Clean + Private_Dirty), what the process alone costs; PSS = USS plus "
        "its share of shared pages. Supervisor (sup) = tunneld, or the sum over the autossh processes. "
        "CPU = utime+stime (10 ms ticks) / on-CPU time from schedstat, at the moment all were up.\n")
    rows = []
    for x in r["runs"]:
        who = x["who"] + ("" if x["who"] != "autossh" else f" ×{x.get('sup_n', x['n'])}")
        rows.append([who, x["n"], fmt_s(x["all_up_s"]), fmt_s(x["median_up_s"]),
                     fmt_kb(x["sup_rss_kb"]), fmt_kb(x.get("sup_uss_kb")), fmt_kb(x["sup_pss_kb"]),
                     f"{x['sup_cpu_s'] * 1000:.0f} / {x['sup_run_s'] * 1000:.1f}",
                     x["ssh_n"], fmt_kb(x["sup_rss_kb"] + x["ssh_rss_kb"]), fmt_kb(x["sup_pss_kb"] + x["ssh_pss_kb"]),
                     fmt_kb(x.get("sys_mem_used_kb")), fmt_s(x.get("stop_s")),
                     f"{x.get('sup_fds', '—')}/{x.get('sup_nofile_soft', '—')}" if x["who"] != "autossh" else "—",
                     x.get("notify_msgs", "—"), _ms(x["probe_resolution_s"], 0)])
    out.append(table(["supervisor", "N", "all up s", "median up s", "sup RSS", "sup USS", "sup PSS",
                      "sup CPU ms ticks / on-CPU", "ssh", "RSS sup+ssh", "PSS sup+ssh", "MemAvailable drop",
                      "stop s", "fds/limit", "sd_notify msgs", "res ms"], rows))
    if any(x.get("sshd_log") for x in r["runs"]):
        out.append("\n**Startup details**: starts = ssh processes tunneld started (N when none failed) "
                   "and the failure classes of those that failed, from `tunnelctl --json status`; sshd = "
                   "logins sshd accepted and connections it saw end before authentication (`[preauth]` "
                   "lines) between the start and all up — the same count for both supervisors; listen "
                   "overflows = the kernel's TcpExt ListenOverflows/ListenDrops delta over the same time "
                   "(system-wide): connection attempts dropped because sshd's accept queue (backlog 128) "
                   "was full, each costing that ssh a SYN retransmission (1 s, then 3, 7, 15 s …). "
                   "CPU of the ssh clients and of sshd (listener + sessions) at all up.\n")
        rows = []
        for x in r["runs"]:
            fl = x.get("failures") or {}
            sl = x.get("sshd_log") or {}
            lo = x.get("listen_overflows") or {}
            rows.append([x["who"], x["n"], fmt_s(x["all_up_s"]),
                         (f"{x.get('starts_total')}" + (" (" + ", ".join(f"{k} {v}" for k, v in fl.items()) + ")"
                                                         if fl else "")) if x["who"] != "autossh" else "—",
                         sl.get("accepted", "—"), sl.get("preauth", "—"),
                         f"{lo.get('ListenOverflows', '—')}/{lo.get('ListenDrops', '—')}",
                         fmt_s(x.get("ssh_run_s"), 1), fmt_s(x.get("sshd_run_s"), 1)])
        out.append(table(["supervisor", "N", "all up s", "tunneld starts (failures)", "sshd accepted",
                          "sshd preauth", "listen overflows/drops", "ssh CPU s", "sshd CPU s"], rows))
    out.append("\nMemAvailable drop = system-wide, so it includes sshd's sessions and is disturbed by other "
               "jobs on the machine (it can even be negative at small N). stop s = SIGTERM to the supervisor(s) "
               "until every one exited. fds/limit = tunneld's open descriptors and its soft RLIMIT_NOFILE "
               "as it ran (after raising it to the hard limit: see below). "
               "sd_notify msgs = datagrams tunneld sent to our NOTIFY_SOCKET until all were up (READY, STATUS).")
    stk = [(x["n"], x.get("stack_kb_before_stop"), x.get("stack_kb_peak")) for x in r["runs"]
           if x["who"].startswith("tunneld") and x.get("stack_kb_peak")]
    if stk:
        out.append("\ntunneld's stack (VmStk, polled every 2 ms from before the SIGTERM until it exited): "
                   + "; ".join(f"N = {n}: {a} kB → peak {b} kB" for n, a, b in stk) + ".")
    td_fds = sorted((x["n"], x["sup_fds"]) for x in r["runs"] if x["who"] == "tunneld" and x.get("sup_fds"))
    if len(td_fds) >= 2 and td_fds[-1][0] > td_fds[0][0]:
        (n0, f0), (n1, f1) = td_fds[0], td_fds[-1]
        per = (f1 - f0) / (n1 - n0)
        if per > 0:
            fixed = f0 - n0 * per
            soft, hard = SYSTEMD_NOFILE
            last = next(x for x in r["runs"] if x["who"] == "tunneld" and x["n"] == n1)
            here = (f"ran with {last.get('sup_nofile_soft')} soft / {last['sup_nofile_hard']} hard"
                    if last.get("sup_nofile_hard") else
                    f"ran with a soft limit of {last.get('sup_nofile_soft')}, inherited from bench/run "
                    f"({machine_nofile}); its hard limit was not recorded (bench/run records it now)")
            out.append(f"\ntunneld holds {per:.2f} descriptors per tunnel ({f0} at N = {n0}, {f1} at N = {n1}). "
                       "At start it raises its soft RLIMIT_NOFILE to the hard limit (`process_raise_nofile()`; "
                       "its ssh children get the original limits back), so the hard limit is the one that "
                       f"counts. Under systemd's defaults for a service (soft {soft}, hard {hard}; tunneld's "
                       f"units set no LimitNOFILE) it runs with {hard} and would run out at about "
                       f"N = {(hard - fixed) / per:,.0f}, far beyond what memory allows (see MemAvailable drop); the soft limit alone "
                       f"would have stopped it at about N = {(soft - fixed) / per:.0f}. In this run tunneld "
                       f"{here}.")
    if r.get("skipped"):
        out.append(f"\nSkipped for lack of memory: N = {', '.join(map(str, r['skipped']))}.")
    td = {x["n"]: x for x in r["runs"] if x["who"] == "tunneld"}
    au = {x["n"]: x for x in r["runs"] if x["who"] == "autossh"}
    if 1 in td and len(td) > 1:
        out.append("\n**Per-tunnel overhead**: tunneld's growth per added tunnel = (tunneld at N − tunneld at "
                   "N = 1) / (N − 1), against the cost of one autossh process = (sum over the N autossh "
                   "processes) / N. The marginal memory of one more autossh process is its USS plus its page "
                   "tables (VmPTE); shared library pages are paid once.\n")
        rows = []
        for n in sorted(td):
            if n == 1:
                continue
            d_rss = (td[n]["sup_rss_kb"] - td[1]["sup_rss_kb"]) / (n - 1)
            d_uss = (td[n]["sup_uss_kb"] - td[1]["sup_uss_kb"]) / (n - 1)
            d_run = (td[n]["sup_run_s"] - td[1]["sup_run_s"]) / (n - 1)
            a = au.get(n)
            if a:
                a_uss, a_pte = a["sup_uss_kb"] / n, a["sup_pte_kb"] / n
                a_rss, a_run = a["sup_rss_kb"] / n, a["sup_run_s"] / n
            rows.append([n, f"{d_rss:.1f} kB", f"{d_uss:.1f} kB", f"{d_run * 1e6:.0f} µs",
                         f"{a_rss:.0f} kB" if a else "—", f"{a_uss:.0f} + {a_pte:.0f} kB" if a else "—",
                         f"{a_run * 1e6:.0f} µs" if a else "—",
                         f"{d_uss / (a_uss + a_pte) * 100:.1f} %" if a and a_uss + a_pte else "—"])
        out.append(table(["N", "tunneld ΔRSS/tunnel", "tunneld ΔUSS/tunnel", "tunneld Δon-CPU/tunnel",
                          "autossh RSS/proc", "autossh USS + PTE/proc", "autossh on-CPU/proc",
                          "tunneld ΔUSS ÷ autossh (USS+PTE)"], rows))
    big = max(td) if td else None
    tds = [x for x in r["runs"] if x["who"].startswith("tunneld")]
    if tds:
        have_hwm = any(x.get("sup_hwm_kb") for x in tds)
        out.append("\n**tunneld's RSS over time**: at all up (the table above), after the "
                   f"{r.get('idle_s', 0):.0f} s idle window (before the forwarded connections), and its peak "
                   "(VmHWM, the largest RSS it ever had, read just before the SIGTERM: it covers startup, "
                   "the idle window, the forwarded connections and, at the reload N, the reloads).\n")
        out.append(table(["supervisor", "N", "RSS all up", "RSS after idle", "peak RSS (VmHWM)"],
                         [[x["who"], x["n"], fmt_kb(x["sup_rss_kb"]), fmt_kb(x.get("sup_rss_after_idle_kb")),
                           fmt_kb(x.get("sup_hwm_kb")) if x.get("sup_hwm_kb") else "not recorded"]
                          for x in tds]))
        if not have_hwm:
            out.append("\nThis run did not record VmHWM (bench/run read it but did not keep it; it does now), so "
                       "tunneld's peak RSS is unknown: the target below is judged on the larger of the two "
                       "snapshots, and a peak between them would not show.")
    if big:
        at_big = [x for x in tds if x["n"] == big]
        peaks = [x["sup_hwm_kb"] for x in at_big if x.get("sup_hwm_kb")]
        rss = td[big]["sup_rss_kb"]
        after = td[big].get("sup_rss_after_idle_kb")
        snaps = [v for x in at_big for v in (x["sup_rss_kb"], x.get("sup_rss_after_idle_kb")) if v]
        seen = (f"{fmt_kb(rss)} at all up" + (f", {fmt_kb(after)} after the idle window" if after else ""))
        if peaks:
            judged = max(peaks)
            measured = f"peak {fmt_kb(judged)} (VmHWM); {seen}; N = {big}"
        else:
            judged = max(snaps)
            measured = f"{seen}, N = {big}; peak (VmHWM) not recorded in this run"
        ok = judged <= RSS_TARGET_KB
        if big >= 1000:
            out.append(f"\ntunneld RSS at N = {big}: {'peak **' + fmt_kb(judged) + '**, ' if peaks else ''}"
                       f"{seen} (target ≤ 10 MB at N = 1000, judged on "
                       f"{'the peak' if peaks else f'the largest snapshot, {fmt_kb(judged)}, the peak not being recorded'}: "
                       f"{_yes(ok)}).")
            verdict = ok if peaks or not ok else "met on two snapshots (peak not recorded)"
        else:
            out.append(f"\ntunneld RSS at N = {big}: {seen}; N = 1000 was not run, so the target "
                       "≤ 10 MB at N = 1000 is **not verified**.")
            verdict = None
        targets.append(("scale: tunneld RSS ≤ 10 MB at N = 1000", measured, verdict))
        if big in au and 1 in td and big > 1:
            a = au[big]
            per_a = (a["sup_uss_kb"] + a["sup_pte_kb"]) / big
            d_uss = (td[big]["sup_uss_kb"] - td[1]["sup_uss_kb"]) / (big - 1)
            frac = d_uss / per_a if per_a else None
            ok2 = frac is not None and frac <= 0.25
            targets.append((f"scale: per-tunnel overhead a small fraction of one autossh (N = {big})",
                            f"tunneld +{d_uss:.1f} kB USS per tunnel vs {per_a:.0f} kB USS+PTE per autossh "
                            f"({frac * 100:.1f} %)" if frac is not None else "—", ok2))
    out.append("")


def _idle(r, out, targets):
    runs = [x for x in r["runs"] if x.get("idle")]
    if not runs:
        return
    out.append("## 3. Idle cost\n")
    out.append(f"Over {r['idle_s']:.0f} s with every tunnel up (started after the one-shot gatetime timers "
               "fired, no tunnelctl calls, no probe/watchdog configured): wakeups = delta of "
               "voluntary_ctxt_switches + nonvoluntary_ctxt_switches in /proc/PID/status; CPU = utime+stime "
               "delta (10 ms ticks) and on-CPU time from /proc/PID/schedstat. autossh columns are sums over the "
               "N autossh processes; the ssh columns (the same ssh under both) are for reference.\n")
    rows = []
    for x in runs:
        i = x["idle"]
        rows.append([x["who"], x["n"], i["sup_wakeups"], f"{i['sup_vcs']}+{i['sup_nvcs']}", _ms(i["sup_cpu_s"], 0),
                     _ms(i["sup_run_s"], 2), i["ssh_wakeups"], _ms(i["ssh_run_s"], 1),
                     "yes" if i.get("ssh_pids_unchanged") else "NO", i.get("log_bytes", "—"),
                     (i.get("netlink") or {}).get("msgs", "—")])
    out.append(table(["supervisor", "N", "wakeups", "vol+invol", "CPU ms (ticks)", "on-CPU ms", "ssh wakeups",
                      "ssh on-CPU ms", "same ssh pids", "log bytes", "netlink msgs"], rows))
    out.append("\nnetlink msgs = rtnetlink messages (link, address, route changes anywhere on this host, e.g. "
               "other jobs' veths and namespaces) seen from 1 s before the window to its end (tunneld acts 0.5 s after the first event of a "
               "burst) by our own socket subscribed to the groups tunneld's `watch_network` listens to: tunneld "
               "wakes for each burst of them.")
    tr = [x for x in runs if x.get("traffic")]
    if tr:
        out.append(f"\n**Cost of forwarded connections**: right after the idle window, "
                   f"{tr[0]['traffic']['conns']} echo connections one after the other through the first "
                   "(up to 10) forwards; the supervisor's wakeups and CPU during them (sum over autossh "
                   "processes). tunneld runs ssh with `LogLevel=VERBOSE` and reads its stderr, where ssh logs "
                   "nothing for a working forwarded connection; autossh's ssh writes to autossh's inherited "
                   "stderr, which autossh never reads.\n")
        rows = []
        for x in tr:
            t = x["traffic"]
            rows.append([x["who"], x["n"], f"{t['ok']}/{t['conns']}", t["sup_wakeups"],
                         f"{t['sup_wakeups'] / t['conns']:.2f}", _ms(t["sup_run_s"], 2),
                         f"{t['sup_run_s'] / t['conns'] * 1e6:.0f}",
                         f"{t.get('ssh_run_s', 0) / t['conns'] * 1e6:.0f}"])
        out.append(table(["supervisor", "N", "echoed", "sup wakeups", "sup wakeups/conn", "sup on-CPU ms",
                          "sup on-CPU µs/conn", "ssh on-CPU µs/conn"], rows))
        tt = [(x["n"], x["traffic"]) for x in tr if x["who"] == "tunneld" and x["traffic"]["conns"]]
        if tt:
            c = [t["conns"] for _, t in tt]
            out.append(f"\nPer forwarded connection (N = {', '.join(str(n) for n, _ in tt)}): tunneld "
                       f"{_range([t['sup_wakeups'] / k for (_, t), k in zip(tt, c)], '.1f')} wakeups and "
                       f"{_range([t['sup_run_s'] / k * 1e6 for (_, t), k in zip(tt, c)])} µs on-CPU; "
                       f"its ssh {_range([t.get('ssh_run_s', 0) / k * 1e6 for (_, t), k in zip(tt, c)])} µs.")
    tdr = [x for x in runs if x["who"] == "tunneld"]
    tw = [x["idle"]["sup_wakeups"] for x in tdr]
    quiet = [x["idle"]["sup_wakeups"] for x in tdr if not (x["idle"].get("netlink") or {}).get("msgs")]
    noisy = [(x["n"], x["idle"]["sup_wakeups"], x["idle"]["netlink"]["msgs"]) for x in tdr
             if (x["idle"].get("netlink") or {}).get("msgs")]
    strict = bool(tw) and all(w == 0 for w in tw)
    # Periodic wakeups would show in every window; a window with netlink traffic from other jobs
    # cannot tell them apart, so the verdict rests on the windows without it.
    periodic_ok = (all(w == 0 for w in quiet) if quiet else None) if tdr else None
    per_window = ", ".join("N = {}: {}".format(x["n"], x["idle"]["sup_wakeups"]) for x in tdr)
    verdict = "**not verified** (every window had netlink traffic)" if periodic_ok is None else _yes(periodic_ok)
    text = (f"\nTarget zero periodic wakeups of tunneld while idle: {verdict}. Wakeups per window: "
            f"{per_window}.")
    if noisy:
        text += (" Windows with wakeups coincided with netlink traffic from other jobs: "
                 + "; ".join(f"N = {n}: {w} wakeups, {m} netlink messages" for n, w, m in noisy)
                 + " — event-driven (tunneld's network watch), not periodic; every window without "
                   "netlink traffic had " + ("0 wakeups." if all(w == 0 for w in quiet) else f"{quiet}."))
    out.append(text)
    for x in runs:
        if x["who"] == "tunneld" and x["idle"].get("log_lines"):
            out.append(f"\nLog lines written by tunneld (N = {x['n']}) during the idle window: "
                       + "; ".join(f"`{ln}`" for ln in x["idle"]["log_lines"][:3]))
    targets.append(("idle: zero periodic wakeups of tunneld",
                    f"wakeups per idle window: {tw}" + (" (non-zero only with netlink events from other jobs)"
                                                        if noisy and not strict else ""), periodic_ok))
    out.append("")


def _reload(r, out, targets):
    out.append("## 4. Reload\n")
    out.append(f"SIGHUP to a tunneld with N = {r['n']} tunnels, all up, after rewriting the configuration so that "
               "exactly one tunnel changes (its local port), then once with no change. READY = the `READY=1` "
               "datagram arriving on our NOTIFY_SOCKET after the SIGHUP; changed tunnel up = its new port "
               "echoes. Pids compared with `tunnelctl --json status` before and after: no tunnel but the changed "
               "one may get a new ssh, and the changed one keeps its own when only its forward changed (ssh's "
               "command line holds no forward: tunneld moves it over the control socket).\n")
    new = any("as_expected" in x for x in r["reloads"])

    def expected(x):
        return x["as_expected"] if "as_expected" in x else x["exactly_one_changed"]
    rows = []
    for x in r["reloads"]:
        rows.append([x["changed_tunnel"] or "(none)", _ms(x["reloading_s"], 2), _ms(x["ready_s"], 2),
                     _ms(x["changed_up_s"]), _ms(x["cpu_to_ready_s"], 0), _ms(x["run_to_ready_s"], 2),
                     ", ".join(x["pids_changed"]) or "none", "yes" if expected(x) else "NO",
                     ", ".join(x["not_up_after"]) or "none"])
    out.append(table(["changed", "RELOADING ms", "READY ms", "changed up ms", "CPU ms (ticks)", "on-CPU ms",
                      "pids changed", "as expected", "not up after"], rows))
    ok = all(expected(x) and not x["not_up_after"] for x in r["reloads"])
    chg = [x for x in r["reloads"] if x["changed_tunnel"]]
    rd = [x["ready_s"] for x in chg if x["ready_s"] is not None]
    rd0 = [x["ready_s"] for x in r["reloads"] if not x["changed_tunnel"] and x["ready_s"] is not None]
    up = [x["changed_up_s"] for x in chg if x["changed_up_s"]]
    ready = (f"READY after {_ms(median(rd), 2)} ms (median of {len(rd)} reloads changing one tunnel"
             + (f"; {', '.join(_ms(v, 2) for v in rd0)} ms with no change" if rd0 else "") + ")")
    if new:
        kept = sum(1 for x in chg if x.get("changed_kept_ssh"))
        out.append(f"\nNo tunnel but the changed one got a new ssh, and every tunnel was up after each reload: "
                   f"{_yes(ok)}; the changed tunnel kept its ssh (its forward moved on it) in {kept} of {len(chg)} "
                   f"reloads. {ready}; changed tunnel up after {_ms(median(up))} ms (median).")
        targets.append((f"reload (N = {r['n']}): only the changed tunnel is touched",
                        f"{ready}, changed tunnel up after {_ms(median(up))} ms, its ssh kept in {kept} of "
                        f"{len(chg)}", ok))
    else:
        out.append(f"\nExactly the changed tunnel's ssh pid changed in every reload, and no other: {_yes(ok)}. "
                   f"{ready}; changed tunnel up after {_ms(median(up))} ms (median).")
        targets.append((f"reload (N = {r['n']}): only the changed tunnel restarts",
                        f"{ready}, changed tunnel up after {_ms(median(up))} ms", ok))
    out.append("")


def _outage(r, out, targets):
    out.append("## 5. Outage recovery\n")
    out.append(
        f"sshd and the echo server run in a test network namespace reached over a veth pair "
        f"({r['addresses']}). The outage is a silent blackhole: `ip -n NS route add blackhole <our address>/32` "
        f"for {r['outage_s']:.0f} s (no link event; packets vanish), then the route is deleted. Measured: time "
        f"from the restore until each tunnel echoes again (a new probe every 50 ms, each waiting up to 10 s). "
        f"All run at the same time, through the same outage. ServerAlive for all: **{r['server_alive']}**. "
        f"tunneld: its defaults otherwise (gatetime 30 s — the outage starts after it passed — connect_timeout "
        f"15 s, restart_delay 1 s, restart_delay_max 60 s). autossh: `autossh -M 0`, AUTOSSH_GATETIME=0, its "
        f"defaults otherwise, ssh options `{r['autossh_default_args']}` (no ConnectTimeout: ssh's default, the "
        f"kernel's SYN retries). A third contender runs autossh with tunneld's ssh options (incl. "
        f"ConnectTimeout=15; less the multiplexing ones, the forward on the command line) to separate the "
        f"supervisor from the ssh options.\n")
    rows = []
    for x in r["reps"]:
        for who, v in x["recovery_s"].items():
            ch = x["ssh_changes"].get(who, [])
            restarts = max(0, len(ch) - 1)
            rows.append([x["rep"], who, fmt_s(v), restarts,
                         "; ".join(f"{t:+.1f}s:{len(p)}" for t, p in ch[1:6]) or "—"])
    out.append(table(["rep", "supervisor", "recovery after restore s", "ssh restarts",
                      "ssh child changes (s since blackhole: number of ssh children)"], rows,
                     ["r", "l", "r", "r", "l"]))
    td = [x["recovery_s"].get("tunneld") for x in r["reps"]]
    au = [x["recovery_s"].get("autossh") for x in r["reps"]]
    if td and all(v is not None for v in td):
        targets.append(("outage: tunneld recovers after restore (no target given)",
                        f"tunneld {', '.join(fmt_s(v) for v in td)} s; autossh "
                        f"{', '.join(fmt_s(v) for v in au)} s", None))
    if r.get("tunneld_log"):
        out.append("\ntunneld's log (ssh lines omitted):\n\n```\n" + "\n".join(r["tunneld_log"]) + "\n```")
    out.append("")


def _restart(r, out, targets):
    out.append("## 6. Planned restarts and the cost per forwarded connection\n")
    out.append(
        f"{r['restarts']} planned restarts of one tunnel (`-L` to the echo server) per contender: tunneld "
        "(`tunnelctl restart`: make-before-break, a new ssh takes the forward over before the old one goes) "
        "and `autossh -M 0` (SIGUSR1: it SIGTERMs ssh and starts a new one)"
        + ("" if not any(x.get("multiplex") is False and x["who"] != "autossh" for x in r["runs"]) else
           "; this run also had tunneld's retired classic engine (`multiplex = false`: stop, then start)")
        + ". Meanwhile one client connects in a loop (connect, close, 1 ms; a refused connect is counted) "
        "and one long-lived connection sends a line every 50 ms and reads the echo (when it "
        "breaks it is counted and opened again). After each restart the benchmark waits until the tunnel is up "
        "again (`tunnelctl status`: up on a new ssh; autossh: a new ssh whose forward echoes), then "
        f"{r['settle']} s; autossh's restarts come 11 s apart (with `AUTOSSH_POLL=100`, so that its "
        "`grace_time()` counts none as a fast try: at 1.3 s apart the sixth would sleep 2 s, the seventh 8 s …). "
        "Refused = connects that failed (ECONNREFUSED, or no answer within 2 s); stalled = accepted connects "
        "that took ≥ 200 ms (a dropped SYN is sent again by the kernel after 1 s); "
        "longest gap = the longest time between two accepted connects, refusals and stalls included.\n")
    rows = []
    for x in r["runs"]:
        per = x["refused_per_restart"]
        rows.append([x["who"], x["restarts"], x.get("make_before_break", "—") if x["who"] != "autossh" and
                     x.get("multiplex", True) else "—",
                     x["refused"] + x["failed_other"], f"{median(per):.0f} / {max(per)}" if per else "—",
                     x.get("stalled", "—"), _ms(x.get("max_connect_s"), 0), _ms(x["longest_gap_s"], 0),
                     (f"{_ms(median(x['gap_per_restart_s']), 0)} / {_ms(min(x['gap_per_restart_s']), 0)}"
                      if x.get("gap_per_restart_s") else "—"),
                     x["accepted"], x["long_broken"], x["long_lines"],
                     _ms(x["restart_to_up_median_s"], 0), f"{x['seconds']:.0f}"])
    out.append(table(["contender", "restarts", "make-before-break", "refused attempts",
                      "refused per restart median / max", "stalled", "slowest connect ms", "longest gap ms",
                      "gap per restart median / min ms",
                      "accepted attempts", "long-lived conn broken",
                      "its lines echoed", "restart → up ms (median)", "s"], rows))
    out.append("\nListen queue overflows/drops (kernel TcpExt, system-wide) during the restarts: "
               + ", ".join(f"{x['who']} {x.get('listen_overflows', {}).get('ListenOverflows', '—')}/"
                           f"{x.get('listen_overflows', {}).get('ListenDrops', '—')}" for x in r["runs"]) + ".")
    if any(x["failed_other"] for x in r["runs"]):
        out.append("\nrefused attempts include failures other than ECONNREFUSED: "
                   + ", ".join(f"{x['who']} {x['failed_other']}" for x in r["runs"] if x["failed_other"]) + ".")
    for x in r["runs"]:
        st = x.get("stalls_after_restart_s") or []
        if st:
            out.append(f"\n{x['who']}: stalled connects (s after the restart began: how long the connect took): "
                       + ", ".join(f"{a:+.2f}: {d:.2f}" for a, d in st[:12]) + (" …" if len(st) > 12 else "") + ".")
    for x in r["runs"]:
        if x["long_broken"]:
            out.append(f"\n{x['who']}: the long-lived connection broke at "
                       + ", ".join(f"{t:.1f}" for t in x["long_broken_after_s"][:10])
                       + " s (from the first restart); down for "
                       + ", ".join(_ms(t, 0) for t in x["long_outages_s"][:10]) + " ms each.")
    mux = next((x for x in r["runs"] if x["who"] in ("tunneld", "tunneld-multiplex")), None)
    if mux:
        targets.append(("restart: make-before-break refuses no connection, breaks none (no target given)",
                        f"tunneld: {mux['refused']} refused, longest gap {_ms(mux['longest_gap_s'], 0)} ms, "
                        f"long-lived connection broken {mux['long_broken']}×, {mux.get('make_before_break')} of "
                        f"{mux['restarts']} restarts make-before-break", None))
    out.append(f"\n**Cost per forwarded connection**: with the tunnel up and idle (before the restarts), "
               f"{r['conns']} echo connections through the forward, one after the other; the supervisor's "
               "wakeups (voluntary + nonvoluntary context switches) and CPU over them, divided by the "
               "connections (tunneld runs ssh at `LogLevel=VERBOSE` and reads its stderr: ssh logs nothing "
               "there for a working forwarded connection; autossh's ssh writes to autossh's inherited stderr, "
               "which autossh never reads). ssh's on-CPU time for reference.\n")
    rows = []
    for x in r["runs"]:
        t = x["traffic"]
        n = t["conns"] or 1
        rows.append([x["who"], t["conns"], t["ok"], t["sup_wakeups"], f"{t['sup_wakeups'] / n:.2f}",
                     f"{t['sup_cpu_s'] * 1000 / n:.2f}", f"{t['sup_run_s'] * 1e6 / n:.0f}",
                     f"{t['ssh_run_s'] * 1e6 / n:.0f}"])
    out.append(table(["supervisor", "connections", "echoed", "sup wakeups", "wakeups / conn",
                      "sup CPU ms / conn (ticks)", "sup on-CPU µs / conn", "ssh on-CPU µs / conn"], rows))
    out.append("")


SHARE_PSS_GOAL_KB = 40 * 1024
SHARE_UP_GOAL_S = 3.0


def _share(r, out, targets):
    out.append("## 7. Shared connections\n")
    n, d = r["n"], r["dests"]
    out.append(
        f"{n} tunnels (`-L` to an echo server next to the sshd) spread round robin over {d} destinations: {d} "
        "sshds, each with its own host key, client key and known_hosts; destination 0 runs in a test network "
        f"namespace ({r['test_host']}) so that it can be blackholed, the others on loopback. Three contenders, "
        "one after the other, against the same sshds: tunneld with `share_connection = true` (one connection, "
        "one ssh, per destination, every tunnel's forwards opened over its control socket), tunneld unshared "
        f"(the default: one connection, one ssh, per tunnel) and {n} `autossh -M 0` processes running tunneld's "
        f"ssh options with the forward on the command line (launched stopped, released together). tunneld runs with `max_parallel_starts = "
        f"{r['max_parallel_starts']}` (every ssh at once, like the autossh processes), `gatetime = "
        f"{r['gatetime']:g}` s, ServerAlive {r['server_alive']} for all. **all up** = from spawning tunneld "
        "(releasing the autossh processes) until every forward has echoed once; memory and CPU taken at that "
        "moment (supervisor = tunneld, or the sum over the autossh processes; ssh = its ssh children); logins = "
        "`Accepted publickey` lines in the sshds' logs. **idle** = wakeups (voluntary + nonvoluntary context "
        f"switches) over {r['idle_s']:g} s after the gatetime timers fired; **per connection** = the "
        f"supervisor's wakeups over {r['conns']} echo connections through forwards of every destination, "
        f"divided by {r['conns']}. **kill -9** = every ssh carrying destination {r['killed_dest']}'s tunnels "
        f"(the one shared ssh, or {n // d} separate ones) killed at once: time until each of its tunnels echoes "
        "again; the other destinations' ssh pids compared before and after, their forwards probed once after. "
        f"**blackhole** = `ip -n NS route add blackhole <our address>/32` on destination 0 for "
        f"{r['outage_s']:g} s: the other destinations' forwards are probed in rounds meanwhile (one echo "
        f"attempt each, {ROUND_TIMEOUT_S:g} s allowed, a round every {ROUND_EVERY_S:g} s), then time from the "
        "restore until each of destination 0's tunnels echoes again.\n")
    runs = r["runs"]
    if not runs:
        out.append("No contender ran.\n")
        return

    def g(x, *path):
        for k in path:
            x = (x or {}).get(k) if isinstance(x, dict) else None
        return x

    def both(a, b, f=fmt_s):
        return f"{f(a)} ({f(b)})" if b is not None else f(a)

    def per_conn(x):
        t = x.get("traffic") or {}
        return f"{t['sup_wakeups'] / t['conns']:.2f}" if t.get("conns") else "—"

    def rounds(x):
        o = x.get("outage") or {}
        if not o.get("rounds"):
            return "—"
        return f"{o['others_down_max']} of {o['others_probed']} ({len(o['rounds'])} rounds)"

    rows = [
        ("ssh processes (connections)", lambda x: f"{x['ssh_n']}" + (f" ({g(x, 'status', 'connections')})"
                                                                     if g(x, "status", "connections") else "")),
        ("sshd logins to all up (pre-auth drops)", lambda x: f"{x['sshd_accepted']} ({x['sshd_preauth']})"),
        ("listen overflows to all up", lambda x: f"{g(x, 'listen_overflows', 'ListenOverflows')}"),
        ("every forward listening s (median)", lambda x: both(x.get("all_listening_s"), x.get("median_listening_s"))),
        ("all up s (median)", lambda x: both(x["all_up_s"], x["median_up_s"])),
        ("RSS supervisor", lambda x: fmt_kb(x["sup_rss_kb"])),
        ("RSS supervisor + ssh", lambda x: fmt_kb(x["sup_rss_kb"] + x["ssh_rss_kb"])),
        ("PSS supervisor", lambda x: fmt_kb(x["sup_pss_kb"])),
        ("**PSS supervisor + ssh**", lambda x: f"**{fmt_kb(x['sup_pss_kb'] + x['ssh_pss_kb'])}**"),
        ("USS supervisor + ssh", lambda x: fmt_kb(x["sup_uss_kb"] + x["ssh_uss_kb"])),
        ("after the idle window: PSS supervisor / + ssh",
         lambda x: f"{fmt_kb(x['settled']['sup_pss_kb'])} / **{fmt_kb(x['settled']['sup_pss_kb'] + x['settled']['ssh_pss_kb'])}**"),
        ("after the idle window: USS supervisor + ssh",
         lambda x: fmt_kb(x["settled"]["sup_uss_kb"] + x["settled"]["ssh_uss_kb"])),
        ("MemAvailable drop (system-wide, sshd included)", lambda x: fmt_kb(x["sys_mem_used_kb"])),
        ("tunneld peak RSS (VmHWM)", lambda x: fmt_kb(x.get("sup_hwm_kb")) if x.get("sup_hwm_kb") else "—"),
        ("on-CPU to all up s: supervisor / ssh / sshd",
         lambda x: f"{x['sup_run_s']:.2f} / {x['ssh_run_s']:.1f} / {x['sshd_run_s']:.1f}"),
        (f"idle {r['idle_s']:g} s: supervisor wakeups (netlink msgs)",
         lambda x: f"{g(x, 'idle', 'sup_wakeups')} ({g(x, 'idle', 'netlink', 'msgs')})"),
        (f"idle {r['idle_s']:g} s: ssh wakeups", lambda x: f"{g(x, 'idle', 'ssh_wakeups')}"),
        (f"supervisor wakeups per forwarded connection ({r['conns']})", per_conn),
        (f"kill -9: ssh killed (destination {r['killed_dest']})", lambda x: f"{g(x, 'kill', 'killed')}"),
        (f"kill -9: all {n // d} back s (median)",
         lambda x: both(g(x, "kill", "all_s"), g(x, "kill", "median_s"))),
        ("kill -9: sshd logins to recover", lambda x: f"{g(x, 'kill', 'sshd_accepted')}"),
        ("kill -9: other destinations' ssh pids changed / forwards failing after",
         lambda x: f"{g(x, 'kill', 'others_pids_changed')} / {g(x, 'kill', 'others_failed_echo_after')}"),
        ("blackhole: other destinations' forwards down, worst round", rounds),
        ("blackhole: other destinations' ssh pids changed",
         lambda x: f"{g(x, 'outage', 'others_pids_changed')}"),
        (f"blackhole: destination 0's {n // d} back after restore s (median)",
         lambda x: both(g(x, "outage", "all_s"), g(x, "outage", "median_s"))),
        ("blackhole: sshd logins to recover", lambda x: f"{g(x, 'outage', 'sshd_accepted_dest0')}"),
        ("stop s", lambda x: fmt_s(x.get("stop_s"))),
    ]
    heads = {"tunneld-shared": "tunneld shared", "tunneld-unshared": "tunneld unshared",
             "autossh": f"autossh ×{n}"}
    body = []
    for label, fn in rows:
        cells = []
        for x in runs:
            try:
                cells.append(fn(x))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("—")
        body.append([label] + cells)
    out.append(table(["", *[heads.get(x["who"], x["who"]) for x in runs]], body))
    if r.get("skipped"):
        out.append(f"\nSkipped for lack of memory: {', '.join(r['skipped'])}.")
    for x in runs:
        o = x.get("outage") or {}
        if not o.get("states_at_restore"):
            continue
        fl = g(x, "status_end", "failures") or {}
        out.append(f"\n{heads.get(x['who'], x['who'])}: tunnel states as the blackhole ended: "
                   + ", ".join(f"{k} {v}" for k, v in sorted(o["states_at_restore"].items()))
                   + "; failures in `tunnelctl status` at the end (summed over the tunnels): "
                   + (", ".join(f"{k} {v}" for k, v in sorted(fl.items())) or "none") + ".")
    if r.get("check"):
        out.append("\n`tunneld -t` on the shared configuration: `" + r["check"][0][:160]
                   + ("…" if len(r["check"][0]) > 160 else "") + "`")
    f = r.get("config_file_run")
    if f:
        ck = r.get("check_s") or {}
        out.append(f"\n**With an ssh config file named.** The tunnels above have `ssh_config_file = \"none\"` "
                   "(`ssh -F none`). With a file named (`ssh_config_file = \"/dev/null\"`, as the other "
                   "benchmarks run; tunneld asks `ssh -G` once per distinct ssh configuration either way, "
                   f"{d} times here, and asked it once per tunnel when this section was written): the same {n} shared tunnels were all up after **{fmt_s(f['all_up_s'])} s** (median "
                   f"{fmt_s(f['median_up_s'])} s, every forward listening after {fmt_s(f.get('all_listening_s'))} s; "
                   f"PSS {fmt_kb(f['sup_pss_kb'] + f['ssh_pss_kb'])} at all up"
                   + (f", {fmt_kb(f['settled_pss_kb'])} {SETTLE_S:g} s later" if f.get("settled_pss_kb") else "")
                   + f"; {f['sshd_accepted']} logins), and "
                   f"`tunneld -t` took {fmt_s(ck.get('/dev/null'))} s against {fmt_s(ck.get('none'))} s with "
                   "`\"none\"`.")
    sh = next((x for x in runs if x["who"] == "tunneld-shared"), None)
    if sh and sh.get("ssh_argv_example"):
        out.append(f"\nA shared ssh's command line: `{sh['ssh_argv_example']}`")
    if sh:
        pss = sh["sup_pss_kb"] + sh["ssh_pss_kb"]
        st = sh.get("settled")
        pss2 = st["sup_pss_kb"] + st["ssh_pss_kb"] if st else None
        up = sh["all_up_s"]
        un = next((x for x in runs if x["who"] == "tunneld-unshared"), None)
        ok_p, ok_u = pss <= SHARE_PSS_GOAL_KB, up is not None and up <= SHARE_UP_GOAL_S
        ok_p2 = pss2 is not None and pss2 <= SHARE_PSS_GOAL_KB
        vs = (f" (unshared: {fmt_kb(un['sup_pss_kb'] + un['ssh_pss_kb'])}, {fmt_s(un['all_up_s'])} s)"
              if un else "")
        settled = (f"; {fmt_kb(pss2)} after the idle window, {_yes(ok_p2)}" if st else "")
        out.append(f"\nGoals for {n} shared tunnels over {d} destinations: PSS of tunneld + its ssh ≤ 40 MB: "
                   f"{fmt_kb(pss)} at all up, {_yes(ok_p)}{settled}; all up ≤ 3 s: {fmt_s(up)} s, {_yes(ok_u)}{vs}.")
        targets.append((f"share: {n} shared tunnels ≤ 40 MB PSS (tunneld + ssh)",
                        f"{fmt_kb(pss)} at all up" + (f", {fmt_kb(pss2)} after the idle window" if st else ""),
                        ok_p if ok_p == ok_p2 or not st else "met after the idle window, not at all up"
                        if ok_p2 else "met at all up, not after the idle window"))
        targets.append((f"share: {n} shared tunnels all up ≤ 3 s", f"{fmt_s(up)} s", ok_u))
    out.append("")


def _atscale(r, out, targets):
    out.append("## 8. At scale: thousands of tunnels on shared connections, hosts in an ssh config file\n")
    out.append(
        "N tunnels, each one `-L` to the echo server, spread round robin over C connections: an ssh config file "
        "with one `Host connK` alias per connection (HostName, Port, User, IdentityFile, UserKnownHostsFile of "
        "the one loopback sshd), every tunnel `host = \"connK\"` with `ssh_config_file` that file and "
        f"`share_connection = true`, `max_parallel_starts = C`, `gatetime = {r['gatetime']:g}` s. tunneld asks "
        "`ssh -G` once per connection (its command line without forwards), not once per tunnel. "
        "**tunneld -t**: three runs on the file, each timed, and whether all three printed the same. "
        "**first answer**: from spawning tunneld until `tunnelctl --json status` first got a reply (polled "
        "every 10 ms once the socket exists; requests wait for the first load up to 0.3 s after start, then "
        "a slow load is answered as an empty set saying it is loading). **load**: what tunneld logs its load "
        "off the loop took (`configuration loaded: … ssh -G and checks took X s`). **all up**: until every "
        "forward echoed once. **status**: `tunnelctl status NAME` (one tunnel) and `tunnelctl --json status` "
        "(every tunnel), after all were up. **reload**: the file rewritten with one tunnel's forward on a new "
        "port, then `tunnelctl reload` (it returns once the reload is applied): its reply time, the \"N "
        "changed\" tunneld logs, ssh pids compared before and after with `tunnelctl --json status` (on a "
        "shared connection the changed tunnel keeps its ssh too: its forward moves on the running master), "
        "`tunnelctl status NAME` polled meanwhile; then one reload that changes nothing. **autossh** runs the "
        "same tunnels as autossh can: one `autossh -M 0` per connection, its ssh holding that connection's "
        "N/C forwards (`-F` the same file, tunneld's ssh options); changing one forward means restarting that "
        "autossh, which takes the connection's other forwards down with it.\n")

    def ms(v):
        return "—" if v is None else f"{v * 1000:.0f}"

    def one_fwd(x):
        return [y for y in x.get("reloads", []) if y["tunnel"]]

    def no_change(x):
        return [y for y in x.get("reloads", []) if not y["tunnel"]]

    rows = [
        ("tunneld -t s (3 runs)", lambda x: ", ".join(f"{t:.2f}" for t in x["check"]["seconds"]) if x["who"] == "tunneld" else "—"),
        ("tunneld -t: exit status, the same output 3 times, connections",
         lambda x: f"{', '.join(map(str, x['check']['exit']))}; {'yes' if x['check']['same'] else 'NO'}; "
                   f"{x['check']['groups']}" if x["who"] == "tunneld" else "—"),
        ("first answer on the control socket s (loading?)",
         lambda x: f"{fmt_s(x['first_answer_s'])} ({'loading' if x['first_answer_loading'] else 'loaded'})"
         if x["who"] == "tunneld" else "—"),
        ("load off the loop (ssh -G and checks) s", lambda x: fmt_s(x.get("load_s"))),
        ("READY=1 s", lambda x: fmt_s(x.get("ready_s"))),
        ("every forward listening s (median)", lambda x: f"{fmt_s(x.get('all_listening_s'))} ({fmt_s(x.get('median_listening_s'))})"),
        ("all up s (median)", lambda x: f"{fmt_s(x['all_up_s'])} ({fmt_s(x['median_up_s'])})"),
        ("sshd logins", lambda x: f"{x['sshd_logins']}"),
        ("ssh processes", lambda x: f"{x['ssh_n']}"),
        ("RSS / PSS supervisor", lambda x: f"{fmt_kb(x['sup_rss_kb'])} / {fmt_kb(x['sup_pss_kb'])}"),
        ("**PSS supervisor + ssh**", lambda x: f"**{fmt_kb(x['sup_pss_kb'] + x['ssh_pss_kb'])}**"),
        ("USS supervisor + ssh", lambda x: fmt_kb(x["sup_uss_kb"] + x["ssh_uss_kb"])),
        ("MemAvailable drop (system-wide, sshd included)", lambda x: fmt_kb(x["sys_mem_used_kb"])),
        ("tunneld peak RSS (VmHWM)", lambda x: fmt_kb(x.get("sup_hwm_kb")) if x.get("sup_hwm_kb") else "—"),
        ("on-CPU to all up s: supervisor / ssh", lambda x: f"{x['sup_run_s']:.2f} / {x['ssh_run_s']:.1f}"),
        ("status of one tunnel ms: median / max",
         lambda x: f"{ms(x['status_one_s']['median'])} / {ms(x['status_one_s']['max'])}"),
        ("status of every tunnel ms: median / max (reply)",
         lambda x: f"{ms(x['status_all_s']['median'])} / {ms(x['status_all_s']['max'])} "
                   f"({fmt_kb(x['status_all_s']['bytes'] // 1024)})"),
        ("reload, one forward moved: reply ms", lambda x: ", ".join(ms(y["reply_s"]) for y in one_fwd(x)) or "—"),
        ("… tunneld says changed", lambda x: ", ".join(str(y["changed_logged"]) for y in one_fwd(x)) or "—"),
        ("… ssh pids changed / tunnels not up after",
         lambda x: ", ".join(f"{y['pids_changed']} / {y['not_up_after']}" for y in one_fwd(x)) or "—"),
        ("… moved forward echoes after ms", lambda x: ", ".join(ms(y["moved_echo_s"]) for y in one_fwd(x)) or "—"),
        ("… tunneld CPU ms (ticks) / on-CPU ms",
         lambda x: ", ".join(f"{ms(y['tunneld_cpu_s'])} / {ms(y['tunneld_run_s'])}" for y in one_fwd(x)) or "—"),
        ("… CPU of the load's child process and its ssh -G ms",
         lambda x: ", ".join(ms(y.get("load_child_cpu_s")) for y in one_fwd(x)) or "—"),
        ("… status of one tunnel meanwhile, slowest ms (replies)",
         lambda x: ", ".join(f"{ms(y['status_during_max_s'])} ({y['status_during_n']})" for y in one_fwd(x)) or "—"),
        ("reload, nothing changed: reply ms, changed",
         lambda x: ", ".join(f"{ms(y['reply_s'])}, {y['changed_logged']}" for y in no_change(x)) or "—"),
        ("autossh: one forward changed = its process restarted: tunnels interrupted, all back s, other ssh changed",
         lambda x: f"{x['restart_one']['tunnels_interrupted']}, {fmt_s(x['restart_one']['all_back_s'])}, "
                   f"{x['restart_one']['others_pids_changed']}" if x.get("restart_one") else "—"),
        ("stop s", lambda x: fmt_s(x.get("stop_s"))),
    ]
    runs = r["runs"]
    body = []
    for label, fn in rows:
        cells = []
        for x in runs:
            try:
                cells.append(fn(x))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("—")
        body.append([label] + cells)
    heads = [f"tunneld {x['n']} / {x['c']}" if x["who"] == "tunneld" else f"autossh ×{x['c']} ({x['n']} / {x['c']})"
             for x in runs]
    out.append(table(["", *heads], body))
    for x in runs:
        if x["who"] != "tunneld":
            continue
        n, c = x["n"], x["c"]
        ck = x["check"]
        ok_t = ck["same"] and set(ck["exit"]) == {0} and ck["groups"] == c and max(ck["seconds"]) <= 2.0
        targets.append((f"atscale: tunneld -t on {n} tunnels over {c} connections: the same verdict 3 times, ≤ 2 s",
                        f"{', '.join(f'{t:.2f}' for t in ck['seconds'])} s, same: {ck['same']}, exit "
                        f"{', '.join(map(str, ck['exit']))}, {ck['groups']} connections", ok_t))
        fa = x.get("first_answer_s")
        targets.append((f"atscale: control socket answers within 1 s of start ({n} tunnels)",
                        f"{fmt_s(fa)} s", fa is not None and fa <= 1.0))
        rl = one_fwd(x)
        ok_r = bool(rl) and all(y["changed_logged"] == 1 and y["pids_changed"] == 0 and not y["not_up_after"]
                                and y["moved_echo_s"] is not None for y in rl)
        fast = bool(rl) and all(y["reply_s"] <= 1.0 for y in rl)
        targets.append((f"atscale: a reload moving one forward applied within 1 s as \"1 changed\" ({n} tunnels)",
                        f"{', '.join(ms(y['reply_s']) for y in rl)} ms; changed "
                        f"{', '.join(str(y['changed_logged']) for y in rl)}; other ssh pids changed "
                        f"{', '.join(str(y['pids_changed']) for y in rl)}",
                        ok_r and fast if ok_r else False))
    out.append("")


def _network(r, out, targets):
    out.append("## 9. Following the network: a moved path, a busy and an idle tunnel under a blackhole\n")
    iv, cnt, bh = r["alive_interval"], r["alive_count"], r["blackhole_s"]
    out.append(
        f"tunneld and `autossh -M 0` (`AUTOSSH_GATETIME=0`) run at the same time, each with one `-L` through a test "
        f"host reachable by two paths (tests/lib/netns.py's TwoPathHost: veth pairs A and B, the server "
        f"{r['server']} behind both, routed by one of them), ServerAlive **{r['server_alive']}** for both"
        + (" (tunneld's defaults)" if (iv, cnt) == (30, 3) else "") + ". tunneld has its defaults otherwise "
        "(`dead_path_timeout` 4 s, `watch_network` on); autossh runs tunneld's ssh options less the multiplexing "
        "ones, with the forward on the command line. **(a) the path moves**: the local address of the path in "
        "use is removed and the server routed by the other path; time until a new connection through each "
        "tunnel echoes (a probe every 50 ms, each given 1 s); the floor is a fresh ssh over the new path, "
        "spawned once the others were back (one handshake). **(b) busy**: a client sends a line through each "
        f"tunnel every 100 ms; both paths are blackholed in the test host for {bh:g} s (no link event: packets "
        "vanish); *noticed* = tunneld no longer says `up` (`tunnelctl --json status`, polled every 0.1 s) / "
        f"autossh's ssh exited, within the {bh:g} s; then time from the path's return until a new connection "
        "echoes. **(c) idle**: no traffic for 3 s, then the same blackhole until both supervisors noticed (at "
        f"most {r['notice_bound_s']:g} s); then time from the return until a new connection echoes. Waits for "
        f"bytes are bounded at {r['max_wait_s']:g} s.\n")

    def s(v, limit=None):
        if v is None:
            return f"not within {limit:g} s" if limit is not None else "—"
        return fmt_s(v)
    rows = []
    for x in r["reps"]:
        k = x["rep"]
        m, b, i = x.get("moved"), x.get("busy"), x.get("idle")
        if m:
            rows.append([f"(a) path {m['from']} → {m['to']}: bytes flow again s", k, s(m["back_s"]["tunneld"], r["max_wait_s"]),
                         s(m["back_s"]["autossh"], r["max_wait_s"]), s(m.get("floor_s"))])
        if b:
            bh_s = round(b["blackhole_s"])
            rows.append([f"(b) busy, {bh_s} s blackhole: noticed s", k,
                         s(b["noticed_s"]["tunneld"], bh_s), s(b["noticed_s"]["autossh"], bh_s), "—"])
            rows.append(["(b) … bytes flow again after the return s", k, s(b["back_s"]["tunneld"], r["max_wait_s"]),
                         s(b["back_s"]["autossh"], r["max_wait_s"]), "—"])
        if i:
            rows.append([f"(c) idle, {round(i['blackhole_s'])} s blackhole: noticed s", k,
                         s(i["noticed_s"]["tunneld"], round(i["blackhole_s"])),
                         s(i["noticed_s"]["autossh"], round(i["blackhole_s"])), "—"])
            rows.append(["(c) … bytes flow again after the return s", k, s(i["back_s"]["tunneld"], r["max_wait_s"]),
                         s(i["back_s"]["autossh"], r["max_wait_s"]), "—"])
    if rows:
        out.append(table(["scenario", "rep", "tunneld", "autossh -M 0", "floor: fresh ssh"], rows,
                         ["l", "r", "r", "r", "r"]))
    if r.get("error"):
        out.append(f"\n**Stopped early**: {r['error']}")
    notes = []
    for x in r["reps"]:
        m, b = x.get("moved"), x.get("busy")
        if m:
            notes.append(f"rep {x['rep']} (a): tunneld's connection left from {m.get('tunneld_local_before')}, then "
                         f"{m.get('tunneld_local_after')}; autossh's ssh exited "
                         + (f"{fmt_s(m['autossh_ssh_exited_s'])} s after the move" if m.get("autossh_ssh_exited_s")
                            is not None else "not at all") + ".")
        if b:
            c = b.get("client") or {}
            later = b.get("noticed_later_s") or {}
            notes.append(f"rep {x['rep']} (b): the busy clients' connections: "
                         + "; ".join(f"{who} " + (f"broke ({v['error']})" if v.get("error") else "held")
                                     + (f", echoed again {fmt_s(v['resumed_s'])} s after the return"
                                        if v.get("resumed_s") is not None else "")
                                     for who, v in c.items())
                         + (f"; autossh's ssh exited {fmt_s(later['autossh'])} s after the blackhole began, after "
                            "the return" if later.get("autossh") is not None and b["noticed_s"]["autossh"] is None
                            else "") + ".")
    if notes:
        out.append("\n" + "\n".join(f"* {n}" for n in notes))
    out.append(f"\nautossh's ssh: `{r.get('autossh_args')}`")
    first = r["reps"][0] if r["reps"] else {}
    for key, what in (("moved", "(a) the path moved"), ("busy", "(b) the busy tunnel's blackhole"),
                      ("idle", "(c) the idle tunnel's blackhole")):
        lines = (first.get(key) or {}).get("tunneld_log")
        if lines:
            out.append(f"\ntunneld's first lines after {what} (rep 1; ssh's own lines left out):\n\n```\n"
                       + "\n".join(lines) + "\n```")
    # issue 24's goals, with default settings
    reps = r["reps"]
    a_t = [x["moved"]["back_s"]["tunneld"] for x in reps if x.get("moved")]
    b_n = [x["busy"]["noticed_s"]["tunneld"] for x in reps if x.get("busy")]
    b_b = [x["busy"]["back_s"]["tunneld"] for x in reps if x.get("busy")]
    c_n = [x["idle"]["noticed_s"]["tunneld"] for x in reps if x.get("idle")]

    def ok(v, lim):
        return bool(v) and all(t is not None and t <= lim for t in v)

    def au(key, sub):
        return ", ".join(s((x.get(key) or {}).get(sub, {}).get("autossh")) for x in reps if x.get(key))
    if a_t:
        targets.append(("network (a): a moved path, bytes flow again within 2 s",
                        f"tunneld {', '.join(s(v) for v in a_t)} s; autossh {au('moved', 'back_s')} s", ok(a_t, 2.0)))
    if b_n:
        targets.append(("network (b): a busy tunnel under a blackhole is not up within 5 s",
                        f"tunneld {', '.join(s(v) for v in b_n)} s; autossh {au('busy', 'noticed_s')}", ok(b_n, 5.0)))
        targets.append(("network (b): bytes flow within 2 s of the path's return",
                        f"tunneld {', '.join(s(v) for v in b_b)} s; autossh {au('busy', 'back_s')} s", ok(b_b, 2.0)))
    if c_n:
        targets.append((f"network (c): an idle tunnel under a blackhole is noticed within server_alive_interval "
                        f"+ 5 s ({iv + 5:g} s)",
                        f"tunneld {', '.join(s(v) for v in c_n)} s; autossh {au('idle', 'noticed_s')}",
                        ok(c_n, iv + 5.0)))
    out.append("")

def _penalties(r, out, targets):
    out.append("## 10. A server that penalises failed logins: sshd 10.0's PerSourcePenalties\n")
    if r.get("skipped"):
        out.append(f"Skipped: {r['skipped']} (the benchmark needs Debian 13's sshd, from the root that "
                   "`scripts/deps --zoo-root` makes).\n")
        return
    g, b = r["good"], r["bad"]
    s_end = r["at_start"][-1]
    back_limit = r.get("back_limit_s", r["at_blip"][-1])
    out.append(
        f"Issue 25's scenario: {g} tunnels (`-L` to the echo server) whose key the server accepts and {b} whose key "
        f"it refuses, all to one Debian 13 sshd ({r.get('server', 'OpenSSH 10.0')}) with its default penalties (5 s "
        "per failed login, 1 s per connection that never authenticates; from 15 s accrued it drops every new "
        f"connection from the address until the penalty expires). The {b} bad tunnels come first (in tunneld's "
        f"configuration and in the order the autossh processes are released); they use one rejected key, or {b} "
        "different ones. **tunneld** runs with its defaults (pacing needs no setting); **autossh** is one "
        "`autossh -M 0` per tunnel with `AUTOSSH_GATETIME=0`, tunneld's ssh options made standalone (the same "
        "ServerAlive). They run one after the other, each against a fresh sshd (its own penalty table). *Up* = a "
        f"new connection through the forward echoes (an attempt every {r['probe_every_s'] * 1000:g} ms, each given "
        f"1 s); *all up* is looked for {r['up_limit_s']:g} s. The **blip** kills every ssh the contender runs "
        f"(SIGKILL), once each good tunnel that came up has been up {r['uptime_before_blip_s']:g} s (past tunneld's "
        f"default gatetime of 30 s) and not before {s_end:g} s; *back* = a new connection echoes again; *all back* "
        f"is looked for {back_limit:g} s. *ssh started*: ssh processes the contender started over the whole run "
        "(tunneld's status; autossh's log). From the server's log over the whole run: *failed logins* "
        "(`Failed publickey`), *penalty*: penalties activated for 127.0.0.1, *drops logged*: `drop connection … "
        "penalty` lines (sshd rate-limits them, so this is a lower bound of the connections it refused).\n")

    def vname(v):
        return f"{b} bad on 1 key" if v == "one-key" else f"{b} bad on {b} keys"

    def within(v, limit):
        return f"not within {limit:g} s" if v is None else fmt_s(v)

    def within_s(v, limit):
        return f"not within {limit:g} s" if v is None else f"{fmt_s(v)} s"
    rows = []
    runs = sorted(r["runs"], key=lambda x: (x["variant"] != "one-key", x["who"] != "tunneld"))
    for x in runs:
        sv = x.get("server", {})
        act = sv.get("penalties_activated")
        rows.append(["tunneld" if x["who"] == "tunneld" else "autossh -M 0", vname(x["variant"])]
                    + [f"{x['up_at'][k]}/{g}" for k in sorted(x["up_at"], key=float)]
                    + [within(x.get("all_up_s"), r["up_limit_s"])]
                    + [f"{x['back_at'][k]}/{g}" for k in sorted(x.get("back_at", {}), key=float)]
                    + [within(x.get("all_back_s"), back_limit) if "back_s" in x else "—",
                       x.get("ssh_started", "—"), sv.get("failed_publickey", "—"),
                       "—" if act is None else ("no" if act == 0 else f"yes ({act})"), sv.get("penalty_drops", "—")])
    if rows:
        out.append(table(["contender", "variant"] + [f"up at {k:g} s" for k in r["at_start"]] + ["all up s"]
                         + [f"back at {k:g} s" for k in r["at_blip"]]
                         + ["all back s", "ssh started", "failed logins", "penalty", "drops logged"],
                         rows, ["l", "l"] + ["r"] * (len(rows[0]) - 2)))
    if r.get("error"):
        out.append(f"\n**Stopped early**: {r['error']}")
    notes = []
    for x in runs:
        who = "tunneld" if x["who"] == "tunneld" else "autossh"
        sv = x.get("server") or {}
        back_n = sum(1 for t in (x.get("back_s") or {}).values() if t is not None)
        n = (f"{who}, {vname(x['variant'])}: the blip {fmt_s(x.get('blip_after_s'), 1)} s after start killed "
             f"{x.get('killed')} ssh ({x.get('up_before_blip')}/{g} good tunnels echoed just before it; "
             f"{back_n}/{g} back within {back_limit:g} s); the server started {sv.get('connections')} sessions "
             "(`Connection from`)")
        bb = sv.get("before_blip") or {}
        if bb:
            n += (f", {bb.get('connections')} of them before the blip (failed logins before it: "
                  f"{bb.get('failed_publickey')}, drops logged: {bb.get('penalty_drops')})")
        t = x.get("tunneld")
        if t:
            fb = ", ".join(f"{k} {v}" for k, v in sorted(t.get("failures_bad", {}).items())) or "none"
            fg = ", ".join(f"{k} {v}" for k, v in sorted(t.get("failures_good", {}).items())) or "none"
            n += f"; tunneld's failures of the bad tunnels: {fb}; of the good: {fg} (`killed` is the blip)"
        a = x.get("autossh")
        if a and a.get("grace_sleeps") is not None:
            n += f"; the autossh processes slept their grace time {a['grace_sleeps']} times in all"
            if a.get("grace_max"):
                n += f", at most {a['grace_max']} s"
        notes.append(n + ".")
    if notes:
        out.append("\n" + "\n".join(f"* {n}" for n in notes))
    au = next((x["autossh"] for x in runs if x.get("autossh")), None)
    if au:
        out.append(f"\nautossh's ssh for a good tunnel: `{au.get('args_example_good')}`")
    lines = next(((x.get("server") or {}).get("penalty_lines") for x in runs
                  if (x.get("server") or {}).get("penalties_activated")), None)
    if lines:
        out.append("\nThe server's first lines about penalties in a run where it activated one:\n\n```\n"
                   + "\n".join(lines) + "\n```")
    # issue 25's goals for tunneld, in each variant
    td = [x for x in runs if x["who"] == "tunneld"]
    if td:
        def ok_t(x):
            return (x.get("all_up_s") is not None and x["all_up_s"] <= 10.0 and x.get("all_back_s") is not None
                    and x["all_back_s"] <= 5.0)
        targets.append((f"penalties: the {g} good tunnels up within 10 s of start and back within 5 s of a blip, "
                        f"beside {b} a penalising sshd 10.0 refuses",
                        "; ".join(f"{vname(x['variant'])}: all up {within_s(x.get('all_up_s'), r['up_limit_s'])}, "
                                  f"back {within_s(x.get('all_back_s'), back_limit)}" for x in td)
                        + " (autossh: " + "; ".join(
                            f"{vname(x['variant'])}: all up {within_s(x.get('all_up_s'), r['up_limit_s'])}, back "
                            f"{within_s(x.get('all_back_s'), back_limit)}" for x in runs if x["who"] != "tunneld") + ")",
                        all(ok_t(x) for x in td)))
        targets.append(("penalties: the server never penalises tunneld's address",
                        "; ".join(f"{vname(x['variant'])}: {x.get('server', {}).get('penalties_activated')} "
                                  f"activated, {x.get('server', {}).get('penalty_drops')} drops logged" for x in td),
                        all(x.get("server", {}).get("penalties_activated") == 0
                            and x.get("server", {}).get("penalty_drops") == 0 for x in td)))
    out.append("")


def _profile(p, out):
    out.append("## Profile of tunneld\n")
    out.append("The profiled tunnelds run with the default `max_parallel_starts` (8), as deployed.\n")
    perf = p.get("perf", {})
    out.append(f"perf: `perf stat -e instructions true` {'works' if perf.get('works') else 'does not work here'}"
               f" (`{perf.get('detail')}`){'' if perf.get('works') else ': no perf numbers'}.\n")
    s = p.get("strace_cf")
    if s:
        tot = s.get("total") or {}
        out.append(f"### strace -c -f, N = {s['n']} (start → all up → SIGTERM → exit)\n")
        out.append(f"Follows forks *and* exec, so this counts the ssh children too (time to all up under "
                   f"strace: {fmt_s(s['all_up_s'])} s). Total: {tot.get('calls')} calls. Top 12 by calls:\n")
        out.append(table(["syscall", "calls", "errors", "seconds", "% time"],
                         [[x["syscall"], x["calls"], x["errors"], f"{x['seconds']:.3f}", f"{x['pct']:.1f}"]
                          for x in s["rows"][:12]]))
        out.append("")
    s = p.get("strace_phases")
    if s:
        n = s["n"]
        out.append(f"### tunneld's own syscalls per phase (strace -ttt without -f), N = {n}\n")
        phases = [ph for ph in s["phases"]]
        allsc = {}
        for ph in phases:
            for sc, c in s["phases"][ph].items():
                allsc[sc] = allsc.get(sc, 0) + c
        top = sorted(allsc, key=lambda k: -allsc[k])[:16]
        rows = [[sc] + [s["phases"][ph].get(sc, 0) for ph in phases] for sc in top]
        rows.append(["**total**"] + [sum(s["phases"][ph].values()) for ph in phases])
        rows.append(["per tunnel"] + [f"{sum(s['phases'][ph].values()) / n:.1f}" for ph in phases])
        out.append(table(["syscall"] + [f"{ph} ({s['durations'][ph]:.1f} s)" for ph in phases], rows))
        out.append(f"\nPhases: startup = spawn to all forwards echoing (+ gatetime); idle = {s['idle_s']:.0f} s "
                   "with everything up; reload = SIGHUP changing one tunnel until it echoes again; status = one "
                   "`tunnelctl --json status`; shutdown = SIGTERM to exit.\n")
    c = p.get("callgrind")
    if c:
        out.append(f"### callgrind, N = {c['n']}: instructions per phase\n")
        out.append("Phases: startup = tunneld start until every forward echoed and the gatetime timers fired; "
                   "reload = one SIGHUP that changes one tunnel, until it echoes again; shutdown = SIGTERM to "
                   "exit. Inclusive = the function's own instructions plus those of the calls it made (functions "
                   "inside a recursion, which callgrind names `name'2`, are left out of the inclusive tables: "
                   "the sum would count the nested calls again).\n")
        for ph in c["phases"]:
            tot = ph["total_ir"]
            if not tot:
                out.append(f"**{ph['phase']}**: no data\n")
                continue
            out.append(f"**{ph['phase']}**: {tot:,} instructions, {tot / c['n']:,.0f} per tunnel. By object: "
                       + ", ".join(f"{o or '?'} {v / tot * 100:.0f} %" for o, v in ph["by_object"][:5]) + ".\n")
            out.append(table(["Ir (self)", "%", "function", "object"],
                             [[f"{x['self']:,}", f"{x['self'] / tot * 100:.1f}", f"`{x['fn']}`", x["obj"]]
                              for x in ph["self"][:10]], ["r", "r", "l", "l"]))
            if ph["inclusive"]:
                out.append("\ntunneld's own functions, inclusive:\n")
                out.append(table(["Ir (inclusive)", "%", "function"],
                                 [[f"{x['incl']:,}", f"{x['incl'] / tot * 100:.1f}", f"`{x['fn']}`"]
                                  for x in ph["inclusive"][:10]], ["r", "r", "l"]))
            out.append("")


def _accept_lines(a):
    """What tunneld logged about its control socket after the tunnelctl call."""
    first = a.get("first_accept_line")
    if "after_ctl_accept_lines" in a:
        n = a["after_ctl_accept_lines"]
        return (f" ({a.get('after_ctl_log_lines', '?')} lines, {n} of them about the control socket's accept"
                + (f"; the first: `{first}`)" if first else ")"))
    # results of runs that counted only "accept failed" lines
    n = a.get("after_ctl_accept_failed_lines", 0)
    if first:
        return f" ({n:,} lines `{first}`)"
    return (f" ({n} lines with `accept failed`: that run looked only for that text, not for the "
            "`control socket: cannot accept: …; not accepting for 1 s` line tunneld writes when out of "
            "descriptors, nor kept the lines; bench/run now counts both and keeps the first lines)")


def _limits(r, out):
    out.append("## Limits: tunneld at the edge of its process limits\n")
    out.append("Not benchmarks: two reproducers for limits the scale numbers point at (descriptors per "
               "tunnel; stack growth while stopping). tunneld runs under `prlimit` with small limits.\n")
    a, b = r.get("nofile"), r.get("stack")
    if a:
        out.append(f"**Open files**: {a['n']} tunnels under `prlimit --nofile={a['limit']}`: {a['forwards_up']} "
                   f"forwards came up within 20 s; "
                   + (f"{a['emfile_starts']} failed starts" if "emfile_starts" in a
                      else f"{a.get('emfile_lines')} log lines (two per failed start)")
                   + f" `cannot start ssh: Too many open files` (first: `{a['first_emfile']}`); {a.get('network_resets', '—')} \"network changed: "
                   f"backoff reset\" lines meanwhile; tunneld held {a['fds']} descriptors. Then one "
                   f"`tunnelctl status` (5 s timeout): {'answered' if a['tunnelctl_status_ok'] else 'failed'}; in the "
                   f"{a.get('after_ctl_s', 0):.1f} s from that call until 3 s after it, tunneld used {a.get('after_ctl_cpu_s', 0):.2f} s of CPU "
                   f"and wrote {a.get('after_ctl_log_bytes', 0):,} bytes of log"
                   + _accept_lines(a) + ".\n")
        if a.get("after_ctl_log_head"):
            out.append("The first lines of that log:\n\n```\n" + "\n".join(a["after_ctl_log_head"]) + "\n```\n")
    if b:
        out.append(f"**Stack**: {b['n']} tunnels under `prlimit --stack={b['stack_limit_kb']} kB`, all up "
                   f"({b['forwards_up']} forwards), then SIGTERM: VmStk {b['vmstk_kb_before']} kB → peak "
                   f"{b['vmstk_kb_peak']} kB; exit status {b['exit']}"
                   f"{' (killed by ' + b['killed_by'] + ')' if b.get('killed_by') else ''}.\n")


def render(res, args):
    out = ["# tunneld benchmark results", ""]
    mode = "quick smoke run (tiny N, few repetitions: not for conclusions)" if args.quick else "full run"
    out.append(f"Written by `bench/run{' --quick' if args.quick else ''}` ({mode}) in "
               f"{res.get('total_s', 0) / 60:.1f} min. See [README.md](README.md) for what each number means. "
               "Numbers are from one run on a shared machine: other jobs ran at the same time (load averages "
               "below and per benchmark), so treat differences of a few ms as noise.\n")
    out.append("## Machine\n")
    out.append(_machine(res.get("machine", {})))
    if res.get("loadavg"):
        out.append("\nLoad average at the end of each benchmark: " +
                   ", ".join(f"{k} {v}" for k, v in res["loadavg"].items()) + ".")
    out.append("")
    targets = []
    body = []
    if "recovery" in res:
        _recovery(res["recovery"], body, targets)
    if "scale" in res:
        _scale(res["scale"], body, targets, res.get("machine", {}).get("nofile", "?"))
        _idle(res["scale"], body, targets)
    if "reload" in res:
        _reload(res["reload"], body, targets)
    if "outage" in res:
        _outage(res["outage"], body, targets)
    if "restart" in res:
        _restart(res["restart"], body, targets)
    if "share" in res:
        _share(res["share"], body, targets)
    if "atscale" in res:
        _atscale(res["atscale"], body, targets)
    if "network" in res:
        _network(res["network"], body, targets)
    if "penalties" in res:
        _penalties(res["penalties"], body, targets)
    if "limits" in res:
        _limits(res["limits"], body)
    if "profile" in res:
        _profile(res["profile"], body)
    out.append("## Targets\n")
    out.append(table(["target", "measured", "verdict"],
                     [[t, m, ok if isinstance(ok, str) else "met" if ok else ("—" if ok is None else "**NOT MET**")]
                      for t, m, ok in targets],
                     ["l", "l", "l"]))
    if res.get("errors"):
        out.append("\n**Errors:** " + "; ".join(f"{k}: {v}" for k, v in res["errors"].items()))
    out.append("")
    out += body
    return "\n".join(out) + "\n"
