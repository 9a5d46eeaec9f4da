/* SPDX-License-Identifier: MIT */
/* libFuzzer target: what the kernel sends tunneld over netlink, as a broken or hostile
 * sender could shape it. The first byte picks the reader: 0 tcp_diag (sock_diag replies,
 * exact and by inode), 1 netpath's route reply, 2 netpath's address dump, 3 netwatch's
 * events; the rest is one datagram, copied to an aligned buffer as a recv() fills it.
 * The seeds are real replies of this kernel (answers to seq 1) and hand-made events. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "netpath.h"
#include "netwatch.h"
#include "tcp_diag.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool count(const struct endpoint *addr, int ifindex, uint32_t flags, void *userdata)
{
        size_t *n = userdata;

        (void)flags;
        (void)ifindex;
        if (addr->family != AF_INET && addr->family != AF_INET6)
                abort();
        return ++*n < 64;
}

static void check_endpoint(const struct endpoint *e)
{
        char buf[ENDPOINT_MAX];

        if (e->family && e->family != AF_INET && e->family != AF_INET6)
                abort();
        if (strlen(endpoint_format(e, buf, sizeof(buf))) >= sizeof(buf))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        void *buf;
        size_t len;
        int r;

        if (size < 1)
                return 0;
        len = size - 1;
        buf = malloc(len ? len : 1);
        if (!buf)
                return 0;
        memcpy(buf, data + 1, len);
        switch (data[0] % 4) {
        case 0: {
                struct tcp_diag_info d;

                r = tcp_diag_parse(buf, len, 1, 0, &d);
                if (r == 1) {
                        check_endpoint(&d.local);
                        check_endpoint(&d.remote);
                        if (d.local.family != d.remote.family || !d.local.family)
                                abort();
                } else if (r != 0 && (r < -4095 || r > 0))
                        abort();
                (void)tcp_diag_parse(buf, len, 1, 12345, &d);
                break;
        }
        case 1: {
                struct netpath_route rt;

                r = netpath_parse_route(buf, len, 1, &rt);
                if (r == 1) {
                        check_endpoint(&rt.src);
                        check_endpoint(&rt.gateway);
                        if (rt.error > 0 || rt.error < -4095 || rt.ifindex < 0)
                                abort();
                } else if (r != 0 && r != -EBADMSG)
                        abort();
                break;
        }
        case 2: {
                size_t n = 0;

                r = netpath_parse_addrs(buf, len, 1, count, &n);
                if (r > 1 || r < -4095 || n > 64)
                        abort();
                break;
        }
        default:
                if (netwatch_parse(buf, len) & ~0x7fu)
                        abort();
                break;
        }
        free(buf);
        return 0;
}
