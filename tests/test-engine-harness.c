/* SPDX-License-Identifier: MIT */
/* test-engine-harness: not a test of its own; what the engine tests share (test-engine.h). */
#include "test-engine.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

static char base_dir[64], fake_dir[96], runtime_dir[96];
static const char *fake_ssh;
static struct sockwatch *watch;
static double started;

void engine_init(void)
{
        fake_ssh = getenv("FAKE_SSH");
        if (!fake_ssh || access(fake_ssh, X_OK) < 0) {
                printf("Bail out! $FAKE_SSH is not fake-ssh (tests/meson.build sets it)\n");
                exit(1);
        }
        snprintf(base_dir, sizeof(base_dir), "/tmp/tunneld-engine.XXXXXX");
        if (!mkdtemp(base_dir)) {
                printf("Bail out! mkdtemp: %s\n", strerror(errno));
                exit(1);
        }
        snprintf(fake_dir, sizeof(fake_dir), "%s/fake", base_dir);
        snprintf(runtime_dir, sizeof(runtime_dir), "%s/run", base_dir);
        if (mkdir(fake_dir, 0700) < 0 || mkdir(runtime_dir, 0700) < 0 ||
            setenv("FAKE_SSH_DIR", fake_dir, 1) < 0) {
                printf("Bail out! %s: %s\n", base_dir, strerror(errno));
                exit(1);
        }
        log_open(LOG_TARGET_STDERR);
        log_set_max_level(getenv("ENGINE_TEST_DEBUG") ? LOG_DEBUG : LOG_INFO);
        (void)EV_DEFAULT;
        if (sockwatch_new(EV_DEFAULT, runtime_dir, &watch) < 0) {
                printf("Bail out! cannot watch %s\n", runtime_dir);
                exit(1);
        }
        started = now_mono();
}

static void remove_dir(const char *path)
{
        DIR *d = opendir(path);
        struct dirent *e;

        if (!d)
                return;
        while ((e = readdir(d))) {
                char child[512];
                struct stat st;

                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
                if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
                        remove_dir(child);
                else
                        (void)unlink(child);
        }
        closedir(d);
        (void)rmdir(path);
}

void engine_finish(void)
{
        watch = sockwatch_free(watch);
        if (getenv("ENGINE_TEST_KEEP"))
                printf("# kept %s\n", base_dir);
        else
                remove_dir(base_dir);
}

struct ev_loop *engine_loop(void) { return EV_DEFAULT; }
const char *engine_fake_ssh(void) { return fake_ssh; }
const char *engine_runtime_dir(void) { return runtime_dir; }
const char *engine_fake_dir(void) { return fake_dir; }
struct sockwatch *engine_watch(void) { return watch; }
double engine_now(void) { return now_mono() - started; }
bool engine_pid_alive(pid_t pid) { return pid > 0 && kill(pid, 0) == 0; }

static void on_time_up(struct ev_loop *loop, ev_timer *w, int revents)
{
        (void)loop;
        (void)revents;
        *(bool *)w->data = true;
}

struct until {
        bool (*done)(void *userdata);
        void *userdata;
};

/* Last before the loop blocks: what the supervisor let through in its own prepare watcher
 * (the start queue) may have made the condition true, and nothing would wake the loop. */
static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
        struct until *u = w->data;

        (void)revents;
        if (u->done && u->done(u->userdata))
                ev_break(loop, EVBREAK_ONE);
}

bool engine_run_until(bool (*done)(void *userdata), void *userdata, double timeout)
{
        struct ev_loop *loop = EV_DEFAULT;
        struct until u = { done, userdata };
        bool expired = false;
        ev_prepare p;
        ev_timer t;

        ev_timer_init(&t, on_time_up, timeout, 0.);
        t.data = &expired;
        ev_timer_start(loop, &t);
        ev_prepare_init(&p, on_prepare);
        ev_set_priority(&p, EV_MINPRI);
        p.data = &u;
        ev_prepare_start(loop, &p);
        while (!(done && done(userdata)) && !expired)
                ev_run(loop, EVRUN_ONCE);
        ev_prepare_stop(loop, &p);
        ev_timer_stop(loop, &t);
        /* what the test does next arms timers from the loop's time: the time now */
        ev_now_update(loop);
        return done && done(userdata);
}

void engine_run_for(double seconds)
{
        (void)engine_run_until(NULL, NULL, seconds);
}

void fake_plan(const char *host, const char *plan)
{
        char path[512];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s.plan", fake_dir, host);
        f = fopen(path, "we");
        if (!f) {
                printf("Bail out! %s: %s\n", path, strerror(errno));
                exit(1);
        }
        fprintf(f, "%s\n", plan);
        fclose(f);
}

/* Each line of host's log: "TIME WHAT PID REST". */
static size_t fake_scan(const char *host, const char *what, pid_t pid, const char *rest, size_t nth, pid_t *ret_pid)
{
        char path[512], line[512];
        size_t n = 0;
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s.log", fake_dir, host);
        f = fopen(path, "re");
        if (!f)
                return 0;
        while (fgets(line, sizeof(line), f)) {
                char w[16];
                int p, used = 0;
                double t;

                line[strcspn(line, "\n")] = '\0';
                if (sscanf(line, "%lf %15s %d %n", &t, w, &p, &used) < 3 || strcmp(w, what) != 0 ||
                    (pid && p != pid) || (rest && strncmp(line + used, rest, strlen(rest)) != 0))
                        continue;
                if (ret_pid && n == nth) {
                        *ret_pid = p;
                        break;
                }
                n++;
        }
        fclose(f);
        return n;
}

size_t fake_count(const char *host, const char *what, pid_t pid, const char *rest)
{
        return fake_scan(host, what, pid, rest, 0, NULL);
}

pid_t fake_start_pid(const char *host, size_t n)
{
        pid_t pid = 0;

        (void)fake_scan(host, "start", 0, NULL, n, &pid);
        return pid;
}

static struct config *config_with(const char *ssh, const char *fmt, va_list ap) _printf_(2, 0);
static struct config *config_with(const char *ssh, const char *fmt, va_list ap)
{
        struct config_errors errs = {0};
        struct config *c = NULL;
        char *body = NULL, *text = NULL;
        int r;

        r = vasprintf(&body, fmt, ap);
        if (r < 0 || asprintf(&text, "ssh = \"%s\";\n%s", ssh, body) < 0) {
                free(body);
                return NULL;
        }
        r = config_load_string(text, "engine-test.conf", &c, &errs);
        for (size_t i = 0; i < errs.n; i++)
                printf("#   config: %s\n", errs.lines[i]);
        config_errors_clear(&errs);
        free(body);
        free(text);
        ev_now_update(EV_DEFAULT);     /* loading took a while: timers armed next count from now */
        return r < 0 ? NULL : c;
}

struct config *engine_config(const char *fmt, ...)
{
        struct config *c;
        va_list ap;

        va_start(ap, fmt);
        c = config_with(fake_ssh, fmt, ap);
        va_end(ap);
        return c;
}

struct config *engine_config_ssh(const char *ssh, const char *fmt, ...)
{
        struct config *c;
        va_list ap;

        va_start(ap, fmt);
        c = config_with(ssh, fmt, ap);
        va_end(ap);
        return c;
}

void engine_conn_context(struct conn_context *ctx, double stop_timeout)
{
        *ctx = (struct conn_context){
                .loop = EV_DEFAULT,
                .ssh = fake_ssh,
                .stop_timeout = stop_timeout,
                .runtime_dir = runtime_dir,
                .control_dir = runtime_dir,
                .watch = watch,
        };
}

struct conn_forward *engine_forward_new(struct conn_user *u, char kind, const char *spec)
{
        struct conn_forward *f = calloc(1, sizeof(*f));
        enum forward_kind k = kind == 'L' ? FORWARD_LOCAL : kind == 'R' ? FORWARD_REMOTE : FORWARD_DYNAMIC;

        if (!f)
                return NULL;
        f->user = u;
        f->st = (struct forward_status){ .kind = kind, .spec = strdup(spec), .state = FORWARD_PENDING };
        if (!f->st.spec || forward_parse(k, spec, &f->f)) {
                engine_forward_free(f);
                return NULL;
        }
        return f;
}

void engine_forward_free(struct conn_forward *f)
{
        if (!f)
                return;
        free((char *)f->st.spec);
        free(f);
}
