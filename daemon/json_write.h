/* SPDX-License-Identifier: MIT */
#pragma once

/* json_write: the one JSON writer of tunneld, tunnelctl and the tests' helpers: objects,
 * arrays, keys and values, with the commas kept by the writer (nothing counted by hand)
 * and strings escaped into valid UTF-8 (buf_json_string). Errors stick to the buffer
 * (buf.oom); nesting deeper than JSON_WRITE_DEPTH is a programming error and aborts. */

#include <stdbool.h>
#include <stdint.h>

#include "json.h"
#include "util.h"

#define JSON_WRITE_DEPTH 16

struct json_writer {
        struct buf *b;
        unsigned depth;
        bool comma[JSON_WRITE_DEPTH + 1];      /* the next item of this level needs a comma */
        bool after_key;
};

static inline struct json_writer json_writer_init(struct buf *b) { return (struct json_writer){ .b = b }; }

void json_begin_object(struct json_writer *w);
void json_end_object(struct json_writer *w);
void json_begin_array(struct json_writer *w);
void json_end_array(struct json_writer *w);
void json_write_key(struct json_writer *w, const char *key);

void json_write_string(struct json_writer *w, const char *s);          /* NULL: null */
void json_write_bool(struct json_writer *w, bool v);
void json_write_null(struct json_writer *w);
void json_write_int(struct json_writer *w, long long v);
void json_write_uint(struct json_writer *w, unsigned long long v);
void json_write_seconds(struct json_writer *w, double v);              /* "%.3f" */
void json_write_number(struct json_writer *w, double v);               /* as parsed: integral ones without a point */
void json_write_strv(struct json_writer *w, char *const *v);           /* an array; NULL: [] */
/* A parsed value, written back. */
void json_write_value(struct json_writer *w, const struct json *v);
/* A string written in parts (a reply streamed as it is made): begin, any number of parts
 * (each escaped as json_write_string would; NUL-terminated), end. */
void json_write_string_begin(struct json_writer *w);
void json_write_string_part(struct json_writer *w, const char *s);
void json_write_string_end(struct json_writer *w);

/* key and value at once */
static inline void json_field_string(struct json_writer *w, const char *k, const char *v)
{ json_write_key(w, k); json_write_string(w, v); }
static inline void json_field_bool(struct json_writer *w, const char *k, bool v)
{ json_write_key(w, k); json_write_bool(w, v); }
static inline void json_field_int(struct json_writer *w, const char *k, long long v)
{ json_write_key(w, k); json_write_int(w, v); }
static inline void json_field_uint(struct json_writer *w, const char *k, unsigned long long v)
{ json_write_key(w, k); json_write_uint(w, v); }
static inline void json_field_seconds(struct json_writer *w, const char *k, double v)
{ json_write_key(w, k); json_write_seconds(w, v); }
static inline void json_field_strv(struct json_writer *w, const char *k, char *const *v)
{ json_write_key(w, k); json_write_strv(w, v); }
