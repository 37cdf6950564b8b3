/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Token cache (DESIGN §9, THREATS T16, T19). See token-cache.h for the contract.
 *
 * One mutex guards everything: the entry table (chained hash keyed by the string key, SipHash with
 * a per-cache random key so a pod choosing resources cannot flood one bucket), the LRU list that
 * enforces max_entries, the table of running flights and the stats.
 *
 * A flight is one fetch running on a detached worker thread. It is refcounted: the worker holds one
 * reference and every waiter one more, so a waiter that gives up at its deadline simply drops its
 * reference and the worker publishes into the cache later. Each flight has its own condition
 * variable (CLOCK_MONOTONIC, so deadlines are immune to wall-clock jumps). token_cache_free() waits
 * for c->running to drop to zero before freeing anything the workers touch.
 *
 * Choices the header leaves open:
 * - A bypass joins a flight that is already running for its key instead of starting a second one:
 *   whatever that flight returns was fetched after the cached value it replaces, which is all that
 *   bypass promises, and it keeps a burst of bypassers at one upstream call (T16).
 * - A bypass still honours a negative entry: a remembered failure is returned to every caller for
 *   negative_ms, otherwise bypass would defeat the upstream protection of the negative cache.
 * - A failed fetch does not replace a positive entry that is still servable (a failed background
 *   refresh keeps the old token until it runs below min_ttl_s, and the next refresh waits
 *   negative_ms); otherwise it stores a negative entry.
 * - Eviction detaches running flights for the evicted keys: their waiters still get the result, but
 *   it is not stored, and later callers start a fresh flight instead of joining the old one.
 * - max_entries == 0 means unbounded.
 *
 * Proactive refresh: an entry keeps the fetch closure (fetch, ud, free_ud) of the flight that
 * filled it last, and the time a caller last asked for it (last_access). The refresher thread
 * (started by token_cache_new, stopped by token_cache_free) scans the entries every
 * refresh_interval_ms and starts a background flight for each token past half its lifetime that a
 * caller asked for within the last token lifetime; the flight borrows the entry's closure (the
 * entry's ud is moved into the flight and back into the entry when it lands, or freed if the entry
 * went meanwhile). So a key in use is refreshed before any caller finds it past half-life, and a
 * key nobody asks for any more is refreshed at most until one lifetime after its last use, then
 * left to expire. Negative entries are never refreshed in the background.
 */
#include "token-cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <idbroker/errno.h>

#include <idbroker-internal/macro.h>
#include <idbroker-internal/thread.h>

#define TABLE_MIN_BUCKETS 64

/* A token with its reference count. The public part comes first so a const struct tc_token * handed
 * out can be turned back into its struct tok. */
struct tok {
    struct tc_token pub;
    atomic_uint refs;
};

/* Hash node shared by entries and flights (both embed it first). */
struct hnode {
    struct hnode *next;
    uint64_t hash;
    char *key;
};

struct htable {
    struct hnode **buckets;
    size_t n_buckets;
    size_t n;
};

struct entry {
    struct hnode node;
    struct entry *lru_prev, *lru_next; /* lru_prev is the more recently used side */
    struct tok *tok;                   /* NULL for a negative entry */
    struct tc_error err;               /* negative entries only */
    uint64_t neg_until_ms;             /* CLOCK_MONOTONIC; negative entries only */
    uint64_t refresh_after_ms;         /* CLOCK_MONOTONIC; no refresh before (after a failed one) */
    uint64_t last_access;              /* clock_now() of the last get that used this entry */
    tc_fetch_fn fetch;                 /* closure of the flight that filled the entry, for the */
    void *ud;                          /* refresher; ud is NULL while a background refresh */
    tc_free_fn free_ud;                /* borrows it */
};

struct flight {
    struct hnode node;
    struct token_cache *cache;
    unsigned refs; /* worker + waiters; under cache->lock */
    bool in_table; /* still the flight later callers join */
    bool store;    /* publish the result into the cache; cleared by eviction */
    bool done;
    bool demanded;       /* a caller waited for it (else a background refresh) */
    pthread_cond_t cond; /* CLOCK_MONOTONIC; signalled when done */
    int result;
    struct tok *tok; /* on success; the flight's own reference */
    struct tc_error err;
    tc_fetch_fn fetch;
    void *ud;
    tc_free_fn free_ud;
};

struct token_cache {
    pthread_mutex_t lock;
    pthread_cond_t idle; /* signalled when running drops to 0 */
    unsigned running;    /* worker threads not yet finished with the cache */
    struct tc_options opt;
    struct htable entries;
    struct htable flights;
    struct entry *lru_head, *lru_tail; /* head = most recently used */
    struct tc_stats stats;
    uint8_t hash_key[16];
    pthread_t refresher;
    bool has_refresher;
    bool stop_refresher;   /* under lock */
    pthread_cond_t wakeup; /* CLOCK_MONOTONIC; wakes the refresher to stop */
};

/* SipHash-2-4 (Aumasson, Bernstein), reference algorithm. */
static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static uint64_t load64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = rotl(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = rotl(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = rotl(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = rotl(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = rotl(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = rotl(v2, 32);                                                                         \
    } while (0)

static uint64_t siphash24(const uint8_t key[16], const void *data, size_t len)
{
    const uint8_t *in = data;
    uint64_t k0 = load64le(key), k1 = load64le(key + 8);
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    size_t full = len - len % 8;

    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load64le(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < len % 8; i++)
        b |= (uint64_t)in[full + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct timespec ms_to_timespec(uint64_t ms)
{
    return (struct timespec){.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
}

static uint64_t clock_now(const struct token_cache *c)
{
    return c->opt.now ? c->opt.now() : (uint64_t)time(NULL);
}

static int htable_init(struct htable *t)
{
    t->buckets = calloc(TABLE_MIN_BUCKETS, sizeof(*t->buckets));
    if (!t->buckets)
        return -ENOMEM;
    t->n_buckets = TABLE_MIN_BUCKETS;
    t->n = 0;
    return 0;
}

static struct hnode *htable_find(const struct htable *t, uint64_t hash, const char *key)
{
    for (struct hnode *n = t->buckets[hash % t->n_buckets]; n; n = n->next)
        if (n->hash == hash && streq(n->key, key))
            return n;
    return NULL;
}

/* Doubles the bucket array when the load passes 1. Failure to grow is harmless (longer chains). */
static void htable_maybe_grow(struct htable *t)
{
    if (t->n < t->n_buckets)
        return;
    size_t nb = t->n_buckets * 2;
    struct hnode **b = calloc(nb, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < t->n_buckets; i++) {
        struct hnode *n = t->buckets[i];
        while (n) {
            struct hnode *next = n->next;
            n->next = b[n->hash % nb];
            b[n->hash % nb] = n;
            n = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = nb;
}

static void htable_insert(struct htable *t, struct hnode *n)
{
    htable_maybe_grow(t);
    size_t i = n->hash % t->n_buckets;
    n->next = t->buckets[i];
    t->buckets[i] = n;
    t->n++;
}

static void htable_remove(struct htable *t, struct hnode *n)
{
    for (struct hnode **p = &t->buckets[n->hash % t->n_buckets]; *p; p = &(*p)->next)
        if (*p == n) {
            *p = n->next;
            n->next = NULL;
            t->n--;
            return;
        }
}

static struct tok *tok_ref(struct tok *t)
{
    atomic_fetch_add(&t->refs, 1);
    return t;
}

static void tok_unref(struct tok *t)
{
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    if (t->pub.access_token) {
        explicit_bzero(t->pub.access_token, strlen(t->pub.access_token));
        free(t->pub.access_token);
    }
    free(t->pub.client_id);
    free(t);
}

/* Frees the strings a fetch may have left in a token it did not return. */
static void token_fields_done(struct tc_token *t)
{
    if (t->access_token) {
        explicit_bzero(t->access_token, strlen(t->access_token));
        free(t->access_token);
    }
    free(t->client_id);
    *t = (struct tc_token){0};
}

void tc_error_done(struct tc_error *e)
{
    if (!e)
        return;
    free(e->upstream_error);
    e->upstream_error = NULL;
}

/* Copies src into *ret with a new upstream_error string. If that copy fails the string is dropped:
 * the code still reaches the caller. */
static void error_copy(const struct tc_error *src, struct tc_error *ret)
{
    *ret = *src;
    ret->upstream_error = src->upstream_error ? strdup(src->upstream_error) : NULL;
}

static void lru_unlink(struct token_cache *c, struct entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        c->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(struct token_cache *c, struct entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = c->lru_head;
    if (c->lru_head)
        c->lru_head->lru_prev = e;
    c->lru_head = e;
    if (!c->lru_tail)
        c->lru_tail = e;
}

/* Drops the entry's value (token reference or remembered error), keeping the entry itself. */
static void entry_clear(struct entry *e)
{
    tok_unref(e->tok);
    e->tok = NULL;
    tc_error_done(&e->err);
    e->err = (struct tc_error){0};
    e->neg_until_ms = 0;
    e->refresh_after_ms = 0;
}

/* Unlinks and frees e. Under the lock. */
static void entry_drop(struct token_cache *c, struct entry *e)
{
    htable_remove(&c->entries, &e->node);
    lru_unlink(c, e);
    entry_clear(e);
    if (e->ud && e->free_ud)
        e->free_ud(e->ud);
    free(e->node.key);
    free(e);
    c->stats.entries = c->entries.n;
}

static struct entry *entry_find(struct token_cache *c, uint64_t hash, const char *key)
{
    return (struct entry *)htable_find(&c->entries, hash, key);
}

static struct flight *flight_find(struct token_cache *c, uint64_t hash, const char *key)
{
    return (struct flight *)htable_find(&c->flights, hash, key);
}

static bool entry_servable(const struct token_cache *c, const struct entry *e, uint64_t now)
{
    return e->tok && e->tok->pub.expires_on >= now &&
           e->tok->pub.expires_on - now >= c->opt.min_ttl_s;
}

static bool entry_negative_live(const struct entry *e, uint64_t now_ms)
{
    return !e->tok && now_ms < e->neg_until_ms;
}

/* Whether e's token is past half its lifetime, i.e. due for a background refresh. */
static bool entry_half_life(const struct entry *e, uint64_t now)
{
    const struct tc_token *t = &e->tok->pub;
    uint64_t half =
        t->issued_at / 2 + t->expires_on / 2 + (t->issued_at % 2 + t->expires_on % 2) / 2;
    return now >= half;
}

/* Drops least recently used entries until at most max (0 = unbounded) remain. Under the lock. */
static void enforce_bound(struct token_cache *c, uint32_t max)
{
    while (max > 0 && c->entries.n > max && c->lru_tail) {
        entry_drop(c, c->lru_tail);
        c->stats.evictions++;
    }
}

/* Drops a couple of dead entries (expired token, expired negative result) from the cold end of the
 * LRU list, so secrets of keys nobody asks for again do not linger until pushed out by new ones. */
static void sweep_tail(struct token_cache *c, uint64_t now, uint64_t now_ms)
{
    for (int i = 0; i < 2 && c->lru_tail; i++) {
        struct entry *e = c->lru_tail;
        bool dead = e->tok ? e->tok->pub.expires_on <= now : now_ms >= e->neg_until_ms;
        if (!dead)
            return;
        entry_drop(c, e);
    }
}

/* Stores the flight's outcome under its key. Under the lock. Allocation failure leaves the cache as
 * it was: the waiters still get the result. */
static void flight_publish(struct token_cache *c, struct flight *f)
{
    uint64_t now = clock_now(c), now_ms = mono_ms();
    struct entry *e = entry_find(c, f->node.hash, f->node.key);

    if (f->result < 0) {
        if (e && entry_servable(c, e, now)) {
            e->refresh_after_ms = now_ms + c->opt.negative_ms;
            return;
        }
        if (c->opt.negative_ms == 0)
            return;
    }
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e)
            return;
        e->node.key = strdup(f->node.key);
        if (!e->node.key) {
            free(e);
            return;
        }
        e->node.hash = f->node.hash;
        htable_insert(&c->entries, &e->node);
    } else {
        lru_unlink(c, e);
        entry_clear(e);
    }
    lru_push_front(c, e);
    if (f->demanded)
        e->last_access = now;
    if (f->result >= 0)
        e->tok = tok_ref(f->tok);
    else {
        error_copy(&f->err, &e->err);
        e->neg_until_ms = now_ms + c->opt.negative_ms;
    }
    sweep_tail(c, now, now_ms);
    enforce_bound(c, c->opt.max_entries);
    c->stats.entries = c->entries.n;
}

static void flight_unref(struct flight *f)
{
    if (!f || --f->refs > 0)
        return;
    pthread_cond_destroy(&f->cond);
    tok_unref(f->tok);
    tc_error_done(&f->err);
    free(f->node.key);
    free(f);
}

/* Removes f from the flight table so later callers start a new flight. Under the lock. */
static void flight_detach(struct token_cache *c, struct flight *f)
{
    if (!f->in_table)
        return;
    htable_remove(&c->flights, &f->node);
    f->in_table = false;
}

static void *flight_run(void *p)
{
    struct flight *f = p;
    struct token_cache *c = f->cache;
    struct tc_token t = {0};
    struct tc_error err = {0};

    int r = f->fetch(f->ud, &t, &err);
    struct tok *tk = NULL;
    if (r >= 0 && !t.access_token)
        r = IDB_E_UPSTREAM_BAD_REPLY;
    if (r >= 0) {
        tk = malloc(sizeof(*tk));
        if (!tk)
            r = -ENOMEM;
    }
    if (r >= 0) {
        tk->pub = t;
        atomic_init(&tk->refs, 1);
        tc_error_done(&err);
        err = (struct tc_error){0};
    } else {
        token_fields_done(&t);
        err.code = r;
    }

    pthread_mutex_lock(&c->lock);
    if (tk && tk->pub.issued_at == 0)
        tk->pub.issued_at = clock_now(c);
    f->result = r;
    f->tok = tk;
    f->err = err;
    if (r < 0)
        c->stats.fetch_errors++;
    /* The closure goes to the entry (for the refresher); the one it replaces is freed below. */
    void *drop_ud = f->ud;
    tc_free_fn drop_free = f->free_ud;
    if (f->store) {
        flight_publish(c, f);
        struct entry *e = entry_find(c, f->node.hash, f->node.key);
        if (e) {
            drop_ud = e->ud;
            drop_free = e->free_ud;
            e->fetch = f->fetch;
            e->ud = f->ud;
            e->free_ud = f->free_ud;
        }
    }
    flight_detach(c, f);
    f->done = true;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&c->lock);

    if (drop_ud && drop_free)
        drop_free(drop_ud);

    pthread_mutex_lock(&c->lock);
    flight_unref(f);
    if (--c->running == 0)
        pthread_cond_broadcast(&c->idle);
    /* Nothing of c may be touched after this: token_cache_free() may run as soon as it is unlocked.
     */
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* Starts a flight for key on a new worker thread, with `waiters` references for the caller. The
 * flight takes ud only on success. Under the lock. */
static int flight_start(struct token_cache *c, const char *key, uint64_t hash, unsigned waiters,
                        tc_fetch_fn fetch, void *ud, tc_free_fn free_ud, struct flight **ret)
{
    _cleanup_free_ struct flight *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    _cleanup_free_ char *k = strdup(key);
    if (!k)
        return -ENOMEM;

    int r = cond_init_monotonic(&f->cond);
    if (r < 0)
        return r;

    f->node.key = k;
    f->node.hash = hash;
    f->cache = c;
    f->refs = 1 + waiters;
    f->store = true;
    f->fetch = fetch;
    f->ud = ud;
    f->free_ud = free_ud;

    pthread_attr_t ta;
    r = pthread_attr_init(&ta);
    if (r == 0) {
        pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
        pthread_t th;
        r = pthread_create(&th, &ta, flight_run, f);
        pthread_attr_destroy(&ta);
    }
    if (r != 0) {
        pthread_cond_destroy(&f->cond);
        return -r;
    }

    /* The worker blocks on the lock we hold before it touches the tables, so this is safe. */
    TAKE_PTR(k);
    htable_insert(&c->flights, &f->node);
    f->in_table = true;
    c->running++;
    c->stats.fetches++;
    *ret = TAKE_PTR(f);
    return 0;
}

/* Whether the refresher should refresh e now: a token past half-life, not expired, asked for
 * within the last token lifetime, with its closure at hand, no refresh running or held back. */
static bool entry_refresh_due(struct token_cache *c, const struct entry *e, uint64_t now,
                              uint64_t now_ms)
{
    if (!e->tok || !e->ud || !e->fetch || now_ms < e->refresh_after_ms)
        return false;
    const struct tc_token *t = &e->tok->pub;
    if (t->expires_on <= now || !entry_half_life(e, now))
        return false;
    uint64_t lifetime = t->expires_on > t->issued_at ? t->expires_on - t->issued_at : 0;
    if (e->last_access + lifetime < now)
        return false;
    return !flight_find(c, e->node.hash, e->node.key);
}

/* One scan of the refresher. Under the lock. */
static unsigned refresh_scan(struct token_cache *c)
{
    uint64_t now = clock_now(c), now_ms = mono_ms();
    unsigned n = 0;
    for (struct entry *e = c->lru_head; e; e = e->lru_next) {
        if (!entry_refresh_due(c, e, now, now_ms))
            continue;
        struct flight *f = NULL;
        if (flight_start(c, e->node.key, e->node.hash, 0, e->fetch, e->ud, e->free_ud, &f) < 0)
            break;    /* out of memory or threads: try again at the next scan */
        e->ud = NULL; /* the flight has it now and hands it back when it lands */
        c->stats.refreshes++;
        c->stats.proactive_refreshes++;
        n++;
    }
    return n;
}

static uint32_t refresh_interval(const struct token_cache *c)
{
    uint32_t ms = c->opt.refresh_interval_ms;
    return ms == 0 || ms == TC_REFRESH_OFF ? TC_DEFAULT_REFRESH_INTERVAL_MS : ms;
}

static void *refresher_run(void *p)
{
    struct token_cache *c = p;
    pthread_mutex_lock(&c->lock);
    while (!c->stop_refresher) {
        struct timespec ts = ms_to_timespec(mono_ms() + refresh_interval(c));
        while (!c->stop_refresher)
            if (pthread_cond_timedwait(&c->wakeup, &c->lock, &ts) != 0)
                break;
        if (!c->stop_refresher)
            refresh_scan(c);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* Stops the refresher thread (if any) and waits for it. Idempotent. */
static void refresher_stop(struct token_cache *c)
{
    pthread_mutex_lock(&c->lock);
    c->stop_refresher = true;
    bool join = c->has_refresher;
    c->has_refresher = false;
    pthread_cond_broadcast(&c->wakeup);
    pthread_mutex_unlock(&c->lock);
    if (join)
        pthread_join(c->refresher, NULL);
}

unsigned token_cache_refresh_due(struct token_cache *c)
{
    pthread_mutex_lock(&c->lock);
    unsigned n = c->stop_refresher ? 0 : refresh_scan(c);
    pthread_mutex_unlock(&c->lock);
    return n;
}

struct token_cache *token_cache_new(const struct tc_options *o)
{
    struct token_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (o)
        c->opt = *o;
    if (getrandom(c->hash_key, sizeof(c->hash_key), 0) != (ssize_t)sizeof(c->hash_key)) {
        /* Fall back to something per-process; flooding resistance is lost, correctness is not. */
        uint64_t seed = mono_ms() ^ (uint64_t)(uintptr_t)c;
        memcpy(c->hash_key, &seed, sizeof(seed));
    }
    if (htable_init(&c->entries) < 0 || htable_init(&c->flights) < 0) {
        free(c->entries.buckets);
        free(c->flights.buckets);
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    (void)cond_init_monotonic(&c->idle);
    (void)cond_init_monotonic(&c->wakeup);
    /* Without the refresher the cache still works (refresh on a hit past half-life): a failure to
     * start the thread only loses the proactive part. */
    if (c->opt.refresh_interval_ms != TC_REFRESH_OFF)
        c->has_refresher = pthread_create(&c->refresher, NULL, refresher_run, c) == 0;
    return c;
}

struct token_cache *token_cache_free(struct token_cache *c)
{
    if (!c)
        return NULL;
    refresher_stop(c);
    pthread_mutex_lock(&c->lock);
    while (c->running > 0)
        pthread_cond_wait(&c->idle, &c->lock);
    pthread_mutex_unlock(&c->lock);

    while (c->lru_head)
        entry_drop(c, c->lru_head);
    /* Every flight has finished and detached itself, and no waiter may remain (contract). */
    free(c->entries.buckets);
    free(c->flights.buckets);
    pthread_cond_destroy(&c->idle);
    pthread_cond_destroy(&c->wakeup);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return NULL;
}

int token_cache_wait_idle(struct token_cache *c, uint64_t deadline_ms)
{
    struct timespec ts = ms_to_timespec(deadline_ms);
    int r = 0;
    refresher_stop(c);
    pthread_mutex_lock(&c->lock);
    while (c->running > 0 && r == 0)
        if (pthread_cond_timedwait(&c->idle, &c->lock, &ts) == ETIMEDOUT)
            r = c->running > 0 ? -ETIMEDOUT : 0;
    pthread_mutex_unlock(&c->lock);
    return r;
}

int token_cache_peek(struct token_cache *c, const char *key, const struct tc_token **ret_token)
{
    uint64_t hash = siphash24(c->hash_key, key, strlen(key));
    int r = -EAGAIN;
    pthread_mutex_lock(&c->lock);
    uint64_t now = clock_now(c), now_ms = mono_ms();
    struct entry *e = entry_find(c, hash, key);
    /* Only the plain hit: a remembered failure, a due refresh or a miss are token_cache_get()'s. */
    if (e && !entry_negative_live(e, now_ms) && entry_servable(c, e, now) &&
        !(entry_half_life(e, now) && now_ms >= e->refresh_after_ms)) {
        e->last_access = now;
        c->stats.hits++;
        lru_unlink(c, e);
        lru_push_front(c, e);
        *ret_token = &tok_ref(e->tok)->pub;
        r = 0;
    }
    pthread_mutex_unlock(&c->lock);
    return r;
}

int token_cache_get(struct token_cache *c, const char *key, bool bypass, uint64_t deadline_ms,
                    tc_fetch_fn fetch, void *ud, tc_free_fn free_ud,
                    const struct tc_token **ret_token, bool *ret_hit, struct tc_error *ret_err)
{
    uint64_t hash = siphash24(c->hash_key, key, strlen(key));
    const struct tc_token *tok = NULL;
    struct tc_error err = {0};
    bool ud_taken = false, hit = false;
    int r;

    pthread_mutex_lock(&c->lock);
    uint64_t now = clock_now(c), now_ms = mono_ms();
    struct entry *e = entry_find(c, hash, key);
    struct flight *f = NULL;

    if (e)
        e->last_access = now;
    if (e && entry_negative_live(e, now_ms)) {
        c->stats.hits++;
        lru_unlink(c, e);
        lru_push_front(c, e);
        error_copy(&e->err, &err);
        r = e->err.code;
        goto unlock;
    }
    if (e && !bypass && entry_servable(c, e, now)) {
        c->stats.hits++;
        lru_unlink(c, e);
        lru_push_front(c, e);
        tok = &tok_ref(e->tok)->pub;
        hit = true;
        if (entry_half_life(e, now) && now_ms >= e->refresh_after_ms &&
            !flight_find(c, hash, key) &&
            flight_start(c, key, hash, 0, fetch, ud, free_ud, &f) >= 0) {
            c->stats.refreshes++;
            ud_taken = true;
        }
        r = 0;
        goto unlock;
    }

    c->stats.misses++;
    f = flight_find(c, hash, key);
    if (f) {
        f->refs++;
        c->stats.coalesced++;
    } else {
        r = flight_start(c, key, hash, 1, fetch, ud, free_ud, &f);
        if (r < 0) {
            err.code = r;
            goto unlock;
        }
        ud_taken = true;
    }
    f->demanded = true;

    struct timespec ts = ms_to_timespec(deadline_ms);
    /* Any error other than a spurious wakeup (ETIMEDOUT, or EINVAL for a deadline beyond time_t)
     * ends the wait like the deadline does; the flight keeps running. */
    while (!f->done)
        if (pthread_cond_timedwait(&f->cond, &c->lock, &ts) != 0)
            break;
    if (!f->done) {
        c->stats.timeouts++;
        r = err.code = IDB_E_PROVIDER_TIMEOUT;
    } else if (f->result >= 0) {
        tok = &tok_ref(f->tok)->pub;
        r = 0;
    } else {
        error_copy(&f->err, &err);
        r = f->err.code;
    }
    flight_unref(f);

unlock:
    pthread_mutex_unlock(&c->lock);
    if (!ud_taken && free_ud)
        free_ud(ud);
    if (r < 0) {
        if (ret_err)
            *ret_err = err;
        else
            tc_error_done(&err);
        return r;
    }
    *ret_token = tok;
    if (ret_hit)
        *ret_hit = hit;
    return 0;
}

void token_cache_release(struct token_cache *c, const struct tc_token *t)
{
    (void)c;
    if (!t)
        return;
    tok_unref((struct tok *)((char *)t - offsetof(struct tok, pub)));
}

size_t token_cache_evict_if(struct token_cache *c, bool (*pred)(const char *key, void *ud),
                            void *ud)
{
    size_t n = 0;

    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->entries.n_buckets; i++) {
        struct hnode *node = c->entries.buckets[i];
        while (node) {
            struct hnode *next = node->next;
            if (pred(node->key, ud)) {
                entry_drop(c, (struct entry *)node);
                n++;
            }
            node = next;
        }
    }
    for (size_t i = 0; i < c->flights.n_buckets; i++) {
        struct hnode *node = c->flights.buckets[i];
        while (node) {
            struct hnode *next = node->next;
            if (pred(node->key, ud)) {
                struct flight *f = (struct flight *)node;
                f->store = false;
                flight_detach(c, f);
            }
            node = next;
        }
    }
    c->stats.evictions += n;
    pthread_mutex_unlock(&c->lock);
    return n;
}

static bool has_prefix(const char *key, void *ud)
{
    const char *prefix = ud;
    return strncmp(key, prefix, strlen(prefix)) == 0;
}

size_t token_cache_evict_prefix(struct token_cache *c, const char *prefix)
{
    return token_cache_evict_if(c, has_prefix, (void *)prefix);
}

void token_cache_stats(struct token_cache *c, struct tc_stats *ret)
{
    pthread_mutex_lock(&c->lock);
    c->stats.entries = c->entries.n;
    c->stats.running = c->running;
    *ret = c->stats;
    pthread_mutex_unlock(&c->lock);
}

void token_cache_set_options(struct token_cache *c, const struct tc_options *o)
{
    pthread_mutex_lock(&c->lock);
    c->opt = *o;
    enforce_bound(c, c->opt.max_entries);
    c->stats.entries = c->entries.n;
    pthread_mutex_unlock(&c->lock);
}
