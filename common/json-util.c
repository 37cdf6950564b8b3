/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include <idbroker-internal/json-util.h>

#define JSON_MAX_DEPTH 64

int json_parse_strict(const char *text, size_t len, struct json_object **ret,
                      const char **ret_error)
{
    if (len > (size_t)INT32_MAX) {
        if (ret_error)
            *ret_error = "input too large";
        return -E2BIG;
    }
    struct json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH);
    if (!tok)
        return -ENOMEM;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    struct json_object *o = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (jerr == json_tokener_continue || (!o && jerr == json_tokener_success)) {
        json_object_put(o);
        if (ret_error)
            *ret_error = "unexpected end of input";
        return -EBADMSG;
    }
    if (jerr != json_tokener_success) {
        json_object_put(o);
        if (ret_error)
            *ret_error = json_tokener_error_desc(jerr);
        return -EBADMSG;
    }
    for (size_t i = used; i < len; i++)
        if (!isspace((unsigned char)text[i])) {
            json_object_put(o);
            if (ret_error)
                *ret_error = "trailing data after the JSON value";
            return -EBADMSG;
        }
    *ret = o;
    return 0;
}

const char *json_get_str(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

int64_t json_get_int(struct json_object *o, const char *key, int64_t def)
{
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        return def;
    return json_object_get_int64(v);
}

bool json_get_bool(struct json_object *o, const char *key, bool def)
{
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_boolean))
        return def;
    return json_object_get_boolean(v);
}

int json_add_str(struct json_object *o, const char *key, const char *val)
{
    if (!val)
        return 0;
    struct json_object *s = json_object_new_string(val);
    if (!s)
        return -ENOMEM;
    if (json_object_object_add(o, key, s) < 0) {
        json_object_put(s);
        return -ENOMEM;
    }
    return 0;
}

int json_add_int(struct json_object *o, const char *key, int64_t val)
{
    struct json_object *s = json_object_new_int64(val);
    if (!s)
        return -ENOMEM;
    if (json_object_object_add(o, key, s) < 0) {
        json_object_put(s);
        return -ENOMEM;
    }
    return 0;
}

#define BYTES_01 0x0101010101010101ULL
#define BYTES_80 0x8080808080808080ULL

/* Whether any byte of the 8 in x is < 0x20, '"' or '\\' (the classic "has a zero byte" test:
 * exact as a yes/no answer). */
static bool word_needs_escape(uint64_t x)
{
    uint64_t q = x ^ ('"' * BYTES_01), b = x ^ ('\\' * BYTES_01);
    return (((x - 0x20 * BYTES_01) & ~x) | ((q - BYTES_01) & ~q) | ((b - BYTES_01) & ~b)) &
           BYTES_80;
}

/* Length of s as a JSON string body (without quotes), and its plain length in *ret_len. Words of
 * 8 bytes with nothing to escape (all of a JWT) are skipped at once. */
size_t json_escaped_len(const char *s, size_t *ret_len)
{
    size_t n = strlen(s), i = 0, extra = 0;
    for (uint64_t x; i + 8 <= n; i += 8) {
        memcpy(&x, s + i, 8);
        if (word_needs_escape(x))
            break;
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        extra += (c == '"' || c == '\\') ? 1 : c < 0x20 ? 5 : 0;
    }
    *ret_len = n;
    return n + extra;
}

/* Writes s (len bytes) escaped; a value with nothing to escape (every JWT) is one memcpy. */
char *json_escape_to(char *dst, const char *s, size_t len, size_t escaped_len)
{
    static const char hex[] = "0123456789abcdef";
    if (escaped_len == len) {
        memcpy(dst, s, len);
        return dst + len;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            *dst++ = '\\';
            *dst++ = (char)*p;
        } else if (*p < 0x20) {
            memcpy(dst, "\\u00", 4);
            dst[4] = hex[*p >> 4];
            dst[5] = hex[*p & 0xf];
            dst += 6;
        } else {
            *dst++ = (char)*p;
        }
    }
    return dst;
}
