/* SPDX-License-Identifier: MIT */
/* test-reload-plan: a configuration applied as a plan (supervisor_apply.c: everything that
 * can fail is made first, then the point of no return) is all or nothing. Every allocation
 * of a reload's preparation is made to fail in turn (the linker's --wrap, tests/meson.build:
 * this program's malloc, calloc, realloc, strdup, strndup, asprintf and vasprintf go through
 * the wrappers below): each time the apply fails with -ENOMEM and every running tunnel,
 * connection and ssh pid is exactly as it was, nothing started or stopped; then the same
 * configuration, applied without a failure, takes effect. In-process, on the real loop,
 * with fake-ssh children. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "conn_internal.h"
#include "supervisor_internal.h"
#include "test-engine.h"
#include "test.h"

#define WAIT 3.0                /* the most a step may take on a loaded machine; a pass takes ms */

/* ---- allocation failure, injected ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_vasprintf(char **ret, const char *fmt, va_list ap);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_asprintf(char **ret, const char *fmt, ...);
int __wrap_vasprintf(char **ret, const char *fmt, va_list ap);

static long fail_at;                    /* the allocation that fails (1: the first); 0: none */
static long allocations;                /* counted since armed, before the point of no return */
static bool fired;
static struct supervisor *sup;
static const struct config *applying;   /* the configuration being applied */

/* Does this allocation fail? Only while armed, and only before the point of no return
 * (the supervisor has not taken the new configuration yet): after it, nothing may fail,
 * and nothing does in this test. */
static bool inject(void)
{
        if (!fail_at || fired || supervisor_config(sup) == applying)
                return false;
        if (++allocations < fail_at)
                return false;
        fired = true;
        errno = ENOMEM;
        return true;
}

void *__wrap_malloc(size_t n) { return inject() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) { return inject() ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t n) { return inject() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return inject() ? NULL : __real_strdup(s); }
char *__wrap_strndup(const char *s, size_t n) { return inject() ? NULL : __real_strndup(s, n); }
int __wrap_vasprintf(char **ret, const char *fmt, va_list ap) { return inject() ? -1 : __real_vasprintf(ret, fmt, ap); }

int __wrap_asprintf(char **ret, const char *fmt, ...)
{
        va_list ap;
        int r;

        if (inject())
                return -1;
        va_start(ap, fmt);
        r = __real_vasprintf(ret, fmt, ap);
        va_end(ap);
        return r;
}

/* ---- what must not change ---- */

#define HOSTS "ra", "rb", "rs", "rn", "rt"
#define MAX_TUNNELS 8

struct snap_tunnel {
        struct tunnel *t;
        char name[16];
        enum tunnel_state state;
        pid_t pid;
        struct conn *conn;
        enum conn_state conn_state;
        struct tunnel_spec spec, conn_spec;
        size_t n_forwards;
        enum forward_state forwards[4];
};
struct snap {
        const struct config *config;
        const char *ssh;
        int max_parallel_starts;
        double stop_timeout;
        size_t n;
        struct snap_tunnel t[MAX_TUNNELS];
        size_t n_conns, n_retiring;
        struct conn *conns[MAX_TUNNELS];
        size_t fake_lines;              /* every start, exit, term, open and close of fake-ssh */
        size_t runtime_files;
};

static size_t count_fake_lines(void)
{
        static const char *const hosts[] = { HOSTS };
        static const char *const what[] = { "start", "exit", "term", "open", "close" };
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(hosts); i++)
                for (size_t k = 0; k < ELEMENTSOF(what); k++)
                        n += fake_count(hosts[i], what[k], 0, NULL);
        return n;
}

static size_t count_files(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        size_t n = 0;

        if (!d)
                return 0;
        while ((e = readdir(d)))
                n += e->d_name[0] != '.';
        closedir(d);
        return n;
}

static void snap_done(struct snap *s)
{
        for (size_t i = 0; i < s->n; i++) {
                tunnel_spec_done(&s->t[i].spec);
                tunnel_spec_done(&s->t[i].conn_spec);
        }
        s->n = 0;
}

static void snap_take(struct snap *s)
{
        *s = (struct snap){
                .config = sup->config,
                .ssh = sup->conn_ctx.ssh,
                .max_parallel_starts = sup->starts.max,
                .stop_timeout = sup->conn_ctx.stop_timeout,
                .n_conns = sup->n_conns,
                .n_retiring = sup->n_retiring,
                .fake_lines = count_fake_lines(),
                .runtime_files = count_files(engine_runtime_dir()),
        };
        for (size_t i = 0; i < sup->n_tunnels && i < MAX_TUNNELS; i++) {
                struct snap_tunnel *x = &s->t[s->n++];
                struct tunnel *t = sup->tunnels[i];
                struct tunnel_status st;

                tunnel_get_status(t, now_mono(), &st);
                *x = (struct snap_tunnel){
                        .t = t,
                        .state = st.state,
                        .pid = st.pid,
                        .conn = tunnel_get_conn(t),
                        .conn_state = tunnel_get_conn(t) ? conn_get_state(tunnel_get_conn(t)) : _CONN_STATE_MAX,
                        .n_forwards = st.n_forwards,
                };
                snprintf(x->name, sizeof(x->name), "%s", st.name);
                for (size_t k = 0; k < st.n_forwards && k < ELEMENTSOF(x->forwards); k++)
                        x->forwards[k] = tunnel_forward_status(&st, k)->state;
                test_assert(tunnel_spec_copy(tunnel_get_spec(t), &x->spec) == 0);
                if (x->conn)
                        test_assert(tunnel_spec_copy(conn_get_spec(x->conn), &x->conn_spec) == 0);
        }
        for (size_t i = 0; i < sup->n_conns && i < MAX_TUNNELS; i++)
                s->conns[i] = sup->conns[i];
}

/* Everything as it was in s; false (and why, once) if not. */
static bool snap_same(const struct snap *s, long k)
{
        int before = test_failed_checks;

        test_assert(sup->config == s->config);
        test_assert(sup->conn_ctx.ssh == s->ssh);
        test_assert(sup->starts.max == s->max_parallel_starts);
        test_assert(sup->conn_ctx.stop_timeout == s->stop_timeout);
        test_assert(sup->n_tunnels == s->n);
        test_assert(sup->n_conns == s->n_conns);
        test_assert(sup->n_retiring == s->n_retiring);
        for (size_t i = 0; i < s->n_conns && i < sup->n_conns; i++)
                test_assert(sup->conns[i] == s->conns[i]);
        for (size_t i = 0; i < s->n && i < sup->n_tunnels; i++) {
                const struct snap_tunnel *x = &s->t[i];
                struct tunnel *t = sup->tunnels[i];
                struct tunnel_status st;

                tunnel_get_status(t, now_mono(), &st);
                test_assert(t == x->t);
                test_assert_streq(st.name, x->name);
                test_assert(st.state == x->state);
                test_assert(st.pid == x->pid);
                test_assert(tunnel_get_conn(t) == x->conn);
                test_assert(!x->conn || conn_get_state(x->conn) == x->conn_state);
                test_assert(tunnel_spec_equal(tunnel_get_spec(t), &x->spec));
                test_assert(!x->conn || tunnel_spec_equal(conn_get_spec(x->conn), &x->conn_spec));
                test_assert(st.n_forwards == x->n_forwards);
                for (size_t f = 0; f < st.n_forwards && f < ELEMENTSOF(x->forwards); f++)
                        test_assert(tunnel_forward_status(&st, f)->state == x->forwards[f]);
        }
        test_assert(count_fake_lines() == s->fake_lines);       /* no ssh started or stopped, no forward asked */
        test_assert(count_files(engine_runtime_dir()) == s->runtime_files);
        if (test_failed_checks == before)
                return true;
        printf("#   …with allocation %ld of the reload's preparation failing\n", k);
        return false;
}

/* ---- the reloads ---- */

static bool stopped;

static void on_stopped(void *userdata)
{
        (void)userdata;
        stopped = true;
}

static bool is_stopped(void *p)
{
        (void)p;
        return stopped;
}

#define FWD(port) "\"127.0.0.1:" #port ":127.0.0.1:1\""
#define GLOBALS "stop_timeout = 0.5; defaults = { gatetime = 0; restart_delay = 0.1; restart_delay_max = 1; drain_timeout = 5; };\n"

static struct config *first_config(void)
{
        return engine_config(GLOBALS "tunnels = (\n"
                "{ name = \"ra\"; host = \"ra\"; local_forwards = ( " FWD(15401) " ); },\n"
                "{ name = \"rb\"; host = \"rb\"; local_forwards = ( " FWD(15402) " ); },\n"
                "{ name = \"rs1\"; host = \"rs\"; share_connection = true; local_forwards = ( " FWD(15403) " ); },\n"
                "{ name = \"rs2\"; host = \"rs\"; share_connection = true; local_forwards = ( " FWD(15404) " ); }\n"
                ");");
}

/* rn new (first), ra a forward more and new supervision, rb gone, the shared rs new
 * supervision (its connection follows), a new shared group rt. */
#define SECOND "tunnels = (\n" \
        "{ name = \"rn\"; host = \"rn\"; local_forwards = ( " FWD(15406) " ); },\n" \
        "{ name = \"ra\"; host = \"ra\"; restart_delay = 0.2; local_forwards = ( " FWD(15401) ", " FWD(15405) " ); },\n" \
        "{ name = \"rs1\"; host = \"rs\"; share_connection = true; gatetime = 0.1; local_forwards = ( " FWD(15403) " ); },\n" \
        "{ name = \"rs2\"; host = \"rs\"; share_connection = true; gatetime = 0.1; local_forwards = ( " FWD(15404) " ); },\n" \
        "{ name = \"rt1\"; host = \"rt\"; share_connection = true; local_forwards = ( " FWD(15407) " ); },\n" \
        "{ name = \"rt2\"; host = \"rt\"; share_connection = true; local_forwards = ( " FWD(15408) " ); }\n" \
        ");"

static struct config *second_config(void)
{
        return engine_config(GLOBALS SECOND);
}

static char other_ssh[128];

/* The same, with another ssh program: every connection's ssh command line changes. */
static struct config *third_config(void)
{
        return engine_config_ssh(other_ssh, GLOBALS SECOND);
}

static bool all_up(void *p)
{
        (void)p;
        for (size_t i = 0; i < sup->n_tunnels; i++)
                if (tunnel_get_state(sup->tunnels[i]) != TUNNEL_UP)
                        return false;
        return sup->n_retiring == 0;
}

/* Every connection runs an ssh of the third configuration's program. */
static bool all_handed_over(void *p)
{
        (void)p;
        for (size_t i = 0; i < sup->n_conns; i++)
                if (conn_get_next_pid(sup->conns[i]) || conn_get_state(sup->conns[i]) != CONN_UP ||
                    strcmp(sup->conns[i]->setup.ssh, other_ssh) != 0)
                        return false;
        return all_up(NULL);
}

/* Apply make()'s configuration with allocation 1, 2, … of its preparation failing, until
 * one that does not fail: the number of allocations made to fail. */
static long apply_failing_each_allocation(struct config *(*make)(void))
{
        struct snap before;
        long k;

        snap_take(&before);
        for (k = 1; k < 100000; k++) {
                struct config *c = make();
                int r;

                test_assert(c);
                if (!c)
                        break;
                applying = c;
                allocations = 0;
                fired = false;
                fail_at = k;
                r = supervisor_apply(sup, c);
                fail_at = 0;
                if (!fired) {
                        test_assert(r == 0);    /* nothing failed: applied */
                        if (r < 0)
                                config_free(c);
                        break;
                }
                test_assert(r == -ENOMEM);
                if (r >= 0) {
                        printf("#   allocation %ld failed, and the configuration was applied anyway\n", k);
                        break;
                }
                config_free(c);
                ev_run(engine_loop(), EVRUN_NOWAIT);   /* whatever a failed plan left armed */
                if (!snap_same(&before, k))
                        break;
        }
        applying = NULL;
        snap_done(&before);
        return k - 1;
}

static void test_failed_plan_changes_nothing(void)
{
        struct supervisor_listener l = { .stopped = on_stopped };
        struct tunnel *ra, *rs1, *rs2;
        pid_t ra_pid, rs_pid, new_pid;
        long failures;

        fake_plan("ra", "0 30 auth");
        fake_plan("rb", "0 30 auth");
        fake_plan("rs", "0 30 auth");
        fake_plan("rn", "0 30 auth");
        fake_plan("rt", "0 30 auth");
        snprintf(other_ssh, sizeof(other_ssh), "%s/other-ssh", engine_fake_dir());
        test_assert(symlink(engine_fake_ssh(), other_ssh) == 0);
        if (supervisor_new(engine_loop(), first_config(), engine_runtime_dir(), &sup) < 0) {
                test_assert(sup);
                return;
        }
        test_assert(supervisor_add_listener(sup, &l) == 0);
        test_assert(engine_run_until(all_up, NULL, WAIT));
        ra = supervisor_find(sup, "ra");
        rs1 = supervisor_find(sup, "rs1");
        rs2 = supervisor_find(sup, "rs2");
        if (!ra || !rs1 || !rs2)
                goto done;
        ra_pid = conn_get_pid(tunnel_get_conn(ra));
        rs_pid = conn_get_pid(tunnel_get_conn(rs1));

        /* tunnels added, removed, changed in place, a shared group's supervision */
        failures = apply_failing_each_allocation(second_config);
        printf("# second configuration: %ld allocations of its preparation failed in turn\n", failures);
        test_assert(failures >= 20);
        test_assert(supervisor_count(sup) == 6);
        test_assert(engine_run_until(all_up, NULL, WAIT));
        test_assert(supervisor_find(sup, "rb") == NULL);
        test_assert(supervisor_find(sup, "ra") == ra && supervisor_find(sup, "rs1") == rs1);
        test_assert(conn_get_pid(tunnel_get_conn(ra)) == ra_pid);       /* the same ssh… */
        test_assert(tunnel_get_conn(rs1) == tunnel_get_conn(rs2));
        test_assert(conn_get_pid(tunnel_get_conn(rs2)) == rs_pid);
        test_assert(conn_get_spec(tunnel_get_conn(ra))->sup.restart_delay == 0.2);  /* …its new supervision */
        test_assert(conn_get_spec(tunnel_get_conn(rs1))->sup.gatetime == 0.1);
        test_assert(fake_count("ra", "open", ra_pid, "L 15401") == 1);  /* kept, not asked again */
        test_assert(fake_count("ra", "open", ra_pid, "L 15405 ok") == 1);
        test_assert(fake_count("rb", "term", 0, NULL) == 1);
        test_assert(fake_count("ra", "start", 0, NULL) == 1 && fake_count("rs", "start", 0, NULL) == 1);

        /* a new ssh program: every connection's command line changes */
        failures = apply_failing_each_allocation(third_config);
        printf("# third configuration: %ld allocations of its preparation failed in turn\n", failures);
        test_assert(failures >= 5);
        test_assert(engine_run_until(all_handed_over, NULL, WAIT));
        test_assert(all_up(NULL));
        new_pid = conn_get_pid(tunnel_get_conn(ra));
        test_assert(new_pid > 0 && new_pid != ra_pid);          /* make-before-break to the new ssh */
        test_assert(fake_count("ra", "start", 0, NULL) == 2);
        test_assert(supervisor_count(sup) == 6);
done:
        supervisor_shutdown(sup);
        test_assert(engine_run_until(is_stopped, NULL, WAIT));
        sup = supervisor_free(sup);
}

int main(void)
{
        static const struct test_case cases[] = {
                TEST(test_failed_plan_changes_nothing),
        };
        int r;

        engine_init();
        r = test_run(cases, ELEMENTSOF(cases));
        engine_finish();
        return r;
}
