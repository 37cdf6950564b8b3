/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The services the broker hands to provider plugins (struct idb_host_api, STYLE R13): logging with
 * a [provider:<name>] prefix, allocation, clocks, HTTP through libcurl (no proxy, TLS verified,
 * bounded reply size), issue_via (another provider's token through the broker's cache) and the
 * node-wide upstream limiters (ABI 1.1).
 */
#ifndef IDB_BROKER_HOST_API_H
#define IDB_BROKER_HOST_API_H

#include <idbroker/provider.h>

/* issue_via is routed to this function (set by main; NULL = -ENOTSUP). */
typedef int (*host_issue_via_fn)(const char *provider, const struct idb_token_req *req,
                                 struct idb_token *ret);

/* Returns the broker's host API, static storage. Call host_api_init() once before loading plugins.
 */
const struct idb_host_api *host_api_get(void);
int host_api_init(host_issue_via_fn issue_via);
void host_api_done(void);

/*
 * The upstream limiters of the host API (ABI 1.1; contracts as upstream_limits, upstream_acquire
 * and upstream_release in <idbroker/provider.h>), for the broker's own callers: the token
 * endpoint's pass-through to the node's IMDS takes slots of IDB_UPSTREAM_IMDS, so excepted pods and
 * the azure-msi provider share one node-wide budget. host_api_init() creates IDB_UPSTREAM_IMDS with
 * IMDS' documented limits; host_api_done() drops every limiter.
 */
int host_api_upstream_limits(const char *name, uint32_t max_concurrent, uint32_t max_per_second);
int host_api_upstream_acquire(const char *name, uint64_t deadline_ms, uint32_t *hint_ms);
void host_api_upstream_release(const char *name);

/* Sends the plugins' limiter calls (the host API's upstream_* members; not host_api_upstream_*)
 * to these functions instead (borrowed; NULL restores the local limiters). The provider host
 * routes them to the broker, whose limiters are the node's. Call before loading plugins. */
struct host_upstream_router {
    int (*limits)(const char *name, uint32_t max_concurrent, uint32_t max_per_second);
    int (*acquire)(const char *name, uint64_t deadline_ms, uint32_t *hint_ms);
    void (*release)(const char *name);
};
void host_api_set_upstream_router(const struct host_upstream_router *r);

uint64_t now_monotonic_ms(void);
uint64_t now_realtime_s(void);

#endif
