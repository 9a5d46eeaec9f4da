/* SPDX-License-Identifier: MIT */
/* libFuzzer target: lines of /proc/PID/net/tcp and tcp6, and /proc/PID/stat, as
 * proc_net reads them (one line each, NUL-terminated as fgets() gives them). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proc_net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *line = malloc(size + 1);
        struct proc_net_socket s = {0};
        pid_t ppid;

        if (!line)
                return 0;
        memcpy(line, data, size);
        line[size] = '\0';
        if (proc_net_parse_line(line, &s) == 1) {
                char a[ENDPOINT_MAX];

                if (s.local.family != s.remote.family || (s.local.family != AF_INET && s.local.family != AF_INET6))
                        abort();
                if (s.local.port > 65535 || s.remote.port > 65535 || s.state > 255)
                        abort();
                endpoint_format(&s.local, a, sizeof(a));
        }
        if (proc_net_parse_ppid(line, &ppid) == 0 && ppid < 0)
                abort();
        free(line);
        return 0;
}
