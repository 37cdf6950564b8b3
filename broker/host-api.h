/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The services the broker hands to provider plugins (struct idb_host_api, STYLE R13): logging with
 * a [provider:<name>] prefix, allocation, clocks, HTTP through libcurl (no proxy, TLS verified,
 * bounded reply size), and issue_via (another provider's token through the broker's cache).
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

uint64_t now_monotonic_ms(void);
uint64_t now_realtime_s(void);

#endif
