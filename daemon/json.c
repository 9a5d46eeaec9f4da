/* SPDX-License-Identifier: MIT */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct reader {
        const char *p, *end;
        int depth;
};

static void skip_ws(struct reader *r)
{
        while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
                r->p++;
}

static int parse_value(struct reader *r, struct json **ret);

static int hex4(const char *p, unsigned *ret)
{
        unsigned v = 0;

        for (int i = 0; i < 4; i++) {
                char c = p[i];
                v <<= 4;
                if (c >= '0' && c <= '9')
                        v |= (unsigned)(c - '0');
                else if (c >= 'a' && c <= 'f')
                        v |= (unsigned)(c - 'a' + 10);
                else if (c >= 'A' && c <= 'F')
                        v |= (unsigned)(c - 'A' + 10);
                else
                        return -EINVAL;
        }
        *ret = v;
        return 0;
}

static void put_utf8(struct buf *b, unsigned cp)
{
        char u[4];
        size_t n;

        if (cp < 0x80) {
                u[0] = (char)cp;
                n = 1;
        } else if (cp < 0x800) {
                u[0] = (char)(0xC0 | (cp >> 6));
                u[1] = (char)(0x80 | (cp & 0x3F));
                n = 2;
        } else if (cp < 0x10000) {
                u[0] = (char)(0xE0 | (cp >> 12));
                u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[2] = (char)(0x80 | (cp & 0x3F));
                n = 3;
        } else {
                u[0] = (char)(0xF0 | (cp >> 18));
                u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[3] = (char)(0x80 | (cp & 0x3F));
                n = 4;
        }
        buf_append(b, u, n);
}

static int parse_string(struct reader *r, char **ret)
{
        struct buf b = {0};

        if (r->p >= r->end || *r->p != '"')
                return -EINVAL;
        r->p++;
        buf_append(&b, "", 0);
        while (r->p < r->end && *r->p != '"') {
                unsigned char c = (unsigned char)*r->p;

                if (c < 0x20)
                        goto bad;
                if (c >= 0x80) {
                        /* JSON text is UTF-8 (RFC 8259) */
                        size_t n = r->end - r->p >= 4 ? utf8_valid_length((const unsigned char *)r->p) : 0;
                        if (n == 0 && r->end - r->p < 4) {
                                char tail[5] = {0};
                                memcpy(tail, r->p, (size_t)(r->end - r->p));
                                n = utf8_valid_length((const unsigned char *)tail);
                        }
                        if (n == 0)
                                goto bad;
                        buf_append(&b, r->p, n);
                        r->p += n;
                        continue;
                }
                if (c != '\\') {
                        buf_append(&b, r->p, 1);
                        r->p++;
                        continue;
                }
                if (++r->p >= r->end)
                        goto bad;
                switch (*r->p) {
                case '"': buf_append(&b, "\"", 1); break;
                case '\\': buf_append(&b, "\\", 1); break;
                case '/': buf_append(&b, "/", 1); break;
                case 'b': buf_append(&b, "\b", 1); break;
                case 'f': buf_append(&b, "\f", 1); break;
                case 'n': buf_append(&b, "\n", 1); break;
                case 'r': buf_append(&b, "\r", 1); break;
                case 't': buf_append(&b, "\t", 1); break;
                case 'u': {
                        unsigned cp, lo;
                        if (r->end - r->p < 5 || hex4(r->p + 1, &cp) < 0)
                                goto bad;
                        r->p += 4;
                        if (cp >= 0xD800 && cp <= 0xDBFF) {
                                if (r->end - r->p < 7 || r->p[1] != '\\' || r->p[2] != 'u' ||
                                    hex4(r->p + 3, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                                        goto bad;
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                r->p += 6;
                        } else if (cp >= 0xDC00 && cp <= 0xDFFF)
                                goto bad;
                        if (cp == 0)
                                goto bad;       /* our strings are C strings */
                        put_utf8(&b, cp);
                        break;
                }
                default:
                        goto bad;
                }
                r->p++;
        }
        if (r->p >= r->end)
                goto bad;
        r->p++;
        return buf_steal(&b, ret);
bad:
        buf_free(&b);
        return -EINVAL;
}

static int parse_number(struct reader *r, double *ret)
{
        const char *s = r->p;
        char tmp[64];
        char *end;
        size_t n;

        if (r->p < r->end && *r->p == '-')
                r->p++;
        if (r->p >= r->end || !(*r->p >= '0' && *r->p <= '9'))
                return -EINVAL;
        if (*r->p == '0')
                r->p++;
        else
                while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
                        r->p++;
        if (r->p < r->end && *r->p == '.') {
                r->p++;
                if (r->p >= r->end || !(*r->p >= '0' && *r->p <= '9'))
                        return -EINVAL;
                while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
                        r->p++;
        }
        if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
                r->p++;
                if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
                        r->p++;
                if (r->p >= r->end || !(*r->p >= '0' && *r->p <= '9'))
                        return -EINVAL;
                while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
                        r->p++;
        }
        n = (size_t)(r->p - s);
        if (n >= sizeof(tmp))
                return -EINVAL;
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        *ret = strtod(tmp, &end);
        if (*end || !isfinite(*ret))
                return -EINVAL;
        return 0;
}

static int push_item(struct json *j, char *key, struct json *item)
{
        /* room doubles whenever n reaches a power of two: a list of thousands (a status of
         * many tunnels) is not copied once per item */
        size_t room = j->n ? j->n * 2 : 1;

        if ((j->n & (j->n - 1)) == 0) {
                struct json **items = realloc(j->items, room * sizeof(struct json *));

                if (!items)
                        return -ENOMEM;
                j->items = items;
                if (j->type == JSON_OBJECT) {
                        char **keys = realloc(j->keys, room * sizeof(*keys));

                        if (!keys)
                                return -ENOMEM;
                        j->keys = keys;
                }
        }
        if (j->type == JSON_OBJECT)
                j->keys[j->n] = key;
        j->items[j->n++] = item;
        return 0;
}

static int parse_container(struct reader *r, struct json *j, char close)
{
        int e;

        if (++r->depth > JSON_DEPTH_MAX)
                return -EINVAL;
        r->p++;
        skip_ws(r);
        if (r->p < r->end && *r->p == close) {
                r->p++;
                r->depth--;
                return 0;
        }
        for (;;) {
                char *key = NULL;
                struct json *item = NULL;

                skip_ws(r);
                if (j->type == JSON_OBJECT) {
                        e = parse_string(r, &key);
                        if (e < 0)
                                return e;
                        for (size_t k = 0; k < j->n; k++)
                                if (strcmp(j->keys[k], key) == 0) {
                                        free(key);
                                        return -EINVAL;         /* which one would win is a guess */
                                }
                        skip_ws(r);
                        if (r->p >= r->end || *r->p != ':') {
                                free(key);
                                return -EINVAL;
                        }
                        r->p++;
                }
                e = parse_value(r, &item);
                if (e >= 0)
                        e = push_item(j, key, item);
                if (e < 0) {
                        free(key);
                        json_free(item);
                        return e;
                }
                skip_ws(r);
                if (r->p < r->end && *r->p == ',') {
                        r->p++;
                        continue;
                }
                if (r->p < r->end && *r->p == close) {
                        r->p++;
                        r->depth--;
                        return 0;
                }
                return -EINVAL;
        }
}

static bool literal(struct reader *r, const char *word)
{
        size_t n = strlen(word);

        if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
                return false;
        r->p += n;
        return true;
}

static int parse_value(struct reader *r, struct json **ret)
{
        struct json *j;
        int e = 0;

        skip_ws(r);
        if (r->p >= r->end)
                return -EINVAL;
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        switch (*r->p) {
        case '{':
                j->type = JSON_OBJECT;
                e = parse_container(r, j, '}');
                break;
        case '[':
                j->type = JSON_ARRAY;
                e = parse_container(r, j, ']');
                break;
        case '"':
                j->type = JSON_STRING;
                e = parse_string(r, &j->string);
                break;
        case 't':
                j->type = JSON_BOOL;
                j->boolean = true;
                e = literal(r, "true") ? 0 : -EINVAL;
                break;
        case 'f':
                j->type = JSON_BOOL;
                e = literal(r, "false") ? 0 : -EINVAL;
                break;
        case 'n':
                j->type = JSON_NULL;
                e = literal(r, "null") ? 0 : -EINVAL;
                break;
        default:
                j->type = JSON_NUMBER;
                e = parse_number(r, &j->number);
        }
        if (e < 0) {
                json_free(j);
                return e;
        }
        *ret = j;
        return 0;
}

int json_parse(const char *text, size_t len, struct json **ret)
{
        struct reader r = { .p = text, .end = text + len };
        struct json *j = NULL;
        int e;

        e = parse_value(&r, &j);
        if (e < 0)
                return e;
        skip_ws(&r);
        if (r.p != r.end) {
                json_free(j);
                return -EINVAL;
        }
        *ret = j;
        return 0;
}

struct json *json_free(struct json *j)
{
        if (!j)
                return NULL;
        for (size_t i = 0; i < j->n; i++) {
                json_free(j->items[i]);
                if (j->keys)
                        free(j->keys[i]);
        }
        free(j->items);
        free(j->keys);
        free(j->string);
        free(j);
        return NULL;
}

/* How many bytes the escape or character at s[0..n) takes, or 0 if s ends before we know
 * (or before it is whole). Invalid ones take 1: parse_string refuses them. */
static size_t token_length(const char *s, size_t n)
{
        unsigned char c = (unsigned char)s[0];
        unsigned cp;

        if (c == '\\') {
                if (n < 2)
                        return 0;
                if (s[1] != 'u')
                        return 2;
                if (n < 6)
                        return 0;
                if (hex4(s + 2, &cp) < 0 || cp < 0xD800 || cp > 0xDBFF)
                        return 6;
                /* a high surrogate and its low half; alone, it is refused */
                if ((n > 6 && s[6] != '\\') || (n > 7 && s[7] != 'u'))
                        return 6;
                return n < 12 ? 0 : 12;
        }
        if (c >= 0xC0) {
                size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;

                for (size_t k = 1; k < need && k < n; k++)
                        if (((unsigned char)s[k] & 0xC0) != 0x80)
                                return 1;       /* cut short: refused */
                return n < need ? 0 : need;
        }
        return 1;
}

/* s[0..n), whole escapes and characters only, through parse_string's checks onto out. */
static int decode_piece(const char *s, size_t n, struct buf *out)
{
        struct buf quoted = {0};
        struct reader r;
        char *text = NULL;
        int e;

        if (!n)
                return 0;
        buf_append(&quoted, "\"", 1);
        buf_append(&quoted, s, n);
        buf_append(&quoted, "\"", 1);
        if (quoted.oom) {
                buf_free(&quoted);
                return -ENOMEM;
        }
        r = (struct reader){ .p = quoted.data, .end = quoted.data + quoted.len };
        e = parse_string(&r, &text);
        if (e >= 0)
                buf_puts(out, text);
        free(text);
        buf_free(&quoted);
        return e < 0 ? e : out->oom ? -ENOMEM : 0;
}

int json_string_stream_feed(struct json_string_stream *st, const char *in, size_t len, struct buf *out,
                            size_t *used)
{
        struct buf work = {0};
        size_t i = 0, n, from_in;
        int e = 0, done = 0;

        /* what was cut off last time, then this piece */
        buf_append(&work, st->carry, st->n_carry);
        buf_append(&work, in, len);
        if (work.oom) {
                buf_free(&work);
                return -ENOMEM;
        }
        n = work.len;
        while (i < n) {
                size_t k;

                if (work.data[i] == '"') {
                        done = 1;
                        break;
                }
                k = token_length(work.data + i, n - i);
                if (k == 0)
                        break;          /* the rest comes with the next piece */
                i += k;
        }
        e = decode_piece(work.data, i, out);
        from_in = i + done > st->n_carry ? i + done - st->n_carry : 0;
        if (e >= 0 && !done) {
                if (n - i > sizeof(st->carry))
                        e = -EINVAL;
                else {
                        memcpy(st->carry, work.data + i, n - i);
                        st->n_carry = n - i;
                        from_in = len;
                }
        } else
                st->n_carry = 0;
        buf_free(&work);
        *used = from_in;
        return e < 0 ? e : done;
}

const struct json *json_get(const struct json *obj, const char *key)
{
        if (!obj || obj->type != JSON_OBJECT)
                return NULL;
        for (size_t i = 0; i < obj->n; i++)
                if (strcmp(obj->keys[i], key) == 0)
                        return obj->items[i];
        return NULL;
}

const char *json_get_string(const struct json *obj, const char *key)
{
        const struct json *v = json_get(obj, key);
        return v && v->type == JSON_STRING ? v->string : NULL;
}

bool json_get_bool(const struct json *obj, const char *key, bool fallback)
{
        const struct json *v = json_get(obj, key);
        return v && v->type == JSON_BOOL ? v->boolean : fallback;
}

double json_get_number(const struct json *obj, const char *key, double fallback)
{
        const struct json *v = json_get(obj, key);
        return v && v->type == JSON_NUMBER ? v->number : fallback;
}
