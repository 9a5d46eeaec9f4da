/* SPDX-License-Identifier: MIT */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

double now_mono(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *format_duration(double s, char *buf, size_t size)
{
        if (s < 0)
                s = 0;
        if (s < 0.9995)         /* 0.9996 s is "1.0 s", not "1000 ms" */
                snprintf(buf, size, "%.0f ms", s * 1000.0);
        else if (s < 10.0)
                snprintf(buf, size, "%.1f s", s);
        else if (s < 60.0)
                snprintf(buf, size, "%.0f s", s);
        else if (s < 3600.0) {
                long t = lround(s);
                if (t % 60)
                        snprintf(buf, size, "%ld min %ld s", t / 60, t % 60);
                else
                        snprintf(buf, size, "%ld min", t / 60);
        } else if (s < 86400.0) {
                long t = lround(s / 60.0);
                snprintf(buf, size, "%ld h %ld min", t / 60, t % 60);
        } else {
                long t = lround(s / 3600.0);
                snprintf(buf, size, "%ld d %ld h", t / 24, t % 24);
        }
        return buf;
}

const char *signal_to_name(int sig, char *buf, size_t size)
{
        const char *n = sigabbrev_np(sig);

        if (n)
                snprintf(buf, size, "%s", n);
        else
                snprintf(buf, size, "%d", sig);
        return buf;
}

size_t strv_length(char *const *v)
{
        size_t n = 0;

        while (v && v[n])
                n++;
        return n;
}

char **strv_free(char **v)
{
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
        return NULL;
}

int strv_push(char ***v, const char *s)
{
        size_t n = strv_length(*v);
        char **nv;
        char *c;

        c = strdup(s);
        if (!c)
                return -ENOMEM;
        nv = realloc(*v, (n + 2) * sizeof(char *));
        if (!nv) {
                free(c);
                return -ENOMEM;
        }
        nv[n] = c;
        nv[n + 1] = NULL;
        *v = nv;
        return 0;
}

int strv_copy(char *const *v, char ***ret)
{
        size_t n = strv_length(v);
        char **c;

        c = calloc(n + 1, sizeof(char *));
        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                c[i] = strdup(v[i]);
                if (!c[i]) {
                        strv_free(c);
                        return -ENOMEM;
                }
        }
        *ret = c;
        return 0;
}

bool strv_equal(char *const *a, char *const *b)
{
        size_t n = strv_length(a);

        if (n != strv_length(b))
                return false;
        for (size_t i = 0; i < n; i++)
                if (strcmp(a[i], b[i]) != 0)
                        return false;
        return true;
}

int strcmp_null(const char *a, const char *b)
{
        if (!a || !b)
                return (a != NULL) - (b != NULL);
        return strcmp(a, b);
}

static bool needs_quoting(const char *s)
{
        if (!*s)
                return true;
        for (; *s; s++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@,+%[]", *s))
                        return true;
        return false;
}

int shell_quote_argv(char *const *argv, char **ret)
{
        struct buf b = {0};

        for (size_t i = 0; argv && argv[i]; i++) {
                if (i)
                        buf_append(&b, " ", 1);
                if (!needs_quoting(argv[i])) {
                        buf_append(&b, argv[i], strlen(argv[i]));
                        continue;
                }
                buf_append(&b, "'", 1);
                for (const char *p = argv[i]; *p; p++) {
                        if (*p == '\'')
                                buf_append(&b, "'\\''", 4);
                        else
                                buf_append(&b, p, 1);
                }
                buf_append(&b, "'", 1);
        }
        buf_append(&b, "", 0);
        return buf_steal(&b, ret);
}

double random_unit(void)
{
        static uint64_t state;

        if (state == 0) {
                if (getrandom(&state, sizeof(state), GRND_NONBLOCK) != sizeof(state))
                        state = (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)time(NULL);
                state |= 1;
        }
        /* xorshift64*: plenty for jitter, and no libc rand() state shared with anyone */
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return (double)((state * 0x2545F4914F6CDD1DULL) >> 11) / (double)(1ULL << 53);
}

static bool buf_reserve(struct buf *b, size_t extra)
{
        size_t need, cap;
        char *d;

        if (b->oom)
                return false;
        need = b->len + extra + 1;
        if (need <= b->cap)
                return true;
        cap = b->cap ? b->cap : 256;
        while (cap < need)
                cap *= 2;
        d = realloc(b->data, cap);
        if (!d) {
                b->oom = true;
                return false;
        }
        b->data = d;
        b->cap = cap;
        return true;
}

void buf_append(struct buf *b, const char *s, size_t n)
{
        if (!buf_reserve(b, n))
                return;
        memcpy(b->data + b->len, s, n);
        b->len += n;
        b->data[b->len] = '\0';
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0 || !buf_reserve(b, (size_t)n))
                return;
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if it is not one. */
size_t utf8_valid_length(const unsigned char *p)
{
        unsigned char c = p[0];
        size_t n;
        unsigned cp;

        if (c < 0x80)
                return 1;
        if (c >= 0xC2 && c <= 0xDF)
                n = 2, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF)
                n = 3, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4)
                n = 4, cp = c & 0x07;
        else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((p[i] & 0xC0) != 0x80)
                        return 0;
                cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
                return 0;       /* overlong, out of range, or a surrogate */
        return n;
}

void buf_puts(struct buf *b, const char *s)
{
        buf_append(b, s, strlen(s));
}

void buf_json_string(struct buf *b, const char *s)
{
        buf_append(b, "\"", 1);
        for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
                if (*p >= 0x80) {
                        /* ssh's lines and clients' requests are not ours to trust: replies
                         * stay valid JSON, an invalid byte becomes U+FFFD */
                        size_t n = utf8_valid_length(p);
                        if (n == 0)
                                buf_append(b, "\\ufffd", 6);
                        else {
                                buf_append(b, (const char *)p, n);
                                p += n - 1;
                        }
                        continue;
                }
                switch (*p) {
                case '"':  buf_append(b, "\\\"", 2); break;
                case '\\': buf_append(b, "\\\\", 2); break;
                case '\n': buf_append(b, "\\n", 2); break;
                case '\t': buf_append(b, "\\t", 2); break;
                case '\r': buf_append(b, "\\r", 2); break;
                default:
                        if (*p < 0x20 || *p == 0x7f)
                                buf_printf(b, "\\u%04x", *p);
                        else
                                buf_append(b, (const char *)p, 1);
                }
        }
        buf_append(b, "\"", 1);
}

void buf_free(struct buf *b)
{
        free(b->data);
        *b = (struct buf){0};
}

int buf_steal(struct buf *b, char **ret)
{
        if (b->oom) {
                buf_free(b);
                return -ENOMEM;
        }
        if (!b->data) {
                *ret = strdup("");
                return *ret ? 0 : -ENOMEM;
        }
        *ret = b->data;
        *b = (struct buf){0};
        return 0;
}
