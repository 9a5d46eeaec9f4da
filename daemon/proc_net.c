/* SPDX-License-Identifier: MIT */
#include "proc_net.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define SOCKETS_MAX 512                 /* a master's sockets looked at; more are not counted */
#define PROC_SCAN_MAX 65536             /* /proc entries looked at for a proxy's pid */
#define PROXY_DEPTH 3
#define PROXY_WIDTH 16                  /* processes looked at per level */

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

struct fd_socket {
        int fd;
        unsigned long inode;
};

/* pid's socket descriptors, ascending (readdir of /proc/PID/fd is not sorted everywhere) */
static int cmp_fd(const void *a, const void *b)
{
        const struct fd_socket *x = a, *y = b;

        return (x->fd > y->fd) - (x->fd < y->fd);
}

static int socket_fds(pid_t pid, struct fd_socket *out, size_t max, size_t *n)
{
        char dir[64];
        __attribute__((cleanup(closedirp))) DIR *d = NULL;
        struct dirent *e;

        snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
        d = opendir(dir);
        if (!d)
                return -errno;
        while ((e = readdir(d)) && *n < max) {
                char target[64];
                ssize_t k;
                char *end;
                long fd = strtol(e->d_name, &end, 10);

                if (*end || end == e->d_name || fd < 0)
                        continue;
                k = readlinkat(dirfd(d), e->d_name, target, sizeof(target) - 1);
                if (k > 0) {
                        target[k] = '\0';
                        if (sscanf(target, "socket:[%lu]", &out[*n].inode) == 1)
                                out[(*n)++].fd = (int)fd;
                }
        }
        qsort(out, *n, sizeof(*out), cmp_fd);
        return 0;
}

static int hex_u32(const char *s, size_t len, uint32_t *ret)
{
        uint32_t v = 0;

        for (size_t i = 0; i < len; i++) {
                int c = (unsigned char)s[i];

                if (!isxdigit(c))
                        return -EINVAL;
                v = v << 4 | (uint32_t)(isdigit(c) ? c - '0' : tolower(c) - 'a' + 10);
        }
        *ret = v;
        return 0;
}

/* "0100007F:0016" (the address as the kernel's u32 words in host order, %08X each, then
 * the port) → an endpoint */
static int parse_hex_endpoint(const char *s, size_t len, struct endpoint *ret)
{
        const char *colon = memchr(s, ':', len);
        size_t alen = colon ? (size_t)(colon - s) : 0;
        uint32_t port, w[4];

        if (!colon || len - alen - 1 != 4 || hex_u32(colon + 1, 4, &port) < 0)
                return -EINVAL;
        memset(ret, 0, sizeof(*ret));
        if (alen == 8) {
                if (hex_u32(s, 8, &w[0]) < 0)
                        return -EINVAL;
                ret->family = AF_INET;
                memcpy(&ret->addr.v4, &w[0], 4);
        } else if (alen == 32) {
                for (size_t i = 0; i < 4; i++)
                        if (hex_u32(s + 8 * i, 8, &w[i]) < 0)
                                return -EINVAL;
                ret->family = AF_INET6;
                memcpy(&ret->addr.v6, w, 16);
        } else
                return -EINVAL;
        ret->port = port;
        return 0;
}

/* the next blank-separated field of s: its start and length; NULL at the end */
static const char *field(const char **s, size_t *len)
{
        const char *p = *s, *start;

        while (*p == ' ' || *p == '\t')
                p++;
        if (!*p || *p == '\n')
                return NULL;
        start = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n')
                p++;
        *len = (size_t)(p - start);
        *s = p;
        return start;
}

int proc_net_parse_line(const char *line, struct proc_net_socket *ret)
{
        /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
        const char *f[10];
        size_t len[10];
        const char *p = line;
        struct endpoint local, remote;
        uint32_t st;
        char *end;
        unsigned long inode;
        char num[24];

        for (int i = 0; i < 10; i++)
                if (!(f[i] = field(&p, &len[i])))
                        return 0;
        if (len[0] < 2 || f[0][len[0] - 1] != ':' ||
            parse_hex_endpoint(f[1], len[1], &local) < 0 || parse_hex_endpoint(f[2], len[2], &remote) < 0 ||
            local.family != remote.family || len[3] != 2 || hex_u32(f[3], 2, &st) < 0 ||
            len[9] >= sizeof(num) || !isdigit((unsigned char)f[9][0]))
                return 0;
        endpoint_unmap_pair(&local, &remote);   /* a dual-stack socket's IPv4 connection */
        memcpy(num, f[9], len[9]);
        num[len[9]] = '\0';
        errno = 0;
        inode = strtoul(num, &end, 10);
        if (errno || *end)
                return 0;
        ret->local = local;
        ret->remote = remote;
        ret->state = st;
        ret->inode = inode;
        return 1;
}

static const struct fd_socket *find_inode(const struct fd_socket *fds, size_t n, unsigned long inode)
{
        for (size_t i = 0; i < n; i++)
                if (fds[i].inode == inode)
                        return &fds[i];
        return NULL;
}

static int cmp_socket(const void *a, const void *b)
{
        const struct proc_net_socket *x = a, *y = b;

        return (x->fd > y->fd) - (x->fd < y->fd);
}

int proc_net_connections(pid_t pid, struct proc_net_socket *out, size_t max, size_t *ret_n)
{
        static const char *const tables[] = { "tcp", "tcp6" };
        _cleanup_free_ struct fd_socket *fds = calloc(SOCKETS_MAX, sizeof(*fds));
        size_t n = 0, found = 0;
        int r;

        if (!fds)
                return -ENOMEM;
        r = socket_fds(pid, fds, SOCKETS_MAX, &n);
        if (r < 0)
                return r;
        for (size_t k = 0; n && k < ELEMENTSOF(tables) && found < max; k++) {
                char path[64], line[512];
                _cleanup_fclose_ FILE *f = NULL;

                snprintf(path, sizeof(path), "/proc/%d/net/%s", (int)pid, tables[k]);
                f = fopen(path, "re");
                if (!f)
                        continue;       /* no IPv6 here */
                while (found < max && fgets(line, sizeof(line), f)) {
                        struct proc_net_socket s = { .pid = pid };
                        const struct fd_socket *fs;

                        if (proc_net_parse_line(line, &s) != 1 || s.state != PROC_NET_TCP_ESTABLISHED ||
                            !(fs = find_inode(fds, n, s.inode)))
                                continue;
                        s.fd = fs->fd;
                        out[found++] = s;
                }
        }
        qsort(out, found, sizeof(*out), cmp_socket);
        *ret_n = found;
        return 0;
}

int proc_net_established(pid_t pid, proc_net_match_t match, void *userdata)
{
        _cleanup_free_ struct proc_net_socket *s = calloc(SOCKETS_MAX, sizeof(*s));
        size_t n = 0;
        int count = 0, r;

        if (!s)
                return -ENOMEM;
        r = proc_net_connections(pid, s, SOCKETS_MAX, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (!match || match(s[i].local.port, s[i].remote.port, userdata))
                        count++;
        return count;
}

int proc_net_server_connection(pid_t pid, unsigned port, struct proc_net_socket *ret)
{
        _cleanup_free_ struct proc_net_socket *s = calloc(SOCKETS_MAX, sizeof(*s));
        size_t n = 0;
        int r;

        if (!s)
                return -ENOMEM;
        r = proc_net_connections(pid, s, SOCKETS_MAX, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (!port || s[i].remote.port == port) {
                        *ret = s[i];
                        return 0;
                }
        return -ENOENT;
}

int proc_net_parse_ppid(const char *stat, pid_t *ret)
{
        /* "PID (COMM) S PPID ...": COMM may hold anything, ')' included: the last one ends it */
        const char *close = strrchr(stat, ')');
        char state;
        int ppid;

        if (!close || sscanf(close + 1, " %c %d", &state, &ppid) != 2 || ppid < 0)
                return -EINVAL;
        *ret = (pid_t)ppid;
        return 0;
}

/* pid's children (at most max), from every /proc/N/stat: this kernel may lack
 * /proc/PID/task/TID/children. Bounded by PROC_SCAN_MAX entries. */
static int children(pid_t pid, pid_t *out, size_t max, size_t *ret_n)
{
        __attribute__((cleanup(closedirp))) DIR *d = opendir("/proc");
        struct dirent *e;
        size_t n = 0, seen = 0;

        if (!d)
                return -errno;
        while ((e = readdir(d)) && n < max && seen++ < PROC_SCAN_MAX) {
                char path[64], stat[512];
                char *end;
                long child = strtol(e->d_name, &end, 10);
                _cleanup_close_ int fd = -1;
                ssize_t k;
                pid_t ppid;

                if (*end || end == e->d_name || child <= 0)
                        continue;
                snprintf(path, sizeof(path), "/proc/%ld/stat", child);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                k = read(fd, stat, sizeof(stat) - 1);
                if (k <= 0)
                        continue;
                stat[k] = '\0';
                if (proc_net_parse_ppid(stat, &ppid) == 0 && ppid == pid)
                        out[n++] = (pid_t)child;
        }
        *ret_n = n;
        return 0;
}

int proc_net_proxy_connection(pid_t pid, unsigned port, struct proc_net_socket *ret)
{
        pid_t level[PROXY_WIDTH], next[PROXY_WIDTH] = {0};
        size_t n = 1;

        level[0] = pid;
        for (int depth = 0; depth < PROXY_DEPTH && n; depth++) {
                size_t m = 0;

                for (size_t i = 0; i < n && m < PROXY_WIDTH; i++) {
                        size_t k = 0;
                        int r = children(level[i], next + m, PROXY_WIDTH - m, &k);

                        if (r < 0)
                                return r;
                        m += k;
                }
                for (size_t i = 0; i < m; i++)
                        if (proc_net_server_connection(next[i], port, ret) == 0)
                                return 0;
                memcpy(level, next, m * sizeof(*next));
                n = m;
        }
        return -ENOENT;
}
