/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy store (STYLE R1): AzureIdentity, AzureIdentityBinding, AzurePodIdentityException and
 * pod metadata (labels), and the decision "which identity may this pod use". Pure data: no I/O, no
 * locks, no logging; includes nothing from broker/. Callers serialise access (the broker holds a
 * rwlock; the files source builds a whole new store and swaps it in).
 *
 * Objects are keyed by (namespace, name). Adding an object with an existing key replaces it.
 * Ownership: store_put_*() take ownership of the object on success only.
 *
 * An object is either built field by field (calloc, each string its own allocation; `packed` is
 * false) or made by identity_new() and friends: one allocation holding the struct, its arrays and
 * its strings, the fields pointing into it (`packed` is true). The store holds tens of thousands of
 * objects, so the sources (manifest.c, k8s-watch.c) make packed ones: one malloc instead of a
 * dozen, without a malloc header and rounding per string (docs/performance.md has the figures). The
 * *_free() destructors free either kind; empty strings of a packed object point to one shared
 * read-only "" and must not be written to.
 */
#ifndef IDB_BROKER_STORE_H
#define IDB_BROKER_STORE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_ANNOTATION_PROVIDER "idbroker.io/provider"
#define STORE_ANNOTATION_OBJECT_ID "idbroker.io/object-id"
#define STORE_ANNOTATION_BEHAVIOR "aadpodidentity.k8s.io/Behavior"
#define STORE_POD_LABEL "aadpodidbinding"

struct kv {
    char *key;
    char *value;
};

struct identity {
    char *namespace;
    char *name;
    char *uid;            /* metadata.uid, may be NULL */
    int type;             /* spec.type: 0 MSI, 1 SP, 2 SP certificate */
    bool packed;          /* made by identity_new(); never set by hand */
    char *resource_id;    /* spec.resourceID, "" if absent */
    char *client_id;      /* spec.clientID */
    char *tenant_id;      /* spec.tenantID */
    char *ad_endpoint;    /* spec.adEndpoint */
    char *ad_resource_id; /* spec.adResourceID */
    char *secret_name;    /* spec.clientPassword.name */
    char *secret_namespace;
    struct kv *annotations;
    size_t n_annotations;
    uint64_t hash; /* of every field above: a changed identity gets a new cache key */
    char *origin;  /* "file.yaml#3" or "api", for explain */
};

struct binding {
    char *namespace;
    char *name;
    char *identity; /* spec.azureIdentity: an AzureIdentity name */
    char *selector; /* spec.selector: value of the pod label aadpodidbinding */
    int64_t weight; /* spec.weight, 0 if absent */
    char *origin;
    bool packed; /* made by binding_new(); never set by hand */
};

struct pod_exception {
    char *namespace;
    char *name;
    struct kv *pod_labels; /* spec.podLabels */
    size_t n_pod_labels;
    char *origin;
    bool packed; /* made by pod_exception_new(); never set by hand */
};

struct pod_meta {
    char *namespace;
    char *name;
    char *uid;  /* may be NULL */
    char *node; /* spec.nodeName, may be NULL */
    struct kv *labels;
    size_t n_labels;
    char **ips; /* status.podIPs[].ip (else status.podIP) as the source gave them; may be NULL */
    size_t n_ips;
    char *origin;
    bool host_network; /* spec.hostNetwork */
    bool running;      /* status.phase is "Running" */
    bool terminating;  /* metadata.deletionTimestamp is set */
    bool packed;       /* made by pod_meta_new(); never set by hand */
};

/*
 * Return new: a packed copy of *tmpl (one allocation; see the top of this file), or NULL when out
 * of memory. tmpl and everything it points to are borrowed and may be freed afterwards; its
 * `packed` flag is ignored. identity_new() computes the copy's hash.
 */
struct identity *identity_new(const struct identity *tmpl);
struct binding *binding_new(const struct binding *tmpl);
struct pod_exception *pod_exception_new(const struct pod_exception *tmpl);
struct pod_meta *pod_meta_new(const struct pod_meta *tmpl);

/* Destructors accept NULL and return NULL (STYLE R9). */
struct identity *identity_free(struct identity *i);
struct binding *binding_free(struct binding *b);
struct pod_exception *pod_exception_free(struct pod_exception *e);
struct pod_meta *pod_meta_free(struct pod_meta *p);
/* Recomputes i->hash from its fields. */
void identity_update_hash(struct identity *i);
/* Annotation value or NULL. */
const char *identity_annotation(const struct identity *i, const char *key);

struct store;
struct store *store_new(void);
struct store *store_free(struct store *s);

int store_put_identity(struct store *s, struct identity *i);
int store_put_binding(struct store *s, struct binding *b);
int store_put_exception(struct store *s, struct pod_exception *e);
int store_put_pod(struct store *s, struct pod_meta *p);
/* Return 1 if something was removed, 0 if absent. */
int store_remove_identity(struct store *s, const char *ns, const char *name);
int store_remove_binding(struct store *s, const char *ns, const char *name);
int store_remove_exception(struct store *s, const char *ns, const char *name);
int store_remove_pod(struct store *s, const char *ns, const char *name);

/* Borrowed lookups; NULL if absent. */
const struct identity *store_get_identity(const struct store *s, const char *ns, const char *name);
const struct pod_meta *store_get_pod(const struct store *s, const char *ns, const char *name);

size_t store_count_identities(const struct store *s);
size_t store_count_bindings(const struct store *s);
size_t store_count_exceptions(const struct store *s);
size_t store_count_pods(const struct store *s);

/* Iteration in a stable order (namespace, name). cb returns < 0 to stop; that value is returned. */
int store_foreach_identity(const struct store *s, int (*cb)(const struct identity *, void *),
                           void *ud);
int store_foreach_binding(const struct store *s, int (*cb)(const struct binding *, void *),
                          void *ud);
int store_foreach_exception(const struct store *s, int (*cb)(const struct pod_exception *, void *),
                            void *ud);
int store_foreach_pod(const struct store *s, int (*cb)(const struct pod_meta *, void *), void *ud);

/* JSON views (returns new) in the v1 CRD shape, lower-camel, for idbrokerctl. */
struct json_object *identity_to_json(const struct identity *i);
struct json_object *binding_to_json(const struct binding *b);
struct json_object *pod_exception_to_json(const struct pod_exception *e);

enum selector_kind {
    SELECTOR_NONE,
    SELECTOR_CLIENT_ID,   /* client_id: matches spec.clientID, case-insensitive */
    SELECTOR_OBJECT_ID,   /* object_id / principal_id: matches annotation idbroker.io/object-id */
    SELECTOR_RESOURCE_ID, /* msi_res_id / mi_res_id: matches spec.resourceID, case-insensitive */
};

struct store_policy {
    bool namespaced;       /* identity, binding and pod share a namespace */
    bool strict_selection; /* several bound and none requested -> IDB_E_MULTIPLE_IDENTITIES */
    bool exceptions;       /* honour AzurePodIdentityException */
};

struct decision {
    int result;                      /* 0 granted, or IDB_E_* (see store_decide) */
    const struct identity *identity; /* borrowed from the store; valid while it is unchanged */
    const struct binding *binding;   /* the binding that granted it */
    char reason[512];                /* human-readable, for explain and audit; no secrets */
};

/*
 * Decides which identity the pod (ns, name) may use when asking with the given selector.
 * Returns 0 and fills *ret in every case where a decision was made; ret->result is:
 *   0                          granted: ret->identity, ret->binding set
 *   IDB_E_EXCEPTED             the pod matches an AzurePodIdentityException (policy.exceptions)
 *   IDB_E_NOT_SYNCED           no metadata for the pod in the store
 *   IDB_E_NO_BINDING           no binding selects the pod (or its identity is missing)
 *   IDB_E_IDENTITY_NOT_FOUND   a selector was given and no bound identity matches it
 *   IDB_E_MULTIPLE_IDENTITIES  several bound, none requested, policy.strict_selection
 * Selection among several bound identities without a selector: highest binding weight, then
 * identity name, then identity namespace (deterministic). Never allocates.
 */
int store_decide(const struct store *s, const struct store_policy *p, const char *ns,
                 const char *name, enum selector_kind sel, const char *sel_value,
                 struct decision *ret);

/*
 * Calls cb once for every identity the policy grants to pod (ns, name), with the binding that
 * grants it (the best one by the store_decide order when several bindings grant the same
 * identity), in (identity namespace, identity name) order. Everything store_decide() would let the
 * pod ask for with a selector: an excepted pod, a pod without metadata or without bindings gets no
 * call. strict_selection does not matter here. cb returns < 0 to stop; that value is returned.
 * Returns 0 otherwise, -EINVAL, -ENOMEM. cb must not change the store.
 */
int store_foreach_grant(const struct store *s, const struct store_policy *p, const char *ns,
                        const char *name,
                        int (*cb)(const struct identity *i, const struct binding *b, void *ud),
                        void *ud);

/* The full reasoning for `idbrokerctl explain`: returns new JSON {decision, reason,
 * candidates:[...]} listing every binding considered and why it did or did not apply. */
struct json_object *store_explain(const struct store *s, const struct store_policy *p,
                                  const char *ns, const char *name);

#endif
