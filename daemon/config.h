/* SPDX-License-Identifier: MIT */
#pragma once

/* config: the file → plain validated specs. Knows nothing of the loop; ssh -G is asked
 * what ssh makes of the tunnels (config_ssh.c: a child per ssh configuration, in the
 * loading child of reload_job.c when the daemon loads). */

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "log.h"

enum restart_policy {
        RESTART_ALWAYS,
        RESTART_ON_FAILURE,
        RESTART_NEVER,
        _RESTART_MAX,
};

enum lifetime_action {
        LIFETIME_RESTART,               /* restart ssh when max_lifetime is reached */
        LIFETIME_STOP,                  /* stop the tunnel (it stays stopped until started) */
        _LIFETIME_MAX,
};

enum ready_mode {
        READY_STARTED,                  /* READY=1 once every enabled tunnel's first start is launched */
        READY_ALL_UP,                   /* …once every enabled tunnel is up or has failed a start */
        _READY_MAX,
};

/* An active check through a forward: connect (optionally send, expect a reply prefix). */
struct probe_spec {
        char *connect;                  /* "127.0.0.1:5000", "[::1]:5000", "localhost:5000"; NULL = none */
        double interval;
        double timeout;
        int failures;                   /* consecutive misses before ssh is restarted */
        char *send;
        char *expect;
};

/* One tunnel, as configured. Immutable once loaded; compared by value on reload. */
/* What ssh makes of a tunnel with an ssh_config_file (viewed false: ssh was not asked).
 * ssh -G of its ssh configuration gives the real host and port; the forwards are its own
 * followed by those its ssh_config_file adds (ssh -G's, without the ones it already has,
 * as ssh drops a repeated forward). Part of the command line's equality: an edited
 * ssh_config_file that moves a forward changes the tunnel. */
struct tunnel_spec_ssh {
        bool viewed;
        char *hostname;
        int port;
        char **local_forwards;
        char **remote_forwards;
        char **dynamic_forwards;
        bool gateway_ports;
};

/* How a connection is supervised (policy.h judges its runs by it): one backoff, one
 * deadline, one lifetime per connection. */
struct supervision {
        double start_timeout;           /* tunneld's own deadline for STARTING; 0 = automatic */
        double gatetime;
        bool fail_fast;
        enum restart_policy restart;
        double restart_delay;
        double restart_delay_max;
        int max_starts;
        double max_lifetime;            /* 0 = unlimited */
        enum lifetime_action max_lifetime_action;
        double drain_timeout;           /* a replaced ssh keeps its connections this long at most */
        double dead_path_timeout;       /* data unacknowledged this long: the path is dead (0: ssh's ServerAlive only) */
        int flap_threshold;             /* this many failures within flap_window: flapping */
        double flap_window;
};

/* One alternative for a tunnel's destination (alternatives = ( { host = "…"; … }, … )):
 * the settings it names replace the tunnel's, the rest are the tunnel's (config_alts.c). */
struct tunnel_alt {
        char *host;                     /* NULL: the tunnel's */
        char *user;
        int port;                       /* 0: the tunnel's */
        char *identity_file;
        char *jump_host;
        char **host_keys;
        char **jump_host_keys;
        int source_line;                /* its group's, for messages (not part of equality) */
};
struct tunnel_alts {
        struct tunnel_alt *v;
        size_t n;
};

struct tunnel_spec {
        char *name;
        char *host;
        char *user;
        int port;                       /* 0 = ssh's default */
        char *identity_file;
        char *jump_host;
        char *ssh_config_file;
        bool enabled;

        char **local_forwards;          /* NULL-terminated, ssh's own syntax */
        char **remote_forwards;
        char **dynamic_forwards;
        char **ssh_options;             /* "Key=Value" */
        char **host_keys;               /* "KEYTYPE BASE64": the destination's pinned keys (host_key.h) */
        char **jump_host_keys;          /* "HOST[:PORT] KEYTYPE BASE64": the jump hosts' */

        int server_alive_interval;
        int server_alive_count_max;
        bool share_connection;          /* one ssh for the tunnels of the same connection settings */
        int connect_timeout;
        struct tunnel_alts alts;        /* the destination's alternatives, in order after the tunnel's own */

        struct supervision sup;
        struct probe_spec probe;
        char **after;                   /* start only once these tunnels are up */
        bool required;                  /* ready = "all-up" waits for it */
        char *on_state_change;          /* program run on up / failed / flapping */

        /* What ssh makes of it, for a tunnel with an ssh_config_file: derived, not configured. */
        struct tunnel_spec_ssh ssh;

        /* where it was defined, for messages; not part of equality */
        char *source_file;
        int source_line;
};

/* How a configuration is loaded. Zero is the default: files checked like sshd's
 * StrictModes, the file's control_socket, ssh not asked. */
enum config_ask_ssh {
        CONFIG_SSH_SKIP,                /* do not run ssh -G */
        CONFIG_SSH_STRICT,              /* tunneld -t: ssh must judge every option set, or it is an error */
        CONFIG_SSH_LENIENT,             /* the daemon: ssh's complaints are errors; an ssh that does not run is not */
};
/* What ssh -G said of one ssh configuration: everything on a tunnel's ssh command line but
 * its forwards (the program, -F ssh_config_file, host, user, port, identity, jump host,
 * ssh_options…), written as key. Every tunnel with that key and an ssh_config_file takes it
 * (its own forwards added). A load keeps them (config.ssh_views), and a reload's child
 * process sends them to the daemon, which takes them as they are (reload_job.h). */
/* A file as it was when ssh read it: ssh's answer stands while the file is the same. */
struct file_stamp {
        uint64_t dev, ino, size;
        int64_t mtime_ns;
};
struct config_view {
        char *key;
        char *hostname;
        int port;
        char **local_forwards, **remote_forwards, **dynamic_forwards;   /* the file's own */
        bool gateway_ports;
        /* A reload asks ssh again only what may have changed: a view whose ssh_config_file
         * has no Include, Match exec or Match localnetwork (reusable) stands while that file
         * and the ssh program are the ones stamped when ssh was asked. */
        bool reusable;
        struct file_stamp file, program;
};
struct config_views {
        struct config_view *v;          /* sorted by key */
        size_t n;
};
void config_views_clear(struct config_views *v);

/* A load that asks ssh -G must be done within this (every ssh -G of it, and the child
 * process a reload loads in), or it fails as a whole: the verdict never depends on how
 * many ssh -G happened to finish. Generous: ssh -G runs once per distinct ssh
 * configuration, about 10 ms each, 8 at once. */
#define CONFIG_LOAD_TIMEOUT 60.0

struct config_load_options {
        bool allow_insecure;            /* tunneld --allow-insecure-config */
        const char *control_socket;     /* tunneld -s: replaces the file's control_socket (NULL: keep it) */
        enum config_ask_ssh ask_ssh;
        bool keyscan;                   /* tunneld --keyscan: a jump host may lack jump_host_keys (they are being fetched) */
        const struct config_views *views;       /* with CONFIG_SSH_SKIP: ssh's answers, from another load */
        const struct config_views *known;       /* a reload: the running configuration's, reused where they stand */
        double load_timeout;            /* seconds; 0: CONFIG_LOAD_TIMEOUT (tests use less) */
};

struct config {
        char *path;                     /* the file that was read */
        char *ssh;                      /* ssh program: a path or a name looked up in PATH */
        double stop_timeout;            /* grace between SIGTERM and SIGKILL */
        enum log_target log_target;
        int log_level;
        char *control_socket;           /* NULL = no control socket */
        char *control_group;            /* may send state-changing commands (with root) */
        bool control_world_readable;    /* socket 0666: anyone may read status and metrics */
        enum ready_mode ready;
        double ready_timeout;           /* all-up: READY=1 anyway after this long */
        int max_parallel_starts;        /* ssh children connecting at once; 0 = no limit */
        bool watch_network;             /* retry backoff tunnels when the network changes */
        char *include_dir;              /* drop-in *.conf files; NULL = none */
        char *metrics_file;             /* Prometheus text file, rewritten on every change */
        double hook_timeout;            /* on_state_change programs are killed after this */
        struct config_load_options load_options;        /* how it was loaded: a reload loads the same way */
        uint64_t source_digest;         /* of the names and bytes of every file read: two loads saw the same */
        struct config_views ssh_views;  /* what ssh -G said, one per ssh configuration asked */

        struct tunnel_spec *tunnels;
        size_t n_tunnels;
        /* "FILE:LINE: setting: …": accepted, but worth saying (a setting that no longer does
         * anything); -t prints them, the daemon logs them at start and at each reload */
        char **warnings;
};

/* Error messages collected while loading: "FILE:LINE: setting: what is wrong". */
struct config_errors {
        char **lines;                   /* NULL-terminated */
        size_t n;
};
void config_errors_clear(struct config_errors *e);

/* Read and validate path (opts NULL: the defaults). 0 on success; -EINVAL with every
 * problem in errs; other -errno (with a line in errs too) when the file cannot be read at
 * all. With ask_ssh, ssh -G judges each distinct ssh configuration once (config_view),
 * and gives the tunnels with an ssh_config_file their effective host, port and forwards;
 * ssh -G not done within load_timeout fails the load. */
int config_load(const char *path, const struct config_load_options *opts, struct config **ret,
                struct config_errors *errs);
/* The same from a string (tests, fuzzing); name is used in messages. No drop-ins, the
 * files the tunnels name are not checked, ssh is not asked. */
int config_load_string(const char *text, const char *name, struct config **ret, struct config_errors *errs);

struct config *config_free(struct config *c);
/* A reload: warn of each global that is read only at start and changed (control_socket,
 * control_group, control_world_readable, ready): it takes effect at the next restart. */
void config_warn_fixed_globals(const struct config *old, const struct config *c);
static inline void config_freep(struct config **c) { config_free(*c); }
#define _cleanup_config_free_ __attribute__((cleanup(config_freep)))

void tunnel_spec_done(struct tunnel_spec *s);
int tunnel_spec_copy(const struct tunnel_spec *s, struct tunnel_spec *ret);
/* Every setting of a tunnel belongs to exactly one of three groups (tests/test-config.c
 * holds each setting of the table to that): what its connection's ssh is started with,
 * how the connection is supervised, and what the tunnel itself is. Equal in all three: a
 * reload leaves the tunnel alone. */
bool tunnel_spec_equal(const struct tunnel_spec *a, const struct tunnel_spec *b);
/* What ssh is started with (not the name or the forwards: tunneld opens those itself). */
bool tunnel_spec_same_ssh(const struct tunnel_spec *a, const struct tunnel_spec *b);
/* How the connection is supervised: restart policy, backoff, gatetime, deadlines, lifetime. */
bool tunnel_spec_same_supervision(const struct tunnel_spec *a, const struct tunnel_spec *b);
/* The tunnel's own: name, enabled, sharing, forwards, probe, after, required, hooks. */
bool tunnel_spec_same_tunnel(const struct tunnel_spec *a, const struct tunnel_spec *b);
/* share_connection on both, and the same ssh and supervision: one connection carries both. */
bool tunnel_spec_shares_connection(const struct tunnel_spec *a, const struct tunnel_spec *b);

/* The forwards ssh will set up: ssh -G's for a tunnel with an ssh_config_file, else the
 * configured ones. */
char *const *tunnel_spec_local_forwards(const struct tunnel_spec *s);
char *const *tunnel_spec_remote_forwards(const struct tunnel_spec *s);
char *const *tunnel_spec_dynamic_forwards(const struct tunnel_spec *s);

/* Alternatives (config_alts.c). i = 0 is the tunnel's own destination, i = 1 … n its
 * alternatives[i - 1]. The effective spec of alternative i: the tunnel's, with what the
 * alternative names instead (without alternatives of its own). 0 or -ENOMEM. */
void tunnel_alts_done(struct tunnel_alts *a);
int tunnel_alts_copy(const struct tunnel_alts *a, struct tunnel_alts *ret);
bool tunnel_alt_equal(const struct tunnel_alt *a, const struct tunnel_alt *b);
bool tunnel_alts_equal(const struct tunnel_alts *a, const struct tunnel_alts *b);
int tunnel_spec_alternative(const struct tunnel_spec *s, size_t i, struct tunnel_spec *ret);
/* Alternative i's host and port as configured (port 0: ssh's default). */
const char *tunnel_spec_alt_host(const struct tunnel_spec *s, size_t i);
int tunnel_spec_alt_port(const struct tunnel_spec *s, size_t i);

/* The i-th per-tunnel setting of the configuration's table, or NULL past the last one. */
const char *config_tunnel_setting_name(size_t i);

const char *restart_policy_to_string(enum restart_policy p);
const char *lifetime_action_to_string(enum lifetime_action a);
size_t config_enabled_count(const struct config *c);

/* Per-value validators (validate.h) and forward specs (forward.h) are re-exported for
 * the tests and tools that include only this header. */
#include "forward.h"
#include "validate.h"
