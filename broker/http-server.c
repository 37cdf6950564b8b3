/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP/1.1 server over libmicrohttpd 0.9.75: a thread per connection (the handler may block), or
 * epoll event-loop threads with MHD's suspend/resume for the requests the handler defers (one
 * thread each, only for as long as the handler blocks; see http-server.h).
 *
 * What MHD does before we see a request, checked against 0.9.75:
 * - A request line or header block that does not fit the connection's memory pool is answered by
 * MHD itself: 414 (request line) or 431 (headers), an HTML body, connection closed. Our handler
 * never runs, so an over-size request is always an error, never a pass.
 * - MHD hands the access handler a decoded path without the query. We never use it: the URI log
 *   callback sees the request target exactly as sent, and that is what the handler gets.
 * - MHD 0.9.75 accepts HTTP/1.1 requests without Host and with several Host headers; we answer 400.
 * The caps of limits.h that fit inside the pool are enforced here, before the handler: target
 * length (414), header count and total header bytes (431), any request body (413).
 *
 * Slow clients: MHD's connection timeout is an idle timeout, reset by every byte received, so a
 * client that trickles its request head a byte at a time would hold its connection (and, here, a
 * thread) for as long as it likes. A watchdog thread gives every request head — from the
 * connection's start, or from the end of the previous request on a kept-alive connection — the
 * same timeout as a whole: past it the socket is shut down and MHD closes the connection.
 */
#include "http-server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/thread.h>

#include "limits.h"
#include "metrics.h"

/* The pool holds the request line and headers (plus MHD's bookkeeping). Sized so every request
 * within our own caps fits with room to spare; beyond it MHD refuses with 414/431 by itself. Above
 * 32 KiB libmicrohttpd maps each pool with mmap() instead of malloc(), so a burst of connections
 * leaves no free holes in the heap once it is over (docs/performance.md, memory). */
#define HTTP_CONN_MEMORY_LIMIT (HTTP_MAX_URI_BYTES + HTTP_MAX_HEADER_BYTES + 16384)

#define JSON_CT "application/json; charset=utf-8"

/* Watchdog period: a slow request head is cut between timeout and timeout + this. */
#define HEAD_WATCH_PERIOD_MS 250

/* One open connection, for the request-head deadline. Lives from MHD's STARTED to its CLOSED
 * notification; MHD closes the socket only after CLOSED, so `fd` is valid while listed. */
struct conn_watch {
    int fd;
    uint64_t head_start_ms; /* when the current request head began */
    bool in_head;           /* the head of a request is being received */
    struct conn_watch *prev, *next;
};

struct http_server {
    struct MHD_Daemon *daemon;
    http_handler_fn fn;
    void *ud;
    uint64_t head_timeout_ms;
    bool event_loop;      /* epoll threads: the first handler call may not block */
    pthread_mutex_t lock; /* guards conns, stopping and deferred */
    pthread_cond_t wake;
    unsigned deferred; /* handler calls running on a thread of their own */
    struct conn_watch *conns;
    bool stopping;
    bool watchdog_running;
    pthread_t watchdog;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Per request, created by the URI log callback and freed by the completion callback. */
struct req_ctx {
    char *raw_uri;  /* NULL when the target was over HTTP_MAX_URI_BYTES */
    bool checked;   /* the head passed the caps: answer once the request is complete */
    bool responded; /* a response is queued: ignore any further calls (body data) */
    /* A deferred request (event-loop model): the connection is suspended while a thread of its own
     * runs the handler; it leaves the answer in `answer` and resumes the connection. */
    bool answered;
    struct http_response answer;
    struct http_server *s;
    struct MHD_Connection *conn;
    const char *method; /* MHD's, valid until the request completes */
    struct sockaddr_storage peer;
    socklen_t peer_len;
};

const char *http_request_header(const struct http_request *r, const char *name)
{
    if (!r || !r->impl || !name)
        return NULL;
    return MHD_lookup_connection_value(r->impl, MHD_HEADER_KIND, name);
}

struct count_ctx {
    const char *name;
    unsigned n;
    size_t bytes;
};

static enum MHD_Result count_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    struct count_ctx *c = cls;
    (void)kind;
    if (!c->name || (key && strcasecmp(key, c->name) == 0))
        c->n++;
    /* name ": " value CRLF, as on the wire (MHD trimmed the spaces; close enough for a cap). */
    c->bytes += (key ? strlen(key) : 0) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

unsigned http_request_header_count(const struct http_request *r, const char *name)
{
    if (!r || !r->impl || !name)
        return 0;
    struct count_ctx c = {.name = name};
    MHD_get_connection_values(r->impl, MHD_HEADER_KIND, count_cb, &c);
    return c.n;
}

int http_response_json(struct http_response *resp, int status, const char *json)
{
    if (!resp || !json)
        return -EINVAL;
    char *b = strdup(json);
    if (!b)
        return -ENOMEM;
    if (resp->body) {
        if (resp->secret)
            explicit_bzero(resp->body, resp->body_len);
        free(resp->body);
    }
    resp->status = status;
    resp->content_type = JSON_CT;
    resp->body = b;
    resp->body_len = strlen(b);
    resp->secret = false;
    return 0;
}

/* A secret body stays ours until MHD is done with it, so the only copy can be wiped (MHD's own
 * MUST_COPY buffer would be freed unwiped). */
struct secret_body {
    char *p;
    size_t n;
};

static void secret_body_free(void *cls)
{
    struct secret_body *s = cls;
    if (!s)
        return;
    if (s->p) {
        explicit_bzero(s->p, s->n);
        free(s->p);
    }
    free(s);
}

static enum MHD_Result queue(struct MHD_Connection *conn, struct req_ctx *ctx,
                             struct http_response *resp)
{
    int status = resp->status >= 100 && resp->status <= 599 ? resp->status : 500;
    struct MHD_Response *r = NULL;

    if (resp->secret && resp->body) {
        struct secret_body *s = malloc(sizeof(*s));
        if (s) {
            s->p = resp->body;
            s->n = resp->body_len;
            r = MHD_create_response_from_buffer_with_free_callback_cls(resp->body_len, resp->body,
                                                                       secret_body_free, s);
            if (r)
                resp->body = NULL; /* owned by the response now */
            else
                free(s);
        }
    } else {
        r = MHD_create_response_from_buffer(resp->body_len, resp->body ? resp->body : "",
                                            MHD_RESPMEM_MUST_COPY);
    }
    if (resp->body) {
        if (resp->secret)
            explicit_bzero(resp->body, resp->body_len);
        free(resp->body);
        resp->body = NULL;
    }
    if (!r)
        return MHD_NO; /* out of memory: MHD closes the connection */

    bool ok = true;
    if (resp->content_type)
        ok = ok && MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
    if (resp->secret)
        ok = ok && MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (resp->retry_after_s > 0) {
        char v[16];
        snprintf(v, sizeof(v), "%u", (unsigned)resp->retry_after_s);
        ok = ok && MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (resp->allow)
        ok = ok && MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp->allow);

    enum MHD_Result ret = ok ? MHD_queue_response(conn, (unsigned)status, r) : MHD_NO;
    MHD_destroy_response(r);
    if (ret == MHD_YES)
        ctx->responded = true;
    return ret;
}

/* A reply the server makes on its own (caps, protocol errors), in IMDS' error shape. */
static enum MHD_Result refuse(struct MHD_Connection *conn, struct req_ctx *ctx, int status,
                              const char *error, const char *desc)
{
    char json[256];
    snprintf(json, sizeof(json), "{\"error\":\"%s\",\"error_description\":\"%s\"}", error, desc);
    struct http_response resp = {0};
    if (http_response_json(&resp, status, json) < 0)
        return MHD_NO;
    metrics_http_status(status);
    return queue(conn, ctx, &resp);
}

static void notify_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode code)
{
    struct http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct conn_watch *w = ci ? calloc(1, sizeof(*w)) : NULL;
        if (!w)
            return; /* not watched: the idle timeout still applies */
        w->fd = ci->connect_fd;
        w->head_start_ms = mono_ms();
        w->in_head = true;
        pthread_mutex_lock(&s->lock);
        w->next = s->conns;
        if (s->conns)
            s->conns->prev = w;
        s->conns = w;
        pthread_mutex_unlock(&s->lock);
        *socket_context = w;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct conn_watch *w = *socket_context;
        if (!w)
            return;
        pthread_mutex_lock(&s->lock);
        if (w->prev)
            w->prev->next = w->next;
        else
            s->conns = w->next;
        if (w->next)
            w->next->prev = w->prev;
        pthread_mutex_unlock(&s->lock);
        free(w);
        *socket_context = NULL;
    }
}

/* Marks the connection's current request head complete (in_head false) or a new one begun. */
static void head_state(struct http_server *s, struct MHD_Connection *conn, bool in_head)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_watch *w = ci ? ci->socket_context : NULL;
    if (!w)
        return;
    pthread_mutex_lock(&s->lock);
    w->in_head = in_head;
    if (in_head)
        w->head_start_ms = mono_ms();
    pthread_mutex_unlock(&s->lock);
}

static void *watchdog_main(void *ud)
{
    struct http_server *s = ud;
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += HEAD_WATCH_PERIOD_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->wake, &s->lock, &until);
        uint64_t now = mono_ms();
        for (struct conn_watch *w = s->conns; w; w = w->next)
            if (w->in_head && now - w->head_start_ms >= s->head_timeout_ms) {
                /* MHD's thread sees the end of the stream and closes the connection. */
                shutdown(w->fd, SHUT_RDWR);
                w->in_head = false;
                log_debug("request head not complete after %" PRIu64 " ms: connection closed",
                          s->head_timeout_ms);
            }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void *uri_log_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    struct req_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    if (uri && strnlen(uri, HTTP_MAX_URI_BYTES + 1) <= HTTP_MAX_URI_BYTES) {
        ctx->raw_uri = strdup(uri);
        if (!ctx->raw_uri) {
            free(ctx);
            return NULL;
        }
    }
    return ctx;
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    /* A kept-alive connection starts the next request head now. */
    head_state(cls, conn, true);
    struct req_ctx *ctx = *req_cls;
    if (!ctx)
        return;
    if (ctx->answered && ctx->answer.body) {
        /* A deferred answer the connection could not send (it failed meanwhile). */
        if (ctx->answer.secret)
            explicit_bzero(ctx->answer.body, ctx->answer.body_len);
        free(ctx->answer.body);
    }
    free(ctx->raw_uri);
    free(ctx);
    *req_cls = NULL;
}

/* Whether the request announces a body: any Transfer-Encoding, or a Content-Length other than 0. */
static bool has_body(struct MHD_Connection *conn, size_t upload_data_size)
{
    if (upload_data_size > 0)
        return true;
    if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return true;
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return false;
    for (const char *p = cl; *p; p++)
        if (*p != '0')
            return true;
    return false;
}

/* IPv4-mapped IPv6 peers (dual-stack listener) are handed to the handler as plain IPv4, so
 * attribution sees one form per pod address (THREATS T22). */
static void peer_address(struct MHD_Connection *conn, struct sockaddr_storage *ss,
                         socklen_t *ret_len)
{
    memset(ss, 0, sizeof(*ss));
    *ret_len = 0;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        memcpy(ss, sa, sizeof(struct sockaddr_in));
        *ret_len = sizeof(struct sockaddr_in);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
            s4->sin_family = AF_INET;
            s4->sin_port = s6->sin6_port;
            memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
            *ret_len = sizeof(struct sockaddr_in);
        } else {
            memcpy(ss, s6, sizeof(*s6));
            *ret_len = sizeof(*s6);
        }
    }
}

static void call_handler(struct http_server *s, struct req_ctx *ctx, bool may_block,
                         struct http_response *resp)
{
    struct http_request req = {
        .method = ctx->method,
        .raw_uri = ctx->raw_uri,
        .peer = ctx->peer_len ? (const struct sockaddr *)&ctx->peer : NULL,
        .peer_len = ctx->peer_len,
        .may_block = may_block,
        .impl = ctx->conn,
    };
    *resp = (struct http_response){0};
    s->fn(s->ud, &req, resp);
    if (resp->defer && may_block) {
        log_error("http: the handler deferred a request it was allowed to block on");
        if (http_response_json(resp, 500,
                               "{\"error\":\"server_error\",\"error_description\":"
                               "\"Internal error\"}") < 0)
            resp->status = 500;
        resp->defer = false;
    }
}

static void *deferred_main(void *ud)
{
    struct req_ctx *ctx = ud;
    struct http_server *s = ctx->s;
    struct MHD_Connection *conn = ctx->conn;
    call_handler(s, ctx, true, &ctx->answer);
    ctx->answered = true;
    /* ctx may be freed as soon as the connection runs again: not touched after this. */
    MHD_resume_connection(conn);
    pthread_mutex_lock(&s->lock);
    s->deferred--;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Runs the handler again on a thread of its own with the connection suspended. */
static enum MHD_Result defer(struct http_server *s, struct MHD_Connection *conn,
                             struct req_ctx *ctx)
{
    pthread_attr_t a;
    pthread_t th;
    pthread_mutex_lock(&s->lock);
    s->deferred++;
    pthread_mutex_unlock(&s->lock);
    MHD_suspend_connection(conn);
    int r = pthread_attr_init(&a);
    if (r == 0) {
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        r = pthread_create(&th, &a, deferred_main, ctx);
        pthread_attr_destroy(&a);
    }
    if (r == 0)
        return MHD_YES;
    log_warning("http: cannot start a thread for a deferred request: %s", strerror(r));
    pthread_mutex_lock(&s->lock);
    s->deferred--;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
    ctx->answer = (struct http_response){0};
    if (http_response_json(&ctx->answer, 503,
                           "{\"error\":\"temporarily_unavailable\","
                           "\"error_description\":\"Server busy\"}") < 0)
        ctx->answer.status = 503;
    ctx->answer.retry_after_s = 1;
    metrics_http_status(503);
    ctx->answered = true;
    MHD_resume_connection(conn);
    return MHD_YES;
}

static enum MHD_Result respond(struct http_server *s, struct MHD_Connection *conn,
                               struct req_ctx *ctx, const char *method)
{
    if (ctx->answered) {
        ctx->answered = false;
        return queue(conn, ctx, &ctx->answer);
    }
    ctx->s = s;
    ctx->conn = conn;
    ctx->method = method;
    peer_address(conn, &ctx->peer, &ctx->peer_len);
    struct http_response resp;
    call_handler(s, ctx, !s->event_loop, &resp);
    if (resp.defer)
        return defer(s, conn, ctx);
    return queue(conn, ctx, &resp);
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **req_cls)
{
    struct http_server *s = cls;
    struct req_ctx *ctx = *req_cls;
    (void)url;
    (void)upload_data;

    if (!ctx)
        return MHD_NO; /* out of memory in the URI callback */
    if (!ctx->checked && !ctx->responded)
        head_state(s, conn, false); /* the head is complete: the handler may take its time */
    if (ctx->responded) {
        /* Body bytes after our early reply: drop them; MHD closes the connection afterwards. */
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (ctx->checked) {
        /* Called again: the request is complete unless body bytes arrived (only possible for a
         * body MHD could not announce, e.g. HTTP/1.0 without Content-Length: refuse it). */
        if (*upload_data_size > 0) {
            *upload_data_size = 0;
            return refuse(conn, ctx, 413, "invalid_request", "Request body not allowed");
        }
        return respond(s, conn, ctx, method);
    }

    if (!ctx->raw_uri)
        return refuse(conn, ctx, 414, "invalid_request", "Request target too long");

    struct count_ctx hc = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_cb, &hc);
    if (hc.n > HTTP_MAX_HEADERS || hc.bytes > HTTP_MAX_HEADER_BYTES)
        return refuse(conn, ctx, 431, "invalid_request", "Request header fields too large");

    struct count_ctx host = {.name = MHD_HTTP_HEADER_HOST};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_cb, &host);
    if (host.n > 1 || (host.n == 0 && version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0))
        return refuse(conn, ctx, 400, "invalid_request", "Exactly one Host header is required");

    if (has_body(conn, *upload_data_size)) {
        *upload_data_size = 0;
        return refuse(conn, ctx, 413, "invalid_request", "Request body not allowed");
    }

    /* Answer on the next call, when MHD has the whole request: a reply queued while MHD still
     * expects a body makes it close the connection afterwards, so keep-alive would never work. */
    ctx->checked = true;
    return MHD_YES;
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    log_fullv(IDB_LOG_DEBUG, 0, NULL, fmt, ap);
}

/* Parses "A.B.C.D:PORT" or "[V6]:PORT" (port 0..65535; 0 = any free port). */
static int parse_listen(const char *listen, struct sockaddr_storage *ret, bool *ret_any6)
{
    if (!listen)
        return -EINVAL;
    const char *colon, *host;
    size_t host_len;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        host = listen + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon || strchr(listen, ':') != colon)
            return -EINVAL;
        host = listen;
        host_len = (size_t)(colon - listen);
    }
    char hbuf[INET6_ADDRSTRLEN];
    if (host_len == 0 || host_len >= sizeof(hbuf))
        return -EINVAL;
    memcpy(hbuf, host, host_len);
    hbuf[host_len] = '\0';

    const char *p = colon + 1;
    if (!*p || strlen(p) > 5)
        return -EINVAL;
    unsigned long port = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535)
        return -EINVAL;

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (listen[0] == '[') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET6, hbuf, &s6->sin6_addr) != 1)
            return -EINVAL;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *ret_any6 = IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        if (inet_pton(AF_INET, hbuf, &s4->sin_addr) != 1)
            return -EINVAL;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *ret_any6 = false;
    }
    *ret = ss;
    return 0;
}

struct http_server *http_server_start(const char *listen, const struct http_server_options *o,
                                      http_handler_fn fn, void *ud, char **ret_error)
{
    struct sockaddr_storage addr;
    bool any6 = false;
    if (!fn || parse_listen(listen, &addr, &any6) < 0) {
        if (ret_error)
            *ret_error = strdup_printf(
                "invalid listen address '%s': expected IP:PORT or [IPv6]:PORT", strna(listen));
        return NULL;
    }

    _cleanup_free_ struct http_server *s = calloc(1, sizeof(*s));
    if (!s) {
        if (ret_error)
            *ret_error = strdup_printf("out of memory");
        return NULL;
    }
    s->fn = fn;
    s->ud = ud;
    pthread_mutex_init(&s->lock, NULL);
    (void)cond_init_monotonic(&s->wake);

    /* Thread per connection with poll(), not select(): no FD_SETSIZE limit on descriptors, and
     * less work per wake-up. Event loop: epoll, and suspend/resume for deferred requests. */
    unsigned threads = o ? o->threads : 0;
    s->event_loop = threads > 0;
    unsigned flags = s->event_loop
                         ? MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                               MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG
                         : MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                               MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6)
        flags |= any6 ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;

    unsigned max_conn = o && o->max_connections ? o->max_connections : HTTP_MAX_CONNECTIONS;
    unsigned max_ip = o && o->max_per_ip ? o->max_per_ip : HTTP_MAX_CONNECTIONS_PER_IP;
    unsigned timeout = o && o->timeout_s ? o->timeout_s : HTTP_CONN_TIMEOUT_S;
    s->head_timeout_ms = (uint64_t)timeout * 1000u;
    uint16_t port = addr.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&addr)->sin6_port)
                                               : ntohs(((struct sockaddr_in *)&addr)->sin_port);

    errno = 0;
    s->daemon = MHD_start_daemon(
        flags, port, NULL, NULL, access_cb, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_LIMIT, max_conn, MHD_OPTION_PER_IP_CONNECTION_LIMIT, max_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HTTP_CONN_MEMORY_LIMIT, MHD_OPTION_URI_LOG_CALLBACK, uri_log_cb, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, completed_cb, s, MHD_OPTION_NOTIFY_CONNECTION, notify_cb, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL, MHD_OPTION_THREAD_POOL_SIZE,
        threads > 1 ? threads : 0, MHD_OPTION_END);
    if (!s->daemon) {
        int e = errno;
        if (ret_error)
            *ret_error = strdup_printf("cannot listen on '%s': %s", listen,
                                       e ? strerror(e) : "libmicrohttpd refused to start");
        return http_server_stop(TAKE_PTR(s));
    }
    int r = pthread_create(&s->watchdog, NULL, watchdog_main, s);
    if (r != 0) {
        if (ret_error)
            *ret_error = strdup_printf("cannot start the connection watchdog: %s", strerror(r));
        return http_server_stop(TAKE_PTR(s));
    }
    s->watchdog_running = true;
    return TAKE_PTR(s);
}

struct http_server *http_server_stop(struct http_server *s)
{
    if (!s)
        return NULL;
    /* Deferred handlers first (their deadlines bound the wait): MHD must not stop with a
     * connection still suspended. */
    pthread_mutex_lock(&s->lock);
    while (s->deferred > 0)
        pthread_cond_wait(&s->wake, &s->lock);
    pthread_mutex_unlock(&s->lock);
    /* The daemon next: every connection is closed (and unlisted) before the watchdog goes. */
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    if (s->watchdog_running) {
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->watchdog, NULL);
    }
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s);
    return NULL;
}
