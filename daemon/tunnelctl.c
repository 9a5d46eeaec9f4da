/* SPDX-License-Identifier: MIT */
/* tunnelctl: look at and steer a running tunneld through its control socket. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_commands.h"
#include "json.h"
#include "json_write.h"
#include "tunnelctl_conn.h"
#include "tunnelctl_follow.h"
#include "tunnelctl_show.h"
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
        EXIT_DROPPED = 5,       /* tunneld dropped the connection (its last line says why) */
};

/* Names go to tunneld in requests of at most this many bytes (its limit is 4096 a line):
 * any number of names, of any length, in one command. */
#define REQUEST_BUDGET 3072

static void help(void)
{
        printf("NAME\n"
               "    tunnelctl - show and control the tunnels of a running tunneld\n"
               "\n"
               "SYNOPSIS\n");
        for (size_t i = 0; i < ELEMENTSOF(ctl_commands); i++)
                printf("    tunnelctl [OPTIONS] %s%s%s\n", ctl_commands[i].name, *ctl_commands[i].synopsis ? " " : "",
                       ctl_commands[i].synopsis);
        printf("\n"
"DESCRIPTION\n"
"    tunnelctl talks to tunneld over its control socket. It shows each tunnel's\n"
"    state, ssh pid, uptime, starts, last exit and next retry, and starts, stops\n"
"    or restarts single tunnels without touching the others.\n"
"\n"
"COMMANDS\n");
        for (size_t i = 0; i < ELEMENTSOF(ctl_commands); i++) {
                const struct ctl_command *c = &ctl_commands[i];

                printf("    %s", c->name);
                if (c->args == CTL_ARGS_NAMES)
                        printf(" [NAME...]");
                else if (c->args == CTL_ARGS_NAMES_OR_ALL)
                        printf(" NAME...|--all");
                else if (c->args == CTL_ARGS_NAMES_NEEDED)
                        printf(" %s", c->synopsis);
                printf("\n%s", c->help);
        }
        printf(
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
"    -l, --long          with status: every forward and the reason under each row\n"
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
"        control_group of tunneld.conf (tunneld says who may)\n"
"    5   tunneld dropped the connection, and said why: a client that does not\n"
"        read what it is sent (or falls behind the events), stays idle, or whose\n"
"        place a client that comes first needed\n"
"\n"
"EXAMPLES\n"
"    tunnelctl status\n"
"    tunnelctl status db || echo 'db is down'\n"
"    tunnelctl restart db\n"
"    tunnelctl --json status | jq '.tunnels[] | select(.state != \"up\") | .name'\n");
}

struct args {
        const char *path, *pid_arg;
        const struct ctl_command *cmd;
        bool json, all, long_view;
        double timeout;                 /* wait */
        char **names;                   /* argv's */
        int n_names;
};

static int parse_args(int argc, char *argv[], struct args *a)
{
        static const struct option options[] = {
                { "socket",  required_argument, NULL, 's' },
                { "pid",     required_argument, NULL, 'p' },
                { "json",    no_argument,       NULL, 'j' },
                { "long",    no_argument,       NULL, 'l' },
                { "timeout", required_argument, NULL, 't' },
                { "color",   required_argument, NULL, 'C' },
                { "all",     no_argument,       NULL, 'a' },
                { "help",    no_argument,       NULL, 'h' },
                { "version", no_argument,       NULL, 'V' },
                {}
        };
        const char *color = "auto", *term = getenv("TERM");
        int c;

        *a = (struct args){ .path = getenv("TUNNELD_SOCKET"), .timeout = 60 };
        if (!a->path || !*a->path)
                a->path = TUNNELD_CONTROL_SOCKET;
        while ((c = getopt_long(argc, argv, "s:p:jlt:ahV", options, NULL)) >= 0) {
                switch (c) {
                case 's': a->path = optarg; break;
                case 'p': a->pid_arg = optarg; break;
                case 'j': a->json = true; break;
                case 'l': a->long_view = true; break;
                case 't': {
                        char *end;
                        a->timeout = strtod(optarg, &end);
                        if (*end || a->timeout < 0) {
                                fprintf(stderr, "tunnelctl: --timeout needs seconds (0: no limit), not '%s'\n", optarg);
                                return EXIT_USAGE;
                        }
                        break;
                }
                case 'C': color = optarg; break;
                case 'a': a->all = true; break;
                case 'h': help(); exit(EXIT_OK);
                case 'V': printf("tunnelctl %s\n", TUNNELD_VERSION); exit(EXIT_OK);
                default:
                        fprintf(stderr, "Try 'tunnelctl --help'.\n");
                        return EXIT_USAGE;
                }
        }
        if (strcmp(color, "always") == 0)
                show_set_color(true);
        else if (strcmp(color, "auto") == 0)
                show_set_color(isatty(STDOUT_FILENO) && !getenv("NO_COLOR") && !(term && strcmp(term, "dumb") == 0));
        else if (strcmp(color, "never") != 0) {
                fprintf(stderr, "tunnelctl: --color must be auto, always or never\n");
                return EXIT_USAGE;
        }
        if (optind >= argc) {
                fprintf(stderr, "tunnelctl: a command is needed:");
                for (size_t i = 0; i < ELEMENTSOF(ctl_commands); i++)
                        fprintf(stderr, "%s %s", i ? "," : "", ctl_commands[i].name);
                fprintf(stderr, "\nTry 'tunnelctl --help'.\n");
                return EXIT_USAGE;
        }
        a->cmd = ctl_command_find(argv[optind]);
        if (!a->cmd) {
                fprintf(stderr, "tunnelctl: unknown command '%s'\nTry 'tunnelctl --help'.\n", argv[optind]);
                return EXIT_USAGE;
        }
        optind++;
        a->names = argv + optind;
        a->n_names = argc - optind;
        return EXIT_OK;
}

/* The command's arguments, as its entry in ctl_commands says. */
static int check_usage(const struct args *a)
{
        const char *name = a->cmd->name;

        if (a->long_view && ctl_command_id(a->cmd) != CTL_CMD_STATUS) {
                fprintf(stderr, "tunnelctl: -l goes with status\n");
                return EXIT_USAGE;
        }
        switch (a->cmd->args) {
        case CTL_ARGS_NAMES_OR_ALL:
                if (a->all == (a->n_names > 0)) {
                        fprintf(stderr, "tunnelctl: %s needs tunnel names or --all (not both)\n", name);
                        return EXIT_USAGE;
                }
                return EXIT_OK;
        case CTL_ARGS_NAMES:
                if (a->all) {
                        fprintf(stderr, "tunnelctl: %s takes names, or nothing for all\n", name);
                        return EXIT_USAGE;
                }
                return EXIT_OK;
        case CTL_ARGS_NAMES_NEEDED:
                if (!a->n_names || a->all) {
                        fprintf(stderr, "tunnelctl: %s needs tunnel names\n", name);
                        return EXIT_USAGE;
                }
                return EXIT_OK;
        case CTL_ARGS_NONE:
        default:
                if (a->n_names || a->all) {
                        fprintf(stderr, "tunnelctl: %s takes no arguments\n", name);
                        return EXIT_USAGE;
                }
                return EXIT_OK;
        }
}

static bool is(const struct args *a, enum ctl_command_id id)
{
        return ctl_command_id(a->cmd) == id;
}

/* Commands whose reply lists tunnels (status, start, stop, restart). */
static bool lists_tunnels(const struct args *a)
{
        return a->cmd->request && (a->cmd->args == CTL_ARGS_NAMES_OR_ALL || is(a, CTL_CMD_STATUS));
}

/* The requests for a command: one, or for many names as many as it takes. */
static int build_requests(const struct args *a, char ***ret)
{
        char **reqs = NULL;
        int i = 0;

        do {
                struct buf b = {0};
                struct json_writer w = json_writer_init(&b);
                char *text = NULL;
                json_begin_object(&w);
                json_field_string(&w, "cmd", a->cmd->name);
                if (a->all)
                        json_field_bool(&w, "all", true);
                if (i < a->n_names) {
                        json_write_key(&w, "tunnels");
                        json_begin_array(&w);
                        /* at least one name per request, however long (a name's escapes
                         * take at most 6 bytes a byte) */
                        do
                                json_write_string(&w, a->names[i++]);
                        while (i < a->n_names && b.len + strlen(a->names[i]) * 6 + 8 < REQUEST_BUDGET);
                        json_end_array(&w);
                }
                json_end_object(&w);
                buf_puts(&b, "\n");
                if (buf_steal(&b, &text) < 0 || strv_push(&reqs, text) < 0) {
                        free(text);
                        strv_free(reqs);
                        return -ENOMEM;
                }
                free(text);
        } while (i < a->n_names);
        *ret = reqs;
        return 0;
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

/* --pid: the socket of that tunneld (*path stays as it is if -s is that socket). *done:
 * nothing more to do, the return is tunnelctl's exit status. */
static int resolve_pid(const struct args *a, const char **path, char **owned, bool *done)
{
        char *end;
        long pid = strtol(a->pid_arg, &end, 10);
        int r;

        *done = true;
        if (*end || pid <= 0) {
                fprintf(stderr, "tunnelctl: --pid needs a process id, not '%s'\n", a->pid_arg);
                return EXIT_USAGE;
        }
        r = tunnelctl_conn_socket_of_pid(pid, owned);
        if (r < 0 && r != -ENOENT && tunnelctl_conn_socket_is_of_pid(*path, pid))
                r = 0;          /* pid's /proc is hidden, but it answers on path */
        else if (r == -ESRCH && kill((pid_t)pid, 0) == 0)
                r = -ENOENT;    /* hidden, and listens elsewhere or nowhere */
        if (r == -ENOENT && is(a, CTL_CMD_RELOAD))
                /* control_socket = "none": the signal is all there is */
                return reload_by_signal(pid, "no control socket of it found");
        if (r < 0) {
                fprintf(stderr, "tunnelctl: no control socket of pid %ld: %s\n", pid,
                        r == -ENOENT ? "none found (-s names one to try)" : strerror(-r));
                return EXIT_UNREACHABLE;
        }
        if (*owned)
                *path = *owned;
        *done = false;
        return EXIT_OK;
}

static int print_errors(const struct json *reply)
{
        const char *error = json_get_string(reply, "error");
        const struct json *errors = json_get(reply, "errors");

        if (tunnelctl_conn_dropped(reply)) {
                fprintf(stderr, "tunnelctl: tunneld dropped the connection: %s\n", tunnelctl_conn_dropped(reply));
                return EXIT_DROPPED;
        }
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

/* Send every request on one connection; the replies, parsed, in *ret. A positive return
 * is tunnelctl's exit status. */
struct replies {
        struct json **parsed;
        char **texts;                   /* as tunneld sent them (one line each) */
        size_t n;
};

static void replies_free(struct replies *r)
{
        for (size_t i = 0; i < r->n; i++)
                json_free(r->parsed[i]);
        free(r->parsed);
        strv_free(r->texts);
        *r = (struct replies){0};
}

static int exchange_all(const struct args *a, const char *path, char **reqs, struct replies *ret)
{
        _cleanup_close_ int fd = -1;
        struct json **replies = calloc(strv_length(reqs) + 1, sizeof(struct json *));
        char **texts = NULL;
        size_t n = 0;
        int r;

        if (!replies)
                return EXIT_NOT_UP;
        r = tunnelctl_conn_open(path, &fd);
        for (; r >= 0 && reqs[n]; n++) {
                _cleanup_free_ char *text = NULL;

                r = tunnelctl_conn_exchange(fd, reqs[n], &text);
                if (r >= 0)
                        text[strcspn(text, "\n")] = '\0';
                if (r >= 0 && json_parse(text, strlen(text), &replies[n]) < 0) {
                        /* a reply tunneld cut short when it dropped us: the next line says why */
                        free(text);
                        text = NULL;
                        if (tunnelctl_conn_read_line(fd, 1000, &text) < 0 ||
                            json_parse(text, strcspn(text, "\n"), &replies[n]) < 0 ||
                            !tunnelctl_conn_dropped(replies[n])) {
                                replies[n] = json_free(replies[n]);
                                fprintf(stderr, "tunnelctl: tunneld sent a reply that is not JSON\n");
                                r = -EPROTO;
                        } else
                                text[strcspn(text, "\n")] = '\0';
                }
                if (r >= 0 && strv_push(&texts, text) < 0)
                        r = -ENOMEM;
                if (r >= 0 && !json_get_bool(replies[n], "ok", false)) {
                        n++;
                        break;          /* the error reply is the answer */
                }
        }
        *ret = (struct replies){ .parsed = replies, .texts = texts, .n = n };
        if (r < 0) {
                replies_free(ret);
                /* systemctl reload must not fail because the socket is flooded or hung: the
                 * signal reaches tunneld anyway (without the wait for the result) */
                if (a->pid_arg && is(a, CTL_CMD_RELOAD))
                        return reload_by_signal(strtol(a->pid_arg, NULL, 10), "its control socket did not answer");
                return r == -EPROTO ? EXIT_NOT_UP : EXIT_UNREACHABLE;
        }
        if (a->pid_arg && is(a, CTL_CMD_RELOAD) && !json_get_bool(replies[n - 1], "ok", false) &&
            json_get_string(replies[n - 1], "error") && strncmp(json_get_string(replies[n - 1], "error"), "too many", 8) == 0) {
                fprintf(stderr, "tunnelctl: tunneld: %s\n", json_get_string(replies[n - 1], "error"));
                replies_free(ret);
                return reload_by_signal(strtol(a->pid_arg, NULL, 10), "its control socket is full");
        }
        return 0;
}

/* One reply of many: the first, with every reply's tunnels. */
static void print_merged_json(struct json *const *replies, size_t n)
{
        struct buf b = {0};
        struct json_writer w = json_writer_init(&b);
        char *text = NULL;
        const struct json *first = replies[0];

        json_begin_object(&w);
        for (size_t i = 0; first->type == JSON_OBJECT && i < first->n; i++) {
                json_write_key(&w, first->keys[i]);
                if (strcmp(first->keys[i], "tunnels") != 0) {
                        json_write_value(&w, first->items[i]);
                        continue;
                }
                json_begin_array(&w);
                for (size_t k = 0; k < n; k++) {
                        const struct json *list = json_get(replies[k], "tunnels");
                        for (size_t j = 0; list && list->type == JSON_ARRAY && j < list->n; j++)
                                json_write_value(&w, list->items[j]);
                }
                json_end_array(&w);
        }
        json_end_object(&w);
        if (buf_steal(&b, &text) >= 0) {
                printf("%s\n", text);
                free(text);
        }
}

/* Every reply's tunnels in one array (borrowed items). */
static struct json merged_tunnels(struct json *const *replies, size_t n)
{
        struct json all = { .type = JSON_ARRAY };
        size_t total = 0;

        for (size_t k = 0; k < n; k++) {
                const struct json *list = json_get(replies[k], "tunnels");
                total += list && list->type == JSON_ARRAY ? list->n : 0;
        }
        all.items = calloc(total + 1, sizeof(struct json *));
        for (size_t k = 0; all.items && k < n; k++) {
                const struct json *list = json_get(replies[k], "tunnels");
                for (size_t j = 0; list && list->type == JSON_ARRAY && j < list->n; j++)
                        all.items[all.n++] = list->items[j];
        }
        return all;
}

static int report(const struct args *a, const struct replies *rs)
{
        struct json *const *replies = rs->parsed;
        size_t n = rs->n;
        const struct json *last = replies[n - 1];
        int ret = EXIT_OK;

        if (a->json && n == 1)
                printf("%s\n", rs->texts[0]);         /* tunneld's own reply, unchanged */
        else if (a->json)
                print_merged_json(replies, n);
        if (!json_get_bool(last, "ok", false))
                return print_errors(last);
        if (lists_tunnels(a)) {
                struct json all = merged_tunnels(replies, n);

                if (!a->json && is(a, CTL_CMD_STATUS) && all.n == 0 && json_get_string(last, "status"))
                        printf("tunneld: %s\n", json_get_string(last, "status"));     /* why there is none (loading?) */
                else if (!a->json && is(a, CTL_CMD_STATUS))
                        show_table(&all, a->long_view);
                for (size_t i = 0; i < all.n; i++) {
                        const char *state = json_get_string(all.items[i], "state");
                        if (!a->json && !is(a, CTL_CMD_STATUS))
                                printf("%s: %s\n", json_get_string(all.items[i], "name"), state ? state : "?");
                        if (is(a, CTL_CMD_STATUS) && a->n_names && (!state || strcmp(state, "up") != 0))
                                ret = EXIT_NOT_UP;
                }
                free(all.items);
        } else if (a->json)
                ;
        else if (is(a, CTL_CMD_RELOAD))
                printf("reloaded: %.0f tunnels\n", json_get_number(last, "tunnels", 0));
        else if (is(a, CTL_CMD_CHECK)) {
                double t = json_get_number(last, "tunnels", 0), e = json_get_number(last, "enabled", t);
                printf("configuration OK: %.0f tunnel%s", t, t == 1 ? "" : "s");
                if (e != t)
                        printf(" (%.0f enabled)", e);
                printf("\n");
                if (!json_get_bool(last, "ssh", true))
                        printf("(ssh -G was not asked: only root, tunneld's user or its control_group make tunneld "
                               "run ssh)\n");
        }
        return ret;
}

/* metrics: printed as the reply comes, of any size. */
static int print_metrics(const struct args *a)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *line = NULL;
        struct json *reply = NULL;
        int r = tunnelctl_conn_open(a->path, &fd);

        if (r < 0)
                return EXIT_UNREACHABLE;
        r = tunnelctl_conn_print_metrics(fd, a->json, stdout, &line);
        if (fflush(stdout) != 0) {
                fprintf(stderr, "tunnelctl: cannot write the metrics: %s\n", strerror(errno));
                return EXIT_NOT_UP;
        }
        if (r == 0)
                return EXIT_OK;
        if (r < 0)
                return r == -EPROTO ? EXIT_NOT_UP : EXIT_UNREACHABLE;
        /* not the metrics: an error, or why tunneld dropped us */
        if (json_parse(line, strcspn(line, "\n"), &reply) < 0) {
                fprintf(stderr, "tunnelctl: tunneld sent a reply that is not JSON\n");
                return EXIT_NOT_UP;
        }
        if (a->json && !tunnelctl_conn_dropped(reply))
                printf("%.*s\n", (int)strcspn(line, "\n"), line);
        r = json_get_bool(reply, "ok", false) ? EXIT_OK : print_errors(reply);
        json_free(reply);
        return r;
}

/* restart: what became of each tunnel's ssh (the reply only says "stopping"), one line
 * per tunnel in the order of the reply. */
static int report_restart(struct follow *f, const struct replies *rs)
{
        struct json all = merged_tunnels(rs->parsed, rs->n);
        char **names = calloc(all.n + 1, sizeof(char *)), **lines = calloc(all.n + 1, sizeof(char *));
        char **wait_lines = calloc(all.n + 1, sizeof(char *));
        size_t *slot = calloc(all.n + 1, sizeof(size_t));
        double *old = calloc(all.n + 1, sizeof(double));
        int n = 0, ret = EXIT_OK;

        if (!names || !lines || !wait_lines || !slot || !old) {
                ret = EXIT_FAILURE;
                goto out;
        }
        for (size_t i = 0; i < all.n; i++) {
                const char *name = json_get_string(all.items[i], "name"), *state = json_get_string(all.items[i], "state");
                const struct json *before = follow_tunnel(f, name ? name : "");
                const struct json *pid = json_get(all.items[i], "pid"), *next = json_get(all.items[i], "next_pid");
                double before_pid = before ? json_get_number(before, "pid", 0) : 0;
                int r;

                /* stopping: the old ssh is on its way out, its successor comes with an event;
                 * make-before-break: the old one serves until the new one has every forward
                 * (the "ssh" event), the tunnel's state the same meanwhile; the same ssh on
                 * its own connection: the new one failed at once (the "ssh" event with its
                 * failure, sent before this reply) */
                bool same = pid && pid->type == JSON_NUMBER && pid->number == before_pid &&
                            !json_get_string(all.items[i], "connection");
                if (state && before && (strcmp(state, "stopping") == 0 || (next && next->type == JSON_NUMBER) || same)) {
                        names[n] = (char *)name;
                        slot[n] = i;
                        old[n++] = before_pid;
                        continue;
                }
                if (before && pid && pid->type == JSON_NUMBER && before_pid > 0 && pid->number != before_pid)
                        r = asprintf(&lines[i], "%s: restarted: ssh pid %.0f (was %.0f)", name, pid->number, before_pid);
                else if (json_get_string(all.items[i], "connection") && pid && pid->type == JSON_NUMBER)
                        /* a shared connection's tunnel: its forwards were closed and opened again */
                        r = asprintf(&lines[i], "%s: restarted: its forwards opened again on the shared connection "
                                     "%s (ssh pid %.0f)", name, json_get_string(all.items[i], "connection"), pid->number);
                else if (pid && pid->type == JSON_NUMBER)
                        r = asprintf(&lines[i], "%s: %s: ssh pid %.0f", name, state, pid->number);
                else
                        r = asprintf(&lines[i], "%s: %s", name, state ? state : "?");
                if (r < 0)
                        lines[i] = NULL;
        }
        if (n) {
                int followed = follow_restarted(f, names, old, wait_lines, n, 30);

                ret = followed == 5 ? EXIT_DROPPED : followed ? EXIT_NOT_UP : EXIT_OK;
        }
        for (int k = 0; k < n; k++)
                lines[slot[k]] = wait_lines[k];
        for (size_t i = 0; i < all.n; i++)
                if (lines[i])
                        printf("%s\n", lines[i]);
out:
        for (size_t i = 0; lines && i < all.n; i++)
                free(lines[i]);
        free(names);
        free(lines);
        free(wait_lines);
        free(slot);
        free(old);
        free(all.items);
        return ret;
}

int main(int argc, char *argv[])
{
        _cleanup_strv_free_ char **reqs = NULL;
        _cleanup_free_ char *pid_socket = NULL;
        struct replies replies = {0};
        struct follow *follow = NULL;
        struct args a;
        int r;

        r = parse_args(argc, argv, &a);
        if (r == EXIT_OK)
                r = check_usage(&a);
        if (r != EXIT_OK)
                return r;
        if (a.pid_arg) {
                bool done;
                r = resolve_pid(&a, &a.path, &pid_socket, &done);
                if (done)
                        return r;
        }
        if (is(&a, CTL_CMD_EVENTS))
                return follow_events(a.path, a.names, a.n_names, a.json);
        if (is(&a, CTL_CMD_WAIT))
                return follow_wait(a.path, a.names, a.n_names, a.timeout);
        if (is(&a, CTL_CMD_METRICS))
                return print_metrics(&a);
        if (build_requests(&a, &reqs) < 0)
                return EXIT_NOT_UP;
        if (is(&a, CTL_CMD_RESTART) && !a.json) {
                r = follow_open(a.path, &follow);
                if (r < 0)
                        return r == -ECONNABORTED ? EXIT_DROPPED : EXIT_UNREACHABLE;
                follow_read_meanwhile(follow);
        }
        r = exchange_all(&a, a.path, reqs, &replies);
        if (r == 0 && replies.n && follow && json_get_bool(replies.parsed[replies.n - 1], "ok", false))
                r = report_restart(follow, &replies);
        else if (r == 0 && replies.n)
                r = report(&a, &replies);
        replies_free(&replies);
        follow_close(follow);
        return r;
}
