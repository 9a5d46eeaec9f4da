/* SPDX-License-Identifier: MIT */
#pragma once

/* ctl_events: the state changes the control socket's subscribers have yet to read, kept
 * once for all of them. Each event is rendered once and appended; each subscriber has a
 * cursor into the log and takes from it as its socket takes bytes. The log is blocks of
 * whole records, CTL_EVENTS_BACKLOG bytes at most: memory for events is bounded whatever
 * the number of subscribers and however they read. A block every subscriber has passed is
 * freed; one that must make room is freed after the subscribers still in it are dropped
 * (they fell that far behind). Offsets count every byte ever appended. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CTL_EVENTS_BACKLOG (2u << 20)  /* for all subscribers: one this far behind is dropped */
#define CTL_EVENTS_BLOCK (64u << 10)

struct ctl_events;

int ctl_events_new(struct ctl_events **ret);
struct ctl_events *ctl_events_free(struct ctl_events *l);

/* The offset after the last event: a new subscriber's cursor. */
uint64_t ctl_events_end(const struct ctl_events *l);
/* Before appending an event of len bytes of line and name: 0 if it fits, else the offset
 * below which a cursor is in the block that must go (drop those subscribers, then
 * ctl_events_trim(l, that offset)). */
uint64_t ctl_events_room(const struct ctl_events *l, size_t name_len, size_t len);
/* Append one event line of the tunnel name. 0 or -ENOMEM. */
int ctl_events_append(struct ctl_events *l, const char *name, const char *line, size_t len);
/* Free every block that ends at or before offset upto. */
void ctl_events_trim(struct ctl_events *l, uint64_t upto);
/* Where the oldest block ends (0 if none): a cursor past it may let it go. */
uint64_t ctl_events_first_end(const struct ctl_events *l);

/* The event at *cursor, and *cursor moved past it; false at the end. The pointers are
 * valid until the log changes. */
bool ctl_events_next(const struct ctl_events *l, uint64_t *cursor, const char **ret_name, size_t *ret_name_len,
                     const char **ret_line, size_t *ret_len);
