/* SPDX-License-Identifier: Apache-2.0 */
/* Test provider that calls itself 'not-badname' though its file is badname.so. */
#include "stub.h"

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .size = sizeof(struct idb_provider),
    .name = "not-badname",
    .init = stub_init,
    .issue = stub_issue,
    .destroy = stub_destroy,
};
