/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The keyvault provider's credentials: client secrets, PEM and base64 PKCS#12 (with and without a
 * password) loaded with OpenSSL, the refusals, and client assertions that verify with OpenSSL
 * against the certificate (RS256 and PS256) and carry the claims Entra ID checks.
 */
#include <errno.h>
#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker-internal/b64url.h>

#include "cred.h"
#include "entra.h"

#include <cmocka.h>

static EVP_PKEY *key2048, *key1024;
static X509 *cert2048, *cert_other, *cert1024;

static X509 *self_signed(EVP_PKEY *k, const char *cn)
{
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    return x;
}

static int setup(void **state)
{
    (void)state;
    key2048 = EVP_RSA_gen(2048);
    key1024 = EVP_RSA_gen(1024);
    EVP_PKEY *other = EVP_RSA_gen(2048);
    if (!key2048 || !key1024 || !other)
        return -1;
    cert2048 = self_signed(key2048, "sp");
    cert1024 = self_signed(key1024, "small");
    cert_other = self_signed(other, "other");
    EVP_PKEY_free(other);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(key2048);
    EVP_PKEY_free(key1024);
    X509_free(cert2048);
    X509_free(cert1024);
    X509_free(cert_other);
    return 0;
}

static char *bio_text(BIO *b)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    char *s = strndup(p, (size_t)n);
    assert_non_null(s);
    BIO_free(b);
    return s;
}

/* PEM: the certificates listed, then the key (optionally encrypted). */
static char *pem_of(EVP_PKEY *k, X509 *const *certs, size_t n, const char *password)
{
    BIO *b = BIO_new(BIO_s_mem());
    for (size_t i = 0; i < n; i++)
        assert_int_equal(PEM_write_bio_X509(b, certs[i]), 1);
    if (k)
        assert_int_equal(PEM_write_bio_PKCS8PrivateKey(b, k, password ? EVP_aes_256_cbc() : NULL,
                                                       NULL, 0, NULL, (void *)password),
                         1);
    return bio_text(b);
}

static char *b64(const unsigned char *p, size_t n)
{
    char *out = malloc(n / 3 * 4 + 8);
    assert_non_null(out);
    EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

static char *pkcs12_b64(EVP_PKEY *k, X509 *c, const char *password)
{
    PKCS12 *p12 = PKCS12_create(password, "sp", k, c, NULL, 0, 0, 0, 0, 0);
    assert_non_null(p12);
    unsigned char *der = NULL;
    int n = i2d_PKCS12(p12, &der);
    assert_true(n > 0);
    char *s = b64(der, (size_t)n);
    OPENSSL_free(der);
    PKCS12_free(p12);
    return s;
}

static void check_digests(const struct cred *c, X509 *x)
{
    unsigned char md[32];
    unsigned int n = 0;
    assert_int_equal(X509_digest(x, EVP_sha256(), md, &n), 1);
    assert_memory_equal(c->x5t_s256, md, 32);
    assert_int_equal(X509_digest(x, EVP_sha1(), md, &n), 1);
    assert_memory_equal(c->x5t, md, 20);
}

static void test_secret(void **state)
{
    (void)state;
    struct cred *c = NULL;
    const char *why = NULL;
    assert_int_equal(cred_load("s3cret value", 12, NULL, NULL, &c, &why), 0);
    assert_int_equal(c->kind, CRED_SECRET);
    assert_string_equal(c->secret, "s3cret value");
    assert_ptr_equal(cred_ref(c), c);
    assert_null(cred_unref(c));
    assert_null(cred_unref(c));
    assert_int_equal(cred_load("x", 0, "text/plain", NULL, &c, &why), -EINVAL);
    assert_non_null(why);
    assert_int_equal(cred_load("a\0b", 3, NULL, NULL, &c, NULL), -EINVAL);
}

static void test_pem(void **state)
{
    (void)state;
    struct cred *c = NULL;
    const char *why = NULL;
    X509 *chain[] = {cert_other, cert2048};
    char *pem = pem_of(key2048, chain, 2, NULL);
    assert_int_equal(cred_load(pem, strlen(pem), NULL, NULL, &c, &why), 0);
    assert_int_equal(c->kind, CRED_CERT);
    assert_int_equal(X509_cmp(c->cert, cert2048), 0);
    check_digests(c, cert2048);
    assert_true(c->not_after > c->not_before);
    cred_unref(c);
    free(pem);

    pem = pem_of(key2048, chain, 2, "pem-pass");
    assert_int_equal(cred_load(pem, strlen(pem), "application/x-pem-file", "pem-pass", &c, &why),
                     0);
    cred_unref(c);
    assert_int_equal(cred_load(pem, strlen(pem), "application/x-pem-file", "wrong", &c, &why),
                     -ENOKEY);
    assert_int_equal(cred_load(pem, strlen(pem), "application/x-pem-file", NULL, &c, &why),
                     -ENOKEY);
    free(pem);

    pem = pem_of(key2048, &cert_other, 1, NULL);
    assert_int_equal(cred_load(pem, strlen(pem), NULL, NULL, &c, &why), -ENOKEY);
    assert_non_null(strstr(why, "no certificate"));
    free(pem);

    pem = pem_of(NULL, &cert2048, 1, NULL);
    assert_int_equal(cred_load(pem, strlen(pem), NULL, NULL, &c, &why), -ENOKEY);
    free(pem);

    pem = pem_of(key1024, &cert1024, 1, NULL);
    assert_int_equal(cred_load(pem, strlen(pem), NULL, NULL, &c, &why), -EMEDIUMTYPE);
    free(pem);
}

static void test_pkcs12(void **state)
{
    (void)state;
    struct cred *c = NULL;
    const char *why = NULL;
    char *p = pkcs12_b64(key2048, cert2048, NULL);
    assert_int_equal(cred_load(p, strlen(p), "application/x-pkcs12", NULL, &c, &why), 0);
    assert_int_equal(c->kind, CRED_CERT);
    check_digests(c, cert2048);
    cred_unref(c);
    free(p);

    p = pkcs12_b64(key2048, cert2048, "pfx-pass");
    assert_int_equal(cred_load(p, strlen(p), "application/x-pkcs12", "pfx-pass", &c, &why), 0);
    check_digests(c, cert2048);
    cred_unref(c);
    assert_int_equal(cred_load(p, strlen(p), "application/x-pkcs12", "nope", &c, &why),
                     -EKEYREJECTED);
    assert_non_null(strstr(why, "password"));
    assert_int_equal(cred_load(p, strlen(p), "application/x-pkcs12", NULL, &c, &why),
                     -EKEYREJECTED);
    /* base64 with line breaks, as some tools write it */
    size_t n = strlen(p);
    char *wrapped = malloc(n + n / 64 + 2);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (i && i % 64 == 0)
            wrapped[o++] = '\n';
        wrapped[o++] = p[i];
    }
    wrapped[o] = '\0';
    assert_int_equal(
        cred_load(wrapped, strlen(wrapped), "application/x-pkcs12", "pfx-pass", &c, &why), 0);
    cred_unref(c);
    free(wrapped);
    free(p);

    const char *junk = "dGhpcyBpcyBub3QgYSBQS0NTIzEyIGZpbGU=";
    assert_int_equal(cred_load(junk, strlen(junk), "application/x-pkcs12", NULL, &c, &why),
                     -EBADMSG);
    assert_non_null(strstr(why, "PKCS#12"));
    assert_int_equal(cred_load("!!!", 3, "application/x-pkcs12", NULL, &c, &why), -EBADMSG);
    assert_non_null(strstr(why, "base64"));

    p = pkcs12_b64(key1024, cert1024, NULL);
    assert_int_equal(cred_load(p, strlen(p), "application/x-pkcs12; charset=x", NULL, &c, &why),
                     -EMEDIUMTYPE);
    free(p);
}

static void test_base64(void **state)
{
    (void)state;
    unsigned char *out = NULL;
    size_t n = 0;
    assert_int_equal(cred_base64_decode("aGVsbG8=", 8, &out, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "hello", 5);
    free(out);
    assert_int_equal(cred_base64_decode("aGVsbG8", 7, &out, &n), 0);
    assert_int_equal(n, 5);
    free(out);
    assert_int_equal(cred_base64_decode(" aG Vs\nbG8=\r\n", 13, &out, &n), 0);
    free(out);
    assert_int_equal(cred_base64_decode("aGVsbG8=x", 9, &out, &n), -EBADMSG);
    assert_int_equal(cred_base64_decode("aGVsbG9", 7, &out, &n), -EBADMSG); /* non-zero pad bits */
    assert_int_equal(cred_base64_decode("a", 1, &out, &n), -EBADMSG);
    assert_int_equal(cred_base64_decode("", 0, &out, &n), -EBADMSG);
    assert_int_equal(cred_base64_decode("aGVs-G8=", 8, &out, &n), -EBADMSG);
}

static unsigned char *b64url_dec(const char *s, size_t len, size_t *ret_n)
{
    char *t = malloc(len + 4);
    size_t i;
    for (i = 0; i < len; i++)
        t[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    while (i % 4)
        t[i++] = '=';
    unsigned char *out = NULL;
    assert_int_equal(cred_base64_decode(t, i, &out, ret_n), 0);
    free(t);
    return out;
}

static struct json_object *part_json(const char *s, size_t len)
{
    size_t n = 0;
    unsigned char *d = b64url_dec(s, len, &n);
    char *z = strndup((char *)d, n);
    struct json_object *o = json_tokener_parse(z);
    assert_non_null(o);
    free(d);
    free(z);
    return o;
}

static void verify_assertion(enum entra_alg alg)
{
    struct cred *c = NULL;
    char *pem = pem_of(key2048, &cert2048, 1, NULL);
    assert_int_equal(cred_load(pem, strlen(pem), NULL, NULL, &c, NULL), 0);
    free(pem);
    const char *aud = "https://login.microsoftonline.com/t/oauth2/v2.0/token";
    char *jwt = NULL, *jwt2 = NULL;
    assert_int_equal(entra_build_assertion(c->key, c->x5t, c->x5t_s256, "client-1", aud, 1700000000,
                                           600, alg, &jwt),
                     0);
    assert_int_equal(entra_build_assertion(c->key, c->x5t, c->x5t_s256, "client-1", aud, 1700000000,
                                           600, alg, &jwt2),
                     0);
    const char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    assert_non_null(d2);
    assert_null(strchr(d2 + 1, '.'));

    struct json_object *h = part_json(jwt, (size_t)(d1 - jwt));
    struct json_object *cl = part_json(d1 + 1, (size_t)(d2 - d1 - 1));
    struct json_object *v;
    assert_true(json_object_object_get_ex(h, "alg", &v));
    assert_string_equal(json_object_get_string(v), alg == ENTRA_PS256 ? "PS256" : "RS256");
    assert_true(json_object_object_get_ex(h, "typ", &v));
    assert_string_equal(json_object_get_string(v), "JWT");
    char *t256 = b64url_encode(c->x5t_s256, 32), *t1 = b64url_encode(c->x5t, 20);
    assert_true(json_object_object_get_ex(h, "x5t#S256", &v));
    assert_string_equal(json_object_get_string(v), t256);
    assert_true(json_object_object_get_ex(h, "x5t", &v));
    assert_string_equal(json_object_get_string(v), t1);
    free(t256);
    free(t1);
    assert_true(json_object_object_get_ex(cl, "aud", &v));
    assert_string_equal(json_object_get_string(v), aud);
    assert_true(json_object_object_get_ex(cl, "iss", &v));
    assert_string_equal(json_object_get_string(v), "client-1");
    assert_true(json_object_object_get_ex(cl, "sub", &v));
    assert_string_equal(json_object_get_string(v), "client-1");
    assert_true(json_object_object_get_ex(cl, "nbf", &v));
    assert_int_equal(json_object_get_int64(v), 1700000000);
    assert_true(json_object_object_get_ex(cl, "exp", &v));
    assert_int_equal(json_object_get_int64(v), 1700000600);
    assert_true(json_object_object_get_ex(cl, "jti", &v));
    assert_int_equal(strlen(json_object_get_string(v)), 36);
    /* a fresh jti each time */
    assert_string_not_equal(strchr(jwt2, '.'), d1);

    /* the signature verifies with the certificate's public key, and not after a change */
    size_t sig_len = 0;
    unsigned char *sig = b64url_dec(d2 + 1, strlen(d2 + 1), &sig_len);
    for (int tamper = 0; tamper < 2; tamper++) {
        char *input = strndup(jwt, (size_t)(d2 - jwt));
        if (tamper)
            input[d1 - jwt + 3] ^= 1;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;
        EVP_PKEY *pub = X509_get0_pubkey(cert2048);
        assert_int_equal(EVP_DigestVerifyInit_ex(ctx, &pctx, "SHA256", NULL, NULL, pub, NULL), 1);
        if (alg == ENTRA_PS256) {
            assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
            assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32), 1);
        }
        int ok = EVP_DigestVerify(ctx, sig, sig_len, (unsigned char *)input, strlen(input));
        assert_int_equal(ok, tamper ? 0 : 1);
        EVP_MD_CTX_free(ctx);
        free(input);
    }
    free(sig);
    json_object_put(h);
    json_object_put(cl);
    free(jwt);
    free(jwt2);
    cred_unref(c);
}

static void test_assertion_rs256(void **state)
{
    (void)state;
    verify_assertion(ENTRA_RS256);
}

static void test_assertion_ps256(void **state)
{
    (void)state;
    verify_assertion(ENTRA_PS256);
}

static void test_assertion_refusals(void **state)
{
    (void)state;
    unsigned char d[32] = {0};
    char *jwt = NULL;
    assert_int_equal(entra_build_assertion(NULL, d, d, "c", "a", 1, 600, ENTRA_RS256, &jwt),
                     -EINVAL);
    assert_int_equal(entra_build_assertion(key2048, d, d, "c", "a", 1, 0, ENTRA_RS256, &jwt),
                     -EINVAL);
    assert_int_equal(entra_build_assertion(key2048, d, d, "c", "a", 1, 600, 7, &jwt), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret),
        cmocka_unit_test(test_pem),
        cmocka_unit_test(test_pkcs12),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_assertion_rs256),
        cmocka_unit_test(test_assertion_ps256),
        cmocka_unit_test(test_assertion_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
