/* SPDX-License-Identifier: MIT */
/* ctl_stream: a big reply made a part at a time (status and events of many tunnels,
 * metrics). */
#include "ctl_stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json_write.h"
#include "metrics.h"
#include "publish.h"
#include "tunnel_json.h"

#ifndef TUNNELD_VERSION
#define TUNNELD_VERSION "unknown"
#endif

struct ctl_stream {
        struct supervisor *sup;
        bool metrics;                   /* else the status of tunnels */
        bool with_daemon;
        bool begun;
        struct json_writer w;           /* its buffer is the caller's out, set at each part */
        char **names;                   /* the named tunnels; NULL: every one */
        size_t *hints;                  /* where each name was last seen */
        size_t next;                    /* into names, or into the supervisor's set */
        char *next_name;                /* every tunnel: the name expected at next */
        struct metrics_cursor cursor;
};

struct ctl_stream *ctl_stream_free(struct ctl_stream *s)
{
        if (!s)
                return NULL;
        strv_free(s->names);
        free(s->hints);
        free(s->next_name);
        free(s);
        return NULL;
}

static int stream_new(struct supervisor *sup, struct ctl_stream **ret)
{
        struct ctl_stream *s = calloc(1, sizeof(*s));

        if (!s)
                return -ENOMEM;
        s->sup = sup;
        *ret = s;
        return 0;
}

int ctl_stream_tunnels(struct supervisor *sup, bool with_daemon, char **names, size_t *hints,
                       struct ctl_stream **ret)
{
        int r = stream_new(sup, ret);

        if (r < 0) {
                strv_free(names);
                free(hints);
                return r;
        }
        (*ret)->with_daemon = with_daemon;
        (*ret)->names = names;
        (*ret)->hints = hints;
        return 0;
}

int ctl_stream_metrics(struct supervisor *sup, struct ctl_stream **ret)
{
        int r = stream_new(sup, ret);

        if (r >= 0)
                (*ret)->metrics = true;
        return r;
}

/* Where the cursor of every tunnel is now: at the tunnel it was at, wherever a reload moved
 * it (one scan, once per reload), or where it was if that tunnel is gone. */
static size_t cursor_place(const struct ctl_stream *s, struct tunnel *const *v, size_t n, size_t at)
{
        if (!s->next_name || (at < n && strcmp(tunnel_get_name(v[at]), s->next_name) == 0))
                return at < n ? at : n;
        for (size_t i = 0; i < n; i++)
                if (strcmp(tunnel_get_name(v[i]), s->next_name) == 0)
                        return i;
        return at < n ? at : n;
}

static void cursor_note(struct ctl_stream *s, struct tunnel *const *v, size_t n, size_t at)
{
        free(s->next_name);
        s->next_name = at < n ? strdup(tunnel_get_name(v[at])) : NULL;
}

/* The named tunnel i, or NULL if a reload removed it. */
static struct tunnel *named(struct ctl_stream *s, struct tunnel *const *v, size_t n, size_t i)
{
        struct tunnel *t;

        if (s->hints[i] < n && strcmp(tunnel_get_name(v[s->hints[i]]), s->names[i]) == 0)
                return v[s->hints[i]];
        t = supervisor_find(s->sup, s->names[i]);
        for (size_t k = 0; t && k < n; k++)
                if (v[k] == t)
                        s->hints[i] = k;
        return t;
}

static void begin_tunnels(struct ctl_stream *s)
{
        json_begin_object(&s->w);
        json_field_bool(&s->w, "ok", true);
        if (s->with_daemon) {
                _cleanup_free_ char *status = NULL;

                json_field_string(&s->w, "version", TUNNELD_VERSION);
                json_field_int(&s->w, "pid", getpid());
                json_field_seconds(&s->w, "uptime", now_mono() - supervisor_started_at(s->sup));
                json_field_string(&s->w, "config", supervisor_config(s->sup)->path);
                if (publish_status_text(s->sup, &status) >= 0)
                        json_field_string(&s->w, "status", status);
        }
        json_write_key(&s->w, "tunnels");
        json_begin_array(&s->w);
}

static int next_tunnels(struct ctl_stream *s, struct buf *out)
{
        size_t n, start = out->len;
        struct tunnel *const *v = supervisor_tunnels(s->sup, &n);
        size_t end = s->names ? strv_length(s->names) : n;
        double now = now_mono();

        if (!s->names)
                s->next = cursor_place(s, v, n, s->next);
        while (s->next < end && out->len - start < CTL_STREAM_PART) {
                struct tunnel *t = s->names ? named(s, v, n, s->next) : v[s->next];
                struct tunnel_status st;

                s->next++;
                if (!t)
                        continue;
                tunnel_get_status(t, now, &st);
                tunnel_json_write(&s->w, &st);
        }
        if (!s->names)
                cursor_note(s, v, n, s->next);
        if (s->next < end)
                return 0;
        json_end_array(&s->w);
        json_end_object(&s->w);
        buf_puts(out, "\n");
        return 1;
}

static int next_metrics(struct ctl_stream *s, struct buf *out)
{
        size_t n;
        struct tunnel *const *v = supervisor_tunnels(s->sup, &n);
        struct buf text = {0};
        bool done;

        if (s->cursor.in_family)
                s->cursor.tunnel = cursor_place(s, v, n, s->cursor.tunnel);
        done = metrics_render_part(&s->cursor, v, n, &text, CTL_STREAM_PART);
        cursor_note(s, v, n, s->cursor.tunnel);
        if (text.oom)
                out->oom = true;
        else if (text.len)
                json_write_string_part(&s->w, text.data);
        buf_free(&text);
        if (!done)
                return 0;
        json_write_string_end(&s->w);
        json_end_object(&s->w);
        buf_puts(out, "\n");
        return 1;
}

int ctl_stream_next(struct ctl_stream *s, struct buf *out)
{
        s->w.b = out;
        if (!s->begun) {
                s->w = json_writer_init(out);
                s->begun = true;
                if (!s->metrics)
                        begin_tunnels(s);
                else {
                        json_begin_object(&s->w);
                        json_field_bool(&s->w, "ok", true);
                        json_write_key(&s->w, "metrics");
                        json_write_string_begin(&s->w);
                }
        }
        return s->metrics ? next_metrics(s, out) : next_tunnels(s, out);
}
