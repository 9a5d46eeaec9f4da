/* SPDX-License-Identifier: MIT */
#pragma once

/* process: start a child the way a supervisor must. Never through a shell. In the child:
 * default dispositions for every signal and an empty mask (an ignored signal survives
 * exec), its own process group, PR_SET_PDEATHSIG so it dies with tunneld, stdin from
 * /dev/null, stdout to /dev/null or the pipe, stderr to the pipe, no other fd. */

#include <stdbool.h>
#include <sys/types.h>

/* envp NULL: tunneld's own environment. On success *ret_pipe is the non-blocking,
 * close-on-exec read end of the child's stderr (and stdout if output_to_pipe). If exec
 * fails the child writes "tunneld: cannot execute PROGRAM: REASON" there and exits 127. */
int process_spawn(char *const *argv, char *const *envp, bool output_to_pipe, pid_t *ret_pid, int *ret_pipe);

/* tunneld needs a few descriptors per tunnel: raise our soft RLIMIT_NOFILE to the hard
 * limit, and give children the soft limit we started with (select()-based programs break
 * above 1024). Returns the new soft limit. */
unsigned long process_raise_nofile(void);

/* SIGTERM/SIGKILL a child's whole process group (falls back to the pid alone). */
void process_kill(pid_t pid, int sig);
