/* SPDX-License-Identifier: MIT */
#include "host_key.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "util.h"
#include "validate.h"

/* The public key types of OpenSSH 9 host keys (sshkey.c), and the fields of each blob
 * after its type string (RFC 4253, 5656, 8709, PROTOCOL.u2f). DSA is left out: OpenSSH
 * no longer offers DSA host keys. */
static const struct key_type {
        const char *name;
        unsigned fields;                /* SSH strings after the type */
        const char *curve;              /* the first field's text, for ECDSA */
        size_t first_len;               /* the first field's length, for Ed25519; 0: any */
} key_types[] = {
        { "ssh-ed25519",                        1, NULL,       32 },
        { "ecdsa-sha2-nistp256",                2, "nistp256", 0 },
        { "ecdsa-sha2-nistp384",                2, "nistp384", 0 },
        { "ecdsa-sha2-nistp521",                2, "nistp521", 0 },
        { "ssh-rsa",                            2, NULL,       0 },     /* e, n */
        { "sk-ssh-ed25519@openssh.com",         2, NULL,       32 },    /* key, application */
        { "sk-ecdsa-sha2-nistp256@openssh.com", 3, "nistp256", 0 },     /* curve, point, application */
};

static const struct key_type *find_type(const char *name, size_t len)
{
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++)
                if (strlen(key_types[i].name) == len && strncmp(key_types[i].name, name, len) == 0)
                        return &key_types[i];
        return NULL;
}

bool host_key_type_known(const char *type)
{
        return find_type(type, strlen(type)) != NULL;
}

const char *host_key_types_list(void)
{
        return "ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, ssh-rsa, "
               "sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com";
}

static int b64_value(char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Strict base64 (padded, as ssh writes it): the decoded length, or -1. */
static long b64_decode(const char *s, size_t len, unsigned char *out, size_t size)
{
        size_t n = 0, pad = 0;

        if (len == 0 || len % 4 != 0)
                return -1;
        if (s[len - 1] == '=')
                pad = s[len - 2] == '=' ? 2 : 1;
        if ((len / 4) * 3 - pad > size)
                return -1;
        for (size_t i = 0; i < len; i += 4) {
                int v[4];
                for (int k = 0; k < 4; k++) {
                        bool padding = i + 4 == len && k >= 4 - (int)pad;
                        v[k] = padding ? (s[i + k] == '=' ? 0 : -1) : b64_value(s[i + k]);
                        if (v[k] < 0)
                                return -1;
                }
                uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
                out[n++] = (unsigned char)(w >> 16);
                if (i + 4 < len || pad < 2)
                        out[n++] = (unsigned char)(w >> 8);
                if (i + 4 < len || pad < 1)
                        out[n++] = (unsigned char)w;
        }
        return (long)n;
}

/* One SSH string (uint32 length, bytes) off the front of the blob. */
static bool take_string(const unsigned char **p, size_t *left, const unsigned char **ret, size_t *ret_len)
{
        uint32_t len;

        if (*left < 4)
                return false;
        len = (uint32_t)(*p)[0] << 24 | (uint32_t)(*p)[1] << 16 | (uint32_t)(*p)[2] << 8 | (*p)[3];
        if (len > *left - 4)
                return false;
        *ret = *p + 4;
        *ret_len = len;
        *p += 4 + len;
        *left -= 4 + len;
        return true;
}

static const char *check_blob(const struct key_type *kt, const char *b64, size_t len)
{
        unsigned char blob[HOST_KEY_MAX_LEN];
        const unsigned char *p = blob, *field;
        size_t left, field_len;
        long n = b64_decode(b64, len, blob, sizeof(blob));

        if (n < 0)
                return "has a key that is not valid base64 (copy it whole from the server's ssh_host_*_key.pub)";
        left = (size_t)n;
        if (!take_string(&p, &left, &field, &field_len))
                return "has a key blob that is too short to be a key";
        if (field_len != strlen(kt->name) || memcmp(field, kt->name, field_len) != 0) {
                const struct key_type *real = find_type((const char *)field, field_len);
                static char why[160];

                if (!real)
                        return "has a key blob that is not an SSH public key of a known type";
                snprintf(why, sizeof(why), "has a key blob of type %s, not %s: the key type and the key do not match",
                         real->name, kt->name);
                return why;
        }
        for (unsigned i = 0; i < kt->fields; i++) {
                if (!take_string(&p, &left, &field, &field_len))
                        return "has a key blob that ends too early (a truncated key?)";
                if (i == 0 && kt->first_len && field_len != kt->first_len)
                        return "has a key blob whose key is not of the length of its type";
                if (i == 0 && kt->curve && (field_len != strlen(kt->curve) || memcmp(field, kt->curve, field_len) != 0))
                        return "has a key blob whose curve does not match its key type";
        }
        if (left)
                return "has a key blob with bytes after the key (two keys run together?)";
        return NULL;
}

/* The host word of a jump_host_keys entry: "HOST", "HOST:PORT", "[HOST]:PORT", "[v6]:PORT", "v6". */
static const char *parse_host(const char *w, size_t len, struct host_key *ret)
{
        if (memchr(w, '@', len) || (len >= 6 && strncmp(w, "ssh://", 6) == 0))
                return "must name the jump host as HOST[:PORT] (no user, no ssh://), then KEYTYPE BASE64";
        if (!validate_jump_hop_split(w, len, ret->host, sizeof(ret->host), &ret->port) || !ret->host[0] ||
            ret->host[0] == '-')
                return "must begin with the jump host as HOST[:PORT], then KEYTYPE BASE64";
        for (const char *c = ret->host; *c; c++)
                if (!validate_host_char(*c))
                        return "has a jump host name with characters other than letters, digits, '.', '_', '-', ':' and '%'";
        if (ret->port < 0)
                return "has a jump host port that is not a number from 1 to 65535";
        return NULL;
}

const char *host_key_parse(const char *s, bool with_host, struct host_key *ret)
{
        const char *words[3];
        size_t lens[3], n = 0;
        const struct key_type *kt;
        const char *p = s, *why;

        *ret = (struct host_key){0};
        if (!s || !*s)
                return "must not be empty";
        if (strlen(s) > HOST_KEY_MAX_LEN)
                return "is too long for a host key";
        for (const unsigned char *c = (const unsigned char *)s; *c; c++)
                if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
                        return "must not contain control characters";
        while (n < 3) {
                p += strspn(p, " \t");
                if (!*p)
                        break;
                words[n] = p;
                lens[n] = strcspn(p, " \t");
                p += lens[n++];
        }
        if (with_host) {
                if (n < 3)
                        return "must be HOST[:PORT] KEYTYPE BASE64 (the jump host, then a line of its ssh_host_*_key.pub)";
                why = parse_host(words[0], lens[0], ret);
                if (why)
                        return why;
                words[0] = words[1], lens[0] = lens[1];
                words[1] = words[2], lens[1] = lens[2];
        } else if (n >= 2 && !find_type(words[0], lens[0]) && find_type(words[1], lens[1]))
                return "names a host: host_keys are the tunnel's own host's and need no name (a jump host's go "
                       "in jump_host_keys)";
        else if (n < 2)
                return "must be KEYTYPE BASE64 (a line of the server's ssh_host_*_key.pub)";
        kt = find_type(words[0], lens[0]);
        if (!kt) {
                static char why_type[512];
                snprintf(why_type, sizeof(why_type), "has an unknown key type \"%.*s\" (known: %s)",
                         (int)(lens[0] < 64 ? lens[0] : 64), words[0], host_key_types_list());
                return why_type;
        }
        why = check_blob(kt, words[1], lens[1]);
        if (why)
                return why;
        snprintf(ret->type, sizeof(ret->type), "%s", kt->name);
        ret->base64 = words[1];
        ret->base64_len = lens[1];
        return NULL;
}

const char *host_key_validate(const char *s)
{
        struct host_key k;

        return host_key_parse(s, false, &k);
}

const char *host_key_validate_jump(const char *s)
{
        struct host_key k;

        return host_key_parse(s, true, &k);
}
