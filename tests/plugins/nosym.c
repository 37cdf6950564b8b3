/* SPDX-License-Identifier: Apache-2.0 */
/* Test provider that exports no idb_plugin_v1 (only a misspelt one): the loader must refuse it. */
#include "stub.h"

IDB_EXPORT const struct idb_provider idb_plugin_v0 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .size = sizeof(struct idb_provider),
    .name = "nosym",
    .init = stub_init,
    .issue = stub_issue,
    .destroy = stub_destroy,
};
