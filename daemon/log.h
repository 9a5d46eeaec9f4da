/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdarg.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <syslog.h>

#include "util.h"

enum log_target {
        LOG_TARGET_AUTO,        /* journal if stderr is the journal's stream, else stderr */
        LOG_TARGET_JOURNAL,
        LOG_TARGET_STDERR,
        _LOG_TARGET_MAX,
};

/* Structured context of one message; every member optional (NULL / -1 = absent). */
struct log_ctx {
        const char *tunnel;
        const char *connection; /* CONNECTION: the ssh connection (a shared one's "~NAME") */
        pid_t pid;              /* SSH_PID */
        int exit_status;        /* EXIT_STATUS */
        int exit_signal;        /* EXIT_SIGNAL */
        const char *state;      /* TUNNEL_STATE */
        const char *failure;    /* FAILURE */
        const char *destination;        /* DESTINATION: with alternatives, the host its ssh goes to */
};
#define LOG_CTX_INIT { .pid = -1, .exit_status = -1, .exit_signal = -1 }

void log_open(enum log_target target);
enum log_target log_get_target(void);   /* the target in effect, never AUTO */
void log_set_max_level(int prio);
int log_get_max_level(void);
/* tunneld -d: LOG_DEBUG from now on, whatever log_level a reload sets. */
void log_force_debug(void);
/* stderr is the stream systemd connected to the journal (JOURNAL_STREAM). */
bool log_stderr_is_journal(void);

/* Logs and returns -abs(error) so callers can "return log_errno(r, ...)". errno is %m. */
int log_full_errno(int prio, int error, const struct log_ctx *ctx, const char *fmt, ...) _printf_(4, 5);
int log_full_errnov(int prio, int error, const struct log_ctx *ctx, const char *fmt, va_list ap) _printf_(4, 0);

#define log_full(prio, ctx, ...) log_full_errno(prio, 0, ctx, __VA_ARGS__)
#define log_debug(...)   log_full_errno(LOG_DEBUG, 0, NULL, __VA_ARGS__)
#define log_info(...)    log_full_errno(LOG_INFO, 0, NULL, __VA_ARGS__)
#define log_notice(...)  log_full_errno(LOG_NOTICE, 0, NULL, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, NULL, __VA_ARGS__)
#define log_error(...)   log_full_errno(LOG_ERR, 0, NULL, __VA_ARGS__)
#define log_error_errno(r, ...)   log_full_errno(LOG_ERR, r, NULL, __VA_ARGS__)
#define log_warning_errno(r, ...) log_full_errno(LOG_WARNING, r, NULL, __VA_ARGS__)

/* Journal fields of one message, as "KEY=value" iovecs pointing into scratch.
 * Exposed for tests. Returns the number of iovecs filled (at most LOG_MAX_FIELDS). */
#define LOG_MAX_FIELDS 12
struct log_scratch {
        char prio[16], tunnel[160], connection[160], pid[32], status[32], signal[32], state[48], failure[48], ident[32],
             destination[300];
        char *message;  /* "MESSAGE=…", caller frees */
};
int log_build_fields(int prio, const struct log_ctx *ctx, const char *text,
                     struct log_scratch *s, struct iovec iov[LOG_MAX_FIELDS]);

/* "<N>" prefix line for the stderr fallback; exposed for tests. */
int log_format_stderr(int prio, const struct log_ctx *ctx, const char *text, bool tty, char **ret);
