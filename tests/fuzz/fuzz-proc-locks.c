/* SPDX-License-Identifier: MIT */
/* libFuzzer target: /proc/locks as the kernel might write it, or anything else: the holder
 * found (or not) for a file named by the input's first bytes, never a pid that is not on a
 * line of the text, never a read outside it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_locks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        unsigned major = size > 0 ? data[0] : 0, minor = size > 1 ? data[1] : 0;
        uint64_t ino = size > 2 ? data[2] : 0;
        char digits[24];
        pid_t pid;

        for (size_t i = 0; i < 3; i++) {
                pid = proc_locks_find((const char *)data, size, major, minor, ino);
                if (pid < 0)
                        abort();
                if (pid > 0) {
                        /* the pid is written out somewhere in the text */
                        int n = snprintf(digits, sizeof(digits), "%d", (int)pid);
                        if (n <= 0 || !memmem(data, size, digits, (size_t)n))
                                abort();
                }
                /* and the sample's own file */
                major = 0xfe, minor = 0, ino = 10953245;
        }
        return 0;
}
