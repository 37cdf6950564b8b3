/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Condition variables whose timed waits take CLOCK_MONOTONIC deadlines: a step of the wall clock
 * (NTP, an operator) must never shorten or stretch a provider deadline or a watchdog period.
 */
#ifndef IDB_INTERNAL_THREAD_H
#define IDB_INTERNAL_THREAD_H

#include <errno.h>
#include <pthread.h>
#include <time.h>

/* Initialises *c for pthread_cond_timedwait() with CLOCK_MONOTONIC deadlines. Returns 0 or a
 * negative errno (STYLE R3). */
static inline int cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    int r = pthread_condattr_init(&a);
    if (r != 0)
        return -r;
    r = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (r == 0)
        r = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return -r;
}

#endif
