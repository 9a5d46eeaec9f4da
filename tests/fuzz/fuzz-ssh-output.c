/* SPDX-License-Identifier: MIT */
/* libFuzzer target: what tunneld reads from ssh's stderr, as ssh (or whatever it runs
 * through ProxyCommand, which shares the pipe) could write it: bytes through the line
 * splitter, each line classified. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "lines.h"
#include "ssh_output.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void classify(const char *line, void *userdata)
{
        enum failure_class c;
        enum ssh_line_kind k = ssh_line_parse(line, &c);

        (void)userdata;
        if (k == SSH_LINE_FAILURE && (c <= FAILURE_NONE || c >= _FAILURE_MAX))
                abort();
        if (k != SSH_LINE_FAILURE && c != FAILURE_NONE)
                abort();
        (void)failure_class_to_string(c);
        (void)failure_class_hint(c);
        (void)failure_class_is_generic(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct lines l = {0};
        int fds[2];

        if (size > 60000 || pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
                return 0;
        if (write(fds[1], data, size) != (ssize_t)size) {
                close(fds[0]);
                close(fds[1]);
                return 0;
        }
        close(fds[1]);
        /* one chunk at a time, as while ssh lives, then the bounded final read */
        for (int i = 0; i < 4 && !lines_read(&l, fds[0], 0, NULL, classify, NULL); i++)
                ;
        (void)lines_read(&l, fds[0], 1u << 16, NULL, classify, NULL);
        lines_flush(&l, classify, NULL);
        close(fds[0]);

        /* the same bytes as a forward spec of each kind (status and clash checks parse them) */
        if (size < 2048) {
                char *s = strndup((const char *)data, size);
                struct forward f;

                if (s) {
                        for (int kind = FORWARD_LOCAL; kind <= FORWARD_DYNAMIC; kind++)
                                if (!forward_parse(kind, s, &f) && f.listen.port < 0 && !f.listen.path[0])
                                        abort();
                        free(s);
                }
        }
        return 0;
}
