/* SPDX-License-Identifier: MIT */
#include "validate.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "util.h"

/* Everything that ends up in ssh's argv: no whitespace, no control bytes, not empty. */
const char *validate_argv_word(const char *s)
{
        if (!s || !*s)
                return "must not be empty";
        if (strlen(s) > VALUE_MAX_LEN)
                return "is too long";
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if (*p < 0x20 || *p == 0x7f)
                        return "must not contain control characters";
                if (isspace(*p))
                        return "must not contain whitespace";
        }
        return NULL;
}

const char *validate_tunnel_name(const char *s)
{
        if (!s || !*s)
                return "must not be empty";
        if (strlen(s) > NAME_MAX_LEN)
                return "is longer than 64 characters";
        if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
                return "must not be \".\" or \"..\"";
        if (s[0] == '-' || s[0] == '.')
                return "must not begin with '-' or '.'";
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char)*p) && !strchr("_.-", *p))
                        return "may contain only letters, digits, '_', '.' and '-'";
        return NULL;
}

bool validate_host_char(char c)
{
        return isalnum((unsigned char)c) || strchr("._-:%", c);
}

/* A word of ssh's argv that is not an option: what host and user have in common. */
static const char *validate_operand(const char *s)
{
        const char *r = validate_argv_word(s);

        if (r)
                return r;
        if (s[0] == '-')
                return "must not begin with '-' (it would be read as an ssh option)";
        if (strlen(s) > 255)
                return "is longer than 255 characters";
        return NULL;
}

const char *validate_host(const char *s)
{
        const char *r = validate_operand(s);

        if (r)
                return r;
        if (strchr(s, '@'))
                return "must not contain '@' (set user instead)";
        for (const char *p = s; *p; p++)
                if (!validate_host_char(*p))
                        return "may contain only letters, digits, '.', '_', '-', ':' and '%'";
        return NULL;
}

/* Letters, digits, ".-_+@" and non-ASCII: no shell character, since ssh puts a ProxyJump
 * user into the command line it runs through the shell (and recent ssh refuses them). */
bool validate_user_chars(const char *s)
{
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (!isalnum(*p) && *p < 0x80 && !strchr("._-+@", *p))
                        return false;
        return true;
}

#define USER_CHARS "letters, digits, '.', '_', '-', '+' and '@'"

const char *validate_user(const char *s)
{
        const char *r = validate_operand(s);

        if (r)
                return r;
        if (!validate_user_chars(s))
                return "has an invalid character: a user name may contain only " USER_CHARS;
        return NULL;
}

bool validate_parse_port(const char *s, int min, int *ret)
{
        long v = 0;

        if (!*s || strlen(s) > 5)
                return false;
        for (const char *p = s; *p; p++) {
                if (!isdigit((unsigned char)*p))
                        return false;
                v = v * 10 + (*p - '0');
        }
        if (v < min || v > 65535)
                return false;
        if (ret)
                *ret = (int)v;
        return true;
}

/* One hop of ProxyJump: [user@]host[:port], host possibly a bracketed IPv6 address. */
static const char *validate_jump_hop(char *hop)
{
        char *host = hop, *at, *port = NULL;

        if (!*hop)
                return "has an empty hop";
        if (hop[0] == '-')
                return "must not begin with '-' (it would be read as an ssh option)";
        if (strncmp(hop, "ssh://", 6) == 0)
                host = hop + 6;
        at = strrchr(host, '@');
        if (at) {
                *at = '\0';
                if (!*host || host[0] == '-')
                        return "has an empty user or one beginning with '-'";
                if (!validate_user_chars(host))
                        return "has a user with an invalid character: a user name may contain only " USER_CHARS;
                host = at + 1;
        }
        if (host[0] == '[') {
                char *end = strchr(host, ']');
                if (!end)
                        return "has an unclosed '['";
                *end = '\0';
                if (end[1] == ':')
                        port = end + 2;
                else if (end[1])
                        return "has text after ']'";
                host++;
        } else {
                char *colon = strchr(host, ':');
                if (colon && !strchr(colon + 1, ':')) {
                        *colon = '\0';
                        port = colon + 1;
                }
        }
        if (!*host || host[0] == '-')
                return "has an empty host or one beginning with '-'";
        for (const char *p = host; *p; p++)
                if (!validate_host_char(*p))
                        return "has a host with characters other than letters, digits, '.', '_', '-', ':' and '%'";
        if (port && !validate_parse_port(port, 1, NULL))
                return "has a port that is not a number from 1 to 65535";
        return NULL;
}

const char *validate_jump_host(const char *s)
{
        const char *r = validate_argv_word(s);
        _cleanup_free_ char *copy = NULL;
        char *save = NULL;

        if (r)
                return r;
        if (s[0] == '-')
                return "must not begin with '-' (it would be read as an ssh option)";
        if (strcmp(s, "none") == 0)
                return NULL;
        copy = strdup(s);
        if (!copy)
                return "cannot be checked (out of memory)";
        if (s[strlen(s) - 1] == ',' || strstr(s, ",,"))
                // cppcheck-suppress memleak ; copy is _cleanup_free_, which cppcheck does not know
                return "has an empty hop";
        for (char *hop = strtok_r(copy, ",", &save); hop; hop = strtok_r(NULL, ",", &save)) {
                r = validate_jump_hop(hop);
                if (r)
                        return r;
        }
        return NULL;
}

/* ssh options tunneld writes itself, or that would break supervision. */
static const struct {
        const char *key;
        const char *why;
} reserved_options[] = {
        { "BatchMode",            "is always yes: a daemon cannot answer prompts" },
        { "ExitOnForwardFailure", "is set by tunneld: a forward that fails is asked for again on the running connection" },
        { "ServerAliveInterval",  "is set by tunneld: use the server_alive_interval setting" },
        { "ServerAliveCountMax",  "is set by tunneld: use the server_alive_count_max setting" },
        { "ConnectTimeout",       "is set by tunneld: use the connect_timeout setting" },
        { "ControlMaster",        "is set by tunneld: every tunnel's ssh is a multiplexing master of tunneld's own" },
        { "ControlPath",          "is set by tunneld: the master's control socket is in tunneld's runtime directory" },
        { "ControlPersist",       "cannot be used: tunneld's master lives as long as its connection" },
        { "ForkAfterAuthentication", "cannot be used: ssh must stay in the foreground under tunneld" },
        { "LogLevel",             "is set by tunneld: it reads ssh's messages to know why a connection failed" },
        { "LogVerbose",           "is set by tunneld: it reads ssh's messages to know how far a connection got" },
        { "ClearAllForwardings",  "is set by tunneld: it opens every forward itself over the control socket" },
        { "SessionType",          "is always none (-N)" },
        { "RequestTTY",           "is always no (-T)" },
        { "LocalForward",         "use the local_forwards setting" },
        { "RemoteForward",        "use the remote_forwards setting" },
        { "DynamicForward",       "use the dynamic_forwards setting" },
        { "Port",                 "use the port setting" },
        { "User",                 "use the user setting" },
        { "ProxyJump",            "use the jump_host setting" },
        /* ssh refuses these on its command line; in the file tunneld writes for jump
         * hosts they would start a block of their own */
        { "Host",                 "cannot be used as an option: put Host blocks in an ssh_config_file" },
        { "Match",                "cannot be used as an option: put Match blocks in an ssh_config_file" },
        { "Include",              "cannot be used as an option: use ssh_config_file" },
};

const char *validate_ssh_option(const char *s)
{
        const char *eq;
        size_t keylen;

        if (!s || !*s)
                return "must not be empty";
        if (strlen(s) > VALUE_MAX_LEN)
                return "is too long";
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return "must not contain control characters";
        eq = strchr(s, '=');
        if (!eq || eq == s || !eq[1])
                return "must be Key=Value";
        keylen = (size_t)(eq - s);
        for (size_t i = 0; i < keylen; i++)
                if (!isalnum((unsigned char)s[i]))
                        return "must be Key=Value with a key of letters and digits";
        for (size_t i = 0; i < ELEMENTSOF(reserved_options); i++)
                if (strlen(reserved_options[i].key) == keylen &&
                    strncasecmp(s, reserved_options[i].key, keylen) == 0)
                        return reserved_options[i].why;
        return NULL;
}

const char *validate_path(const char *s)
{
        if (!s || !*s)
                return "must not be empty";
        if (strlen(s) > PATH_MAX)
                return "is too long";
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return "must not contain control characters";
        if (s[0] == '-')
                return "must not begin with '-'";
        return NULL;
}

const char *validate_socket_path(const char *s)
{
        const char *r = validate_path(s);

        if (r)
                return r;
        if (strcmp(s, "none") == 0)
                return NULL;
        if (s[0] != '/')
                return "must be an absolute path, or \"none\" for no control socket";
        if (strlen(s) + 4 >= sizeof(((struct sockaddr_un *)NULL)->sun_path))
                return "is too long for a Unix socket path (103 bytes at most)";
        return NULL;
}

const char *validate_probe_address(const char *s)
{
        const char *port, *r = validate_argv_word(s);
        char host[64];
        size_t n;

        if (r)
                return r;
        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                if (!end || end[1] != ':')
                        return "must be ADDRESS:PORT, with an IPv6 address in brackets";
                n = (size_t)(end - s - 1);
                port = end + 2;
                if (n == 0 || n >= sizeof(host))
                        return "has an empty or overlong address";
                memcpy(host, s + 1, n);
                host[n] = '\0';
                if (strspn(host, "0123456789abcdefABCDEF:.") != n)
                        return "must use a numeric IPv6 address";
        } else {
                const char *colon = strrchr(s, ':');
                if (!colon || strchr(s, ':') != colon)
                        return "must be ADDRESS:PORT (IPv6 in brackets)";
                n = (size_t)(colon - s);
                port = colon + 1;
                if (n == 0 || n >= sizeof(host))
                        return "has an empty or overlong address";
                memcpy(host, s, n);
                host[n] = '\0';
                if (strcmp(host, "localhost") != 0 && strspn(host, "0123456789.") != n)
                        return "must use a numeric IPv4 address or localhost (tunneld does not resolve names in its loop)";
        }
        if (!validate_parse_port(port, 1, NULL))
                return "has a port that is not a number from 1 to 65535";
        return NULL;
}

const char *validate_absolute_path(const char *s)
{
        const char *r = validate_path(s);

        if (r)
                return r;
        if (s[0] != '/')
                return "must be an absolute path";
        return NULL;
}

const char *validate_include_dir(const char *s)
{
        return strcmp(s, "none") == 0 ? NULL : validate_absolute_path(s);
}

const char *validate_probe_data(const char *s)
{
        if (strlen(s) > VALUE_MAX_LEN)
                return "is longer than 1024 bytes";
        return NULL;
}

const char *validate_group_name(const char *s)
{
        if (!s || !*s)
                return "must not be empty";
        if (strlen(s) > 32)
                return "is longer than 32 characters";
        if (s[0] == '-')
                return "must not begin with '-'";
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char)*p) && !strchr("_.-", *p))
                        return "may contain only letters, digits, '_', '.' and '-'";
        return NULL;
}

const char *validate_program(const char *s)
{
        const char *r = validate_path(s);

        if (r)
                return r;
        if (strchr(s, '/') && s[0] != '/')
                return "must be an absolute path or a bare program name looked up in PATH";
        return NULL;
}

bool validate_jump_hop_split(const char *hop, size_t len, char *host, size_t size, int *ret_port)
{
        char copy[1025], *h, *at, *end, *port = NULL;

        *ret_port = 0;
        if (len >= sizeof(copy))
                return false;
        memcpy(copy, hop, len);
        copy[len] = '\0';
        h = copy;
        if (strncmp(h, "ssh://", 6) == 0)
                h += 6;
        at = strrchr(h, '@');
        if (at)
                h = at + 1;
        if (h[0] == '[') {
                h++;
                end = strchr(h, ']');
                if (!end)
                        return false;
                *end = '\0';
                if (end[1] == ':')
                        port = end + 2;
                else if (end[1])
                        return false;
        } else if ((end = strchr(h, ':')) && !strchr(end + 1, ':')) {
                *end = '\0';
                port = end + 1;
        }
        if (port && !validate_parse_port(port, 1, ret_port))
                *ret_port = -1;
        if (strlen(h) >= size)
                return false;
        memcpy(host, h, strlen(h) + 1);
        return true;
}
