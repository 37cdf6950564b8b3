/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The broker's dedicated listen address (DESIGN §4; THREATS T9, T18). The token endpoint listens on
 * a link-local address of the node namespace, never on 127.0.0.1. Both the CNI plugin (at ADD) and
 * the broker (at start) make sure the address exists, idempotently, so neither start order leaves a
 * window: the address is added as a /32 (/128) with host scope to the loopback device — this kernel
 * family has no `dummy` link type everywhere, and local delivery of DNATed pod traffic works on
 * `lo`.
 */
#ifndef IDB_BROKER_NETADDR_H
#define IDB_BROKER_NETADDR_H

#include <stdbool.h>

/* Whether `ip` (text) is an address the broker manages: IPv4 169.254.0.0/16 other than the metadata
 * address itself, or IPv6 fe80::/10. */
bool netaddr_is_managed(const char *ip);
/* Adds `ip` to the loopback device unless some interface already has it. Returns 0 if it was
 * present, 1 if added, < 0 on failure. */
int netaddr_ensure(const char *ip);

#endif
