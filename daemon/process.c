/* SPDX-License-Identifier: MIT */
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

extern char **environ;

static int devnull_fd = -1;
static struct rlimit child_nofile;
static bool restore_nofile;

unsigned long process_raise_nofile(void)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return 0;
        if (rl.rlim_cur < rl.rlim_max) {
                struct rlimit raised = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };
                if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
                        child_nofile = rl;
                        restore_nofile = true;
                        return (unsigned long)raised.rlim_cur;
                }
        }
        return (unsigned long)rl.rlim_cur;
}

/* In the child: single-threaded parent, so the libc calls here are safe; ends in exec or
 * _exit. */
_Noreturn static void exec_child(char *const *argv, char *const *envp, bool output_to_pipe, int pipe_fd,
                                 pid_t parent)
{
        struct sigaction sa = { .sa_handler = SIG_DFL };
        sigset_t none;

        for (int sig = 1; sig < NSIG; sig++)
                (void)sigaction(sig, &sa, NULL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);

        /* Own process group, so a stop reaches ProxyCommand/ProxyJump helpers too. */
        (void)setpgid(0, 0);
        /* If tunneld dies, the child goes with it; recheck the parent to close the race.
         * SIGKILL: ssh 9.2 polls with its signals unblocked, and a SIGTERM that comes while
         * it is awake (tunneld's death also wakes it: its mux connection and pipe close)
         * can leave it asleep until ServerAliveInterval. A tunneld that stops on purpose
         * ends its ssh itself first (master_stop), so this is only for one that died. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                _exit(125);

        if (restore_nofile)
                (void)setrlimit(RLIMIT_NOFILE, &child_nofile);
        if (dup2(devnull_fd, STDIN_FILENO) < 0 ||
            dup2(output_to_pipe ? pipe_fd : devnull_fd, STDOUT_FILENO) < 0 ||
            dup2(pipe_fd, STDERR_FILENO) < 0)
                _exit(126);
        /* Every fd of ours is O_CLOEXEC already; this also covers any a library leaked. */
        (void)close_range(3, ~0U, 0);

        if (envp)
                environ = (char **)envp;
        /* Ours, not the child's: its stderr is our pipe, not the journal, and it must not
         * talk to the service manager in tunneld's name. */
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        unsetenv("JOURNAL_STREAM");
        execvp(argv[0], argv);
        dprintf(STDERR_FILENO, "tunneld: cannot execute %s: %s\n", argv[0], strerror(errno));
        _exit(127);
}

int process_spawn(char *const *argv, char *const *envp, bool output_to_pipe, pid_t *ret_pid, int *ret_pipe)
{
        pid_t parent = getpid(), pid;
        int fds[2];

        if (devnull_fd < 0) {
                devnull_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (devnull_fd < 0)
                        return -errno;
        }
        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                int e = -errno;
                close(fds[0]);
                close(fds[1]);
                return e;
        }
        if (pid == 0)
                exec_child(argv, envp, output_to_pipe, fds[1], parent);

        /* Set the group here too: whoever runs first wins the race, and a kill of the group
         * right after fork must not miss. */
        (void)setpgid(pid, pid);
        close(fds[1]);
        (void)fcntl(fds[0], F_SETFL, O_NONBLOCK);
        *ret_pid = pid;
        *ret_pipe = fds[0];
        return 0;
}

void process_kill(pid_t pid, int sig)
{
        if (pid <= 0)
                return;
        if (kill(-pid, sig) < 0)
                (void)kill(pid, sig);
}
