/* SPDX-License-Identifier: MIT */
/* libFuzzer target: what ssh -G prints, as the ssh program named in the configuration (or
 * an ssh_config whose Match exec writes to stdout) could print it: parsed into a view, every
 * forward it yields then read by tunneld's own forward parser, as the load does. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "ssh_view.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const enum forward_kind kinds[3] = { FORWARD_LOCAL, FORWARD_REMOTE, FORWARD_DYNAMIC };
        char *text = malloc(size + 1);
        struct ssh_view v;

        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';
        if (ssh_view_parse(text, &v) == 0) {
                char **lists[3] = { v.local_forwards, v.remote_forwards, v.dynamic_forwards };
                struct forward f;

                if (!v.ran || v.error || v.timed_out)
                        abort();
                for (int k = 0; k < 3; k++)
                        for (char **s = lists[k]; s && *s; s++)
                                (void)forward_parse(kinds[k], *s, &f);
                ssh_view_done(&v);
        }
        free(text);
        return 0;
}
