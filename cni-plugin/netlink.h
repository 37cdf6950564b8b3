/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the plugin asks the kernel through libnl, in the current (node) network namespace:
 * interfaces and their bridge masters, the route to a pod address, the broker's address, and
 * conntrack entries. Every function opens and closes its own netlink socket.
 */
#ifndef IDB_CNI_NETLINK_H
#define IDB_CNI_NETLINK_H

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>

#include <idbroker-internal/registration.h>

#define NETLINK_BROKER_DEV "idbroker0" /* preferred home of the broker address (a dummy link) */

struct netlink_link {
    int ifindex;
    char name[IFNAMSIZ];
    int master;     /* ifindex of the master (bridge) or 0 */
    bool is_bridge; /* the link itself is a bridge */
};

/* -ENODEV when there is no such link. */
int netlink_link_by_name(const char *name, struct netlink_link *ret);
int netlink_link_by_index(int ifindex, struct netlink_link *ret);

/* The device the node routes `ip` through (RTM_GETROUTE). -ENETUNREACH without a route. */
int netlink_route_dev(const struct reg_ip *ip, int *ret_ifindex);

/* Makes `addr` (the broker address) a local address of the node, idempotently: nothing to do when
 * it is already local anywhere; otherwise it is added as a /32 (/128) host-scope address to the
 * dummy link "idbroker0" (created and brought up when the kernel has the dummy type) or else to
 * "lo". Writes the device it is on into ret_dev (optional). Never touches route_localnet. */
int netlink_address_ensure(const struct reg_ip *addr, char ret_dev[IFNAMSIZ]);

/* Deletes conntrack entries whose original direction goes from one of srcs to one of dsts (any
 * port, any protocol). Writes how many were deleted into *ret_deleted (optional). */
int netlink_conntrack_flush(const struct reg_ip *srcs, size_t n_srcs, const struct reg_ip *dsts,
                            size_t n_dsts, unsigned *ret_deleted);

#endif
