/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manifests of the files source (DESIGN §5): YAML or JSON, several documents per file (YAML "---",
 * or a "kind: List" with items). Kinds: AzureIdentity, AzureIdentityBinding,
 * AzurePodIdentityException (apiVersion aadpodidentity.k8s.io/v1) and Pod (v1; metadata only:
 * namespace, name, uid, labels, spec.nodeName,
 * status.podIPs / status.podIP). v1 lower-camel fields, plus the seed's capitalised
 * spellings (ResourceID, ClientID, AzureIdentity, Selector, …) when reading. Other kinds are
 * skipped. A missing metadata.namespace is "default".
 */
#ifndef IDB_BROKER_MANIFEST_H
#define IDB_BROKER_MANIFEST_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct identity;
struct binding;
struct pod_exception;
struct pod_meta;

enum manifest_kind {
    MANIFEST_IDENTITY = 1,
    MANIFEST_BINDING,
    MANIFEST_EXCEPTION,
    MANIFEST_POD,
};

/* One converted object: exactly the member of `kind` is set (owned). */
struct manifest_object {
    enum manifest_kind kind;
    struct identity *identity;
    struct binding *binding;
    struct pod_exception *exception;
    struct pod_meta *pod;
};

/* Frees the members (not the struct) and zeroes it. Accepts NULL. */
void manifest_object_done(struct manifest_object *o);

/* Converts one parsed object (borrowed; e.g. an item of a Kubernetes LIST or a watch event's
 * object) of the given kind with the same field rules as manifest_parse(). `kind` and
 * `apiVersion` in the object are not looked at: the caller knows what it asked for. `origin`
 * (borrowed) becomes the object's origin as it is. On success fills *ret (free with
 * manifest_object_done); on error returns IDB_E_BAD_MANIFEST or -ENOMEM and *ret_error (optional,
 * returns new) names the field. */
int manifest_object_from_json(struct json_object *o, enum manifest_kind kind, const char *origin,
                              struct manifest_object *ret, char **ret_error);

/* Parses the first YAML (or JSON) document of text[0..len) into json-c (e.g. a kubeconfig), with
 * the manifest rules: scalars stay strings, no anchors or aliases, depth and size capped. The top
 * must be a mapping. Returns 0 and *ret (returns new), or IDB_E_BAD_MANIFEST / -ENOMEM with
 * *ret_error (optional, returns new). */
int manifest_yaml_to_json(const char *text, size_t len, const char *origin,
                          struct json_object **ret, char **ret_error);

/* Parses text[0..len) and puts every object into `s`. `origin` (a file name) prefixes messages.
 * On error returns IDB_E_BAD_MANIFEST (or -ENOMEM) with *ret_error (returns new) naming
 * "<origin>: document N: field 'spec.weight': expected an integer, got 'x'"; objects of earlier
 * documents may already be in `s` (the caller discards the whole store, see source_files_load). */
int manifest_parse(const char *text, size_t len, const char *origin, struct store *s,
                   char **ret_error);

/* Loads every *.yaml, *.yml and *.json file in `dir` (not recursive, sorted by name, hidden files
 * skipped) into a new store (returns new). All or nothing: on any error returns < 0, *ret
 * untouched, *ret_error says which file, document and field. */
int source_files_load(const char *dir, struct store **ret, char **ret_error);

/* A fingerprint of the directory's relevant files (names, sizes, mtimes, inode numbers); a change
 * means "reload". */
int source_files_fingerprint(const char *dir, uint64_t *ret);

#endif
