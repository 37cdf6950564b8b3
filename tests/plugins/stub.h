/* SPDX-License-Identifier: Apache-2.0 */
/* Shared bodies of the small broken test providers: each includes this and exports one struct. */
#ifndef IDB_TEST_PLUGIN_STUB_H
#define IDB_TEST_PLUGIN_STUB_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker/provider.h>

static inline int stub_init(const struct idb_host_api *host, const char *conf, void **ret_state)
{
    (void)host;
    (void)conf;
    *ret_state = NULL;
    return 0;
}

static inline int stub_issue(void *state, const struct idb_token_req *req, struct idb_token *ret)
{
    (void)state;
    (void)req;
    (void)ret;
    return IDB_E_UPSTREAM_UNAVAILABLE;
}

static inline void stub_destroy(void *state)
{
    (void)state;
}

#endif
