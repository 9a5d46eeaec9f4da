/* SPDX-License-Identifier: MIT */
#pragma once

/* lines: a child's output, read from a non-blocking pipe and handed over a line at a time
 * (ssh's stderr, a hook's output). Every read is bounded: a child that never stops
 * writing (or a helper that inherited its pipe and outlives it) cannot hold the loop. */

#include <stdbool.h>
#include <stddef.h>

struct lines {
        char buf[1024];
        size_t len;
};

typedef void (*lines_emit_t)(const char *line, void *userdata);

#define LINES_CHUNK 4096

/* Read at most max bytes (max < LINES_CHUNK reads one chunk) and emit each complete line;
 * a line longer than the buffer is cut into pieces, a trailing '\r' dropped, empty lines
 * skipped. Returns true at EOF or on a read error: the caller flushes and closes the pipe.
 * *ret_read (may be NULL) gets the number of bytes read. emit may not free l. */
bool lines_read(struct lines *l, int fd, size_t max, size_t *ret_read, lines_emit_t emit, void *userdata);
/* Emit the partial last line, if any. */
void lines_flush(struct lines *l, lines_emit_t emit, void *userdata);
void lines_reset(struct lines *l);
