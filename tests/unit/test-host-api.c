/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host API handed to plugins: log prefix, clocks, issue_via routing, and the HTTP helper
 * against a small HTTP/1.1 server on 127.0.0.1 in a thread of this process (no other network).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <idbroker/provider.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "host-api.h"

#include <cmocka.h>

#define MIB (1024 * 1024)

/* ---- the loopback server: one request per connection, answers by path ---- */

static int srv_fd = -1;
static int srv_port;
static pthread_t srv_thread;

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* the client gave up (too big, timeout): fine */
        c += w;
        n -= (size_t)w;
    }
}

static void reply(int fd, const char *status, const char *extra_headers, const char *body,
                  size_t len)
{
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %s\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", status,
                     len, extra_headers);
    send_all(fd, head, (size_t)n);
    send_all(fd, body, len);
}

static void serve(int fd)
{
    char req[16384];
    size_t len = 0;
    char *end = NULL;
    while (!end && len < sizeof(req) - 1) {
        ssize_t r = recv(fd, req + len, sizeof(req) - 1 - len, 0);
        if (r <= 0)
            return;
        len += (size_t)r;
        req[len] = '\0';
        if (req[0] == 0x16) {
            /* A TLS ClientHello: answer in plain text, as a misconfigured server would. */
            send_all(fd, "HTTP/1.1 400 Bad Request\r\n\r\n", 28);
            return;
        }
        end = strstr(req, "\r\n\r\n");
    }
    if (!end)
        return;
    size_t clen = 0;
    const char *cl = strcasestr(req, "\r\nContent-Length:");
    if (cl)
        clen = strtoul(cl + 17, NULL, 10);
    while (len < (size_t)(end + 4 - req) + clen && len < sizeof(req) - 1) {
        ssize_t r = recv(fd, req + len, sizeof(req) - 1 - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
        req[len] = '\0';
    }
    char method[8] = "", path[256] = "";
    if (sscanf(req, "%7s %255s", method, path) != 2)
        return;

    if (streq(path, "/echo")) {
        /* Echoes what the helper sent: method, a header, the body, and whether a proxy was asked
         * (a proxied request line carries an absolute URI). */
        const char *xt = strcasestr(req, "\r\nX-Test:");
        char val[64] = "";
        if (xt)
            sscanf(xt + 9, " %63[^\r]", val);
        char body[2048];
        int n = snprintf(body, sizeof(body), "method=%s path=%s x-test=%s body=%s", method, path,
                         val, end + 4);
        reply(fd, "200 OK", "", body, (size_t)n);
    } else if (streq(path, "/retry")) {
        reply(fd, "503 Service Unavailable",
              "Retry-After: 7\r\nWWW-Authenticate: Bearer realm=\"r\", error=\"x\"\r\n", "{}", 2);
    } else if (streq(path, "/retry-date")) {
        reply(fd, "429 Too Many Requests", "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", "", 0);
    } else if (streq(path, "/retry-huge")) {
        reply(fd, "429 Too Many Requests", "Retry-After: 99999999999\r\n", "", 0);
    } else if (streq(path, "/redirect")) {
        reply(fd, "302 Found", "Location: /echo\r\n", "", 0);
    } else if (streq(path, "/empty")) {
        reply(fd, "204 No Content", "", "", 0);
    } else if (streq(path, "/exact") || streq(path, "/big") || streq(path, "/big-unsized")) {
        size_t n = streq(path, "/exact") ? MIB : MIB + 1;
        char *body = malloc(n);
        memset(body, 'x', n);
        if (streq(path, "/big-unsized")) {
            /* No Content-Length: the cap must hold while reading, not just on the header. */
            const char *head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
            send_all(fd, head, strlen(head));
            send_all(fd, body, n);
        } else {
            reply(fd, "200 OK", "", body, n);
        }
        free(body);
    } else if (streq(path, "/slow")) {
        /* Never answer; wait for the client to give up and close. */
        char c;
        while (recv(fd, &c, 1, 0) > 0)
            ;
    } else {
        reply(fd, "404 Not Found", "", "", 0);
    }
}

static void *server_main(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(srv_fd, NULL, NULL);
        if (c < 0)
            return NULL; /* listening socket shut down: the test is over */
        serve(c);
        close(c);
    }
}

static int server_start(void **state)
{
    (void)state;
    srv_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (srv_fd < 0 || bind(srv_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(srv_fd, 16) < 0 || getsockname(srv_fd, (struct sockaddr *)&a, &al) < 0)
        return -1;
    srv_port = ntohs(a.sin_port);
    return pthread_create(&srv_thread, NULL, server_main, NULL) == 0 ? 0 : -1;
}

static int server_stop(void **state)
{
    (void)state;
    shutdown(srv_fd, SHUT_RDWR);
    pthread_join(srv_thread, NULL);
    close(srv_fd);
    return 0;
}

/* ---- helpers ---- */

static int http(const char *method, const char *path, const char *const *headers, const char *body,
                uint32_t timeout_ms, struct idb_http_resp *ret)
{
    char url[256];
    if (strstr(path, "://"))
        snprintf(url, sizeof(url), "%s", path);
    else
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", srv_port, path);
    struct idb_http_req req = {
        .size = sizeof(req),
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .timeout_ms = timeout_ms,
    };
    *ret = (struct idb_http_resp){0};
    return host_api_get()->http(&req, ret);
}

static void resp_done(struct idb_http_resp *r)
{
    host_api_get()->free(r->body);
    host_api_get()->free(r->www_authenticate);
}

/* ---- tests ---- */

static void test_table(void **state)
{
    (void)state;
    const struct idb_host_api *h = host_api_get();
    assert_int_equal(h->size, sizeof(struct idb_host_api));
    assert_int_equal(h->abi_minor, IDB_PLUGIN_ABI_MINOR);
    assert_true(IDB_HOST_HAS(h, issue_via));
    assert_non_null(h->log);
    assert_non_null(h->http);
    char *p = h->alloc(16);
    assert_non_null(p);
    h->free(p);
    h->free(NULL);
    assert_string_equal(h->strerror(IDB_E_PLUGIN_ABI), "plugin ABI mismatch");
    assert_string_equal(h->strerror(-ENOENT), strerror(ENOENT));
    uint64_t t = (uint64_t)time(NULL), now = h->now_realtime();
    assert_true(now + 1 >= t && now <= t + 1);
    uint64_t m1 = h->now_monotonic_ms(), m2 = h->now_monotonic_ms();
    assert_true(m2 >= m1);
}

static void test_log_prefix(void **state)
{
    (void)state;
    char path[] = "/tmp/idb-hostlog-XXXXXX";
    _cleanup_close_ int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    log_setup(IDB_LOG_INFO, LOG_FORMAT_TEXT, fd);
    const struct idb_host_api *h = host_api_get();
    h->log(IDB_LOG_WARNING, "mock", "hello %d", 42);
    h->log(IDB_LOG_DEBUG, "mock", "filtered out");
    h->log(99, NULL, "clamped to debug, filtered");
    h->log(-5, NULL, "clamped to err");
    char big[6000];
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    h->log(IDB_LOG_ERR, "azure-msi", "%s", big);
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);

    char buf[16384];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "[provider:mock] hello 42"));
    assert_null(strstr(buf, "filtered"));
    assert_non_null(strstr(buf, "[provider:?] clamped to err"));
    assert_non_null(strstr(buf, "[provider:azure-msi] yyyy"));
    assert_null(strstr(buf, big)); /* truncated, not written whole */
}

static struct idb_token_req seen_req;
static char seen_provider[32];

static int fake_issue_via(const char *provider, const struct idb_token_req *req,
                          struct idb_token *ret)
{
    snprintf(seen_provider, sizeof(seen_provider), "%s", provider);
    seen_req = *req;
    if (streq(req->resource, "fail")) {
        ret->upstream_status = 403;
        return IDB_E_UPSTREAM_4XX;
    }
    ret->access_token = strdup("via-token");
    ret->expires_on = 1234;
    return 0;
}

static void test_issue_via(void **state)
{
    (void)state;
    const struct idb_host_api *h = host_api_get();
    struct idb_token_req req = {.size = sizeof(req), .resource = "https://vault.azure.net"};
    struct idb_token t = {.size = sizeof(t)};
    assert_int_equal(h->issue_via("azure-msi", &req, &t), -ENOTSUP);

    assert_int_equal(host_api_init(fake_issue_via), 0);
    assert_int_equal(h->issue_via("azure-msi", &req, &t), 0);
    assert_string_equal(seen_provider, "azure-msi");
    assert_int_equal(seen_req.size, sizeof(struct idb_token_req));
    assert_string_equal(seen_req.resource, "https://vault.azure.net");
    assert_string_equal(t.access_token, "via-token");
    assert_int_equal(t.expires_on, 1234);
    assert_int_equal(t.size, sizeof(t));
    h->free(t.access_token);

    t = (struct idb_token){.size = sizeof(t)};
    req.resource = "fail";
    assert_int_equal(h->issue_via("azure-msi", &req, &t), IDB_E_UPSTREAM_4XX);
    assert_int_equal(t.upstream_status, 403);

    /* Sizes below ABI 1.0 are refused before the broker sees them. */
    req.size = 8;
    assert_int_equal(h->issue_via("azure-msi", &req, &t), -EINVAL);
    req.size = sizeof(req);
    t.size = 8;
    assert_int_equal(h->issue_via("azure-msi", &req, &t), -EINVAL);
    assert_int_equal(h->issue_via(NULL, &req, &t), -EINVAL);
    host_api_done(); /* back to the single init of main(), with no routing */
    assert_int_equal(host_api_init(NULL), 0);
    host_api_done();
}

static void test_http_get_post(void **state)
{
    (void)state;
    struct idb_http_resp r;
    const char *const hdrs[] = {"X-Test: abc", "Metadata: true", NULL};
    assert_int_equal(http("GET", "/echo", hdrs, NULL, 0, &r), 0);
    assert_int_equal(r.size, sizeof(r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "method=GET path=/echo x-test=abc body=");
    assert_int_equal(r.body_len, strlen(r.body));
    assert_int_equal(r.retry_after_s, 0);
    assert_null(r.www_authenticate);
    resp_done(&r);

    const char *const form[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    assert_int_equal(http("POST", "/echo", form, "grant_type=client_credentials", 0, &r), 0);
    assert_string_equal(r.body,
                        "method=POST path=/echo x-test= body=grant_type=client_credentials");
    resp_done(&r);

    /* ABI 1.1: PATCH with a body (ARM's identity update). */
    const char *const js[] = {"Content-Type: application/json", NULL};
    assert_int_equal(http("PATCH", "/echo", js, "{\"identity\":{}}", 0, &r), 0);
    assert_string_equal(r.body, "method=PATCH path=/echo x-test= body={\"identity\":{}}");
    resp_done(&r);

    assert_int_equal(http("GET", "/empty", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 204);
    assert_string_equal(r.body, "");
    assert_int_equal(r.body_len, 0);
    resp_done(&r);

    /* Redirects are returned, never followed. */
    assert_int_equal(http("GET", "/redirect", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 302);
    resp_done(&r);
}

static void test_http_headers(void **state)
{
    (void)state;
    struct idb_http_resp r;
    assert_int_equal(http("GET", "/retry", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.retry_after_s, 7);
    assert_string_equal(r.www_authenticate, "Bearer realm=\"r\", error=\"x\"");
    assert_string_equal(r.body, "{}");
    resp_done(&r);

    assert_int_equal(http("GET", "/retry-date", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 429);
    assert_int_equal(r.retry_after_s, 0);
    resp_done(&r);

    assert_int_equal(http("GET", "/retry-huge", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.retry_after_s, 86400);
    resp_done(&r);
}

static void test_http_cap(void **state)
{
    (void)state;
    struct idb_http_resp r;
    assert_int_equal(http("GET", "/exact", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.body_len, IDB_HTTP_MAX_REPLY_BYTES);
    resp_done(&r);
    r = (struct idb_http_resp){0};
    assert_int_equal(http("GET", "/big", NULL, NULL, 0, &r), -E2BIG);
    assert_null(r.body);
    assert_int_equal(http("GET", "/big-unsized", NULL, NULL, 0, &r), -E2BIG);
    assert_null(r.body);
}

static void test_http_no_proxy(void **state)
{
    (void)state;
    /* A proxy in the environment is ignored: the request still goes straight to the server. */
    setenv("http_proxy", "http://127.0.0.1:9", 1);
    setenv("HTTPS_PROXY", "http://127.0.0.1:9", 1);
    setenv("ALL_PROXY", "http://127.0.0.1:9", 1);
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    struct idb_http_resp r;
    int rc = http("GET", "/echo", NULL, NULL, 0, &r);
    unsetenv("http_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("ALL_PROXY");
    assert_int_equal(rc, 0);
    assert_non_null(strstr(r.body, "path=/echo ")); /* origin-form: not a proxy request */
    resp_done(&r);
}

static void test_http_errors(void **state)
{
    (void)state;
    struct idb_http_resp r;
    /* Only http and https. */
    assert_int_equal(http("GET", "file:///etc/hostname", NULL, NULL, 0, &r), -EPROTONOSUPPORT);
    assert_int_equal(http("GET", "ftp://127.0.0.1/x", NULL, NULL, 0, &r), -EPROTONOSUPPORT);
    /* TLS to a plain-text server fails the handshake, and the host says why in its log, naming
     * the URL's origin only: no path, query or userinfo. */
    char path[] = "/tmp/idb-hostlog-XXXXXX";
    _cleanup_close_ int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    log_setup(IDB_LOG_INFO, LOG_FORMAT_TEXT, fd);
    char url[160];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/echo?secret=s3", srv_port);
    assert_int_equal(http("GET", url, NULL, NULL, 2000, &r), -EPROTO);
    snprintf(url, sizeof(url), "https://user:pw@127.0.0.1:%d/echo", srv_port);
    assert_int_equal(http("GET", url, NULL, NULL, 2000, &r), -EPROTO);
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);
    char logged[4096], origin[64];
    ssize_t n = pread(fd, logged, sizeof(logged) - 1, 0);
    assert_true(n > 0);
    logged[n] = '\0';
    snprintf(origin, sizeof(origin), "HTTPS to https://127.0.0.1:%d failed: ", srv_port);
    const char *first = strstr(logged, origin);
    assert_non_null(first);
    assert_non_null(strstr(first + 1, origin)); /* the second URL, its userinfo left out */
    assert_null(strstr(logged, "/echo"));
    assert_null(strstr(logged, "s3"));
    assert_null(strstr(logged, "pw"));
    assert_null(strstr(logged, "user"));

    /* A port nobody listens on. */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    assert_int_equal(http("GET", url, NULL, NULL, 0, &r), -ECONNREFUSED);

    /* The server never answers /slow: the timeout ends the exchange. */
    assert_int_equal(http("GET", "/slow", NULL, NULL, 300, &r), -ETIMEDOUT);

    /* Malformed requests never reach the network. */
    assert_int_equal(http("PUT", "/echo", NULL, NULL, 0, &r), -EINVAL);
    assert_int_equal(http("GET", "/echo", NULL, "body", 0, &r), -EINVAL);
    const char *const inject[] = {"X-Test: a\r\nX-Evil: b", NULL};
    assert_int_equal(http("GET", "/echo", inject, NULL, 0, &r), -EINVAL);
    const char *const nocolon[] = {"X-Test", NULL};
    assert_int_equal(http("GET", "/echo", nocolon, NULL, 0, &r), -EINVAL);
    assert_int_equal(http("GET", "/echo\r\nX: y", NULL, NULL, 0, &r), -EINVAL);
    struct idb_http_req small = {.size = 8, .method = "GET", .url = "http://127.0.0.1/"};
    assert_int_equal(host_api_get()->http(&small, &r), -EINVAL);
    assert_int_equal(host_api_get()->http(NULL, &r), -EINVAL);
}

/* ---- upstream limiters (ABI 1.1) ---- */

static void test_upstream_table(void **state)
{
    (void)state;
    const struct idb_host_api *h = host_api_get();
    assert_int_equal(host_api_init(NULL), 0); /* test_issue_via ended with host_api_done() */
    assert_true(IDB_HOST_HAS(h, upstream_release));
    assert_int_equal(h->abi_minor, 1);
    /* Bad names and limits. */
    assert_int_equal(h->upstream_limits("", 1, 1), -EINVAL);
    assert_int_equal(h->upstream_limits("Bad", 1, 1), -EINVAL);
    assert_int_equal(h->upstream_limits("a/b", 1, 1), -EINVAL);
    assert_int_equal(h->upstream_limits(NULL, 1, 1), -EINVAL);
    assert_int_equal(h->upstream_limits("x", 0, 1), -EINVAL);
    assert_int_equal(h->upstream_limits("x", 1, 0), -EINVAL);
    assert_int_equal(h->upstream_limits("x", 1, IDB_UPSTREAM_LIMIT_MAX + 1), -EINVAL);
    assert_int_equal(h->upstream_acquire("nope", h->now_monotonic_ms(), NULL), -ENOENT);
    assert_int_equal(h->upstream_acquire("No", h->now_monotonic_ms(), NULL), -EINVAL);
    h->upstream_release("nope"); /* harmless */

    /* "imds" exists from the start, with IMDS' limits: 5 at once. */
    uint64_t now = h->now_monotonic_ms();
    for (int i = 0; i < IDB_UPSTREAM_IMDS_MAX_CONCURRENT; i++)
        assert_int_equal(h->upstream_acquire(IDB_UPSTREAM_IMDS, now, NULL), 0);
    uint32_t hint = 0;
    assert_int_equal(h->upstream_acquire(IDB_UPSTREAM_IMDS, now, &hint), -EAGAIN);
    assert_true(hint > 0);
    /* Broker-side callers share the very same limiter. */
    assert_int_equal(host_api_upstream_acquire(IDB_UPSTREAM_IMDS, now, NULL), -EAGAIN);
    h->upstream_release(IDB_UPSTREAM_IMDS);
    assert_int_equal(host_api_upstream_acquire(IDB_UPSTREAM_IMDS, h->now_monotonic_ms(), NULL), 0);
    for (int i = 0; i < IDB_UPSTREAM_IMDS_MAX_CONCURRENT; i++)
        host_api_upstream_release(IDB_UPSTREAM_IMDS);

    /* Too many upstreams. */
    int r = 0;
    for (int i = 0; i < 40 && r == 0; i++) {
        char name[16];
        snprintf(name, sizeof(name), "u%d", i);
        r = h->upstream_limits(name, 1, 1);
    }
    assert_int_equal(r, -ENOSPC);
    /* host_api_done() drops them all; init makes "imds" again. */
    host_api_done();
    assert_int_equal(host_api_init(NULL), 0);
    assert_int_equal(h->upstream_acquire("u0", h->now_monotonic_ms(), NULL), -ENOENT);
    assert_int_equal(h->upstream_acquire(IDB_UPSTREAM_IMDS, h->now_monotonic_ms(), NULL), 0);
    h->upstream_release(IDB_UPSTREAM_IMDS);
}

struct waiter {
    const char *name;
    uint64_t deadline;
    int result;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    w->result = host_api_get()->upstream_acquire(w->name, w->deadline, NULL);
    return NULL;
}

static void test_upstream_concurrency(void **state)
{
    (void)state;
    const struct idb_host_api *h = host_api_get();
    assert_int_equal(h->upstream_limits("conc", 1, 1000), 0);
    assert_int_equal(h->upstream_acquire("conc", h->now_monotonic_ms(), NULL), 0);
    /* A second caller waits for the release, not for its (far) deadline. */
    struct waiter w = {"conc", h->now_monotonic_ms() + 60000, 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, waiter_main, &w), 0);
    h->upstream_release("conc");
    pthread_join(t, NULL);
    assert_int_equal(w.result, 0);
    h->upstream_release("conc");
    /* New limits apply to the next caller; held slots stay valid. */
    assert_int_equal(h->upstream_limits("conc", 2, 1000), 0);
    assert_int_equal(h->upstream_acquire("conc", h->now_monotonic_ms(), NULL), 0);
    assert_int_equal(h->upstream_acquire("conc", h->now_monotonic_ms(), NULL), 0);
    assert_int_equal(h->upstream_acquire("conc", h->now_monotonic_ms(), NULL), -EAGAIN);
    h->upstream_release("conc");
    h->upstream_release("conc");
}

static void test_upstream_rate(void **state)
{
    (void)state;
    const struct idb_host_api *h = host_api_get();
    assert_int_equal(h->upstream_limits("rate", 100, 3), 0);
    uint64_t t0 = h->now_monotonic_ms();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(h->upstream_acquire("rate", t0, NULL), 0);
        h->upstream_release("rate");
    }
    /* The window is full: the 4th start must wait about a second, whatever the concurrency. */
    uint32_t hint = 0;
    assert_int_equal(h->upstream_acquire("rate", t0, &hint), -EAGAIN);
    assert_true(hint > 0 && hint <= 1100);
    /* Lowering the rate keeps the newest starts: still no room. */
    assert_int_equal(h->upstream_limits("rate", 100, 2), 0);
    assert_int_equal(h->upstream_acquire("rate", h->now_monotonic_ms(), NULL), -EAGAIN);
    /* Waiting until a start leaves the window succeeds, and not before it left. */
    assert_int_equal(h->upstream_acquire("rate", h->now_monotonic_ms() + 5000, NULL), 0);
    assert_true(h->now_monotonic_ms() >= t0 + 1000);
    h->upstream_release("rate");
}

int main(void)
{
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);
    assert_int_equal(host_api_init(NULL), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),          cmocka_unit_test(test_log_prefix),
        cmocka_unit_test(test_issue_via),      cmocka_unit_test(test_http_get_post),
        cmocka_unit_test(test_http_headers),   cmocka_unit_test(test_http_cap),
        cmocka_unit_test(test_http_no_proxy),  cmocka_unit_test(test_http_errors),
        cmocka_unit_test(test_upstream_table), cmocka_unit_test(test_upstream_concurrency),
        cmocka_unit_test(test_upstream_rate),
    };
    int r = cmocka_run_group_tests(tests, server_start, server_stop);
    host_api_done();
    return r;
}
