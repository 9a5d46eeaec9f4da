/* SPDX-License-Identifier: MIT */
/* config_names: the names of the tunnels read so far, with where each was defined, in an
 * open-addressing hash table: a duplicate among 10,000 tunnels is found without comparing
 * each name with every other. */
#include "config_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t name_hash(const char *s, size_t len)
{
        uint64_t h = 0xcbf29ce484222325ull;     /* FNV-1a */

        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
        return (size_t)h;
}

static size_t name_len(const char *entry)
{
        return strcspn(entry, "\t");
}

const char *config_names_find(const struct config_names *t, const char *name)
{
        size_t len = strlen(name);

        for (size_t i = t->cap ? name_hash(name, len) & (t->cap - 1) : 0; t->cap && t->slots[i];
             i = (i + 1) & (t->cap - 1))
                if (name_len(t->slots[i]) == len && memcmp(t->slots[i], name, len) == 0)
                        return t->slots[i];
        return NULL;
}

int config_names_add(struct config_names *t, char *entry)
{
        size_t i;

        if (2 * (t->n + 1) > t->cap) {
                struct config_names grown = { .cap = t->cap ? 2 * t->cap : 64 };

                grown.slots = calloc(grown.cap, sizeof(char *));
                if (!grown.slots) {
                        free(entry);
                        return -ENOMEM;
                }
                for (size_t k = 0; k < t->cap; k++)
                        if (t->slots[k]) {
                                for (i = name_hash(t->slots[k], name_len(t->slots[k])) & (grown.cap - 1);
                                     grown.slots[i]; i = (i + 1) & (grown.cap - 1))
                                        ;
                                grown.slots[i] = t->slots[k];
                        }
                grown.n = t->n;
                free(t->slots);
                *t = grown;
        }
        for (i = name_hash(entry, name_len(entry)) & (t->cap - 1); t->slots[i]; i = (i + 1) & (t->cap - 1))
                ;
        t->slots[i] = entry;
        t->n++;
        return 0;
}

void config_names_free(struct config_names *t)
{
        for (size_t i = 0; i < t->cap; i++)
                free(t->slots[i]);
        free(t->slots);
        *t = (struct config_names){ 0 };
}
