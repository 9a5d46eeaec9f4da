/* SPDX-License-Identifier: MIT */
#include "config.h"
#include "ssh_argv.h"
#include "test.h"

static char *argv_line(const char *conf)
{
        struct config_errors errs = {0};
        _cleanup_config_free_ struct config *c = NULL;
        _cleanup_strv_free_ char **argv = NULL;
        char *line = NULL;

        if (config_load_string(conf, "t.conf", &c, &errs) < 0) {
                for (size_t i = 0; i < errs.n; i++)
                        printf("#   %s\n", errs.lines[i]);
                config_errors_clear(&errs);
                return NULL;
        }
        if (ssh_argv_build(&c->tunnels[0], c->ssh, NULL, NULL, "/run/tunneld/control.d/a.mux0", &argv) < 0 ||
            shell_quote_argv(argv, &line) < 0)
                return NULL;
        return line;
}

#define MASTER "-o ControlMaster=yes -o ControlPath=/run/tunneld/control.d/a.mux0 -o ControlPersist=no " \
        "-o ClearAllForwardings=yes -o LogLevel=VERBOSE " \
        "-o 'LogVerbose=*:kex_exchange_identification():*,*:ssh_proxy_connect():*,*:ssh_packet_read_poll_seqnr():*'"

static void test_minimal(void)
{
        _cleanup_free_ char *l = argv_line("tunnels = ( { name = \"a\"; host = \"example.org\"; } );");

        test_assert_streq(l, "ssh -N -T -o BatchMode=yes -o ExitOnForwardFailure=no -o ServerAliveInterval=30 "
                             "-o ServerAliveCountMax=3 -o ConnectTimeout=15 " MASTER " -- example.org");
}

/* The seed article's MySQL tunnel: port 1022, own key, 5000:localhost:3306 (opened over
 * the control socket: no forward on the command line). */
static void test_seed_mysql(void)
{
        _cleanup_free_ char *l = argv_line(
                "ssh = \"/usr/bin/ssh\";\n"
                "tunnels = ( { name = \"cli-mysql-tunnel\"; host = \"everythingcli.org\"; user = \"cytopia\";\n"
                "  port = 1022; identity_file = \"/etc/tunneld/keys/id_rsa-cytopia\";\n"
                "  local_forwards = ( \"5000:localhost:3306\" ); } );");

        test_assert_streq(l, "/usr/bin/ssh -N -T -o BatchMode=yes -o ExitOnForwardFailure=no -o ServerAliveInterval=30 "
                             "-o ServerAliveCountMax=3 -o ConnectTimeout=15 " MASTER " -p 1022 -l cytopia "
                             "-i /etc/tunneld/keys/id_rsa-cytopia -- everythingcli.org");
}

static void test_everything(void)
{
        _cleanup_free_ char *l = argv_line(
                "defaults = { server_alive_interval = 5; server_alive_count_max = 2; connect_timeout = 7;\n"
                "  exit_on_forward_failure = false; ssh_config_file = \"/etc/tunneld/ssh_config\"; };\n"
                "tunnels = ( { name = \"b\"; host = \"10.0.0.1\"; user = \"u\"; jump_host = \"bastion@jump:2222\";\n"
                "  local_forwards = ( \"5000:db:3306\", \"127.0.0.1:5001:db:3307\" );\n"
                "  remote_forwards = [ \"8080:localhost:80\" ]; dynamic_forwards = \"1080\";\n"
                "  ssh_options = ( \"ProxyCommand=ssh -W %h:%p gw\", \"Compression=yes\" ); } );");

        test_assert_streq(l, "ssh -N -T -F /etc/tunneld/ssh_config -o BatchMode=yes -o ExitOnForwardFailure=no "
                             "-o ServerAliveInterval=5 -o ServerAliveCountMax=2 -o ConnectTimeout=7 " MASTER
                             " -l u -J bastion@jump:2222 -o 'ProxyCommand=ssh -W %h:%p gw' -o Compression=yes -- 10.0.0.1");
}

/* What ssh -G is asked: the tunnel's options and forwards as ssh reads them, none of the
 * master's (ClearAllForwardings would hide an ssh_config_file's forwards). */
static void test_view(void)
{
        struct config_errors errs = {0};
        _cleanup_config_free_ struct config *c = NULL;
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *line = NULL;

        test_assert(config_load_string("tunnels = ( { name = \"a\"; host = \"h\"; port = 2222;\n"
                                       "  local_forwards = ( \"5000:db:3306\" ); remote_forwards = ( \"8080:x:80\" ); } );",
                                       "t.conf", &c, &errs) == 0);
        test_assert(ssh_argv_build_view(&c->tunnels[0], "ssh", &argv) == 0 && shell_quote_argv(argv, &line) == 0);
        test_assert_streq(line, "ssh -N -T -o BatchMode=yes -o ServerAliveInterval=30 -o ServerAliveCountMax=3 "
                                "-o ConnectTimeout=15 -p 2222 -L 5000:db:3306 -R 8080:x:80 -- h");
}

TEST_MAIN(TEST(test_minimal), TEST(test_seed_mysql), TEST(test_everything), TEST(test_view))
