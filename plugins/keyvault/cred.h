/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A service principal's credential as read from Key Vault: a client secret, or an RSA private key
 * with its certificate (from PEM or from base64 PKCS#12). Parsed with OpenSSL 3. Compiled into the
 * provider and its unit tests.
 *
 * A struct cred is reference-counted so that a cached credential can be used by several issue()
 * calls at once: cred_ref() takes a reference, cred_unref() drops one and, with the last, wipes
 * the secret and frees the key (EVP_PKEY_free clears private key numbers).
 */
#ifndef IDB_KEYVAULT_CRED_H
#define IDB_KEYVAULT_CRED_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define CRED_MIN_RSA_BITS 2048

enum cred_kind {
    CRED_SECRET = 1, /* a client secret */
    CRED_CERT = 2,   /* a private key and its certificate */
};

struct cred {
    atomic_uint refs;
    enum cred_kind kind;
    char *secret;               /* CRED_SECRET: the client secret, NUL-terminated */
    EVP_PKEY *key;              /* CRED_CERT: RSA, >= 2048 bits */
    X509 *cert;                 /* CRED_CERT: the certificate of key */
    unsigned char x5t[20];      /* SHA-1 of the certificate's DER */
    unsigned char x5t_s256[32]; /* SHA-256 of the certificate's DER */
    uint64_t not_before;        /* certificate validity, epoch seconds */
    uint64_t not_after;
};

/* How the value of a Key Vault secret is read:
 *  - content type "application/x-pkcs12": base64 PKCS#12 (optionally with password);
 *  - content type "application/x-pem-file", or a value with a "-----BEGIN " line: PEM with one
 *    private key (unencrypted, or encrypted with password) and the certificate that matches it
 *    (others, e.g. a chain, are ignored);
 *  - anything else: the value is a client secret, used as is.
 * `password` may be NULL. Returns 0 with a new credential (one reference) in *ret, or: -EBADMSG
 * (malformed PKCS#12 / PEM / base64), -EKEYREJECTED (wrong password), -ENOKEY (no private key or no
 * certificate matching it), -EMEDIUMTYPE (not an RSA key of at least 2048 bits), -EINVAL (empty
 * secret), -ENOMEM. *ret_why (optional) gets a static sentence for the pod's error description. */
int cred_load(const char *value, size_t len, const char *content_type, const char *password,
              struct cred **ret, const char **ret_why);

/* Takes a reference; returns c. */
struct cred *cred_ref(struct cred *c);

/* Drops a reference (NULL is fine); returns NULL. */
struct cred *cred_unref(struct cred *c);

/* Decodes standard base64 (RFC 4648 §4; white space ignored, padding optional). Returns 0 with a
 * new buffer in *ret (wiped by the caller when secret), -EBADMSG, -ENOMEM. */
int cred_base64_decode(const char *in, size_t len, unsigned char **ret, size_t *ret_len);

#endif
