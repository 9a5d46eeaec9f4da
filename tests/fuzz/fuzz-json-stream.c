/* SPDX-License-Identifier: MIT */
/* libFuzzer target: a JSON string decoded as it arrives (json_string_stream_feed, what
 * tunnelctl metrics reads a reply of any size with). The first byte picks the size of the
 * pieces; the rest is what follows the string's opening quote. However the input is cut,
 * the decoder says the same (the same bytes out, the same end, the same verdict) as when
 * it gets it whole, and when the string ends that is json_parse's reading of it. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct outcome {
        int r;
        size_t used;                    /* bytes of the input taken */
        struct buf out;
};

static void decode(const char *in, size_t len, size_t piece, struct outcome *o)
{
        struct json_string_stream st = {0};

        *o = (struct outcome){0};
        buf_append(&o->out, "", 0);
        for (size_t off = 0; off < len || (off == 0 && len == 0);) {
                size_t n = len - off < piece ? len - off : piece, used = 0;

                o->r = json_string_stream_feed(&st, in + off, n, &o->out, &used);
                o->used += used;
                if (o->r != 0 || n == 0)
                        return;
                if (used != n)
                        abort();        /* only an ended string leaves input untaken */
                off += n;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct outcome whole, cut;
        size_t piece;
        const char *in;

        if (size < 1)
                return 0;
        piece = (size_t)data[0] % 17 + 1;
        in = (const char *)data + 1;
        size--;
        decode(in, size, size ? size : 1, &whole);
        decode(in, size, piece, &cut);
        if (whole.r != cut.r || (whole.r > 0 && whole.used != cut.used) ||
            (whole.r >= 0 && (whole.out.len != cut.out.len || memcmp(whole.out.data, cut.out.data, whole.out.len) != 0)))
                abort();
        if (whole.r > 0) {
                /* the string as json_parse reads it: the same bytes */
                struct buf text = {0};
                struct json *j = NULL;

                buf_append(&text, "\"", 1);
                buf_append(&text, in, whole.used);
                if (text.oom || json_parse(text.data, text.len, &j) < 0 || j->type != JSON_STRING ||
                    strlen(j->string) != whole.out.len || memcmp(j->string, whole.out.data, whole.out.len) != 0)
                        abort();
                json_free(j);
                buf_free(&text);
        }
        buf_free(&whole.out);
        buf_free(&cut.out);
        return 0;
}
