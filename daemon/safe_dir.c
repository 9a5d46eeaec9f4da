/* SPDX-License-Identifier: MIT */
#include "safe_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "safe_path.h"
#include "util.h"

#define TMP_TRIES 8

/* Why the directory fd is not as owner wants (*r the error), or NULL. */
static const char *judge_dir(int fd, enum safe_dir_owner owner, struct stat *st, int *r, char *why, size_t size)
{
        char verdict[160];

        *r = -EPERM;
        if (fstat(fd, st) < 0) {
                *r = -errno;
                snprintf(why, size, "%s", strerror(-*r));
                return why;
        }
        if (owner == SAFE_DIR_OURS && st->st_uid != geteuid()) {
                snprintf(why, size, "owned by uid %d, not by tunneld's user (uid %d): not the directory tunneld made",
                         (int)st->st_uid, (int)geteuid());
                return why;
        }
        if (owner == SAFE_DIR_OURS && (st->st_mode & 07777) != 0700 && fchmod(fd, 0700) < 0) {
                *r = -errno;
                snprintf(why, size, "cannot make it 0700: %s", strerror(-*r));
                return why;
        }
        if (owner == SAFE_DIR_TRUSTED && safe_path_judge(st, geteuid(), false, verdict, sizeof(verdict))) {
                snprintf(why, size, "%s", verdict);
                return why;
        }
        *r = 0;
        return NULL;
}

int safe_dir_open(const char *path, enum safe_dir_owner owner, struct safe_dir *ret, char *why, size_t size)
{
        int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (owner == SAFE_DIR_OURS ? O_NOFOLLOW : 0);
        int fd = open(path, flags), r;
        struct stat st;

        *ret = SAFE_DIR_NULL;
        if (fd < 0) {
                r = -errno;
                /* O_NOFOLLOW|O_DIRECTORY on a link: ELOOP or ENOTDIR, as the kernel sees fit */
                if ((r == -ELOOP || r == -ENOTDIR) && owner == SAFE_DIR_OURS && lstat(path, &st) == 0 &&
                    S_ISLNK(st.st_mode)) {
                        snprintf(why, size, "a symbolic link, not the directory tunneld made");
                        return -ELOOP;
                }
                snprintf(why, size, "%s", r == -ENOTDIR ? "not a directory" : strerror(-r));
                return r;
        }
        if (judge_dir(fd, owner, &st, &r, why, size) || !(ret->path = strdup(path))) {
                close(fd);
                return r < 0 ? r : -ENOMEM;
        }
        ret->dev = st.st_dev;
        ret->ino = st.st_ino;
        ret->fd = fd;
        return 0;
}

bool safe_dir_at_path(const struct safe_dir *d)
{
        struct stat st;

        return d->fd >= 0 && stat(d->path, &st) == 0 && st.st_dev == d->dev && st.st_ino == d->ino;
}

/* 64 bits nobody can guess: the kernel's, or (before its pool is ready, early at boot) the
 * per-process generator seeded from it. */
static uint64_t unguessable(void)
{
        uint64_t x;

        if (getrandom(&x, sizeof(x), GRND_NONBLOCK) == (ssize_t)sizeof(x))
                return x;
        return (uint64_t)(random_unit() * 9007199254740992.0) ^ ((uint64_t)(random_unit() * 2048.0) << 53);
}

int safe_dir_write(const struct safe_dir *d, const char *name, const char *text, mode_t mode)
{
        char tmp[NAME_MAX + 1];
        size_t len = strlen(text), off = 0;
        int fd = -1, r = 0;

        if (strchr(name, '/') || strlen(name) + 26 > NAME_MAX)
                return -EINVAL;
        for (int i = 0; i < TMP_TRIES && fd < 0; i++) {
                snprintf(tmp, sizeof(tmp), "%s.tmp.%" PRIu64, name, unguessable());
                /* O_EXCL: never an existing file, FIFO or link; O_NONBLOCK all the same */
                fd = openat(d->fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode & 0777);
                if (fd < 0 && errno != EEXIST)
                        return -errno;
        }
        if (fd < 0)
                return -EEXIST;
        if (fchmod(fd, mode) < 0)       /* whatever our umask */
                r = -errno;
        while (r == 0 && off < len) {
                ssize_t n = write(fd, text + off, len - off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                } else
                        off += (size_t)n;
        }
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && renameat(d->fd, tmp, d->fd, name) < 0)
                r = -errno;
        if (r < 0)
                (void)unlinkat(d->fd, tmp, 0);
        return r;
}

/* Its files, and down to depth levels of directories (none is made any more). */
static void clear_at(int parent, const char *name, int depth)
{
        int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
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
                        clear_at(dirfd(d), e->d_name, depth - 1);
                        (void)unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR);
                }
        }
        closedir(d);
}

void safe_dir_clear(const struct safe_dir *d, int depth)
{
        if (d->fd >= 0)
                clear_at(d->fd, ".", depth);
}

void safe_dir_close(struct safe_dir *d)
{
        safe_dir_unregister(d);
        if (d->fd >= 0)
                close(d->fd);
        free(d->path);
        *d = SAFE_DIR_NULL;
}

static const struct safe_dir *registered[4];

void safe_dir_register(const struct safe_dir *d)
{
        for (size_t i = 0; i < ELEMENTSOF(registered); i++)
                if (!registered[i]) {
                        registered[i] = d;
                        return;
                }
}

void safe_dir_unregister(const struct safe_dir *d)
{
        for (size_t i = 0; i < ELEMENTSOF(registered); i++)
                if (registered[i] == d)
                        registered[i] = NULL;
}

int safe_dir_write_path(const char *path, const char *text, mode_t mode)
{
        struct safe_dir d = SAFE_DIR_NULL;
        _cleanup_free_ char *dir = NULL;
        const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
        char why[256];
        int r;

        dir = !slash ? strdup(".") : slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
        if (!dir)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(registered); i++) {
                if (!registered[i] || strcmp(registered[i]->path, dir) != 0)
                        continue;
                if (!safe_dir_at_path(registered[i])) {
                        log_error("runtime directory %s was replaced: it is not the directory tunneld made and "
                                  "checked; not writing %s (someone can rename what is in its directory: see "
                                  "control_socket in tunneld.conf(5)); restart tunneld", dir, name);
                        return -ESTALE;
                }
                return safe_dir_write(registered[i], name, text, mode);
        }
        r = safe_dir_open(dir, SAFE_DIR_TRUSTED, &d, why, sizeof(why));
        if (r < 0) {
                log_error("cannot write %s: its directory %s: %s", path, dir, why);
                return r;
        }
        r = safe_dir_write(&d, name, text, mode);
        safe_dir_close(&d);
        return r;
}

int write_file_atomic(const char *path, const char *text, mode_t mode)
{
        return safe_dir_write_path(path, text, mode);
}
