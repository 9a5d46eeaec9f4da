/* SPDX-License-Identifier: MIT */
#include "runtime.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* Remove every entry of a directory of ours (files only: tunneld makes no subdirectories). */
/* Its files, and one level of directories (a multiplexed tunnel's NAME.mux/ with the
 * master's socket): nothing of ours nests deeper. */
static void clear_dir_at(int parent, const char *path, int depth)
{
        int fd = openat(parent, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        struct dirent *e;

        if (!d) {
                if (fd >= 0)
                        close(fd);
                return;
        }
        while ((e = readdir(d))) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                if (unlinkat(dirfd(d), e->d_name, 0) < 0 && errno == EISDIR && depth > 0) {
                        clear_dir_at(dirfd(d), e->d_name, depth - 1);
                        (void)unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR);
                }
        }
        closedir(d);
}

static void clear_dir(const char *path)
{
        clear_dir_at(AT_FDCWD, path, 1);
}

static int make_fresh(char **ret)
{
        const char *base = getenv("RUNTIME_DIRECTORY");
        _cleanup_free_ char *tmpl = NULL;

        /* systemd may list several, separated by ':'; the first is ours */
        if (!base || base[0] != '/')
                base = "/tmp";
        if (asprintf(&tmpl, "%.*s/tunneld.XXXXXX", (int)strcspn(base, ":"), base) < 0) {
                tmpl = NULL;
                return -ENOMEM;
        }
        if (!mkdtemp(tmpl))
                return log_error_errno(errno, "cannot create a runtime directory %s: %m", tmpl);
        *ret = tmpl;
        tmpl = NULL;
        return 0;
}

int runtime_dir_create(const char *locked_socket, char **ret)
{
        _cleanup_free_ char *path = NULL;
        struct stat st;

        if (!locked_socket)
                return make_fresh(ret);
        if (asprintf(&path, "%s.d", locked_socket) < 0) {
                path = NULL;
                return -ENOMEM;
        }
        if (mkdir(path, 0700) < 0 && errno != EEXIST)
                return log_error_errno(errno, "cannot create the runtime directory %s: %m", path);
        if (lstat(path, &st) < 0)
                return log_error_errno(errno, "runtime directory %s: %m", path);
        if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())
                return log_error_errno(-EEXIST, "runtime directory %s exists and is not a directory of ours", path);
        if ((st.st_mode & 07777) != 0700 && chmod(path, 0700) < 0)
                return log_error_errno(errno, "runtime directory %s: cannot make it 0700: %m", path);
        clear_dir(path);        /* left by a tunneld that crashed; we hold the socket's lock */
        *ret = path;
        path = NULL;
        return 0;
}

void runtime_dir_remove(const char *path)
{
        if (!path)
                return;
        clear_dir(path);
        (void)rmdir(path);
}
