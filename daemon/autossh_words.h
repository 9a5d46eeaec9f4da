/* SPDX-License-Identifier: MIT */
#pragma once

/* autossh_words: the lines and words of what --import-autossh reads. Pure. Two quoting
 * rules: a systemd unit's (systemd.service(5) "Command lines": double and single quotes,
 * C escapes, a trailing backslash continues the line), and a shell command line's, of
 * which only the quoting is understood: every other piece of shell syntax (; | & < > ( )
 * ` $ { }) is refused, never passed on. */

#include <stdbool.h>
#include <stddef.h>

#define WORDS_WHY_MAX 200

enum words_syntax {
        WORDS_UNIT,                     /* an ExecStart= or Environment= value */
        WORDS_SHELL,                    /* a command line of a shell script or a terminal */
};

/* The next logical line of text from *pos on: physical lines joined where one ends in an
 * odd number of backslashes (a unit: the backslash becomes a space and comment lines
 * inside are skipped; a shell: backslash and newline vanish). *ret_line is the number of
 * its first physical line, *line counts them. *ret = NULL at the end. 0 or -ENOMEM. */
int autossh_words_next_line(const char *text, size_t *pos, int *line, enum words_syntax syntax, int *ret_line, char **ret);

/* Split s into words by syntax. -EINVAL with the reason in why (unbalanced quotes, an
 * unknown escape, shell syntax), or -ENOMEM. A shell '#' at a word's start ends the line. */
int autossh_words_split(const char *s, enum words_syntax syntax, char ***ret, char why[WORDS_WHY_MAX]);

/* s with control characters as \n, \t or \xNN, cut after max bytes with "…": for a
 * line shown in a message or in a comment of the output. NULL on ENOMEM. */
char *autossh_words_escape(const char *s, size_t max);
