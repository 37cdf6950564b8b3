/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small HTTP/1.1 server over libmicrohttpd for the token endpoint and the health listener. The
 * handler sees the raw request target (before any decoding: canonicalisation is the handler's job),
 * the method, headers and the peer address. Caps from limits.h apply before the handler runs: an
 * oversized target -> 414, oversized or too many headers -> 431, any request body -> 413, too many
 * connections -> refused.
 *
 * Two serving models (http_server_options.threads):
 * - 0: a thread per connection; the handler is always called with may_block set and may block.
 * - N > 0: N event-loop threads (epoll). The handler is first called on an event-loop thread with
 *   may_block false: it must answer without blocking, or set resp->defer (and nothing else). The
 *   connection is then suspended and the handler is called again, with may_block set, on a thread
 *   of its own; its answer is sent when it returns. Other connections keep being served meanwhile.
 */
#ifndef IDB_BROKER_HTTP_SERVER_H
#define IDB_BROKER_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct http_request {
    const char *method;  /* as sent, e.g. "GET" */
    const char *raw_uri; /* request target exactly as sent, with the query */
    const struct sockaddr *peer;
    socklen_t peer_len;
    bool may_block; /* false: answer now or set resp->defer (see the top of this file) */
    void *impl;     /* server internal */
};

/* Case-insensitive header lookup: the first value, or NULL. */
const char *http_request_header(const struct http_request *r, const char *name);
/* How many times a header appears. */
unsigned http_request_header_count(const struct http_request *r, const char *name);

struct http_response {
    int status;               /* 0 = 500 */
    const char *content_type; /* static string; NULL = none */
    char *body;               /* from malloc; the server frees it (wiped first if `secret`) */
    size_t body_len;
    bool secret;            /* body holds a token: wiped after sending */
    uint32_t retry_after_s; /* > 0 adds Retry-After */
    const char *allow;      /* adds Allow (405) */
    bool defer;             /* only when !may_block: call me again where I may block */
};

typedef void (*http_handler_fn)(void *ud, const struct http_request *req,
                                struct http_response *resp);

struct http_server_options {
    unsigned max_connections;
    unsigned max_per_ip;
    unsigned timeout_s;
    unsigned threads; /* 0: a thread per connection; N: N epoll event-loop threads */
};

struct http_server;

/* Listens on "IP:PORT" / "[V6]:PORT" and serves in the model o->threads selects (top of this file).
 * Returns new, or NULL with *ret_error (returns new). */
struct http_server *http_server_start(const char *listen, const struct http_server_options *o,
                                      http_handler_fn fn, void *ud, char **ret_error);
/* Stops listening, waits for handlers (deferred ones too) to return, frees. Accepts NULL. */
struct http_server *http_server_stop(struct http_server *s);
/* Sets resp to a JSON body (copied) with status. */
int http_response_json(struct http_response *resp, int status, const char *json);

#endif
