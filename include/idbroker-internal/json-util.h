/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IDBROKER_INTERNAL_JSON_UTIL_H
#define IDBROKER_INTERNAL_JSON_UTIL_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <idbroker-internal/macro.h>

static inline void json_object_putp(struct json_object **p)
{
    if (*p)
        json_object_put(*p);
}
#define _cleanup_json_ __attribute__((cleanup(json_object_putp)))

/* Parses exactly one JSON value from text[0..len) with nothing but white space after it. Depth is
 * capped. Returns -EBADMSG on syntax errors, with *ret_error (optional, static string) saying why.
 */
int json_parse_strict(const char *text, size_t len, struct json_object **ret,
                      const char **ret_error);

/* Typed getters. Return NULL / def when key is absent or of another type. */
const char *json_get_str(struct json_object *o, const char *key);
int64_t json_get_int(struct json_object *o, const char *key, int64_t def);
bool json_get_bool(struct json_object *o, const char *key, bool def);

/* Adds key: string (NULL -> skipped). Returns -ENOMEM. */
int json_add_str(struct json_object *o, const char *key, const char *val);
int json_add_int(struct json_object *o, const char *key, int64_t val);

/* Length of s as the body of a JSON string (without quotes); its plain length in *ret_len. Runs of
 * 8 bytes with nothing to escape (all of a JWT) are skipped at once. */
size_t json_escaped_len(const char *s, size_t *ret_len);
/* Writes s (len bytes, escaped_len from json_escaped_len) escaped into dst, which has room for
 * escaped_len bytes; returns the end. A value with nothing to escape is one memcpy. */
char *json_escape_to(char *dst, const char *s, size_t len, size_t escaped_len);

#endif
