/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cleanup helpers shared by the broker, idbrokerctl and the CNI plugin (STYLE R7, R10).
 * Nothing else in the tree uses __attribute__((cleanup)) directly. Never installed.
 */
#ifndef IDBROKER_INTERNAL_MACRO_H
#define IDBROKER_INTERNAL_MACRO_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

static inline void freep(void *p)
{
    free(*(void **)p);
}
#define _cleanup_free_ __attribute__((cleanup(freep)))

/* Frees a NUL-terminated secret after wiping it. */
static inline void erase_and_freep(void *p)
{
    char *s = *(char **)p;
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}
#define _cleanup_erase_ __attribute__((cleanup(erase_and_freep)))

static inline void closep(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}
#define _cleanup_close_ __attribute__((cleanup(closep)))

static inline void fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}
#define _cleanup_fclose_ __attribute__((cleanup(fclosep)))

static inline void *take_ptr_(void *pp)
{
    void **p = pp, *v = *p;
    *p = NULL;
    return v;
}
#define TAKE_PTR(p) take_ptr_(&(p))

static inline int take_fd_(int *fd)
{
    int v = *fd;
    *fd = -1;
    return v;
}
#define TAKE_FD(fd) take_fd_(&(fd))

/* Defines a cleanup function `name##p` that calls `fn` on a pointer of type `type *`. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, fn)                                                      \
    static inline void fn##p(type *p)                                                              \
    {                                                                                              \
        if (*p)                                                                                    \
            fn(*p);                                                                                \
    }

#define streq(a, b) (strcmp((a), (b)) == 0)

static inline const char *strna(const char *s)
{
    return s ? s : "n/a";
}

#endif
