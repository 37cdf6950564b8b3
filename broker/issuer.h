/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token path shared by the HTTP token endpoint and `idbrokerctl token`: caller -> registration
 * -> policy decision -> provider (through the token cache) -> result, plus the audit record.
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
    const char *resource; /* required */
    enum selector_kind sel;
    const char *sel_value; /* NULL when sel == SELECTOR_NONE */
    bool bypass_cache;
    /* Answer only what needs no waiting: a cached token, or a decision that is already final. When
     * answering would block (a cache miss or due refresh, bypass_cache, a policy not yet synced
     * for the pod) the result has would_block set and nothing happened: no rate-limit charge, no
     * metric, no audit record. Ask again without nowait where blocking is allowed. */
    bool nowait;
};

struct issue_result {
    int code;                     /* 0 granted, else IDB_E_* / -errno */
    const struct tc_token *token; /* on success; release with issuer_result_done() */
    char client_id[256];          /* the identity's client ID to report */
    char identity[512];           /* "ns/name" of the chosen identity, "" if none */
    char pod[512];                /* "ns/name" of the caller, "" if unknown */
    long upstream_status;         /* IDB_E_UPSTREAM_4XX */
    char *upstream_error;         /* optional IMDS-shaped JSON from the provider (new) */
    uint32_t retry_after_s;
    char reason[512]; /* for audit/explain; never secret */
    bool would_block; /* nowait only: ask again where blocking is allowed (code is -EAGAIN) */
};

struct issuer;
struct registry;
struct policy;
struct plugin_set;
struct idb_token_req;
struct idb_token;

struct issuer_options {
    struct registry *registry;     /* borrowed, must outlive the issuer */
    struct policy *policy;         /* borrowed */
    struct token_cache *cache;     /* borrowed */
    struct plugin_set *plugins;    /* borrowed; fixed for the issuer's life */
    const char *type_providers[3]; /* copied; NULL = none */
    uint32_t sync_timeout_ms;      /* wait for identity data of a known pod */
    uint32_t provider_timeout_ms;  /* deadline of one provider call */
    uint32_t retry_after_s;
    uint32_t rate_per_pod; /* tokens per second per pod; 0 = unlimited */
    uint32_t rate_burst;
    bool audit; /* one audit record per issued or denied token */
    /* Called after every token handed to a pod (cache hit or not), on the request's thread with no
     * lock held; strings borrowed for the call. For the AzureAssignedIdentity writer (status
     * Created -> Assigned). Optional. */
    void (*on_issued)(void *ud, const char *pod_ns, const char *pod_name, const char *id_ns,
                      const char *id_name);
    void *on_issued_ud;
};

struct pod_meta;
struct registration;
/* Cross-checks a registration (from CNI) against the pod the policy source knows (THREATS T2):
 * namespace/name, the UID when both have one, and every registration IP among the pod's IPs when
 * the source lists IPs (a pod whose IP the kubelet has not reported yet is checked by UID alone).
 * Returns 0 when they agree, else IDB_E_NOT_SYNCED and a reason in why[0..n). Both borrowed. */
int issuer_check_registration(const struct pod_meta *pm, const struct registration *reg, char *why,
                              size_t n);

/* Returns new, or NULL on allocation failure. */
struct issuer *issuer_new(const struct issuer_options *o);
struct issuer *issuer_free(struct issuer *is);
/* Applies changed options (reload). The borrowed pointers must stay the same. */
int issuer_set_options(struct issuer *is, const struct issuer_options *o);
/* Drops cached tokens of identities that changed, vanished or are no longer bound by any binding.
 * Call after a policy change. Returns how many were dropped. */
size_t issuer_evict_stale(struct issuer *is);
/* host API issue_via: a token of `provider` for req (e.g. keyvault asks azure-msi), through the
 * cache. */
int issuer_issue_via(struct issuer *is, const char *provider, const struct idb_token_req *req,
                     struct idb_token *ret);

/* Issues for the pod owning the connection's source address. Blocks at most until the request
 * deadline (sync wait + provider timeout). Always fills *ret (release with issuer_result_done). */
void issuer_issue_for_peer(struct issuer *is, const struct sockaddr *peer, socklen_t peer_len,
                           const struct issue_request *req, struct issue_result *ret);
/* The registration owning the connection's source address: the attribution
 * issuer_issue_for_peer() makes, without a policy decision, an audit record or a provider call.
 * Returns 0 and copies it to *ret; -ENOENT (no pod owns the address), IDB_E_AMBIGUOUS_POD,
 * -EAFNOSUPPORT (not an IPv4/IPv6 address). */
int issuer_peer_registration(struct issuer *is, const struct sockaddr *peer, socklen_t peer_len,
                             struct registration *ret);
/* Issues for pod ns/name (control socket's debug `token`). */
void issuer_issue_for_pod(struct issuer *is, const char *ns, const char *name,
                          const struct issue_request *req, struct issue_result *ret);
void issuer_result_done(struct issuer *is, struct issue_result *r);

#endif
