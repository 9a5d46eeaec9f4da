/* SPDX-License-Identifier: MIT */
/* tunnelctl_show: status replies as a person reads them: the table, and with -l every
 * forward and the reason of each tunnel under its row. */
#include "tunnelctl_show.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static bool use_color;

void show_set_color(bool on)
{
        use_color = on;
}

static const char *state_color(const char *state)
{
        if (!use_color)
                return "";
        if (strcmp(state, "up") == 0)
                return "\033[32m";
        if (strcmp(state, "failed") == 0)
                return "\033[1;31m";
        if (strcmp(state, "backoff") == 0 || strcmp(state, "degraded") == 0)
                return "\033[33m";
        if (strcmp(state, "starting") == 0 || strcmp(state, "stopping") == 0)
                return "\033[36m";
        return "\033[2m";
}

static char *duration_or_dash(const struct json *v, const char *prefix)
{
        char d[DURATION_MAX];
        char *s = NULL;

        if (!v || v->type != JSON_NUMBER)
                return strdup("-");
        if (asprintf(&s, "%s%s", prefix, format_duration(v->number < 0 ? 0 : v->number, d, sizeof(d))) < 0)
                return NULL;
        return s;
}

static char *last_exit_text(const struct json *t)
{
        const struct json *e = json_get(t, "last_exit");
        const char *sig, *fail;
        char ran[DURATION_MAX];
        struct buf b = {0};
        char *s = NULL;

        if (!e || e->type != JSON_OBJECT)
                return strdup("-");
        sig = json_get_string(e, "signal");
        if (sig)
                buf_printf(&b, "SIG%s", sig);
        else
                buf_printf(&b, "status %.0f", json_get_number(e, "status", -1));
        buf_printf(&b, " after %s", format_duration(json_get_number(e, "ran", 0), ran, sizeof(ran)));
        fail = json_get_string(e, "failure");
        if (json_get_bool(e, "requested", false))
                buf_printf(&b, " (stopped)");
        else if (fail)
                buf_printf(&b, " (%s)", fail);
        return buf_steal(&b, &s) < 0 ? NULL : s;
}

/* Every forward of t: "L spec" / "R spec" / "D spec" / "R port N" (the port the server
 * chose for -R 0:…, from "34433 for remote forward to host:80"). */
static char **forwards_of(const struct json *t)
{
        static const struct { const char *key, *flag; } kinds[] = { { "local", "L" }, { "remote", "R" }, { "dynamic", "D" } };
        const struct json *f = json_get(t, "forwards"), *allocated = json_get(f, "allocated");
        char **v = NULL;

        for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
                const struct json *list = json_get(f, kinds[k].key);
                for (size_t i = 0; list && list->type == JSON_ARRAY && i < list->n; i++) {
                        char *s = NULL;
                        if (list->items[i]->type == JSON_STRING && asprintf(&s, "%s %s", kinds[k].flag,
                                                                           list->items[i]->string) >= 0) {
                                (void)strv_push(&v, s);
                                free(s);
                        }
                }
        }
        for (size_t i = 0; allocated && allocated->type == JSON_ARRAY && i < allocated->n; i++) {
                char *s = NULL;
                if (allocated->items[i]->type == JSON_STRING &&
                    asprintf(&s, "R port %.*s", (int)strcspn(allocated->items[i]->string, " "),
                             allocated->items[i]->string) >= 0) {
                        (void)strv_push(&v, s);
                        free(s);
                }
        }
        return v;
}

/* The AVAIL cell: the share of wanted time it was up, "-" before any was counted; never
 * rounded up to 100 % (99.996 % is "99.99%": an outage must not disappear). */
static char *avail_text(const struct json *t)
{
        const struct json *ratio = json_get(json_get(t, "availability"), "ratio");
        char *s = NULL;
        double pct;

        if (!ratio || ratio->type != JSON_NUMBER)
                return strdup("-");
        pct = floor(ratio->number * 10000) / 100;
        if (ratio->number >= 1)
                return strdup("100%");
        return asprintf(&s, "%.2f%%", pct) < 0 ? NULL : s;
}

/* -l: "availability: 99.20% (up 2 h, down 58 s; 3 outages, longest 40 s, last 9 s 5 min ago)" */
static void show_availability(const struct json *t)
{
        const struct json *a = json_get(t, "availability");
        _cleanup_free_ char *pct = avail_text(t);
        char up[DURATION_MAX], down[DURATION_MAX], last[DURATION_MAX], ago[DURATION_MAX];
        double outages = json_get_number(a, "outages", 0), current = json_get_number(a, "current_outage", -1);
        double last_s = json_get_number(a, "last_outage", -1);

        if (!a || a->type != JSON_OBJECT)
                return;
        printf("    availability: %s (up %s, down %s", pct ? pct : "?",
               format_duration(json_get_number(a, "up_seconds", 0), up, sizeof(up)),
               format_duration(json_get_number(a, "down_seconds", 0), down, sizeof(down)));
        if (outages > 0) {
                char longest[DURATION_MAX];

                printf("; %.0f outage%s, longest %s", outages, outages == 1 ? "" : "s",
                       format_duration(json_get_number(a, "longest_outage", 0), longest, sizeof(longest)));
        }
        if (current >= 0)
                printf(", down for %s now", format_duration(current, last, sizeof(last)));
        else if (last_s >= 0)
                printf(", last %s, %s ago", format_duration(last_s, last, sizeof(last)),
                       format_duration(json_get_number(a, "last_outage_ago", 0), ago, sizeof(ago)));
        printf(")\n");
}

/* -l with multiplex: each forward as ssh answered ("L spec: open", "R spec: failed: why",
 * "R 0:…: open, port 40123"). False if there are none to show. */
static bool show_forward_states(const struct json *t)
{
        const struct json *list = json_get(t, "forward_states");

        if (!list || list->type != JSON_ARRAY || list->n == 0)
                return false;
        for (size_t i = 0; i < list->n; i++) {
                const struct json *f = list->items[i];
                const char *kind = json_get_string(f, "kind"), *spec = json_get_string(f, "forward");
                const char *state = json_get_string(f, "state"), *reason = json_get_string(f, "reason");
                double port = json_get_number(f, "allocated_port", 0);

                printf("    %s %s: %s", kind ? kind : "?", spec ? spec : "?", state ? state : "?");
                if (reason)
                        printf(": %s", reason);
                if (port > 0)
                        printf(", port %.0f", port);
                printf("\n");
        }
        return true;
}

/* -l: its ssh's own TCP connection, as the kernel sees it. */
static void show_path(const struct json *t)
{
        const struct json *p = json_get(t, "path");
        char rtt[DURATION_MAX];

        if (!p || p->type != JSON_OBJECT)
                return;
        printf("    path: %s → %s, rtt %s, %.0f bytes sent, %.0f received, %.0f retransmitted segments\n",
               json_get_string(p, "local") ? json_get_string(p, "local") : "?",
               json_get_string(p, "remote") ? json_get_string(p, "remote") : "?",
               format_duration(json_get_number(p, "rtt", 0), rtt, sizeof(rtt)), json_get_number(p, "bytes_sent", 0),
               json_get_number(p, "bytes_received", 0), json_get_number(p, "retransmissions", 0));
}

/* -l: which alternative serves, and why each other one does not (its last failure). */
static void show_alternatives(const struct json *t)
{
        const struct json *list = json_get(t, "alternatives");
        char ago[DURATION_MAX], in[DURATION_MAX];

        if (!list || list->type != JSON_ARRAY)
                return;
        printf("    alternatives (%.0f failover%s):\n", json_get_number(t, "failovers", 0),
               json_get_number(t, "failovers", 0) == 1 ? "" : "s");
        for (size_t i = 0; i < list->n; i++) {
                const struct json *a = list->items[i];
                const char *failure = json_get_string(a, "last_failure");
                double port = json_get_number(a, "port", 0), failed = json_get_number(a, "failed_ago", -1);
                double retry = json_get_number(a, "retry_in", -1);

                printf("      %.0f %s", json_get_number(a, "index", (double)i),
                       json_get_string(a, "host") ? json_get_string(a, "host") : "?");
                if (port > 0)
                        printf(":%.0f", port);
                if (json_get_bool(a, "serving", false))
                        printf(": serving");
                else if (failure)
                        printf(": %s, %s ago", failure, format_duration(failed, ago, sizeof(ago)));
                else
                        printf(": standing by");
                printf(" (%.0f start%s", json_get_number(a, "starts", 0), json_get_number(a, "starts", 0) == 1 ? "" : "s");
                if (retry >= 0)
                        printf("; tried again in %s", format_duration(retry, in, sizeof(in)));
                printf(")\n");
        }
}

/* The table's cell: the first three forwards and how many more (-l lists them all). */
#define FORWARDS_SHOWN 3
static char *forwards_text(const struct json *t)
{
        _cleanup_strv_free_ char **v = forwards_of(t);
        size_t n = strv_length(v);
        struct buf b = {0};
        char *s = NULL;

        for (size_t i = 0; i < n && i < FORWARDS_SHOWN; i++)
                buf_printf(&b, "%s%s", i ? ", " : "", v[i]);
        if (n > FORWARDS_SHOWN)
                buf_printf(&b, ", +%zu more", n - FORWARDS_SHOWN);
        if (!n)
                buf_puts(&b, "-");
        return buf_steal(&b, &s) < 0 ? NULL : s;
}

#define COLUMNS 9
static const char *const headers[COLUMNS] = {
        "NAME", "STATE", "PID", "UPTIME", "AVAIL", "STARTS", "LAST EXIT", "NEXT RETRY", "FORWARDS",
};

void show_table(const struct json *tunnels, bool long_view)
{
        size_t n = tunnels->n, width[COLUMNS];
        char ***cells = calloc(n, sizeof(char **));

        if (!cells)
                return;
        for (int c = 0; c < COLUMNS; c++)
                width[c] = strlen(headers[c]);
        for (size_t i = 0; i < n; i++) {
                const struct json *t = tunnels->items[i];
                const struct json *pid = json_get(t, "pid");
                const char *state = json_get_string(t, "state");
                char *row[COLUMNS] = {0};

                cells[i] = calloc(COLUMNS, sizeof(char *));
                if (!cells[i])
                        continue;
                row[0] = strdup(json_get_string(t, "name") ? json_get_string(t, "name") : "?");
                if (state && strcmp(state, "stopped") == 0 && !json_get_bool(t, "enabled", true))
                        row[1] = strdup("disabled");
                else
                        row[1] = strdup(state ? state : "?");
                if (pid && pid->type == JSON_NUMBER)
                        (void)!asprintf(&row[2], "%.0f", pid->number);
                else
                        row[2] = strdup("-");
                row[3] = duration_or_dash(json_get(t, "uptime"), "");
                row[4] = avail_text(t);
                if (json_get_number(t, "restarts", 0) > 0)
                        (void)!asprintf(&row[5], "%.0f (%.0f)", json_get_number(t, "starts", 0),
                                        json_get_number(t, "restarts", 0));
                else
                        (void)!asprintf(&row[5], "%.0f", json_get_number(t, "starts", 0));
                row[6] = last_exit_text(t);
                row[7] = duration_or_dash(json_get(t, "retry_in"), "in ");
                row[8] = forwards_text(t);
                for (int c = 0; c < COLUMNS; c++) {
                        cells[i][c] = row[c] ? row[c] : strdup("?");
                        if (cells[i][c] && strlen(cells[i][c]) > width[c])
                                width[c] = strlen(cells[i][c]);
                }
        }
        for (int c = 0; c < COLUMNS; c++) {
                if (c + 1 < COLUMNS)
                        printf("%-*s  ", (int)width[c], headers[c]);
                else
                        printf("%s\n", headers[c]);
        }
        for (size_t i = 0; i < n; i++) {
                if (!cells[i])
                        continue;
                for (int c = 0; c < COLUMNS; c++) {
                        const char *v = cells[i][c] ? cells[i][c] : "?";
                        if (c == 1 && use_color)
                                printf("%s%-*s\033[0m  ", state_color(v), (int)width[c], v);
                        else if (c + 1 < COLUMNS)
                                printf("%-*s  ", (int)width[c], v);
                        else
                                printf("%s\n", v);
                        free(cells[i][c]);
                }
                free(cells[i]);
                if (long_view) {
                        _cleanup_strv_free_ char **v = forwards_of(tunnels->items[i]);
                        const char *reason = json_get_string(tunnels->items[i], "reason");
                        const char *connection = json_get_string(tunnels->items[i], "connection");

                        if (reason)
                                printf("    why: %s\n", reason);
                        if (connection)
                                printf("    shared connection: %s\n", connection);
                        show_availability(tunnels->items[i]);
                        show_path(tunnels->items[i]);
                        show_alternatives(tunnels->items[i]);
                        if (!show_forward_states(tunnels->items[i]))
                                for (size_t k = 0; v && v[k]; k++)
                                        printf("    %s\n", v[k]);
                }
        }
        free(cells);
}

