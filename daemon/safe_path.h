/* SPDX-License-Identifier: MIT */
#pragma once

/* safe_path: sshd's rule (StrictModes) for what tunneld runs, reads for ssh or writes into:
 * owned by root or by tunneld's own user, not writable by group or others, and so is every
 * directory above it and every symbolic link on the way (whoever owns a link can point it
 * elsewhere). A sticky directory such as /tmp may be on the way: nobody else can rename or
 * remove what is root's in it. Where tunneld makes names others can guess, or trusts every
 * entry of a directory, the directory itself must not be writable by others at all. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

enum safe_path_kind {
        SAFE_PATH_FILE,         /* a file tunneld reads or runs (its directory may be sticky) */
        SAFE_PATH_DIR,          /* a directory whose every entry tunneld reads (include_dir) */
        SAFE_PATH_NEW,          /* a name tunneld makes, and others beside it (the control socket,
                                 * its lock, SOCKET.d): its directory not writable by others */
        SAFE_PATH_RENAMED,      /* a file tunneld replaces from a temporary name nobody can guess
                                 * (metrics_file): its directory may be sticky */
};

/* One thing on the way, pure: NULL if what st describes may be trusted by tunneld running
 * as uid, else why ("writable by group or others (mode 0777): fix with chmod go-w"), in
 * buf. strict: a directory that must not be writable by others even if sticky. */
const char *safe_path_judge(const struct stat *st, uid_t uid, bool strict, char *buf, size_t size);

/* Walk path from / (a relative one from the working directory), following its symbolic
 * links: 0 if it may be trusted, or if what is missing of it could be made by nobody but
 * root and tunneld's user; -EPERM with why in why ("its directory /srv is writable by group
 * or others (mode 0777): fix with chmod go-w"); another -errno (with why) if it could not
 * be looked at. */
int safe_path_check(const char *path, enum safe_path_kind kind, char *why, size_t size);

/* The file execvp(name) would run: name itself if it holds a '/', else the first
 * executable regular file name in $PATH (execvp's default without one). 0 and a copy in
 * *ret, -ENOENT if there is none, -ENOMEM. */
int safe_path_find_program(const char *name, char **ret);
