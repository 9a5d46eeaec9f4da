/* SPDX-License-Identifier: MIT */
#include "publish.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "supervisor.h"

#define METRICS_RETRY_MIN 1.0           /* seconds: a failed metrics_file write is retried, */
#define METRICS_RETRY_MAX 60.0          /* doubling up to this */
#define METRICS_REFRESH 30.0            /* seconds: the file's *_seconds_total move on without news */

struct publisher {
        struct ev_loop *loop;
        struct supervisor *s;
        bool dirty;                     /* something to publish (STATUS, metrics file) */
        ev_timer publish;               /* STATUS and metrics at most every PUBLISH_DELAY */
        bool ready_sent;
        ev_timer ready_timer;           /* READY=1 anyway at ready_timeout */
        bool metrics_failed;
        double metrics_retry_delay;
        ev_timer metrics_timer;         /* the next write: a retry, or the seconds counters' refresh */
};

/* ---- STATUS ---- */

/* Append "label: a, b (…), c +N more" for tunnels in state. */
static void status_section(const struct supervisor *s, struct buf *b, enum tunnel_state state, const char *label)
{
        const size_t shown_max = 4;
        size_t shown = 0, more = 0, n;
        struct tunnel *const *v = supervisor_tunnels(s, &n);
        double now = now_mono();

        for (size_t i = 0; i < n; i++) {
                struct tunnel_status st;

                if (tunnel_get_state(v[i]) != state)
                        continue;
                tunnel_get_status(v[i], now, &st);
                if (state == TUNNEL_STOPPED && !st.enabled)
                        continue;       /* disabled on purpose: not news */
                if (shown == shown_max) {
                        more++;
                        continue;
                }
                buf_printf(b, "%s%s", shown ? ", " : label, st.name);
                if (state == TUNNEL_BACKOFF) {
                        /* a time, not a countdown: STATUS is published on changes only, and
                         * "retry in 37 s" would go on being shown after the retry */
                        time_t at = time(NULL) + (time_t)(st.retry_in + 0.5);
                        enum failure_class f = st.last_run->valid ? st.last_run->failure : FAILURE_NONE;
                        char when[16];
                        struct tm tm;

                        if (!localtime_r(&at, &tm) || !strftime(when, sizeof(when), "%H:%M:%S", &tm))
                                snprintf(when, sizeof(when), "?");
                        buf_printf(b, " (%s%sretry at %s)", f != FAILURE_NONE ? failure_class_to_string(f) : "",
                                   f != FAILURE_NONE ? ", " : "", when);
                } else if (state == TUNNEL_FAILED && st.last_run->valid && st.last_run->failure != FAILURE_NONE)
                        buf_printf(b, " (%s)", failure_class_to_string(st.last_run->failure));
                else if (state == TUNNEL_QUEUED && st.reason && st.reason[0])
                        buf_printf(b, " (%s)", st.reason);
                shown++;
        }
        if (more)
                buf_printf(b, " +%zu more", more);
}

int publish_status_text(const struct supervisor *s, char **ret)
{
        struct buf b = {0};
        size_t up = 0, enabled = 0, n;
        struct tunnel *const *v = supervisor_tunnels(s, &n);

        /* a scan of every tunnel, but only when STATUS is published (at most every
         * PUBLISH_DELAY) or asked for, never per event */
        for (size_t i = 0; i < n; i++) {
                enabled += tunnel_get_spec(v[i])->enabled;
                up += tunnel_get_state(v[i]) == TUNNEL_UP;
        }
        if (supervisor_reload_error(s))
                buf_printf(&b, "%s; ", supervisor_reload_error(s));
        buf_printf(&b, "%zu/%zu tunnels up", up, enabled);
        status_section(s, &b, TUNNEL_DEGRADED, "; degraded: ");
        status_section(s, &b, TUNNEL_STARTING, "; starting: ");
        status_section(s, &b, TUNNEL_QUEUED, "; queued: ");
        status_section(s, &b, TUNNEL_BACKOFF, "; backoff: ");
        status_section(s, &b, TUNNEL_FAILED, "; failed: ");
        status_section(s, &b, TUNNEL_STOPPED, "; stopped: ");
        status_section(s, &b, TUNNEL_STOPPING, "; stopping: ");
        return buf_steal(&b, ret);
}

/* ---- READY ---- */

static bool settled(const struct tunnel *t)
{
        enum tunnel_state st = tunnel_get_state(t);

        return st == TUNNEL_UP || st == TUNNEL_DEGRADED || st == TUNNEL_FAILED || st == TUNNEL_BACKOFF ||
               st == TUNNEL_STOPPED;
}

/* all-up: every required tunnel is up, or has had its chance and failed a start, or waits
 * for a tunnel it is after that did. */
static bool all_settled(const struct supervisor *s)
{
        size_t n;
        struct tunnel *const *v = supervisor_tunnels(s, &n);

        for (size_t i = 0; i < n; i++) {
                const struct tunnel_spec *spec = tunnel_get_spec(v[i]);
                const char *dep;

                if (!spec->enabled || !spec->required || tunnel_is_held(v[i]) || settled(v[i]))
                        continue;
                if (tunnel_get_state(v[i]) == TUNNEL_QUEUED && (dep = supervisor_waiting_for(s, v[i])) &&
                    settled(supervisor_find(s, dep)))
                        continue;
                return false;
        }
        return true;
}

/* started: every enabled tunnel has launched its first ssh, or waits for a tunnel it is
 * after (which has); not while tunnels wait for a max_parallel_starts slot. */
static bool all_launched(const struct supervisor *s)
{
        size_t n;
        struct tunnel *const *v = supervisor_tunnels(s, &n);

        for (size_t i = 0; i < n; i++)
                if (tunnel_get_spec(v[i])->enabled && !tunnel_is_held(v[i]) && !tunnel_has_started(v[i]) &&
                    tunnel_get_state(v[i]) == TUNNEL_QUEUED && !supervisor_waiting_for(s, v[i]))
                        return false;
        return true;
}

static void send_ready(struct publisher *p)
{
        _cleanup_free_ char *text = NULL;

        p->ready_sent = true;
        p->dirty = false;
        ev_timer_stop(p->loop, &p->ready_timer);
        ev_timer_stop(p->loop, &p->publish);
        if (publish_status_text(p->s, &text) >= 0) {
                notify_ready(text);
                if (supervisor_config(p->s)->ready == READY_ALL_UP)
                        log_notice("ready: %s", text);
        } else
                notify_ready(NULL);
}

static void on_ready_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct publisher *p = w->data;
        const struct config *c = supervisor_config(p->s);
        char t[DURATION_MAX];

        (void)loop;
        (void)revents;
        if (p->ready_sent)
                return;
        log_warning("ready_timeout %s passed before every tunnel was %s: reporting ready anyway",
                    format_duration(c->ready_timeout, t, sizeof(t)), c->ready == READY_ALL_UP ? "up" : "started");
        send_ready(p);
}

/* ---- the metrics file ---- */

static void write_metrics(struct publisher *p)
{
        const char *path = supervisor_config(p->s)->metrics_file;
        _cleanup_free_ char *text = NULL;
        size_t n;
        struct tunnel *const *v = supervisor_tunnels(p->s, &n);
        int r;

        if (!path)
                return;
        r = metrics_render(v, n, &text);
        if (r >= 0)
                r = metrics_write_file(path, text);
        if (r < 0) {
                /* a full disk, say: try again later, not only on the next change (which may
                 * not come for days), and say it once */
                if (!p->metrics_failed)
                        log_warning_errno(r, "cannot write metrics_file %s: %m; retrying", path);
                p->metrics_failed = true;
                p->metrics_retry_delay = p->metrics_retry_delay ? p->metrics_retry_delay * 2 : METRICS_RETRY_MIN;
                if (p->metrics_retry_delay > METRICS_RETRY_MAX)
                        p->metrics_retry_delay = METRICS_RETRY_MAX;
                if (!supervisor_is_shutting_down(p->s)) {
                        ev_timer_stop(p->loop, &p->metrics_timer);     /* set needs it inactive */
                        ev_timer_set(&p->metrics_timer, p->metrics_retry_delay, 0.);
                        ev_timer_start(p->loop, &p->metrics_timer);
                }
                return;
        }
        if (p->metrics_failed)
                log_notice("metrics_file %s written again", path);
        p->metrics_failed = false;
        p->metrics_retry_delay = 0;
        /* node_exporter reads the file as it is: a tunnel up for a day with no change must
         * not show a day of frozen up_seconds_total (an availability of zero) */
        ev_timer_stop(p->loop, &p->metrics_timer);
        if (!supervisor_is_shutting_down(p->s)) {
                ev_timer_set(&p->metrics_timer, METRICS_REFRESH, 0.);
                ev_timer_start(p->loop, &p->metrics_timer);
        }
}

static void on_metrics_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
        (void)loop;
        (void)revents;
        write_metrics(w->data);
}

/* ---- publishing ---- */

/* STATUS and the metrics file, now; then nothing more for PUBLISH_DELAY, whatever happens
 * meanwhile, and once more at its end if anything did (a burst of a thousand starts is
 * published a few times, a lone change at once). */
static void publish(struct publisher *p)
{
        _cleanup_free_ char *text = NULL;

        p->dirty = false;
        if (publish_status_text(p->s, &text) >= 0)
                notify_status(text);
        write_metrics(p);
        ev_timer_set(&p->publish, PUBLISH_DELAY, 0.);
        ev_timer_start(p->loop, &p->publish);
}

static void on_publish(struct ev_loop *loop, ev_timer *w, int revents)
{
        struct publisher *p = w->data;

        (void)loop;
        (void)revents;
        if (p->dirty && !supervisor_is_shutting_down(p->s))
                publish(p);
}

static void on_event(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata)
{
        struct publisher *p = userdata;

        (void)t;
        (void)ev;
        (void)old;
        p->dirty = true;
}

/* Once per loop iteration: READY if it is time, else what is due. */
static void on_idle(void *userdata)
{
        struct publisher *p = userdata;
        const struct config *c = supervisor_config(p->s);

        if (!p->dirty)
                return;
        if (!p->ready_sent && (c->ready == READY_STARTED ? all_launched(p->s) : all_settled(p->s))) {
                send_ready(p);
                write_metrics(p);
                return;
        }
        if (!ev_is_active(&p->publish))
                publish(p);
}

/* STATUS shows the supervisor's reload error until a reload is applied. */
static void on_reloaded(const char *error, void *userdata)
{
        struct publisher *p = userdata;

        (void)error;
        p->dirty = true;
        /* before the first READY (all-up still waiting) a reload must not claim readiness */
        if (p->ready_sent)
                send_ready(p);
}

/* Shutdown's end: the metrics file must not go on claiming tunnels are up. */
static void on_stopped(void *userdata)
{
        struct publisher *p = userdata;

        ev_timer_stop(p->loop, &p->metrics_timer);
        write_metrics(p);
}

int publisher_new(struct ev_loop *loop, struct supervisor *s, struct publisher **ret)
{
        struct publisher *p = calloc(1, sizeof(*p));
        const struct config *c = supervisor_config(s);
        int r;

        if (!p)
                return -ENOMEM;
        p->loop = loop;
        p->s = s;
        p->dirty = true;        /* the tunnels started before we listened */
        ev_timer_init(&p->ready_timer, on_ready_timeout, 0., 0.);
        ev_timer_init(&p->publish, on_publish, 0., 0.);
        ev_timer_init(&p->metrics_timer, on_metrics_timer, 0., 0.);
        p->ready_timer.data = p->publish.data = p->metrics_timer.data = p;
        r = supervisor_add_listener(s, &(struct supervisor_listener){
                .event = on_event, .idle = on_idle, .reloaded = on_reloaded, .stopped = on_stopped, .userdata = p });
        if (r < 0) {
                free(p);
                return r;
        }
        /* READY=1 goes out from a loop iteration (after the control socket is up) once every
         * tunnel launched its ssh, or for all-up once every tunnel settled; or at ready_timeout. */
        if (c->ready_timeout > 0) {
                ev_timer_set(&p->ready_timer, c->ready_timeout, 0.);
                ev_timer_start(p->loop, &p->ready_timer);
        }
        *ret = p;
        return 0;
}

struct publisher *publisher_free(struct publisher *p)
{
        if (!p)
                return NULL;
        ev_timer_stop(p->loop, &p->ready_timer);
        ev_timer_stop(p->loop, &p->publish);
        ev_timer_stop(p->loop, &p->metrics_timer);
        free(p);
        return NULL;
}
