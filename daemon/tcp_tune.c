/* SPDX-License-Identifier: MIT */
#include "tcp_tune.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "proc_net.h"
#include "util.h"

/* glibc 2.36 has wrappers; the system calls work wherever the kernel (≥ 5.6) has them */
static int pidfd_open_(pid_t pid)
{
        long r = syscall(SYS_pidfd_open, pid, 0);

        return r < 0 ? -errno : (int)r;
}

static int pidfd_getfd_(int pidfd, int fd)
{
        long r = syscall(SYS_pidfd_getfd, pidfd, fd, 0);

        return r < 0 ? -errno : (int)r;
}

/* hand over a descriptor its cleanup would close */
static int take_fd(int *fd)
{
        int k = *fd;

        *fd = -1;
        return k;
}

/* which of pid's descriptors is the connection local → remote */
static int find_fd(pid_t pid, const struct endpoint *local, const struct endpoint *remote)
{
        struct proc_net_socket s[64];
        size_t n = 0;
        int r = proc_net_connections(pid, s, ELEMENTSOF(s), &n);

        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (endpoint_equal(&s[i].local, local) && endpoint_equal(&s[i].remote, remote))
                        return s[i].fd;
        return -ENOENT;
}

/* pid's descriptor fd, duplicated here (O_CLOEXEC: pidfd_getfd sets it), if it is still
 * the TCP connection local → remote: a descriptor number is reused once closed */
static int grab(pid_t pid, int fd, const struct endpoint *local, const struct endpoint *remote)
{
        _cleanup_close_ int pidfd = -1, sock = -1;
        struct sockaddr_storage sa;
        socklen_t len;
        struct endpoint l, r;
        int type;

        if (fd < 0) {
                fd = find_fd(pid, local, remote);
                if (fd < 0)
                        return fd;
        }
        pidfd = pidfd_open_(pid);
        if (pidfd < 0)
                return pidfd;
        sock = pidfd_getfd_(pidfd, fd);
        if (sock < 0)
                return sock == -EBADF ? -ESTALE : sock;
        len = sizeof(type);
        if (getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
                return -ESTALE;
        len = sizeof(sa);
        if (getsockname(sock, (struct sockaddr *)&sa, &len) < 0 ||
            endpoint_from_sockaddr((struct sockaddr *)&sa, len, &l) < 0)
                return -ESTALE;
        len = sizeof(sa);
        if (getpeername(sock, (struct sockaddr *)&sa, &len) < 0 ||
            endpoint_from_sockaddr((struct sockaddr *)&sa, len, &r) < 0)
                return -ESTALE;
        if (!endpoint_equal(&l, local) || !endpoint_equal(&r, remote))
                return -ESTALE;
        return take_fd(&sock);
}

int tcp_tune_user_timeout(pid_t pid, int fd, const struct endpoint *local, const struct endpoint *remote,
                          unsigned ms)
{
        _cleanup_close_ int sock = grab(pid, fd, local, remote);

        if (sock < 0)
                return sock;
        if (setsockopt(sock, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms)) < 0)
                return -errno;
        return 0;
}

int tcp_tune_get_user_timeout(pid_t pid, int fd, const struct endpoint *local, const struct endpoint *remote,
                              unsigned *ret_ms)
{
        _cleanup_close_ int sock = grab(pid, fd, local, remote);
        socklen_t len = sizeof(*ret_ms);

        if (sock < 0)
                return sock;
        if (getsockopt(sock, IPPROTO_TCP, TCP_USER_TIMEOUT, ret_ms, &len) < 0)
                return -errno;
        return 0;
}
