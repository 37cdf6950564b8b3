/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Token cache keyed by an opaque string (the broker uses provider, identity key and hash,
 * resource).
 * - Single-flight: N concurrent misses for one key cause exactly one fetch.
 * - Every fetch runs on a worker thread owned by the cache; callers wait at most until their
 * deadline, so a hanging provider costs requests an error (IDB_E_PROVIDER_TIMEOUT), never a stuck
 * caller.
 * - Refresh before expiry: a hit on an entry past half its lifetime starts one background fetch and
 *   returns the still-valid token at once. Entries with less than min_ttl_s left are not served.
 * - Proactive refresh: a refresher thread refreshes, with the fetch closure that last filled the
 *   entry, every token past half its lifetime that was asked for within the last token lifetime,
 *   so callers of a key in use find a fresh token; a key nobody asks for is left to expire.
 * - Negative cache: a failed fetch is remembered for negative_ms (same error to every caller).
 * - Bounded: at most max_entries; least recently used entries go first.
 * Thread-safe. Tokens handed out are immutable and refcounted: release them with
 * token_cache_release().
 */
#ifndef IDB_BROKER_TOKEN_CACHE_H
#define IDB_BROKER_TOKEN_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tc_token {
    char *access_token;      /* secret: wiped when the last reference goes */
    char *client_id;         /* may be NULL */
    uint64_t expires_on;     /* epoch seconds */
    uint64_t not_before;     /* epoch seconds */
    uint64_t ext_expires_in; /* seconds */
    uint64_t issued_at;      /* epoch seconds when fetched */
};

/* A fetch failure, passed to every waiter. Strings are owned by the cache (copied out by callers).
 */
struct tc_error {
    int code;               /* < 0 */
    long upstream_status;   /* 0 if none */
    char *upstream_error;   /* IMDS-shaped JSON body or NULL */
    uint32_t retry_after_s; /* 0 if none */
};

/* Fetches a token. Runs on a cache worker thread with no cache lock held. Fills *ret (strings from
 * malloc; the cache takes them) and returns 0, or returns < 0 and may fill *ret_err's fields
 * (strings from malloc). */
typedef int (*tc_fetch_fn)(void *ud, struct tc_token *ret, struct tc_error *ret_err);
/* Frees the fetch's userdata once it is no longer needed. The cache keeps the userdata of the fetch
 * that filled an entry for the entry's background refreshes, so it may live until the entry goes,
 * and it may be freed under the cache's lock: it must not call into the cache. */
typedef void (*tc_free_fn)(void *ud);

#define TC_DEFAULT_REFRESH_INTERVAL_MS 1000u
#define TC_REFRESH_OFF UINT32_MAX /* refresh_interval_ms: no refresher thread */

struct tc_options {
    uint32_t max_entries;
    uint32_t min_ttl_s;
    uint32_t negative_ms;
    /* For tests: a clock returning epoch seconds; NULL = time(). */
    uint64_t (*now)(void);
    /* How often the refresher scans: 0 = TC_DEFAULT_REFRESH_INTERVAL_MS; TC_REFRESH_OFF at
     * token_cache_new() = no refresher thread at all (token_cache_refresh_due() still works). */
    uint32_t refresh_interval_ms;
};

struct tc_stats {
    uint64_t hits, misses, refreshes, coalesced, fetches, fetch_errors, timeouts, evictions;
    uint64_t entries;
    uint64_t proactive_refreshes; /* refreshes started by the refresher (also in refreshes) */
    uint64_t running;             /* fetches running now */
};

/* Starts the refresher thread unless o->refresh_interval_ms is TC_REFRESH_OFF. */
struct token_cache *token_cache_new(const struct tc_options *o);
/* Stops the refresher and waits for running fetches to finish before freeing. */
struct token_cache *token_cache_free(struct token_cache *c);

/*
 * Returns a token for `key`. On a valid hit returns at once. Otherwise joins or starts a fetch
 * (fetch/ud; the cache takes ud in every case and frees it with free_ud) and waits until it
 * completes or until deadline_ms (CLOCK_MONOTONIC ms). bypass skips a cached value (the fresh
 * result replaces it; concurrent bypassers share one fetch). Returns 0 with *ret_token (release
 * with token_cache_release) and *ret_hit; or < 0: IDB_E_PROVIDER_TIMEOUT at the deadline, or the
 * fetch's error with *ret_err filled (strings are new copies; free them with tc_error_done()).
 */
int token_cache_get(struct token_cache *c, const char *key, bool bypass, uint64_t deadline_ms,
                    tc_fetch_fn fetch, void *ud, tc_free_fn free_ud,
                    const struct tc_token **ret_token, bool *ret_hit, struct tc_error *ret_err);
/* The plain hit only, without a fetch closure: returns 0 with *ret_token (release it) when `key`
 * has a servable token and no refresh is due, else -EAGAIN — then call token_cache_get(), which
 * handles misses, due refreshes and remembered failures. Never blocks on or starts a fetch. */
int token_cache_peek(struct token_cache *c, const char *key, const struct tc_token **ret_token);
void token_cache_release(struct token_cache *c, const struct tc_token *t);
/* Stops the refresher for good (no new background fetch starts after this), then waits until no
 * fetch is running or deadline_ms (CLOCK_MONOTONIC ms) passes: 0 or -ETIMEDOUT. For a bounded
 * shutdown: token_cache_free() waits for every fetch, however long a provider hangs. */
int token_cache_wait_idle(struct token_cache *c, uint64_t deadline_ms);
void tc_error_done(struct tc_error *e);

/* Runs one scan of the refresher now (see above): starts a background fetch for every entry due.
 * Returns how many were started. Does nothing once the refresher was stopped. For tests and for
 * callers that run without the thread. */
unsigned token_cache_refresh_due(struct token_cache *c);

/* Drops entries for which pred(key) is true (running fetches complete but are not stored). */
size_t token_cache_evict_if(struct token_cache *c, bool (*pred)(const char *key, void *ud),
                            void *ud);
/* Drops every entry whose key starts with prefix. */
size_t token_cache_evict_prefix(struct token_cache *c, const char *prefix);
void token_cache_stats(struct token_cache *c, struct tc_stats *ret);
/* Changes limits in place (reload); entries stay. */
void token_cache_set_options(struct token_cache *c, const struct tc_options *o);

#endif
