/* SPDX-License-Identifier: MIT */
/* safe_path: sshd's rule, one component at a time (a table), then whole paths walked on
 * real directories (as root: files given to another uid), links and missing parts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safe_path.h"
#include "test.h"
#include "util.h"

#define OTHER 12345             /* a uid that is neither root nor us */

static void test_judge(void)
{
        static const struct {
                mode_t mode;
                uid_t owner;
                bool strict;
                const char *verdict;    /* NULL: trusted */
        } rows[] = {
                { S_IFREG | 0644, 0, false, NULL },
                { S_IFREG | 0755, 0, false, NULL },
                { S_IFREG | 0600, 0, true, NULL },
                { S_IFREG | 0664, 0, false, "writable by group or others (mode 0664): fix with chmod go-w" },
                { S_IFREG | 0646, 0, false, "writable by group or others (mode 0646): fix with chmod go-w" },
                { S_IFREG | 0644, OTHER, false,
                  "owned by uid 12345, neither root nor tunneld's user (uid 0): fix with chown" },
                { S_IFDIR | 0755, 0, false, NULL },
                { S_IFDIR | 0755, 0, true, NULL },
                { S_IFDIR | 0777, 0, false, "writable by group or others (mode 0777): fix with chmod go-w" },
                { S_IFDIR | 01777, 0, false, NULL },    /* sticky, like /tmp: on the way */
                { S_IFDIR | 01777, 0, true, "writable by group or others (mode 1777): fix with chmod go-w (sticky "
                                            "is not enough here)" },
                { S_IFDIR | 01775, 0, true, "writable by group or others (mode 1775): fix with chmod go-w (sticky "
                                            "is not enough here)" },
                { S_IFDIR | 0755, OTHER, false,
                  "owned by uid 12345, neither root nor tunneld's user (uid 0): fix with chown" },
                { S_IFDIR | 01777, OTHER, false,
                  "owned by uid 12345, neither root nor tunneld's user (uid 0): fix with chown" },
                { S_IFLNK | 0777, 0, false, NULL },     /* a link's mode means nothing */
                { S_IFLNK | 0777, OTHER, false,
                  "owned by uid 12345, neither root nor tunneld's user (uid 0): fix with chown -h" },
                { S_IFIFO | 0666, 0, false, "writable by group or others (mode 0666): fix with chmod go-w" },
        };
        char buf[256];

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                struct stat st = { .st_mode = rows[i].mode, .st_uid = rows[i].owner };
                const char *v = safe_path_judge(&st, 0, rows[i].strict, buf, sizeof(buf));

                if (!rows[i].verdict)
                        test_assert(v == NULL);
                else
                        test_assert_streq(v, rows[i].verdict);
        }
        /* tunneld's own user is as good as root */
        {
                struct stat st = { .st_mode = S_IFREG | 0644, .st_uid = 999 };
                test_assert(safe_path_judge(&st, 999, false, buf, sizeof(buf)) == NULL);
                test_assert(safe_path_judge(&st, 998, false, buf, sizeof(buf)) != NULL);
        }
}

static void touch(const char *path, mode_t mode)
{
        FILE *f = fopen(path, "we");

        test_assert(f != NULL);
        if (f)
                fclose(f);
        test_assert(chmod(path, mode) == 0);
}

static char *check(const char *path, enum safe_path_kind kind, int *ret)
{
        char why[512] = "";

        *ret = safe_path_check(path, kind, why, sizeof(why));
        return strdup(why);
}

#define EXPECT(path, kind, r_expected, why_expected) do {                                  \
                int _r;                                                                 \
                _cleanup_free_ char *_why = check(path, kind, &_r);                     \
                test_assert(_r == (r_expected));                                        \
                if ((r_expected) < 0)                                                   \
                        test_assert_streq(_why, why_expected);                          \
        } while (0)

static void test_walk(void)
{
        char dir[] = "/tmp/tunneld-safe-path-XXXXXX", a[128], b[128], f[160], g[160], link[160], w[160], want[1024];

        if (geteuid() != 0) {
                printf("# not root: walks with other owners skipped\n");
                return;
        }
        test_assert(mkdtemp(dir) != NULL);
        test_assert(chmod(dir, 0755) == 0);
        snprintf(a, sizeof(a), "%s/a", dir);
        snprintf(b, sizeof(b), "%s/a/b", dir);
        snprintf(f, sizeof(f), "%s/a/b/f", dir);
        snprintf(g, sizeof(g), "%s/a/b/g", dir);
        snprintf(link, sizeof(link), "%s/link", dir);
        snprintf(w, sizeof(w), "%s/w", dir);
        test_assert(mkdir(a, 0755) == 0 && mkdir(b, 0755) == 0);
        touch(f, 0644);

        EXPECT(f, SAFE_PATH_FILE, 0, "");
        EXPECT(b, SAFE_PATH_DIR, 0, "");
        EXPECT(f, SAFE_PATH_NEW, 0, "");
        EXPECT(g, SAFE_PATH_NEW, 0, "");        /* missing, in a directory only root can write */

        /* the file itself, its directory, one further up */
        test_assert(chmod(f, 0666) == 0);
        EXPECT(f, SAFE_PATH_FILE, -EPERM, "writable by group or others (mode 0666): fix with chmod go-w");
        test_assert(chmod(f, 0644) == 0);
        test_assert(chmod(b, 0777) == 0);
        snprintf(want, sizeof(want), "its directory %s is writable by group or others (mode 0777): fix with chmod go-w",
                 b);
        EXPECT(f, SAFE_PATH_FILE, -EPERM, want);
        EXPECT(g, SAFE_PATH_NEW, -EPERM, want);
        snprintf(want, sizeof(want), "writable by group or others (mode 0777): fix with chmod go-w");
        EXPECT(b, SAFE_PATH_DIR, -EPERM, want);
        test_assert(chmod(b, 01777) == 0);     /* sticky: fine for a file read, not where names are made */
        EXPECT(f, SAFE_PATH_FILE, 0, "");
        EXPECT(g, SAFE_PATH_RENAMED, 0, "");
        snprintf(want, sizeof(want), "its directory %s is writable by group or others (mode 1777): fix with chmod "
                 "go-w (sticky is not enough here)", b);
        EXPECT(g, SAFE_PATH_NEW, -EPERM, want);
        /* missing there: anyone could make it first, if tunneld is to make it */
        snprintf(want, sizeof(want), "%s/m does not exist, and its directory %s is writable by group or others "
                 "(mode 1777): anyone could make it first; fix with chmod go-w", b, b);
        {
                char m[200];
                snprintf(m, sizeof(m), "%s/m/x", b);
                EXPECT(m, SAFE_PATH_NEW, -EPERM, want);
                EXPECT(m, SAFE_PATH_FILE, 0, "");       /* read: judged again at each load */
        }
        test_assert(chmod(b, 0755) == 0);
        test_assert(chown(a, OTHER, 0) == 0);
        snprintf(want, sizeof(want), "the directory %s above it is owned by uid 12345, neither root nor tunneld's "
                 "user (uid 0): fix with chown", a);
        EXPECT(f, SAFE_PATH_FILE, -EPERM, want);
        test_assert(chown(a, 0, 0) == 0);

        /* links: their owner, then what they lead to */
        test_assert(symlink(f, link) == 0);
        EXPECT(link, SAFE_PATH_FILE, 0, "");
        test_assert(lchown(link, OTHER, 0) == 0);
        EXPECT(link, SAFE_PATH_FILE, -EPERM, "a symbolic link owned by uid 12345, neither root nor tunneld's user "
                                             "(uid 0): fix with chown -h");
        test_assert(unlink(link) == 0);
        test_assert(symlink("a/b", link) == 0);         /* relative, a directory on the way */
        {
                char via[200];
                snprintf(via, sizeof(via), "%s/f", link);
                EXPECT(via, SAFE_PATH_FILE, 0, "");
                test_assert(lchown(link, OTHER, 0) == 0);
                snprintf(want, sizeof(want), "the symbolic link %s on its way is owned by uid 12345, neither root nor "
                         "tunneld's user (uid 0): fix with chown -h", link);
                EXPECT(via, SAFE_PATH_FILE, -EPERM, want);
                test_assert(lchown(link, 0, 0) == 0);
                test_assert(chmod(b, 0777) == 0);       /* judged where the link leads */
                snprintf(want, sizeof(want), "its directory %s is writable by group or others (mode 0777): fix with "
                         "chmod go-w", b);
                EXPECT(via, SAFE_PATH_FILE, -EPERM, want);
                test_assert(chmod(b, 0755) == 0);
        }
        test_assert(unlink(link) == 0);
        test_assert(symlink(link, link) == 0);          /* a loop */
        EXPECT(link, SAFE_PATH_FILE, -ELOOP, "more than 40 symbolic links on its way");
        test_assert(unlink(link) == 0);

        /* relative paths are walked from the working directory */
        {
                char cwd[512];
                test_assert(getcwd(cwd, sizeof(cwd)) != NULL);
                test_assert(chdir(b) == 0);
                EXPECT("f", SAFE_PATH_FILE, 0, "");
                EXPECT("../b/f", SAFE_PATH_FILE, 0, "");
                test_assert(chmod(b, 0757) == 0);
                snprintf(want, sizeof(want), "its directory %s is writable by group or others (mode 0757): fix with "
                         "chmod go-w", b);
                EXPECT("f", SAFE_PATH_FILE, -EPERM, want);
                test_assert(chmod(b, 0755) == 0);
                test_assert(chdir(cwd) == 0);
        }

        /* not a directory where one must be */
        touch(w, 0644);
        snprintf(want, sizeof(want), "%s is not a directory", w);
        EXPECT(w, SAFE_PATH_DIR, -ENOTDIR, want);

        unlink(w);
        unlink(f);
        rmdir(b);
        rmdir(a);
        rmdir(dir);
}

static void test_find_program(void)
{
        char dir[] = "/tmp/tunneld-safe-path-XXXXXX", p1[128], p2[128], path[300];
        const char *old = getenv("PATH");
        _cleanup_free_ char *saved = old ? strdup(old) : NULL;
        char *found = NULL;

        test_assert(mkdtemp(dir) != NULL);
        snprintf(p1, sizeof(p1), "%s/one", dir);
        snprintf(p2, sizeof(p2), "%s/two", dir);
        test_assert(mkdir(p1, 0755) == 0 && mkdir(p2, 0755) == 0);
        snprintf(path, sizeof(path), "%s/prog", p2);
        touch(path, 0755);
        snprintf(path, sizeof(path), "%s/prog", p1);
        touch(path, 0644);                              /* not executable: skipped, as execvp does */
        snprintf(path, sizeof(path), "%s:%s", p1, p2);
        setenv("PATH", path, 1);
        test_assert(safe_path_find_program("prog", &found) == 0);
        snprintf(path, sizeof(path), "%s/prog", p2);
        test_assert_streq(found, path);
        free(found);
        found = NULL;
        test_assert(safe_path_find_program("absent", &found) == -ENOENT);
        test_assert(safe_path_find_program("./rel/prog", &found) == 0);  /* with a '/': as it is */
        test_assert_streq(found, "./rel/prog");
        free(found);
        if (saved)
                setenv("PATH", saved, 1);
        snprintf(path, sizeof(path), "%s/prog", p1);
        unlink(path);
        snprintf(path, sizeof(path), "%s/prog", p2);
        unlink(path);
        rmdir(p1);
        rmdir(p2);
        rmdir(dir);
}

TEST_MAIN(TEST(test_judge), TEST(test_walk), TEST(test_find_program))
