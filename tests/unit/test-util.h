/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the unit tests. */
#ifndef IDB_TEST_UTIL_H
#define IDB_TEST_UTIL_H

#include <ftw.h>
#include <stdio.h>
#include <unistd.h>

static inline int rm_one_(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

/* rm -rf path (test clean-up of directories the test made). */
static inline int rm_rf(const char *path)
{
    return nftw(path, rm_one_, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
