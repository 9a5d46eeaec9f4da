/* SPDX-License-Identifier: MIT */
#pragma once

/* check_report: tunneld -t's report, and checking as the service's user. */

#include <stdbool.h>

#include "config.h"

#ifndef TUNNELD_USER
#define TUNNELD_USER "tunneld"          /* the shipped units' User= */
#endif

/* "configuration OK: …", the shared connections, and with verbose each tunnel's ssh
 * command line and the files tunneld writes for it. 0, or 1 out of memory. */
int check_report_print(const struct config *c, bool verbose);

/* tunneld -t run as root checks files as root reads them: every key looks readable. The
 * service runs as TUNNELD_USER, so check as that user (or user): in a child that has become
 * it, whose exit status is returned. CHECK_REPORT_HERE: go on in this process (not root, or
 * checking as root on purpose, or no such user: then the report says which checks only
 * root passed). */
#define CHECK_REPORT_HERE (-1)
int check_report_become_user(const char *user);
