/* SPDX-License-Identifier: MIT */
#include "lines.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

void lines_reset(struct lines *l)
{
        l->len = 0;
}

static void emit_line(struct lines *l, lines_emit_t emit, void *userdata)
{
        if (l->len && l->buf[l->len - 1] == '\r')
                l->len--;
        l->buf[l->len] = '\0';
        if (l->len)
                emit(l->buf, userdata);
        l->len = 0;
}

static void feed(struct lines *l, const char *p, size_t n, lines_emit_t emit, void *userdata)
{
        while (n > 0) {
                const char *nl = memchr(p, '\n', n);
                size_t seg = nl ? (size_t)(nl - p) : n;
                size_t room = sizeof(l->buf) - 1 - l->len;
                bool full = seg > room;
                size_t take = full ? room : seg;

                memcpy(l->buf + l->len, p, take);
                l->len += take;
                p += take;
                n -= take;
                if (full) {                     /* cut here, go on with the rest */
                        emit_line(l, emit, userdata);
                        continue;
                }
                if (nl) {
                        emit_line(l, emit, userdata);
                        p++;
                        n--;
                }
        }
}

void lines_flush(struct lines *l, lines_emit_t emit, void *userdata)
{
        emit_line(l, emit, userdata);
}

bool lines_read(struct lines *l, int fd, size_t max, size_t *ret_read, lines_emit_t emit, void *userdata)
{
        char chunk[LINES_CHUNK];
        size_t total = 0;
        bool done = false;

        do {
                ssize_t n = read(fd, chunk, sizeof(chunk));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        done = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
                        break;
                }
                feed(l, chunk, (size_t)n, emit, userdata);
                total += (size_t)n;
        } while (total < max);
        if (ret_read)
                *ret_read = total;
        return done;
}
