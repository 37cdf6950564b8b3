/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mock provider: mints RS256 JWT access tokens shaped like Entra ID's v1 tokens, signed with
 * its own RSA key, and publishes the public key as a JWKS so any JWT library can verify them. For
 * local testing and CI; no cloud needed. See README.md in this folder for the configuration.
 *
 * Threads: after init() the state is read-only; issue() uses only locals, the shared EVP_PKEY
 * (which OpenSSL 3 allows for concurrent signing) and RAND_bytes (thread-safe).
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idbroker/provider.h>

#include <idbroker-internal/b64url.h>
#include <idbroker-internal/macro.h>

#define MOCK_NAME "mock"
#define MOCK_DEFAULT_TENANT "00000000-0000-0000-0000-000000000000"
#define MOCK_DEFAULT_LIFETIME_S 3600
#define MOCK_MIN_LIFETIME_S 60
#define MOCK_MAX_LIFETIME_S 86400
#define MOCK_KEY_BITS 2048
#define MOCK_MAX_CONF_STRING 1024
#define MOCK_MAX_OBJECT_ID 128
#define MOCK_OBJECT_ID_ANNOTATION "idbroker.io/object-id"

struct mock {
    const struct idb_host_api *host;
    char *issuer;
    char *tenant_id;
    int64_t lifetime_s;
    EVP_PKEY *key;
    char *kid;        /* RFC 7638 thumbprint of the public key, base64url */
    char *header_b64; /* base64url of the JOSE header, the same for every token */
};

#define LOG(m, level, ...) (m)->host->log((level), MOCK_NAME, __VA_ARGS__)

static char *b64url_str(const char *s)
{
    return b64url_encode((const unsigned char *)s, strlen(s));
}

static char *bn_b64url(const BIGNUM *bn)
{
    int n = BN_num_bytes(bn);
    if (n <= 0)
        return NULL;
    _cleanup_free_ unsigned char *bin = malloc((size_t)n);
    if (!bin || BN_bn2bin(bn, bin) != n)
        return NULL;
    return b64url_encode(bin, (size_t)n);
}

static int sha256(const void *p, size_t n, unsigned char md[32])
{
    unsigned int len = 0;
    if (EVP_Digest(p, n, md, &len, EVP_sha256(), NULL) != 1 || len != 32)
        return -EIO;
    return 0;
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* ---- configuration ---- */

struct mock_conf {
    const char *issuer;
    const char *tenant_id;
    int64_t lifetime_s;
    const char *signing_key_file;
    const char *jwks_file;
};

static int conf_string(struct mock *m, const char *key, struct json_object *v, const char **ret)
{
    if (!json_object_is_type(v, json_type_string)) {
        LOG(m, IDB_LOG_ERR, "config: key '%s' must be a string", key);
        return IDB_E_BAD_CONFIG;
    }
    const char *s = json_object_get_string(v);
    if (s[0] == '\0' || strlen(s) > MOCK_MAX_CONF_STRING || !printable(s)) {
        LOG(m, IDB_LOG_ERR,
            "config: key '%s' must be a non-empty string of printable characters (at most %d)", key,
            MOCK_MAX_CONF_STRING);
        return IDB_E_BAD_CONFIG;
    }
    *ret = s;
    return 0;
}

/* Fills *c from the config object o (borrowed; the strings point into o). */
static int conf_parse(struct mock *m, struct json_object *o, struct mock_conf *c)
{
    *c = (struct mock_conf){.lifetime_s = MOCK_DEFAULT_LIFETIME_S};
    int r = 0;
    json_object_object_foreach(o, k, v)
    {
        if (streq(k, "issuer"))
            r = conf_string(m, k, v, &c->issuer);
        else if (streq(k, "tenantId"))
            r = conf_string(m, k, v, &c->tenant_id);
        else if (streq(k, "signingKeyFile"))
            r = conf_string(m, k, v, &c->signing_key_file);
        else if (streq(k, "jwksFile"))
            r = conf_string(m, k, v, &c->jwks_file);
        else if (streq(k, "lifetimeSeconds")) {
            int64_t n = json_object_get_int64(v);
            if (!json_object_is_type(v, json_type_int) || n < MOCK_MIN_LIFETIME_S ||
                n > MOCK_MAX_LIFETIME_S) {
                LOG(m, IDB_LOG_ERR, "config: key 'lifetimeSeconds' must be an integer in %d..%d",
                    MOCK_MIN_LIFETIME_S, MOCK_MAX_LIFETIME_S);
                return IDB_E_BAD_CONFIG;
            }
            c->lifetime_s = n;
        } else {
            LOG(m, IDB_LOG_ERR,
                "config: unknown key '%.64s' (known: issuer, tenantId, lifetimeSeconds, "
                "signingKeyFile, jwksFile)",
                k);
            return IDB_E_BAD_CONFIG;
        }
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- key material ---- */

/* Encrypted keys are refused rather than prompting on a terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int key_load(struct mock *m, const char *path, EVP_PKEY **ret)
{
    BIO *bio = BIO_new_file(path, "r");
    if (!bio) {
        LOG(m, IDB_LOG_ERR, "cannot open signing key file '%s'", path);
        return -ENOENT;
    }
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        LOG(m, IDB_LOG_WARNING, "signing key file '%s' is readable by others (mode %04o)", path,
            (unsigned)(st.st_mode & 07777));
    EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (!k) {
        LOG(m, IDB_LOG_ERR, "signing key file '%s' holds no unencrypted PEM private key", path);
        return IDB_E_BAD_CONFIG;
    }
    if (!EVP_PKEY_is_a(k, "RSA") || EVP_PKEY_get_bits(k) < MOCK_KEY_BITS) {
        LOG(m, IDB_LOG_ERR, "signing key in '%s' must be an RSA key of at least %d bits", path,
            MOCK_KEY_BITS);
        EVP_PKEY_free(k);
        return IDB_E_BAD_CONFIG;
    }
    *ret = k;
    return 0;
}

/* Creates the parent directory of path (one level, mode 0755: the JWKS in it is public; the key
 * file itself is 0600) if it is missing. */
static int ensure_parent_dir(const char *path)
{
    _cleanup_free_ char *dir = strdup(path);
    if (!dir)
        return -ENOMEM;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Generates a key and writes it to path (created exclusively, mode 0600). */
static int key_generate_file(struct mock *m, const char *path, EVP_PKEY **ret)
{
    int r = ensure_parent_dir(path);
    if (r < 0) {
        LOG(m, IDB_LOG_ERR, "cannot create the directory of '%s': %s", path, strerror(-r));
        return r;
    }
    EVP_PKEY *k = EVP_RSA_gen(MOCK_KEY_BITS);
    if (!k)
        return -EIO;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        r = -errno;
        if (fd >= 0)
            close(fd);
        EVP_PKEY_free(k);
        LOG(m, IDB_LOG_ERR, "cannot create signing key file '%s': %s", path, strerror(-r));
        return r;
    }
    bool ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1;
    ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    fclose(f);
    if (!ok) {
        unlink(path);
        EVP_PKEY_free(k);
        LOG(m, IDB_LOG_ERR, "cannot write signing key file '%s'", path);
        return -EIO;
    }
    LOG(m, IDB_LOG_NOTICE, "generated a new signing key in '%s'", path);
    *ret = k;
    return 0;
}

/* Public JWK members n and e (base64url), returned new. */
static int key_public(EVP_PKEY *k, char **ret_n, char **ret_e)
{
    BIGNUM *n = NULL, *e = NULL;
    char *sn = NULL, *se = NULL;
    int r = -EIO;
    if (EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
        EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e) != 1)
        goto out;
    sn = bn_b64url(n);
    se = bn_b64url(e);
    if (!sn || !se) {
        r = -ENOMEM;
        goto out;
    }
    *ret_n = TAKE_PTR(sn);
    *ret_e = TAKE_PTR(se);
    r = 0;
out:
    free(sn);
    free(se);
    BN_free(n);
    BN_free(e);
    return r;
}

/* RFC 7638: SHA-256 over the required members in lexicographic order, without white space. */
static char *jwk_thumbprint(const char *n, const char *e)
{
    _cleanup_free_ char *canon = NULL;
    unsigned char md[32];
    if (asprintf(&canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", e, n) < 0)
        return NULL;
    if (sha256(canon, strlen(canon), md) < 0)
        return NULL;
    return b64url_encode(md, sizeof(md));
}

/* Writes the JWKS to path atomically: a temporary file in the same directory, then rename(). */
static int jwks_write(struct mock *m, const char *path, const char *n, const char *e)
{
    struct json_object *keys = json_object_new_array(), *jwk = json_object_new_object();
    struct json_object *doc = json_object_new_object();
    _cleanup_free_ char *tmp = NULL;
    int fd = -1, r = -ENOMEM;
    if (!keys || !jwk || !doc)
        goto out;
    json_object_object_add(jwk, "kty", json_object_new_string("RSA"));
    json_object_object_add(jwk, "use", json_object_new_string("sig"));
    json_object_object_add(jwk, "alg", json_object_new_string("RS256"));
    json_object_object_add(jwk, "kid", json_object_new_string(m->kid));
    json_object_object_add(jwk, "n", json_object_new_string(n));
    json_object_object_add(jwk, "e", json_object_new_string(e));
    json_object_array_add(keys, TAKE_PTR(jwk));
    json_object_object_add(doc, "keys", TAKE_PTR(keys));
    const char *text = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PRETTY |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!text || asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0)
        goto out;
    r = ensure_parent_dir(path);
    if (r < 0) {
        LOG(m, IDB_LOG_ERR, "cannot create the directory of '%s': %s", path, m->host->strerror(r));
        goto out;
    }
    fd = mkstemp(tmp);
    if (fd < 0) {
        r = -errno;
        LOG(m, IDB_LOG_ERR, "cannot create '%s': %s", tmp, m->host->strerror(r));
        free(TAKE_PTR(tmp));
        goto out;
    }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            r = -errno;
            goto fail;
        }
        off += (size_t)w;
    }
    if (write(fd, "\n", 1) != 1 || fchmod(fd, 0644) < 0 || fsync(fd) < 0) {
        r = errno ? -errno : -EIO;
        goto fail;
    }
    if (close(TAKE_FD(fd)) < 0 || rename(tmp, path) < 0) {
        r = -errno;
        goto fail;
    }
    r = 0;
    goto out;
fail:
    LOG(m, IDB_LOG_ERR, "cannot write JWKS file '%s': %s", path, m->host->strerror(r));
    unlink(tmp);
out:
    if (fd >= 0)
        close(fd);
    json_object_put(jwk);
    json_object_put(keys);
    json_object_put(doc);
    return r;
}

/* ---- provider entry points ---- */

static void mock_destroy(void *state)
{
    struct mock *m = state;
    if (!m)
        return;
    /* EVP_PKEY_free() clears the private key's numbers before freeing them. */
    EVP_PKEY_free(m->key);
    free(m->issuer);
    free(m->tenant_id);
    free(m->kid);
    free(m->header_b64);
    explicit_bzero(m, sizeof(*m));
    free(m);
}

static int mock_setup(struct mock *m, const struct mock_conf *c)
{
    m->lifetime_s = c->lifetime_s;
    m->tenant_id = strdup(c->tenant_id ? c->tenant_id : MOCK_DEFAULT_TENANT);
    if (!m->tenant_id)
        return -ENOMEM;
    if (c->issuer)
        m->issuer = strdup(c->issuer);
    else if (asprintf(&m->issuer, "https://sts.windows.net/%s/", m->tenant_id) < 0)
        m->issuer = NULL;
    if (!m->issuer)
        return -ENOMEM;

    int r;
    if (c->signing_key_file && access(c->signing_key_file, F_OK) < 0 && errno == ENOENT) {
        /* "generated when absent": made once and kept, so tokens stay valid across restarts. */
        r = key_generate_file(m, c->signing_key_file, &m->key);
        if (r < 0)
            return r;
    } else if (c->signing_key_file) {
        r = key_load(m, c->signing_key_file, &m->key);
        if (r < 0)
            return r;
    } else {
        m->key = EVP_RSA_gen(MOCK_KEY_BITS);
        if (!m->key) {
            LOG(m, IDB_LOG_ERR, "cannot generate an RSA key");
            return -EIO;
        }
    }

    _cleanup_free_ char *n = NULL, *e = NULL, *header = NULL;
    r = key_public(m->key, &n, &e);
    if (r < 0)
        return r;
    m->kid = jwk_thumbprint(n, e);
    if (!m->kid)
        return -ENOMEM;
    if (asprintf(&header, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", m->kid) < 0)
        return -ENOMEM;
    m->header_b64 = b64url_str(header);
    if (!m->header_b64)
        return -ENOMEM;
    if (c->jwks_file) {
        r = jwks_write(m, c->jwks_file, n, e);
        if (r < 0)
            return r;
    }
    LOG(m, IDB_LOG_INFO, "signing key kid '%s' (%s)%s%s", m->kid,
        c->signing_key_file ? "from file" : "generated", c->jwks_file ? ", JWKS at " : "",
        c->jwks_file ? c->jwks_file : "");
    return 0;
}

static int mock_init(const struct idb_host_api *host, const char *conf, void **ret_state)
{
    if (!host || !IDB_HOST_HAS(host, now_realtime) || !ret_state)
        return -EINVAL;
    struct mock *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->host = host;

    struct json_object *o = NULL;
    struct mock_conf c;
    int r = IDB_E_BAD_CONFIG;
    enum json_tokener_error jerr = json_tokener_success;
    o = json_tokener_parse_verbose(conf ? conf : "{}", &jerr);
    if (!o || !json_object_is_type(o, json_type_object)) {
        LOG(m, IDB_LOG_ERR, "config must be a JSON object%s%s", o ? "" : ": ",
            o ? "" : json_tokener_error_desc(jerr));
        goto out;
    }
    r = conf_parse(m, o, &c);
    if (r < 0)
        goto out;
    r = mock_setup(m, &c);
    if (r < 0)
        goto out;
    *ret_state = TAKE_PTR(m);
    r = 0;
out:
    json_object_put(o);
    mock_destroy(m);
    return r;
}

/* The object id the token speaks for: the identity's annotation if set, else a UUID derived from
 * SHA-256(namespace "/" name) (version nibble 8, RFC 9562 custom), stable across restarts. */
static int object_id(const struct idb_token_req *req, char ret[MOCK_MAX_OBJECT_ID + 1])
{
    if (IDB_REQ_HAS(req, annotations) && req->annotations)
        for (size_t i = 0; req->annotations[i] && req->annotations[i + 1]; i += 2) {
            const char *v = req->annotations[i + 1];
            size_t n = strlen(v);
            if (streq(req->annotations[i], MOCK_OBJECT_ID_ANNOTATION) && n > 0 &&
                n <= MOCK_MAX_OBJECT_ID && printable(v)) {
                memcpy(ret, v, n + 1);
                return 0;
            }
        }

    _cleanup_free_ char *who = NULL;
    if (asprintf(&who, "%s/%s", strna(req->identity_namespace), strna(req->identity_name)) < 0)
        return -ENOMEM;
    unsigned char md[32];
    if (sha256(who, strlen(who), md) < 0)
        return -EIO;
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x80);
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
    snprintf(ret, MOCK_MAX_OBJECT_ID + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", md[0], md[1],
             md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10], md[11], md[12], md[13],
             md[14], md[15]);
    return 0;
}

static char *claims_json(const struct mock *m, const struct idb_token_req *req, const char *oid,
                         const char *jti, uint64_t now)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "aud", json_object_new_string(req->resource));
    json_object_object_add(o, "iss", json_object_new_string(m->issuer));
    json_object_object_add(o, "iat", json_object_new_int64((int64_t)now));
    json_object_object_add(o, "nbf", json_object_new_int64((int64_t)now));
    json_object_object_add(o, "exp", json_object_new_int64((int64_t)now + m->lifetime_s));
    if (req->client_id && req->client_id[0])
        json_object_object_add(o, "appid", json_object_new_string(req->client_id));
    json_object_object_add(o, "oid", json_object_new_string(oid));
    json_object_object_add(o, "sub", json_object_new_string(oid));
    json_object_object_add(o, "tid", json_object_new_string(m->tenant_id));
    json_object_object_add(o, "uti", json_object_new_string(jti));
    json_object_object_add(o, "jti", json_object_new_string(jti));
    if (req->resource_id && req->resource_id[0])
        json_object_object_add(o, "xms_mirid", json_object_new_string(req->resource_id));
    const char *s =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    char *r = s ? strdup(s) : NULL;
    json_object_put(o);
    return r;
}

static int sign_rs256(EVP_PKEY *key, const char *input, unsigned char **ret_sig, size_t *ret_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *sig = NULL;
    size_t len = 0;
    int r = -ENOMEM;
    if (!ctx)
        goto out;
    r = -EIO;
    if (EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, key, NULL) != 1 ||
        EVP_DigestSign(ctx, NULL, &len, (const unsigned char *)input, strlen(input)) != 1)
        goto out;
    sig = malloc(len);
    if (!sig) {
        r = -ENOMEM;
        goto out;
    }
    if (EVP_DigestSign(ctx, sig, &len, (const unsigned char *)input, strlen(input)) != 1)
        goto out;
    *ret_sig = TAKE_PTR(sig);
    *ret_len = len;
    r = 0;
out:
    free(sig);
    EVP_MD_CTX_free(ctx);
    return r;
}

static int mock_issue(void *state, const struct idb_token_req *req, struct idb_token *ret)
{
    const struct mock *m = state;
    if (!m || !req || !ret || !IDB_REQ_HAS(req, deadline_ms) || !IDB_TOKEN_HAS(ret, not_before))
        return -EINVAL;
    if (!req->resource || req->resource[0] == '\0' || strlen(req->resource) > 2048)
        return -EINVAL;

    char oid[MOCK_MAX_OBJECT_ID + 1];
    int r = object_id(req, oid);
    if (r < 0)
        return r;
    unsigned char rnd[16];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return -EIO;
    _cleanup_free_ char *jti = b64url_encode(rnd, sizeof(rnd));
    if (!jti)
        return -ENOMEM;

    uint64_t now = m->host->now_realtime();
    _cleanup_free_ char *claims = claims_json(m, req, oid, jti, now);
    _cleanup_free_ char *claims_b64 = claims ? b64url_str(claims) : NULL;
    _cleanup_free_ char *input = NULL;
    if (!claims_b64 || asprintf(&input, "%s.%s", m->header_b64, claims_b64) < 0)
        return -ENOMEM;

    _cleanup_free_ unsigned char *sig = NULL;
    size_t sig_len = 0;
    r = sign_rs256(m->key, input, &sig, &sig_len);
    if (r < 0)
        return r;
    _cleanup_free_ char *sig_b64 = b64url_encode(sig, sig_len);
    if (!sig_b64)
        return -ENOMEM;

    size_t il = strlen(input), sl = strlen(sig_b64);
    char *tok = m->host->alloc(il + 1 + sl + 1);
    if (!tok)
        return -ENOMEM;
    memcpy(tok, input, il);
    tok[il] = '.';
    memcpy(tok + il + 1, sig_b64, sl + 1);

    ret->access_token = tok;
    ret->expires_on = now + (uint64_t)m->lifetime_s;
    ret->not_before = now;
    return 0;
}

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .abi_minor = IDB_PLUGIN_ABI_MINOR,
    .size = sizeof(struct idb_provider),
    .name = MOCK_NAME,
    .version = "1.0",
    .init = mock_init,
    .issue = mock_issue,
    .destroy = mock_destroy,
};
