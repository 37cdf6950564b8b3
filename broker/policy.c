/* SPDX-License-Identifier: Apache-2.0 */
#include "policy.h"

#include <errno.h>
#include <time.h>

#include <idbroker-internal/thread.h>

int policy_init(struct policy *p, const struct store_policy *flags, bool authoritative)
{
    *p = (struct policy){.flags = *flags, .authoritative = authoritative};
    p->store = store_new();
    if (!p->store)
        return -ENOMEM;
    pthread_rwlock_init(&p->lock, NULL);
    pthread_mutex_init(&p->wait_lock, NULL);
    (void)cond_init_monotonic(&p->wait_cond);
    return 0;
}

void policy_done(struct policy *p)
{
    if (!p->store)
        return;
    p->store = store_free(p->store);
    pthread_rwlock_destroy(&p->lock);
    pthread_mutex_destroy(&p->wait_lock);
    pthread_cond_destroy(&p->wait_cond);
}

static void bump(struct policy *p)
{
    pthread_mutex_lock(&p->wait_lock);
    __atomic_add_fetch(&p->generation, 1, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&p->wait_cond);
    pthread_mutex_unlock(&p->wait_lock);
}

uint64_t policy_replace(struct policy *p, struct store *s)
{
    pthread_rwlock_wrlock(&p->lock);
    struct store *old = p->store;
    p->store = s;
    p->synced = true;
    pthread_rwlock_unlock(&p->lock);
    store_free(old);
    bump(p);
    return policy_generation(p);
}

void policy_set_flags(struct policy *p, const struct store_policy *flags)
{
    pthread_rwlock_wrlock(&p->lock);
    p->flags = *flags;
    pthread_rwlock_unlock(&p->lock);
    bump(p);
}

void policy_write_lock(struct policy *p)
{
    pthread_rwlock_wrlock(&p->lock);
}

void policy_write_unlock(struct policy *p)
{
    pthread_rwlock_unlock(&p->lock);
    bump(p);
}

void policy_read_lock(struct policy *p)
{
    pthread_rwlock_rdlock(&p->lock);
}

void policy_read_unlock(struct policy *p)
{
    pthread_rwlock_unlock(&p->lock);
}

uint64_t policy_generation(struct policy *p)
{
    return __atomic_load_n(&p->generation, __ATOMIC_SEQ_CST);
}

int policy_wait_change(struct policy *p, uint64_t seen, uint64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline_ms / 1000),
                          .tv_nsec = (long)(deadline_ms % 1000) * 1000000L};
    int changed = 0;
    pthread_mutex_lock(&p->wait_lock);
    for (;;) {
        if (policy_generation(p) != seen) {
            changed = 1;
            break;
        }
        if (pthread_cond_timedwait(&p->wait_cond, &p->wait_lock, &ts) == ETIMEDOUT) {
            changed = policy_generation(p) != seen;
            break;
        }
    }
    pthread_mutex_unlock(&p->wait_lock);
    return changed;
}
