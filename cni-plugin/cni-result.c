/* SPDX-License-Identifier: Apache-2.0 */
#include "cni-result.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/macro.h>

const char *const cni_supported_versions[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", NULL};

int cni_fail(struct cni_error *e, unsigned code, int r, const char *msg, const char *details_fmt,
             ...)
{
    if (r >= 0)
        r = -EINVAL;
    if (!e || e->code != 0)
        return r;
    e->code = code;
    snprintf(e->msg, sizeof(e->msg), "%s", msg);
    e->details[0] = '\0';
    if (details_fmt) {
        va_list ap;
        va_start(ap, details_fmt);
        vsnprintf(e->details, sizeof(e->details), details_fmt, ap);
        va_end(ap);
    }
    return r;
}

unsigned cni_state_error_code(int r)
{
    return r == -ENOSPC || r == -EDQUOT ? CNI_ERR_TRY_AGAIN : CNI_ERR_STATE;
}

bool cni_version_supported(const char *v)
{
    if (!v)
        return false;
    for (size_t i = 0; cni_supported_versions[i]; i++)
        if (streq(v, cni_supported_versions[i]))
            return true;
    return false;
}

/* Parses "A.B.C" with small decimal parts; -1 when it is not one. */
static int version_parse(const char *s, unsigned ret[3])
{
    unsigned v[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (*s < '0' || *s > '9')
            return -1;
        while (*s >= '0' && *s <= '9') {
            if (v[i] > 9999)
                return -1;
            v[i] = v[i] * 10 + (unsigned)(*s - '0');
            s++;
        }
        if (i < 2 && *s++ != '.')
            return -1;
    }
    if (*s)
        return -1;
    memcpy(ret, v, sizeof(v));
    return 0;
}

int cni_version_cmp(const char *a, const char *b)
{
    unsigned va[3], vb[3];
    bool oka = a && version_parse(a, va) == 0, okb = b && version_parse(b, vb) == 0;
    if (!oka || !okb)
        return (int)oka - (int)okb;
    for (int i = 0; i < 3; i++)
        if (va[i] != vb[i])
            return va[i] < vb[i] ? -1 : 1;
    return 0;
}

static char *to_text(struct json_object *o)
{
    const char *s =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    return s ? strdup(s) : NULL;
}

char *cni_error_json(const struct cni_error *e, const char *version)
{
    _cleanup_json_ struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    if (json_add_str(o, "cniVersion",
                     cni_version_supported(version) ? version : CNI_VERSION_LATEST) < 0 ||
        json_add_int(o, "code", e->code ? e->code : CNI_ERR_INTERNAL) < 0 ||
        json_add_str(o, "msg", e->msg[0] ? e->msg : "internal error") < 0)
        return NULL;
    if (e->details[0] && json_add_str(o, "details", e->details) < 0)
        return NULL;
    return to_text(o);
}

char *cni_version_json(const char *version)
{
    _cleanup_json_ struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    if (json_add_str(o, "cniVersion",
                     cni_version_supported(version) ? version : CNI_VERSION_LATEST) < 0)
        return NULL;
    struct json_object *a = json_object_new_array();
    if (!a || json_object_object_add(o, "supportedVersions", a) < 0) {
        json_object_put(a);
        return NULL;
    }
    for (size_t i = 0; cni_supported_versions[i]; i++) {
        struct json_object *s = json_object_new_string(cni_supported_versions[i]);
        if (!s || json_object_array_add(a, s) < 0) {
            json_object_put(s);
            return NULL;
        }
    }
    return to_text(o);
}

char *cni_result_json(struct json_object *prev_result, const char *version)
{
    /* A deep copy keeps the caller's object untouched; "cniVersion" is the only key we set (json-c
     * replaces an existing key in place, so the order of the other keys is kept). */
    _cleanup_json_ struct json_object *o = NULL;
    if (json_object_deep_copy(prev_result, &o, NULL) < 0 || !o)
        return NULL;
    if (!json_object_is_type(o, json_type_object))
        return NULL;
    struct json_object *v = json_object_new_string(version);
    if (!v || json_object_object_add(o, "cniVersion", v) < 0) {
        json_object_put(v);
        return NULL;
    }
    return to_text(o);
}
