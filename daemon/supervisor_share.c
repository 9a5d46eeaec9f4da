/* SPDX-License-Identifier: MIT */
/* supervisor_share: the shared connections (share_connection). Each group of tunnels that
 * tunnel_spec_shares_connection() puts together rides one carrier, a hidden tunnel of the
 * supervisor's (never in status, metrics, events or hooks: its riders are). A carrier is
 * made when a group first appears and freed once it has no rider and has stopped. */
#include "supervisor_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static struct tunnel *find_carrier(const struct supervisor *s, const struct tunnel_spec *spec)
{
        for (size_t i = 0; i < s->n_carriers; i++)
                if (tunnel_spec_shares_connection(tunnel_get_spec(s->carriers[i]), spec))
                        return s->carriers[i];
        return NULL;
}

static bool name_taken(const struct supervisor *s, const char *name)
{
        for (size_t i = 0; i < s->n_carriers; i++)
                if (strcmp(tunnel_get_name(s->carriers[i]), name) == 0)
                        return true;
        return false;
}

/* "~NAME" after its first tunnel ("~NAME.2" … while an older one of that name stops):
 * no tunnel's name has a '~', so the log and the runtime files cannot mix them up. */
static int new_carrier(struct supervisor *s, const struct tunnel_spec *spec, struct tunnel **ret)
{
        _cleanup_free_ char *name = NULL;
        struct tunnel **v = realloc(s->carriers, (s->n_carriers + 1) * sizeof(struct tunnel *));
        int r;

        if (!v)
                return -ENOMEM;
        s->carriers = v;
        for (unsigned n = 1; !name || name_taken(s, name); n++) {
                free(name);
                if ((n == 1 ? asprintf(&name, "~%s", spec->name) : asprintf(&name, "~%s.%u", spec->name, n)) < 0) {
                        name = NULL;
                        return -ENOMEM;
                }
        }
        r = tunnel_new_carrier(&s->share_ctx, spec, name, ret);
        if (r < 0)
                return r;
        s->carriers[s->n_carriers++] = *ret;
        return 0;
}

void share_update_context(struct supervisor *s)
{
        s->share_ctx.ssh = s->ctx.ssh;
        s->share_ctx.stop_timeout = s->ctx.stop_timeout;
}

/* A running connection whose riders all move to one new connection (or supervision)
 * that no other carrier has: it changes with them instead of being replaced, so that
 * their connections survive (in place, or make-before-break). */
static void follow_riders(struct supervisor *s, const struct config *c)
{
        for (size_t k = 0; k < s->n_carriers; k++) {
                struct tunnel *carrier = s->carriers[k];
                const struct tunnel_spec *first = NULL;
                bool one_key = true;

                if (!tunnel_is_running(carrier) && tunnel_get_state(carrier) != TUNNEL_BACKOFF)
                        continue;
                for (size_t i = 0; i < s->n_tunnels && one_key; i++) {
                        const struct tunnel_spec *spec = &c->tunnels[i];

                        if (tunnel_get_carrier(s->tunnels[i]) != carrier || !spec->enabled || !spec->share_connection)
                                continue;
                        if (!first)
                                first = spec;
                        else if (!tunnel_spec_shares_connection(first, spec))
                                one_key = false;
                }
                if (!first || !one_key || tunnel_spec_shares_connection(tunnel_get_spec(carrier), first) ||
                    find_carrier(s, first))
                        continue;
                if (tunnel_update_carrier(carrier, first, s->ctx.ssh) < 0)
                        log_warning("%s: cannot take its tunnels' new settings (out of memory): they move to a new "
                                    "connection", tunnel_get_name(carrier));
        }
}

void share_assign(struct supervisor *s, const struct config *c, bool ssh_changed)
{
        for (size_t i = 0; ssh_changed && i < s->n_carriers; i++) {
                struct tunnel_change *change;

                struct tunnel *k = s->carriers[i];

                if (tunnel_change_new(k, tunnel_get_spec(k), s->ctx.ssh, &change) < 0)
                        continue;
                /* a running one restarts (make-before-break); another takes it for its next start */
                if (tunnel_is_running(k) || tunnel_get_state(k) == TUNNEL_BACKOFF)
                        tunnel_reconfigure(k, change);
                else
                        tunnel_update_forwards(k, change);
        }
        follow_riders(s, c);
        for (size_t i = 0; i < s->n_tunnels; i++) {
                const struct tunnel_spec *spec = &c->tunnels[i];
                struct tunnel *t = s->tunnels[i], *carrier = NULL;
                int r = 0;

                if (!spec->enabled)
                        continue;       /* its reconfiguration stops it, on the connection it has */
                if (spec->share_connection) {
                        carrier = find_carrier(s, spec);
                        if (!carrier)
                                r = new_carrier(s, spec, &carrier);
                }
                if (r >= 0)
                        r = tunnel_set_carrier(t, carrier);
                if (r < 0) {
                        struct log_ctx ctx = LOG_CTX_INIT;
                        ctx.tunnel = spec->name;
                        errno = -r;
                        log_full(LOG_ERR, &ctx, "cannot share its connection (%m): it runs its own ssh");
                        (void)tunnel_set_carrier(t, NULL);
                        if (tunnel_get_state(t) == TUNNEL_STOPPED && !tunnel_is_held(t))
                                tunnel_start(t);
                }
        }
        share_collect(s);
}

void share_collect(struct supervisor *s)
{
        for (size_t i = s->n_carriers; i > 0; i--) {
                struct tunnel *c = s->carriers[i - 1];

                if (tunnel_count_riders(c) == 0 && tunnel_get_state(c) == TUNNEL_STOPPED && !tunnel_has_child(c) &&
                    !tunnel_wants_start(c)) {
                        tunnel_free(c);
                        remove_at(s->carriers, &s->n_carriers, i - 1);
                } else if (tunnel_count_riders(c) == 0 && tunnel_get_state(c) != TUNNEL_STOPPING &&
                           tunnel_get_state(c) != TUNNEL_STOPPED)
                        tunnel_stop(c, "no tunnel uses the shared connection any more");
        }
        s->carriers_dirty = false;
}

/* A carrier's event: one that has stopped may be due to go (at the next flush). */
void share_on_event(struct tunnel *t, enum tunnel_event ev, enum tunnel_state old, void *userdata)
{
        struct supervisor *s = userdata;

        (void)old;
        if (ev == TUNNEL_EVENT_STATE && tunnel_get_state(t) == TUNNEL_STOPPED)
                s->carriers_dirty = true;
}

bool share_any_child(const struct supervisor *s)
{
        for (size_t i = 0; i < s->n_carriers; i++)
                if (tunnel_has_child(s->carriers[i]))
                        return true;
        return false;
}

/* SIGUSR1: each running connection restarts once (make-before-break), not once per rider. */
void share_restart_all(struct supervisor *s, const char *reason)
{
        for (size_t i = 0; i < s->n_carriers; i++)
                restart_or_retry(s->carriers[i], reason);      /* a carrier is never degraded */
}

/* At shutdown, a carrier whose riders have all stopped is stopped by the last of them;
 * one left running (its riders failed, say) is stopped here. */
void share_shutdown(struct supervisor *s)
{
        for (size_t i = 0; i < s->n_carriers; i++) {
                struct tunnel *c = s->carriers[i];

                tunnel_cancel_start(c);
                if (tunnel_get_state(c) != TUNNEL_STOPPED && tunnel_get_state(c) != TUNNEL_STOPPING)
                        tunnel_stop(c, "tunneld is stopping");
        }
}

void share_free(struct supervisor *s)
{
        for (size_t i = 0; i < s->n_carriers; i++)
                tunnel_free(s->carriers[i]);
        free(s->carriers);
        s->carriers = NULL;
        s->n_carriers = 0;
}
