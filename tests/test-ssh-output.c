/* SPDX-License-Identifier: MIT */
#include "ssh_output.h"
#include "test.h"

/* Lines as OpenSSH 9.2 prints them (seen on Debian 12). */
static void test_classes(void)
{
        static const struct {
                const char *line;
                enum ssh_line_kind kind;
                enum failure_class class;
        } cases[] = {
                { "Authenticated to 127.0.0.1 ([127.0.0.1]:22222) using \"publickey\".", SSH_LINE_AUTHENTICATED, FAILURE_NONE },
                { "debug1: remote forward success for: listen 23334, connect 127.0.0.1:23400", SSH_LINE_REMOTE_FORWARD_OK, FAILURE_NONE },
                { "debug1: pledge: network", SSH_LINE_DEBUG, FAILURE_NONE },
                { "debug1: Entering interactive session.", SSH_LINE_SESSION, FAILURE_NONE },
                { "Allocated port 34433 for remote forward to 127.0.0.1:23400", SSH_LINE_ALLOCATED, FAILURE_NONE },
                { "debug3: whatever Connection refused", SSH_LINE_DEBUG, FAILURE_NONE },
                { "root@127.0.0.1: Permission denied (publickey).", SSH_LINE_FAILURE, FAILURE_AUTH },
                { "Host key verification failed.", SSH_LINE_FAILURE, FAILURE_HOST_KEY },
                { "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @", SSH_LINE_FAILURE, FAILURE_HOST_KEY },
                { "ssh: Could not resolve hostname nosuch.invalid: Name or service not known", SSH_LINE_FAILURE, FAILURE_DNS },
                { "ssh: connect to host 127.0.0.1 port 1: Connection refused", SSH_LINE_FAILURE, FAILURE_REFUSED },
                { "ssh: connect to host 198.18.1.2 port 22: No route to host", SSH_LINE_FAILURE, FAILURE_UNREACHABLE },
                { "ssh: connect to host 198.18.1.2 port 22: Network is unreachable", SSH_LINE_FAILURE, FAILURE_UNREACHABLE },
                { "ssh: connect to host 198.18.1.2 port 22: Connection timed out", SSH_LINE_FAILURE, FAILURE_TIMEOUT },
                { "Timeout, server 198.18.1.2 not responding.", SSH_LINE_FAILURE, FAILURE_TIMEOUT },
                { "kex_exchange_identification: Connection closed by remote host", SSH_LINE_FAILURE, FAILURE_CLOSED },
                { "kex_exchange_identification: read: Connection reset by peer", SSH_LINE_FAILURE, FAILURE_CLOSED },
                { "Connection to 127.0.0.1 closed by remote host.", SSH_LINE_FAILURE, FAILURE_CLOSED },
                { "client_loop: send disconnect: Broken pipe", SSH_LINE_FAILURE, FAILURE_TIMEOUT },
                { "bind [127.0.0.1]:23333: Address already in use", SSH_LINE_FAILURE, FAILURE_LOCAL_FORWARD },
                { "channel_setup_fwd_listener_tcpip: cannot listen to port: 23333", SSH_LINE_FAILURE, FAILURE_LOCAL_FORWARD },
                { "Could not request local forwarding.", SSH_LINE_FAILURE, FAILURE_LOCAL_FORWARD },
                { "Error: remote port forwarding failed for listen port 8080", SSH_LINE_FAILURE, FAILURE_REMOTE_FORWARD },
                { "tunneld: cannot execute /nonexistent/ssh: No such file or directory", SSH_LINE_FAILURE, FAILURE_EXEC },
                { "channel 2: open failed: connect failed: Connection refused", SSH_LINE_PLAIN, FAILURE_NONE },
                { "Transferred: sent 3412, received 3164 bytes, in 3.8 seconds", SSH_LINE_DEBUG, FAILURE_NONE },
                { "mux_master_process_open_fwd: requested local forward 127.0.0.1:26643 -> 127.0.0.1:29521 failed", SSH_LINE_DEBUG, FAILURE_NONE },
                { "debug1: kex.c:kex_exchange_identification():1456 (pid=9066): Remote protocol version 2.0, remote software version OpenSSH_9.2p1", SSH_LINE_BANNER, FAILURE_NONE },
                { "debug1: packet.c:ssh_packet_read_poll_seqnr():1782 (pid=9066): Remote: port forwarding refused", SSH_LINE_FORWARD_REFUSED_BY_POLICY, FAILURE_NONE },
                { "Connection to 127.0.0.1 port 2222 timed out", SSH_LINE_FAILURE, FAILURE_TIMEOUT },
                { "Connection timed out during banner exchange", SSH_LINE_FAILURE, FAILURE_TIMEOUT },
                { "command-line: line 0: Bad configuration option: serveraliveintervall", SSH_LINE_FAILURE, FAILURE_CONFIG },
                { "Bad owner or permissions on /etc/tunneld/ssh_config.d/x.conf", SSH_LINE_FAILURE, FAILURE_CONFIG },
                { "/etc/tunneld/ssh_config: terminating, 1 bad configuration options", SSH_LINE_FAILURE, FAILURE_CONFIG },
                { "debug1: Executing proxy command: exec ssh -l root -p 22 -F /run/x -W '[10.0.0.2]:22' bastion", SSH_LINE_PROXY, FAILURE_NONE },
                { "debug1: Remote protocol version 2.0, remote software version OpenSSH_9.2p1 Debian-2+deb12u3", SSH_LINE_BANNER, FAILURE_NONE },
                { "debug1: Remote: port forwarding refused", SSH_LINE_FORWARD_REFUSED_BY_POLICY, FAILURE_NONE },
                { "debug1: Remote: Server has disabled port forwarding.", SSH_LINE_FORWARD_REFUSED_BY_POLICY, FAILURE_NONE },
                { "channel 3: open failed: administratively prohibited: open failed", SSH_LINE_PROHIBITED, FAILURE_NONE },
                { "Authenticated to 10.0.0.2 (via proxy) using \"publickey\".", SSH_LINE_AUTHENTICATED, FAILURE_NONE },
                { "Warning: Permanently added '[127.0.0.1]:22222' (ED25519) to the list of known hosts.", SSH_LINE_PLAIN, FAILURE_NONE },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                enum failure_class c;
                enum ssh_line_kind k = ssh_line_parse(cases[i].line, &c);

                if (k != cases[i].kind || c != cases[i].class)
                        printf("#   line: %s -> kind %d class %s\n", cases[i].line, k, failure_class_to_string(c));
                test_assert(k == cases[i].kind);
                test_assert(c == cases[i].class);
        }
}

/* Lines of OpenSSH 10 (sshconnect.c, kex.c of 10.0 to 10.5) and of ssh talking to
 * Dropbear 2022.83, as tunneld reads them at LogLevel VERBOSE (multiplex) or DEBUG1. */
static void test_openssh10_and_dropbear(void)
{
        static const struct {
                const char *line;
                enum ssh_line_kind kind;
                enum failure_class class;
        } cases[] = {
                /* 10.1 and later, for every connection without a post-quantum key exchange
                 * (a Dropbear 2022.83 server, an OpenSSH before 9.0): advice, not a failure */
                { "** WARNING: connection is not using a post-quantum key exchange algorithm.", SSH_LINE_PLAIN, FAILURE_NONE },
                { "** This session may be vulnerable to \"store now, decrypt later\" attacks.", SSH_LINE_PLAIN, FAILURE_NONE },
                { "** The server may need to be upgraded. See https://openssh.com/pq.html", SSH_LINE_PLAIN, FAILURE_NONE },
                /* an advice line is never a failure, whatever a later version says in it */
                { "** WARNING: this advice names a Connection refused and a Permission denied (x)", SSH_LINE_PLAIN, FAILURE_NONE },
                { "Warning: this server does not support rekeying.", SSH_LINE_PLAIN, FAILURE_NONE },
                /* banners: 10.x (two digits) and Dropbear's own */
                { "debug1: Remote protocol version 2.0, remote software version OpenSSH_10.0p2 Debian-7+deb13u4", SSH_LINE_BANNER, FAILURE_NONE },
                { "debug1: Remote protocol version 2.0, remote software version OpenSSH_10.3", SSH_LINE_BANNER, FAILURE_NONE },
                { "debug1: Remote protocol version 2.0, remote software version dropbear_2022.83", SSH_LINE_BANNER, FAILURE_NONE },
                { "debug1: Local version string SSH-2.0-OpenSSH_10.0p2 Debian-7+deb13u4", SSH_LINE_DEBUG, FAILURE_NONE },
                { "Authenticated to 127.0.0.1 ([127.0.0.1]:40022) using \"publickey\".", SSH_LINE_AUTHENTICATED, FAILURE_NONE },
                /* 10.x at VERBOSE: kex.c's verbose_f, with its function's name */
                { "kex_exchange_identification: Connection closed by remote host", SSH_LINE_FAILURE, FAILURE_CLOSED },
                /* a Dropbear server that offers passwords too (its default) */
                { "root@127.0.0.1: Permission denied (publickey,password).", SSH_LINE_FAILURE, FAILURE_AUTH },
                /* Dropbear has no streamlocal forwarding: a -R Unix socket is refused, a -L to
                 * one fails per connection */
                { "Error: remote port forwarding failed for listen path /run/app.sock", SSH_LINE_FAILURE, FAILURE_REMOTE_FORWARD },
                { "channel 1: open failed: unknown channel type: ", SSH_LINE_PLAIN, FAILURE_NONE },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                enum failure_class c;
                enum ssh_line_kind k = ssh_line_parse(cases[i].line, &c);

                if (k != cases[i].kind || c != cases[i].class)
                        printf("#   line: %s -> kind %d class %s\n", cases[i].line, k, failure_class_to_string(c));
                test_assert(k == cases[i].kind);
                test_assert(c == cases[i].class);
        }
}

static void test_names(void)
{
        test_assert_streq(failure_class_to_string(FAILURE_HOST_KEY), "host-key");
        test_assert_streq(failure_class_to_string(FAILURE_REMOTE_FORWARD), "remote-forward");
        test_assert_streq(failure_class_to_string(_FAILURE_MAX), "unknown");
        for (int c = FAILURE_AUTH; c < _FAILURE_MAX; c++)
                test_assert(failure_class_hint(c) != NULL);
        test_assert(failure_class_hint(FAILURE_NONE) == NULL);
}

/* "closed" only says the connection went away: a cause seen before it is the answer. */
static void test_generic(void)
{
        test_assert(failure_class_is_generic(FAILURE_CLOSED));
        test_assert(failure_class_is_generic(FAILURE_UNKNOWN));
        for (int c = FAILURE_AUTH; c < _FAILURE_MAX; c++)
                if (c != FAILURE_CLOSED && c != FAILURE_UNKNOWN)
                        test_assert(!failure_class_is_generic(c));
}

TEST_MAIN(TEST(test_classes), TEST(test_openssh10_and_dropbear), TEST(test_names), TEST(test_generic))
