/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pods the API server shows running on this node, on the pod network, that the idbroker CNI
 * plugin never set up (THREATS T21): created before the install step, or while the primary CNI had
 * dropped idbroker from its conflist. They have no redirect (the guard drops their requests to the
 * metadata address) and no registration. The broker scans its store and registry now and then and
 * names them: a warning per pod, the gauge idbroker_pods_unprotected, `idbrokerctl status`.
 *
 * A pod counts once it has been seen unregistered in two scans in a row (a pod ADDed between the
 * API's update and the registration's arrival is never reported). hostNetwork pods, pods not in
 * phase Running, pods being deleted and pods without an address are never counted.
 * Not thread-safe: one caller (the broker's main loop).
 */
#ifndef IDB_BROKER_UNPROTECTED_H
#define IDB_BROKER_UNPROTECTED_H

#include <stdbool.h>
#include <stddef.h>

#include "store.h"

#define UNPROTECTED_LOG_MAX 20 /* pods named per scan; the rest are counted in one line */

struct unprotected;

struct unprotected *unprotected_new(void);
struct unprotected *unprotected_free(struct unprotected *u);

/* One scan of the pods of node `node` in s (read-locked by the caller); registered(ns, name, ud)
 * says whether the pod has a registration. Logs pods that became unprotected and those that no
 * longer are. Returns the number of unprotected pods, or -ENOMEM (the previous state is kept). */
int unprotected_scan(struct unprotected *u, const struct store *s, const char *node,
                     bool (*registered)(const char *ns, const char *name, void *ud), void *ud);

#endif
