/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manifests of the files source. YAML goes through libyaml's event API into the same json-c tree
 * that JSON files produce, so one set of field readers serves both. YAML scalars stay strings
 * (plain empty, "~" and "null" become JSON null, i.e. "absent"); the few numeric fields accept an
 * integer or a numeric string. Anchors and aliases are refused outright: with no aliases the tree
 * is never larger than a small multiple of the text, so the file size cap bounds the memory (no
 * "billion laughs").
 */
#include "manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include <idbroker/errno.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/macro.h>

#include "limits.h"
#include "store.h"

#define API_VERSION_CRD "aadpodidentity.k8s.io/v1"
#define API_VERSION_CORE "v1"
#define PATH_MAX_CHARS 512
#define QUOTE_MAX_CHARS 80
#define ANNOTATION_LAST_APPLIED "kubectl.kubernetes.io/last-applied-configuration"

struct ctx {
    const char *origin;          /* borrowed */
    unsigned doc;                /* 1-based number of the current document; 0 before the first */
    unsigned objects;            /* documents plus List items, against MANIFEST_MAX_DOCS */
    struct store *s;             /* borrowed; NULL when converting one object (out) */
    struct manifest_object *out; /* manifest_object_from_json: the object goes here, not into s */
    char *error;                 /* returns new: the first error */
};

/* ---- messages ---- */

/* Copies s into buf for quoting in a message: printable ASCII only, capped. */
static void quote(char *buf, size_t n, const char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 4 < n; i++) {
        if (i == QUOTE_MAX_CHARS) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char ch = (unsigned char)s[i];
        buf[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    buf[o] = '\0';
}

/* Records "<origin>: document N: [field 'path': ]message" unless an error is already recorded.
 * Returns IDB_E_BAD_MANIFEST, or -ENOMEM if the message could not be built. */
static int fail(struct ctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct ctx *c, const char *path, const char *fmt, ...)
{
    if (c->error)
        return IDB_E_BAD_MANIFEST;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    char where[64] = "";
    if (c->doc > 0)
        snprintf(where, sizeof(where), "document %u: ", c->doc);
    int r;
    if (path && *path)
        r = asprintf(&c->error, "%s: %sfield '%s': %s", c->origin, where, path, msg);
    else
        r = asprintf(&c->error, "%s: %s%s", c->origin, where, msg);
    if (r < 0) {
        c->error = NULL;
        return -ENOMEM;
    }
    return IDB_E_BAD_MANIFEST;
}

/* Quotes a JSON value as the user wrote it (strings without their JSON quotes). */
static void quote_json(char *buf, size_t n, struct json_object *v)
{
    if (json_object_is_type(v, json_type_string)) {
        quote(buf, n, json_object_get_string(v), (size_t)json_object_get_string_len(v));
        return;
    }
    const char *t = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    quote(buf, n, t ? t : "?", t ? strlen(t) : 1);
}

static int fail_type(struct ctx *c, const char *path, const char *what, struct json_object *v)
{
    char q[QUOTE_MAX_CHARS + 8];
    quote_json(q, sizeof(q), v);
    return fail(c, path, "expected %s, got '%s'", what, q);
}

/* "prefix.key" into buf; an absurdly long path is cut short, which only shortens a message. */
static void path_join(char *buf, size_t n, const char *prefix, const char *key)
{
    int k =
        (prefix && *prefix) ? snprintf(buf, n, "%s.%s", prefix, key) : snprintf(buf, n, "%s", key);
    if (k < 0)
        buf[0] = '\0';
}

/* ---- YAML to json-c ---- */

static int fail_yaml(struct ctx *c, const yaml_parser_t *p)
{
    if (p->error == YAML_MEMORY_ERROR)
        return -ENOMEM;
    char q[QUOTE_MAX_CHARS + 8];
    const char *problem = p->problem ? p->problem : "syntax error";
    quote(q, sizeof(q), problem, strlen(problem));
    if (p->context)
        return fail(c, NULL, "YAML error at line %zu column %zu: %s %s", p->problem_mark.line + 1,
                    p->problem_mark.column + 1, p->context, q);
    return fail(c, NULL, "YAML error at line %zu column %zu: %s", p->problem_mark.line + 1,
                p->problem_mark.column + 1, q);
}

static int next_event(struct ctx *c, yaml_parser_t *p, yaml_event_t *ev)
{
    if (!yaml_parser_parse(p, ev))
        return fail_yaml(c, p);
    return 0;
}

static bool plain_null(const yaml_event_t *ev)
{
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)ev->data.scalar.value;
    return ev->data.scalar.length == 0 || streq(v, "~") || streq(v, "null") || streq(v, "Null") ||
           streq(v, "NULL");
}

static int build_node(struct ctx *c, yaml_parser_t *p, yaml_event_t *ev, unsigned depth, char *path,
                      struct json_object **ret);

static int fail_alias(struct ctx *c, const char *path)
{
    return fail(c, path, "YAML anchors and aliases are not allowed");
}

static size_t path_push(char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(char *path, const char *fmt, ...)
{
    size_t len = strlen(path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path + len, PATH_MAX_CHARS - len, fmt, ap);
    va_end(ap);
    return len;
}

static int build_sequence(struct ctx *c, yaml_parser_t *p, unsigned depth, char *path,
                          struct json_object **ret)
{
    _cleanup_json_ struct json_object *arr = json_object_new_array();
    if (!arr)
        return -ENOMEM;
    for (size_t idx = 0;; idx++) {
        yaml_event_t ev;
        int r = next_event(c, p, &ev);
        if (r < 0)
            return r;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        size_t mark = path_push(path, "[%zu]", idx);
        struct json_object *item = NULL;
        r = build_node(c, p, &ev, depth + 1, path, &item);
        path[mark] = '\0';
        if (r < 0)
            return r;
        if (json_object_array_add(arr, item) < 0) {
            json_object_put(item);
            return -ENOMEM;
        }
    }
    *ret = TAKE_PTR(arr);
    return 0;
}

static int build_mapping(struct ctx *c, yaml_parser_t *p, unsigned depth, char *path,
                         struct json_object **ret)
{
    _cleanup_json_ struct json_object *obj = json_object_new_object();
    if (!obj)
        return -ENOMEM;
    for (;;) {
        yaml_event_t ev;
        int r = next_event(c, p, &ev);
        if (r < 0)
            return r;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (ev.type == YAML_ALIAS_EVENT ||
            (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.anchor)) {
            yaml_event_delete(&ev);
            return fail_alias(c, path);
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&ev);
            return fail(c, path, "mapping keys must be plain strings");
        }
        _cleanup_free_ char *key =
            strndup((const char *)ev.data.scalar.value, ev.data.scalar.length);
        bool has_nul = strlen((const char *)ev.data.scalar.value) != ev.data.scalar.length;
        yaml_event_delete(&ev);
        if (!key)
            return -ENOMEM;
        if (has_nul)
            return fail(c, path, "a key contains a NUL character");
        char q[QUOTE_MAX_CHARS + 8];
        quote(q, sizeof(q), key, strlen(key));
        if (json_object_object_get_ex(obj, key, NULL))
            return fail(c, path, "duplicate key '%s'", q);

        r = next_event(c, p, &ev);
        if (r < 0)
            return r;
        size_t mark = path_push(path, "%s%s", *path ? "." : "", q);
        struct json_object *val = NULL;
        r = build_node(c, p, &ev, depth + 1, path, &val);
        path[mark] = '\0';
        if (r < 0)
            return r;
        if (json_object_object_add(obj, key, val) < 0) {
            json_object_put(val);
            return -ENOMEM;
        }
    }
    *ret = TAKE_PTR(obj);
    return 0;
}

/* Builds the node that starts with *ev (consumed). Depth is capped, so the recursion is bounded. */
static int build_node(struct ctx *c, yaml_parser_t *p, yaml_event_t *ev, unsigned depth, char *path,
                      struct json_object **ret)
{
    yaml_event_type_t type = ev->type;
    bool anchored = (type == YAML_SCALAR_EVENT && ev->data.scalar.anchor) ||
                    (type == YAML_SEQUENCE_START_EVENT && ev->data.sequence_start.anchor) ||
                    (type == YAML_MAPPING_START_EVENT && ev->data.mapping_start.anchor);
    if (type == YAML_ALIAS_EVENT || anchored) {
        yaml_event_delete(ev);
        return fail_alias(c, path);
    }
    if (type == YAML_SCALAR_EVENT) {
        struct json_object *v = NULL;
        int r = 0;
        if (!plain_null(ev)) {
            v = json_object_new_string_len((const char *)ev->data.scalar.value,
                                           (int)ev->data.scalar.length);
            if (!v)
                r = -ENOMEM;
        }
        yaml_event_delete(ev);
        if (r >= 0)
            *ret = v;
        return r;
    }
    yaml_event_delete(ev);
    if (type != YAML_SEQUENCE_START_EVENT && type != YAML_MAPPING_START_EVENT)
        return fail(c, path, "unexpected YAML event");
    if (depth >= MANIFEST_MAX_DEPTH)
        return fail(c, path, "nesting deeper than %d levels", MANIFEST_MAX_DEPTH);
    if (type == YAML_SEQUENCE_START_EVENT)
        return build_sequence(c, p, depth, path, ret);
    return build_mapping(c, p, depth, path, ret);
}

/* ---- objects ---- */

/* Returns the value of `name` (v1 spelling) or else `alt` (the seed's capitalised spelling, may be
 * NULL) in o, and the path of the key found in `path`. NULL if absent or null. */
static struct json_object *lookup(struct json_object *o, const char *prefix, const char *name,
                                  const char *alt, char *path, size_t n)
{
    struct json_object *v = NULL;
    path_join(path, n, prefix, name);
    if (json_object_object_get_ex(o, name, &v))
        return v;
    if (alt && json_object_object_get_ex(o, alt, &v)) {
        path_join(path, n, prefix, alt);
        return v;
    }
    return NULL;
}

/* *ret = a string value (borrowed from v: valid while the parsed tree is), NULL when v is absent.
 * Objects are made from borrowed strings in one copy (identity_new() and friends). */
static int want_string(struct ctx *c, const char *path, struct json_object *v, const char **ret)
{
    if (!v) {
        *ret = NULL;
        return 0;
    }
    if (!json_object_is_type(v, json_type_string))
        return fail_type(c, path, "a string", v);
    const char *s = json_object_get_string(v);
    if (strlen(s) != (size_t)json_object_get_string_len(v))
        return fail(c, path, "contains a NUL character");
    *ret = s;
    return 0;
}

/* *ret = a boolean value; absent or null leave it false. YAML scalars arrive as strings: the
 * spellings Kubernetes' own YAML reader takes (YAML 1.1: true/yes/on, false/no/off, in lower,
 * capitalised or upper case) are taken, as want_int() takes digits. */
static int want_bool(struct ctx *c, const char *path, struct json_object *v, bool *ret)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
                                      "YES",  "on",   "On",   "ON"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No",
                                     "NO",    "off",   "Off",   "OFF"};
    *ret = false;
    if (!v || json_object_is_type(v, json_type_null))
        return 0;
    if (json_object_is_type(v, json_type_boolean)) {
        *ret = json_object_get_boolean(v);
        return 0;
    }
    if (json_object_is_type(v, json_type_string))
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
            if (streq(json_object_get_string(v), yes[i])) {
                *ret = true;
                return 0;
            }
            if (streq(json_object_get_string(v), no[i]))
                return 0;
        }
    return fail_type(c, path, "true or false", v);
}

/* Like want_string, but absent is "" (or an error if required) and "" is refused when required. */
static int want_string_field(struct ctx *c, struct json_object *o, const char *prefix,
                             const char *name, const char *alt, bool required, const char **ret)
{
    char path[PATH_MAX_CHARS];
    struct json_object *v = lookup(o, prefix, name, alt, path, sizeof(path));
    const char *s = NULL;
    int r = want_string(c, path, v, &s);
    if (r < 0)
        return r;
    if (required && (!s || !*s))
        return fail(c, path, s ? "must not be empty" : "required");
    *ret = s ? s : "";
    return 0;
}

/* An integer, or a string holding one (YAML scalars are strings; `type: "0"` is common). */
static int want_int(struct ctx *c, const char *path, struct json_object *v, int64_t min,
                    int64_t max, int64_t *ret)
{
    int64_t x;
    if (json_object_is_type(v, json_type_int)) {
        x = json_object_get_int64(v); /* json-c clamps out-of-range values; the bounds catch them */
    } else if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        char *end;
        errno = 0;
        long long ll = strtoll(s, &end, 10);
        if (!*s || *end || errno != 0 || (size_t)(end - s) != (size_t)json_object_get_string_len(v))
            return fail_type(c, path, "an integer", v);
        x = ll;
    } else
        return fail_type(c, path, "an integer", v);
    if (x < min || x > max) {
        char q[QUOTE_MAX_CHARS + 8];
        quote_json(q, sizeof(q), v);
        return fail(c, path, "expected an integer from %" PRId64 " to %" PRId64 ", got '%s'", min,
                    max, q);
    }
    *ret = x;
    return 0;
}

/* A map of string to string (labels, annotations, podLabels); a null value is "". *ret (returns
 * new; free() it, not its strings) holds strings borrowed from v. */
static int want_map(struct ctx *c, const char *path, struct json_object *v, size_t max,
                    struct kv **ret, size_t *ret_n)
{
    if (!v) {
        *ret = NULL;
        *ret_n = 0;
        return 0;
    }
    if (!json_object_is_type(v, json_type_object))
        return fail_type(c, path, "a mapping", v);
    size_t n = (size_t)json_object_object_length(v);
    if (n > max)
        return fail(c, path, "more than %zu entries", max);
    struct kv *kv = calloc(n ? n : 1, sizeof(*kv));
    if (!kv)
        return -ENOMEM;
    size_t i = 0;
    int r = 0;
    json_object_object_foreach(v, key, val)
    {
        char sub[PATH_MAX_CHARS];
        path_join(sub, sizeof(sub), path, key);
        if (!*key) {
            r = fail(c, path, "empty key");
            break;
        }
        const char *value = NULL;
        r = want_string(c, sub, val, &value);
        if (r < 0)
            break;
        kv[i].key = key;
        kv[i].value = (char *)(value ? value : "");
        i++;
    }
    if (r < 0) {
        free(kv);
        return r;
    }
    *ret = kv;
    *ret_n = n;
    return 0;
}

/* RFC 1123 names as Kubernetes validates them: a label (namespaces) or a subdomain (object names).
 */
static bool dns_name_ok(const char *s, size_t max, bool dots)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (alnum)
            continue;
        if (i == 0 || i == n - 1)
            return false;
        if (ch != '-' && !(dots && ch == '.'))
            return false;
    }
    return true;
}

/* Strings borrowed from the parsed tree; the kv arrays are owned (not their strings). */
struct meta {
    const char *ns;
    const char *name;
    const char *uid;
    struct kv *annotations;
    size_t n_annotations;
    struct kv *labels;
    size_t n_labels;
};

static void meta_done(struct meta *m)
{
    free(m->annotations);
    free(m->labels);
    *m = (struct meta){0};
}

/* Reads metadata; labels and annotations only where the kind keeps them (others are not looked at,
 * so a Pod copied from a cluster with many annotations still loads). */
static int parse_meta(struct ctx *c, struct json_object *o, const char *prefix, bool labels,
                      bool annotations, struct meta *m)
{
    char path[PATH_MAX_CHARS];
    struct json_object *md = lookup(o, prefix, "metadata", NULL, path, sizeof(path));
    if (!md)
        return fail(c, path, "required");
    if (!json_object_is_type(md, json_type_object))
        return fail_type(c, path, "a mapping", md);
    char mprefix[PATH_MAX_CHARS];
    snprintf(mprefix, sizeof(mprefix), "%s", path);

    int r = want_string_field(c, md, mprefix, "name", NULL, true, &m->name);
    if (r < 0)
        return r;
    path_join(path, sizeof(path), mprefix, "name");
    if (!dns_name_ok(m->name, 253, true)) {
        char q[QUOTE_MAX_CHARS + 8];
        quote(q, sizeof(q), m->name, strlen(m->name));
        return fail(c, path, "expected a lower-case DNS name, got '%s'", q);
    }
    r = want_string_field(c, md, mprefix, "namespace", NULL, false, &m->ns);
    if (r < 0)
        return r;
    if (!*m->ns)
        m->ns = "default";
    path_join(path, sizeof(path), mprefix, "namespace");
    if (!dns_name_ok(m->ns, 63, false)) {
        char q[QUOTE_MAX_CHARS + 8];
        quote(q, sizeof(q), m->ns, strlen(m->ns));
        return fail(c, path, "expected a lower-case DNS label, got '%s'", q);
    }
    r = want_string(c, path, lookup(md, mprefix, "uid", NULL, path, sizeof(path)), &m->uid);
    if (r < 0)
        return r;
    if (annotations) {
        struct json_object *v = lookup(md, mprefix, "annotations", NULL, path, sizeof(path));
        r = want_map(c, path, v, MANIFEST_MAX_LABELS, &m->annotations, &m->n_annotations);
        if (r < 0)
            return r;
        /* kubectl apply's copy of the whole object: kilobytes per identity that no provider has a
         * use for, kept in memory and hashed for every object otherwise. */
        size_t k = 0;
        for (size_t i = 0; i < m->n_annotations; i++)
            if (!streq(m->annotations[i].key, ANNOTATION_LAST_APPLIED))
                m->annotations[k++] = m->annotations[i];
        m->n_annotations = k;
    }
    if (labels) {
        struct json_object *v = lookup(md, mprefix, "labels", NULL, path, sizeof(path));
        r = want_map(c, path, v, MANIFEST_MAX_LABELS, &m->labels, &m->n_labels);
    }
    return r;
}

static char *origin_new(const struct ctx *c)
{
    char *o;
    if (c->doc == 0)
        return strdup(c->origin);
    if (asprintf(&o, "%s#%u", c->origin, c->doc) < 0)
        return NULL;
    return o;
}

/* Returns the spec mapping (required or not); *ret NULL when absent and optional. */
static int get_spec(struct ctx *c, struct json_object *o, const char *prefix, bool required,
                    struct json_object **ret, char *path, size_t n)
{
    struct json_object *spec = lookup(o, prefix, "spec", NULL, path, n);
    if (!spec) {
        if (required)
            return fail(c, path, "required");
        *ret = NULL;
        return 0;
    }
    if (!json_object_is_type(spec, json_type_object))
        return fail_type(c, path, "a mapping", spec);
    *ret = spec;
    return 0;
}

static int fail_duplicate(struct ctx *c, const char *kind, const char *ns, const char *name,
                          const char *where)
{
    if (where)
        return fail(c, NULL, "%s %s/%s is defined twice (first in %s)", kind, ns, name, where);
    return fail(c, NULL, "%s %s/%s is defined twice", kind, ns, name);
}

static int parse_identity(struct ctx *c, struct json_object *o, const char *prefix, struct meta *m)
{
    int r;
    char sp[PATH_MAX_CHARS], path[PATH_MAX_CHARS];
    struct json_object *spec = NULL;
    r = get_spec(c, o, prefix, true, &spec, sp, sizeof(sp));
    if (r < 0)
        return r;

    /* Borrowed strings; identity_new() copies them into one allocation. */
    const char *resource_id = NULL, *client_id = NULL, *tenant_id = NULL, *ad_endpoint = NULL,
               *ad_resource_id = NULL, *secret_name = "", *secret_namespace = "";
    struct json_object *v = lookup(spec, sp, "type", "Type", path, sizeof(path));
    int64_t type = 0;
    if (!v)
        r = fail(c, path, "required");
    else
        r = want_int(c, path, v, 0, 2, &type);
    if (r >= 0)
        r = want_string_field(c, spec, sp, "resourceID", "ResourceID", false, &resource_id);
    if (r >= 0)
        r = want_string_field(c, spec, sp, "clientID", "ClientID", false, &client_id);
    if (r >= 0)
        r = want_string_field(c, spec, sp, "tenantID", "TenantID", false, &tenant_id);
    if (r >= 0)
        r = want_string_field(c, spec, sp, "adEndpoint", "ADEndpoint", false, &ad_endpoint);
    if (r >= 0)
        r = want_string_field(c, spec, sp, "adResourceID", "ADResourceID", false, &ad_resource_id);
    struct json_object *cp = NULL;
    if (r >= 0) {
        cp = lookup(spec, sp, "clientPassword", "ClientPassword", path, sizeof(path));
        if (cp && !json_object_is_type(cp, json_type_object))
            r = fail_type(c, path, "a mapping", cp);
    }
    if (r >= 0 && cp) {
        char cpp[PATH_MAX_CHARS];
        snprintf(cpp, sizeof(cpp), "%s", path);
        r = want_string_field(c, cp, cpp, "name", "Name", false, &secret_name);
        if (r >= 0)
            r = want_string_field(c, cp, cpp, "namespace", "Namespace", false, &secret_namespace);
    }
    if (r < 0)
        return r;
    _cleanup_free_ char *origin = origin_new(c);
    if (!origin)
        return -ENOMEM;
    struct identity *i = identity_new(&(struct identity){
        .namespace = (char *)m->ns,
        .name = (char *)m->name,
        .uid = (char *)m->uid,
        .type = (int)type,
        .resource_id = (char *)resource_id,
        .client_id = (char *)client_id,
        .tenant_id = (char *)tenant_id,
        .ad_endpoint = (char *)ad_endpoint,
        .ad_resource_id = (char *)ad_resource_id,
        .secret_name = (char *)secret_name,
        .secret_namespace = (char *)secret_namespace,
        .annotations = m->annotations,
        .n_annotations = m->n_annotations,
        .origin = origin,
    });
    if (!i)
        return -ENOMEM;
    if (c->out) {
        c->out->identity = i;
        return 0;
    }
    const struct identity *old = store_get_identity(c->s, i->namespace, i->name);
    if (old)
        r = fail_duplicate(c, "AzureIdentity", i->namespace, i->name, old->origin);
    if (r >= 0)
        r = store_put_identity(c->s, i);
    if (r < 0)
        identity_free(i);
    return r;
}

static int parse_binding(struct ctx *c, struct json_object *o, const char *prefix, struct meta *m)
{
    int r;
    char sp[PATH_MAX_CHARS], path[PATH_MAX_CHARS];
    struct json_object *spec = NULL;
    r = get_spec(c, o, prefix, true, &spec, sp, sizeof(sp));
    if (r < 0)
        return r;

    const char *identity = NULL, *selector = NULL;
    int64_t weight = 0;
    r = want_string_field(c, spec, sp, "azureIdentity", "AzureIdentity", true, &identity);
    if (r >= 0)
        r = want_string_field(c, spec, sp, "selector", "Selector", true, &selector);
    if (r >= 0) {
        struct json_object *v = lookup(spec, sp, "weight", "Weight", path, sizeof(path));
        if (v)
            r = want_int(c, path, v, INT32_MIN, INT32_MAX, &weight);
    }
    if (r < 0)
        return r;
    _cleanup_free_ char *origin = origin_new(c);
    if (!origin)
        return -ENOMEM;
    struct binding *b = binding_new(&(struct binding){
        .namespace = (char *)m->ns,
        .name = (char *)m->name,
        .identity = (char *)identity,
        .selector = (char *)selector,
        .weight = weight,
        .origin = origin,
    });
    if (!b)
        return -ENOMEM;
    if (c->out) {
        c->out->binding = b;
        return 0;
    }
    size_t before = store_count_bindings(c->s);
    r = store_put_binding(c->s, b);
    if (r < 0) {
        binding_free(b);
        return r;
    }
    /* Put replaced an earlier definition; the store owns b now, so only its key is read. */
    if (store_count_bindings(c->s) == before)
        return fail_duplicate(c, "AzureIdentityBinding", b->namespace, b->name, NULL);
    return 0;
}

static int parse_exception(struct ctx *c, struct json_object *o, const char *prefix, struct meta *m)
{
    int r;
    char sp[PATH_MAX_CHARS], path[PATH_MAX_CHARS];
    struct json_object *spec = NULL;
    r = get_spec(c, o, prefix, false, &spec, sp, sizeof(sp));
    if (r < 0)
        return r;

    _cleanup_free_ struct kv *labels = NULL;
    size_t n_labels = 0;
    if (spec) {
        struct json_object *v = lookup(spec, sp, "podLabels", "PodLabels", path, sizeof(path));
        r = want_map(c, path, v, MANIFEST_MAX_LABELS, &labels, &n_labels);
        if (r < 0)
            return r;
    }
    _cleanup_free_ char *origin = origin_new(c);
    if (!origin)
        return -ENOMEM;
    struct pod_exception *e = pod_exception_new(&(struct pod_exception){
        .namespace = (char *)m->ns,
        .name = (char *)m->name,
        .pod_labels = labels,
        .n_pod_labels = n_labels,
        .origin = origin,
    });
    if (!e)
        return -ENOMEM;
    if (c->out) {
        c->out->exception = e;
        return 0;
    }
    size_t before = store_count_exceptions(c->s);
    r = store_put_exception(c->s, e);
    if (r < 0) {
        pod_exception_free(e);
        return r;
    }
    if (store_count_exceptions(c->s) == before)
        return fail_duplicate(c, "AzurePodIdentityException", e->namespace, e->name, NULL);
    return 0;
}

/* status.podIPs[].ip, else status.podIP: the addresses the cluster gave the pod, for the
 * registration cross-check (THREATS T2). Absent status means no IPs. The addresses are borrowed
 * from the tree into ips[MANIFEST_MAX_POD_IPS]. */
static int parse_pod_ips(struct ctx *c, struct json_object *o, const char *prefix, char **ips,
                         size_t *ret_n)
{
    char path[PATH_MAX_CHARS], st[PATH_MAX_CHARS];
    struct json_object *status = lookup(o, prefix, "status", NULL, st, sizeof(st));
    *ret_n = 0;
    if (!status)
        return 0;
    if (!json_object_is_type(status, json_type_object))
        return fail_type(c, st, "a mapping", status);
    size_t n_ips = 0;
    struct json_object *arr = lookup(status, st, "podIPs", NULL, path, sizeof(path));
    if (arr) {
        if (!json_object_is_type(arr, json_type_array))
            return fail_type(c, path, "a list", arr);
        size_t n = json_object_array_length(arr);
        if (n > MANIFEST_MAX_POD_IPS)
            return fail(c, path, "more than %d addresses", MANIFEST_MAX_POD_IPS);
        for (size_t i = 0; i < n; i++) {
            struct json_object *e = json_object_array_get_idx(arr, i);
            char sub[PATH_MAX_CHARS];
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            if (!json_object_is_type(e, json_type_object))
                return fail_type(c, sub, "a mapping", e);
            char ipath[PATH_MAX_CHARS];
            const char *ip = NULL;
            int r = want_string(c, ipath, lookup(e, sub, "ip", NULL, ipath, sizeof(ipath)), &ip);
            if (r < 0)
                return r;
            if (ip)
                ips[n_ips++] = (char *)ip;
        }
        if (n_ips > 0) {
            *ret_n = n_ips;
            return 0;
        }
    }
    const char *ip = NULL;
    int r = want_string(c, path, lookup(status, st, "podIP", NULL, path, sizeof(path)), &ip);
    if (r < 0 || !ip || !*ip)
        return r;
    ips[0] = (char *)ip;
    *ret_n = 1;
    return 0;
}

static int parse_pod(struct ctx *c, struct json_object *o, const char *prefix, struct meta *m)
{
    int r;
    char sp[PATH_MAX_CHARS], path[PATH_MAX_CHARS];
    struct json_object *spec = NULL;
    r = get_spec(c, o, prefix, false, &spec, sp, sizeof(sp));
    if (r < 0)
        return r;

    const char *node = NULL, *phase = NULL;
    char *ips[MANIFEST_MAX_POD_IPS];
    size_t n_ips = 0;
    bool host_network = false;
    if (spec)
        r = want_string(c, path, lookup(spec, sp, "nodeName", NULL, path, sizeof(path)), &node);
    if (r >= 0 && spec)
        r = want_bool(c, path, lookup(spec, sp, "hostNetwork", NULL, path, sizeof(path)),
                      &host_network);
    if (r >= 0)
        r = parse_pod_ips(c, o, prefix, ips, &n_ips);
    if (r >= 0) {
        /* parse_pod_ips() checked that a status is a mapping. */
        char st[PATH_MAX_CHARS];
        struct json_object *status = lookup(o, prefix, "status", NULL, st, sizeof(st));
        if (status)
            r = want_string(c, path, lookup(status, st, "phase", NULL, path, sizeof(path)), &phase);
    }
    if (r < 0)
        return r;
    char md[PATH_MAX_CHARS];
    struct json_object *meta = lookup(o, prefix, "metadata", NULL, md, sizeof(md)),
                       *deletion = NULL;
    if (meta)
        deletion = lookup(meta, md, "deletionTimestamp", NULL, path, sizeof(path));
    _cleanup_free_ char *origin = origin_new(c);
    if (!origin)
        return -ENOMEM;
    struct pod_meta *p = pod_meta_new(&(struct pod_meta){
        .namespace = (char *)m->ns,
        .name = (char *)m->name,
        .uid = (char *)m->uid,
        .node = (char *)node,
        .labels = m->labels,
        .n_labels = m->n_labels,
        .ips = n_ips ? ips : NULL,
        .n_ips = n_ips,
        .origin = origin,
        .host_network = host_network,
        .running = phase && streq(phase, "Running"),
        .terminating = deletion && !json_object_is_type(deletion, json_type_null),
    });
    if (!p)
        return -ENOMEM;
    if (c->out) {
        c->out->pod = p;
        return 0;
    }
    const struct pod_meta *old = store_get_pod(c->s, p->namespace, p->name);
    if (old)
        r = fail_duplicate(c, "Pod", p->namespace, p->name, old->origin);
    if (r >= 0)
        r = store_put_pod(c->s, p);
    if (r < 0)
        pod_meta_free(p);
    return r;
}

static const struct {
    const char *kind;
    const char *api_version;
    bool labels;      /* metadata.labels are kept */
    bool annotations; /* metadata.annotations are kept */
    int (*parse)(struct ctx *c, struct json_object *o, const char *prefix, struct meta *m);
} kinds[] = {
    {"AzureIdentity", API_VERSION_CRD, false, true, parse_identity},
    {"AzureIdentityBinding", API_VERSION_CRD, false, false, parse_binding},
    {"AzurePodIdentityException", API_VERSION_CRD, false, false, parse_exception},
    {"Pod", API_VERSION_CORE, true, false, parse_pod},
};

static int parse_object(struct ctx *c, struct json_object *o, const char *prefix, bool in_list)
{
    char path[PATH_MAX_CHARS];
    if (!json_object_is_type(o, json_type_object))
        return fail_type(c, prefix, "a mapping", o);
    if (++c->objects > MANIFEST_MAX_DOCS)
        return fail(c, NULL, "more than %d objects", MANIFEST_MAX_DOCS);

    const char *kind = NULL, *api = NULL;
    int r = want_string_field(c, o, prefix, "kind", NULL, true, &kind);
    if (r < 0)
        return r;
    r = want_string_field(c, o, prefix, "apiVersion", NULL, false, &api);
    if (r < 0)
        return r;

    if (streq(kind, "List")) {
        if (in_list)
            return fail(c, prefix, "a List inside a List is not supported");
        struct json_object *items = lookup(o, prefix, "items", NULL, path, sizeof(path));
        if (!items)
            return 0;
        if (!json_object_is_type(items, json_type_array))
            return fail_type(c, path, "a list", items);
        size_t n = json_object_array_length(items);
        for (size_t i = 0; i < n; i++) {
            char sub[PATH_MAX_CHARS];
            /* Truncation of absurdly long paths only shortens the message. */
            if (snprintf(sub, sizeof(sub), "%s[%zu]", path, i) < 0)
                return -EINVAL;
            r = parse_object(c, json_object_array_get_idx(items, i), sub, true);
            if (r < 0)
                return r;
        }
        return 0;
    }

    for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
        if (!streq(kind, kinds[k].kind))
            continue;
        path_join(path, sizeof(path), prefix, "apiVersion");
        if (!*api)
            return fail(c, path, "required");
        if (!streq(api, kinds[k].api_version)) {
            char q[QUOTE_MAX_CHARS + 8];
            quote(q, sizeof(q), api, strlen(api));
            return fail(c, path, "expected '%s' for kind %s, got '%s'", kinds[k].api_version,
                        kinds[k].kind, q);
        }
        /* m borrows from o; the parsers copy what they keep. */
        struct meta m = {0};
        r = parse_meta(c, o, prefix, kinds[k].labels, kinds[k].annotations, &m);
        if (r >= 0)
            r = kinds[k].parse(c, o, prefix, &m);
        meta_done(&m);
        return r;
    }
    return 0; /* another kind: not ours, skipped */
}

static int parse_document(struct ctx *c, struct json_object *root)
{
    if (!root)
        return 0; /* an empty document, e.g. after a trailing "---" */
    return parse_object(c, root, "", false);
}

static int parse_yaml(struct ctx *c, const char *text, size_t len)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return -ENOMEM;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);

    int r = 0;
    bool done = false;
    while (r >= 0 && !done) {
        yaml_event_t ev;
        r = next_event(c, &p, &ev);
        if (r < 0)
            break;
        yaml_event_type_t type = ev.type;
        yaml_event_delete(&ev);
        switch (type) {
        case YAML_STREAM_START_EVENT:
            break;
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT: {
            c->doc++;
            if (c->doc > MANIFEST_MAX_DOCS) {
                r = fail(c, NULL, "more than %d documents", MANIFEST_MAX_DOCS);
                break;
            }
            r = next_event(c, &p, &ev);
            if (r < 0)
                break;
            char path[PATH_MAX_CHARS] = "";
            _cleanup_json_ struct json_object *root = NULL;
            r = build_node(c, &p, &ev, 0, path, &root);
            if (r < 0)
                break;
            r = next_event(c, &p, &ev);
            if (r < 0)
                break;
            bool end = ev.type == YAML_DOCUMENT_END_EVENT;
            yaml_event_delete(&ev);
            if (!end) {
                r = fail(c, NULL, "unexpected YAML event after the document");
                break;
            }
            r = parse_document(c, root);
            break;
        }
        default:
            r = fail(c, NULL, "unexpected YAML event");
            break;
        }
    }
    yaml_parser_delete(&p);
    return r;
}

static int parse_json(struct ctx *c, const char *text, size_t len)
{
    struct json_tokener *tok = json_tokener_new_ex(MANIFEST_MAX_DEPTH);
    if (!tok)
        return -ENOMEM;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
                                    JSON_TOKENER_VALIDATE_UTF8);
    int r = 0;
    size_t off = 0;
    for (;;) {
        while (off < len && text[off] && strchr(" \t\r\n", text[off]))
            off++;
        if (off >= len)
            break;
        c->doc++;
        if (c->doc > MANIFEST_MAX_DOCS) {
            r = fail(c, NULL, "more than %d documents", MANIFEST_MAX_DOCS);
            break;
        }
        json_tokener_reset(tok);
        size_t chunk = len - off > INT32_MAX ? INT32_MAX : len - off;
        _cleanup_json_ struct json_object *root =
            json_tokener_parse_ex(tok, text + off, (int)chunk);
        enum json_tokener_error err = json_tokener_get_error(tok);
        if (err == json_tokener_continue) {
            r = fail(c, NULL, "JSON error: unexpected end of input");
            break;
        }
        if (err != json_tokener_success) {
            size_t at = off + json_tokener_get_parse_end(tok);
            if (err == json_tokener_error_depth)
                r = fail(c, NULL, "nesting deeper than %d levels", MANIFEST_MAX_DEPTH);
            else
                r = fail(c, NULL, "JSON error at byte %zu: %s", at, json_tokener_error_desc(err));
            break;
        }
        off += json_tokener_get_parse_end(tok);
        r = parse_document(c, root);
        if (r < 0)
            break;
    }
    json_tokener_free(tok);
    return r;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && streq(s + n - m, suffix);
}

int manifest_parse(const char *text, size_t len, const char *origin, struct store *s,
                   char **ret_error)
{
    if ((!text && len > 0) || !s)
        return -EINVAL;
    struct ctx c = {.origin = origin ? origin : "<input>", .s = s};
    int r;
    if (len > MANIFEST_MAX_FILE_BYTES)
        r = fail(&c, NULL, "file is larger than %d bytes", MANIFEST_MAX_FILE_BYTES);
    else if (has_suffix(c.origin, ".json"))
        r = parse_json(&c, text ? text : "", len);
    else
        r = parse_yaml(&c, text ? text : "", len);
    if (r < 0 && r != -ENOMEM && !c.error)
        r = fail(&c, NULL, "invalid manifest");
    if (r < 0 && ret_error && c.error)
        *ret_error = TAKE_PTR(c.error);
    free(c.error);
    return r;
}

void manifest_object_done(struct manifest_object *o)
{
    if (!o)
        return;
    identity_free(o->identity);
    binding_free(o->binding);
    pod_exception_free(o->exception);
    pod_meta_free(o->pod);
    *o = (struct manifest_object){0};
}

int manifest_object_from_json(struct json_object *o, enum manifest_kind kind, const char *origin,
                              struct manifest_object *ret, char **ret_error)
{
    static const char *const names[] = {
        [MANIFEST_IDENTITY] = "AzureIdentity",
        [MANIFEST_BINDING] = "AzureIdentityBinding",
        [MANIFEST_EXCEPTION] = "AzurePodIdentityException",
        [MANIFEST_POD] = "Pod",
    };
    if (!o || !ret || kind < MANIFEST_IDENTITY || kind > MANIFEST_POD)
        return -EINVAL;
    struct manifest_object out = {.kind = kind};
    struct ctx c = {.origin = origin ? origin : "<object>", .out = &out};
    int r;
    if (!json_object_is_type(o, json_type_object))
        r = fail_type(&c, NULL, "a mapping", o);
    else {
        size_t k = 0;
        while (k < ELEMENTSOF(kinds) && !streq(kinds[k].kind, names[kind]))
            k++;
        struct meta m = {0};
        r = parse_meta(&c, o, "", kinds[k].labels, kinds[k].annotations, &m);
        if (r >= 0)
            r = kinds[k].parse(&c, o, "", &m);
        meta_done(&m);
    }
    if (r < 0) {
        manifest_object_done(&out);
        if (r != -ENOMEM && !c.error)
            r = fail(&c, NULL, "invalid object");
        if (ret_error && c.error)
            *ret_error = TAKE_PTR(c.error);
        free(c.error);
        return r;
    }
    free(c.error);
    *ret = out;
    return 0;
}

int manifest_yaml_to_json(const char *text, size_t len, const char *origin,
                          struct json_object **ret, char **ret_error)
{
    if ((!text && len > 0) || !ret)
        return -EINVAL;
    struct ctx c = {.origin = origin ? origin : "<input>"};
    _cleanup_json_ struct json_object *root = NULL;
    int r = 0;
    if (len > MANIFEST_MAX_FILE_BYTES)
        r = fail(&c, NULL, "file is larger than %d bytes", MANIFEST_MAX_FILE_BYTES);
    yaml_parser_t p;
    bool init = false;
    if (r >= 0) {
        if (!yaml_parser_initialize(&p))
            r = -ENOMEM;
        else {
            init = true;
            yaml_parser_set_input_string(&p, (const unsigned char *)(text ? text : ""), len);
        }
    }
    /* Stream start, then the first document's start and root node; the rest is not read. */
    yaml_event_t ev;
    if (r >= 0)
        r = next_event(&c, &p, &ev);
    if (r >= 0) {
        yaml_event_delete(&ev);
        r = next_event(&c, &p, &ev);
    }
    if (r >= 0) {
        bool doc = ev.type == YAML_DOCUMENT_START_EVENT;
        yaml_event_delete(&ev);
        if (doc) {
            c.doc = 1;
            r = next_event(&c, &p, &ev);
            char path[PATH_MAX_CHARS] = "";
            if (r >= 0)
                r = build_node(&c, &p, &ev, 0, path, &root);
        }
    }
    if (init)
        yaml_parser_delete(&p);
    if (r >= 0 && !json_object_is_type(root, json_type_object))
        r = fail(&c, NULL, "expected a mapping at the top");
    if (r < 0) {
        if (r != -ENOMEM && !c.error)
            r = fail(&c, NULL, "invalid YAML");
        if (ret_error && c.error)
            *ret_error = TAKE_PTR(c.error);
        free(c.error);
        return r;
    }
    *ret = TAKE_PTR(root);
    return 0;
}

/* ---- the files source ---- */

static bool relevant(const char *name)
{
    return name[0] != '.' &&
           (has_suffix(name, ".yaml") || has_suffix(name, ".yml") || has_suffix(name, ".json"));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Returns new: the sorted names of the relevant entries of dir. */
static int list_dir(const char *dir, char ***ret, size_t *ret_n)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int r = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            r = -errno;
            break;
        }
        if (!relevant(de->d_name))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **nn = realloc(names, ncap * sizeof(*nn));
            if (!nn) {
                r = -ENOMEM;
                break;
            }
            names = nn;
            cap = ncap;
        }
        names[n] = strdup(de->d_name);
        if (!names[n]) {
            r = -ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (r < 0) {
        names_free(names, n);
        return r;
    }
    if (n > 1)
        qsort(names, n, sizeof(*names), cmp_str);
    *ret = names;
    *ret_n = n;
    return 0;
}

/* Reads a regular file of at most MANIFEST_MAX_FILE_BYTES. Returns -ENOENT for a vanished file,
 * -EISDIR (or another code) for one that is not a regular file, -EFBIG when it is too large. */
static int read_file(int dfd, const char *name, char **ret, size_t *ret_len)
{
    _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EISDIR;
    if (st.st_size > MANIFEST_MAX_FILE_BYTES)
        return -EFBIG;
    /* Room for one byte more than the file has, to notice a file that grew after fstat. */
    size_t cap = (size_t)st.st_size + 1;
    _cleanup_free_ char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    size_t len = 0;
    for (;;) {
        if (len == cap) {
            if (cap > MANIFEST_MAX_FILE_BYTES)
                return -EFBIG;
            size_t ncap = cap * 2 > (size_t)MANIFEST_MAX_FILE_BYTES + 1
                              ? (size_t)MANIFEST_MAX_FILE_BYTES + 1
                              : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb)
                return -ENOMEM;
            buf = nb;
            cap = ncap;
        }
        ssize_t k = read(fd, buf + len, cap - len);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            break;
        len += (size_t)k;
    }
    if (len > MANIFEST_MAX_FILE_BYTES)
        return -EFBIG;
    *ret = TAKE_PTR(buf);
    *ret_len = len;
    return 0;
}

static int set_error(char **ret_error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int set_error(char **ret_error, const char *fmt, ...)
{
    if (!ret_error)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    int k = vasprintf(ret_error, fmt, ap);
    va_end(ap);
    if (k < 0) {
        *ret_error = NULL;
        return -ENOMEM;
    }
    return 0;
}

int source_files_load(const char *dir, struct store **ret, char **ret_error)
{
    if (!dir || !ret)
        return -EINVAL;
    char **names = NULL;
    size_t n = 0;
    int r = list_dir(dir, &names, &n);
    if (r < 0) {
        set_error(ret_error, "%s: cannot read the directory: %s", dir, strerror(-r));
        return r;
    }
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct store *s = store_new();
    if (dfd < 0) {
        r = -errno;
        set_error(ret_error, "%s: cannot open the directory: %s", dir, strerror(-r));
    } else if (!s)
        r = -ENOMEM;
    for (size_t i = 0; r >= 0 && i < n; i++) {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        r = read_file(dfd, names[i], &text, &len);
        if (r == -ENOENT || r == -EISDIR) {
            r = 0; /* vanished since readdir, or a directory named *.yaml: not a manifest */
            continue;
        }
        if (r == -EFBIG) {
            r = IDB_E_BAD_MANIFEST;
            set_error(ret_error, "%s: file is larger than %d bytes", names[i],
                      MANIFEST_MAX_FILE_BYTES);
            break;
        }
        if (r < 0) {
            set_error(ret_error, "%s: cannot read: %s", names[i], strerror(-r));
            break;
        }
        r = manifest_parse(text, len, names[i], s, ret_error);
    }
    names_free(names, n);
    if (r < 0) {
        store_free(s);
        return r;
    }
    *ret = s;
    return 0;
}

int source_files_fingerprint(const char *dir, uint64_t *ret)
{
    if (!dir || !ret)
        return -EINVAL;
    char **names = NULL;
    size_t n = 0;
    int r = list_dir(dir, &names, &n);
    if (r < 0)
        return r;
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        r = -errno;
        names_free(names, n);
        return r;
    }
    /* FNV-1a over (name, size, mtime, inode) of every relevant file, in name order. stat follows
     * symlinks, so a ConfigMap's "..data" swap changes the inode even when sizes and times agree.
     */
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        uint64_t fields[6] = {0};
        if (fstatat(dfd, names[i], &st, 0) == 0) {
            fields[0] = (uint64_t)st.st_size;
            fields[1] = (uint64_t)st.st_mtim.tv_sec;
            fields[2] = (uint64_t)st.st_mtim.tv_nsec;
            fields[3] = (uint64_t)st.st_ino;
            fields[4] = (uint64_t)st.st_dev;
            fields[5] = (uint64_t)st.st_mode;
        }
        const unsigned char *b = (const unsigned char *)names[i];
        for (size_t k = 0; k <= strlen(names[i]); k++) {
            h ^= b[k];
            h *= UINT64_C(0x100000001b3);
        }
        b = (const unsigned char *)fields;
        for (size_t k = 0; k < sizeof(fields); k++) {
            h ^= b[k];
            h *= UINT64_C(0x100000001b3);
        }
    }
    names_free(names, n);
    *ret = h;
    return 0;
}
