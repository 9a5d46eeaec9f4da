/* SPDX-License-Identifier: MIT */
#include "proc_locks.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "util.h"

#define LOCKS_MAX (1u << 20)            /* read at most this much of /proc/locks */

/* Words of one line: "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF", a waiter with
 * "->" after the number. */
static bool parse_line(const char *line, pid_t *ret_pid, unsigned *ret_major, unsigned *ret_minor, uint64_t *ret_ino)
{
        char id[24], type[24], mode[24], rw[24], dev[64];
        unsigned long long major, minor, ino;
        long long pid;
        char *end;
        int k;

        /* %23s: bounded words; a waiter's "->" stands where the type is */
        if (sscanf(line, "%23s %23s %23s %23s %n", id, type, mode, rw, &k) != 4)
                return false;
        if (strcmp(type, "->") == 0)
                return false;
        line += k;
        if (sscanf(line, "%lld %63s", &pid, dev) != 2 || pid <= 0 || pid > INT32_MAX)
                return false;
        errno = 0;
        major = strtoull(dev, &end, 16);
        if (errno || end == dev || *end != ':' || major > UINT32_MAX)
                return false;
        minor = strtoull(end + 1, &end, 16);
        if (errno || *end != ':' || minor > UINT32_MAX)
                return false;
        if (!isdigit((unsigned char)end[1]))
                return false;
        ino = strtoull(end + 1, &end, 10);
        if (errno || *end)
                return false;
        *ret_pid = (pid_t)pid;
        *ret_major = (unsigned)major;
        *ret_minor = (unsigned)minor;
        *ret_ino = ino;
        return true;
}

pid_t proc_locks_find(const char *text, size_t len, unsigned major, unsigned minor, uint64_t ino)
{
        pid_t same_ino = 0;

        for (size_t at = 0; at < len;) {
                const char *nl = memchr(text + at, '\n', len - at);
                size_t n = nl ? (size_t)(nl - (text + at)) : len - at;
                char line[256];
                unsigned ma, mi;
                uint64_t in;
                pid_t pid;

                if (n < sizeof(line) && !memchr(text + at, '\0', n)) {
                        memcpy(line, text + at, n);
                        line[n] = '\0';
                        if (parse_line(line, &pid, &ma, &mi, &in) && in == ino) {
                                if (ma == major && mi == minor)
                                        return pid;
                                if (!same_ino)
                                        same_ino = pid;
                        }
                }
                at += n + 1;
        }
        return same_ino;
}

static uid_t uid_of(pid_t pid, char *comm, size_t size)
{
        char path[64];
        struct stat st;
        FILE *f;

        comm[0] = '\0';
        snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
        f = fopen(path, "re");
        if (f) {
                if (fgets(comm, (int)size, f))
                        comm[strcspn(comm, "\n")] = '\0';
                fclose(f);
        }
        snprintf(path, sizeof(path), "/proc/%d", (int)pid);
        return stat(path, &st) == 0 ? st.st_uid : (uid_t)-1;
}

int proc_locks_holder(const struct stat *st, struct proc_locks_holder *ret)
{
        _cleanup_free_ char *text = NULL;
        _cleanup_close_ int lf = open("/proc/locks", O_RDONLY | O_CLOEXEC);
        size_t len = 0;
        pid_t pid;

        if (lf < 0)
                return -ENOENT;
        text = malloc(LOCKS_MAX);
        if (!text)
                return -ENOMEM;
        while (len < LOCKS_MAX) {
                ssize_t n = read(lf, text + len, LOCKS_MAX - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        pid = proc_locks_find(text, len, major(st->st_dev), minor(st->st_dev), (uint64_t)st->st_ino);
        if (!pid)
                return -ENOENT;
        ret->pid = pid;
        ret->uid = uid_of(pid, ret->comm, sizeof(ret->comm));
        return 0;
}
