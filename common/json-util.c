/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <errno.h>

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
