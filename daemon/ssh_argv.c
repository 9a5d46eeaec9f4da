/* SPDX-License-Identifier: MIT */
#include "ssh_argv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "known_hosts.h"

static int push_opt(char ***argv, const char *key, const char *fmt, ...) _printf_(3, 4);
static int push_opt(char ***argv, const char *key, const char *fmt, ...)
{
        char value[256], opt[320];
        va_list ap;
        int r;

        va_start(ap, fmt);
        vsnprintf(value, sizeof(value), fmt, ap);
        va_end(ap);
        snprintf(opt, sizeof(opt), "%s=%s", key, value);
        r = strv_push(argv, "-o");
        return r < 0 ? r : strv_push(argv, opt);
}

static int push_each(char ***argv, const char *flag, char *const *values)
{
        for (size_t i = 0; values && values[i]; i++) {
                int r = strv_push(argv, flag);
                if (r < 0)
                        return r;
                r = strv_push(argv, values[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static uint64_t fnv1a(const char *s)
{
        uint64_t h = UINT64_C(0xcbf29ce484222325);

        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * UINT64_C(0x100000001b3);
        return h;
}

int ssh_control_base(const char *runtime_dir, const char *name, char **ret)
{
        int n = asprintf(ret, "%s/%s.mux", runtime_dir, name);

        if (n >= 0 && (size_t)n + 1 > SSH_CONTROL_PATH_MAX) {
                free(*ret);
                n = asprintf(ret, "%s/#%016" PRIx64 ".mux", runtime_dir, fnv1a(name));
        }
        if (n < 0) {
                *ret = NULL;
                return -ENOMEM;
        }
        return 0;
}

int ssh_control_path_option(const char *path, char **ret)
{
        struct buf b = {0};

        buf_puts(&b, "ControlPath=");
        for (const char *p = path; *p; p++) {
                if (*p == '%')
                        buf_append(&b, "%", 1);
                buf_append(&b, p, 1);
        }
        return buf_steal(&b, ret);
}

static int push_control_path(char ***argv, const char *path)
{
        _cleanup_free_ char *opt = NULL;
        int r = ssh_control_path_option(path, &opt);

        if (r < 0 || (r = strv_push(argv, "-o")) < 0)
                return r;
        return strv_push(argv, opt);
}

/* The destination's key is checked against the tunnel's own known_hosts file alone
 * (known_hosts.h has why each option). */
static int push_pinning(char ***argv, const struct tunnel_spec *t, const char *known_hosts)
{
        _cleanup_free_ char *quoted = NULL, *opt = NULL;
        char name[VALUE_MAX_LEN + 16];
        int r;

        if (known_hosts_quote_path(known_hosts, &quoted) < 0 || asprintf(&opt, "UserKnownHostsFile=%s", quoted) < 0) {
                opt = NULL;
                return -ENOMEM;
        }
        if ((r = strv_push(argv, "-o")) < 0 || (r = strv_push(argv, opt)) < 0 ||
            (r = push_opt(argv, "GlobalKnownHostsFile", "/dev/null")) < 0 ||
            (r = push_opt(argv, "StrictHostKeyChecking", "yes")) < 0 ||
            (r = push_opt(argv, "UpdateHostKeys", "no")) < 0)
                return r;
        if (known_hosts_user_alias(t))
                return 0;       /* the tunnel's own -o HostKeyAlias follows */
        known_hosts_destination_name(t, name, sizeof(name));
        r = strv_push(argv, "-o");
        free(opt);
        if (r < 0 || asprintf(&opt, "HostKeyAlias=%s", name) < 0) {
                opt = NULL;
                return -ENOMEM;
        }
        return strv_push(argv, opt);
}

/* LogVerbose: the lines of these functions at debug level too (a few per connection
 * start, none per forwarded connection): the destination's banner (how far a connection
 * got), the proxy command, and sshd's SSH2_MSG_DEBUG (why it refused a forward). */
#define LOG_VERBOSE "*:kex_exchange_identification():*,*:ssh_proxy_connect():*,*:ssh_packet_read_poll_seqnr():*"

int ssh_argv_build(const struct tunnel_spec *t, const char *ssh, const char *jump_config, const char *known_hosts,
                   const char *control_path, char ***ret)
{
        const char *config_file = jump_config ? jump_config : t->ssh_config_file;
        _cleanup_strv_free_ char **argv = NULL;
        int r;

        /* -N: no command, -T: no tty. Options tunneld owns come first: for ssh the first
         * value obtained for an option wins, and config validation keeps users from
         * repeating them in ssh_options anyway. */
        if ((r = strv_push(&argv, ssh)) < 0 ||
            (r = strv_push(&argv, "-N")) < 0 ||
            (r = strv_push(&argv, "-T")) < 0)
                return r;
        /* A jump host's ssh gets only -F from us: the file tunneld wrote for it (jump_config.h)
         * carries the tunnel's settings to the hops and includes the tunnel's own file. */
        if (config_file && ((r = strv_push(&argv, "-F")) < 0 || (r = strv_push(&argv, config_file)) < 0))
                return r;
        if ((r = push_opt(&argv, "BatchMode", "yes")) < 0 ||
            /* a forward that fails is tunneld's to retry, never a reason for ssh to exit */
            (r = push_opt(&argv, "ExitOnForwardFailure", "no")) < 0 ||
            /* Written out always: Debian's ssh raises the default interval to 300 s under BatchMode. */
            (r = push_opt(&argv, "ServerAliveInterval", "%d", t->server_alive_interval)) < 0 ||
            (r = push_opt(&argv, "ServerAliveCountMax", "%d", t->server_alive_count_max)) < 0 ||
            (r = push_opt(&argv, "ConnectTimeout", "%d", t->connect_timeout)) < 0)
                return r;
        /* A mux master of tunneld's own: its forwards are opened through the control socket,
         * each with its reply (none from a config file: ClearAllForwardings); VERBOSE says
         * "Authenticated to …" and every failure, and nothing for a forwarded connection. */
        if ((r = push_opt(&argv, "ControlMaster", "yes")) < 0 ||
            (r = push_control_path(&argv, control_path)) < 0 ||
            (r = push_opt(&argv, "ControlPersist", "no")) < 0 ||
            (r = push_opt(&argv, "ClearAllForwardings", "yes")) < 0 ||
            (r = push_opt(&argv, "LogLevel", "VERBOSE")) < 0 ||
            (r = push_opt(&argv, "LogVerbose", "%s", LOG_VERBOSE)) < 0)
                return r;
        if (known_hosts && known_hosts_pins_destination(t) && (r = push_pinning(&argv, t, known_hosts)) < 0)
                return r;
        if (t->port > 0) {
                char port[16];
                snprintf(port, sizeof(port), "%d", t->port);
                if ((r = strv_push(&argv, "-p")) < 0 || (r = strv_push(&argv, port)) < 0)
                        return r;
        }
        if (t->user && ((r = strv_push(&argv, "-l")) < 0 || (r = strv_push(&argv, t->user)) < 0))
                return r;
        if (t->identity_file && ((r = strv_push(&argv, "-i")) < 0 || (r = strv_push(&argv, t->identity_file)) < 0))
                return r;
        if (t->jump_host && ((r = strv_push(&argv, "-J")) < 0 || (r = strv_push(&argv, t->jump_host)) < 0))
                return r;
        if ((r = push_each(&argv, "-o", t->ssh_options)) < 0)
                return r;
        /* "--": whatever the host is, it is the destination, never an option. */
        if ((r = strv_push(&argv, "--")) < 0 || (r = strv_push(&argv, t->host)) < 0)
                return r;

        *ret = argv;
        argv = NULL;
        return 0;
}

int ssh_argv_build_view(const struct tunnel_spec *t, const char *ssh, char ***ret)
{
        _cleanup_strv_free_ char **argv = NULL;
        int r;

        if ((r = strv_push(&argv, ssh)) < 0 || (r = strv_push(&argv, "-N")) < 0 || (r = strv_push(&argv, "-T")) < 0)
                return r;
        if (t->ssh_config_file && ((r = strv_push(&argv, "-F")) < 0 || (r = strv_push(&argv, t->ssh_config_file)) < 0))
                return r;
        if ((r = push_opt(&argv, "BatchMode", "yes")) < 0 ||
            (r = push_opt(&argv, "ServerAliveInterval", "%d", t->server_alive_interval)) < 0 ||
            (r = push_opt(&argv, "ServerAliveCountMax", "%d", t->server_alive_count_max)) < 0 ||
            (r = push_opt(&argv, "ConnectTimeout", "%d", t->connect_timeout)) < 0)
                return r;
        if (t->port > 0) {
                char port[16];
                snprintf(port, sizeof(port), "%d", t->port);
                if ((r = strv_push(&argv, "-p")) < 0 || (r = strv_push(&argv, port)) < 0)
                        return r;
        }
        if ((t->user && ((r = strv_push(&argv, "-l")) < 0 || (r = strv_push(&argv, t->user)) < 0)) ||
            (t->identity_file && ((r = strv_push(&argv, "-i")) < 0 || (r = strv_push(&argv, t->identity_file)) < 0)) ||
            (t->jump_host && ((r = strv_push(&argv, "-J")) < 0 || (r = strv_push(&argv, t->jump_host)) < 0)))
                return r;
        if ((r = push_each(&argv, "-L", t->local_forwards)) < 0 || (r = push_each(&argv, "-R", t->remote_forwards)) < 0 ||
            (r = push_each(&argv, "-D", t->dynamic_forwards)) < 0 || (r = push_each(&argv, "-o", t->ssh_options)) < 0)
                return r;
        if ((r = strv_push(&argv, "--")) < 0 || (r = strv_push(&argv, t->host)) < 0)
                return r;
        *ret = argv;
        argv = NULL;
        return 0;
}
