/* SPDX-License-Identifier: MIT */
#include "runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "safe_dir.h"
#include "ssh_argv.h"
#include "util.h"

/* One per process: the daemon's (keyscan makes its own directories). */
static struct safe_dir runtime = { .fd = -1 };

static int make_fresh(char **ret)
{
        const char *base = getenv("RUNTIME_DIRECTORY");
        _cleanup_free_ char *tmpl = NULL;

        /* systemd may list several, separated by ':'; the first is ours */
        if (!base || base[0] != '/')
                base = "/tmp";
        if (asprintf(&tmpl, "%.*s/tunneld.XXXXXX", (int)strcspn(base, ":"), base) < 0) {
                tmpl = NULL;
                return -ENOMEM;
        }
        if (!mkdtemp(tmpl))
                return log_error_errno(errno, "cannot create a runtime directory %s: %m", tmpl);
        *ret = tmpl;
        tmpl = NULL;
        return 0;
}

int runtime_dir_create(const char *locked_socket, char **ret)
{
        _cleanup_free_ char *path = NULL;
        char why[256];
        int r;

        if (runtime.fd >= 0)
                return log_error_errno(-EBUSY, "the runtime directory %s is already open", runtime.path);
        if (!locked_socket)
                r = make_fresh(&path);
        else if (asprintf(&path, "%s.d", locked_socket) < 0) {
                path = NULL;
                r = -ENOMEM;
        } else if (mkdir(path, 0700) < 0 && errno != EEXIST)
                r = log_error_errno(errno, "cannot create the runtime directory %s: %m", path);
        else
                r = 0;
        if (r < 0 || !path)
                return r < 0 ? r : -ENOMEM;
        r = safe_dir_open(path, SAFE_DIR_OURS, &runtime, why, sizeof(why));
        if (r < 0)
                return log_error_errno(r, "runtime directory %s: %s; remove it", path, why);
        safe_dir_clear(&runtime, 1);    /* left by a tunneld that crashed; we hold the socket's lock */
        safe_dir_register(&runtime);
        *ret = path;
        path = NULL;
        return 0;
}

void runtime_dir_remove(const char *path)
{
        struct safe_dir d = SAFE_DIR_NULL;
        char why[256];

        if (!path)
                return;
        if (runtime.fd >= 0 && strcmp(runtime.path, path) == 0) {
                d = runtime;
                safe_dir_unregister(&runtime);
                runtime = SAFE_DIR_NULL;
        } else if (safe_dir_open(path, SAFE_DIR_OURS, &d, why, sizeof(why)) < 0)
                return;
        safe_dir_clear(&d, 1);
        if (safe_dir_at_path(&d))
                (void)rmdir(path);
        safe_dir_close(&d);
}

/* "/#HASH.mux0": the longest a control socket's name gets under its directory
 * (ssh_control_base hashes a long name). */
#define CONTROL_NAME_MAX 23

int runtime_control_dir_create(const char *runtime_dir, char **ret)
{
        const char *base = getenv("RUNTIME_DIRECTORY");
        _cleanup_free_ char *tmpl = NULL;
        size_t n;

        if (strlen(runtime_dir) + CONTROL_NAME_MAX <= SSH_CONTROL_PATH_MAX) {
                *ret = strdup(runtime_dir);
                return *ret ? 0 : -ENOMEM;
        }
        n = base && base[0] == '/' ? strcspn(base, ":") : 0;
        if (n == 0 || n + 20 + CONTROL_NAME_MAX > SSH_CONTROL_PATH_MAX) {
                base = "/tmp";
                n = 4;
        }
        if (asprintf(&tmpl, "%.*s/tunneld-mux.XXXXXX", (int)n, base) < 0) {
                tmpl = NULL;
                return -ENOMEM;
        }
        if (!mkdtemp(tmpl))
                return log_error_errno(errno, "cannot create a directory for ssh's control sockets %s: %m", tmpl);
        log_info("the runtime directory %s is too long for ssh's control sockets: they go in %s", runtime_dir, tmpl);
        *ret = tmpl;
        tmpl = NULL;
        return 0;
}

void runtime_control_dir_remove(const char *path, const char *runtime_dir)
{
        struct safe_dir d = SAFE_DIR_NULL;
        char why[256];

        if (!path || (runtime_dir && strcmp(path, runtime_dir) == 0) ||
            safe_dir_open(path, SAFE_DIR_OURS, &d, why, sizeof(why)) < 0)
                return;
        safe_dir_clear(&d, 1);
        if (safe_dir_at_path(&d))
                (void)rmdir(path);
        safe_dir_close(&d);
}
