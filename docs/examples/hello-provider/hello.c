/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hello — the provider of the tutorial in docs/plugins.md. Built out of tree against the installed
 * <idbroker/provider.h> and pkg-config alone (see the Makefile next to this file).
 *
 * It mints opaque tokens "hello.<namespace>.<identity>.<greeting>" for an allow-list of audiences,
 * shows how a provider reads its configuration, an identity's annotations, and how it refuses a
 * request with an IMDS-shaped 400 that idbrokerd passes to the pod.
 *
 * Configuration (the provider's object under "providers" in idbrokerd.json, every key optional):
 *   "lifetimeSeconds": 60..86400 (default 600)
 *   "audiences":       ["https://vault.azure.net", ...] (default: any audience)
 *   "greeting":        a word of [A-Za-z0-9-] (default "hello"); an identity overrides it with the
 *                      annotation hello.example.com/greeting
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <idbroker/provider.h>

#define HELLO_NAME "hello"
#define HELLO_MAX_AUDIENCES 32
#define HELLO_ANNOTATION "hello.example.com/greeting"

/* Made once by init() and only read afterwards, so issue() may run on many threads at once. */
struct hello {
    const struct idb_host_api *host;
    unsigned lifetime_s;
    char greeting[64];
    char *audiences[HELLO_MAX_AUDIENCES];
    size_t n_audiences;
};

static char *host_strdup(const struct idb_host_api *host, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = host->alloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static bool word_ok(const char *s)
{
    if (!*s || strlen(s) > 63)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-'))
            return false;
    return true;
}

static void hello_destroy(void *state)
{
    struct hello *h = state;
    if (!h)
        return;
    for (size_t i = 0; i < h->n_audiences; i++)
        h->host->free(h->audiences[i]);
    h->host->free(h);
}

/* Every error names the key, so that the broker's log says what to fix. */
static int parse_conf(struct hello *h, const char *conf)
{
    const struct idb_host_api *host = h->host;
    struct json_object *o = json_tokener_parse(conf);
    int r = 0;

    if (!o || !json_object_is_type(o, json_type_object)) {
        host->log(IDB_LOG_ERR, HELLO_NAME, "config: expected a JSON object");
        json_object_put(o);
        return IDB_E_BAD_CONFIG;
    }
    json_object_object_foreach(o, key, val)
    {
        if (strcmp(key, "lifetimeSeconds") == 0) {
            int64_t v = json_object_get_int64(val);
            if (!json_object_is_type(val, json_type_int) || v < 60 || v > 86400) {
                host->log(IDB_LOG_ERR, HELLO_NAME, "config: 'lifetimeSeconds' must be 60..86400");
                r = IDB_E_BAD_CONFIG;
                break;
            }
            h->lifetime_s = (unsigned)v;
        } else if (strcmp(key, "greeting") == 0) {
            const char *s = json_object_get_string(val);
            if (!json_object_is_type(val, json_type_string) || !word_ok(s)) {
                host->log(IDB_LOG_ERR, HELLO_NAME,
                          "config: 'greeting' must be a word of [A-Za-z0-9-]");
                r = IDB_E_BAD_CONFIG;
                break;
            }
            snprintf(h->greeting, sizeof(h->greeting), "%s", s);
        } else if (strcmp(key, "audiences") == 0) {
            size_t n =
                json_object_is_type(val, json_type_array) ? json_object_array_length(val) : 0;
            if (!json_object_is_type(val, json_type_array) || n > HELLO_MAX_AUDIENCES) {
                host->log(IDB_LOG_ERR, HELLO_NAME,
                          "config: 'audiences' must be an array of at most %d strings",
                          HELLO_MAX_AUDIENCES);
                r = IDB_E_BAD_CONFIG;
                break;
            }
            for (size_t i = 0; i < n && r == 0; i++) {
                struct json_object *a = json_object_array_get_idx(val, i);
                if (!json_object_is_type(a, json_type_string)) {
                    host->log(IDB_LOG_ERR, HELLO_NAME, "config: 'audiences[%zu]' is not a string",
                              i);
                    r = IDB_E_BAD_CONFIG;
                } else if (!(h->audiences[h->n_audiences] =
                                 host_strdup(host, json_object_get_string(a))))
                    r = -ENOMEM;
                else
                    h->n_audiences++;
            }
            if (r < 0)
                break;
        } else {
            host->log(IDB_LOG_ERR, HELLO_NAME,
                      "config: unknown key '%.64s' (known: lifetimeSeconds, audiences, greeting)",
                      key);
            r = IDB_E_BAD_CONFIG;
            break;
        }
    }
    json_object_put(o);
    return r;
}

static int hello_init(const struct idb_host_api *host, const char *conf, void **ret_state)
{
    /* The host API may be newer than this header, never older than what we call. */
    if (!IDB_HOST_HAS(host, now_realtime))
        return -EPROTO;
    struct hello *h = host->alloc(sizeof(*h));
    if (!h)
        return -ENOMEM;
    memset(h, 0, sizeof(*h));
    h->host = host;
    h->lifetime_s = 600;
    snprintf(h->greeting, sizeof(h->greeting), "hello");

    int r = parse_conf(h, conf);
    if (r < 0) {
        hello_destroy(h);
        return r;
    }
    host->log(IDB_LOG_INFO, HELLO_NAME, "ready: lifetime %us, %zu audience(s)%s", h->lifetime_s,
              h->n_audiences, h->n_audiences ? "" : " (any)");
    *ret_state = h;
    return 0;
}

static const char *annotation(const struct idb_token_req *req, const char *key)
{
    if (!IDB_REQ_HAS(req, annotations) || !req->annotations)
        return NULL;
    for (const char *const *a = req->annotations; a[0] && a[1]; a += 2)
        if (strcmp(a[0], key) == 0)
            return a[1];
    return NULL;
}

static int hello_issue(void *state, const struct idb_token_req *req, struct idb_token *ret)
{
    const struct hello *h = state;
    const struct idb_host_api *host = h->host;

    bool allowed = h->n_audiences == 0;
    for (size_t i = 0; i < h->n_audiences && !allowed; i++)
        allowed = strcmp(h->audiences[i], req->resource) == 0;
    if (!allowed) {
        /* A 4xx of "the identity service": the broker answers the pod with this status and body. */
        char body[512];
        snprintf(body, sizeof(body),
                 "{\"error\":\"invalid_resource\",\"error_description\":\"hello: audience not "
                 "allowed\"}");
        ret->upstream_status = 400;
        ret->upstream_error = host_strdup(host, body);
        host->log(IDB_LOG_NOTICE, HELLO_NAME, "refused an audience for %s/%s",
                  req->identity_namespace, req->identity_name);
        return IDB_E_UPSTREAM_4XX;
    }

    const char *greeting = annotation(req, HELLO_ANNOTATION);
    if (!greeting || !word_ok(greeting))
        greeting = h->greeting;

    char token[512];
    int n = snprintf(token, sizeof(token), "hello.%s.%s.%s", req->identity_namespace,
                     req->identity_name, greeting);
    if (n < 0 || (size_t)n >= sizeof(token))
        return IDB_E_UPSTREAM_BAD_REPLY;
    ret->access_token = host_strdup(host, token);
    if (!ret->access_token)
        return -ENOMEM;
    ret->expires_on = host->now_realtime() + h->lifetime_s;
    return 0;
}

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .abi_minor = IDB_PLUGIN_ABI_MINOR,
    .size = sizeof(struct idb_provider),
    .name = HELLO_NAME, /* must equal the file name: hello.so */
    .version = "1.0.0",
    .init = hello_init,
    .issue = hello_issue,
    .destroy = hello_destroy,
};
