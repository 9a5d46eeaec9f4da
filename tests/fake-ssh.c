/* SPDX-License-Identifier: MIT */
/* fake-ssh: stands in for ssh in tunneld's supervisor tests (tests/lib/tunneltest, FakeSSH).
 *
 * tunneld runs every ssh as a multiplexing master of its own; so does this one, as far as
 * tunneld can tell: it says "Authenticated to HOST" on stderr, then listens on the
 * ControlPath it was given and answers OpenSSH's mux protocol (hello, open and close a
 * forward, alive check) without forwarding anything. Small and quick to start: a test runs
 * hundreds of them at once.
 *
 * The destination host is the last argument. $FAKE_SSH_DIR/HOST.plan holds one line per
 * start, "STATUS DELAY [FLAG...]"; start n takes line n, the last line repeats forever.
 * Flags:
 *   auth      authenticate and answer on the control socket (the connection is up)
 *   authonly  only say "Authenticated to": its control socket never appears
 *   noterm    ignore SIGTERM (tunneld must SIGKILL it after stop_timeout)
 *   denied    print ssh's "Permission denied (publickey)." line (failure class auth)
 *   refuse    with auth: answer every forward with a failure ("Port forwarding failed")
 * Every start appends "TIME start PID" to $FAKE_SSH_DIR/HOST.log, then "TIME exit PID
 * STATUS" when the delay is over, or "TIME term PID" on SIGTERM (and exits 0, like ssh -N).
 * ssh -G (tunneld asks ssh to judge the options when it loads a configuration): nothing to
 * say, and not a start. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MUX_HELLO 0x1u
#define MUX_C_ALIVE_CHECK 0x10000004u
#define MUX_C_OPEN_FWD 0x10000006u
#define MUX_C_CLOSE_FWD 0x10000007u
#define MUX_S_OK 0x80000001u
#define MUX_S_FAILURE 0x80000003u
#define MUX_S_ALIVE 0x80000005u
#define MUX_S_REMOTE_PORT 0x80000007u
#define CLIENTS 16

static char log_path[4096];

static double now_real(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_mono(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void log_event(const char *what)
{
        char line[256];
        int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        int n;

        if (fd < 0)
                return;
        n = snprintf(line, sizeof(line), "%.6f %s\n", now_real(), what);
        if (n > 0)
                (void)!write(fd, line, (size_t)n);
        close(fd);
}

static void on_term(int sig)
{
        char what[64];

        (void)sig;
        snprintf(what, sizeof(what), "term %d", (int)getpid());
        log_event(what);
        _exit(0);
}

static void put32(uint8_t *p, uint32_t v)
{
        v = htonl(v);
        memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
        uint32_t v;

        memcpy(&v, p, 4);
        return ntohl(v);
}

static void reply(int fd, const uint32_t *words, size_t n, const char *text)
{
        uint8_t buf[128];
        size_t len = 4 * n + (text ? 4 + strlen(text) : 0);

        put32(buf, (uint32_t)len);
        for (size_t i = 0; i < n; i++)
                put32(buf + 4 + 4 * i, words[i]);
        if (text) {
                put32(buf + 4 + 4 * n, (uint32_t)strlen(text));
                memcpy(buf + 8 + 4 * n, text, strlen(text));
        }
        (void)!write(fd, buf, 4 + len);
}

/* One request from tunneld (its body, length n), answered. */
static void answer(int fd, const uint8_t *body, size_t n, int refuse, uint32_t *next_port)
{
        uint32_t type, id;

        if (n < 8)
                return;
        type = get32(body);
        id = get32(body + 4);
        if (type == MUX_C_ALIVE_CHECK) {
                reply(fd, (uint32_t[]){ MUX_S_ALIVE, id, (uint32_t)getpid() }, 3, NULL);
        } else if (type == MUX_C_CLOSE_FWD) {
                reply(fd, (uint32_t[]){ MUX_S_OK, id }, 2, NULL);
        } else if (type == MUX_C_OPEN_FWD) {
                uint32_t ftype = n >= 12 ? get32(body + 8) : 0, hlen = n >= 16 ? get32(body + 12) : 0;
                uint32_t lport = n >= 20 + (size_t)hlen ? get32(body + 16 + hlen) : 1;

                if (refuse)
                        reply(fd, (uint32_t[]){ MUX_S_FAILURE, id }, 2, "Port forwarding failed");
                else if (ftype == 2 && lport == 0)
                        reply(fd, (uint32_t[]){ MUX_S_REMOTE_PORT, id, ++*next_port }, 3, NULL);
                else
                        reply(fd, (uint32_t[]){ MUX_S_OK, id }, 2, NULL);
        } else if (type != MUX_HELLO)
                reply(fd, (uint32_t[]){ MUX_S_FAILURE, id }, 2, "unknown request");
}

/* Listen on path (bound under a temporary name, then linked into place, as ssh does) and
 * answer until deadline. */
static void serve(const char *path, double deadline, int refuse)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct pollfd p[CLIENTS + 1];
        uint8_t bufs[CLIENTS + 1][4096];
        size_t lens[CLIENTS + 1] = {0};
        uint32_t next_port = 41000;
        char tmp[sizeof(sa.sun_path)];
        int n = 1, l;

        if (snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid()) >= (int)sizeof(tmp))
                return;
        memcpy(sa.sun_path, tmp, strlen(tmp) + 1);
        l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        (void)unlink(path);
        if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 8) < 0 || link(tmp, path) < 0) {
                perror("fake-ssh: control socket");
                return;
        }
        (void)unlink(tmp);
        p[0] = (struct pollfd){ .fd = l, .events = POLLIN };
        for (;;) {
                double left = deadline - now_mono();

                if (left <= 0 || poll(p, (nfds_t)n, (int)(left * 1000) + 1) < 0)
                        break;
                if ((p[0].revents & POLLIN) && n <= CLIENTS) {
                        int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);

                        if (c >= 0) {
                                reply(c, (uint32_t[]){ MUX_HELLO, 4 }, 2, NULL);
                                lens[n] = 0;
                                p[n++] = (struct pollfd){ .fd = c, .events = POLLIN };
                        }
                }
                for (int i = 1; i < n; i++) {
                        ssize_t k;

                        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        k = read(p[i].fd, bufs[i] + lens[i], sizeof(bufs[i]) - lens[i]);
                        if (k <= 0) {
                                close(p[i].fd);
                                p[i] = p[--n];
                                memcpy(bufs[i], bufs[n], lens[n]);
                                lens[i] = lens[n];
                                i--;
                                continue;
                        }
                        lens[i] += (size_t)k;
                        while (lens[i] >= 4 && lens[i] >= 4 + (size_t)get32(bufs[i])) {
                                size_t m = get32(bufs[i]);

                                answer(p[i].fd, bufs[i] + 4, m, refuse, &next_port);
                                memmove(bufs[i], bufs[i] + 4 + m, lens[i] - 4 - m);
                                lens[i] -= 4 + m;
                        }
                        if (lens[i] == sizeof(bufs[i]))
                                lens[i] = 0;    /* garbage: start over */
                }
        }
        (void)unlink(path);
}

static const char *control_path(int argc, char **argv, char *buf, size_t size)
{
        for (int i = 1; i + 1 < argc; i++)
                if (strcmp(argv[i], "-o") == 0 && strncmp(argv[i + 1], "ControlPath=", 12) == 0) {
                        size_t k = 0;

                        for (const char *s = argv[i + 1] + 12; *s && k + 1 < size; s++) {
                                buf[k++] = *s;
                                if (s[0] == '%' && s[1] == '%')
                                        s++;
                        }
                        buf[k] = '\0';
                        return buf;
                }
        return NULL;
}

int main(int argc, char **argv)
{
        const char *dir = getenv("FAKE_SSH_DIR"), *host = argv[argc - 1], *path;
        char file[4096], line[512], what[64], cpath[4096];
        int status = 0, n = 1, i = 0;
        double delay = 0;
        char flags[256] = "";
        FILE *f;

        if (argc > 1 && strcmp(argv[1], "-G") == 0)
                return 0;
        if (!dir || argc < 2) {
                fprintf(stderr, "fake-ssh: FAKE_SSH_DIR is not set\n");
                return 255;
        }
        snprintf(log_path, sizeof(log_path), "%s/%s.log", dir, host);
        signal(SIGTERM, on_term);

        snprintf(file, sizeof(file), "%s/%s.count", dir, host);
        if ((f = fopen(file, "r"))) {
                if (fscanf(f, "%d", &n) == 1)
                        n++;
                fclose(f);
        }
        if ((f = fopen(file, "w"))) {
                fprintf(f, "%d\n", n);
                fclose(f);
        }
        snprintf(file, sizeof(file), "%s/%s.argv", dir, host);
        if ((f = fopen(file, "w"))) {
                for (int k = 1; k < argc; k++)
                        fprintf(f, "%s\n", argv[k]);
                fclose(f);
        }
        snprintf(file, sizeof(file), "%s/%s.plan", dir, host);
        if ((f = fopen(file, "r"))) {
                while (fgets(line, sizeof(line), f)) {
                        int used = 0;

                        if (sscanf(line, "%d %lf %n", &status, &delay, &used) < 2)
                                continue;
                        snprintf(flags, sizeof(flags), " %s", line + used);
                        flags[strcspn(flags, "\n")] = ' ';
                        if (++i >= n)
                                break;
                }
                fclose(f);
        }

        snprintf(what, sizeof(what), "start %d", (int)getpid());
        log_event(what);
        double deadline = now_mono() + delay;
        if (strstr(flags, " noterm "))
                signal(SIGTERM, SIG_IGN);
        if (strstr(flags, " denied "))
                fprintf(stderr, "root@%s: Permission denied (publickey).\n", host);
        if (strstr(flags, " auth ") || strstr(flags, " authonly "))
                fprintf(stderr, "Authenticated to %s ([127.0.0.1]:22) using \"publickey\".\n", host);
        path = control_path(argc, argv, cpath, sizeof(cpath));
        if (strstr(flags, " auth ") && path)
                serve(path, deadline, strstr(flags, " refuse ") != NULL);
        while (now_mono() < deadline) {
                double left = deadline - now_mono();
                struct timespec ts = { .tv_sec = (time_t)left, .tv_nsec = (long)((left - (double)(time_t)left) * 1e9) };

                nanosleep(&ts, NULL);
        }
        snprintf(what, sizeof(what), "exit %d %d", (int)getpid(), status);
        log_event(what);
        return status;
}
