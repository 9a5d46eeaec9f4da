/* SPDX-License-Identifier: MIT */
#include "proc_net.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SOCKETS_MAX 512                 /* a master's sockets looked at; more are not counted */
#define TCP_ESTABLISHED 1

static int socket_inodes(pid_t pid, unsigned long *inodes, size_t max, size_t *n)
{
        char dir[64];
        DIR *d;
        struct dirent *e;

        snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
        d = opendir(dir);
        if (!d)
                return -errno;
        while ((e = readdir(d)) && *n < max) {
                char target[64];
                ssize_t k = readlinkat(dirfd(d), e->d_name, target, sizeof(target) - 1);

                if (k > 0) {
                        target[k] = '\0';
                        if (sscanf(target, "socket:[%lu]", &inodes[*n]) == 1)
                                (*n)++;
                }
        }
        closedir(d);
        return 0;
}

static bool has_inode(const unsigned long *inodes, size_t n, unsigned long inode)
{
        for (size_t i = 0; i < n; i++)
                if (inodes[i] == inode)
                        return true;
        return false;
}

int proc_net_established(pid_t pid, proc_net_match_t match, void *userdata)
{
        static const char *const tables[] = { "/proc/net/tcp", "/proc/net/tcp6" };
        unsigned long inodes[SOCKETS_MAX];
        size_t n = 0;
        int count = 0, r = socket_inodes(pid, inodes, SOCKETS_MAX, &n);

        if (r < 0)
                return r;
        for (size_t k = 0; n && k < 2; k++) {
                FILE *f = fopen(tables[k], "re");
                char line[512];

                if (!f)
                        continue;
                while (fgets(line, sizeof(line), f)) {
                        char local[64], remote[64];
                        unsigned st, lport, rport;
                        unsigned long inode;
                        const char *lp, *rp;

                        if (sscanf(line, " %*d: %63s %63s %x %*s %*s %*s %*s %*s %lu", local, remote, &st, &inode) != 4 ||
                            st != TCP_ESTABLISHED || !(lp = strrchr(local, ':')) || !(rp = strrchr(remote, ':')) ||
                            !has_inode(inodes, n, inode))
                                continue;
                        lport = (unsigned)strtoul(lp + 1, NULL, 16);
                        rport = (unsigned)strtoul(rp + 1, NULL, 16);
                        if (!match || match(lport, rport, userdata))
                                count++;
                }
                fclose(f);
        }
        return count;
}
