/* SPDX-License-Identifier: MIT */
/* config_pins: pinned host keys (host_keys, jump_host_keys) against the rest of a
 * tunnel: ssh_options that would widen, narrow or bypass them, jump hosts without a key. */
#include "config.h"
#include "config_internal.h"

#include <string.h>
#include <strings.h>

#include "host_key.h"
#include "jump_config.h"
#include "known_hosts.h"


/* ssh_options that contradict pinned keys: NULL if o is fine with them. */
static const char *pin_conflict(const char *o)
{
        size_t keylen = strcspn(o, "=");
        const char *value = o[keylen] ? o + keylen + 1 : "";

#define IS(k) (keylen == strlen(k) && strncasecmp(o, k, keylen) == 0)
        if (IS("UserKnownHostsFile") || IS("GlobalKnownHostsFile") || IS("KnownHostsCommand"))
                return "tunneld gives ssh a known_hosts file of its own, with the pinned keys alone: remove it";
        if (IS("StrictHostKeyChecking") && strcasecmp(value, "yes") != 0)
                return "a pinned key is checked strictly (tunneld sets StrictHostKeyChecking=yes): remove it";
        if (IS("UpdateHostKeys") && strcasecmp(value, "no") != 0)
                return "ssh must not learn keys that are not pinned (tunneld sets UpdateHostKeys=no): remove it";
        if (IS("VerifyHostKeyDNS") && strcasecmp(value, "no") != 0)
                return "keys from DNS would be trusted besides the pinned ones: remove it";
        if (IS("HostKeyAlias")) {
                if (!*value)
                        return "must name the key's host";
                for (const char *c = value; *c; c++)
                        if (!validate_host_char(*c) && *c != '[' && *c != ']')
                                return "must be a plain name (the pinned keys are filed under it)";
        }
#undef IS
        return NULL;
}

/* An entry names hop (host, port) if the hosts match and, where the hop gives a port,
 * the ports do (a hop without one may get its port from an ssh config file). */
static bool names_hop(const struct host_key *k, const char *host, int port)
{
        return strcasecmp(k->host, host) == 0 && (port == 0 || (k->port ? k->port : 22) == port);
}

/* Every hop has a key: ssh checks each against the pinned ones alone. */
static void check_jump_host_keys(struct parser *p, const struct tunnel_spec *t)
{
        bool pinned_hop[64] = {false};
        size_t hops = 0;
        struct {
                const char *text;
                size_t len;
                char host[256];
                int port;
        } hop[ELEMENTSOF(pinned_hop)];

        for (const char *h = t->jump_host; *h && hops < ELEMENTSOF(hop);) {
                size_t len = strcspn(h, ",");

                hop[hops].text = h;
                hop[hops].len = len;
                if (validate_jump_hop_split(h, len, hop[hops].host, sizeof(hop[hops].host), &hop[hops].port))
                        hops++;
                h += len + (h[len] == ',');
        }
        /* entries for other jump hosts are fine (defaults may hold those of every tunnel) */
        for (char **e = t->jump_host_keys; *e; e++) {
                struct host_key k;

                if (host_key_parse(*e, true, &k))
                        continue;       /* reported when parsed */
                for (size_t i = 0; i < hops; i++)
                        if (names_hop(&k, hop[i].host, hop[i].port))
                                pinned_hop[i] = true;
        }
        /* a hop without a key could never connect: ssh checks it against this file alone */
        for (size_t i = 0; i < hops && !p->opts->keyscan; i++)
                if (!pinned_hop[i])
                        config_diag_tunnel(p, t, "jump_host_keys", "has no key for the jump host %.*s: with jump_host_keys, "
                                    "every jump host is checked against them alone (tunneld --keyscan %s fetches "
                                    "them)", (int)hop[i].len, hop[i].text, t->name);
}

/* Pinned keys must be what ssh checks against: ssh_options that would widen, narrow or
 * bypass them are refused. They contradict host_keys only: with jump_host_keys alone the
 * tunnel's options are the destination's, and the hops' settings come first in their
 * Host block (the first value wins). */
void config_pins_check(struct parser *p, const struct config *c)
{
        for (size_t i = 0; i < c->n_tunnels; i++) {
                const struct tunnel_spec *t = &c->tunnels[i];

                if (known_hosts_pins_destination(t))
                        for (char **o = t->ssh_options; o && *o; o++) {
                                const char *why = pin_conflict(*o);

                                if (why)
                                        config_diag_tunnel(p, t, "ssh_options", "\"%s\" contradicts host_keys: %s", *o, why);
                        }
                if (known_hosts_pins_jump_hosts(t))
                        check_jump_host_keys(p, t);
        }
}
