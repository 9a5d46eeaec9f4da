/* SPDX-License-Identifier: MIT */
#pragma once

/* tunnel_json: one tunnel's status as the control socket's JSON object (every field is
 * documented in tunnelctl(1), JSON OUTPUT), and a state change as an event line. */

#include "json_write.h"
#include "tunnel.h"

void tunnel_json_write(struct json_writer *w, const struct tunnel_status *s);

/* {"event":"state","tunnel":…,"from":…,"to":…,"pid":…,"failure":…,"time":…}; "event" is
 * "state", "flapping" or "ssh" (with "failure": the new ssh failed, the old one serves on). */
void tunnel_json_write_event(struct json_writer *w, const struct tunnel_status *s, enum tunnel_event ev,
                             enum tunnel_state from);
