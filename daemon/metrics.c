/* SPDX-License-Identifier: MIT */
#include "metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "safe_dir.h"
#include "util.h"

static void header(struct buf *b, const char *name, const char *type, const char *help)
{
        buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family with one sample per tunnel, its value from the snapshot. */
typedef double (*value_of_t)(const struct tunnel_status *s);
struct family;

static double up(const struct tunnel_status *s) { return s->state == TUNNEL_UP; }
static double enabled(const struct tunnel_status *s) { return s->enabled; }
static double flapping(const struct tunnel_status *s) { return s->flapping; }
static double starts(const struct tunnel_status *s) { return (double)s->starts; }
static double restarts(const struct tunnel_status *s) { return (double)s->restarts; }
static double prohibited(const struct tunnel_status *s) { return (double)s->prohibited; }
static double uptime(const struct tunnel_status *s) { return s->uptime >= 0 ? s->uptime : 0; }
static double state_since(const struct tunnel_status *s) { return s->state_since_wall; }
static double up_seconds(const struct tunnel_status *s) { return s->avail.up_seconds; }
static double down_seconds(const struct tunnel_status *s) { return s->avail.down_seconds; }
static double outages(const struct tunnel_status *s) { return (double)s->avail.outages; }
static double longest_outage(const struct tunnel_status *s) { return s->avail.longest_outage; }

/* The samples of one family for the tunnels of v[0..n). */
typedef void (*render_t)(struct buf *b, const struct family *fam, const struct tunnel_status *v, size_t n);

struct family {
        const char *name, *type, *help;
        bool seconds;                   /* 3 decimals, else an integer */
        value_of_t value;               /* one sample per tunnel… */
        render_t render;                /* …or these */
};

static void render_values(struct buf *b, const struct family *fam, const struct tunnel_status *v, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                buf_printf(b, "%s{tunnel=\"%s\"} ", fam->name, v[i].name);
                buf_printf(b, fam->seconds ? "%.3f" : "%.0f", fam->value(&v[i]));
                buf_puts(b, "\n");
        }
}

static void render_states(struct buf *b, const struct family *fam, const struct tunnel_status *v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                for (int st = 0; st < _TUNNEL_STATE_MAX; st++)
                        buf_printf(b, "%s{tunnel=\"%s\",state=\"%s\"} %d\n", fam->name, v[i].name,
                                   tunnel_state_to_string(st), v[i].state == (enum tunnel_state)st);
}

static void render_failures(struct buf *b, const struct family *fam, const struct tunnel_status *v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                for (int c = FAILURE_NONE + 1; c < _FAILURE_MAX; c++)
                        buf_printf(b, "%s{tunnel=\"%s\",class=\"%s\"} %lu\n", fam->name, v[i].name,
                                   failure_class_to_string(c), v[i].failures[c]);
}

/* A label value: backslash, quote and newline escaped (a forward may name a socket path). */
static void label_value(struct buf *b, const char *v)
{
        for (const char *p = v; *p; p++) {
                if (*p == '\\' || *p == '"')
                        buf_printf(b, "\\%c", *p);
                else if (*p == '\n')
                        buf_puts(b, "\\n");
                else
                        buf_append(b, p, 1);
        }
}

/* Its ssh's own TCP connection (tunnel_path_status): one sample per tunnel whose ssh runs
 * and whose connection is known; the value by the family's name. */
static void render_path(struct buf *b, const struct family *fam, const struct tunnel_status *v, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                struct tcp_diag_info p;
                double x;

                if (tunnel_path_status(&v[i], &p) < 0)
                        continue;
                if (strstr(fam->name, "rtt"))
                        x = p.rtt_us / 1e6;
                else if (strstr(fam->name, "sent"))
                        x = (double)(p.has_bytes_sent ? p.bytes_sent : p.bytes_acked);
                else if (strstr(fam->name, "received"))
                        x = (double)p.bytes_received;
                else
                        x = p.total_retrans;
                buf_printf(b, "%s{tunnel=\"%s\"} ", fam->name, v[i].name);
                buf_printf(b, fam->seconds ? "%.6f\n" : "%.0f\n", x);
        }
}

static void render_forwards(struct buf *b, const struct family *fam, const struct tunnel_status *v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k < v[i].n_forwards; k++) {
                        const struct forward_status *f = tunnel_forward_status(&v[i], k);

                        buf_printf(b, "%s{tunnel=\"%s\",kind=\"%c\",forward=\"", fam->name, v[i].name, f->kind);
                        label_value(b, f->spec);
                        buf_printf(b, "\"} %d\n", f->state == FORWARD_OPEN);
                }
}

/* Tunnels with alternatives: which one serves (-1: none), how often it failed over. */
static void render_alternatives(struct buf *b, const struct family *fam, const struct tunnel_status *v, size_t n)
{
        bool gauge = strstr(fam->name, "failovers") == NULL;

        for (size_t i = 0; i < n; i++) {
                if (tunnel_alt_count(&v[i]) == 0)
                        continue;
                buf_printf(b, "%s{tunnel=\"%s\"} ", fam->name, v[i].name);
                if (gauge)
                        buf_printf(b, "%zd\n", tunnel_alt_serving(&v[i]));
                else
                        buf_printf(b, "%lu\n", tunnel_alt_failovers(&v[i]));
        }
}

static const struct family families[] = {
        { "tunneld_tunnel_up", "gauge", "1 if the tunnel is up: ssh authenticated and every forward in place.", false,
          up, render_values },
        { "tunneld_tunnel_state", "gauge", "1 for the state the tunnel is in, 0 for the others.", false, NULL,
          render_states },
        { "tunneld_tunnel_enabled", "gauge", "1 if the tunnel is enabled in the configuration.", false, enabled,
          render_values },
        { "tunneld_tunnel_flapping", "gauge", "1 while the tunnel fails flap_threshold times within flap_window.",
          false, flapping, render_values },
        { "tunneld_tunnel_starts_total", "counter", "ssh processes started for the tunnel.", false, starts,
          render_values },
        { "tunneld_tunnel_restarts_total", "counter", "Starts after an ssh exit tunneld did not ask for.", false,
          restarts, render_values },
        { "tunneld_tunnel_prohibited_total", "counter",
          "Connections through the tunnel the server refused (\"administratively prohibited\").", false, prohibited,
          render_values },
        { "tunneld_tunnel_failures_total", "counter", "ssh runs that ended on their own, by failure class.", false,
          NULL, render_failures },
        { "tunneld_tunnel_uptime_seconds", "gauge", "How long the current ssh has run (0 if none runs).", true,
          uptime, render_values },
        /* A file is rewritten on changes only: a timestamp stays right between rewrites. */
        { "tunneld_tunnel_state_since_timestamp_seconds", "gauge",
          "Unix time at which the tunnel entered its current state.", true, state_since, render_values },
        /* availability over any window: rate(up) / (rate(up) + rate(down)) */
        { "tunneld_tunnel_up_seconds_total", "counter", "Seconds the tunnel has been up since it was configured.",
          true, up_seconds, render_values },
        { "tunneld_tunnel_down_seconds_total", "counter",
          "Seconds the tunnel was wanted but not up (connecting, backoff, failed, degraded, restarting).", true,
          down_seconds, render_values },
        { "tunneld_tunnel_outages_total", "counter", "Times the tunnel went down after being up.", false, outages,
          render_values },
        { "tunneld_tunnel_longest_outage_seconds", "gauge",
          "The longest outage since the tunnel was configured, one going on included.", true, longest_outage,
          render_values },
        { "tunneld_tunnel_rtt_seconds", "gauge",
          "The smoothed round-trip time of its ssh's TCP connection to the server (the kernel's).", true, NULL,
          render_path },
        { "tunneld_tunnel_sent_bytes_total", "counter",
          "Bytes its current ssh sent to the server (from 0 for each new ssh).", false, NULL, render_path },
        { "tunneld_tunnel_received_bytes_total", "counter",
          "Bytes its current ssh received from the server (from 0 for each new ssh).", false, NULL, render_path },
        { "tunneld_tunnel_retransmitted_segments_total", "counter",
          "TCP segments its current ssh's connection retransmitted (from 0 for each new ssh).", false, NULL,
          render_path },
        { "tunneld_tunnel_alternative", "gauge",
          "Which destination serves a tunnel with alternatives: 0 its own host, N its N-th alternative, -1 none.",
          false, NULL, render_alternatives },
        { "tunneld_tunnel_failovers_total", "counter",
          "Times a tunnel with alternatives moved to the next one because the one in use failed.", false, NULL,
          render_alternatives },
        { "tunneld_forward_up", "gauge",
          "1 if ssh answered that the forward is open, 0 if it failed or no answer yet.", false, NULL,
          render_forwards },
};

static void family_header(struct buf *b, const struct family *fam)
{
        header(b, fam->name, fam->type, fam->help);
}

/* Tunnel names are [A-Za-z0-9_.-]: nothing to escape in a label value. */
int metrics_render(struct tunnel *const *tunnels, size_t n, char **ret)
{
        _cleanup_free_ struct tunnel_status *v = calloc(n + 1, sizeof(*v));
        double now = now_mono();
        struct buf b = {0};

        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                tunnel_get_status(tunnels[i], now, &v[i]);
        header(&b, "tunneld_tunnels", "gauge", "Tunnels in the configuration.");
        buf_printf(&b, "tunneld_tunnels %zu\n", n);
        for (size_t f = 0; f < ELEMENTSOF(families); f++) {
                family_header(&b, &families[f]);
                families[f].render(&b, &families[f], v, n);
        }
        return buf_steal(&b, ret);
}

/* Tunnels read per window: each sample is read when its window is written. */
#define WINDOW 64

bool metrics_render_part(struct metrics_cursor *cur, struct tunnel *const *tunnels, size_t n, struct buf *out,
                         size_t budget)
{
        struct tunnel_status v[WINDOW];
        size_t start = out->len;
        double now = now_mono();

        if (!cur->begun) {
                header(out, "tunneld_tunnels", "gauge", "Tunnels in the configuration.");
                buf_printf(out, "tunneld_tunnels %zu\n", n);
                cur->begun = true;
        }
        while (cur->family < ELEMENTSOF(families) && out->len - start < budget) {
                const struct family *fam = &families[cur->family];
                size_t k = 0;

                if (!cur->in_family) {
                        family_header(out, fam);
                        cur->in_family = true;
                        cur->tunnel = 0;
                }
                for (; k < WINDOW && cur->tunnel + k < n; k++)
                        tunnel_get_status(tunnels[cur->tunnel + k], now, &v[k]);
                fam->render(out, fam, v, k);
                cur->tunnel += k;
                if (cur->tunnel >= n) {
                        cur->family++;
                        cur->in_family = false;
                        cur->tunnel = 0;
                }
        }
        return cur->family >= ELEMENTSOF(families);
}

/* The file's directory, opened once (again only if its path leads elsewhere now, as when
 * it was made anew): every write goes through this fd. Its owner and mode were judged
 * where they can be named, with the setting's line (config_check.c). */
static struct safe_dir metrics_dir = { .fd = -1 };

int metrics_write_file(const char *path, const char *text)
{
        _cleanup_free_ char *dir = NULL;
        const char *slash = strrchr(path, '/');

        if (!slash || !slash[1])
                return -EINVAL;         /* validate_absolute_path() let it through? */
        dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
        if (!dir)
                return -ENOMEM;
        if (metrics_dir.fd < 0 || strcmp(metrics_dir.path, dir) != 0 || !safe_dir_at_path(&metrics_dir)) {
                char why[256];
                int r;

                safe_dir_close(&metrics_dir);
                r = safe_dir_open(dir, SAFE_DIR_ANY, &metrics_dir, why, sizeof(why));
                if (r < 0)
                        return r;
        }
        return safe_dir_write(&metrics_dir, slash + 1, text, 0644);     /* node_exporter reads it, whatever our umask */
}
