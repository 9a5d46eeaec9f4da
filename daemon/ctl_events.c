/* SPDX-License-Identifier: MIT */
/* ctl_events: the subscribers' shared log of state changes. */
#include "ctl_events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A record: its size (header, name and line), the name's length, the name, the line. */
#define HEADER 8u
#define BLOCKS_MAX (CTL_EVENTS_BACKLOG / CTL_EVENTS_BLOCK)

struct block {
        struct block *next;
        uint64_t start;                 /* the offset of data[0] */
        size_t len, cap;
        char data[];
};

struct ctl_events {
        struct block *first, *last;
        size_t n_blocks;
        uint64_t end;
};

int ctl_events_new(struct ctl_events **ret)
{
        *ret = calloc(1, sizeof(**ret));
        return *ret ? 0 : -ENOMEM;
}

void ctl_events_trim(struct ctl_events *l, uint64_t upto)
{
        while (l->first && l->first->start + l->first->len <= upto) {
                struct block *b = l->first;

                l->first = b->next;
                if (!l->first)
                        l->last = NULL;
                l->n_blocks--;
                free(b);
        }
}

struct ctl_events *ctl_events_free(struct ctl_events *l)
{
        if (l) {
                ctl_events_trim(l, UINT64_MAX);
                free(l);
        }
        return NULL;
}

uint64_t ctl_events_end(const struct ctl_events *l)
{
        return l->end;
}

uint64_t ctl_events_first_end(const struct ctl_events *l)
{
        return l->first ? l->first->start + l->first->len : 0;
}

static bool fits(const struct ctl_events *l, size_t size)
{
        return l->last && l->last->cap - l->last->len >= size;
}

uint64_t ctl_events_room(const struct ctl_events *l, size_t name_len, size_t len)
{
        if (fits(l, HEADER + name_len + len) || l->n_blocks < BLOCKS_MAX)
                return 0;
        return ctl_events_first_end(l);
}

int ctl_events_append(struct ctl_events *l, const char *name, const char *line, size_t len)
{
        size_t name_len = strlen(name), size = HEADER + name_len + len;
        uint32_t h[2] = { (uint32_t)size, (uint32_t)name_len };
        struct block *b;

        if (size > UINT32_MAX)
                return -EINVAL;
        if (!fits(l, size)) {
                size_t cap = size > CTL_EVENTS_BLOCK ? size : CTL_EVENTS_BLOCK;

                b = malloc(sizeof(*b) + cap);
                if (!b)
                        return -ENOMEM;
                *b = (struct block){ .start = l->end, .cap = cap };
                if (l->last)
                        l->last->next = b;
                else
                        l->first = b;
                l->last = b;
                l->n_blocks++;
        }
        b = l->last;
        memcpy(b->data + b->len, h, HEADER);
        memcpy(b->data + b->len + HEADER, name, name_len);
        memcpy(b->data + b->len + HEADER + name_len, line, len);
        b->len += size;
        l->end += size;
        return 0;
}

bool ctl_events_next(const struct ctl_events *l, uint64_t *cursor, const char **ret_name, size_t *ret_name_len,
                     const char **ret_line, size_t *ret_len)
{
        for (const struct block *b = l->first; b; b = b->next) {
                uint32_t h[2];
                const char *p;

                if (*cursor >= b->start + b->len)
                        continue;
                if (*cursor < b->start)
                        *cursor = b->start;     /* trimmed away under it (it was dropped, or is new) */
                p = b->data + (*cursor - b->start);
                memcpy(h, p, HEADER);
                *ret_name = p + HEADER;
                *ret_name_len = h[1];
                *ret_line = p + HEADER + h[1];
                *ret_len = h[0] - HEADER - h[1];
                *cursor += h[0];
                return true;
        }
        *cursor = l->end;
        return false;
}
