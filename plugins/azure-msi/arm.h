/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pure helpers of the azure-msi provider's identity assignment (README.md, "Identity assignment"):
 * the `identity` block of an ARM virtual machine or scale set, the PATCH bodies that add or remove
 * one user-assigned identity while keeping every other, and the checks of the resource IDs that go
 * into ARM URLs. No I/O; tests/unit/test-azure-msi-arm.c compiles this file in.
 *
 * ARM's identity block, as GET returns it and PATCH takes it:
 *   {"identity": {"type": "SystemAssigned, UserAssigned", "principalId": "…",
 *                 "userAssignedIdentities": {"/subscriptions/…/userAssignedIdentities/a": {…}}},
 *    "properties": {"provisioningState": "Succeeded"}}
 * Resource IDs compare case-insensitively, as ARM's do.
 */
#ifndef IDB_PLUGIN_AZURE_MSI_ARM_H
#define IDB_PLUGIN_AZURE_MSI_ARM_H

#include <stdbool.h>
#include <stddef.h>

#define ARM_MAX_RESOURCE_ID 1024 /* bytes of a resource ID we accept */
#define ARM_MAX_IDENTITIES 1024  /* user-assigned identities of one VM we accept */

struct arm_identity {
    bool system_assigned; /* type names SystemAssigned */
    char **user;          /* user-assigned identity resource IDs, as ARM spells them */
    size_t n_user;
    char *provisioning_state; /* properties.provisioningState, NULL if absent */
};

/* Parses a VM or VMSS resource (body[0..len), need not be NUL-terminated). A resource without an
 * identity block has none. Returns 0 and fills *ret (free with arm_identity_done()), -EBADMSG for
 * something that is not such a resource, -E2BIG past the bounds, -ENOMEM. */
int arm_identity_parse(const char *body, size_t len, struct arm_identity *ret);
void arm_identity_done(struct arm_identity *id);

/* Whether id has user-assigned identity `resource_id` (case-insensitive). */
bool arm_identity_has(const struct arm_identity *id, const char *resource_id);

/* The PATCH body that adds `add` to cur: every user-assigned identity of cur and `add`, and the
 * system-assigned identity if cur has it. *ret is new. */
int arm_patch_add(const struct arm_identity *cur, const char *add, char **ret);
/* The PATCH body that removes `remove` from cur, keeping the others: `remove` set to null (with the
 * others listed as they are); or, when it is the last user-assigned identity, type "SystemAssigned"
 * (if cur has it) or "None". *ret is new. */
int arm_patch_remove(const struct arm_identity *cur, const char *remove, char **ret);

/* Whether s is a user-assigned identity's resource ID we are willing to put into ARM bodies:
 * /subscriptions/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME, of
 * [A-Za-z0-9-._()/] only, at most ARM_MAX_RESOURCE_ID bytes. */
bool arm_identity_id_valid(const char *s);

/* The resource whose identity block holds the node's identities, from the node's resource ID: a
 * VM's own ID, or for a scale-set instance (…/virtualMachineScaleSets/SS/virtualMachines/N) the
 * scale set's. Returns 0 with *ret (new), or -EINVAL for anything that is not a VM or scale set ID
 * of safe characters. */
int arm_node_resource(const char *resource_id, char **ret);

/* compute.resourceId of IMDS' /metadata/instance reply. Returns 0 with *ret (new), -EBADMSG. */
int arm_instance_resource_id(const char *body, size_t len, char **ret);

#endif
