/* SPDX-License-Identifier: MIT */
#include "sleepwatch.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <systemd/sd-bus.h>
#include <time.h>

#include "log.h"

#define LOGIND "org.freedesktop.login1"

struct sleepwatch {
        struct ev_loop *loop;
        sd_bus *bus;
        sd_bus_slot *match;
        ev_io io;
        ev_timer timer;
        sleepwatch_cb_t cb;
        void *userdata;
};

static void disconnect(struct sleepwatch *w)
{
        ev_io_stop(w->loop, &w->io);
        ev_timer_stop(w->loop, &w->timer);
        w->match = sd_bus_slot_unref(w->match);
        w->bus = sd_bus_flush_close_unref(w->bus);
}

/* What the bus waits for now: its fd's events and its next deadline. */
static void rearm(struct sleepwatch *w)
{
        int fd = sd_bus_get_fd(w->bus), events = sd_bus_get_events(w->bus);
        uint64_t until;
        int want;

        if (fd < 0 || events < 0) {
                log_warning_errno(fd < 0 ? fd : events,
                                  "the system bus failed (%m): a resume from sleep is no longer noticed");
                disconnect(w);
                return;
        }
        want = ((events & POLLIN) ? EV_READ : 0) | ((events & POLLOUT) ? EV_WRITE : 0);
        if (!ev_is_active(&w->io) || w->io.fd != fd || (w->io.events & (EV_READ | EV_WRITE)) != want) {
                ev_io_stop(w->loop, &w->io);
                ev_io_set(&w->io, fd, want);
                if (want)
                        ev_io_start(w->loop, &w->io);
        }
        ev_timer_stop(w->loop, &w->timer);
        if (sd_bus_get_timeout(w->bus, &until) > 0 && until != UINT64_MAX) {
                struct timespec ts;
                uint64_t now;

                clock_gettime(CLOCK_MONOTONIC, &ts);
                now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
                ev_timer_set(&w->timer, until > now ? (double)(until - now) / 1e6 : 0., 0.);
                ev_timer_start(w->loop, &w->timer);
        }
}

/* A bounded turn of the bus's work; what is left is due at once (its timeout is 0). */
static void turn(struct sleepwatch *w)
{
        for (int i = 0; i < SLEEPWATCH_TURNS; i++) {
                int r = sd_bus_process(w->bus, NULL);

                if (r < 0) {
                        log_warning_errno(r, "lost the system bus (%m): a resume from sleep is no longer noticed");
                        disconnect(w);
                        return;
                }
                if (r == 0)
                        break;
        }
        rearm(w);
}

static void on_io(struct ev_loop *loop, ev_io *io, int revents)
{
        (void)loop;
        (void)revents;
        turn(io->data);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
        (void)loop;
        (void)revents;
        turn(t->data);
}

static int on_prepare_for_sleep(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        struct sleepwatch *w = userdata;
        int sleeping, r;

        (void)error;
        r = sd_bus_message_read(m, "b", &sleeping);
        if (r < 0) {
                log_debug("PrepareForSleep without its boolean: ignored");
                return 0;
        }
        log_debug("logind: %s", sleeping ? "going to sleep" : "resumed from sleep");
        w->cb(sleeping, w->userdata);
        return 0;
}

static int on_match_added(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        const sd_bus_error *e = sd_bus_message_get_error(m);

        (void)userdata;
        (void)error;
        if (e)
                log_warning("cannot watch logind on the system bus (%s): a resume from sleep is not noticed",
                            e->message ? e->message : e->name);
        return 0;
}

static int on_has_owner(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        int has = 0;

        (void)userdata;
        (void)error;
        if (sd_bus_message_is_method_error(m, NULL) || sd_bus_message_read(m, "b", &has) < 0 || !has)
                log_notice("logind is not on the system bus: a resume from sleep is not noticed until it is");
        else
                log_debug("watching logind for sleep and resume");
        return 0;
}

int sleepwatch_new(struct ev_loop *loop, sleepwatch_cb_t cb, void *userdata, struct sleepwatch **ret)
{
        struct sleepwatch *w = calloc(1, sizeof(*w));
        int r;

        if (!w)
                return -ENOMEM;
        w->loop = loop;
        w->cb = cb;
        w->userdata = userdata;
        ev_init(&w->io, on_io);
        ev_init(&w->timer, on_timer);
        w->io.data = w->timer.data = w;
        r = sd_bus_open_system_with_description(&w->bus, "tunneld-sleepwatch");
        if (r < 0) {
                free(w);
                return log_full_errno(LOG_NOTICE, r, NULL, "no system bus (%m): a resume from sleep is not noticed");
        }
        /* both asynchronous: nothing here waits for the bus */
        r = sd_bus_match_signal_async(w->bus, &w->match, LOGIND, "/org/freedesktop/login1",
                                      LOGIND ".Manager", "PrepareForSleep", on_prepare_for_sleep, on_match_added, w);
        if (r >= 0)
                r = sd_bus_call_method_async(w->bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                             "org.freedesktop.DBus", "NameHasOwner", on_has_owner, w, "s", LOGIND);
        if (r < 0) {
                disconnect(w);
                free(w);
                return log_full_errno(LOG_NOTICE, r, NULL,
                                      "cannot use the system bus (%m): a resume from sleep is not noticed");
        }
        rearm(w);
        if (!w->bus) {
                free(w);
                return -ENOTCONN;
        }
        *ret = w;
        return 0;
}

struct sleepwatch *sleepwatch_free(struct sleepwatch *w)
{
        if (!w)
                return NULL;
        disconnect(w);
        free(w);
        return NULL;
}
