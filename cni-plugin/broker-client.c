/* SPDX-License-Identifier: Apache-2.0 */
#include "broker-client.h"

#include <errno.h>

#include <idbroker/ctl-proto.h>

#include <idbroker-internal/ctl-client.h>
#include <idbroker-internal/json-util.h>

int broker_client_sync(const char *socket_path, const char *container_id, const char *if_name,
                       int timeout_ms)
{
    _cleanup_json_ struct json_object *req = ctl_request_new(IDB_CTL_OP_SYNC);
    if (!req || json_add_str(req, "containerId", container_id) < 0 ||
        json_add_str(req, "ifName", if_name) < 0)
        return -ENOMEM;
    _cleanup_json_ struct json_object *res = NULL;
    return ctl_call(socket_path, req, timeout_ms, &res, NULL);
}
