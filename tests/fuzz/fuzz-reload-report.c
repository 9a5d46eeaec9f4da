/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the report a reload's child process sends the daemon (its errors, or
 * what ssh -G said of each ssh configuration), as a child that crashed half-way or wrote
 * anything could leave it. A report that parses has its views sorted by key. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reload_job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct config_views views;
        struct config_errors errs;
        uint64_t digest = 0;
        int r = 0;

        if (reload_job_parse_report((const char *)data, size, &views, &errs, &r, &digest) == 0) {
                for (size_t i = 1; i < views.n; i++)
                        if (strcmp(views.v[i - 1].key, views.v[i].key) >= 0)
                                abort();
                for (size_t i = 0; i < errs.n; i++)
                        if (!errs.lines[i])
                                abort();
        }
        config_views_clear(&views);
        config_errors_clear(&errs);
        return 0;
}
