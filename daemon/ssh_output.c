/* SPDX-License-Identifier: MIT */
#include "ssh_output.h"

#include <string.h>

#include "util.h"

/* Messages of OpenSSH 9.x and 10.x (ssh.c, sshconnect.c, clientloop.c, channels.c, readconf.c). */
static const struct {
        const char *needle;
        enum failure_class class;
} patterns[] = {
        { "Permission denied (",                 FAILURE_AUTH },
        { "Too many authentication failures",    FAILURE_AUTH },
        { "Host key verification failed",        FAILURE_HOST_KEY },
        { "REMOTE HOST IDENTIFICATION HAS CHANGED", FAILURE_HOST_KEY },
        { "host key for",                        FAILURE_HOST_KEY },  /* "…host key for X has changed…" */
        { "No matching host key type found",     FAILURE_HOST_KEY },
        { "Could not resolve hostname",          FAILURE_DNS },
        { "Name or service not known",           FAILURE_DNS },
        { "Temporary failure in name resolution", FAILURE_DNS },
        { "Connection refused",                  FAILURE_REFUSED },
        { "No route to host",                    FAILURE_UNREACHABLE },
        { "Network is unreachable",              FAILURE_UNREACHABLE },
        { "Connection timed out",                FAILURE_TIMEOUT },
        { "Operation timed out",                 FAILURE_TIMEOUT },
        { "not responding",                      FAILURE_TIMEOUT },   /* "Timeout, server X not responding." */
        { " timed out",                          FAILURE_TIMEOUT },   /* "Connection to H port N timed out" (a pre-auth packet timeout) */
        { "closed by remote host",               FAILURE_CLOSED },    /* "Connection (to X) closed by remote host" */
        { "Connection reset by peer",            FAILURE_CLOSED },
        /* "client_loop: send disconnect: Broken pipe": the kernel ended the connection under
         * ssh (TCP gave up on unacknowledged data: dead_path_timeout), not the server */
        { "Broken pipe",                         FAILURE_TIMEOUT },
        { "Could not request local forwarding",  FAILURE_LOCAL_FORWARD },
        { "cannot listen to port",               FAILURE_LOCAL_FORWARD },
        { "Address already in use",              FAILURE_LOCAL_FORWARD },
        { "remote port forwarding failed",       FAILURE_REMOTE_FORWARD },
        { "cannot execute",                      FAILURE_EXEC },      /* tunneld's own line from the child */
        /* readconf.c: "command-line: line 0: Bad configuration option: x", "F line 3: …" */
        { "Bad configuration option",            FAILURE_CONFIG },
        { "Bad owner or permissions on",         FAILURE_CONFIG },
        { "Unsupported option",                  FAILURE_CONFIG },
        { "Can't open user config file",         FAILURE_CONFIG },
        { "terminating, ",                       FAILURE_CONFIG },    /* "F: terminating, 1 bad configuration options" */
        { "missing argument",                    FAILURE_CONFIG },
        { "no argument after keyword",           FAILURE_CONFIG },
};

/* LogVerbose (the lines tunneld asks ssh for at LogLevel VERBOSE) writes where ssh logged a
 * line before its text: "kex.c:kex_exchange_identification():1456 (pid=9066): Remote …". */
static const char *skip_location(const char *text)
{
        const char *p = strstr(text, "():");

        if (!p || memchr(text, ' ', (size_t)(p - text)))
                return text;
        p += 3;
        while (*p >= '0' && *p <= '9')
                p++;
        if (strncmp(p, " (pid=", 6) != 0)
                return text;
        p += 6;
        while (*p >= '0' && *p <= '9')
                p++;
        return strncmp(p, "): ", 3) == 0 ? p + 3 : text;
}

enum ssh_line_kind ssh_line_parse(const char *line, enum failure_class *ret_class)
{
        *ret_class = FAILURE_NONE;

        if (strncmp(line, "debug", 5) == 0 && line[5] >= '1' && line[5] <= '3' && line[6] == ':' && line[7] == ' ') {
                const char *text = skip_location(line + 8);

                if (strncmp(text, "remote forward success for: ", 28) == 0)
                        return SSH_LINE_REMOTE_FORWARD_OK;
                if (strcmp(text, "Entering interactive session.") == 0)
                        return SSH_LINE_SESSION;
                if (strncmp(text, "Executing proxy command: ", 25) == 0)
                        return SSH_LINE_PROXY;
                if (strncmp(text, "Remote protocol version ", 24) == 0)
                        return SSH_LINE_BANNER;
                /* what the server sent before a banner, and then closed: sshd 9.8 and later
                 * (drop_connection) for an address it penalises (PerSourcePenalties) or
                 * beyond MaxStartups */
                if (strncmp(text, "banner line ", 12) == 0 && strstr(text, ": Not allowed at this time")) {
                        *ret_class = FAILURE_PENALTY;
                        return SSH_LINE_FAILURE;
                }
                /* sshd's SSH2_MSG_DEBUG before it refuses a tcpip-forward by policy (a port
                 * held by a stale session is refused without one) */
                if (strcmp(text, "Remote: Server has disabled port forwarding.") == 0 ||
                    strcmp(text, "Remote: port forwarding refused") == 0)
                        return SSH_LINE_FORWARD_REFUSED_BY_POLICY;
                return SSH_LINE_DEBUG;
        }
        /* OpenSSH 10.1's advice for a connection without a post-quantum key exchange, three
         * "** " lines each time: never a failure, whatever words a later version puts in it */
        if (strncmp(line, "** ", 3) == 0)
                return SSH_LINE_PLAIN;
        if (strncmp(line, "Authenticated to ", 17) == 0)
                return SSH_LINE_AUTHENTICATED;
        /* VERBOSE's own noise: a mux request's echo (its reply says the same), the byte
         * counts of an ssh that ends */
        if (strncmp(line, "mux_master_", 11) == 0 || strncmp(line, "Transferred: ", 13) == 0 ||
            strncmp(line, "Bytes per second: ", 18) == 0)
                return SSH_LINE_DEBUG;
        if (strncmp(line, "Allocated port ", 15) == 0)
                return SSH_LINE_ALLOCATED;
        /* "channel 3: open failed: connect failed: Connection refused": one forwarded
         * connection's far end, not the tunnel itself (that is what a probe is for) */
        if (strncmp(line, "channel ", 8) == 0)
                return strstr(line, ": open failed: administratively prohibited") ? SSH_LINE_PROHIBITED : SSH_LINE_PLAIN;
        for (size_t i = 0; i < ELEMENTSOF(patterns); i++)
                if (strstr(line, patterns[i].needle)) {
                        *ret_class = patterns[i].class;
                        return SSH_LINE_FAILURE;
                }
        return SSH_LINE_PLAIN;
}

static const char *const failure_names[_FAILURE_MAX] = {
        [FAILURE_NONE] = "none",
        [FAILURE_AUTH] = "auth",
        [FAILURE_HOST_KEY] = "host-key",
        [FAILURE_DNS] = "dns",
        [FAILURE_REFUSED] = "refused",
        [FAILURE_UNREACHABLE] = "unreachable",
        [FAILURE_TIMEOUT] = "timeout",
        [FAILURE_CLOSED] = "closed",
        [FAILURE_LOCAL_FORWARD] = "local-forward",
        [FAILURE_REMOTE_FORWARD] = "remote-forward",
        [FAILURE_EXEC] = "exec",
        [FAILURE_KILLED] = "killed",
        [FAILURE_LOST] = "lost",
        [FAILURE_PROBE] = "probe",
        [FAILURE_CONFIG] = "config",
        [FAILURE_FORWARD_DENIED] = "forward-denied",
        [FAILURE_MUX] = "mux",
        [FAILURE_PENALTY] = "penalty",
        [FAILURE_UNKNOWN] = "unknown",
};

const char *failure_class_to_string(enum failure_class c)
{
        return c >= 0 && c < _FAILURE_MAX ? failure_names[c] : "unknown";
}

bool failure_class_is_generic(enum failure_class c)
{
        return c == FAILURE_CLOSED || c == FAILURE_UNKNOWN;
}

const char *failure_class_hint(enum failure_class c)
{
        switch (c) {
        case FAILURE_AUTH:
                return "the server refused the key: check user, identity_file and the server's authorized_keys";
        case FAILURE_HOST_KEY:
                return "the server's host key is unknown or changed: check known_hosts or host_keys (tunneld --keyscan) before trusting it";
        case FAILURE_DNS:
                return "the host name does not resolve: check host and the resolver";
        case FAILURE_REFUSED:
                return "nothing listens on the server's ssh port: check host, port and sshd";
        case FAILURE_UNREACHABLE:
                return "no route to the server: the network is down or the address is wrong";
        case FAILURE_TIMEOUT:
                return "the server did not answer in time: a network outage, a firewall, or a server that hangs";
        case FAILURE_CLOSED:
                return "the server closed the connection: sshd restarted or ended the session, or turned this "
                       "client away (MaxStartups, a firewall)";
        case FAILURE_LOCAL_FORWARD:
                return "a local forward's listen address is taken: another process (or an old ssh) holds the port";
        case FAILURE_REMOTE_FORWARD:
                return "the server refused a remote forward: its port is taken, often by a stale session "
                       "(a -R Unix socket stays behind unless the server's sshd has StreamLocalBindUnlink yes)";
        case FAILURE_EXEC:
                return "ssh could not be started: check the ssh setting and PATH, and the error logged before";
        case FAILURE_KILLED:
                return "ssh was killed by a signal tunneld did not send";
        case FAILURE_LOST:
                return "ssh exited 0 without being asked to (someone sent it SIGTERM, or the server ended the session)";
        case FAILURE_PROBE:
                return "ssh was alive but the probe could not pass traffic through the tunnel";
        case FAILURE_CONFIG:
                return "ssh refused its configuration: check ssh_options and ssh_config_file (and the "
                       "permissions of every file it includes)";
        case FAILURE_FORWARD_DENIED:
                return "the server's policy refuses a remote forward (AllowTcpForwarding, PermitListen, "
                       "or the key's options in authorized_keys): retrying cannot help until that changes";
        case FAILURE_MUX:
                return "ssh's control socket failed: it closed, or sent what is not "
                       "OpenSSH's mux protocol; see ssh's messages above";
        case FAILURE_PENALTY:
                return "the server is refusing this address for a while: too many failed connections from "
                       "here (sshd's PerSourcePenalties; MaxStartups looks the same): tunneld waits it out";
        case FAILURE_UNKNOWN:
                return "see ssh's messages above";
        case FAILURE_NONE:
        case _FAILURE_MAX:
                break;
        }
        return NULL;
}

const char *failure_class_hint_run(enum failure_class c, bool authenticated)
{
        if (c != FAILURE_CLOSED)
                return failure_class_hint(c);
        return authenticated ? "the server closed the connection after authentication: sshd restarted or ended "
                               "the session (an idle limit, ClientAliveInterval), or the network dropped it"
                             : "the server closed the connection before authentication: it turned this client "
                               "away (MaxStartups, a firewall), or sshd restarted";
}
