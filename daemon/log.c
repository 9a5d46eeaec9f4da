/* SPDX-License-Identifier: MIT */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

static enum log_target log_target = LOG_TARGET_STDERR;
static int log_max_level = LOG_INFO;
static bool stderr_is_tty;
static bool stderr_color;
static bool debug_forced;

/* systemd sets JOURNAL_STREAM=dev:ino for the stream it connected to stderr. */
bool log_stderr_is_journal(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

/* sd_journal_sendv() reports success when the journal's socket does not exist at all
 * (it "fails silently" on ENOENT), so look before trusting it. */
static bool journal_present(void)
{
        return access(JOURNAL_SOCKET, W_OK) == 0;
}

void log_open(enum log_target target)
{
        if (target == LOG_TARGET_AUTO)
                target = log_stderr_is_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
        log_target = target;
        stderr_is_tty = isatty(STDERR_FILENO) == 1;
        {
                const char *term = getenv("TERM");
                stderr_color = stderr_is_tty && !getenv("NO_COLOR") && !(term && strcmp(term, "dumb") == 0);
        }
}

enum log_target log_get_target(void) { return log_target; }
void log_set_max_level(int prio) { log_max_level = debug_forced ? LOG_DEBUG : prio; }
void log_force_debug(void) { debug_forced = true; log_max_level = LOG_DEBUG; }
int log_get_max_level(void) { return log_max_level; }

/* What a line is about, written before its text: the tunnel, else the connection. */
static const char *log_ctx_name(const struct log_ctx *ctx)
{
        if (!ctx)
                return NULL;
        return ctx->tunnel ? ctx->tunnel : ctx->connection;
}

int log_build_fields(int prio, const struct log_ctx *ctx, const char *text,
                     struct log_scratch *s, struct iovec iov[LOG_MAX_FIELDS])
{
        int n = 0;

#define ADD(buf, ...) do {                                                      \
                snprintf(buf, sizeof(buf), __VA_ARGS__);                        \
                iov[n++] = (struct iovec){ .iov_base = buf, .iov_len = strlen(buf) }; \
        } while (0)

        const char *name = log_ctx_name(ctx);

        s->message = NULL;
        /* The name in the text too: plain "journalctl -u tunneld" must say which tunnel. */
        if (asprintf(&s->message, "MESSAGE=%s%s%s", name ? name : "", name ? ": " : "", text) < 0) {
                s->message = NULL;
                return -ENOMEM;
        }
        iov[n++] = (struct iovec){ .iov_base = s->message, .iov_len = strlen(s->message) };
        ADD(s->prio, "PRIORITY=%d", prio);
        ADD(s->ident, "SYSLOG_IDENTIFIER=%s", "tunneld");
        if (ctx) {
                if (ctx->tunnel)
                        ADD(s->tunnel, "TUNNEL=%s", ctx->tunnel);
                if (ctx->connection)
                        ADD(s->connection, "CONNECTION=%s", ctx->connection);
                if (ctx->pid > 0)
                        ADD(s->pid, "SSH_PID=%d", (int)ctx->pid);
                if (ctx->exit_status >= 0)
                        ADD(s->status, "EXIT_STATUS=%d", ctx->exit_status);
                if (ctx->exit_signal > 0) {
                        char sig[16];
                        ADD(s->signal, "EXIT_SIGNAL=%s", signal_to_name(ctx->exit_signal, sig, sizeof(sig)));
                }
                if (ctx->state)
                        ADD(s->state, "TUNNEL_STATE=%s", ctx->state);
                if (ctx->failure)
                        ADD(s->failure, "FAILURE=%s", ctx->failure);
                if (ctx->destination)
                        ADD(s->destination, "DESTINATION=%s", ctx->destination);
        }
#undef ADD
        return n;
}

static const struct {
        const char *word, *color;
} levels[] = {
        [LOG_EMERG] = { "error", "\033[1;31m" }, [LOG_ALERT] = { "error", "\033[1;31m" },
        [LOG_CRIT] = { "error", "\033[1;31m" }, [LOG_ERR] = { "error", "\033[1;31m" },
        [LOG_WARNING] = { "warning", "\033[33m" }, [LOG_NOTICE] = { "notice", "\033[1m" },
        [LOG_INFO] = { "info", "" }, [LOG_DEBUG] = { "debug", "\033[2m" },
};

int log_format_stderr(int prio, const struct log_ctx *ctx, const char *text, bool tty, char **ret)
{
        const char *name = log_ctx_name(ctx);
        int r;

        if (tty) {
                /* A person is watching: a clock and the level as a word help, journald's
                 * "<N>" does not. */
                int level = prio >= 0 && prio <= LOG_DEBUG ? prio : LOG_INFO;
                bool color = stderr_color && levels[level].color[0];
                time_t now = time(NULL);
                char stamp[16] = "";
                struct tm tm;

                strftime(stamp, sizeof(stamp), "%H:%M:%S", localtime_r(&now, &tm));
                r = asprintf(ret, "%s %s%s%s%*s %s%s%s\n", stamp, color ? levels[level].color : "", levels[level].word,
                             color ? "\033[0m" : "", (int)(7 - strlen(levels[level].word)), "", name ? name : "",
                             name ? ": " : "", text);
        } else
                r = asprintf(ret, "<%d>%s%s%s\n", prio, name ? name : "", name ? ": " : "", text);
        return r < 0 ? -ENOMEM : 0;
}

int log_full_errnov(int prio, int error, const struct log_ctx *ctx, const char *fmt, va_list ap)
{
        char text[2048];
        int saved = errno;

        if (error < 0)
                error = -error;
        if (prio > log_max_level)
                return -error;

        errno = error;  /* %m */
        vsnprintf(text, sizeof(text), fmt, ap);

        if (log_target == LOG_TARGET_JOURNAL) {
                struct log_scratch s;
                struct iovec iov[LOG_MAX_FIELDS];
                int n = log_build_fields(prio, ctx, text, &s, iov);

                if (n > 0 && journal_present() && sd_journal_sendv(iov, n) >= 0) {
                        free(s.message);
                        errno = saved;
                        return -error;
                }
                free(s.message);
                /* journal gone: fall through to stderr rather than lose the line */
        }

        _cleanup_free_ char *line = NULL;
        if (log_format_stderr(prio, ctx, text, stderr_is_tty, &line) >= 0)
                (void) !write(STDERR_FILENO, line, strlen(line));

        errno = saved;
        return -error;
}

int log_full_errno(int prio, int error, const struct log_ctx *ctx, const char *fmt, ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = log_full_errnov(prio, error, ctx, fmt, ap);
        va_end(ap);
        return r;
}
