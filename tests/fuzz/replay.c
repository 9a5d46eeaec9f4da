/* SPDX-License-Identifier: MIT */
/* Runs a fuzz target over files, without libFuzzer: every input in the corpus (crashes
 * found once included) is a regression test of the normal and sanitizer builds. TAP. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int by_name(const struct dirent **a, const struct dirent **b)
{
        return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char *argv[])
{
        int total = 0, ok = 0;

        for (int a = 1; a < argc; a++) {
                struct dirent **names;
                int n = scandir(argv[a], &names, NULL, by_name);

                if (n < 0) {
                        printf("Bail out! cannot read %s\n", argv[a]);
                        return 1;
                }
                for (int i = 0; i < n; i++) {
                        char path[4096];
                        FILE *f;
                        long size;
                        uint8_t *data;

                        if (names[i]->d_name[0] == '.') {
                                free(names[i]);
                                continue;
                        }
                        snprintf(path, sizeof(path), "%s/%s", argv[a], names[i]->d_name);
                        free(names[i]);
                        f = fopen(path, "rb");
                        if (!f)
                                continue;
                        fseek(f, 0, SEEK_END);
                        size = ftell(f);
                        rewind(f);
                        data = malloc((size_t)size + 1);
                        if (data && fread(data, 1, (size_t)size, f) == (size_t)size) {
                                LLVMFuzzerTestOneInput(data, (size_t)size);  /* a crash ends the test */
                                ok++;
                        }
                        free(data);
                        fclose(f);
                        total++;
                        printf("ok %d - %s\n", total, path);
                }
                free(names);
        }
        printf("1..%d\n", total);
        return ok == total ? 0 : 1;
}
