/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The broker's control protocol (DESIGN §1.4, §6, §9): a unix stream socket, root only (0600 in a
 * 0700 directory). One exchange per connection: the client writes one JSON object followed by "\n"
 * (or shuts down its write side); the broker answers with one JSON object followed by "\n" and
 * closes.
 *
 * Request:  {"version": 1, "op": "<op>", ...op arguments...}
 * Reply:    {"version": 1, "ok": true, "result": <op result>}
 *           {"version": 1, "ok": false, "error": "<message>", "code": <negative errno / IDB_E_*>}
 *
 * A request of another version gets ok=false with code -EPROTONOSUPPORT; one without an integer
 * "version", without a string "op", or that is not exactly one JSON object gets IDB_E_PROTO.
 * Unknown request keys are ignored (so newer clients can add optional arguments); unknown ops get
 * -EOPNOTSUPP. Root-only ops (token, reload, register, unregister, sync) from another uid
 * (SO_PEERCRED) get -EPERM. The request must arrive within the broker's I/O timeout (else
 * -ETIMEDOUT) and fit IDB_CTL_MAX_REQUEST, not counting the newline (else -E2BIG); a broker busy
 * with its maximum number of clients answers -EBUSY at once.
 *
 * Ops and arguments:
 *   status                                   -> {nodeName, version, ready, pods, identities, ...}
 *   pods                                     -> [registration ...]
 *   identities | bindings | exceptions       -> [object ...]
 *   providers                                -> [{name, version, abiMajor, abiMinor, path}]
 *   explain   {namespace, name}              -> {pod, registered, registration?, decision, reason,
 *                                                identity, candidates:[{binding, identity, weight,
 *                                                applies, why}], labels, note?}
 *   token     {namespace, name, resource, clientId?|objectId?|resourceId?, bypassCache?}
 *                                            -> IMDS token JSON
 *   reload                                   -> {}
 *   register  {registration: {...}}          -> {} (the broker persists it in stateDir)
 *   unregister {namespace, name} | {containerId[, ifName (default "eth0")]} -> {removed: N}
 *   sync      {containerId, ifName}          -> {} (re-read that registration from stateDir:
 *                                               the CNI plugin has written or removed it)
 *
 * Registrations use the on-disk format of include/idbroker-internal/registration.h.
 */
#ifndef IDBROKER_CTL_PROTO_H
#define IDBROKER_CTL_PROTO_H

#define IDB_CTL_VERSION 1
#define IDB_CTL_DEFAULT_SOCKET "/run/idbroker/idbrokerd.sock"
/* Hard caps on one message (STYLE R11). Requests are small; replies list pods and policy. */
#define IDB_CTL_MAX_REQUEST (64 * 1024)
#define IDB_CTL_MAX_REPLY (32 * 1024 * 1024)

#define IDB_CTL_OP_STATUS "status"
#define IDB_CTL_OP_PODS "pods"
#define IDB_CTL_OP_IDENTITIES "identities"
#define IDB_CTL_OP_BINDINGS "bindings"
#define IDB_CTL_OP_EXCEPTIONS "exceptions"
#define IDB_CTL_OP_PROVIDERS "providers"
#define IDB_CTL_OP_EXPLAIN "explain"
#define IDB_CTL_OP_TOKEN "token"
#define IDB_CTL_OP_RELOAD "reload"
#define IDB_CTL_OP_REGISTER "register"
#define IDB_CTL_OP_UNREGISTER "unregister"
#define IDB_CTL_OP_SYNC "sync"

#endif
