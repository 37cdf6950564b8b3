/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsers of the keyvault provider for what comes from outside: Key Vault secret URLs (from
 * AzureIdentity annotations), Key Vault's WWW-Authenticate challenge, its secret and error replies,
 * and host allow-list patterns. No I/O, no logging; compiled into the provider, its unit tests and
 * the fuzz target fuzz-kv-reply.
 *
 * Strings returned are malloc'd and belong to the caller; the struct's *_done() frees them (and
 * wipes the secret value).
 */
#ifndef IDB_KEYVAULT_KV_PARSE_H
#define IDB_KEYVAULT_KV_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KV_MAX_URL 2048
#define KV_MAX_HOST 253
#define KV_MAX_SECRET_NAME 127
#define KV_MAX_VERSION 64
#define KV_MAX_CHALLENGE 8192

/* Where a credential lives: https://<host>[:<port>]/secrets/<name>[/<version>]. */
struct kv_ref {
    char *vault;   /* "https://<host>[:<port>]", no trailing slash */
    char *host;    /* lower-case */
    int port;      /* 0 when the URL names none (443) */
    char *name;    /* [0-9A-Za-z-]{1,127} */
    char *version; /* [0-9A-Za-z]{1,64}, or NULL for the current version */
};

/* Parses a Key Vault secret URL. Only https, no user info, query or fragment; a trailing slash is
 * accepted. Returns 0, -EINVAL when malformed, -ENOMEM. *ret is written only on success. */
int kv_parse_secret_url(const char *url, struct kv_ref *ret);

/* Parses a vault base URL "https://<host>[:<port>][/]" and joins it with a secret name (and an
 * optional version, may be NULL). Same rules and returns as kv_parse_secret_url(). */
int kv_parse_vault_url(const char *vault_url, const char *name, const char *version,
                       struct kv_ref *ret);

/* Returns true when name is a valid Key Vault object name ([0-9A-Za-z-]{1,127}). */
bool kv_parse_valid_name(const char *name);

/* Frees the strings of r (not r itself); accepts a zeroed struct. */
void kv_ref_done(struct kv_ref *r);

/* Whether host (lower-case) and port (0 = default 443) match an allow-list pattern: "host" (port
 * 443 only), "host:port", "host:*" (any port); a leading "*." matches one or more labels in front
 * of the rest ("*.vault.azure.net" matches "a.vault.azure.net", not "vault.azure.net"). Patterns
 * compare case-insensitively. */
bool kv_parse_host_match(const char *pattern, const char *host, int port);

/* A Key Vault (or ARM) bearer challenge: WWW-Authenticate: Bearer authorization="…",
 * resource="…" or scope="…". */
struct kv_challenge {
    char *authorization; /* authorization or authorization_uri; may be NULL */
    char *resource;      /* resource, or scope without its "/.default"; may be NULL */
};

/* Parses a WWW-Authenticate value. Returns 0 when it is a Bearer challenge (fields may be NULL),
 * -EBADMSG when it is not or is malformed, -E2BIG when longer than KV_MAX_CHALLENGE, -ENOMEM. */
int kv_parse_challenge(const char *header, struct kv_challenge *ret);
void kv_challenge_done(struct kv_challenge *c);

/* Key Vault's SecretBundle: {"value", "contentType", "id", "attributes": {"enabled", "exp",
 * "nbf"}}. */
struct kv_secret {
    char *value; /* the secret; wiped by kv_secret_done() */
    size_t value_len;
    char *content_type; /* may be NULL */
    char *id;           /* the secret's version URL; may be NULL */
    bool enabled;       /* attributes.enabled; true when absent */
    uint64_t exp;       /* attributes.exp (epoch seconds), 0 when absent */
    uint64_t nbf;       /* attributes.nbf (epoch seconds), 0 when absent */
};

/* Parses a 200 reply of GET /secrets/{name}[/{version}]. Returns 0, -EBADMSG (not JSON, not an
 * object, no string "value", wrong types), -ENOMEM. */
int kv_parse_secret_reply(const char *body, size_t len, struct kv_secret *ret);
void kv_secret_done(struct kv_secret *s);

/* Parses Key Vault's error body {"error": {"code", "message", "innererror": {"code"}}}. Returns 0
 * with the strings (each may be NULL when absent; *ret_inner the inner code), -EBADMSG when it is
 * not such a body, -ENOMEM. Messages longer than 512 bytes are cut; control characters become '?'.
 */
int kv_parse_error_reply(const char *body, size_t len, char **ret_code, char **ret_message,
                         char **ret_inner);

struct json_object;

/* Parses exactly one JSON object from body[0..len) (white space around it allowed, nesting capped
 * at 16). Returns 0 with a new reference in *ret, -EBADMSG, -ENOMEM. */
int kv_parse_json_object(const char *body, size_t len, struct json_object **ret);

/* A copy of s with control characters replaced by '?', cut at max bytes; NULL on ENOMEM. */
char *kv_parse_printable_dup(const char *s, size_t max);

#endif
