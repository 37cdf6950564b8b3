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
/* Frees the fetch's userdata once the fetch is over (it may outlive the caller's wait). */
typedef void (*tc_free_fn)(void *ud);

struct tc_options {
    uint32_t max_entries;
    uint32_t min_ttl_s;
    uint32_t negative_ms;
    /* For tests: a clock returning epoch seconds; NULL = time(). */
    uint64_t (*now)(void);
};

struct tc_stats {
    uint64_t hits, misses, refreshes, coalesced, fetches, fetch_errors, timeouts, evictions;
    uint64_t entries;
};

struct token_cache *token_cache_new(const struct tc_options *o);
/* Waits for running fetches to finish before freeing. */
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
void token_cache_release(struct token_cache *c, const struct tc_token *t);
/* Waits until no fetch is running or deadline_ms (CLOCK_MONOTONIC ms) passes: 0 or -ETIMEDOUT. For
 * a bounded shutdown: token_cache_free() waits for every fetch, however long a provider hangs. */
int token_cache_wait_idle(struct token_cache *c, uint64_t deadline_ms);
void tc_error_done(struct tc_error *e);

/* Drops entries for which pred(key) is true (running fetches complete but are not stored). */
size_t token_cache_evict_if(struct token_cache *c, bool (*pred)(const char *key, void *ud),
                            void *ud);
/* Drops every entry whose key starts with prefix. */
size_t token_cache_evict_prefix(struct token_cache *c, const char *prefix);
void token_cache_stats(struct token_cache *c, struct tc_stats *ret);
/* Changes limits in place (reload); entries stay. */
void token_cache_set_options(struct token_cache *c, const struct tc_options *o);

#endif
