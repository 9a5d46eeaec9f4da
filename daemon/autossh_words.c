/* SPDX-License-Identifier: MIT */
#include "autossh_words.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* One physical line: [start, end) without its newline. */
static bool physical_line(const char *text, size_t *pos, size_t *start, size_t *end)
{
        const char *nl;

        if (!text[*pos])
                return false;
        *start = *pos;
        nl = strchr(text + *pos, '\n');
        *end = nl ? (size_t)(nl - text) : strlen(text);
        *pos = nl ? *end + 1 : *end;
        return true;
}

static bool continues(const char *text, size_t start, size_t *end)
{
        size_t n = 0;

        if (*end > start && text[*end - 1] == '\r')
                (*end)--;
        while (*end - n > start && text[*end - n - 1] == '\\')
                n++;
        return n % 2 == 1;
}

static bool is_unit_comment(const char *text, size_t start, size_t end)
{
        while (start < end && (text[start] == ' ' || text[start] == '\t'))
                start++;
        return start < end && (text[start] == '#' || text[start] == ';');
}

int autossh_words_next_line(const char *text, size_t *pos, int *line, enum words_syntax syntax, int *ret_line, char **ret)
{
        struct buf b = {0};
        size_t start, end;
        bool first = true;

        *ret = NULL;
        while (physical_line(text, pos, &start, &end)) {
                bool more;

                (*line)++;
                if (first)
                        *ret_line = *line;
                else if (syntax == WORDS_UNIT && is_unit_comment(text, start, end))
                        continue;       /* systemd skips comments inside a continued line */
                first = false;
                more = continues(text, start, &end);
                buf_append(&b, text + start, end - start - (more ? 1 : 0));
                if (!more)
                        break;
                if (syntax == WORDS_UNIT)
                        buf_append(&b, " ", 1);
        }
        if (first)
                return 0;
        buf_append(&b, "", 0);
        return buf_steal(&b, ret);
}

static int hex(char c)
{
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A C escape of a unit after its backslash: the byte in *ret, the length read, or 0. */
static size_t unit_escape(const char *p, char *ret)
{
        static const char simple[] = "a\ab\bf\fn\nr\rt\tv\v\\\\\"\"''s ";

        for (size_t i = 0; simple[i]; i += 2)
                if (*p == simple[i]) {
                        *ret = simple[i + 1];
                        return 1;
                }
        if (*p == 'x' && hex(p[1]) >= 0 && hex(p[2]) >= 0) {
                *ret = (char)(hex(p[1]) * 16 + hex(p[2]));
                return *ret ? 3 : 0;
        }
        if (p[0] >= '0' && p[0] <= '3' && p[1] >= '0' && p[1] <= '7' && p[2] >= '0' && p[2] <= '7') {
                *ret = (char)((p[0] - '0') * 64 + (p[1] - '0') * 8 + (p[2] - '0'));
                return *ret ? 3 : 0;
        }
        return 0;
}

struct splitter {
        struct buf word;
        bool in_word;
        char ***words;
        char *why;
};

static int end_word(struct splitter *s)
{
        _cleanup_free_ char *w = NULL;
        int r;

        if (!s->in_word)
                return 0;
        s->in_word = false;
        buf_append(&s->word, "", 0);
        r = buf_steal(&s->word, &w);
        s->word = (struct buf){0};
        return r < 0 ? r : strv_push(s->words, w);
}

_printf_(2, 3)
static int refuse(struct splitter *s, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(s->why, WORDS_WHY_MAX, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* One unit character (quote is the open quote or 0); the bytes consumed, or -errno. */
static int unit_char(struct splitter *s, const char *p, char *quote)
{
        char c;

        if (*p == '\\') {
                size_t n = unit_escape(p + 1, &c);
                if (!n)
                        return refuse(s, "an unknown or NUL escape \\%c (systemd.syntax(7))", p[1] ? p[1] : ' ');
                buf_append(&s->word, &c, 1);
                s->in_word = true;
                return (int)n + 1;
        }
        if (*quote) {
                if (*p == *quote)
                        *quote = 0;
                else
                        buf_append(&s->word, p, 1);
                return 1;
        }
        if (*p == '"' || *p == '\'') {
                *quote = *p;
                s->in_word = true;
                return 1;
        }
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
                int r = end_word(s);
                return r < 0 ? r : 1;
        }
        buf_append(&s->word, p, 1);
        s->in_word = true;
        return 1;
}

#define SHELL_SYNTAX ";&|<>()`${}"

/* One shell character: as unit_char, but only quoting is understood. */
static int shell_char(struct splitter *s, const char *p, char *quote)
{
        if (*quote == '\'') {
                if (*p == '\'')
                        *quote = 0;
                else
                        buf_append(&s->word, p, 1);
                return 1;
        }
        if (*p == '\\') {
                if (!p[1])
                        return refuse(s, "a lone backslash at the end");
                if (*quote == '"' && !strchr("\"\\$`", p[1]))
                        buf_append(&s->word, p, 1);     /* kept, as in sh's double quotes */
                buf_append(&s->word, p + 1, 1);
                s->in_word = true;
                return 2;
        }
        if (*quote == '"') {
                if (*p == '"')
                        *quote = 0;
                else if (*p == '$' || *p == '`')
                        return refuse(s, "shell expansion ('%c' in double quotes): refused, write the value itself", *p);
                else
                        buf_append(&s->word, p, 1);
                return 1;
        }
        if (*p == '"' || *p == '\'') {
                *quote = *p;
                s->in_word = true;
                return 1;
        }
        if (*p == ' ' || *p == '\t' || *p == '\r') {
                int r = end_word(s);
                return r < 0 ? r : 1;
        }
        if (*p == '#' && !s->in_word)
                return (int)strlen(p);          /* a comment: the rest of the line */
        if (strchr(SHELL_SYNTAX, *p))
                return refuse(s, "shell syntax '%c': refused (tunneld never runs a shell; write the autossh "
                                 "command alone, with its values)", *p);
        buf_append(&s->word, p, 1);
        s->in_word = true;
        return 1;
}

int autossh_words_split(const char *line, enum words_syntax syntax, char ***ret, char why[WORDS_WHY_MAX])
{
        _cleanup_strv_free_ char **words = NULL;
        struct splitter s = { .words = &words, .why = why };
        char quote = 0;
        int r = 0;

        words = calloc(1, sizeof(char *));
        if (!words)
                return -ENOMEM;
        for (const char *p = line; *p; p += r) {
                r = syntax == WORDS_UNIT ? unit_char(&s, p, &quote) : shell_char(&s, p, &quote);
                if (r < 0)
                        break;
        }
        if (r >= 0 && quote)
                r = refuse(&s, "an unterminated %c quote", quote);
        if (r >= 0)
                r = end_word(&s);
        buf_free(&s.word);
        if (r < 0)
                return r;
        *ret = words;
        words = NULL;
        return 0;
}

char *autossh_words_escape(const char *s, size_t max)
{
        struct buf b = {0};
        char *ret = NULL;
        size_t n = 0;

        for (const unsigned char *c = (const unsigned char *)s; *c; c++, n++) {
                size_t u = *c >= 0x80 ? utf8_valid_length(c) : 1;

                if (n >= max) {
                        buf_puts(&b, "…");
                        break;
                }
                if (*c >= 0x80 && u > 0) {
                        buf_append(&b, (const char *)c, u);
                        c += u - 1;
                        n += u - 1;
                } else if (*c == '\n')
                        buf_puts(&b, "\\n");
                else if (*c == '\t')
                        buf_puts(&b, "\\t");
                else if (*c < 0x20 || *c >= 0x7f)
                        buf_printf(&b, "\\x%02x", *c);
                else
                        buf_append(&b, (const char *)c, 1);
        }
        buf_append(&b, "", 0);
        return buf_steal(&b, &ret) < 0 ? NULL : ret;
}
