/* SPDX-License-Identifier: Apache-2.0 */
/* The control socket client (include/idbroker-internal/ctl-client.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <idbroker/ctl-proto.h>
#include <idbroker/errno.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/ctl-client.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline for poll(): -1 = no deadline, 0 = expired. */
static int remaining_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    if (left <= 0)
        return 0;
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Waits for `events` on fd until deadline. Returns 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, remaining_ms(deadline));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -ETIMEDOUT;
        return 0;
    }
}

static void set_error(char **ret_error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(char **ret_error, const char *fmt, ...)
{
    if (!ret_error)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(ret_error, fmt, ap) < 0)
        *ret_error = NULL;
    va_end(ap);
}

/* Connects a non-blocking socket to path. A full listen backlog (EAGAIN for unix sockets) is
 * retried until the deadline. */
static int connect_unix(const char *path, int64_t deadline, int *ret_fd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);

    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    for (;;) {
        if (connect(fd, (const struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            if (remaining_ms(deadline) == 0)
                return -ETIMEDOUT;
            poll(NULL, 0, 10);
            continue;
        }
        if (errno != EINPROGRESS)
            return -errno;
        int r = wait_fd(fd, POLLOUT, deadline);
        if (r < 0)
            return r;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return -errno;
        if (err != 0)
            return -err;
        break;
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

/* Writes all of data. A peer that closes early (EPIPE, ECONNRESET) is not an error here: it may
 * have refused the request with a reply that is still waiting to be read. */
static int send_all(int fd, const char *data, size_t len, int64_t deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EPIPE || errno == ECONNRESET)
                return 0;
            if (errno != EAGAIN)
                return -errno;
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r < 0)
                return r;
            continue;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads to EOF into b. A reset after some data counts as EOF (the broker closed without reading all
 * of an oversized request); whether the data is a complete reply is for the parser to say. */
static int recv_all(int fd, struct buf *b, int64_t deadline)
{
    for (;;) {
        char chunk[16384];
        ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ECONNRESET && b->len > 0)
                return 0;
            if (errno != EAGAIN)
                return -errno;
            int r = wait_fd(fd, POLLIN, deadline);
            if (r < 0)
                return r;
            continue;
        }
        int r = buf_append(b, chunk, (size_t)n);
        if (r < 0)
            return r;
    }
}

struct json_object *ctl_request_new(const char *op)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    if (json_add_int(o, "version", IDB_CTL_VERSION) < 0 || json_add_str(o, "op", op) < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

bool ctl_error_is_unreachable(int r)
{
    return r == -ENOENT || r == -ECONNREFUSED || r == -ENOTSOCK;
}

/* Turns the reply text into the result or the broker's error. */
static int parse_reply(const char *text, size_t len, struct json_object **ret_reply,
                       char **ret_error)
{
    _cleanup_json_ struct json_object *reply = NULL;
    const char *why = NULL;
    if (json_parse_strict(text, len, &reply, &why) < 0) {
        set_error(ret_error, "invalid reply from idbrokerd: %s", why ? why : "not JSON");
        return IDB_E_PROTO;
    }
    if (!json_object_is_type(reply, json_type_object)) {
        set_error(ret_error, "invalid reply from idbrokerd: not a JSON object");
        return IDB_E_PROTO;
    }
    int64_t version = json_get_int(reply, "version", -1);
    if (version != IDB_CTL_VERSION) {
        set_error(ret_error, "idbrokerd speaks control protocol version %lld, not %d",
                  (long long)version, IDB_CTL_VERSION);
        return IDB_E_PROTO;
    }
    struct json_object *ok = NULL;
    if (!json_object_object_get_ex(reply, "ok", &ok) ||
        !json_object_is_type(ok, json_type_boolean)) {
        set_error(ret_error, "invalid reply from idbrokerd: no 'ok'");
        return IDB_E_PROTO;
    }
    if (!json_object_get_boolean(ok)) {
        int64_t code = json_get_int(reply, "code", 0);
        const char *msg = json_get_str(reply, "error");
        if (code >= 0 || code < INT32_MIN)
            code = IDB_E_PROTO;
        set_error(ret_error, "%s", msg ? msg : idb_strerror((int)code));
        return (int)code;
    }
    struct json_object *result = NULL;
    if (json_object_object_get_ex(reply, "result", &result) && result)
        result = json_object_get(result);
    else {
        result = json_object_new_object();
        if (!result)
            return -ENOMEM;
    }
    *ret_reply = result;
    return 0;
}

int ctl_call(const char *socket_path, struct json_object *request, int timeout_ms,
             struct json_object **ret_reply, char **ret_error)
{
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;

    const char *req = json_object_to_json_string_ext(request, JSON_C_TO_STRING_PLAIN |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!req)
        return -ENOMEM;
    size_t req_len = strlen(req);

    _cleanup_close_ int fd = -1;
    int r = connect_unix(socket_path, deadline, &fd);
    if (r < 0) {
        if (ctl_error_is_unreachable(r))
            set_error(ret_error, "cannot reach idbrokerd at '%s': %s (is it running?)", socket_path,
                      idb_strerror(r));
        else if (r == -EACCES || r == -EPERM)
            set_error(ret_error, "cannot connect to '%s': %s (the control socket is root only)",
                      socket_path, idb_strerror(r));
        else if (r == -ETIMEDOUT)
            set_error(ret_error, "timed out connecting to idbrokerd at '%s'", socket_path);
        else
            set_error(ret_error, "cannot connect to '%s': %s", socket_path, idb_strerror(r));
        return r;
    }

    r = send_all(fd, req, req_len, deadline);
    if (r >= 0)
        r = send_all(fd, "\n", 1, deadline);
    if (r < 0) {
        set_error(ret_error, "cannot send request to idbrokerd: %s", idb_strerror(r));
        return r;
    }
    /* Tells the broker the request is complete even if it did not look for the newline. ENOTCONN:
     * the broker already closed; its reply may still be readable. */
    if (shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN) {
        r = -errno;
        set_error(ret_error, "cannot send request to idbrokerd: %s", idb_strerror(r));
        return r;
    }

    struct buf b;
    buf_init(&b, IDB_CTL_MAX_REPLY);
    r = recv_all(fd, &b, deadline);
    if (r < 0) {
        if (r == -ETIMEDOUT)
            set_error(ret_error, "timed out waiting for idbrokerd's reply");
        else if (r == -E2BIG)
            set_error(ret_error, "idbrokerd's reply is larger than %d bytes", IDB_CTL_MAX_REPLY);
        else
            set_error(ret_error, "cannot read idbrokerd's reply: %s", idb_strerror(r));
        buf_done(&b);
        return r;
    }
    if (b.len == 0) {
        set_error(ret_error, "idbrokerd closed the connection without a reply");
        buf_done(&b);
        return IDB_E_PROTO;
    }
    r = parse_reply(b.data, b.len, ret_reply, ret_error);
    buf_done(&b);
    return r;
}
