/* SPDX-License-Identifier: Apache-2.0 */
/* Test provider that declares a struct idb_provider too short for ABI 1.0 (it stops before
 * destroy). */
#include "stub.h"

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .size = offsetof(struct idb_provider, destroy),
    .name = "short",
    .init = stub_init,
    .issue = stub_issue,
    .destroy = stub_destroy,
};
