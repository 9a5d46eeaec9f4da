/* SPDX-License-Identifier: MIT */
/* autossh_map: one autossh command line (autossh's options, then ssh's) and the AUTOSSH_
 * variables it ran with → tunneld settings. Every value goes through the validator
 * tunneld.conf uses for that setting; what would run a command is refused; what tunneld
 * does not need or cannot map becomes a note saying what to do instead. */
#include "autossh_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "forward.h"
#include "util.h"
#include "validate.h"

_printf_(2, 3)
static int refuse(char why[IMPORT_WHY_MAX], const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why, IMPORT_WHY_MAX, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* A whole decimal number from min to max, and nothing else. */
static bool parse_long(const char *s, long min, long max, long *ret)
{
        char *end;
        long v;

        if (!*s || strlen(s) > 18)
                return false;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno || *end || v < min || v > max)
                return false;
        *ret = v;
        return true;
}

#define NOT_NEEDED_MONITOR "not needed: tunneld knows a tunnel is up from ssh's own messages and notices a " \
        "dead connection by ServerAlive (server_alive_interval x server_alive_count_max, 30 s x 3 by default); " \
        "for an end-to-end check through a forward, add a probe (tunneld.conf(5))"

int autossh_import_map_env(struct imported *t, const char *name, const char *value, char why[IMPORT_WHY_MAX])
{
        const char *v = strncmp(name, "AUTOSSH_", 8) == 0 ? name + 8 : NULL;
        long n;

        (void)why;
        if (!v)
                return autossh_imported_note(t, "%s=%s: set for autossh, not passed on: ssh runs with tunneld's environment",
                                     name, value);
        if (strcmp(v, "GATETIME") == 0) {
                if (parse_long(value, 0, 86400, &n))
                        t->gatetime = n;
                else
                        return autossh_imported_note(t, "%s=%s: not a number of seconds: gatetime left at its default", name, value);
                return 0;
        }
        if (strcmp(v, "MAXSTART") == 0) {
                if (!parse_long(value, LONG_MIN / 2, INT_MAX, &n))
                        return autossh_imported_note(t, "%s=%s: not a number: max_starts left unlimited", name, value);
                if (n > 0)
                        t->max_starts = n;
                else if (n == 0)
                        return autossh_imported_note(t, "%s=0: autossh would not start ssh at all; set enabled = false "
                                             "to keep a tunnel configured but not started", name);
                return 0;
        }
        if (strcmp(v, "MAXLIFETIME") == 0) {
                if (parse_long(value, 0, 365L * 86400, &n))
                        t->max_lifetime = n;
                else
                        return autossh_imported_note(t, "%s=%s: not a number of seconds: max_lifetime not set", name, value);
                return 0;
        }
        if (strcmp(v, "POLL") == 0 || strcmp(v, "FIRST_POLL") == 0 || strcmp(v, "PORT") == 0 ||
            strcmp(v, "MESSAGE") == 0)
                return autossh_imported_note(t, "%s=%s: the monitoring port's settings are " NOT_NEEDED_MONITOR, name, value);
        if (strcmp(v, "LOGFILE") == 0 || strcmp(v, "LOGLEVEL") == 0)
                return autossh_imported_note(t, "%s=%s: tunneld logs each tunnel's events and ssh's messages to the journal "
                                     "(journalctl -u tunneld TUNNEL=NAME); the global log_level sets the level",
                                     name, value);
        if (strcmp(v, "DEBUG") == 0)
                return autossh_imported_note(t, "%s=%s: run tunneld -d for debug output", name, value);
        if (strcmp(v, "PIDFILE") == 0)
                return autossh_imported_note(t, "%s=%s: no pid file: tunnelctl status shows each tunnel's ssh pid", name, value);
        if (strcmp(v, "PATH") == 0)
                return autossh_imported_note(t, "%s=%s: the ssh program is the global setting ssh = \"…\" (for every tunnel)",
                                     name, value);
        return autossh_imported_note(t, "%s=%s: not an autossh setting tunneld knows: ignored", name, value);
}

struct mapper {
        struct imported *t;
        char *why;
        struct buf dropped;             /* flags tunneld does not need, for one note */
};

static int set_string(struct mapper *m, char **field, const char *value, const char *(*validate)(const char *),
                      const char *what)
{
        const char *bad = validate(value);

        if (bad)
                return refuse(m->why, "%s \"%s\" %s", what, value, bad);
        if (*field)
                return 0;               /* ssh keeps the first value it is given */
        *field = strdup(value);
        return *field ? 0 : -ENOMEM;
}

static int set_port(struct mapper *m, const char *value, const char *what)
{
        int port;

        if (!validate_parse_port(value, 1, &port))
                return refuse(m->why, "%s \"%s\" is not a port from 1 to 65535", what, value);
        if (m->t->port < 0)
                m->t->port = port;
        return 0;
}

static int add_forward(struct mapper *m, char ***list, const char *(*validate)(const char *), const char *what,
                       const char *spec)
{
        const char *bad = validate(spec);

        if (bad)
                return refuse(m->why, "%s \"%s\" %s", what, spec, bad);
        return strv_push(list, spec);
}

/* An ssh option for ssh_options, as tunneld.conf validates it. */
static int add_option(struct mapper *m, const char *key, const char *value)
{
        _cleanup_free_ char *opt = NULL;
        const char *bad;

        if (asprintf(&opt, "%s=%s", key, value) < 0) {
                opt = NULL;
                return -ENOMEM;
        }
        bad = validate_ssh_option(opt);
        if (bad)
                return refuse(m->why, "-o \"%s\" %s", opt, bad);
        return strv_push(&m->t->ssh_options, opt);
}

static int set_number(struct mapper *m, int *field, const char *key, const char *value, long min, long max)
{
        long n;

        if (!parse_long(value, min, max, &n))
                return autossh_imported_note(m->t, "-o %s=%s: not a whole number of seconds from %ld to %ld: "
                                     "left at tunneld's default", key, value, min, max);
        if (*field < 0)
                *field = (int)n;
        return 0;
}

/* ssh_config's "LocalForward 5000 localhost:3306" is -L's "5000:localhost:3306". */
static int add_config_forward(struct mapper *m, char ***list, const char *(*validate)(const char *),
                              const char *key, const char *value)
{
        _cleanup_free_ char *spec = strdup(value);
        char *space;

        if (!spec)
                return -ENOMEM;
        space = strpbrk(spec, " \t");
        if (space) {
                size_t skip = strspn(space, " \t");
                *space = ':';
                memmove(space + 1, space + skip, strlen(space + skip) + 1);
        }
        return add_forward(m, list, validate, key, spec);
}

static const char *const set_by_tunneld[] = {
        "BatchMode", "ControlMaster", "ControlPath", "ControlPersist", "LogLevel", "SessionType",
        "RequestTTY", "ForkAfterAuthentication", "StdinNull", "ClearAllForwardings",
};
static const char *const runs_commands[] = {
        "ProxyCommand", "LocalCommand", "KnownHostsCommand", "RemoteCommand", "PermitLocalCommand",
};

static int map_option_pair(struct mapper *m, const char *key, const char *value)
{
        struct imported *t = m->t;

        if (strcasecmp(key, "ServerAliveInterval") == 0)
                return set_number(m, &t->server_alive_interval, key, value, 0, 86400);
        if (strcasecmp(key, "ServerAliveCountMax") == 0)
                return set_number(m, &t->server_alive_count_max, key, value, 1, 1000);
        if (strcasecmp(key, "ConnectTimeout") == 0)
                return set_number(m, &t->connect_timeout, key, value, 1, 3600);
        if (strcasecmp(key, "ExitOnForwardFailure") == 0)
                return autossh_imported_note(t, "-o %s=%s: not needed: a forward that fails is asked for again on the "
                                     "running ssh, the tunnel degraded meanwhile", key, value);
        if (strcasecmp(key, "Port") == 0)
                return set_port(m, value, "-o Port");
        if (strcasecmp(key, "User") == 0)
                return set_string(m, &t->user, value, validate_user, "-o User");
        if (strcasecmp(key, "ProxyJump") == 0)
                return set_string(m, &t->jump_host, value, validate_jump_host, "-o ProxyJump");
        if (strcasecmp(key, "IdentityFile") == 0 && !t->identity_file)
                return set_string(m, &t->identity_file, value, validate_path, "-o IdentityFile");
        if (strcasecmp(key, "LocalForward") == 0)
                return add_config_forward(m, &t->local_forwards, forward_validate_local, "-o LocalForward", value);
        if (strcasecmp(key, "RemoteForward") == 0)
                return add_config_forward(m, &t->remote_forwards, forward_validate_remote, "-o RemoteForward", value);
        if (strcasecmp(key, "DynamicForward") == 0)
                return add_forward(m, &t->dynamic_forwards, forward_validate_dynamic, "-o DynamicForward", value);
        for (size_t i = 0; i < ELEMENTSOF(runs_commands); i++)
                if (strcasecmp(key, runs_commands[i]) == 0)
                        return refuse(m->why, "-o %s runs a command: refused (for a jump host use -J, which "
                                      "becomes jump_host; anything else belongs in an ssh_config_file you "
                                      "have reviewed)", runs_commands[i]);
        for (size_t i = 0; i < ELEMENTSOF(set_by_tunneld); i++)
                if (strcasecmp(key, set_by_tunneld[i]) == 0)
                        return autossh_imported_note(t, "-o %s=%s: not mapped: tunneld sets %s itself (see SSH COMMAND "
                                             "LINE in tunneld(8))", key, value, set_by_tunneld[i]);
        return add_option(m, key, value);
}

/* "-o Key=Value", "-o 'Key Value'", "-o 'Key = Value'", as ssh_config reads a line. */
static int map_option(struct mapper *m, const char *arg)
{
        _cleanup_free_ char *copy = strdup(arg);
        char *key, *value, *end;
        size_t n;

        if (!copy)
                return -ENOMEM;
        key = copy + strspn(copy, " \t");
        n = strcspn(key, " \t=");
        if (n == 0 || !key[n])
                return refuse(m->why, "-o \"%s\" is not Key=Value", arg);
        value = key + n;
        value += strspn(value, " \t");
        if (*value == '=')
                value++;
        value += strspn(value, " \t");
        key[n] = '\0';
        for (end = value + strlen(value); end > value && (end[-1] == ' ' || end[-1] == '\t'); end--)
                *(end - 1) = '\0';
        if (!*value)
                return refuse(m->why, "-o \"%s\" has no value", arg);
        for (const char *k = key; *k; k++)
                if (!(*k >= 'A' && *k <= 'Z') && !(*k >= 'a' && *k <= 'z') && !(*k >= '0' && *k <= '9'))
                        return refuse(m->why, "-o \"%s\" is not Key=Value with a key of letters and digits", arg);
        return map_option_pair(m, key, value);
}

/* The flags that become ssh options. */
static const struct {
        char flag;
        const char *options[2];
} flag_options[] = {
        { '4', { "AddressFamily=inet" } }, { '6', { "AddressFamily=inet6" } },
        { 'A', { "ForwardAgent=yes" } }, { 'a', { "ForwardAgent=no" } },
        { 'C', { "Compression=yes" } }, { 'g', { "GatewayPorts=yes" } },
        { 'X', { "ForwardX11=yes" } }, { 'x', { "ForwardX11=no" } },
        { 'Y', { "ForwardX11=yes", "ForwardX11Trusted=yes" } },
        { 'K', { "GSSAPIAuthentication=yes", "GSSAPIDelegateCredentials=yes" } },
        { 'k', { "GSSAPIDelegateCredentials=no" } },
};

static int map_flag(struct mapper *m, char c)
{
        for (size_t i = 0; i < ELEMENTSOF(flag_options); i++)
                if (flag_options[i].flag == c) {
                        for (size_t j = 0; j < 2 && flag_options[i].options[j]; j++) {
                                int r = strv_push(&m->t->ssh_options, flag_options[i].options[j]);
                                if (r < 0)
                                        return r;
                        }
                        return 0;
                }
        switch (c) {
        case 'f':
                m->t->gatetime = 0;
                buf_printf(&m->dropped, " -%c", c);
                return autossh_imported_note(m->t, "-f: autossh's -f implies AUTOSSH_GATETIME=0, hence gatetime = 0");
        case 'N': case 'T': case 'n': case '1': case '2': case 's': case 't':
                buf_printf(&m->dropped, " -%c", c);
                return 0;
        case 'q': case 'v': case 'y':
                return autossh_imported_note(m->t, "-%c: not mapped: tunneld sets ssh's LogLevel and logs its messages "
                                     "itself (log_level, tunneld -d)", c);
        case 'G': case 'V':
                return refuse(m->why, "-%c prints something and exits: not a tunnel", c);
        }
        return refuse(m->why, "-%c is not an option of autossh or ssh", c);
}

static int map_with_arg(struct mapper *m, char c, const char *arg)
{
        static const char *const keys[128] = { ['b'] = "BindAddress", ['B'] = "BindInterface", ['c'] = "Ciphers",
                                                ['m'] = "MACs", ['I'] = "PKCS11Provider", ['P'] = "Tag" };
        struct imported *t = m->t;

        if (keys[(unsigned char)c])
                return add_option(m, keys[(unsigned char)c], arg);
        switch (c) {
        case 'M':
                return autossh_imported_note(t, "-M %s: autossh's monitoring port is " NOT_NEEDED_MONITOR, arg);
        case 'L': return add_forward(m, &t->local_forwards, forward_validate_local, "-L", arg);
        case 'R': return add_forward(m, &t->remote_forwards, forward_validate_remote, "-R", arg);
        case 'D': return add_forward(m, &t->dynamic_forwards, forward_validate_dynamic, "-D", arg);
        case 'p': return set_port(m, arg, "-p");
        case 'l': return set_string(m, &t->user, arg, validate_user, "-l");
        case 'J':
                if (t->jump_host)
                        return refuse(m->why, "-J given twice: ssh takes one (hops separated by commas)");
                return set_string(m, &t->jump_host, arg, validate_jump_host, "-J");
        case 'i':
                if (t->identity_file)
                        return add_option(m, "IdentityFile", arg);
                return set_string(m, &t->identity_file, arg, validate_path, "-i");
        case 'F': return set_string(m, &t->ssh_config_file, arg, validate_path, "-F");
        case 'o': return map_option(m, arg);
        case 'w':
                if (add_option(m, "Tunnel", "point-to-point") < 0 || add_option(m, "TunnelDevice", arg) < 0)
                        return -EINVAL;
                return autossh_imported_note(t, "-w %s: tun device forwarding is passed to ssh as Tunnel and TunnelDevice, "
                                     "but tunneld cannot tell whether the device is up", arg);
        case 'E': case 'e': case 'S':
                return autossh_imported_note(t, "-%c %s: not mapped: tunneld logs ssh's messages, gives it no terminal and "
                                     "no control socket", c, arg);
        }
        return refuse(m->why, "-%c %s is not a tunnel (a control command, stdio forwarding or a query)", c, arg);
}

#define WITH_ARG "BbcDEeFIiJLlMmOoPpQRSWw"

/* One word that begins with '-': a cluster of flags, the last perhaps with its argument
 * attached or in the next word. *i moves past what was used. */
static int map_cluster(struct mapper *m, char *const *argv, size_t *i)
{
        const char *w = argv[*i];

        for (const char *p = w + 1; *p; p++) {
                const char *arg;

                if (!strchr(WITH_ARG, *p)) {
                        int r = map_flag(m, *p);
                        if (r < 0)
                                return r;
                        continue;
                }
                arg = p[1] ? p + 1 : argv[*i + 1];
                if (!arg)
                        return refuse(m->why, "-%c needs an argument", *p);
                if (!p[1])
                        (*i)++;
                return map_with_arg(m, *p, arg);
        }
        return 0;
}

/* [ssh://][user@]host[:port] (the port only in the URI form). */
static int map_destination(struct mapper *m, const char *dest)
{
        _cleanup_free_ char *copy = NULL;
        bool uri = strncmp(dest, "ssh://", 6) == 0;
        char *host, *at, *port = NULL;
        int r;

        copy = strdup(uri ? dest + 6 : dest);
        if (!copy)
                return -ENOMEM;
        host = copy;
        at = strrchr(host, '@');
        if (at) {
                *at = '\0';
                r = set_string(m, &m->t->user, host, validate_user, "the user of the destination");
                if (r < 0)
                        return r;
                host = at + 1;
        }
        if (uri && host[0] == '[' && strchr(host, ']')) {
                char *end = strchr(host, ']');
                *end = '\0';
                if (end[1] == ':')
                        port = end + 2;
                host++;
        } else if (uri && strchr(host, ':') && !strchr(strchr(host, ':') + 1, ':')) {
                port = strchr(host, ':');
                *port++ = '\0';
        }
        if (uri && host[0] && host[strlen(host) - 1] == '/')
                host[strlen(host) - 1] = '\0';
        if (port && (r = set_port(m, port, "the destination's port")) < 0)
                return r;
        return set_string(m, &m->t->host, host, validate_host, "the destination host");
}

static int note_command(struct imported *t, char *const *argv)
{
        struct buf b = {0};
        _cleanup_free_ char *command = NULL;
        int r;

        for (size_t i = 0; argv[i]; i++)
                buf_printf(&b, "%s%s", i ? " " : "", argv[i]);
        r = buf_steal(&b, &command);
        if (r < 0)
                return r;
        return autossh_imported_note(t, "remote command \"%s\" dropped: tunneld runs ssh -N (no command); ServerAlive "
                             "keeps an idle connection checked", command);
}

int autossh_import_map_argv(struct imported *t, char *const *argv, char why[IMPORT_WHY_MAX])
{
        struct mapper m = { .t = t, .why = why };
        _cleanup_free_ char *dropped = NULL;
        size_t i = 0;
        int r = 0;

        /* ssh reads options before and after the destination; the first word after it
         * that is not an option begins the remote command */
        while (argv[i] && r >= 0) {
                const char *w = argv[i];

                if (strcmp(w, "--") == 0) {
                        i++;
                        if (!t->host && argv[i])
                                r = map_destination(&m, argv[i++]);
                        break;
                }
                if (w[0] == '-' && w[1])
                        r = map_cluster(&m, argv, &i);
                else if (!t->host)
                        r = map_destination(&m, w);
                else
                        break;
                i++;
        }
        if (r >= 0 && !t->host)
                r = refuse(why, "no destination host");
        if (r >= 0 && argv[i])
                r = note_command(t, argv + i);
        if (r >= 0 && m.dropped.len && (r = buf_steal(&m.dropped, &dropped)) >= 0)
                r = autossh_imported_note(t, "%s: not needed: tunneld always runs ssh -N -T in the foreground, "
                                  "stdin /dev/null", dropped + 1);
        buf_free(&m.dropped);
        return r;
}
