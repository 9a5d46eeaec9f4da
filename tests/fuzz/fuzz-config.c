/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the whole configuration path — libconfig's parser, tunneld's
 * validation, and the ssh argv built from every tunnel that passes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ssh_argv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct config_errors errs = {0};
        struct config *c = NULL;
        char *text;

        if (size > 1 << 16)
                return 0;
        text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';

        if (config_load_string(text, "fuzz.conf", &c, &errs) >= 0) {
                for (size_t i = 0; i < c->n_tunnels; i++) {
                        char **argv = NULL, *line = NULL;

                        if (ssh_argv_build(&c->tunnels[i], c->ssh, &argv) >= 0) {
                                /* the destination always follows "--": nothing can smuggle an option */
                                size_t n = strv_length(argv);
                                if (n < 3 || strcmp(argv[n - 2], "--") != 0 || argv[n - 1][0] == '-')
                                        abort();
                                if (shell_quote_argv(argv, &line) >= 0)
                                        free(line);
                        }
                        strv_free(argv);
                        for (size_t j = 0; j < c->n_tunnels; j++)
                                (void)tunnel_spec_equal(&c->tunnels[i], &c->tunnels[j]);
                }
                config_free(c);
        } else if (errs.n == 0)
                abort();        /* a rejected configuration always says why */
        config_errors_clear(&errs);
        free(text);
        return 0;
}
