/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control socket server (control.h, include/idbroker/ctl-proto.h).
 *
 * Concurrency: one listener thread accepts; every accepted connection gets a detached thread of its
 * own, at most CTL_MAX_CLIENTS at a time. A connection beyond that is answered at once with -EBUSY
 * rather than queued, so a caller never waits behind others. Each connection has CTL_IO_TIMEOUT_MS
 * to send its whole request (a fixed deadline, so trickling bytes does not extend it) and, while
 * the reply is being written, the same time without progress. A slow or silent client therefore
 * holds one slot for at most that long and never delays anyone else. Handlers run on the connection
 * threads and may run concurrently with each other (and with the rest of the broker): they do their
 * own locking.
 *
 * Stopping: control_server_stop() makes an eventfd readable; every thread polls it next to its
 * socket, so the listener and idle connections end at once. A handler that is running is waited
 * for.
 */
#include "control.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include <idbroker/ctl-proto.h>
#include <idbroker/errno.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "limits.h"

#define CTL_LISTEN_BACKLOG 64
#define CTL_OP_NAME_MAX 64 /* how much of an unknown op name is quoted back */

struct control_server {
    char *path;
    const struct control_op *ops; /* borrowed */
    void *ud;
    int listen_fd;
    int wake_fd; /* eventfd, readable once stopping; never read, so it wakes every poller */
    dev_t sock_dev;
    ino_t sock_ino;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t idle; /* signalled whenever n_clients drops */
    unsigned n_clients;
};

struct conn {
    struct control_server *s;
    int fd;
    unsigned uid;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- replies ---- */

static char *oom_reply(void)
{
    char *s = NULL;
    if (asprintf(&s, "{\"version\":%d,\"ok\":false,\"error\":\"out of memory\",\"code\":%d}\n",
                 IDB_CTL_VERSION, -ENOMEM) < 0)
        return NULL;
    return s;
}

/* Serialises reply and appends "\n". Returns new, NULL on ENOMEM or -E2BIG (*ret_r says which). */
static char *reply_to_text(struct json_object *reply, int *ret_r)
{
    const char *text = json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN |
                                                                 JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!text) {
        *ret_r = -ENOMEM;
        return NULL;
    }
    size_t len = strlen(text);
    if (len + 1 > IDB_CTL_MAX_REPLY) {
        *ret_r = -E2BIG;
        return NULL;
    }
    char *out = malloc(len + 2);
    if (!out) {
        *ret_r = -ENOMEM;
        return NULL;
    }
    memcpy(out, text, len);
    out[len] = '\n';
    out[len + 1] = '\0';
    return out;
}

static char *error_reply(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *error_reply(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    _cleanup_free_ char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    if (!msg)
        return oom_reply();

    _cleanup_json_ struct json_object *reply = json_object_new_object();
    if (!reply || json_add_int(reply, "version", IDB_CTL_VERSION) < 0 ||
        json_object_object_add(reply, "ok", json_object_new_boolean(0)) < 0 ||
        json_add_str(reply, "error", msg) < 0 || json_add_int(reply, "code", code) < 0)
        return oom_reply();
    int r = 0;
    char *text = reply_to_text(reply, &r);
    return text ? text : oom_reply();
}

/* Takes result. */
static char *ok_reply(struct json_object *result, int *ret_code)
{
    _cleanup_json_ struct json_object *reply = json_object_new_object();
    if (!reply || json_add_int(reply, "version", IDB_CTL_VERSION) < 0 ||
        json_object_object_add(reply, "ok", json_object_new_boolean(1)) < 0) {
        json_object_put(result);
        *ret_code = -ENOMEM;
        return oom_reply();
    }
    if (json_object_object_add(reply, "result", result) < 0) {
        json_object_put(result);
        *ret_code = -ENOMEM;
        return oom_reply();
    }
    int r = 0;
    char *text = reply_to_text(reply, &r);
    if (text)
        return text;
    *ret_code = r;
    if (r == -E2BIG)
        return error_reply(r, "reply larger than %d bytes", IDB_CTL_MAX_REPLY);
    return oom_reply();
}

static bool all_space(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!strchr(" \t\r\n", text[i]))
            return false;
    return true;
}

/* control_handle_message() plus what the server logs: the op (quoted, truncated; "" if none) and
 * the code of the reply. */
static char *handle(const struct control_op *ops, void *ud, const char *text, size_t len,
                    unsigned peer_uid, char op_name[static CTL_OP_NAME_MAX + 1], int *ret_code)
{
    op_name[0] = '\0';
    *ret_code = IDB_E_PROTO;

    if (all_space(text, len))
        return error_reply(IDB_E_PROTO, "empty request");
    _cleanup_json_ struct json_object *req = NULL;
    const char *why = NULL;
    if (json_parse_strict(text, len, &req, &why) < 0)
        return error_reply(IDB_E_PROTO, "invalid JSON: %s", why ? why : "syntax error");
    if (!json_object_is_type(req, json_type_object))
        return error_reply(IDB_E_PROTO, "request must be a JSON object");

    struct json_object *v = NULL;
    if (!json_object_object_get_ex(req, "version", &v) || !json_object_is_type(v, json_type_int))
        return error_reply(IDB_E_PROTO, "request has no integer 'version' (this broker speaks %d)",
                           IDB_CTL_VERSION);
    int64_t version = json_object_get_int64(v);
    if (version != IDB_CTL_VERSION) {
        *ret_code = -EPROTONOSUPPORT;
        return error_reply(-EPROTONOSUPPORT,
                           "control protocol version %lld is not supported (this broker speaks %d)",
                           (long long)version, IDB_CTL_VERSION);
    }

    const char *op = json_get_str(req, "op");
    if (!op)
        return error_reply(IDB_E_PROTO, "request has no string 'op'");
    snprintf(op_name, CTL_OP_NAME_MAX + 1, "%s", op);

    const struct control_op *o = ops;
    while (o && o->name && !streq(o->name, op))
        o++;
    if (!o || !o->name) {
        *ret_code = -EOPNOTSUPP;
        return error_reply(-EOPNOTSUPP, "unknown operation '%s'", op_name);
    }
    if (o->root_only && peer_uid != 0) {
        *ret_code = -EPERM;
        return error_reply(-EPERM, "operation '%s' requires root", o->name);
    }

    struct json_object *result = NULL;
    char *err = NULL;
    int r = o->fn(ud, req, &result, &err);
    if (r < 0) {
        /* A handler that set a result anyway must not leak it. */
        json_object_put(result);
        char *reply = error_reply(r, "%s", err ? err : idb_strerror(r));
        free(err);
        *ret_code = r;
        return reply;
    }
    free(err);
    if (!result) {
        result = json_object_new_object();
        if (!result) {
            *ret_code = -ENOMEM;
            return oom_reply();
        }
    }
    *ret_code = 0;
    return ok_reply(result, ret_code);
}

char *control_handle_message(const struct control_op *ops, void *ud, const char *text, size_t len,
                             unsigned peer_uid)
{
    char op_name[CTL_OP_NAME_MAX + 1];
    int code;
    return handle(ops, ud, text, len, peer_uid, op_name, &code);
}

/* ---- connections ---- */

/* Waits for events on fd or for stop. Returns 0, -ETIMEDOUT, -ECANCELED (stopping) or -errno. */
static int wait_fd(const struct control_server *s, int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = s->wake_fd, .events = POLLIN}};
        int n = poll(p, 2, left > INT32_MAX ? INT32_MAX : (int)left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (p[1].revents)
            return -ECANCELED;
        if (n > 0)
            return 0;
    }
}

/* Reads one request into b: up to "\n" (not stored) or EOF, at most b->max bytes, by deadline. */
static int read_request(const struct control_server *s, int fd, struct buf *b, int64_t deadline)
{
    for (;;) {
        char chunk[4096];
        ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -errno;
            int r = wait_fd(s, fd, POLLIN, deadline);
            if (r < 0)
                return r;
            continue;
        }
        const char *nl = memchr(chunk, '\n', (size_t)n);
        size_t take = nl ? (size_t)(nl - chunk) : (size_t)n;
        int r = buf_append(b, chunk, take);
        if (r < 0)
            return r;
        if (nl)
            return 0;
    }
}

/* Writes all of text; gives up after CTL_IO_TIMEOUT_MS without progress. */
static int write_reply(const struct control_server *s, int fd, const char *text)
{
    size_t len = strlen(text);
    int64_t deadline = now_ms() + CTL_IO_TIMEOUT_MS;
    while (len > 0) {
        ssize_t n = send(fd, text, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -errno;
            int r = wait_fd(s, fd, POLLOUT, deadline);
            if (r < 0)
                return r;
            continue;
        }
        text += n;
        len -= (size_t)n;
        deadline = now_ms() + CTL_IO_TIMEOUT_MS;
    }
    return 0;
}

static void serve(struct control_server *s, int fd, unsigned uid)
{
    struct buf b;
    buf_init(&b, IDB_CTL_MAX_REQUEST);
    _cleanup_free_ char *reply = NULL;
    char op_name[CTL_OP_NAME_MAX + 1] = "";
    int code = 0;

    int r = read_request(s, fd, &b, now_ms() + CTL_IO_TIMEOUT_MS);
    if (r == -E2BIG) {
        code = r;
        reply = error_reply(r, "request larger than %d bytes", IDB_CTL_MAX_REQUEST);
    } else if (r == -ETIMEDOUT) {
        code = r;
        reply = error_reply(r, "no complete request within %d ms", CTL_IO_TIMEOUT_MS);
    } else if (r < 0) {
        /* Stopping, or the client went away: nobody to answer. */
        if (r != -ECANCELED)
            log_debug("control: reading request from uid %u failed: %s", uid, idb_strerror(r));
        buf_done(&b);
        return;
    } else
        reply = handle(s->ops, s->ud, b.data ? b.data : "", b.len, uid, op_name, &code);
    buf_done(&b);

    if (code == -EPERM)
        log_notice("control: operation '%s' from uid %u refused: %s", op_name, uid,
                   idb_strerror(code));
    else
        log_debug("control: operation '%s' from uid %u: %s", op_name, uid,
                  code < 0 ? idb_strerror(code) : "ok");
    if (!reply)
        return;
    r = write_reply(s, fd, reply);
    if (r < 0 && r != -ECANCELED)
        log_debug("control: writing reply to uid %u failed: %s", uid, idb_strerror(r));
}

static void *conn_thread(void *userdata)
{
    struct conn *c = userdata;
    struct control_server *s = c->s;
    serve(s, c->fd, c->uid);
    close(c->fd);
    free(c);
    /* The last touch of s: control_server_stop() frees it once n_clients reaches 0. */
    pthread_mutex_lock(&s->lock);
    s->n_clients--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Answers a connection that gets no thread; never blocks (a fresh socket has room for it). */
static void refuse(int fd, int code, const char *msg)
{
    _cleanup_free_ char *reply = error_reply(code, "%s", msg);
    if (reply && send(fd, reply, strlen(reply), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("control: refusing a client: %s", idb_strerror(-errno));
}

/* Takes fd. */
static void accept_conn(struct control_server *s, int fd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        log_warning_errno(-errno, "control: cannot get peer credentials, closing: %s",
                          idb_strerror(-errno));
        close(fd);
        return;
    }

    pthread_mutex_lock(&s->lock);
    bool full = s->n_clients >= CTL_MAX_CLIENTS;
    if (!full)
        s->n_clients++;
    pthread_mutex_unlock(&s->lock);
    if (full) {
        log_warning("control: %d clients busy, refusing uid %u", CTL_MAX_CLIENTS, cred.uid);
        refuse(fd, -EBUSY, "idbrokerd is busy with other control clients, try again");
        close(fd);
        return;
    }

    int r = -ENOMEM;
    struct conn *c = malloc(sizeof(*c));
    if (c) {
        *c = (struct conn){.s = s, .fd = fd, .uid = cred.uid};
        pthread_attr_t attr;
        r = -pthread_attr_init(&attr);
        if (r == 0) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            pthread_t t;
            r = -pthread_create(&t, &attr, conn_thread, c);
            pthread_attr_destroy(&attr);
        }
    }
    if (r == 0)
        return;
    log_warning_errno(r, "control: cannot start a client thread: %s", idb_strerror(r));
    free(c);
    refuse(fd, r, "idbrokerd cannot serve this request now, try again");
    close(fd);
    pthread_mutex_lock(&s->lock);
    s->n_clients--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
}

static void *listen_thread(void *userdata)
{
    struct control_server *s = userdata;
    bool backoff = false;
    for (;;) {
        /* After a resource error (EMFILE...) wait a little instead of spinning on the ready fd. */
        struct pollfd p[2] = {{.fd = s->wake_fd, .events = POLLIN},
                              {.fd = s->listen_fd, .events = POLLIN}};
        int n = poll(p, backoff ? 1 : 2, backoff ? 100 : -1);
        if (n < 0) {
            if (errno != EINTR) {
                log_error_errno(-errno, "control: poll failed: %s", idb_strerror(-errno));
                backoff = true;
            }
            continue;
        }
        if (p[0].revents)
            break;
        if (backoff) {
            backoff = false;
            continue;
        }
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                continue;
            log_warning_errno(-errno, "control: accept failed: %s", idb_strerror(-errno));
            backoff = true;
            continue;
        }
        accept_conn(s, fd);
    }
    return NULL;
}

/* ---- socket and directory ---- */

/* Creates dir and its missing parents; dir itself 0700, parents 0755. */
static int mkdir_p(const char *dir)
{
    _cleanup_free_ char *p = strdup(dir);
    if (!p)
        return -ENOMEM;
    for (char *slash = strchr(p + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return -errno;
        *slash = '/';
    }
    if (mkdir(p, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* True if dir_fd holds nothing but `name` (which may be absent). */
static int dir_holds_only(int dir_fd, const char *name)
{
    int fd = dup(dir_fd);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int r = -errno;
        close(fd);
        return r;
    }
    rewinddir(d);
    int only = 1;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno != 0)
                only = -errno;
            break;
        }
        if (streq(de->d_name, ".") || streq(de->d_name, "..") || streq(de->d_name, name))
            continue;
        only = 0;
        break;
    }
    closedir(d);
    return only;
}

/* Makes sure the socket's directory exists, belongs to us and is 0700. An existing directory of
 * ours is tightened to 0700 only while it holds nothing but the socket: a shared directory (/run,
 * say) is never chmod'ed; it is accepted if only its owner may write to it (the socket itself is
 * 0600, and nobody else can replace it), and refused otherwise. Returns the open directory fd. */
static int ensure_dir(const char *dir, const char *sock_name, int *ret_fd)
{
    int r = mkdir_p(dir);
    if (r < 0)
        return log_error_errno(r, "control: cannot create directory '%s': %s", dir,
                               idb_strerror(r));
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return log_error_errno(-errno, "control: cannot open directory '%s': %s", dir,
                               idb_strerror(-errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (st.st_uid != geteuid())
        return log_error_errno(-EPERM,
                               "control: directory '%s' is owned by uid %u, not by idbrokerd's uid "
                               "%u; refusing to put the control socket there",
                               dir, (unsigned)st.st_uid, (unsigned)geteuid());
    mode_t mode = st.st_mode & 07777;
    if (mode != 0700) {
        /* Sticky means shared (/tmp), even when it happens to be empty. */
        r = (st.st_mode & S_ISVTX) ? 0 : dir_holds_only(fd, sock_name);
        if (r < 0)
            return log_error_errno(r, "control: cannot list directory '%s': %s", dir,
                                   idb_strerror(r));
        if (r > 0) {
            if (fchmod(fd, 0700) < 0)
                return log_error_errno(-errno, "control: cannot chmod '%s' to 0700: %s", dir,
                                       idb_strerror(-errno));
            log_notice("control: tightened directory '%s' from %04o to 0700", dir, (unsigned)mode);
        } else if (mode & 022)
            return log_error_errno(-EPERM,
                                   "control: directory '%s' is writable by group or others (mode "
                                   "%04o) and shared; refusing to put the control socket "
                                   "there (use a directory of its own)",
                                   dir, (unsigned)mode);
        else
            log_warning("control: directory '%s' is shared (mode %04o), not tightening it; the "
                        "socket itself is 0600",
                        dir, (unsigned)mode);
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

/* Removes a socket at path that nobody listens on. -EADDRINUSE if a server answers, -EEXIST if the
 * path is something other than a socket. */
static int remove_stale(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return log_error_errno(-EEXIST,
                               "control: '%s' exists and is not a socket; refusing to "
                               "replace it",
                               path);

    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 || errno == EAGAIN ||
        errno == EINPROGRESS)
        return log_error_errno(-EADDRINUSE, "control: another idbrokerd is listening on '%s'",
                               path);
    if (errno == ENOENT)
        return 0;
    if (errno != ECONNREFUSED)
        return log_error_errno(-errno, "control: cannot probe existing socket '%s': %s", path,
                               idb_strerror(-errno));
    if (unlink(path) < 0 && errno != ENOENT)
        return log_error_errno(-errno, "control: cannot remove stale socket '%s': %s", path,
                               idb_strerror(-errno));
    log_info("control: removed stale socket '%s'", path);
    return 0;
}

/* Binds and listens on path. The socket is chmod'ed to 0600 between bind() and listen(): nobody can
 * connect before listen(), so there is no window, and the process-wide umask is left alone (other
 * threads may be creating files). */
static int bind_socket(struct control_server *s, const struct sockaddr_un *sa)
{
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
        return log_error_errno(-errno, "control: cannot bind '%s': %s", s->path,
                               idb_strerror(-errno));
    struct stat st;
    if (chmod(s->path, 0600) < 0 || stat(s->path, &st) < 0) {
        int r = -errno;
        unlink(s->path);
        return log_error_errno(r, "control: cannot set mode of '%s': %s", s->path, idb_strerror(r));
    }
    if (listen(fd, CTL_LISTEN_BACKLOG) < 0) {
        int r = -errno;
        unlink(s->path);
        return log_error_errno(r, "control: cannot listen on '%s': %s", s->path, idb_strerror(r));
    }
    s->sock_dev = st.st_dev;
    s->sock_ino = st.st_ino;
    s->listen_fd = TAKE_FD(fd);
    return 0;
}

/* Removes the socket file if it is still the one we bound. */
static void unlink_own_socket(const struct control_server *s)
{
    struct stat st;
    if (lstat(s->path, &st) == 0 && st.st_dev == s->sock_dev && st.st_ino == s->sock_ino)
        unlink(s->path);
}

int control_server_start(const char *path, const struct control_op *ops, void *ud,
                         struct control_server **ret)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!path || path[0] != '/')
        return log_error_errno(-EINVAL, "control: socket path '%s' is not absolute", strna(path));
    size_t len = strlen(path);
    if (len >= sizeof(sa.sun_path))
        return log_error_errno(-ENAMETOOLONG, "control: socket path '%s' is longer than %zu bytes",
                               path, sizeof(sa.sun_path) - 1);
    memcpy(sa.sun_path, path, len + 1);
    const char *slash = strrchr(path, '/');
    if (!slash[1])
        return log_error_errno(-EINVAL, "control: socket path '%s' names a directory", path);

    _cleanup_free_ char *dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
    struct control_server *s = calloc(1, sizeof(*s));
    if (!dir || !s) {
        free(s);
        return -ENOMEM;
    }
    s->listen_fd = s->wake_fd = -1;
    s->ops = ops;
    s->ud = ud;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);

    _cleanup_close_ int dir_fd = -1;
    int r = -ENOMEM;
    s->path = strdup(path);
    if (!s->path)
        goto fail;
    r = ensure_dir(dir, slash + 1, &dir_fd);
    if (r < 0)
        goto fail;
    /* Two brokers starting at once must not both see a "stale" socket and remove each other's. */
    if (flock(dir_fd, LOCK_EX) < 0) {
        r = -errno;
        goto fail;
    }
    r = remove_stale(path, &sa);
    if (r >= 0)
        r = bind_socket(s, &sa);
    flock(dir_fd, LOCK_UN);
    if (r < 0)
        goto fail;

    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->wake_fd < 0) {
        r = -errno;
        goto fail;
    }
    /* Signals stay with the broker's main thread; our threads inherit a full mask. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    r = -pthread_create(&s->thread, NULL, listen_thread, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0)
        goto fail;
    s->thread_started = true;
    *ret = s;
    return 0;

fail:
    control_server_stop(s);
    return r;
}

struct control_server *control_server_stop(struct control_server *s)
{
    if (!s)
        return NULL;
    if (s->thread_started) {
        uint64_t one = 1;
        if (write(s->wake_fd, &one, sizeof(one)) < 0)
            log_error_errno(-errno, "control: cannot wake the listener: %s", idb_strerror(-errno));
        pthread_join(s->thread, NULL);
    }
    if (s->listen_fd >= 0) {
        unlink_own_socket(s);
        close(s->listen_fd);
    }
    pthread_mutex_lock(&s->lock);
    while (s->n_clients > 0)
        pthread_cond_wait(&s->idle, &s->lock);
    pthread_mutex_unlock(&s->lock);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    free(s->path);
    free(s);
    return NULL;
}
