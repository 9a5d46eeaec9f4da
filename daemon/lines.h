/* SPDX-License-Identifier: MIT */
#pragma once

/* lines: a child's output, read from a non-blocking pipe and handed over a line at a time
 * (ssh's stderr, a hook's output). */

#include <stdbool.h>
#include <stddef.h>

struct lines {
        char buf[1024];
        size_t len;
};

typedef void (*lines_emit_t)(const char *line, void *userdata);

/* Read one chunk (or, if final, everything up to EOF) and emit each complete line; a line
 * longer than the buffer is cut into pieces, a trailing '\r' dropped, empty lines skipped.
 * At EOF, on an error or when final, the partial last line is emitted too and true is
 * returned: the caller closes the pipe. emit may not free l. */
bool lines_read(struct lines *l, int fd, bool final, lines_emit_t emit, void *userdata);
void lines_reset(struct lines *l);
