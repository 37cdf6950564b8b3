/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP layer over a real listener on loopback, driven by a raw socket client (so requests can
 * be exactly as malformed as a test needs). */
#include <arpa/inet.h>
#include <errno.h>
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
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <idbroker-internal/buf.h>

#include "http-server.h"
#include "limits.h"
#include "metrics.h"

#include <cmocka.h>

/* What the handler saw and what it answers. The client waits for each reply, so requests never
 * overlap; the mutex only orders memory between the connection thread and the test. */
static struct {
    pthread_mutex_t lock;
    unsigned calls;
    char method[16];
    char raw_uri[HTTP_MAX_URI_BYTES + 1];
    int peer_family;
    char peer[INET6_ADDRSTRLEN];
    char hdr_value[256];
    unsigned hdr_count;
    /* the reply */
    int status;
    const char *body;
    bool secret;
    uint32_t retry_after_s;
    const char *allow;
    /* test_defer: "/slow" defers and then waits for `released`, which "/fast" sets */
    pthread_cond_t cv;
    bool released;
    unsigned slow_nonblocking, slow_blocking, fast_nonblocking, fast_blocking;
} H = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* 0: a thread per connection; 1: one event-loop thread (the group runs once with each). */
static unsigned server_threads;

static void handler(void *ud, const struct http_request *req, struct http_response *resp)
{
    (void)ud;
    pthread_mutex_lock(&H.lock);
    if (strcmp(req->raw_uri, "/slow") == 0) {
        if (!req->may_block) {
            H.slow_nonblocking++;
            resp->defer = true;
            pthread_mutex_unlock(&H.lock);
            return;
        }
        H.slow_blocking++;
        while (!H.released)
            pthread_cond_wait(&H.cv, &H.lock);
    } else if (strcmp(req->raw_uri, "/fast") == 0) {
        if (req->may_block)
            H.fast_blocking++;
        else
            H.fast_nonblocking++;
        H.released = true;
        pthread_cond_broadcast(&H.cv);
    }
    H.calls++;
    snprintf(H.method, sizeof(H.method), "%s", req->method);
    snprintf(H.raw_uri, sizeof(H.raw_uri), "%s", req->raw_uri);
    H.peer_family = req->peer ? req->peer->sa_family : -1;
    H.peer[0] = '\0';
    if (req->peer && req->peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)req->peer)->sin_addr, H.peer,
                  sizeof(H.peer));
    else if (req->peer && req->peer->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)req->peer)->sin6_addr, H.peer,
                  sizeof(H.peer));
    const char *v = http_request_header(req, "x-TEST");
    snprintf(H.hdr_value, sizeof(H.hdr_value), "%s", v ? v : "(none)");
    H.hdr_count = http_request_header_count(req, "X-Test");

    if (H.body) {
        assert_int_equal(http_response_json(resp, H.status, H.body), 0);
    } else {
        resp->status = H.status;
    }
    resp->secret = H.secret;
    resp->retry_after_s = H.retry_after_s;
    resp->allow = H.allow;
    pthread_mutex_unlock(&H.lock);
}

static void reply_with(int status, const char *body)
{
    pthread_mutex_lock(&H.lock);
    H.calls = 0;
    H.status = status;
    H.body = body;
    H.secret = false;
    H.retry_after_s = 0;
    H.allow = NULL;
    pthread_mutex_unlock(&H.lock);
}

static unsigned handler_calls(void)
{
    pthread_mutex_lock(&H.lock);
    unsigned n = H.calls;
    pthread_mutex_unlock(&H.lock);
    return n;
}

/* A free port on loopback (bound then released; a race with another binder is harmless here: the
 * server start would fail loudly). */
static unsigned free_port(int family)
{
    int fd = socket(family, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*s4);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_loopback;
        len = sizeof(*s6);
    }
    assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    close(fd);
    return family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                             : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

struct reply {
    int status;
    char *raw; /* whole reply */
    const char *body;
};

static void reply_done(struct reply *r)
{
    free(r->raw);
    memset(r, 0, sizeof(*r));
}

/* Sends `req` as is and reads the reply until the server closes (every request here ends with
 * Connection: close or is refused). A receive timeout only keeps a broken server from hanging
 * ctest. */
static void exchange(int family, const char *addr, unsigned port, const char *req, size_t len,
                     struct reply *ret)
{
    int fd = socket(family, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl;
    if (family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET, addr, &s4->sin_addr), 1);
        sl = sizeof(*s4);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
        sl = sizeof(*s6);
    }
    assert_int_equal(connect(fd, (struct sockaddr *)&ss, sl), 0);
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server may refuse and close before reading everything */
        off += (size_t)n;
    }
    struct buf b;
    buf_init(&b, 1024 * 1024);
    char tmp[8192];
    for (;;) {
        ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
        if (n <= 0)
            break;
        assert_int_equal(buf_append(&b, tmp, (size_t)n), 0);
    }
    close(fd);
    memset(ret, 0, sizeof(*ret));
    ret->raw = buf_steal(&b);
    if (sscanf(ret->raw, "HTTP/1.%*d %d", &ret->status) != 1)
        ret->status = -1;
    const char *end = strstr(ret->raw, "\r\n\r\n");
    ret->body = end ? end + 4 : "";
}

static unsigned port4;
static struct http_server *srv4;

static void get(const char *req, struct reply *ret)
{
    exchange(AF_INET, "127.0.0.1", port4, req, strlen(req), ret);
}

/* The value of header `name` in the reply's head (case-insensitive), or NULL. */
static char *reply_header(const struct reply *r, const char *name)
{
    static char v[256];
    size_t nl = strlen(name);
    for (const char *p = strstr(r->raw, "\r\n"); p && p < r->body; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *val = line + nl + 1;
            while (*val == ' ')
                val++;
            size_t n = strcspn(val, "\r");
            snprintf(v, sizeof(v), "%.*s", (int)n, val);
            return v;
        }
    }
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    port4 = free_port(AF_INET);
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", port4);
    char *err = NULL;
    struct http_server_options o = {
        .max_connections = 16, .max_per_ip = 16, .timeout_s = 10, .threads = server_threads};
    srv4 = http_server_start(listen, &o, handler, NULL, &err);
    if (!srv4)
        fprintf(stderr, "start: %s\n", err);
    free(err);
    return srv4 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    srv4 = http_server_stop(srv4);
    return 0;
}

static void test_raw_target_and_request(void **state)
{
    (void)state;
    reply_with(200, "{\"a\":\"b\"}");
    struct reply r;
    get("GET //Metadata/%2e%2e/x;p?q=%41&b=c+d HTTP/1.1\r\nHost: h\r\nX-Test: one\r\n"
        "x-test: two\r\nConnection: close\r\n\r\n",
        &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"a\":\"b\"}");
    assert_int_equal(handler_calls(), 1);
    assert_string_equal(H.method, "GET");
    /* Exactly as sent: nothing decoded, nothing normalised, the query kept. */
    assert_string_equal(H.raw_uri, "//Metadata/%2e%2e/x;p?q=%41&b=c+d");
    assert_int_equal(H.peer_family, AF_INET);
    assert_string_equal(H.peer, "127.0.0.1");
    assert_string_equal(H.hdr_value, "one");
    assert_int_equal(H.hdr_count, 2);
    assert_string_equal(reply_header(&r, "Content-Type"), "application/json; charset=utf-8");
    assert_null(reply_header(&r, "Server"));
    assert_null(reply_header(&r, "Retry-After"));
    assert_null(reply_header(&r, "Allow"));
    assert_null(reply_header(&r, "Cache-Control"));
    reply_done(&r);

    get("POST /x HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(H.method, "POST");
    assert_string_equal(H.hdr_value, "(none)");
    assert_int_equal(H.hdr_count, 0);
    reply_done(&r);
}

static void test_response_headers(void **state)
{
    (void)state;
    reply_with(503, "{\"error\":\"x\"}");
    H.retry_after_s = 7;
    H.allow = "GET";
    H.secret = true;
    struct reply r;
    get("GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(reply_header(&r, "Retry-After"), "7");
    assert_string_equal(reply_header(&r, "Allow"), "GET");
    assert_string_equal(reply_header(&r, "Cache-Control"), "no-store");
    assert_string_equal(r.body, "{\"error\":\"x\"}");
    assert_null(reply_header(&r, "Server"));
    reply_done(&r);

    /* No status from the handler is a 500, never a 200. */
    reply_with(0, NULL);
    get("GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 500);
    assert_string_equal(r.body, "");
    reply_done(&r);
}

/* Keep-alive: two requests on one connection get two replies, and the connection stays open after
 * the first (the second asks to close it, so the read ends). */
static void test_keep_alive(void **state)
{
    (void)state;
    reply_with(200, "{\"k\":\"v\"}");
    struct reply r;
    get("GET /one HTTP/1.1\r\nHost: h\r\n\r\nGET /two HTTP/1.1\r\nHost: h\r\nConnection: "
        "close\r\n\r\n",
        &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(handler_calls(), 2);
    assert_string_equal(H.raw_uri, "/two");
    const char *second = strstr(r.body, "HTTP/1.1 200 ");
    assert_non_null(second);
    assert_null(strstr(r.raw, "Connection: close\r\n\r\n{\"k\":\"v\"}HTTP"));
    reply_done(&r);
}

struct slow_get {
    pthread_t th;
    struct reply r;
};

static void *slow_get_main(void *ud)
{
    struct slow_get *g = ud;
    get("GET /slow HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &g->r);
    return NULL;
}

/* A request the handler defers blocks only itself: another connection is served while it waits
 * (the deferred handler waits for that other request, so a blocked event loop would never answer
 * either), and its answer is sent when it returns. With a thread per connection nothing defers. */
static void test_defer(void **state)
{
    (void)state;
    reply_with(200, "{\"token\":\"t\"}");
    pthread_mutex_lock(&H.lock);
    H.released = false;
    H.secret = true;
    H.slow_nonblocking = H.slow_blocking = H.fast_nonblocking = H.fast_blocking = 0;
    pthread_mutex_unlock(&H.lock);

    struct slow_get g;
    memset(&g, 0, sizeof(g));
    assert_int_equal(pthread_create(&g.th, NULL, slow_get_main, &g), 0);
    /* /slow must have reached its blocking call before /fast is sent (not a timing assertion: a
     * bounded wait so a broken server fails instead of hanging). */
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&H.lock);
        unsigned n = H.slow_blocking;
        pthread_mutex_unlock(&H.lock);
        if (n)
            break;
        usleep(5000);
    }
    assert_int_equal(H.slow_blocking, 1);

    struct reply r;
    get("GET /fast HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"token\":\"t\"}");
    reply_done(&r);
    assert_int_equal(pthread_join(g.th, NULL), 0);
    assert_int_equal(g.r.status, 200);
    assert_string_equal(g.r.body, "{\"token\":\"t\"}");
    assert_non_null(reply_header(&g.r, "Cache-Control"));
    assert_string_equal(reply_header(&g.r, "Cache-Control"), "no-store");
    reply_done(&g.r);

    if (server_threads) {
        assert_int_equal(H.slow_nonblocking, 1); /* first on the event loop, deferred */
        assert_int_equal(H.fast_nonblocking, 1); /* answered on the event loop */
        assert_int_equal(H.fast_blocking, 0);
    } else {
        assert_int_equal(H.slow_nonblocking, 0);
        assert_int_equal(H.fast_nonblocking, 0);
        assert_int_equal(H.fast_blocking, 1);
    }
    reply_with(200, "{}");
}

static void test_uri_cap(void **state)
{
    (void)state;
    reply_with(200, "{}");
    struct reply r;
    char *req = NULL;

    /* Exactly at the cap: served. */
    size_t n = HTTP_MAX_URI_BYTES - 1;
    assert_true(asprintf(&req, "GET /%0*d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", (int)n,
                         0) > 0);
    get(req, &r);
    free(req);
    assert_int_equal(r.status, 200);
    assert_int_equal(handler_calls(), 1);
    reply_done(&r);

    /* One byte over: our 414, in IMDS' error shape. */
    reply_with(200, "{}");
    assert_true(asprintf(&req, "GET /%0*d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                         (int)n + 1, 0) > 0);
    get(req, &r);
    free(req);
    assert_int_equal(r.status, 414);
    assert_string_equal(r.body,
                        "{\"error\":\"invalid_request\",\"error_description\":\"Request target "
                        "too long\"}");
    assert_int_equal(handler_calls(), 0);
    reply_done(&r);

    /* Far over: libmicrohttpd's own 414 (the line does not fit the pool). Still an error. */
    assert_true(asprintf(&req, "GET /%0*d HTTP/1.1\r\nHost: h\r\n\r\n", 60000, 0) > 0);
    get(req, &r);
    free(req);
    assert_int_equal(r.status, 414);
    assert_int_equal(handler_calls(), 0);
    reply_done(&r);
}

static void test_header_caps(void **state)
{
    (void)state;
    struct reply r;
    struct buf b;

    /* HTTP_MAX_HEADERS headers in all: served. */
    reply_with(200, "{}");
    buf_init(&b, 1024 * 1024);
    buf_puts(&b, "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n");
    for (int i = 0; i < HTTP_MAX_HEADERS - 2; i++)
        buf_printf(&b, "X-H%d: v\r\n", i);
    buf_puts(&b, "\r\n");
    get(b.data, &r);
    assert_int_equal(r.status, 200);
    reply_done(&r);
    buf_done(&b);

    /* One more: 431. */
    reply_with(200, "{}");
    buf_init(&b, 1024 * 1024);
    buf_puts(&b, "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n");
    for (int i = 0; i < HTTP_MAX_HEADERS - 1; i++)
        buf_printf(&b, "X-H%d: v\r\n", i);
    buf_puts(&b, "\r\n");
    get(b.data, &r);
    assert_int_equal(r.status, 431);
    assert_int_equal(handler_calls(), 0);
    assert_non_null(strstr(r.body, "\"error\":\"invalid_request\""));
    reply_done(&r);
    buf_done(&b);

    /* More header bytes than HTTP_MAX_HEADER_BYTES, but within libmicrohttpd's pool: our 431. */
    buf_init(&b, 1024 * 1024);
    buf_puts(&b, "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-Big: ");
    for (int i = 0; i < HTTP_MAX_HEADER_BYTES; i++)
        buf_puts(&b, "a");
    buf_puts(&b, "\r\n\r\n");
    get(b.data, &r);
    assert_int_equal(r.status, 431);
    assert_non_null(strstr(r.body, "\"error\":\"invalid_request\""));
    assert_int_equal(handler_calls(), 0);
    reply_done(&r);
    buf_done(&b);

    /* Far more than the pool: libmicrohttpd answers 431 itself. Still an error, never a pass. */
    buf_init(&b, 1024 * 1024);
    buf_puts(&b, "GET /x HTTP/1.1\r\nHost: h\r\nX-Big: ");
    for (int i = 0; i < 100000; i++)
        buf_puts(&b, "a");
    buf_puts(&b, "\r\n\r\n");
    get(b.data, &r);
    assert_int_equal(r.status, 431);
    assert_int_equal(handler_calls(), 0);
    reply_done(&r);
    buf_done(&b);
}

static void test_body_refused(void **state)
{
    (void)state;
    reply_with(200, "{}");
    struct reply r;
    get("GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", &r);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "Request body not allowed"));
    reply_done(&r);

    get("POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        &r);
    assert_int_equal(r.status, 413);
    reply_done(&r);
    assert_int_equal(handler_calls(), 0);

    /* An explicit empty body is no body. */
    get("GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(handler_calls(), 1);
    reply_done(&r);
}

static void test_host_rules(void **state)
{
    (void)state;
    reply_with(200, "{}");
    struct reply r;
    get("GET /x HTTP/1.1\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 400);
    reply_done(&r);
    get("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 400);
    reply_done(&r);
    assert_int_equal(handler_calls(), 0);
    /* HTTP/1.0 needs no Host. */
    get("GET /x HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(handler_calls(), 1);
    reply_done(&r);
}

static void test_refusals_are_counted(void **state)
{
    (void)state;
    metrics_reset();
    reply_with(200, "{}");
    struct reply r;
    get("GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx", &r);
    assert_int_equal(r.status, 413);
    reply_done(&r);
    struct buf b;
    buf_init(&b, 1024 * 1024);
    assert_int_equal(metrics_render(&b), 0);
    assert_non_null(strstr(b.data, "idbroker_http_requests_total{code=\"413\"} 1\n"));
    buf_done(&b);
}

static void test_listen_parsing(void **state)
{
    (void)state;
    static const char *const bad[] = {
        NULL,
        "",
        "127.0.0.1",
        "127.0.0.1:",
        ":80",
        "127.0.0.1:x",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "localhost:80",
        "::1:80",
        "[::1]",
        "[::1]80",
        "[zz]:80",
        "1.2.3:80",
        "127.0.0.1:123456",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *err = NULL;
        struct http_server *s = http_server_start(bad[i], NULL, handler, NULL, &err);
        assert_null(s);
        assert_non_null(err);
        assert_non_null(strstr(err, "invalid listen address"));
        free(err);
    }
    /* No handler, no server. */
    char *err = NULL;
    assert_null(http_server_start("127.0.0.1:0", NULL, NULL, NULL, &err));
    free(err);
    /* An address this host does not have. */
    err = NULL;
    assert_null(http_server_start("192.0.2.1:18080", NULL, handler, NULL, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "cannot listen on '192.0.2.1:18080'"));
    free(err);
    assert_null(http_server_stop(NULL));
}

static bool have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&s6, sizeof(s6)) == 0;
    close(fd);
    return ok;
}

static void test_ipv6(void **state)
{
    (void)state;
    if (!have_ipv6_loopback())
        skip();
    unsigned port = free_port(AF_INET6);
    char listen[64];
    snprintf(listen, sizeof(listen), "[::1]:%u", port);
    char *err = NULL;
    struct http_server *s = http_server_start(listen, NULL, handler, NULL, &err);
    assert_non_null(s);
    reply_with(200, "{}");
    struct reply r;
    const char *req = "GET /v6 HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n";
    exchange(AF_INET6, "::1", port, req, strlen(req), &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(H.peer_family, AF_INET6);
    assert_string_equal(H.peer, "::1");
    reply_done(&r);
    s = http_server_stop(s);

    /* Dual stack on [::]: an IPv4 client is handed over as plain IPv4, not ::ffff:127.0.0.1. The
     * port was free for IPv6 only: another test running in parallel may hold it for IPv4, so try a
     * few ports. */
    s = NULL;
    for (int attempt = 0; !s && attempt < 20; attempt++) {
        port = free_port(AF_INET6);
        snprintf(listen, sizeof(listen), "[::]:%u", port);
        free(err);
        err = NULL;
        s = http_server_start(listen, NULL, handler, NULL, &err);
    }
    free(err);
    assert_non_null(s);
    req = "GET /v4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    exchange(AF_INET, "127.0.0.1", port, req, strlen(req), &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(H.peer_family, AF_INET);
    assert_string_equal(H.peer, "127.0.0.1");
    reply_done(&r);
    http_server_stop(s);
}

static void test_response_json(void **state)
{
    (void)state;
    struct http_response resp = {0};
    assert_int_equal(http_response_json(&resp, 418, "{\"x\":1}"), 0);
    assert_int_equal(resp.status, 418);
    assert_string_equal(resp.content_type, "application/json; charset=utf-8");
    assert_string_equal(resp.body, "{\"x\":1}");
    assert_int_equal(resp.body_len, 7);
    /* Replacing a secret body wipes and frees it. */
    resp.secret = true;
    assert_int_equal(http_response_json(&resp, 200, "{}"), 0);
    assert_false(resp.secret);
    assert_string_equal(resp.body, "{}");
    free(resp.body);
    assert_int_equal(http_response_json(NULL, 200, "{}"), -EINVAL);
    assert_int_equal(http_response_json(&resp, 200, NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_target_and_request),
        cmocka_unit_test(test_response_headers),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_defer),
        cmocka_unit_test(test_uri_cap),
        cmocka_unit_test(test_header_caps),
        cmocka_unit_test(test_body_refused),
        cmocka_unit_test(test_host_rules),
        cmocka_unit_test(test_refusals_are_counted),
        cmocka_unit_test(test_listen_parsing),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_response_json),
    };
    int failed = cmocka_run_group_tests_name("thread per connection", tests, setup, teardown);
    server_threads = 1;
    failed += cmocka_run_group_tests_name("event loop", tests, setup, teardown);
    return failed;
}
