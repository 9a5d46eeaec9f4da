/* SPDX-License-Identifier: MIT */
/* tunnelctl: look at and steer a running tunneld through its control socket. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "json.h"
#include "util.h"

#ifndef TUNNELD_VERSION
#define TUNNELD_VERSION "unknown"
#endif
#ifndef TUNNELD_CONTROL_SOCKET
#define TUNNELD_CONTROL_SOCKET "/run/tunneld/control"
#endif

enum {
        EXIT_OK = 0,
        EXIT_NOT_UP = 1,        /* a named tunnel is not up, or the request failed */
        EXIT_USAGE = 2,
        EXIT_UNREACHABLE = 3,   /* no tunneld answering on the socket */
        EXIT_DENIED = 4,        /* the command needs root or the control group */
};

#define REPLY_TIMEOUT_MS 60000
#define CONNECT_TIMEOUT_MS 5000         /* a full listen queue makes connect() wait */
#define REPLY_MAX (64u << 20)

static void help(void)
{
        printf(
"NAME\n"
"    tunnelctl - show and control the tunnels of a running tunneld\n"
"\n"
"SYNOPSIS\n"
"    tunnelctl [OPTIONS] status [NAME...]\n"
"    tunnelctl [OPTIONS] start|stop|restart NAME...|--all\n"
"    tunnelctl [OPTIONS] reload\n"
"    tunnelctl [OPTIONS] check\n"
"    tunnelctl [OPTIONS] metrics\n"
"\n"
"DESCRIPTION\n"
"    tunnelctl talks to tunneld over its control socket. It shows each tunnel's\n"
"    state, ssh pid, uptime, starts, last exit and next retry, and starts, stops\n"
"    or restarts single tunnels without touching the others.\n"
"\n"
"COMMANDS\n"
"    status [NAME...]\n"
"        A table of the named tunnels (default: all): name, state, ssh pid,\n"
"        uptime of the current ssh, starts (in brackets: those after an exit\n"
"        tunneld did not ask for), last exit (status or signal, how long ssh\n"
"        ran, failure class), next retry, forwards (\"R port N\": the port the\n"
"        server chose for a remote forward of port 0). States: queued (waiting\n"
"        for a start slot or for the tunnels it is after), starting (ssh runs,\n"
"        not yet authenticated with every forward in place), up, backoff\n"
"        (waiting to retry), failed (not retrying), stopping, stopped.\n"
"    start NAME...|--all\n"
"        Start now, resetting backoff and max_starts counters.\n"
"    stop NAME...|--all\n"
"        Stop (SIGTERM, SIGKILL after stop_timeout). A stopped tunnel stays\n"
"        stopped, across reloads too, until started or until tunneld restarts;\n"
"        it does not count as failed.\n"
"    restart NAME...|--all\n"
"        Stop if running, then start.\n"
"    reload\n"
"        Re-read the configuration, like SIGHUP, and wait until it is applied.\n"
"        Unchanged tunnels keep running untouched. If the file has errors they\n"
"        are printed and nothing changes.\n"
"    check\n"
"        Validate the configuration file tunneld was started with, like\n"
"        tunneld -t.\n"
"    metrics\n"
"        Every tunnel's state and counters in the Prometheus text format\n"
"        (tunneld_tunnel_up, _state, _starts_total, _failures_total{class},\n"
"        _uptime_seconds, …). The metrics_file setting keeps a copy on disk for\n"
"        node_exporter's textfile collector.\n"
"\n"
"OPTIONS\n"
"    -s, --socket PATH   control socket (default $TUNNELD_SOCKET, else\n"
"                        " TUNNELD_CONTROL_SOCKET ")\n"
"    -p, --pid PID       the control socket tunneld PID listens on, wherever\n"
"                        its configuration put it (from /proc/PID/fd; where\n"
"                        that is hidden, the -s socket if PID listens on it);\n"
"                        reload of a tunneld without one sends SIGHUP instead\n"
"                        (and cannot wait for it)\n"
"    -j, --json          print tunneld's JSON reply (one object) instead of a table\n"
"        --color=WHEN    colour states: auto (on a terminal, unless NO_COLOR is\n"
"                        set), always, never\n"
"    -h, --help          this help\n"
"    -V, --version       the version\n"
"\n"
"EXIT STATUS\n"
"    0   success; for status with names, every named tunnel is up\n"
"    1   a named tunnel is not up, a tunnel does not exist, or the request\n"
"        failed (reload or check found errors)\n"
"    2   usage error\n"
"    3   tunneld is not reachable on the control socket\n"
"    4   permission denied: state changes need root, tunneld's user, or the\n"
"        control_group of tunneld.conf\n"
"\n"
"EXAMPLES\n"
"    tunnelctl status\n"
"    tunnelctl status db || echo 'db is down'\n"
"    tunnelctl restart db\n"
"    tunnelctl --json status | jq '.tunnels[] | select(.state != \"up\") | .name'\n");
}

/* tunneld binds PATH.new and renames it into place: the kernel keeps the bound name. */
static int found_socket(char *path, char **ret)
{
        size_t len = strlen(path);
        struct stat st;

        if (len > 4 && strcmp(path + len - 4, ".new") == 0 && stat(path, &st) < 0)
                path[len - 4] = '\0';
        *ret = strdup(path);
        return *ret ? 0 : -ENOMEM;
}

static bool has_inode(const unsigned long *inodes, size_t n, unsigned long ino)
{
        for (size_t i = 0; i < n; i++)
                if (inodes[i] == ino)
                        return true;
        return false;
}

/* Among the listening stream sockets with a path (from the kernel's sock_diag, which needs
 * no privilege and no /proc/net, hidden by the unit's ProcSubset=pid), the one whose inode
 * is in inodes. */
static int find_by_sock_diag(const unsigned long *inodes, size_t n, char **ret)
{
        struct {
                struct nlmsghdr nlh;
                struct unix_diag_req req;
        } msg = {
                .nlh = { .nlmsg_len = sizeof(msg), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                         .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
                .req = { .sdiag_family = AF_UNIX, .udiag_states = 1u << 10 /* TCP_LISTEN */,
                         .udiag_show = UDIAG_SHOW_NAME },
        };
        _cleanup_close_ int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        long buf[8192];
        int r = -ENOENT;

        if (fd < 0 || send(fd, &msg, sizeof(msg), 0) < 0)
                return -errno;
        for (;;) {
                ssize_t len = recv(fd, buf, sizeof(buf), 0);

                if (len < 0)
                        return errno == EINTR ? -EINTR : -errno;
                for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)len); h = NLMSG_NEXT(h, len)) {
                        const struct unix_diag_msg *m = NLMSG_DATA(h);
                        int alen = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));

                        if (h->nlmsg_type == NLMSG_DONE)
                                return r;
                        if (h->nlmsg_type == NLMSG_ERROR)
                                return -EIO;
                        if (r != -ENOENT || m->udiag_type != SOCK_STREAM || !has_inode(inodes, n, m->udiag_ino))
                                continue;
                        for (struct rtattr *a = (struct rtattr *)(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
                                char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
                                size_t plen = RTA_PAYLOAD(a);

                                if (a->rta_type != UNIX_DIAG_NAME || plen == 0 || ((char *)RTA_DATA(a))[0] != '/')
                                        continue;       /* abstract or unnamed */
                                if (plen >= sizeof(path))
                                        plen = sizeof(path) - 1;
                                memcpy(path, RTA_DATA(a), plen);
                                path[plen] = '\0';
                                r = found_socket(path, ret);
                        }
                }
        }
}

/* The control socket tunneld PID listens on, from its descriptors: what systemd's
 * ExecReload (which knows $MAINPID, not the configured path) uses. -ENOENT if it has none. */
static int socket_of_pid(long pid, char **ret)
{
        char dir[64], link[64];
        unsigned long *inodes = NULL;
        size_t n = 0, room = 0;
        struct dirent *e;
        DIR *d;
        int r;

        snprintf(dir, sizeof(dir), "/proc/%ld/fd", pid);
        d = opendir(dir);
        if (!d)
                return errno == ENOENT ? -ESRCH : -errno;      /* ENOENT means "no socket" */
        while ((e = readdir(d))) {
                ssize_t len = readlinkat(dirfd(d), e->d_name, link, sizeof(link) - 1);
                unsigned long ino;

                if (len <= 0)
                        continue;
                link[len] = '\0';
                if (sscanf(link, "socket:[%lu]", &ino) != 1)
                        continue;
                if (n == room) {
                        unsigned long *grown = realloc(inodes, (room = room ? 2 * room : 16) * sizeof(*inodes));
                        if (!grown) {
                                closedir(d);
                                free(inodes);
                                return -ENOMEM;
                        }
                        inodes = grown;
                }
                inodes[n++] = ino;
        }
        closedir(d);
        r = find_by_sock_diag(inodes, n, ret);
        free(inodes);
        return r;
}

/* Whether the process listening on path is pid (SO_PEERCRED), for when /proc does not show
 * pid's descriptors: under the unit's PrivateUsers=, ExecReload runs in a user namespace
 * of its own, and the kernel hides tunneld's /proc entry from it. */
static bool socket_is_of_pid(const char *path, long pid)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct ucred cred;
        socklen_t len = sizeof(cred);
        _cleanup_close_ int fd = -1;

        if (strlen(path) >= sizeof(sa.sun_path))
                return false;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        return fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
               getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid == pid;
}

/* connect() that gives up after CONNECT_TIMEOUT_MS: a Unix socket whose listen queue is
 * full (tunneld flooded with connections) would otherwise block for ever. errno set. */
static int connect_bounded(int fd, const struct sockaddr_un *sa)
{
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int err = 0, r;
        socklen_t len = sizeof(err);

        if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
                return 0;
        if (errno != EAGAIN && errno != EINPROGRESS)
                return -1;
        /* Linux reports EAGAIN for a full queue of a Unix socket: retry until the deadline */
        for (int waited = 0; waited < CONNECT_TIMEOUT_MS; waited += 50) {
                if (errno == EINPROGRESS) {
                        r = poll(&p, 1, CONNECT_TIMEOUT_MS - waited);
                        if (r <= 0)
                                break;
                        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
                                errno = err ? err : errno;
                                return -1;
                        }
                        return 0;
                }
                (void)poll(NULL, 0, 50);
                if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
                        return 0;
                if (errno != EAGAIN && errno != EINPROGRESS)
                        return -1;
        }
        errno = ETIMEDOUT;
        return -1;
}

static int request(const char *path, const char *req, char **ret)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;
        struct buf b = {0};
        size_t len = strlen(req), off = 0;

        if (strlen(path) >= sizeof(sa.sun_path)) {
                fprintf(stderr, "tunnelctl: socket path too long: %s\n", path);
                return -EXIT_UNREACHABLE;
        }
        memcpy(sa.sun_path, path, strlen(path) + 1);    /* length checked above */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || connect_bounded(fd, &sa) < 0) {
                fprintf(stderr, "tunnelctl: cannot reach tunneld at %s: %s (is tunneld running? -s sets the socket)\n",
                        path, errno == ETIMEDOUT ? "its listen queue stays full" : strerror(errno));
                return -EXIT_UNREACHABLE;
        }
        (void)fcntl(fd, F_SETFL, 0);    /* blocking again: the reply loop polls */
        while (off < len) {
                ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        /* a full tunneld answers "too many clients" and closes before reading
                         * us: its reply is waiting; read it rather than report EPIPE */
                        break;
                }
                off += (size_t)n;
        }
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                char chunk[65536];
                ssize_t n;
                int r = poll(&p, 1, REPLY_TIMEOUT_MS);

                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0) {
                        fprintf(stderr, "tunnelctl: no reply from tunneld within %d s\n", REPLY_TIMEOUT_MS / 1000);
                        buf_free(&b);
                        return -EXIT_UNREACHABLE;
                }
                n = recv(fd, chunk, sizeof(chunk), 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                buf_append(&b, chunk, (size_t)n);
                if (memchr(chunk, '\n', (size_t)n) || b.len > REPLY_MAX)
                        break;
        }
        if (!b.data || !memchr(b.data, '\n', b.len)) {
                fprintf(stderr, "tunnelctl: tunneld closed the connection without a reply\n");
                buf_free(&b);
                return -EXIT_UNREACHABLE;
        }
        return buf_steal(&b, ret) < 0 ? -EXIT_NOT_UP : 0;
}

/* tunnelctl --pid P reload, when the socket will not do: SIGHUP, and say so. */
static int reload_by_signal(long pid, const char *why)
{
        if (kill((pid_t)pid, SIGHUP) < 0) {
                fprintf(stderr, "tunnelctl: cannot signal pid %ld: %s\n", pid, strerror(errno));
                return errno == EPERM ? EXIT_DENIED : EXIT_UNREACHABLE;
        }
        fprintf(stderr, "tunnelctl: %s (pid %ld): sent SIGHUP instead, not waiting for the reload "
                        "(see its log)\n", why, pid);
        return EXIT_OK;
}

static bool use_color;

static const char *state_color(const char *state)
{
        if (!use_color)
                return "";
        if (strcmp(state, "up") == 0)
                return "\033[32m";
        if (strcmp(state, "failed") == 0)
                return "\033[1;31m";
        if (strcmp(state, "backoff") == 0)
                return "\033[33m";
        if (strcmp(state, "starting") == 0 || strcmp(state, "stopping") == 0)
                return "\033[36m";
        return "\033[2m";
}

static char *duration_or_dash(const struct json *v, const char *prefix)
{
        char d[DURATION_MAX];
        char *s = NULL;

        if (!v || v->type != JSON_NUMBER)
                return strdup("-");
        if (asprintf(&s, "%s%s", prefix, format_duration(v->number < 0 ? 0 : v->number, d, sizeof(d))) < 0)
                return NULL;
        return s;
}

static char *last_exit_text(const struct json *t)
{
        const struct json *e = json_get(t, "last_exit");
        const char *sig, *fail;
        char ran[DURATION_MAX];
        struct buf b = {0};
        char *s = NULL;

        if (!e || e->type != JSON_OBJECT)
                return strdup("-");
        sig = json_get_string(e, "signal");
        if (sig)
                buf_printf(&b, "SIG%s", sig);
        else
                buf_printf(&b, "status %.0f", json_get_number(e, "status", -1));
        buf_printf(&b, " after %s", format_duration(json_get_number(e, "ran", 0), ran, sizeof(ran)));
        fail = json_get_string(e, "failure");
        if (json_get_bool(e, "requested", false))
                buf_printf(&b, " (stopped)");
        else if (fail)
                buf_printf(&b, " (%s)", fail);
        return buf_steal(&b, &s) < 0 ? NULL : s;
}

static char *forwards_text(const struct json *t)
{
        static const struct { const char *key, *flag; } kinds[] = { { "local", "L" }, { "remote", "R" }, { "dynamic", "D" } };
        const struct json *f = json_get(t, "forwards");
        struct buf b = {0};
        char *s = NULL;

        for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
                const struct json *list = json_get(f, kinds[k].key);
                for (size_t i = 0; list && list->type == JSON_ARRAY && i < list->n; i++)
                        if (list->items[i]->type == JSON_STRING)
                                buf_printf(&b, "%s%s %s", b.len ? ", " : "", kinds[k].flag, list->items[i]->string);
        }
        {
                /* ports the server chose for -R 0:…, "34433 for remote forward to host:80" */
                const struct json *list = json_get(f, "allocated");
                for (size_t i = 0; list && list->type == JSON_ARRAY && i < list->n; i++)
                        if (list->items[i]->type == JSON_STRING)
                                buf_printf(&b, "%sR port %.*s", b.len ? ", " : "",
                                           (int)strcspn(list->items[i]->string, " "), list->items[i]->string);
        }
        if (!b.len)
                buf_printf(&b, "-");
        return buf_steal(&b, &s) < 0 ? NULL : s;
}

#define COLUMNS 8
static const char *const headers[COLUMNS] = {
        "NAME", "STATE", "PID", "UPTIME", "STARTS", "LAST EXIT", "NEXT RETRY", "FORWARDS",
};

static void print_table(const struct json *tunnels)
{
        size_t n = tunnels->n, width[COLUMNS];
        char ***cells = calloc(n, sizeof(char **));

        if (!cells)
                return;
        for (int c = 0; c < COLUMNS; c++)
                width[c] = strlen(headers[c]);
        for (size_t i = 0; i < n; i++) {
                const struct json *t = tunnels->items[i];
                const struct json *pid = json_get(t, "pid");
                const char *state = json_get_string(t, "state");
                char *row[COLUMNS] = {0};

                cells[i] = calloc(COLUMNS, sizeof(char *));
                if (!cells[i])
                        continue;
                row[0] = strdup(json_get_string(t, "name") ? json_get_string(t, "name") : "?");
                if (state && strcmp(state, "stopped") == 0 && !json_get_bool(t, "enabled", true))
                        row[1] = strdup("disabled");
                else
                        row[1] = strdup(state ? state : "?");
                if (pid && pid->type == JSON_NUMBER)
                        (void)!asprintf(&row[2], "%.0f", pid->number);
                else
                        row[2] = strdup("-");
                row[3] = duration_or_dash(json_get(t, "uptime"), "");
                if (json_get_number(t, "restarts", 0) > 0)
                        (void)!asprintf(&row[4], "%.0f (%.0f)", json_get_number(t, "starts", 0),
                                        json_get_number(t, "restarts", 0));
                else
                        (void)!asprintf(&row[4], "%.0f", json_get_number(t, "starts", 0));
                row[5] = last_exit_text(t);
                row[6] = duration_or_dash(json_get(t, "retry_in"), "in ");
                row[7] = forwards_text(t);
                for (int c = 0; c < COLUMNS; c++) {
                        cells[i][c] = row[c] ? row[c] : strdup("?");
                        if (cells[i][c] && strlen(cells[i][c]) > width[c])
                                width[c] = strlen(cells[i][c]);
                }
        }
        for (int c = 0; c < COLUMNS; c++) {
                if (c + 1 < COLUMNS)
                        printf("%-*s  ", (int)width[c], headers[c]);
                else
                        printf("%s\n", headers[c]);
        }
        for (size_t i = 0; i < n; i++) {
                if (!cells[i])
                        continue;
                for (int c = 0; c < COLUMNS; c++) {
                        const char *v = cells[i][c] ? cells[i][c] : "?";
                        if (c == 1 && use_color)
                                printf("%s%-*s\033[0m  ", state_color(v), (int)width[c], v);
                        else if (c + 1 < COLUMNS)
                                printf("%-*s  ", (int)width[c], v);
                        else
                                printf("%s\n", v);
                        free(cells[i][c]);
                }
                free(cells[i]);
        }
        free(cells);
}

static int print_errors(const struct json *reply)
{
        const char *error = json_get_string(reply, "error");
        const struct json *errors = json_get(reply, "errors");

        for (size_t i = 0; errors && errors->type == JSON_ARRAY && i < errors->n; i++)
                if (errors->items[i]->type == JSON_STRING)
                        fprintf(stderr, "%s\n", errors->items[i]->string);
        fprintf(stderr, "tunnelctl: %s\n", error ? error : "request failed");
        if (error && strncmp(error, "permission denied", 17) == 0)
                return EXIT_DENIED;
        if (error && strncmp(error, "too many", 8) == 0)
                return EXIT_UNREACHABLE;
        return EXIT_NOT_UP;
}

int main(int argc, char *argv[])
{
        static const struct option options[] = {
                { "socket",  required_argument, NULL, 's' },
                { "pid",     required_argument, NULL, 'p' },
                { "json",    no_argument,       NULL, 'j' },
                { "color",   required_argument, NULL, 'C' },
                { "all",     no_argument,       NULL, 'a' },
                { "help",    no_argument,       NULL, 'h' },
                { "version", no_argument,       NULL, 'V' },
                {}
        };
        const char *path = getenv("TUNNELD_SOCKET"), *color = "auto", *cmd, *pid_arg = NULL;
        _cleanup_free_ char *pid_socket = NULL;
        bool json_out = false, all = false;
        _cleanup_free_ char *reply_text = NULL;
        _cleanup_buf_ struct buf req = {0};
        _cleanup_free_ char *req_text = NULL;
        struct json *reply = NULL;
        int c, r, ret = EXIT_OK;

        if (!path || !*path)
                path = TUNNELD_CONTROL_SOCKET;
        while ((c = getopt_long(argc, argv, "s:p:jahV", options, NULL)) >= 0) {
                switch (c) {
                case 's': path = optarg; break;
                case 'p': pid_arg = optarg; break;
                case 'j': json_out = true; break;
                case 'C': color = optarg; break;
                case 'a': all = true; break;
                case 'h': help(); return EXIT_OK;
                case 'V': printf("tunnelctl %s\n", TUNNELD_VERSION); return EXIT_OK;
                default:
                        fprintf(stderr, "Try 'tunnelctl --help'.\n");
                        return EXIT_USAGE;
                }
        }
        if (strcmp(color, "always") == 0)
                use_color = true;
        else if (strcmp(color, "auto") == 0) {
                const char *term = getenv("TERM");
                use_color = isatty(STDOUT_FILENO) && !getenv("NO_COLOR") && !(term && strcmp(term, "dumb") == 0);
        }
        else if (strcmp(color, "never") != 0) {
                fprintf(stderr, "tunnelctl: --color must be auto, always or never\n");
                return EXIT_USAGE;
        }
        if (optind >= argc) {
                fprintf(stderr, "tunnelctl: a command is needed: status, start, stop, restart, reload, check, metrics\n"
                                "Try 'tunnelctl --help'.\n");
                return EXIT_USAGE;
        }
        cmd = argv[optind++];

        buf_printf(&req, "{\"cmd\":");
        if (strcmp(cmd, "status") == 0 || strcmp(cmd, "start") == 0 || strcmp(cmd, "stop") == 0 ||
            strcmp(cmd, "restart") == 0) {
                bool changes = strcmp(cmd, "status") != 0;

                if (changes && all == (optind < argc)) {
                        fprintf(stderr, "tunnelctl: %s needs tunnel names or --all (not both)\n", cmd);
                        return EXIT_USAGE;
                }
                if (!changes && all) {
                        fprintf(stderr, "tunnelctl: status takes names, or nothing for all\n");
                        return EXIT_USAGE;
                }
                buf_json_string(&req, cmd);
                if (all)
                        buf_printf(&req, ",\"all\":true");
                if (optind < argc) {
                        buf_printf(&req, ",\"tunnels\":[");
                        for (int i = optind; i < argc; i++) {
                                if (i > optind)
                                        buf_append(&req, ",", 1);
                                buf_json_string(&req, argv[i]);
                        }
                        buf_append(&req, "]", 1);
                }
        } else if (strcmp(cmd, "reload") == 0 || strcmp(cmd, "check") == 0 || strcmp(cmd, "metrics") == 0) {
                if (optind < argc || all) {
                        fprintf(stderr, "tunnelctl: %s takes no arguments\n", cmd);
                        return EXIT_USAGE;
                }
                buf_json_string(&req, cmd);
        } else {
                fprintf(stderr, "tunnelctl: unknown command '%s'\nTry 'tunnelctl --help'.\n", cmd);
                return EXIT_USAGE;
        }
        buf_append(&req, "}\n", 2);
        if (buf_steal(&req, &req_text) < 0)
                return EXIT_NOT_UP;

        if (pid_arg) {
                char *end;
                long pid = strtol(pid_arg, &end, 10);

                if (*end || pid <= 0) {
                        fprintf(stderr, "tunnelctl: --pid needs a process id, not '%s'\n", pid_arg);
                        return EXIT_USAGE;
                }
                r = socket_of_pid(pid, &pid_socket);
                if (r < 0 && r != -ENOENT && socket_is_of_pid(path, pid))
                        r = 0;          /* pid's /proc is hidden, but it answers on path */
                else if (r == -ESRCH && kill((pid_t)pid, 0) == 0)
                        r = -ENOENT;    /* hidden, and listens elsewhere or nowhere */
                if (r == -ENOENT && strcmp(cmd, "reload") == 0)
                        /* control_socket = "none": the signal is all there is */
                        return reload_by_signal(pid, "no control socket of it found");
                if (r < 0) {
                        fprintf(stderr, "tunnelctl: no control socket of pid %ld: %s\n", pid,
                                r == -ENOENT ? "none found (-s names one to try)" : strerror(-r));
                        return EXIT_UNREACHABLE;
                }
                if (pid_socket)
                        path = pid_socket;
        }

        r = request(path, req_text, &reply_text);
        if (r < 0) {
                /* systemctl reload must not fail because the socket is flooded or hung: the
                 * signal reaches tunneld anyway (without the wait for the result) */
                if (pid_arg && strcmp(cmd, "reload") == 0)
                        return reload_by_signal(strtol(pid_arg, NULL, 10), "its control socket did not answer");
                return -r;
        }
        if (json_parse(reply_text, strcspn(reply_text, "\n"), &reply) < 0) {
                fprintf(stderr, "tunnelctl: tunneld sent a reply that is not JSON\n");
                return EXIT_NOT_UP;
        }
        if (json_out)
                printf("%.*s\n", (int)strcspn(reply_text, "\n"), reply_text);
        if (!json_get_bool(reply, "ok", false)) {
                const char *error = json_get_string(reply, "error");

                if (pid_arg && strcmp(cmd, "reload") == 0 && error && strncmp(error, "too many", 8) == 0) {
                        fprintf(stderr, "tunnelctl: tunneld: %s\n", error);
                        ret = reload_by_signal(strtol(pid_arg, NULL, 10), "its control socket is full");
                        goto done;
                }
                ret = print_errors(reply);
                goto done;
        }

        if (strcmp(cmd, "status") == 0 || strcmp(cmd, "start") == 0 || strcmp(cmd, "stop") == 0 ||
            strcmp(cmd, "restart") == 0) {
                const struct json *tunnels = json_get(reply, "tunnels");

                if (!tunnels || tunnels->type != JSON_ARRAY) {
                        fprintf(stderr, "tunnelctl: reply without a tunnel list\n");
                        ret = EXIT_NOT_UP;
                        goto done;
                }
                if (!json_out) {
                        if (strcmp(cmd, "status") == 0)
                                print_table(tunnels);
                        else
                                for (size_t i = 0; i < tunnels->n; i++)
                                        printf("%s: %s\n", json_get_string(tunnels->items[i], "name"),
                                               json_get_string(tunnels->items[i], "state"));
                }
                if (strcmp(cmd, "status") == 0 && optind < argc)
                        for (size_t i = 0; i < tunnels->n; i++) {
                                const char *state = json_get_string(tunnels->items[i], "state");
                                if (!state || strcmp(state, "up") != 0)
                                        ret = EXIT_NOT_UP;
                        }
        } else if (strcmp(cmd, "reload") == 0) {
                if (!json_out)
                        printf("reloaded: %.0f tunnels\n", json_get_number(reply, "tunnels", 0));
        } else if (strcmp(cmd, "metrics") == 0) {
                if (!json_out)
                        fputs(json_get_string(reply, "metrics") ? json_get_string(reply, "metrics") : "", stdout);
        } else if (strcmp(cmd, "check") == 0) {
                if (!json_out) {
                        double n = json_get_number(reply, "tunnels", 0), e = json_get_number(reply, "enabled", n);
                        printf("configuration OK: %.0f tunnel%s", n, n == 1 ? "" : "s");
                        if (e != n)
                                printf(" (%.0f enabled)", e);
                        printf("\n");
                }
        }
done:
        json_free(reply);
        return ret;
}
