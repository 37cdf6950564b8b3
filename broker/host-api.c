/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The services the broker hands to provider plugins (STYLE R13). Everything here may be called from
 * several threads at once, from inside a plugin's issue().
 */
#include "host-api.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <idbroker/provider.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/thread.h>

#include "curl-init.h"

#define HOST_LOG_MAX_BYTES 4096
#define HOST_HTTP_DEFAULT_TIMEOUT_MS 10000u
#define HOST_HTTP_MAX_TIMEOUT_MS 120000u
#define HOST_HTTP_MAX_HEADERS 64
#define HOST_HTTP_MAX_WWW_AUTH_BYTES 8192
#define HOST_HTTP_MAX_RETRY_AFTER_S 86400u

/* The 1.0 sizes of the structs a plugin hands us: everything through their last 1.0 field. */
#define HTTP_REQ_V1_0_SIZE (offsetof(struct idb_http_req, ca_file) + sizeof(const char *))
#define HTTP_RESP_V1_0_SIZE (offsetof(struct idb_http_resp, www_authenticate) + sizeof(char *))
#define TOKEN_REQ_V1_0_SIZE (offsetof(struct idb_token_req, deadline_ms) + sizeof(uint64_t))
#define TOKEN_V1_0_SIZE (offsetof(struct idb_token, reserved0) + sizeof(uint32_t))

/* The rate window of an upstream limiter is a second plus this guard, so that jitter in connection
 * set-up cannot make an upstream that counts arrivals see one request more than its limit. */
#define UPSTREAM_RATE_WINDOW_MS 1050u
#define UPSTREAM_MAX 16

static host_issue_via_fn issue_via_fn;

uint64_t now_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t now_realtime_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec > 0 ? (uint64_t)ts.tv_sec : 0;
}

static void host_log(int level, const char *plugin, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void host_log(int level, const char *plugin, const char *fmt, ...)
{
    if (level < IDB_LOG_ERR)
        level = IDB_LOG_ERR;
    if (level > IDB_LOG_DEBUG)
        level = IDB_LOG_DEBUG;
    if (level > log_get_max_level() || !fmt)
        return;

    char msg[HOST_LOG_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    log_full(level, 0, NULL, "[provider:%.64s] %s", plugin ? plugin : "?", msg);
}

static void *host_alloc(size_t n)
{
    return malloc(n);
}

static void host_free(void *p)
{
    free(p);
}

static const char *host_strerror(int r)
{
    return idb_strerror(r);
}

/* Collects the reply body up to the cap, and the two headers plugins care about. */
struct http_reply {
    struct buf body;
    bool too_big;
    uint32_t retry_after_s;
    char *www_authenticate;
    char error[CURL_ERROR_SIZE]; /* libcurl's own words for a failure */
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct http_reply *h = userdata;
    size_t n = size * nmemb;
    if (buf_append(&h->body, data, n) < 0) {
        h->too_big = true;
        return 0; /* anything short of n makes curl stop with CURLE_WRITE_ERROR */
    }
    return n;
}

/* Returns the value of header `name` in the raw line, trimmed, or NULL. Sets *ret_len. */
static const char *header_value(const char *line, size_t len, const char *name, size_t *ret_len)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return NULL;
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *ret_len = (size_t)(end - v);
    return v;
}

/* Retry-After in delta-seconds; the HTTP-date form is ignored (0), as is anything malformed. */
static uint32_t parse_retry_after(const char *v, size_t len)
{
    if (len == 0)
        return 0;
    uint64_t s = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        s = s * 10 + (uint64_t)(v[i] - '0');
        if (s > HOST_HTTP_MAX_RETRY_AFTER_S)
            return HOST_HTTP_MAX_RETRY_AFTER_S;
    }
    return (uint32_t)s;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct http_reply *h = userdata;
    size_t n = size * nmemb, vlen;
    const char *v;

    /* A new status line (after a 100 Continue, say) starts a new header block. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        h->retry_after_s = 0;
        free(h->www_authenticate);
        h->www_authenticate = NULL;
        return n;
    }
    v = header_value(data, n, "Retry-After", &vlen);
    if (v) {
        h->retry_after_s = parse_retry_after(v, vlen);
        return n;
    }
    v = header_value(data, n, "WWW-Authenticate", &vlen);
    if (v && !h->www_authenticate) {
        if (vlen > HOST_HTTP_MAX_WWW_AUTH_BYTES)
            vlen = HOST_HTTP_MAX_WWW_AUTH_BYTES;
        h->www_authenticate = strndup(v, vlen);
        if (!h->www_authenticate)
            return 0;
    }
    return n;
}

static int curl_code_to_errno(CURLcode c, const struct http_reply *h)
{
    switch (c) {
    case CURLE_OK:
        return 0;
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
        return h->too_big || c == CURLE_FILESIZE_EXCEEDED ? -E2BIG : -EIO;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_UNSUPPORTED_PROTOCOL:
        return -EPROTONOSUPPORT;
    case CURLE_URL_MALFORMAT:
        return -EINVAL;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return -EPROTO;
    default:
        return -EIO;
    }
}

/* "scheme://host[:port]" of url (returns new, NULL if libcurl cannot parse it): what may be logged
 * of a URL, whose userinfo, path and query may carry secrets or identifiers. */
static char *url_origin(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *out = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        (void)curl_url_get(u, CURLUPART_PORT, &port, 0);
        if (asprintf(&out, "%s://%s%s%s", scheme, host, port ? ":" : "", port ? port : "") < 0)
            out = NULL;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return out;
}

static bool has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* Sets the options that make an easy handle safe for plugin use. */
static int setup_handle(CURL *c, const struct idb_http_req *req, struct curl_slist *hdrs,
                        struct http_reply *h)
{
    uint32_t timeout = req->timeout_ms ? req->timeout_ms : HOST_HTTP_DEFAULT_TIMEOUT_MS;
    if (timeout > HOST_HTTP_MAX_TIMEOUT_MS)
        timeout = HOST_HTTP_MAX_TIMEOUT_MS;
    bool post = streq(req->method, "POST"), patch = streq(req->method, "PATCH");
    CURLcode e = CURLE_OK;

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (e == CURLE_OK)                                                                         \
            e = curl_easy_setopt(c, (opt), (val));                                                 \
    } while (0)
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_ERRORBUFFER, h->error);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_NOPROXY, "*");
    SET(CURLOPT_PROXY, "");
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SET(CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (req->ca_file)
        SET(CURLOPT_CAINFO, req->ca_file);
    SET(CURLOPT_TIMEOUT_MS, (long)timeout);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)timeout);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)IDB_HTTP_MAX_REPLY_BYTES);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, h);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, h);
    if (hdrs)
        SET(CURLOPT_HTTPHEADER, hdrs);
    if (post || patch) {
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
        SET(CURLOPT_POSTFIELDS, req->body ? req->body : "");
        if (patch)
            SET(CURLOPT_CUSTOMREQUEST, "PATCH");
    } else {
        SET(CURLOPT_HTTPGET, 1L);
    }
#undef SET
    if (e == CURLE_UNSUPPORTED_PROTOCOL || e == CURLE_NOT_BUILT_IN || e == CURLE_UNKNOWN_OPTION)
        return -ENOTSUP;
    return e == CURLE_OK ? 0 : -ENOMEM;
}

static int host_http(const struct idb_http_req *req, struct idb_http_resp *ret)
{
    if (!req || !ret || req->size < HTTP_REQ_V1_0_SIZE || !req->method || !req->url)
        return -EINVAL;
    if (!streq(req->method, "GET") && !streq(req->method, "POST") && !streq(req->method, "PATCH"))
        return -EINVAL;
    if (streq(req->method, "GET") && req->body)
        return -EINVAL;
    if (has_crlf(req->url))
        return -EINVAL;

    struct curl_slist *hdrs = NULL;
    CURL *c = NULL;
    struct http_reply h = {.retry_after_s = 0};
    buf_init(&h.body, IDB_HTTP_MAX_REPLY_BYTES);
    int r = -EINVAL;

    if (req->headers)
        for (size_t i = 0; req->headers[i]; i++) {
            if (i >= HOST_HTTP_MAX_HEADERS || has_crlf(req->headers[i]) ||
                !strchr(req->headers[i], ':'))
                goto out;
            struct curl_slist *l = curl_slist_append(hdrs, req->headers[i]);
            if (!l) {
                r = -ENOMEM;
                goto out;
            }
            hdrs = l;
        }

    r = curl_init_once();
    if (r < 0)
        goto out;
    c = curl_easy_init();
    if (!c) {
        r = -ENOMEM;
        goto out;
    }
    r = setup_handle(c, req, hdrs, &h);
    if (r < 0)
        goto out;
    CURLcode code = curl_easy_perform(c);
    r = curl_code_to_errno(code, &h);
    if (r == -EPROTO) {
        /* The errno cannot say which: a CA that does not match (caFile, armCaFile), a name that is
         * not in the certificate, an intercepting proxy. An operator's problem: say it here. */
        _cleanup_free_ char *origin = url_origin(req->url);
        log_warning("HTTPS to %s failed: %s", origin ? origin : "(unparsable URL)",
                    h.error[0] ? h.error : curl_easy_strerror(code));
    }
    if (r < 0)
        goto out;
    long status = 0;
    if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status <= 0) {
        r = -EIO;
        goto out;
    }
    size_t body_len = h.body.len;
    char *body = buf_steal(&h.body);
    if (!body) {
        r = -ENOMEM;
        goto out;
    }
    /* 1.0 is the only layout so far: every 1.x caller has all of these fields. */
    memset(ret, 0, HTTP_RESP_V1_0_SIZE);
    ret->size = HTTP_RESP_V1_0_SIZE;
    ret->status = status;
    ret->body = body;
    ret->body_len = body_len;
    ret->retry_after_s = h.retry_after_s;
    ret->www_authenticate = TAKE_PTR(h.www_authenticate);
    r = 0;
out:
    if (c)
        curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    buf_done(&h.body);
    free(h.www_authenticate);
    return r;
}

/*
 * Hands the broker a full-size request whatever size the plugin was built with, and copies back
 * only the token fields the plugin's struct has; so the broker's issue_via function needs no size
 * checks.
 */
static int host_issue_via(const char *provider, const struct idb_token_req *req,
                          struct idb_token *ret)
{
    if (!provider || !req || !ret || req->size < TOKEN_REQ_V1_0_SIZE || ret->size < TOKEN_V1_0_SIZE)
        return -EINVAL;
    if (!issue_via_fn)
        return -ENOTSUP;

    struct idb_token_req full = {0};
    memcpy(&full, req, req->size < sizeof(full) ? req->size : sizeof(full));
    full.size = sizeof(full);

    struct idb_token tok = {.size = sizeof(tok)};
    int r = issue_via_fn(provider, &full, &tok);
    size_t n = ret->size < sizeof(tok) ? ret->size : sizeof(tok);
    uint32_t size = ret->size;
    memcpy(ret, &tok, n);
    ret->size = size;
    return r;
}

/* ---- upstream limiters (ABI 1.1) ---- */

/*
 * Node-wide admission to one upstream. An exchange may start only while
 *   in_flight + (exchanges that ended less than UPSTREAM_RATE_WINDOW_MS ago) < per_second
 * and in_flight < max_concurrent. `starts` is a ring of the CLOCK_MONOTONIC ms at which the last
 * per_second exchanges *ended* (the name is historical). Counting by end, with the ones still
 * running, is what makes the limit hold at the upstream: a request reaches it somewhere between its
 * start and its end, so counting by start alone let network jitter put per_second + 1 arrivals into
 * one second (seen under ASan). Every arrival in a second [t, t+1) belongs to an exchange that,
 * when the last of them started, was either running or had ended within the window.
 */
struct upstream {
    char name[IDB_UPSTREAM_NAME_MAX + 1];
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC; broadcast on release and on new limits */
    uint32_t max_concurrent, per_second;
    uint32_t in_flight;
    uint64_t *starts; /* per_second entries */
    uint32_t n_starts, next;
};

/* The table only grows while the host API is up; entries are freed by host_api_done(), when no
 * plugin and no request handler runs any more. */
static pthread_mutex_t upstreams_lock = PTHREAD_MUTEX_INITIALIZER;
static struct upstream *upstreams[UPSTREAM_MAX];

static struct upstream *upstream_free(struct upstream *u)
{
    if (!u)
        return NULL;
    pthread_cond_destroy(&u->cond);
    pthread_mutex_destroy(&u->lock);
    free(u->starts);
    free(u);
    return NULL;
}

static struct upstream *upstream_new(const char *name)
{
    _cleanup_free_ struct upstream *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    snprintf(u->name, sizeof(u->name), "%s", name);
    if (cond_init_monotonic(&u->cond) < 0)
        return NULL;
    pthread_mutex_init(&u->lock, NULL);
    return TAKE_PTR(u);
}

static bool upstream_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > IDB_UPSTREAM_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
              name[i] == '-'))
            return false;
    return true;
}

/* Under upstreams_lock. */
static struct upstream *upstream_find_locked(const char *name)
{
    for (size_t i = 0; i < UPSTREAM_MAX && upstreams[i]; i++)
        if (streq(upstreams[i]->name, name))
            return upstreams[i];
    return NULL;
}

static struct upstream *upstream_find(const char *name)
{
    if (!upstream_name_ok(name))
        return NULL;
    pthread_mutex_lock(&upstreams_lock);
    struct upstream *u = upstream_find_locked(name);
    pthread_mutex_unlock(&upstreams_lock);
    return u;
}

/* Sets new limits under u->lock. The newest starts are kept, so new limits never allow a burst
 * that the old ones had just used up. */
static int upstream_set_locked(struct upstream *u, uint32_t max_concurrent, uint32_t per_second)
{
    uint64_t *starts = calloc(per_second, sizeof(*starts));
    if (!starts)
        return -ENOMEM;
    uint32_t keep = u->n_starts < per_second ? u->n_starts : per_second;
    for (uint32_t i = 0; i < keep; i++) {
        /* the i-th newest of the old ring goes to position keep-1-i of the new one */
        uint32_t old = (u->next + u->per_second - 1 - i) % u->per_second;
        starts[keep - 1 - i] = u->starts[old];
    }
    free(u->starts);
    u->starts = starts;
    u->per_second = per_second;
    u->n_starts = keep;
    u->next = keep % per_second;
    u->max_concurrent = max_concurrent;
    pthread_cond_broadcast(&u->cond);
    return 0;
}

static int host_upstream_limits(const char *name, uint32_t max_concurrent, uint32_t max_per_second)
{
    if (!upstream_name_ok(name) || max_concurrent < 1 || max_concurrent > IDB_UPSTREAM_LIMIT_MAX ||
        max_per_second < 1 || max_per_second > IDB_UPSTREAM_LIMIT_MAX)
        return -EINVAL;
    pthread_mutex_lock(&upstreams_lock);
    struct upstream *u = upstream_find_locked(name);
    int r = 0;
    if (!u) {
        size_t i = 0;
        while (i < UPSTREAM_MAX && upstreams[i])
            i++;
        if (i == UPSTREAM_MAX) {
            r = -ENOSPC;
            goto out;
        }
        u = upstream_new(name);
        if (!u) {
            r = -ENOMEM;
            goto out;
        }
        r = upstream_set_locked(u, max_concurrent, max_per_second);
        if (r < 0) {
            upstream_free(u);
            goto out;
        }
        upstreams[i] = u;
        goto out;
    }
    pthread_mutex_lock(&u->lock);
    r = upstream_set_locked(u, max_concurrent, max_per_second);
    pthread_mutex_unlock(&u->lock);
out:
    pthread_mutex_unlock(&upstreams_lock);
    return r;
}

static struct timespec mono_timespec(uint64_t ms)
{
    return (struct timespec){.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
}

/* How many ring entries ended within the window before `now`, and when the oldest of those leaves
 * it (0 if none). Under u->lock. */
static uint32_t recent_ends_locked(const struct upstream *u, uint64_t now, uint64_t *ret_free_at)
{
    uint32_t n = 0;
    uint64_t oldest = UINT64_MAX;
    for (uint32_t i = 0; i < u->n_starts; i++)
        if (u->starts[i] + UPSTREAM_RATE_WINDOW_MS > now) {
            n++;
            if (u->starts[i] < oldest)
                oldest = u->starts[i];
        }
    *ret_free_at = oldest == UINT64_MAX ? 0 : oldest + UPSTREAM_RATE_WINDOW_MS;
    return n;
}

static int host_upstream_acquire(const char *name, uint64_t deadline_ms, uint32_t *hint_ms)
{
    if (!upstream_name_ok(name))
        return -EINVAL;
    struct upstream *u = upstream_find(name);
    if (!u)
        return -ENOENT;
    pthread_mutex_lock(&u->lock);
    for (;;) {
        uint64_t now = now_monotonic_ms(), free_at;
        uint32_t recent = recent_ends_locked(u, now, &free_at);
        bool conc_ok = u->in_flight < u->max_concurrent;
        bool rate_ok = u->in_flight + recent < u->per_second;
        if (conc_ok && rate_ok) {
            u->in_flight++;
            pthread_mutex_unlock(&u->lock);
            return 0;
        }
        if (now >= deadline_ms) {
            if (hint_ms)
                *hint_ms = !rate_ok && free_at > now ? (uint32_t)(free_at - now) : 1000;
            pthread_mutex_unlock(&u->lock);
            return -EAGAIN;
        }
        /* Wake at the deadline, when the window moves, or on a release (it broadcasts). */
        uint64_t wake = deadline_ms;
        if (free_at && free_at < wake)
            wake = free_at;
        struct timespec ts = mono_timespec(wake);
        pthread_cond_timedwait(&u->cond, &u->lock, &ts);
    }
}

static void host_upstream_release(const char *name)
{
    struct upstream *u = upstream_find(name);
    if (!u)
        return;
    pthread_mutex_lock(&u->lock);
    if (u->in_flight > 0)
        u->in_flight--;
    u->starts[u->next] = now_monotonic_ms();
    u->next = (u->next + 1) % u->per_second;
    if (u->n_starts < u->per_second)
        u->n_starts++;
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->lock);
}

int host_api_upstream_acquire(const char *name, uint64_t deadline_ms, uint32_t *hint_ms)
{
    return host_upstream_acquire(name, deadline_ms, hint_ms);
}

void host_api_upstream_release(const char *name)
{
    host_upstream_release(name);
}

int host_api_upstream_limits(const char *name, uint32_t max_concurrent, uint32_t max_per_second)
{
    return host_upstream_limits(name, max_concurrent, max_per_second);
}

/* Where the plugins' limiter calls go: NULL = the limiters above; the provider host sends them to
 * the broker. Set before any plugin is loaded, never changed while one runs. */
static const struct host_upstream_router *upstream_router;

static int api_upstream_limits(const char *name, uint32_t max_concurrent, uint32_t max_per_second)
{
    if (upstream_router)
        return upstream_router->limits(name, max_concurrent, max_per_second);
    return host_upstream_limits(name, max_concurrent, max_per_second);
}

static int api_upstream_acquire(const char *name, uint64_t deadline_ms, uint32_t *hint_ms)
{
    if (upstream_router)
        return upstream_router->acquire(name, deadline_ms, hint_ms);
    return host_upstream_acquire(name, deadline_ms, hint_ms);
}

static void api_upstream_release(const char *name)
{
    if (upstream_router)
        upstream_router->release(name);
    else
        host_upstream_release(name);
}

void host_api_set_upstream_router(const struct host_upstream_router *r)
{
    upstream_router = r;
}

static const struct idb_host_api host_api = {
    .size = sizeof(struct idb_host_api),
    .abi_minor = IDB_PLUGIN_ABI_MINOR,
    .log = host_log,
    .alloc = host_alloc,
    .free = host_free,
    .strerror = host_strerror,
    .now_realtime = now_realtime_s,
    .now_monotonic_ms = now_monotonic_ms,
    .http = host_http,
    .issue_via = host_issue_via,
    .upstream_limits = api_upstream_limits,
    .upstream_acquire = api_upstream_acquire,
    .upstream_release = api_upstream_release,
};

const struct idb_host_api *host_api_get(void)
{
    return &host_api;
}

int host_api_init(host_issue_via_fn issue_via)
{
    issue_via_fn = issue_via;
    /* IMDS' documented per-VM limits until a provider (azure-msi) configures its own. */
    pthread_mutex_lock(&upstreams_lock);
    bool known = upstream_find_locked(IDB_UPSTREAM_IMDS) != NULL;
    pthread_mutex_unlock(&upstreams_lock);
    int r = known ? 0
                  : host_upstream_limits(IDB_UPSTREAM_IMDS, IDB_UPSTREAM_IMDS_MAX_CONCURRENT,
                                         IDB_UPSTREAM_IMDS_MAX_PER_SECOND);
    if (r < 0)
        return r;
    return 0;
}

void host_api_done(void)
{
    issue_via_fn = NULL;
    upstream_router = NULL;
    pthread_mutex_lock(&upstreams_lock);
    for (size_t i = 0; i < UPSTREAM_MAX; i++)
        upstreams[i] = upstream_free(upstreams[i]);
    pthread_mutex_unlock(&upstreams_lock);
}
