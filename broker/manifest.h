/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manifests of the files source (DESIGN §5): YAML or JSON, several documents per file (YAML "---",
 * or a "kind: List" with items). Kinds: AzureIdentity, AzureIdentityBinding,
 * AzurePodIdentityException (apiVersion aadpodidentity.k8s.io/v1) and Pod (v1; metadata only:
 * namespace, name, uid, labels, spec.nodeName). v1 lower-camel fields, plus the seed's capitalised
 * spellings (ResourceID, ClientID, AzureIdentity, Selector, …) when reading. Other kinds are
 * skipped. A missing metadata.namespace is "default".
 */
#ifndef IDB_BROKER_MANIFEST_H
#define IDB_BROKER_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

struct store;

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
