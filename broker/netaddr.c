/* SPDX-License-Identifier: Apache-2.0 */
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <string.h>

bool netaddr_is_managed(const char *ip)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, ip, a) == 1)
        return a[0] == 169 && a[1] == 254 && !(a[2] == 169 && a[3] == 254);
    if (inet_pton(AF_INET6, ip, a) == 1)
        return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
    return false;
}

int netaddr_ensure(const char *ip)
{
    int family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    unsigned char bin[16];
    /* nl_addr_parse() also takes "default", "any", "none" and "a.b.c.d/len": only a plain address
     * may reach it. */
    if (inet_pton(family, ip, bin) != 1)
        return -EINVAL;
    struct nl_sock *sk = nl_socket_alloc();
    struct nl_cache *cache = NULL;
    struct nl_addr *want = NULL;
    struct rtnl_addr *ra = NULL;
    int r = -ENOMEM;
    if (!sk)
        return -ENOMEM;
    if (nl_connect(sk, NETLINK_ROUTE) < 0) {
        r = -ECONNREFUSED;
        goto out;
    }
    if (nl_addr_parse(ip, family, &want) < 0) {
        r = -EINVAL;
        goto out;
    }
    if (rtnl_addr_alloc_cache(sk, &cache) < 0) {
        r = -EIO;
        goto out;
    }
    for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
        struct nl_addr *local = rtnl_addr_get_local((struct rtnl_addr *)o);
        if (local && nl_addr_get_family(local) == family &&
            nl_addr_get_len(local) == nl_addr_get_len(want) &&
            memcmp(nl_addr_get_binary_addr(local), nl_addr_get_binary_addr(want),
                   nl_addr_get_len(want)) == 0) {
            r = 0;
            goto out;
        }
    }
    ra = rtnl_addr_alloc();
    if (!ra)
        goto out;
    nl_addr_set_prefixlen(want, family == AF_INET ? 32 : 128);
    rtnl_addr_set_ifindex(ra, (int)if_nametoindex("lo"));
    rtnl_addr_set_local(ra, want);
    rtnl_addr_set_scope(ra, RT_SCOPE_HOST);
    int k = rtnl_addr_add(sk, ra, 0);
    if (k < 0 && k != -NLE_EXIST) {
        r = k == -NLE_PERM ? -EPERM : -EIO;
        goto out;
    }
    r = 1;
out:
    rtnl_addr_put(ra);
    nl_addr_put(want);
    nl_cache_free(cache);
    nl_socket_free(sk);
    return r;
}
