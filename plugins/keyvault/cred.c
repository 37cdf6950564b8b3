/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Loading a service principal's credential from a Key Vault secret value with OpenSSL 3.
 */
#include "cred.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <idbroker-internal/macro.h>

struct cred *cred_ref(struct cred *c)
{
    if (c)
        atomic_fetch_add(&c->refs, 1);
    return c;
}

static void cred_free(struct cred *c)
{
    if (c->secret) {
        OPENSSL_cleanse(c->secret, strlen(c->secret));
        free(c->secret);
    }
    EVP_PKEY_free(c->key);
    X509_free(c->cert);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

struct cred *cred_unref(struct cred *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1)
        cred_free(c);
    return NULL;
}

static int b64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

int cred_base64_decode(const char *in, size_t len, unsigned char **ret, size_t *ret_len)
{
    unsigned char *out = malloc(len / 4 * 3 + 3);
    if (!out)
        return -ENOMEM;
    size_t o = 0, pad = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')
            continue;
        if (ch == '=') {
            pad++;
            continue;
        }
        int v = b64_value(ch);
        if (v < 0 || pad > 0)
            goto bad;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    /* Leftover bits must be zero padding of a valid length (2 or 4 bits), with at most 2 '='. */
    if (pad > 2 || bits >= 6 || (acc & ((1u << bits) - 1)) != 0 || o == 0)
        goto bad;
    *ret = out;
    *ret_len = o;
    return 0;
bad:
    OPENSSL_cleanse(out, len / 4 * 3 + 3);
    free(out);
    return -EBADMSG;
}

static int epoch_of(const ASN1_TIME *t, uint64_t *ret)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return -EBADMSG;
    time_t s = timegm(&tm);
    *ret = s > 0 ? (uint64_t)s : 0;
    return 0;
}

/* Checks key and cert and fills the derived fields of c. */
static int cert_finish(struct cred *c, const char **why)
{
    if (!EVP_PKEY_is_a(c->key, "RSA") || EVP_PKEY_get_bits(c->key) < CRED_MIN_RSA_BITS) {
        *why = "the certificate's key is not an RSA key of at least 2048 bits";
        return -EMEDIUMTYPE;
    }
    if (X509_check_private_key(c->cert, c->key) != 1) {
        *why = "the certificate does not match the private key";
        return -ENOKEY;
    }
    unsigned char *der = NULL;
    int n = i2d_X509(c->cert, &der);
    if (n <= 0)
        return -ENOMEM;
    unsigned int l1 = 0, l2 = 0;
    int ok = EVP_Digest(der, (size_t)n, c->x5t, &l1, EVP_sha1(), NULL) == 1 &&
             EVP_Digest(der, (size_t)n, c->x5t_s256, &l2, EVP_sha256(), NULL) == 1;
    OPENSSL_free(der);
    if (!ok || l1 != sizeof(c->x5t) || l2 != sizeof(c->x5t_s256))
        return -EIO;
    if (epoch_of(X509_get0_notBefore(c->cert), &c->not_before) < 0 ||
        epoch_of(X509_get0_notAfter(c->cert), &c->not_after) < 0) {
        *why = "the certificate's validity dates are malformed";
        return -EBADMSG;
    }
    return 0;
}

static int load_pkcs12(struct cred *c, const char *value, size_t len, const char *password,
                       const char **why)
{
    unsigned char *der = NULL;
    size_t der_len = 0;
    int r = cred_base64_decode(value, len, &der, &der_len);
    if (r < 0) {
        *why = "the PKCS#12 value is not valid base64";
        return r;
    }
    const unsigned char *p = der;
    PKCS12 *p12 = d2i_PKCS12(NULL, &p, (long)der_len);
    OPENSSL_cleanse(der, der_len);
    free(der);
    if (!p12) {
        *why = "the value is not a PKCS#12 file";
        return -EBADMSG;
    }
    STACK_OF(X509) *ca = NULL;
    r = 0;
    const char *pw = password ? password : "";
    if (PKCS12_mac_present(p12) && PKCS12_verify_mac(p12, pw, -1) != 1 &&
        !(pw[0] == '\0' && PKCS12_verify_mac(p12, NULL, 0) == 1)) {
        *why = password ? "the PKCS#12 password is wrong (or the file is corrupt)"
                        : "the PKCS#12 file needs a password (or is corrupt)";
        r = -EKEYREJECTED;
    } else if (PKCS12_parse(p12, pw, &c->key, &c->cert, &ca) != 1) {
        *why =
            "the PKCS#12 file cannot be decrypted (unsupported or legacy encryption, or corrupt)";
        r = -EBADMSG;
    } else if (!c->key || !c->cert) {
        *why = "the PKCS#12 file holds no private key with its certificate";
        r = -ENOKEY;
    }
    sk_X509_pop_free(ca, X509_free);
    PKCS12_free(p12);
    return r;
}

static int pem_password(char *buf, int size, int rwflag, void *u)
{
    const char *pw = u;
    (void)rwflag;
    if (!pw)
        return -1;
    size_t n = strlen(pw);
    if (n > (size_t)size)
        return -1;
    memcpy(buf, pw, n);
    return (int)n;
}

static int load_pem(struct cred *c, const char *value, size_t len, const char *password,
                    const char **why)
{
    BIO *b = BIO_new_mem_buf(value, (int)len);
    if (!b)
        return -ENOMEM;
    /* Skips PEM blocks of other types, e.g. the certificates in front of the key. */
    c->key = PEM_read_bio_PrivateKey(b, NULL, pem_password, (void *)password);
    BIO_free(b);
    if (!c->key) {
        *why = "the PEM value holds no private key that can be read (missing, encrypted without "
               "a password, or a wrong password)";
        return -ENOKEY;
    }
    b = BIO_new_mem_buf(value, (int)len);
    if (!b)
        return -ENOMEM;
    for (;;) {
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        if (!x)
            break;
        if (X509_check_private_key(x, c->key) == 1) {
            c->cert = x;
            break;
        }
        X509_free(x);
    }
    BIO_free(b);
    if (!c->cert) {
        *why = "the PEM value holds no certificate that matches its private key";
        return -ENOKEY;
    }
    return 0;
}

static bool content_type_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    return ct && strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';');
}

int cred_load(const char *value, size_t len, const char *content_type, const char *password,
              struct cred **ret, const char **ret_why)
{
    const char *why = "the credential cannot be read";
    if (!value || len > (size_t)INT32_MAX)
        return -EINVAL;
    struct cred *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    atomic_init(&c->refs, 1);
    int r;
    bool pem = content_type_is(content_type, "application/x-pem-file") ||
               (memmem(value, len, "-----BEGIN ", 11) != NULL &&
                !content_type_is(content_type, "application/x-pkcs12"));
    if (content_type_is(content_type, "application/x-pkcs12")) {
        c->kind = CRED_CERT;
        r = load_pkcs12(c, value, len, password, &why);
    } else if (pem) {
        c->kind = CRED_CERT;
        r = load_pem(c, value, len, password, &why);
    } else {
        c->kind = CRED_SECRET;
        r = -EINVAL;
        why = "the client secret is empty";
        if (len > 0 && !memchr(value, '\0', len)) {
            c->secret = strndup(value, len);
            r = c->secret ? 0 : -ENOMEM;
        }
    }
    if (r == 0 && c->kind == CRED_CERT)
        r = cert_finish(c, &why);
    ERR_clear_error();
    if (r < 0) {
        if (ret_why)
            *ret_why = why;
        cred_free(c);
        return r;
    }
    *ret = c;
    return 0;
}
