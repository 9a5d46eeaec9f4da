/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the whole configuration path — libconfig's parser, tunneld's
 * validation, and the ssh argv built from every tunnel that passes — twice: from a string,
 * and from real files as tunneld reads them (the file reader with its size, NUL and
 * permission checks, a drop-in directory, names defined twice across files, the checks
 * of key and hook files). An input holding the line "@@@" is split there: the part after
 * it is a drop-in file. Raw bytes, NUL included, reach the file path unchanged. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "host_key.h"
#include "jump_config.h"
#include "known_hosts.h"
#include "ssh_argv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DROPIN_MARK "\n@@@\n"

static void check_config(struct config *c)
{
        for (size_t i = 0; i < c->n_tunnels; i++) {
                char **argv = NULL, *line = NULL;

                if (ssh_argv_build(&c->tunnels[i], c->ssh, NULL, NULL, "/run/t.d/x.mux0", &argv) >= 0) {
                        /* the destination always follows "--": nothing can smuggle an option */
                        size_t n = strv_length(argv);
                        if (n < 3 || strcmp(argv[n - 2], "--") != 0 || argv[n - 1][0] == '-')
                                abort();
                        if (shell_quote_argv(argv, &line) >= 0)
                                free(line);
                }
                strv_free(argv);
                /* the file written for jump hosts: comments, one Host line, one "Match all",
                 * everything else indented under them; no value can start a line of its own */
                if (jump_config_render(&c->tunnels[i], "/run/t.d/x.known_hosts", &line) >= 0 && line) {
                        int hosts = 0, matches = 0;

                        for (char *l = line, *nl; *l; l = nl + 1) {
                                nl = strchr(l, '\n');
                                if (!nl)
                                        abort();        /* every line ends */
                                if (l[0] == '#' || l[0] == '\t')
                                        continue;
                                if (strncmp(l, "Host ", 5) == 0)
                                        hosts++;
                                else if (strncmp(l, "Match all\n", 10) == 0)
                                        matches++;
                                else
                                        abort();
                        }
                        if (hosts != 1 || matches != 1)
                                abort();
                        free(line);
                }
                /* the pinned keys' file: comments, then "NAME KEYTYPE BASE64" lines whose key
                 * passes the check again; one line per key */
                if (known_hosts_render(&c->tunnels[i], &line) >= 0 && line) {
                        size_t keys = 0;

                        for (char *l = line, *nl; *l; l = nl + 1) {
                                char entry[HOST_KEY_MAX_LEN + 1];
                                size_t len;

                                nl = strchr(l, '\n');
                                if (!nl)
                                        abort();
                                if (l[0] == '#')
                                        continue;
                                len = (size_t)(nl - l);
                                if (len > HOST_KEY_MAX_LEN || l[0] == ' ' || memchr(l, '\t', len))
                                        abort();
                                memcpy(entry, l, len);
                                entry[len] = '\0';
                                if (host_key_validate_jump(entry) && host_key_validate(strchr(entry, ' ') + 1))
                                        abort();
                                keys++;
                        }
                        if (keys != strv_length(c->tunnels[i].host_keys) +
                                    (known_hosts_pins_jump_hosts(&c->tunnels[i]) ? strv_length(c->tunnels[i].jump_host_keys) : 0))
                                abort();
                        free(line);
                }
                for (size_t j = 0; j < c->n_tunnels; j++)
                        (void)tunnel_spec_equal(&c->tunnels[i], &c->tunnels[j]);
        }
}

static void write_all(const char *path, const uint8_t *data, size_t size)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        if (fd < 0)
                abort();
        while (size > 0) {
                ssize_t n = write(fd, data, size);
                if (n <= 0)
                        abort();
                data += n;
                size -= (size_t)n;
        }
        close(fd);
}

static char dir[] = "/tmp/tunneld-fuzz-XXXXXX";
static char main_path[64], dropin_dir[64], dropin[80];

static void remove_files(void)
{
        (void)unlink(dropin);
        (void)rmdir(dropin_dir);
        (void)unlink(main_path);
        (void)rmdir(dir);
}

/* The same bytes through config_load(), from a private directory made once. */
static void load_from_files(const uint8_t *data, size_t size)
{
        struct config_errors errs = {0};
        struct config *c = NULL;
        const uint8_t *mark = memmem(data, size, DROPIN_MARK, strlen(DROPIN_MARK));
        size_t main_size = mark ? (size_t)(mark - data) : size;

        if (!main_path[0]) {
                if (!mkdtemp(dir))
                        abort();
                snprintf(main_path, sizeof(main_path), "%s/fuzz.conf", dir);
                snprintf(dropin_dir, sizeof(dropin_dir), "%s/fuzz.d", dir);    /* the default include_dir */
                snprintf(dropin, sizeof(dropin), "%s/10-fuzz.conf", dropin_dir);
                if (mkdir(dropin_dir, 0700) < 0)
                        abort();
                atexit(remove_files);
        }
        write_all(main_path, data, main_size);
        if (mark)
                write_all(dropin, mark + strlen(DROPIN_MARK), size - main_size - strlen(DROPIN_MARK));
        else
                (void)unlink(dropin);

        if (config_load(main_path, NULL, &c, &errs) >= 0) {
                check_config(c);
                config_free(c);
        } else if (errs.n == 0)
                abort();        /* a rejected configuration always says why */
        config_errors_clear(&errs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct config_errors errs = {0};
        struct config *c = NULL;
        char *text;

        if (size > 1 << 16)
                return 0;
        load_from_files(data, size);
        text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';

        if (config_load_string(text, "fuzz.conf", &c, &errs) >= 0) {
                check_config(c);
                config_free(c);
        } else if (errs.n == 0)
                abort();        /* a rejected configuration always says why */
        config_errors_clear(&errs);
        free(text);
        return 0;
}
