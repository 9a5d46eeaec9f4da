/* SPDX-License-Identifier: MIT */
/* tunnel_change: a reload's new spec for a kept tunnel: prepared before the point of no
 * return (so that applying it cannot fail), then applied as a restart with a new command
 * line, or in place when only supervision settings changed. */
#include "tunnel_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jump_config.h"
#include "known_hosts.h"
#include "probe.h"
#include "ssh_argv.h"

/* A spec and everything derived from it (ssh's argv, the jump hosts' file, the probe):
 * made before a reload's point of no return, so that applying it cannot fail. */
struct tunnel_change {
        struct tunnel_spec spec;
        char **argv;
        char *jump_config;
        char *jump_config_path;
        char *known_hosts;
        char *known_hosts_path;
        char *mux_path;                 /* multiplex: ssh's ControlPath */
        struct probe *probe;
};

struct tunnel_change *tunnel_change_free(struct tunnel_change *c)
{
        if (!c)
                return NULL;
        strv_free(c->argv);
        free(c->jump_config);
        free(c->jump_config_path);
        free(c->known_hosts);
        free(c->known_hosts_path);
        free(c->mux_path);
        probe_free(c->probe);
        tunnel_spec_done(&c->spec);
        free(c);
        return NULL;
}

/* The files written before every start, and where: RUNTIME_DIR/NAME.ssh_config and
 * RUNTIME_DIR/NAME.known_hosts. */
static int derive_files(struct tunnel *t, struct tunnel_change *c)
{
        const char *dir = t->ctx->runtime_dir ? t->ctx->runtime_dir : "/tmp";
        int r;

        r = known_hosts_render(&c->spec, &c->known_hosts);
        if (r >= 0 && c->known_hosts && asprintf(&c->known_hosts_path, "%s/%s.known_hosts", dir, c->spec.name) < 0) {
                c->known_hosts_path = NULL;
                r = -ENOMEM;
        }
        if (r >= 0)
                r = jump_config_render(&c->spec, c->known_hosts_path, &c->jump_config);
        if (r >= 0 && c->jump_config && asprintf(&c->jump_config_path, "%s/%s.ssh_config", dir, c->spec.name) < 0) {
                c->jump_config_path = NULL;
                r = -ENOMEM;
        }
        return r;
}

/* A file of the old spec the new one does not write there: removed. */
static void swap_file(char **text, char **path, char **new_text, char **new_path)
{
        if (*path && strcmp_null(*new_path, *path) != 0)
                (void)unlink(*path);
        free(*text);
        free(*path);
        *text = *new_text;
        *path = *new_path;
        *new_text = *new_path = NULL;
}

int tunnel_change_new(struct tunnel *t, const struct tunnel_spec *spec, const char *ssh, struct tunnel_change **ret)
{
        struct tunnel_change *c = calloc(1, sizeof(*c));
        int r;

        if (!c)
                return -ENOMEM;
        r = tunnel_spec_copy(spec, &c->spec);
        if (r < 0) {
                free(c);
                return r;
        }
        r = derive_files(t, c);
        if (r >= 0 && c->spec.multiplex)
                r = ssh_control_base(t->ctx->runtime_dir ? t->ctx->runtime_dir : "/tmp", c->spec.name, &c->mux_path);
        if (r >= 0 && c->mux_path)
                r = ssh_argv_build_master(&c->spec, ssh, c->jump_config_path, c->known_hosts_path, c->mux_path,
                                          &c->argv);
        else if (r >= 0)
                r = ssh_argv_build(&c->spec, ssh, c->jump_config_path, c->known_hosts_path, &c->argv);
        if (r >= 0 && c->spec.probe.connect)
                r = probe_new(t->ctx->loop, &c->spec.probe, on_probe, t, &c->probe);
        if (r < 0) {
                tunnel_change_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

/* Take c's spec (and, with command, its argv and jump file); c is freed. */
void take_change(struct tunnel *t, struct tunnel_change *c, bool command, bool probe)
{
        tunnel_spec_done(&t->spec);
        t->spec = c->spec;
        c->spec = (struct tunnel_spec){0};
        if (command) {
                swap_file(&t->jump_config, &t->jump_config_path, &c->jump_config, &c->jump_config_path);
                swap_file(&t->known_hosts, &t->known_hosts_path, &c->known_hosts, &c->known_hosts_path);
                /* the path is the name's: it changes only when multiplex is turned on or off
                 * (a new command line: the running master is stopped anyway) */
                if (t->mux_path && strcmp_null(t->mux_path, c->mux_path) != 0)
                        mux_done(t);
                free(t->mux_path);
                t->mux_path = c->mux_path;
                c->mux_path = NULL;
                strv_free(t->argv);
                t->argv = c->argv;
                c->argv = NULL;
        }
        if (probe) {
                probe_free(t->probe);
                t->probe = c->probe;
                c->probe = NULL;
        }
        tunnel_change_free(c);
}

void tunnel_reconfigure(struct tunnel *t, struct tunnel_change *c)
{
        bool enabled = c->spec.enabled;

        /* A running child keeps the argv it was started with; the new one is for the next start. */
        take_change(t, c, true, true);
        /* a new configuration has not proven itself yet: its first start is judged by
         * fail_fast again */
        t->ever_passed = false;
        if (!enabled) {
                tunnel_stop(t, "disabled in the configuration");
                return;
        }
        if (t->held && (t->state == TUNNEL_STOPPED || t->state == TUNNEL_STOPPING)) {
                /* an operator stopped it: the new spec waits for their start */
                t->starts = t->failures = 0;
                return;
        }
        tunnel_restart(t, "configuration changed");
}

/* The current run's timers, re-armed for the new spec: what is left of each. */
static void rearm_run_timers(struct tunnel *t)
{
        double now = now_mono();

        if (t->state == TUNNEL_UP && !t->gate_passed) {
                double left = t->spec.gatetime - (now - t->up_since);
                if (left <= 0)
                        pass_gate(t);
                else
                        arm(t, &t->gate_timer, left);
        }
        ev_timer_stop(t->ctx->loop, &t->lifetime_timer);
        if (t->pid > 0 && t->spec.max_lifetime > 0)
                arm(t, &t->lifetime_timer, t->spec.max_lifetime - (now - t->started_at));
        if (t->state == TUNNEL_STARTING && t->kill_class == FAILURE_NONE) {
                double ran = now - t->started_at, slot = tunnel_slot_time(&t->spec);

                if (!t->deadline_final && ran < slot)
                        arm(t, &t->deadline_timer, slot - ran);
                else {
                        t->deadline_final = true;
                        set_connecting(t, false);
                        arm(t, &t->deadline_timer, tunnel_start_deadline(&t->spec) - ran);
                }
        }
}

/* Take c in place: the running ssh is kept (its argv too unless command), the probe
 * restarted if it changed, the run's timers re-armed for what is left of them. */
static void apply_in_place(struct tunnel *t, struct tunnel_change *c, bool command)
{
        const struct probe_spec *a = &t->spec.probe, *b = &c->spec.probe;
        bool probe_changed = strcmp_null(a->connect, b->connect) != 0 || a->interval != b->interval ||
                             a->timeout != b->timeout || a->failures != b->failures ||
                             strcmp_null(a->send, b->send) != 0 || strcmp_null(a->expect, b->expect) != 0;

        take_change(t, c, command, probe_changed);
        if (probe_changed && t->probe && t->state == TUNNEL_UP) {
                t->probe_misses = 0;
                probe_start(t->probe);
        }
        rearm_run_timers(t);
}

void tunnel_update_policy(struct tunnel *t, struct tunnel_change *c)
{
        struct log_ctx ctx;

        apply_in_place(t, c, false);
        ctx = ctx_of(t);        /* after: the old spec, and its name, are gone */
        if (t->pid > 0)
                log_full(LOG_INFO, &ctx, "supervision settings changed: applied to the running ssh (pid %d)", (int)t->pid);
        else
                log_full(LOG_INFO, &ctx, "supervision settings changed: applied");
}

bool tunnel_forwards_change_in_place(const struct tunnel *t, const struct tunnel_spec *spec)
{
        return t->spec.multiplex && spec->multiplex && t->state != TUNNEL_STOPPING &&
               tunnel_spec_same_connection(&t->spec, spec);
}

void tunnel_update_forwards(struct tunnel *t, struct tunnel_change *c)
{
        size_t added = 0, removed = 0;
        struct log_ctx ctx;

        /* the run's forwards follow the new spec; its strings move into t below, unchanged */
        if (t->fwds && mux_retarget(t, &c->spec, &added, &removed) < 0) {
                tunnel_reconfigure(t, c);       /* out of memory: a restart is the safe way */
                return;
        }
        apply_in_place(t, c, true);
        ctx = ctx_of(t);
        if (t->pid > 0)
                log_full(LOG_NOTICE, &ctx, "forwards changed: %zu added, %zu removed on the running ssh (pid %d); "
                         "the others and their connections are untouched", added, removed, (int)t->pid);
        else if (t->carrier && t->attached)
                log_full(LOG_NOTICE, &ctx, "forwards changed: applied on the shared connection %s; the others and "
                         "their connections are untouched", t->carrier->spec.name);
        else
                log_full(LOG_INFO, &ctx, "forwards changed: applied");
        if (t->carrier)
                share_forwards_changed(t);
        mux_open_pending(t);
}
