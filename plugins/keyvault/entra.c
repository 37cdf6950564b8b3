/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Entra ID client-credentials grant, as data: token URL, scope, form body, client assertion,
 * and the reply parser.
 */
#include "entra.h"

#include <errno.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idbroker-internal/b64url.h>
#include <idbroker-internal/macro.h>

#include "kv-parse.h"

#define ENTRA_FORM_MAX (256 * 1024)

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool entra_valid_tenant(const char *s)
{
    size_t n = 0;
    if (!s || s[0] == '.' || s[0] == '-')
        return false;
    for (; s[n]; n++)
        if (!is_alnum(s[n]) && s[n] != '.' && s[n] != '-')
            return false;
    return n >= 1 && n <= ENTRA_MAX_TENANT;
}

bool entra_valid_client_id(const char *s)
{
    size_t n = 0;
    if (!s)
        return false;
    for (; s[n]; n++)
        if ((unsigned char)s[n] <= 0x20 || (unsigned char)s[n] >= 0x7f)
            return false;
    return n >= 1 && n <= ENTRA_MAX_CLIENT_ID;
}

int entra_token_url(const char *authority, const char *tenant, char **ret_url, char **ret_host,
                    int *ret_port)
{
    if (!entra_valid_tenant(tenant))
        return -EINVAL;
    /* The vault URL parser checks the same "https://host[:port][/]" shape. */
    struct kv_ref ref;
    int r = kv_parse_vault_url(authority, "x", NULL, &ref);
    if (r < 0)
        return r;
    char *url = NULL;
    if (asprintf(&url, "%s/%s/oauth2/v2.0/token", ref.vault, tenant) < 0) {
        kv_ref_done(&ref);
        return -ENOMEM;
    }
    *ret_url = url;
    *ret_host = TAKE_PTR(ref.host);
    *ret_port = ref.port;
    kv_ref_done(&ref);
    return 0;
}

char *entra_scope(const char *resource)
{
    if (!resource)
        return NULL;
    size_t n = strlen(resource);
    if (n == 0 || n > ENTRA_MAX_RESOURCE)
        return NULL;
    if (n >= 9 && streq(resource + n - 9, "/.default"))
        return strdup(resource);
    char *s = NULL;
    if (asprintf(&s, "%s/.default", resource) < 0)
        return NULL;
    return s;
}

static int form_reserve(struct entra_form *f, size_t more)
{
    if (f->len + more + 1 > ENTRA_FORM_MAX)
        return -E2BIG;
    if (f->len + more + 1 <= f->cap)
        return 0;
    size_t cap = f->cap ? f->cap : 512;
    while (cap < f->len + more + 1)
        cap *= 2;
    /* No realloc: the old buffer holds secrets and must be wiped, not just released. */
    char *n = malloc(cap);
    if (!n)
        return -ENOMEM;
    if (f->buf) {
        memcpy(n, f->buf, f->len + 1);
        OPENSSL_cleanse(f->buf, f->cap);
        free(f->buf);
    }
    f->buf = n;
    f->cap = cap;
    return 0;
}

static int form_put_encoded(struct entra_form *f, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int r = form_reserve(f, 3);
        if (r < 0)
            return r;
        if (is_alnum((char)c) || c == '-' || c == '.' || c == '_' || c == '~') {
            f->buf[f->len++] = (char)c;
        } else {
            f->buf[f->len++] = '%';
            f->buf[f->len++] = hex[c >> 4];
            f->buf[f->len++] = hex[c & 15];
        }
        f->buf[f->len] = '\0';
    }
    return 0;
}

int entra_form_add(struct entra_form *f, const char *key, const char *value)
{
    int r = form_reserve(f, 1);
    if (r < 0)
        return r;
    if (f->len > 0)
        f->buf[f->len++] = '&';
    f->buf[f->len] = '\0';
    r = form_put_encoded(f, key);
    if (r < 0)
        return r;
    r = form_reserve(f, 1);
    if (r < 0)
        return r;
    f->buf[f->len++] = '=';
    f->buf[f->len] = '\0';
    return form_put_encoded(f, value);
}

void entra_form_done(struct entra_form *f)
{
    if (!f)
        return;
    if (f->buf) {
        OPENSSL_cleanse(f->buf, f->cap);
        free(f->buf);
    }
    *f = (struct entra_form){0};
}

static char *json_b64url(struct json_object *o)
{
    const char *s =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    return s ? b64url_encode((const unsigned char *)s, strlen(s)) : NULL;
}

static int random_uuid(char ret[37])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1)
        return -EIO;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(ret, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

static int sign(EVP_PKEY *key, enum entra_alg alg, const char *input, unsigned char **ret_sig,
                size_t *ret_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *sig = NULL;
    size_t len = 0, in_len = strlen(input);
    int r = -ENOMEM;
    if (!ctx)
        goto out;
    r = -EIO;
    if (EVP_DigestSignInit_ex(ctx, &pctx, "SHA256", NULL, NULL, key, NULL) != 1)
        goto out;
    if (alg == ENTRA_PS256 && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                               EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
        goto out;
    if (EVP_DigestSign(ctx, NULL, &len, (const unsigned char *)input, in_len) != 1)
        goto out;
    sig = malloc(len);
    if (!sig) {
        r = -ENOMEM;
        goto out;
    }
    if (EVP_DigestSign(ctx, sig, &len, (const unsigned char *)input, in_len) != 1)
        goto out;
    *ret_sig = TAKE_PTR(sig);
    *ret_len = len;
    r = 0;
out:
    free(sig);
    EVP_MD_CTX_free(ctx);
    return r;
}

int entra_build_assertion(EVP_PKEY *key, const unsigned char x5t[20],
                          const unsigned char x5t_s256[32], const char *client_id,
                          const char *token_url, uint64_t now, uint32_t lifetime_s,
                          enum entra_alg alg, char **ret)
{
    if (!key || !client_id || !token_url || lifetime_s == 0 ||
        (alg != ENTRA_RS256 && alg != ENTRA_PS256))
        return -EINVAL;
    char jti[37];
    int r = random_uuid(jti);
    if (r < 0)
        return r;
    _cleanup_free_ char *t1 = b64url_encode(x5t, 20), *t256 = b64url_encode(x5t_s256, 32);
    struct json_object *h = json_object_new_object(), *c = json_object_new_object();
    _cleanup_free_ char *hb = NULL, *cb = NULL, *input = NULL, *sig_b64 = NULL;
    _cleanup_free_ unsigned char *sig = NULL;
    size_t sig_len = 0;
    r = -ENOMEM;
    if (!t1 || !t256 || !h || !c)
        goto out;
    json_object_object_add(h, "alg",
                           json_object_new_string(alg == ENTRA_PS256 ? "PS256" : "RS256"));
    json_object_object_add(h, "typ", json_object_new_string("JWT"));
    json_object_object_add(h, "x5t", json_object_new_string(t1));
    json_object_object_add(h, "x5t#S256", json_object_new_string(t256));
    json_object_object_add(c, "aud", json_object_new_string(token_url));
    json_object_object_add(c, "iss", json_object_new_string(client_id));
    json_object_object_add(c, "sub", json_object_new_string(client_id));
    json_object_object_add(c, "jti", json_object_new_string(jti));
    json_object_object_add(c, "iat", json_object_new_int64((int64_t)now));
    json_object_object_add(c, "nbf", json_object_new_int64((int64_t)now));
    json_object_object_add(c, "exp", json_object_new_int64((int64_t)(now + lifetime_s)));
    hb = json_b64url(h);
    cb = json_b64url(c);
    if (!hb || !cb || asprintf(&input, "%s.%s", hb, cb) < 0) {
        input = NULL;
        goto out;
    }
    r = sign(key, alg, input, &sig, &sig_len);
    if (r < 0)
        goto out;
    r = -ENOMEM;
    sig_b64 = b64url_encode(sig, sig_len);
    char *jwt = NULL;
    if (!sig_b64 || asprintf(&jwt, "%s.%s", input, sig_b64) < 0)
        goto out;
    *ret = jwt;
    r = 0;
out:
    json_object_put(h);
    json_object_put(c);
    return r;
}

void entra_reply_done(struct entra_reply *r)
{
    if (!r)
        return;
    if (r->access_token) {
        OPENSSL_cleanse(r->access_token, strlen(r->access_token));
        free(r->access_token);
    }
    free(r->error);
    free(r->error_description);
    *r = (struct entra_reply){0};
}

/* A non-negative integer given as a JSON number or a decimal string (v1 endpoints send strings). */
static int get_seconds(struct json_object *o, const char *key, uint64_t *ret)
{
    struct json_object *v;
    *ret = 0;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    if (json_object_is_type(v, json_type_int)) {
        int64_t n = json_object_get_int64(v);
        if (n < 0 || n > 10 * 365 * 86400LL)
            return -EBADMSG;
        *ret = (uint64_t)n;
        return 0;
    }
    if (!json_object_is_type(v, json_type_string))
        return -EBADMSG;
    const char *s = json_object_get_string(v);
    uint64_t n = 0;
    if (!*s)
        return -EBADMSG;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EBADMSG;
        n = n * 10 + (uint64_t)(*s - '0');
        if (n > 10 * 365 * 86400ULL)
            return -EBADMSG;
    }
    *ret = n;
    return 0;
}

static int dup_string(struct json_object *o, const char *key, char **ret)
{
    struct json_object *v;
    *ret = NULL;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return -EBADMSG;
    *ret = kv_parse_printable_dup(json_object_get_string(v), ENTRA_MAX_ERROR_TEXT);
    return *ret ? 0 : -ENOMEM;
}

static int parse_success(struct json_object *o, struct json_object *tok, struct entra_reply *rep)
{
    struct json_object *v;
    if (!json_object_is_type(tok, json_type_string))
        return -EBADMSG;
    size_t n = (size_t)json_object_get_string_len(tok);
    const char *s = json_object_get_string(tok);
    if (n == 0 || n > ENTRA_MAX_TOKEN || memchr(s, '\0', n))
        return -EBADMSG;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return -EBADMSG;
    if (json_object_object_get_ex(o, "token_type", &v) &&
        (!json_object_is_type(v, json_type_string) ||
         strcasecmp(json_object_get_string(v), "Bearer") != 0))
        return -EBADMSG;
    if (get_seconds(o, "expires_in", &rep->expires_in) < 0 || rep->expires_in == 0 ||
        get_seconds(o, "ext_expires_in", &rep->ext_expires_in) < 0)
        return -EBADMSG;
    rep->access_token = strndup(s, n);
    return rep->access_token ? 0 : -ENOMEM;
}

int entra_parse_reply(const char *body, size_t len, struct entra_reply *ret)
{
    struct json_object *o = NULL, *v;
    int r = kv_parse_json_object(body, len, &o);
    if (r < 0)
        return r;
    struct entra_reply rep = {0};
    if (json_object_object_get_ex(o, "access_token", &v)) {
        r = parse_success(o, v, &rep);
        /* json-c's copy of the token goes with the object; wipe it first. */
        if (json_object_is_type(v, json_type_string))
            explicit_bzero((char *)json_object_get_string(v),
                           (size_t)json_object_get_string_len(v));
    } else {
        r = dup_string(o, "error", &rep.error);
        if (r == 0 && !rep.error)
            r = -EBADMSG;
        if (r == 0)
            r = dup_string(o, "error_description", &rep.error_description);
        if (r == 0 && json_object_object_get_ex(o, "error_codes", &v) &&
            json_object_is_type(v, json_type_array) && json_object_array_length(v) > 0) {
            struct json_object *c = json_object_array_get_idx(v, 0);
            if (json_object_is_type(c, json_type_int))
                rep.error_code = json_object_get_int64(c);
        }
    }
    json_object_put(o);
    if (r < 0) {
        entra_reply_done(&rep);
        return r;
    }
    *ret = rep;
    return 0;
}

bool entra_reply_bad_credential(const struct entra_reply *r)
{
    if (!r || !r->error)
        return false;
    if (streq(r->error, "invalid_client"))
        return true;
    return r->error_code == 7000215 || r->error_code == 7000222 || r->error_code == 700027;
}
