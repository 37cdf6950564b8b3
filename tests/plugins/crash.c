/* SPDX-License-Identifier: Apache-2.0 */
/* Test provider whose issue() dereferences NULL: for tests that the broker survives a crashing one.
 */
#include "stub.h"

/* Not instrumented: in the sanitizer build the store must crash, not become a UBSan report. */
__attribute__((no_sanitize("undefined"))) static int
crash_issue(void *state, const struct idb_token_req *req, struct idb_token *ret)
{
    (void)state;
    (void)req;
    (void)ret;
    /* volatile, so the compiler cannot prove the store undefined and drop it */
    int *volatile p = NULL;
    *p = 42;
    return IDB_E_UPSTREAM_UNAVAILABLE;
}

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .abi_minor = IDB_PLUGIN_ABI_MINOR,
    .size = sizeof(struct idb_provider),
    .name = "crash",
    .version = "1.0-test",
    .init = stub_init,
    .issue = crash_issue,
    .destroy = stub_destroy,
};
