/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "test.h"

/* Load text; return the errors joined by '\n' (empty string if it loaded). */
static char *load_errors(const char *text, struct config **ret)
{
        struct config_errors errs = {0};
        struct config *c = NULL;
        struct buf b = {0};
        char *s = NULL;
        int r;

        r = config_load_string(text, "t.conf", &c, &errs);
        for (size_t i = 0; i < errs.n; i++)
                buf_printf(&b, "%s%s", i ? "\n" : "", errs.lines[i]);
        config_errors_clear(&errs);
        if (r >= 0 && ret)
                *ret = c;
        else
                config_free(c);
        if (buf_steal(&b, &s) < 0)
                return NULL;
        return s;
}

static void expect_error(const char *text, const char *expected)
{
        _cleanup_free_ char *e = load_errors(text, NULL);

        test_assert_streq(e, expected);
}

static void test_good_full(void)
{
        struct config *c = NULL;
        _cleanup_free_ char *e = load_errors(
                "ssh = \"/usr/bin/ssh\";\n"
                "stop_timeout = 2.5;\n"
                "log_level = \"debug\";\n"
                "defaults = {\n"
                "  user = \"tunnel\"; gatetime = 0; restart = \"on-failure\"; restart_delay = 0.5;\n"
                "  restart_delay_max = 30; max_starts = 10; fail_fast = true;\n"
                "};\n"
                "tunnels = (\n"
                "  { name = \"db\"; host = \"db.example.org\"; port = 1022;\n"
                "    local_forwards = ( \"5000:localhost:3306\", \"[::1]:5001:db:3306\", \"/run/db.sock:/var/run/mysqld.sock\" ); },\n"
                "  { name = \"web.2\"; host = \"2001:db8::1\"; user = \"other\"; gatetime = 12;\n"
                "    remote_forwards = ( \"0:localhost:80\", \"8080\", \"*:8081:localhost:80\" ); enabled = false; },\n"
                "  { name = \"socks_1\"; host = \"h\"; dynamic_forwards = [ \"1080\", \"127.0.0.1:1081\" ];\n"
                "    jump_host = \"u@jump1:2222,[2001:db8::2]:22\"; restart = \"never\"; }\n"
                ");\n", &c);

        test_assert_streq(e, "");
        if (!c)
                return;
        test_assert_streq(c->ssh, "/usr/bin/ssh");
        test_assert(c->stop_timeout == 2.5);
        test_assert(c->log_level == LOG_DEBUG);
        test_assert(c->n_tunnels == 3);
        test_assert(config_enabled_count(c) == 2);
        test_assert_streq(c->tunnels[0].name, "db");
        test_assert_streq(c->tunnels[0].user, "tunnel");          /* from defaults */
        test_assert(c->tunnels[0].port == 1022);
        test_assert(c->tunnels[0].sup.gatetime == 0);
        test_assert(c->tunnels[0].sup.restart == RESTART_ON_FAILURE);
        test_assert(c->tunnels[0].sup.restart_delay == 0.5);
        test_assert(c->tunnels[0].sup.max_starts == 10);
        test_assert(c->tunnels[0].sup.fail_fast);
        test_assert(strv_length(c->tunnels[0].local_forwards) == 3);
        test_assert(c->tunnels[0].source_line == 9);
        test_assert_streq(c->tunnels[1].user, "other");           /* overrides defaults */
        test_assert(c->tunnels[1].sup.gatetime == 12);
        test_assert(!c->tunnels[1].enabled);
        test_assert(c->tunnels[2].sup.restart == RESTART_NEVER);
        test_assert(strv_length(c->tunnels[2].dynamic_forwards) == 2);
        /* built-in defaults */
        test_assert(c->tunnels[2].server_alive_interval == 30);
        test_assert(c->tunnels[2].server_alive_count_max == 3);
        test_assert(c->tunnels[2].connect_timeout == 15);
        test_assert(c->tunnels[2].sup.restart_delay_max == 30);
        config_free(c);
}

static void test_defaults_builtin(void)
{
        struct config *c = NULL;
        _cleanup_free_ char *e = load_errors("tunnels = ( { name = \"a\"; host = \"h\"; } );", &c);

        test_assert_streq(e, "");
        if (!c)
                return;
        test_assert_streq(c->ssh, "ssh");
        test_assert(c->stop_timeout == 5);
        test_assert(c->tunnels[0].sup.gatetime == 30);
        test_assert(!c->tunnels[0].sup.fail_fast);
        test_assert(c->tunnels[0].sup.restart == RESTART_ALWAYS);
        test_assert(c->tunnels[0].sup.restart_delay == 1);
        test_assert(c->tunnels[0].sup.restart_delay_max == 60);
        test_assert(c->tunnels[0].sup.max_starts == 0);
        test_assert(c->tunnels[0].enabled);
        test_assert(c->tunnels[0].port == 0);
        config_free(c);
}

static void test_empty(void)
{
        struct config *c = NULL;
        _cleanup_free_ char *e = load_errors("", &c);

        test_assert_streq(e, "");
        test_assert(c && c->n_tunnels == 0);
        config_free(c);
}

static void test_syntax_error(void)
{
        expect_error("tunnels = (\n  { name = ; host = \"h\"; }\n);\n",
                     "t.conf:2: syntax error");
}

static void test_unknown_and_types(void)
{
        expect_error("tunnels = ( { name = \"a\"; host = \"h\";\n  hostname = \"x\"; } );",
                     "t.conf:2: a.hostname: unknown setting");
        expect_error("colour = true;", "t.conf:1: colour: unknown setting");
        expect_error("gatetime = 3;", "t.conf:1: gatetime: is a tunnel setting: put it in a tunnel or in defaults");
        expect_error("defaults = { name = \"x\"; };", "t.conf:1: defaults.name: a name belongs to a tunnel, not to defaults");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; port = \"22\"; } );",
                     "t.conf:1: a.port: must be a number, not a string");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; port = 22.5; } );",
                     "t.conf:1: a.port: must be a whole number");
        expect_error("tunnels = ( { name = \"a\"; host = 5; } );",
                     "t.conf:1: a.host: must be a string, not an integer");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; enabled = 1; } );",
                     "t.conf:1: a.enabled: must be true or false, not an integer");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; local_forwards = 5000; } );",
                     "t.conf:1: a.local_forwards: must be a list of strings, not an integer");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; local_forwards = ( \"1:h:2\", 3 ); } );",
                     "t.conf:1: a.local_forwards: element 2 must be a string, not an integer");
        expect_error("tunnels = { name = \"a\"; };",
                     "t.conf:1: tunnels: must be a list of groups: tunnels = ( { name = \"…\"; … } );");
        expect_error("tunnels = ( \"a\" );",
                     "t.conf:1: tunnels[0]: must be a group { name = \"…\"; host = \"…\"; … }, not a string");
        expect_error("defaults = ( );", "t.conf:1: defaults: must be a group { … }, not a list");
        expect_error("log_target = \"syslog\";",
                     "t.conf:1: log_target: \"syslog\" must be \"auto\", \"journal\" or \"stderr\"");
}

static void test_ranges(void)
{
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; port = 0; } );",
                     "t.conf:1: a.port: must be from 1 to 65535");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; port = 70000; } );",
                     "t.conf:1: a.port: must be from 1 to 65535");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; port = 99999999999L; } );",
                     "t.conf:1: a.port: must be from 1 to 65535");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; gatetime = -1; } );",
                     "t.conf:1: a.gatetime: must be from 0 to 86400 seconds");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; restart_delay = 0; } );",
                     "t.conf:1: a.restart_delay: must be from 0.05 to 86400 seconds");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; restart_delay = 10; restart_delay_max = 5; } );",
                     "t.conf:1: a.restart_delay_max: 5 s is less than restart_delay 10 s");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; restart = \"sometimes\"; } );",
                     "t.conf:1: a.restart: \"sometimes\" must be \"always\", \"on-failure\" or \"never\"");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; server_alive_count_max = 0; } );",
                     "t.conf:1: a.server_alive_count_max: must be from 1 to 1000");
        expect_error("stop_timeout = 0;", "t.conf:1: stop_timeout: must be from 0.1 to 3600 seconds");
}

static void test_names(void)
{
        expect_error("tunnels = ( { host = \"h\"; } );", "t.conf:1: tunnels[0].name: missing");
        expect_error("tunnels = ( { name = \"a/b\"; host = \"h\"; } );",
                     "t.conf:1: tunnels[0].name: \"a/b\" may contain only letters, digits, '_', '.' and '-'");
        expect_error("tunnels = ( { name = \"..\"; host = \"h\"; } );",
                     "t.conf:1: tunnels[0].name: \"..\" must not be \".\" or \"..\"");
        expect_error("tunnels = ( { name = \"\"; host = \"h\"; } );",
                     "t.conf:1: tunnels[0].name: \"\" must not be empty");
        expect_error("tunnels = (\n { name = \"a\"; host = \"h\"; },\n { name = \"a\"; host = \"h\"; }\n);",
                     "t.conf:3: tunnels[1].name: \"a\" is already used by the tunnel at t.conf:2");
        expect_error("tunnels = ( { name = \"a\"; } );",
                     "t.conf:1: a.host: missing (set it in the tunnel or in defaults)");
}

/* Values that reach ssh's argv. */
static void test_injection(void)
{
        expect_error("tunnels = ( { name = \"a\"; host = \"-oProxyCommand=touch /tmp/pwned\"; } );",
                     "t.conf:1: a.host: \"-oProxyCommand=touch /tmp/pwned\" must not contain whitespace");
        expect_error("tunnels = ( { name = \"a\"; host = \"-oProxyCommand=x\"; } );",
                     "t.conf:1: a.host: \"-oProxyCommand=x\" must not begin with '-' (it would be read as an ssh option)");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; user = \"-lroot\"; } );",
                     "t.conf:1: a.user: \"-lroot\" must not begin with '-' (it would be read as an ssh option)");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; jump_host = \"-J x\"; } );",
                     "t.conf:1: a.jump_host: \"-J x\" must not contain whitespace");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; jump_host = \"j,-oProxyCommand=x\"; } );",
                     "t.conf:1: a.jump_host: \"j,-oProxyCommand=x\" must not begin with '-' (it would be read as an ssh option)");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\\nx\"; } );",
                     "t.conf:1: a.host: \"h\\nx\" must not contain control characters");
        expect_error("tunnels = ( { name = \"a\"; host = \"u@h\"; } );",
                     "t.conf:1: a.host: \"u@h\" must not contain '@' (set user instead)");
        expect_error("tunnels = ( { name = \"a\"; host = \"ssh://h\"; } );",
                     "t.conf:1: a.host: \"ssh://h\" may contain only letters, digits, '.', '_', '-', ':' and '%'");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; user = \"u$(id)\"; } );",
                     "t.conf:1: a.user: \"u$(id)\" has an invalid character: a user name may contain only "
                     "letters, digits, '.', '_', '-', '+' and '@'");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; user = \"u;id\"; } );",
                     "t.conf:1: a.user: \"u;id\" has an invalid character: a user name may contain only "
                     "letters, digits, '.', '_', '-', '+' and '@'");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; jump_host = \"u`id`@j:22\"; } );",
                     "t.conf:1: a.jump_host: \"u`id`@j:22\" has a user with an invalid character: a user name "
                     "may contain only letters, digits, '.', '_', '-', '+' and '@'");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; user = \"a\\x01b\"; } );",
                     "t.conf:1: a.user: \"a\\x01b\" must not contain control characters");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; user = \"r t\"; } );",
                     "t.conf:1: a.user: \"r t\" must not contain whitespace");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; identity_file = \"-i\"; } );",
                     "t.conf:1: a.identity_file: \"-i\" must not begin with '-'");
        expect_error("ssh = \"bin/ssh\";",
                     "t.conf:1: ssh: \"bin/ssh\" must be an absolute path or a bare program name looked up in PATH");
}

static void test_forwards(void)
{
        static const char *good_local[] = {
                "5000:localhost:3306", "127.0.0.1:5000:db:3306", "[::1]:5000:[2001:db8::5]:22", "*:5000:db:1",
                ":5000:db:1", "5000:/run/sock", "/tmp/l.sock:db:22", "/tmp/l.sock:/tmp/r.sock",
                "localhost:5000:/run/r.sock", NULL };
        static const char *bad_local[] = {
                "5000", "5000:db", "0:db:22", "70000:db:22", "5000:db:0", "5000:db:x", "a:b:c:d:e",
                "5000:-db:22", "[::1:5000:db:22", "5000:::1:22", "-5000:db:22", "5000 :db:22", NULL };
        static const char *good_remote[] = {
                "8080:localhost:80", "0:localhost:80", "8080", "0", "127.0.0.1:8080", "*:8080:h:80",
                "8080:/run/s", "/run/r:h:80", NULL };
        static const char *bad_remote[] = { "8080:h", "x:h:80", "8080:h:0", "70000", NULL };
        static const char *good_dynamic[] = { "1080", "127.0.0.1:1080", "[::1]:1080", "*:1080", NULL };
        static const char *bad_dynamic[] = { "0", "1080:h:1", "host", "-1080", NULL };

        for (const char **s = good_local; *s; s++) {
                if (forward_validate_local(*s))
                        printf("#   local %s: %s\n", *s, forward_validate_local(*s));
                test_assert(forward_validate_local(*s) == NULL);
        }
        for (const char **s = bad_local; *s; s++) {
                if (!forward_validate_local(*s))
                        printf("#   local %s accepted\n", *s);
                test_assert(forward_validate_local(*s) != NULL);
        }
        for (const char **s = good_remote; *s; s++) {
                if (forward_validate_remote(*s))
                        printf("#   remote %s: %s\n", *s, forward_validate_remote(*s));
                test_assert(forward_validate_remote(*s) == NULL);
        }
        for (const char **s = bad_remote; *s; s++) {
                if (!forward_validate_remote(*s))
                        printf("#   remote %s accepted\n", *s);
                test_assert(forward_validate_remote(*s) != NULL);
        }
        for (const char **s = good_dynamic; *s; s++)
                test_assert(forward_validate_dynamic(*s) == NULL);
        for (const char **s = bad_dynamic; *s; s++)
                test_assert(forward_validate_dynamic(*s) != NULL);

        expect_error("tunnels = ( { name = \"a\"; host = \"h\";\n local_forwards = ( \"5000:db\" ); } );",
                     "t.conf:2: a.local_forwards: \"5000:db\" must be [bind_address:]port:host:hostport "
                     "(or a form with Unix socket paths), ports from 1 to 65535");
        expect_error("defaults = { dynamic_forwards = ( \"99999\" ); };",
                     "t.conf:1: defaults.dynamic_forwards: \"99999\" must be [bind_address:]port with a port from 1 to 65535");
        {
                /* the most a socket address holds, and a DNS name's most */
                char path[160], host[300], spec[512];

                snprintf(path, sizeof(path), "/%0107d", 0);     /* 108 bytes */
                snprintf(spec, sizeof(spec), "5000:%s", path);
                test_assert_streq(forward_validate_local(spec),
                                  "has a Unix socket path longer than 107 bytes (the most a socket address holds)");
                path[107] = '\0';
                snprintf(spec, sizeof(spec), "5000:%s", path);
                test_assert(forward_validate_local(spec) == NULL);
                memset(host, 'a', 256);
                host[256] = '\0';
                snprintf(spec, sizeof(spec), "5000:%s:22", host);
                test_assert_streq(forward_validate_local(spec), "has a host name longer than 255 characters");
                host[255] = '\0';
                snprintf(spec, sizeof(spec), "5000:%s:22", host);
                test_assert(forward_validate_local(spec) == NULL);
        }
}

static void test_ssh_options(void)
{
        test_assert(validate_ssh_option("Compression=yes") == NULL);
        test_assert(validate_ssh_option("ProxyCommand=ssh -W %h:%p gw") == NULL);
        test_assert(validate_ssh_option("StrictHostKeyChecking=accept-new") == NULL);
        test_assert(validate_ssh_option("Compression yes") != NULL);
        test_assert(validate_ssh_option("=yes") != NULL);
        test_assert(validate_ssh_option("Compression=") != NULL);
        test_assert(validate_ssh_option("Comp-ression=yes") != NULL);
        test_assert(validate_ssh_option("Compression=yes\n-oProxyCommand=x") != NULL);
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; ssh_options = ( \"controlmaster=auto\" ); } );",
                     "t.conf:1: a.ssh_options: \"controlmaster=auto\" is set by tunneld: every tunnel's ssh is a "
                     "multiplexing master of tunneld's own");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; ssh_options = ( \"ServerAliveInterval=5\" ); } );",
                     "t.conf:1: a.ssh_options: \"ServerAliveInterval=5\" is set by tunneld: use the "
                     "server_alive_interval setting");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; ssh_options = ( \"LocalForward=1 h:2\" ); } );",
                     "t.conf:1: a.ssh_options: \"LocalForward=1 h:2\" use the local_forwards setting");
}

/* libconfig 1.5 exit()s the process on an @include it cannot read (found by the fuzzer):
 * refused before libconfig sees it. */
static void test_include_refused(void)
{
        expect_error("@include \"/\"\n",
                     "t.conf:1: @include is not supported: put tunnels in drop-in files "
                     "(*.conf in the .d directory named like the main file, or include_dir)");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; } );\n  @include \"/etc/passwd\"\n",
                     "t.conf:2: @include is not supported: put tunnels in drop-in files "
                     "(*.conf in the .d directory named like the main file, or include_dir)");
        expect_error("# @include \"/\"\ntunnels = ( { name = \"a\"; host = \"h\"; ssh_options = ( \"A=@include\" ); } );", "");
}

static void test_duplicate_of_broken(void)
{
        expect_error("tunnels = (\n { name = \"a\"; host = \"h\"; port = 70000; },\n { name = \"a\"; host = \"h\"; }\n);",
                     "t.conf:2: a.port: must be from 1 to 65535\n"
                     "t.conf:3: tunnels[1].name: \"a\" is already used by the tunnel at t.conf:2");
}

/* Every error is reported, not just the first. */
static void test_all_errors(void)
{
        expect_error("tunnels = (\n"
                     "  { name = \"a\"; host = \"-x\"; port = 0; },\n"
                     "  { name = \"b\"; host = \"h\"; restart = \"x\"; }\n"
                     ");",
                     "t.conf:2: a.host: \"-x\" must not begin with '-' (it would be read as an ssh option)\n"
                     "t.conf:2: a.port: must be from 1 to 65535\n"
                     "t.conf:3: b.restart: \"x\" must be \"always\", \"on-failure\" or \"never\"");
}

static void test_equal(void)
{
        struct config *a = NULL, *b = NULL;
        const char *base = "tunnels = ( { name = \"a\"; host = \"h\"; local_forwards = ( \"1:h:2\" ); } );";
        _cleanup_free_ char *e1 = load_errors(base, &a);
        _cleanup_free_ char *e2 = load_errors(base, &b);

        test_assert_streq(e1, "");
        test_assert_streq(e2, "");
        test_assert(a && b);
        if (!a || !b)
                return;
        test_assert(tunnel_spec_equal(&a->tunnels[0], &b->tunnels[0]));
        config_free(b);
        b = NULL;
        free(load_errors("tunnels = ( { name = \"a\"; host = \"h\"; local_forwards = ( \"1:h:3\" ); } );", &b));
        test_assert(b && !tunnel_spec_equal(&a->tunnels[0], &b->tunnels[0]));
        config_free(b);
        b = NULL;
        free(load_errors("\n\ntunnels = ( { name = \"a\"; host = \"h\"; local_forwards = ( \"1:h:2\" ); } );", &b));
        test_assert(b && tunnel_spec_equal(&a->tunnels[0], &b->tunnels[0]));   /* line moves don't count */
        config_free(b);
        b = NULL;
        free(load_errors("tunnels = ( { name = \"a\"; host = \"h\"; local_forwards = ( \"1:h:2\" ); gatetime = 5; } );", &b));
        test_assert(b && !tunnel_spec_equal(&a->tunnels[0], &b->tunnels[0]));   /* policy counts */
        config_free(b);
        config_free(a);
}

static void test_file(void)
{
        char path[] = "/tmp/tunneld-test-XXXXXX";
        struct config_errors errs = {0};
        struct config *c = NULL;
        int fd = mkstemp(path);
        FILE *f;

        test_assert(fd >= 0);
        f = fdopen(fd, "w");
        fputs("tunnels = (\n  { name = \"a\"; host = \"h\"; port = -1; }\n);\n", f);
        fclose(f);
        test_assert(config_load(path, NULL, &c, &errs) == -EINVAL);
        test_assert(errs.n == 1);
        if (errs.n == 1) {
                char expected[256];
                snprintf(expected, sizeof(expected), "%s:2: a.port: must be from 1 to 65535", path);
                test_assert_streq(errs.lines[0], expected);
        }
        config_errors_clear(&errs);
        unlink(path);

        test_assert(config_load("/nonexistent/tunneld.conf", NULL, &c, &errs) == -ENOENT);
        test_assert(errs.n == 1);
        if (errs.n == 1)
                test_assert_streq(errs.lines[0], "/nonexistent/tunneld.conf: cannot open: No such file or directory");
        config_errors_clear(&errs);
}

static void test_after(void)
{
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; after = ( \"b\" ); } );",
                     "t.conf:1: a.after: no tunnel is named \"b\"");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; after = ( \"a\" ); } );",
                     "t.conf:1: a.after: a tunnel cannot wait for itself");
        expect_error("tunnels = (\n { name = \"a\"; host = \"h\"; after = ( \"c\" ); },\n"
                     " { name = \"b\"; host = \"h\"; after = ( \"a\" ); },\n"
                     " { name = \"c\"; host = \"h\"; after = ( \"b\" ); }\n);",
                     "t.conf:2: a.after: is part of a cycle of tunnels waiting for each other: a -> c -> b -> a");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; enabled = false; },\n"
                     " { name = \"b\"; host = \"h\"; after = ( \"a\" ); } );",
                     "t.conf:2: b.after: \"a\" is disabled: this tunnel would wait for it forever");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; }, { name = \"b\"; host = \"h\"; after = ( \"a\" ); } );", "");
}

static void test_port_clashes(void)
{
        expect_error("tunnels = (\n { name = \"a\"; host = \"h\"; local_forwards = ( \"5000:db:1\" ); },\n"
                     " { name = \"b\"; host = \"h\"; local_forwards = ( \"127.0.0.1:5000:db:2\" ); }\n);",
                     "t.conf:3: b.local_forwards: \"127.0.0.1:5000:db:2\" listens on local port 5000, as "
                     "\"5000:db:1\" of tunnel a (t.conf:2) does");
        expect_error("tunnels = (\n { name = \"a\"; host = \"h\"; dynamic_forwards = ( \"*:1080\" ); },\n"
                     " { name = \"b\"; host = \"h\"; local_forwards = ( \"192.0.2.1:1080:db:2\" ); }\n);",
                     "t.conf:3: b.local_forwards: \"192.0.2.1:1080:db:2\" listens on local port 1080, as "
                     "\"*:1080\" of tunnel a (t.conf:2) does");
        expect_error("tunnels = (\n { name = \"a\"; host = \"s1\"; remote_forwards = ( \"8080:localhost:80\" ); },\n"
                     " { name = \"b\"; host = \"s1\"; remote_forwards = ( \"8080:localhost:81\" ); }\n);",
                     "t.conf:3: b.remote_forwards: \"8080:localhost:81\" listens on s1 port 8080, as "
                     "\"8080:localhost:80\" of tunnel a (t.conf:2) does");
        /* different addresses, different servers, a disabled tunnel, server-chosen ports: fine */
        expect_error("tunnels = (\n { name = \"a\"; host = \"s1\"; local_forwards = ( \"192.0.2.1:5000:db:1\" );\n"
                     "   remote_forwards = ( \"8080:localhost:80\", \"0:x:1\" ); },\n"
                     " { name = \"b\"; host = \"s2\"; local_forwards = ( \"192.0.2.2:5000:db:1\" );\n"
                     "   remote_forwards = ( \"8080:localhost:80\", \"0:x:1\" ); },\n"
                     " { name = \"c\"; host = \"s1\"; enabled = false; remote_forwards = ( \"8080:localhost:80\" ); }\n);", "");
        /* ssh binds both (IPV6_V6ONLY): valid */
        expect_error("tunnels = (\n { name = \"a\"; host = \"h\"; local_forwards = ( \"127.0.0.1:5000:db:1\", \"0.0.0.0:5001:db:1\" ); },\n"
                     " { name = \"b\"; host = \"h\"; local_forwards = ( \"[::1]:5000:db:2\", \"[::]:5001:db:1\" ); }\n);", "");
        /* the same socket in two tunnels; one server reached as 127.0.0.1 and localhost:22 */
        expect_error("tunnels = (\n { name = \"a\"; host = \"h\"; local_forwards = ( \"/run/x.sock:db:1\" ); },\n"
                     " { name = \"b\"; host = \"h\"; local_forwards = ( \"/run//x.sock:db:2\" ); }\n);",
                     "t.conf:3: b.local_forwards: \"/run//x.sock:db:2\" listens on local socket /run/x.sock, as "
                     "\"/run/x.sock:db:1\" of tunnel a (t.conf:2) does");
        expect_error("tunnels = (\n { name = \"a\"; host = \"127.0.0.1\"; remote_forwards = ( \"8080:x:1\" ); },\n"
                     " { name = \"b\"; host = \"localhost\"; port = 22; remote_forwards = ( \"127.0.0.1:8080:x:2\" ); }\n);",
                     "t.conf:3: b.remote_forwards: \"127.0.0.1:8080:x:2\" listens on localhost port 8080, as "
                     "\"8080:x:1\" of tunnel a (t.conf:2) does");
        /* GatewayPorts=yes: a forward without a bind address listens everywhere */
        expect_error("tunnels = (\n { name = \"a\"; host = \"h\"; ssh_options = ( \"GatewayPorts=yes\" );\n"
                     "   local_forwards = ( \"5000:db:1\" ); },\n"
                     " { name = \"b\"; host = \"h\"; local_forwards = ( \"127.0.0.2:5000:db:2\" ); }\n);",
                     "t.conf:4: b.local_forwards: \"127.0.0.2:5000:db:2\" listens on local port 5000, as "
                     "\"5000:db:1\" of tunnel a (t.conf:2) does");
}

static void write_file(const char *path, const char *text, mode_t mode)
{
        FILE *f = fopen(path, "we");

        test_assert(f != NULL);
        if (!f)
                return;
        fputs(text, f);
        fclose(f);
        chmod(path, mode);
}

static struct config_load_options load_options;

static char *load_file_errors(const char *path, struct config **ret)
{
        struct config_errors errs = {0};
        struct config *c = NULL;
        struct buf b = {0};
        char *s = NULL;

        if (config_load(path, &load_options, &c, &errs) >= 0 && ret)
                *ret = c;
        else
                config_free(c);
        for (size_t i = 0; i < errs.n; i++)
                buf_printf(&b, "%s%s", i ? "\n" : "", errs.lines[i]);
        config_errors_clear(&errs);
        return buf_steal(&b, &s) < 0 ? NULL : s;
}

/* Drop-ins, key files and the config file's own permissions, on a real directory. */
static void test_files(void)
{
        char dir[] = "/tmp/tunneld-test-XXXXXX", main_conf[256], d[128], f1[256], f2[256], key[256], expected[1024];
        struct config *c = NULL;
        char *e;

        test_assert(mkdtemp(dir) != NULL);
        snprintf(main_conf, sizeof(main_conf), "%s/tunneld.conf", dir);
        snprintf(d, sizeof(d), "%s/tunneld.d", dir);
        snprintf(f1, sizeof(f1), "%s/10-a.conf", d);
        snprintf(f2, sizeof(f2), "%s/20-b.conf", d);
        snprintf(key, sizeof(key), "%s/key", dir);
        mkdir(d, 0755);
        write_file(main_conf, "defaults = { user = \"u\"; };\ntunnels = ( { name = \"main\"; host = \"h\"; } );\n", 0644);
        write_file(f1, "tunnels = ( { name = \"a\"; host = \"h\"; } );\n", 0644);
        write_file(f2, "tunnels = ( { name = \"b\"; host = \"h\"; } );\n", 0644);
        write_file(key, "secret", 0600);

        e = load_file_errors(main_conf, &c);
        test_assert_streq(e, "");
        free(e);
        test_assert(c && c->n_tunnels == 3);
        if (c && c->n_tunnels == 3) {
                test_assert_streq(c->tunnels[1].name, "a");        /* lexical order */
                test_assert_streq(c->tunnels[2].name, "b");
                test_assert_streq(c->tunnels[2].user, "u");        /* the main file's defaults */
                test_assert_streq(c->tunnels[2].source_file, f2);
        }
        c = config_free(c);

        /* a name twice across files names both places */
        write_file(f2, "\ntunnels = ( { name = \"a\"; host = \"h\"; } );\n", 0644);
        e = load_file_errors(main_conf, NULL);
        snprintf(expected, sizeof(expected), "%s:2: tunnels[0].name: \"a\" is already used by the tunnel at %s:1", f2, f1);
        test_assert_streq(e, expected);
        free(e);
        unlink(f2);

        /* identity files */
        write_file(f1, "tunnels = ( { name = \"a\"; host = \"h\"; identity_file = \"/nonexistent/key\"; } );\n", 0644);
        e = load_file_errors(main_conf, NULL);
        snprintf(expected, sizeof(expected), "%s:1: a.identity_file: /nonexistent/key: No such file or directory", f1);
        test_assert_streq(e, expected);
        free(e);
        {
                char text[512];
                snprintf(text, sizeof(text), "tunnels = ( { name = \"a\"; host = \"h\"; identity_file = \"%s\"; } );\n", key);
                write_file(f1, text, 0644);
        }
        e = load_file_errors(main_conf, NULL);
        test_assert_streq(e, "");
        free(e);
        chmod(key, 0644);
        e = load_file_errors(main_conf, NULL);
        snprintf(expected, sizeof(expected), "%s:1: a.identity_file: %s: readable by group or others (mode 0644): "
                 "ssh refuses such keys; chmod 600 it", f1, key);
        test_assert_streq(e, expected);
        free(e);

        /* the configuration itself: not writable by others */
        chmod(key, 0600);
        chmod(f1, 0666);
        e = load_file_errors(main_conf, NULL);
        snprintf(expected, sizeof(expected), "%s: writable by group or others (mode 0666): fix with chmod go-w, "
                 "or run tunneld with --allow-insecure-config", f1);
        test_assert_streq(e, expected);
        free(e);
        load_options.allow_insecure = true;
        e = load_file_errors(main_conf, NULL);
        test_assert_streq(e, "");
        free(e);
        load_options.allow_insecure = false;
        if (geteuid() == 0) {
                chmod(f1, 0644);
                test_assert(chown(f1, 12345, 0) == 0);
                e = load_file_errors(main_conf, NULL);
                snprintf(expected, sizeof(expected), "%s: owned by uid 12345, neither root nor tunneld's user (uid 0): "
                         "fix with chown, or run tunneld with --allow-insecure-config", f1);
                test_assert_streq(e, expected);
                free(e);
        }

        unlink(f1);
        unlink(key);
        unlink(main_conf);
        rmdir(d);
        rmdir(dir);
}

/* Each instance file has its own drop-in directory: office.conf reads office.d. */
static void test_dropin_dir_per_file(void)
{
        char dir[] = "/tmp/tunneld-test-XXXXXX", conf[256], d[128], f[256];
        struct config *c = NULL;
        char *e;

        test_assert(mkdtemp(dir) != NULL);
        snprintf(conf, sizeof(conf), "%s/office.conf", dir);
        snprintf(d, sizeof(d), "%s/office.d", dir);
        snprintf(f, sizeof(f), "%s/10-a.conf", d);
        mkdir(d, 0755);
        write_file(conf, "tunnels = ( { name = \"main\"; host = \"h\"; } );\n", 0644);
        write_file(f, "tunnels = ( { name = \"a\"; host = \"h\"; } );\n", 0644);
        e = load_file_errors(conf, &c);
        test_assert_streq(e, "");
        free(e);
        if (c) {
                test_assert_streq(c->include_dir, d);
                test_assert(c->n_tunnels == 2);
                test_assert_streq(c->tunnels[1].name, "a");
                config_free(c);
        }
        unlink(f);
        unlink(conf);
        rmdir(d);
        rmdir(dir);
}

/* Files that become commands (ssh_config_file, on_state_change) and the directories of
 * configuration files: writable by root and tunneld's user only (a sticky dir is fine). */
static void test_command_file_permissions(void)
{
        char dir[] = "/tmp/tunneld-test-XXXXXX", conf[64], sshcfg[64], hook[64], text[512], expected[1024];
        char *e;

        test_assert(mkdtemp(dir) != NULL);
        snprintf(conf, sizeof(conf), "%s/t.conf", dir);
        snprintf(sshcfg, sizeof(sshcfg), "%s/ssh_config", dir);
        snprintf(hook, sizeof(hook), "%s/hook", dir);
        write_file(sshcfg, "Host *\n", 0644);
        write_file(hook, "#!/bin/sh\n", 0755);
        snprintf(text, sizeof(text), "include_dir = \"none\";\ntunnels = ( { name = \"a\"; host = \"h\";\n"
                 "ssh_config_file = \"%s\";\non_state_change = \"%s\"; } );\n", sshcfg, hook);
        write_file(conf, text, 0644);
        e = load_file_errors(conf, NULL);
        test_assert_streq(e, "");
        free(e);

        chmod(sshcfg, 0666);
        chmod(hook, 0777);
        e = load_file_errors(conf, NULL);
        snprintf(expected, sizeof(expected),
                 "%s:2: a.ssh_config_file: %s: writable by group or others (mode 0666): fix with chmod go-w (its "
                 "ProxyCommand would run as tunneld), or run tunneld with --allow-insecure-config\n"
                 "%s:2: a.on_state_change: %s: writable by group or others (mode 0777): fix with chmod go-w, or run "
                 "tunneld with --allow-insecure-config", conf, sshcfg, conf, hook);
        test_assert_streq(e, expected);
        free(e);
        chmod(sshcfg, 0644);
        chmod(hook, 0755);

        chmod(dir, 0777);       /* anyone could swap the file */
        e = load_file_errors(conf, NULL);
        snprintf(expected, sizeof(expected), "%s: its directory %s is writable by group or others (mode 0777): fix "
                 "with chmod go-w, or run tunneld with --allow-insecure-config", conf, dir);
        test_assert_streq(e, expected);
        free(e);
        chmod(dir, 01777);      /* sticky, like /tmp: others cannot replace our files */
        e = load_file_errors(conf, NULL);
        test_assert_streq(e, "");
        free(e);

        unlink(conf);
        unlink(sshcfg);
        unlink(hook);
        rmdir(dir);
}

/* One mistake does not hide the others: a duplicate name next to a port clash. */
static void test_errors_do_not_hide_cross_checks(void)
{
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; local_forwards = ( \"5000:x:1\" ); },\n"
                     "{ name = \"a\"; host = \"h\"; },\n"
                     "{ name = \"b\"; host = \"h\"; local_forwards = ( \"5000:y:1\" ); } );",
                     "t.conf:2: tunnels[1].name: \"a\" is already used by the tunnel at t.conf:1\n"
                     "t.conf:3: b.local_forwards: \"5000:y:1\" listens on local port 5000, as \"5000:x:1\" of "
                     "tunnel a (t.conf:1) does");
}

/* share_connection: who shares (connection and supervision the same, not forwards, name,
 * probe or hooks), and no after inside one connection. */
static void test_share_connection(void)
{
        struct config *c = NULL;
        _cleanup_free_ char *e = load_errors(
                "defaults = { share_connection = true; user = \"u\"; };\n"
                "tunnels = (\n"
                "  { name = \"a\"; host = \"h\"; local_forwards = ( \"5000:x:1\" ); },\n"
                "  { name = \"b\"; host = \"h\"; remote_forwards = ( \"6000:x:1\" ); on_state_change = \"/bin/true\";\n"
                "    probe = { connect = \"127.0.0.1:5000\"; }; },\n"
                "  { name = \"c\"; host = \"other\"; },\n"
                "  { name = \"d\"; host = \"h\"; gatetime = 5; },\n"
                "  { name = \"e\"; host = \"h\"; share_connection = false; }\n"
                ");\n", &c);

        test_assert_streq(e, "");
        test_assert(c && c->n_tunnels == 5);
        test_assert(tunnel_spec_shares_connection(&c->tunnels[0], &c->tunnels[1]));
        test_assert(!tunnel_spec_shares_connection(&c->tunnels[0], &c->tunnels[2]));     /* another host */
        test_assert(!tunnel_spec_shares_connection(&c->tunnels[0], &c->tunnels[3]));     /* its own gatetime */
        test_assert(!tunnel_spec_shares_connection(&c->tunnels[0], &c->tunnels[4]));     /* not asked */
        config_free(c);

        expect_error("defaults = { share_connection = true; };\n"
                     "tunnels = ( { name = \"a\"; host = \"h\"; },\n"
                     "  { name = \"b\"; host = \"h\"; after = ( \"a\" ); } );\n",
                     "t.conf:3: b.after: \"a\" shares this tunnel's connection (share_connection): they come up "
                     "and go down together, so one cannot wait for the other; set share_connection = false on one "
                     "of them, or drop the after");
        expect_error("defaults = { share_connection = true; };\n"
                     "tunnels = ( { name = \"a\"; host = \"h\"; remote_forwards = ( \"0:localhost:80\" ); },\n"
                     "  { name = \"b\"; host = \"h\"; remote_forwards = ( \"0:localhost:80\" ); } );\n",
                     "t.conf:3: b.share_connection: forward \"0:localhost:80\" is tunnel a's too, and both would "
                     "ride one ssh, where they are one forward: give one of them share_connection = false");
        /* different connections may wait for each other */
        expect_error("defaults = { share_connection = true; };\n"
                     "tunnels = ( { name = \"a\"; host = \"h\"; },\n"
                     "  { name = \"b\"; host = \"g\"; after = ( \"a\" ); } );\n", "");
}

/* multiplex and exit_on_forward_failure no longer do anything: they load, with one warning
 * each (at the first place they are set), and a value of the wrong type is still an error. */
static void test_obsolete_settings(void)
{
        struct config *c = NULL;
        _cleanup_free_ char *e = load_errors(
                "defaults = { multiplex = true; exit_on_forward_failure = false; };\n"
                "tunnels = ( { name = \"a\"; host = \"h\"; multiplex = false; },\n"
                "            { name = \"b\"; host = \"h\"; exit_on_forward_failure = true; } );\n", &c);

        test_assert_streq(e, "");
        test_assert(c && strv_length(c->warnings) == 2);
        if (c && strv_length(c->warnings) == 2) {
                test_assert(strncmp(c->warnings[0], "t.conf:1: defaults.multiplex: no longer does anything (", 55) == 0);
                test_assert(strstr(c->warnings[0], "): remove it"));
                test_assert(strncmp(c->warnings[1], "t.conf:1: defaults.exit_on_forward_failure: no longer does "
                                    "anything (a forward that fails is asked for again", 106) == 0);
        }
        config_free(c);
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; multiplex = \"yes\"; } );",
                     "t.conf:1: a.multiplex: must be true or false, not a string");
}

/* What tunneld runs and the directories it writes into, at the setting's line (or "by
 * default", or the -s option), before ssh -G: the ssh program found in PATH and run by
 * that path from then on; control_socket's directory not even sticky; metrics_file's may
 * be sticky; include_dir not writable by others. */
static void test_trusted_paths(void)
{
        char dir[] = "/tmp/tunneld-test-XXXXXX", conf[64], bin[64], ssh[80], sock[64], mdir[64], inc[64], text[1024],
             expected[2048], path[256];
        const char *old_path = getenv("PATH");
        _cleanup_free_ char *saved = old_path ? strdup(old_path) : NULL;
        struct config *c = NULL;
        char *e;

        test_assert(mkdtemp(dir) != NULL);
        test_assert(chmod(dir, 0755) == 0);
        snprintf(conf, sizeof(conf), "%s/t.conf", dir);
        snprintf(bin, sizeof(bin), "%s/bin", dir);
        snprintf(ssh, sizeof(ssh), "%s/myssh", bin);
        snprintf(sock, sizeof(sock), "%s/run", dir);
        snprintf(mdir, sizeof(mdir), "%s/metrics", dir);
        snprintf(inc, sizeof(inc), "%s/inc", dir);
        test_assert(mkdir(bin, 0755) == 0 && mkdir(sock, 0755) == 0 && mkdir(mdir, 0755) == 0 && mkdir(inc, 0755) == 0);
        write_file(ssh, "#!/bin/sh\n", 0755);
        snprintf(text, sizeof(text), "ssh = \"myssh\";\ncontrol_socket = \"%s/control\";\nmetrics_file = \"%s/m.prom\";\n"
                 "include_dir = \"%s\";\ntunnels = ( { name = \"a\"; host = \"h\"; } );\n", sock, mdir, inc);
        write_file(conf, text, 0644);
        snprintf(path, sizeof(path), "%s:/usr/bin:/bin", bin);
        setenv("PATH", path, 1);

        e = load_file_errors(conf, &c);
        test_assert_streq(e, "");
        free(e);
        if (c)
                test_assert_streq(c->ssh, ssh);         /* found once, run by its path */
        c = config_free(c);

        test_assert(chmod(ssh, 0775) == 0);
        test_assert(chmod(sock, 01777) == 0);
        test_assert(chmod(mdir, 0777) == 0);
        test_assert(chmod(inc, 01777) == 0);
        e = load_file_errors(conf, NULL);
        snprintf(expected, sizeof(expected),
                 "%s:4: include_dir: %s: writable by group or others (mode 1777): fix with chmod go-w (sticky is not "
                 "enough here): others could put files in it, or run tunneld with --allow-insecure-config\n"
                 "%s:1: ssh: %s: writable by group or others (mode 0775): fix with chmod go-w (tunneld runs it as uid "
                 "%d), or run tunneld with --allow-insecure-config\n"
                 "%s:2: control_socket: %s/control: its directory %s is writable by group or others (mode 1777): fix "
                 "with chmod go-w (sticky is not enough here): others could replace or take first what tunneld keeps "
                 "beside the socket (its lock, the runtime directory of the files ssh reads); put the socket in a "
                 "directory only root can write (by default /run/tunneld), or run tunneld with "
                 "--allow-insecure-config\n"
                 "%s:3: metrics_file: %s/m.prom: its directory %s is writable by group or others (mode 0777): fix with "
                 "chmod go-w: others could replace the file or take its name; put it in a directory only root (or "
                 "tunneld's user) can write, such as node_exporter's textfile directory, or in a sticky one such as "
                 "/tmp, or run tunneld with --allow-insecure-config",
                 conf, inc, conf, ssh, (int)geteuid(), conf, sock, sock, conf, mdir, mdir);
        test_assert_streq(e, expected);
        free(e);

        /* metrics_file's directory may be sticky; -s is named as the option */
        test_assert(chmod(mdir, 01777) == 0);
        test_assert(chmod(ssh, 0755) == 0);
        test_assert(chmod(inc, 0755) == 0);
        load_options.control_socket = "/tmp/control";
        e = load_file_errors(conf, NULL);
        test_assert_streq(e, "--control-socket /tmp/control: its directory /tmp is writable by group or others (mode "
                             "1777): fix with chmod go-w (sticky is not enough here): others could replace or take "
                             "first what tunneld keeps beside the socket (its lock, the runtime directory of the "
                             "files ssh reads); put the socket in a directory only root can write (by default "
                             "/run/tunneld), or run tunneld with --allow-insecure-config");
        free(e);
        load_options.control_socket = NULL;
        load_options.allow_insecure = true;
        test_assert(chmod(sock, 0777) == 0);
        e = load_file_errors(conf, NULL);
        test_assert_streq(e, "");
        free(e);
        load_options.allow_insecure = false;

        /* a default names itself so */
        snprintf(text, sizeof(text), "control_socket = \"none\";\ntunnels = ( { name = \"a\"; host = \"h\"; } );\n");
        write_file(conf, text, 0644);
        snprintf(path, sizeof(path), "%s/t.d", dir);
        test_assert(mkdir(path, 0777) == 0 && chmod(path, 0777) == 0);
        e = load_file_errors(conf, NULL);
        snprintf(expected, sizeof(expected), "%s: include_dir (by default): %s: writable by group or others (mode "
                 "0777): fix with chmod go-w: others could put files in it, or run tunneld with "
                 "--allow-insecure-config", conf, path);
        test_assert_streq(e, expected);
        free(e);
        rmdir(path);

        if (saved)
                setenv("PATH", saved, 1);
        unlink(ssh);
        unlink(conf);
        rmdir(bin);
        rmdir(sock);
        rmdir(mdir);
        rmdir(inc);
        rmdir(dir);
}

#define KEY1 "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

/* alternatives: each overrides the destination only, validated as the tunnel's own
 * settings, numbered from 1 in messages (0 is the tunnel's own destination). */
static void test_alternatives(void)
{
        struct config *c = NULL;
        struct tunnel_spec eff;
        char *e = load_errors(
                "defaults = { user = \"u\"; identity_file = \"/k\"; };\n"
                "tunnels = ( { name = \"a\"; host = \"relay1\"; port = 22; local_forwards = ( \"5000:x:1\" );\n"
                "  host_keys = ( \"" KEY1 "\" );\n"
                "  alternatives = ( { host = \"relay2\"; port = 2222; user = \"v\"; },\n"
                "                   { host = \"relay3\"; jump_host = \"j\"; jump_host_keys = ( \"j " KEY1 "\" ); } ); } );\n",
                &c);

        test_assert_streq(e, "");
        free(e);
        test_assert(c && c->n_tunnels == 1 && c->tunnels[0].alts.n == 2);
        test_assert_streq(tunnel_spec_alt_host(&c->tunnels[0], 0), "relay1");
        test_assert_streq(tunnel_spec_alt_host(&c->tunnels[0], 2), "relay3");
        test_assert(tunnel_spec_alt_port(&c->tunnels[0], 1) == 2222 && tunnel_spec_alt_port(&c->tunnels[0], 2) == 22);
        test_assert(tunnel_spec_alternative(&c->tunnels[0], 1, &eff) == 0);
        test_assert_streq(eff.host, "relay2");
        test_assert_streq(eff.user, "v");
        test_assert(eff.port == 2222 && eff.alts.n == 0 && eff.source_line == 4);
        test_assert_streq(eff.identity_file, "/k");             /* the tunnel's (from defaults) */
        test_assert(eff.host_keys && strcmp(eff.host_keys[0], KEY1) == 0);      /* inherited */
        test_assert(eff.local_forwards && strcmp(eff.local_forwards[0], "5000:x:1") == 0);
        tunnel_spec_done(&eff);
        test_assert(tunnel_spec_alternative(&c->tunnels[0], 2, &eff) == 0);
        test_assert_streq(eff.jump_host, "j");
        test_assert_streq(eff.user, "u");
        tunnel_spec_done(&eff);
        {
                struct tunnel_spec copy, other;
                struct tunnel_alt t;

                /* copied deeply; a reorder is a change of the connection's ssh, not of the tunnel */
                test_assert(tunnel_spec_copy(&c->tunnels[0], &copy) == 0);
                test_assert(tunnel_spec_equal(&copy, &c->tunnels[0]));
                test_assert(tunnel_spec_copy(&c->tunnels[0], &other) == 0);
                t = other.alts.v[0];
                other.alts.v[0] = other.alts.v[1];
                other.alts.v[1] = t;
                test_assert(!tunnel_spec_same_ssh(&copy, &other));
                test_assert(tunnel_spec_same_tunnel(&copy, &other));
                test_assert(tunnel_spec_same_supervision(&copy, &other));
                tunnel_spec_done(&copy);
                tunnel_spec_done(&other);
        }
        config_free(c);

        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; alternatives = ( { port = 70000; } ); } );",
                     "t.conf:1: a.alternatives[1].port: must be from 1 to 65535");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\";\n"
                     "  alternatives = ( { host = \"r2\"; },\n"
                     "                   { host = \"-oProxyCommand=x\"; } ); } );",
                     "t.conf:3: a.alternatives[2].host: \"-oProxyCommand=x\" must not begin with '-' (it would be "
                     "read as an ssh option)");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; alternatives = ( { host = \"r2\"; gatetime = 3; } ); } );",
                     "t.conf:1: a.alternatives[1].gatetime: is not a destination setting: an alternative names host, "
                     "port, user, identity_file, jump_host, host_keys or jump_host_keys; the rest is the tunnel's");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; alternatives = ( { } ); } );",
                     "t.conf:1: a.alternatives[1]: names nothing: an alternative sets at least its host or port");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; alternatives = \"r2\"; } );",
                     "t.conf:1: a.alternatives: must be a list of groups: alternatives = ( { host = \"…\"; port = …; }, … )");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; alternatives = ( \"r2\" ); } );",
                     "t.conf:1: a.alternatives[1]: must be a group { host = \"…\"; … }, not a single value");
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; alternatives = ( { host = \"r2\"; }, { host = \"r2\"; } ); } );",
                     "t.conf:1: a.alternatives[2]: the same destination as alternatives[1]");
        /* …once the tunnel fills them in: its own destination, or an earlier one */
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; port = 22; alternatives = ( { host = \"h\"; } ); } );",
                     "t.conf:1: a.alternatives[1]: the tunnel's own destination (the same host, port, user and jump "
                     "host): failing over to it would retry the same server");
        expect_error("defaults = { port = 22; };\ntunnels = ( { name = \"a\"; host = \"h\";\n"
                     "  alternatives = ( { host = \"r2\"; },\n"
                     "                   { host = \"r2\"; port = 22; } ); } );",
                     "t.conf:4: a.alternatives[2]: the same destination as alternatives[1] once the tunnel's settings "
                     "fill it in");
        /* an alternative's pinned keys are checked against the tunnel's options as its own would be */
        expect_error("tunnels = ( { name = \"a\"; host = \"h\"; ssh_options = ( \"StrictHostKeyChecking=no\" );\n"
                     "  alternatives = ( { host = \"r2\"; host_keys = ( \"" KEY1 "\" ); } ); } );",
                     "t.conf:2: a.alternatives[1].ssh_options: \"StrictHostKeyChecking=no\" contradicts host_keys: a "
                     "pinned key is checked strictly (tunneld sets StrictHostKeyChecking=yes): remove it");
        /* tunnels that share a connection share their alternatives, or ride two */
        e = load_errors("defaults = { share_connection = true; host = \"h\"; };\n"
                        "tunnels = ( { name = \"a\"; alternatives = ( { host = \"r2\"; } ); },\n"
                        "  { name = \"b\"; alternatives = ( { host = \"r2\"; } ); },\n"
                        "  { name = \"c\"; alternatives = ( { host = \"r3\"; } ); } );\n", &c);
        test_assert_streq(e, "");
        free(e);
        test_assert(tunnel_spec_shares_connection(&c->tunnels[0], &c->tunnels[1]));
        test_assert(!tunnel_spec_shares_connection(&c->tunnels[0], &c->tunnels[2]));
        config_free(c);
}

/* Every per-tunnel setting belongs to exactly one of the spec's three groups (what the
 * connection's ssh is started with, how it is supervised, the tunnel's own): a setting
 * left out of all three would make a reload ignore a change to it. A setting of the
 * table without a case here fails the test. The retired ones change nothing. */
static void test_every_setting_has_one_group(void)
{
        static const struct { const char *name, *value; } cases[] = {
                { "host", "host = \"other\";" },
                { "user", "user = \"u2\";" },
                { "port", "port = 2222;" },
                { "identity_file", "identity_file = \"/k\";" },
                { "jump_host", "jump_host = \"j\";" },
                { "ssh_config_file", "ssh_config_file = \"/c\";" },
                { "enabled", "enabled = false;" },
                { "local_forwards", "local_forwards = ( \"5001:x:1\" );" },
                { "remote_forwards", "remote_forwards = ( \"6001:x:1\" );" },
                { "dynamic_forwards", "dynamic_forwards = ( \"1080\" );" },
                { "ssh_options", "ssh_options = ( \"Compression=yes\" );" },
                { "host_keys", "host_keys = ( \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\" );" },
                { "jump_host_keys", "jump_host = \"j\"; jump_host_keys = ( \"j ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\" );" },
                { "alternatives", "alternatives = ( { host = \"relay2\"; } );" },
                { "server_alive_interval", "server_alive_interval = 7;" },
                { "server_alive_count_max", "server_alive_count_max = 7;" },
                { "exit_on_forward_failure", "exit_on_forward_failure = false;" },
                { "multiplex", "multiplex = true;" },
                { "share_connection", "share_connection = true;" },
                { "drain_timeout", "drain_timeout = 7;" },
                { "dead_path_timeout", "dead_path_timeout = 7;" },
                { "connect_timeout", "connect_timeout = 7;" },
                { "start_timeout", "start_timeout = 7;" },
                { "gatetime", "gatetime = 7;" },
                { "fail_fast", "fail_fast = true;" },
                { "restart", "restart = \"never\";" },
                { "restart_delay", "restart_delay = 7;" },
                { "restart_delay_max", "restart_delay_max = 70;" },
                { "max_starts", "max_starts = 7;" },
                { "max_lifetime", "max_lifetime = 7;" },
                { "max_lifetime_action", "max_lifetime = 7; max_lifetime_action = \"stop\";" },
                { "after", "after = ( \"b\" );" },
                { "required", "required = false;" },
                { "on_state_change", "on_state_change = \"/bin/true\";" },
                { "flap_threshold", "flap_threshold = 7;" },
                { "flap_window", "flap_window = 7;" },
                { "probe", "probe = { connect = \"127.0.0.1:5000\"; };" },
        };
#define EVERY_SETTING_BASE "tunnels = ( { name = \"a\"; %s %s %s },\n" \
                           "            { name = \"b\"; host = \"h2\"; } );\n"

        for (size_t i = 0; config_tunnel_setting_name(i); i++) {
                const char *name = config_tunnel_setting_name(i), *value = NULL;
                const char *host = "host = \"h\";", *forwards = "local_forwards = ( \"5000:x:1\" );";
                struct config_errors errs = {0};
                struct config *a = NULL, *b = NULL;
                char text[1024];
                int differ;

                for (size_t k = 0; k < ELEMENTSOF(cases) && !value; k++)
                        if (strcmp(cases[k].name, name) == 0)
                                value = cases[k].value;
                if (!value) {
                        printf("#   setting %s: no case in test_every_setting_has_one_group\n", name);
                        test_assert(value);
                        continue;
                }
                snprintf(text, sizeof(text), EVERY_SETTING_BASE, host, forwards, "");
                test_assert(config_load_string(text, "t.conf", &a, &errs) == 0);
                config_errors_clear(&errs);
                snprintf(text, sizeof(text), EVERY_SETTING_BASE,
                         strcmp(name, "host") ? host : "", strcmp(name, "local_forwards") ? forwards : "", value);
                if (config_load_string(text, "t.conf", &b, &errs) < 0) {
                        printf("#   setting %s: %s\n", name, errs.n ? errs.lines[0] : "?");
                        test_assert(!"a case that loads");
                }
                config_errors_clear(&errs);
                if (a && b) {
                        differ = !tunnel_spec_same_ssh(&a->tunnels[0], &b->tunnels[0]) +
                                 !tunnel_spec_same_supervision(&a->tunnels[0], &b->tunnels[0]) +
                                 !tunnel_spec_same_tunnel(&a->tunnels[0], &b->tunnels[0]);
                        if (differ != (strcmp(name, "multiplex") && strcmp(name, "exit_on_forward_failure") ? 1 : 0))
                                printf("#   setting %s: in %d groups\n", name, differ);
                        test_assert(differ == (strcmp(name, "multiplex") && strcmp(name, "exit_on_forward_failure")
                                               ? 1 : 0));
                        test_assert(tunnel_spec_equal(&a->tunnels[0], &b->tunnels[0]) == (differ == 0));
                }
                config_free(a);
                config_free(b);
        }
}

TEST_MAIN(TEST(test_every_setting_has_one_group), TEST(test_alternatives), TEST(test_after), TEST(test_trusted_paths), TEST(test_obsolete_settings), TEST(test_share_connection), TEST(test_dropin_dir_per_file), TEST(test_errors_do_not_hide_cross_checks), TEST(test_command_file_permissions), TEST(test_duplicate_of_broken), TEST(test_include_refused), TEST(test_port_clashes), TEST(test_files), TEST(test_good_full), TEST(test_defaults_builtin), TEST(test_empty), TEST(test_syntax_error),
          TEST(test_unknown_and_types), TEST(test_ranges), TEST(test_names), TEST(test_injection),
          TEST(test_forwards), TEST(test_ssh_options), TEST(test_all_errors), TEST(test_equal), TEST(test_file))
