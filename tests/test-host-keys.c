/* SPDX-License-Identifier: MIT */
/* Pinned host keys: each key checked down to its blob (host_key.c), the known_hosts text
 * and the options that make ssh and the jump hosts use it (known_hosts.c, ssh_argv.c,
 * jump_config.c), and the settings that contradict them (config_pins.c). */
#include "config.h"
#include "host_key.h"
#include "jump_config.h"
#include "known_hosts.h"
#include "ssh_argv.h"
#include "test.h"

#define ED25519 "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBfoBwzEOkvokMUJnwVSdoAd/nI6hnC7/leJL6qanpfd"
#define ECDSA256 "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBM/0kb/r1e0+fee8BPgJVtwz02ls1TaAYTqtVeRWBNmSA3hQaSvTHmtCxvPgaKhryERF951oO8D5Upce23+ixGA="
#define ECDSA384 "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBL0LuwEbmhsY7G6R4hU/0e3qi6Jk7ICEzL+yQVcEXfmfr3fpEjTnopYzhRdmHizeVZrnhsfpod3swu3CYB4lWnNHy7hudrFL1imjWtHFcHoiktQdZL7L4uNUXOwYLYZ8Ow=="
#define ECDSA521 "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBABX4/lrwbkAP3LpTupSShPBiwnc7lg5r/EjBuw5BHeDwGNfWU3PuDXbPhr9voW7qTUyHKI3P6K1OxD38oWuMC43igDdAp2U8bi12CEU+b7wLCFpQlMJ4fkyymjLD1uz78Wn8an9Pp8j9jymbg10zqj3XSMbG6PjUmq2qfyafL3/GQhu6Q=="
#define RSA "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDEY0zAilyI/mUa3TO2Q8MGGWXRK8Ro6FFWGygJTlUBA3As7AdQtnVdg1ePmpdEpnszwz0Utm1PF5SopAsGLzKlzmva1H/tEn1VQ/lSH3J1aa/5jXxwjBvkXNb5WdyZ7d55B90bFrA4mYuIfwk4GxcR3TWwfLllCZSq6wzyhxjC9Q=="
#define ED25519_BLOB "AAAAC3NzaC1lZDI1NTE5AAAAIBfoBwzEOkvokMUJnwVSdoAd/nI6hnC7/leJL6qanpfd"

static void test_good_keys(void)
{
        test_assert(!host_key_validate(ED25519));
        test_assert(!host_key_validate(ED25519 " root@server"));       /* a .pub line, comment and all */
        test_assert(!host_key_validate("  " ED25519 "\tcomment with spaces"));
        test_assert(!host_key_validate(ECDSA256));
        test_assert(!host_key_validate(ECDSA384));
        test_assert(!host_key_validate(ECDSA521));
        test_assert(!host_key_validate(RSA));
        test_assert(!host_key_validate_jump("bastion.example.org " ED25519));
        test_assert(!host_key_validate_jump("127.0.0.1:2222 " ECDSA256 " c"));
        test_assert(!host_key_validate_jump("[127.0.0.1]:2222 " ED25519));
        test_assert(!host_key_validate_jump("[2001:db8::2]:22 " ED25519));
        test_assert(!host_key_validate_jump("2001:db8::2 " ED25519));
}

static void expect_bad(const char *key, bool with_host, const char *reason_part)
{
        const char *why = with_host ? host_key_validate_jump(key) : host_key_validate(key);

        if (!why || !strstr(why, reason_part)) {
                printf("#   %s\n#     got:      %s\n#     expected: …%s…\n", key, why ? why : "(accepted)", reason_part);
                test_failed_checks++;
        }
}

static void test_bad_keys(void)
{
        expect_bad("", false, "empty");
        expect_bad("ssh-ed25519", false, "must be KEYTYPE BASE64");
        expect_bad("ssh-ed448 " ED25519_BLOB, false, "unknown key type \"ssh-ed448\"");
        expect_bad("ssh-dss " ED25519_BLOB, false, "unknown key type");
        expect_bad("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBfoBwzEOkvokMUJnwVSdoAd/nI6hnC7/leJL6qanpf", false, "base64");
        expect_bad("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBfoBwzEOkvokMUJnwVSdoAd/nI6hnC7/leJL6qanp*d", false, "base64");
        expect_bad("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBfoBwzEOkvokMUJnwVSdoAd/nI6hnC7/leJL6qanpf=", false, "ends too early");
        /* the type word and the blob disagree */
        expect_bad("ssh-rsa " ED25519_BLOB, false, "of type ssh-ed25519, not ssh-rsa");
        expect_bad("ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBM/0kb/r1e0+fee8BPgJVtwz02ls1TaAYTqtVeRWBNmSA3hQaSvTHmtCxvPgaKhryERF951oO8D5Upce23+ixGA=",
                   false, "of type ecdsa-sha2-nistp256, not ecdsa-sha2-nistp384");
        /* "hello world!" is base64 of no key at all; "AAAAC3Nza…" cut short */
        expect_bad("ssh-ed25519 aGVsbG8gd29ybGQh", false, "");
        expect_bad("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBfoBwzEOkvokMUJ", false, "ends too early");
        /* a known_hosts line in host_keys: the host is the tunnel's own */
        expect_bad("[db.example.org]:1022 " ED25519, false, "names a host");
        expect_bad("ssh-ed25519 AAAA\x01", false, "control characters");
        /* jump_host_keys */
        expect_bad(ED25519, true, "HOST[:PORT] KEYTYPE BASE64");
        expect_bad("root@bastion " ED25519, true, "no user");
        expect_bad("bastion:99999 " ED25519, true, "port");
        expect_bad("bas*tion " ED25519, true, "characters");
        expect_bad("bastion ssh-rsa " ED25519_BLOB, true, "not ssh-rsa");
}

static struct config *load(const char *text, char **ret_errors)
{
        struct config_errors errs = {0};
        struct config *c = NULL;
        struct buf b = {0};

        (void)config_load_string(text, "t.conf", &c, &errs);
        for (size_t i = 0; i < errs.n; i++)
                buf_printf(&b, "%s%s", i ? "\n" : "", errs.lines[i]);
        config_errors_clear(&errs);
        buf_puts(&b, "");
        (void)buf_steal(&b, ret_errors);
        return c;
}

static void test_known_hosts_text(void)
{
        _cleanup_free_ char *errors = NULL, *text = NULL, *jump = NULL, *line = NULL;
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_config_free_ struct config *c = load(
                "tunnels = ( { name = \"db\"; host = \"db.example.org\"; port = 1022;\n"
                "  jump_host = \"admin@bastion:2222,[2001:db8::2]\";\n"
                "  host_keys = ( \"" ED25519 " root@db\", \"" RSA "\" );\n"
                "  jump_host_keys = ( \"bastion:2222 " ECDSA256 "\", \"2001:db8::2 " ED25519 "\" ); },\n"
                "  { name = \"plain\"; host = \"h\"; } );\n", &errors);

        test_assert_streq(errors, "");
        if (!c)
                return;
        test_assert(known_hosts_render(&c->tunnels[0], &text) == 0);
        test_assert_streq(text,
                "# Written by tunneld for tunnel db at every start, from its host_keys and\n"
                "# jump_host_keys: ssh checks the server's key against these lines alone.\n"
                "[db.example.org]:1022 " ED25519 "\n"
                "[db.example.org]:1022 " RSA "\n"
                "[bastion]:2222 " ECDSA256 "\n"
                "2001:db8::2 " ED25519 "\n");
        /* the destination through its alias, the hops through the Host block */
        test_assert(ssh_argv_build(&c->tunnels[0], "ssh", "/run/t.d/db.ssh_config", "/run/t d%/db.known_hosts",
                                   "/run/t.d/db.mux0", &argv) == 0);
        test_assert(shell_quote_argv(argv, &line) == 0);
        test_assert(line && strstr(line, " -o 'UserKnownHostsFile=\"/run/t d%%/db.known_hosts\"' -o GlobalKnownHostsFile=/dev/null "
                                         "-o StrictHostKeyChecking=yes -o UpdateHostKeys=no "
                                         "-o HostKeyAlias=[db.example.org]:1022 -p 1022 "));
        test_assert(jump_config_render(&c->tunnels[0], "/run/t.d/db.known_hosts", &jump) == 0);
        test_assert(jump && strstr(jump, "Host bastion 2001:db8::2\n\tBatchMode yes\n"));
        test_assert(jump && strstr(jump, "\tUserKnownHostsFile \"/run/t.d/db.known_hosts\"\n\tGlobalKnownHostsFile /dev/null\n"
                                         "\tStrictHostKeyChecking yes\n\tUpdateHostKeys no\n"));
        /* without host keys: nothing changes */
        free(text);
        text = NULL;
        test_assert(known_hosts_render(&c->tunnels[1], &text) == 0 && !text);
        strv_free(argv);
        argv = NULL;
        test_assert(ssh_argv_build(&c->tunnels[1], "ssh", NULL, NULL, "/run/t.d/x.mux0", &argv) == 0);
        for (char **a = argv; a && *a; a++)
                test_assert(!strstr(*a, "KnownHosts") && !strstr(*a, "HostKeyAlias"));
}

static void test_port_22_and_alias(void)
{
        _cleanup_free_ char *errors = NULL, *a = NULL, *b = NULL;
        _cleanup_config_free_ struct config *c = load(
                "tunnels = ( { name = \"a\"; host = \"Host.Example\"; port = 22; host_keys = ( \"" ED25519 "\" ); },\n"
                "  { name = \"b\"; host = \"h\"; port = 2200; ssh_options = ( \"HostKeyAlias=myalias\" );\n"
                "    host_keys = ( \"" ED25519 "\" ); } );\n", &errors);

        test_assert_streq(errors, "");
        if (!c)
                return;
        test_assert(known_hosts_render(&c->tunnels[0], &a) == 0);
        test_assert(a && strstr(a, "\nHost.Example ssh-ed25519 "));
        test_assert(known_hosts_render(&c->tunnels[1], &b) == 0);
        test_assert(b && strstr(b, "\nmyalias ssh-ed25519 "));
}

static void test_config_errors(void)
{
        _cleanup_free_ char *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL;
        struct config *c;

        /* syntax: FILE:LINE of the element, the setting */
        c = load("tunnels = ( { name = \"a\"; host = \"h\";\n"
                 "  host_keys = ( \"" ED25519 "\",\n"
                 "                \"ssh-rsa " ED25519_BLOB "\" ); } );\n", &e1);
        test_assert(!c);
        test_assert(strncmp(e1, "t.conf:3: a.host_keys: \"ssh-rsa AAAA", 34) == 0);
        test_assert(strstr(e1, "of type ssh-ed25519, not ssh-rsa"));
        config_free(c);
        /* contradictions */
        c = load("tunnels = ( { name = \"a\"; host = \"h\"; host_keys = ( \"" ED25519 "\" );\n"
                 "  ssh_options = ( \"UserKnownHostsFile=/x\", \"StrictHostKeyChecking=no\", \"StrictHostKeyChecking=yes\" ); } );\n",
                 &e2);
        test_assert(!c);
        test_assert_streq(e2,
                "t.conf:1: a.ssh_options: \"UserKnownHostsFile=/x\" contradicts host_keys: tunneld gives ssh a "
                "known_hosts file of its own, with the pinned keys alone: remove it\n"
                "t.conf:1: a.ssh_options: \"StrictHostKeyChecking=no\" contradicts host_keys: a pinned key is checked "
                "strictly (tunneld sets StrictHostKeyChecking=yes): remove it");
        config_free(c);
        /* jump_host_keys: a hop without a key (an entry for j1 at another port is not its;
         * entries for jump hosts a tunnel does not use are fine, as in defaults) */
        c = load("tunnels = ( { name = \"a\"; host = \"h\"; jump_host = \"u@j1:2222,j2\";\n"
                 "  jump_host_keys = ( \"j1:2200 " ED25519 "\" ); },\n"
                 "  { name = \"b\"; host = \"h\"; jump_host_keys = ( \"j1 " ED25519 "\" ); } );\n", &e3);
        test_assert(!c);
        test_assert(strstr(e3, "t.conf:1: a.jump_host_keys: has no key for the jump host u@j1:2222:"));
        test_assert(strstr(e3, "t.conf:1: a.jump_host_keys: has no key for the jump host j2:"));
        test_assert(!strstr(e3, "b.jump_host_keys"));
        config_free(c);
        /* with jump_host_keys alone, the tunnel's own known_hosts options are the destination's */
        c = load("tunnels = ( { name = \"a\"; host = \"h\"; jump_host = \"j1\"; jump_host_keys = ( \"j1 " ED25519 "\" );\n"
                 "  ssh_options = ( \"UserKnownHostsFile=/x\" ); } );\n", &e4);
        test_assert_streq(e4, "");
        config_free(c);
}

/* A change of host keys is a change of ssh's command line: a reload restarts the tunnel. */
static void test_equality(void)
{
        _cleanup_free_ char *e = NULL;
        _cleanup_config_free_ struct config *c = load(
                "tunnels = ( { name = \"a\"; host = \"h\"; host_keys = ( \"" ED25519 "\" ); },\n"
                "  { name = \"a2\"; host = \"h\"; host_keys = ( \"" RSA "\" ); } );\n", &e);
        struct tunnel_spec x, y;

        test_assert_streq(e, "");
        if (!c)
                return;
        test_assert(tunnel_spec_copy(&c->tunnels[0], &x) == 0);
        test_assert(tunnel_spec_copy(&c->tunnels[1], &y) == 0);
        free(y.name);
        y.name = strdup("a");
        test_assert(tunnel_spec_same_ssh(&x, &x));
        test_assert(!tunnel_spec_same_ssh(&x, &y));
        test_assert(!tunnel_spec_equal(&x, &y));
        tunnel_spec_done(&x);
        tunnel_spec_done(&y);
}

TEST_MAIN(TEST(test_good_keys), TEST(test_bad_keys), TEST(test_known_hosts_text), TEST(test_port_22_and_alias),
          TEST(test_config_errors), TEST(test_equality))
