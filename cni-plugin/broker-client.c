/* SPDX-License-Identifier: Apache-2.0 */
#include "broker-client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <idbroker/ctl-proto.h>
#include <idbroker/errno.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/macro.h>

/* The plugin reads small replies only ({} for sync); a bigger one is a protocol error. */
#define BROKER_CLIENT_MAX_REPLY (64 * 1024)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` on fd until the deadline. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n > 0)
            return 0;
    }
}

int broker_client_call(const char *socket_path, struct json_object *request, int timeout_ms,
                       struct json_object **ret_result)
{
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : BROKER_CLIENT_TIMEOUT_MS);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!socket_path || strlen(socket_path) >= sizeof(sa.sun_path))
        return -EINVAL;
    memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);

    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno != EINPROGRESS && errno != EAGAIN)
            return -errno;
        int r = wait_fd(fd, POLLOUT, deadline);
        if (r < 0)
            return r;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return -errno;
        if (err)
            return -err;
    }

    const char *text = json_object_to_json_string_ext(request, JSON_C_TO_STRING_PLAIN);
    if (!text)
        return -ENOMEM;
    size_t len = strlen(text), off = 0;
    if (len + 1 > IDB_CTL_MAX_REQUEST)
        return -E2BIG;
    struct buf out;
    buf_init(&out, IDB_CTL_MAX_REQUEST);
    int r = buf_printf(&out, "%s\n", text);
    if (r < 0) {
        buf_done(&out);
        return r;
    }
    while (off < out.len) {
        ssize_t k = send(fd, out.data + off, out.len - off, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                r = wait_fd(fd, POLLOUT, deadline);
                if (r < 0)
                    break;
                continue;
            }
            r = -errno;
            break;
        }
        off += (size_t)k;
    }
    buf_done(&out);
    if (r < 0)
        return r;
    (void)shutdown(fd, SHUT_WR);

    /* The reply is one JSON object and a new line; the broker closes after it. */
    struct buf in;
    buf_init(&in, BROKER_CLIENT_MAX_REPLY);
    char chunk[4096];
    for (;;) {
        if (in.len > 0 && in.data[in.len - 1] == '\n')
            break;
        ssize_t k = recv(fd, chunk, sizeof(chunk), 0);
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                r = wait_fd(fd, POLLIN, deadline);
                if (r < 0)
                    break;
                continue;
            }
            r = -errno;
            break;
        }
        if (k == 0)
            break;
        r = buf_append(&in, chunk, (size_t)k);
        if (r < 0) {
            r = IDB_E_PROTO;
            break;
        }
    }
    if (r < 0) {
        buf_done(&in);
        return r;
    }
    _cleanup_json_ struct json_object *reply = NULL;
    r = in.len ? json_parse_strict(in.data, in.len, &reply, NULL) : -EBADMSG;
    buf_done(&in);
    if (r < 0 || !json_object_is_type(reply, json_type_object))
        return IDB_E_PROTO;
    struct json_object *ok;
    if (!json_object_object_get_ex(reply, "ok", &ok) || !json_object_is_type(ok, json_type_boolean))
        return IDB_E_PROTO;
    if (!json_object_get_boolean(ok)) {
        int64_t code = json_get_int(reply, "code", IDB_E_PROTO);
        return code < 0 && code > -100000 ? (int)code : IDB_E_PROTO;
    }
    if (ret_result) {
        struct json_object *res = NULL;
        json_object_object_get_ex(reply, "result", &res);
        *ret_result = res ? json_object_get(res) : NULL;
    }
    return 0;
}

int broker_client_sync(const char *socket_path, const char *container_id, const char *if_name,
                       int timeout_ms)
{
    _cleanup_json_ struct json_object *req = json_object_new_object();
    if (!req)
        return -ENOMEM;
    if (json_add_int(req, "version", IDB_CTL_VERSION) < 0 ||
        json_add_str(req, "op", IDB_CTL_OP_SYNC) < 0 ||
        json_add_str(req, "containerId", container_id) < 0 ||
        json_add_str(req, "ifName", if_name) < 0)
        return -ENOMEM;
    return broker_client_call(socket_path, req, timeout_ms, NULL);
}
