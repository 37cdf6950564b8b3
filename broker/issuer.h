/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token path shared by the HTTP token endpoint and `idbrokerctl token`: caller -> registration ->
 * policy decision -> provider (through the token cache) -> result, plus the audit record.
 * Depends on registry, store, token-cache and plugin-loader; knows nothing of HTTP.
 */
#ifndef IDB_BROKER_ISSUER_H
#define IDB_BROKER_ISSUER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "store.h"

struct token_cache;
struct tc_token;

struct issue_request {
    const char *resource;       /* required */
    enum selector_kind sel;
    const char *sel_value;      /* NULL when sel == SELECTOR_NONE */
    bool bypass_cache;
};

struct issue_result {
    int code;                   /* 0 granted, else IDB_E_* / -errno */
    const struct tc_token *token; /* on success; release with issuer_result_done() */
    char client_id[256];        /* the identity's client ID to report */
    char identity[512];         /* "ns/name" of the chosen identity, "" if none */
    char pod[512];              /* "ns/name" of the caller, "" if unknown */
    long upstream_status;       /* IDB_E_UPSTREAM_4XX */
    char *upstream_error;       /* optional IMDS-shaped JSON from the provider (new) */
    uint32_t retry_after_s;
    char reason[512];           /* for audit/explain; never secret */
};

struct issuer;

/* Issues for the pod owning the connection's source address. Blocks at most until the request deadline
 * (sync wait + provider timeout). Always fills *ret (release with issuer_result_done). */
void issuer_issue_for_peer(struct issuer *is, const struct sockaddr *peer, socklen_t peer_len,
                           const struct issue_request *req, struct issue_result *ret);
/* Issues for pod ns/name (control socket's debug `token`). */
void issuer_issue_for_pod(struct issuer *is, const char *ns, const char *name,
                          const struct issue_request *req, struct issue_result *ret);
void issuer_result_done(struct issuer *is, struct issue_result *r);

#endif
