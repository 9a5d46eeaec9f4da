/* SPDX-License-Identifier: MIT */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static void header(struct buf *b, const char *name, const char *type, const char *help)
{
        buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Tunnel names are [A-Za-z0-9_.-]: nothing to escape in a label value. */
int metrics_render(const struct supervisor *s, char **ret)
{
        size_t n = supervisor_count(s);
        double now = now_mono();
        struct timespec wall;
        double mono_to_wall;
        struct buf b = {0};

        clock_gettime(CLOCK_REALTIME, &wall);
        mono_to_wall = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9 - now;

        header(&b, "tunneld_tunnels", "gauge", "Tunnels in the configuration.");
        buf_printf(&b, "tunneld_tunnels %zu\n", n);

        header(&b, "tunneld_tunnel_up", "gauge", "1 if the tunnel is up: ssh authenticated and every remote forward accepted.");
        for (size_t i = 0; i < n; i++) {
                const struct tunnel *t = supervisor_get(s, i);
                buf_printf(&b, "tunneld_tunnel_up{tunnel=\"%s\"} %d\n", t->spec.name, t->state == TUNNEL_UP);
        }

        header(&b, "tunneld_tunnel_state", "gauge", "1 for the state the tunnel is in, 0 for the others.");
        for (size_t i = 0; i < n; i++) {
                const struct tunnel *t = supervisor_get(s, i);
                for (int st = 0; st < _TUNNEL_STATE_MAX; st++)
                        buf_printf(&b, "tunneld_tunnel_state{tunnel=\"%s\",state=\"%s\"} %d\n", t->spec.name,
                                   tunnel_state_to_string(st), t->state == (enum tunnel_state)st);
        }

        header(&b, "tunneld_tunnel_enabled", "gauge", "1 if the tunnel is enabled in the configuration.");
        for (size_t i = 0; i < n; i++) {
                const struct tunnel *t = supervisor_get(s, i);
                buf_printf(&b, "tunneld_tunnel_enabled{tunnel=\"%s\"} %d\n", t->spec.name, t->spec.enabled);
        }

        header(&b, "tunneld_tunnel_flapping", "gauge", "1 while the tunnel fails flap_threshold times within flap_window.");
        for (size_t i = 0; i < n; i++) {
                const struct tunnel *t = supervisor_get(s, i);
                buf_printf(&b, "tunneld_tunnel_flapping{tunnel=\"%s\"} %d\n", t->spec.name, t->flapping);
        }

        header(&b, "tunneld_tunnel_starts_total", "counter", "ssh processes started for the tunnel.");
        for (size_t i = 0; i < n; i++) {
                const struct tunnel *t = supervisor_get(s, i);
                buf_printf(&b, "tunneld_tunnel_starts_total{tunnel=\"%s\"} %lu\n", t->spec.name, t->total_starts);
        }

        header(&b, "tunneld_tunnel_restarts_total", "counter", "Starts after an ssh exit tunneld did not ask for.");
        for (size_t i = 0; i < n; i++) {
                const struct tunnel *t = supervisor_get(s, i);
                buf_printf(&b, "tunneld_tunnel_restarts_total{tunnel=\"%s\"} %lu\n", t->spec.name, t->restarts);
        }

        header(&b, "tunneld_tunnel_prohibited_total", "counter",
               "Connections through the tunnel the server refused (\"administratively prohibited\").");
        for (size_t i = 0; i < n; i++) {
                const struct tunnel *t = supervisor_get(s, i);
                buf_printf(&b, "tunneld_tunnel_prohibited_total{tunnel=\"%s\"} %lu\n", t->spec.name, t->prohibited);
        }

        header(&b, "tunneld_tunnel_failures_total", "counter", "ssh runs that ended on their own, by failure class.");
        for (size_t i = 0; i < n; i++) {
                const struct tunnel *t = supervisor_get(s, i);
                for (int c = FAILURE_NONE + 1; c < _FAILURE_MAX; c++)
                        buf_printf(&b, "tunneld_tunnel_failures_total{tunnel=\"%s\",class=\"%s\"} %lu\n", t->spec.name,
                                   failure_class_to_string(c), t->total_failures[c]);
        }

        header(&b, "tunneld_tunnel_uptime_seconds", "gauge", "How long the current ssh has run (0 if none runs).");
        for (size_t i = 0; i < n; i++) {
                const struct tunnel *t = supervisor_get(s, i);
                buf_printf(&b, "tunneld_tunnel_uptime_seconds{tunnel=\"%s\"} %.3f\n", t->spec.name,
                           t->pid > 0 ? now - t->started_at : 0.0);
        }

        /* A file is rewritten on changes only: a timestamp stays right between rewrites. */
        header(&b, "tunneld_tunnel_state_since_timestamp_seconds", "gauge",
               "Unix time at which the tunnel entered its current state.");
        for (size_t i = 0; i < n; i++) {
                const struct tunnel *t = supervisor_get(s, i);
                buf_printf(&b, "tunneld_tunnel_state_since_timestamp_seconds{tunnel=\"%s\"} %.3f\n", t->spec.name,
                           mono_to_wall + t->state_since);
        }
        return buf_steal(&b, ret);
}

int metrics_write_file(const char *path, const char *text)
{
        return write_file_atomic(path, text, 0644);     /* node_exporter reads it, whatever our umask */
}
