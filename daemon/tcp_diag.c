/* SPDX-License-Identifier: MIT */
#include "tcp_diag.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include "nlsock.h"
#include "util.h"

#define STATE_ESTABLISHED 1

struct tcp_diag_request_msg {
        struct nlmsghdr h;
        struct inet_diag_req_v2 r;
};

size_t tcp_diag_request(const struct endpoint *local, const struct endpoint *remote, uint32_t states, uint32_t seq,
                        void *buf, size_t size)
{
        struct tcp_diag_request_msg m = {
                .h = {
                        .nlmsg_len = sizeof(m),
                        .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                        .nlmsg_flags = NLM_F_REQUEST | (remote ? 0 : NLM_F_DUMP),
                        .nlmsg_seq = seq,
                },
                .r = {
                        .sdiag_family = (uint8_t)local->family,
                        .sdiag_protocol = IPPROTO_TCP,
                        .idiag_ext = 1 << (INET_DIAG_INFO - 1),
                        .idiag_states = remote ? ~0u : states,
                        .id.idiag_cookie = { INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE },
                },
        };
        size_t alen = endpoint_addr_len(local);

        if (size < sizeof(m) || !alen || (remote && remote->family != local->family))
                return 0;
        if (remote) {
                m.r.id.idiag_sport = htons((uint16_t)local->port);
                m.r.id.idiag_dport = htons((uint16_t)remote->port);
                memcpy(m.r.id.idiag_src, &local->addr, alen);
                memcpy(m.r.id.idiag_dst, &remote->addr, alen);
        }
        memcpy(buf, &m, sizeof(m));
        return sizeof(m);
}

static void take_endpoints(const struct inet_diag_msg *d, struct tcp_diag_info *ret)
{
        size_t alen = d->idiag_family == AF_INET ? 4 : 16;

        ret->local.family = ret->remote.family = d->idiag_family;
        memcpy(&ret->local.addr, d->id.idiag_src, alen);
        memcpy(&ret->remote.addr, d->id.idiag_dst, alen);
        ret->local.port = ntohs(d->id.idiag_sport);
        ret->remote.port = ntohs(d->id.idiag_dport);
        endpoint_unmap_pair(&ret->local, &ret->remote);
}

/* tcp_info as far as this kernel's reaches (an older one sends less, a newer one more) */
static void take_info(const void *data, size_t len, struct tcp_diag_info *ret)
{
        struct tcp_info ti;

        memset(&ti, 0, sizeof(ti));
        memcpy(&ti, data, len < sizeof(ti) ? len : sizeof(ti));
        ret->has_info = len >= offsetof(struct tcp_info, tcpi_total_retrans) + sizeof(ti.tcpi_total_retrans);
        ret->has_bytes_sent = len >= offsetof(struct tcp_info, tcpi_bytes_sent) + sizeof(ti.tcpi_bytes_sent);
        ret->retransmits = ti.tcpi_retransmits;
        ret->probes = ti.tcpi_probes;
        ret->backoff = ti.tcpi_backoff;
        ret->unacked = ti.tcpi_unacked;
        ret->total_retrans = ti.tcpi_total_retrans;
        ret->last_ack_recv_ms = ti.tcpi_last_ack_recv;
        ret->last_data_recv_ms = ti.tcpi_last_data_recv;
        ret->last_data_sent_ms = ti.tcpi_last_data_sent;
        ret->rtt_us = ti.tcpi_rtt;
        ret->rttvar_us = ti.tcpi_rttvar;
        ret->rto_us = ti.tcpi_rto;
        ret->notsent_bytes = ti.tcpi_notsent_bytes;
        ret->bytes_acked = ti.tcpi_bytes_acked;
        ret->bytes_received = ti.tcpi_bytes_received;
        ret->bytes_sent = ret->has_bytes_sent ? ti.tcpi_bytes_sent : 0;
}

/* one inet_diag_msg with its attributes → *ret; -EBADMSG if malformed */
static int take_socket(const struct nlmsghdr *h, struct tcp_diag_info *ret)
{
        struct inet_diag_msg d;
        size_t payload = h->nlmsg_len - NLMSG_HDRLEN, off = 0;
        const char *attrs;
        const struct rtattr *a;
        bool bad = false;

        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(d)))
                return -EBADMSG;
        memcpy(&d, NLMSG_DATA(h), sizeof(d));
        if (d.idiag_family != AF_INET && d.idiag_family != AF_INET6)
                return -EBADMSG;
        memset(ret, 0, sizeof(*ret));
        take_endpoints(&d, ret);
        ret->state = d.idiag_state;
        ret->inode = d.idiag_inode;
        ret->uid = d.idiag_uid;
        ret->wqueue = d.idiag_wqueue;
        ret->rqueue = d.idiag_rqueue;
        attrs = (const char *)NLMSG_DATA(h) + NLMSG_ALIGN(sizeof(d));
        payload = payload > NLMSG_ALIGN(sizeof(d)) ? payload - NLMSG_ALIGN(sizeof(d)) : 0;
        while ((a = nlsock_attr_next(attrs, payload, &off, &bad)))
                if (a->rta_type == INET_DIAG_INFO)
                        take_info(RTA_DATA(a), RTA_PAYLOAD(a), ret);
        return bad ? -EBADMSG : 0;
}

int tcp_diag_parse(const void *buf, size_t len, uint32_t seq, unsigned long inode, struct tcp_diag_info *ret)
{
        const struct nlmsghdr *h;
        size_t off = 0;
        bool bad = false;

        while ((h = nlsock_next(buf, len, &off, &bad))) {
                struct tcp_diag_info info;
                int r;

                if (h->nlmsg_seq != seq)
                        continue;               /* an answer to an earlier question */
                if (h->nlmsg_type == NLMSG_DONE)
                        return -ENOENT;
                if (h->nlmsg_type == NLMSG_ERROR) {
                        r = nlsock_error(h);
                        return r < 0 ? r : -ENOENT;
                }
                if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY)
                        continue;
                r = take_socket(h, &info);
                if (r < 0)
                        return r;
                if (!inode || info.inode == inode) {
                        *ret = info;
                        return 1;
                }
        }
        return bad ? -EBADMSG : 0;
}

struct lookup {
        uint32_t seq;
        unsigned long inode;
        struct tcp_diag_info *ret;
};

static int parse_reply(const void *buf, size_t len, void *userdata)
{
        struct lookup *l = userdata;

        return tcp_diag_parse(buf, len, l->seq, l->inode, l->ret);
}

static int transact(const struct endpoint *local, const struct endpoint *remote, unsigned long inode,
                    struct tcp_diag_info *ret)
{
        struct tcp_diag_request_msg req;
        struct lookup l = { .seq = 1, .inode = inode, .ret = ret };     /* a socket of its own: one question */
        size_t len = tcp_diag_request(local, remote, 1u << STATE_ESTABLISHED, l.seq, &req, sizeof(req));
        _cleanup_close_ int fd = -1;
        int r;

        if (!len)
                return -EINVAL;
        fd = nlsock_open(NETLINK_SOCK_DIAG);
        if (fd < 0)
                return fd;
        r = nlsock_transact(fd, &req, len, TCP_DIAG_TIMEOUT_MS, remote ? NLSOCK_BUFFER : TCP_DIAG_DUMP_MAX,
                            parse_reply, &l);
        return r < 0 ? r : 0;
}

static struct endpoint mapped(const struct endpoint *v4)
{
        struct endpoint e = { .family = AF_INET6, .port = v4->port };

        e.addr.v6.s6_addr[10] = e.addr.v6.s6_addr[11] = 0xff;
        memcpy(&e.addr.v6.s6_addr[12], &v4->addr.v4, 4);
        return e;
}

int tcp_diag_get(const struct endpoint *local, const struct endpoint *remote, struct tcp_diag_info *ret)
{
        int r;

        if (!remote || local->family != remote->family)
                return -EINVAL;
        r = transact(local, remote, 0, ret);
        if (r == -ENOENT && local->family == AF_INET) {
                /* a dual-stack socket's IPv4 connection is an AF_INET6 one to the kernel */
                struct endpoint l6 = mapped(local), r6 = mapped(remote);

                r = transact(&l6, &r6, 0, ret);
        }
        return r;
}

int tcp_diag_get_by_inode(int family, unsigned long inode, struct tcp_diag_info *ret)
{
        struct endpoint any = { .family = family };

        if (!inode)
                return -EINVAL;
        return transact(&any, NULL, inode, ret);
}

const char *tcp_diag_state_name(unsigned state)
{
        static const char *const names[] = {
                [1] = "established", [2] = "syn-sent", [3] = "syn-recv", [4] = "fin-wait-1",
                [5] = "fin-wait-2", [6] = "time-wait", [7] = "close", [8] = "close-wait",
                [9] = "last-ack", [10] = "listen", [11] = "closing",
        };

        return state < ELEMENTSOF(names) && names[state] ? names[state] : "unknown";
}
