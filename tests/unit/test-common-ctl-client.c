/* SPDX-License-Identifier: Apache-2.0 */
/* ctl_call() (common/ctl-client.c) against a hand-made server that sends canned replies. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <idbroker/ctl-proto.h>
#include <idbroker/errno.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/ctl-client.h>
#include <idbroker-internal/json-util.h>

#include "test-util.h"

#include <cmocka.h>

static char tmpdir[64];
static char sock_path[128];

struct canned {
    int listen_fd;
    const char *reply; /* NULL: never answer; hold the connection until `release` is readable */
    int release[2];
    struct buf request;
};

static void *serve_one(void *userdata)
{
    struct canned *c = userdata;
    int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return NULL;
    if (buf_read_fd(&c->request, fd) < 0)
        buf_reset(&c->request);
    if (c->reply) {
        size_t len = strlen(c->reply);
        if (send(fd, c->reply, len, MSG_NOSIGNAL) != (ssize_t)len)
            buf_reset(&c->request);
    } else {
        char b;
        if (read(c->release[0], &b, 1) < 0)
            buf_reset(&c->request);
    }
    close(fd);
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/idb-ctlc-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(sock_path, sizeof(sock_path), "%s/s.sock", tmpdir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return rm_rf(tmpdir);
}

/* Serves `reply` to one ctl_call of op "ping"; returns its code, result and error. */
static int exchange(const char *reply, int timeout_ms, struct json_object **ret, char **ret_error,
                    struct json_object **ret_request)
{
    struct canned c = {.reply = reply};
    assert_int_equal(pipe(c.release), 0);
    buf_init(&c.request, 1 << 20);
    c.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c.listen_fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(sock_path) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    unlink(sock_path);
    assert_int_equal(bind(c.listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(c.listen_fd, 4), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, serve_one, &c), 0);

    struct json_object *req = ctl_request_new("ping");
    assert_non_null(req);
    struct json_object *res = NULL;
    char *err = NULL;
    int r = ctl_call(sock_path, req, timeout_ms, &res, &err);
    json_object_put(req);
    assert_int_equal(write(c.release[1], "x", 1), 1);
    pthread_join(t, NULL);
    close(c.release[0]);
    close(c.release[1]);
    close(c.listen_fd);
    unlink(sock_path);

    if (ret_request) {
        const char *text = c.request.data ? c.request.data : "";
        size_t len = strlen(text);
        assert_true(len > 0 && text[len - 1] == '\n');
        assert_int_equal(json_parse_strict(text, len, ret_request, NULL), 0);
    }
    buf_done(&c.request);
    if (ret)
        *ret = res;
    else
        json_object_put(res);
    if (ret_error)
        *ret_error = err;
    else
        free(err);
    return r;
}

static void test_ok(void **state)
{
    (void)state;
    struct json_object *res = NULL, *req = NULL;
    assert_int_equal(
        exchange("{\"version\":1,\"ok\":true,\"result\":{\"a\":1}}\n", 20000, &res, NULL, &req), 0);
    assert_int_equal(json_get_int(res, "a", 0), 1);
    json_object_put(res);
    /* The request went out as one line: {"version":1,"op":"ping"}. */
    assert_int_equal(json_get_int(req, "version", 0), IDB_CTL_VERSION);
    assert_string_equal(json_get_str(req, "op"), "ping");
    json_object_put(req);

    /* No result: an empty object. Arrays come back as they are. */
    assert_int_equal(exchange("{\"version\":1,\"ok\":true}", 20000, &res, NULL, NULL), 0);
    assert_true(json_object_is_type(res, json_type_object));
    json_object_put(res);
    assert_int_equal(exchange("{\"version\":1,\"ok\":true,\"result\":[]}", 20000, &res, NULL, NULL),
                     0);
    assert_true(json_object_is_type(res, json_type_array));
    json_object_put(res);
}

static void test_broker_error(void **state)
{
    (void)state;
    char *err = NULL;
    assert_int_equal(
        exchange("{\"version\":1,\"ok\":false,\"error\":\"no such pod\",\"code\":-10003}", 20000,
                 NULL, &err, NULL),
        IDB_E_UNKNOWN_POD);
    assert_string_equal(err, "no such pod");
    free(err);
    /* No message: the code's own. A non-negative code is itself a protocol error. */
    assert_int_equal(exchange("{\"version\":1,\"ok\":false,\"code\":-13}", 20000, NULL, &err, NULL),
                     -EACCES);
    assert_non_null(err);
    free(err);
    assert_int_equal(exchange("{\"version\":1,\"ok\":false,\"code\":3}", 20000, NULL, NULL, NULL),
                     IDB_E_PROTO);
}

static void test_bad_replies(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",                                 /* closed without a word */
        "not json\n",                       /* */
        "[1]\n",                            /* not an object */
        "{\"ok\":true}\n",                  /* no version */
        "{\"version\":2,\"ok\":true}\n",    /* another version */
        "{\"version\":1}\n",                /* no ok */
        "{\"version\":1,\"ok\":\"yes\"}\n", /* ok of the wrong type */
        "{\"version\":1,\"ok\":true} {}\n", /* two values */
        "{\"version\":1,\"ok\":true,\"res", /* cut short */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *err = NULL;
        assert_int_equal(exchange(bad[i], 20000, NULL, &err, NULL), IDB_E_PROTO);
        assert_non_null(err);
        free(err);
    }
}

static void test_timeout(void **state)
{
    (void)state;
    char *err = NULL;
    assert_int_equal(exchange(NULL, 100, NULL, &err, NULL), -ETIMEDOUT);
    assert_non_null(strstr(err, "timed out"));
    free(err);
}

static void test_unreachable(void **state)
{
    (void)state;
    struct json_object *req = ctl_request_new("ping");
    char *err = NULL;
    struct json_object *res = NULL;
    assert_int_equal(ctl_call(sock_path, req, 1000, &res, &err), -ENOENT);
    assert_true(ctl_error_is_unreachable(-ENOENT));
    assert_non_null(strstr(err, "is it running?"));
    free(err);
    /* ret_error is optional. */
    assert_int_equal(ctl_call(sock_path, req, 1000, &res, NULL), -ENOENT);
    char longpath[200];
    memset(longpath, 'x', sizeof(longpath));
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    assert_int_equal(ctl_call(longpath, req, 1000, &res, NULL), -ENAMETOOLONG);
    assert_false(ctl_error_is_unreachable(-ETIMEDOUT));
    json_object_put(req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broker_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
