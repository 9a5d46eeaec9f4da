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
 * and, for the in-process engine tests (tests/test-engine.h), with a value:
 *   wait=S        say nothing for S seconds first (a slow server: the start slot is held)
 *   sockwait=S    with auth: the control socket appears S seconds after "Authenticated to"
 *   refuse=P[/N]  with auth: refuse the forward that listens on port P (its first N opens),
 *                 with ssh's words for its kind (a -R: "remote port forwarding failed…")
 *   busy=P[/N]    with auth: as refuse=, for a -L whose address is taken: ssh's bind error
 *                 lines on stderr first, as ssh prints them
 *   late=P:S      with auth: the reply to an open of port P (or '*': any) comes S seconds
 *                 late, and the replies after it wait behind it (ssh's mux channel does)
 *   hangup=S      with auth: S seconds after the control socket appeared it goes (listener
 *                 and connections closed), and the process runs on, saying nothing
 *   bye=WORD      at the end of the delay, before exiting: ssh's line for refused, closed,
 *                 timeout, hostkey or dns
 * Every start appends "TIME start PID" to $FAKE_SSH_DIR/HOST.log, then "TIME exit PID
 * STATUS" when the delay is over, or "TIME term PID" on SIGTERM (and exits 0, like ssh -N);
 * each forward request "TIME open PID KIND PORT ANSWER" (KIND L, R or D; PORT the listen
 * port; ANSWER ok, port N, or fail) or "TIME close PID KIND PORT".
 * ssh -G (tunneld asks ssh to judge the options when it loads a configuration): nothing to
 * say, and not a start. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
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
#define MUX_FWD_LOCAL 1u
#define MUX_FWD_REMOTE 2u
#define CLIENTS 16
#define PENDING 32                      /* replies held back by late= per connection */
#define RULES 8                         /* refuse=, busy=, late= flags per start */

static char log_path[4096];
static const char *host;

/* A forward the plan answers its own way: refused (busy: with ssh's bind error first), or late. */
enum rule_kind { RULE_REFUSE, RULE_BUSY, RULE_LATE };
struct rule {
        enum rule_kind kind;
        long port;                      /* the listen port; -1: any */
        int times;                      /* refuse, busy: how many opens; < 0: every one */
        double delay;                   /* late */
};
static struct rule rules[RULES];
static size_t n_rules;

struct pending {
        uint8_t data[160];
        size_t len;
        double due;
};
struct client {
        int fd;
        uint8_t in[4096];
        size_t len;
        struct pending q[PENDING];      /* replies not yet sent, in order */
        size_t qn;
};
static struct client clients[CLIENTS];

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

static void sleep_until(double t)
{
        while (now_mono() < t) {
                double left = t - now_mono();
                struct timespec ts = { .tv_sec = (time_t)left, .tv_nsec = (long)((left - (double)(time_t)left) * 1e9) };

                nanosleep(&ts, NULL);
        }
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

/* Send what is due of c's held-back replies, in order. */
static void flush_pending(struct client *c, double now)
{
        size_t k = 0;

        while (k < c->qn && c->q[k].due <= now) {
                (void)!send(c->fd, c->q[k].data, c->q[k].len, MSG_NOSIGNAL);
                k++;
        }
        memmove(c->q, c->q + k, (c->qn - k) * sizeof(c->q[0]));
        c->qn -= k;
}

/* A reply, now or (late=) at due; never before one asked for earlier. */
static void reply_at(struct client *c, double due, const uint32_t *words, size_t n, const char *text)
{
        uint8_t buf[160];
        size_t tlen = text ? strlen(text) : 0, len;

        if (tlen > 100)
                tlen = 100;
        len = 4 * n + (text ? 4 + tlen : 0);
        put32(buf, (uint32_t)len);
        for (size_t i = 0; i < n; i++)
                put32(buf + 4 + 4 * i, words[i]);
        if (text) {
                put32(buf + 4 + 4 * n, (uint32_t)tlen);
                memcpy(buf + 8 + 4 * n, text, tlen);
        }
        if (c->qn == 0 && due <= now_mono()) {
                (void)!send(c->fd, buf, 4 + len, MSG_NOSIGNAL);
                return;
        }
        if (c->qn == PENDING) {
                flush_pending(c, 1e300);
                (void)!send(c->fd, buf, 4 + len, MSG_NOSIGNAL);
                return;
        }
        memcpy(c->q[c->qn].data, buf, 4 + len);
        c->q[c->qn].len = 4 + len;
        c->q[c->qn].due = c->qn && c->q[c->qn - 1].due > due ? c->q[c->qn - 1].due : due;
        c->qn++;
}

static void reply(struct client *c, const uint32_t *words, size_t n, const char *text)
{
        reply_at(c, 0, words, n, text);
}

/* The rule of this kind for a forward on port, or NULL; a counted one is used up. */
static struct rule *rule_for(enum rule_kind kind, long port)
{
        for (size_t i = 0; i < n_rules; i++) {
                struct rule *r = &rules[i];

                if (r->kind != kind || (r->port >= 0 && r->port != port) || r->times == 0)
                        continue;
                if (r->times > 0)
                        r->times--;
                return r;
        }
        return NULL;
}

static char kind_letter(uint32_t ftype)
{
        return ftype == MUX_FWD_LOCAL ? 'L' : ftype == MUX_FWD_REMOTE ? 'R' : 'D';
}

static void log_forward(const char *what, uint32_t ftype, long port, const char *answer)
{
        char line[128];

        snprintf(line, sizeof(line), "%s %d %c %ld%s%s", what, (int)getpid(), kind_letter(ftype), port,
                 answer ? " " : "", answer ? answer : "");
        log_event(line);
}

/* An open of a forward, answered as the plan says. */
static void answer_open(struct client *c, uint32_t id, uint32_t ftype, long lport, int refuse, uint32_t *next_port)
{
        struct rule *late = rule_for(RULE_LATE, lport);
        double due = late ? now_mono() + late->delay : 0;
        bool every = refuse;            /* the plain flag: one reason for every kind, as it always had */

        if (!refuse && rule_for(RULE_BUSY, lport)) {
                /* what ssh prints when a -L cannot bind, before it answers */
                fprintf(stderr, "bind [127.0.0.1]:%ld: Address already in use\n", lport);
                fprintf(stderr, "channel_setup_fwd_listener_tcpip: cannot listen to port: %ld\n", lport);
                fflush(stderr);
                refuse = 1;
        } else if (!refuse && rule_for(RULE_REFUSE, lport))
                refuse = 1;
        if (refuse) {
                char text[96];

                if (ftype == MUX_FWD_REMOTE && !every)
                        snprintf(text, sizeof(text), "remote port forwarding failed for listen port %ld", lport);
                else
                        snprintf(text, sizeof(text), "Port forwarding failed");
                log_forward("open", ftype, lport, "fail");
                reply_at(c, due, (uint32_t[]){ MUX_S_FAILURE, id }, 2, text);
        } else if (ftype == MUX_FWD_REMOTE && lport == 0) {
                char allocated[32];

                snprintf(allocated, sizeof(allocated), "port %u", ++*next_port);
                log_forward("open", ftype, lport, allocated);
                reply_at(c, due, (uint32_t[]){ MUX_S_REMOTE_PORT, id, *next_port }, 3, NULL);
        } else {
                log_forward("open", ftype, lport, "ok");
                reply_at(c, due, (uint32_t[]){ MUX_S_OK, id }, 2, NULL);
        }
}

/* One request from tunneld (its body, length n), answered. */
static void answer(struct client *c, const uint8_t *body, size_t n, int refuse, uint32_t *next_port)
{
        uint32_t type, id;

        if (n < 8)
                return;
        type = get32(body);
        id = get32(body + 4);
        if (type == MUX_C_ALIVE_CHECK) {
                reply(c, (uint32_t[]){ MUX_S_ALIVE, id, (uint32_t)getpid() }, 3, NULL);
        } else if (type == MUX_C_CLOSE_FWD || type == MUX_C_OPEN_FWD) {
                uint32_t ftype = n >= 12 ? get32(body + 8) : 0, hlen = n >= 16 ? get32(body + 12) : 0;
                long lport = n >= 20 + (size_t)hlen ? (long)get32(body + 16 + hlen) : -1;

                if (type == MUX_C_OPEN_FWD) {
                        answer_open(c, id, ftype, lport, refuse, next_port);
                        return;
                }
                log_forward("close", ftype, lport, NULL);
                reply(c, (uint32_t[]){ MUX_S_OK, id }, 2, NULL);
        } else if (type != MUX_HELLO)
                reply(c, (uint32_t[]){ MUX_S_FAILURE, id }, 2, "unknown request");
}

static void drop_client(struct pollfd *p, int *n, int i)
{
        close(p[i].fd);
        p[i] = p[*n - 1];
        clients[i] = clients[*n - 1];
        (*n)--;
}

/* Listen on path (bound under a temporary name, then linked into place, as ssh does) and
 * answer until deadline; at hangup (0: never) the socket goes, the process stays. */
static void serve(const char *path, double deadline, double hangup, int refuse)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct pollfd p[CLIENTS + 1];
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
        if (hangup > 0)
                hangup += now_mono();
        p[0] = (struct pollfd){ .fd = l, .events = POLLIN };
        for (;;) {
                double now = now_mono(), until = deadline;

                if (hangup > 0 && hangup < until)
                        until = hangup;
                for (int i = 1; i < n; i++)
                        if (clients[i].qn && clients[i].q[0].due < until)
                                until = clients[i].q[0].due;
                if (now >= deadline || (hangup > 0 && now >= hangup))
                        break;
                if (poll(p, (nfds_t)n, until > now ? (int)((until - now) * 1000) + 1 : 0) < 0 && errno != EINTR)
                        break;
                now = now_mono();
                for (int i = 1; i < n; i++)
                        flush_pending(&clients[i], now);
                if ((p[0].revents & POLLIN) && n <= CLIENTS) {
                        int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);

                        if (c >= 0) {
                                clients[n] = (struct client){ .fd = c };
                                reply(&clients[n], (uint32_t[]){ MUX_HELLO, 4 }, 2, NULL);
                                p[n++] = (struct pollfd){ .fd = c, .events = POLLIN };
                        }
                }
                for (int i = 1; i < n; i++) {
                        struct client *c = &clients[i];
                        ssize_t k;

                        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        p[i].revents = 0;
                        k = read(p[i].fd, c->in + c->len, sizeof(c->in) - c->len);
                        if (k <= 0) {
                                drop_client(p, &n, i);
                                i--;
                                continue;
                        }
                        c->len += (size_t)k;
                        while (c->len >= 4 && c->len >= 4 + (size_t)get32(c->in)) {
                                size_t m = get32(c->in);

                                answer(c, c->in + 4, m, refuse, &next_port);
                                memmove(c->in, c->in + 4 + m, c->len - 4 - m);
                                c->len -= 4 + m;
                        }
                        if (c->len == sizeof(c->in))
                                c->len = 0;     /* garbage: start over */
                }
        }
        /* the socket goes: at the end of the delay, or at hangup while ssh runs on */
        while (n > 1)
                drop_client(p, &n, n - 1);
        close(l);
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

/* The value of flag KEY=… in flags (" a b=c "), or NULL. */
static const char *flag_value(const char *flags, const char *key, char *buf, size_t size)
{
        size_t klen = strlen(key);

        for (const char *s = flags; (s = strchr(s, ' ')); ) {
                s++;
                if (strncmp(s, key, klen) == 0 && s[klen] == '=') {
                        size_t len = strcspn(s + klen + 1, " ");

                        snprintf(buf, size, "%.*s", (int)len, s + klen + 1);
                        return buf;
                }
        }
        return NULL;
}

static double flag_seconds(const char *flags, const char *key)
{
        char buf[32];
        const char *v = flag_value(flags, key, buf, sizeof(buf));

        return v ? strtod(v, NULL) : 0;
}

/* Every refuse=P[/N], busy=P[/N] and late=P:S of flags. */
static void parse_rules(const char *flags)
{
        static const struct { const char *key; enum rule_kind kind; } keys[] = {
                { "refuse=", RULE_REFUSE }, { "busy=", RULE_BUSY }, { "late=", RULE_LATE },
        };

        for (const char *s = flags; (s = strchr(s, ' ')) && n_rules < RULES; ) {
                s++;
                for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
                        size_t klen = strlen(keys[k].key);
                        struct rule r = { .kind = keys[k].kind, .times = -1 };
                        const char *end;

                        if (strncmp(s, keys[k].key, klen) != 0)
                                continue;
                        s += klen;
                        r.port = *s == '*' ? -1 : strtol(s, NULL, 10);
                        end = s + strcspn(s, "/: ");
                        if (*end == '/')
                                r.times = (int)strtol(end + 1, NULL, 10);
                        else if (*end == ':')
                                r.delay = strtod(end + 1, NULL);
                        rules[n_rules++] = r;
                        break;
                }
        }
}

/* ssh's own last words for one kind of end. */
static void say_bye(const char *word)
{
        if (strcmp(word, "refused") == 0)
                fprintf(stderr, "ssh: connect to host %s port 22: Connection refused\n", host);
        else if (strcmp(word, "closed") == 0)
                fprintf(stderr, "Connection to %s closed by remote host.\n", host);
        else if (strcmp(word, "timeout") == 0)
                fprintf(stderr, "Timeout, server %s not responding.\n", host);
        else if (strcmp(word, "hostkey") == 0)
                fprintf(stderr, "Host key verification failed.\n");
        else if (strcmp(word, "dns") == 0)
                fprintf(stderr, "ssh: Could not resolve hostname %s: Name or service not known\n", host);
        fflush(stderr);
}

int main(int argc, char **argv)
{
        const char *dir = getenv("FAKE_SSH_DIR"), *path;
        char file[4096], line[512], what[64], cpath[4096], bye[32];
        int status = 0, n = 1, i = 0;
        double delay = 0, deadline;
        char flags[256] = "";
        FILE *f;

        host = argv[argc - 1];
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
        parse_rules(flags);

        snprintf(what, sizeof(what), "start %d", (int)getpid());
        log_event(what);
        deadline = now_mono() + delay;
        if (strstr(flags, " noterm "))
                signal(SIGTERM, SIG_IGN);
        if (flag_seconds(flags, "wait") > 0) {
                double until = now_mono() + flag_seconds(flags, "wait");

                sleep_until(until < deadline ? until : deadline);
        }
        if (strstr(flags, " denied "))
                fprintf(stderr, "root@%s: Permission denied (publickey).\n", host);
        if (strstr(flags, " auth ") || strstr(flags, " authonly "))
                fprintf(stderr, "Authenticated to %s ([127.0.0.1]:22) using \"publickey\".\n", host);
        path = control_path(argc, argv, cpath, sizeof(cpath));
        if (strstr(flags, " auth ") && path) {
                double sockwait = flag_seconds(flags, "sockwait");

                if (sockwait > 0)
                        sleep_until(now_mono() + sockwait < deadline ? now_mono() + sockwait : deadline);
                serve(path, deadline, flag_seconds(flags, "hangup"), strstr(flags, " refuse ") != NULL);
        }
        sleep_until(deadline);
        if (flag_value(flags, "bye", bye, sizeof(bye)))
                say_bye(bye);
        snprintf(what, sizeof(what), "exit %d %d", (int)getpid(), status);
        log_event(what);
        return status;
}
