/* SPDX-License-Identifier: Apache-2.0 */
/* The control socket server (broker/control.c) driven through the client (common/ctl-client.c). */
#include <errno.h>
#include <fcntl.h>
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
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <idbroker/ctl-proto.h>
#include <idbroker/errno.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/ctl-client.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/registration.h>

#include "control.h"
#include "limits.h"
#include "test-util.h"

#include <cmocka.h>

#define TIMEOUT_MS 20000 /* a bound for a broken test, never an assertion */

static char tmpdir[64];
static char sock_dir[128];
static char sock_path[160];

struct fake {
    int block_rd, block_wr; /* op "block" reads one byte from block_rd */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int blocked; /* handlers inside op "block" */
};
static struct fake fake;

static int op_echo(void *ud, struct json_object *req, struct json_object **ret_result,
                   char **ret_error)
{
    (void)ud;
    (void)ret_error;
    struct json_object *o = json_object_new_object();
    json_add_str(o, "echo", json_get_str(req, "arg"));
    *ret_result = o;
    return 0;
}

static int op_empty(void *ud, struct json_object *req, struct json_object **ret_result,
                    char **ret_error)
{
    (void)ud;
    (void)req;
    (void)ret_result;
    (void)ret_error;
    return 0;
}

static int op_fail(void *ud, struct json_object *req, struct json_object **ret_result,
                   char **ret_error)
{
    (void)ud;
    (void)req;
    (void)ret_result;
    *ret_error = strdup("it failed on purpose");
    return -EINVAL;
}

static int op_fail_silent(void *ud, struct json_object *req, struct json_object **ret_result,
                          char **ret_error)
{
    (void)ud;
    (void)req;
    (void)ret_result;
    (void)ret_error;
    return IDB_E_NO_BINDING;
}

/* Breaks the contract (a result with an error): the server must not leak it. */
static int op_sloppy(void *ud, struct json_object *req, struct json_object **ret_result,
                     char **ret_error)
{
    (void)ud;
    (void)req;
    (void)ret_error;
    *ret_result = json_object_new_string("ignored");
    return -EIO;
}

static int op_block(void *ud, struct json_object *req, struct json_object **ret_result,
                    char **ret_error)
{
    (void)req;
    (void)ret_result;
    (void)ret_error;
    struct fake *f = ud;
    pthread_mutex_lock(&f->lock);
    f->blocked++;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    char c;
    ssize_t n = read(f->block_rd, &c, 1);
    pthread_mutex_lock(&f->lock);
    f->blocked--;
    pthread_mutex_unlock(&f->lock);
    return n == 1 ? 0 : -EIO;
}

static int op_secret(void *ud, struct json_object *req, struct json_object **ret_result,
                     char **ret_error)
{
    (void)ud;
    (void)req;
    (void)ret_error;
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "secret", json_object_new_boolean(1));
    *ret_result = o;
    return 0;
}

static int op_big(void *ud, struct json_object *req, struct json_object **ret_result,
                  char **ret_error)
{
    (void)ud;
    (void)req;
    (void)ret_error;
    size_t n = IDB_CTL_MAX_REPLY + 1;
    char *s = malloc(n + 1);
    if (!s)
        return -ENOMEM;
    memset(s, 'a', n);
    s[n] = '\0';
    *ret_result = json_object_new_string_len(s, (int)n);
    free(s);
    return 0;
}

static const struct control_op ops[] = {
    {"echo", op_echo, 0},     {"empty", op_empty, 0},
    {"fail", op_fail, 0},     {"fail-silent", op_fail_silent, 0},
    {"sloppy", op_sloppy, 0}, {"block", op_block, 0},
    {"secret", op_secret, 1}, {"big", op_big, 0},
    {NULL, NULL, 0},
};

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/idb-ctl-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(sock_dir, sizeof(sock_dir), "%s/run/idbroker", tmpdir);
    snprintf(sock_path, sizeof(sock_path), "%s/ctl.sock", sock_dir);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    fake = (struct fake){.block_rd = p[0], .block_wr = p[1]};
    pthread_mutex_init(&fake.lock, NULL);
    pthread_cond_init(&fake.cond, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    close(fake.block_rd);
    close(fake.block_wr);
    pthread_mutex_destroy(&fake.lock);
    pthread_cond_destroy(&fake.cond);
    return rm_rf(tmpdir);
}

static struct control_server *start(void)
{
    struct control_server *s = NULL;
    assert_int_equal(control_server_start(sock_path, ops, &fake, &s), 0);
    assert_non_null(s);
    return s;
}

/* ctl_call with {"version":1,"op":op[,"arg":arg]}; returns the code, the result and the error. */
static int call(const char *op, const char *arg, struct json_object **ret, char **ret_error)
{
    _cleanup_json_ struct json_object *req = ctl_request_new(op);
    assert_non_null(req);
    json_add_str(req, "arg", arg);
    struct json_object *res = NULL;
    char *err = NULL;
    int r = ctl_call(sock_path, req, TIMEOUT_MS, &res, &err);
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

static int raw_connect(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(sock_path) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Reads the whole reply on fd and returns its "code" (0 for ok), optionally its error text. */
static int read_reply(int fd, char **ret_error)
{
    char buf[4096];
    size_t len = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, TIMEOUT_MS), 1);
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == ECONNRESET && len > 0)
            break;
        assert_true(n >= 0);
        if (n == 0)
            break;
        len += (size_t)n;
        assert_true(len < sizeof(buf) - 1);
    }
    buf[len] = '\0';
    assert_true(len > 0 && buf[len - 1] == '\n');
    _cleanup_json_ struct json_object *o = NULL;
    assert_int_equal(json_parse_strict(buf, len, &o, NULL), 0);
    assert_int_equal(json_get_int(o, "version", 0), IDB_CTL_VERSION);
    if (json_get_bool(o, "ok", false))
        return 0;
    if (ret_error)
        *ret_error = strdup(json_get_str(o, "error"));
    return (int)json_get_int(o, "code", 0);
}

/* Sends raw bytes as one request and returns the reply's code. */
static int raw_exchange(const char *text, size_t len, char **ret_error)
{
    int fd = raw_connect();
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, text + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
            break;
        assert_true(n > 0);
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    int code = read_reply(fd, ret_error);
    close(fd);
    return code;
}

static void test_ok(void **state)
{
    (void)state;
    struct control_server *s = start();
    struct json_object *res = NULL;
    assert_int_equal(call("echo", "hello", &res, NULL), 0);
    assert_string_equal(json_get_str(res, "echo"), "hello");
    json_object_put(res);
    /* A handler that returns no result gives {}. */
    assert_int_equal(call("empty", NULL, &res, NULL), 0);
    assert_true(json_object_is_type(res, json_type_object));
    assert_int_equal(json_object_object_length(res), 0);
    json_object_put(res);
    control_server_stop(s);
}

static void test_handler_errors(void **state)
{
    (void)state;
    struct control_server *s = start();
    char *err = NULL;
    assert_int_equal(call("fail", NULL, NULL, &err), -EINVAL);
    assert_string_equal(err, "it failed on purpose");
    free(err);
    assert_int_equal(call("fail-silent", NULL, NULL, &err), IDB_E_NO_BINDING);
    assert_string_equal(err, idb_strerror(IDB_E_NO_BINDING));
    free(err);
    assert_int_equal(call("sloppy", NULL, NULL, &err), -EIO);
    free(err);
    control_server_stop(s);
}

static void test_unknown_op(void **state)
{
    (void)state;
    struct control_server *s = start();
    char *err = NULL;
    assert_int_equal(call("frobnicate", NULL, NULL, &err), -EOPNOTSUPP);
    assert_non_null(strstr(err, "'frobnicate'"));
    free(err);
    control_server_stop(s);
}

static void test_version(void **state)
{
    (void)state;
    struct control_server *s = start();
    char *err = NULL;
    static const char v2[] = "{\"version\":2,\"op\":\"echo\"}\n";
    assert_int_equal(raw_exchange(v2, strlen(v2), &err), -EPROTONOSUPPORT);
    assert_non_null(strstr(err, "version 2"));
    free(err);
    static const char none[] = "{\"op\":\"echo\"}\n";
    assert_int_equal(raw_exchange(none, strlen(none), &err), IDB_E_PROTO);
    assert_non_null(strstr(err, "'version'"));
    free(err);
    static const char str[] = "{\"version\":\"1\",\"op\":\"echo\"}";
    assert_int_equal(raw_exchange(str, strlen(str), NULL), IDB_E_PROTO);
    control_server_stop(s);
}

static void test_bad_requests(void **state)
{
    (void)state;
    struct control_server *s = start();
    char *err = NULL;
    static const char bad[] = "{\"version\":1,\"op\":\n";
    /* The newline ends the request: what came before it is not JSON. */
    assert_int_equal(raw_exchange(bad, strlen(bad), &err), IDB_E_PROTO);
    assert_true(strncmp(err, "invalid JSON: ", 14) == 0);
    free(err);
    static const char arr[] = "[1,2]\n";
    assert_int_equal(raw_exchange(arr, strlen(arr), NULL), IDB_E_PROTO);
    static const char no_op[] = "{\"version\":1}\n";
    assert_int_equal(raw_exchange(no_op, strlen(no_op), &err), IDB_E_PROTO);
    assert_non_null(strstr(err, "'op'"));
    free(err);
    static const char trailing[] = "{\"version\":1,\"op\":\"echo\"} {}\n";
    assert_int_equal(raw_exchange(trailing, strlen(trailing), NULL), IDB_E_PROTO);
    /* Nothing at all (the client shut down at once). */
    assert_int_equal(raw_exchange("", 0, &err), IDB_E_PROTO);
    assert_string_equal(err, "empty request");
    free(err);
    /* One exchange per connection: bytes after the newline are ignored. Without a newline, EOF
     * ends the request. */
    static const char extra[] = "{\"version\":1,\"op\":\"echo\"}\ngarbage";
    assert_int_equal(raw_exchange(extra, strlen(extra), NULL), 0);
    static const char eof[] = "{\"version\":1,\"op\":\"echo\"}";
    assert_int_equal(raw_exchange(eof, strlen(eof), NULL), 0);
    control_server_stop(s);
}

static void test_oversize(void **state)
{
    (void)state;
    struct control_server *s = start();
    size_t n = IDB_CTL_MAX_REQUEST + 100;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, ' ', n);
    char *err = NULL;
    assert_int_equal(raw_exchange(big, n, &err), -E2BIG);
    assert_non_null(strstr(err, "larger than"));
    free(err);

    /* The same through the client, whose request is cut off mid-write. */
    memset(big, 'x', n - 1);
    big[n - 1] = '\0';
    assert_int_equal(call("echo", big, NULL, &err), -E2BIG);
    free(err);
    free(big);

    /* The server is fine afterwards. */
    assert_int_equal(call("echo", "x", NULL, NULL), 0);
    control_server_stop(s);
}

static void test_reply_cap(void **state)
{
    (void)state;
    static const char req[] = "{\"version\":1,\"op\":\"big\"}";
    char *reply = control_handle_message(ops, &fake, req, strlen(req), 0);
    assert_non_null(reply);
    assert_true(strlen(reply) < 1024);
    assert_non_null(strstr(reply, "\"ok\":false"));
    char code[32];
    snprintf(code, sizeof(code), "\"code\":%d", -E2BIG);
    assert_non_null(strstr(reply, code));
    free(reply);
}

/* A client that connects and says nothing gets a thread of its own: others are served meanwhile,
 * and it is answered with a timeout error once CTL_IO_TIMEOUT_MS has passed. */
static void test_slow_client(void **state)
{
    (void)state;
    struct control_server *s = start();
    int slow = raw_connect();
    assert_int_equal(send(slow, "{\"vers", 6, MSG_NOSIGNAL), 6);
    assert_int_equal(call("echo", "fast", NULL, NULL), 0);
    assert_int_equal(call("echo", "fast again", NULL, NULL), 0);
    assert_int_equal(read_reply(slow, NULL), -ETIMEDOUT);
    close(slow);
    control_server_stop(s);
}

static void wait_blocked(int n)
{
    pthread_mutex_lock(&fake.lock);
    while (fake.blocked < n)
        pthread_cond_wait(&fake.cond, &fake.lock);
    pthread_mutex_unlock(&fake.lock);
}

static int send_block(void)
{
    static const char req[] = "{\"version\":1,\"op\":\"block\"}\n";
    int fd = raw_connect();
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    return fd;
}

/* Handlers run concurrently; past CTL_MAX_CLIENTS a client is refused at once with -EBUSY. */
static void test_concurrency_and_busy(void **state)
{
    (void)state;
    struct control_server *s = start();
    int fds[CTL_MAX_CLIENTS];

    fds[0] = send_block();
    wait_blocked(1);
    /* One handler is stuck; another client is still served. */
    assert_int_equal(call("echo", "x", NULL, NULL), 0);
    assert_int_equal(write(fake.block_wr, "x", 1), 1);
    assert_int_equal(read_reply(fds[0], NULL), 0);
    close(fds[0]);
    /* Stop waits for every connection thread, so the next server starts with no client at all (the
     * echo's thread may still be finishing after its reply reached us). */
    control_server_stop(s);

    s = start();
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        fds[i] = send_block();
    wait_blocked(CTL_MAX_CLIENTS);
    char *err = NULL;
    assert_int_equal(call("echo", "x", NULL, &err), -EBUSY);
    assert_non_null(strstr(err, "busy"));
    free(err);

    char bytes[CTL_MAX_CLIENTS];
    memset(bytes, 'x', sizeof(bytes));
    assert_int_equal(write(fake.block_wr, bytes, sizeof(bytes)), (ssize_t)sizeof(bytes));
    for (int i = 0; i < CTL_MAX_CLIENTS; i++) {
        assert_int_equal(read_reply(fds[i], NULL), 0);
        close(fds[i]);
    }
    control_server_stop(s);
    s = start();
    assert_int_equal(call("echo", "x", NULL, NULL), 0);
    control_server_stop(s);
}

/* Stopping while a client is idle ends its connection at once. */
static void test_stop_with_idle_client(void **state)
{
    (void)state;
    struct control_server *s = start();
    int fd = raw_connect();
    assert_int_equal(call("echo", "x", NULL, NULL), 0); /* the idle one has been accepted */
    control_server_stop(s);
    char c;
    assert_int_equal(read(fd, &c, 1), 0);
    close(fd);
    struct stat st;
    assert_int_equal(lstat(sock_path, &st), -1);
    assert_int_equal(errno, ENOENT);
}

static void test_modes(void **state)
{
    (void)state;
    struct control_server *s = start();
    struct stat st;
    assert_int_equal(lstat(sock_path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(stat(sock_dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    control_server_stop(s);
}

static void test_dir_tightened(void **state)
{
    (void)state;
    char parent[160];
    snprintf(parent, sizeof(parent), "%s/run", tmpdir);
    assert_int_equal(mkdir(parent, 0755), 0);
    assert_int_equal(mkdir(sock_dir, 0700), 0);
    assert_int_equal(chmod(sock_dir, 0755), 0);
    struct control_server *s = start();
    struct stat st;
    assert_int_equal(stat(sock_dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    control_server_stop(s);
}

static void test_dir_shared(void **state)
{
    (void)state;
    char other[192];
    snprintf(other, sizeof(other), "%s/run", tmpdir);
    assert_int_equal(mkdir(other, 0755), 0);
    assert_int_equal(mkdir(sock_dir, 0755), 0);
    assert_int_equal(chmod(sock_dir, 0755), 0);
    snprintf(other, sizeof(other), "%s/other-file", sock_dir);
    int fd = open(other, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    close(fd);

    /* Shared but writable only by us: used as it is, never chmod'ed. */
    struct control_server *s = start();
    struct stat st;
    assert_int_equal(stat(sock_dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755);
    assert_int_equal(lstat(sock_path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    control_server_stop(s);

    /* Shared and writable by others: refused. */
    assert_int_equal(chmod(sock_dir, 0777), 0);
    s = NULL;
    assert_int_equal(control_server_start(sock_path, ops, &fake, &s), -EPERM);
    assert_null(s);
    /* Sticky is shared even when empty: refused, not tightened. */
    assert_int_equal(unlink(other), 0);
    assert_int_equal(chmod(sock_dir, 01777), 0);
    assert_int_equal(control_server_start(sock_path, ops, &fake, &s), -EPERM);
    assert_int_equal(stat(sock_dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 01777);
    /* /tmp is the classic case (sticky, world-writable; and owned by root, not us, if we are not
     * root). */
    assert_int_equal(control_server_start("/tmp/idb-ctl-test.sock", ops, &fake, &s), -EPERM);
    assert_null(s);
}

static void test_dir_owner(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char parent[160];
    snprintf(parent, sizeof(parent), "%s/run", tmpdir);
    assert_int_equal(mkdir(parent, 0755), 0);
    assert_int_equal(mkdir(sock_dir, 0700), 0);
    assert_int_equal(chown(sock_dir, 65534, 65534), 0);
    struct control_server *s = NULL;
    assert_int_equal(control_server_start(sock_path, ops, &fake, &s), -EPERM);
    assert_null(s);
    struct stat st;
    assert_int_equal(stat(sock_dir, &st), 0);
    assert_int_equal(st.st_uid, 65534);
    assert_int_equal(st.st_mode & 07777, 0700);
}

static void test_stale_socket(void **state)
{
    (void)state;
    /* A broker that crashed leaves its socket behind; nobody listens on it. */
    struct control_server *s = start();
    control_server_stop(s);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(sock_path) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);

    char *err = NULL;
    assert_int_equal(call("echo", "x", NULL, &err), -ECONNREFUSED);
    assert_true(ctl_error_is_unreachable(-ECONNREFUSED));
    assert_non_null(strstr(err, "is it running?"));
    free(err);

    s = start();
    assert_int_equal(call("echo", "x", NULL, NULL), 0);
    control_server_stop(s);
}

static void test_live_socket(void **state)
{
    (void)state;
    struct control_server *a = start();
    struct control_server *b = NULL;
    assert_int_equal(control_server_start(sock_path, ops, &fake, &b), -EADDRINUSE);
    assert_null(b);
    assert_int_equal(call("echo", "x", NULL, NULL), 0);
    control_server_stop(a);
}

static void test_bad_paths(void **state)
{
    (void)state;
    struct control_server *s = NULL;
    assert_int_equal(control_server_start("relative.sock", ops, &fake, &s), -EINVAL);
    char path[300];
    memset(path, 'a', sizeof(path));
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    assert_int_equal(control_server_start(path, ops, &fake, &s), -ENAMETOOLONG);
    /* Something that is not a socket is never removed. */
    char parent[160];
    snprintf(parent, sizeof(parent), "%s/run", tmpdir);
    assert_int_equal(mkdir(parent, 0755), 0);
    assert_int_equal(mkdir(sock_dir, 0700), 0);
    int fd = open(sock_path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(control_server_start(sock_path, ops, &fake, &s), -EEXIST);
    assert_null(s);
    struct stat st;
    assert_int_equal(lstat(sock_path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
}

static void test_client_down(void **state)
{
    (void)state;
    char *err = NULL;
    assert_int_equal(call("echo", "x", NULL, &err), -ENOENT);
    assert_non_null(strstr(err, sock_path));
    assert_non_null(strstr(err, "is it running?"));
    free(err);
}

static void test_root_only(void **state)
{
    (void)state;
    static const char req[] = "{\"version\":1,\"op\":\"secret\"}";
    char *reply = control_handle_message(ops, &fake, req, strlen(req), 1000);
    assert_non_null(reply);
    assert_non_null(strstr(reply, "operation 'secret' requires root"));
    char code[32];
    snprintf(code, sizeof(code), "\"code\":%d", -EPERM);
    assert_non_null(strstr(reply, code));
    free(reply);
    reply = control_handle_message(ops, &fake, req, strlen(req), 0);
    assert_non_null(strstr(reply, "\"ok\":true"));
    free(reply);

    /* Through the socket, the peer's real uid counts. */
    struct control_server *s = start();
    char *err = NULL;
    int r = call("secret", NULL, NULL, &err);
    if (geteuid() == 0)
        assert_int_equal(r, 0);
    else {
        assert_int_equal(r, -EPERM);
        assert_string_equal(err, "operation 'secret' requires root");
    }
    free(err);
    control_server_stop(s);
}

/* Another user cannot even connect: the socket is 0600 in a 0700 directory. */
static void test_other_user_refused(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    struct control_server *s = start();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(3);
        _cleanup_json_ struct json_object *req = ctl_request_new("echo");
        struct json_object *res = NULL;
        int r = ctl_call(sock_path, req, TIMEOUT_MS, &res, NULL);
        _exit(r == -EACCES ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    control_server_stop(s);
}

/* ---- idbrokerctl against a fake broker that answers with the documented result shapes ---- */

static struct json_object *last_request; /* the fake broker's last request (owned) */

static struct json_object *parse_or_die(const char *text)
{
    struct json_object *o = NULL;
    assert_int_equal(json_parse_strict(text, strlen(text), &o, NULL), 0);
    return o;
}

static int fake_reply(struct json_object *req, const char *json, struct json_object **ret_result)
{
    json_object_put(last_request);
    last_request = json_object_get(req);
    *ret_result = parse_or_die(json);
    return 0;
}

static int fk_status(void *ud, struct json_object *req, struct json_object **ret, char **ret_error)
{
    (void)ud;
    (void)ret_error;
    char json[512];
    snprintf(json, sizeof(json),
             "{\"nodeName\":\"node-1\",\"version\":\"9.8.7\",\"ready\":false,"
             "\"notReady\":\"source not synced\",\"uptimeSeconds\":3700,"
             "\"source\":{\"kind\":\"files\",\"dir\":\"/etc/"
             "idb\",\"lastReload\":%lld,\"lastError\":null},"
             "\"pods\":2,\"identities\":1,\"bindings\":1,\"exceptions\":0,\"providers\":1,"
             "\"cache\":{\"entries\":3,\"hits\":10,\"misses\":2},\"extraKey\":\"extra\"}",
             (long long)time(NULL) - 3600);
    return fake_reply(req, json, ret);
}

static int fk_pods(void *ud, struct json_object *req, struct json_object **ret, char **ret_error)
{
    (void)ud;
    (void)ret_error;
    char json[1024];
    snprintf(json, sizeof(json),
             "[{\"version\":1,\"containerId\":\"%s\",\"ifName\":\"eth0\","
             "\"podNamespace\":\"default\",\"podName\":\"web-1\",\"podUid\":\"uid-1\","
             "\"netns\":\"/var/run/netns/x\",\"hostInterface\":\"veth1234\",\"hostIfindex\":7,"
             "\"ips\":[\"10.0.0.5\",\"fd00::5\"],\"created\":%lld,\"origin\":\"cni\"},"
             "{\"version\":1,\"containerId\":\"ctl-apps-api\",\"ifName\":\"eth0\","
             "\"podNamespace\":\"apps\",\"podName\":\"api\",\"podUid\":\"\",\"netns\":\"\","
             "\"hostInterface\":\"\",\"hostIfindex\":0,\"ips\":[\"10.0.0.6\"],\"created\":%lld,"
             "\"origin\":\"ctl\"}]",
             "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
             (long long)time(NULL) - 600, (long long)time(NULL) - 3 * 86400);
    return fake_reply(req, json, ret);
}

static int fk_identities(void *ud, struct json_object *req, struct json_object **ret,
                         char **ret_error)
{
    (void)ud;
    (void)ret_error;
    return fake_reply(req,
                      "[{\"metadata\":{\"namespace\":\"default\",\"name\":\"web-id\","
                      "\"annotations\":{}},\"spec\":{\"type\":0,\"clientID\":\"cid-1\","
                      "\"resourceID\":\"/subscriptions/x\"},\"provider\":\"mock\"}]",
                      ret);
}

static int fk_explain(void *ud, struct json_object *req, struct json_object **ret, char **ret_error)
{
    (void)ud;
    (void)ret_error;
    return fake_reply(
        req,
        "{\"pod\":\"default/web-1\",\"registered\":true,\"registration\":{\"containerId\":\"c1\","
        "\"ips\":[\"10.0.0.5\"],\"hostInterface\":\"veth1\",\"origin\":\"cni\",\"created\":1},"
        "\"decision\":\"allow\",\"reason\":\"binding web-binding selects label web\","
        "\"identity\":\"web-id\",\"candidates\":[{\"binding\":\"web-binding\",\"identity\":"
        "\"web-id\",\"weight\":10,\"applies\":true,\"why\":\"selector matches\"}],"
        "\"labels\":{\"aadpodidbinding\":\"web\"}}",
        ret);
}

static int fk_token(void *ud, struct json_object *req, struct json_object **ret, char **ret_error)
{
    (void)ud;
    (void)ret_error;
    return fake_reply(
        req,
        "{\"access_token\":\"eyJ.x.y\",\"client_id\":\"cid-1\",\"expires_in\":\"3599\","
        "\"expires_on\":\"1700003600\",\"ext_expires_in\":\"3599\",\"not_before\":"
        "\"1700000000\",\"resource\":\"https://vault.azure.net\",\"token_type\":"
        "\"Bearer\"}",
        ret);
}

static int fk_register(void *ud, struct json_object *req, struct json_object **ret,
                       char **ret_error)
{
    (void)ud;
    (void)ret_error;
    return fake_reply(req, "{}", ret);
}

static int fk_unregister(void *ud, struct json_object *req, struct json_object **ret,
                         char **ret_error)
{
    (void)ud;
    (void)ret_error;
    return fake_reply(req, "{\"removed\":2}", ret);
}

static int fk_reload(void *ud, struct json_object *req, struct json_object **ret, char **ret_error)
{
    (void)ud;
    (void)ret;
    json_object_put(last_request);
    last_request = json_object_get(req);
    *ret_error = strdup("reload failed: boom");
    return -EIO;
}

static const struct control_op fake_broker_ops[] = {
    {IDB_CTL_OP_STATUS, fk_status, 0},
    {IDB_CTL_OP_PODS, fk_pods, 0},
    {IDB_CTL_OP_IDENTITIES, fk_identities, 0},
    {IDB_CTL_OP_EXPLAIN, fk_explain, 0},
    {IDB_CTL_OP_TOKEN, fk_token, 1},
    {IDB_CTL_OP_REGISTER, fk_register, 1},
    {IDB_CTL_OP_UNREGISTER, fk_unregister, 1},
    {IDB_CTL_OP_RELOAD, fk_reload, 1},
    {IDB_CTL_OP_BINDINGS, fk_register, 0}, /* {} instead of a list */
    {NULL, NULL, 0},
};

static char ctl_bin[4096];

/* Runs idbrokerctl with args (NULL-terminated); returns its exit status, *ret_out its stdout and
 * stderr together (returns new). */
static int run_ctl(char **ret_out, ...)
{
    char *argv[32];
    size_t n = 0;
    argv[n++] = ctl_bin;
    va_list ap;
    va_start(ap, ret_out);
    for (char *a = va_arg(ap, char *); a && n < ELEMENTSOF(argv) - 1; a = va_arg(ap, char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;

    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        dup2(p[1], STDERR_FILENO);
        execv(ctl_bin, argv);
        _exit(127);
    }
    close(p[1]);
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(buf_read_fd(&b, p[0]), 0);
    close(p[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    *ret_out = buf_steal(&b);
    buf_done(&b);
    if (getenv("IDB_TEST_VERBOSE")) /* to look at the tables */
        fprintf(stderr, "$ idbrokerctl %s ...\n%s", argv[1] ? argv[1] : "", *ret_out);
    return WEXITSTATUS(status);
}

static bool find_ctl_bin(void)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return false;
    self[n] = '\0';
    /* <build>/tests/test-control -> <build>/idbrokerctl */
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(self, '/');
        if (!slash)
            return false;
        *slash = '\0';
    }
    snprintf(ctl_bin, sizeof(ctl_bin), "%.4000s/idbrokerctl", self);
    return access(ctl_bin, X_OK) == 0;
}

static void test_idbrokerctl(void **state)
{
    (void)state;
    if (!find_ctl_bin())
        skip();
    struct control_server *s = NULL;
    assert_int_equal(control_server_start(sock_path, fake_broker_ops, NULL, &s), 0);
    char *out = NULL;

    assert_int_equal(run_ctl(&out, "--socket", sock_path, "status", NULL), 0);
    assert_non_null(strstr(out, "Node:"));
    assert_non_null(strstr(out, "node-1"));
    assert_non_null(strstr(out, "(60m ago)"));
    assert_non_null(strstr(out, "Ready:       no (source not synced)\n"));
    assert_non_null(strstr(out, "Source:      files (/etc/idb)\n"));
    assert_non_null(strstr(out, "Uptime:      61m\n"));
    assert_non_null(strstr(out, "3 entries, 10 hits, 2 misses, 0 refreshes"));
    assert_non_null(strstr(out, "extraKey:"));
    free(out);

    assert_int_equal(run_ctl(&out, "pods", "--socket", sock_path, NULL), 0);
    /* Sorted by namespace: apps before default; runtime IDs cut to 12 characters; ages as kubectl.
     */
    char *hdr = strstr(out, "NAMESPACE   NAME    UID      IPS ");
    char *apps = strstr(out, "apps"), *dflt = strstr(out, "default");
    assert_non_null(hdr);
    assert_true(apps && dflt && hdr < apps && apps < dflt);
    assert_non_null(strstr(out, "10.0.0.5,fd00::5"));
    assert_non_null(strstr(out, "0123456789ab "));
    assert_null(strstr(out, "0123456789abc"));
    assert_non_null(strstr(out, "   10m\n"));
    assert_non_null(strstr(out, "   3d0h\n"));
    assert_non_null(strstr(out, "<none>"));
    free(out);

    assert_int_equal(run_ctl(&out, "-o", "json", "--socket", sock_path, "identities", NULL), 0);
    struct json_object *o = parse_or_die(out);
    assert_true(json_object_is_type(o, json_type_array));
    assert_int_equal(json_object_array_length(o), 1);
    json_object_put(o);
    free(out);
    assert_int_equal(run_ctl(&out, "--socket", sock_path, "identities", NULL), 0);
    assert_non_null(strstr(out, "0 (msi)"));
    assert_non_null(strstr(out, "CLIENT-ID"));
    free(out);

    assert_int_equal(run_ctl(&out, "--socket", sock_path, "explain", "default/web-1", NULL), 0);
    assert_non_null(strstr(out, "Decision:"));
    assert_non_null(strstr(out, "allow"));
    assert_non_null(strstr(out, "aadpodidbinding=web"));
    assert_non_null(strstr(out, "  BINDING"));
    assert_non_null(strstr(out, "selector matches"));
    assert_string_equal(json_get_str(last_request, "namespace"), "default");
    assert_string_equal(json_get_str(last_request, "name"), "web-1");
    free(out);

    assert_int_equal(run_ctl(&out, "--socket", sock_path, "token", "default/web-1", "--resource",
                             "https://vault.azure.net", "--client-id", "cid-1", "--bypass-cache",
                             NULL),
                     0);
    o = parse_or_die(out);
    assert_string_equal(json_get_str(o, "token_type"), "Bearer");
    json_object_put(o);
    assert_string_equal(json_get_str(last_request, "resource"), "https://vault.azure.net");
    assert_string_equal(json_get_str(last_request, "clientId"), "cid-1");
    assert_true(json_get_bool(last_request, "bypassCache", false));
    free(out);

    assert_int_equal(run_ctl(&out, "--socket", sock_path, "register", "kube-system/My_Pod", "--ip",
                             "10.0.0.9", "--ip", "fd00::9", "--uid", "u-9", "--host-interface",
                             "veth9", NULL),
                     0);
    assert_non_null(strstr(out, "registered kube-system/My_Pod"));
    free(out);
    struct json_object *reg = NULL;
    assert_true(json_object_object_get_ex(last_request, "registration", &reg));
    struct registration r;
    assert_int_equal(registration_from_json(reg, &r, NULL), 0);
    assert_string_equal(r.container_id, "ctl-kube-system-My_Pod");
    assert_string_equal(r.if_name, "eth0");
    assert_string_equal(r.pod_uid, "u-9");
    assert_string_equal(r.host_ifname, "veth9");
    assert_string_equal(r.origin, "ctl");
    assert_int_equal(r.n_ips, 2);
    assert_true(r.created > 0);

    assert_int_equal(run_ctl(&out, "--socket", sock_path, "unregister", "--container-id", "c1",
                             "--if-name", "eth1", NULL),
                     0);
    assert_non_null(strstr(out, "2 registrations removed"));
    assert_string_equal(json_get_str(last_request, "containerId"), "c1");
    assert_string_equal(json_get_str(last_request, "ifName"), "eth1");
    free(out);

    /* The broker's error, as it said it. */
    assert_int_equal(run_ctl(&out, "--socket", sock_path, "reload", NULL), 1);
    assert_string_equal(out, "idbrokerctl: reload failed: boom\n");
    free(out);
    /* An op this broker does not have, and a result of the wrong shape. */
    assert_int_equal(run_ctl(&out, "--socket", sock_path, "providers", NULL), 1);
    assert_non_null(strstr(out, "unknown operation 'providers'"));
    free(out);
    assert_int_equal(run_ctl(&out, "--socket", sock_path, "bindings", NULL), 1);
    free(out);

    /* Usage errors exit 2 with a hint; --help exits 0. */
    assert_int_equal(run_ctl(&out, "--socket", sock_path, "token", "default/web-1", NULL), 2);
    assert_non_null(strstr(out, "--resource is required"));
    assert_non_null(strstr(out, "Try 'idbrokerctl token --help'."));
    free(out);
    assert_int_equal(run_ctl(&out, "explain", "web-1", NULL), 2);
    free(out);
    assert_int_equal(run_ctl(&out, "frobnicate", NULL), 2);
    free(out);
    assert_int_equal(run_ctl(&out, "register", "--help", NULL), 0);
    assert_non_null(strstr(out, "--host-interface"));
    free(out);
    control_server_stop(s);

    /* No broker. */
    assert_int_equal(run_ctl(&out, "--socket", sock_path, "status", NULL), 1);
    assert_non_null(strstr(out, "cannot reach idbrokerd at"));
    assert_non_null(strstr(out, "(is it running?)"));
    free(out);
    json_object_put(last_request);
    last_request = NULL;
}

int main(void)
{
    log_setup(IDB_LOG_ERR, LOG_FORMAT_TEXT, STDERR_FILENO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handler_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_op, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency_and_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_idle_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_tightened, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_root_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_user_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idbrokerctl, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
