/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the control socket's request parser, as a client that sends
 * anything would drive it. */
#include <stdint.h>
#include <stdlib.h>

#include "json.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct json *j = NULL;

        if (json_parse((const char *)data, size, &j) >= 0) {
                struct buf b = {0};
                char *s = NULL;

                /* round trip the strings through the writer */
                if (j->type == JSON_OBJECT)
                        for (size_t i = 0; i < j->n; i++) {
                                buf_json_string(&b, j->keys[i]);
                                if (j->items[i]->type == JSON_STRING)
                                        buf_json_string(&b, j->items[i]->string);
                        }
                (void)json_get_string(j, "cmd");
                (void)json_get_bool(j, "all", false);
                if (buf_steal(&b, &s) >= 0)
                        free(s);
                json_free(j);
        }
        return 0;
}
