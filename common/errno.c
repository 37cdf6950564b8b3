/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include <idbroker/errno.h>

#include <idbroker-internal/log.h>

const char *idb_strerror(int r)
{
    switch (r) {
#define X(name, val, msg)                                                                          \
    case (val):                                                                                    \
        return (msg);
        IDB_ERRNO_MAP(X)
#undef X
    default:
        break;
    }
    if (r < 0)
        r = -r;
    return strerror(r);
}
