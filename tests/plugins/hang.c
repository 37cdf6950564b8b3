/* SPDX-License-Identifier: Apache-2.0 */
/* Test provider whose issue() sleeps 60 s (ignoring the deadline): the broker must not wait for it.
 */
#include <time.h>

#include "stub.h"

static int hang_issue(void *state, const struct idb_token_req *req, struct idb_token *ret)
{
    (void)state;
    (void)req;
    (void)ret;
    struct timespec ts = {.tv_sec = 60};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    return IDB_E_UPSTREAM_UNAVAILABLE;
}

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .abi_minor = IDB_PLUGIN_ABI_MINOR,
    .size = sizeof(struct idb_provider),
    .name = "hang",
    .version = "1.0-test",
    .init = stub_init,
    .issue = hang_issue,
    .destroy = stub_destroy,
};
