/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test provider built against a future 1.x header: minor 7, with one field appended after destroy.
 * The broker must load it and ignore what it does not know.
 */
#include "stub.h"

struct provider_v1_7 {
    struct idb_provider v1_0;
    int (*future_hook)(void *state);
};

IDB_EXPORT const struct provider_v1_7 idb_plugin_v1 = {
    .v1_0 =
        {
            .abi_major = IDB_PLUGIN_ABI_MAJOR,
            .abi_minor = 7,
            .size = sizeof(struct provider_v1_7),
            .name = "newer",
            .version = "1.7-test",
            .init = stub_init,
            .issue = stub_issue,
            .destroy = stub_destroy,
        },
    .future_hook = NULL,
};
