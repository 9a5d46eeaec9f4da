/* SPDX-License-Identifier: MIT */
/* spec: the plain data of a configuration (config.h): copying, freeing, comparing tunnel
 * specs, and the names of the enumerations. */
#include "config.h"
#include "config_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void tunnel_spec_done(struct tunnel_spec *s)
{
        if (!s)
                return;
        free(s->name);
        free(s->host);
        free(s->user);
        free(s->identity_file);
        free(s->jump_host);
        free(s->ssh_config_file);
        strv_free(s->local_forwards);
        strv_free(s->remote_forwards);
        strv_free(s->dynamic_forwards);
        strv_free(s->ssh_options);
        strv_free(s->host_keys);
        strv_free(s->jump_host_keys);
        tunnel_alts_done(&s->alts);
        free(s->probe.connect);
        free(s->probe.send);
        free(s->probe.expect);
        strv_free(s->after);
        free(s->on_state_change);
        free(s->ssh.hostname);
        strv_free(s->ssh.local_forwards);
        strv_free(s->ssh.remote_forwards);
        strv_free(s->ssh.dynamic_forwards);
        free(s->source_file);
        *s = (struct tunnel_spec){0};
}

static int strdup_null(const char *s, char **ret)
{
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int strv_copy_null(char *const *v, char ***ret)
{
        *ret = NULL;
        return v ? strv_copy(v, ret) : 0;
}

int tunnel_spec_copy(const struct tunnel_spec *s, struct tunnel_spec *ret)
{
        struct tunnel_spec c = *s;      /* scalars */
        int r = 0;

        c.name = c.host = c.user = c.identity_file = c.jump_host = c.ssh_config_file = c.source_file = NULL;
        c.local_forwards = c.remote_forwards = c.dynamic_forwards = c.ssh_options = NULL;
        c.host_keys = c.jump_host_keys = NULL;
        c.alts = (struct tunnel_alts){0};
        c.probe.connect = c.probe.send = c.probe.expect = NULL;
        c.after = NULL;
        c.on_state_change = NULL;
        c.ssh.hostname = NULL;
        c.ssh.local_forwards = c.ssh.remote_forwards = c.ssh.dynamic_forwards = NULL;

        if ((r = strdup_null(s->name, &c.name)) < 0 ||
            (r = strdup_null(s->host, &c.host)) < 0 ||
            (r = strdup_null(s->user, &c.user)) < 0 ||
            (r = strdup_null(s->identity_file, &c.identity_file)) < 0 ||
            (r = strdup_null(s->jump_host, &c.jump_host)) < 0 ||
            (r = strdup_null(s->ssh_config_file, &c.ssh_config_file)) < 0 ||
            (r = strdup_null(s->source_file, &c.source_file)) < 0 ||
            (r = strdup_null(s->probe.connect, &c.probe.connect)) < 0 ||
            (r = strdup_null(s->probe.send, &c.probe.send)) < 0 ||
            (r = strdup_null(s->probe.expect, &c.probe.expect)) < 0 ||
            (r = strdup_null(s->on_state_change, &c.on_state_change)) < 0 ||
            (r = strv_copy_null(s->after, &c.after)) < 0 ||
            (r = strv_copy_null(s->local_forwards, &c.local_forwards)) < 0 ||
            (r = strv_copy_null(s->remote_forwards, &c.remote_forwards)) < 0 ||
            (r = strv_copy_null(s->dynamic_forwards, &c.dynamic_forwards)) < 0 ||
            (r = strv_copy_null(s->ssh_options, &c.ssh_options)) < 0 ||
            (r = strv_copy_null(s->host_keys, &c.host_keys)) < 0 ||
            (r = strv_copy_null(s->jump_host_keys, &c.jump_host_keys)) < 0 ||
            (r = tunnel_alts_copy(&s->alts, &c.alts)) < 0 ||
            (r = strdup_null(s->ssh.hostname, &c.ssh.hostname)) < 0 ||
            (r = strv_copy_null(s->ssh.local_forwards, &c.ssh.local_forwards)) < 0 ||
            (r = strv_copy_null(s->ssh.remote_forwards, &c.ssh.remote_forwards)) < 0 ||
            (r = strv_copy_null(s->ssh.dynamic_forwards, &c.ssh.dynamic_forwards)) < 0) {
                tunnel_spec_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

/* What ssh is started with, but for the tunnel's name and its forwards: the connection. */
bool tunnel_spec_same_ssh(const struct tunnel_spec *a, const struct tunnel_spec *b)
{
        return strcmp_null(a->host, b->host) == 0 &&
               strcmp_null(a->user, b->user) == 0 &&
               a->port == b->port &&
               strcmp_null(a->identity_file, b->identity_file) == 0 &&
               strcmp_null(a->jump_host, b->jump_host) == 0 &&
               strcmp_null(a->ssh_config_file, b->ssh_config_file) == 0 &&
               strv_equal(a->ssh_options, b->ssh_options) &&
               /* the known_hosts file is part of what ssh is started with */
               strv_equal(a->host_keys, b->host_keys) &&
               strv_equal(a->jump_host_keys, b->jump_host_keys) &&
               a->server_alive_interval == b->server_alive_interval &&
               a->server_alive_count_max == b->server_alive_count_max &&
               a->connect_timeout == b->connect_timeout &&
               /* the alternatives are destinations of the same connection (conn_alt.c) */
               tunnel_alts_equal(&a->alts, &b->alts) &&
               a->ssh.viewed == b->ssh.viewed &&
               strcmp_null(a->ssh.hostname, b->ssh.hostname) == 0 &&
               a->ssh.port == b->ssh.port;
}

/* How a connection is supervised: one backoff, one deadline, one lifetime for it. */
bool tunnel_spec_same_supervision(const struct tunnel_spec *a, const struct tunnel_spec *b)
{
        return a->sup.start_timeout == b->sup.start_timeout &&
               a->sup.gatetime == b->sup.gatetime &&
               a->sup.fail_fast == b->sup.fail_fast &&
               a->sup.restart == b->sup.restart &&
               a->sup.restart_delay == b->sup.restart_delay &&
               a->sup.restart_delay_max == b->sup.restart_delay_max &&
               a->sup.max_starts == b->sup.max_starts &&
               a->sup.max_lifetime == b->sup.max_lifetime &&
               a->sup.max_lifetime_action == b->sup.max_lifetime_action &&
               a->sup.drain_timeout == b->sup.drain_timeout &&
               a->sup.dead_path_timeout == b->sup.dead_path_timeout &&
               a->sup.flap_threshold == b->sup.flap_threshold &&
               a->sup.flap_window == b->sup.flap_window;
}

/* What the tunnel itself is: its name, whether it runs, its forwards, its probe, hooks
 * and ordering. */
bool tunnel_spec_same_tunnel(const struct tunnel_spec *a, const struct tunnel_spec *b)
{
        return strcmp_null(a->name, b->name) == 0 &&
               a->enabled == b->enabled &&
               a->share_connection == b->share_connection &&
               strv_equal(a->local_forwards, b->local_forwards) &&
               strv_equal(a->remote_forwards, b->remote_forwards) &&
               strv_equal(a->dynamic_forwards, b->dynamic_forwards) &&
               strv_equal(a->ssh.local_forwards, b->ssh.local_forwards) &&
               strv_equal(a->ssh.remote_forwards, b->ssh.remote_forwards) &&
               strv_equal(a->ssh.dynamic_forwards, b->ssh.dynamic_forwards) &&
               a->ssh.gateway_ports == b->ssh.gateway_ports &&
               strcmp_null(a->probe.connect, b->probe.connect) == 0 &&
               a->probe.interval == b->probe.interval &&
               a->probe.timeout == b->probe.timeout &&
               a->probe.failures == b->probe.failures &&
               strcmp_null(a->probe.send, b->probe.send) == 0 &&
               strcmp_null(a->probe.expect, b->probe.expect) == 0 &&
               strv_equal(a->after, b->after) &&
               a->required == b->required &&
               strcmp_null(a->on_state_change, b->on_state_change) == 0;
}

bool tunnel_spec_shares_connection(const struct tunnel_spec *a, const struct tunnel_spec *b)
{
        return a->share_connection && b->share_connection && tunnel_spec_same_ssh(a, b) &&
               tunnel_spec_same_supervision(a, b);
}

char *const *tunnel_spec_local_forwards(const struct tunnel_spec *s)
{
        return s->ssh.viewed ? s->ssh.local_forwards : s->local_forwards;
}

char *const *tunnel_spec_remote_forwards(const struct tunnel_spec *s)
{
        return s->ssh.viewed ? s->ssh.remote_forwards : s->remote_forwards;
}

char *const *tunnel_spec_dynamic_forwards(const struct tunnel_spec *s)
{
        return s->ssh.viewed ? s->ssh.dynamic_forwards : s->dynamic_forwards;
}

bool tunnel_spec_equal(const struct tunnel_spec *a, const struct tunnel_spec *b)
{
        return tunnel_spec_same_ssh(a, b) && tunnel_spec_same_supervision(a, b) && tunnel_spec_same_tunnel(a, b);
}

const char *const restart_names[_RESTART_MAX] = {
        [RESTART_ALWAYS] = "always", [RESTART_ON_FAILURE] = "on-failure", [RESTART_NEVER] = "never",
};
const char *const lifetime_action_names[_LIFETIME_MAX] = {
        [LIFETIME_RESTART] = "restart", [LIFETIME_STOP] = "stop",
};
const char *const log_target_names[_LOG_TARGET_MAX] = {
        [LOG_TARGET_AUTO] = "auto", [LOG_TARGET_JOURNAL] = "journal", [LOG_TARGET_STDERR] = "stderr",
};
const char *const log_level_names[LOG_DEBUG + 1] = {
        [LOG_ERR] = "err", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};
const char *const ready_names[_READY_MAX] = {
        [READY_STARTED] = "started", [READY_ALL_UP] = "all-up",
};

const char *restart_policy_to_string(enum restart_policy p)
{
        return p >= 0 && p < (int)ELEMENTSOF(restart_names) ? restart_names[p] : "?";
}

const char *lifetime_action_to_string(enum lifetime_action a)
{
        return a >= 0 && a < (int)ELEMENTSOF(lifetime_action_names) ? lifetime_action_names[a] : "?";
}

struct config *config_free(struct config *c)
{
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_tunnels; i++)
                tunnel_spec_done(&c->tunnels[i]);
        free(c->tunnels);
        free(c->path);
        free(c->ssh);
        free(c->control_socket);
        free(c->control_group);
        free(c->include_dir);
        free(c->metrics_file);
        strv_free(c->warnings);
        config_views_clear(&c->ssh_views);
        free(c);
        return NULL;
}

void config_views_clear(struct config_views *v)
{
        for (size_t i = 0; v->v && i < v->n; i++) {
                free(v->v[i].key);
                free(v->v[i].hostname);
                strv_free(v->v[i].local_forwards);
                strv_free(v->v[i].remote_forwards);
                strv_free(v->v[i].dynamic_forwards);
        }
        free(v->v);
        *v = (struct config_views){ 0 };
}

size_t config_enabled_count(const struct config *c)
{
        size_t n = 0;

        for (size_t i = 0; i < c->n_tunnels; i++)
                n += c->tunnels[i].enabled;
        return n;
}

void config_errors_clear(struct config_errors *e)
{
        strv_free(e->lines);
        e->lines = NULL;
        e->n = 0;
}

