/* SPDX-License-Identifier: MIT */
/* The one list of control commands (daemon/ctl_commands.c) and what must follow it: the
 * daemon serves exactly its requests, and the shell completions (completions/, read from
 * the source tree) offer exactly its commands, each with the arguments it takes. */
#include <ctype.h>

#include "ctl_commands.h"
#include "ctl_protocol.h"
#include "test.h"
#include "util.h"

#ifndef COMPLETIONS_DIR
#error "COMPLETIONS_DIR: the completions/ directory of the source tree"
#endif

static char *slurp(const char *name)
{
        char path[512];
        struct buf b = {0};
        char chunk[4096];
        size_t n;
        FILE *f;
        char *text = NULL;

        snprintf(path, sizeof(path), "%s/%s", COMPLETIONS_DIR, name);
        f = fopen(path, "re");
        if (!f) {
                printf("#   cannot read %s\n", path);
                return NULL;
        }
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
                buf_append(&b, chunk, n);
        fclose(f);
        return buf_steal(&b, &text) < 0 ? NULL : text;
}

/* The words of s[0..len) separated by blanks, '|' or quotes, as a NULL-terminated list. */
static char **words(const char *s, size_t len)
{
        char **v = NULL;

        for (size_t i = 0; i < len;) {
                size_t k = i;

                while (k < len && (isalnum((unsigned char)s[k]) || s[k] == '_' || s[k] == '-'))
                        k++;
                if (k > i) {
                        char *w = strndup(s + i, k - i);
                        if (w && strv_push(&v, w) < 0)
                                test_assert(!"out of memory");
                        free(w);
                        i = k;
                } else
                        i++;
        }
        return v;
}

static bool has_word(char *const *v, const char *w)
{
        for (size_t i = 0; v && v[i]; i++)
                if (strcmp(v[i], w) == 0)
                        return true;
        return false;
}

static void test_table(void)
{
        for (size_t i = 0; i < ELEMENTSOF(ctl_commands); i++) {
                const struct ctl_command *c = &ctl_commands[i];

                test_assert(c->name && c->synopsis && c->summary && c->help);
                test_assert(ctl_command_find(c->name) == c);
                test_assert(ctl_command_id(c) == (enum ctl_command_id)i);
                /* tunneld answers every request of the table, and nothing else */
                if (ctl_protocol_serves(c) != c->request)
                        printf("#   %s: served %d, a request %d\n", c->name, ctl_protocol_serves(c), c->request);
                test_assert(ctl_protocol_serves(c) == c->request);
                /* only requests change tunnels */
                test_assert(!c->changes || c->request);
        }
        test_assert(!ctl_command_find("frobnicate"));
        test_assert(!ctl_command_find(NULL));
}

/* completions/tunnelctl.bash: the commands it offers, and in its `case $command in` the
 * branch of each: names or not, --all or not, as the table says. */
static void test_bash(void)
{
        _cleanup_free_ char *text = slurp("tunnelctl.bash");
        const char *p, *end, *cases;
        _cleanup_strv_free_ char **offered = NULL;

        test_assert(text);
        if (!text)
                return;
        p = strstr(text, "local commands=\"");
        test_assert(p);
        if (!p)
                return;
        p += strlen("local commands=\"");
        end = strchr(p, '"');
        offered = words(p, (size_t)(end - p));
        test_assert(strv_length(offered) == ELEMENTSOF(ctl_commands));
        for (size_t i = 0; i < ELEMENTSOF(ctl_commands); i++) {
                if (!has_word(offered, ctl_commands[i].name))
                        printf("#   tunnelctl.bash does not offer %s\n", ctl_commands[i].name);
                test_assert(has_word(offered, ctl_commands[i].name));
        }

        cases = strstr(text, "case $command in");
        test_assert(cases);
        if (!cases)
                return;
        for (size_t i = 0; i < ELEMENTSOF(ctl_commands); i++) {
                const struct ctl_command *c = &ctl_commands[i];
                bool found = false;

                /* each branch: "a | b)" up to its ";;" */
                for (const char *line = cases; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
                        const char *eol = strchr(line, '\n'), *paren = memchr(line, ')', eol ? (size_t)(eol - line) : strlen(line));
                        _cleanup_strv_free_ char **labels = NULL;
                        _cleanup_free_ char *body = NULL;
                        const char *stop;

                        if (!paren || strstr(line, "esac") == line)
                                continue;
                        labels = words(line, (size_t)(paren - line));
                        if (!has_word(labels, c->name))
                                continue;
                        stop = strstr(paren, ";;");
                        body = strndup(paren, stop ? (size_t)(stop - paren) : strlen(paren));
                        found = true;
                        test_assert(body);
                        if (!body)
                                break;
                        if ((strstr(body, "_tunnelctl_tunnels") != NULL) != (c->args != CTL_ARGS_NONE) ||
                            (strstr(body, "--all") != NULL) != (c->args == CTL_ARGS_NAMES_OR_ALL))
                                printf("#   tunnelctl.bash: the branch of %s does not offer what it takes\n", c->name);
                        test_assert((strstr(body, "_tunnelctl_tunnels") != NULL) == (c->args != CTL_ARGS_NONE));
                        test_assert((strstr(body, "--all") != NULL) == (c->args == CTL_ARGS_NAMES_OR_ALL));
                        break;
                }
                if (!found)
                        printf("#   tunnelctl.bash: no branch for %s\n", c->name);
                test_assert(found);
        }
}

/* completions/_tunnelctl: each command with the table's summary, and tunnel names offered
 * for exactly the commands that take them. */
static void test_zsh(void)
{
        _cleanup_free_ char *text = slurp("_tunnelctl");
        const char *p, *end;
        size_t listed = 0;

        test_assert(text);
        if (!text)
                return;
        /* its entries, one a line, up to a line that is only ")" */
        p = strstr(text, "cmds=(");
        end = NULL;
        for (const char *line = p ? strchr(p, '\n') : NULL; line && !end; line = strchr(line + 1, '\n')) {
                const char *q = line + 1;

                while (*q == ' ' || *q == '\t')
                        q++;
                if (*q == ')')
                        end = q;
        }
        test_assert(p && end);
        if (!p || !end)
                return;
        for (const char *q = strchr(p, '\''); q && q < end; q = strchr(q, '\'')) {
                const char *close = strchr(q + 1, '\'');
                _cleanup_free_ char *entry = close ? strndup(q + 1, (size_t)(close - q - 1)) : NULL;
                char *colon = entry ? strchr(entry, ':') : NULL;
                const struct ctl_command *c;

                if (!colon)
                        break;
                *colon = '\0';
                c = ctl_command_find(entry);
                if (!c || strcmp(colon + 1, c->summary) != 0)
                        printf("#   _tunnelctl: '%s:%s' is not in the table\n", entry, colon + 1);
                test_assert(c && strcmp(colon + 1, c->summary) == 0);
                listed++;
                q = close + 1;
        }
        test_assert(listed == ELEMENTSOF(ctl_commands));

        /* "status|start|…) _tunnelctl_tunnels" */
        p = strstr(text, "case $line[1] in");
        end = p ? strstr(p, "_tunnelctl_tunnels") : NULL;
        test_assert(p && end);
        if (!p || !end) {
                return;
        } else {
                _cleanup_strv_free_ char **named = words(p + strlen("case $line[1] in"),
                                                         (size_t)(end - p) - strlen("case $line[1] in"));

                for (size_t i = 0; i < ELEMENTSOF(ctl_commands); i++)
                        test_assert(has_word(named, ctl_commands[i].name) == (ctl_commands[i].args != CTL_ARGS_NONE));
        }
}

TEST_MAIN(TEST(test_table), TEST(test_bash), TEST(test_zsh))
