/* SPDX-License-Identifier: Apache-2.0 */
/*
 * idbroker error codes (STYLE R5).
 *
 * Every function in idbroker, and every provider plugin, returns int: >= 0 on success, a negative
 * errno on failure. Codes of idbroker's own live in the reserved range -10001 .. -10999 and come
 * from the X-macro below. The list is append-only: a code never changes its value or meaning once
 * released.
 */
#ifndef IDBROKER_ERRNO_H
#define IDBROKER_ERRNO_H

#ifdef __cplusplus
extern "C" {
#endif

#define IDB_ERRNO_MAP(X)                                                                           \
    X(NO_BINDING, -10001, "no binding grants an identity to this pod")                             \
    X(PLUGIN_ABI, -10002, "plugin ABI mismatch")                                                   \
    X(UNKNOWN_POD, -10003, "caller is not a pod registered on this node")                          \
    X(IDENTITY_NOT_FOUND, -10004, "requested identity is not bound to this pod")                   \
    X(NOT_SYNCED, -10005, "identity data not yet synced")                                          \
    X(MULTIPLE_IDENTITIES, -10006, "multiple identities bound and none requested")                 \
    X(RATE_LIMITED, -10007, "rate limit exceeded")                                                 \
    X(UPSTREAM_4XX, -10008, "upstream refused the request")                                        \
    X(UPSTREAM_UNAVAILABLE, -10009, "upstream unavailable")                                        \
    X(UPSTREAM_BAD_REPLY, -10010, "upstream sent a malformed reply")                               \
    X(PROVIDER_TIMEOUT, -10011, "provider did not answer in time")                                 \
    X(NO_PROVIDER, -10012, "no provider serves this identity")                                     \
    X(BAD_CONFIG, -10013, "invalid configuration")                                                 \
    X(BAD_MANIFEST, -10014, "invalid manifest")                                                    \
    X(AMBIGUOUS_POD, -10015, "more than one live registration owns this address")                  \
    X(EXCEPTED, -10016, "pod is excepted from identity brokering")                                 \
    X(PROTO, -10017, "protocol error")                                                             \
    X(NODE_CALLER, -10018, "caller is the node itself (hostNetwork pod or node process)")

enum {
#define X(name, val, msg) IDB_E_##name = (val),
    IDB_ERRNO_MAP(X)
#undef X
};

/* The message of a code is available to plugins through idb_host_api.strerror (provider.h). */

#ifdef __cplusplus
}
#endif
#endif
