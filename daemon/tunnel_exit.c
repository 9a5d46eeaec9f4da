/* SPDX-License-Identifier: MIT */
/* tunnel_exit: an ssh has ended: its last words, what kind of run it was, and policy.h's
 * verdict carried out (backoff, a restart, failed). */
#include "tunnel_internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "probe.h"

/* What is read of ssh's stderr once it has exited: its last words, but bounded (a helper
 * that inherited the pipe may go on writing). */
#define FINAL_READ_MAX (64u << 10)

static void describe_run(const struct tunnel *t, const struct tunnel_run *run, char *buf, size_t size)
{
        char ran[DURATION_MAX];
        size_t n;

        format_duration(run->ran, ran, sizeof(ran));
        if (run->exit_signal > 0) {
                char sig[16];
                n = (size_t)snprintf(buf, size, "ssh was killed by signal %s after %s",
                                     signal_to_name(run->exit_signal, sig, sizeof(sig)), ran);
        } else
                n = (size_t)snprintf(buf, size, "ssh exited with status %d after %s", run->exit_status, ran);
        if (n < size && !t->run_up)
                n += (size_t)snprintf(buf + n, size - n, ", never up");
        else if (n < size && t->spec.gatetime > 0 && !t->gate_passed) {
                char gate[DURATION_MAX];
                n += (size_t)snprintf(buf + n, size - n, ", up for less than gatetime %s",
                                      format_duration(t->spec.gatetime, gate, sizeof(gate)));
        }
        if (n < size && run->failure != FAILURE_NONE) {
                if (run->failure_on_proxy && t->spec.jump_host)
                        snprintf(buf + n, size - n, " (%s on the jump host %s: %s)", failure_class_to_string(run->failure),
                                 t->spec.jump_host, failure_class_hint(run->failure));
                else if (run->failure_on_proxy)
                        snprintf(buf + n, size - n, " (%s on the proxy of ssh_config_file: %s)",
                                 failure_class_to_string(run->failure), failure_class_hint(run->failure));
                else
                        snprintf(buf + n, size - n, " (%s: %s)", failure_class_to_string(run->failure),
                                 failure_class_hint(run->failure));
        }
}

static void note_flapping(struct tunnel *t, const struct tunnel_run *run, const char *what)
{
        struct log_ctx ctx = ctx_of(t);
        char window[DURATION_MAX];

        if (!flap_note_failure(&t->flaps, &t->spec, run->ended_at) || t->flapping)
                return;
        t->flapping = true;
        t->flap_suppressed = 0;
        t->flap_reported_at = run->ended_at;
        ctx.failure = failure_class_to_string(run->failure);
        log_full(LOG_WARNING, &ctx, "flapping: %d failed starts within %s, the last: %s; "
                 "until a run lasts gatetime, its failures are logged at debug level, "
                 "with one line per flap_window",
                 t->spec.flap_threshold, format_duration(t->spec.flap_window, window, sizeof(window)), what);
        if (t->ctx->observer)
                t->ctx->observer(t, TUNNEL_EVENT_FLAPPING, t->state, t->ctx->userdata);
        if (t->is_carrier)
                share_flapping(t, true);
}

/* A run ended that tunneld did not ask to end: the verdict of policy.h, carried out. */
void finish_run(struct tunnel *t, struct tunnel_run *run)
{
        const struct run_outcome outcome = {
                .ran = run->ran,
                .came_up = t->run_up,
                .passed_gate = t->gate_passed,
                .exit_status = run->exit_status,
                .exit_signal = run->exit_signal,
                .failure = run->failure,
                .ended_by_tunneld = t->kill_class != FAILURE_NONE,
        };
        const struct run_counters counters = { .starts = t->starts, .failures = t->failures,
                                               .ever_passed = t->ever_passed };
        struct verdict v = policy_judge(&t->spec, &counters, &outcome, random_unit());
        char what[1024], in[DURATION_MAX];

        run->failure = v.failure;
        t->total_failures[v.failure]++;
        t->last_run = *run;
        t->restart_pending = true;
        t->failures = v.failures;
        if (v.success)
                t->ever_passed = true;
        describe_run(t, run, what, sizeof(what));
        if (!v.success)
                note_flapping(t, run, what);

        switch (v.kind) {
        case VERDICT_FAILED:
                t->reason = v.reason;
                if (t->spec.max_starts > 0 && strcmp(v.reason, "max_starts reached") == 0)
                        set_state(t, TUNNEL_FAILED, LOG_ERR, run, "%s; not restarting (started %u times, max_starts %d)",
                                  what, t->starts, t->spec.max_starts);
                else
                        set_state(t, TUNNEL_FAILED, LOG_ERR, run, "%s; not restarting (%s)", what, v.why);
                return;
        case VERDICT_BACKOFF:
                t->retry_at = now_mono() + v.delay;
                arm(t, &t->retry_timer, v.delay);
                set_state(t, TUNNEL_BACKOFF, LOG_WARNING, run, "%s; restarting in %s (failed start %u in a row)",
                          what, format_duration(v.delay, in, sizeof(in)), t->failures);
                return;
        case VERDICT_RESTART_AFTER:
                t->retry_at = now_mono() + v.delay;
                arm(t, &t->retry_timer, v.delay);
                set_state(t, TUNNEL_BACKOFF, LOG_WARNING, run, "%s; restarting in %s", what,
                          format_duration(v.delay, in, sizeof(in)));
                return;
        case VERDICT_RESTART_NOW:
                spawn(t, run, what, "restarting now");
                return;
        }
}

void on_child(struct ev_loop *loop, ev_child *w, int revents)
{
        struct tunnel *t = w->data;
        struct tunnel_run run = { .valid = true, .exit_status = -1 };
        int status = w->rstatus;

        (void)revents;
        ev_child_stop(loop, w);
        ev_timer_stop(loop, &t->gate_timer);
        ev_timer_stop(loop, &t->lifetime_timer);
        ev_timer_stop(loop, &t->deadline_timer);
        ev_timer_stop(loop, &t->grace_timer);
        if (t->stderr_fd >= 0) {
                /* ssh's last words come before our verdict, but no more than a bounded read:
                 * a helper that inherited the pipe may never close it */
                (void)lines_read(&t->out, t->stderr_fd, FINAL_READ_MAX, NULL, on_line, t);
                close_stderr(t);
        }
        mux_run_end(t);         /* the master is gone, and its control connection with it */

        if (WIFEXITED(status))
                run.exit_status = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
                run.exit_signal = WTERMSIG(status);
        run.ended_at = now_mono();
        run.ran = run.ended_at - t->started_at;
        run.failure = t->kill_class != FAILURE_NONE ? t->kill_class : t->run_failure;
        run.failure_on_proxy = t->kill_class == FAILURE_NONE && t->run_failure_on_proxy;
        run.pid = t->pid;
        t->pid = 0;
        if (t->probe)
                probe_stop(t->probe);

        if (t->state == TUNNEL_STOPPING) {
                char ran[DURATION_MAX];

                run.requested = true;
                run.failure = FAILURE_NONE;
                run.failure_on_proxy = false;
                t->last_run = run;
                if (t->start_after_stop) {
                        t->start_after_stop = false;
                        spawn(t, &run, "ssh stopped", "starting again");
                        return;
                }
                set_state(t, TUNNEL_STOPPED, LOG_NOTICE, &run, "stopped: ssh ended after %s (%s)",
                          format_duration(run.ran, ran, sizeof(ran)), t->reason ? t->reason : "stop requested");
                return;
        }
        finish_run(t, &run);
}

