/* SPDX-License-Identifier: MIT */
#include "jump_config.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "known_hosts.h"
#include "util.h"
#include "validate.h"

static const char *const destination_options[] = {
        "HostName", "HostKeyAlias", "ProxyCommand", "RemoteCommand", "LocalCommand", "PermitLocalCommand",
};

bool jump_config_option_is_destination(const char *option)
{
        size_t keylen = strcspn(option, "= \t");

        for (size_t i = 0; i < ELEMENTSOF(destination_options); i++)
                if (strlen(destination_options[i]) == keylen && strncasecmp(option, destination_options[i], keylen) == 0)
                        return true;
        return false;
}

/* One argument as ssh's config tokenizer reads it back: in double quotes, with '\' and '"'
 * escaped (misc.c argv_split). Values hold no control characters (config validation). */
static void put_quoted(struct buf *b, const char *s)
{
        buf_puts(b, "\"");
        for (const char *p = s; *p; p++) {
                if (*p == '\\' || *p == '"')
                        buf_puts(b, "\\");
                buf_append(b, p, 1);
        }
        buf_puts(b, "\"");
}

/* Each hop's host name, as ssh matches it against a Host pattern: "[user@]host[:port]"
 * (or ssh://…, [v6]) → host. */
static void put_hop_patterns(struct buf *b, const char *jump_host)
{
        const char *p = jump_host;

        while (*p) {
                size_t len = strcspn(p, ",");
                char host[1025];
                int port;

                if (validate_jump_hop_split(p, len, host, sizeof(host), &port))
                        buf_printf(b, " %s", host);
                p += len;
                if (*p == ',')
                        p++;
        }
}

unsigned jump_hop_count(const char *jump_host)
{
        unsigned n = 1;

        if (!jump_host || !*jump_host || strcmp(jump_host, "none") == 0)
                return 0;
        for (const char *p = jump_host; *p; p++)
                n += *p == ',';
        return n;
}

int jump_config_render(const struct tunnel_spec *s, const char *known_hosts, char **ret)
{
        _cleanup_buf_ struct buf b = {0};

        *ret = NULL;
        if (!s->jump_host || strcmp(s->jump_host, "none") == 0)
                return 0;

        buf_printf(&b, "# Written by tunneld for tunnel %s at every start. ssh passes only -F to the\n"
                       "# ssh it runs for each jump host (ProxyJump), so the tunnel's own settings reach\n"
                       "# the jump hosts from here.\n", s->name);
        buf_puts(&b, "Host");
        put_hop_patterns(&b, s->jump_host);
        buf_printf(&b, "\n\tBatchMode yes\n\tConnectTimeout %d\n\tServerAliveInterval %d\n\tServerAliveCountMax %d\n",
                   s->connect_timeout, s->server_alive_interval, s->server_alive_count_max);
        /* the destination's ssh logs at VERBOSE, which does not say when the jump hosts are
         * through; each hop's "Authenticated to" does (the hops carry one channel each, so
         * this costs nothing per forwarded connection) */
        buf_puts(&b, "\tLogLevel VERBOSE\n");
        if (s->identity_file) {
                buf_puts(&b, "\tIdentityFile ");
                put_quoted(&b, s->identity_file);
                buf_puts(&b, "\n");
        }
        if (known_hosts_pins_jump_hosts(s) && known_hosts) {
                /* the hops are checked against jump_host_keys alone (known_hosts.h) */
                _cleanup_free_ char *quoted = NULL;
                if (known_hosts_quote_path(known_hosts, &quoted) < 0)
                        return -ENOMEM;
                buf_printf(&b, "\tUserKnownHostsFile %s\n\tGlobalKnownHostsFile /dev/null\n"
                               "\tStrictHostKeyChecking yes\n\tUpdateHostKeys no\n", quoted);
        }
        for (char **o = s->ssh_options; o && *o; o++)
                if (!jump_config_option_is_destination(*o))
                        buf_printf(&b, "\t%s\n", *o);
        /* What ssh reads without -F, or the tunnel's own file; for the hops and the
         * destination alike, after the settings above (for ssh the first value wins). */
        buf_puts(&b, "Match all\n");
        if (!s->ssh_config_file) {
                buf_puts(&b, "\tInclude ~/.ssh/config\n\tInclude /etc/ssh/ssh_config\n");
        } else if (strcmp(s->ssh_config_file, "/dev/null") != 0) {
                /* ssh's Include refuses /dev/null ("Bad owner or permissions"), -F takes it */
                buf_puts(&b, "\tInclude ");
                put_quoted(&b, s->ssh_config_file);
                buf_puts(&b, "\n");
        }
        return buf_steal(&b, ret);
}
