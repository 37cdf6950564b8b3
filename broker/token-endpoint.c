/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The IMDS-compatible token endpoint (DESIGN §3; THREATS T6-T9). docs/http-api.md describes every
 * reply.
 *
 * Request targets are canonicalised once and classified by a pure function (fuzzed): anything that
 * is not in the one canonical form is rejected, never proxied. Only the token path is served; the
 * two other IMDS paths are blocked unless configured (for every caller, or for the pods of listed
 * namespaces), and then proxied to the node's IMDS. No reply is ever a fall-through to the real
 * IMDS, except the token request of a pod excepted by an AzurePodIdentityException (DESIGN §4),
 * which is what aad-pod-identity did too.
 */
#include "token-endpoint.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <idbroker/errno.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "curl-init.h"
#include "host-api.h"
#include "issuer.h"
#include "limits.h"
#include "metrics.h"
#include "registry.h"
#include "token-cache.h"

#define TOKEN_PATH "/metadata/identity/oauth2/token"
#define INSTANCE_PATH "/metadata/instance"
#define VERSIONS_PATH "/metadata/versions"
#define IMDS_ADDRESS "169.254.169.254"
#define DEFAULT_IMDS_ENDPOINT "http://169.254.169.254"
#define DEFAULT_RETRY_AFTER_S 5
#define JSON_CT "application/json; charset=utf-8"

/* Pass-through to the node's IMDS. */
#define PROXY_CONNECT_TIMEOUT_MS 2000
#define PROXY_TIMEOUT_MS 10000
#define PROXY_MAX_BODY_BYTES (1024 * 1024)
/* How long an excepted pod's token request waits for a slot of the node-wide IMDS limiter. */
#define PROXY_SLOT_WAIT_MS 5000

#define DESC_METADATA "Required metadata header not specified"
#define DESC_AUDIENCE "Required audience parameter not specified"
#define DESC_IDENTITY_NOT_FOUND "Identity not found"
#define DESC_MULTIPLE                                                                              \
    "Multiple user assigned identities exist, please specify the clientId / resourceId of the "    \
    "identity in the token request"
#define API_VERSION_MISSING                                                                        \
    "Bad request. api-version was not specified in the request. For more information refer to "    \
    "aka.ms/azureimds"
#define API_VERSION_INVALID                                                                        \
    "Bad request. api-version is invalid or was not specified in the request. For more "           \
    "information refer to aka.ms/azureimds"

/* api-versions IMDS has published, oldest first; identity tokens need 2018-02-01 or later. */
static const char *const api_versions[] = {
    "2018-02-01", "2018-04-02", "2018-10-01", "2019-02-01", "2019-03-11", "2019-04-30",
    "2019-06-01", "2019-06-04", "2019-08-01", "2019-08-15", "2019-11-01", "2020-06-01",
    "2020-07-15", "2020-09-01", "2020-10-01", "2020-12-01", "2021-01-01", "2021-02-01",
    "2021-03-01", "2021-05-01", "2021-08-01", "2021-10-01", "2021-11-01", "2021-11-15",
    "2021-12-13", "2023-07-01", "2023-11-15", "2024-03-15", "2024-07-17", "2025-04-07",
};
#define N_API_VERSIONS (sizeof(api_versions) / sizeof(api_versions[0]))
#define N_NEWEST_VERSIONS 3

/* Who may reach one of the other IMDS paths. */
struct proxy_allow {
    bool all;
    char **namespaces; /* the pods of these namespaces, when !all */
    size_t n;
};

struct token_endpoint {
    struct issuer *is;
    char *listen_host; /* host part of the listen address, lower case ("[v6]" bracketed) */
    char *listen_port; /* its port, NULL if none was given */
    struct proxy_allow instance, versions;
    char *imds_endpoint; /* no trailing '/' */
    uint32_t retry_after_s;
};

/* ---- request target (pure) ---- */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Characters a canonical path may hold after decoding: RFC 3986 pchar without ';' (params), '%'
 * (a second decoding layer) and anything outside printable ASCII. */
static bool path_char_ok(unsigned char c)
{
    return isalnum(c) || (c && strchr("-._~/!$&'()*+,=:@", c));
}

/* Raw query bytes we are willing to pass through to an upstream URL unchanged. */
static bool query_char_ok(unsigned char c)
{
    return isalnum(c) || (c && strchr("-._~!$&'()*+,;=:@/?%", c));
}

/* Decodes the raw path once. Returns 0 with *ret (new) or -EINVAL for: a bad or encoded '/' escape,
 * a decoded byte outside path_char_ok. */
static int decode_path(const char *raw, size_t len, char **ret)
{
    _cleanup_free_ char *out = malloc(len + 1);
    if (!out)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c == '%') {
            if (len - i < 3)
                return -EINVAL;
            int h = hexval((unsigned char)raw[i + 1]), l = hexval((unsigned char)raw[i + 2]);
            if (h < 0 || l < 0)
                return -EINVAL;
            c = (unsigned char)(h * 16 + l);
            if (c == '/')
                return -EINVAL; /* an encoded separator would change the segment structure */
            i += 2;
        }
        if (!path_char_ok(c))
            return -EINVAL;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    *ret = TAKE_PTR(out);
    return 0;
}

/* Rejects "//", "." and ".." segments; the path must be absolute. */
static bool path_canonical(const char *p)
{
    if (p[0] != '/')
        return false;
    if (strstr(p, "//"))
        return false;
    for (const char *seg = p + 1;; seg++) {
        const char *end = strchr(seg, '/');
        size_t n = end ? (size_t)(end - seg) : strlen(seg);
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        if (!end)
            return true;
        seg = end;
    }
}

static enum te_route classify(const char *path, char **ret_canonical)
{
    size_t n = strlen(path);
    /* One trailing slash is accepted (AZURE_POD_IDENTITY_AUTHORITY_HOST clients send it). */
    size_t m = n > 1 && path[n - 1] == '/' ? n - 1 : n;

    if (m == strlen(TOKEN_PATH) && strncasecmp(path, TOKEN_PATH, m) == 0) {
        *ret_canonical = strdup(TOKEN_PATH);
        return TE_ROUTE_TOKEN;
    }
    if (m == strlen(VERSIONS_PATH) && strncasecmp(path, VERSIONS_PATH, m) == 0) {
        *ret_canonical = strdup(VERSIONS_PATH);
        return TE_ROUTE_VERSIONS;
    }
    size_t il = strlen(INSTANCE_PATH);
    if (n >= il && strncasecmp(path, INSTANCE_PATH, il) == 0 && (n == il || path[il] == '/')) {
        /* The prefix in its canonical case; the rest as decoded (IMDS' own paths below it). */
        char *c = strdup(path);
        if (c)
            memcpy(c, INSTANCE_PATH, il);
        *ret_canonical = c;
        return TE_ROUTE_INSTANCE;
    }
    *ret_canonical = strdup(path);
    return TE_ROUTE_NOT_FOUND;
}

enum qkey {
    K_RESOURCE,
    K_API_VERSION,
    K_CLIENT_ID,
    K_OBJECT_ID,
    K_PRINCIPAL_ID,
    K_MSI_RES_ID,
    K_MI_RES_ID,
    K_BYPASS_CACHE,
    _K_MAX,
};

/* Keys are case-sensitive, as IMDS' are. */
static const char *const qkey_names[_K_MAX] = {
    [K_RESOURCE] = "resource",   [K_API_VERSION] = "api-version",   [K_CLIENT_ID] = "client_id",
    [K_OBJECT_ID] = "object_id", [K_PRINCIPAL_ID] = "principal_id", [K_MSI_RES_ID] = "msi_res_id",
    [K_MI_RES_ID] = "mi_res_id", [K_BYPASS_CACHE] = "bypass_cache",
};

static const enum selector_kind qkey_selector[_K_MAX] = {
    [K_CLIENT_ID] = SELECTOR_CLIENT_ID,    [K_OBJECT_ID] = SELECTOR_OBJECT_ID,
    [K_PRINCIPAL_ID] = SELECTOR_OBJECT_ID, [K_MSI_RES_ID] = SELECTOR_RESOURCE_ID,
    [K_MI_RES_ID] = SELECTOR_RESOURCE_ID,
};

/* Form-decodes s[0..len) ('+' is a space) into a new string of at most max bytes. Returns -EINVAL
 * on a bad escape, a NUL or other control character or invalid UTF-8; -E2BIG past max. */
static int decode_component(const char *s, size_t len, size_t max, char **ret)
{
    _cleanup_free_ char *out = malloc(len + 1);
    if (!out)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (len - i < 3)
                return -EINVAL;
            int h = hexval((unsigned char)s[i + 1]), l = hexval((unsigned char)s[i + 2]);
            if (h < 0 || l < 0)
                return -EINVAL;
            c = (unsigned char)(h * 16 + l);
            i += 2;
        }
        if (c < 0x20 || c == 0x7f)
            return -EINVAL;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    if (n > max)
        return -E2BIG;

    /* Strict UTF-8: the value may be echoed in a JSON reply. */
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)out[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3, cp = c & 0x07;
        } else {
            return -EINVAL;
        }
        if (n - i <= k)
            return -EINVAL;
        for (size_t j = 1; j <= k; j++) {
            unsigned char cc = (unsigned char)out[i + j];
            if ((cc & 0xc0) != 0x80)
                return -EINVAL;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return -EINVAL;
        i += k + 1;
    }
    *ret = TAKE_PTR(out);
    return 0;
}

struct qvalues {
    char *v[_K_MAX];
};

static void qvalues_done(struct qvalues *q)
{
    for (int i = 0; i < _K_MAX; i++)
        free(q->v[i]);
}

/* Parses the token request's query. Returns 0 with *q filled, or < 0 with *ret_desc (new). */
static int parse_query(const char *query, struct qvalues *q, char **ret_desc)
{
    unsigned count = 0;
    for (const char *p = query; *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *piece = p;
        p = amp ? amp + 1 : p + len;
        if (len == 0)
            continue;
        if (++count > HTTP_MAX_QUERY_PARAMS) {
            *ret_desc =
                strdup_printf("Too many query parameters (at most %d)", HTTP_MAX_QUERY_PARAMS);
            return -EINVAL;
        }
        const char *eq = memchr(piece, '=', len);
        size_t klen = eq ? (size_t)(eq - piece) : len;
        _cleanup_free_ char *key = NULL;
        int r = decode_component(piece, klen, HTTP_MAX_PARAM_BYTES, &key);
        if (r == -ENOMEM)
            return r;
        if (r < 0) {
            *ret_desc = strdup_printf("Malformed query parameter name");
            return -EINVAL;
        }
        int k;
        for (k = 0; k < _K_MAX; k++)
            if (streq(key, qkey_names[k]))
                break;
        if (k == _K_MAX)
            continue; /* unknown keys are ignored, as IMDS does */
        if (q->v[k]) {
            *ret_desc = strdup_printf("Duplicate query parameter '%s'", qkey_names[k]);
            return -EINVAL;
        }
        const char *val = eq ? eq + 1 : piece + len;
        size_t vlen = eq ? len - klen - 1 : 0;
        r = decode_component(val, vlen, HTTP_MAX_PARAM_BYTES, &q->v[k]);
        if (r == -ENOMEM)
            return r;
        if (r == -E2BIG) {
            *ret_desc = strdup_printf("Query parameter '%s' is too long (at most %d bytes)",
                                      qkey_names[k], HTTP_MAX_PARAM_BYTES);
            return -EINVAL;
        }
        if (r < 0) {
            *ret_desc = strdup_printf("Invalid encoding in query parameter '%s'", qkey_names[k]);
            return -EINVAL;
        }
    }

    int n_sel = 0;
    for (int k = 0; k < _K_MAX; k++)
        if (qkey_selector[k] != SELECTOR_NONE && q->v[k] && q->v[k][0])
            n_sel++;
    if (n_sel > 1) {
        *ret_desc = strdup_printf("Only one of client_id, object_id (principal_id), msi_res_id or "
                                  "mi_res_id may be specified");
        return -EINVAL;
    }
    return 0;
}

void te_query_done(struct te_query *q)
{
    if (!q)
        return;
    free(q->resource);
    free(q->api_version);
    free(q->sel_value);
    free(q->path);
    free(q->query);
    memset(q, 0, sizeof(*q));
}

static char *take_nonempty(char **p)
{
    if (*p && !**p) {
        free(*p);
        *p = NULL;
    }
    return TAKE_PTR(*p);
}

int token_endpoint_parse_target(const char *raw_uri, enum te_route *ret_route,
                                struct te_query *ret_q, char **ret_desc)
{
    if (!raw_uri || !ret_route || !ret_q || !ret_desc)
        return -EINVAL;

    struct te_query q = {0};
    _cleanup_free_ char *path = NULL; /* before the first goto: the cleanup must see it set */
    size_t raw_len = strlen(raw_uri);
    const char *qm = strchr(raw_uri, '?');
    size_t path_len = qm ? (size_t)(qm - raw_uri) : raw_len;
    q.has_query = qm != NULL;

    /* Fragments never reach a server from a real client; absolute-form, asterisk-form and over-long
     * targets are not ours either. */
    if (raw_len > HTTP_MAX_URI_BYTES || strchr(raw_uri, '#') || raw_uri[0] != '/')
        goto rejected;
    if (qm) {
        for (const char *p = qm + 1; *p; p++) {
            if (!query_char_ok((unsigned char)*p))
                goto rejected;
            if (*p == '%' && (hexval((unsigned char)p[1]) < 0 || hexval((unsigned char)p[2]) < 0))
                goto rejected;
        }
    }

    int r = decode_path(raw_uri, path_len, &path);
    if (r == -ENOMEM)
        return r;
    if (r < 0 || !path_canonical(path))
        goto rejected;

    enum te_route route = classify(path, &q.path);
    if (!q.path)
        return -ENOMEM;
    if (qm) {
        q.query = strdup(qm + 1);
        if (!q.query) {
            te_query_done(&q);
            return -ENOMEM;
        }
    }

    /* Only the token request's query is ours to interpret; the others are passed through as sent.
     */
    if (route == TE_ROUTE_TOKEN && qm) {
        struct qvalues v = {0};
        char *desc = NULL;
        r = parse_query(qm + 1, &v, &desc);
        if (r < 0) {
            qvalues_done(&v);
            te_query_done(&q);
            if (r == -ENOMEM || !desc) {
                free(desc);
                return -ENOMEM;
            }
            *ret_desc = desc;
            return r;
        }
        q.resource = take_nonempty(&v.v[K_RESOURCE]);
        q.api_version = take_nonempty(&v.v[K_API_VERSION]);
        for (int k = 0; k < _K_MAX; k++) {
            if (qkey_selector[k] == SELECTOR_NONE)
                continue;
            char *s = take_nonempty(&v.v[k]);
            if (s) {
                q.sel = qkey_selector[k];
                q.sel_value = s;
            }
        }
        q.bypass_cache = v.v[K_BYPASS_CACHE] && strcasecmp(v.v[K_BYPASS_CACHE], "true") == 0;
        qvalues_done(&v);
    }
    *ret_route = route;
    *ret_q = q;
    return 0;

rejected:
    *ret_route = TE_ROUTE_REJECTED;
    *ret_q = q;
    return 0;
}

bool token_endpoint_api_version_valid(const char *v)
{
    if (!v)
        return false;
    for (size_t i = 0; i < N_API_VERSIONS; i++)
        if (streq(v, api_versions[i]))
            return true;
    return false;
}

/* ---- replies ---- */

static const char *json_text(struct json_object *o)
{
    return json_object_to_json_string_ext(o,
                                          JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

static void reply_json_obj(struct http_response *resp, int status, struct json_object *o)
{
    const char *text = o ? json_text(o) : NULL;
    if (!text || http_response_json(resp, status, text) < 0) {
        resp->status = 500; /* out of memory: an empty 500 is the best left */
        resp->body = NULL;
        resp->body_len = 0;
    }
}

/* {"error": error, "error_description": desc} with status. */
static void reply_error(struct http_response *resp, int status, const char *error, const char *desc)
{
    _cleanup_json_ struct json_object *o = json_object_new_object();
    if (o) {
        json_object_object_add(o, "error", json_object_new_string(error));
        json_object_object_add(o, "error_description", json_object_new_string(desc));
    }
    reply_json_obj(resp, status, o);
}

static void reply_api_version(struct http_response *resp, bool missing)
{
    _cleanup_json_ struct json_object *o = json_object_new_object();
    if (o) {
        json_object_object_add(
            o, "error",
            json_object_new_string(missing ? API_VERSION_MISSING : API_VERSION_INVALID));
        struct json_object *a = json_object_new_array();
        for (size_t i = 0; a && i < N_NEWEST_VERSIONS; i++)
            json_object_array_add(a, json_object_new_string(api_versions[N_API_VERSIONS - 1 - i]));
        json_object_object_add(o, "newest-versions", a);
    }
    reply_json_obj(resp, 400, o);
}

/*
 * The success body, built by hand into one exactly-sized buffer: it carries the access token, and a
 * JSON library's growing buffers would leave unwiped copies behind. Every value is a JSON string,
 * in IMDS' key order.
 */
int token_endpoint_render_token(const struct tc_token *t, const char *client_id,
                                const char *resource, uint64_t now, char **ret, size_t *ret_len)
{
    uint64_t expires_in = t->expires_on > now ? t->expires_on - now : 0;
    uint64_t ext = expires_in;
    if (t->ext_expires_in) {
        uint64_t ext_abs = (t->issued_at ? t->issued_at : now) + t->ext_expires_in;
        ext = ext_abs > now ? ext_abs - now : 0;
        if (ext < expires_in)
            ext = expires_in;
    }
    uint64_t nbf = t->not_before ? t->not_before : t->issued_at ? t->issued_at : now;

    char nums[4][24];
    snprintf(nums[0], sizeof(nums[0]), "%llu", (unsigned long long)expires_in);
    snprintf(nums[1], sizeof(nums[1]), "%llu", (unsigned long long)t->expires_on);
    snprintf(nums[2], sizeof(nums[2]), "%llu", (unsigned long long)ext);
    snprintf(nums[3], sizeof(nums[3]), "%llu", (unsigned long long)nbf);

    /* The keys need no escaping; each is written with its quotes and colon. */
    static const char *const keys[] = {"{\"access_token\":\"",     "\",\"client_id\":\"",
                                       "\",\"expires_in\":\"",     "\",\"expires_on\":\"",
                                       "\",\"ext_expires_in\":\"", "\",\"not_before\":\"",
                                       "\",\"resource\":\"",       "\",\"token_type\":\""};
    const char *vals[] = {t->access_token ? t->access_token : "",
                          client_id ? client_id : "",
                          nums[0],
                          nums[1],
                          nums[2],
                          nums[3],
                          resource ? resource : "",
                          "Bearer"};
    size_t len[ELEMENTSOF(vals)], esc[ELEMENTSOF(vals)];
    size_t total = 2; /* "} */
    for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
        esc[i] = json_escaped_len(vals[i], &len[i]);
        total += strlen(keys[i]) + esc[i];
    }

    char *body = malloc(total + 1);
    if (!body)
        return -ENOMEM;
    char *p = body;
    for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
        size_t kl = strlen(keys[i]);
        memcpy(p, keys[i], kl);
        p += kl;
        p = json_escape_to(p, vals[i], len[i], esc[i]);
    }
    memcpy(p, "\"}", 2);
    p += 2;
    *p = '\0';
    *ret = body;
    *ret_len = (size_t)(p - body);
    return 0;
}

/* ---- pass-through to the node's IMDS ---- */

/* A capped buffer that wipes what it leaves behind when it grows (it may hold a token). */
struct sink {
    char *p;
    size_t len, alloc;
    bool too_big;
};

static size_t sink_write(char *data, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t n = size * nmemb;
    if (n > PROXY_MAX_BODY_BYTES - s->len) {
        s->too_big = true;
        return 0;
    }
    if (s->len + n + 1 > s->alloc) {
        size_t a = s->alloc ? s->alloc : 4096;
        while (a < s->len + n + 1)
            a *= 2;
        char *np = malloc(a);
        if (!np)
            return 0;
        if (s->p) {
            memcpy(np, s->p, s->len);
            explicit_bzero(s->p, s->alloc);
            free(s->p);
        }
        s->p = np;
        s->alloc = a;
    }
    memcpy(s->p + s->len, data, n);
    s->len += n;
    s->p[s->len] = '\0';
    return n;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    uint32_t *retry_after = ud;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n > sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0) {
        uint32_t v = 0;
        size_t i = sizeof(name) - 1;
        while (i < n && data[i] == ' ')
            i++;
        for (; i < n && data[i] >= '0' && data[i] <= '9' && v < 86400; i++)
            v = v * 10 + (uint32_t)(data[i] - '0');
        *retry_after = v;
    }
    return n;
}

/* The upstream content type mapped to a static string (the response holds static strings only). */
static const char *static_content_type(const char *ct)
{
    if (!ct)
        return NULL;
    if (strncasecmp(ct, "application/json", 16) == 0)
        return JSON_CT;
    if (strncasecmp(ct, "text/plain", 10) == 0)
        return "text/plain; charset=utf-8";
    if (strncasecmp(ct, "text/html", 9) == 0)
        return "text/html; charset=utf-8";
    return "application/octet-stream";
}

static void sink_wipe(struct sink *s)
{
    if (s->p) {
        explicit_bzero(s->p, s->alloc);
        free(s->p);
    }
    memset(s, 0, sizeof(*s));
}

/* GET imds_endpoint + path [+ '?' + query] with Metadata: true; the reply is passed through
 * (status, body, content type, Retry-After). Failures to reach it are 502 with Retry-After. */
static void proxy(const struct token_endpoint *te, const char *path, const char *query, bool secret,
                  struct http_response *resp)
{
    char *url = NULL;
    if (asprintf(&url, "%s%s%s%s", te->imds_endpoint, path, query ? "?" : "", query ? query : "") <
        0) {
        reply_error(resp, 500, "server_error", "Out of memory");
        return;
    }

    CURL *c = curl_init_once() < 0 ? NULL : curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Metadata: true");
    struct sink body = {0};
    uint32_t upstream_retry_after = 0;
    if (!c || !hdrs) {
        reply_error(resp, 500, "server_error", "Out of memory");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)PROXY_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)PROXY_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &upstream_retry_after);

    CURLcode cr = curl_easy_perform(c);
    long status = 0;
    char *ct = NULL;
    if (cr == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    }
    if (cr != CURLE_OK || status < 100 || status > 599) {
        log_debug("token-endpoint: pass-through to '%s%s' failed: %s", te->imds_endpoint, path,
                  body.too_big ? "reply too large" : curl_easy_strerror(cr));
        reply_error(resp, 502, "bad_gateway", "The node's metadata service did not answer");
        resp->retry_after_s = te->retry_after_s;
        goto out;
    }

    resp->status = (int)status;
    resp->content_type = static_content_type(ct);
    resp->secret = secret;
    resp->retry_after_s = upstream_retry_after;
    if (body.p) {
        /* Hand over an exactly-sized copy and wipe the sink, so the only copy left is the body. */
        resp->body = malloc(body.len + 1);
        if (!resp->body) {
            reply_error(resp, 500, "server_error", "Out of memory");
            goto out;
        }
        memcpy(resp->body, body.p, body.len + 1);
        resp->body_len = body.len;
    }
out:
    sink_wipe(&body);
    curl_slist_free_all(hdrs);
    if (c)
        curl_easy_cleanup(c);
    free(url);
}

/*
 * The token request of an AzurePodIdentityException pod, passed through to the node's IMDS within
 * the same node-wide limits as the azure-msi provider's own requests: it takes a slot of the host's
 * IDB_UPSTREAM_IMDS limiter (whose limits azure-msi sets from its configuration). No slot within
 * PROXY_SLOT_WAIT_MS is a 429 with Retry-After, as IMDS itself would answer. Without the host API's
 * limiters (unit tests) the request goes through unlimited.
 */
static void proxy_excepted(const struct token_endpoint *te, const char *query,
                           struct http_response *resp)
{
    uint32_t hint_ms = 0;
    int r = host_api_upstream_acquire(IDB_UPSTREAM_IMDS, now_monotonic_ms() + PROXY_SLOT_WAIT_MS,
                                      &hint_ms);
    if (r == -EAGAIN) {
        log_debug("token-endpoint: no IMDS slot for an excepted pod within %d ms",
                  PROXY_SLOT_WAIT_MS);
        reply_error(resp, 429, "too_many_requests", "Too many token requests, retry later");
        resp->retry_after_s = hint_ms / 1000 + 1;
        return;
    }
    proxy(te, TOKEN_PATH, query, true, resp);
    if (r == 0)
        host_api_upstream_release(IDB_UPSTREAM_IMDS);
}

/* ---- the handler ---- */

/* Host must name the metadata address or the broker's own listen address, each with or without the
 * port it is served on (THREATS T7). */
static bool host_allowed(const struct token_endpoint *te, const char *host)
{
    if (strcasecmp(host, IMDS_ADDRESS) == 0 || strcasecmp(host, IMDS_ADDRESS ":80") == 0)
        return true;
    if (!te->listen_host)
        return false;
    size_t hl = strlen(te->listen_host);
    if (strncasecmp(host, te->listen_host, hl) != 0)
        return false;
    const char *rest = host + hl;
    if (!*rest)
        return true;
    if (*rest != ':' || !rest[1])
        return false;
    if (te->listen_port)
        return streq(rest + 1, te->listen_port);
    for (const char *p = rest + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* Whether the caller may reach a proxied path: every caller, or a pod registered in a listed
 * namespace. The pod is found as the token path finds it (THREATS T8); an unknown caller is not
 * allowed. */
static bool proxy_allowed(const struct token_endpoint *te, const struct proxy_allow *a,
                          const struct http_request *req)
{
    if (a->all)
        return true;
    if (a->n == 0 || !te->is)
        return false;
    struct registration reg;
    int r = issuer_peer_registration(te->is, req->peer, req->peer_len, &reg);
    if (r < 0) {
        log_debug("token-endpoint: '%s' refused: the caller is not a pod of this node: %s",
                  req->raw_uri, idb_strerror(r));
        return false;
    }
    for (size_t i = 0; i < a->n; i++)
        if (streq(a->namespaces[i], reg.pod_namespace))
            return true;
    log_debug("token-endpoint: '%s' refused for pod %s/%s: its namespace is not allowed",
              req->raw_uri, reg.pod_namespace, reg.pod_name);
    return false;
}

static bool json_is_object_text(const char *s)
{
    if (!s)
        return false;
    _cleanup_json_ struct json_object *o = json_tokener_parse(s);
    return o && json_object_is_type(o, json_type_object);
}

static uint32_t retry_after(const struct token_endpoint *te, const struct issue_result *res)
{
    return res->retry_after_s ? res->retry_after_s : te->retry_after_s;
}

static void reply_issue(struct token_endpoint *te, const struct http_request *req,
                        const struct te_query *q, struct http_response *resp)
{
    struct issue_request ir = {
        .resource = q->resource,
        .sel = q->sel,
        .sel_value = q->sel_value,
        .bypass_cache = q->bypass_cache,
        .nowait = !req->may_block,
    };
    struct issue_result res;
    memset(&res, 0, sizeof(res));
    issuer_issue_for_peer(te->is, req->peer, req->peer_len, &ir, &res);
    if (res.would_block) {
        issuer_result_done(te->is, &res);
        resp->defer = true;
        return;
    }

    switch (res.code) {
    case 0: {
        if (!res.token || !res.token->access_token || !res.token->access_token[0]) {
            reply_error(resp, 500, "server_error", "The token could not be issued");
            break;
        }
        const char *cid = res.client_id[0] ? res.client_id : res.token->client_id;
        char *body = NULL;
        size_t len = 0;
        if (token_endpoint_render_token(res.token, cid, q->resource, (uint64_t)time(NULL), &body,
                                        &len) < 0) {
            reply_error(resp, 500, "server_error", "Out of memory");
            break;
        }
        resp->status = 200;
        resp->content_type = JSON_CT;
        resp->body = body;
        resp->body_len = len;
        resp->secret = true;
        break;
    }
    case IDB_E_UNKNOWN_POD:
        reply_error(resp, 403, "forbidden",
                    "The caller is not a pod registered with idbroker on this node");
        break;
    case IDB_E_NODE_CALLER:
        reply_error(resp, 403, "forbidden",
                    "The caller is an address of the node itself: hostNetwork pods and node "
                    "processes share the node's identity and get no pod identity from idbroker");
        break;
    case IDB_E_NO_BINDING:
    case IDB_E_IDENTITY_NOT_FOUND:
        reply_error(resp, 400, "invalid_request", DESC_IDENTITY_NOT_FOUND);
        break;
    case IDB_E_MULTIPLE_IDENTITIES:
        reply_error(resp, 400, "invalid_request", DESC_MULTIPLE);
        break;
    case IDB_E_NOT_SYNCED:
        reply_error(resp, 503, "service_unavailable",
                    "Identity data for this pod is not available yet, retry later");
        resp->retry_after_s = retry_after(te, &res);
        break;
    case IDB_E_AMBIGUOUS_POD:
        reply_error(resp, 503, "service_unavailable",
                    "The caller's address is claimed by more than one pod, retry later");
        resp->retry_after_s = retry_after(te, &res);
        break;
    case IDB_E_PROVIDER_TIMEOUT:
    case IDB_E_UPSTREAM_UNAVAILABLE:
        reply_error(resp, 503, "service_unavailable",
                    "The identity provider is unavailable, retry later");
        resp->retry_after_s = retry_after(te, &res);
        break;
    case IDB_E_UPSTREAM_BAD_REPLY:
        reply_error(resp, 502, "bad_gateway", "The identity provider sent an invalid reply");
        resp->retry_after_s = retry_after(te, &res);
        break;
    case IDB_E_RATE_LIMITED:
        reply_error(resp, 429, "too_many_requests", "Too many token requests, retry later");
        resp->retry_after_s = retry_after(te, &res);
        break;
    case IDB_E_UPSTREAM_4XX: {
        int status = res.upstream_status >= 400 && res.upstream_status <= 499
                         ? (int)res.upstream_status
                         : 502;
        if (status != 502 && json_is_object_text(res.upstream_error)) {
            _cleanup_json_ struct json_object *o = json_tokener_parse(res.upstream_error);
            reply_json_obj(resp, status, o);
        } else if (status != 502) {
            reply_error(resp, status, "invalid_request",
                        "The identity provider refused the token request");
        } else {
            reply_error(resp, 502, "bad_gateway", "The identity provider sent an invalid reply");
        }
        if (res.retry_after_s || status == 429 || status == 502)
            resp->retry_after_s = retry_after(te, &res);
        break;
    }
    case IDB_E_EXCEPTED:
        proxy_excepted(te, q->query, resp);
        break;
    default:
        log_debug("token-endpoint: issue failed: %s", idb_strerror(res.code));
        reply_error(resp, 500, "server_error", "The token could not be issued");
        break;
    }
    issuer_result_done(te->is, &res);
}

static void handle(struct token_endpoint *te, const struct http_request *req,
                   struct http_response *resp)
{
    enum te_route route;
    struct te_query q = {0};
    char *desc = NULL;

    /* (1) the request target */
    int r = token_endpoint_parse_target(req->raw_uri, &route, &q, &desc);
    if (r < 0) {
        if (desc)
            reply_error(resp, 400, "invalid_request", desc);
        else
            reply_error(resp, 500, "server_error", "Out of memory");
        free(desc);
        return;
    }
    if (route == TE_ROUTE_REJECTED) {
        reply_error(resp, 400, "invalid_request", "The request URI is not in canonical form");
        goto out;
    }
    if (route == TE_ROUTE_NOT_FOUND) {
        reply_error(resp, 404, "not_found", "No such endpoint");
        goto out;
    }

    /* (2) method */
    if (!req->method || !streq(req->method, "GET")) {
        reply_error(resp, 405, "invalid_request", "Only GET is allowed");
        resp->allow = "GET";
        goto out;
    }

    /* (3) SSRF defence: a forwarded request is never a pod's own */
    if (http_request_header_count(req, "X-Forwarded-For") > 0 ||
        http_request_header_count(req, "Forwarded") > 0) {
        reply_error(resp, 400, "invalid_request",
                    "Requests with X-Forwarded-For or Forwarded headers are not accepted");
        goto out;
    }

    /* (4) Host */
    const char *host = http_request_header(req, "Host");
    if (host && !host_allowed(te, host)) {
        reply_error(resp, 403, "forbidden", "Host not allowed");
        goto out;
    }

    /* (5) DefaultAzureCredential's probe, and (6) the Metadata header */
    unsigned n_meta = http_request_header_count(req, "Metadata");
    const char *meta = http_request_header(req, "Metadata");
    if ((route == TE_ROUTE_TOKEN && !q.has_query && n_meta == 0) || n_meta != 1 || !meta ||
        strcasecmp(meta, "true") != 0) {
        reply_error(resp, 400, "invalid_request", DESC_METADATA);
        goto out;
    }

    /* (7) the other IMDS paths */
    if (route == TE_ROUTE_INSTANCE || route == TE_ROUTE_VERSIONS) {
        const struct proxy_allow *a = route == TE_ROUTE_INSTANCE ? &te->instance : &te->versions;
        if (!proxy_allowed(te, a, req))
            reply_error(resp, 403, "forbidden",
                        "This metadata endpoint is blocked by idbroker on this node");
        else if (!req->may_block)
            resp->defer = true; /* the node's IMDS is waited for */
        else
            proxy(te, q.path, q.query, false, resp);
        goto out;
    }

    /* (8) api-version, (9) resource */
    if (!q.api_version || !token_endpoint_api_version_valid(q.api_version)) {
        reply_api_version(resp, !q.api_version);
        goto out;
    }
    if (!q.resource) {
        reply_error(resp, 400, "invalid_request", DESC_AUDIENCE);
        goto out;
    }

    /* (10) the token */
    reply_issue(te, req, &q, resp);
out:
    te_query_done(&q);
}

void token_endpoint_handle(void *ud, const struct http_request *req, struct http_response *resp)
{
    struct token_endpoint *te = ud;
    if (!te || !req || !resp) {
        if (resp)
            resp->status = 500;
        return;
    }
    handle(te, req, resp);
    if (resp->defer)
        return; /* answered (and counted) by the second call */
    if (resp->status == 0)
        resp->status = 500;
    metrics_http_status(resp->status);
}

/* ---- lifetime ---- */

/* Splits "IP:PORT", "[V6]:PORT", "IP" or "[V6]" into a lower-case host (brackets kept) and port. */
static int split_listen(const char *listen, char **ret_host, char **ret_port)
{
    const char *port = NULL;
    size_t hl;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close)
            return -EINVAL;
        hl = (size_t)(close - listen) + 1;
        if (close[1] == ':')
            port = close + 2;
        else if (close[1])
            return -EINVAL;
    } else {
        const char *colon = strchr(listen, ':');
        if (colon && strchr(colon + 1, ':')) {
            hl = strlen(listen); /* a bare IPv6 address: Host needs brackets, so it never matches */
        } else {
            hl = colon ? (size_t)(colon - listen) : strlen(listen);
            port = colon ? colon + 1 : NULL;
        }
    }
    _cleanup_free_ char *h = strndup(listen, hl);
    _cleanup_free_ char *p = port && *port ? strdup(port) : NULL;
    if (!h || (port && *port && !p))
        return -ENOMEM;
    for (char *c = h; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    *ret_host = TAKE_PTR(h);
    *ret_port = TAKE_PTR(p);
    return 0;
}

static void allow_done(struct proxy_allow *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->namespaces[i]);
    free(a->namespaces);
    memset(a, 0, sizeof(*a));
}

static int allow_init(struct proxy_allow *a, bool all, char *const *namespaces, size_t n)
{
    a->all = all;
    if (all || n == 0 || !namespaces)
        return 0;
    a->namespaces = calloc(n, sizeof(*a->namespaces));
    if (!a->namespaces)
        return -ENOMEM;
    for (; a->n < n; a->n++) {
        a->namespaces[a->n] = strdup(namespaces[a->n]);
        if (!a->namespaces[a->n])
            return -ENOMEM;
    }
    return 0;
}

/* Frees what token_endpoint_new() set up, and the struct. */
static void te_free(struct token_endpoint *te)
{
    free(te->listen_host);
    free(te->listen_port);
    free(te->imds_endpoint);
    allow_done(&te->instance);
    allow_done(&te->versions);
    free(te);
}

struct token_endpoint *token_endpoint_new(struct issuer *is, const struct token_endpoint_options *o)
{
    struct token_endpoint *te = calloc(1, sizeof(*te));
    if (!te)
        return NULL;
    te->is = is;
    te->retry_after_s = o && o->retry_after_s ? o->retry_after_s : DEFAULT_RETRY_AFTER_S;
    if (o && (allow_init(&te->instance, o->proxy_instance, o->instance_namespaces,
                         o->n_instance_namespaces) < 0 ||
              allow_init(&te->versions, o->proxy_versions, o->versions_namespaces,
                         o->n_versions_namespaces) < 0))
        goto fail;

    const char *ep =
        o && o->imds_endpoint && *o->imds_endpoint ? o->imds_endpoint : DEFAULT_IMDS_ENDPOINT;
    size_t el = strlen(ep);
    while (el > 0 && ep[el - 1] == '/')
        el--;
    te->imds_endpoint = strndup(ep, el);
    if (!te->imds_endpoint)
        goto fail;
    if (o && o->listen_host && *o->listen_host &&
        split_listen(o->listen_host, &te->listen_host, &te->listen_port) < 0)
        goto fail;
    return te;
fail:
    te_free(te);
    return NULL;
}

struct token_endpoint *token_endpoint_free(struct token_endpoint *te)
{
    if (!te)
        return NULL;
    te_free(te);
    return NULL;
}
