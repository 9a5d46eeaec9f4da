/* SPDX-License-Identifier: MIT */
#pragma once

/* runtime: tunneld's private directory, mode 0700, for the files it writes for ssh (the
 * ssh_config of a tunnel with a jump host, the known_hosts of one with pinned keys, a
 * connection's control socket NAME.muxN). With a control socket it is "SOCKET.d": the socket's
 * lock (ctl.c) makes it this tunneld's alone, and whatever an earlier tunneld left in it
 * after a crash is removed. Without one, a fresh directory under $RUNTIME_DIRECTORY
 * (systemd's RuntimeDirectory=) or /tmp.
 *
 * It is checked when it is made (a directory, not a symlink, tunneld's own, 0700) and kept
 * open: write_file_atomic() of a path in it writes through that fd (safe_dir.h), and
 * refuses (-ESTALE, logged) once the path no longer leads to it, so a directory swapped
 * in under its name is never written into. */

/* 0 and the path in *ret (the caller frees it), or -errno (logged). */
int runtime_dir_create(const char *locked_socket, char **ret);
/* Remove the directory and the files in it (only if path still leads to it). NULL-safe. */
void runtime_dir_remove(const char *path);

/* The directory of the connections' control sockets (NAME.muxN): the runtime directory,
 * unless its path is too long for ssh's (a control socket must fit sun_path), then a
 * short one of its own, made fresh (0700, an unguessable name) under $RUNTIME_DIRECTORY or
 * /tmp. 0 and the path in *ret, or -errno (logged). */
int runtime_control_dir_create(const char *runtime_dir, char **ret);
/* Remove it, if it is not the runtime directory. NULL-safe. */
void runtime_control_dir_remove(const char *path, const char *runtime_dir);
