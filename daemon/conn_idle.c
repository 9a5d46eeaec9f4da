/* SPDX-License-Identifier: MIT */
/* conn_idle: a server's idle limit. sshd's UnusedConnectionTimeout closes a connection
 * that has had no open channel for that long: forward listeners do not count, so every
 * idle tunnel qualifies, closed every few seconds and logged as a failed start until it
 * flapped. Here:
 *
 * - a run that came up, was up for IDLE_MIN_UP at least but not for gatetime, and that the
 *   server closed while no session of tunneld's was open on it is taken for the server's
 *   idle limit: not a failure (no failed start counted, no flapping), reconnected at once
 *   (restart_delay apart), with a line that says what the server did (a run that lasted
 *   gatetime is a good run anyway, and judged as one);
 * - from then on, only on that connection, tunneld holds a session open through its
 *   master (keepalive.h: the sftp subsystem), which the server counts as in use, so that
 *   it is not closed again;
 * - a server that will not run that session (no sftp subsystem, a forced command that
 *   exits, MaxSessions) is said once, and the idle closes are reconnected each time;
 * - a close while the session was open is not an idle limit: a failure as any other, and
 *   no session is held from then on. */
#include "conn_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "keepalive.h"

/* UnusedConnectionTimeout counts whole seconds: a close sooner than this after up is
 * something else. */
#define IDLE_MIN_UP 1.0
/* A session that ends sooner than this after it opened was not let run (a forced
 * command, no subsystem): not tried again on this connection. */
#define SESSION_MIN_LIFE 10.0
/* The session's control connection may end a moment before ssh's exit is reaped, when the
 * server closes the connection: it still counts as held if it ended this recently. */
#define HELD_GRACE 2.0
/* A session that ended after a while (a ChannelTimeout, its process killed) is opened
 * again this much later, if ssh still runs. */
#define REOPEN_DELAY 1.0
#define SUBSYSTEM "sftp"

struct conn_idle {
        struct conn *c;
        bool limit_seen;                /* the server closed this connection when it was idle */
        bool refused;                   /* it would not run the session: reconnect each time */
        bool said_held;
        unsigned long closes;           /* idle closes reconnected */
        struct keepalive *ka;
        const struct master *ka_master; /* the master it is open through */
        double opened_at, ended_at;     /* the session's */
        ev_timer timer;                 /* open: SESSION_MIN_LIFE to say it holds; ended: reopen */
};

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents);

static struct conn_idle *idle_of(struct conn *c)
{
        if (!c->idle) {
                c->idle = calloc(1, sizeof(*c->idle));
                if (!c->idle)
                        return NULL;
                c->idle->c = c;
                ev_timer_init(&c->idle->timer, on_timer, 0., 0.);
                c->idle->timer.data = c->idle;
        }
        return c->idle;
}

static void drop_session(struct conn_idle *ci)
{
        ev_timer_stop(ci->c->ctx->loop, &ci->timer);
        if (keepalive_is_open(ci->ka))
                ci->ended_at = now_mono();
        ci->ka = keepalive_free(ci->ka);
        ci->ka_master = NULL;
}

/* The master opened the session; whether the server runs it shows in how long it lasts
 * (a subsystem refused or a forced command that exits ends it at once). */
static void on_opened(void *userdata)
{
        struct conn_idle *ci = userdata;

        ci->opened_at = now_mono();
        ci->ended_at = 0;
        ev_timer_set(&ci->timer, SESSION_MIN_LIFE, 0.);
        ev_timer_start(ci->c->ctx->loop, &ci->timer);
}

static void on_ended(bool opened, int exit_status, const char *why, void *userdata)
{
        struct conn_idle *ci = userdata;
        struct conn *c = ci->c;
        struct log_ctx ctx = conn_log_ctx(c);
        double now = now_mono();
        char status[48] = "";

        ci->ka = keepalive_free(ci->ka);
        ci->ka_master = NULL;
        ev_timer_stop(c->ctx->loop, &ci->timer);
        if (opened)
                ci->ended_at = now;
        /* ssh ends (its exit judges the run), or is being stopped: nothing to do here */
        if (!c->master || !conn_is_running(c) || master_is_stopping(c->master))
                return;
        if (opened && now - ci->opened_at >= SESSION_MIN_LIFE) {
                log_full(LOG_INFO, &ctx, "the session that keeps the connection in use ended (%s): opened again",
                         why);
                ev_timer_set(&ci->timer, REOPEN_DELAY, 0.);
                ev_timer_start(c->ctx->loop, &ci->timer);
                return;
        }
        if (exit_status >= 0)
                snprintf(status, sizeof(status), ", exit status %d: a forced command?", exit_status);
        ci->refused = true;
        log_full(LOG_WARNING, &ctx, "the server would not run the session that keeps the connection in use (%s%s%s): "
                 "it will close the connection whenever no channel is open, and tunneld reconnects each time, "
                 "without counting a failure", opened ? "it ended at once: " : "", why, status);
}

static const struct keepalive_ops session_ops = {
        .opened = on_opened,
        .ended = on_ended,
};

static void open_session(struct conn_idle *ci)
{
        struct conn *c = ci->c;
        int r;

        drop_session(ci);
        r = keepalive_new(c->ctx->loop, master_control_path(c->master), SUBSYSTEM, &session_ops, ci, &ci->ka);
        if (r < 0) {
                struct log_ctx ctx = conn_log_ctx(c);

                ci->ka = NULL;
                log_full_errno(LOG_WARNING, r, &ctx, "cannot open a session to keep the connection in use: %m");
                return;
        }
        ci->ka_master = c->master;
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct conn_idle *ci = w->data;
        struct conn *c = ci->c;

        (void)loop;
        (void)revents;
        if (keepalive_is_open(ci->ka)) {
                struct log_ctx ctx = conn_log_ctx(c);

                /* it has lasted: the server runs it */
                log_full(ci->said_held ? LOG_DEBUG : LOG_NOTICE, &ctx, "holding a session open on ssh's connection "
                         "(the %s subsystem), so that the server's idle limit does not close it", SUBSYSTEM);
                ci->said_held = true;
                return;
        }
        if (!ci->ka && c->master && conn_is_running(c) && master_is_ready(c->master) && !ci->refused)
                open_session(ci);
}

void conn_idle_on_ready(struct conn *c)
{
        struct conn_idle *ci = c->idle;

        if (!ci || !ci->limit_seen)
                return;
        /* reconnected every few seconds: ssh's own lines (its login, the server's close)
         * to the debug level; tunneld's say what happens */
        if (ci->refused && ci->closes > 3)
                master_set_quiet(c->master, true);
        if (ci->refused || (ci->ka && ci->ka_master == c->master))
                return;
        open_session(ci);               /* a new master's: the old one's goes */
}

void conn_idle_stop(struct conn *c)
{
        if (c->idle)
                drop_session(c->idle);
}

/* Was the session held when the run ended (or a moment before, its end seen first)? */
static bool session_held(const struct conn_idle *ci, double ended_at)
{
        return ci && (keepalive_is_open(ci->ka) || (ci->ended_at > 0 && ended_at - ci->ended_at < HELD_GRACE));
}

bool conn_idle_closed(struct conn *c, struct conn_run *run)
{
        struct conn_idle *ci = c->idle;
        bool held = session_held(ci, run->ended_at);
        struct log_ctx ctx = conn_log_ctx(c);
        char up[DURATION_MAX], what[256];
        double up_for = run->ended_at - c->run.up_since;

        if (ci)
                drop_session(ci);
        if (run->failure != FAILURE_CLOSED || run->failure_on_proxy || run->exit_signal > 0 || !c->run.came_up ||
            c->run.kill_class != FAILURE_NONE || conn_is_handing_over(c) || up_for < IDLE_MIN_UP)
                return false;
        /* a run that passed gatetime is a good run whatever closed it: judged as one (its
         * flapping ends, its backoff resets) */
        if (c->run.gate_passed)
                return false;
        format_duration(up_for, up, sizeof(up));
        if (held) {
                if (ci->limit_seen)
                        log_full(LOG_NOTICE, &ctx, "the server closed the connection after %s up although a session "
                                 "was open on it: not an idle limit; no session is held from now on", up);
                ci->limit_seen = false;
                return false;
        }
        if (!(ci = idle_of(c)))
                return false;
        ci->closes++;
        if (!ci->limit_seen)
                log_full(LOG_NOTICE, &ctx, "the server closed the connection after %s up with no channel open: "
                         "an idle limit, it seems (sshd's UnusedConnectionTimeout; a server that restarts "
                         "looks the same), not a failure; reconnecting, and "
                         "holding a session open on it (the %s subsystem) so that the server counts it in use", up,
                         SUBSYSTEM);
        else
                log_full(ci->closes <= 3 ? LOG_INFO : LOG_DEBUG, &ctx, "the server closed the idle connection again "
                         "after %s up (%lu times so far): reconnecting", up, ci->closes);
        ci->limit_seen = true;

        /* not a failure: counted as a restart, never as a failed start */
        run->failure = FAILURE_NONE;
        c->last_run = *run;
        conn_handover_abort(c, "stops: the server closed the connection");
        snprintf(what, sizeof(what), "ssh ended: the server closed the idle connection after %s up", up);
        if (run->ran < c->spec.sup.restart_delay) {
                char in[DURATION_MAX];
                double delay = c->spec.sup.restart_delay - run->ran;

                c->run.retry_at = now_mono() + delay;
                conn_arm(c, &c->retry_timer, delay);
                conn_set_state(c, CONN_BACKOFF, LOG_INFO, run, "%s; reconnecting in %s", what,
                               format_duration(delay, in, sizeof(in)));
        } else
                conn_spawn(c, run, what, "reconnecting now");
        return true;
}

void conn_idle_free(struct conn *c)
{
        if (!c->idle)
                return;
        drop_session(c->idle);
        free(c->idle);
        c->idle = NULL;
}
