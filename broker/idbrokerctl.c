/* SPDX-License-Identifier: Apache-2.0 */
/*
 * idbrokerctl: the operator CLI over idbrokerd's control socket (DESIGN §1.4, §9;
 * include/idbroker/ctl-proto.h). Links only idb_common and json-c.
 *
 * Exit status: 0 success, 1 failure (the broker said no, or cannot be reached), 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <idbroker/ctl-proto.h>
#include <idbroker/errno.h>

#include <idbroker-internal/ctl-client.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/registration.h>

#define PROG "idbrokerctl"
#define EXIT_USAGE 2
#define DEFAULT_TIMEOUT_S 30
#define MAX_POSITIONAL 4

struct ctl {
    const char *socket;
    bool json;
    int timeout_ms;
};

/* Options a command may take; each command lists the ones it accepts in `opts`. */
enum {
    OPT_HELP = 'h',
    OPT_OUTPUT = 'o',
    OPT_SOCKET = 's',
    OPT_TIMEOUT = 0x100,
    OPT_RESOURCE,
    OPT_CLIENT_ID,
    OPT_OBJECT_ID,
    OPT_RESOURCE_ID,
    OPT_BYPASS_CACHE,
    OPT_IP,
    OPT_UID,
    OPT_CONTAINER_ID,
    OPT_IF_NAME,
    OPT_HOST_INTERFACE,
    OPT_VERSION,
};

/* --help, --output, --socket and --timeout are accepted by every command; F() is for the others. */
#define F(opt) (1u << ((opt)-OPT_TIMEOUT))

struct args {
    const char *pos[MAX_POSITIONAL];
    size_t n_pos;
    const char *resource, *client_id, *object_id, *resource_id;
    bool bypass_cache;
    const char *ips[REG_MAX_IPS];
    size_t n_ips;
    const char *uid, *container_id, *if_name, *host_interface;
};

struct command {
    const char *name;
    int (*fn)(struct ctl *c, const struct args *a);
    unsigned opts; /* F(OPT_...) bits beyond the global ones */
    size_t min_pos, max_pos;
    const char *synopsis; /* after "idbrokerctl NAME" */
    const char *summary;
    const char *details; /* option help, may be NULL */
};

static const struct command *find_command(const char *name);

/* ---- output helpers ---- */

static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cmd)
        fprintf(stderr, "\nTry '" PROG " %s --help'.\n", cmd);
    else
        fputs("\nTry '" PROG " --help'.\n", stderr);
    return EXIT_USAGE;
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAILURE;
}

static void print_json(struct json_object *o, bool pretty)
{
    int flags =
        JSON_C_TO_STRING_NOSLASHESCAPE |
        (pretty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED : JSON_C_TO_STRING_PLAIN);
    puts(json_object_to_json_string_ext(o, flags));
}

/* A JSON value as one line of text: strings bare, null as "<none>", containers as compact JSON.
 * Returns new. */
static char *value_str(struct json_object *v)
{
    if (!v)
        return strdup("<none>");
    switch (json_object_get_type(v)) {
    case json_type_string:
        return strdup(json_object_get_string(v));
    case json_type_boolean:
        return strdup(json_object_get_boolean(v) ? "yes" : "no");
    default:
        return strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE));
    }
}

/* o.key.key2... (NULL-terminated path); NULL if any step is missing. */
static struct json_object *get_path(struct json_object *o, ...)
{
    va_list ap;
    va_start(ap, o);
    for (const char *k = va_arg(ap, const char *); k && o; k = va_arg(ap, const char *)) {
        struct json_object *next = NULL;
        if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, k, &next))
            next = NULL;
        o = next;
    }
    va_end(ap);
    return o;
}

/* Like value_str() but "" and null both print as "<none>". */
static char *cell(struct json_object *v)
{
    if (!v || (json_object_is_type(v, json_type_string) && !json_object_get_string_len(v)))
        return strdup("<none>");
    return value_str(v);
}

/* {"k":"v",...} -> "k=v,k2=v2" (sep between pairs); "<none>" when empty. Returns new. */
static char *labels_str(struct json_object *o, const char *sep)
{
    if (!o || !json_object_is_type(o, json_type_object) || json_object_object_length(o) == 0)
        return cell(o);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    bool first = true;
    json_object_object_foreach(o, k, v)
    {
        _cleanup_free_ char *s = value_str(v);
        fprintf(f, "%s%s=%s", first ? "" : sep, k, strna(s));
        first = false;
    }
    fclose(f);
    return out;
}

/* ["a","b"] -> "a,b". Returns new. */
static char *join_array(struct json_object *a, const char *sep)
{
    if (!a || !json_object_is_type(a, json_type_array))
        return cell(a);
    if (json_object_array_length(a) == 0)
        return strdup("<none>");
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        _cleanup_free_ char *s = value_str(json_object_array_get_idx(a, i));
        fprintf(f, "%s%s", i ? sep : "", strna(s));
    }
    fclose(f);
    return out;
}

/* kubectl's age format (k8s.io/apimachinery duration.HumanDuration). */
static void age_str(int64_t seconds, char *buf, size_t size)
{
    if (seconds < 0)
        seconds = 0;
    int64_t m = seconds / 60, h = seconds / 3600, d = h / 24, y = d / 365;
    if (seconds < 120)
        snprintf(buf, size, "%llds", (long long)seconds);
    else if (m < 10)
        snprintf(buf, size, "%lldm%llds", (long long)m, (long long)(seconds % 60));
    else if (m < 180)
        snprintf(buf, size, "%lldm", (long long)m);
    else if (h < 8)
        snprintf(buf, size, "%lldh%lldm", (long long)h, (long long)(m % 60));
    else if (h < 48)
        snprintf(buf, size, "%lldh", (long long)h);
    else if (h < 192)
        snprintf(buf, size, "%lldd%lldh", (long long)d, (long long)(h % 24));
    else if (y < 2)
        snprintf(buf, size, "%lldd", (long long)d);
    else if (y < 8)
        snprintf(buf, size, "%lldy%lldd", (long long)y, (long long)(d % 365));
    else
        snprintf(buf, size, "%lldy", (long long)y);
}

/* An epoch-seconds value as "age ago"; other values as they are. Returns new. */
static char *when_str(struct json_object *v)
{
    if (!v || !json_object_is_type(v, json_type_int))
        return cell(v);
    int64_t t = json_object_get_int64(v);
    if (t <= 0)
        return strdup("never");
    char age[32], stamp[32];
    time_t tt = (time_t)t;
    struct tm tm;
    age_str((int64_t)time(NULL) - t, age, sizeof(age));
    if (!gmtime_r(&tt, &tm) || !strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(stamp, sizeof(stamp), "%lld", (long long)t);
    char *s = NULL;
    if (asprintf(&s, "%s (%s ago)", stamp, age) < 0)
        return NULL;
    return s;
}

/* ---- aligned tables, as kubectl prints them ---- */

struct table {
    size_t n_cols, n_rows, alloc;
    char **cells; /* row-major; row 0 is the header */
    const char *indent;
};

static int table_add(struct table *t, char **row)
{
    if (t->n_rows == t->alloc) {
        size_t n = t->alloc ? t->alloc * 2 : 16;
        char **c = reallocarray(t->cells, n * t->n_cols, sizeof(char *));
        if (!c)
            return -ENOMEM;
        t->cells = c;
        t->alloc = n;
    }
    for (size_t i = 0; i < t->n_cols; i++)
        t->cells[t->n_rows * t->n_cols + i] = row[i] ? row[i] : strdup("?");
    t->n_rows++;
    return 0;
}

static void table_header(struct table *t, size_t n_cols, const char *const *names)
{
    *t = (struct table){.n_cols = n_cols, .indent = ""};
    char *row[16];
    for (size_t i = 0; i < n_cols && i < ELEMENTSOF(row); i++)
        row[i] = strdup(names[i]);
    table_add(t, row);
}

static size_t table_cols_;
static int row_cmp(const void *a, const void *b)
{
    char *const *ra = a, *const *rb = b;
    for (size_t i = 0; i < table_cols_; i++) {
        int c = strcmp(ra[i], rb[i]);
        if (c)
            return c;
    }
    return 0;
}

/* Sorts the data rows by their first `keys` columns. */
static void table_sort(struct table *t, size_t keys)
{
    if (t->n_rows <= 2)
        return;
    table_cols_ = keys;
    /* Rows are n_cols pointers wide; sort them as blocks. */
    size_t width = t->n_cols * sizeof(char *);
    qsort(t->cells + t->n_cols, t->n_rows - 1, width, row_cmp);
}

static void table_print_free(struct table *t)
{
    size_t widths[16] = {0};
    for (size_t r = 0; r < t->n_rows; r++)
        for (size_t c = 0; c < t->n_cols && c < ELEMENTSOF(widths); c++) {
            size_t l = strlen(t->cells[r * t->n_cols + c]);
            if (l > widths[c])
                widths[c] = l;
        }
    for (size_t r = 0; r < t->n_rows; r++) {
        fputs(t->indent, stdout);
        for (size_t c = 0; c < t->n_cols; c++) {
            const char *s = t->cells[r * t->n_cols + c];
            if (c + 1 < t->n_cols)
                printf("%-*s   ", (int)widths[c], s);
            else
                puts(s);
        }
    }
    for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
        free(t->cells[i]);
    free(t->cells);
    *t = (struct table){0};
}

/* "Label:  value" lines, aligned. */
struct kv {
    const char *key;
    char *value; /* owned */
};

static void kv_print_free(struct kv *kv, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (kv[i].value && strlen(kv[i].key) > w)
            w = strlen(kv[i].key);
    for (size_t i = 0; i < n; i++) {
        if (kv[i].value)
            printf("%s:%*s %s\n", kv[i].key, (int)(w - strlen(kv[i].key)), "", kv[i].value);
        free(kv[i].value);
    }
}

/* ---- talking to the broker ---- */

/* One exchange. On success returns 0 with *ret_result; otherwise prints the error, returns 1. */
static int call(const struct ctl *c, struct json_object *req, struct json_object **ret_result)
{
    _cleanup_free_ char *error = NULL;
    struct json_object *result = NULL;
    int r = ctl_call(c->socket, req, c->timeout_ms, &result, &error);
    if (r < 0)
        return fail("%s", error ? error : idb_strerror(r));
    *ret_result = result;
    return 0;
}

static int call_op(const struct ctl *c, const char *op, struct json_object **ret_result)
{
    _cleanup_json_ struct json_object *req = ctl_request_new(op);
    if (!req)
        return fail("out of memory");
    return call(c, req, ret_result);
}

/* Splits NAMESPACE/POD. */
static int parse_pod_ref(const char *cmd, const char *s, char **ret_ns, char **ret_name)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || !slash[1] || strchr(slash + 1, '/'))
        return usage_error(cmd, "expected NAMESPACE/POD, got '%s'", s);
    size_t ns_len = (size_t)(slash - s), name_len = strlen(slash + 1);
    if (ns_len > REG_MAX_NAME || name_len > REG_MAX_NAME)
        return usage_error(cmd, "namespace and pod name are at most %d characters", REG_MAX_NAME);
    char *ns = strndup(s, ns_len), *name = strdup(slash + 1);
    if (!ns || !name) {
        free(ns);
        free(name);
        return fail("out of memory");
    }
    *ret_ns = ns;
    *ret_name = name;
    return 0;
}

/* ---- list commands ---- */

/* Calls op, expects an array; prints it as JSON or hands it to `rows`. */
static int list_cmd(const struct ctl *c, const char *op, const char *what, size_t n_cols,
                    const char *const *header, size_t sort_keys,
                    void (*rows)(struct json_object *item, char **row))
{
    _cleanup_json_ struct json_object *res = NULL;
    int r = call_op(c, op, &res);
    if (r)
        return r;
    if (c->json) {
        print_json(res, true);
        return 0;
    }
    if (!json_object_is_type(res, json_type_array))
        return fail("unexpected reply to '%s': not a list", op);
    size_t n = json_object_array_length(res);
    if (n == 0) {
        fprintf(stderr, "No %s found.\n", what);
        return 0;
    }
    struct table t;
    table_header(&t, n_cols, header);
    for (size_t i = 0; i < n; i++) {
        char *row[16] = {0};
        rows(json_object_array_get_idx(res, i), row);
        if (table_add(&t, row) < 0) {
            for (size_t k = 0; k < n_cols; k++)
                free(row[k]);
            break;
        }
    }
    table_sort(&t, sort_keys);
    table_print_free(&t);
    return 0;
}

static char *container_str(struct json_object *v)
{
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
    if (!s)
        return cell(v);
    /* Runtime IDs are 64 hex digits; 12 are enough to tell them apart, as docker and crictl show.
     */
    size_t len = strlen(s);
    if (len > 16 && strspn(s, "0123456789abcdef") == len)
        return strndup(s, 12);
    return strdup(s);
}

static void pod_row(struct json_object *p, char **row)
{
    row[0] = cell(get_path(p, "podNamespace", NULL));
    row[1] = cell(get_path(p, "podName", NULL));
    row[2] = cell(get_path(p, "podUid", NULL));
    row[3] = join_array(get_path(p, "ips", NULL), ",");
    struct json_object *hif = get_path(p, "hostInterface", NULL);
    row[4] = cell(hif && json_object_get_string_len(hif) ? hif : get_path(p, "ifName", NULL));
    row[5] = container_str(get_path(p, "containerId", NULL));
    struct json_object *created = get_path(p, "created", NULL);
    char age[32] = "<unknown>";
    if (created && json_object_is_type(created, json_type_int) && json_object_get_int64(created))
        age_str((int64_t)time(NULL) - json_object_get_int64(created), age, sizeof(age));
    row[6] = strdup(age);
}

static int cmd_pods(struct ctl *c, const struct args *a)
{
    (void)a;
    static const char *const h[] = {"NAMESPACE", "NAME",      "UID", "IPS",
                                    "INTERFACE", "CONTAINER", "AGE"};
    return list_cmd(c, IDB_CTL_OP_PODS, "pods", ELEMENTSOF(h), h, 2, pod_row);
}

static char *identity_type_str(struct json_object *v)
{
    static const char *const names[] = {"msi", "sp", "sp-cert"};
    int64_t t = -1;
    if (v && json_object_is_type(v, json_type_int))
        t = json_object_get_int64(v);
    else if (v && json_object_is_type(v, json_type_string)) {
        char *end = NULL;
        const char *s = json_object_get_string(v);
        long long x = strtoll(s, &end, 10);
        if (end != s && !*end)
            t = x;
    }
    if (t < 0 || t >= (int64_t)ELEMENTSOF(names))
        return cell(v);
    char *s = NULL;
    if (asprintf(&s, "%lld (%s)", (long long)t, names[t]) < 0)
        return NULL;
    return s;
}

static void identity_row(struct json_object *o, char **row)
{
    row[0] = cell(get_path(o, "metadata", "namespace", NULL));
    row[1] = cell(get_path(o, "metadata", "name", NULL));
    row[2] = identity_type_str(get_path(o, "spec", "type", NULL));
    row[3] = cell(get_path(o, "spec", "clientID", NULL));
    row[4] = cell(get_path(o, "provider", NULL));
}

static int cmd_identities(struct ctl *c, const struct args *a)
{
    (void)a;
    static const char *const h[] = {"NAMESPACE", "NAME", "TYPE", "CLIENT-ID", "PROVIDER"};
    return list_cmd(c, IDB_CTL_OP_IDENTITIES, "identities", ELEMENTSOF(h), h, 2, identity_row);
}

static void binding_row(struct json_object *o, char **row)
{
    row[0] = cell(get_path(o, "metadata", "namespace", NULL));
    row[1] = cell(get_path(o, "metadata", "name", NULL));
    row[2] = cell(get_path(o, "spec", "azureIdentity", NULL));
    row[3] = cell(get_path(o, "spec", "selector", NULL));
    struct json_object *w = get_path(o, "spec", "weight", NULL);
    row[4] = w ? value_str(w) : strdup("0");
}

static int cmd_bindings(struct ctl *c, const struct args *a)
{
    (void)a;
    static const char *const h[] = {"NAMESPACE", "NAME", "IDENTITY", "SELECTOR", "WEIGHT"};
    return list_cmd(c, IDB_CTL_OP_BINDINGS, "bindings", ELEMENTSOF(h), h, 2, binding_row);
}

static void exception_row(struct json_object *o, char **row)
{
    row[0] = cell(get_path(o, "metadata", "namespace", NULL));
    row[1] = cell(get_path(o, "metadata", "name", NULL));
    row[2] = labels_str(get_path(o, "spec", "podLabels", NULL), ",");
}

static int cmd_exceptions(struct ctl *c, const struct args *a)
{
    (void)a;
    static const char *const h[] = {"NAMESPACE", "NAME", "POD-LABELS"};
    return list_cmd(c, IDB_CTL_OP_EXCEPTIONS, "exceptions", ELEMENTSOF(h), h, 2, exception_row);
}

static void provider_row(struct json_object *o, char **row)
{
    row[0] = cell(get_path(o, "name", NULL));
    row[1] = cell(get_path(o, "version", NULL));
    struct json_object *maj = get_path(o, "abiMajor", NULL), *min = get_path(o, "abiMinor", NULL);
    if (maj && min) {
        row[2] = NULL;
        if (asprintf(&row[2], "%lld.%lld", (long long)json_object_get_int64(maj),
                     (long long)json_object_get_int64(min)) < 0)
            row[2] = NULL;
    } else
        row[2] = cell(maj);
    struct json_object *path = get_path(o, "path", NULL);
    row[3] = cell(path ? path : get_path(o, "file", NULL));
}

static int cmd_providers(struct ctl *c, const struct args *a)
{
    (void)a;
    static const char *const h[] = {"NAME", "VERSION", "ABI", "FILE"};
    return list_cmd(c, IDB_CTL_OP_PROVIDERS, "providers", ELEMENTSOF(h), h, 1, provider_row);
}

/* ---- status, explain ---- */

/* A count or a list: lists print as their names. Returns new. */
static char *count_or_list(struct json_object *v)
{
    if (!v || !json_object_is_type(v, json_type_array))
        return cell(v);
    size_t n = json_object_array_length(v);
    if (n == 0)
        return strdup("0");
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    fprintf(f, "%zu (", n);
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(v, i);
        struct json_object *name = get_path(e, "name", NULL);
        _cleanup_free_ char *s = value_str(name ? name : e);
        fprintf(f, "%s%s", i ? ", " : "", strna(s));
    }
    fputc(')', f);
    fclose(f);
    return out;
}

static int cmd_status(struct ctl *c, const struct args *a)
{
    (void)a;
    _cleanup_json_ struct json_object *res = NULL;
    int r = call_op(c, IDB_CTL_OP_STATUS, &res);
    if (r)
        return r;
    if (c->json || !json_object_is_type(res, json_type_object)) {
        print_json(res, true);
        return 0;
    }

    static const char *const known[] = {"nodeName",   "version",        "ready",      "notReady",
                                        "listen",     "uptimeSeconds",  "source",     "pods",
                                        "identities", "bindings",       "exceptions", "providers",
                                        "cache",      "unprotectedPods"};
    struct kv kv[64];
    size_t n = 0;
    kv[n++] = (struct kv){"Node", cell(get_path(res, "nodeName", NULL))};
    kv[n++] = (struct kv){"Version", cell(get_path(res, "version", NULL))};
    struct json_object *why = get_path(res, "notReady", NULL);
    char *ready = NULL;
    if (json_get_bool(res, "ready", false) || !why || !json_object_is_type(why, json_type_string))
        ready = cell(get_path(res, "ready", NULL));
    else if (asprintf(&ready, "no (%s)", json_object_get_string(why)) < 0)
        ready = NULL;
    kv[n++] = (struct kv){"Ready", ready};
    struct json_object *listen = get_path(res, "listen", NULL);
    if (listen)
        kv[n++] = (struct kv){"Token endpoint", value_str(listen)};
    struct json_object *up = get_path(res, "uptimeSeconds", NULL);
    if (up && json_object_is_type(up, json_type_int)) {
        char age[32];
        age_str(json_object_get_int64(up), age, sizeof(age));
        kv[n++] = (struct kv){"Uptime", strdup(age)};
    }
    struct json_object *src = get_path(res, "source", NULL);
    if (src && json_object_is_type(src, json_type_object)) {
        struct json_object *dir = get_path(src, "dir", NULL);
        char *kind = NULL;
        if (dir && json_object_is_type(dir, json_type_string)) {
            if (asprintf(&kind, "%s (%s)",
                         json_get_str(src, "kind") ? json_get_str(src, "kind") : "?",
                         json_object_get_string(dir)) < 0)
                kind = NULL;
        } else
            kind = cell(get_path(src, "kind", NULL));
        kv[n++] = (struct kv){"Source", kind};
        kv[n++] = (struct kv){"Last reload", when_str(get_path(src, "lastReload", NULL))};
        struct json_object *err = get_path(src, "lastError", NULL);
        if (err && !json_object_is_type(err, json_type_null) &&
            !(json_object_is_type(err, json_type_string) && !json_object_get_string_len(err)))
            kv[n++] = (struct kv){"Last error", value_str(err)};
    } else if (src)
        kv[n++] = (struct kv){"Source", value_str(src)};
    kv[n++] = (struct kv){"Pods", cell(get_path(res, "pods", NULL))};
    if (get_path(res, "unprotectedPods", NULL))
        kv[n++] = (struct kv){"Unprotected pods", cell(get_path(res, "unprotectedPods", NULL))};
    kv[n++] = (struct kv){"Identities", cell(get_path(res, "identities", NULL))};
    kv[n++] = (struct kv){"Bindings", cell(get_path(res, "bindings", NULL))};
    kv[n++] = (struct kv){"Exceptions", cell(get_path(res, "exceptions", NULL))};
    kv[n++] = (struct kv){"Providers", count_or_list(get_path(res, "providers", NULL))};
    struct json_object *cache = get_path(res, "cache", NULL);
    if (cache && json_object_is_type(cache, json_type_object)) {
        char *s = NULL;
        if (asprintf(&s, "%lld entries, %lld hits, %lld misses, %lld refreshes",
                     (long long)json_get_int(cache, "entries", 0),
                     (long long)json_get_int(cache, "hits", 0),
                     (long long)json_get_int(cache, "misses", 0),
                     (long long)json_get_int(cache, "refreshes", 0)) < 0)
            s = NULL;
        kv[n++] = (struct kv){"Cache", s};
    }
    /* Whatever else a newer broker reports, as it is. */
    json_object_object_foreach(res, k, v)
    {
        bool seen = false;
        for (size_t i = 0; i < ELEMENTSOF(known); i++)
            seen = seen || streq(k, known[i]);
        if (!seen && n < ELEMENTSOF(kv))
            kv[n++] = (struct kv){k, value_str(v)};
    }
    kv_print_free(kv, n);
    return 0;
}

/* An identity or binding reference: a string, or an object with metadata. Returns new. */
static char *ref_str(struct json_object *v)
{
    struct json_object *name = get_path(v, "metadata", "name", NULL);
    if (!name)
        name = get_path(v, "name", NULL);
    if (!name)
        return cell(v);
    struct json_object *ns = get_path(v, "metadata", "namespace", NULL);
    if (!ns)
        ns = get_path(v, "namespace", NULL);
    if (!ns || !json_object_is_type(ns, json_type_string))
        return value_str(name);
    char *s = NULL;
    if (asprintf(&s, "%s/%s", json_object_get_string(ns), json_object_get_string(name)) < 0)
        return NULL;
    return s;
}

static char *registration_summary(struct json_object *reg)
{
    if (!reg || !json_object_is_type(reg, json_type_object))
        return strdup("yes");
    _cleanup_free_ char *ips = join_array(get_path(reg, "ips", NULL), ", ");
    _cleanup_free_ char *cid = container_str(get_path(reg, "containerId", NULL));
    _cleanup_free_ char *hif = cell(get_path(reg, "hostInterface", NULL));
    _cleanup_free_ char *origin = cell(get_path(reg, "origin", NULL));
    char age[32] = "?";
    struct json_object *created = get_path(reg, "created", NULL);
    if (created && json_object_is_type(created, json_type_int))
        age_str((int64_t)time(NULL) - json_object_get_int64(created), age, sizeof(age));
    char *s = NULL;
    if (asprintf(&s, "yes (IPs %s; container %s; interface %s; by %s, %s ago)", strna(ips),
                 strna(cid), strna(hif), strna(origin), age) < 0)
        return NULL;
    return s;
}

static int cmd_explain(struct ctl *c, const struct args *a)
{
    _cleanup_free_ char *ns = NULL, *name = NULL;
    int r = parse_pod_ref("explain", a->pos[0], &ns, &name);
    if (r)
        return r;
    _cleanup_json_ struct json_object *req = ctl_request_new(IDB_CTL_OP_EXPLAIN);
    if (!req || json_add_str(req, "namespace", ns) < 0 || json_add_str(req, "name", name) < 0)
        return fail("out of memory");
    _cleanup_json_ struct json_object *res = NULL;
    r = call(c, req, &res);
    if (r)
        return r;
    if (c->json || !json_object_is_type(res, json_type_object)) {
        print_json(res, true);
        return 0;
    }

    struct kv kv[8];
    size_t n = 0;
    struct json_object *pod = get_path(res, "pod", NULL);
    char *pod_s = NULL;
    if (pod)
        pod_s = ref_str(pod);
    else if (asprintf(&pod_s, "%s/%s", ns, name) < 0)
        pod_s = NULL;
    kv[n++] = (struct kv){"Pod", pod_s};
    bool registered = json_get_bool(res, "registered", false);
    kv[n++] = (struct kv){"Registered",
                          registered ? registration_summary(get_path(res, "registration", NULL))
                                     : strdup("no (no CNI ADD or 'register' for this pod)")};
    kv[n++] = (struct kv){"Labels", labels_str(get_path(res, "labels", NULL), ", ")};
    kv[n++] = (struct kv){"Decision", cell(get_path(res, "decision", NULL))};
    kv[n++] = (struct kv){"Reason", cell(get_path(res, "reason", NULL))};
    kv[n++] = (struct kv){"Identity", ref_str(get_path(res, "identity", NULL))};
    struct json_object *note = get_path(res, "note", NULL);
    if (note)
        kv[n++] = (struct kv){"Note", value_str(note)};
    kv_print_free(kv, n);

    struct json_object *cands = get_path(res, "candidates", NULL);
    size_t nc =
        cands && json_object_is_type(cands, json_type_array) ? json_object_array_length(cands) : 0;
    if (nc == 0) {
        puts("Candidates: none (no binding in scope selects this pod's identity)");
        return 0;
    }
    puts("Candidates:");
    static const char *const h[] = {"BINDING", "IDENTITY", "WEIGHT", "APPLIES", "WHY"};
    struct table t;
    table_header(&t, ELEMENTSOF(h), h);
    t.indent = "  ";
    for (size_t i = 0; i < nc; i++) {
        struct json_object *e = json_object_array_get_idx(cands, i);
        char *row[5] = {
            ref_str(get_path(e, "binding", NULL)),
            ref_str(get_path(e, "identity", NULL)),
            cell(get_path(e, "weight", NULL)),
            strdup(json_get_bool(e, "applies", false) ? "yes" : "no"),
            cell(get_path(e, "why", NULL)),
        };
        if (table_add(&t, row) < 0) {
            for (size_t k = 0; k < ELEMENTSOF(row); k++)
                free(row[k]);
            break;
        }
    }
    table_print_free(&t);
    return 0;
}

/* ---- token, reload, register, unregister, version ---- */

static int cmd_token(struct ctl *c, const struct args *a)
{
    _cleanup_free_ char *ns = NULL, *name = NULL;
    int r = parse_pod_ref("token", a->pos[0], &ns, &name);
    if (r)
        return r;
    if (!a->resource)
        return usage_error("token", "--resource is required");
    if (!!a->client_id + !!a->object_id + !!a->resource_id > 1)
        return usage_error("token", "give at most one of --client-id, --object-id, --resource-id");
    _cleanup_json_ struct json_object *req = ctl_request_new(IDB_CTL_OP_TOKEN);
    if (!req || json_add_str(req, "namespace", ns) < 0 || json_add_str(req, "name", name) < 0 ||
        json_add_str(req, "resource", a->resource) < 0 ||
        json_add_str(req, "clientId", a->client_id) < 0 ||
        json_add_str(req, "objectId", a->object_id) < 0 ||
        json_add_str(req, "resourceId", a->resource_id) < 0 ||
        (a->bypass_cache &&
         json_object_object_add(req, "bypassCache", json_object_new_boolean(1)) < 0))
        return fail("out of memory");
    _cleanup_json_ struct json_object *res = NULL;
    r = call(c, req, &res);
    if (r)
        return r;
    /* The IMDS answer as a pod would get it (compact), or pretty with -o json. */
    print_json(res, c->json);
    return 0;
}

static int cmd_reload(struct ctl *c, const struct args *a)
{
    (void)a;
    _cleanup_json_ struct json_object *res = NULL;
    int r = call_op(c, IDB_CTL_OP_RELOAD, &res);
    if (r)
        return r;
    if (c->json)
        print_json(res, true);
    else
        puts("reloaded");
    return 0;
}

/* "ctl-<ns>-<name>" with everything outside [A-Za-z0-9._-] turned into '-', cut to REG_MAX_ID. */
static void default_container_id(const char *ns, const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "ctl-%s-%s", ns, name);
    for (char *p = buf; *p; p++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-", *p))
            *p = '-';
}

static int cmd_register(struct ctl *c, const struct args *a)
{
    _cleanup_free_ char *ns = NULL, *name = NULL;
    int r = parse_pod_ref("register", a->pos[0], &ns, &name);
    if (r)
        return r;
    if (a->n_ips == 0)
        return usage_error("register", "at least one --ip is required");

    _cleanup_free_ struct registration *reg = calloc(1, sizeof(*reg));
    if (!reg)
        return fail("out of memory");
    for (size_t i = 0; i < a->n_ips; i++)
        if (reg_ip_parse(a->ips[i], &reg->ips[i]) < 0)
            return usage_error("register", "invalid --ip '%s'", a->ips[i]);
    reg->n_ips = a->n_ips;
    if (a->container_id) {
        if (!reg_valid_container_id(a->container_id))
            return usage_error("register",
                               "invalid --container-id '%s' (expected [A-Za-z0-9][A-Za-z0-9._-]*, "
                               "at most %d characters)",
                               a->container_id, REG_MAX_ID);
        snprintf(reg->container_id, sizeof(reg->container_id), "%s", a->container_id);
    } else
        default_container_id(ns, name, reg->container_id, sizeof(reg->container_id));
    const char *if_name = a->if_name ? a->if_name : "eth0";
    if (!reg_valid_ifname(if_name))
        return usage_error("register", "invalid --if-name '%s'", if_name);
    snprintf(reg->if_name, sizeof(reg->if_name), "%s", if_name);
    if (a->host_interface) {
        if (!reg_valid_ifname(a->host_interface))
            return usage_error("register", "invalid --host-interface '%s'", a->host_interface);
        snprintf(reg->host_ifname, sizeof(reg->host_ifname), "%s", a->host_interface);
    }
    if (a->uid) {
        if (strlen(a->uid) > REG_MAX_ID)
            return usage_error("register", "--uid is at most %d characters", REG_MAX_ID);
        snprintf(reg->pod_uid, sizeof(reg->pod_uid), "%s", a->uid);
    }
    snprintf(reg->pod_namespace, sizeof(reg->pod_namespace), "%s", ns);
    snprintf(reg->pod_name, sizeof(reg->pod_name), "%s", name);
    snprintf(reg->origin, sizeof(reg->origin), "ctl");
    reg->created = (uint64_t)time(NULL);

    _cleanup_json_ struct json_object *req = ctl_request_new(IDB_CTL_OP_REGISTER);
    struct json_object *o = registration_to_json(reg);
    if (!req || !o || json_object_object_add(req, "registration", o) < 0) {
        json_object_put(o);
        return fail("out of memory");
    }
    _cleanup_json_ struct json_object *res = NULL;
    r = call(c, req, &res);
    if (r)
        return r;
    if (c->json) {
        print_json(res, true);
        return 0;
    }
    _cleanup_free_ char *ips = join_array(get_path(o, "ips", NULL), ", ");
    printf("registered %s/%s (container %s, interface %s, IPs %s)\n", ns, name, reg->container_id,
           reg->if_name, strna(ips));
    return 0;
}

static int cmd_unregister(struct ctl *c, const struct args *a)
{
    _cleanup_free_ char *ns = NULL, *name = NULL;
    if ((a->n_pos == 1) == !!a->container_id)
        return usage_error("unregister", "give either NAMESPACE/POD or --container-id");
    if (a->if_name && !a->container_id)
        return usage_error("unregister", "--if-name goes with --container-id");
    _cleanup_json_ struct json_object *req = ctl_request_new(IDB_CTL_OP_UNREGISTER);
    if (!req)
        return fail("out of memory");
    char what[2 * REG_MAX_NAME + 64];
    if (a->n_pos == 1) {
        int r = parse_pod_ref("unregister", a->pos[0], &ns, &name);
        if (r)
            return r;
        if (json_add_str(req, "namespace", ns) < 0 || json_add_str(req, "name", name) < 0)
            return fail("out of memory");
        snprintf(what, sizeof(what), "%s/%s", ns, name);
    } else {
        if (!reg_valid_container_id(a->container_id))
            return usage_error("unregister", "invalid --container-id '%s'", a->container_id);
        if (a->if_name && !reg_valid_ifname(a->if_name))
            return usage_error("unregister", "invalid --if-name '%s'", a->if_name);
        if (json_add_str(req, "containerId", a->container_id) < 0 ||
            json_add_str(req, "ifName", a->if_name) < 0)
            return fail("out of memory");
        snprintf(what, sizeof(what), "container %s%s%s", a->container_id, a->if_name ? "@" : "",
                 a->if_name ? a->if_name : "");
    }
    _cleanup_json_ struct json_object *res = NULL;
    int r = call(c, req, &res);
    if (r)
        return r;
    if (c->json) {
        print_json(res, true);
        return 0;
    }
    int64_t removed = json_get_int(res, "removed", 0);
    if (removed == 0)
        printf("%s: no registration found, nothing removed\n", what);
    else
        printf("unregistered %s (%lld registration%s removed)\n", what, (long long)removed,
               removed == 1 ? "" : "s");
    return 0;
}

static int cmd_version(struct ctl *c, const struct args *a)
{
    (void)a;
    _cleanup_json_ struct json_object *req = ctl_request_new(IDB_CTL_OP_STATUS);
    _cleanup_free_ char *error = NULL;
    _cleanup_json_ struct json_object *res = NULL;
    if (!req)
        return fail("out of memory");
    int r = ctl_call(c->socket, req, c->timeout_ms, &res, &error);
    if (c->json) {
        _cleanup_json_ struct json_object *o = json_object_new_object();
        if (!o || json_add_str(o, "client", IDB_VERSION) < 0 ||
            (r >= 0 && json_add_str(o, "broker", json_get_str(res, "version")) < 0) ||
            (r >= 0 && json_add_str(o, "nodeName", json_get_str(res, "nodeName")) < 0))
            return fail("out of memory");
        print_json(o, true);
    } else {
        printf("idbrokerctl %s\n", IDB_VERSION);
        if (r >= 0)
            printf("idbrokerd %s on node %s\n", strna(json_get_str(res, "version")),
                   strna(json_get_str(res, "nodeName")));
    }
    if (r < 0)
        return fail("%s", error ? error : idb_strerror(r));
    return 0;
}

/* ---- command table, help, option parsing ---- */

static const struct command commands[] = {
    {"status", cmd_status, 0, 0, 0, "", "Show the broker's state: node, source, counts, cache",
     NULL},
    {"pods", cmd_pods, 0, 0, 0, "", "List the pods registered on this node", NULL},
    {"identities", cmd_identities, 0, 0, 0, "", "List the AzureIdentities the broker knows", NULL},
    {"bindings", cmd_bindings, 0, 0, 0, "", "List the AzureIdentityBindings", NULL},
    {"exceptions", cmd_exceptions, 0, 0, 0, "", "List the AzurePodIdentityExceptions", NULL},
    {"providers", cmd_providers, 0, 0, 0, "", "List the loaded provider plugins", NULL},
    {"explain", cmd_explain, 0, 1, 1, "NAMESPACE/POD",
     "Explain which identity a pod gets, and why (or why not)", NULL},
    {"token", cmd_token,
     F(OPT_RESOURCE) | F(OPT_CLIENT_ID) | F(OPT_OBJECT_ID) | F(OPT_RESOURCE_ID) |
         F(OPT_BYPASS_CACHE),
     1, 1, "NAMESPACE/POD --resource RESOURCE [OPTIONS]",
     "Issue a token as the pod would get it (debugging; root only)",
     "      --resource RESOURCE   the audience, e.g. https://management.azure.com/ (required)\n"
     "      --client-id ID        pick the identity by client ID\n"
     "      --object-id ID        pick the identity by object (principal) ID\n"
     "      --resource-id ID      pick the identity by ARM resource ID\n"
     "      --bypass-cache        ask the provider even if a cached token is valid\n"},
    {"reload", cmd_reload, 0, 0, 0, "",
     "Re-read the configuration and the identity source (like SIGHUP)", NULL},
    {"register", cmd_register,
     F(OPT_IP) | F(OPT_UID) | F(OPT_CONTAINER_ID) | F(OPT_IF_NAME) | F(OPT_HOST_INTERFACE), 1, 1,
     "NAMESPACE/POD --ip IP [--ip IP2] [OPTIONS]",
     "Register a pod by hand (testing without a CNI runtime)",
     "      --ip IP               the pod's address; repeat for more (at most 8; required)\n"
     "      --uid UID             the pod's UID\n"
     "      --container-id ID     default: ctl-NAMESPACE-POD\n"
     "      --if-name NAME        the pod-side interface (default: eth0)\n"
     "      --host-interface IF   the host-side interface the pod's traffic enters by\n"},
    {"unregister", cmd_unregister, F(OPT_CONTAINER_ID) | F(OPT_IF_NAME), 0, 1,
     "NAMESPACE/POD | --container-id ID [--if-name NAME]",
     "Remove a pod's registrations, or one container attachment",
     "      --container-id ID     remove this container's registration\n"
     "      --if-name NAME        the attachment's pod-side interface (default: eth0)\n"},
    {"version", cmd_version, 0, 0, 0, "", "Show the versions of idbrokerctl and idbrokerd", NULL},
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        if (streq(commands[i].name, name))
            return &commands[i];
    return NULL;
}

static const char global_options_help[] =
    "  -s, --socket PATH         the broker's control socket (default: $IDBROKER_SOCKET, else\n"
    "                            " IDB_CTL_DEFAULT_SOCKET ")\n"
    "  -o, --output FORMAT       table (default) or json\n"
    "      --timeout SECONDS     give up waiting for the broker after this long (default 30)\n"
    "  -h, --help                show help\n";

static void help(void)
{
    printf("Usage: " PROG " [OPTIONS] COMMAND [ARGS]\n\n"
           "Operator tool for idbrokerd, the node's pod identity broker, over its control socket.\n"
           "\nCommands:\n");
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        printf("  %-12s %s\n", commands[i].name, commands[i].summary);
    printf("\nOptions:\n%s\nRun '" PROG " COMMAND --help' for a command's options.\n",
           global_options_help);
}

static void command_help(const struct command *cmd)
{
    printf("Usage: " PROG " %s%s%s\n\n%s.\n", cmd->name, cmd->synopsis[0] ? " " : "", cmd->synopsis,
           cmd->summary);
    if (cmd->details)
        printf("\nOptions:\n%s", cmd->details);
    printf("\nGlobal options:\n%s", global_options_help);
}

static const struct option long_options[] = {
    {"help", no_argument, NULL, OPT_HELP},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"socket", required_argument, NULL, OPT_SOCKET},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"resource", required_argument, NULL, OPT_RESOURCE},
    {"client-id", required_argument, NULL, OPT_CLIENT_ID},
    {"object-id", required_argument, NULL, OPT_OBJECT_ID},
    {"resource-id", required_argument, NULL, OPT_RESOURCE_ID},
    {"bypass-cache", no_argument, NULL, OPT_BYPASS_CACHE},
    {"ip", required_argument, NULL, OPT_IP},
    {"uid", required_argument, NULL, OPT_UID},
    {"container-id", required_argument, NULL, OPT_CONTAINER_ID},
    {"if-name", required_argument, NULL, OPT_IF_NAME},
    {"host-interface", required_argument, NULL, OPT_HOST_INTERFACE},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* Handles an option every command accepts. Returns 0, or an exit status. */
static int global_option(struct ctl *c, int opt, const char *arg, const char *cmd)
{
    switch (opt) {
    case OPT_OUTPUT:
        if (streq(arg, "json"))
            c->json = true;
        else if (streq(arg, "table"))
            c->json = false;
        else
            return usage_error(cmd, "unknown output format '%s' (use table or json)", arg);
        return 0;
    case OPT_SOCKET:
        c->socket = arg;
        return 0;
    case OPT_TIMEOUT: {
        char *end = NULL;
        errno = 0;
        long s = strtol(arg, &end, 10);
        if (errno || end == arg || *end || s <= 0 || s > 24 * 3600)
            return usage_error(cmd, "invalid --timeout '%s' (seconds, 1..86400)", arg);
        c->timeout_ms = (int)(s * 1000);
        return 0;
    }
    default:
        return -1;
    }
}

/* Names the option getopt just stumbled on, for messages. */
static const char *bad_option(char **argv, int optopt_)
{
    static char buf[4];
    const char *arg = argv[optind - 1];
    if (strncmp(arg, "--", 2) == 0 || !optopt_ || optopt_ >= 0x100)
        return arg;
    snprintf(buf, sizeof(buf), "-%c", optopt_);
    return buf;
}

/* "--name" of a recognised option, for messages. */
static const char *option_name(int opt)
{
    static char buf[64];
    for (const struct option *o = long_options; o->name; o++)
        if (o->val == opt) {
            snprintf(buf, sizeof(buf), "--%s", o->name);
            return buf;
        }
    return "?";
}

static int run_command(struct ctl *c, const struct command *cmd, int argc, char **argv)
{
    struct args a = {0};
    optind = 0; /* glibc: reinitialise; argv[0] is the command name */
    opterr = 0;
    for (;;) {
        int opt = getopt_long(argc, argv, ":ho:s:", long_options, NULL);
        if (opt == -1)
            break;
        if (opt == ':')
            return usage_error(cmd->name, "option '%s' needs an argument",
                               bad_option(argv, optopt));
        if (opt == '?')
            return usage_error(cmd->name, "unknown option '%s'", bad_option(argv, optopt));
        if (opt == OPT_HELP) {
            command_help(cmd);
            return 0;
        }
        int r = global_option(c, opt, optarg, cmd->name);
        if (r >= 0) {
            if (r)
                return r;
            continue;
        }
        if (opt == OPT_VERSION || !(cmd->opts & F(opt)))
            return usage_error(cmd->name, "option '%s' does not apply to '%s'", option_name(opt),
                               cmd->name);
        switch (opt) {
        case OPT_RESOURCE:
            a.resource = optarg;
            break;
        case OPT_CLIENT_ID:
            a.client_id = optarg;
            break;
        case OPT_OBJECT_ID:
            a.object_id = optarg;
            break;
        case OPT_RESOURCE_ID:
            a.resource_id = optarg;
            break;
        case OPT_BYPASS_CACHE:
            a.bypass_cache = true;
            break;
        case OPT_IP:
            if (a.n_ips == REG_MAX_IPS)
                return usage_error(cmd->name, "at most %d --ip", REG_MAX_IPS);
            a.ips[a.n_ips++] = optarg;
            break;
        case OPT_UID:
            a.uid = optarg;
            break;
        case OPT_CONTAINER_ID:
            a.container_id = optarg;
            break;
        case OPT_IF_NAME:
            a.if_name = optarg;
            break;
        case OPT_HOST_INTERFACE:
            a.host_interface = optarg;
            break;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (a.n_pos >= cmd->max_pos || a.n_pos >= MAX_POSITIONAL)
            return usage_error(cmd->name, "unexpected argument '%s'", argv[i]);
        a.pos[a.n_pos++] = argv[i];
    }
    if (a.n_pos < cmd->min_pos)
        return usage_error(cmd->name, "'%s' needs %s", cmd->name, cmd->synopsis);
    return cmd->fn(c, &a);
}

int main(int argc, char **argv)
{
    struct ctl c = {.socket = IDB_CTL_DEFAULT_SOCKET, .timeout_ms = DEFAULT_TIMEOUT_S * 1000};
    const char *env = getenv("IDBROKER_SOCKET");
    if (env && *env)
        c.socket = env;

    /* Options before the command; "+" stops at the first non-option, the command's name. */
    opterr = 0;
    for (;;) {
        int opt = getopt_long(argc, argv, "+:ho:s:", long_options, NULL);
        if (opt == -1)
            break;
        if (opt == ':')
            return usage_error(NULL, "option '%s' needs an argument", bad_option(argv, optopt));
        if (opt == '?')
            return usage_error(NULL, "unknown option '%s'", bad_option(argv, optopt));
        if (opt == OPT_HELP) {
            help();
            return 0;
        }
        if (opt == OPT_VERSION) {
            printf("idbrokerctl %s\n", IDB_VERSION);
            return 0;
        }
        int r = global_option(&c, opt, optarg, NULL);
        if (r > 0)
            return r;
        if (r < 0)
            return usage_error(NULL, "option '%s' goes after the command", option_name(opt));
    }
    if (optind >= argc)
        return usage_error(NULL, "no command given");
    const char *name = argv[optind];
    if (streq(name, "help")) {
        const struct command *cmd = optind + 1 < argc ? find_command(argv[optind + 1]) : NULL;
        if (optind + 1 < argc && !cmd)
            return usage_error(NULL, "unknown command '%s'", argv[optind + 1]);
        if (cmd)
            command_help(cmd);
        else
            help();
        return 0;
    }
    const struct command *cmd = find_command(name);
    if (!cmd)
        return usage_error(NULL, "unknown command '%s'", name);
    int r = run_command(&c, cmd, argc - optind, argv + optind);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, PROG ": cannot write output: %s\n", strerror(errno));
        return EXIT_FAILURE;
    }
    return r;
}
