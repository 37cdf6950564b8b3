/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A well-behaved test provider. Its token is "good-token-<n>", n counting this instance's issue()
 * calls from 1, so tests can count upstream calls (singleflight, cache) by looking at the token.
 * Config: {"delayMs": N} sleeps N ms (0..60000) in each issue(); {"fail": "unavailable"} fails
 * every issue() with IDB_E_UPSTREAM_UNAVAILABLE (retry_after_s 5), {"fail": "4xx"} with
 * IDB_E_UPSTREAM_4XX (status 400, an IMDS-shaped error body). Any other key or value makes init()
 * fail.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <idbroker/provider.h>

enum fail_mode {
    FAIL_NONE,
    FAIL_UNAVAILABLE,
    FAIL_4XX,
};

struct good {
    const struct idb_host_api *host;
    long delay_ms;
    enum fail_mode fail;
    atomic_ulong calls;
};

/* Not exported (hidden visibility): the loader test checks dlsym() cannot see it. */
unsigned long good_issue_count(const struct good *g);
unsigned long good_issue_count(const struct good *g)
{
    return atomic_load(&g->calls);
}

static int parse_conf(struct good *g, const char *conf)
{
    struct json_object *o = json_tokener_parse(conf);
    int r = -EINVAL;
    if (!o || !json_object_is_type(o, json_type_object))
        goto out;
    json_object_object_foreach(o, k, v)
    {
        if (strcmp(k, "delayMs") == 0 && json_object_is_type(v, json_type_int)) {
            g->delay_ms = (long)json_object_get_int64(v);
            if (g->delay_ms < 0 || g->delay_ms > 60000)
                goto out;
        } else if (strcmp(k, "fail") == 0 && json_object_is_type(v, json_type_string)) {
            const char *s = json_object_get_string(v);
            if (strcmp(s, "unavailable") == 0)
                g->fail = FAIL_UNAVAILABLE;
            else if (strcmp(s, "4xx") == 0)
                g->fail = FAIL_4XX;
            else
                goto out;
        } else {
            g->host->log(IDB_LOG_ERR, "good", "bad config key '%s'", k);
            goto out;
        }
    }
    r = 0;
out:
    json_object_put(o);
    return r;
}

static int good_init(const struct idb_host_api *host, const char *conf, void **ret_state)
{
    struct good *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->host = host;
    atomic_init(&g->calls, 0);
    int r = parse_conf(g, conf);
    if (r < 0) {
        free(g);
        return r;
    }
    *ret_state = g;
    return 0;
}

static char *dup_host(const struct idb_host_api *host, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = host->alloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static int good_issue(void *state, const struct idb_token_req *req, struct idb_token *ret)
{
    struct good *g = state;
    unsigned long n = atomic_fetch_add(&g->calls, 1) + 1;
    if (!req || !req->resource)
        return -EINVAL;
    if (g->delay_ms > 0) {
        struct timespec ts = {.tv_sec = g->delay_ms / 1000,
                              .tv_nsec = (g->delay_ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    if (g->fail == FAIL_UNAVAILABLE) {
        ret->retry_after_s = 5;
        return IDB_E_UPSTREAM_UNAVAILABLE;
    }
    if (g->fail == FAIL_4XX) {
        ret->upstream_status = 400;
        ret->upstream_error = dup_host(
            g->host,
            "{\"error\":\"invalid_request\",\"error_description\":\"good: told to fail\"}");
        return IDB_E_UPSTREAM_4XX;
    }
    char tok[64];
    snprintf(tok, sizeof(tok), "good-token-%lu", n);
    ret->access_token = dup_host(g->host, tok);
    if (!ret->access_token)
        return -ENOMEM;
    ret->expires_on = g->host->now_realtime() + 3600;
    ret->not_before = 0;
    return 0;
}

static void good_destroy(void *state)
{
    free(state);
}

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .abi_minor = IDB_PLUGIN_ABI_MINOR,
    .size = sizeof(struct idb_provider),
    .name = "good",
    .version = "1.0-test",
    .init = good_init,
    .issue = good_issue,
    .destroy = good_destroy,
};
