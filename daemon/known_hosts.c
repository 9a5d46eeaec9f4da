/* SPDX-License-Identifier: MIT */
#include "known_hosts.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "host_key.h"
#include "util.h"

void known_hosts_pattern(const char *host, int port, char *buf, size_t size)
{
        if (port == 0 || port == 22)
                snprintf(buf, size, "%s", host);
        else
                snprintf(buf, size, "[%s]:%d", host, port);
}

const char *known_hosts_user_alias(const struct tunnel_spec *s)
{
        const char *alias = NULL;

        /* for ssh the first value wins */
        for (char **o = s->ssh_options; o && *o && !alias; o++)
                if (strncasecmp(*o, "HostKeyAlias=", 13) == 0)
                        alias = *o + 13;
        return alias;
}

void known_hosts_destination_name(const struct tunnel_spec *s, char *buf, size_t size)
{
        const char *alias = known_hosts_user_alias(s);

        if (alias)
                snprintf(buf, size, "%s", alias);
        else
                known_hosts_pattern(s->host ? s->host : "", s->port, buf, size);
}

/* One line: NAME KEYTYPE BASE64 (the entry's comment is not copied). */
static void put_line(struct buf *b, const char *name, const char *entry, bool with_host)
{
        struct host_key k;

        if (host_key_parse(entry, with_host, &k))
                return;         /* validated when loaded; never a half line */
        buf_printf(b, "%s %s %.*s\n", name, k.type, (int)k.base64_len, k.base64);
}

int known_hosts_render(const struct tunnel_spec *s, char **ret)
{
        _cleanup_buf_ struct buf b = {0};
        char name[VALUE_MAX_LEN + 16];

        *ret = NULL;
        if (!known_hosts_pins_destination(s) && !known_hosts_pins_jump_hosts(s))
                return 0;
        buf_printf(&b, "# Written by tunneld for tunnel %s at every start, from its host_keys and\n"
                       "# jump_host_keys: ssh checks the server's key against these lines alone.\n", s->name);
        known_hosts_destination_name(s, name, sizeof(name));
        for (char **k = s->host_keys; k && *k; k++)
                put_line(&b, name, *k, false);
        for (char **k = known_hosts_pins_jump_hosts(s) ? s->jump_host_keys : NULL; k && *k; k++) {
                struct host_key hk;

                if (host_key_parse(*k, true, &hk))
                        continue;
                known_hosts_pattern(hk.host, hk.port, name, sizeof(name));
                put_line(&b, name, *k, true);
        }
        return buf_steal(&b, ret);
}

int known_hosts_quote_path(const char *path, char **ret)
{
        _cleanup_buf_ struct buf b = {0};

        buf_puts(&b, "\"");
        for (const char *p = path; *p; p++) {
                if (*p == '\\' || *p == '"')
                        buf_puts(&b, "\\");
                else if (*p == '%')
                        buf_puts(&b, "%");
                buf_append(&b, p, 1);
        }
        buf_puts(&b, "\"");
        return buf_steal(&b, ret);
}
