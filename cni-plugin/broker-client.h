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

/* op "sync" {containerId, ifName} through the shared client (common/ctl-client.c). Never waits
 * longer than timeout_ms in total. Returns 0; -ENOENT / -ECONNREFUSED when no broker listens;
 * -ETIMEDOUT; IDB_E_PROTO for a reply that is not a ctl-proto reply; or the broker's own code. */
int broker_client_sync(const char *socket_path, const char *container_id, const char *if_name,
                       int timeout_ms);

#endif
