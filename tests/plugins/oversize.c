/* SPDX-License-Identifier: Apache-2.0 */
/* Test provider whose `size` claims more bytes than its exported object has: the loader must refuse
 * to trust it (it would read past the object for any field appended later). */
#include "stub.h"

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .size = 4096,
    .name = "oversize",
    .init = stub_init,
    .issue = stub_issue,
    .destroy = stub_destroy,
};
