/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The keyvault provider: tokens for service principals (AzureIdentity types 1 and 2) whose client
 * secret or certificate lives in Azure Key Vault. It opens the vault with a token of the node's
 * own identity, asked of another provider through host->issue_via (azure-msi by default), reads
 * the credential, and performs the Entra ID client-credentials grant for the pod. The pod never
 * sees the credential. See README.md in this folder for the configuration and the mapping from an
 * AzureIdentity to its Key Vault secret.
 *
 * Threads: the configuration is read-only after init(); the credential cache is guarded by a
 * mutex and hands out references (struct cred is reference-counted), so issue() may run on many
 * threads. Nothing secret (client secrets, keys, assertions, tokens) is ever logged or put in an
 * error description; buffers that held one are wiped before they are freed.
 */
#include <errno.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <idbroker/provider.h>

#include <idbroker-internal/macro.h>

#include "cred.h"
#include "entra.h"
#include "kv-parse.h"

#define KV_NAME "keyvault"
#define KV_ANNOTATION_SECRET "idbroker.io/keyvault-secret"
#define KV_ANNOTATION_PASSWORD "idbroker.io/keyvault-password-secret"
#define KV_DEFAULT_BOOTSTRAP "azure-msi"
#define KV_DEFAULT_AUTHORITY "https://login.microsoftonline.com"
#define KV_DEFAULT_VAULT_RESOURCE "https://vault.azure.net"
#define KV_DEFAULT_API_VERSION "7.4"
#define KV_DEFAULT_CRED_TTL_S 900
#define KV_MAX_CRED_TTL_S 86400
#define KV_DEFAULT_ASSERTION_S 600
#define KV_MIN_ASSERTION_S 60
#define KV_MAX_ASSERTION_S 3600
#define KV_DEFAULT_RETRY_AFTER_S 5
#define KV_CACHE_MAX 512
#define KV_MAX_CONF_STRING 2048
#define KV_MAX_CONF_LIST 64
#define KV_MAX_DESCRIPTION 1024

/* Where the vault and Entra ID of each Azure cloud live; the defaults of the allow-lists. */
static const char *const default_vault_hosts[] = {
    "*.vault.azure.net",
    "*.vault.azure.cn",
    "*.vault.usgovcloudapi.net",
    "*.vault.microsoftazure.de",
    NULL,
};
static const char *const default_authority_hosts[] = {
    "login.microsoftonline.com", "login.chinacloudapi.cn",   "login.partner.microsoftonline.cn",
    "login.microsoftonline.us",  "login.microsoftonline.de", NULL,
};
/* The vault token's audience for a vault host in each cloud (suffix -> resource). */
static const struct {
    const char *suffix;
    const char *resource;
} vault_resources[] = {
    {".vault.azure.net", "https://vault.azure.net"},
    {".vault.azure.cn", "https://vault.azure.cn"},
    {".vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net"},
    {".vault.microsoftazure.de", "https://vault.microsoftazure.de"},
};

struct strv {
    char **v;
    size_t n;
};

struct cache_entry {
    char *key; /* vault/secrets/name/version|password-secret-url; NULL = free slot */
    struct cred *cred;
    uint64_t expires_ms; /* monotonic */
    uint64_t used_ms;
};

struct kv {
    const struct idb_host_api *host;
    /* configuration */
    char *bootstrap_provider;
    char *bootstrap_client_id;
    char *bootstrap_resource_id;
    char *vault_url;
    char *vault_resource;
    struct strv vault_hosts;
    char *authority;
    struct strv authority_hosts;
    char *tenant_id;
    char *ca_file;
    char *pfx_password;
    char *api_version;
    char *assertion_alg;
    int64_t cred_ttl_s;
    int64_t assertion_lifetime_s;
    enum entra_alg alg;
    /* credential cache */
    pthread_mutex_t lock;
    bool lock_init;
    struct cache_entry cache[KV_CACHE_MAX];
};

#define LOG(k, level, ...) (k)->host->log((level), KV_NAME, __VA_ARGS__)

/* ---- configuration (STYLE R16: a table applied to the parsed JSON) ---- */

enum conf_type {
    CONF_STRING,
    CONF_STRING_LIST,
    CONF_INT,
};

struct conf_item {
    const char *key;
    enum conf_type type;
    size_t offset;
    int64_t min, max;
};

static const struct conf_item conf_items[] = {
    {"bootstrapProvider", CONF_STRING, offsetof(struct kv, bootstrap_provider), 0, 0},
    {"bootstrapClientId", CONF_STRING, offsetof(struct kv, bootstrap_client_id), 0, 0},
    {"bootstrapResourceId", CONF_STRING, offsetof(struct kv, bootstrap_resource_id), 0, 0},
    {"vaultUrl", CONF_STRING, offsetof(struct kv, vault_url), 0, 0},
    {"vaultResource", CONF_STRING, offsetof(struct kv, vault_resource), 0, 0},
    {"allowedVaultHosts", CONF_STRING_LIST, offsetof(struct kv, vault_hosts), 0, 0},
    {"authorityHost", CONF_STRING, offsetof(struct kv, authority), 0, 0},
    {"allowedAuthorityHosts", CONF_STRING_LIST, offsetof(struct kv, authority_hosts), 0, 0},
    {"tenantId", CONF_STRING, offsetof(struct kv, tenant_id), 0, 0},
    {"caFile", CONF_STRING, offsetof(struct kv, ca_file), 0, 0},
    {"pfxPassword", CONF_STRING, offsetof(struct kv, pfx_password), 0, 0},
    {"apiVersion", CONF_STRING, offsetof(struct kv, api_version), 0, 0},
    {"assertionAlgorithm", CONF_STRING, offsetof(struct kv, assertion_alg), 0, 0},
    {"credentialTtlSeconds", CONF_INT, offsetof(struct kv, cred_ttl_s), 0, KV_MAX_CRED_TTL_S},
    {"assertionLifetimeSeconds", CONF_INT, offsetof(struct kv, assertion_lifetime_s),
     KV_MIN_ASSERTION_S, KV_MAX_ASSERTION_S},
};

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static void strv_done(struct strv *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    *l = (struct strv){0};
}

static int strv_from(struct strv *l, const char *const *src)
{
    size_t n = 0;
    while (src[n])
        n++;
    l->v = calloc(n ? n : 1, sizeof(char *));
    if (!l->v)
        return -ENOMEM;
    for (l->n = 0; l->n < n; l->n++) {
        l->v[l->n] = strdup(src[l->n]);
        if (!l->v[l->n])
            return -ENOMEM;
    }
    return 0;
}

static int conf_string(struct kv *k, const char *key, struct json_object *v, char **ret)
{
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
    if (!s || !s[0] || strlen(s) > KV_MAX_CONF_STRING || !printable(s)) {
        LOG(k, IDB_LOG_ERR,
            "config: key '%s' must be a non-empty string of printable characters (at most %d)", key,
            KV_MAX_CONF_STRING);
        return IDB_E_BAD_CONFIG;
    }
    char *d = strdup(s);
    if (!d)
        return -ENOMEM;
    free(*ret);
    *ret = d;
    return 0;
}

static int conf_apply(struct kv *k, const struct conf_item *it, struct json_object *v)
{
    void *field = (char *)k + it->offset;
    switch (it->type) {
    case CONF_STRING:
        return conf_string(k, it->key, v, field);
    case CONF_INT: {
        int64_t n = json_object_get_int64(v);
        if (!json_object_is_type(v, json_type_int) || n < it->min || n > it->max) {
            LOG(k, IDB_LOG_ERR, "config: key '%s' must be an integer in %lld..%lld", it->key,
                (long long)it->min, (long long)it->max);
            return IDB_E_BAD_CONFIG;
        }
        *(int64_t *)field = n;
        return 0;
    }
    case CONF_STRING_LIST: {
        struct strv *l = field;
        size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
        if (!json_object_is_type(v, json_type_array) || n > KV_MAX_CONF_LIST) {
            LOG(k, IDB_LOG_ERR, "config: key '%s' must be an array of at most %d strings", it->key,
                KV_MAX_CONF_LIST);
            return IDB_E_BAD_CONFIG;
        }
        strv_done(l);
        l->v = calloc(n ? n : 1, sizeof(char *));
        if (!l->v)
            return -ENOMEM;
        for (l->n = 0; l->n < n; l->n++) {
            int r = conf_string(k, it->key, json_object_array_get_idx(v, l->n), &l->v[l->n]);
            if (r < 0)
                return r;
        }
        return 0;
    }
    }
    return -EINVAL;
}

static int conf_parse(struct kv *k, struct json_object *o)
{
    json_object_object_foreach(o, key, v)
    {
        const struct conf_item *it = NULL;
        for (size_t i = 0; i < ELEMENTSOF(conf_items); i++)
            if (streq(conf_items[i].key, key))
                it = &conf_items[i];
        if (!it) {
            LOG(k, IDB_LOG_ERR,
                "config: unknown key '%.64s' (known: bootstrapProvider, bootstrapClientId, "
                "bootstrapResourceId, vaultUrl, vaultResource, allowedVaultHosts, authorityHost, "
                "allowedAuthorityHosts, tenantId, caFile, pfxPassword, apiVersion, "
                "assertionAlgorithm, credentialTtlSeconds, assertionLifetimeSeconds)",
                key);
            return IDB_E_BAD_CONFIG;
        }
        int r = conf_apply(k, it, v);
        if (r < 0)
            return r;
    }
    return 0;
}

static bool host_allowed(const struct strv *l, const char *host, int port)
{
    for (size_t i = 0; i < l->n; i++)
        if (kv_parse_host_match(l->v[i], host, port))
            return true;
    return false;
}

/* Defaults and cross-checks after the table was applied. */
static int conf_finish(struct kv *k)
{
    int r;
#define DEFAULT_STR(field, val)                                                                    \
    do {                                                                                           \
        if (!k->field && !(k->field = strdup(val)))                                                \
            return -ENOMEM;                                                                        \
    } while (0)
    DEFAULT_STR(bootstrap_provider, KV_DEFAULT_BOOTSTRAP);
    DEFAULT_STR(authority, KV_DEFAULT_AUTHORITY);
    DEFAULT_STR(api_version, KV_DEFAULT_API_VERSION);
#undef DEFAULT_STR
    if (!k->vault_hosts.v && (r = strv_from(&k->vault_hosts, default_vault_hosts)) < 0)
        return r;
    if (!k->authority_hosts.v && (r = strv_from(&k->authority_hosts, default_authority_hosts)) < 0)
        return r;

    for (const char *c = k->bootstrap_provider; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-')) {
            LOG(k, IDB_LOG_ERR, "config: 'bootstrapProvider' must be a provider name [a-z0-9-]+");
            return IDB_E_BAD_CONFIG;
        }
    if (streq(k->bootstrap_provider, KV_NAME)) {
        LOG(k, IDB_LOG_ERR, "config: 'bootstrapProvider' cannot be keyvault itself");
        return IDB_E_BAD_CONFIG;
    }
    for (const char *c = k->api_version; *c; c++)
        if (!((*c >= '0' && *c <= '9') || *c == '.' || *c == '-' || (*c >= 'a' && *c <= 'z'))) {
            LOG(k, IDB_LOG_ERR, "config: 'apiVersion' must look like '7.4'");
            return IDB_E_BAD_CONFIG;
        }
    if (k->tenant_id && !entra_valid_tenant(k->tenant_id)) {
        LOG(k, IDB_LOG_ERR, "config: 'tenantId' is not a tenant ID or domain");
        return IDB_E_BAD_CONFIG;
    }
    if (k->assertion_alg && !streq(k->assertion_alg, "RS256") &&
        !streq(k->assertion_alg, "PS256")) {
        LOG(k, IDB_LOG_ERR, "config: 'assertionAlgorithm' must be 'RS256' or 'PS256'");
        return IDB_E_BAD_CONFIG;
    }
    k->alg = k->assertion_alg && streq(k->assertion_alg, "PS256") ? ENTRA_PS256 : ENTRA_RS256;

    _cleanup_free_ char *url = NULL, *host = NULL;
    int port;
    if (entra_token_url(k->authority, "common", &url, &host, &port) < 0) {
        LOG(k, IDB_LOG_ERR, "config: 'authorityHost' '%s' must be https://host[:port]",
            k->authority);
        return IDB_E_BAD_CONFIG;
    }
    if (!host_allowed(&k->authority_hosts, host, port)) {
        LOG(k, IDB_LOG_ERR, "config: 'authorityHost' '%s' is not in 'allowedAuthorityHosts'",
            k->authority);
        return IDB_E_BAD_CONFIG;
    }
    if (k->vault_url) {
        struct kv_ref ref;
        if (kv_parse_vault_url(k->vault_url, "x", NULL, &ref) < 0) {
            LOG(k, IDB_LOG_ERR, "config: 'vaultUrl' '%s' must be https://host[:port]",
                k->vault_url);
            return IDB_E_BAD_CONFIG;
        }
        bool ok = host_allowed(&k->vault_hosts, ref.host, ref.port);
        kv_ref_done(&ref);
        if (!ok) {
            LOG(k, IDB_LOG_ERR, "config: 'vaultUrl' '%s' is not in 'allowedVaultHosts'",
                k->vault_url);
            return IDB_E_BAD_CONFIG;
        }
    }
    return 0;
}

/* ---- one issue() call ---- */

struct call {
    struct kv *k;
    const struct idb_token_req *req;
    struct idb_token *ret;
    const char *ns, *name; /* the identity, for messages */
};

/* Fails the call with an IMDS-shaped error for the pod: `code` (IDB_E_UPSTREAM_4XX with `status`,
 * or another IDB_E_*), error and a description; the description is also logged. Descriptions never
 * hold secrets. Returns code. */
static int fail(struct call *c, int code, long status, uint32_t retry_after, const char *error,
                const char *fmt, ...) IDB_PRINTF_FMT(6, 7);
static int fail(struct call *c, int code, long status, uint32_t retry_after, const char *error,
                const char *fmt, ...)
{
    char desc[KV_MAX_DESCRIPTION];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    LOG(c->k, code == IDB_E_UPSTREAM_UNAVAILABLE ? IDB_LOG_WARNING : IDB_LOG_NOTICE,
        "identity '%s/%s': %s", c->ns, c->name, desc);

    if (status)
        c->ret->upstream_status = status;
    if (retry_after)
        c->ret->retry_after_s = retry_after;
    struct json_object *o = json_object_new_object();
    if (o) {
        json_object_object_add(o, "error", json_object_new_string(error));
        json_object_object_add(o, "error_description", json_object_new_string(desc));
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE);
        if (s) {
            size_t n = strlen(s);
            char *body = c->k->host->alloc(n + 1);
            if (body) {
                memcpy(body, s, n + 1);
                c->k->host->free(c->ret->upstream_error);
                c->ret->upstream_error = body;
            }
        }
        json_object_put(o);
    }
    return code;
}

/* Milliseconds left before the request's deadline, 0 when it has passed. */
static uint32_t time_left(const struct call *c)
{
    uint64_t now = c->k->host->now_monotonic_ms();
    if (!c->req->deadline_ms)
        return 10000;
    if (c->req->deadline_ms <= now)
        return 0;
    uint64_t left = c->req->deadline_ms - now;
    return left > 120000 ? 120000 : (uint32_t)left;
}

static void http_resp_done(const struct kv *k, struct idb_http_resp *r)
{
    if (r->body) {
        explicit_bzero(r->body, r->body_len);
        k->host->free(r->body);
    }
    k->host->free(r->www_authenticate);
    *r = (struct idb_http_resp){0};
}

/* One exchange through the host; maps transport failures to errors for the pod. */
static int http(struct call *c, const char *method, const char *url, const char *const *headers,
                const char *body, size_t body_len, const char *what, struct idb_http_resp *ret)
{
    uint32_t left = time_left(c);
    if (left == 0)
        return IDB_E_PROVIDER_TIMEOUT;
    struct idb_http_req hr = {
        .size = sizeof(hr),
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body_len,
        .timeout_ms = left,
        .ca_file = c->k->ca_file,
    };
    struct idb_http_resp resp = {.size = sizeof(resp)};
    int r = c->k->host->http(&hr, &resp);
    if (r < 0) {
        if (r == -ETIMEDOUT)
            return fail(c, IDB_E_UPSTREAM_UNAVAILABLE, 0, 0, "service_unavailable",
                        "%s did not answer in time", what);
        return fail(c, IDB_E_UPSTREAM_UNAVAILABLE, 0, 0, "service_unavailable",
                    "%s cannot be reached: %s", what, c->k->host->strerror(r));
    }
    *ret = resp;
    return 0;
}

/* ---- Key Vault ---- */

static const char *vault_resource_for(const struct kv *k, const char *host)
{
    if (k->vault_resource)
        return k->vault_resource;
    size_t hn = strlen(host);
    for (size_t i = 0; i < ELEMENTSOF(vault_resources); i++) {
        size_t sn = strlen(vault_resources[i].suffix);
        if (hn > sn && strcasecmp(host + hn - sn, vault_resources[i].suffix) == 0)
            return vault_resources[i].resource;
    }
    return KV_DEFAULT_VAULT_RESOURCE;
}

/* A challenged resource is followed only when its host is the vault's host or a parent domain of
 * it, or it is the configured vaultResource (as the Azure SDKs verify the challenge). */
static bool challenge_resource_ok(const struct kv *k, const struct kv_ref *ref, const char *res)
{
    if (k->vault_resource && streq(res, k->vault_resource))
        return true;
    if (strncasecmp(res, "https://", 8) != 0)
        return false;
    const char *h = res + 8;
    size_t hn = strcspn(h, ":/");
    if (hn == 0 || (h[hn] != '\0' && h[hn] != '/' && h[hn] != ':'))
        return false;
    size_t vn = strlen(ref->host);
    if (hn > vn || strncasecmp(ref->host + vn - hn, h, hn) != 0)
        return false;
    return hn == vn || ref->host[vn - hn - 1] == '.';
}

/* The node identity's token for the vault, through the bootstrap provider (and the broker's
 * cache). */
static int vault_token(struct call *c, const char *resource, char **ret)
{
    struct kv *k = c->k;
    struct idb_token_req r = {
        .size = sizeof(r),
        .resource = resource,
        .identity_name = "keyvault-bootstrap",
        .identity_namespace = "",
        .identity_type = 0,
        .client_id = k->bootstrap_client_id ? k->bootstrap_client_id : "",
        .resource_id = k->bootstrap_resource_id ? k->bootstrap_resource_id : "",
        .tenant_id = "",
        .ad_endpoint = "",
        .ad_resource_id = "",
        .secret_name = "",
        .secret_namespace = "",
        .annotations = NULL,
        .deadline_ms = c->req->deadline_ms,
    };
    struct idb_token t = {.size = sizeof(t)};
    int e = k->host->issue_via(k->bootstrap_provider, &r, &t);
    char desc[256] = "";
    if (t.upstream_error) {
        struct json_object *o = NULL, *v;
        if (kv_parse_json_object(t.upstream_error, strlen(t.upstream_error), &o) == 0 &&
            json_object_object_get_ex(o, "error_description", &v) &&
            json_object_is_type(v, json_type_string))
            snprintf(desc, sizeof(desc), ": %s", json_object_get_string(v));
        json_object_put(o);
    }
    int result = 0;
    if (e < 0) {
        if (e == IDB_E_UPSTREAM_UNAVAILABLE || e == IDB_E_PROVIDER_TIMEOUT ||
            e == IDB_E_RATE_LIMITED || (e == IDB_E_UPSTREAM_4XX && t.upstream_status == 429))
            result = fail(c, IDB_E_UPSTREAM_UNAVAILABLE, 0, t.retry_after_s, "service_unavailable",
                          "the node identity's Key Vault token from provider '%s' is not "
                          "available%s",
                          k->bootstrap_provider, desc);
        else
            result = fail(c, IDB_E_UPSTREAM_4XX, 403, 0, "forbidden",
                          "cannot get the node identity's Key Vault token from provider '%s' "
                          "(%s)%s",
                          k->bootstrap_provider, k->host->strerror(e), desc);
    } else if (!t.access_token || !t.access_token[0] || !printable(t.access_token)) {
        result = fail(c, IDB_E_UPSTREAM_BAD_REPLY, 0, 0, "bad_gateway",
                      "provider '%s' returned an unusable Key Vault token", k->bootstrap_provider);
    }
    if (result == 0) {
        *ret = strdup(t.access_token);
        if (!*ret)
            result = -ENOMEM;
    }
    if (t.access_token) {
        explicit_bzero(t.access_token, strlen(t.access_token));
        k->host->free(t.access_token);
    }
    k->host->free(t.client_id);
    k->host->free(t.upstream_error);
    return result;
}

static const char *ref_version(const struct kv_ref *ref)
{
    return ref->version ? ref->version : "latest";
}

/* Maps a Key Vault reply other than 200 to the pod's error. */
static int vault_error(struct call *c, const struct kv_ref *ref, const struct idb_http_resp *resp)
{
    _cleanup_free_ char *code = NULL, *message = NULL, *inner = NULL;
    char why[640] = "";
    if (kv_parse_error_reply(resp->body, resp->body_len, &code, &message, &inner) == 0)
        snprintf(why, sizeof(why), " (%s%s%s%s%s)", code ? code : "", inner ? "/" : "",
                 inner ? inner : "", message ? ": " : "", message ? message : "");
    long st = resp->status;
    if (st == 401 || st == 403)
        return fail(c, IDB_E_UPSTREAM_4XX, 403, 0, "forbidden",
                    "Key Vault '%s' denied the node identity access to secret '%s' (HTTP %ld)%s; "
                    "grant it the 'Key Vault Secrets User' role on the vault",
                    ref->host, ref->name, st, why);
    if (st == 404)
        return fail(c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_request",
                    "Key Vault '%s' has no secret '%s' (version %s)%s", ref->host, ref->name,
                    ref_version(ref), why);
    if (st == 429)
        return fail(c, IDB_E_UPSTREAM_4XX, 429,
                    resp->retry_after_s ? resp->retry_after_s : KV_DEFAULT_RETRY_AFTER_S,
                    "too_many_requests", "Key Vault '%s' is throttling requests, retry after %u s",
                    ref->host,
                    resp->retry_after_s ? resp->retry_after_s : KV_DEFAULT_RETRY_AFTER_S);
    if (st >= 500)
        return fail(c, IDB_E_UPSTREAM_UNAVAILABLE, 0, resp->retry_after_s, "service_unavailable",
                    "Key Vault '%s' is unavailable (HTTP %ld)", ref->host, st);
    return fail(c, IDB_E_UPSTREAM_BAD_REPLY, 0, 0, "bad_gateway",
                "Key Vault '%s' answered HTTP %ld reading secret '%s'%s", ref->host, st, ref->name,
                why);
}

/* Reads one secret: GET {vault}/secrets/{name}[/{version}]?api-version=…, following one 401
 * challenge to another resource. */
static int vault_get(struct call *c, const struct kv_ref *ref, struct kv_secret *ret)
{
    struct kv *k = c->k;
    _cleanup_free_ char *url = NULL, *resource = strdup(vault_resource_for(k, ref->host));
    if (!resource)
        return -ENOMEM;
    if (asprintf(&url, "%s/secrets/%s%s%s?api-version=%s", ref->vault, ref->name,
                 ref->version ? "/" : "", ref->version ? ref->version : "", k->api_version) < 0) {
        url = NULL;
        return -ENOMEM;
    }
    char what[KV_MAX_HOST + 32];
    snprintf(what, sizeof(what), "Key Vault '%s'", ref->host);

    struct idb_http_resp resp = {0};
    for (int attempt = 0;; attempt++) {
        _cleanup_erase_ char *token = NULL, *auth = NULL;
        int r = vault_token(c, resource, &token);
        if (r < 0)
            return r;
        if (asprintf(&auth, "Authorization: Bearer %s", token) < 0) {
            auth = NULL;
            return -ENOMEM;
        }
        const char *headers[] = {auth, "Accept: application/json", NULL};
        r = http(c, "GET", url, headers, NULL, 0, what, &resp);
        if (r < 0)
            return r;
        if (resp.status != 401 || attempt > 0 || !resp.www_authenticate)
            break;
        struct kv_challenge ch = {0};
        bool follow = kv_parse_challenge(resp.www_authenticate, &ch) == 0 && ch.resource &&
                      !streq(ch.resource, resource) && challenge_resource_ok(k, ref, ch.resource);
        if (follow) {
            LOG(k, IDB_LOG_INFO, "Key Vault '%s' asks for a token of resource '%s'", ref->host,
                ch.resource);
            free(resource);
            resource = TAKE_PTR(ch.resource);
        } else if (ch.resource && !streq(ch.resource, resource)) {
            LOG(k, IDB_LOG_WARNING,
                "Key Vault '%s' asks for a token of resource '%.256s', which does not belong to "
                "it, ignoring",
                ref->host, ch.resource);
        }
        kv_challenge_done(&ch);
        if (!follow)
            break;
        http_resp_done(k, &resp);
    }

    int r;
    if (resp.status == 200) {
        r = kv_parse_secret_reply(resp.body, resp.body_len, ret);
        if (r == -EBADMSG)
            r = fail(c, IDB_E_UPSTREAM_BAD_REPLY, 0, 0, "bad_gateway",
                     "Key Vault '%s' sent a malformed reply for secret '%s'", ref->host, ref->name);
    } else {
        r = vault_error(c, ref, &resp);
    }
    http_resp_done(k, &resp);
    return r;
}

/* ---- credential cache ---- */

static void cache_evict_locked(struct cache_entry *e)
{
    free(e->key);
    e->cred = cred_unref(e->cred);
    *e = (struct cache_entry){0};
}

/* Returns a reference to the cached credential of key, or NULL. */
static struct cred *cache_get(struct kv *k, const char *key)
{
    struct cred *cr = NULL;
    uint64_t now = k->host->now_monotonic_ms();
    pthread_mutex_lock(&k->lock);
    for (size_t i = 0; i < KV_CACHE_MAX; i++) {
        struct cache_entry *e = &k->cache[i];
        if (!e->key || !streq(e->key, key))
            continue;
        if (e->expires_ms <= now) {
            cache_evict_locked(e);
            break;
        }
        e->used_ms = now;
        cr = cred_ref(e->cred);
        break;
    }
    pthread_mutex_unlock(&k->lock);
    return cr;
}

static void cache_drop(struct kv *k, const char *key)
{
    pthread_mutex_lock(&k->lock);
    for (size_t i = 0; i < KV_CACHE_MAX; i++)
        if (k->cache[i].key && streq(k->cache[i].key, key))
            cache_evict_locked(&k->cache[i]);
    pthread_mutex_unlock(&k->lock);
}

static void cache_put(struct kv *k, const char *key, struct cred *cr, uint64_t ttl_ms)
{
    if (ttl_ms == 0)
        return;
    char *kcopy = strdup(key);
    if (!kcopy)
        return;
    uint64_t now = k->host->now_monotonic_ms();
    pthread_mutex_lock(&k->lock);
    struct cache_entry *slot = NULL, *free_slot = NULL, *lru = NULL;
    for (size_t i = 0; i < KV_CACHE_MAX && !slot; i++) {
        struct cache_entry *e = &k->cache[i];
        if (e->key && streq(e->key, key))
            slot = e;
        else if (!e->key && !free_slot)
            free_slot = e;
        else if (e->key && (!lru || e->used_ms < lru->used_ms))
            lru = e;
    }
    if (!slot)
        slot = free_slot ? free_slot : lru;
    cache_evict_locked(slot);
    slot->key = kcopy;
    slot->cred = cred_ref(cr);
    slot->expires_ms = now + ttl_ms;
    slot->used_ms = now;
    pthread_mutex_unlock(&k->lock);
}

static const char *kind_name(const struct cred *cr)
{
    return cr->kind == CRED_CERT ? "certificate" : "client secret";
}

/* Reads the credential from Key Vault (and the PKCS#12 / PEM password from its own secret, when
 * one is named), loads it and caches it. */
static int cred_fetch(struct call *c, const struct kv_ref *ref, const struct kv_ref *pwref,
                      const char *key, struct cred **ret)
{
    struct kv *k = c->k;
    struct kv_secret sec = {0}, pw = {0};
    int r = vault_get(c, ref, &sec);
    if (r < 0)
        return r;
    if (pwref) {
        r = vault_get(c, pwref, &pw);
        if (r < 0)
            goto out;
    }
    uint64_t now = k->host->now_realtime();
    if (!sec.enabled || (sec.exp && sec.exp <= now) || (sec.nbf && sec.nbf > now)) {
        r = fail(c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_client",
                 "Key Vault secret '%s' in '%s' is %s", ref->name, ref->host,
                 !sec.enabled                ? "disabled"
                 : sec.exp && sec.exp <= now ? "expired"
                                             : "not yet valid");
        goto out;
    }
    const char *why = NULL;
    struct cred *cr = NULL;
    r = cred_load(sec.value, sec.value_len, sec.content_type, pwref ? pw.value : k->pfx_password,
                  &cr, &why);
    if (r == -ENOMEM)
        goto out;
    if (r < 0) {
        r = fail(c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_client",
                 "the credential in Key Vault secret '%s' in '%s' (content type '%s') cannot be "
                 "used: %s",
                 ref->name, ref->host, sec.content_type ? sec.content_type : "none",
                 why ? why : "unreadable");
        goto out;
    }
    LOG(k, IDB_LOG_INFO, "identity '%s/%s': read a %s from Key Vault secret '%s/secrets/%s' (%s)",
        c->ns, c->name, kind_name(cr), ref->vault, ref->name, sec.id ? sec.id : "no id");
    uint64_t ttl = (uint64_t)k->cred_ttl_s;
    if (sec.exp && sec.exp - now < ttl)
        ttl = sec.exp - now;
    if (cr->kind == CRED_CERT && cr->not_after > now && cr->not_after - now < ttl)
        ttl = cr->not_after - now;
    cache_put(k, key, cr, ttl * 1000);
    *ret = cr;
    r = 0;
out:
    kv_secret_done(&sec);
    kv_secret_done(&pw);
    return r;
}

/* ---- Entra ID ---- */

struct grant {
    long status;
    uint32_t retry_after_s;
    struct entra_reply reply;
    bool parsed;
};

static int grant_once(struct call *c, const struct cred *cr, const char *token_url,
                      const char *scope, struct grant *g)
{
    struct kv *k = c->k;
    struct entra_form f = {0};
    _cleanup_erase_ char *assertion = NULL;
    int r = entra_form_add(&f, "grant_type", "client_credentials");
    if (r == 0)
        r = entra_form_add(&f, "client_id", c->req->client_id);
    if (r == 0)
        r = entra_form_add(&f, "scope", scope);
    if (r == 0 && cr->kind == CRED_SECRET) {
        r = entra_form_add(&f, "client_secret", cr->secret);
    } else if (r == 0) {
        r = entra_build_assertion(cr->key, cr->x5t, cr->x5t_s256, c->req->client_id, token_url,
                                  k->host->now_realtime(), (uint32_t)k->assertion_lifetime_s,
                                  k->alg, &assertion);
        if (r == 0)
            r = entra_form_add(&f, "client_assertion_type", ENTRA_ASSERTION_TYPE);
        if (r == 0)
            r = entra_form_add(&f, "client_assertion", assertion);
    }
    if (r < 0) {
        entra_form_done(&f);
        return r;
    }
    const char *headers[] = {"Content-Type: application/x-www-form-urlencoded",
                             "Accept: application/json", NULL};
    struct idb_http_resp resp = {0};
    r = http(c, "POST", token_url, headers, f.buf, f.len, "Entra ID", &resp);
    entra_form_done(&f);
    if (r < 0)
        return r;
    *g = (struct grant){.status = resp.status, .retry_after_s = resp.retry_after_s};
    g->parsed = entra_parse_reply(resp.body, resp.body_len, &g->reply) == 0;
    http_resp_done(k, &resp);
    return 0;
}

/* Maps the grant's reply to the token, or to the pod's error. */
static int grant_result(struct call *c, const struct grant *g, const char *tenant)
{
    struct kv *k = c->k;
    const struct entra_reply *rep = &g->reply;
    if (g->status == 200 && g->parsed && rep->access_token) {
        size_t n = strlen(rep->access_token);
        char *tok = k->host->alloc(n + 1);
        if (!tok)
            return -ENOMEM;
        memcpy(tok, rep->access_token, n + 1);
        uint64_t now = k->host->now_realtime();
        c->ret->access_token = tok;
        c->ret->expires_on = now + rep->expires_in;
        c->ret->not_before = now;
        c->ret->ext_expires_in = rep->ext_expires_in;
        return 0;
    }
    if (g->status == 429 || g->status >= 500)
        return fail(c, g->status == 429 ? IDB_E_UPSTREAM_4XX : IDB_E_UPSTREAM_UNAVAILABLE,
                    g->status == 429 ? 429 : 0,
                    g->retry_after_s ? g->retry_after_s : KV_DEFAULT_RETRY_AFTER_S,
                    g->status == 429 ? "too_many_requests" : "service_unavailable",
                    "Entra ID %s (HTTP %ld), retry later",
                    g->status == 429 ? "is throttling token requests" : "is unavailable",
                    g->status);
    if (g->status >= 400 && g->status < 500 && g->parsed && rep->error)
        return fail(c, IDB_E_UPSTREAM_4XX, g->status, 0, rep->error,
                    "Entra ID refused the token for client '%s' in tenant '%s': %s",
                    c->req->client_id, tenant,
                    rep->error_description ? rep->error_description : rep->error);
    return fail(c, IDB_E_UPSTREAM_BAD_REPLY, 0, 0, "bad_gateway",
                "Entra ID sent an unexpected reply (HTTP %ld)", g->status);
}

/* ---- the request ---- */

static const char *annotation(const struct idb_token_req *req, const char *key)
{
    if (!IDB_REQ_HAS(req, annotations) || !req->annotations)
        return NULL;
    for (size_t i = 0; req->annotations[i] && req->annotations[i + 1]; i += 2)
        if (streq(req->annotations[i], key))
            return req->annotations[i + 1];
    return NULL;
}

static const char *strempty(const char *s)
{
    return s ? s : "";
}

static bool nonempty(const char *s)
{
    return s && s[0];
}

/* Where the identity's credential (and its password) lives; see README.md. */
static int resolve_refs(struct call *c, struct kv_ref *ret, struct kv_ref *ret_pw, bool *ret_has_pw)
{
    struct kv *k = c->k;
    const char *url = annotation(c->req, KV_ANNOTATION_SECRET);
    struct kv_ref ref = {0}, pw = {0};
    int r;
    if (url) {
        r = kv_parse_secret_url(url, &ref);
        if (r == -ENOMEM)
            return r;
        if (r < 0)
            return fail(c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_request",
                        "annotation '%s' must be https://<vault>/secrets/<name>[/<version>]",
                        KV_ANNOTATION_SECRET);
    } else if (k->vault_url) {
        const char *name =
            nonempty(c->req->secret_name) ? c->req->secret_name : c->req->identity_name;
        r = kv_parse_vault_url(k->vault_url, name, NULL, &ref);
        if (r == -ENOMEM)
            return r;
        if (r < 0)
            return fail(c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_request",
                        "'%.128s' is not a valid Key Vault secret name ([0-9A-Za-z-]{1,127}); set "
                        "annotation '%s'",
                        strna(name), KV_ANNOTATION_SECRET);
    } else {
        return fail(c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_request",
                    "the identity names no Key Vault secret: set annotation '%s' or the keyvault "
                    "provider's 'vaultUrl'",
                    KV_ANNOTATION_SECRET);
    }
    if (!host_allowed(&k->vault_hosts, ref.host, ref.port)) {
        r = fail(c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_request",
                 "vault host '%s' is not in the keyvault provider's 'allowedVaultHosts'", ref.host);
        kv_ref_done(&ref);
        return r;
    }
    const char *pw_url = annotation(c->req, KV_ANNOTATION_PASSWORD);
    if (pw_url) {
        r = kv_parse_secret_url(pw_url, &pw);
        if (r < 0 || !host_allowed(&k->vault_hosts, pw.host, pw.port)) {
            kv_ref_done(&ref);
            kv_ref_done(&pw);
            if (r == -ENOMEM)
                return r;
            return fail(c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_request",
                        "annotation '%s' must be https://<vault>/secrets/<name>[/<version>] of an "
                        "allowed vault",
                        KV_ANNOTATION_PASSWORD);
        }
    }
    *ret = ref;
    *ret_pw = pw;
    *ret_has_pw = pw_url != NULL;
    return 0;
}

static int check_cert_dates(struct call *c, const struct cred *cr, const struct kv_ref *ref)
{
    if (cr->kind != CRED_CERT)
        return 0;
    uint64_t now = c->k->host->now_realtime();
    if (cr->not_after > now && cr->not_before <= now + 300)
        return 0;
    char when[32] = "?";
    time_t t = (time_t)(cr->not_after > now ? cr->not_before : cr->not_after);
    struct tm tm;
    if (gmtime_r(&t, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return fail(c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_client",
                "the certificate in Key Vault secret '%s' in '%s' %s %s", ref->name, ref->host,
                cr->not_after > now ? "is not valid before" : "expired at", when);
}

/* Gets the credential: from the cache unless reload, else from Key Vault. *ret_fresh tells whether
 * it was just read. */
static int cred_get(struct call *c, const struct kv_ref *ref, const struct kv_ref *pw,
                    const char *key, bool reload, struct cred **ret, bool *ret_fresh)
{
    struct cred *cr = reload ? NULL : cache_get(c->k, key);
    if (cr) {
        *ret = cr;
        *ret_fresh = false;
        return 0;
    }
    if (reload)
        cache_drop(c->k, key);
    int r = cred_fetch(c, ref, pw, key, &cr);
    if (r < 0)
        return r;
    *ret = cr;
    *ret_fresh = true;
    return 0;
}

static int kv_issue(void *state, const struct idb_token_req *req, struct idb_token *ret)
{
    struct kv *k = state;
    if (!k || !req || !ret || !IDB_REQ_HAS(req, deadline_ms) || !IDB_TOKEN_HAS(ret, retry_after_s))
        return -EINVAL;
    struct call c = {
        .k = k,
        .req = req,
        .ret = ret,
        .ns = strna(req->identity_namespace),
        .name = strna(req->identity_name),
    };
    if (!nonempty(req->resource) || strlen(req->resource) > ENTRA_MAX_RESOURCE)
        return -EINVAL;
    if (!entra_valid_client_id(req->client_id))
        return fail(&c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_request",
                    "the identity's clientID is missing or malformed");
    const char *tenant = nonempty(req->tenant_id) ? req->tenant_id : k->tenant_id;
    if (!entra_valid_tenant(tenant))
        return fail(&c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_request",
                    "the identity's tenantID is missing or malformed");
    const char *authority = nonempty(req->ad_endpoint) ? req->ad_endpoint : k->authority;
    _cleanup_free_ char *token_url = NULL, *auth_host = NULL, *scope = NULL, *key = NULL;
    int auth_port;
    int r = entra_token_url(authority, tenant, &token_url, &auth_host, &auth_port);
    if (r == -ENOMEM)
        return r;
    if (r < 0 || !host_allowed(&k->authority_hosts, auth_host, auth_port))
        return fail(&c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_request",
                    "the identity's adEndpoint '%.256s' is not an allowed Entra ID authority "
                    "(see the keyvault provider's 'allowedAuthorityHosts')",
                    authority);
    scope = entra_scope(req->resource);
    if (!scope)
        return -ENOMEM;

    struct kv_ref ref = {0}, pw = {0};
    bool has_pw = false;
    r = resolve_refs(&c, &ref, &pw, &has_pw);
    if (r < 0)
        return r;
    struct cred *cr = NULL;
    struct grant g = {0};
    if (asprintf(&key, "%s/secrets/%s/%s|%s%s%s%s", ref.vault, ref.name, strempty(ref.version),
                 has_pw ? pw.vault : "", has_pw ? pw.name : "", has_pw ? "/" : "",
                 has_pw ? strempty(pw.version) : "") < 0) {
        key = NULL;
        r = -ENOMEM;
        goto out;
    }
    bool fresh = false;
    r = cred_get(&c, &ref, has_pw ? &pw : NULL, key, false, &cr, &fresh);
    if (r < 0)
        goto out;
    if (!fresh && cr->kind == CRED_CERT && check_cert_dates(&c, cr, &ref) < 0) {
        /* Perhaps renewed in the vault since we read it. */
        cr = cred_unref(cr);
        r = cred_get(&c, &ref, has_pw ? &pw : NULL, key, true, &cr, &fresh);
        if (r < 0)
            goto out;
    }
    r = check_cert_dates(&c, cr, &ref);
    if (r < 0)
        goto out;
    if (req->identity_type == 2 && cr->kind != CRED_CERT) {
        r = fail(&c, IDB_E_UPSTREAM_4XX, 400, 0, "invalid_client",
                 "the identity is of type 2 (certificate) but Key Vault secret '%s' holds no "
                 "certificate (content type application/x-pkcs12 or application/x-pem-file)",
                 ref.name);
        goto out;
    }
    r = grant_once(&c, cr, token_url, scope, &g);
    if (r < 0)
        goto out;
    if (!fresh && (g.status == 400 || g.status == 401) && g.parsed &&
        entra_reply_bad_credential(&g.reply)) {
        LOG(k, IDB_LOG_NOTICE,
            "identity '%s/%s': Entra ID rejected the cached %s (%s, AADSTS%lld); re-reading Key "
            "Vault secret '%s'",
            c.ns, c.name, kind_name(cr), g.reply.error, (long long)g.reply.error_code, ref.name);
        entra_reply_done(&g.reply);
        cr = cred_unref(cr);
        r = cred_get(&c, &ref, has_pw ? &pw : NULL, key, true, &cr, &fresh);
        if (r < 0)
            goto out;
        r = check_cert_dates(&c, cr, &ref);
        if (r < 0)
            goto out;
        r = grant_once(&c, cr, token_url, scope, &g);
        if (r < 0)
            goto out;
    }
    r = grant_result(&c, &g, tenant);
out:
    entra_reply_done(&g.reply);
    cred_unref(cr);
    kv_ref_done(&ref);
    kv_ref_done(&pw);
    return r;
}

/* ---- life cycle ---- */

static void kv_destroy(void *state)
{
    struct kv *k = state;
    if (!k)
        return;
    for (size_t i = 0; i < KV_CACHE_MAX; i++)
        if (k->cache[i].key)
            cache_evict_locked(&k->cache[i]);
    if (k->lock_init)
        pthread_mutex_destroy(&k->lock);
    if (k->pfx_password) {
        OPENSSL_cleanse(k->pfx_password, strlen(k->pfx_password));
        free(k->pfx_password);
    }
    free(k->bootstrap_provider);
    free(k->bootstrap_client_id);
    free(k->bootstrap_resource_id);
    free(k->vault_url);
    free(k->vault_resource);
    strv_done(&k->vault_hosts);
    free(k->authority);
    strv_done(&k->authority_hosts);
    free(k->tenant_id);
    free(k->ca_file);
    free(k->api_version);
    free(k->assertion_alg);
    free(k);
}

static int kv_init(const struct idb_host_api *host, const char *conf, void **ret_state)
{
    if (!host || !IDB_HOST_HAS(host, issue_via) || !ret_state)
        return -EINVAL;
    struct kv *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->host = host;
    k->cred_ttl_s = KV_DEFAULT_CRED_TTL_S;
    k->assertion_lifetime_s = KV_DEFAULT_ASSERTION_S;

    struct json_object *o = NULL;
    int r = IDB_E_BAD_CONFIG;
    enum json_tokener_error jerr = json_tokener_success;
    o = json_tokener_parse_verbose(conf ? conf : "{}", &jerr);
    if (!o || !json_object_is_type(o, json_type_object)) {
        LOG(k, IDB_LOG_ERR, "config must be a JSON object%s%s", o ? "" : ": ",
            o ? "" : json_tokener_error_desc(jerr));
        goto out;
    }
    r = conf_parse(k, o);
    if (r < 0)
        goto out;
    r = conf_finish(k);
    if (r < 0)
        goto out;
    r = -pthread_mutex_init(&k->lock, NULL);
    if (r < 0)
        goto out;
    k->lock_init = true;
    LOG(k, IDB_LOG_INFO,
        "vault token from provider '%s'%s%s; default vault %s; authority %s; credentials cached "
        "%lld s",
        k->bootstrap_provider, k->bootstrap_client_id ? " for client " : "",
        k->bootstrap_client_id ? k->bootstrap_client_id : "", k->vault_url ? k->vault_url : "none",
        k->authority, (long long)k->cred_ttl_s);
    *ret_state = TAKE_PTR(k);
    r = 0;
out:
    if (o) {
        /* The config may hold pfxPassword; json-c's copy is wiped with the rest. */
        struct json_object *pw;
        if (json_object_object_get_ex(o, "pfxPassword", &pw) &&
            json_object_is_type(pw, json_type_string))
            explicit_bzero((char *)json_object_get_string(pw),
                           (size_t)json_object_get_string_len(pw));
        json_object_put(o);
    }
    kv_destroy(k);
    return r;
}

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .abi_minor = IDB_PLUGIN_ABI_MINOR,
    .size = sizeof(struct idb_provider),
    .name = KV_NAME,
    .version = "1.0",
    .init = kv_init,
    .issue = kv_issue,
    .destroy = kv_destroy,
};
