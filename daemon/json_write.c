/* SPDX-License-Identifier: MIT */
#include "json_write.h"

#include <math.h>
#include <stdlib.h>

/* Before a value or a key: the comma its level needs, unless it follows its key. */
static void separate(struct json_writer *w)
{
        if (w->after_key) {
                w->after_key = false;
                return;
        }
        if (w->comma[w->depth])
                buf_puts(w->b, ",");
        w->comma[w->depth] = true;
}

static void open_level(struct json_writer *w, const char *bracket)
{
        separate(w);
        buf_puts(w->b, bracket);
        if (w->depth >= JSON_WRITE_DEPTH)
                abort();
        w->comma[++w->depth] = false;
}

static void close_level(struct json_writer *w, const char *bracket)
{
        if (w->depth == 0)
                abort();
        w->depth--;
        buf_puts(w->b, bracket);
}

void json_begin_object(struct json_writer *w) { open_level(w, "{"); }
void json_end_object(struct json_writer *w) { close_level(w, "}"); }
void json_begin_array(struct json_writer *w) { open_level(w, "["); }
void json_end_array(struct json_writer *w) { close_level(w, "]"); }

void json_write_key(struct json_writer *w, const char *key)
{
        separate(w);
        buf_json_string(w->b, key);
        buf_puts(w->b, ":");
        w->after_key = true;
}

void json_write_string(struct json_writer *w, const char *s)
{
        separate(w);
        if (s)
                buf_json_string(w->b, s);
        else
                buf_puts(w->b, "null");
}

void json_write_string_begin(struct json_writer *w)
{
        separate(w);
        buf_puts(w->b, "\"");
}

void json_write_string_part(struct json_writer *w, const char *s)
{
        struct buf quoted = {0};

        /* buf_json_string's escapes, without its quotes */
        buf_json_string(&quoted, s);
        if (quoted.oom)
                w->b->oom = true;
        else
                buf_append(w->b, quoted.data + 1, quoted.len - 2);
        buf_free(&quoted);
}

void json_write_string_end(struct json_writer *w)
{
        buf_puts(w->b, "\"");
}

void json_write_bool(struct json_writer *w, bool v)
{
        separate(w);
        buf_puts(w->b, v ? "true" : "false");
}

void json_write_null(struct json_writer *w)
{
        separate(w);
        buf_puts(w->b, "null");
}

void json_write_int(struct json_writer *w, long long v)
{
        separate(w);
        buf_printf(w->b, "%lld", v);
}

void json_write_uint(struct json_writer *w, unsigned long long v)
{
        separate(w);
        buf_printf(w->b, "%llu", v);
}

void json_write_seconds(struct json_writer *w, double v)
{
        separate(w);
        if (isfinite(v))
                buf_printf(w->b, "%.3f", v);
        else
                buf_puts(w->b, "null");
}

void json_write_number(struct json_writer *w, double v)
{
        separate(w);
        if (!isfinite(v))
                buf_puts(w->b, "null");
        else if (v == floor(v) && fabs(v) < 1e15)
                buf_printf(w->b, "%.0f", v);
        else
                buf_printf(w->b, "%.15g", v);   /* what a person and a parser read back */
}

void json_write_strv(struct json_writer *w, char *const *v)
{
        json_begin_array(w);
        for (size_t i = 0; v && v[i]; i++)
                json_write_string(w, v[i]);
        json_end_array(w);
}

void json_write_value(struct json_writer *w, const struct json *v)
{
        switch (v->type) {
        case JSON_NULL:
                json_write_null(w);
                return;
        case JSON_BOOL:
                json_write_bool(w, v->boolean);
                return;
        case JSON_NUMBER:
                json_write_number(w, v->number);
                return;
        case JSON_STRING:
                json_write_string(w, v->string);
                return;
        case JSON_ARRAY:
                json_begin_array(w);
                for (size_t i = 0; i < v->n; i++)
                        json_write_value(w, v->items[i]);
                json_end_array(w);
                return;
        case JSON_OBJECT:
                json_begin_object(w);
                for (size_t i = 0; i < v->n; i++) {
                        json_write_key(w, v->keys[i]);
                        json_write_value(w, v->items[i]);
                }
                json_end_object(w);
                return;
        }
}
