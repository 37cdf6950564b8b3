/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mock provider, loaded from providers/mock.so through the real loader and host API: its tokens
 * verify with OpenSSL against the JWKS it writes, carry the documented claims, fail against another
 * key, and come out right from 8 threads at once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idbroker/provider.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "host-api.h"
#include "plugin-loader.h"
#include "test-util.h"

#include <cmocka.h>

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/idb-mock-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rm_rf(dir);
}

static char *in_dir(const char *file)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, file) > 0);
    return p;
}

/* Loads the mock with `conf` into a new set, or returns NULL with the loader's result in *ret_r. */
static struct plugin_set *load_mock(const char *conf, int *ret_r)
{
    struct plugin_set *s = plugin_set_new();
    assert_non_null(s);
    char *err = NULL;
    int r = plugin_set_load(s, IDB_PROVIDER_DIR, "mock", conf, host_api_get(), &err);
    if (ret_r)
        *ret_r = r;
    if (r < 0) {
        if (!ret_r)
            fail_msg("loading mock: %s", err);
        free(err);
        plugin_set_free(s);
        return NULL;
    }
    return s;
}

static void req_init(struct idb_token_req *req, const char *resource, const char *ns,
                     const char *name)
{
    *req = (struct idb_token_req){
        .size = sizeof(*req),
        .resource = resource,
        .identity_name = name,
        .identity_namespace = ns,
        .client_id = "",
        .resource_id = "",
        .tenant_id = "",
        .ad_endpoint = "",
        .ad_resource_id = "",
        .secret_name = "",
        .secret_namespace = "",
    };
}

/* Issues one token; returns it (malloc'd) and the reported expiry / not-before. */
static char *issue(const struct plugin_set *s, const struct idb_token_req *req,
                   uint64_t *ret_expires_on, uint64_t *ret_not_before)
{
    const struct plugin *pl = plugin_set_find(s, "mock");
    assert_non_null(pl);
    struct idb_token t = {.size = sizeof(t)};
    assert_int_equal(pl->p->issue(pl->state, req, &t), 0);
    assert_non_null(t.access_token);
    assert_null(t.upstream_error);
    if (ret_expires_on)
        *ret_expires_on = t.expires_on;
    if (ret_not_before)
        *ret_not_before = t.not_before;
    return t.access_token;
}

/* ---- an independent JWT/JWKS reader ---- */

static unsigned char *b64url_decode(const char *s, size_t n, size_t *ret_len)
{
    unsigned char *out = malloc(n * 3 / 4 + 3);
    assert_non_null(out);
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '-'             ? 62
                : c == '_'             ? 63
                                       : -1;
        if (v < 0)
            fail_msg("not base64url: '%c'", c);
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *ret_len = o;
    out[o] = '\0';
    return out;
}

static char *b64url_encode(const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(n * 2 + 4);
    assert_non_null(out);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | p[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = tab[acc >> bits & 63];
        }
    }
    if (bits > 0)
        out[o++] = tab[acc << (6 - bits) & 63];
    out[o] = '\0';
    return out;
}

struct jwks {
    char *kid, *n, *e;
    EVP_PKEY *key;
};

static void jwks_done(struct jwks *j)
{
    free(j->kid);
    free(j->n);
    free(j->e);
    EVP_PKEY_free(j->key);
}

static BIGNUM *bn_from_b64url(const char *s)
{
    size_t len;
    unsigned char *bin = b64url_decode(s, strlen(s), &len);
    BIGNUM *bn = BN_bin2bn(bin, (int)len, NULL);
    free(bin);
    assert_non_null(bn);
    return bn;
}

/* Reads the JWKS file, checks its shape, and builds the public key from n and e. */
static void jwks_read(const char *path, struct jwks *ret)
{
    struct json_object *doc = json_object_from_file(path);
    assert_non_null(doc);
    struct json_object *keys = json_object_object_get(doc, "keys");
    assert_true(json_object_is_type(keys, json_type_array));
    assert_int_equal(json_object_array_length(keys), 1);
    struct json_object *k = json_object_array_get_idx(keys, 0);
    assert_int_equal(json_object_object_length(k), 6);
    assert_string_equal(json_object_get_string(json_object_object_get(k, "kty")), "RSA");
    assert_string_equal(json_object_get_string(json_object_object_get(k, "use")), "sig");
    assert_string_equal(json_object_get_string(json_object_object_get(k, "alg")), "RS256");
    ret->kid = strdup(json_object_get_string(json_object_object_get(k, "kid")));
    ret->n = strdup(json_object_get_string(json_object_object_get(k, "n")));
    ret->e = strdup(json_object_get_string(json_object_object_get(k, "e")));
    json_object_put(doc);
    assert_string_equal(ret->e, "AQAB");

    BIGNUM *n = bn_from_b64url(ret->n), *e = bn_from_b64url(ret->e);
    assert_int_equal(BN_num_bits(n), 2048);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    assert_int_equal(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n), 1);
    assert_int_equal(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e), 1);
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    ret->key = NULL;
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &ret->key, EVP_PKEY_PUBLIC_KEY, params), 1);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
}

/* RFC 7638 thumbprint, computed here independently of the plugin. */
static char *thumbprint(const struct jwks *j)
{
    char *canon = NULL;
    assert_true(asprintf(&canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", j->e, j->n) > 0);
    unsigned char md[32];
    unsigned int len;
    assert_int_equal(EVP_Digest(canon, strlen(canon), md, &len, EVP_sha256(), NULL), 1);
    free(canon);
    return b64url_encode(md, len);
}

struct jwt {
    struct json_object *header, *claims;
};

static void jwt_done(struct jwt *t)
{
    json_object_put(t->header);
    json_object_put(t->claims);
}

/* Splits and decodes tok; returns whether its RS256 signature verifies with key. */
static bool jwt_check(const char *tok, EVP_PKEY *key, struct jwt *ret)
{
    const char *d1 = strchr(tok, '.');
    assert_non_null(d1);
    const char *d2 = strchr(d1 + 1, '.');
    assert_non_null(d2);
    assert_null(strchr(d2 + 1, '.'));
    size_t hl, cl, sl;
    unsigned char *h = b64url_decode(tok, (size_t)(d1 - tok), &hl);
    unsigned char *c = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &cl);
    unsigned char *sig = b64url_decode(d2 + 1, strlen(d2 + 1), &sl);
    ret->header = json_tokener_parse((char *)h);
    ret->claims = json_tokener_parse((char *)c);
    assert_non_null(ret->header);
    assert_non_null(ret->claims);
    free(h);
    free(c);

    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit_ex(ctx, NULL, "SHA256", NULL, NULL, key, NULL), 1);
    int ok = EVP_DigestVerify(ctx, sig, sl, (const unsigned char *)tok, (size_t)(d2 - tok));
    EVP_MD_CTX_free(ctx);
    free(sig);
    return ok == 1;
}

static const char *claim_str(const struct jwt *t, const char *k)
{
    struct json_object *v = json_object_object_get(t->claims, k);
    if (!v)
        return NULL;
    assert_true(json_object_is_type(v, json_type_string));
    return json_object_get_string(v);
}

static int64_t claim_int(const struct jwt *t, const char *k)
{
    struct json_object *v = json_object_object_get(t->claims, k);
    assert_true(json_object_is_type(v, json_type_int));
    return json_object_get_int64(v);
}

/* The UUID the mock derives for an identity without the object-id annotation (README.md). */
static void derived_oid(const char *ns, const char *name, char ret[37])
{
    char *who = NULL;
    assert_true(asprintf(&who, "%s/%s", ns, name) > 0);
    unsigned char md[32];
    unsigned int len;
    assert_int_equal(EVP_Digest(who, strlen(who), md, &len, EVP_sha256(), NULL), 1);
    free(who);
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x80);
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
    snprintf(ret, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", md[0],
             md[1], md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10], md[11], md[12],
             md[13], md[14], md[15]);
}

/* ---- tests ---- */

static void test_token_and_claims(void **state)
{
    (void)state;
    _cleanup_free_ char *jwks_path = in_dir("jwks.json");
    _cleanup_free_ char *conf = NULL;
    assert_true(
        asprintf(&conf,
                 "{\"jwksFile\":\"%s\",\"tenantId\":\"11111111-2222-3333-4444-555555555555\","
                 "\"lifetimeSeconds\":600}",
                 jwks_path) > 0);
    struct plugin_set *s = load_mock(conf, NULL);

    struct stat st;
    assert_int_equal(stat(jwks_path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    struct jwks j;
    jwks_read(jwks_path, &j);
    _cleanup_free_ char *tp = thumbprint(&j);
    assert_string_equal(j.kid, tp);

    struct idb_token_req req;
    req_init(&req, "https://vault.azure.net", "default", "id1");
    req.client_id = "cid-1";
    req.resource_id = "/subscriptions/s/resourcegroups/g/providers/Microsoft.ManagedIdentity/"
                      "userAssignedIdentities/id1";
    uint64_t before = now_realtime_s(), exp_on, nbf;
    _cleanup_free_ char *tok = issue(s, &req, &exp_on, &nbf);
    uint64_t after = now_realtime_s();

    struct jwt t;
    assert_true(jwt_check(tok, j.key, &t));
    assert_int_equal(json_object_object_length(t.header), 3);
    assert_string_equal(json_object_get_string(json_object_object_get(t.header, "alg")), "RS256");
    assert_string_equal(json_object_get_string(json_object_object_get(t.header, "typ")), "JWT");
    assert_string_equal(json_object_get_string(json_object_object_get(t.header, "kid")), j.kid);

    assert_string_equal(claim_str(&t, "aud"), "https://vault.azure.net");
    assert_string_equal(claim_str(&t, "iss"),
                        "https://sts.windows.net/11111111-2222-3333-4444-555555555555/");
    assert_string_equal(claim_str(&t, "tid"), "11111111-2222-3333-4444-555555555555");
    char oid[37];
    derived_oid("default", "id1", oid);
    assert_string_equal(claim_str(&t, "oid"), oid);
    assert_string_equal(claim_str(&t, "sub"), oid);
    assert_int_equal(oid[14], '8');
    assert_string_equal(claim_str(&t, "appid"), "cid-1");
    assert_string_equal(claim_str(&t, "xms_mirid"), req.resource_id);
    int64_t iat = claim_int(&t, "iat");
    assert_true(iat >= (int64_t)before && iat <= (int64_t)after);
    assert_int_equal(claim_int(&t, "nbf"), iat);
    assert_int_equal(claim_int(&t, "exp"), iat + 600);
    assert_int_equal(exp_on, (uint64_t)iat + 600);
    assert_int_equal(nbf, (uint64_t)iat);
    assert_int_equal(strlen(claim_str(&t, "jti")), 22);
    assert_string_equal(claim_str(&t, "uti"), claim_str(&t, "jti"));
    assert_int_equal(json_object_object_length(t.claims), 12);
    jwt_done(&t);

    /* No client or resource id: appid and xms_mirid are left out. A different identity gets a
     * different derived oid; the annotation overrides it. */
    req_init(&req, "api://x", "other", "id1");
    const char *annotations[] = {"a", "b", "idbroker.io/object-id", "obj-42", NULL};
    _cleanup_free_ char *tok2 = issue(s, &req, NULL, NULL);
    assert_true(jwt_check(tok2, j.key, &t));
    assert_null(claim_str(&t, "appid"));
    assert_null(claim_str(&t, "xms_mirid"));
    derived_oid("other", "id1", oid);
    assert_string_equal(claim_str(&t, "oid"), oid);
    assert_string_not_equal(oid, claim_str(&t, "tid"));
    jwt_done(&t);
    req.annotations = annotations;
    _cleanup_free_ char *tok3 = issue(s, &req, NULL, NULL);
    assert_true(jwt_check(tok3, j.key, &t));
    assert_string_equal(claim_str(&t, "oid"), "obj-42");
    assert_string_equal(claim_str(&t, "sub"), "obj-42");
    jwt_done(&t);

    jwks_done(&j);
    plugin_set_free(s);

    /* The JWKS was written with tmp + rename: nothing else is left in the directory. */
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            files++;
    closedir(d);
    assert_int_equal(files, 1);
}

static void test_defaults(void **state)
{
    (void)state;
    struct plugin_set *s = load_mock(NULL, NULL);
    struct idb_token_req req;
    req_init(&req, "https://management.azure.com/", "ns", "n");
    uint64_t exp_on;
    _cleanup_free_ char *tok = issue(s, &req, &exp_on, NULL);
    /* Decode only (no JWKS written); the signature is checked in the other tests. */
    const char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    size_t cl;
    unsigned char *c = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &cl);
    struct jwt t = {.claims = json_tokener_parse((char *)c)};
    free(c);
    assert_string_equal(claim_str(&t, "iss"),
                        "https://sts.windows.net/00000000-0000-0000-0000-000000000000/");
    assert_string_equal(claim_str(&t, "tid"), "00000000-0000-0000-0000-000000000000");
    assert_int_equal(claim_int(&t, "exp") - claim_int(&t, "iat"), 3600);
    assert_int_equal((int64_t)exp_on, claim_int(&t, "exp"));
    jwt_done(&t);
    plugin_set_free(s);

    _cleanup_free_ char *conf = NULL;
    assert_true(asprintf(&conf, "{\"issuer\":\"https://issuer.example/\"}") > 0);
    s = load_mock(conf, NULL);
    tok = (free(tok), issue(s, &req, NULL, NULL));
    d1 = strchr(tok, '.');
    d2 = strchr(d1 + 1, '.');
    c = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &cl);
    t.claims = json_tokener_parse((char *)c);
    free(c);
    assert_string_equal(claim_str(&t, "iss"), "https://issuer.example/");
    json_object_put(t.claims);
    plugin_set_free(s);
}

static void test_other_key_fails(void **state)
{
    (void)state;
    _cleanup_free_ char *p1 = in_dir("a.json"), *p2 = in_dir("b.json");
    _cleanup_free_ char *c1 = NULL, *c2 = NULL;
    assert_true(asprintf(&c1, "{\"jwksFile\":\"%s\"}", p1) > 0);
    assert_true(asprintf(&c2, "{\"jwksFile\":\"%s\"}", p2) > 0);
    /* The same .so twice, in two sets: two instances with two generated keys. */
    struct plugin_set *s1 = load_mock(c1, NULL), *s2 = load_mock(c2, NULL);
    struct jwks j1, j2;
    jwks_read(p1, &j1);
    jwks_read(p2, &j2);
    assert_string_not_equal(j1.kid, j2.kid);

    struct idb_token_req req;
    req_init(&req, "aud", "ns", "n");
    _cleanup_free_ char *t1 = issue(s1, &req, NULL, NULL), *t2 = issue(s2, &req, NULL, NULL);
    struct jwt t;
    assert_true(jwt_check(t1, j1.key, &t));
    jwt_done(&t);
    assert_true(jwt_check(t2, j2.key, &t));
    jwt_done(&t);
    assert_false(jwt_check(t2, j1.key, &t));
    jwt_done(&t);
    assert_false(jwt_check(t1, j2.key, &t));
    jwt_done(&t);

    /* A changed claim breaks the signature: same header and signature, audience swapped. */
    const char *d1 = strchr(t1, '.'), *d2 = strchr(d1 + 1, '.');
    size_t cl;
    unsigned char *c = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &cl);
    struct json_object *claims = json_tokener_parse((char *)c);
    free(c);
    json_object_object_add(claims, "aud", json_object_new_string("https://evil.example"));
    const char *cs = json_object_to_json_string_ext(claims, JSON_C_TO_STRING_PLAIN);
    _cleanup_free_ char *cb = b64url_encode((const unsigned char *)cs, strlen(cs));
    _cleanup_free_ char *forged = NULL;
    assert_true(asprintf(&forged, "%.*s.%s%s", (int)(d1 - t1), t1, cb, d2) > 0);
    json_object_put(claims);
    assert_false(jwt_check(forged, j1.key, &t));
    assert_string_equal(claim_str(&t, "aud"), "https://evil.example");
    jwt_done(&t);

    jwks_done(&j1);
    jwks_done(&j2);
    plugin_set_free(s1);
    plugin_set_free(s2);
}

static void write_key(const char *path, int bits)
{
    EVP_PKEY *k = EVP_RSA_gen((unsigned)bits);
    assert_non_null(k);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fchmod(fileno(f), 0600), 0);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    EVP_PKEY_free(k);
}

static void test_signing_key_file(void **state)
{
    (void)state;
    _cleanup_free_ char *key = in_dir("key.pem"), *p1 = in_dir("a.json"), *p2 = in_dir("b.json");
    write_key(key, 2048);
    _cleanup_free_ char *c1 = NULL, *c2 = NULL;
    assert_true(asprintf(&c1, "{\"signingKeyFile\":\"%s\",\"jwksFile\":\"%s\"}", key, p1) > 0);
    assert_true(asprintf(&c2, "{\"signingKeyFile\":\"%s\",\"jwksFile\":\"%s\"}", key, p2) > 0);
    struct plugin_set *s1 = load_mock(c1, NULL);
    struct plugin_set *s2 = load_mock(c2, NULL);
    struct jwks j1, j2;
    jwks_read(p1, &j1);
    jwks_read(p2, &j2);
    assert_string_equal(j1.kid, j2.kid);
    assert_string_equal(j1.n, j2.n);

    struct idb_token_req req;
    req_init(&req, "aud", "ns", "n");
    _cleanup_free_ char *tok = issue(s2, &req, NULL, NULL);
    struct jwt t;
    assert_true(jwt_check(tok, j1.key, &t));
    jwt_done(&t);
    jwks_done(&j1);
    jwks_done(&j2);
    plugin_set_free(s1);
    plugin_set_free(s2);
}

/* Reads the log file the test pointed the log at. */
static char *slurp(int fd)
{
    static char buf[65536];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    return buf;
}

static void expect_conf_error(const char *conf, int code, const char *in_log)
{
    _cleanup_free_ char *logp = in_dir("log");
    _cleanup_close_ int fd = open(logp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    log_setup(IDB_LOG_INFO, LOG_FORMAT_TEXT, fd);
    int r = 0;
    struct plugin_set *s = load_mock(conf, &r);
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);
    assert_null(s);
    assert_int_equal(r, code);
    const char *log = slurp(fd);
    if (!strstr(log, "[provider:mock] ") || !strstr(log, in_log))
        fail_msg("config %s: log '%s' lacks '%s'", conf, log, in_log);
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_conf_error("{\"keyFile\":\"/x\"}", IDB_E_BAD_CONFIG, "unknown key 'keyFile'");
    expect_conf_error("{\"lifetimeSeconds\":59}", IDB_E_BAD_CONFIG, "'lifetimeSeconds'");
    expect_conf_error("{\"lifetimeSeconds\":86401}", IDB_E_BAD_CONFIG, "'lifetimeSeconds'");
    expect_conf_error("{\"lifetimeSeconds\":\"3600\"}", IDB_E_BAD_CONFIG, "'lifetimeSeconds'");
    expect_conf_error("{\"tenantId\":5}", IDB_E_BAD_CONFIG, "'tenantId' must be a string");
    expect_conf_error("{\"issuer\":\"\"}", IDB_E_BAD_CONFIG, "'issuer' must be a non-empty");
    expect_conf_error("[]", IDB_E_BAD_CONFIG, "config must be a JSON object");
    expect_conf_error("{", IDB_E_BAD_CONFIG, "config must be a JSON object");
    /* An absent key file is generated, its directory made one level deep; deeper is an error. */
    expect_conf_error("{\"signingKeyFile\":\"/nonexistent-idb/sub/k.pem\"}", -ENOENT,
                      "cannot create the directory of '/nonexistent-idb/sub/k.pem'");

    _cleanup_free_ char *garbage = in_dir("garbage.pem"), *small = in_dir("small.pem");
    FILE *f = fopen(garbage, "w");
    assert_non_null(f);
    fputs("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", f);
    fclose(f);
    write_key(small, 1024);
    _cleanup_free_ char *c1 = NULL, *c2 = NULL, *c3 = NULL;
    assert_true(asprintf(&c1, "{\"signingKeyFile\":\"%s\"}", garbage) > 0);
    assert_true(asprintf(&c2, "{\"signingKeyFile\":\"%s\"}", small) > 0);
    assert_true(asprintf(&c3, "{\"jwksFile\":\"%s/none/deeper/jwks.json\"}", dir) > 0);
    expect_conf_error(c1, IDB_E_BAD_CONFIG, "holds no unencrypted PEM private key");
    expect_conf_error(c2, IDB_E_BAD_CONFIG, "at least 2048 bits");
    expect_conf_error(c3, -ENOENT, "cannot create");
}

static void test_bad_requests(void **state)
{
    (void)state;
    struct plugin_set *s = load_mock("{}", NULL);
    const struct plugin *pl = plugin_set_find(s, "mock");
    struct idb_token_req req;
    struct idb_token t = {.size = sizeof(t)};
    req_init(&req, NULL, "ns", "n");
    assert_int_equal(pl->p->issue(pl->state, &req, &t), -EINVAL);
    req_init(&req, "", "ns", "n");
    assert_int_equal(pl->p->issue(pl->state, &req, &t), -EINVAL);
    req_init(&req, "aud", "ns", "n");
    req.size = (uint32_t)offsetof(struct idb_token_req, deadline_ms);
    assert_int_equal(pl->p->issue(pl->state, &req, &t), -EINVAL);
    req.size = sizeof(req);
    t.size = (uint32_t)offsetof(struct idb_token, not_before);
    assert_int_equal(pl->p->issue(pl->state, &req, &t), -EINVAL);
    assert_null(t.access_token);
    plugin_set_free(s);
}

#define THREADS 8
#define PER_THREAD 25

struct worker {
    const struct plugin_set *s;
    EVP_PKEY *key;
    char *jti[PER_THREAD];
    int good;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    const struct plugin *pl = plugin_set_find(w->s, "mock");
    char name[32];
    snprintf(name, sizeof(name), "id-%p", (void *)w);
    for (int i = 0; i < PER_THREAD; i++) {
        struct idb_token_req req;
        req_init(&req, "https://vault.azure.net", "ns", name);
        struct idb_token t = {.size = sizeof(t)};
        if (pl->p->issue(pl->state, &req, &t) < 0)
            continue;
        /* No cmocka asserts off the main thread: count what verifies. */
        struct jwt j = {0};
        if (jwt_check(t.access_token, w->key, &j) && json_object_object_get(j.claims, "jti")) {
            const char *id = claim_str(&j, "oid");
            char want[37];
            derived_oid("ns", name, want);
            if (streq(id, want) && streq(claim_str(&j, "aud"), "https://vault.azure.net")) {
                w->jti[i] = strdup(claim_str(&j, "jti"));
                w->good++;
            }
        }
        jwt_done(&j);
        free(t.access_token);
    }
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_concurrent(void **state)
{
    (void)state;
    _cleanup_free_ char *p = in_dir("jwks.json"), *conf = NULL;
    assert_true(asprintf(&conf, "{\"jwksFile\":\"%s\"}", p) > 0);
    struct plugin_set *s = load_mock(conf, NULL);
    struct jwks j;
    jwks_read(p, &j);

    struct worker w[THREADS] = {0};
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i].s = s;
        w[i].key = j.key;
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    char *all[THREADS * PER_THREAD];
    size_t n = 0;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].good, PER_THREAD);
        for (int k = 0; k < PER_THREAD; k++)
            all[n++] = w[i].jti[k];
    }
    qsort(all, n, sizeof(all[0]), cmp_str);
    for (size_t i = 1; i < n; i++)
        assert_string_not_equal(all[i - 1], all[i]);
    for (size_t i = 0; i < n; i++)
        free(all[i]);
    jwks_done(&j);
    plugin_set_free(s);
}

int main(void)
{
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);
    assert_int_equal(host_api_init(NULL), 0);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_token_and_claims), T(test_defaults),      T(test_other_key_fails),
        T(test_signing_key_file), T(test_config_errors), T(test_bad_requests),
        T(test_concurrent),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    host_api_done();
    return r;
}
