/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Token cache: hits and misses, single-flight under 200 real threads, deadlines, min_ttl,
 * background refresh, negative cache, bypass, eviction (also during a running fetch), the LRU bound
 * and error propagation. Waiting for background work is done by polling state, never by timing
 * assertions.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <idbroker/errno.h>

#include "token-cache.h"

#include <cmocka.h>

#define LIFETIME 3600

static atomic_uint_fast64_t fake_now;
static atomic_int n_fetches; /* fetch calls */
static atomic_int n_serial;  /* token numbers */
static atomic_int n_ud_alloc, n_ud_free;

static uint64_t now_fn(void)
{
    return atomic_load(&fake_now);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* What a fetch does: sleep, wait for a gate, then succeed with "tok-<n>" or fail. */
struct behaviour {
    unsigned sleep_ms;
    sem_t *started; /* posted when the fetch begins (optional) */
    sem_t *gate;    /* waited on before answering (optional) */
    int result;     /* < 0: fail with this */
    long upstream_status;
    const char *upstream_error;
    uint32_t retry_after_s;
};

static struct behaviour *ud_new(const struct behaviour *b)
{
    struct behaviour *u = malloc(sizeof(*u));
    assert_non_null(u);
    *u = *b;
    atomic_fetch_add(&n_ud_alloc, 1);
    return u;
}

static void ud_free(void *ud)
{
    atomic_fetch_add(&n_ud_free, 1);
    free(ud);
}

/* No cmocka assertions here: this runs on cache worker threads. */
static int fetch(void *ud, struct tc_token *ret, struct tc_error *ret_err)
{
    const struct behaviour *b = ud;
    atomic_fetch_add(&n_fetches, 1);
    if (b->started)
        sem_post(b->started);
    if (b->sleep_ms)
        sleep_ms(b->sleep_ms);
    if (b->gate)
        sem_wait(b->gate);
    if (b->result < 0) {
        ret_err->upstream_status = b->upstream_status;
        ret_err->upstream_error = b->upstream_error ? strdup(b->upstream_error) : NULL;
        ret_err->retry_after_s = b->retry_after_s;
        return b->result;
    }
    char buf[32];
    snprintf(buf, sizeof(buf), "tok-%d", atomic_fetch_add(&n_serial, 1) + 1);
    ret->access_token = strdup(buf);
    ret->client_id = strdup("client");
    ret->issued_at = now_fn();
    ret->expires_on = now_fn() + LIFETIME;
    return 0;
}

static int setup(void **state)
{
    (void)state;
    atomic_store(&fake_now, 1000000);
    atomic_store(&n_fetches, 0);
    atomic_store(&n_serial, 0);
    atomic_store(&n_ud_alloc, 0);
    atomic_store(&n_ud_free, 0);
    return 0;
}

static struct token_cache *cache_new(uint32_t max, uint32_t min_ttl, uint32_t negative_ms)
{
    /* The refresher thread would race the hit-driven refresh these tests look at: off, except in
     * the tests of the refresher itself. */
    struct tc_options o = {.max_entries = max,
                           .min_ttl_s = min_ttl,
                           .negative_ms = negative_ms,
                           .now = now_fn,
                           .refresh_interval_ms = TC_REFRESH_OFF};
    struct token_cache *c = token_cache_new(&o);
    assert_non_null(c);
    return c;
}

/* Frees the cache (waiting for flights) and checks every userdata was freed exactly once. */
static void cache_done(struct token_cache *c)
{
    token_cache_free(c);
    assert_int_equal(atomic_load(&n_ud_alloc), atomic_load(&n_ud_free));
}

/* One get with a generous deadline; returns the result and the token text (or "" on error). */
static int get(struct token_cache *c, const char *key, bool bypass, const struct behaviour *b,
               char *tok, size_t size, bool *ret_hit)
{
    const struct tc_token *t = NULL;
    struct tc_error err = {0};
    bool hit = false;
    int r = token_cache_get(c, key, bypass, mono_ms() + 30000, fetch, ud_new(b), ud_free, &t, &hit,
                            &err);
    tok[0] = 0;
    if (r >= 0) {
        assert_non_null(t);
        snprintf(tok, size, "%s", t->access_token);
        token_cache_release(c, t);
        if (ret_hit)
            *ret_hit = hit;
    } else {
        assert_int_equal(err.code, r);
        tc_error_done(&err);
    }
    return r;
}

static struct tc_stats stats(struct token_cache *c)
{
    struct tc_stats s;
    token_cache_stats(c, &s);
    return s;
}

static void test_hit_miss(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    struct behaviour ok = {0};
    char t[32];
    bool hit = true;

    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_string_equal(t, "tok-1");
    assert_false(hit);
    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_string_equal(t, "tok-1");
    assert_true(hit);
    assert_int_equal(atomic_load(&n_fetches), 1);

    struct tc_stats s = stats(c);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.fetches, 1);
    assert_int_equal(s.entries, 1);

    /* The returned token outlives the cache entry (refcounted). */
    const struct tc_token *held = NULL;
    bool h;
    assert_int_equal(token_cache_get(c, "k", false, mono_ms() + 30000, fetch, ud_new(&ok), ud_free,
                                     &held, &h, NULL),
                     0);
    assert_int_equal(token_cache_evict_prefix(c, "k"), 1);
    assert_string_equal(held->access_token, "tok-1");
    assert_string_equal(held->client_id, "client");
    token_cache_release(c, held);
    token_cache_release(c, NULL);
    cache_done(c);
}

struct stampede {
    struct token_cache *c;
    pthread_barrier_t *barrier;
    const char *key;
    int r;
    bool hit;
    char tok[32];
};

static void *stampede_thread(void *p)
{
    struct stampede *s = p;
    struct behaviour slow = {.sleep_ms = 50};
    const struct tc_token *t = NULL;
    struct tc_error err = {0};

    pthread_barrier_wait(s->barrier);
    s->r = token_cache_get(s->c, s->key, false, mono_ms() + 30000, fetch, ud_new(&slow), ud_free,
                           &t, &s->hit, &err);
    if (s->r >= 0) {
        snprintf(s->tok, sizeof(s->tok), "%s", t->access_token);
        token_cache_release(s->c, t);
    } else {
        tc_error_done(&err);
    }
    return NULL;
}

static void run_threads(struct stampede *s, size_t n)
{
    pthread_t *th = calloc(n, sizeof(*th));
    pthread_barrier_t barrier;
    pthread_attr_t attr;
    assert_non_null(th);
    assert_int_equal(pthread_barrier_init(&barrier, NULL, (unsigned)n), 0);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (size_t i = 0; i < n; i++) {
        s[i].barrier = &barrier;
        assert_int_equal(pthread_create(&th[i], &attr, stampede_thread, &s[i]), 0);
    }
    for (size_t i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_attr_destroy(&attr);
    pthread_barrier_destroy(&barrier);
    free(th);
}

/* token_cache_peek: the plain hit only; misses, remembered failures and due refreshes are left to
 * token_cache_get. */
static void test_peek(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 60000);
    struct behaviour ok = {0}, fail = {.result = IDB_E_UPSTREAM_4XX, .upstream_status = 400};
    const struct tc_token *t = NULL;
    char tok[32];

    assert_int_equal(token_cache_peek(c, "k", &t), -EAGAIN);
    assert_null(t);
    assert_int_equal(get(c, "k", false, &ok, tok, sizeof(tok), NULL), 0);
    assert_int_equal(token_cache_peek(c, "k", &t), 0);
    assert_string_equal(t->access_token, tok);
    token_cache_release(c, t);
    assert_int_equal(atomic_load(&n_fetches), 1);
    assert_int_equal(stats(c).hits, 1);

    assert_int_equal(get(c, "bad", false, &fail, tok, sizeof(tok), NULL), IDB_E_UPSTREAM_4XX);
    assert_int_equal(token_cache_peek(c, "bad", &t), -EAGAIN);

    /* Past half-life a refresh is due: peek declines (and starts nothing), so get can start it. */
    atomic_fetch_add(&fake_now, 2000);
    assert_int_equal(token_cache_peek(c, "k", &t), -EAGAIN);
    assert_int_equal(atomic_load(&n_fetches), 2);
    cache_done(c);
}

static void test_single_flight_200(void **state)
{
    (void)state;
    enum { N = 200 };
    struct token_cache *c = cache_new(100, 300, 0);
    struct stampede *s = calloc(N, sizeof(*s));
    assert_non_null(s);
    for (size_t i = 0; i < N; i++) {
        s[i].c = c;
        s[i].key = "cold";
    }
    run_threads(s, N);

    assert_int_equal(atomic_load(&n_fetches), 1);
    size_t hits = 0;
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(s[i].r, 0);
        assert_string_equal(s[i].tok, "tok-1");
        hits += s[i].hit;
    }
    struct tc_stats st = stats(c);
    assert_int_equal(st.fetches, 1);
    assert_int_equal(st.hits, hits);
    assert_int_equal(st.hits + st.coalesced, N - 1);
    assert_int_equal(st.misses, N - hits);
    free(s);
    cache_done(c);
}

static void test_different_keys(void **state)
{
    (void)state;
    enum { N = 8 };
    struct token_cache *c = cache_new(100, 300, 0);
    struct stampede s[N] = {0};
    char keys[N][16];
    for (size_t i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "key-%zu", i);
        s[i].c = c;
        s[i].key = keys[i];
    }
    run_threads(s, N);
    assert_int_equal(atomic_load(&n_fetches), N);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(s[i].r, 0);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s[i].tok, s[j].tok);
    }
    assert_int_equal(stats(c).entries, N);

    /* A fetch hanging on one key does not hold up another key. */
    sem_t gate, started;
    sem_init(&gate, 0, 0);
    sem_init(&started, 0, 0);
    struct behaviour hang = {.gate = &gate, .started = &started};
    const struct tc_token *t = NULL;
    struct tc_error err = {0};
    assert_int_equal(token_cache_get(c, "hanging", false, mono_ms() + 50, fetch, ud_new(&hang),
                                     ud_free, &t, NULL, &err),
                     IDB_E_PROVIDER_TIMEOUT);
    sem_wait(&started);
    char tok[32];
    struct behaviour ok = {0};
    assert_int_equal(get(c, "other", false, &ok, tok, sizeof(tok), NULL), 0);
    sem_post(&gate);
    cache_done(c);
    sem_destroy(&gate);
    sem_destroy(&started);
}

static void test_deadline(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    sem_t gate;
    sem_init(&gate, 0, 0);
    struct behaviour gated = {.gate = &gate};
    const struct tc_token *t = NULL;
    struct tc_error err = {.code = 1};
    bool hit = false;

    assert_int_equal(token_cache_get(c, "slow", false, mono_ms() + 100, fetch, ud_new(&gated),
                                     ud_free, &t, &hit, &err),
                     IDB_E_PROVIDER_TIMEOUT);
    assert_null(t);
    assert_int_equal(err.code, IDB_E_PROVIDER_TIMEOUT);
    assert_null(err.upstream_error);
    assert_int_equal(stats(c).timeouts, 1);

    /* The flight was not cancelled: it completes after its waiter left and its result is stored.
     * A later caller joins it (or hits its stored result); either way there is one fetch. */
    sem_post(&gate);
    char tok[32];
    struct behaviour ok = {0};
    assert_int_equal(get(c, "slow", false, &ok, tok, sizeof(tok), NULL), 0);
    assert_string_equal(tok, "tok-1");
    assert_int_equal(atomic_load(&n_fetches), 1);
    cache_done(c);
    sem_destroy(&gate);

    /* A fetch that sleeps 2 s against a 100 ms deadline; freeing the cache waits for it. */
    c = cache_new(100, 300, 0);
    struct behaviour slow = {.sleep_ms = 2000};
    err = (struct tc_error){0};
    assert_int_equal(token_cache_get(c, "slow", false, mono_ms() + 100, fetch, ud_new(&slow),
                                     ud_free, &t, &hit, &err),
                     IDB_E_PROVIDER_TIMEOUT);
    tc_error_done(&err);
    cache_done(c);

    /* A deadline already in the past still starts the fetch and times out at once. */
    c = cache_new(100, 300, 0);
    assert_int_equal(
        token_cache_get(c, "past", false, 0, fetch, ud_new(&ok), ud_free, &t, &hit, NULL),
        IDB_E_PROVIDER_TIMEOUT);
    cache_done(c);
}

static void test_min_ttl(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    struct behaviour ok = {0};
    char t[32];
    bool hit;

    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_string_equal(t, "tok-1");
    /* 300 s left: still served (the refresh it starts is let finish before going on). */
    atomic_store(&fake_now, 1000000 + LIFETIME - 300);
    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_true(hit);
    assert_string_equal(t, "tok-1");
    while (stats(c).fetches != 2 || strcmp(t, "tok-2") != 0) {
        sleep_ms(1);
        assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    }

    /* The entry now holds tok-2 (expires at now + LIFETIME); 299 s left is not served. */
    atomic_store(&fake_now, 1000000 + LIFETIME - 300 + LIFETIME - 299);
    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_false(hit);
    assert_string_equal(t, "tok-3");
    assert_int_equal(atomic_load(&n_fetches), 3);
    cache_done(c);
}

static void test_refresh(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    struct behaviour ok = {0};
    char t[32];
    bool hit;

    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    /* Just before half-life: plain hit, no refresh. */
    atomic_store(&fake_now, 1000000 + LIFETIME / 2 - 1);
    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_int_equal(stats(c).refreshes, 0);

    /* Past half-life: the old token at once, one background fetch. A refresh gated until we have
     * seen several more hits proves that hits during a running refresh start nothing more. */
    sem_t gate;
    sem_init(&gate, 0, 0);
    struct behaviour gated = {.gate = &gate};
    atomic_store(&fake_now, 1000000 + LIFETIME / 2);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(get(c, "k", false, &gated, t, sizeof(t), &hit), 0);
        assert_true(hit);
        assert_string_equal(t, "tok-1");
    }
    struct tc_stats s = stats(c);
    assert_int_equal(s.refreshes, 1);
    assert_int_equal(s.fetches, 2);
    sem_post(&gate);

    /* Once the refresh lands, the next get returns the new token. */
    do {
        sleep_ms(1);
        assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
        assert_true(hit);
    } while (strcmp(t, "tok-1") == 0);
    assert_string_equal(t, "tok-2");
    assert_int_equal(atomic_load(&n_fetches), 2);
    assert_int_equal(stats(c).refreshes, 1);

    /* A failed refresh keeps the still-valid token (not replaced by a negative entry). */
    struct token_cache *c2 = cache_new(100, 300, 60000);
    atomic_store(&fake_now, 2000000);
    assert_int_equal(get(c2, "k", false, &ok, t, sizeof(t), &hit), 0);
    atomic_store(&fake_now, 2000000 + LIFETIME / 2);
    struct behaviour fail = {.result = IDB_E_UPSTREAM_UNAVAILABLE};
    char old[32];
    snprintf(old, sizeof(old), "%s", t);
    assert_int_equal(get(c2, "k", false, &fail, t, sizeof(t), &hit), 0);
    while (stats(c2).fetch_errors == 0)
        sleep_ms(1);
    /* Still the old token, and no new refresh within negative_ms of the failed one. */
    int before = atomic_load(&n_fetches);
    assert_int_equal(get(c2, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_true(hit);
    assert_string_equal(t, old);
    assert_int_equal(atomic_load(&n_fetches), before);
    assert_int_equal(stats(c2).refreshes, 1);
    token_cache_free(c2);
    cache_done(c);
    sem_destroy(&gate);
}

/* Waits (polling, no timing assertion) until n fetches ran and none is running any more. */
static void wait_fetches(struct token_cache *c, int n)
{
    while (atomic_load(&n_fetches) < n || stats(c).running > 0)
        sleep_ms(1);
}

static void test_proactive_refresh(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    struct behaviour ok = {0};
    char t[32];
    bool hit;
    const uint64_t t0 = 1000000;

    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_string_equal(t, "tok-1");
    /* Before half-life nothing is due. */
    atomic_store(&fake_now, t0 + LIFETIME / 2 - 1);
    assert_int_equal(token_cache_refresh_due(c), 0);

    /* At half-life the token is refreshed with the stored closure, before anyone asks... */
    atomic_store(&fake_now, t0 + LIFETIME / 2);
    assert_int_equal(token_cache_refresh_due(c), 1);
    assert_int_equal(token_cache_refresh_due(c), 0); /* one flight per key */
    while (atomic_load(&n_fetches) < 2 || stats(c).fetches != 2)
        sleep_ms(1);
    /* ... and the next caller gets the new token from the cache, with no fetch of its own. */
    do {
        sleep_ms(1);
        assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
        assert_true(hit);
    } while (strcmp(t, "tok-1") == 0);
    assert_string_equal(t, "tok-2");
    assert_int_equal(atomic_load(&n_fetches), 2);
    struct tc_stats s = stats(c);
    assert_int_equal(s.proactive_refreshes, 1);
    assert_int_equal(s.refreshes, 1);
    cache_done(c);
}

static void test_proactive_refresh_unused(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    struct behaviour ok = {0};
    char t[32];
    const uint64_t t0 = 1000000;

    /* Asked for once at t0 (tok-1, valid t0 .. t0 + L). */
    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), NULL), 0);
    /* Half-life of tok-1: asked for within a lifetime -> refreshed (tok-2 from t0 + L/2). */
    atomic_store(&fake_now, t0 + LIFETIME / 2);
    assert_int_equal(token_cache_refresh_due(c), 1);
    wait_fetches(c, 2);
    /* Half-life of tok-2 = t0 + L: the last use (t0) is exactly a lifetime ago -> still refreshed.
     */
    atomic_store(&fake_now, t0 + LIFETIME);
    assert_int_equal(token_cache_refresh_due(c), 1);
    wait_fetches(c, 3);
    /* Half-life of tok-3: nobody asked for a lifetime and a half -> left to expire. */
    atomic_store(&fake_now, t0 + LIFETIME + LIFETIME / 2);
    assert_int_equal(token_cache_refresh_due(c), 0);
    assert_int_equal(atomic_load(&n_fetches), 3);
    /* A caller that comes back gets the (still valid) token and keeps the key warm again. */
    bool hit = false;
    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_true(hit);
    assert_string_equal(t, "tok-3");
    wait_fetches(c, 4); /* that hit was past half-life: it refreshed as before */
    cache_done(c);
}

static void test_proactive_refresh_skips(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 60000);
    struct behaviour ok = {0}, fail = {.result = IDB_E_UPSTREAM_UNAVAILABLE};
    char t[32];
    const uint64_t t0 = 1000000;

    /* A negative entry is never refreshed in the background. */
    assert_int_equal(get(c, "neg", false, &fail, t, sizeof(t), NULL), IDB_E_UPSTREAM_UNAVAILABLE);
    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), NULL), 0);
    atomic_store(&fake_now, t0 + LIFETIME / 2);
    assert_int_equal(token_cache_refresh_due(c), 1); /* "k" only */
    wait_fetches(c, 3);
    /* An expired token is not refreshed either: callers will miss and fetch. */
    atomic_store(&fake_now, t0 + 10 * LIFETIME);
    assert_int_equal(token_cache_refresh_due(c), 0);
    /* After token_cache_wait_idle() (shutdown) no background refresh starts any more. */
    assert_int_equal(get(c, "k2", false, &ok, t, sizeof(t), NULL), 0);
    atomic_store(&fake_now, t0 + 10 * LIFETIME + LIFETIME / 2);
    assert_int_equal(token_cache_wait_idle(c, mono_ms() + 30000), 0);
    assert_int_equal(token_cache_refresh_due(c), 0);
    assert_int_equal(atomic_load(&n_fetches), 4);
    cache_done(c);
}

/* Gates the background fetch of test_proactive_evict. */
static sem_t evict_gate, evict_started;

static void test_proactive_evict(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    struct behaviour gated = {.gate = &evict_gate, .started = &evict_started};
    char t[32];
    sem_init(&evict_gate, 0, 1); /* the first fetch passes */
    sem_init(&evict_started, 0, 0);

    assert_int_equal(get(c, "k", false, &gated, t, sizeof(t), NULL), 0);
    sem_wait(&evict_started);
    atomic_store(&fake_now, 1000000 + LIFETIME / 2);
    assert_int_equal(token_cache_refresh_due(c), 1);
    sem_wait(&evict_started); /* the refresh runs with the entry's closure */
    assert_int_equal(token_cache_evict_prefix(c, "k"), 1);
    sem_post(&evict_gate);
    assert_int_equal(token_cache_wait_idle(c, mono_ms() + 30000), 0);
    assert_int_equal(stats(c).entries, 0); /* the refresh did not store into an evicted key */
    cache_done(c);                         /* and its closure was freed exactly once */
    sem_destroy(&evict_gate);
    sem_destroy(&evict_started);
}

static void test_refresher_thread(void **state)
{
    (void)state;
    struct tc_options o = {
        .max_entries = 100, .min_ttl_s = 300, .now = now_fn, .refresh_interval_ms = 5};
    struct token_cache *c = token_cache_new(&o);
    assert_non_null(c);
    struct behaviour ok = {0};
    char t[32];
    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), NULL), 0);
    atomic_store(&fake_now, 1000000 + LIFETIME / 2);
    /* The thread finds the entry due by itself. */
    while (stats(c).proactive_refreshes == 0)
        sleep_ms(1);
    wait_fetches(c, 2);
    bool hit = false;
    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_true(hit);
    assert_string_equal(t, "tok-2");
    cache_done(c); /* stops the thread */
}

static void test_negative(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 60000);
    struct behaviour fail = {.result = IDB_E_UPSTREAM_4XX,
                             .upstream_status = 400,
                             .upstream_error = "{\"error\":\"invalid_request\"}",
                             .retry_after_s = 7};
    struct behaviour ok = {0};
    const struct tc_token *t = NULL;
    struct tc_error e1 = {0}, e2 = {0};
    bool hit;

    assert_int_equal(token_cache_get(c, "k", false, mono_ms() + 30000, fetch, ud_new(&fail),
                                     ud_free, &t, &hit, &e1),
                     IDB_E_UPSTREAM_4XX);
    assert_int_equal(e1.code, IDB_E_UPSTREAM_4XX);
    assert_int_equal(e1.upstream_status, 400);
    assert_int_equal(e1.retry_after_s, 7);
    assert_string_equal(e1.upstream_error, "{\"error\":\"invalid_request\"}");

    /* Remembered: the same error, no second fetch, even with bypass and a fetch that would work. */
    assert_int_equal(token_cache_get(c, "k", true, mono_ms() + 30000, fetch, ud_new(&ok), ud_free,
                                     &t, &hit, &e2),
                     IDB_E_UPSTREAM_4XX);
    assert_int_equal(e2.upstream_status, 400);
    assert_int_equal(e2.retry_after_s, 7);
    assert_string_equal(e2.upstream_error, e1.upstream_error);
    assert_ptr_not_equal(e2.upstream_error, e1.upstream_error);
    assert_int_equal(atomic_load(&n_fetches), 1);
    tc_error_done(&e1);
    tc_error_done(&e2);
    tc_error_done(NULL);
    struct tc_stats s = stats(c);
    assert_int_equal(s.fetch_errors, 1);
    assert_int_equal(s.hits, 1);

    /* Eviction forgets the failure. */
    assert_int_equal(token_cache_evict_prefix(c, ""), 1);
    char tok[32];
    assert_int_equal(get(c, "k", false, &ok, tok, sizeof(tok), NULL), 0);
    cache_done(c);

    /* The negative entry expires after negative_ms. */
    setup(NULL);
    c = cache_new(100, 300, 1);
    assert_int_equal(get(c, "k", false, &fail, tok, sizeof(tok), NULL), IDB_E_UPSTREAM_4XX);
    sleep_ms(20);
    assert_int_equal(get(c, "k", false, &ok, tok, sizeof(tok), NULL), 0);
    assert_int_equal(atomic_load(&n_fetches), 2);
    cache_done(c);

    /* negative_ms = 0: failures are not remembered. */
    setup(NULL);
    c = cache_new(100, 300, 0);
    assert_int_equal(get(c, "k", false, &fail, tok, sizeof(tok), NULL), IDB_E_UPSTREAM_4XX);
    assert_int_equal(get(c, "k", false, &fail, tok, sizeof(tok), NULL), IDB_E_UPSTREAM_4XX);
    assert_int_equal(atomic_load(&n_fetches), 2);
    assert_int_equal(stats(c).entries, 0);
    cache_done(c);
}

/* Waits (polling) until the cache's stats satisfy a condition. */
static void wait_coalesced(struct token_cache *c, uint64_t n)
{
    while (stats(c).coalesced < n)
        sleep_ms(1);
}

struct getter {
    struct token_cache *c;
    const char *key;
    bool bypass;
    struct behaviour b;
    int r;
    struct tc_error err;
    char tok[32];
};

static void *getter_thread(void *p)
{
    struct getter *g = p;
    const struct tc_token *t = NULL;
    bool hit;
    g->r = token_cache_get(g->c, g->key, g->bypass, mono_ms() + 30000, fetch, ud_new(&g->b),
                           ud_free, &t, &hit, &g->err);
    if (g->r >= 0) {
        snprintf(g->tok, sizeof(g->tok), "%s", t->access_token);
        token_cache_release(g->c, t);
    }
    return NULL;
}

static void test_bypass(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    struct behaviour ok = {0};
    char t[32];
    bool hit;

    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_int_equal(get(c, "k", true, &ok, t, sizeof(t), &hit), 0);
    assert_false(hit);
    assert_string_equal(t, "tok-2");
    assert_int_equal(get(c, "k", false, &ok, t, sizeof(t), &hit), 0);
    assert_true(hit);
    assert_string_equal(t, "tok-2");

    /* Concurrent bypassers share one fetch. */
    enum { N = 10 };
    sem_t gate;
    sem_init(&gate, 0, 0);
    struct getter g[N];
    pthread_t th[N];
    uint64_t base = stats(c).coalesced;
    for (size_t i = 0; i < N; i++) {
        g[i] = (struct getter){.c = c, .key = "k", .bypass = true, .b = {.gate = &gate}};
        assert_int_equal(pthread_create(&th[i], NULL, getter_thread, &g[i]), 0);
    }
    wait_coalesced(c, base + N - 1);
    sem_post(&gate);
    for (size_t i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(g[i].r, 0);
        assert_string_equal(g[i].tok, "tok-3");
    }
    assert_int_equal(atomic_load(&n_fetches), 3);
    cache_done(c);
    sem_destroy(&gate);
}

static bool pred_ns1(const char *key, void *ud)
{
    (*(int *)ud)++;
    return strncmp(key, "ns1/", 4) == 0;
}

static void test_evict(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    struct behaviour ok = {0};
    char t[32];

    assert_int_equal(get(c, "ns1/a", false, &ok, t, sizeof(t), NULL), 0);
    assert_int_equal(get(c, "ns2/b", false, &ok, t, sizeof(t), NULL), 0);
    assert_int_equal(get(c, "ns1/c", false, &ok, t, sizeof(t), NULL), 0);
    assert_int_equal(get(c, "ns10/d", false, &ok, t, sizeof(t), NULL), 0);

    int calls = 0;
    assert_int_equal(token_cache_evict_if(c, pred_ns1, &calls), 2);
    assert_true(calls >= 4);
    assert_int_equal(stats(c).entries, 2);
    assert_int_equal(token_cache_evict_prefix(c, "ns1/"), 0);
    assert_int_equal(token_cache_evict_prefix(c, "ns1"), 1);
    assert_int_equal(stats(c).entries, 1);
    assert_int_equal(stats(c).evictions, 3);
    bool hit;
    assert_int_equal(get(c, "ns2/b", false, &ok, t, sizeof(t), &hit), 0);
    assert_true(hit);
    assert_int_equal(get(c, "ns1/a", false, &ok, t, sizeof(t), &hit), 0);
    assert_false(hit);
    cache_done(c);
}

static void test_evict_during_flight(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    sem_t gate, gate_b, started;
    sem_init(&gate, 0, 0);
    sem_init(&gate_b, 0, 0);
    sem_init(&started, 0, 0);

    /* A waits on a fetch that is blocked; the key is evicted meanwhile. */
    struct getter a = {.c = c, .key = "pod/x", .b = {.gate = &gate, .started = &started}};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, getter_thread, &a), 0);
    sem_wait(&started);
    assert_int_equal(token_cache_evict_prefix(c, "pod/"), 0);

    /* B arrives after the eviction: it does not join the old flight but starts its own. */
    struct getter b = {.c = c, .key = "pod/x", .b = {.gate = &gate_b, .started = &started}};
    assert_int_equal(pthread_create(&tb, NULL, getter_thread, &b), 0);
    sem_wait(&started);
    assert_int_equal(atomic_load(&n_fetches), 2);
    assert_int_equal(stats(c).coalesced, 0);

    /* Let A's fetch finish first; it reaches A but is not stored. */
    sem_post(&gate);
    pthread_join(ta, NULL);
    assert_int_equal(a.r, 0);
    assert_int_equal(stats(c).entries, 0);
    sem_post(&gate_b);
    pthread_join(tb, NULL);
    assert_int_equal(b.r, 0);
    assert_string_not_equal(a.tok, b.tok);

    /* Only B's result was stored. */
    char t[32];
    bool hit;
    struct behaviour ok = {0};
    assert_int_equal(get(c, "pod/x", false, &ok, t, sizeof(t), &hit), 0);
    assert_true(hit);
    assert_string_equal(t, b.tok);
    assert_int_equal(atomic_load(&n_fetches), 2);

    /* A flight whose only waiter timed out, evicted before it lands: nothing stored. */
    struct behaviour gated = {.gate = &gate};
    const struct tc_token *tk = NULL;
    assert_int_equal(token_cache_get(c, "pod/y", false, mono_ms() + 20, fetch, ud_new(&gated),
                                     ud_free, &tk, &hit, NULL),
                     IDB_E_PROVIDER_TIMEOUT);
    assert_int_equal(token_cache_evict_prefix(c, "pod/y"), 0);
    sem_post(&gate);
    cache_done(c);
    sem_destroy(&gate);
    sem_destroy(&gate_b);
    sem_destroy(&started);
}

static void test_lru(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(3, 300, 0);
    struct behaviour ok = {0};
    char t[32];
    bool hit;

    assert_int_equal(get(c, "a", false, &ok, t, sizeof(t), NULL), 0);
    assert_int_equal(get(c, "b", false, &ok, t, sizeof(t), NULL), 0);
    assert_int_equal(get(c, "c", false, &ok, t, sizeof(t), NULL), 0);
    assert_int_equal(get(c, "a", false, &ok, t, sizeof(t), &hit), 0); /* a is now most recent */
    assert_true(hit);
    assert_int_equal(get(c, "d", false, &ok, t, sizeof(t), NULL), 0); /* pushes out b */
    struct tc_stats s = stats(c);
    assert_int_equal(s.entries, 3);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(get(c, "a", false, &ok, t, sizeof(t), &hit), 0);
    assert_true(hit);
    assert_int_equal(get(c, "c", false, &ok, t, sizeof(t), &hit), 0);
    assert_true(hit);
    assert_int_equal(get(c, "b", false, &ok, t, sizeof(t), &hit), 0); /* pushes out d */
    assert_false(hit);
    assert_int_equal(get(c, "d", false, &ok, t, sizeof(t), &hit), 0);
    assert_false(hit);

    /* Shrinking evicts the least recently used at once. */
    struct tc_options o = {
        .max_entries = 1, .min_ttl_s = 300, .now = now_fn, .refresh_interval_ms = TC_REFRESH_OFF};
    token_cache_set_options(c, &o);
    assert_int_equal(stats(c).entries, 1);
    assert_int_equal(get(c, "d", false, &ok, t, sizeof(t), &hit), 0);
    assert_true(hit);

    /* Many keys through a small cache stay bounded (and the table grows and shrinks cleanly). */
    o.max_entries = 50;
    token_cache_set_options(c, &o);
    for (int i = 0; i < 300; i++) {
        char key[16];
        snprintf(key, sizeof(key), "many-%d", i);
        assert_int_equal(get(c, key, false, &ok, t, sizeof(t), NULL), 0);
    }
    assert_int_equal(stats(c).entries, 50);
    cache_done(c);
}

static void test_error_propagation(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    sem_t gate;
    sem_init(&gate, 0, 0);

    /* Every joined waiter gets its own copy of the upstream error. */
    enum { N = 4 };
    struct getter g[N];
    pthread_t th[N];
    struct behaviour fail = {.gate = &gate,
                             .result = IDB_E_UPSTREAM_UNAVAILABLE,
                             .upstream_status = 503,
                             .upstream_error = "{\"error\":\"busy\"}",
                             .retry_after_s = 3};
    for (size_t i = 0; i < N; i++) {
        g[i] = (struct getter){.c = c, .key = "k", .b = fail};
        assert_int_equal(pthread_create(&th[i], NULL, getter_thread, &g[i]), 0);
    }
    wait_coalesced(c, N - 1);
    sem_post(&gate);
    for (size_t i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(g[i].r, IDB_E_UPSTREAM_UNAVAILABLE);
        assert_int_equal(g[i].err.code, IDB_E_UPSTREAM_UNAVAILABLE);
        assert_int_equal(g[i].err.upstream_status, 503);
        assert_int_equal(g[i].err.retry_after_s, 3);
        assert_string_equal(g[i].err.upstream_error, "{\"error\":\"busy\"}");
        for (size_t j = 0; j < i; j++)
            assert_ptr_not_equal(g[i].err.upstream_error, g[j].err.upstream_error);
    }
    for (size_t i = 0; i < N; i++)
        tc_error_done(&g[i].err);
    assert_int_equal(atomic_load(&n_fetches), 1);

    cache_done(c);
    sem_destroy(&gate);
}

static int fetch_empty(void *ud, struct tc_token *ret, struct tc_error *ret_err)
{
    (void)ud;
    (void)ret_err;
    ret->client_id = strdup("leftover"); /* freed by the cache */
    return 0;
}

static void test_bad_reply(void **state)
{
    (void)state;
    struct token_cache *c = cache_new(100, 300, 0);
    const struct tc_token *t = NULL;
    struct tc_error err = {0};
    assert_int_equal(
        token_cache_get(c, "k", false, mono_ms() + 30000, fetch_empty, NULL, NULL, &t, NULL, &err),
        IDB_E_UPSTREAM_BAD_REPLY);
    assert_null(t);
    tc_error_done(&err);
    token_cache_free(c);
    assert_null(token_cache_free(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_hit_miss, setup),
        cmocka_unit_test_setup(test_single_flight_200, setup),
        cmocka_unit_test_setup(test_different_keys, setup),
        cmocka_unit_test_setup(test_peek, setup),
        cmocka_unit_test_setup(test_deadline, setup),
        cmocka_unit_test_setup(test_min_ttl, setup),
        cmocka_unit_test_setup(test_refresh, setup),
        cmocka_unit_test_setup(test_proactive_refresh, setup),
        cmocka_unit_test_setup(test_proactive_refresh_unused, setup),
        cmocka_unit_test_setup(test_proactive_refresh_skips, setup),
        cmocka_unit_test_setup(test_proactive_evict, setup),
        cmocka_unit_test_setup(test_refresher_thread, setup),
        cmocka_unit_test_setup(test_negative, setup),
        cmocka_unit_test_setup(test_bypass, setup),
        cmocka_unit_test_setup(test_evict, setup),
        cmocka_unit_test_setup(test_evict_during_flight, setup),
        cmocka_unit_test_setup(test_lru, setup),
        cmocka_unit_test_setup(test_error_propagation, setup),
        cmocka_unit_test_setup(test_bad_reply, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
