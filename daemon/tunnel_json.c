/* SPDX-License-Identifier: MIT */
#include "tunnel_json.h"

static void write_pid(struct json_writer *w, const char *key, pid_t pid)
{
        json_write_key(w, key);
        if (pid > 0)
                json_write_int(w, pid);
        else
                json_write_null(w);
}

static void write_seconds_or_null(struct json_writer *w, const char *key, double v)
{
        json_write_key(w, key);
        if (v >= 0)
                json_write_seconds(w, v);
        else
                json_write_null(w);
}

static void write_availability(struct json_writer *w, const struct availability_info *a)
{
        json_write_key(w, "availability");
        json_begin_object(w);
        json_field_seconds(w, "up_seconds", a->up_seconds);
        json_field_seconds(w, "down_seconds", a->down_seconds);
        json_write_key(w, "ratio");
        if (a->ratio >= 0)
                json_write_number(w, a->ratio);
        else
                json_write_null(w);
        json_field_uint(w, "outages", a->outages);
        write_seconds_or_null(w, "current_outage", a->current_outage);
        json_field_seconds(w, "longest_outage", a->longest_outage);
        write_seconds_or_null(w, "last_outage", a->last_outage);
        write_seconds_or_null(w, "last_outage_ago", a->last_outage_ago);
        json_end_object(w);
}

/* Each forward as ssh answered for it ([] while no ssh runs). */
static void write_forward_states(struct json_writer *w, const struct tunnel_status *s)
{
        json_write_key(w, "forward_states");
        json_begin_array(w);
        for (size_t i = 0; i < s->n_forwards; i++) {
                const struct forward_status *f = tunnel_forward_status(s, i);
                char kind[2] = { f->kind, '\0' };

                json_begin_object(w);
                json_field_string(w, "kind", kind);
                json_field_string(w, "forward", f->spec);
                json_field_string(w, "state", conn_forward_state_to_string(f->state));
                json_field_string(w, "reason", f->reason);
                json_write_key(w, "allocated_port");
                if (f->allocated_port > 0)
                        json_write_int(w, f->allocated_port);
                else
                        json_write_null(w);
                json_end_object(w);
        }
        json_end_array(w);
}

/* The ports the server chose for -R 0 forwards, as ssh words it: "PORT for remote forward
 * to HOST:PORT". */
static void write_allocated(struct json_writer *w, const struct tunnel_status *s)
{
        json_write_key(w, "allocated");
        json_begin_array(w);
        for (size_t i = 0; i < s->n_forwards; i++) {
                const struct forward_status *f = tunnel_forward_status(s, i);
                struct forward fw;
                char text[FORWARD_HOST_MAX + 64];

                if (f->kind != 'R' || f->allocated_port <= 0 || forward_parse(FORWARD_REMOTE, f->spec, &fw))
                        continue;
                snprintf(text, sizeof(text), "%d for remote forward to %s:%d", f->allocated_port, fw.connect.host,
                         fw.connect.port);
                json_write_string(w, text);
        }
        json_end_array(w);
}

static void write_last_run(struct json_writer *w, const struct tunnel_status *s)
{
        const struct conn_run *run = s->last_run;
        char sig[16];

        json_write_key(w, "last_exit");
        if (!run->valid) {
                json_write_null(w);
                return;
        }
        json_begin_object(w);
        json_write_key(w, "status");
        if (run->exit_status >= 0)
                json_write_int(w, run->exit_status);
        else
                json_write_null(w);
        json_field_string(w, "signal", run->exit_signal > 0 ? signal_to_name(run->exit_signal, sig, sizeof(sig)) : NULL);
        json_field_seconds(w, "ran", run->ran);
        json_field_seconds(w, "ago", s->last_run_ago);
        json_field_bool(w, "requested", run->requested);
        json_field_string(w, "failure", run->failure != FAILURE_NONE ? failure_class_to_string(run->failure) : NULL);
        json_end_object(w);
}

/* "path": its ssh's own TCP connection as the kernel sees it, or null. */
static void write_path(struct json_writer *w, const struct tunnel_status *s)
{
        struct tcp_diag_info p;
        char local[ENDPOINT_MAX], remote[ENDPOINT_MAX];

        json_write_key(w, "path");
        if (tunnel_path_status(s, &p) < 0) {
                json_write_null(w);
                return;
        }
        json_begin_object(w);
        json_field_string(w, "local", endpoint_format(&p.local, local, sizeof(local)));
        json_field_string(w, "remote", endpoint_format(&p.remote, remote, sizeof(remote)));
        json_field_string(w, "tcp_state", tcp_diag_state_name(p.state));
        json_field_seconds(w, "rtt", p.rtt_us / 1e6);
        json_field_uint(w, "bytes_sent", p.has_bytes_sent ? p.bytes_sent : p.bytes_acked);
        json_field_uint(w, "bytes_received", p.bytes_received);
        json_field_uint(w, "retransmissions", p.total_retrans);
        json_field_uint(w, "unacknowledged", p.unacked);
        json_end_object(w);
}

static void write_port(struct json_writer *w, int port)
{
        json_write_key(w, "port");
        if (port > 0)
                json_write_int(w, port);
        else
                json_write_null(w);
}

/* With alternatives: "alternative" (the one that serves, or null), "failovers", and
 * "alternatives", each with why it does not serve (its last failure). */
static void write_alternatives(struct json_writer *w, const struct tunnel_status *s)
{
        size_t n = tunnel_alt_count(s);
        ssize_t serving = tunnel_alt_serving(s);
        double now = now_mono();
        struct conn_alt_info a;

        if (n == 0)
                return;
        json_write_key(w, "alternative");
        if (serving >= 0) {
                tunnel_alt_status(s, (size_t)serving, now, &a);
                json_begin_object(w);
                json_field_uint(w, "index", (unsigned long)serving);
                json_field_string(w, "host", a.host);
                write_port(w, a.port);
                json_end_object(w);
        } else
                json_write_null(w);
        json_field_uint(w, "failovers", tunnel_alt_failovers(s));
        json_write_key(w, "alternatives");
        json_begin_array(w);
        for (size_t i = 0; i < n; i++) {
                tunnel_alt_status(s, i, now, &a);
                json_begin_object(w);
                json_field_uint(w, "index", i);
                json_field_string(w, "host", a.host);
                write_port(w, a.port);
                json_field_bool(w, "serving", (ssize_t)i == serving);
                json_field_string(w, "last_failure", a.last_failure != FAILURE_NONE
                                                             ? failure_class_to_string(a.last_failure) : NULL);
                write_seconds_or_null(w, "failed_ago", a.failed_ago);
                json_field_uint(w, "starts", a.starts);
                write_seconds_or_null(w, "retry_in", a.retry_in);
                json_end_object(w);
        }
        json_end_array(w);
}

void tunnel_json_write(struct json_writer *w, const struct tunnel_status *s)
{
        json_begin_object(w);
        json_field_string(w, "name", s->name);
        json_field_string(w, "state", tunnel_state_to_string(s->state));
        json_field_bool(w, "enabled", s->enabled);
        json_field_bool(w, "held", s->held);
        json_field_bool(w, "flapping", s->flapping);
        json_field_string(w, "reason", s->reason);
        json_field_string(w, "host", s->host);
        write_pid(w, "pid", s->pid);
        write_pid(w, "next_pid", s->next_pid);
        json_field_seconds(w, "since", s->since);
        write_seconds_or_null(w, "uptime", s->uptime);
        write_seconds_or_null(w, "retry_in", s->retry_in >= 0 ? s->retry_in : s->state == TUNNEL_BACKOFF ? 0 : -1);
        json_field_uint(w, "starts", s->starts);
        json_field_uint(w, "restarts", s->restarts);
        json_field_uint(w, "consecutive_failures", s->consecutive_failures);
        json_field_uint(w, "prohibited", s->prohibited);
        json_write_key(w, "failures");
        json_begin_object(w);
        for (int c = FAILURE_NONE + 1; c < _FAILURE_MAX; c++)
                if (s->failures[c])
                        json_field_uint(w, failure_class_to_string(c), s->failures[c]);
        json_end_object(w);
        write_last_run(w, s);
        write_availability(w, &s->avail);
        json_write_key(w, "forwards");
        json_begin_object(w);
        json_field_strv(w, "local", s->local_forwards);
        json_field_strv(w, "remote", s->remote_forwards);
        json_field_strv(w, "dynamic", s->dynamic_forwards);
        write_allocated(w, s);
        json_end_object(w);
        json_field_bool(w, "multiplex", true);    /* every tunnel's ssh is a master: kept for scripts */
        json_field_string(w, "connection", s->connection);
        write_forward_states(w, s);
        write_path(w, s);
        write_alternatives(w, s);
        json_field_seconds(w, "gatetime", s->gatetime);
        json_field_string(w, "restart", restart_policy_to_string(s->restart));
        json_end_object(w);
}

void tunnel_json_write_event(struct json_writer *w, const struct tunnel_status *s, enum tunnel_event ev,
                             enum tunnel_state from)
{
        static const char *const names[] = {
                [TUNNEL_EVENT_STATE] = "state",
                [TUNNEL_EVENT_FLAPPING] = "flapping",
                [TUNNEL_EVENT_SSH] = "ssh",
                [TUNNEL_EVENT_SSH_FAILED] = "ssh",      /* with the new ssh's failure */
        };
        const struct conn_run *run = s->last_run;
        /* the class of the run that just ended: into backoff or failed, or restarted at once */
        bool ran = from == TUNNEL_STARTING || from == TUNNEL_UP || from == TUNNEL_DEGRADED;
        bool after_exit = run->valid && !run->requested && run->failure != FAILURE_NONE &&
                          (ev == TUNNEL_EVENT_SSH_FAILED || s->state == TUNNEL_BACKOFF || s->state == TUNNEL_FAILED ||
                           (ran && (s->state == TUNNEL_STARTING || s->state == TUNNEL_QUEUED)));

        json_begin_object(w);
        json_field_string(w, "event", names[ev]);
        json_field_string(w, "tunnel", s->name);
        json_field_string(w, "from", tunnel_state_to_string(from));
        json_field_string(w, "to", tunnel_state_to_string(s->state));
        write_pid(w, "pid", s->pid > 0 ? s->pid : run->valid ? run->pid : 0);
        json_field_string(w, "failure", after_exit ? failure_class_to_string(run->failure) : NULL);
        json_field_string(w, "reason", s->reason);
        json_field_seconds(w, "time", s->state_since_wall);
        json_end_object(w);
}
