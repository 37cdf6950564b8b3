/* SPDX-License-Identifier: Apache-2.0 */
#include "netlink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <netlink/addr.h>
#include <netlink/errno.h>
#include <netlink/netfilter/ct.h>
#include <netlink/netfilter/nfnl.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/route.h>
#include <string.h>

#include <idbroker-internal/macro.h>

/* libnl's own error numbers -> negative errno (STYLE R5). */
static int nl_errno(int nlerr)
{
    switch (nlerr < 0 ? -nlerr : nlerr) {
    case 0:
        return 0;
    case NLE_NOMEM:
        return -ENOMEM;
    case NLE_EXIST:
        return -EEXIST;
    case NLE_INVAL:
        return -EINVAL;
    case NLE_RANGE:
        return -ERANGE;
    case NLE_OPNOTSUPP:
    case NLE_MSGTYPE_NOSUPPORT:
        return -EOPNOTSUPP;
    case NLE_AF_NOSUPPORT:
        return -EAFNOSUPPORT;
    case NLE_OBJ_NOTFOUND:
        return -ENOENT;
    case NLE_NOADDR:
        return -EADDRNOTAVAIL;
    case NLE_NODEV:
        return -ENODEV;
    case NLE_NOACCESS:
        return -EACCES;
    case NLE_PERM:
        return -EPERM;
    case NLE_BUSY:
        return -EBUSY;
    case NLE_AGAIN:
    case NLE_DUMP_INTR:
        return -EAGAIN;
    default:
        return -EIO;
    }
}

static int route_socket(struct nl_sock **ret)
{
    struct nl_sock *sk = nl_socket_alloc();
    if (!sk)
        return -ENOMEM;
    int r = nl_connect(sk, NETLINK_ROUTE);
    if (r < 0) {
        nl_socket_free(sk);
        return nl_errno(r);
    }
    *ret = sk;
    return 0;
}

static void fill_link(struct rtnl_link *l, struct netlink_link *ret)
{
    struct netlink_link k = {.ifindex = rtnl_link_get_ifindex(l),
                             .master = rtnl_link_get_master(l)};
    const char *name = rtnl_link_get_name(l);
    snprintf(k.name, sizeof(k.name), "%s", name ? name : "");
    const char *type = rtnl_link_get_type(l);
    k.is_bridge = type && streq(type, "bridge");
    *ret = k;
}

static int link_get(int ifindex, const char *name, struct netlink_link *ret)
{
    struct nl_sock *sk = NULL;
    int r = route_socket(&sk);
    if (r < 0)
        return r;
    struct rtnl_link *l = NULL;
    r = rtnl_link_get_kernel(sk, ifindex, name, &l);
    nl_socket_free(sk);
    if (r < 0)
        return r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV ? -ENODEV : nl_errno(r);
    fill_link(l, ret);
    rtnl_link_put(l);
    return 0;
}

int netlink_link_by_name(const char *name, struct netlink_link *ret)
{
    if (!name || !*name || strlen(name) >= IFNAMSIZ)
        return -EINVAL;
    return link_get(0, name, ret);
}

int netlink_link_by_index(int ifindex, struct netlink_link *ret)
{
    if (ifindex <= 0)
        return -EINVAL;
    return link_get(ifindex, NULL, ret);
}

static struct nl_addr *to_nl_addr(const struct reg_ip *ip)
{
    if (ip->family == AF_INET)
        return nl_addr_build(AF_INET, ip->addr.v4, 4);
    return nl_addr_build(AF_INET6, ip->addr.v6, 16);
}

/* Looks the route to ip up; returns its type (RTN_*) and first next hop's device. */
static int route_get(struct nl_sock *sk, const struct reg_ip *ip, int *ret_type, int *ret_ifindex)
{
    struct nl_addr *dst = to_nl_addr(ip);
    if (!dst)
        return -ENOMEM;
    struct rtnl_route *route = NULL;
    int r = rtnl_route_lookup(sk, dst, &route);
    nl_addr_put(dst);
    if (r < 0)
        return r == -NLE_OBJ_NOTFOUND ? -ENETUNREACH : nl_errno(r);
    int type = rtnl_route_get_type(route), ifindex = 0;
    if (rtnl_route_get_nnexthops(route) > 0)
        ifindex = rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(route, 0));
    rtnl_route_put(route);
    *ret_type = type;
    *ret_ifindex = ifindex;
    return 0;
}

int netlink_route_dev(const struct reg_ip *ip, int *ret_ifindex)
{
    struct nl_sock *sk = NULL;
    int r = route_socket(&sk);
    if (r < 0)
        return r;
    int type = 0, ifindex = 0;
    r = route_get(sk, ip, &type, &ifindex);
    nl_socket_free(sk);
    if (r < 0)
        return r;
    if (type != RTN_UNICAST || ifindex <= 0)
        return -ENETUNREACH;
    *ret_ifindex = ifindex;
    return 0;
}

/* The dummy link "idbroker0", created and up; -EOPNOTSUPP when the kernel has no dummy type. */
static int dummy_ensure(struct nl_sock *sk, int *ret_ifindex)
{
    struct rtnl_link *l = NULL;
    int r = rtnl_link_get_kernel(sk, 0, NETLINK_BROKER_DEV, &l);
    if (r < 0) {
        struct rtnl_link *n = rtnl_link_alloc();
        if (!n)
            return -ENOMEM;
        rtnl_link_set_name(n, NETLINK_BROKER_DEV);
        r = rtnl_link_set_type(n, "dummy");
        if (r >= 0)
            r = rtnl_link_add(sk, n, NLM_F_CREATE);
        rtnl_link_put(n);
        if (r < 0 && r != -NLE_EXIST)
            return -EOPNOTSUPP;
        r = rtnl_link_get_kernel(sk, 0, NETLINK_BROKER_DEV, &l);
        if (r < 0)
            return nl_errno(r);
    }
    int ifindex = rtnl_link_get_ifindex(l);
    if (!(rtnl_link_get_flags(l) & IFF_UP)) {
        struct rtnl_link *change = rtnl_link_alloc();
        if (!change) {
            rtnl_link_put(l);
            return -ENOMEM;
        }
        rtnl_link_set_flags(change, IFF_UP);
        r = rtnl_link_change(sk, l, change, 0);
        rtnl_link_put(change);
        if (r < 0) {
            rtnl_link_put(l);
            return nl_errno(r);
        }
    }
    rtnl_link_put(l);
    *ret_ifindex = ifindex;
    return 0;
}

int netlink_address_ensure(const struct reg_ip *addr, char ret_dev[IFNAMSIZ])
{
    struct nl_sock *sk = NULL;
    int r = route_socket(&sk);
    if (r < 0)
        return r;
    int type = 0, ifindex = 0;
    r = route_get(sk, addr, &type, &ifindex);
    if (r == 0 && type == RTN_LOCAL) {
        /* Already local (made by an earlier ADD, by the operator or by the broker's packaging). */
        if (ret_dev && !if_indextoname((unsigned)ifindex, ret_dev))
            snprintf(ret_dev, IFNAMSIZ, "?");
        nl_socket_free(sk);
        return 0;
    }

    r = dummy_ensure(sk, &ifindex);
    if (r < 0) {
        /* This kernel has no dummy type: lo carries it (local delivery of DNATed pod traffic
         * works there without route_localnet, which only concerns 127.0.0.0/8). */
        ifindex = (int)if_nametoindex("lo");
        if (ifindex <= 0) {
            nl_socket_free(sk);
            return -ENODEV;
        }
    }

    struct rtnl_addr *a = rtnl_addr_alloc();
    struct nl_addr *local = to_nl_addr(addr);
    if (!a || !local) {
        rtnl_addr_put(a);
        nl_addr_put(local);
        nl_socket_free(sk);
        return -ENOMEM;
    }
    nl_addr_set_prefixlen(local, addr->family == AF_INET ? 32 : 128);
    rtnl_addr_set_ifindex(a, ifindex);
    rtnl_addr_set_family(a, addr->family);
    rtnl_addr_set_local(a, local);
    rtnl_addr_set_prefixlen(a, addr->family == AF_INET ? 32 : 128);
    rtnl_addr_set_scope(a, RT_SCOPE_HOST);
    if (addr->family == AF_INET6)
        rtnl_addr_set_flags(a, IFA_F_NODAD);
    r = rtnl_addr_add(sk, a, 0);
    rtnl_addr_put(a);
    nl_addr_put(local);
    nl_socket_free(sk);
    if (r < 0 && r != -NLE_EXIST)
        return nl_errno(r);
    if (ret_dev && !if_indextoname((unsigned)ifindex, ret_dev))
        snprintf(ret_dev, IFNAMSIZ, "?");
    return 0;
}

static bool nl_addr_is(struct nl_addr *a, const struct reg_ip *ip)
{
    if (!a || nl_addr_get_family(a) != ip->family)
        return false;
    size_t len = ip->family == AF_INET ? 4 : 16;
    return nl_addr_get_len(a) == len &&
           memcmp(nl_addr_get_binary_addr(a), ip->family == AF_INET ? ip->addr.v4 : ip->addr.v6,
                  len) == 0;
}

struct ct_flush {
    struct nl_sock *sk;
    const struct reg_ip *srcs, *dsts;
    size_t n_srcs, n_dsts;
    unsigned deleted;
    int error;
};

static void ct_visit(struct nl_object *obj, void *userdata)
{
    struct ct_flush *f = userdata;
    struct nfnl_ct *ct = (struct nfnl_ct *)obj;
    struct nl_addr *src = nfnl_ct_get_src(ct, 0), *dst = nfnl_ct_get_dst(ct, 0);
    bool s = false, d = false;
    for (size_t i = 0; i < f->n_srcs && !s; i++)
        s = nl_addr_is(src, &f->srcs[i]);
    for (size_t i = 0; i < f->n_dsts && !d; i++)
        d = nl_addr_is(dst, &f->dsts[i]);
    if (!s || !d)
        return;
    int r = nfnl_ct_del(f->sk, ct, 0);
    if (r < 0 && r != -NLE_OBJ_NOTFOUND) {
        if (!f->error)
            f->error = nl_errno(r);
        return;
    }
    f->deleted++;
}

int netlink_conntrack_flush(const struct reg_ip *srcs, size_t n_srcs, const struct reg_ip *dsts,
                            size_t n_dsts, unsigned *ret_deleted)
{
    struct nl_sock *sk = nl_socket_alloc();
    if (!sk)
        return -ENOMEM;
    int r = nfnl_connect(sk);
    if (r < 0) {
        nl_socket_free(sk);
        return nl_errno(r);
    }
    /* The kernel has no "delete by partial tuple": dump, then delete what matches. */
    struct nl_cache *cache = NULL;
    r = nfnl_ct_alloc_cache(sk, &cache);
    if (r < 0) {
        nl_socket_free(sk);
        return nl_errno(r);
    }
    struct ct_flush f = {.sk = sk, .srcs = srcs, .n_srcs = n_srcs, .dsts = dsts, .n_dsts = n_dsts};
    nl_cache_foreach(cache, ct_visit, &f);
    nl_cache_free(cache);
    nl_socket_free(sk);
    if (f.error)
        return f.error;
    if (ret_deleted)
        *ret_deleted = f.deleted;
    return 0;
}
