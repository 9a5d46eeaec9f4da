/* SPDX-License-Identifier: MIT */
#include "safe_path.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define LINKS_MAX 40            /* the kernel's own limit */

const char *safe_path_judge(const struct stat *st, uid_t uid, bool strict, char *buf, size_t size)
{
        bool link = S_ISLNK(st->st_mode), sticky = S_ISDIR(st->st_mode) && (st->st_mode & S_ISVTX);

        /* a link's own mode means nothing; a sticky directory keeps others off our files */
        if (!link && (st->st_mode & 022) && (!sticky || strict)) {
                snprintf(buf, size, "writable by group or others (mode %04o): fix with chmod go-w%s",
                         (unsigned)(st->st_mode & 07777), sticky ? " (sticky is not enough here)" : "");
                return buf;
        }
        if (st->st_uid != 0 && st->st_uid != uid) {
                snprintf(buf, size, "owned by uid %d, neither root nor tunneld's user (uid %d): fix with chown%s",
                         (int)st->st_uid, (int)uid, link ? " -h" : "");
                return buf;
        }
        return NULL;
}

enum role {
        ROLE_SELF,              /* the path itself */
        ROLE_PARENT,            /* the directory holding it */
        ROLE_ABOVE,             /* a directory further up */
        ROLE_LINK,              /* a symbolic link on the way */
};

static int refuse(char *why, size_t size, enum role role, bool link, const char *name, const char *verdict)
{
        name = *name ? name : "/";
        switch (role) {
        case ROLE_SELF:
                snprintf(why, size, "%s%s", link ? "a symbolic link " : "", verdict);
                break;
        case ROLE_PARENT:
                snprintf(why, size, "its directory %s is %s", name, verdict);
                break;
        case ROLE_ABOVE:
                snprintf(why, size, "the directory %s above it is %s", name, verdict);
                break;
        case ROLE_LINK:
                snprintf(why, size, "the symbolic link %s on its way is %s", name, verdict);
                break;
        }
        return -EPERM;
}

/* Components (not "" or ".") in p. */
static size_t components(const char *p)
{
        size_t n = 0;

        while (*p) {
                size_t len;

                p += strspn(p, "/");
                len = strcspn(p, "/");
                if (len && !(len == 1 && *p == '.'))
                        n++;
                p += len;
        }
        return n;
}

enum last_is {
        LAST_FILE,              /* judged as a file; its directory may be sticky */
        LAST_DIR,               /* a directory, not writable by others even if sticky */
        LAST_DIR_STICKY,        /* a directory, sticky is fine */
};

struct walk {
        char *why;
        size_t size;
        uid_t uid;
        enum last_is last_is;
        bool last_holds_it;     /* the last component is the directory of the path asked about */
        bool made_later;        /* tunneld makes what is missing, later, unchecked (not read at each load) */
        unsigned links;         /* followed so far */
};

/* cand does not exist. What is read is checked again at each load, whoever makes it; what
 * tunneld will make (the control socket's directory, the metrics file's) is fine if nobody
 * but root and us can make it first: its directory (dir, already judged) is not writable
 * by others. */
static int missing(const struct walk *w, const char *dir, const struct stat *dir_st, const char *cand)
{
        if (!w->made_later || !(dir_st->st_mode & 022))
                return 0;
        snprintf(w->why, w->size, "%s does not exist, and its directory %s is writable by group or others "
                 "(mode %04o): anyone could make it first; fix with chmod go-w", cand, *dir ? dir : "/",
                 (unsigned)(dir_st->st_mode & 07777));
        return -EPERM;
}

static int judge_at(const struct walk *w, const char *name, const struct stat *st, size_t left)
{
        char verdict[160];
        const char *v;
        enum role role;

        if (S_ISLNK(st->st_mode)) {
                v = safe_path_judge(st, w->uid, false, verdict, sizeof(verdict));
                role = left == 0 && !w->last_holds_it ? ROLE_SELF : ROLE_LINK;
                return v ? refuse(w->why, w->size, role, true, name, v) : 0;
        }
        if (left > 0) {
                if (!S_ISDIR(st->st_mode))
                        return 0;       /* ENOTDIR: whoever opens it will say so */
                v = safe_path_judge(st, w->uid, false, verdict, sizeof(verdict));
                role = left == 1 && !w->last_holds_it ? ROLE_PARENT : ROLE_ABOVE;
                return v ? refuse(w->why, w->size, role, false, name, v) : 0;
        }
        role = w->last_holds_it ? ROLE_PARENT : ROLE_SELF;
        if (w->last_is != LAST_FILE && !S_ISDIR(st->st_mode)) {
                snprintf(w->why, w->size, "%s%s is not a directory", role == ROLE_PARENT ? "its directory " : "",
                         *name ? name : "/");
                return -ENOTDIR;
        }
        v = safe_path_judge(st, w->uid, w->last_is == LAST_DIR, verdict, sizeof(verdict));
        return v ? refuse(w->why, w->size, role, false, name, v) : 0;
}

/* The link cand, its target read and put in place of it in what is left (rest): *todo is
 * replaced; an absolute target starts again from /. */
static int follow_link(struct walk *w, const char *cand, const char *rest, char *done, struct stat *done_st,
                       char **todo)
{
        char target[PATH_MAX];
        ssize_t n;
        char *next;

        if (++w->links > LINKS_MAX) {
                snprintf(w->why, w->size, "more than %d symbolic links on its way", LINKS_MAX);
                return -ELOOP;
        }
        n = readlink(cand, target, sizeof(target) - 1);
        if (n < 0) {
                int r = -errno;
                snprintf(w->why, w->size, "cannot read the symbolic link %s: %s", cand, strerror(-r));
                return r;
        }
        target[n] = '\0';
        /* a relative target is read from where the link is: done */
        if (asprintf(&next, "%s%s", target, rest) < 0)
                return -ENOMEM;
        if (target[0] == '/') {
                done[0] = '\0';
                if (lstat("/", done_st) < 0) {
                        free(next);
                        return -errno;
                }
        }
        free(*todo);
        *todo = next;
        return 0;
}

/* path made absolute (from the working directory), in *ret. */
static int absolute(const char *path, char **ret)
{
        char cwd[PATH_MAX];

        if (path[0] == '/')
                *ret = strdup(path);
        else if (!getcwd(cwd, sizeof(cwd)))
                return -errno;
        else if (asprintf(ret, "%s/%s", cwd, path) < 0)
                *ret = NULL;
        return *ret ? 0 : -ENOMEM;
}

static int walk(struct walk *w, const char *path)
{
        _cleanup_free_ char *todo = NULL;
        char done[PATH_MAX] = "";       /* resolved so far, no symbolic link in it; "" is / */
        struct stat st, done_st;
        const char *p;
        int r;

        r = absolute(path, &todo);
        if (r < 0 || !todo)
                return r == -ENOMEM ? r : 0;    /* nowhere to start from: the use will fail anyway */
        if (lstat("/", &done_st) < 0)
                return -errno;
        r = judge_at(w, "", &done_st, components(todo));
        for (p = todo; r >= 0 && *p;) {
                size_t len = strcspn(p += strspn(p, "/"), "/");
                const char *rest = p + len;
                char cand[PATH_MAX];

                if (!len || (len == 1 && *p == '.')) {
                        p = rest;
                        continue;
                }
                if (len == 2 && p[0] == '.' && p[1] == '.') {
                        char *slash = strrchr(done, '/');
                        if (slash)
                                *slash = '\0';
                        if (lstat(*done ? done : "/", &done_st) < 0)
                                return -errno;
                        p = rest;
                        continue;
                }
                if ((size_t)snprintf(cand, sizeof(cand), "%s/%.*s", done, (int)len, p) >= sizeof(cand)) {
                        snprintf(w->why, w->size, "longer than %d bytes", PATH_MAX - 1);
                        return -ENAMETOOLONG;
                }
                if (lstat(cand, &st) < 0) {
                        r = -errno;
                        if (r == -ENOENT)
                                return missing(w, done, &done_st, cand);
                        snprintf(w->why, w->size, "cannot look at %s: %s", cand, strerror(-r));
                        return r;
                }
                r = judge_at(w, cand, &st, components(rest));
                if (r < 0 || S_ISLNK(st.st_mode)) {
                        if (r >= 0)
                                r = follow_link(w, cand, rest, done, &done_st, &todo);
                        p = todo;
                        continue;
                }
                if (*rest && components(rest) && !S_ISDIR(st.st_mode))
                        return 0;       /* ENOTDIR: whoever opens it will say so */
                memcpy(done, cand, strlen(cand) + 1);
                done_st = st;
                p = rest;
        }
        return r < 0 ? r : 0;
}

int safe_path_check(const char *path, enum safe_path_kind kind, char *why, size_t size)
{
        struct walk w = { .why = why, .size = size, .uid = geteuid() };
        _cleanup_free_ char *dir = NULL;
        char *slash;

        switch (kind) {
        case SAFE_PATH_FILE:
                w.last_is = LAST_FILE;
                return walk(&w, path);
        case SAFE_PATH_DIR:
                w.last_is = LAST_DIR;
                return walk(&w, path);
        case SAFE_PATH_NEW:
        case SAFE_PATH_RENAMED:
                break;
        }
        /* the directory the name is made in */
        w.last_is = kind == SAFE_PATH_NEW ? LAST_DIR : LAST_DIR_STICKY;
        w.last_holds_it = true;
        w.made_later = true;
        dir = strdup(path);
        if (!dir)
                return -ENOMEM;
        slash = strrchr(dir, '/');
        if (!slash)
                return walk(&w, ".");
        slash[slash == dir] = '\0';     /* "/x" → "/" */
        return walk(&w, dir);
}

int safe_path_find_program(const char *name, char **ret)
{
        const char *path = getenv("PATH");

        if (strchr(name, '/')) {
                *ret = strdup(name);
                return *ret ? 0 : -ENOMEM;
        }
        if (!path)
                path = "/bin:/usr/bin";         /* execvp's without PATH */
        for (const char *p = path;; p++) {
                size_t len = strcspn(p, ":");
                _cleanup_free_ char *cand = NULL;
                struct stat st;

                /* an empty entry is the working directory, as execvp reads it */
                if (asprintf(&cand, "%.*s%s%s", (int)len, p, len ? "/" : "", name) < 0)
                        return -ENOMEM;
                if (access(cand, X_OK) == 0 && stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
                        *ret = cand;
                        cand = NULL;
                        return 0;
                }
                p += len;
                if (!*p)
                        break;
        }
        return -ENOENT;
}
