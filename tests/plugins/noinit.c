/* SPDX-License-Identifier: Apache-2.0 */
/* Test provider whose init() is NULL: the loader must refuse it. */
#include "stub.h"

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .size = sizeof(struct idb_provider),
    .name = "noinit",
    .init = NULL,
    .issue = stub_issue,
    .destroy = stub_destroy,
};
