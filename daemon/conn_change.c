/* SPDX-License-Identifier: MIT */
/* conn_change: a reload's new settings for a connection, made before the point of no
 * return and taken after it: the same ssh with its supervision in place (its timers
 * re-armed for what is left of them), or a new command line by a make-before-break
 * restart. */
#include "conn_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int conn_change_new(struct conn *c, const struct tunnel_spec *spec, const char *ssh, struct conn_change **ret)
{
        struct conn_change *ch = calloc(1, sizeof(*ch));
        int r;

        if (!ch)
                return -ENOMEM;
        r = tunnel_spec_copy(spec, &ch->spec);
        if (r >= 0)
                r = conn_setup_new(c, &ch->spec, ssh, 0, &ch->setup);
        if (r >= 0)
                r = conn_alts_new(c, &ch->spec, ssh, &ch->alts);
        if (r < 0)
                return conn_change_free(ch), r;
        *ret = ch;
        return 0;
}

struct conn_change *conn_change_free(struct conn_change *ch)
{
        if (!ch)
                return NULL;
        conn_setup_done(&ch->setup);
        ch->alts = conn_alts_free(NULL, ch->alts);
        tunnel_spec_done(&ch->spec);
        free(ch);
        return NULL;
}

const struct tunnel_spec *conn_change_spec(const struct conn_change *ch)
{
        return &ch->spec;
}

bool conn_same_command(const struct conn *c, const struct tunnel_spec *spec, const char *ssh)
{
        return strcmp_null(c->setup.ssh, ssh) == 0 && tunnel_spec_same_ssh(&c->spec, spec);
}

/* The current run's timers, re-armed for the new spec: what is left of each. */
static void rearm_run_timers(struct conn *c)
{
        double now = now_mono();

        if (c->state == CONN_UP && !c->run.gate_passed) {
                double left = c->spec.sup.gatetime - (now - c->run.up_since);
                if (left <= 0)
                        conn_pass_gate(c);
                else
                        conn_arm(c, &c->gate_timer, left);
        }
        ev_timer_stop(c->ctx->loop, &c->lifetime_timer);
        if (conn_is_running(c) && c->spec.sup.max_lifetime > 0)
                conn_arm(c, &c->lifetime_timer, c->spec.sup.max_lifetime - (now - c->run.started_at));
        if (c->state == CONN_STARTING && c->run.kill_class == FAILURE_NONE) {
                double ran = now - c->run.started_at, slot = conn_slot_time(&c->spec);

                if (!c->run.deadline_final && ran < slot)
                        conn_arm(c, &c->deadline_timer, slot - ran);
                else {
                        c->run.deadline_final = true;
                        conn_set_connecting(c, false);
                        conn_arm(c, &c->deadline_timer, conn_start_deadline(&c->spec) - ran);
                }
        }
}

/* The same command line but for the alternatives. */
static bool same_but_alternatives(const struct conn *c, const struct tunnel_spec *spec, const char *ssh)
{
        struct tunnel_spec a = c->spec, b = *spec;      /* shallow: compared, never freed */

        a.alts = b.alts = (struct tunnel_alts){0};
        return strcmp_null(c->setup.ssh, ssh) == 0 && tunnel_spec_same_ssh(&a, &b);
}

void conn_reconfigure(struct conn *c, struct conn_change *ch)
{
        bool same = conn_same_command(c, &ch->spec, ch->setup.ssh);
        bool alts_only = !same && same_but_alternatives(c, &ch->spec, ch->setup.ssh);
        bool serving_removed = false;
        struct tunnel_spec old = c->spec;
        struct log_ctx ctx;

        if (alts_only) {
                /* the ssh of the alternative that serves stays, if the alternative does */
                serving_removed = conn_alt_reconfigure(c, &old, &ch->spec, &ch->alts);
                conn_setup_done(&ch->setup);    /* the spec's own destination: the same */
        } else if (!same) {
                c->run.alt = 0;
                conn_alts_remove_files(c->alts, 1);
                c->alts = conn_alts_free(c, c->alts);
                c->alts = ch->alts;
                ch->alts = NULL;
        }
        c->spec = ch->spec;
        ch->spec = (struct tunnel_spec){0};
        tunnel_spec_done(&old);
        if (alts_only) {
                conn_change_free(ch);
                ctx = conn_log_ctx(c);
                log_full(LOG_INFO, &ctx, "alternatives changed: %s", serving_removed
                         ? "the one that served was removed: the forwards move (make-before-break)"
                         : "the ssh that serves stays");
                rearm_run_timers(c);
                conn_path_tune(c);
                if (serving_removed && (conn_is_running(c) || c->state == CONN_STOPPING))
                        conn_restart(c, "its alternative was removed from the configuration");
                return;
        }
        if (!same) {
                /* files of the old setup the new one does not write there go */
                if (c->setup.jump_config_path && strcmp_null(c->setup.jump_config_path, ch->setup.jump_config_path))
                        (void)unlink(c->setup.jump_config_path);
                if (c->setup.known_hosts_path && strcmp_null(c->setup.known_hosts_path, ch->setup.known_hosts_path))
                        (void)unlink(c->setup.known_hosts_path);
                conn_setup_done(&c->setup);
                c->setup = ch->setup;
                ch->setup = (struct conn_setup){0};
        }
        conn_change_free(ch);
        ctx = conn_log_ctx(c);
        if (same) {
                rearm_run_timers(c);
                conn_path_tune(c);              /* dead_path_timeout, on the running ssh's connection */
                /* a tunnel's own connection: the tunnel says so ("supervision settings changed") */
                if (c->shared)
                        log_full(LOG_INFO, &ctx, "connection settings changed: applied to the running ssh%s",
                                 c->master ? "" : " (none runs)");
                return;
        }
        /* a new configuration has not proven itself yet: fail_fast judges its first start again */
        c->counters.ever_passed = false;
        if (conn_is_running(c) || c->state == CONN_STOPPING || c->state == CONN_BACKOFF || c->state == CONN_FAILED)
                conn_restart(c, "configuration changed");
}
