/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control socket server (include/idbroker/ctl-proto.h): unix stream socket, 0600 in a 0700
 * directory, one request per connection, capped (IDB_CTL_MAX_REQUEST), with an I/O timeout. Serves
 * on its own thread; dispatches each op to the handler table given at start.
 */
#ifndef IDB_BROKER_CONTROL_H
#define IDB_BROKER_CONTROL_H

#include <json-c/json.h>

/* Handles one op. `req` is the whole request (borrowed). Returns 0 with *ret_result (returns new;
 * may be NULL for {}) or < 0 with *ret_error (returns new, optional) explaining it. */
typedef int (*control_op_fn)(void *ud, struct json_object *req, struct json_object **ret_result,
                             char **ret_error);

struct control_op {
    const char *name;
    control_op_fn fn;
    int root_only; /* requires SO_PEERCRED uid 0 */
};

struct control_server;

/* Binds `path` (absolute; removing a stale socket; creating the parent 0700), listens, and serves
 * `ops` (NULL-terminated by name; borrowed, must outlive the server) on a thread. Each connection
 * gets a thread of its own (at most CTL_MAX_CLIENTS; more get -EBUSY), so handlers may run
 * concurrently with each other and with the caller's threads: they do their own locking.
 * Returns -EADDRINUSE if another server answers on `path`, -EEXIST if `path` is not a socket,
 * -EPERM if the directory belongs to another uid or is shared and writable by others (logged). */
int control_server_start(const char *path, const struct control_op *ops, void *ud,
                         struct control_server **ret);
/* Stops, unlinks the socket, frees. Accepts NULL. */
struct control_server *control_server_stop(struct control_server *s);

/* Handles one raw request text (used by the server and by the fuzz target); returns the reply
 * (returns new, NUL-terminated JSON + "\n"; NULL only when out of memory). peer_uid is the caller's
 * uid. */
char *control_handle_message(const struct control_op *ops, void *ud, const char *text, size_t len,
                             unsigned peer_uid);

#endif
