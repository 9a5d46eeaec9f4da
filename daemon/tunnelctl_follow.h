/* SPDX-License-Identifier: MIT */
#pragma once

/* tunnelctl_follow: tunnelctl's subscription to tunneld's state changes. */

#include <stdbool.h>

#include "json.h"

struct follow;

/* Subscribe: the reply is every tunnel's status, then events follow. 0 or -errno (said;
 * -ECONNABORTED: tunneld dropped us). */
int follow_open(const char *path, struct follow **ret);
struct follow *follow_close(struct follow *f);
/* Keep reading the subscription (into memory) while tunnelctl waits for other replies, so
 * that tunneld never sees it stop reading; until follow_close. */
void follow_read_meanwhile(struct follow *f);
/* The snapshot's status of a tunnel, or NULL. */
const struct json *follow_tunnel(const struct follow *f, const char *name);

/* tunnelctl events: print each change of the named tunnels (all if n is 0), as a line for
 * a person or, with json, as tunneld sent it, until tunneld goes away (0) or drops us
 * (5, saying why). Exit status. */
int follow_events(const char *path, char *const *names, int n, bool json);
/* tunnelctl wait: 0 once every named tunnel is up; 1 at timeout seconds (0: none), saying
 * which is not and why; 5 if tunneld dropped us (said). */
int follow_wait(const char *path, char *const *names, int n, double timeout);
/* After a restart (f opened before it): print each tunnel's new ssh pid, or where it went
 * instead, within timeout seconds. 0 if every one got a new ssh; 5 if tunneld dropped us. */
int follow_restarted(struct follow *f, char *const *names, const double *old_pids, char **lines, int n,
                     double timeout);
