/* SPDX-License-Identifier: Apache-2.0 */
/* The health listener (DESIGN §9): /healthz, /readyz, /metrics on a separate, loopback-by-default
 * port. */
#include <stdlib.h>
#include <string.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/macro.h>

#include "broker.h"
#include "conflist-watch.h"
#include "http-server.h"
#include "metrics.h"
#include "registry.h"
#include "store.h"
#include "token-cache.h"

#define METRICS_MAX_BYTES (4 * 1024 * 1024)

static void text(struct http_response *resp, int status, const char *body)
{
    resp->status = status;
    resp->content_type = "text/plain; charset=utf-8";
    resp->body = strdup(body);
    resp->body_len = resp->body ? strlen(body) : 0;
}

/* Gauges are sampled when scraped rather than kept up to date on every change. */
static void sample_gauges(struct broker *b)
{
    metrics_set(G_REGISTRATIONS, (int64_t)registry_count(b->registry));
    policy_read_lock(&b->policy);
    metrics_set(G_IDENTITIES, (int64_t)store_count_identities(b->policy.store));
    metrics_set(G_BINDINGS, (int64_t)store_count_bindings(b->policy.store));
    policy_read_unlock(&b->policy);
    struct tc_stats st;
    token_cache_stats(b->cache, &st);
    metrics_set(G_CACHE_ENTRIES, (int64_t)st.entries);
    metrics_set(G_READY, broker_ready(b, NULL, 0) ? 1 : 0);
    metrics_set(G_CNI_CHAIN_OK, !b->cni || conflist_watch_ok(b->cni, NULL, 0) ? 1 : 0);
}

void health_handle(void *ud, const struct http_request *req, struct http_response *resp)
{
    struct broker *b = ud;
    const char *path = req->raw_uri;
    size_t plen = strcspn(path, "?");
    if (!streq(req->method, "GET") && !streq(req->method, "HEAD")) {
        text(resp, 405, "method not allowed\n");
        resp->allow = "GET, HEAD";
        return;
    }
    if (plen == 8 && strncmp(path, "/healthz", 8) == 0) {
        text(resp, 200, "ok\n");
        return;
    }
    if (plen == 7 && strncmp(path, "/readyz", 7) == 0) {
        char why[BROKER_WHY_MAX];
        if (broker_ready(b, why, sizeof(why))) {
            text(resp, 200, "ready\n");
            return;
        }
        struct buf m;
        buf_init(&m, 1024);
        buf_printf(&m, "not ready: %s\n", why);
        resp->status = 503;
        resp->content_type = "text/plain; charset=utf-8";
        resp->body_len = m.len;
        resp->body = buf_steal(&m);
        return;
    }
    if (plen == 8 && strncmp(path, "/metrics", 8) == 0) {
        sample_gauges(b);
        struct buf m;
        buf_init(&m, METRICS_MAX_BYTES);
        if (metrics_render(&m) < 0) {
            buf_done(&m);
            text(resp, 500, "metrics unavailable\n");
            return;
        }
        resp->status = 200;
        resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
        resp->body_len = m.len;
        resp->body = buf_steal(&m);
        return;
    }
    text(resp, 404, "not found\n");
}
