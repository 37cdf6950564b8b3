/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token endpoint: the request-target table (THREATS T6), then every reply through a real
 * http_server on loopback with libcurl as the client, a fake issuer (defined below, so the static
 * library's issuer is not linked) and a fake node IMDS for the pass-through paths.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
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
#include <time.h>
#include <unistd.h>

#include <idbroker/errno.h>

#include <idbroker-internal/buf.h>

#include "http-server.h"
#include "issuer.h"
#include "limits.h"
#include "metrics.h"
#include "registry.h"
#include "token-cache.h"
#include "token-endpoint.h"

#include <cmocka.h>

/* ---- the request-target table ---- */

#define Q "?api-version=2018-02-01&resource=https://management.azure.com/"
#define TOK "/metadata/identity/oauth2/token"

struct row {
    const char *raw;
    int ret; /* 0 or -EINVAL */
    enum te_route route;
    const char *path;
    const char *resource;
    const char *api_version;
    enum selector_kind sel;
    const char *sel_value;
    bool bypass;
    const char *desc; /* a substring of the error description */
};

/* Positional rows read best as a table; trailing fields default to zero. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const struct row rows[] = {
    /* the token path and its accepted spellings */
    {TOK Q, 0, TE_ROUTE_TOKEN, TOK, "https://management.azure.com/", "2018-02-01"},
    {TOK "/" Q, 0, TE_ROUTE_TOKEN, TOK, "https://management.azure.com/", "2018-02-01"},
    {"/Metadata/identity/oauth2/token" Q, 0, TE_ROUTE_TOKEN, TOK, "https://management.azure.com/",
     "2018-02-01"},
    {"/METADATA/IDENTITY/OAUTH2/TOKEN/", 0, TE_ROUTE_TOKEN, TOK},
    {"/metadata/identity/oauth2/%74oken?resource=r", 0, TE_ROUTE_TOKEN, TOK, "r"},
    {"/metadata/identity/oauth2/token%2D" Q, 0, TE_ROUTE_NOT_FOUND, TOK "-"},
    /* non-canonical variants: rejected, never routed (T6) */
    {TOK "//" Q, 0, TE_ROUTE_REJECTED},
    {"//metadata/identity/oauth2/token" Q, 0, TE_ROUTE_REJECTED},
    {"/metadata//identity/oauth2/token" Q, 0, TE_ROUTE_REJECTED},
    {"%2Fmetadata/identity/oauth2/token" Q, 0, TE_ROUTE_REJECTED},
    {"/%2Fmetadata/identity/oauth2/token" Q, 0, TE_ROUTE_REJECTED},
    {"/metadata%2Fidentity/oauth2/token" Q, 0, TE_ROUTE_REJECTED},
    {"/metadata%2fidentity%2foauth2%2ftoken" Q, 0, TE_ROUTE_REJECTED},
    {"/metadata/./identity/oauth2/token" Q, 0, TE_ROUTE_REJECTED},
    {"/metadata/identity/../identity/oauth2/token" Q, 0, TE_ROUTE_REJECTED},
    {"/metadata/%2e/identity/oauth2/token" Q, 0, TE_ROUTE_REJECTED},
    {"/metadata/%2E%2E/metadata/identity/oauth2/token" Q, 0, TE_ROUTE_REJECTED},
    {"/x/%2e%2e/metadata/identity/oauth2/token" Q, 0, TE_ROUTE_REJECTED},
    {TOK "/." Q, 0, TE_ROUTE_REJECTED},
    {TOK "/.." Q, 0, TE_ROUTE_REJECTED},
    {TOK ";x" Q, 0, TE_ROUTE_REJECTED},
    {TOK ";" Q, 0, TE_ROUTE_REJECTED},
    {"/metadata;a/identity/oauth2/token" Q, 0, TE_ROUTE_REJECTED},
    {TOK "%3Bx" Q, 0, TE_ROUTE_REJECTED},
    {TOK "#frag", 0, TE_ROUTE_REJECTED},
    {TOK Q "#frag", 0, TE_ROUTE_REJECTED},
    {TOK "\\" Q, 0, TE_ROUTE_REJECTED},
    {"/metadata\\identity\\oauth2\\token" Q, 0, TE_ROUTE_REJECTED},
    {TOK "%5C" Q, 0, TE_ROUTE_REJECTED},
    {TOK "%00" Q, 0, TE_ROUTE_REJECTED},
    {TOK "%0d%0aX:%20y" Q, 0, TE_ROUTE_REJECTED},
    {TOK "%zz" Q, 0, TE_ROUTE_REJECTED},
    {TOK "%2" Q, 0, TE_ROUTE_REJECTED},
    {TOK "%", 0, TE_ROUTE_REJECTED},
    {TOK "%252F" Q, 0, TE_ROUTE_REJECTED},
    {TOK "%20" Q, 0, TE_ROUTE_REJECTED},
    {TOK "%C3%A9" Q, 0, TE_ROUTE_REJECTED},
    {"/metadata/identity/oauth2/token\x7f" Q, 0, TE_ROUTE_REJECTED},
    {"http://169.254.169.254" TOK Q, 0, TE_ROUTE_REJECTED},
    {"169.254.169.254" TOK Q, 0, TE_ROUTE_REJECTED},
    {"*", 0, TE_ROUTE_REJECTED},
    {"", 0, TE_ROUTE_REJECTED},
    {TOK "?resource=a b", 0, TE_ROUTE_REJECTED},
    {TOK "?resource=%", 0, TE_ROUTE_REJECTED},
    {TOK "?resource=a%2", 0, TE_ROUTE_REJECTED},
    {TOK "?resource=a%g0", 0, TE_ROUTE_REJECTED},
    {TOK "?resource=\"x\"", 0, TE_ROUTE_REJECTED},
    /* other paths */
    {TOK "s" Q, 0, TE_ROUTE_NOT_FOUND, TOK "s"},
    {"/metadata/identity/oauth2", 0, TE_ROUTE_NOT_FOUND, "/metadata/identity/oauth2"},
    {"/metadata/identity/oauth2/token/x", 0, TE_ROUTE_NOT_FOUND, TOK "/x"},
    {"/", 0, TE_ROUTE_NOT_FOUND, "/"},
    {"/metadata", 0, TE_ROUTE_NOT_FOUND, "/metadata"},
    {"/metadata/attested/document?api-version=2020-09-01", 0, TE_ROUTE_NOT_FOUND,
     "/metadata/attested/document"},
    {"/metadata/scheduledevents", 0, TE_ROUTE_NOT_FOUND, "/metadata/scheduledevents"},
    {"/metadata/instancex", 0, TE_ROUTE_NOT_FOUND, "/metadata/instancex"},
    {"/metadata/instance", 0, TE_ROUTE_INSTANCE, "/metadata/instance"},
    {"/metadata/instance/", 0, TE_ROUTE_INSTANCE, "/metadata/instance/"},
    {"/Metadata/Instance/compute/vmId?api-version=2021-02-01&format=text", 0, TE_ROUTE_INSTANCE,
     "/metadata/instance/compute/vmId"},
    {"/metadata/instance?resource=a&resource=b", 0, TE_ROUTE_INSTANCE, "/metadata/instance"},
    {"/metadata/instance/../identity/oauth2/token", 0, TE_ROUTE_REJECTED},
    {"/metadata/versions", 0, TE_ROUTE_VERSIONS, "/metadata/versions"},
    {"/metadata/Versions/", 0, TE_ROUTE_VERSIONS, "/metadata/versions"},
    {"/metadata/versions//", 0, TE_ROUTE_REJECTED},
    /* the query */
    {TOK "?resource=a&resource=b", -EINVAL, .desc = "Duplicate query parameter 'resource'"},
    {TOK "?api-version=2018-02-01&api-version=2018-02-01", -EINVAL,
     .desc = "Duplicate query parameter 'api-version'"},
    {TOK "?client_id=a&client_id=a", -EINVAL, .desc = "Duplicate query parameter 'client_id'"},
    {TOK "?bypass_cache=true&bypass_cache=false", -EINVAL,
     .desc = "Duplicate query parameter 'bypass_cache'"},
    {TOK "?%72esource=a&resource=b", -EINVAL, .desc = "Duplicate query parameter 'resource'"},
    {TOK "?object_id=x&principal_id=y", -EINVAL, .desc = "Only one of client_id"},
    {TOK "?client_id=a&mi_res_id=b", -EINVAL, .desc = "Only one of client_id"},
    {TOK "?client_id=a&object_id=b&msi_res_id=c", -EINVAL, .desc = "Only one of client_id"},
    {TOK "?resource=r&client_id=abc", 0, TE_ROUTE_TOKEN, TOK, "r", NULL, SELECTOR_CLIENT_ID, "abc"},
    {TOK "?resource=r&object_id=o1", 0, TE_ROUTE_TOKEN, TOK, "r", NULL, SELECTOR_OBJECT_ID, "o1"},
    {TOK "?resource=r&principal_id=p1", 0, TE_ROUTE_TOKEN, TOK, "r", NULL, SELECTOR_OBJECT_ID,
     "p1"},
    {TOK "?resource=r&msi_res_id=%2Fsubscriptions%2Fs%2Frg", 0, TE_ROUTE_TOKEN, TOK, "r", NULL,
     SELECTOR_RESOURCE_ID, "/subscriptions/s/rg"},
    {TOK "?resource=r&mi_res_id=/subscriptions/s", 0, TE_ROUTE_TOKEN, TOK, "r", NULL,
     SELECTOR_RESOURCE_ID, "/subscriptions/s"},
    {TOK "?resource=r&client_id=&object_id=o", 0, TE_ROUTE_TOKEN, TOK, "r", NULL,
     SELECTOR_OBJECT_ID, "o"},
    {TOK "?resource=r&client_id=", 0, TE_ROUTE_TOKEN, TOK, "r"},
    {TOK "?resource=a+b%20c%2B", 0, TE_ROUTE_TOKEN, TOK, "a b c+"},
    {TOK "?resource=https%3A%2F%2Fvault.azure.net", 0, TE_ROUTE_TOKEN, TOK,
     "https://vault.azure.net"},
    {TOK "?resource=r&bypass_cache=TRUE", 0, TE_ROUTE_TOKEN, TOK, "r", .bypass = true},
    {TOK "?resource=r&bypass_cache=true", 0, TE_ROUTE_TOKEN, TOK, "r", .bypass = true},
    {TOK "?resource=r&bypass_cache=1", 0, TE_ROUTE_TOKEN, TOK, "r"},
    {TOK "?Resource=a&API-VERSION=2018-02-01", 0, TE_ROUTE_TOKEN, TOK},
    {TOK "?foo=1&foo=2&resource=a", 0, TE_ROUTE_TOKEN, TOK, "a"},
    {TOK "?a&&b&resource=x&", 0, TE_ROUTE_TOKEN, TOK, "x"},
    {TOK "?=x&resource", 0, TE_ROUTE_TOKEN, TOK},
    {TOK "?resource=%C3%A9", 0, TE_ROUTE_TOKEN, TOK, "\xc3\xa9"},
    {TOK "?resource=%F0%9F%94%91", 0, TE_ROUTE_TOKEN, TOK, "\xf0\x9f\x94\x91"},
    {TOK "?resource=%zz", 0, TE_ROUTE_REJECTED},
    {TOK "?resource=%00", -EINVAL, .desc = "Invalid encoding in query parameter 'resource'"},
    {TOK "?resource=a%0Ab", -EINVAL, .desc = "Invalid encoding in query parameter 'resource'"},
    {TOK "?resource=%C3", -EINVAL, .desc = "Invalid encoding in query parameter 'resource'"},
    {TOK "?resource=%C0%AF", -EINVAL, .desc = "Invalid encoding in query parameter 'resource'"},
    {TOK "?resource=%ED%A0%80", -EINVAL, .desc = "Invalid encoding in query parameter 'resource'"},
    {TOK "?client_id=%FF", -EINVAL, .desc = "Invalid encoding in query parameter 'client_id'"},
    {TOK "?re%zzsource=a", 0, TE_ROUTE_REJECTED},
    {TOK "?re%00source=a", -EINVAL, .desc = "Malformed query parameter name"},
};

#pragma GCC diagnostic pop

static void check_row(const struct row *w, const char *raw)
{
    enum te_route route = (enum te_route) - 1;
    struct te_query q;
    memset(&q, 0x5a, sizeof(q));
    char *desc = NULL;
    int r = token_endpoint_parse_target(raw, &route, &q, &desc);
    if (r != w->ret)
        fail_msg("'%s': returned %d, expected %d (%s)", raw, r, w->ret, desc ? desc : "");
    if (r < 0) {
        assert_non_null(desc);
        if (w->desc && !strstr(desc, w->desc))
            fail_msg("'%s': description '%s' lacks '%s'", raw, desc, w->desc);
        free(desc);
        return;
    }
    assert_null(desc);
    if (route != w->route)
        fail_msg("'%s': route %d, expected %d", raw, route, w->route);
    if (w->route != TE_ROUTE_REJECTED) {
        assert_non_null(q.path);
        if (w->path && strcmp(q.path, w->path) != 0)
            fail_msg("'%s': path '%s', expected '%s'", raw, q.path, w->path);
    }
    if (w->route == TE_ROUTE_TOKEN) {
#define STR_EQ(a, b)                                                                               \
    do {                                                                                           \
        if (((a) == NULL) != ((b) == NULL) || ((a) && strcmp((a), (b)) != 0))                      \
            fail_msg("'%s': %s is '%s', expected '%s'", raw, #a, (a) ? (a) : "(null)",             \
                     (b) ? (b) : "(null)");                                                        \
    } while (0)
        STR_EQ(q.resource, w->resource);
        if (w->api_version)
            STR_EQ(q.api_version, w->api_version);
        if (q.sel != w->sel)
            fail_msg("'%s': selector %d, expected %d", raw, q.sel, w->sel);
        STR_EQ(q.sel_value, w->sel_value);
        assert_int_equal(q.bypass_cache, w->bypass);
    }
    const char *qm = strchr(raw, '?');
    assert_int_equal(q.has_query, qm != NULL);
    if (w->route != TE_ROUTE_REJECTED) {
        if (qm)
            assert_string_equal(q.query, qm + 1);
        else
            assert_null(q.query);
    }
    te_query_done(&q);
}

static void test_parse_table(void **state)
{
    (void)state;
    assert_true(sizeof(rows) / sizeof(rows[0]) >= 40);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        check_row(&rows[i], rows[i].raw);
}

static void test_parse_caps(void **state)
{
    (void)state;
    struct buf b;
    struct row ok = {.ret = 0, .route = TE_ROUTE_TOKEN, .path = TOK};
    struct row bad = {.ret = -EINVAL};

    /* HTTP_MAX_QUERY_PARAMS pieces are fine, one more is not (unknown keys count too). */
    buf_init(&b, 65536);
    buf_puts(&b, TOK "?");
    for (int i = 0; i < HTTP_MAX_QUERY_PARAMS; i++)
        buf_printf(&b, "k%d=v&", i);
    check_row(&ok, b.data);
    buf_puts(&b, "one=more");
    bad.desc = "Too many query parameters";
    check_row(&bad, b.data);
    buf_done(&b);

    /* A decoded value of HTTP_MAX_PARAM_BYTES is fine, one byte more is not. */
    buf_init(&b, 65536);
    buf_puts(&b, TOK "?client_id=");
    for (int i = 0; i < HTTP_MAX_PARAM_BYTES; i++)
        buf_puts(&b, "a");
    struct row max = {.route = TE_ROUTE_TOKEN,
                      .path = TOK,
                      .sel = SELECTOR_CLIENT_ID,
                      .sel_value = strchr(b.data, '=') + 1};
    check_row(&max, b.data);
    buf_puts(&b, "a");
    bad.desc = "Query parameter 'client_id' is too long";
    check_row(&bad, b.data);
    buf_done(&b);

    /* Percent-encoded: the cap is on the decoded value. */
    buf_init(&b, 65536);
    buf_puts(&b, TOK "?resource=");
    for (int i = 0; i < HTTP_MAX_PARAM_BYTES; i++)
        buf_puts(&b, "%41");
    struct row r2 = {.route = TE_ROUTE_REJECTED};
    check_row(&r2, b.data); /* over HTTP_MAX_URI_BYTES as a whole target */
    buf_done(&b);

    /* A target over HTTP_MAX_URI_BYTES is rejected even on its own. */
    buf_init(&b, 65536);
    buf_puts(&b, TOK "?");
    while (b.len <= HTTP_MAX_URI_BYTES)
        buf_puts(&b, "x");
    check_row(&r2, b.data);
    buf_done(&b);

    /* Bad arguments. */
    enum te_route route;
    struct te_query q;
    char *desc = NULL;
    assert_int_equal(token_endpoint_parse_target(NULL, &route, &q, &desc), -EINVAL);
    te_query_done(NULL);
}

static void test_api_versions(void **state)
{
    (void)state;
    static const char *const good[] = {"2018-02-01", "2019-08-01", "2019-11-01",
                                       "2021-02-01", "2023-07-01", "2025-04-07"};
    static const char *const badv[] = {NULL,          "",           "2017-12-01", "2018-02-1",
                                       "2018-02-01 ", "2018-02-02", "latest",     "2018-02-01x",
                                       "2099-01-01"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(token_endpoint_api_version_valid(good[i]));
    for (size_t i = 0; i < sizeof(badv) / sizeof(badv[0]); i++)
        assert_false(token_endpoint_api_version_valid(badv[i]));
}

/* ---- the fake issuer ---- */

static struct {
    pthread_mutex_t lock;
    unsigned calls;
    /* what it saw */
    char resource[4096];
    enum selector_kind sel;
    char sel_value[4096];
    bool bypass;
    int peer_family;
    char peer[64];
    /* what it answers */
    int code;
    struct tc_token token;
    char client_id[256];
    long upstream_status;
    const char *upstream_error;
    uint32_t retry_after_s;
    unsigned done_calls;
    /* issuer_peer_registration(): what it answers, how often it was asked, from where */
    int reg_code;
    char reg_ns[64];
    unsigned reg_calls;
    char reg_peer[64];
} F = {.lock = PTHREAD_MUTEX_INITIALIZER};

int issuer_peer_registration(struct issuer *is, const struct sockaddr *peer, socklen_t peer_len,
                             struct registration *ret)
{
    (void)is;
    (void)peer_len;
    pthread_mutex_lock(&F.lock);
    F.reg_calls++;
    F.reg_peer[0] = '\0';
    if (peer && peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, F.reg_peer,
                  sizeof(F.reg_peer));
    int r = F.reg_code;
    if (r == 0) {
        memset(ret, 0, sizeof(*ret));
        snprintf(ret->pod_namespace, sizeof(ret->pod_namespace), "%s", F.reg_ns);
        snprintf(ret->pod_name, sizeof(ret->pod_name), "pod-1");
    }
    pthread_mutex_unlock(&F.lock);
    return r;
}

/* The caller's registration as the fake attributes it: in namespace ns, or error code. */
static void fake_caller(int code, const char *ns)
{
    pthread_mutex_lock(&F.lock);
    F.reg_code = code;
    snprintf(F.reg_ns, sizeof(F.reg_ns), "%s", ns ? ns : "");
    F.reg_calls = 0;
    pthread_mutex_unlock(&F.lock);
}

static unsigned fake_reg_calls(void)
{
    pthread_mutex_lock(&F.lock);
    unsigned n = F.reg_calls;
    pthread_mutex_unlock(&F.lock);
    return n;
}

void issuer_issue_for_peer(struct issuer *is, const struct sockaddr *peer, socklen_t peer_len,
                           const struct issue_request *req, struct issue_result *ret)
{
    (void)is;
    (void)peer_len;
    pthread_mutex_lock(&F.lock);
    F.calls++;
    snprintf(F.resource, sizeof(F.resource), "%s", req->resource ? req->resource : "(null)");
    F.sel = req->sel;
    snprintf(F.sel_value, sizeof(F.sel_value), "%s", req->sel_value ? req->sel_value : "(null)");
    F.bypass = req->bypass_cache;
    F.peer_family = peer ? peer->sa_family : -1;
    if (peer && peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, F.peer, sizeof(F.peer));
    memset(ret, 0, sizeof(*ret));
    ret->code = F.code;
    if (F.code == 0)
        ret->token = &F.token;
    snprintf(ret->client_id, sizeof(ret->client_id), "%s", F.client_id);
    ret->upstream_status = F.upstream_status;
    ret->upstream_error = F.upstream_error ? strdup(F.upstream_error) : NULL;
    ret->retry_after_s = F.retry_after_s;
    pthread_mutex_unlock(&F.lock);
}

void issuer_result_done(struct issuer *is, struct issue_result *r)
{
    (void)is;
    pthread_mutex_lock(&F.lock);
    F.done_calls++;
    free(r->upstream_error);
    r->upstream_error = NULL;
    r->token = NULL;
    pthread_mutex_unlock(&F.lock);
}

static void fake_answers(int code)
{
    pthread_mutex_lock(&F.lock);
    F.calls = 0;
    F.done_calls = 0;
    F.code = code;
    F.client_id[0] = '\0';
    F.upstream_status = 0;
    F.upstream_error = NULL;
    F.retry_after_s = 0;
    uint64_t now = (uint64_t)time(NULL);
    F.token.access_token = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln";
    F.token.client_id = "token-client";
    F.token.expires_on = now + 3600;
    F.token.not_before = now - 300;
    F.token.ext_expires_in = 0;
    F.token.issued_at = now;
    pthread_mutex_unlock(&F.lock);
}

static unsigned fake_calls(void)
{
    pthread_mutex_lock(&F.lock);
    unsigned n = F.calls;
    pthread_mutex_unlock(&F.lock);
    return n;
}

/* ---- the fake node IMDS ---- */

static struct {
    pthread_mutex_t lock;
    unsigned calls;
    char raw_uri[HTTP_MAX_URI_BYTES + 1];
    char metadata[64];
    int status;
    const char *body;
    const char *content_type;
} M = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void imds_handler(void *ud, const struct http_request *req, struct http_response *resp)
{
    (void)ud;
    pthread_mutex_lock(&M.lock);
    M.calls++;
    snprintf(M.raw_uri, sizeof(M.raw_uri), "%s", req->raw_uri);
    const char *m = http_request_header(req, "Metadata");
    snprintf(M.metadata, sizeof(M.metadata), "%s", m ? m : "(none)");
    resp->status = M.status;
    resp->content_type = M.content_type;
    resp->body = strdup(M.body);
    resp->body_len = strlen(M.body);
    resp->retry_after_s = 11;
    pthread_mutex_unlock(&M.lock);
}

static void imds_answers(int status, const char *ct, const char *body)
{
    pthread_mutex_lock(&M.lock);
    M.calls = 0;
    M.raw_uri[0] = '\0';
    M.status = status;
    M.content_type = ct;
    M.body = body;
    pthread_mutex_unlock(&M.lock);
}

/* ---- servers and client ---- */

static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(s4);
    assert_int_equal(bind(fd, (struct sockaddr *)&s4, len), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&s4, &len), 0);
    close(fd);
    return ntohs(s4.sin_port);
}

#define RETRY_AFTER_DEFAULT 9

static unsigned te_port, te_proxy_port, te_ns_port, imds_port;
static struct token_endpoint *te, *te_proxy, *te_ns;
static struct http_server *te_srv, *te_proxy_srv, *te_ns_srv, *imds_srv;

static struct http_server *serve(unsigned port, http_handler_fn fn, void *ud)
{
    char listen[64], *err = NULL;
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
    struct http_server *s = http_server_start(listen, NULL, fn, ud, &err);
    if (!s)
        fprintf(stderr, "cannot start '%s': %s\n", listen, err);
    free(err);
    return s;
}

static int setup(void **state)
{
    (void)state;
    te_port = free_port();
    te_proxy_port = free_port();
    imds_port = free_port();
    char listen[64], imds[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", te_port);
    snprintf(imds, sizeof(imds), "http://127.0.0.1:%u/", imds_port);

    struct token_endpoint_options o = {
        .listen_host = listen,
        .imds_endpoint = imds,
        .retry_after_s = RETRY_AFTER_DEFAULT,
    };
    te = token_endpoint_new((struct issuer *)&F, &o);
    char listen2[64];
    snprintf(listen2, sizeof(listen2), "127.0.0.1:%u", te_proxy_port);
    o.listen_host = listen2;
    o.proxy_instance = true;
    o.proxy_versions = true;
    te_proxy = token_endpoint_new((struct issuer *)&F, &o);
    /* /metadata/instance for the pods of two namespaces; /metadata/versions for nobody. */
    static char *const instance_ns[] = {"team-a", "team-c"};
    char listen3[64];
    te_ns_port = free_port();
    snprintf(listen3, sizeof(listen3), "127.0.0.1:%u", te_ns_port);
    o.listen_host = listen3;
    o.proxy_instance = false;
    o.proxy_versions = false;
    o.instance_namespaces = instance_ns;
    o.n_instance_namespaces = 2;
    te_ns = token_endpoint_new((struct issuer *)&F, &o);
    if (!te || !te_proxy || !te_ns)
        return -1;
    te_srv = serve(te_port, token_endpoint_handle, te);
    te_proxy_srv = serve(te_proxy_port, token_endpoint_handle, te_proxy);
    te_ns_srv = serve(te_ns_port, token_endpoint_handle, te_ns);
    imds_srv = serve(imds_port, imds_handler, NULL);
    return te_srv && te_proxy_srv && te_ns_srv && imds_srv ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    te_srv = http_server_stop(te_srv);
    te_proxy_srv = http_server_stop(te_proxy_srv);
    te_ns_srv = http_server_stop(te_ns_srv);
    imds_srv = http_server_stop(imds_srv);
    te = token_endpoint_free(te);
    te_proxy = token_endpoint_free(te_proxy);
    te_ns = token_endpoint_free(te_ns);
    return 0;
}

struct hreply {
    long status;
    char *body;
    char retry_after[32];
    char allow[64];
    char ctype[128];
    char cache_control[64];
    bool has_server;
};

static size_t body_cb(char *p, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    return buf_append(b, p, size * n) < 0 ? 0 : size * n;
}

static void grab(const char *line, size_t n, const char *name, char *dst, size_t dst_size)
{
    size_t nl = strlen(name);
    if (n > nl + 1 && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
        const char *v = line + nl + 1;
        while (*v == ' ')
            v++;
        size_t len = strcspn(v, "\r\n");
        snprintf(dst, dst_size, "%.*s", (int)len, v);
    }
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    struct hreply *r = ud;
    size_t len = size * n;
    grab(p, len, "Retry-After", r->retry_after, sizeof(r->retry_after));
    grab(p, len, "Allow", r->allow, sizeof(r->allow));
    grab(p, len, "Content-Type", r->ctype, sizeof(r->ctype));
    grab(p, len, "Cache-Control", r->cache_control, sizeof(r->cache_control));
    if (len > 7 && strncasecmp(p, "Server:", 7) == 0)
        r->has_server = true;
    return len;
}

/*
 * One request with the request target exactly as given. `headers` (NULL-terminated, may be NULL)
 * are added as is; "Metadata: true" is added unless `no_metadata`. http10 sends HTTP/1.0 without
 * Host.
 */
static void request_on(unsigned port, const char *method, const char *target,
                       const char *const *headers, bool no_metadata, bool http10,
                       struct hreply *ret)
{
    CURL *c = curl_easy_init();
    assert_non_null(c);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", port);
    struct curl_slist *h = NULL;
    if (!no_metadata)
        h = curl_slist_append(h, "Metadata: true");
    for (size_t i = 0; headers && headers[i]; i++)
        h = curl_slist_append(h, headers[i]);
    if (http10)
        h = curl_slist_append(h, "Host:");
    h = curl_slist_append(h, "Accept:");
    struct buf b;
    buf_init(&b, 4 * 1024 * 1024);
    memset(ret, 0, sizeof(*ret));
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_REQUEST_TARGET, target);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, ret);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L); /* only so a broken server cannot hang ctest */
    if (http10)
        curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_0);
    if (strcasecmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    CURLcode cr = curl_easy_perform(c);
    if (cr != CURLE_OK)
        fail_msg("%s %s: %s", method, target, curl_easy_strerror(cr));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ret->status);
    ret->body = buf_steal(&b);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

static void request(const char *method, const char *target, const char *const *headers,
                    struct hreply *ret)
{
    request_on(te_port, method, target, headers, false, false, ret);
}

static void hreply_done(struct hreply *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static void expect(const struct hreply *r, long status, const char *body)
{
    if (r->status != status)
        fail_msg("status %ld, expected %ld (body '%s')", r->status, status, r->body);
    if (body && strcmp(r->body, body) != 0)
        fail_msg("body\n  '%s'\nexpected\n  '%s'", r->body, body);
    assert_string_equal(r->ctype, "application/json; charset=utf-8");
    assert_false(r->has_server);
}

#define GOOD TOK "?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"
#define E_METADATA                                                                                 \
    "{\"error\":\"invalid_request\",\"error_description\":\"Required metadata header not "         \
    "specified\"}"

/* ---- success ---- */

/* Checks a 200 body field by field, then as a whole string (key order, every value a string). */
static void expect_token(const struct hreply *r, const char *client_id, const char *resource_json,
                         uint64_t expires_in_max, uint64_t ext_min)
{
    expect(r, 200, NULL);
    assert_string_equal(r->cache_control, "no-store");
    struct json_object *o = json_tokener_parse(r->body);
    assert_non_null(o);
    assert_true(json_object_is_type(o, json_type_object));
    json_object_object_foreach(o, key, val)
    {
        (void)key;
        assert_true(json_object_is_type(val, json_type_string));
    }
    struct json_object *v;
    assert_true(json_object_object_get_ex(o, "expires_in", &v));
    uint64_t expires_in = strtoull(json_object_get_string(v), NULL, 10);
    assert_true(expires_in <= expires_in_max);
    assert_true(expires_in + 60 >= expires_in_max || expires_in_max == 0);
    assert_true(json_object_object_get_ex(o, "ext_expires_in", &v));
    uint64_t ext = strtoull(json_object_get_string(v), NULL, 10);
    assert_true(ext >= expires_in);
    assert_true(ext + 60 >= ext_min);

    char *want = NULL;
    assert_true(asprintf(&want,
                         "{\"access_token\":\"%s\",\"client_id\":\"%s\",\"expires_in\":\"%llu\","
                         "\"expires_on\":\"%llu\",\"ext_expires_in\":\"%llu\",\"not_before\":"
                         "\"%llu\",\"resource\":\"%s\",\"token_type\":\"Bearer\"}",
                         F.token.access_token, client_id, (unsigned long long)expires_in,
                         (unsigned long long)F.token.expires_on, (unsigned long long)ext,
                         (unsigned long long)F.token.not_before, resource_json) > 0);
    assert_string_equal(r->body, want);
    free(want);
    json_object_put(o);
}

static void test_success(void **state)
{
    (void)state;
    metrics_reset();
    fake_answers(0);
    snprintf(F.client_id, sizeof(F.client_id), "11111111-2222-3333-4444-555555555555");
    struct hreply r;
    request("GET", GOOD, NULL, &r);
    expect_token(&r, "11111111-2222-3333-4444-555555555555", "https://vault.azure.net", 3600, 0);
    assert_int_equal(fake_calls(), 1);
    assert_int_equal(F.done_calls, 1);
    assert_string_equal(F.resource, "https://vault.azure.net");
    assert_int_equal(F.sel, SELECTOR_NONE);
    assert_string_equal(F.sel_value, "(null)");
    assert_false(F.bypass);
    assert_int_equal(F.peer_family, AF_INET);
    assert_string_equal(F.peer, "127.0.0.1");
    hreply_done(&r);

    /* The SDK spelling with a trailing slash, a selector, bypass_cache; identity headers ignored
     * (T9): the caller is always the connection's peer. */
    fake_answers(0);
    const char *hdrs[] = {"podns: kube-system", "podname: admin", "X-Ms-Client-Id: x", NULL};
    request("GET",
            TOK "/?resource=https://management.azure.com/&api-version=2019-08-01&"
                "client_id=abc&bypass_cache=true",
            hdrs, &r);
    /* No client ID from the issuer: the token's own. */
    expect_token(&r, "token-client", "https://management.azure.com/", 3600, 0);
    assert_int_equal(F.sel, SELECTOR_CLIENT_ID);
    assert_string_equal(F.sel_value, "abc");
    assert_true(F.bypass);
    assert_string_equal(F.peer, "127.0.0.1");
    hreply_done(&r);

    /* principal_id is object_id. */
    fake_answers(0);
    request("GET", GOOD "&principal_id=oid-1", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(F.sel, SELECTOR_OBJECT_ID);
    assert_string_equal(F.sel_value, "oid-1");
    hreply_done(&r);

    struct buf m;
    buf_init(&m, 1024 * 1024);
    assert_int_equal(metrics_render(&m), 0);
    assert_non_null(strstr(m.data, "idbroker_http_requests_total{code=\"200\"} 3\n"));
    buf_done(&m);
}

static void test_success_edges(void **state)
{
    (void)state;
    struct hreply r;

    /* An expired token never shows a negative expires_in. */
    fake_answers(0);
    F.token.expires_on = (uint64_t)time(NULL) - 100;
    request("GET", GOOD, NULL, &r);
    expect_token(&r, "token-client", "https://vault.azure.net", 0, 0);
    assert_non_null(strstr(r.body, "\"expires_in\":\"0\""));
    hreply_done(&r);

    /* ext_expires_in from the token counts down from when it was fetched. */
    fake_answers(0);
    F.token.ext_expires_in = 7200;
    request("GET", GOOD, NULL, &r);
    expect_token(&r, "token-client", "https://vault.azure.net", 3600, 7200);
    hreply_done(&r);

    /* The resource is echoed decoded and JSON-escaped. */
    fake_answers(0);
    request("GET", TOK "?api-version=2018-02-01&resource=a%22b%5Cc%2F%C3%A9", NULL, &r);
    expect_token(&r, "token-client", "a\\\"b\\\\c/\xc3\xa9", 3600, 0);
    assert_string_equal(F.resource, "a\"b\\c/\xc3\xa9");
    hreply_done(&r);

    /* Metadata is matched case-insensitively. */
    fake_answers(0);
    const char *hdrs[] = {"Metadata: TRUE", NULL};
    request_on(te_port, "GET", GOOD, hdrs, true, false, &r);
    assert_int_equal(r.status, 200);
    hreply_done(&r);

    /* Success without a token is a server error, never an empty 200. */
    fake_answers(0);
    F.token.access_token = "";
    request("GET", GOOD, NULL, &r);
    expect(&r, 500,
           "{\"error\":\"server_error\",\"error_description\":\"The token could not be "
           "issued\"}");
    hreply_done(&r);
    fake_answers(0);
    F.token.access_token = NULL;
    request("GET", GOOD, NULL, &r);
    assert_int_equal(r.status, 500);
    hreply_done(&r);
}

/* ---- errors from the issuer ---- */

static void issue_error(int code, long status, const char *body, const char *retry_after)
{
    struct hreply r;
    request("GET", GOOD, NULL, &r);
    if (r.status != status)
        fail_msg("code %d: status %ld, expected %ld", code, r.status, status);
    expect(&r, status, body);
    assert_string_equal(r.retry_after, retry_after ? retry_after : "");
    assert_string_equal(r.cache_control, "");
    assert_int_equal(fake_calls(), 1);
    hreply_done(&r);
}

static void test_issue_errors(void **state)
{
    (void)state;
    fake_answers(IDB_E_UNKNOWN_POD);
    issue_error(IDB_E_UNKNOWN_POD, 403,
                "{\"error\":\"forbidden\",\"error_description\":\"The caller is not a pod "
                "registered with idbroker on this node\"}",
                NULL);
    fake_answers(IDB_E_NO_BINDING);
    issue_error(IDB_E_NO_BINDING, 400,
                "{\"error\":\"invalid_request\",\"error_description\":\"Identity not found\"}",
                NULL);
    fake_answers(IDB_E_IDENTITY_NOT_FOUND);
    issue_error(IDB_E_IDENTITY_NOT_FOUND, 400,
                "{\"error\":\"invalid_request\",\"error_description\":\"Identity not found\"}",
                NULL);
    fake_answers(IDB_E_MULTIPLE_IDENTITIES);
    issue_error(IDB_E_MULTIPLE_IDENTITIES, 400,
                "{\"error\":\"invalid_request\",\"error_description\":\"Multiple user assigned "
                "identities exist, please specify the clientId / resourceId of the identity in "
                "the token request\"}",
                NULL);

    fake_answers(IDB_E_NOT_SYNCED);
    issue_error(IDB_E_NOT_SYNCED, 503,
                "{\"error\":\"service_unavailable\",\"error_description\":\"Identity data for this "
                "pod is not available yet, retry later\"}",
                "9");
    fake_answers(IDB_E_NOT_SYNCED);
    F.retry_after_s = 3; /* the result's own value wins */
    issue_error(IDB_E_NOT_SYNCED, 503, NULL, "3");
    fake_answers(IDB_E_AMBIGUOUS_POD);
    issue_error(IDB_E_AMBIGUOUS_POD, 503, NULL, "9");
    fake_answers(IDB_E_PROVIDER_TIMEOUT);
    issue_error(IDB_E_PROVIDER_TIMEOUT, 503,
                "{\"error\":\"service_unavailable\",\"error_description\":\"The identity provider "
                "is unavailable, retry later\"}",
                "9");
    fake_answers(IDB_E_UPSTREAM_UNAVAILABLE);
    F.retry_after_s = 30;
    issue_error(IDB_E_UPSTREAM_UNAVAILABLE, 503, NULL, "30");
    fake_answers(IDB_E_UPSTREAM_BAD_REPLY);
    issue_error(IDB_E_UPSTREAM_BAD_REPLY, 502,
                "{\"error\":\"bad_gateway\",\"error_description\":\"The identity provider sent an "
                "invalid reply\"}",
                "9");
    fake_answers(IDB_E_RATE_LIMITED);
    F.retry_after_s = 1;
    issue_error(IDB_E_RATE_LIMITED, 429,
                "{\"error\":\"too_many_requests\",\"error_description\":\"Too many token "
                "requests, retry later\"}",
                "1");

    /* Upstream 4xx: its status, and its body when it is a JSON object. */
    fake_answers(IDB_E_UPSTREAM_4XX);
    F.upstream_status = 400;
    F.upstream_error = "{\"error\":\"invalid_resource\",\"error_description\":\"AADSTS500011: "
                       "The resource principal named x was not found\"}";
    issue_error(IDB_E_UPSTREAM_4XX, 400, F.upstream_error, NULL);
    fake_answers(IDB_E_UPSTREAM_4XX);
    F.upstream_status = 403;
    F.upstream_error = "[\"not an object\"]";
    issue_error(IDB_E_UPSTREAM_4XX, 403,
                "{\"error\":\"invalid_request\",\"error_description\":\"The identity provider "
                "refused the token request\"}",
                NULL);
    fake_answers(IDB_E_UPSTREAM_4XX);
    F.upstream_status = 401;
    F.upstream_error = "not json";
    issue_error(IDB_E_UPSTREAM_4XX, 401, NULL, NULL);
    fake_answers(IDB_E_UPSTREAM_4XX);
    F.upstream_status = 429;
    F.retry_after_s = 4;
    issue_error(IDB_E_UPSTREAM_4XX, 429, NULL, "4");
    fake_answers(IDB_E_UPSTREAM_4XX);
    F.upstream_status = 200; /* nonsense from a provider: never a success */
    issue_error(IDB_E_UPSTREAM_4XX, 502, NULL, "9");

    /* Anything else is a server error. */
    static const char e500[] = "{\"error\":\"server_error\",\"error_description\":\"The token "
                               "could not be issued\"}";
    fake_answers(IDB_E_NO_PROVIDER);
    issue_error(IDB_E_NO_PROVIDER, 500, e500, NULL);
    fake_answers(-ENOMEM);
    issue_error(-ENOMEM, 500, e500, NULL);
    fake_answers(IDB_E_PLUGIN_ABI);
    issue_error(IDB_E_PLUGIN_ABI, 500, e500, NULL);
}

/* ---- request checks before the issuer ---- */

static void refused(const char *method, const char *target, const char *const *headers,
                    bool no_metadata, long status, const char *body)
{
    fake_answers(0);
    imds_answers(200, "application/json", "{}");
    struct hreply r;
    request_on(te_port, method, target, headers, no_metadata, false, &r);
    if (r.status != status)
        fail_msg("%s %s: status %ld, expected %ld (%s)", method, target, r.status, status, r.body);
    if (strcmp(method, "HEAD") != 0)
        expect(&r, status, body);
    assert_int_equal(fake_calls(), 0);
    assert_int_equal(M.calls, 0); /* nothing ever falls through to the node's IMDS */
    hreply_done(&r);
}

static void test_target_errors(void **state)
{
    (void)state;
    static const char e400[] = "{\"error\":\"invalid_request\",\"error_description\":\"The "
                               "request URI is not in canonical form\"}";
    static const char e404[] = "{\"error\":\"not_found\",\"error_description\":\"No such "
                               "endpoint\"}";
    static const char *const rejected[] = {
        "//metadata/identity/oauth2/token?api-version=2018-02-01&resource=r",
        TOK "//?api-version=2018-02-01&resource=r",
        "/metadata/./identity/oauth2/token?api-version=2018-02-01&resource=r",
        "/metadata/x/../identity/oauth2/token?api-version=2018-02-01&resource=r",
        "/metadata/%2e%2e/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r",
        "/metadata%2Fidentity/oauth2/token?api-version=2018-02-01&resource=r",
        "%2Fmetadata/identity/oauth2/token?api-version=2018-02-01&resource=r",
        TOK ";x?api-version=2018-02-01&resource=r",
        TOK "%00?api-version=2018-02-01&resource=r",
        "/metadata/instance/../identity/oauth2/token",
        "http://169.254.169.254" TOK "?api-version=2018-02-01&resource=r",
    };
    for (size_t i = 0; i < sizeof(rejected) / sizeof(rejected[0]); i++)
        refused("GET", rejected[i], NULL, false, 400, e400);
    refused("GET", "/metadata/identity/oauth2/tokens?api-version=2018-02-01&resource=r", NULL,
            false, 404, e404);
    refused("GET", "/", NULL, false, 404, e404);
    refused("GET", "/metadata/attested/document?api-version=2020-09-01", NULL, false, 404, e404);
    refused("GET", "/latest/meta-data/iam/security-credentials/", NULL, false, 404, e404);
    /* The target comes first: a bad target is 400/404 whatever the method. */
    refused("POST", "//metadata/identity/oauth2/token", NULL, false, 400, e400);
    refused("POST", "/nope", NULL, false, 404, e404);

    refused("GET", TOK "?api-version=2018-02-01&resource=a&resource=b", NULL, false, 400,
            "{\"error\":\"invalid_request\",\"error_description\":\"Duplicate query parameter "
            "'resource'\"}");
    refused("GET", TOK "?api-version=2018-02-01&resource=a&client_id=x&mi_res_id=y", NULL, false,
            400, NULL);
}

static void test_method(void **state)
{
    (void)state;
    static const char e405[] = "{\"error\":\"invalid_request\",\"error_description\":\"Only GET "
                               "is allowed\"}";
    static const char *const methods[] = {"POST",    "PUT",  "DELETE", "PATCH",
                                          "OPTIONS", "HEAD", "get"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        fake_answers(0);
        struct hreply r;
        request(methods[i], GOOD, NULL, &r);
        if (r.status != 405)
            fail_msg("%s: status %ld", methods[i], r.status);
        assert_string_equal(r.allow, "GET");
        if (strcmp(methods[i], "HEAD") != 0)
            assert_string_equal(r.body, e405);
        assert_int_equal(fake_calls(), 0);
        hreply_done(&r);
    }
    /* Methods on the blocked paths are 405 too. */
    refused("POST", "/metadata/instance?api-version=2021-02-01", NULL, false, 405, e405);
}

static void test_forwarded_and_host(void **state)
{
    (void)state;
    static const char exff[] = "{\"error\":\"invalid_request\",\"error_description\":\"Requests "
                               "with X-Forwarded-For or Forwarded headers are not accepted\"}";
    const char *xff[] = {"X-Forwarded-For: 10.0.0.1", NULL};
    refused("GET", GOOD, xff, false, 400, exff);
    const char *xff_lc[] = {"x-forwarded-for: 10.0.0.1", NULL};
    refused("GET", GOOD, xff_lc, false, 400, exff);
    const char *fwd[] = {"Forwarded: for=10.0.0.1", NULL};
    refused("GET", GOOD, fwd, false, 400, exff);
    /* On the blocked paths as well. */
    refused("GET", "/metadata/instance?api-version=2021-02-01", fwd, false, 400, exff);

    static const char ehost[] = "{\"error\":\"forbidden\",\"error_description\":\"Host not "
                                "allowed\"}";
    static const char *const evil[] = {
        "Host: evil.example.com", "Host: 169.254.169.254:8080", "Host: 169.254.169.254.nip.io",
        "Host: 127.0.0.1:1",      "Host: 127.0.0.10",           "Host: localhost",
        "Host: 169.254.169.25",   "Host: 127.0.0.1:",
    };
    for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
        const char *h[] = {evil[i], NULL};
        refused("GET", GOOD, h, false, 403, ehost);
    }

    char own[64], own_bare[64];
    snprintf(own, sizeof(own), "Host: 127.0.0.1:%u", te_port);
    snprintf(own_bare, sizeof(own_bare), "Host: 127.0.0.1");
    const char *good_hosts[] = {"Host: 169.254.169.254", "Host: 169.254.169.254:80", own, own_bare};
    for (size_t i = 0; i < sizeof(good_hosts) / sizeof(good_hosts[0]); i++) {
        fake_answers(0);
        const char *h[] = {good_hosts[i], NULL};
        struct hreply r;
        request("GET", GOOD, h, &r);
        if (r.status != 200)
            fail_msg("'%s': status %ld", good_hosts[i], r.status);
        hreply_done(&r);
    }

    /* HTTP/1.0 without Host is allowed. */
    fake_answers(0);
    struct hreply r;
    request_on(te_port, "GET", GOOD, NULL, false, true, &r);
    assert_int_equal(r.status, 200);
    hreply_done(&r);
}

static void test_metadata_header(void **state)
{
    (void)state;
    /* DefaultAzureCredential's probe: no query, no Metadata. Answered at once, no issuer call. */
    refused("GET", TOK, NULL, true, 400, E_METADATA);
    refused("GET", TOK "/", NULL, true, 400, E_METADATA);
    /* A token request without the header, with a wrong value, with two of them. */
    refused("GET", GOOD, NULL, true, 400, E_METADATA);
    const char *f[] = {"Metadata: false", NULL};
    refused("GET", GOOD, f, true, 400, E_METADATA);
    const char *e[] = {"Metadata: true, true", NULL};
    refused("GET", GOOD, e, true, 400, E_METADATA);
    const char *two[] = {"Metadata: true", NULL};
    refused("GET", GOOD, two, false, 400, E_METADATA);
    const char *sp[] = {"Metadata: truee", NULL};
    refused("GET", GOOD, sp, true, 400, E_METADATA);
    /* The blocked paths need it too (IMDS does). */
    refused("GET", "/metadata/instance?api-version=2021-02-01", NULL, true, 400, E_METADATA);
    /* With the header but no query: the query checks answer. */
    refused("GET", TOK, NULL, false, 400,
            "{\"error\":\"Bad request. api-version was not specified in the request. For more "
            "information refer to aka.ms/azureimds\",\"newest-versions\":[\"2025-04-07\","
            "\"2024-07-17\",\"2024-03-15\"]}");
}

static void test_query_errors(void **state)
{
    (void)state;
    refused("GET", TOK "?resource=https://vault.azure.net", NULL, false, 400,
            "{\"error\":\"Bad request. api-version was not specified in the request. For more "
            "information refer to aka.ms/azureimds\",\"newest-versions\":[\"2025-04-07\","
            "\"2024-07-17\",\"2024-03-15\"]}");
    refused("GET", TOK "?resource=https://vault.azure.net&api-version=", NULL, false, 400,
            "{\"error\":\"Bad request. api-version was not specified in the request. For more "
            "information refer to aka.ms/azureimds\",\"newest-versions\":[\"2025-04-07\","
            "\"2024-07-17\",\"2024-03-15\"]}");
    static const char einv[] =
        "{\"error\":\"Bad request. api-version is invalid or was not specified in the request. "
        "For more information refer to aka.ms/azureimds\",\"newest-versions\":[\"2025-04-07\","
        "\"2024-07-17\",\"2024-03-15\"]}";
    refused("GET", TOK "?resource=r&api-version=2017-12-01", NULL, false, 400, einv);
    refused("GET", TOK "?resource=r&api-version=2018-02-01x", NULL, false, 400, einv);
    refused("GET", TOK "?resource=r&api-version=latest", NULL, false, 400, einv);
    static const char eaud[] = "{\"error\":\"invalid_request\",\"error_description\":\"Required "
                               "audience parameter not specified\"}";
    refused("GET", TOK "?api-version=2018-02-01", NULL, false, 400, eaud);
    refused("GET", TOK "?api-version=2018-02-01&resource=", NULL, false, 400, eaud);
    refused("GET", TOK "?api-version=2018-02-01&Resource=x", NULL, false, 400, eaud);
}

static void test_http_caps(void **state)
{
    (void)state;
    /* Over-long target: 414. */
    struct buf b;
    buf_init(&b, 65536);
    buf_puts(&b, GOOD "&x=");
    while (b.len <= HTTP_MAX_URI_BYTES)
        buf_puts(&b, "a");
    fake_answers(0);
    struct hreply r;
    request("GET", b.data, NULL, &r);
    assert_int_equal(r.status, 414);
    assert_int_equal(fake_calls(), 0);
    hreply_done(&r);
    buf_done(&b);

    /* Too many headers: 431. */
    const char *many[HTTP_MAX_HEADERS + 2];
    char names[HTTP_MAX_HEADERS + 1][32];
    for (int i = 0; i <= HTTP_MAX_HEADERS; i++) {
        snprintf(names[i], sizeof(names[i]), "X-N%d: v", i);
        many[i] = names[i];
    }
    many[HTTP_MAX_HEADERS + 1] = NULL;
    request("GET", GOOD, many, &r);
    assert_int_equal(r.status, 431);
    assert_int_equal(fake_calls(), 0);
    hreply_done(&r);

    /* Too many header bytes: 431. */
    buf_init(&b, 65536);
    buf_puts(&b, "X-Big: ");
    while (b.len <= HTTP_MAX_HEADER_BYTES)
        buf_puts(&b, "b");
    const char *big[] = {b.data, NULL};
    request("GET", GOOD, big, &r);
    assert_int_equal(r.status, 431);
    assert_int_equal(fake_calls(), 0);
    hreply_done(&r);
    buf_done(&b);

    /* A body: 413. */
    const char *cl[] = {"Content-Length: 3", NULL};
    CURL *c = curl_easy_init();
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", te_port, GOOD);
    struct curl_slist *h = curl_slist_append(NULL, "Metadata: true");
    h = curl_slist_append(h, cl[0]);
    struct buf body;
    buf_init(&body, 65536);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "GET");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "abc");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    assert_int_equal(status, 413);
    assert_int_equal(fake_calls(), 0);
    buf_done(&body);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

/* ---- the other IMDS paths and the pass-through ---- */

static void test_blocked_paths(void **state)
{
    (void)state;
    static const char e403[] = "{\"error\":\"forbidden\",\"error_description\":\"This metadata "
                               "endpoint is blocked by idbroker on this node\"}";
    refused("GET", "/metadata/instance?api-version=2021-02-01", NULL, false, 403, e403);
    refused("GET", "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text", NULL,
            false, 403, e403);
    refused("GET", "/Metadata/Instance", NULL, false, 403, e403);
    refused("GET", "/metadata/versions", NULL, false, 403, e403);
}

static void test_proxy_paths(void **state)
{
    (void)state;
    struct hreply r;
    imds_answers(200, "text/plain", "00000000-1111-2222-3333-444444444444");
    request_on(te_proxy_port, "GET",
               "/Metadata/instance/compute/vmId?api-version=2021-02-01&format=text", NULL, false,
               false, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "00000000-1111-2222-3333-444444444444");
    assert_string_equal(r.ctype, "text/plain; charset=utf-8");
    assert_string_equal(r.retry_after, "11"); /* upstream's header passed on */
    assert_int_equal(M.calls, 1);
    assert_string_equal(M.raw_uri,
                        "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text");
    assert_string_equal(M.metadata, "true");
    hreply_done(&r);

    imds_answers(400, "application/json; charset=utf-8", "{\"error\":\"Bad request\"}");
    request_on(te_proxy_port, "GET", "/metadata/versions", NULL, false, false, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body, "{\"error\":\"Bad request\"}");
    assert_string_equal(r.ctype, "application/json; charset=utf-8");
    assert_string_equal(M.raw_uri, "/metadata/versions");
    hreply_done(&r);

    /* The token path is never proxied for a pod that is not excepted. */
    fake_answers(IDB_E_NO_BINDING);
    imds_answers(200, "application/json", "{\"access_token\":\"node\"}");
    request_on(te_proxy_port, "GET", GOOD, NULL, false, false, &r);
    assert_int_equal(r.status, 400);
    assert_int_equal(M.calls, 0);
    hreply_done(&r);
}

/* THREATS T8: with a namespace allowlist, only pods registered in a listed namespace reach the node
 * IMDS; everyone else, unknown callers included, gets the blocked path's 403. */
static void test_proxy_namespaces(void **state)
{
    (void)state;
    static const char e403[] = "{\"error\":\"forbidden\",\"error_description\":\"This metadata "
                               "endpoint is blocked by idbroker on this node\"}";
    static const char *const inst = "/metadata/instance?api-version=2021-02-01";
    struct hreply r;

    imds_answers(200, "application/json", "{\"compute\":{}}");
    fake_caller(0, "team-a");
    request_on(te_ns_port, "GET", inst, NULL, false, false, &r);
    expect(&r, 200, "{\"compute\":{}}");
    assert_int_equal(M.calls, 1);
    assert_string_equal(M.raw_uri, inst);
    assert_int_equal(fake_reg_calls(), 1);
    assert_string_equal(F.reg_peer, "127.0.0.1"); /* attributed by the connection's source */
    hreply_done(&r);

    fake_caller(0, "team-c");
    request_on(te_ns_port, "GET", "/metadata/instance/compute/vmId?api-version=2021-02-01", NULL,
               false, false, &r);
    assert_int_equal(r.status, 200);
    hreply_done(&r);

    /* Another namespace, a prefix of a listed one, an unknown caller, an ambiguous address, a
     * registration without a namespace: 403, and the node IMDS never sees the request. */
    static const struct {
        int code;
        const char *ns;
    } refused_callers[] = {
        {0, "team-b"},         {0, "team"},
        {0, "team-a-x"},       {0, ""},
        {-ENOENT, NULL},       {IDB_E_AMBIGUOUS_POD, NULL},
        {-EAFNOSUPPORT, NULL},
    };
    for (size_t i = 0; i < sizeof(refused_callers) / sizeof(refused_callers[0]); i++) {
        imds_answers(200, "application/json", "{\"compute\":{}}");
        fake_caller(refused_callers[i].code, refused_callers[i].ns);
        request_on(te_ns_port, "GET", inst, NULL, false, false, &r);
        expect(&r, 403, e403);
        assert_int_equal(M.calls, 0);
        assert_int_equal(fake_reg_calls(), 1);
        hreply_done(&r);
    }

    /* /metadata/versions has no list here: blocked for team-a too, without a lookup. */
    fake_caller(0, "team-a");
    request_on(te_ns_port, "GET", "/metadata/versions", NULL, false, false, &r);
    expect(&r, 403, e403);
    assert_int_equal(M.calls, 0);
    assert_int_equal(fake_reg_calls(), 0);
    hreply_done(&r);

    /* The checks before it still apply: no Metadata header is a 400, not a lookup. */
    request_on(te_ns_port, "GET", inst, NULL, true, false, &r);
    assert_int_equal(r.status, 400);
    assert_int_equal(fake_reg_calls(), 0);
    hreply_done(&r);

    /* "instance": true needs no attribution: every caller, even an unknown one. */
    fake_caller(-ENOENT, NULL);
    request_on(te_proxy_port, "GET", inst, NULL, false, false, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(fake_reg_calls(), 0);
    hreply_done(&r);
    /* Nothing configured: blocked without a lookup. */
    request("GET", inst, NULL, &r);
    expect(&r, 403, e403);
    assert_int_equal(fake_reg_calls(), 0);
    hreply_done(&r);
}

static void test_excepted_passthrough(void **state)
{
    (void)state;
    struct hreply r;
    fake_answers(IDB_E_EXCEPTED);
    imds_answers(200, "application/json; charset=utf-8", "{\"access_token\":\"node-token\"}");
    request("GET", TOK "/?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"access_token\":\"node-token\"}");
    assert_string_equal(r.cache_control, "no-store");
    assert_int_equal(M.calls, 1);
    /* The canonical token path, the query exactly as the pod sent it. */
    assert_string_equal(M.raw_uri,
                        TOK "?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net");
    assert_string_equal(M.metadata, "true");
    hreply_done(&r);

    /* Upstream refusals pass through as they are. */
    fake_answers(IDB_E_EXCEPTED);
    imds_answers(400, "application/json",
                 "{\"error\":\"invalid_request\",\"error_description\":\"Identity not found\"}");
    request("GET", GOOD, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body,
                        "{\"error\":\"invalid_request\",\"error_description\":\"Identity not "
                        "found\"}");
    hreply_done(&r);
}

static void test_upstream_down(void **state)
{
    (void)state;
    /* A token endpoint whose IMDS is a closed port. */
    unsigned port = free_port(), dead = free_port();
    char listen[64], imds[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
    snprintf(imds, sizeof(imds), "http://127.0.0.1:%u", dead);
    struct token_endpoint_options o = {
        .listen_host = listen, .proxy_instance = true, .imds_endpoint = imds};
    struct token_endpoint *t = token_endpoint_new((struct issuer *)&F, &o);
    assert_non_null(t);
    struct http_server *s = serve(port, token_endpoint_handle, t);
    assert_non_null(s);
    struct hreply r;
    request_on(port, "GET", "/metadata/instance?api-version=2021-02-01", NULL, false, false, &r);
    expect(&r, 502,
           "{\"error\":\"bad_gateway\",\"error_description\":\"The node's metadata service did not "
           "answer\"}");
    assert_string_equal(r.retry_after, "5"); /* the default */
    hreply_done(&r);
    fake_answers(IDB_E_EXCEPTED);
    request_on(port, "GET", GOOD, NULL, false, false, &r);
    assert_int_equal(r.status, 502);
    hreply_done(&r);
    http_server_stop(s);
    token_endpoint_free(t);
}

static void test_lifetime(void **state)
{
    (void)state;
    assert_null(token_endpoint_free(NULL));
    struct token_endpoint *t = token_endpoint_new(NULL, NULL);
    assert_non_null(t);
    t = token_endpoint_free(t);
    struct token_endpoint_options o = {.listen_host = "[FD00::1]:2579"};
    t = token_endpoint_new(NULL, &o);
    assert_non_null(t);
    token_endpoint_free(t);
    o.listen_host = "[fd00::1";
    assert_null(token_endpoint_new(NULL, &o));
}

/* The hand-built success body is valid JSON with every value a string, whatever bytes the values
 * hold: each escape class at every offset of the 8-byte word scan, and a long JWT-like token. */
static void test_render_escapes(void **state)
{
    (void)state;
    static const char *const specials[] = {"\"", "\\", "\x01", "\x1f", "/", "\xc3\xa9", " "};
    char tokbuf[2000];
    for (size_t i = 0; i < sizeof(tokbuf) - 1; i++)
        tokbuf[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."[i % 65];
    tokbuf[sizeof(tokbuf) - 1] = '\0';
    for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++)
        for (size_t off = 0; off < 19; off++) {
            char res[64];
            snprintf(res, sizeof(res), "%.*s%s%s", (int)off, "https://vault.azure.net/abcdefgh",
                     specials[k], "tail");
            struct tc_token t = {.access_token = off % 2 ? tokbuf : res,
                                 .expires_on = 2000,
                                 .not_before = 900,
                                 .issued_at = 1000};
            char *body = NULL;
            size_t len = 0;
            assert_int_equal(token_endpoint_render_token(&t, res, res, 1000, &body, &len), 0);
            assert_int_equal(len, strlen(body));
            struct json_object *o = json_tokener_parse(body);
            assert_non_null(o);
            assert_string_equal(json_object_get_string(json_object_object_get(o, "resource")), res);
            assert_string_equal(json_object_get_string(json_object_object_get(o, "client_id")),
                                res);
            assert_string_equal(json_object_get_string(json_object_object_get(o, "access_token")),
                                t.access_token);
            assert_string_equal(json_object_get_string(json_object_object_get(o, "expires_in")),
                                "1000");
            assert_string_equal(json_object_get_string(json_object_object_get(o, "token_type")),
                                "Bearer");
            assert_int_equal(json_object_object_length(o), 8);
            json_object_put(o);
            free(body);
        }
}

int main(void)
{
    const struct CMUnitTest parse[] = {
        cmocka_unit_test(test_parse_table),    cmocka_unit_test(test_parse_caps),
        cmocka_unit_test(test_api_versions),   cmocka_unit_test(test_lifetime),
        cmocka_unit_test(test_render_escapes),
    };
    const struct CMUnitTest served[] = {
        cmocka_unit_test(test_success),
        cmocka_unit_test(test_success_edges),
        cmocka_unit_test(test_issue_errors),
        cmocka_unit_test(test_target_errors),
        cmocka_unit_test(test_method),
        cmocka_unit_test(test_forwarded_and_host),
        cmocka_unit_test(test_metadata_header),
        cmocka_unit_test(test_query_errors),
        cmocka_unit_test(test_http_caps),
        cmocka_unit_test(test_blocked_paths),
        cmocka_unit_test(test_proxy_paths),
        cmocka_unit_test(test_proxy_namespaces),
        cmocka_unit_test(test_excepted_passthrough),
        cmocka_unit_test(test_upstream_down),
    };
    int r = cmocka_run_group_tests_name("parse", parse, NULL, NULL);
    r += cmocka_run_group_tests_name("served", served, setup, teardown);
    return r;
}
