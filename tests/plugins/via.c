/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test provider that gets its token from another provider through host->issue_via(), as keyvault
 * does with azure-msi. Its token is "via:" followed by the other provider's token, so a test can
 * check both that the call went through and which token came back. Config: {"target": "<name>"}
 * (default "mock"); any other key makes init() fail.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker/provider.h>

#define TARGET_MAX 64

struct via {
    const struct idb_host_api *host;
    char target[TARGET_MAX + 1];
};

static int via_init(const struct idb_host_api *host, const char *conf, void **ret_state)
{
    if (!IDB_HOST_HAS(host, issue_via))
        return -ENOTSUP;
    struct via *v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    v->host = host;
    memcpy(v->target, "mock", sizeof("mock"));
    struct json_object *o = json_tokener_parse(conf);
    int r = -EINVAL;
    if (!o || !json_object_is_type(o, json_type_object))
        goto out;
    json_object_object_foreach(o, k, val)
    {
        const char *s = json_object_get_string(val);
        if (strcmp(k, "target") != 0 || !json_object_is_type(val, json_type_string) ||
            strlen(s) > TARGET_MAX) {
            host->log(IDB_LOG_ERR, "via", "bad config key '%s'", k);
            goto out;
        }
        memcpy(v->target, s, strlen(s) + 1);
    }
    r = 0;
out:
    json_object_put(o);
    if (r < 0) {
        free(v);
        return r;
    }
    *ret_state = v;
    return 0;
}

static int via_issue(void *state, const struct idb_token_req *req, struct idb_token *ret)
{
    struct via *v = state;
    struct idb_token t = {.size = sizeof(t)};
    int r = v->host->issue_via(v->target, req, &t);
    if (r < 0) {
        v->host->free(t.access_token);
        v->host->free(t.client_id);
        ret->upstream_status = t.upstream_status;
        ret->upstream_error = t.upstream_error;
        ret->retry_after_s = t.retry_after_s;
        return r;
    }
    size_t n = strlen(t.access_token);
    char *tok = v->host->alloc(n + 5);
    if (tok) {
        memcpy(tok, "via:", 4);
        memcpy(tok + 4, t.access_token, n + 1);
    }
    v->host->free(t.access_token);
    v->host->free(t.client_id);
    v->host->free(t.upstream_error);
    if (!tok)
        return -ENOMEM;
    ret->access_token = tok;
    ret->expires_on = t.expires_on;
    return 0;
}

static void via_destroy(void *state)
{
    free(state);
}

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .abi_minor = IDB_PLUGIN_ABI_MINOR,
    .size = sizeof(struct idb_provider),
    .name = "via",
    .version = "1.0-test",
    .init = via_init,
    .issue = via_issue,
    .destroy = via_destroy,
};
