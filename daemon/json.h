/* SPDX-License-Identifier: MIT */
#pragma once

/* A small strict JSON reader for the control protocol: one object per line, bounded
 * depth, no extensions. Writing JSON uses struct buf (util.h). */

#include <stdbool.h>
#include <stddef.h>

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

/* Lookups; NULL if absent or of another type. */
const struct json *json_get(const struct json *obj, const char *key);
const char *json_get_string(const struct json *obj, const char *key);
bool json_get_bool(const struct json *obj, const char *key, bool fallback);
double json_get_number(const struct json *obj, const char *key, double fallback);
