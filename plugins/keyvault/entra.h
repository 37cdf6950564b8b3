/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Entra ID side of the keyvault provider: the client-credentials request (URL, scope,
 * URL-encoded form, the certificate-signed client assertion) and the token endpoint's reply.
 * No I/O, no logging; compiled into the provider, its unit tests and the fuzz target
 * fuzz-entra-reply.
 */
#ifndef IDB_KEYVAULT_ENTRA_H
#define IDB_KEYVAULT_ENTRA_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENTRA_MAX_TENANT 128
#define ENTRA_MAX_CLIENT_ID 128
#define ENTRA_MAX_RESOURCE 2048
#define ENTRA_MAX_TOKEN (64 * 1024)
#define ENTRA_MAX_ERROR_TEXT 1024
#define ENTRA_ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

/* Whether s is a tenant ID or domain ([0-9A-Za-z.-]{1,128}, no leading dot). */
bool entra_valid_tenant(const char *s);

/* Whether s is a client ID (printable ASCII without white space, 1..128 bytes). */
bool entra_valid_client_id(const char *s);

/* Builds "{authority}/{tenant}/oauth2/v2.0/token". authority is "https://host[:port]" with an
 * optional trailing slash and no path. Returns 0 with a new string and the lower-case host / port
 * (0 when none) for allow-list checks, -EINVAL, -ENOMEM. */
int entra_token_url(const char *authority, const char *tenant, char **ret_url, char **ret_host,
                    int *ret_port);

/* The v2 scope for a resource: the resource itself when it already ends in "/.default", else
 * resource + "/.default" (a v1 resource such as "https://management.azure.com/" keeps its slash:
 * "https://management.azure.com//.default", as Entra ID expects). Returns new, NULL on ENOMEM or
 * an empty or over-long resource. */
char *entra_scope(const char *resource);

/* An application/x-www-form-urlencoded body. Wiped when freed: it holds the secret or assertion. */
struct entra_form {
    char *buf;
    size_t len, cap;
};

/* Appends "&key=value" (no '&' first), percent-encoding everything but ALPHA / DIGIT / "-._~".
 * Returns 0, -ENOMEM, -E2BIG (past 256 KiB). */
int entra_form_add(struct entra_form *f, const char *key, const char *value);
void entra_form_done(struct entra_form *f);

enum entra_alg {
    ENTRA_RS256 = 0,
    ENTRA_PS256 = 1,
};

/* Builds the client assertion (RFC 7523) Entra ID expects: header {"alg", "typ":"JWT", "x5t",
 * "x5t#S256"} with the base64url certificate digests; claims aud = token_url, iss = sub =
 * client_id, jti (random UUID), iat = nbf = now, exp = now + lifetime_s. Signed with key (RSA)
 * with RS256 or PS256 (salt length = 32). Returns 0 with a new NUL-terminated JWT, -EINVAL,
 * -ENOMEM, -EIO (OpenSSL failure). */
int entra_build_assertion(EVP_PKEY *key, const unsigned char x5t[20],
                          const unsigned char x5t_s256[32], const char *client_id,
                          const char *token_url, uint64_t now, uint32_t lifetime_s,
                          enum entra_alg alg, char **ret);

/* The token endpoint's reply, success or error. */
struct entra_reply {
    char *access_token;      /* on success; wiped by entra_reply_done() */
    uint64_t expires_in;     /* seconds (number or numeric string in the reply) */
    uint64_t ext_expires_in; /* 0 when absent */
    char *error;             /* on error: "invalid_client", …; printable, cut */
    char *error_description; /* may be NULL; printable, cut */
    int64_t error_code;      /* first of error_codes (e.g. 7000215), 0 when absent */
};

/* Parses a reply body. Returns 0 when it is a success reply (access_token, expires_in > 0,
 * token_type Bearer when present) or an error reply (a string "error"); -EBADMSG otherwise;
 * -ENOMEM. */
int entra_parse_reply(const char *body, size_t len, struct entra_reply *ret);
void entra_reply_done(struct entra_reply *r);

/* Whether an error reply says the client credential is wrong (invalid_client, or AADSTS 7000215
 * invalid secret, 7000222 expired secret, 700027 bad assertion signature or unknown certificate):
 * the cue to re-read Key Vault once. */
bool entra_reply_bad_credential(const struct entra_reply *r);

#endif
