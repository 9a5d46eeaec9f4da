/* SPDX-License-Identifier: MIT */
/* autossh_render: the imported tunnels → a "tunnels = ( … );" block in libconfig syntax:
 * unique names, forwards that cannot listen at once disabled (as tunneld -t would refuse
 * them), each tunnel with the command line it came from and its notes as comments. */
#include "autossh_import.h"
#include "autossh_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "clash.h"
#include "forward.h"
#include "util.h"
#include "validate.h"

/* Letters, digits, "_.-" (others become '-'), not beginning with '-' or '.'. */
static void sanitize_name(char *s)
{
        size_t skip;

        for (char *p = s; *p; p++)
                if (!isalnum((unsigned char)*p) && !strchr("_.-", *p))
                        *p = '-';
        skip = strspn(s, "-.");
        memmove(s, s + skip, strlen(s + skip) + 1);
        if (strlen(s) > NAME_MAX_LEN - 8)
                s[NAME_MAX_LEN - 8] = '\0';
}

/* What a forward listens on, for a name: "5000", or a socket's base name. */
static void forward_label(enum forward_kind kind, const char *spec, char *buf, size_t size)
{
        static struct forward f;

        buf[0] = '\0';
        if (forward_parse(kind, spec, &f))
                return;
        if (f.listen.port >= 0)
                snprintf(buf, size, "%d", f.listen.port);
        else
                snprintf(buf, size, "%s", strrchr(f.listen.path, '/') ? strrchr(f.listen.path, '/') + 1 : f.listen.path);
}

/* A command line's tunnel: the host's first label (an address whole), then what its first
 * forward listens on: "everythingcli-5000". */
static int derive_name(const struct imported *t, char **ret)
{
        bool address = strchr(t->host, ':') || strspn(t->host, "0123456789.") == strlen(t->host);
        size_t n = address ? strlen(t->host) : strcspn(t->host, ".");
        char label[VALUE_MAX_LEN + 1] = "";

        if (t->local_forwards)
                forward_label(FORWARD_LOCAL, t->local_forwards[0], label, sizeof(label));
        else if (t->remote_forwards)
                forward_label(FORWARD_REMOTE, t->remote_forwards[0], label, sizeof(label));
        else if (t->dynamic_forwards)
                forward_label(FORWARD_DYNAMIC, t->dynamic_forwards[0], label, sizeof(label));
        if (asprintf(ret, "%.*s%s%s", (int)n, t->host, label[0] ? "-" : "", label) < 0) {
                *ret = NULL;
                return -ENOMEM;
        }
        return 0;
}

static bool name_taken(const struct autossh_import *imp, size_t upto, const char *name)
{
        for (size_t i = 0; i < upto; i++)
                if (strcmp(imp->tunnels[i].name, name) == 0)
                        return true;
        return false;
}

static int unique_names(struct autossh_import *imp)
{
        for (size_t i = 0; i < imp->n_tunnels; i++) {
                struct imported *t = &imp->tunnels[i];
                char name[NAME_MAX_LEN + 1];

                if (!t->name && (derive_name(t, &t->name) < 0 || !t->name))
                        return -ENOMEM;
                sanitize_name(t->name);
                snprintf(name, sizeof(name), "%s", t->name[0] ? t->name : "autossh");
                for (int k = 2; name_taken(imp, i, name) || validate_tunnel_name(name); k++)
                        snprintf(name, sizeof(name), "%s-%d", t->name[0] ? t->name : "autossh", k);
                free(t->name);
                t->name = strdup(name);
                if (!t->name)
                        return -ENOMEM;
        }
        return 0;
}

struct listener {
        struct clash_listener l;
        const char *tunnel, *spec;
};

/* Every forward of t as it listens; -ENOMEM, or 0 (invalid specs cannot be here). */
static int listeners_of(const struct imported *t, struct listener **v, size_t *n)
{
        static const enum forward_kind kinds[3] = { FORWARD_LOCAL, FORWARD_DYNAMIC, FORWARD_REMOTE };
        char **const lists[3] = { t->local_forwards, t->dynamic_forwards, t->remote_forwards };
        char server[VALUE_MAX_LEN + 16];

        clash_server_identity(t->host, t->port > 0 ? t->port : 0, server, sizeof(server));
        for (int k = 0; k < 3; k++)
                for (char **f = lists[k]; f && *f; f++) {
                        struct listener *grown = realloc(*v, (*n + 1) * sizeof(**v));
                        int r;

                        if (!grown)
                                return -ENOMEM;
                        *v = grown;
                        r = clash_listener_from(kinds[k], *f, server, clash_gateway_ports(t->ssh_options), &grown[*n].l);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0)
                                continue;
                        grown[*n].tunnel = t->name;
                        grown[*n].spec = *f;
                        (*n)++;
                }
        return 0;
}

/* A tunnel that would listen where an earlier one (or itself) does is disabled: tunneld -t
 * refuses two enabled tunnels that cannot both run. */
static int disable_clashes(struct autossh_import *imp)
{
        struct listener *v = NULL;
        size_t n = 0;
        int r = 0;

        for (size_t i = 0; i < imp->n_tunnels && r >= 0; i++) {
                struct imported *t = &imp->tunnels[i];
                size_t before = n;

                r = listeners_of(t, &v, &n);
                for (size_t a = 0; r >= 0 && a < n && !t->disabled; a++)
                        for (size_t b = (a < before ? before : a + 1); b < n && !t->disabled; b++)
                                if (clash_listeners_clash(&v[a].l, &v[b].l)) {
                                        t->disabled = true;
                                        r = autossh_imported_note(t, "enabled = false: \"%s\" listens where \"%s\" of %s%s "
                                                          "does, and both cannot run at once: enable one of them",
                                                          v[b].spec, v[a].spec, a < before ? "tunnel " : "this tunnel",
                                                          a < before ? v[a].tunnel : "");
                                }
                if (t->disabled) {
                        for (size_t k = before; k < n; k++)
                                clash_listener_done(&v[k].l);
                        n = before;
                }
        }
        for (size_t k = 0; k < n; k++)
                clash_listener_done(&v[k].l);
        free(v);
        return r;
}

static void put_quoted(struct buf *b, const char *s)
{
        buf_append(b, "\"", 1);
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if (*p == '"' || *p == '\\')
                        buf_printf(b, "\\%c", *p);
                else if (*p < 0x20 || *p == 0x7f)
                        buf_printf(b, "\\x%02x", *p);   /* validated values have none; still never raw */
                else
                        buf_append(b, (const char *)p, 1);
        }
        buf_append(b, "\"", 1);
}

static void put_string(struct buf *b, const char *key, const char *value)
{
        if (!value)
                return;
        buf_printf(b, "    %s = ", key);
        put_quoted(b, value);
        buf_puts(b, ";\n");
}

static void put_list(struct buf *b, const char *key, char *const *v)
{
        if (!v || !v[0])
                return;
        buf_printf(b, "    %s = ( ", key);
        for (size_t i = 0; v[i]; i++) {
                if (i)
                        buf_puts(b, ", ");
                put_quoted(b, v[i]);
        }
        buf_puts(b, " );\n");
}

static void put_number(struct buf *b, const char *key, long v)
{
        if (v >= 0)
                buf_printf(b, "    %s = %ld;\n", key, v);
}

#define COMMENT_WIDTH 96

/* "# text", wrapped at spaces into lines of about COMMENT_WIDTH columns. */
static void put_comment(struct buf *b, const char *indent, const char *text)
{
        _cleanup_free_ char *escaped = autossh_words_escape(text, 2000);
        const char *p;

        if (!escaped) {
                b->oom = true;
                return;
        }
        for (p = escaped; *p; ) {
                size_t room = COMMENT_WIDTH - strlen(indent) - (p == escaped ? 2 : 4), n = strlen(p);

                if (n > room) {
                        size_t cut = room;
                        while (cut > room / 2 && p[cut] != ' ')
                                cut--;
                        n = p[cut] == ' ' ? cut : room;
                        while (n > 1 && ((unsigned char)p[n] & 0xc0) == 0x80)
                                n--;    /* never inside a UTF-8 character */
                }
                buf_printf(b, "%s#%s%.*s\n", indent, p == escaped ? " " : "   ", (int)n, p);
                p += n;
                p += strspn(p, " ");
        }
}

static void put_tunnel(struct buf *b, const struct imported *t, bool last)
{
        _cleanup_free_ char *source = NULL;

        if (asprintf(&source, "%s: %s", t->where, t->command) < 0) {
                source = NULL;
                b->oom = true;
                return;
        }
        put_comment(b, "  ", source);
        if (t->description)
                put_comment(b, "  ", t->description);
        buf_puts(b, "  {\n");
        put_string(b, "name", t->name);
        if (t->disabled)
                buf_puts(b, "    enabled = false;\n");
        put_string(b, "host", t->host);
        put_string(b, "user", t->user);
        put_number(b, "port", t->port);
        put_string(b, "identity_file", t->identity_file);
        put_string(b, "jump_host", t->jump_host);
        put_string(b, "ssh_config_file", t->ssh_config_file);
        put_list(b, "local_forwards", t->local_forwards);
        put_list(b, "remote_forwards", t->remote_forwards);
        put_list(b, "dynamic_forwards", t->dynamic_forwards);
        put_list(b, "ssh_options", t->ssh_options);
        put_number(b, "server_alive_interval", t->server_alive_interval);
        put_number(b, "server_alive_count_max", t->server_alive_count_max);
        put_number(b, "connect_timeout", t->connect_timeout);
        put_number(b, "gatetime", t->gatetime);
        put_number(b, "max_starts", t->max_starts);
        put_number(b, "max_lifetime", t->max_lifetime);
        for (char **n = t->notes; n && *n; n++)
                put_comment(b, "    ", *n);
        buf_printf(b, "  }%s\n", last ? "" : ",");
}

/* Differences of where tunneld runs ssh that the command line cannot show. */
static int note_environment(struct imported *t)
{
        bool alias = !strchr(t->host, '.') && !strchr(t->host, ':') && strcmp(t->host, "localhost") != 0;

        if (alias && !t->ssh_config_file &&
            autossh_imported_note(t, "host \"%s\" looks like a Host alias of an ssh config file: tunneld runs ssh as its own "
                          "user, which does not read yours: copy the \"Host %s\" block (and the key it names) under "
                          "/etc/tunneld/ and set ssh_config_file = \"/etc/tunneld/ssh_config\";", t->host, t->host) < 0)
                return -ENOMEM;
        if (((t->identity_file && t->identity_file[0] == '~') || (t->ssh_config_file && t->ssh_config_file[0] == '~')) &&
            autossh_imported_note(t, "~ is the home of the user tunneld runs ssh as (/var/lib/tunneld under the shipped unit, "
                          "which hides /home): copy the file under /etc/tunneld/ and name it by its absolute path") < 0)
                return -ENOMEM;
        return 0;
}

int autossh_import_render(struct autossh_import *imp, char **ret)
{
        struct buf b = {0};
        int r;

        r = unique_names(imp);
        for (size_t i = 0; r >= 0 && i < imp->n_tunnels; i++)
                r = note_environment(&imp->tunnels[i]);
        if (r >= 0)
                r = disable_clashes(imp);
        if (r < 0)
                return r;
        buf_puts(&b, "# Imported from autossh by tunneld --import-autossh. Read each \"#\" note, then check\n"
                     "# with tunneld -t. A drop-in file as it stands (/etc/tunneld.d/autossh.conf).\n"
                     "tunnels = (\n");
        for (size_t i = 0; i < imp->n_tunnels; i++)
                put_tunnel(&b, &imp->tunnels[i], i + 1 == imp->n_tunnels);
        buf_puts(&b, ");\n");
        return buf_steal(&b, ret);
}
