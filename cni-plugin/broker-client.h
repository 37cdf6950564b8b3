/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plugin's side of the broker's control protocol (include/idbroker/ctl-proto.h). The plugin
 * only tells the broker to re-read a registration it has just written or removed; everything the
 * broker needs is in the state directory, so a broker that is down loses nothing (it loads every
 * registration when it starts).
 */
#ifndef IDB_CNI_BROKER_CLIENT_H
#define IDB_CNI_BROKER_CLIENT_H

#include <json-c/json.h>

#define BROKER_CLIENT_TIMEOUT_MS 500 /* per exchange: connect, write and read together */

/* One exchange: sends `request` (borrowed) and returns the reply's "result" (returns new) in
 * *ret_result (optional). Never waits longer than timeout_ms in total.
 * Returns 0; -ENOENT / -ECONNREFUSED when no broker listens; -ETIMEDOUT; IDB_E_PROTO when the reply
 * is not a ctl-proto reply; or the broker's own (negative) code when it answered ok=false. */
int broker_client_call(const char *socket_path, struct json_object *request, int timeout_ms,
                       struct json_object **ret_result);

/* op "sync" {containerId, ifName}. */
int broker_client_sync(const char *socket_path, const char *container_id, const char *if_name,
                       int timeout_ms);

#endif
