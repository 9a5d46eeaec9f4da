/* SPDX-License-Identifier: MIT */
#pragma once

/* proc_locks: who holds a lock on a file, read from /proc/locks (flock and POSIX locks
 * alike), to name the holder when a lock is refused. */

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Pure (fuzzed): the pid of a holder (not a waiter, "->") of a lock on the file major:minor:
 * ino in text, /proc/locks as the kernel writes it; 0 if none. A line of another device
 * with that inode is taken only if none has the device (overlayfs reports the lower file
 * system's). Lines too long or malformed are skipped. */
pid_t proc_locks_find(const char *text, size_t len, unsigned major, unsigned minor, uint64_t ino);

struct proc_locks_holder {
        pid_t pid;
        uid_t uid;                      /* (uid_t)-1 if the process is gone or hidden */
        char comm[16];                  /* its command name, "" if unknown */
};

/* The holder of a lock on the file st describes: 0, or -ENOENT if /proc/locks shows none
 * (or cannot be read). */
int proc_locks_holder(const struct stat *st, struct proc_locks_holder *ret);
