/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsers of the keyvault provider for Key Vault's side: secret URLs, host allow-lists, the bearer
 * challenge, secret and error replies. Everything here is pure and bounded, so it can be fuzzed.
 */
#include "kv-parse.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idbroker-internal/macro.h>

#define KV_JSON_MAX_DEPTH 16
#define KV_MAX_ERROR_TEXT 512
#define KV_MAX_CONTENT_TYPE 256

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

bool kv_parse_valid_name(const char *name)
{
    size_t n = 0;
    if (!name)
        return false;
    for (; name[n]; n++)
        if (!is_alnum(name[n]) && name[n] != '-')
            return false;
    return n >= 1 && n <= KV_MAX_SECRET_NAME;
}

static bool valid_version(const char *v, size_t n)
{
    if (n < 1 || n > KV_MAX_VERSION)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_alnum(v[i]))
            return false;
    return true;
}

void kv_ref_done(struct kv_ref *r)
{
    if (!r)
        return;
    free(r->vault);
    free(r->host);
    free(r->name);
    free(r->version);
    *r = (struct kv_ref){0};
}

/* Parses "https://host[:port]" at the start of url; *ret_end points after the authority. */
static int parse_authority(const char *url, char **ret_host, int *ret_port, const char **ret_end)
{
    if (strncasecmp(url, "https://", 8) != 0)
        return -EINVAL;
    const char *h = url + 8, *p = h;
    while (is_alnum(*p) || *p == '.' || *p == '-')
        p++;
    size_t hn = (size_t)(p - h);
    if (hn == 0 || hn > KV_MAX_HOST || h[0] == '.' || h[0] == '-' || h[hn - 1] == '.' ||
        h[hn - 1] == '-')
        return -EINVAL;
    for (size_t i = 0; i + 1 < hn; i++)
        if (h[i] == '.' && h[i + 1] == '.')
            return -EINVAL;
    int port = 0;
    if (*p == ':') {
        p++;
        size_t digits = 0;
        long v = 0;
        while (*p >= '0' && *p <= '9' && digits < 6) {
            v = v * 10 + (*p - '0');
            p++;
            digits++;
        }
        if (digits == 0 || digits > 5 || v < 1 || v > 65535)
            return -EINVAL;
        port = (int)v;
    }
    if (*p != '\0' && *p != '/')
        return -EINVAL;
    char *host = strndup(h, hn);
    if (!host)
        return -ENOMEM;
    for (char *c = host; *c; c++)
        *c = lower(*c);
    *ret_host = host;
    *ret_port = port;
    *ret_end = p;
    return 0;
}

static int ref_fill(const char *host, int port, const char *name, size_t name_len,
                    const char *version, size_t version_len, struct kv_ref *ret)
{
    struct kv_ref r = {.port = port};
    int n = port ? asprintf(&r.vault, "https://%s:%d", host, port)
                 : asprintf(&r.vault, "https://%s", host);
    if (n < 0) {
        r.vault = NULL;
        return -ENOMEM;
    }
    r.host = strdup(host);
    r.name = strndup(name, name_len);
    r.version = version ? strndup(version, version_len) : NULL;
    if (!r.host || !r.name || (version && !r.version)) {
        kv_ref_done(&r);
        return -ENOMEM;
    }
    *ret = r;
    return 0;
}

int kv_parse_secret_url(const char *url, struct kv_ref *ret)
{
    if (!url || strlen(url) > KV_MAX_URL)
        return -EINVAL;
    _cleanup_free_ char *host = NULL;
    int port;
    const char *p;
    int r = parse_authority(url, &host, &port, &p);
    if (r < 0)
        return r;
    if (strncmp(p, "/secrets/", 9) != 0)
        return -EINVAL;
    const char *name = p + 9, *e = name;
    while (is_alnum(*e) || *e == '-')
        e++;
    size_t name_len = (size_t)(e - name);
    if (name_len < 1 || name_len > KV_MAX_SECRET_NAME)
        return -EINVAL;
    const char *version = NULL;
    size_t version_len = 0;
    if (*e == '/' && e[1] != '\0') {
        version = e + 1;
        const char *ve = version;
        while (is_alnum(*ve))
            ve++;
        version_len = (size_t)(ve - version);
        if (!valid_version(version, version_len))
            return -EINVAL;
        e = ve;
    }
    if (*e == '/')
        e++;
    if (*e != '\0')
        return -EINVAL;
    return ref_fill(host, port, name, name_len, version, version_len, ret);
}

int kv_parse_vault_url(const char *vault_url, const char *name, const char *version,
                       struct kv_ref *ret)
{
    if (!vault_url || strlen(vault_url) > KV_MAX_URL || !kv_parse_valid_name(name))
        return -EINVAL;
    if (version && !valid_version(version, strlen(version)))
        return -EINVAL;
    _cleanup_free_ char *host = NULL;
    int port;
    const char *p;
    int r = parse_authority(vault_url, &host, &port, &p);
    if (r < 0)
        return r;
    if (*p == '/')
        p++;
    if (*p != '\0')
        return -EINVAL;
    return ref_fill(host, port, name, strlen(name), version, version ? strlen(version) : 0, ret);
}

bool kv_parse_host_match(const char *pattern, const char *host, int port)
{
    if (!pattern || !host || !host[0])
        return false;
    const char *colon = strrchr(pattern, ':');
    size_t plen = colon ? (size_t)(colon - pattern) : strlen(pattern);
    if (colon) {
        const char *ps = colon + 1;
        if (!streq(ps, "*")) {
            char *end = NULL;
            long want = strtol(ps, &end, 10);
            if (!*ps || *end || want < 1 || want > 65535)
                return false;
            if ((port ? port : 443) != want)
                return false;
        }
    } else if (port != 0 && port != 443) {
        return false;
    }
    size_t hlen = strlen(host);
    if (plen >= 2 && pattern[0] == '*' && pattern[1] == '.') {
        size_t slen = plen - 1; /* ".suffix" */
        if (hlen <= slen)
            return false;
        return strncasecmp(host + hlen - slen, pattern + 1, slen) == 0;
    }
    return plen == hlen && strncasecmp(pattern, host, hlen) == 0;
}

/* ---- WWW-Authenticate ---- */

void kv_challenge_done(struct kv_challenge *c)
{
    if (!c)
        return;
    free(c->authorization);
    free(c->resource);
    *c = (struct kv_challenge){0};
}

static bool is_tchar(char c)
{
    return is_alnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Reads a token or quoted-string value at p into a new string; *ret_end after it. */
static int read_value(const char *p, char **ret, const char **ret_end)
{
    size_t cap = strlen(p) + 1, n = 0;
    _cleanup_free_ char *v = malloc(cap);
    if (!v)
        return -ENOMEM;
    if (*p == '"') {
        p++;
        for (;;) {
            if (*p == '\0')
                return -EBADMSG;
            if (*p == '"') {
                p++;
                break;
            }
            if (*p == '\\') {
                p++;
                if (*p == '\0')
                    return -EBADMSG;
            }
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                return -EBADMSG;
            v[n++] = *p++;
        }
    } else {
        while (is_tchar(*p) || *p == '/' || *p == ':' || *p == '=')
            v[n++] = *p++;
        if (n == 0)
            return -EBADMSG;
    }
    v[n] = '\0';
    *ret = TAKE_PTR(v);
    *ret_end = p;
    return 0;
}

static int set_field(char **field, char *value)
{
    free(*field);
    *field = value;
    return 0;
}

int kv_parse_challenge(const char *header, struct kv_challenge *ret)
{
    if (!header)
        return -EBADMSG;
    if (strlen(header) > KV_MAX_CHALLENGE)
        return -E2BIG;
    const char *p = skip_ws(header);
    if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t' && p[6] != '\0'))
        return -EBADMSG;
    p = skip_ws(p + 6);

    struct kv_challenge c = {0};
    _cleanup_free_ char *scope = NULL;
    int r = 0;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *k = p;
        while (is_tchar(*p))
            p++;
        size_t klen = (size_t)(p - k);
        p = skip_ws(p);
        if (klen == 0 || *p != '=') {
            /* Another scheme's challenge follows (or garbage): what we have is Bearer's. */
            if (klen > 0)
                break;
            r = -EBADMSG;
            goto fail;
        }
        p = skip_ws(p + 1);
        char *v = NULL;
        r = read_value(p, &v, &p);
        if (r < 0)
            goto fail;
        if ((klen == 13 && strncasecmp(k, "authorization", 13) == 0) ||
            (klen == 17 && strncasecmp(k, "authorization_uri", 17) == 0))
            set_field(&c.authorization, v);
        else if (klen == 8 && strncasecmp(k, "resource", 8) == 0)
            set_field(&c.resource, v);
        else if (klen == 5 && strncasecmp(k, "scope", 5) == 0)
            set_field(&scope, v);
        else
            free(v);
        p = skip_ws(p);
        if (*p && *p != ',') {
            r = -EBADMSG;
            goto fail;
        }
    }
    if (!c.resource && scope) {
        /* The first scope; its resource is the scope without "/.default". */
        size_t n = strcspn(scope, " ");
        scope[n] = '\0';
        if (n >= 9 && streq(scope + n - 9, "/.default"))
            scope[n - 9] = '\0';
        if (scope[0])
            c.resource = TAKE_PTR(scope);
    }
    *ret = c;
    return 0;
fail:
    kv_challenge_done(&c);
    return r;
}

/* ---- JSON replies ---- */

int kv_parse_json_object(const char *body, size_t len, struct json_object **ret)
{
    if (!body || len > (size_t)INT32_MAX)
        return -EBADMSG;
    struct json_tokener *tok = json_tokener_new_ex(KV_JSON_MAX_DEPTH);
    if (!tok)
        return -ENOMEM;
    struct json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || e != json_tokener_success) {
        json_object_put(o);
        return -EBADMSG;
    }
    for (size_t i = used; i < len; i++)
        if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n') {
            json_object_put(o);
            return -EBADMSG;
        }
    if (!json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return -EBADMSG;
    }
    *ret = o;
    return 0;
}

char *kv_parse_printable_dup(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    char *d = strndup(s, n);
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)d[i] < 0x20 || d[i] == 0x7f)
            d[i] = '?';
    return d;
}

void kv_secret_done(struct kv_secret *s)
{
    if (!s)
        return;
    if (s->value) {
        explicit_bzero(s->value, s->value_len);
        free(s->value);
    }
    free(s->content_type);
    free(s->id);
    *s = (struct kv_secret){0};
}

static int get_epoch(struct json_object *attrs, const char *key, uint64_t *ret)
{
    struct json_object *v;
    *ret = 0;
    if (!json_object_object_get_ex(attrs, key, &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_int))
        return -EBADMSG;
    int64_t n = json_object_get_int64(v);
    if (n < 0)
        return -EBADMSG;
    *ret = (uint64_t)n;
    return 0;
}

int kv_parse_secret_reply(const char *body, size_t len, struct kv_secret *ret)
{
    struct json_object *o = NULL, *v;
    int r = kv_parse_json_object(body, len, &o);
    if (r < 0)
        return r;
    struct kv_secret s = {.enabled = true};
    r = -EBADMSG;
    if (!json_object_object_get_ex(o, "value", &v) || !json_object_is_type(v, json_type_string))
        goto out;
    s.value_len = (size_t)json_object_get_string_len(v);
    s.value = malloc(s.value_len + 1);
    if (!s.value) {
        r = -ENOMEM;
        goto out;
    }
    memcpy(s.value, json_object_get_string(v), s.value_len + 1);
    if (memchr(s.value, '\0', s.value_len))
        goto out;
    if (json_object_object_get_ex(o, "contentType", &v) &&
        !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_string))
            goto out;
        s.content_type = kv_parse_printable_dup(json_object_get_string(v), KV_MAX_CONTENT_TYPE);
        if (!s.content_type) {
            r = -ENOMEM;
            goto out;
        }
    }
    if (json_object_object_get_ex(o, "id", &v) && json_object_is_type(v, json_type_string)) {
        s.id = kv_parse_printable_dup(json_object_get_string(v), KV_MAX_URL);
        if (!s.id) {
            r = -ENOMEM;
            goto out;
        }
    }
    struct json_object *attrs;
    if (json_object_object_get_ex(o, "attributes", &attrs) &&
        !json_object_is_type(attrs, json_type_null)) {
        if (!json_object_is_type(attrs, json_type_object))
            goto out;
        if (json_object_object_get_ex(attrs, "enabled", &v)) {
            if (!json_object_is_type(v, json_type_boolean))
                goto out;
            s.enabled = json_object_get_boolean(v);
        }
        if (get_epoch(attrs, "exp", &s.exp) < 0 || get_epoch(attrs, "nbf", &s.nbf) < 0)
            goto out;
    }
    *ret = s;
    s = (struct kv_secret){0};
    r = 0;
out:
    kv_secret_done(&s);
    /* json-c keeps its own copy of the value; wipe it before the object goes. */
    if (json_object_object_get_ex(o, "value", &v) && json_object_is_type(v, json_type_string)) {
        int n = json_object_get_string_len(v);
        explicit_bzero((char *)json_object_get_string(v), (size_t)n);
    }
    json_object_put(o);
    return r;
}

static char *dup_member(struct json_object *o, const char *key, bool *ret_bad)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return NULL;
    if (!json_object_is_type(v, json_type_string)) {
        *ret_bad = true;
        return NULL;
    }
    return kv_parse_printable_dup(json_object_get_string(v), KV_MAX_ERROR_TEXT);
}

int kv_parse_error_reply(const char *body, size_t len, char **ret_code, char **ret_message,
                         char **ret_inner)
{
    struct json_object *o = NULL, *err, *inner;
    int r = kv_parse_json_object(body, len, &o);
    if (r < 0)
        return r;
    _cleanup_free_ char *code = NULL, *message = NULL, *inner_code = NULL;
    bool bad = false;
    r = -EBADMSG;
    if (!json_object_object_get_ex(o, "error", &err) || !json_object_is_type(err, json_type_object))
        goto out;
    code = dup_member(err, "code", &bad);
    message = dup_member(err, "message", &bad);
    if (json_object_object_get_ex(err, "innererror", &inner) &&
        json_object_is_type(inner, json_type_object))
        inner_code = dup_member(inner, "code", &bad);
    if (bad || (!code && !message))
        goto out;
    *ret_code = TAKE_PTR(code);
    *ret_message = TAKE_PTR(message);
    *ret_inner = TAKE_PTR(inner_code);
    r = 0;
out:
    json_object_put(o);
    return r;
}
