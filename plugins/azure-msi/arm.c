/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pure part of identity assignment through ARM; contracts in arm.h.
 */
#include "arm.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idbroker-internal/macro.h>

#define ARM_MAX_BODY (1024 * 1024)
#define UAI_PREFIX "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
#define VMSS_PREFIX "/providers/Microsoft.Compute/virtualMachineScaleSets/"
#define VM_PREFIX "/providers/Microsoft.Compute/virtualMachines/"

static bool id_chars_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > ARM_MAX_RESOURCE_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c && strchr("-._()/", c));
        if (!ok)
            return false;
    }
    /* No empty, "." or ".." segment: the ID becomes a URL path. */
    if (strstr(s, "//") || strstr(s, "/./") || strstr(s, "/../") || s[n - 1] == '/')
        return false;
    return strncasecmp(s, "/subscriptions/", 15) == 0;
}

bool arm_identity_id_valid(const char *s)
{
    if (!s || !id_chars_ok(s))
        return false;
    const char *p = strcasestr(s, UAI_PREFIX);
    if (!p)
        return false;
    const char *name = p + strlen(UAI_PREFIX);
    return *name && !strchr(name, '/');
}

int arm_node_resource(const char *resource_id, char **ret)
{
    if (!resource_id || !id_chars_ok(resource_id))
        return -EINVAL;
    const char *ss = strcasestr(resource_id, VMSS_PREFIX);
    const char *vm = strcasestr(resource_id, VM_PREFIX);
    if (ss) {
        const char *name = ss + strlen(VMSS_PREFIX), *rest = strchr(name, '/');
        if (!rest)
            rest = name + strlen(name);
        if (rest == name)
            return -EINVAL;
        /* The scale set itself, or one of its instances: …/virtualMachines/N */
        if (*rest && !(strncasecmp(rest, "/virtualMachines/", 17) == 0 && rest[17] &&
                       !strchr(rest + 17, '/')))
            return -EINVAL;
        char *d = strndup(resource_id, (size_t)(rest - resource_id));
        if (!d)
            return -ENOMEM;
        *ret = d;
        return 0;
    }
    if (!vm || !vm[strlen(VM_PREFIX)] || strchr(vm + strlen(VM_PREFIX), '/'))
        return -EINVAL;
    char *d = strdup(resource_id);
    if (!d)
        return -ENOMEM;
    *ret = d;
    return 0;
}

void arm_identity_done(struct arm_identity *id)
{
    if (!id)
        return;
    for (size_t i = 0; i < id->n_user; i++)
        free(id->user[i]);
    free(id->user);
    free(id->provisioning_state);
    memset(id, 0, sizeof(*id));
}

static struct json_object *parse_object(const char *body, size_t len)
{
    if (!body || len > ARM_MAX_BODY)
        return NULL;
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return NULL;
    struct json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    bool complete = json_tokener_get_error(tok) == json_tokener_success &&
                    json_tokener_get_parse_end(tok) == len;
    json_tokener_free(tok);
    if (!o || !complete || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

int arm_identity_parse(const char *body, size_t len, struct arm_identity *ret)
{
    if (len > ARM_MAX_BODY)
        return -E2BIG;
    struct json_object *o = parse_object(body, len);
    if (!o)
        return -EBADMSG;
    struct arm_identity id = {0};
    int r = -EBADMSG;
    struct json_object *ident = NULL, *props = NULL, *v = NULL;

    if (json_object_object_get_ex(o, "properties", &props) &&
        json_object_is_type(props, json_type_object) &&
        json_object_object_get_ex(props, "provisioningState", &v)) {
        if (!json_object_is_type(v, json_type_string))
            goto out;
        id.provisioning_state = strdup(json_object_get_string(v));
        if (!id.provisioning_state) {
            r = -ENOMEM;
            goto out;
        }
    }
    if (!json_object_object_get_ex(o, "identity", &ident) ||
        json_object_is_type(ident, json_type_null)) {
        r = 0;
        goto out;
    }
    if (!json_object_is_type(ident, json_type_object))
        goto out;
    if (json_object_object_get_ex(ident, "type", &v)) {
        if (!json_object_is_type(v, json_type_string))
            goto out;
        id.system_assigned = strcasestr(json_object_get_string(v), "SystemAssigned") != NULL;
    }
    struct json_object *users = NULL;
    if (json_object_object_get_ex(ident, "userAssignedIdentities", &users) &&
        !json_object_is_type(users, json_type_null)) {
        if (!json_object_is_type(users, json_type_object))
            goto out;
        size_t n = (size_t)json_object_object_length(users);
        if (n > ARM_MAX_IDENTITIES) {
            r = -E2BIG;
            goto out;
        }
        id.user = calloc(n ? n : 1, sizeof(*id.user));
        if (!id.user) {
            r = -ENOMEM;
            goto out;
        }
        json_object_object_foreach(users, key, val)
        {
            (void)val;
            if (strlen(key) > ARM_MAX_RESOURCE_ID) {
                r = -E2BIG;
                goto out;
            }
            id.user[id.n_user] = strdup(key);
            if (!id.user[id.n_user]) {
                r = -ENOMEM;
                goto out;
            }
            id.n_user++;
        }
    }
    r = 0;
out:
    json_object_put(o);
    if (r < 0) {
        arm_identity_done(&id);
        return r;
    }
    *ret = id;
    return 0;
}

bool arm_identity_has(const struct arm_identity *id, const char *resource_id)
{
    for (size_t i = 0; i < id->n_user; i++)
        if (strcasecmp(id->user[i], resource_id) == 0)
            return true;
    return false;
}

/* {"identity": {"type": type, "userAssignedIdentities": users}} (users may be NULL) as new text. */
static int patch_body(const char *type, struct json_object *users, char **ret)
{
    struct json_object *root = json_object_new_object(), *ident = json_object_new_object();
    if (!root || !ident) {
        json_object_put(root);
        json_object_put(ident);
        json_object_put(users);
        return -ENOMEM;
    }
    json_object_object_add(root, "identity", ident);
    json_object_object_add(ident, "type", json_object_new_string(type));
    if (users)
        json_object_object_add(ident, "userAssignedIdentities", users);
    const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    char *d = s ? strdup(s) : NULL;
    json_object_put(root);
    if (!d)
        return -ENOMEM;
    *ret = d;
    return 0;
}

int arm_patch_add(const struct arm_identity *cur, const char *add, char **ret)
{
    struct json_object *users = json_object_new_object();
    if (!users)
        return -ENOMEM;
    for (size_t i = 0; i < cur->n_user; i++)
        if (strcasecmp(cur->user[i], add) != 0)
            json_object_object_add(users, cur->user[i], json_object_new_object());
    json_object_object_add(users, add, json_object_new_object());
    return patch_body(cur->system_assigned ? "SystemAssigned, UserAssigned" : "UserAssigned", users,
                      ret);
}

int arm_patch_remove(const struct arm_identity *cur, const char *remove, char **ret)
{
    size_t others = 0;
    for (size_t i = 0; i < cur->n_user; i++)
        if (strcasecmp(cur->user[i], remove) != 0)
            others++;
    if (others == 0)
        return patch_body(cur->system_assigned ? "SystemAssigned" : "None", NULL, ret);
    struct json_object *users = json_object_new_object();
    if (!users)
        return -ENOMEM;
    for (size_t i = 0; i < cur->n_user; i++)
        json_object_object_add(users, cur->user[i],
                               strcasecmp(cur->user[i], remove) == 0 ? NULL
                                                                     : json_object_new_object());
    if (!arm_identity_has(cur, remove))
        json_object_object_add(users, remove, NULL);
    return patch_body(cur->system_assigned ? "SystemAssigned, UserAssigned" : "UserAssigned", users,
                      ret);
}

int arm_instance_resource_id(const char *body, size_t len, char **ret)
{
    struct json_object *o = parse_object(body, len), *compute = NULL, *rid = NULL;
    int r = -EBADMSG;
    if (o && json_object_object_get_ex(o, "compute", &compute) &&
        json_object_is_type(compute, json_type_object) &&
        json_object_object_get_ex(compute, "resourceId", &rid) &&
        json_object_is_type(rid, json_type_string) && json_object_get_string_len(rid) > 0) {
        char *d = strdup(json_object_get_string(rid));
        r = d ? 0 : -ENOMEM;
        if (d)
            *ret = d;
    }
    json_object_put(o);
    return r;
}
