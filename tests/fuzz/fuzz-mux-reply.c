/* SPDX-License-Identifier: MIT */
/* libFuzzer target: what tunneld reads from its ssh master's control socket, as a broken
 * or hostile master could send it: a stream of packets parsed one after the other, every
 * reply within its packet, the reason a bounded C string. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mux_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        size_t at = 0;

        while (at < size) {
                struct mux_reply r;
                size_t used = 0;
                int k = mux_parse_reply(data + at, size - at, &used, &r);

                if (k < 0 || k == 0) {
                        if (used != 0)
                                abort();
                        break;
                }
                if (used < 8 || used > size - at || used > MUX_PACKET_MAX + 4)
                        abort();
                if (strlen(r.reason) >= sizeof(r.reason))
                        abort();
                for (const char *p = r.reason; *p; p++)
                        if ((unsigned char)*p < 0x20)
                                abort();
                (void)mux_msg_name(r.type);
                at += used;
        }
        return 0;
}
