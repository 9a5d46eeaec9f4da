/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"
#include "test.h"
#include "util.h"

static void test_format_duration(void)
{
        char b[DURATION_MAX];

        test_assert_streq(format_duration(0.0004, b, sizeof(b)), "0 ms");
        test_assert_streq(format_duration(0.85, b, sizeof(b)), "850 ms");
        test_assert_streq(format_duration(2.14, b, sizeof(b)), "2.1 s");
        test_assert_streq(format_duration(0.9996, b, sizeof(b)), "1.0 s");
        test_assert_streq(format_duration(40, b, sizeof(b)), "40 s");
        test_assert_streq(format_duration(182, b, sizeof(b)), "3 min 2 s");
        test_assert_streq(format_duration(300, b, sizeof(b)), "5 min");
        test_assert_streq(format_duration(7500, b, sizeof(b)), "2 h 5 min");
        test_assert_streq(format_duration(-3, b, sizeof(b)), "0 ms");
}

static void test_strv(void)
{
        _cleanup_strv_free_ char **a = NULL, **b = NULL;

        test_assert(strv_length(a) == 0);
        test_assert(strv_push(&a, "x") == 0);
        test_assert(strv_push(&a, "y") == 0);
        test_assert(strv_length(a) == 2);
        test_assert(strv_copy(a, &b) == 0);
        test_assert(strv_equal(a, b));
        test_assert(strv_push(&b, "z") == 0);
        test_assert(!strv_equal(a, b));
        test_assert(strv_equal(NULL, NULL));
}

static void test_shell_quote(void)
{
        char *argv[] = { "ssh", "-o", "ProxyCommand=ssh -W %h:%p j", "it's", "", NULL };
        _cleanup_free_ char *s = NULL;

        test_assert(shell_quote_argv(argv, &s) == 0);
        test_assert_streq(s, "ssh -o 'ProxyCommand=ssh -W %h:%p j' 'it'\\''s' ''");
}

static void test_buf_json(void)
{
        struct buf b = {0};
        _cleanup_free_ char *s = NULL;

        buf_json_string(&b, "a\"b\\c\n\x01");
        test_assert(buf_steal(&b, &s) == 0);
        test_assert_streq(s, "\"a\\\"b\\\\c\\n\\u0001\"");
}

static void test_random_unit(void)
{
        double lo = 1, hi = 0;

        for (int i = 0; i < 10000; i++) {
                double r = random_unit();
                test_assert(r >= 0 && r < 1);
                lo = r < lo ? r : lo;
                hi = r > hi ? r : hi;
        }
        test_assert(lo < 0.01 && hi > 0.99);
}


static char *slurp(const char *path)
{
        static char text[256];
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : -1;

        if (fd >= 0)
                close(fd);
        if (n < 0)
                return NULL;
        text[n] = '\0';
        return text;
}

static size_t entries(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        size_t n = 0;

        while (d && (e = readdir(d)))
                n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
        if (d)
                closedir(d);
        return n;
}

/* A FIFO or a symlink at any name, even the file's own, neither blocks nor redirects the
 * write; nothing is left behind; a directory others can write (not sticky) is refused. */
static void test_write_file_atomic(void)
{
        char dir[] = "/tmp/tunneld-util-XXXXXX", path[128], victim[128], fifo[160];
        struct stat st;

        test_assert(mkdtemp(dir) != NULL);
        snprintf(path, sizeof(path), "%s/f", dir);
        snprintf(victim, sizeof(victim), "%s/victim", dir);
        test_assert(write_file_atomic(path, "one\n", 0640) == 0);
        test_assert_streq(slurp(path), "one\n");
        test_assert(stat(path, &st) == 0 && (st.st_mode & 07777) == 0640);

        /* the old scheme's temporary name, and the name itself, as FIFOs */
        snprintf(fifo, sizeof(fifo), "%s.tmp.%d", path, (int)getpid());
        test_assert(mkfifo(fifo, 0666) == 0);
        test_assert(unlink(path) == 0 && mkfifo(path, 0666) == 0);
        test_assert(write_file_atomic(path, "two\n", 0600) == 0);
        test_assert(lstat(path, &st) == 0 && S_ISREG(st.st_mode));
        test_assert_streq(slurp(path), "two\n");
        test_assert(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));
        test_assert(unlink(fifo) == 0);

        /* the name a symlink: replaced, its target untouched */
        test_assert(write_file_atomic(victim, "precious\n", 0600) == 0);
        test_assert(unlink(path) == 0 && symlink(victim, path) == 0);
        test_assert(write_file_atomic(path, "three\n", 0600) == 0);
        test_assert(lstat(path, &st) == 0 && S_ISREG(st.st_mode));
        test_assert_streq(slurp(victim), "precious\n");
        test_assert(entries(dir) == 2);         /* f and victim: no temporary file left */

        /* a directory anyone can rename files in: not written into */
        test_assert(chmod(dir, 0777) == 0);
        test_assert(write_file_atomic(path, "four\n", 0600) == -EPERM);
        test_assert(chmod(dir, 01777) == 0);    /* sticky: the unguessable name is enough */
        test_assert(write_file_atomic(path, "five\n", 0600) == 0);
        test_assert(chmod(dir, 0700) == 0);

        unlink(path);
        unlink(victim);
        rmdir(dir);
}

/* The runtime directory is written through the fd it was made with: swapped for a link to
 * another directory, it is not written into (-ESTALE), and its removal leaves the other
 * directory alone. */
static void test_runtime_dir_swapped(void)
{
        char dir[] = "/tmp/tunneld-util-XXXXXX", sock[128], moved[128], other[128], path[200], there[200];
        char *rt = NULL;

        test_assert(mkdtemp(dir) != NULL);
        snprintf(sock, sizeof(sock), "%s/control", dir);
        snprintf(moved, sizeof(moved), "%s/moved", dir);
        snprintf(other, sizeof(other), "%s/other", dir);
        test_assert(runtime_dir_create(sock, &rt) == 0);
        if (!rt)
                return;
        snprintf(path, sizeof(path), "%s/t.ssh_config", rt);
        snprintf(there, sizeof(there), "%s/t.ssh_config", other);
        test_assert(write_file_atomic(path, "Host *\n", 0600) == 0);
        test_assert_streq(slurp(path), "Host *\n");

        test_assert(mkdir(other, 0700) == 0);
        test_assert(rename(rt, moved) == 0 && symlink(other, rt) == 0);
        test_assert(write_file_atomic(path, "Host evil\n", 0600) == -ESTALE);
        test_assert(access(there, F_OK) < 0);
        runtime_dir_remove(rt);
        test_assert(access(other, F_OK) == 0);  /* not ours: left alone */
        test_assert(access(moved, F_OK) == 0);  /* ours, emptied (its path was taken) */
        test_assert(entries(moved) == 0);

        /* a runtime directory that is a symlink from the start: refused */
        test_assert(unlink(rt) == 0 && symlink(other, rt) == 0);
        free(rt);
        rt = NULL;
        test_assert(runtime_dir_create(sock, &rt) == -ELOOP);
        snprintf(path, sizeof(path), "%s.d", sock);
        unlink(path);
        rmdir(moved);
        rmdir(other);
        rmdir(dir);
}

TEST_MAIN(TEST(test_format_duration), TEST(test_strv), TEST(test_shell_quote), TEST(test_buf_json),
          TEST(test_random_unit), TEST(test_write_file_atomic), TEST(test_runtime_dir_swapped))
