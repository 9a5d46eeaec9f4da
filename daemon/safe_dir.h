/* SPDX-License-Identifier: MIT */
#pragma once

/* safe_dir: files a root daemon writes, written the way it must: relative to a directory
 * fd opened once and checked (O_DIRECTORY, owner, mode, device and inode), under a
 * temporary name nobody can predict, created O_EXCL|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC, then
 * renamed into place. No symlink, FIFO or directory swapped in under the same path can
 * redirect a write or block the loop: the write lands in the directory that was checked,
 * or not at all. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct safe_dir {
        char *path;                     /* as opened (for messages, and to see it replaced) */
        int fd;                         /* O_DIRECTORY|O_CLOEXEC */
        dev_t dev;
        ino_t ino;
};
#define SAFE_DIR_NULL ((struct safe_dir){ .fd = -1 })

enum safe_dir_owner {
        SAFE_DIR_OURS,                  /* made by tunneld: not a symlink, owned by its user, made 0700 */
        SAFE_DIR_TRUSTED,               /* root's or tunneld's user's, not writable by others unless sticky */
        SAFE_DIR_ANY,                   /* any directory: the path was judged where it is configured
                                         * (safe_path.h, with its FILE:LINE, or allowed by the user) */
};

/* Open and check path. 0, or -errno and why (not naming path). */
int safe_dir_open(const char *path, enum safe_dir_owner owner, struct safe_dir *ret, char *why, size_t size);
/* Is path still the directory d opened (device and inode)? */
bool safe_dir_at_path(const struct safe_dir *d);
/* text as d's file name (a name, no '/'), mode: a new file under an unpredictable name
 * in d, then renamed over name. 0 or -errno; nothing is left behind on failure. */
int safe_dir_write(const struct safe_dir *d, const char *name, const char *text, mode_t mode);
/* Remove d's entries, and those of its subdirectories down to depth (never following a
 * link). */
void safe_dir_clear(const struct safe_dir *d, int depth);
void safe_dir_close(struct safe_dir *d);

/* A directory write_file_atomic() writes into through d's fd (the runtime directory): a
 * path in it is written there, if d is still at its path; -ESTALE (and logged) if not. */
void safe_dir_register(const struct safe_dir *d);
void safe_dir_unregister(const struct safe_dir *d);
/* write_file_atomic(): through a registered directory, or through path's directory opened
 * and checked (SAFE_DIR_TRUSTED) for this one write. */
int safe_dir_write_path(const char *path, const char *text, mode_t mode);
