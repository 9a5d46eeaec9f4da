/* SPDX-License-Identifier: MIT */
#pragma once

/* Netlink messages written by hand for the parsers' tests: a buffer, messages appended,
 * attributes appended to the last message (its length follows). */

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdint.h>
#include <string.h>

struct nlbuild {
        uint8_t data[8192] __attribute__((aligned(8)));
        size_t len;
        size_t last;                    /* offset of the last message */
};

static inline struct nlmsghdr *nlb_last(struct nlbuild *b)
{
        return (struct nlmsghdr *)(b->data + b->last);
}

/* A message of type with seq, its fixed header (len bytes) copied in. */
static inline void nlb_msg(struct nlbuild *b, uint16_t type, uint32_t seq, const void *hdr, size_t len)
{
        struct nlmsghdr h = { .nlmsg_len = (uint32_t)NLMSG_LENGTH(len), .nlmsg_type = type, .nlmsg_seq = seq };

        b->len = NLMSG_ALIGN(b->len);
        b->last = b->len;
        memcpy(b->data + b->len, &h, sizeof(h));
        if (len)
                memcpy(b->data + b->len + NLMSG_HDRLEN, hdr, len);
        b->len += NLMSG_ALIGN(h.nlmsg_len);
}

static inline void nlb_attr(struct nlbuild *b, uint16_t type, const void *data, size_t len)
{
        struct nlmsghdr *h = nlb_last(b);
        struct rtattr a = { .rta_len = (unsigned short)RTA_LENGTH(len), .rta_type = type };
        size_t at = b->last + NLMSG_ALIGN(h->nlmsg_len);

        memcpy(b->data + at, &a, sizeof(a));
        if (len)
                memcpy(b->data + at + RTA_LENGTH(0), data, len);
        h->nlmsg_len = (uint32_t)(NLMSG_ALIGN(h->nlmsg_len) + RTA_LENGTH(len));
        b->len = at + RTA_ALIGN(RTA_LENGTH(len));
}

static inline void nlb_u32(struct nlbuild *b, uint16_t type, uint32_t v)
{
        nlb_attr(b, type, &v, sizeof(v));
}

static inline void nlb_error(struct nlbuild *b, uint32_t seq, int error)
{
        struct nlmsgerr e = { .error = error };

        nlb_msg(b, NLMSG_ERROR, seq, &e, sizeof(e));
}

static inline void nlb_done(struct nlbuild *b, uint32_t seq)
{
        int zero = 0;

        nlb_msg(b, NLMSG_DONE, seq, &zero, sizeof(zero));
}
