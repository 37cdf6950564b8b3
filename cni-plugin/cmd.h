/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plugin's commands (DESIGN §6). main.c reads the environment and stdin, picks one of these
 * from its table and prints what it returns. Each command runs in the node's network namespace
 * (where the runtime runs CNI plugins) and holds registration_lock() while it changes rules or
 * state, so parallel ADD/DEL/GC for different pods are safe.
 */
#ifndef IDB_CNI_CMD_H
#define IDB_CNI_CMD_H

#include "cni-result.h"
#include "conf.h"

#define CMD_LOCK_TIMEOUT_MS 10000 /* waiting longer for the state lock gives code 11 */

/* The CNI_* environment (borrowed strings; NULL when unset). */
struct cni_env {
    const char *command;
    const char *container_id;
    const char *netns;
    const char *ifname;
    const char *args;
    const char *path;
};

/* Every command: on success returns 0 and *ret_out (returns new, may be NULL for "print nothing")
 * is the text for stdout; on failure returns a negative errno and err holds the CNI error to print.
 */
typedef int (*cmd_fn)(const struct cni_env *env, const struct cni_conf *conf, char **ret_out,
                      struct cni_error *err);

/* ADD: requires prevResult; writes the pod's record (what DEL must remove) first, installs the
 * pod's redirect and anti-spoofing elements in one nftables transaction (code 11 and nothing of the
 * pod's changed when that fails), flushes the pod's conntrack entries to the metadata and broker
 * addresses, writes the registration, tells the broker (a broker that is down is only logged), and
 * prints prevResult back. Repeating an ADD is idempotent; an ADD whose address an older attachment
 * still holds (its DEL never came) evicts that stale attachment in a transaction of its own first.
 * Killed at any point, it leaves files that parse and a record of every element it installed; a
 * full disk (ENOSPC, EDQUOT) fails with code 11 and leaves nothing of the pod. */
int cmd_add(const struct cni_env *env, const struct cni_conf *conf, char **ret_out,
            struct cni_error *err);
/* DEL: idempotent; needs neither netns nor prevResult. */
int cmd_del(const struct cni_env *env, const struct cni_conf *conf, char **ret_out,
            struct cni_error *err);
/* CHECK: the pod's elements, idbroker's chains and the registration exist and match prevResult. */
int cmd_check(const struct cni_env *env, const struct cni_conf *conf, char **ret_out,
              struct cni_error *err);
/* GC (1.1.0): removes records, registrations and elements of attachments not in
 * cni.dev/valid-attachments, and rebuilds the sets from the records that stay. */
int cmd_gc(const struct cni_env *env, const struct cni_conf *conf, char **ret_out,
           struct cni_error *err);
/* STATUS (1.1.0): code 50 only when idbroker's tables cannot be programmed (a dry-run transaction).
 */
int cmd_status(const struct cni_env *env, const struct cni_conf *conf, char **ret_out,
               struct cni_error *err);
/* `idbroker --guard` (not a CNI command; deploy/install-cni.sh runs it): installs idbroker's tables
 * (the redirect chain and the guard, empty pod sets) for this configuration now, so that a node is
 * fail-closed before its first ADD. Leaves tables of the same revision alone (*ret_written false);
 * otherwise rewrites the chains in one transaction, keeping every set element (as an ADD that finds
 * them missing or outdated does). Code 11 when nftables cannot be programmed. */
int cmd_guard(const struct cni_conf *conf, bool *ret_written, struct cni_error *err);

#endif
