/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

#include "json.h"

/* Colour the STATE column. */
void show_set_color(bool on);
/* The status table of a "tunnels" array; long_view adds every forward and the reason of
 * each tunnel under its row. */
void show_table(const struct json *tunnels, bool long_view);
