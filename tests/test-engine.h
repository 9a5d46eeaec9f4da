/* SPDX-License-Identifier: MIT */
#pragma once

/* What the in-process tests of the event-driven core share (test-start-queue.c,
 * test-conn.c, test-tunnel-engine.c, test-reload-plan.c; the code is
 * test-engine-harness.c). They run the real engine on libev's default loop, in this
 * process, against real child processes of tests/fake-ssh (its path in $FAKE_SSH, set by
 * tests/meson.build): a scripted mux master, one plan per host (see fake-ssh.c's header).
 * Every wait is bounded: the loop runs until a condition holds or a timer ends it, never
 * longer; no sleep, no polling. */

#include <ev.h>
#include <stdbool.h>
#include <sys/types.h>

#include "config.h"
#include "conn.h"
#include "sockwatch.h"

/* Once per program: a private temporary directory (fake-ssh's plans and logs, the runtime
 * directory with the control sockets), $FAKE_SSH_DIR, the log on stderr. */
void engine_init(void);
/* Every child gone, the directory removed. */
void engine_finish(void);

struct ev_loop *engine_loop(void);
const char *engine_fake_ssh(void);
const char *engine_runtime_dir(void);
const char *engine_fake_dir(void);
/* The inotify watch of the runtime directory (a connection's control socket appears there). */
struct sockwatch *engine_watch(void);

/* Run the loop until done(userdata) holds (checked after every iteration) or timeout
 * seconds have passed: whether it holds. */
bool engine_run_until(bool (*done)(void *userdata), void *userdata, double timeout);
/* Run the loop for this long. */
void engine_run_for(double seconds);

/* fake-ssh's plan for host: one line per start, the last one repeating ("0 30 auth"). */
void fake_plan(const char *host, const char *plan);
/* How many lines of host's log say what ("start", "exit", "term", "open", "close") of pid
 * (0: any), their rest beginning with rest (NULL: any): "L 15001 ok". */
size_t fake_count(const char *host, const char *what, pid_t pid, const char *rest);
/* The pid of host's n-th start (0: the first), or 0. */
pid_t fake_start_pid(const char *host, size_t n);

/* A configuration: ssh = fake-ssh, then text (printf-style). NULL, with the errors
 * printed, if it does not load. */
struct config *engine_config(const char *fmt, ...) _printf_(1, 2);
/* …with this ssh program. */
struct config *engine_config_ssh(const char *ssh, const char *fmt, ...) _printf_(2, 3);
/* A connection context on the loop: fake-ssh, the runtime directory and its watch. */
void engine_conn_context(struct conn_context *ctx, double stop_timeout);
/* A forward of a user (kind 'L', 'R' or 'D'), to add to a connection. */
struct conn_forward *engine_forward_new(struct conn_user *u, char kind, const char *spec);
void engine_forward_free(struct conn_forward *f);

/* Seconds on the monotonic clock since engine_init. */
double engine_now(void);
/* The pid runs (or is a zombie not yet reaped). */
bool engine_pid_alive(pid_t pid);
