/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The IMDS-compatible token endpoint (DESIGN §3; threats T6, T7, T8, T9). Request target handling
 * is a pure function (fuzzed): canonicalise once, classify, parse the query. The handler then
 * checks method, headers, asks the issuer and renders IMDS' exact shapes.
 */
#ifndef IDB_BROKER_TOKEN_ENDPOINT_H
#define IDB_BROKER_TOKEN_ENDPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "http-server.h"
#include "store.h"

enum te_route {
    TE_ROUTE_TOKEN,     /* /metadata/identity/oauth2/token[/] */
    TE_ROUTE_INSTANCE,  /* /metadata/instance[/...] */
    TE_ROUTE_VERSIONS,  /* /metadata/versions */
    TE_ROUTE_NOT_FOUND, /* a well-formed path we do not serve */
    TE_ROUTE_REJECTED,  /* a non-canonical or malformed target (dot-segments, //, ;params, bad %) */
};

struct te_query {
    char *resource;    /* decoded; NULL if absent */
    char *api_version; /* NULL if absent */
    enum selector_kind sel;
    char *sel_value; /* decoded; NULL if none */
    bool bypass_cache;
    bool has_query; /* a '?' was present */
    char *path;     /* canonical path */
    char *query;    /* raw query (for pass-through), NULL if none */
};

void te_query_done(struct te_query *q);

/* Parses a raw request target. Returns 0 with *ret_route and *ret_q filled (release with
 * te_query_done), or < 0 (-EINVAL: malformed query, duplicate keys, several selectors, over caps)
 * with *ret_desc (returns new) an IMDS-style error_description. TE_ROUTE_REJECTED is a success
 * return. */
int token_endpoint_parse_target(const char *raw_uri, enum te_route *ret_route,
                                struct te_query *ret_q, char **ret_desc);

/* Whether `v` is an api-version IMDS accepts for identity tokens. */
bool token_endpoint_api_version_valid(const char *v);

struct issuer;
struct tc_token;

/* IMDS' success body (DESIGN §3) for token t: access_token, client_id, expires_in (seconds left at
 * `now`), expires_on, ext_expires_in, not_before, resource (echo), token_type "Bearer" — every
 * value a JSON string. *ret (returns new, exactly sized) holds the token: wipe it before freeing.
 */
int token_endpoint_render_token(const struct tc_token *t, const char *client_id,
                                const char *resource, uint64_t now, char **ret, size_t *ret_len);

struct token_endpoint_options {
    const char *listen_host; /* the broker's own address, accepted as Host */
    /* /metadata/instance and /metadata/versions are proxied for every caller when the boolean is
     * set, else only for pods whose registration (issuer_peer_registration()) is in one of the
     * listed namespaces (borrowed, copied); everyone else gets 403 (THREATS T8). */
    bool proxy_instance;
    bool proxy_versions;
    char *const *instance_namespaces;
    size_t n_instance_namespaces;
    char *const *versions_namespaces;
    size_t n_versions_namespaces;
    const char *imds_endpoint; /* where /metadata/instance is proxied */
    uint32_t retry_after_s;
};

struct token_endpoint;
struct token_endpoint *token_endpoint_new(struct issuer *is,
                                          const struct token_endpoint_options *o);
struct token_endpoint *token_endpoint_free(struct token_endpoint *te);
/* http_handler_fn for http_server_start(ud = te). */
void token_endpoint_handle(void *te, const struct http_request *req, struct http_response *resp);

#endif
