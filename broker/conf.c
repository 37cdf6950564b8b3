/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The broker configuration (DESIGN §7, STYLE R16). One table, `items`, names every key: its path
 * from the top ("cache.maxEntries"), its type and bounds, where it lands in struct broker_conf, its
 * default and whether a change needs a restart. Parsing applies that table to one JSON object: a
 * member whose path is not in the table is an error, so are values of the wrong type or out of
 * bounds. Defaults, reload checks and the docs all follow the same table.
 *
 * The parser works on a buffer so it can be fuzzed (tests/fuzz/fuzz-conf.c); conf_load() only reads
 * the file. Nothing here logs (STYLE R15): errors come back as text for main.c to print.
 */
#include "conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <idbroker/ctl-proto.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "limits.h"

/* Validation bounds, not buffer caps: the file itself is capped at CONF_MAX_FILE_BYTES. */
#define CONF_PATH_MAX 4095 /* PATH_MAX - 1 */
#define CONF_URL_MAX 2048
#define CONF_NODE_NAME_MAX 253    /* a Kubernetes node name is a DNS subdomain */
#define CONF_PROVIDER_NAME_MAX 63 /* "<name>.so" stays a short file name */
#define CONF_KEY_PATH_MAX 128     /* longer than any key in the table */
#define CONF_NAMESPACE_MAX 63     /* a Kubernetes namespace name is a DNS label */
#define CONF_MAX_NAMES 1024       /* entries of one IT_NAMESPACES list */
#define CONF_QUOTE_MAX 80         /* a bad value or key is quoted up to this many bytes */
#define HOST_NAME_BUF 256

enum item_type {
    IT_SECTION,     /* an object; its members are the items "<key>.<member>" */
    IT_BOOL,        /* bool */
    IT_UINT32,      /* uint32_t in [min, max] */
    IT_PATH,        /* char *: absolute path ("" too with .empty_ok) */
    IT_SOCKET_PATH, /* char *: absolute path that fits sockaddr_un.sun_path */
    IT_FILE,        /* char *: non-empty path, relative to the broker's working directory or not */
    IT_NODE_NAME,   /* char *: DNS subdomain */
    IT_URL,         /* char *: http:// or https:// URL */
    IT_LISTEN,      /* char *: conf_parse_listen() accepts it */
    IT_LOG_LEVEL,   /* int: syslog level, log_level_from_string() */
    IT_LOG_FORMAT,  /* int: enum log_format, log_format_from_string() */
    IT_ENUM,        /* an enum field named by a string: it->names[value] */
    IT_NAMESPACES,  /* struct conf_names: an array of namespace names */
    IT_PROVIDERS,   /* providers / n_providers */
    IT_TYPE_PROVIDERS, /* type_providers[] */
};

struct conf_item {
    const char *key; /* path from the top, '.'-separated */
    enum item_type type;
    size_t offset;            /* into struct broker_conf; unused for IT_SECTION */
    uint32_t min, max;        /* IT_UINT32 */
    uint32_t def_num;         /* default of IT_BOOL, IT_UINT32, IT_LOG_*, IT_ENUM */
    const char *const *names; /* IT_ENUM: NULL-terminated, the index is the enum value */
    const char *def_str;      /* default of string items; NULL = none (or computed: nodeName) */
    bool restart;  /* a changed value takes effect only on restart (conf_restart_key()) */
    bool nullable; /* null means the default: for defaults that are computed, absent or built in */
    bool empty_ok; /* IT_PATH: "" is accepted (it turns the feature off) */
};

#define OFF(f) offsetof(struct broker_conf, f)

/* IT_ENUM fields are enums with small non-negative values, stored as (unsigned) int. */
static const char *const source_kinds[] = {
    [SOURCE_FILES] = "files", [SOURCE_KUBERNETES] = "kubernetes", NULL};
static const char *const isolations[] = {
    [PROVIDER_ISOLATION_PROCESS] = "process", [PROVIDER_ISOLATION_INLINE] = "inline", NULL};

/* Keep in step with conf/idbrokerd.json and docs/configuration.md. */
static const struct conf_item items[] = {
    {"nodeName", IT_NODE_NAME, OFF(node_name), .restart = true, .nullable = true},
    {"listen", IT_LISTEN, OFF(listen), .def_str = CONF_DEFAULT_LISTEN, .restart = true},
    {"healthListen", IT_LISTEN, OFF(health_listen), .def_str = CONF_DEFAULT_HEALTH_LISTEN,
     .restart = true},
    {"controlSocket", IT_SOCKET_PATH, OFF(control_socket), .def_str = IDB_CTL_DEFAULT_SOCKET,
     .restart = true},
    {"stateDir", IT_PATH, OFF(state_dir), .def_str = "/var/lib/idbroker", .restart = true},
    {"pluginDir", IT_PATH, OFF(plugin_dir), .def_str = IDB_DEFAULT_PLUGIN_DIR, .restart = true,
     .nullable = true},

    {"source", IT_SECTION, .offset = 0},
    {"source.kind", IT_ENUM, OFF(source_kind), .def_num = SOURCE_FILES, .names = source_kinds,
     .restart = true},
    {"source.dir", IT_PATH, OFF(source_dir), .def_str = "/etc/idbroker/identities",
     .restart = true},
    {"source.kubeconfig", IT_FILE, OFF(kubeconfig), .restart = true, .nullable = true},
    {"source.pollIntervalMs", IT_UINT32, OFF(source_poll_ms), .min = 100, .max = 60000,
     .def_num = 1000},

    {"providers", IT_PROVIDERS, .offset = 0},
    {"typeProviders", IT_TYPE_PROVIDERS, .offset = 0},
    {"providerIsolation", IT_ENUM, OFF(provider_isolation), .def_num = PROVIDER_ISOLATION_PROCESS,
     .names = isolations, .restart = true},

    {"namespaced", IT_BOOL, OFF(namespaced), .def_num = true},
    {"strictSelection", IT_BOOL, OFF(strict_selection), .def_num = false},
    {"exceptions", IT_BOOL, OFF(exceptions), .def_num = false},

    {"log", IT_SECTION, .offset = 0},
    {"log.level", IT_LOG_LEVEL, OFF(log_level), .def_num = IDB_LOG_INFO},
    {"log.format", IT_LOG_FORMAT, OFF(log_format), .def_num = LOG_FORMAT_JSON},
    {"log.audit", IT_BOOL, OFF(log_audit), .def_num = true},

    {"syncTimeoutMs", IT_UINT32, OFF(sync_timeout_ms), .min = 0, .max = 60000, .def_num = 5000},
    {"providerTimeoutMs", IT_UINT32, OFF(provider_timeout_ms), .min = 100, .max = 120000,
     .def_num = 10000},
    {"retryAfterSeconds", IT_UINT32, OFF(retry_after_s), .min = 1, .max = 3600, .def_num = 5},

    {"cache", IT_SECTION, .offset = 0},
    {"cache.maxEntries", IT_UINT32, OFF(cache_max_entries), .min = 1, .max = 1u << 22,
     .def_num = TOKEN_CACHE_DEFAULT_MAX_ENTRIES, .restart = true},
    {"cache.minTtlSeconds", IT_UINT32, OFF(cache_min_ttl_s), .min = 0, .max = 86400,
     .def_num = 300},
    {"cache.negativeTtlMs", IT_UINT32, OFF(cache_negative_ms), .min = 0, .max = 60000,
     .def_num = 2000},

    {"rateLimit", IT_SECTION, .offset = 0},
    {"rateLimit.requestsPerSecond", IT_UINT32, OFF(rate_per_pod), .min = 0, .max = 1000000,
     .def_num = 20},
    {"rateLimit.burst", IT_UINT32, OFF(rate_burst), .min = 1, .max = 1000000, .def_num = 40},

    {"metadataProxy", IT_SECTION, .offset = 0},
    {"metadataProxy.instance", IT_BOOL, OFF(proxy_instance), .def_num = false, .restart = true},
    {"metadataProxy.versions", IT_BOOL, OFF(proxy_versions), .def_num = false, .restart = true},
    {"metadataProxy.instanceNamespaces", IT_NAMESPACES, OFF(instance_namespaces), .restart = true},
    {"metadataProxy.versionsNamespaces", IT_NAMESPACES, OFF(versions_namespaces), .restart = true},
    {"metadataProxy.endpoint", IT_URL, OFF(imds_endpoint), .def_str = "http://169.254.169.254"},

    {"cni", IT_SECTION, .offset = 0},
    {"cni.confDir", IT_PATH, OFF(cni_conf_dir), .def_str = "/etc/cni/net.d", .restart = true,
     .empty_ok = true},

    {"http", IT_SECTION, .offset = 0},
    {"http.maxConnections", IT_UINT32, OFF(http_max_connections), .min = 1, .max = 65536,
     .def_num = HTTP_MAX_CONNECTIONS, .restart = true},
    {"http.maxConnectionsPerPod", IT_UINT32, OFF(http_max_per_ip), .min = 1, .max = 65536,
     .def_num = HTTP_MAX_CONNECTIONS_PER_IP, .restart = true},
    {"http.timeoutSeconds", IT_UINT32, OFF(http_timeout_s), .min = 1, .max = 3600,
     .def_num = HTTP_CONN_TIMEOUT_S, .restart = true},
    {"http.threads", IT_UINT32, OFF(http_threads), .min = 0, .max = 64, .def_num = HTTP_THREADS,
     .restart = true},
};

/* DESIGN §5: type 0 (user-assigned MSI) -> azure-msi; 1, 2 (service principal) -> keyvault. */
static const char *const default_type_providers[CONF_MAX_TYPES] = {"azure-msi", "keyvault",
                                                                   "keyvault"};

#define FIELD(c, it, type) ((type *)(void *)((char *)(c) + (it)->offset))
#define CFIELD(c, it, type) ((const type *)(const void *)((const char *)(c) + (it)->offset))

struct parser {
    const char *file;         /* names the source in messages */
    struct broker_conf *conf; /* being filled; discarded on failure */
    char *error;              /* the first error, "FILE: ..." */
};

static int fail(struct parser *p, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first error as "FILE: <message>" and returns r. */
static int fail(struct parser *p, int r, const char *fmt, ...)
{
    if (p->error)
        return r;
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return r; /* out of memory: the caller gets r and no text */
    if (asprintf(&p->error, "%s: %s", p->file, msg) < 0)
        p->error = NULL;
    free(msg);
    return r;
}

/* Copies s to buf[size] for a message: bytes that could break the line or the quoting become '?',
 * and long text is cut (on a UTF-8 boundary) and ends in "...". */
static void quote_text(const char *s, char *buf, size_t size)
{
    size_t n = strlen(s), k = 0;
    bool cut = n > size - 1;
    if (cut) {
        n = size - 4;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[k++] = (ch < 0x20 || ch == 0x7f || ch == '\'') ? '?' : (char)ch;
    }
    if (cut) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
}

/* The value as JSON text (NULL is null), for "got '...'". */
static void quote_value(struct json_object *v, char *buf, size_t size)
{
    const char *s =
        json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    quote_text(s ? s : "?", buf, size);
}

static int fail_value(struct parser *p, const char *key, struct json_object *v, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));

/* "FILE: key 'KEY': expected <fmt>, got 'VALUE'" */
static int fail_value(struct parser *p, const char *key, struct json_object *v, const char *fmt,
                      ...)
{
    char qkey[CONF_QUOTE_MAX], qval[CONF_QUOTE_MAX];
    quote_text(key, qkey, sizeof(qkey));
    quote_value(v, qval, sizeof(qval));
    va_list ap;
    va_start(ap, fmt);
    char *expected = NULL;
    int n = vasprintf(&expected, fmt, ap);
    va_end(ap);
    if (n < 0)
        return fail(p, -EINVAL, "key '%s': bad value '%s'", qkey, qval);
    fail(p, -EINVAL, "key '%s': expected %s, got '%s'", qkey, expected, qval);
    free(expected);
    return -EINVAL;
}

static int fail_unknown(struct parser *p, const char *key)
{
    char qkey[CONF_QUOTE_MAX];
    quote_text(key, qkey, sizeof(qkey));
    return fail(p, -EINVAL, "unknown key '%s'", qkey);
}

static const struct conf_item *find_item(const char *key)
{
    for (size_t i = 0; i < ELEMENTSOF(items); i++)
        if (streq(items[i].key, key))
            return &items[i];
    return NULL;
}

/* Replaces the string at *slot; takes `s` (may be NULL). */
static void set_str(char **slot, char *s)
{
    free(*slot);
    *slot = s;
}

static bool valid_provider_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONF_PROVIDER_NAME_MAX)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

/* A Kubernetes node name: lower-case letters, digits, '-' and '.', starting and ending
 * alphanumeric. */
static bool valid_node_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONF_NODE_NAME_MAX)
        return false;
    if (strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-.") != n)
        return false;
    return s[0] != '-' && s[0] != '.' && s[n - 1] != '-' && s[n - 1] != '.';
}

/* A Kubernetes namespace name: a DNS label (RFC 1123). */
static bool valid_namespace(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONF_NAMESPACE_MAX)
        return false;
    if (strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") != n)
        return false;
    return s[0] != '-' && s[n - 1] != '-';
}

static bool has_control_chars(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static bool valid_abs_path(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n > 0 && n <= max && s[0] == '/' && !has_control_chars(s);
}

static bool valid_url(const char *s)
{
    size_t n = strlen(s);
    const char *rest = NULL;
    if (strncmp(s, "http://", 7) == 0)
        rest = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        rest = s + 8;
    if (!rest || !*rest || *rest == '/' || n > CONF_URL_MAX || has_control_chars(s))
        return false;
    return !strchr(s, ' ');
}

/* The host name as a node name: kubelet registers the lower-cased host name by default. */
static int node_name_from_host(char **ret)
{
    char host[HOST_NAME_BUF] = "";
    if (gethostname(host, sizeof(host) - 1) < 0)
        return -errno;
    host[sizeof(host) - 1] = '\0';
    if (!host[0])
        return -ENXIO;
    for (char *q = host; *q; q++)
        if (*q >= 'A' && *q <= 'Z')
            *q = (char)(*q - 'A' + 'a');
    char *s = strdup(host);
    if (!s)
        return -ENOMEM;
    *ret = s;
    return 0;
}

static void providers_free(struct provider_conf *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].name);
        if (list[i].json) {
            /* A third-party provider may carry a secret in its object (STYLE R10). */
            explicit_bzero(list[i].json, strlen(list[i].json));
            free(list[i].json);
        }
    }
    free(list);
}

static void names_done(struct conf_names *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

struct broker_conf *conf_free(struct broker_conf *c)
{
    if (!c)
        return NULL;
    for (size_t i = 0; i < ELEMENTSOF(items); i++) {
        switch (items[i].type) {
        case IT_PATH:
        case IT_SOCKET_PATH:
        case IT_FILE:
        case IT_NODE_NAME:
        case IT_URL:
        case IT_LISTEN:
            free(*FIELD(c, &items[i], char *));
            break;
        case IT_NAMESPACES:
            names_done(FIELD(c, &items[i], struct conf_names));
            break;
        default:
            break;
        }
    }
    providers_free(c->providers, c->n_providers);
    for (size_t i = 0; i < CONF_MAX_TYPES; i++)
        free(c->type_providers[i]);
    free(c->path);
    free(c);
    return NULL;
}

/* Fills every item's default except nodeName, which is computed last (set_node_name()) so that a
 * configured name never needs gethostname(). */
static int set_defaults(struct broker_conf *c)
{
    for (size_t i = 0; i < ELEMENTSOF(items); i++) {
        const struct conf_item *it = &items[i];
        switch (it->type) {
        case IT_BOOL:
            *FIELD(c, it, bool) = it->def_num != 0;
            break;
        case IT_UINT32:
            *FIELD(c, it, uint32_t) = it->def_num;
            break;
        case IT_LOG_LEVEL:
        case IT_LOG_FORMAT:
            *FIELD(c, it, int) = (int)it->def_num;
            break;
        case IT_ENUM:
            *FIELD(c, it, unsigned) = it->def_num;
            break;
        case IT_PATH:
        case IT_SOCKET_PATH:
        case IT_FILE:
        case IT_NODE_NAME:
        case IT_URL:
        case IT_LISTEN:
            if (it->def_str) {
                char *s = strdup(it->def_str);
                if (!s)
                    return -ENOMEM;
                set_str(FIELD(c, it, char *), s);
            }
            break;
        case IT_TYPE_PROVIDERS:
            for (size_t t = 0; t < CONF_MAX_TYPES; t++) {
                char *s = strdup(default_type_providers[t]);
                if (!s)
                    return -ENOMEM;
                set_str(&c->type_providers[t], s);
            }
            break;
        case IT_SECTION:
        case IT_NAMESPACES: /* default: none */
        case IT_PROVIDERS:
            break;
        }
    }
    return 0;
}

static int set_node_name(struct broker_conf *c)
{
    if (c->node_name)
        return 0;
    return node_name_from_host(&c->node_name);
}

int conf_new_default(struct broker_conf **ret)
{
    struct broker_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int r = -ENOMEM;
    c->path = strdup("<defaults>");
    if (!c->path)
        goto out;
    r = set_defaults(c);
    if (r < 0)
        goto out;
    r = set_node_name(c);
    if (r < 0)
        goto out;
    *ret = TAKE_PTR(c);
    r = 0;
out:
    conf_free(c);
    return r;
}

/* The string value of v, or NULL if v is not a string or holds a NUL byte. */
static const char *get_string(struct json_object *v)
{
    if (!json_object_is_type(v, json_type_string))
        return NULL;
    const char *s = json_object_get_string(v);
    if (strlen(s) != (size_t)json_object_get_string_len(v))
        return NULL;
    return s;
}

static int apply_object(struct parser *p, struct json_object *obj, const char *prefix);

static int apply_providers(struct parser *p, const char *key, struct json_object *v)
{
    struct broker_conf *c = p->conf;
    if (!json_object_is_type(v, json_type_object))
        return fail_value(p, key, v, "an object");

    /* json-c merges repeated keys, so the member count bounds the list. */
    size_t n = (size_t)json_object_object_length(v);
    struct provider_conf *list = n ? calloc(n, sizeof(*list)) : NULL;
    if (n && !list)
        return fail(p, -ENOMEM, "out of memory");
    providers_free(c->providers, c->n_providers);
    c->providers = list;
    c->n_providers = 0;

    struct json_object_iterator i = json_object_iter_begin(v), end = json_object_iter_end(v);
    for (; !json_object_iter_equal(&i, &end) && c->n_providers < n; json_object_iter_next(&i)) {
        const char *name = json_object_iter_peek_name(&i);
        struct json_object *pv = json_object_iter_peek_value(&i);
        if (!valid_provider_name(name)) {
            char qname[CONF_QUOTE_MAX];
            quote_text(name, qname, sizeof(qname));
            return fail(p, -EINVAL,
                        "key '%s': invalid provider name '%s', expected [a-z0-9-]+ of at most %d "
                        "characters",
                        key, qname, CONF_PROVIDER_NAME_MAX);
        }
        char pkey[CONF_KEY_PATH_MAX];
        int k = snprintf(pkey, sizeof(pkey), "%s.%s", key, name);
        if (k < 0 || (size_t)k >= sizeof(pkey)) /* cannot happen: both are short */
            return fail_unknown(p, pkey);
        if (!json_object_is_type(pv, json_type_object))
            return fail_value(p, pkey, pv, "an object");
        const char *text = json_object_to_json_string_ext(pv, JSON_C_TO_STRING_PLAIN |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE);
        struct provider_conf *pc = &list[c->n_providers];
        pc->name = strdup(name);
        pc->json = text ? strdup(text) : NULL;
        c->n_providers++; /* counted before the check, so conf_free() frees what was set */
        if (!pc->name || !pc->json)
            return fail(p, -ENOMEM, "out of memory");
    }
    return 0;
}

static int apply_type_providers(struct parser *p, const char *key, struct json_object *v)
{
    struct broker_conf *c = p->conf;
    if (!json_object_is_type(v, json_type_object))
        return fail_value(p, key, v, "an object");

    struct json_object_iterator i = json_object_iter_begin(v), end = json_object_iter_end(v);
    for (; !json_object_iter_equal(&i, &end); json_object_iter_next(&i)) {
        const char *type = json_object_iter_peek_name(&i);
        struct json_object *tv = json_object_iter_peek_value(&i);
        char tkey[CONF_KEY_PATH_MAX];
        int n = snprintf(tkey, sizeof(tkey), "%s.%s", key, type);
        if (n < 0 || (size_t)n >= sizeof(tkey) || strlen(type) != 1 || type[0] < '0' ||
            type[0] >= '0' + CONF_MAX_TYPES)
            return fail_unknown(p, tkey);
        const char *name = get_string(tv);
        if (!name || !valid_provider_name(name))
            return fail_value(p, tkey, tv, "a provider name ([a-z0-9-]+)");
        char *s = strdup(name);
        if (!s)
            return fail(p, -ENOMEM, "out of memory");
        set_str(&c->type_providers[type[0] - '0'], s);
    }
    return 0;
}

static int apply_namespaces(struct parser *p, const struct conf_item *it, const char *key,
                            struct json_object *v)
{
    if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) > CONF_MAX_NAMES)
        return fail_value(p, key, v, "an array of at most %d namespace names", CONF_MAX_NAMES);
    struct conf_names *l = FIELD(p->conf, it, struct conf_names);
    names_done(l);
    size_t n = json_object_array_length(v);
    if (n == 0)
        return 0;
    l->v = calloc(n, sizeof(*l->v));
    if (!l->v)
        return fail(p, -ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(v, i);
        const char *s = get_string(e);
        if (!s || !valid_namespace(s)) {
            char ekey[CONF_KEY_PATH_MAX];
            snprintf(ekey, sizeof(ekey), "%s[%zu]", key, i);
            return fail_value(p, ekey, e, "a namespace name ([a-z0-9-], at most %d characters)",
                              CONF_NAMESPACE_MAX);
        }
        l->v[i] = strdup(s);
        if (!l->v[i])
            return fail(p, -ENOMEM, "out of memory");
        l->n = i + 1; /* counted as set, so conf_free() frees what was set */
    }
    return 0;
}

/* Applies one value to the item `it`; `key` is its path as written in the file. */
static int apply_item(struct parser *p, const struct conf_item *it, const char *key,
                      struct json_object *v)
{
    struct broker_conf *c = p->conf;
    const char *s = NULL;

    if (it->nullable && json_object_is_type(v, json_type_null)) {
        /* Only string items are nullable; nodeName's NULL is filled in by set_node_name(). */
        char *def = NULL;
        if (it->def_str) {
            def = strdup(it->def_str);
            if (!def)
                return fail(p, -ENOMEM, "out of memory");
        }
        set_str(FIELD(c, it, char *), def);
        return 0;
    }

    switch (it->type) {
    case IT_SECTION:
        if (!json_object_is_type(v, json_type_object))
            return fail_value(p, key, v, "an object");
        return apply_object(p, v, it->key);

    case IT_PROVIDERS:
        return apply_providers(p, key, v);

    case IT_TYPE_PROVIDERS:
        return apply_type_providers(p, key, v);

    case IT_NAMESPACES:
        return apply_namespaces(p, it, key, v);

    case IT_BOOL:
        if (!json_object_is_type(v, json_type_boolean))
            return fail_value(p, key, v, "a boolean");
        *FIELD(c, it, bool) = json_object_get_boolean(v);
        return 0;

    case IT_UINT32: {
        /* Doubles (1.0, 1e3) are refused; json-c clamps huge integers, which are out of range
         * anyway. */
        bool is_int = json_object_is_type(v, json_type_int);
        int64_t n = is_int ? json_object_get_int64(v) : -1;
        if (!is_int || n < (int64_t)it->min || n > (int64_t)it->max)
            return fail_value(p, key, v, "an integer in %" PRIu32 "..%" PRIu32, it->min, it->max);
        *FIELD(c, it, uint32_t) = (uint32_t)n;
        return 0;
    }

    case IT_LOG_LEVEL: {
        s = get_string(v);
        int level = s ? log_level_from_string(s) : -EINVAL;
        if (level < 0)
            return fail_value(p, key, v, "one of 'err', 'warning', 'notice', 'info', 'debug'");
        *FIELD(c, it, int) = level;
        return 0;
    }

    case IT_LOG_FORMAT: {
        s = get_string(v);
        int format = s ? log_format_from_string(s) : -EINVAL;
        if (format < 0)
            return fail_value(p, key, v, "one of 'json', 'text'");
        *FIELD(c, it, int) = format;
        return 0;
    }

    case IT_ENUM:
        s = get_string(v);
        for (unsigned i = 0; s && it->names[i]; i++)
            if (streq(s, it->names[i])) {
                *FIELD(c, it, unsigned) = i;
                return 0;
            }
        {
            char want[128] = "one of ";
            for (unsigned i = 0; it->names[i]; i++)
                snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s'%s'", i ? ", " : "",
                         it->names[i]);
            return fail_value(p, key, v, "%s", want);
        }

    case IT_FILE:
        s = get_string(v);
        if (!s || !*s || strlen(s) > CONF_PATH_MAX || has_control_chars(s))
            return fail_value(p, key, v, "a non-empty path%s", it->nullable ? " or null" : "");
        break;

    case IT_NODE_NAME:
        s = get_string(v);
        if (!s || !valid_node_name(s))
            return fail_value(p, key, v, "a node name ([a-z0-9.-], at most %d characters)%s",
                              CONF_NODE_NAME_MAX, it->nullable ? " or null" : "");
        break;

    case IT_PATH:
        s = get_string(v);
        if (!s || (!valid_abs_path(s, CONF_PATH_MAX) && !(it->empty_ok && !*s)))
            return fail_value(p, key, v, "an absolute path%s",
                              it->nullable   ? " or null"
                              : it->empty_ok ? " or \"\" (off)"
                                             : "");
        break;

    case IT_SOCKET_PATH: {
        const size_t max = sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1;
        s = get_string(v);
        if (!s || !valid_abs_path(s, max))
            return fail_value(p, key, v, "an absolute path of at most %zu bytes", max);
        break;
    }

    case IT_URL:
        s = get_string(v);
        if (!s || !valid_url(s))
            return fail_value(p, key, v, "an http:// or https:// URL");
        break;

    case IT_LISTEN:
        s = get_string(v);
        if (!s || conf_parse_listen(s, NULL, NULL) < 0)
            return fail_value(p, key, v, "an address 'IPv4:PORT' or '[IPv6]:PORT'");
        break;
    }

    /* The string items end here, with s validated. */
    char *copy = strdup(s);
    if (!copy)
        return fail(p, -ENOMEM, "out of memory");
    set_str(FIELD(c, it, char *), copy);
    return 0;
}

/* Applies every member of obj; prefix is the path of obj (NULL at the top). */
static int apply_object(struct parser *p, struct json_object *obj, const char *prefix)
{
    struct json_object_iterator i = json_object_iter_begin(obj), end = json_object_iter_end(obj);
    for (; !json_object_iter_equal(&i, &end); json_object_iter_next(&i)) {
        const char *name = json_object_iter_peek_name(&i);
        char key[CONF_KEY_PATH_MAX];
        int n = prefix ? snprintf(key, sizeof(key), "%s.%s", prefix, name)
                       : snprintf(key, sizeof(key), "%s", name);
        if (n < 0)
            return fail(p, -EINVAL, "unknown key");
        /* A member named "cache.maxEntries" is not the key cache.maxEntries: names hold no dots. */
        const struct conf_item *it = NULL;
        if ((size_t)n < sizeof(key) && name[0] && !strchr(name, '.'))
            it = find_item(key);
        if (!it)
            return fail_unknown(p, key); /* a cut key is shown with "..." */
        int r = apply_item(p, it, key, json_object_iter_peek_value(&i));
        if (r < 0)
            return r;
    }
    return 0;
}

static bool is_json_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* 1-based line and column of text[off]. */
static void position(const char *text, size_t off, unsigned *ret_line, unsigned *ret_col)
{
    unsigned line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    *ret_line = line;
    *ret_col = col;
}

/*
 * A syntax check to RFC 8259, run before json-c: even in strict mode json-c accepts single-quoted
 * keys and NaN/Infinity, and a provider's object is handed on as text, so the file must be plain
 * JSON. It also finds what follows the object (json-c stops quietly at a NUL byte). UTF-8 is left
 * to json-c's JSON_TOKENER_VALIDATE_UTF8. Recursion is bounded by CONF_MAX_DEPTH.
 */
struct scan {
    const char *s;
    size_t len, pos;
    int depth;
    const char *why; /* set on failure */
    bool too_deep, trailing, oom;
    /* Members of each object, in document order of their '{': json-c merges repeated keys, so a
     * count that json-c's tree does not match finds them (find_duplicates()). */
    uint32_t *members;
    size_t n_objects, cap_objects;
};

/* Starts counting a new object; returns its index, or (size_t)-1 without memory. */
static size_t scan_new_object(struct scan *sc)
{
    if (sc->n_objects == sc->cap_objects) {
        size_t cap = sc->cap_objects ? sc->cap_objects * 2 : 64;
        uint32_t *m = realloc(sc->members, cap * sizeof(*m));
        if (!m)
            return (size_t)-1;
        sc->members = m;
        sc->cap_objects = cap;
    }
    sc->members[sc->n_objects] = 0;
    return sc->n_objects++;
}

static int scan_peek(const struct scan *sc)
{
    return sc->pos < sc->len ? (unsigned char)sc->s[sc->pos] : -1;
}

static void scan_ws(struct scan *sc)
{
    while (sc->pos < sc->len && is_json_space(sc->s[sc->pos]))
        sc->pos++;
}

static bool scan_fail(struct scan *sc, const char *why)
{
    sc->why = why;
    return false;
}

/* A key must not hold \u0000: json-c would cut it there, so "a\u0000b" would act as "a". */
static bool scan_string(struct scan *sc, bool key)
{
    sc->pos++; /* the opening quote */
    for (;;) {
        int ch = scan_peek(sc);
        if (ch < 0)
            return scan_fail(sc, "unterminated string");
        if (ch == '"') {
            sc->pos++;
            return true;
        }
        if (ch < 0x20)
            return scan_fail(sc, "control character in string");
        sc->pos++;
        if (ch != '\\')
            continue;
        ch = scan_peek(sc);
        if (ch < 0)
            return scan_fail(sc, "unterminated string");
        if (ch == 'u') {
            sc->pos++;
            if (key && sc->len - sc->pos >= 4 && memcmp(sc->s + sc->pos, "0000", 4) == 0)
                return scan_fail(sc, "\\u0000 in a key");
            for (int i = 0; i < 4; i++, sc->pos++) {
                ch = scan_peek(sc);
                if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                      (ch >= 'A' && ch <= 'F')))
                    return scan_fail(sc, "bad \\u escape");
            }
        } else if (ch != 0 && strchr("\"\\/bfnrt", ch)) {
            sc->pos++;
        } else {
            return scan_fail(sc, "bad escape in string");
        }
    }
}

static bool scan_digits(struct scan *sc)
{
    size_t start = sc->pos;
    while (scan_peek(sc) >= '0' && scan_peek(sc) <= '9')
        sc->pos++;
    return sc->pos > start;
}

static bool scan_number(struct scan *sc)
{
    if (scan_peek(sc) == '-')
        sc->pos++;
    if (scan_peek(sc) == '0')
        sc->pos++;
    else if (!scan_digits(sc))
        return scan_fail(sc, "bad number");
    if (scan_peek(sc) == '.') {
        sc->pos++;
        if (!scan_digits(sc))
            return scan_fail(sc, "bad number");
    }
    if (scan_peek(sc) == 'e' || scan_peek(sc) == 'E') {
        sc->pos++;
        if (scan_peek(sc) == '+' || scan_peek(sc) == '-')
            sc->pos++;
        if (!scan_digits(sc))
            return scan_fail(sc, "bad number");
    }
    return true;
}

static bool scan_word(struct scan *sc, const char *word)
{
    size_t n = strlen(word);
    if (sc->len - sc->pos < n || memcmp(sc->s + sc->pos, word, n) != 0)
        return scan_fail(sc, "unexpected character");
    sc->pos += n;
    return true;
}

static bool scan_value(struct scan *sc);

/* An object or array; `close` is '}' or ']'. */
static bool scan_container(struct scan *sc, int close)
{
    if (++sc->depth > CONF_MAX_DEPTH) {
        sc->too_deep = true;
        return scan_fail(sc, "nested too deep");
    }
    size_t obj = 0;
    if (close == '}') {
        obj = scan_new_object(sc);
        if (obj == (size_t)-1) {
            sc->oom = true;
            return scan_fail(sc, "out of memory");
        }
    }
    sc->pos++;
    scan_ws(sc);
    if (scan_peek(sc) == close) {
        sc->pos++;
        sc->depth--;
        return true;
    }
    for (;;) {
        if (close == '}') {
            scan_ws(sc);
            if (scan_peek(sc) != '"')
                return scan_fail(sc, "expected a double-quoted key");
            if (!scan_string(sc, true))
                return false;
            scan_ws(sc);
            if (scan_peek(sc) != ':')
                return scan_fail(sc, "expected ':'");
            sc->pos++;
            sc->members[obj]++;
        }
        if (!scan_value(sc))
            return false;
        scan_ws(sc);
        int ch = scan_peek(sc);
        if (ch == close) {
            sc->pos++;
            sc->depth--;
            return true;
        }
        if (ch != ',')
            return scan_fail(sc, ch < 0         ? "unexpected end of input"
                                 : close == '}' ? "expected ',' or '}'"
                                                : "expected ',' or ']'");
        sc->pos++;
    }
}

static bool scan_value(struct scan *sc)
{
    scan_ws(sc);
    int ch = scan_peek(sc);
    switch (ch) {
    case '{':
    case '[':
        return scan_container(sc, ch == '{' ? '}' : ']');
    case '"':
        return scan_string(sc, false);
    case 't':
        return scan_word(sc, "true");
    case 'f':
        return scan_word(sc, "false");
    case 'n':
        return scan_word(sc, "null");
    case -1:
        return scan_fail(sc, "unexpected end of input");
    default:
        if (ch == '-' || (ch >= '0' && ch <= '9'))
            return scan_number(sc);
        return scan_fail(sc, "unexpected character");
    }
}

/* Walks v in document order beside the scan's member counts. Returns false at the first object that
 * has fewer members than its text: it repeats a key. path[size] holds v's key path, and on false
 * the path of that object. */
static bool members_match(struct json_object *v, const struct scan *sc, size_t *next, char *path,
                          size_t size)
{
    size_t n = strlen(path);
    if (json_object_is_type(v, json_type_object)) {
        if (*next >= sc->n_objects || sc->members[*next] != (uint32_t)json_object_object_length(v))
            return false;
        (*next)++;
        struct json_object_iterator i = json_object_iter_begin(v), end = json_object_iter_end(v);
        for (; !json_object_iter_equal(&i, &end); json_object_iter_next(&i)) {
            snprintf(path + n, size - n, "%s%s", n ? "." : "", json_object_iter_peek_name(&i));
            if (!members_match(json_object_iter_peek_value(&i), sc, next, path, size))
                return false;
            path[n] = '\0';
        }
    } else if (json_object_is_type(v, json_type_array)) {
        for (size_t k = 0; k < json_object_array_length(v); k++) {
            snprintf(path + n, size - n, "[%zu]", k);
            if (!members_match(json_object_array_get_idx(v, k), sc, next, path, size))
                return false;
            path[n] = '\0';
        }
    }
    return true;
}

/* Parses exactly one JSON object from text[0..len) into *ret (returns new). */
static int parse_json_scanned(struct parser *p, struct scan *sc, struct json_object **ret)
{
    const char *text = sc->s;
    size_t len = sc->len;
    unsigned line, col;

    scan_ws(sc);
    if (sc->pos == len)
        return fail(p, -EBADMSG, "empty file, expected a JSON object");
    if (text[sc->pos] != '{')
        return fail(p, -EBADMSG, "expected a JSON object");
    bool ok = scan_value(sc);
    if (ok) {
        scan_ws(sc);
        sc->trailing = sc->pos < len;
        ok = !sc->trailing;
    }
    if (!ok) {
        position(text, sc->pos, &line, &col);
        if (sc->oom)
            return fail(p, -ENOMEM, "out of memory");
        if (sc->too_deep)
            return fail(p, -EBADMSG,
                        "line %u, column %u: invalid JSON: nested deeper than %d levels", line, col,
                        CONF_MAX_DEPTH);
        if (sc->trailing)
            return fail(p, -EBADMSG, "line %u, column %u: unexpected data after the JSON object",
                        line, col);
        return fail(p, -EBADMSG, "line %u, column %u: invalid JSON: %s", line, col, sc->why);
    }

    /* The text is valid JSON; json-c builds the tree (and checks UTF-8). */
    /* json-c counts one level more than the scan: its stack holds the top value too. */
    struct json_tokener *tok = json_tokener_new_ex(CONF_MAX_DEPTH + 1);
    if (!tok)
        return fail(p, -ENOMEM, "out of memory");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *obj = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (end > len)
        end = len;
    bool rest = false; /* cannot happen after the scan; checked anyway, as its backstop */
    for (size_t k = end; k < len && !rest; k++)
        rest = !is_json_space(text[k]);
    if (!obj || rest) {
        json_object_put(obj);
        position(text, end, &line, &col);
        return fail(p, -EBADMSG, "line %u, column %u: invalid JSON: %s", line, col,
                    obj ? "unexpected data after the JSON object" : json_tokener_error_desc(e));
    }

    char path[CONF_KEY_PATH_MAX] = "";
    size_t next = 0;
    if (!members_match(obj, sc, &next, path, sizeof(path))) {
        json_object_put(obj);
        if (!path[0])
            return fail(p, -EINVAL, "duplicate key in the top-level object");
        char qpath[CONF_QUOTE_MAX];
        quote_text(path, qpath, sizeof(qpath));
        return fail(p, -EINVAL, "duplicate key in '%s'", qpath);
    }
    *ret = obj;
    return 0;
}

static int parse_json(struct parser *p, const char *text, size_t len, struct json_object **ret)
{
    struct scan sc = {.s = text, .len = len};
    int r = parse_json_scanned(p, &sc, ret);
    free(sc.members);
    return r;
}

static int parse(struct parser *p, const char *text, size_t len)
{
    if (len > CONF_MAX_FILE_BYTES)
        return fail(p, -E2BIG, "larger than %d bytes", CONF_MAX_FILE_BYTES);

    struct json_object *obj = NULL;
    int r = parse_json(p, text, len, &obj);
    if (r < 0)
        return r;

    r = -ENOMEM;
    p->conf = calloc(1, sizeof(*p->conf));
    if (p->conf)
        p->conf->path = strdup(p->file);
    if (!p->conf || !p->conf->path || set_defaults(p->conf) < 0) {
        r = fail(p, -ENOMEM, "out of memory");
        goto out;
    }
    r = apply_object(p, obj, NULL);
    if (r < 0)
        goto out;
    r = set_node_name(p->conf);
    if (r < 0)
        r = fail(p, r, "nodeName is not set and the host name is unusable: %s", idb_strerror(r));
out:
    json_object_put(obj);
    return r;
}

int conf_parse(const char *text, size_t len, const char *path, struct broker_conf **ret,
               char **ret_error)
{
    struct parser p = {.file = path ? path : "<config>"};
    int r = parse(&p, text, len);
    if (r < 0) {
        conf_free(p.conf);
        if (ret_error)
            *ret_error = TAKE_PTR(p.error);
        free(p.error);
        return r;
    }
    free(p.error); /* none on success; kept for symmetry */
    *ret = p.conf;
    return 0;
}

int conf_load(const char *path, struct broker_conf **ret, char **ret_error)
{
    int r, n;
    _cleanup_free_ char *data = NULL;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        goto fail;
    }
    /* One byte more than the cap tells "exactly at the cap" from "too large". */
    data = malloc(CONF_MAX_FILE_BYTES + 1);
    if (!data) {
        r = -ENOMEM;
        goto fail;
    }
    size_t len = 0;
    for (;;) {
        ssize_t k = read(fd, data + len, CONF_MAX_FILE_BYTES + 1 - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            r = -errno;
            goto fail;
        }
        if (k == 0)
            break;
        len += (size_t)k;
        if (len > CONF_MAX_FILE_BYTES) {
            r = -E2BIG;
            goto fail;
        }
    }
    return conf_parse(data, len, path, ret, ret_error);

fail:
    if (!ret_error)
        return r;
    if (r == -E2BIG)
        n = asprintf(ret_error, "cannot read '%s': larger than %d bytes", path,
                     CONF_MAX_FILE_BYTES);
    else
        n = asprintf(ret_error, "cannot read '%s': %s", path, idb_strerror(r));
    if (n < 0)
        *ret_error = NULL;
    return r;
}

const char *conf_type_provider(const struct broker_conf *c, int type)
{
    if (!c || type < 0 || type >= CONF_MAX_TYPES)
        return NULL;
    return c->type_providers[type];
}

const struct provider_conf *conf_find_provider(const struct broker_conf *c, const char *name)
{
    for (size_t i = 0; c && name && i < c->n_providers; i++)
        if (streq(c->providers[i].name, name))
            return &c->providers[i];
    return NULL;
}

bool conf_names_contain(const struct conf_names *list, const char *name)
{
    for (size_t i = 0; list && name && i < list->n; i++)
        if (streq(list->v[i], name))
            return true;
    return false;
}

static bool names_eq(const struct conf_names *a, const struct conf_names *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (!streq(a->v[i], b->v[i]))
            return false;
    return true;
}

static bool str_eq_null(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return streq(a, b);
}

const char *conf_restart_key(const struct broker_conf *old_conf, const struct broker_conf *new_conf)
{
    for (size_t i = 0; i < ELEMENTSOF(items); i++) {
        const struct conf_item *it = &items[i];
        bool same = true;
        if (!it->restart)
            continue;
        switch (it->type) {
        case IT_BOOL:
            same = *CFIELD(old_conf, it, bool) == *CFIELD(new_conf, it, bool);
            break;
        case IT_UINT32:
            same = *CFIELD(old_conf, it, uint32_t) == *CFIELD(new_conf, it, uint32_t);
            break;
        case IT_LOG_LEVEL:
        case IT_LOG_FORMAT:
            same = *CFIELD(old_conf, it, int) == *CFIELD(new_conf, it, int);
            break;
        case IT_ENUM:
            same = *CFIELD(old_conf, it, unsigned) == *CFIELD(new_conf, it, unsigned);
            break;
        case IT_PATH:
        case IT_SOCKET_PATH:
        case IT_FILE:
        case IT_NODE_NAME:
        case IT_URL:
        case IT_LISTEN:
            same = str_eq_null(*CFIELD(old_conf, it, char *), *CFIELD(new_conf, it, char *));
            break;
        case IT_NAMESPACES:
            same = names_eq(CFIELD(old_conf, it, struct conf_names),
                            CFIELD(new_conf, it, struct conf_names));
            break;
        case IT_SECTION:
        case IT_PROVIDERS:
        case IT_TYPE_PROVIDERS:
            break;
        }
        if (!same)
            return it->key;
    }
    return NULL;
}

/* Port: 1..65535, decimal digits only. */
static int parse_port(const char *s, uint16_t *ret)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5 || strspn(s, "0123456789") != n)
        return -EINVAL;
    unsigned long v = strtoul(s, NULL, 10);
    if (v < 1 || v > 65535)
        return -EINVAL;
    *ret = (uint16_t)v;
    return 0;
}

int conf_parse_listen(const char *s, struct sockaddr_storage *ret, unsigned *ret_len)
{
    char host[INET6_ADDRSTRLEN];
    const char *port_str;
    size_t host_len;
    bool v6 = s && s[0] == '[';

    if (!s)
        return -EINVAL;
    if (v6) {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        host_len = (size_t)(close - (s + 1));
        port_str = close + 2;
        s++;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon)
            return -EINVAL;
        host_len = (size_t)(colon - s);
        port_str = colon + 1;
    }
    if (host_len == 0 || host_len >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, host_len);
    host[host_len] = '\0';

    uint16_t port;
    if (parse_port(port_str, &port) < 0)
        return -EINVAL;

    struct sockaddr_storage ss;
    unsigned len;
    memset(&ss, 0, sizeof(ss));
    if (v6) {
        struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET6, host, &sa->sin6_addr) != 1)
            return -EINVAL;
        sa->sin6_family = AF_INET6;
        sa->sin6_port = htons(port);
        len = sizeof(*sa);
    } else {
        struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
        if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
            return -EINVAL;
        sa->sin_family = AF_INET;
        sa->sin_port = htons(port);
        len = sizeof(*sa);
    }
    if (ret)
        *ret = ss;
    if (ret_len)
        *ret_len = len;
    return 0;
}
