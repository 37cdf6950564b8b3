/* SPDX-License-Identifier: Apache-2.0 */
/* Test provider whose init() dereferences NULL: the broker must survive a provider that crashes
 * while it is being loaded, and keep the others. */
#include "stub.h"

/* Not instrumented: in the sanitizer build the store must crash, not become a UBSan report. */
__attribute__((no_sanitize("undefined"))) static int
initcrash_init(const struct idb_host_api *host, const char *conf, void **ret_state)
{
    (void)host;
    (void)conf;
    (void)ret_state;
    int *volatile p = NULL;
    *p = 42;
    return 0;
}

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .abi_minor = IDB_PLUGIN_ABI_MINOR,
    .size = sizeof(struct idb_provider),
    .name = "initcrash",
    .version = "1.0-test",
    .init = initcrash_init,
    .issue = stub_issue,
    .destroy = stub_destroy,
};
