/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The live policy: init state, generations, flags, replace, incremental edits, and the change
 * notification (a waiter woken by a replace from another thread; a timeout when nothing changes).
 * No assertion depends on how long anything takes.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker-internal/macro.h>

#include "host-api.h"
#include "policy.h"
#include "store.h"

#include <cmocka.h>

static struct pod_meta *mkpod(const char *ns, const char *name)
{
    struct pod_meta *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    p->namespace = strdup(ns);
    p->name = strdup(name);
    assert_non_null(p->namespace);
    assert_non_null(p->name);
    return p;
}

static void test_init(void **state)
{
    (void)state;
    struct store_policy f = {.namespaced = true, .exceptions = true};
    struct policy p;
    assert_int_equal(policy_init(&p, &f, true), 0);
    assert_non_null(p.store);
    assert_false(p.synced);
    assert_true(p.authoritative);
    assert_true(p.flags.namespaced);
    assert_false(p.flags.strict_selection);
    assert_true(p.flags.exceptions);
    assert_int_equal(policy_generation(&p), 0);
    assert_int_equal(store_count_identities(p.store), 0);
    policy_done(&p);
    /* Done twice is harmless (the store pointer says whether anything is left). */
    policy_done(&p);

    struct policy k;
    assert_int_equal(policy_init(&k, &f, false), 0);
    assert_false(k.authoritative);
    policy_done(&k);
}

static void test_generation_and_flags(void **state)
{
    (void)state;
    struct store_policy f = {0};
    struct policy p;
    assert_int_equal(policy_init(&p, &f, true), 0);

    struct store *s = store_new();
    assert_non_null(s);
    assert_int_equal(store_put_pod(s, mkpod("default", "a")), 0);
    assert_int_equal(policy_replace(&p, s), 1);
    assert_true(p.synced);
    assert_ptr_equal(p.store, s);
    assert_int_equal(policy_generation(&p), 1);
    assert_non_null(store_get_pod(p.store, "default", "a"));

    struct store_policy g = {.namespaced = true, .strict_selection = true};
    policy_set_flags(&p, &g);
    assert_int_equal(policy_generation(&p), 2);
    assert_true(p.flags.namespaced);
    assert_true(p.flags.strict_selection);
    assert_false(p.flags.exceptions);

    /* Incremental edit: the generation moves when the write lock is released. */
    policy_write_lock(&p);
    assert_int_equal(store_put_pod(p.store, mkpod("default", "b")), 0);
    policy_write_unlock(&p);
    assert_int_equal(policy_generation(&p), 3);

    policy_read_lock(&p);
    assert_int_equal(store_count_pods(p.store), 2);
    policy_read_unlock(&p);
    /* Reading changes nothing. */
    assert_int_equal(policy_generation(&p), 3);

    /* A second replace returns the next generation and drops the old store. */
    assert_int_equal(policy_replace(&p, store_new()), 4);
    assert_int_equal(store_count_pods(p.store), 0);
    policy_done(&p);
}

static void test_wait_timeout(void **state)
{
    (void)state;
    struct store_policy f = {0};
    struct policy p;
    assert_int_equal(policy_init(&p, &f, false), 0);
    uint64_t g = policy_generation(&p);
    /* Nothing changes: returns 0 once the deadline has passed. */
    assert_int_equal(policy_wait_change(&p, g, now_monotonic_ms() + 30), 0);
    /* A deadline already in the past returns at once. */
    assert_int_equal(policy_wait_change(&p, g, 0), 0);
    /* An old generation is reported as changed without waiting. */
    policy_set_flags(&p, &f);
    assert_int_equal(policy_wait_change(&p, g, 0), 1);
    assert_int_equal(policy_wait_change(&p, g, now_monotonic_ms() + 60000), 1);
    policy_done(&p);
}

struct waiter {
    struct policy *p;
    uint64_t seen;
    int result;
    uint64_t generation;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool waiting;
};

static void *wait_thread(void *ud)
{
    struct waiter *w = ud;
    pthread_mutex_lock(&w->lock);
    w->waiting = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    /* A long deadline: only a change ends the wait in a passing run. */
    w->result = policy_wait_change(w->p, w->seen, now_monotonic_ms() + 50000);
    w->generation = policy_generation(w->p);
    return NULL;
}

static void start_waiter(struct waiter *w, struct policy *p, pthread_t *t)
{
    *w = (struct waiter){.p = p, .seen = policy_generation(p), .result = -1};
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    assert_int_equal(pthread_create(t, NULL, wait_thread, w), 0);
    pthread_mutex_lock(&w->lock);
    while (!w->waiting)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

static void join_waiter(struct waiter *w, pthread_t t)
{
    assert_int_equal(pthread_join(t, NULL), 0);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
}

static void test_replace_wakes_waiters(void **state)
{
    (void)state;
    struct store_policy f = {0};
    struct policy p;
    assert_int_equal(policy_init(&p, &f, false), 0);

    /* Two waiters; a replace from this thread wakes both. The waiters may or may not be asleep
     * yet when the change lands: either way they must report it. */
    struct waiter w1, w2;
    pthread_t t1, t2;
    start_waiter(&w1, &p, &t1);
    start_waiter(&w2, &p, &t2);
    struct store *s = store_new();
    assert_non_null(s);
    assert_int_equal(store_put_pod(s, mkpod("default", "a")), 0);
    uint64_t g = policy_replace(&p, s);
    join_waiter(&w1, t1);
    join_waiter(&w2, t2);
    assert_int_equal(w1.result, 1);
    assert_int_equal(w2.result, 1);
    assert_true(w1.generation >= g);
    assert_true(p.synced);

    /* An incremental edit wakes a waiter too. */
    start_waiter(&w1, &p, &t1);
    policy_write_lock(&p);
    assert_int_equal(store_remove_pod(p.store, "default", "a"), 1);
    policy_write_unlock(&p);
    join_waiter(&w1, t1);
    assert_int_equal(w1.result, 1);

    /* And a flag change. */
    start_waiter(&w1, &p, &t1);
    struct store_policy g2 = {.exceptions = true};
    policy_set_flags(&p, &g2);
    join_waiter(&w1, t1);
    assert_int_equal(w1.result, 1);
    policy_done(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_generation_and_flags),
        cmocka_unit_test(test_wait_timeout),
        cmocka_unit_test(test_replace_wakes_waiters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
