/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The live policy: the current store behind a rwlock, the decision flags, and whether the source
 * has synced. Sources (files, kubernetes) replace or edit the store through here; readers (issuer,
 * control) take a read lock for the length of a decision. Waiters for "identity data not yet
 * synced" sleep on a condition variable that every change signals.
 */
#ifndef IDB_BROKER_POLICY_H
#define IDB_BROKER_POLICY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

struct policy {
    pthread_rwlock_t lock;
    struct store *store; /* never NULL after policy_init */
    struct store_policy flags;
    bool synced;        /* the source delivered a complete view at least once */
    bool authoritative; /* files mode: a pod absent from the store has no labels (not "unsynced") */
    uint64_t generation; /* bumps on every change */
    pthread_mutex_t wait_lock;
    pthread_cond_t wait_cond;
};

int policy_init(struct policy *p, const struct store_policy *flags, bool authoritative);
void policy_done(struct policy *p);

/* Replaces the store (takes `s`), marks synced, wakes waiters. Returns the old generation + 1. */
uint64_t policy_replace(struct policy *p, struct store *s);
void policy_set_flags(struct policy *p, const struct store_policy *flags);
/* For incremental sources: call with the write lock held by policy_write_lock(). */
void policy_write_lock(struct policy *p);
void policy_write_unlock(struct policy *p); /* bumps generation and wakes waiters */
void policy_read_lock(struct policy *p);
void policy_read_unlock(struct policy *p);
uint64_t policy_generation(struct policy *p);
/* Waits until the generation differs from `seen` or deadline_ms (CLOCK_MONOTONIC ms) passes.
 * Returns 1 if it changed, 0 on timeout. */
int policy_wait_change(struct policy *p, uint64_t seen, uint64_t deadline_ms);

#endif
