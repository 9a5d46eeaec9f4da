/* SPDX-License-Identifier: MIT */
/* tunnel_output: ssh's stderr, a line at a time: the cues that a tunnel is up, the
 * failure classes, and ssh's chatter logged under the tunnel's name, rate limited. */
#include "tunnel_internal.h"

#include <string.h>
#include <unistd.h>

#include "proc_net.h"

/* ssh's plain lines (not its errors, never tunneld's own): at most this many per window at
 * their level, the rest at debug level with a count, so a client hammering a dead forward
 * target cannot flood the journal. */
#define CHATTER_LINES 50
#define CHATTER_WINDOW 10.0

/* ssh's plain lines, rate limited (its errors and cues never are). */
static void log_chatter(struct tunnel *t, int prio, const char *line)
{
        struct log_ctx ctx = ctx_of(t);
        double now = now_mono();

        if (now - t->chatter_since >= CHATTER_WINDOW) {
                if (t->chatter_dropped)
                        log_full(LOG_NOTICE, &ctx, "%lu lines of ssh's output went to the debug level "
                                 "(more than %d in %.0f s)", t->chatter_dropped, CHATTER_LINES, CHATTER_WINDOW);
                t->chatter_since = now;
                t->chatter_lines = 0;
                t->chatter_dropped = 0;
        }
        if (t->flapping || ++t->chatter_lines > CHATTER_LINES) {
                t->chatter_dropped += !t->flapping;
                t->flap_suppressed += t->flapping;
                prio = LOG_DEBUG;
        }
        log_full(prio, &ctx, "ssh: %s", line);
}

static void note_failure_line(struct tunnel *t, enum failure_class class, const char *line)
{
        struct log_ctx ctx = ctx_of(t);

        /* sshd said why it refused a -R: not a stale session but its policy */
        if (class == FAILURE_REMOTE_FORWARD && t->forward_refused_by_policy)
                class = FAILURE_FORWARD_DENIED;
        if (t->spec.multiplex && (class == FAILURE_LOCAL_FORWARD || class == FAILURE_REMOTE_FORWARD ||
                                  class == FAILURE_FORWARD_DENIED)) {
                /* a forward's own reply judges it; the run goes on (a half-bound listener is
                 * failed here: its reply will say OK) */
                log_chatter(t, LOG_INFO, line);
                if (class == FAILURE_LOCAL_FORWARD)
                        mux_note_bind_failure(t, line);
                return;
        }
        /* the first specific cause wins over a later generic "Connection closed" */
        if (!(failure_class_is_generic(class) && t->run_failure != FAILURE_NONE &&
              !failure_class_is_generic(t->run_failure))) {
                t->run_failure = class;
                /* before the destination answered, through a proxy: the jump host's line */
                t->run_failure_on_proxy = t->via_proxy && !t->banner_seen;
        }
        ctx.failure = failure_class_to_string(class);
        log_full(t->flapping ? LOG_DEBUG : LOG_WARNING, &ctx, "ssh: %s", line);
        t->flap_suppressed += t->flapping;

        if (class == FAILURE_LOCAL_FORWARD)
                t->local_forward_failed = true;
        else if (class == FAILURE_REMOTE_FORWARD || class == FAILURE_FORWARD_DENIED)
                t->remote_replies++;
        else
                return;
        t->forward_failed = true;
        maybe_up(t);
}

static void handle_line(struct tunnel *t, const char *line)
{
        struct log_ctx ctx = ctx_of(t);
        enum failure_class class;

        switch (ssh_line_parse(line, &class)) {
        case SSH_LINE_DEBUG:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                return;
        case SSH_LINE_PROXY:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                t->via_proxy = true;
                return;
        case SSH_LINE_BANNER:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                t->banner_seen = true;
                return;
        case SSH_LINE_FORWARD_REFUSED_BY_POLICY:
                log_chatter(t, LOG_INFO, line);
                t->forward_refused_by_policy = true;
                return;
        case SSH_LINE_REMOTE_FORWARD_OK:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                t->remote_replies++;
                t->remote_confirmed++;
                maybe_up(t);
                return;
        case SSH_LINE_ALLOCATED:
                /* the port the server chose for a -R 0:…: status and metrics show it (with
                 * multiplex, its reply says it) */
                log_chatter(t, LOG_INFO, line);
                if (!t->spec.multiplex)
                        (void)strv_push(&t->allocated, line + 15);
                return;
        case SSH_LINE_SESSION:
                log_full(LOG_DEBUG, &ctx, "ssh: %s", line);
                t->session = true;
                maybe_up(t);
                return;
        case SSH_LINE_AUTHENTICATED:
                log_full(t->flapping ? LOG_DEBUG : LOG_INFO, &ctx, "ssh: %s", line);
                t->flap_suppressed += t->flapping;
                if (t->hops_authenticated < t->hops) {
                        /* a jump host's: after the last one, what fails is the destination */
                        t->banner_seen = ++t->hops_authenticated == t->hops;
                        return;
                }
                t->authenticated = t->banner_seen = true;
                set_connecting(t, false);
                maybe_up(t);
                return;
        case SSH_LINE_PROHIBITED:
                /* one connection through a forward, refused by the server's policy */
                t->prohibited++;
                log_chatter(t, LOG_WARNING, line);
                return;
        case SSH_LINE_FAILURE:
                note_failure_line(t, class, line);
                return;
        case SSH_LINE_PLAIN:
                log_chatter(t, LOG_INFO, line);
                return;
        }
}

void on_line(const char *line, void *userdata)
{
        handle_line(userdata, line);
}

void close_stderr(struct tunnel *t)
{
        lines_flush(&t->out, on_line, t);
        ev_io_stop(t->ctx->loop, &t->stderr_watcher);
        close(t->stderr_fd);
        t->stderr_fd = -1;
}

void on_stderr(struct ev_loop *loop, ev_io *w, int revents)
{
        struct tunnel *t = w->data;

        (void)loop;
        (void)revents;
        /* one chunk per wakeup while ssh lives: fair to every other tunnel */
        if (lines_read(&t->out, t->stderr_fd, 0, NULL, on_line, t))
                close_stderr(t);
}

bool ssh_connected(const struct tunnel *t)
{
        if (t->banner_seen || t->authenticated)
                return true;
        /* VERBOSE (multiplex) says nothing before authentication: without a jump host, an
         * established TCP connection of the master's own does */
        return t->spec.multiplex && !t->via_proxy && t->pid > 0 && proc_net_established(t->pid, NULL, NULL) > 0;
}
