/* SPDX-License-Identifier: MIT */
/* proc_locks: /proc/locks read for a lock's holder (the parser on the kernel's text, then
 * a real flock held by a child). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc_locks.h"
#include "test.h"
#include "util.h"

static const char sample[] =
        "1: POSIX  ADVISORY  WRITE 27518 fe:00:1117536 0 EOF\n"
        "2: FLOCK  ADVISORY  WRITE 27644 fe:00:10953245 0 EOF\n"
        "2: -> FLOCK  ADVISORY  WRITE 30000 fe:00:10953245 0 EOF\n"
        "3: OFDLCK ADVISORY  READ  -1 00:06:9896 0 EOF\n"
        "4: FLOCK  ADVISORY  WRITE 22156 00:2a:777 0 EOF\n"
        "5: LEASE  ACTIVE    READ  4242 08:11:888 0 EOF\n";

static void test_find(void)
{
        size_t n = sizeof(sample) - 1;

        test_assert(proc_locks_find(sample, n, 0xfe, 0x00, 10953245) == 27644);     /* the holder, not the waiter */
        test_assert(proc_locks_find(sample, n, 0xfe, 0x00, 1117536) == 27518);
        test_assert(proc_locks_find(sample, n, 0x08, 0x11, 888) == 4242);
        test_assert(proc_locks_find(sample, n, 0x00, 0x06, 9896) == 0);             /* an OFD lock has no pid */
        test_assert(proc_locks_find(sample, n, 0xfe, 0x00, 424242) == 0);
        /* another device, the same inode: overlayfs shows the lower file system's */
        test_assert(proc_locks_find(sample, n, 0x00, 0x3b, 777) == 22156);
        /* cut short, garbage, NULs: nothing, never a wrong pid */
        test_assert(proc_locks_find(sample, 40, 0xfe, 0x00, 10953245) == 0);
        test_assert(proc_locks_find("x\n\n::\n1: FLOCK A W 12 zz:00:5 0 EOF\n", 35, 0, 0, 5) == 0);
        test_assert(proc_locks_find("1: FLOCK A W 12 01:02:5\0 0 EOF\n", 32, 1, 2, 5) == 0);
        test_assert(proc_locks_find("1: FLOCK A W 99999999999 01:02:5 0 EOF\n", 39, 1, 2, 5) == 0);
        test_assert(proc_locks_find("1: FLOCK A W 12 01:02:5 0 EOF", 29, 1, 2, 5) == 12);   /* no final newline */
}

static void test_holder(void)
{
        char path[] = "/tmp/tunneld-proc-locks-XXXXXX";
        int fd = mkstemp(path), ready[2];
        struct proc_locks_holder h;
        struct stat st;
        pid_t pid;
        char c;

        test_assert(fd >= 0 && pipe(ready) == 0);
        test_assert(fstat(fd, &st) == 0);
        test_assert(proc_locks_holder(&st, &h) == -ENOENT);
        pid = fork();
        if (pid == 0) {
                int lf = open(path, O_RDONLY | O_CLOEXEC);
                if (lf < 0 || flock(lf, LOCK_EX) < 0)
                        _exit(1);
                (void)!write(ready[1], "x", 1);
                pause();
                _exit(0);
        }
        test_assert(read(ready[0], &c, 1) == 1);
        test_assert(proc_locks_holder(&st, &h) == 0);
        test_assert(h.pid == pid);
        test_assert(h.uid == geteuid());
        test_assert(h.comm[0] != '\0');
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(ready[0]);
        close(ready[1]);
        close(fd);
        unlink(path);
}

TEST_MAIN(TEST(test_find), TEST(test_holder))
