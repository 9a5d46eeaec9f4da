/* SPDX-License-Identifier: MIT */
#pragma once

/* runtime: tunneld's private directory, mode 0700, for the files it writes for ssh (the
 * ssh_config of a tunnel with a jump host). With a control socket it is "SOCKET.d": the
 * socket's lock (ctl.c) makes it this tunneld's alone, and whatever an earlier tunneld left
 * in it after a crash is removed. Without one, a fresh directory under $RUNTIME_DIRECTORY
 * (systemd's RuntimeDirectory=) or /tmp. */

/* 0 and the path in *ret (the caller frees it), or -errno (logged). */
int runtime_dir_create(const char *locked_socket, char **ret);
/* Remove the directory and the files in it. NULL-safe. */
void runtime_dir_remove(const char *path);
