/* SPDX-License-Identifier: MIT */
/* tunneld --import-autossh: the two tokenizers (systemd's and the shell's quoting), the
 * mapping of autossh's and ssh's options, units, names, and that every output loads as
 * a tunneld configuration. */
#include "autossh_import.h"
#include "autossh_words.h"
#include "config.h"
#include "test.h"
#include "util.h"

static char *joined(char **v)
{
        struct buf b = {0};
        char *s = NULL;

        for (size_t i = 0; v && v[i]; i++)
                buf_printf(&b, "%s[%s]", i ? " " : "", v[i]);
        return buf_steal(&b, &s) < 0 ? NULL : s;
}

/* autossh_words_split → "[a] [b]", or "ERROR: why". */
static char *split(const char *s, enum words_syntax syntax)
{
        _cleanup_strv_free_ char **v = NULL;
        char why[WORDS_WHY_MAX], *ret = NULL;

        if (autossh_words_split(s, syntax, &v, why) < 0)
                return asprintf(&ret, "ERROR: %s", why) < 0 ? NULL : ret;
        return joined(v);
}

#define check_split(s, syntax, expected) do {                   \
                _cleanup_free_ char *_got = split(s, syntax);   \
                test_assert_streq(_got, expected);              \
        } while (0)

static void test_unit_words(void)
{
        check_split("/usr/bin/autossh -M 0 -o \"ServerAliveInterval 30\"", WORDS_UNIT,
                    "[/usr/bin/autossh] [-M] [0] [-o] [ServerAliveInterval 30]");
        check_split("a 'b c' \"d\\\"e\" f\\sg \\x41\\102", WORDS_UNIT, "[a] [b c] [d\"e] [f g] [AB]");
        check_split("x\"y z\"w ''", WORDS_UNIT, "[xy zw] []");
        check_split("a \"b", WORDS_UNIT, "ERROR: an unterminated \" quote");
        check_split("a \\q", WORDS_UNIT, "ERROR: an unknown or NUL escape \\q (systemd.syntax(7))");
        check_split("a \\x00", WORDS_UNIT, "ERROR: an unknown or NUL escape \\x (systemd.syntax(7))");
}

static void test_shell_words(void)
{
        check_split("autossh -o 'A B' \"C D\" e\\ f # comment", WORDS_SHELL, "[autossh] [-o] [A B] [C D] [e f]");
        check_split("a \"\\$x\" '$y' b#c", WORDS_SHELL, "[a] [$x] [$y] [b#c]");
        check_split("a; b", WORDS_SHELL, "ERROR: shell syntax ';': refused (tunneld never runs a shell; write the "
                    "autossh command alone, with its values)");
        check_split("a \"$(id)\"", WORDS_SHELL,
                    "ERROR: shell expansion ('$' in double quotes): refused, write the value itself");
        check_split("a \"`id`\"", WORDS_SHELL,
                    "ERROR: shell expansion ('`' in double quotes): refused, write the value itself");
        for (const char *p = ";&|<>()`${}"; *p; p++) {
                char line[16];
                _cleanup_free_ char *got = NULL;

                snprintf(line, sizeof(line), "a x%cy", *p);
                got = split(line, WORDS_SHELL);
                test_assert(got && strncmp(got, "ERROR: shell syntax", 19) == 0);
        }
}

static void test_lines(void)
{
        const char *unit = "ExecStart=a \\\n# inside\n  b\\\\\nnext\n";
        const char *shell = "autossh -M 0 \\\n  -L 1:a:2 h\n\nlast";
        size_t pos = 0;
        int line = 0, at = 0;
        char *l = NULL;

        test_assert(autossh_words_next_line(unit, &pos, &line, WORDS_UNIT, &at, &l) == 0);
        test_assert_streq(l, "ExecStart=a    b\\\\");
        test_assert(at == 1);
        free(l);
        test_assert(autossh_words_next_line(unit, &pos, &line, WORDS_UNIT, &at, &l) == 0);
        test_assert_streq(l, "next");
        test_assert(at == 4);
        free(l);
        test_assert(autossh_words_next_line(unit, &pos, &line, WORDS_UNIT, &at, &l) == 0 && !l);

        pos = 0, line = 0;
        test_assert(autossh_words_next_line(shell, &pos, &line, WORDS_SHELL, &at, &l) == 0);
        test_assert_streq(l, "autossh -M 0   -L 1:a:2 h");
        free(l);
        test_assert(autossh_words_next_line(shell, &pos, &line, WORDS_SHELL, &at, &l) == 0);
        test_assert_streq(l, "");
        free(l);
        test_assert(autossh_words_next_line(shell, &pos, &line, WORDS_SHELL, &at, &l) == 0);
        test_assert_streq(l, "last");
        test_assert(at == 4);
        free(l);
}

static void dump(const char *text)
{
        for (const char *p = text, *nl; p && *p; p = nl ? nl + 1 : NULL) {
                nl = strchr(p, '\n');
                printf("#     %.*s\n", nl ? (int)(nl - p) : (int)strlen(p), p);
        }
}

struct result {
        char *text;
        size_t errors;
        char *first_error;
};

/* Import files (name, text pairs); the output must load as a configuration. */
static struct result import(const char *const *files)
{
        struct autossh_import *imp = NULL;
        struct result res = {0};
        struct config_errors errs = {0};
        struct config *c = NULL;
        _cleanup_free_ char *conf = NULL;

        test_assert(autossh_import_new(&imp) == 0);
        for (size_t i = 0; files[i]; i += 2)
                test_assert(autossh_import_text(imp, files[i], files[i + 1]) == 0);
        res.errors = strv_length(autossh_import_errors(imp)) / 2;
        if (res.errors)
                res.first_error = strdup(autossh_import_errors(imp)[0]);
        test_assert(autossh_import_render(imp, &res.text) == 0);
        autossh_import_free(imp);
        test_assert(asprintf(&conf, "control_socket = \"none\";\n%s", res.text) > 0);
        if (config_load_string(conf, "import.conf", &c, &errs) < 0) {
                dump(res.text);
                for (size_t i = 0; i < errs.n; i++)
                        printf("#   %s\n", errs.lines[i]);
                test_assert(!"the output loads");
        }
        config_free(c);
        config_errors_clear(&errs);
        return res;
}

static void result_done(struct result *r)
{
        free(r->text);
        free(r->first_error);
}

#define has(r, s) do {                                                          \
                if (!strstr((r).text, s)) {                                     \
                        printf("#   %s:%d: missing:\n", __FILE__, __LINE__);    \
                        dump(s);                                                \
                        printf("#   in:\n");                                    \
                        dump((r).text);                                         \
                        test_failed_checks++;                                   \
                }                                                               \
        } while (0)
#define lacks(r, s) test_assert(!strstr((r).text, s))

static void test_seed_setups(void)
{
        const char *files[] = {
                "seed.sh",
                "autossh -M 0 -o \"ServerAliveInterval 30\" -o \"ServerAliveCountMax 3\" -L 5000:localhost:3306 "
                "cytopia@everythingcli.org\n"
                "autossh -M 0 -f -T -N cli-mysql-tunnel\n",
                "/etc/systemd/system/autossh-mysql-tunnel.service",
                "[Unit]\nDescription=AutoSSH tunnel service everythingcli MySQL on local port 5000\n"
                "After=network.target\n\n[Service]\nEnvironment=\"AUTOSSH_GATETIME=0\"\n"
                "ExecStart=/usr/bin/autossh -M 0 -o \"ServerAliveInterval 30\" -o \"ServerAliveCountMax 3\" "
                "-NL 5001:localhost:3306 cytopia@everythingcli.org -p 1022\n\n[Install]\nWantedBy=multi-user.target\n",
                NULL,
        };
        struct result r = import(files);

        test_assert(r.errors == 0);
        has(r, "name = \"everythingcli-5000\";\n    host = \"everythingcli.org\";\n    user = \"cytopia\";\n"
               "    local_forwards = ( \"5000:localhost:3306\" );\n    server_alive_interval = 30;\n"
               "    server_alive_count_max = 3;\n");
        has(r, "# -M 0: autossh's monitoring port is not needed");
        has(r, "name = \"cli-mysql-tunnel\";\n    host = \"cli-mysql-tunnel\";\n    gatetime = 0;\n");
        has(r, "ssh_config_file = \"/etc/tunneld/ssh_config\"");
        has(r, "# -f -T -N: not needed");
        has(r, "# AutoSSH tunnel service everythingcli MySQL");
        has(r, "name = \"mysql-tunnel\";\n    host = \"everythingcli.org\";\n    user = \"cytopia\";\n    port = 1022;\n"
               "    local_forwards = ( \"5001:localhost:3306\" );\n");
        has(r, "# /etc/systemd/system/autossh-mysql-tunnel.service:7: /usr/bin/autossh -M 0");
        lacks(r, "enabled = false");
        result_done(&r);
}

static void test_options(void)
{
        const char *files[] = {
                "opts",
                "autossh -M 20000 -4 -C -g -p 2222 -l u -i /k/id -i /k/id2 -J a@b:22,c -F /etc/ssh_cfg "
                "-oConnectTimeout=7 -o 'ExitOnForwardFailure no' -o 'StrictHostKeyChecking = yes' -o BatchMode=yes "
                "-o LogLevel=QUIET -o 'LocalForward 127.0.0.1:7000 db:5432' -o RemoteForward=9000 "
                "-L [::1]:7001:[::1]:22 -L /tmp/a.sock:/run/b.sock -L 7002:/run/c.sock -R 0:localhost:80 -R 8080 "
                "-D 1080 -D '*:1081' -qv ssh://x@h.example.org:23 tail -f /dev/null\n",
                NULL,
        };
        struct result r = import(files);

        test_assert(r.errors == 0);
        has(r, "host = \"h.example.org\";\n    user = \"u\";\n    port = 2222;\n    identity_file = \"/k/id\";\n"
               "    jump_host = \"a@b:22,c\";\n    ssh_config_file = \"/etc/ssh_cfg\";\n");
        has(r, "local_forwards = ( \"127.0.0.1:7000:db:5432\", \"[::1]:7001:[::1]:22\", \"/tmp/a.sock:/run/b.sock\", "
               "\"7002:/run/c.sock\" );");
        has(r, "remote_forwards = ( \"9000\", \"0:localhost:80\", \"8080\" );");
        has(r, "dynamic_forwards = ( \"1080\", \"*:1081\" );");
        has(r, "ssh_options = ( \"AddressFamily=inet\", \"Compression=yes\", \"GatewayPorts=yes\", "
               "\"IdentityFile=/k/id2\", \"StrictHostKeyChecking=yes\" );");
        has(r, "connect_timeout = 7;\n");
        has(r, "# -o ExitOnForwardFailure=no: not needed: a forward that fails is asked for again on the");
        lacks(r, "exit_on_forward_failure");
        has(r, "# -M 20000: autossh's monitoring port");
        has(r, "# -o BatchMode=yes: not mapped");
        has(r, "# -q: not mapped");
        has(r, "remote command \"tail -f /dev/null\" dropped");
        has(r, "name = \"h-7000\"");
        lacks(r, "look like a Host alias");
        result_done(&r);
}

static void test_units(void)
{
        const char *files[] = {
                "/lib/systemd/system/autossh@db.service",
                "[Service]\nEnvironment=AUTOSSH_POLL=60 \"AUTOSSH_MAXSTART=5\" AUTOSSH_MAXLIFETIME=3600 FWD=6000:x:1\n"
                "Environment=\"OPTS=-p 2200 -l me\"\nUser=me\nExecStart=\n"
                "ExecStart=-@/usr/bin/autossh autossh -M 0 \\\n   -L ${FWD} $OPTS %i.example.org\n",
                "autossh-.service", "[Service]\nExecStart=autossh -M0 -D 6001 10.0.0.1\n",
                "autossh@.service", "[Service]\nExecStart=autossh -M0 -D 6002 %i\n",
                "autossh-x.service", "[Service]\nExecStart=autossh -M0 -D 6003 h\nExecStart=autossh -M0 -D 6004 h\n",
                "autossh-y.service", "[Service]\nExecStart=:autossh -M0 -L ${X}:a:1 h\n",
                NULL,
        };
        struct result r = import(files);

        test_assert(r.errors == 3);
        test_assert_streq(r.first_error, "autossh@.service:2: %i: this template has no instance: import a copy "
                          "named after it (autossh@NAME.service)");
        has(r, "name = \"db\";\n    host = \"db.example.org\";\n    user = \"me\";\n    port = 2200;\n"
               "    local_forwards = ( \"6000:x:1\" );\n    max_starts = 5;\n    max_lifetime = 3600;\n");
        has(r, "# ${FWD}: expanded from the unit's Environment= to \"6000:x:1\"");
        has(r, "# AUTOSSH_POLL=60: the monitoring port's settings are not needed");
        has(r, "# User=me: tunneld runs every ssh as its own user");
        has(r, "name = \"10.0.0.1-6001\"");
        result_done(&r);
}

static void test_names_and_clashes(void)
{
        const char *files[] = {
                "a", "autossh -L 5000:a:1 h.example.org\nautossh -L 5000:a:1 h.example.org\n"
                     "AUTOSSH_GATETIME=5 autossh -L 127.0.0.2:5000:a:1 -L 127.0.0.2:5000:b:1 h.example.org\n"
                     "export AUTOSSH_GATETIME=7\nexec /usr/lib/autossh/autossh -L 5001:a:1 h.example.org\n",
                NULL,
        };
        struct result r = import(files);

        test_assert(r.errors == 0);
        has(r, "name = \"h-5000\";\n    host");
        has(r, "name = \"h-5000-2\";\n    enabled = false;\n");
        has(r, "of tunnel h-5000");
        has(r, "name = \"h-5000-3\";\n    enabled = false;\n");
        has(r, "of this tunnel");
        has(r, "gatetime = 5;");
        has(r, "name = \"h-5001\";\n    host = \"h.example.org\";\n    local_forwards = ( \"5001:a:1\" );\n"
               "    gatetime = 7;\n");
        result_done(&r);
}

static void test_refused(void)
{
        static const char *const lines[] = {
                "autossh -oProxyCommand=nc\\ %h\\ %p h",
                "autossh -o 'proxycommand nc %h %p' h",
                "autossh -o KnownHostsCommand=/bin/x h",
                "autossh -M 0 -L 1:a:2 h; rm -rf /",
                "autossh -L $(id):a:2 h",
                "autossh -L \"`id`\":a:2 h",
                "autossh h | tee x",
                "autossh h > x",
                "autossh h < x",
                "autossh h &",
                "bash -c 'autossh -L 1:a:2 h'",
                "sudo autossh h",
                "autossh -l -oProxyCommand=x h",
                "autossh -- -oProxyCommand=x",
                "autossh -J -oProxyCommand=x h",
                "autossh -L 99999:a:1 h",
                "autossh -p 0 h",
                "autossh -i -x h",
                "autossh -o Host=x h",
                "autossh -O exit h",
                "autossh -W a:1 h",
                "autossh -Z h",
                "autossh -L",
                "autossh -M 0",
                "autossh 'h;x'",
                "autossh u\\;x@h",
        };

        for (size_t i = 0; i < ELEMENTSOF(lines); i++) {
                const char *files[] = { "bad.sh", lines[i], NULL };
                struct result r = import(files);

                if (r.errors != 1)
                        printf("#   not refused: %s\n", lines[i]);
                test_assert(r.errors == 1);
                test_assert(r.first_error && strncmp(r.first_error, "bad.sh:1: ", 10) == 0);
                lacks(r, "{");
                result_done(&r);
        }
        {
                const char *files[] = { "u.service", "[Service]\nExecStart=/bin/sh -c 'autossh h'\n",
                                        "v.service", "[Service]\nExecStart=autossh h ; rm x\n",
                                        "w.service", "[Service]\nExecStart=autossh -o \"LocalCommand=x\" h\n",
                                        "x.service", "[Service]\nExecStart=autossh %h\n",
                                        "y.service", "[Service]\nDescription=none\n", NULL };
                struct result r = import(files);

                test_assert(r.errors == 5);
                lacks(r, "{");
                result_done(&r);
        }
}

static void test_escaping(void)
{
        const char *files[] = { "e.service", "[Unit]\nDescription=a\\nb\n[Service]\n"
                                "ExecStart=autossh -o \"SetEnv=A=\\\"q\\\"\" h.example.org \"x\\ny\"\n", NULL };
        struct result r = import(files);

        test_assert(r.errors == 0);
        has(r, "# a\\nb\n");
        has(r, "ssh_options = ( \"SetEnv=A=\\\"q\\\"\" );");
        has(r, "remote command \"x\\ny\" dropped");
        result_done(&r);
}

TEST_MAIN(TEST(test_unit_words), TEST(test_shell_words), TEST(test_lines), TEST(test_seed_setups),
          TEST(test_options), TEST(test_units), TEST(test_names_and_clashes), TEST(test_refused),
          TEST(test_escaping))
