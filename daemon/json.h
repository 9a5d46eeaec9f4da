/* SPDX-License-Identifier: MIT */
#pragma once

/* A small strict JSON reader for the control protocol: one object per line, bounded
 * depth, no extensions. Writing JSON uses struct buf (util.h). */

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
        enum json_type type;
        bool boolean;
        double number;
        char *string;                   /* STRING; NUL-free (strings with \u0000 are refused) */
        struct json **items;            /* ARRAY and OBJECT values */
        char **keys;                    /* OBJECT keys, parallel to items */
        size_t n;
};

#define JSON_DEPTH_MAX 16

/* Parse exactly one value (surrounding whitespace allowed). 0, -EINVAL on bad input,
 * -ENOMEM. */
int json_parse(const char *text, size_t len, struct json **ret);
struct json *json_free(struct json *j);

/* A JSON string's content decoded as it arrives, a piece at a time (a reply too big to
 * hold whole: tunnelctl metrics): what follows its opening quote goes in, its bytes come
 * out, with json_parse's checks. Zero it to begin. */
struct json_string_stream {
        char carry[12];                 /* an escape or a character cut by the last piece's end */
        size_t n_carry;
};
/* Decode in[0..len) onto out. *used: bytes of in taken (all, unless the string ended: then
 * up to and with its closing quote). 1 once the closing quote was read, 0 if more is to
 * come, -EINVAL if it is not a valid JSON string, -ENOMEM. */
int json_string_stream_feed(struct json_string_stream *st, const char *in, size_t len, struct buf *out,
                            size_t *used);

/* Lookups; NULL if absent or of another type. */
const struct json *json_get(const struct json *obj, const char *key);
const char *json_get_string(const struct json *obj, const char *key);
bool json_get_bool(const struct json *obj, const char *key, bool fallback);
double json_get_number(const struct json *obj, const char *key, double fallback);
