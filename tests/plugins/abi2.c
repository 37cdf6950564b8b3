/* SPDX-License-Identifier: Apache-2.0 */
/* Test provider built for ABI major 2: the loader must refuse it. */
#include "stub.h"

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = 2,
    .abi_minor = 0,
    .size = sizeof(struct idb_provider),
    .name = "abi2",
    .init = stub_init,
    .issue = stub_issue,
    .destroy = stub_destroy,
};
