/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A client of the broker's control socket (include/idbroker/ctl-proto.h), shared by idbrokerctl and
 * the CNI plugin. One call is one connection: connect, write the request, read the reply, close.
 */
#ifndef IDBROKER_INTERNAL_CTL_CLIENT_H
#define IDBROKER_INTERNAL_CTL_CLIENT_H

#include <json-c/json.h>
#include <stdbool.h>

/* Returns a new request object {"version": IDB_CTL_VERSION, "op": op} (returns new), NULL on
 * ENOMEM. */
struct json_object *ctl_request_new(const char *op);

/* Sends `request` (borrowed; it must carry "version" and "op", see ctl_request_new()) to the broker
 * at socket_path and waits for the reply. timeout_ms bounds the whole exchange (connect, write,
 * read); < 0 waits forever.
 *
 * On success returns 0 with *ret_reply = the reply's "result" (returns new; an empty object when
 * the broker sent none). On failure returns < 0 and, if ret_error is not NULL, sets *ret_error to a
 * message (returns new; may stay NULL on ENOMEM): -ENOENT, -ECONNREFUSED  the broker is not running
 * (no socket, or a stale one) -EACCES                 the socket is not ours to use (root only)
 *   -ETIMEDOUT              no complete reply within timeout_ms
 *   -E2BIG                  the reply is larger than IDB_CTL_MAX_REPLY
 *   IDB_E_PROTO             the reply is not a valid control reply
 *   any other code          the broker's "code" for ok=false, with its "error" as the message
 * Connection failures and broker codes share one space; ctl_error_is_unreachable() tells the common
 * "broker is down" ones apart only if handlers do not return those codes themselves (they do not).
 */
int ctl_call(const char *socket_path, struct json_object *request, int timeout_ms,
             struct json_object **ret_reply, char **ret_error);

/* True for the errors meaning "no broker listens at that path" (-ENOENT, -ECONNREFUSED, -ENOTSOCK).
 */
bool ctl_error_is_unreachable(int r);

#endif
