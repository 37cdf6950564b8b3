/* SPDX-License-Identifier: Apache-2.0 */
/*
 * IMDS token reply parser. See imds-reply.h for the contract. Pure: no I/O, no globals, malloc
 * only.
 */
#include "imds-reply.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TIME_MAX_DIGITS 12 /* 10^12 s is ~31700 years: room for any epoch time or lifetime */

/* Parses a whole JSON text (trailing white space allowed) of exactly len bytes. */
static struct json_object *parse_json(const char *body, size_t len)
{
    if (len > IMDS_REPLY_MAX_BYTES || len > (size_t)INT32_MAX)
        return NULL;
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return NULL;
    struct json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || e != json_tokener_success) {
        json_object_put(o);
        return NULL;
    }
    for (; end < len; end++)
        if (body[end] != ' ' && body[end] != '\t' && body[end] != '\r' && body[end] != '\n') {
            json_object_put(o);
            return NULL;
        }
    return o;
}

static bool visible_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static bool printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* A time field: a string of 1..TIME_MAX_DIGITS decimal digits, or a non-negative JSON integer
 * below 10^TIME_MAX_DIGITS. Returns 1 and *ret when present, 0 when absent, -EBADMSG otherwise. */
static int time_field(struct json_object *o, const char *key, uint64_t *ret)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    uint64_t n = 0;
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        size_t len = (size_t)json_object_get_string_len(v);
        if (len == 0 || len > TIME_MAX_DIGITS)
            return -EBADMSG;
        for (size_t i = 0; i < len; i++) {
            if (s[i] < '0' || s[i] > '9')
                return -EBADMSG;
            n = n * 10 + (uint64_t)(s[i] - '0');
        }
    } else if (json_object_is_type(v, json_type_int)) {
        errno = 0;
        int64_t i = json_object_get_int64(v);
        if (i < 0 || i >= 1000000000000LL)
            return -EBADMSG;
        n = (uint64_t)i;
    } else {
        return -EBADMSG;
    }
    *ret = n;
    return 1;
}

/* A string field. Returns 1 with *ret (borrowed from o) and *ret_len, 0 when absent, or < 0. */
static int string_field(struct json_object *o, const char *key, size_t max, const char **ret,
                        size_t *ret_len)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return -EBADMSG;
    size_t len = (size_t)json_object_get_string_len(v);
    if (len > max)
        return -E2BIG;
    *ret = json_object_get_string(v);
    *ret_len = len;
    return 1;
}

void imds_token_done(struct imds_token *t)
{
    if (!t)
        return;
    if (t->access_token) {
        explicit_bzero(t->access_token, strlen(t->access_token));
        free(t->access_token);
    }
    free(t->client_id);
    memset(t, 0, sizeof(*t));
}

static int parse_object(struct json_object *o, uint64_t now, struct imds_token *t)
{
    const char *s;
    size_t n;
    int r = string_field(o, "access_token", IMDS_TOKEN_MAX_BYTES, &s, &n);
    if (r <= 0)
        return r < 0 ? r : -EBADMSG;
    /* A bearer token is visible ASCII; a NUL inside would also cut it short. */
    if (n == 0 || !visible_ascii(s, n))
        return -EBADMSG;
    t->access_token = strndup(s, n);
    if (!t->access_token)
        return -ENOMEM;

    r = string_field(o, "client_id", IMDS_FIELD_MAX_BYTES, &s, &n);
    if (r < 0)
        return r;
    if (r > 0 && n > 0) {
        if (!visible_ascii(s, n))
            return -EBADMSG;
        t->client_id = strndup(s, n);
        if (!t->client_id)
            return -ENOMEM;
    }

    r = string_field(o, "token_type", IMDS_FIELD_MAX_BYTES, &s, &n);
    if (r < 0)
        return r;
    if (r > 0 && !(n == 6 && strncasecmp(s, "Bearer", 6) == 0))
        return -EBADMSG;
    r = string_field(o, "resource", IMDS_FIELD_MAX_BYTES, &s, &n);
    if (r < 0)
        return r;

    uint64_t expires_on = 0, expires_in = 0;
    int has_on = time_field(o, "expires_on", &expires_on);
    int has_in = time_field(o, "expires_in", &expires_in);
    int has_nbf = time_field(o, "not_before", &t->not_before);
    int has_ext = time_field(o, "ext_expires_in", &t->ext_expires_in);
    if (has_on < 0 || has_in < 0 || has_nbf < 0 || has_ext < 0)
        return -EBADMSG;
    if (!has_on && !has_in)
        return -EBADMSG;
    if (!has_on) {
        if (expires_in > IMDS_MAX_LIFETIME_S)
            return -EBADMSG;
        expires_on = now + expires_in;
    }
    if (expires_on <= now || expires_on - now > IMDS_MAX_LIFETIME_S)
        return -EBADMSG;
    if (has_ext && t->ext_expires_in > IMDS_MAX_LIFETIME_S)
        return -EBADMSG;
    t->expires_on = expires_on;
    t->expires_in = has_in ? expires_in : expires_on - now;
    return 0;
}

int imds_reply_parse(const char *body, size_t len, uint64_t now, struct imds_token *ret)
{
    if (!body)
        return -EBADMSG;
    if (len > IMDS_REPLY_MAX_BYTES)
        return -E2BIG;
    struct json_object *o = parse_json(body, len);
    if (!o)
        return -EBADMSG;
    struct imds_token t = {0};
    int r = json_object_is_type(o, json_type_object) ? parse_object(o, now, &t) : -EBADMSG;
    json_object_put(o);
    if (r < 0) {
        imds_token_done(&t);
        return r;
    }
    *ret = t;
    return 0;
}

bool imds_error_body_valid(const char *body, size_t len)
{
    if (!body || len == 0 || len > IMDS_FIELD_MAX_BYTES)
        return false;
    struct json_object *o = parse_json(body, len);
    if (!o)
        return false;
    const char *s;
    size_t n;
    bool ok = json_object_is_type(o, json_type_object) &&
              string_field(o, "error", IMDS_FIELD_MAX_BYTES, &s, &n) == 1 && n > 0 &&
              printable(s, n);
    if (ok) {
        int r = string_field(o, "error_description", IMDS_FIELD_MAX_BYTES, &s, &n);
        ok = r == 0 || (r == 1 && printable(s, n));
    }
    json_object_put(o);
    return ok;
}

enum imds_verdict imds_classify(int transport_rc, long status)
{
    switch (transport_rc) {
    case 0:
        break;
    case -ETIMEDOUT:
    case -ECONNREFUSED:
    case -ECONNRESET:
    case -EHOSTUNREACH:
    case -EIO:
        return IMDS_V_RETRY;
    case -E2BIG:
        return IMDS_V_BAD_REPLY;
    default:
        return IMDS_V_FAILED;
    }
    if (status == 200)
        return IMDS_V_OK;
    if (status == 429)
        return IMDS_V_THROTTLED;
    if (status == 404 || status == 408 || status == 410 || (status >= 500 && status <= 599))
        return IMDS_V_RETRY;
    if (status >= 400 && status <= 499)
        return IMDS_V_REFUSED;
    return IMDS_V_BAD_REPLY;
}

uint64_t imds_backoff_ms(unsigned attempt, uint32_t initial_ms, uint32_t max_ms, uint32_t rnd)
{
    uint64_t step = initial_ms ? initial_ms : 1;
    for (unsigned i = 1; i < attempt && step < max_ms; i++)
        step *= 2;
    if (step > max_ms)
        step = max_ms;
    uint64_t half = step / 2;
    return (step - half) + (half ? rnd % (half + 1) : 0);
}
