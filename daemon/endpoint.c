/* SPDX-License-Identifier: MIT */
#include "endpoint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t endpoint_addr_len(const struct endpoint *e)
{
        return e->family == AF_INET ? 4 : e->family == AF_INET6 ? 16 : 0;
}

const char *endpoint_format_addr(const struct endpoint *e, char *buf, size_t size)
{
        char text[INET6_ADDRSTRLEN];

        if (!e->family || !inet_ntop(e->family, &e->addr, text, sizeof(text)))
                snprintf(buf, size, "(none)");
        else if (e->family == AF_INET6 && e->scope_id)
                snprintf(buf, size, "%s%%%u", text, e->scope_id);
        else
                snprintf(buf, size, "%s", text);
        return buf;
}

const char *endpoint_format(const struct endpoint *e, char *buf, size_t size)
{
        char addr[ENDPOINT_MAX];

        endpoint_format_addr(e, addr, sizeof(addr));
        if (!e->port)
                snprintf(buf, size, "%s", addr);
        else if (e->family == AF_INET6)
                snprintf(buf, size, "[%s]:%u", addr, e->port);
        else
                snprintf(buf, size, "%s:%u", addr, e->port);
        return buf;
}

void endpoint_unmap(struct endpoint *e)
{
        if (e->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&e->addr.v6)) {
                struct in_addr v4;

                memcpy(&v4, &e->addr.v6.s6_addr[12], 4);
                e->family = AF_INET;
                e->addr.v4 = v4;
                e->scope_id = 0;
        }
}

void endpoint_unmap_pair(struct endpoint *a, struct endpoint *b)
{
        if (a->family == AF_INET6 && b->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->addr.v6) &&
            IN6_IS_ADDR_V4MAPPED(&b->addr.v6)) {
                endpoint_unmap(a);
                endpoint_unmap(b);
        }
}

static int parse_port(const char *s, unsigned *ret)
{
        char *end;
        unsigned long v;

        if (*s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno || *end || v == 0 || v > 65535)
                return -EINVAL;
        *ret = (unsigned)v;
        return 0;
}

static int parse_addr(const char *s, struct endpoint *e)
{
        char text[INET6_ADDRSTRLEN + 12];
        size_t len = strlen(s);
        char *pct;

        if (len >= sizeof(text))
                return -EINVAL;
        memcpy(text, s, len + 1);
        pct = strchr(text, '%');
        if (pct) {
                char *end;
                unsigned long scope;

                *pct = '\0';
                errno = 0;
                scope = strtoul(pct + 1, &end, 10);
                if (errno || *end || pct[1] == '\0' || scope > 0xffffffffUL)
                        return -EINVAL;
                e->scope_id = (unsigned)scope;
        }
        if (inet_pton(AF_INET, text, &e->addr.v4) == 1 && !pct)
                e->family = AF_INET;
        else if (inet_pton(AF_INET6, text, &e->addr.v6) == 1)
                e->family = AF_INET6;
        else
                return -EINVAL;
        endpoint_unmap(e);
        return 0;
}

int endpoint_parse(const char *text, struct endpoint *ret)
{
        struct endpoint e = {0};
        char addr[INET6_ADDRSTRLEN + 12];
        const char *colon;
        int r;

        if (text[0] == '[') {
                const char *close = strchr(text, ']');

                if (!close || (size_t)(close - text - 1) >= sizeof(addr))
                        return -EINVAL;
                memcpy(addr, text + 1, (size_t)(close - text - 1));
                addr[close - text - 1] = '\0';
                if (!strchr(addr, ':'))
                        return -EINVAL;         /* brackets are for IPv6 only */
                if (close[1] == ':')
                        r = parse_port(close + 2, &e.port);
                else
                        r = close[1] ? -EINVAL : 0;
                if (r < 0)
                        return r;
        } else if ((colon = strchr(text, ':')) && !strchr(colon + 1, ':')) {
                /* one colon: IPv4 with a port */
                if ((size_t)(colon - text) >= sizeof(addr))
                        return -EINVAL;
                memcpy(addr, text, (size_t)(colon - text));
                addr[colon - text] = '\0';
                r = parse_port(colon + 1, &e.port);
                if (r < 0)
                        return r;
        } else {
                size_t len = strlen(text);

                if (len >= sizeof(addr))
                        return -EINVAL;
                memcpy(addr, text, len + 1);
        }
        r = parse_addr(addr, &e);
        if (r < 0)
                return r;
        *ret = e;
        return 0;
}

int endpoint_from_sockaddr(const struct sockaddr *sa, size_t len, struct endpoint *ret)
{
        struct endpoint e = {0};

        if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

                e.family = AF_INET;
                e.addr.v4 = in->sin_addr;
                e.port = ntohs(in->sin_port);
        } else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

                e.family = AF_INET6;
                e.addr.v6 = in6->sin6_addr;
                e.port = ntohs(in6->sin6_port);
                e.scope_id = in6->sin6_scope_id;
        } else
                return -EAFNOSUPPORT;
        endpoint_unmap(&e);
        *ret = e;
        return 0;
}

size_t endpoint_to_sockaddr(const struct endpoint *e, struct sockaddr_storage *ret)
{
        memset(ret, 0, sizeof(*ret));
        if (e->family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *)ret;

                in->sin_family = AF_INET;
                in->sin_addr = e->addr.v4;
                in->sin_port = htons((uint16_t)e->port);
                return sizeof(*in);
        }
        if (e->family == AF_INET6) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ret;

                in6->sin6_family = AF_INET6;
                in6->sin6_addr = e->addr.v6;
                in6->sin6_port = htons((uint16_t)e->port);
                in6->sin6_scope_id = e->scope_id;
                return sizeof(*in6);
        }
        return 0;
}

bool endpoint_same_addr(const struct endpoint *a, const struct endpoint *b)
{
        return a->family == b->family && a->family &&
               memcmp(&a->addr, &b->addr, endpoint_addr_len(a)) == 0;
}

bool endpoint_equal(const struct endpoint *a, const struct endpoint *b)
{
        return endpoint_same_addr(a, b) && a->port == b->port;
}
