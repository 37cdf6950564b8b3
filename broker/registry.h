/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pod registrations in memory, indexed by address, backed by the durable files of
 * include/idbroker-internal/registration.h in stateDir. Thread-safe (internal mutex); lookups are
 * O(1) and copy the registration out, so no pointer into the registry escapes a call.
 */
#ifndef IDB_BROKER_REGISTRY_H
#define IDB_BROKER_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <idbroker-internal/registration.h>

struct registry;

/* state_dir is copied. Creates nothing on disk until registry_load()/registry_add(). */
struct registry *registry_new(const char *state_dir);
struct registry *registry_free(struct registry *r);

/* Replaces the in-memory set with the files in stateDir. Bad files are reported through bad_cb and
 * skipped. Returns the number loaded. */
int registry_load(struct registry *r,
                  void (*bad_cb)(const char *path, int error, const char *why, void *ud), void *ud);

/* Adds or replaces (same container ID + ifName). With persist, writes the file first (under the
 * state lock) and changes memory only if that succeeded. */
int registry_add(struct registry *r, const struct registration *reg, bool persist);
/* Removes (idempotent). Returns 1 if it was there, 0 if not. With persist, removes the file too. */
int registry_remove(struct registry *r, const char *container_id, const char *if_name,
                    bool persist);
/* Removes every registration of pod ns/name. Returns how many. */
int registry_remove_pod(struct registry *r, const char *ns, const char *name, bool persist);
/* Re-reads one registration from stateDir (the CNI plugin wrote or removed it): present -> add,
 * absent -> remove. Returns 1 if now present, 0 if now absent. */
int registry_sync(struct registry *r, const char *container_id, const char *if_name);

/* Finds the registration owning address ip. Returns 0 and copies it to *ret; -ENOENT if none;
 * IDB_E_AMBIGUOUS_POD if more than one live registration claims the address. */
int registry_lookup_ip(struct registry *r, const struct reg_ip *ip, struct registration *ret);
/* Finds pod ns/name (its first attachment). -ENOENT if none. */
int registry_find_pod(struct registry *r, const char *ns, const char *name,
                      struct registration *ret);
/* Whether any registration is for pod ns/name. */
bool registry_has_pod(struct registry *r, const char *ns, const char *name);

size_t registry_count(struct registry *r);
/* Calls cb on a snapshot (copies), in container-ID order, without holding the lock. */
int registry_foreach(struct registry *r, int (*cb)(const struct registration *reg, void *ud),
                     void *ud);
/* Increments on every change; lets callers notice changes cheaply. */
uint64_t registry_generation(struct registry *r);

#endif
