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
#include <unistd.h>

#include <idbroker/ctl-proto.h>
#include <idbroker/errno.h>

#include <idbroker-internal/ctl-client.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>

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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
