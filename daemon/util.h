/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _fallthrough_ __attribute__((fallthrough))

static inline void freep(void *p) { free(*(void **)p); }
static inline void closep(int *fd) { if (*fd >= 0) close(*fd); }
static inline void fclosep(FILE **f) { if (*f) fclose(*f); }
#define _cleanup_free_ __attribute__((cleanup(freep)))
#define _cleanup_close_ __attribute__((cleanup(closep)))
#define _cleanup_fclose_ __attribute__((cleanup(fclosep)))

/* Seconds on CLOCK_MONOTONIC: run lengths must not jump with the wall clock. */
double now_mono(void);

/* Human duration: "850 ms", "2.1 s", "40 s", "3 min 2 s", "2 h 5 min". */
const char *format_duration(double seconds, char *buf, size_t size);
#define DURATION_MAX 32

/* "TERM", "KILL", … or the number. */
const char *signal_to_name(int sig, char *buf, size_t size);

/* NULL-terminated string vectors. */
size_t strv_length(char *const *v);
char **strv_free(char **v);
int strv_push(char ***v, const char *s);      /* copies s; 0 or -ENOMEM */
int strv_copy(char *const *v, char ***ret);
bool strv_equal(char *const *a, char *const *b);
static inline void strv_freep(char ***v) { strv_free(*v); }
#define _cleanup_strv_free_ __attribute__((cleanup(strv_freep)))

/* 0 if equal (NULL == NULL), like strcmp otherwise. */
int strcmp_null(const char *a, const char *b);

/* Quote one argument so a shell would read it back unchanged (for logs and -t --verbose). */
int shell_quote_argv(char *const *argv, char **ret);

/* Uniform double in [0, 1) from a per-process PRNG seeded once from getrandom(). */
double random_unit(void);

/* Grow-only byte buffer used for status text, JSON and metrics. */
struct buf {
        char *data;
        size_t len, cap;
        bool oom;       /* sticky: one allocation failure poisons the buffer */
};
void buf_printf(struct buf *b, const char *fmt, ...) _printf_(2, 3);
void buf_append(struct buf *b, const char *s, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_json_string(struct buf *b, const char *s);     /* "…" with JSON escapes, always valid UTF-8 */
size_t utf8_valid_length(const unsigned char *p);       /* 1..4, or 0: not valid UTF-8 there */
void buf_free(struct buf *b);
#define _cleanup_buf_ __attribute__((cleanup(buf_free)))
/* Hand the string over (NULL and -ENOMEM if the buffer ran out of memory). */
int buf_steal(struct buf *b, char **ret);

/* Write text to path atomically, with mode: a new file under a name nobody can guess in
 * path's directory (opened and checked, or the runtime directory's fd), then renamed over
 * path. No symlink or FIFO at any name, nor a directory swapped in, can redirect the write
 * or block it. Defined in safe_dir.c (safe_dir.h tells how); declared here for the callers
 * that have a path. */
int write_file_atomic(const char *path, const char *text, mode_t mode);
