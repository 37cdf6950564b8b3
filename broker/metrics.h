/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus metrics (DESIGN §9). Counters are atomics; labels come from small fixed sets (status
 * code, provider name, result), never pod or identity names. Rendered in the text exposition format
 * 0.0.4.
 */
#ifndef IDB_BROKER_METRICS_H
#define IDB_BROKER_METRICS_H

#include <stdint.h>

struct buf;

enum metric_counter {
    M_CACHE_HITS,
    M_CACHE_MISSES,
    M_CACHE_REFRESHES,
    M_CACHE_COALESCED,
    M_UPSTREAM_ERRORS,
    M_UPSTREAM_TIMEOUTS,
    M_UPSTREAM_THROTTLES,
    M_REGISTRATIONS_ADDED,
    M_REGISTRATIONS_REMOVED,
    M_SOURCE_RELOADS,
    M_SOURCE_RELOAD_ERRORS,
    M_WATCH_RELISTS,
    M_CTL_REQUESTS,
    M_RATE_LIMITED,
    M_PROVIDER_RESTARTS,
    _M_COUNTER_MAX,
};

enum metric_gauge {
    G_REGISTRATIONS,
    G_IDENTITIES,
    G_BINDINGS,
    G_CACHE_ENTRIES,
    G_READY,
    G_CNI_CHAIN_OK,
    G_UNPROTECTED_PODS,
    _G_GAUGE_MAX,
};

void metrics_inc(enum metric_counter m);
void metrics_add(enum metric_counter m, uint64_t v);
void metrics_set(enum metric_gauge g, int64_t v);
/* Token endpoint replies by HTTP status. */
void metrics_http_status(int status);
/* A provider call: name must be a loaded provider's name (bounded set); ok/err; latency in ms. */
void metrics_provider_call(const char *provider, int result, uint64_t latency_ms);
/* CNI-related control operations (register/unregister/sync) by op and result. */
void metrics_ctl_op(const char *op, int result);
/* Appends the exposition text. */
int metrics_render(struct buf *out);
/* For tests. */
uint64_t metrics_get(enum metric_counter m);
uint64_t metrics_provider_calls(const char *provider);
void metrics_reset(void);

#endif
