/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The AzureAssignedIdentity writer (DESIGN §5): shows the broker's decisions to
 * `kubectl get azureassignedidentities`, as aad-pod-identity did. For each (pod of this node,
 * identity) that the policy grants, one object `<pod>-<podNamespace>-<identity>` in the identity's
 * namespace, label nodename=<node>, spec azureIdentityRef / azureBindingRef / pod / podNamespace /
 * nodename, status.status "Created", then "Assigned" once a token was issued for it. Objects of
 * this node that no grant backs (the grant ended, or a user made them) are deleted; at start that
 * removes the stale ones. Writes are server-side apply (PATCH application/apply-patch+yaml,
 * fieldManager=idbroker, force) and DELETE: never GET-modify-PUT.
 *
 * An AzureAssignedIdentity never grants anything: decisions are computed from identity, binding
 * and pod alone (THREATS T14). This module only reads the policy.
 *
 * One thread; it reconciles when notified (policy change, token issued, AAI change seen by the
 * watch) and every AAI_RESYNC_MS, once the policy is synced and the node's AAIs have been listed.
 */
#ifndef IDB_BROKER_AAI_H
#define IDB_BROKER_AAI_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#define AAI_RESYNC_MS 60000
#define AAI_FIELD_MANAGER "idbroker"

struct k8s_client;
struct policy;
struct k8s_aai_sink;

struct aai_options {
    struct k8s_client *client; /* borrowed; must outlive the writer */
    struct policy *policy;     /* borrowed */
    const char *node_name;     /* copied */
};

struct aai_writer;

/* Starts the writer thread. Returns 0 and *ret (returns new), or -errno. */
int aai_writer_start(const struct aai_options *o, struct aai_writer **ret);
/* Stops, joins and frees. Call k8s_client_stop() first, or a running request holds this up.
 * Accepts NULL; returns NULL. */
struct aai_writer *aai_writer_free(struct aai_writer *a);
/* The policy changed: reconcile soon. Cheap; any thread. */
void aai_writer_notify(struct aai_writer *a);
/* A token of identity id_ns/id_name was issued to pod pod_ns/pod_name: its AAI becomes Assigned.
 * Matches issuer_options.on_issued (ud = the writer). Cheap when nothing changes; any thread. */
void aai_writer_issued(void *ud, const char *pod_ns, const char *pod_name, const char *id_ns,
                       const char *id_name);
/* The sink to hand to k8s_watch_options.aai (borrowed from the writer). */
const struct k8s_aai_sink *aai_writer_sink(struct aai_writer *a);

/* The AAI name for (pod, namespace, identity) into buf: "<pod>-<namespace>-<identity>". Returns
 * -ENAMETOOLONG when it would not be a valid object name (over 253 characters). */
int aai_name(const char *pod, const char *pod_ns, const char *identity, char *buf, size_t n);

#endif
