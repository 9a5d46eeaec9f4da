/* SPDX-License-Identifier: MIT */
#pragma once

/* tcp_diag: one TCP connection's state from the kernel (NETLINK_SOCK_DIAG: inet_diag with
 * INET_DIAG_INFO, the kernel's struct tcp_info), looked up by its 4-tuple (one request, one
 * reply) or by its socket inode (a bounded dump). The reply's parsing is pure and fuzzed:
 * it is input read from outside. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "endpoint.h"

struct tcp_diag_info {
        struct endpoint local, remote;
        unsigned long inode;
        uint32_t uid;
        uint32_t wqueue, rqueue;        /* bytes not yet acknowledged / not yet read */
        uint8_t state;                  /* the kernel's TCP state: 1 established */
        uint8_t retransmits;            /* timeouts of the oldest unacknowledged segment, 0 once it is */
        uint8_t probes, backoff;
        bool has_info;                  /* the reply carried tcp_info (only for full sockets) */
        bool has_bytes_sent;            /* kernel ≥ 4.19 */
        uint32_t unacked;               /* segments sent, not acknowledged */
        uint32_t total_retrans;         /* retransmitted segments in the connection's life */
        uint32_t last_ack_recv_ms;      /* since the last ACK received */
        uint32_t last_data_recv_ms, last_data_sent_ms;
        uint32_t rtt_us, rttvar_us, rto_us;
        uint32_t notsent_bytes;
        uint64_t bytes_acked, bytes_received, bytes_sent;
};

#define TCP_DIAG_TIMEOUT_MS 200         /* the kernel answers at once; a hung reply is an error */
#define TCP_DIAG_DUMP_MAX (4u << 20)    /* bytes of a dump read for a lookup by inode */

/* The connection local → remote (full addresses and ports): 0, -ENOENT (no such socket),
 * or -errno. */
int tcp_diag_get(const struct endpoint *local, const struct endpoint *remote, struct tcp_diag_info *ret);
/* The TCP socket with this inode (family AF_INET or AF_INET6), from a dump of the
 * established ones: 0, -ENOENT, or -errno. */
int tcp_diag_get_by_inode(int family, unsigned long inode, struct tcp_diag_info *ret);

/* The request for local → remote (exact lookup) or, with remote NULL, for a dump of
 * local's family's sockets in states (a bit per TCP state); its length, 0 if size is too
 * small or the endpoints are not of one family. */
size_t tcp_diag_request(const struct endpoint *local, const struct endpoint *remote, uint32_t states, uint32_t seq,
                        void *buf, size_t size);
/* One datagram of the reply to request seq (pure): 1 and *ret filled when it holds the
 * socket asked for (inode 0: the first socket), 0 if more is to come, -ENOENT when the
 * reply ended without it, -errno for the kernel's error, -EBADMSG if malformed. */
int tcp_diag_parse(const void *buf, size_t len, uint32_t seq, unsigned long inode, struct tcp_diag_info *ret);

/* "established", "syn-sent", … */
const char *tcp_diag_state_name(unsigned state);
