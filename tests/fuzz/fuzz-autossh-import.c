/* SPDX-License-Identifier: MIT */
/* libFuzzer target: tunneld --import-autossh on any bytes, read both as command lines and
 * as a systemd unit (autossh@fuzz.service). Whatever the input, the output is a valid
 * tunneld configuration (it loads, so tunneld -t's value checks pass), and no error line
 * or output line holds a control character: nothing read can start a line of its own. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autossh_import.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void no_controls(const char *s, bool newlines)
{
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if ((*p < 0x20 && !(newlines && *p == '\n')) || *p == 0x7f)
                        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct autossh_import *imp = NULL;
        struct config_errors errs = {0};
        struct config *c = NULL;
        char *text, *out = NULL, *conf = NULL;

        if (size > 1 << 16 || memchr(data, '\0', size))
                return 0;       /* the reader refuses NUL bytes before the parser sees them */
        text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';
        if (autossh_import_new(&imp) < 0)
                abort();
        if (autossh_import_text(imp, "fuzz.sh", text) < 0 || autossh_import_text(imp, "autossh@fuzz.service", text) < 0)
                abort();
        for (char *const *e = autossh_import_errors(imp); e && *e; e++)
                no_controls(*e, false);
        if (autossh_import_render(imp, &out) < 0)
                abort();
        no_controls(out, true);
        if (asprintf(&conf, "control_socket = \"none\";\n%s", out) < 0)
                abort();
        if (config_load_string(conf, "import.conf", &c, &errs) < 0)
                abort();        /* the output always loads */
        config_free(c);
        config_errors_clear(&errs);
        autossh_import_free(imp);
        free(conf);
        free(out);
        free(text);
        return 0;
}
