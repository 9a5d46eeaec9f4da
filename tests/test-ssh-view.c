/* SPDX-License-Identifier: MIT */
/* ssh_view and the load's use of it: ssh -G's output parsed, queries ended by the load's
 * deadline, ssh asked once per ssh configuration (not per tunnel, and never with the
 * forwards), a tunnel's forwards as ssh sets them up (its own, then its file's), one error
 * for a load whose ssh -G did not answer in time, and the reload report that carries the
 * views to the daemon. "ssh" here is a small script that answers like ssh -G and counts
 * its calls: the end-to-end tests run the real one. */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "reload_job.h"
#include "ssh_view.h"
#include "test.h"

static char dir[] = "/tmp/tunneld-test-XXXXXX";
static char fake_ssh[128], calls[128], ssh_config[128], conf[128];

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

/* ssh -G as the tests need it: the destination (last word) decides what it prints. */
static void setup(void)
{
        char text[1024];

        if (fake_ssh[0])
                return;
        test_assert(mkdtemp(dir) != NULL);
        snprintf(fake_ssh, sizeof(fake_ssh), "%s/ssh", dir);
        snprintf(calls, sizeof(calls), "%s/calls", dir);
        snprintf(ssh_config, sizeof(ssh_config), "%s/ssh_config", dir);
        snprintf(conf, sizeof(conf), "%s/tunneld.conf", dir);
        snprintf(text, sizeof(text),
                 "#!/bin/sh\n"
                 "echo \"$*\" >> %s\n"
                 "for last; do :; done\n"
                 "case \"$last\" in\n"
                 "slow) sleep 30 ;;\n"
                 "alias) printf 'hostname 10.0.0.1\\nport 2222\\nuser u\\nlocalforward [127.0.0.1]:5000 [db]:3306\\n"
                 "localforward 7000 [db]:1\\nremoteforward 9000 [localhost]:80\\ndynamicforward 1080\\n"
                 "gatewayports no\\n' ;;\n"
                 "fork) printf 'hostname %%s\\nport 22\\nforkafterauthentication yes\\n' \"$last\" ;;\n"
                 "*) printf 'hostname %%s\\nport 22\\n' \"$last\" ;;\n"
                 "esac\n",
                 calls);
        write_file(fake_ssh, text, 0700);
        write_file(ssh_config, "# what the fake ssh says of it is in the script\n", 0600);
}

static size_t count_calls(void)
{
        FILE *f = fopen(calls, "re");
        size_t n = 0;
        int ch;

        if (!f)
                return 0;
        while ((ch = fgetc(f)) != EOF)
                n += ch == '\n';
        fclose(f);
        return n;
}

static bool calls_contain(const char *word)
{
        char line[4096];
        FILE *f = fopen(calls, "re");
        bool found = false;

        if (!f)
                return false;
        while (!found && fgets(line, sizeof(line), f))
                found = strstr(line, word) != NULL;
        fclose(f);
        return found;
}

static int load_known(const char *text, enum config_ask_ssh ask, double timeout, const struct config_views *known,
                      struct config **ret, char **ret_errors)
{
        struct config_load_options opts = { .ask_ssh = ask, .load_timeout = timeout, .known = known };
        struct config_errors errs = {0};
        struct buf b = {0};
        int r;

        write_file(conf, text, 0600);
        (void)unlink(calls);
        *ret = NULL;
        r = config_load(conf, &opts, ret, &errs);
        for (size_t i = 0; i < errs.n; i++)
                buf_printf(&b, "%s%s", i ? "\n" : "", errs.lines[i]);
        config_errors_clear(&errs);
        if (buf_steal(&b, ret_errors) < 0 || !*ret_errors)
                *ret_errors = strdup("");
        return r;
}

static int load(const char *text, enum config_ask_ssh ask, double timeout, struct config **ret, char **ret_errors)
{
        return load_known(text, ask, timeout, NULL, ret, ret_errors);
}

static const struct tunnel_spec *find(const struct config *c, const char *name)
{
        for (size_t i = 0; c && i < c->n_tunnels; i++)
                if (strcmp(c->tunnels[i].name, name) == 0)
                        return &c->tunnels[i];
        return NULL;
}

static void test_parse(void)
{
        struct ssh_view v;

        test_assert(ssh_view_parse("user u\nhostname 10.0.0.1\nport 2222\n"
                                   "localforward [127.0.0.1]:5000 [db]:3306\n"
                                   "localforward [::1]:5001 /run/db.sock\n"
                                   "dynamicforward [::1]:5001\n"           /* ssh's twin of the -L above */
                                   "remoteforward 9000 [socks]:0\n"
                                   "remoteforward [*]:9001 [localhost]:80\n"
                                   "dynamicforward 1080\n"
                                   "forkafterauthentication no\ngatewayports yes\n"
                                   "nonsense\n", &v) == 0);
        test_assert(v.ran && !v.error && !v.timed_out);
        test_assert_streq(v.hostname, "10.0.0.1");
        test_assert_streq(v.user, "u");
        test_assert(v.port == 2222);
        test_assert(strv_length(v.local_forwards) == 2);
        test_assert_streq(v.local_forwards[0], "127.0.0.1:5000:db:3306");
        test_assert_streq(v.local_forwards[1], "[::1]:5001:/run/db.sock");
        test_assert(strv_length(v.remote_forwards) == 2);
        test_assert_streq(v.remote_forwards[0], "9000");
        test_assert_streq(v.remote_forwards[1], "*:9001:localhost:80");
        test_assert(strv_length(v.dynamic_forwards) == 1);
        test_assert_streq(v.dynamic_forwards[0], "1080");
        test_assert(!v.fork_after_authentication && v.gateway_ports);
        ssh_view_done(&v);
}

/* The deadline ends what is still running and what never started; the rest is answered. */
static void test_query_deadline(void)
{
        char *fast[] = { fake_ssh, (char *)"--", (char *)"fast", NULL };
        char *slow[] = { fake_ssh, (char *)"--", (char *)"slow", NULL };
        char **const argvs[] = { slow, fast, slow, slow, slow, slow, slow, slow, slow, slow, fast };
        struct ssh_view views[ELEMENTSOF(argvs)];
        double t0 = now_mono();

        setup();
        test_assert(ssh_view_query(argvs, ELEMENTSOF(argvs), t0 + 1.0, views) == 0);
        test_assert(now_mono() - t0 < 10);
        test_assert(views[0].timed_out && !views[0].error);
        test_assert(!views[1].timed_out && !views[1].error && views[1].ran);
        test_assert_streq(views[1].hostname, "fast");
        /* the last waited behind eight slow ones for a slot: never started */
        test_assert(views[10].timed_out && !views[10].ran);
        for (size_t i = 0; i < ELEMENTSOF(views); i++)
                ssh_view_done(&views[i]);
}

/* 30 tunnels on 4 ssh configurations: ssh -G runs 4 times, never with a forward. The alias's
 * tunnel gets ssh's host and port, its own forwards first, then its file's that it does not
 * already have (written another way). */
static void test_once_per_configuration(void)
{
        struct buf b = {0};
        _cleanup_free_ char *text = NULL, *errors = NULL;
        struct config *c = NULL;
        const struct tunnel_spec *a, *t;

        setup();
        buf_printf(&b, "ssh = \"%s\";\ndefaults = { ssh_config_file = \"%s\"; };\ntunnels = (\n", fake_ssh, ssh_config);
        buf_printf(&b, "  { name = \"al\"; host = \"alias\"; local_forwards = ( \"127.0.0.1:5000:db:3306\", "
                       "\"6000:db:2\" ); dynamic_forwards = ( \"1081\" ); },\n");
        for (int i = 0; i < 27; i++)
                buf_printf(&b, "  { name = \"t%d\"; host = \"h%d\"; local_forwards = ( \"%d:db:1\" ); },\n", i, i % 2,
                           10000 + i);
        buf_printf(&b, "  { name = \"u\"; host = \"h0\"; user = \"other\"; },\n");
        buf_printf(&b, "  { name = \"off\"; host = \"h9\"; enabled = false; }\n);\n");
        test_assert(buf_steal(&b, &text) >= 0);
        test_assert(load(text, CONFIG_SSH_STRICT, 0, &c, &errors) == 0);
        test_assert_streq(errors, "");
        test_assert(count_calls() == 4);        /* alias, h0, h1, h0 as other; not the disabled h9 */
        test_assert(!calls_contain(" -L ") && !calls_contain(" -R ") && !calls_contain(" -D "));  /* words: the temporary directory may hold "-L" */
        test_assert(c && c->ssh_views.n == 4);
        a = find(c, "al");
        test_assert(a && a->ssh.viewed && a->ssh.port == 2222);
        if (a) {
                test_assert_streq(a->ssh.hostname, "10.0.0.1");
                test_assert(strv_length(a->ssh.local_forwards) == 3);
                if (strv_length(a->ssh.local_forwards) == 3) {
                        test_assert_streq(a->ssh.local_forwards[0], "127.0.0.1:5000:db:3306");
                        test_assert_streq(a->ssh.local_forwards[1], "6000:db:2");
                        test_assert_streq(a->ssh.local_forwards[2], "7000:db:1");
                }
                test_assert(strv_length(a->ssh.remote_forwards) == 1);
                test_assert(strv_length(a->ssh.dynamic_forwards) == 2);
        }
        t = find(c, "t3");
        test_assert(t && t->ssh.viewed && strv_length(t->ssh.local_forwards) == 1);
        if (t)
                test_assert_streq(t->ssh.local_forwards[0], "10003:db:1");
        t = find(c, "off");
        test_assert(t && !t->ssh.viewed);
        config_free(c);
}

/* What ssh says of a configuration is judged once, at its first tunnel, with the count. */
static void test_judged_once(void)
{
        _cleanup_free_ char *text = NULL, *errors = NULL, *expected = NULL;
        struct config *c = NULL;

        setup();
        test_assert(asprintf(&text, "ssh = \"%s\";\ndefaults = { ssh_config_file = \"%s\"; host = \"fork\"; };\n"
                             "tunnels = (\n { name = \"a\"; },\n { name = \"b\"; },\n { name = \"c\"; }\n);\n",
                             fake_ssh, ssh_config) > 0);
        test_assert(load(text, CONFIG_SSH_LENIENT, 0, &c, &errors) == -EINVAL);
        test_assert(asprintf(&expected, "%s:4: a.ssh_config_file: ForkAfterAuthentication=yes makes ssh go to the "
                             "background, and tunneld would see it exit at once; remove it (tunneld keeps ssh in the "
                             "foreground) (and 2 other tunnels with these ssh settings)", conf) > 0);
        test_assert_streq(errors, expected);
        test_assert(count_calls() == 1);
}

/* ssh -G not done within the load's limit: one error for the whole load, in the daemon's
 * lenient mode too (never "starting anyway" with some tunnels unjudged). */
static void test_whole_load_timeout(void)
{
        _cleanup_free_ char *text = NULL, *errors = NULL, *expected = NULL;
        struct config *c = NULL;
        double t0;

        setup();
        test_assert(asprintf(&text, "ssh = \"%s\";\ndefaults = { ssh_config_file = \"%s\"; };\n"
                             "tunnels = (\n { name = \"a\"; host = \"h1\"; },\n { name = \"s\"; host = \"slow\"; },\n"
                             " { name = \"b\"; host = \"h2\"; }\n);\n", fake_ssh, ssh_config) > 0);
        test_assert(asprintf(&expected, "%s:5: s.ssh_config_file: ssh -G did not answer within 1 s, the limit of one "
                             "load (ssh -G runs once per ssh configuration, 3 here; an ssh_config_file whose Match "
                             "exec hangs?): nothing is loaded", conf) > 0);
        for (enum config_ask_ssh ask = CONFIG_SSH_STRICT; ask <= CONFIG_SSH_LENIENT; ask++) {
                free(errors);
                t0 = now_mono();
                test_assert(load(text, ask, 1.0, &c, &errors) == -EINVAL);
                test_assert(now_mono() - t0 < 10);
                test_assert_streq(errors, expected);
                test_assert(!c);
        }
}

/* The reload's child sends the views, the daemon takes them: the same specs as asking ssh. */
static void test_report_round_trip(void)
{
        _cleanup_free_ char *text = NULL, *errors = NULL, *report = NULL, *swapped = NULL;
        struct config *asked = NULL, *taken = NULL;
        struct config_views views = {0};
        struct config_errors errs = {0};
        struct config_load_options opts = { .ask_ssh = CONFIG_SSH_SKIP, .views = &views };
        uint64_t digest = 0;
        int r = -1;
        char *k1, *k2;

        setup();
        test_assert(asprintf(&text, "ssh = \"%s\";\ndefaults = { ssh_config_file = \"%s\"; };\n"
                             "tunnels = (\n { name = \"al\"; host = \"alias\"; local_forwards = ( \"6000:db:2\" ); },\n"
                             " { name = \"b\"; host = \"h2\"; local_forwards = ( \"6001:db:2\" ); }\n);\n",
                             fake_ssh, ssh_config) > 0);
        test_assert(load(text, CONFIG_SSH_LENIENT, 0, &asked, &errors) == 0);
        test_assert(asked && reload_job_report(0, asked, NULL, &report) >= 0);
        test_assert(report && reload_job_parse_report(report, strlen(report), &views, &errs, &r, &digest) == 0);
        test_assert(r == 0 && views.n == 2 && asked && digest == asked->source_digest);
        test_assert(config_load(conf, &opts, &taken, &errs) == 0);
        test_assert(errs.n == 0 && taken && asked && taken->n_tunnels == asked->n_tunnels);
        for (size_t i = 0; taken && asked && i < taken->n_tunnels; i++)
                test_assert(tunnel_spec_equal(&taken->tunnels[i], &asked->tunnels[i]) &&
                            taken->tunnels[i].ssh.viewed);
        config_views_clear(&views);
        config_errors_clear(&errs);

        /* keys out of order: not a report of ours */
        k1 = report ? strstr(report, "\"key\":") : NULL;
        k2 = k1 ? strstr(k1 + 1, "\"key\":") : NULL;
        test_assert(k1 && k2);
        if (k1 && k2 && (swapped = strdup(report))) {
                /* the two keys differ after "F": swap the first byte that differs */
                size_t a = (size_t)(k1 - report) + 8, b = (size_t)(k2 - report) + 8;

                while (report[a] == report[b])
                        a++, b++;
                swapped[a] = report[b];
                swapped[b] = report[a];
                test_assert(reload_job_parse_report(swapped, strlen(swapped), &views, &errs, &r, &digest) == -EBADMSG);
        }
        config_free(asked);
        config_free(taken);
}

static void cleanup(void)
{
        char path[256];

        (void)unlink(fake_ssh);
        (void)unlink(calls);
        (void)unlink(ssh_config);
        (void)unlink(conf);
        snprintf(path, sizeof(path), "%s", dir);
        (void)rmdir(path);
}

static void run_cleanup(void)
{
        cleanup();
        test_assert(true);
}

/* A reload asks ssh again only what may have changed: the running configuration's answer
 * for an ssh_config_file stands while the file (and the ssh program) are the ones ssh read,
 * never for a file that includes others or has ssh run something (Match exec); and it
 * travels through the reload's report with its stamps. */
static void test_reload_asks_only_what_changed(void)
{
        _cleanup_free_ char *text = NULL, *errors = NULL, *report = NULL;
        struct config *a = NULL, *b = NULL, *c = NULL, *d = NULL;
        struct config_views from_report = {0};
        struct config_errors errs = {0};
        uint64_t digest;
        int r_child;

        setup();
        write_file(ssh_config, "# plain: what ssh says depends on this file alone\n", 0600);
        test_assert(asprintf(&text, "ssh = \"%s\";\ndefaults = { ssh_config_file = \"%s\"; };\n"
                             "tunnels = ( { name = \"al\"; host = \"alias\"; }, { name = \"b\"; host = \"h1\"; } );\n",
                             fake_ssh, ssh_config) > 0);
        test_assert(load(text, CONFIG_SSH_LENIENT, 0, &a, &errors) == 0);
        test_assert(count_calls() == 2);
        test_assert(a && a->ssh_views.n == 2 && a->ssh_views.v[0].reusable && a->ssh_views.v[0].file.ino != 0);
        /* through the report, as the daemon keeps them */
        test_assert(reload_job_report(0, a, &errs, &report) >= 0);
        test_assert(reload_job_parse_report(report, strlen(report), &from_report, &errs, &r_child, &digest) == 0);
        test_assert(from_report.n == 2 && from_report.v[1].reusable);
        free(errors);
        test_assert(load_known(text, CONFIG_SSH_LENIENT, 0, &from_report, &b, &errors) == 0);
        test_assert(count_calls() == 0);        /* nothing changed: ssh is not asked */
        test_assert(b && find(b, "al") && find(b, "al")->ssh.port == 2222);
        test_assert_streq(find(b, "al")->ssh.hostname, "10.0.0.1");
        test_assert(b && b->ssh_views.n == 2);
        /* the file changed: asked again */
        write_file(ssh_config, "# changed: another size, another time\n# and another line\n", 0600);
        free(errors);
        test_assert(load_known(text, CONFIG_SSH_LENIENT, 0, &from_report, &c, &errors) == 0);
        test_assert(count_calls() == 2);
        /* a file that includes another one, or runs something: asked every time */
        write_file(ssh_config, "Match exec true\n  Compression no\n", 0600);
        free(errors);
        config_free(c);
        c = NULL;
        test_assert(load_known(text, CONFIG_SSH_LENIENT, 0, NULL, &c, &errors) == 0);
        test_assert(c && c->ssh_views.n == 2 && !c->ssh_views.v[0].reusable);
        free(errors);
        test_assert(load_known(text, CONFIG_SSH_LENIENT, 0, &c->ssh_views, &d, &errors) == 0);
        test_assert(count_calls() == 2);
        config_views_clear(&from_report);
        config_errors_clear(&errs);
        config_free(a);
        config_free(b);
        config_free(c);
        config_free(d);
}

TEST_MAIN(TEST(test_parse), TEST(test_query_deadline), TEST(test_once_per_configuration), TEST(test_judged_once),
          TEST(test_reload_asks_only_what_changed),
          TEST(test_whole_load_timeout), TEST(test_report_round_trip), TEST(run_cleanup))
