/* SPDX-License-Identifier: Apache-2.0 */
#include "conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker/ctl-proto.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

enum conf_type {
    CT_PATH,  /* non-empty string without NUL, into a char array of `size` */
    CT_IP,    /* IPv4 or IPv6 literal into struct reg_ip */
    CT_PORT,  /* integer 1..65535 into uint16_t */
    CT_LEVEL, /* log level name into int */
};

struct conf_item {
    const char *key;
    enum conf_type type;
    size_t offset;
    size_t size; /* CT_PATH: the destination's size */
};

#define PATH_ITEM(k, field)                                                                        \
    {                                                                                              \
        k, CT_PATH, offsetof(struct cni_conf, field), sizeof(((struct cni_conf *)0)->field)        \
    }

/* The plugin's own keys (DESIGN §6; docs/cni.md). Every key is optional. */
static const struct conf_item conf_items[] = {
    PATH_ITEM("brokerSocket", broker_socket),
    {"brokerAddress", CT_IP, offsetof(struct cni_conf, broker_address), 0},
    {"brokerPort", CT_PORT, offsetof(struct cni_conf, broker_port), 0},
    {"metadataAddress", CT_IP, offsetof(struct cni_conf, metadata_address), 0},
    {"metadataPort", CT_PORT, offsetof(struct cni_conf, metadata_port), 0},
    PATH_ITEM("stateDir", state_dir),
    PATH_ITEM("logFile", log_file),
    {"logLevel", CT_LEVEL, offsetof(struct cni_conf, log_level), 0},
};

static int bad_key(struct cni_error *err, const char *key, struct json_object *v, const char *want)
{
    const char *text = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    return cni_fail(err, CNI_ERR_INVALID_CONFIG, -EINVAL, "invalid network configuration",
                    "key '%s': expected %s, got '%.200s'", key, want, text ? text : "?");
}

static int apply_item(const struct conf_item *it, struct json_object *v, struct cni_conf *c,
                      struct cni_error *err)
{
    char *dst = (char *)c + it->offset;
    switch (it->type) {
    case CT_PATH: {
        if (!json_object_is_type(v, json_type_string))
            return bad_key(err, it->key, v, "a string");
        size_t n = (size_t)json_object_get_string_len(v);
        const char *s = json_object_get_string(v);
        if (n == 0 || n >= it->size || strlen(s) != n)
            return bad_key(err, it->key, v, "a non-empty path that fits");
        memcpy(dst, s, n + 1);
        return 0;
    }
    case CT_IP: {
        struct reg_ip ip;
        if (!json_object_is_type(v, json_type_string) ||
            reg_ip_parse(json_object_get_string(v), &ip) < 0)
            return bad_key(err, it->key, v, "an IPv4 or IPv6 address");
        memcpy(dst, &ip, sizeof(ip));
        return 0;
    }
    case CT_PORT: {
        if (!json_object_is_type(v, json_type_int))
            return bad_key(err, it->key, v, "a port number");
        int64_t p = json_object_get_int64(v);
        if (p < 1 || p > 65535)
            return bad_key(err, it->key, v, "a port number in 1..65535");
        uint16_t port = (uint16_t)p;
        memcpy(dst, &port, sizeof(port));
        return 0;
    }
    case CT_LEVEL: {
        int level = json_object_is_type(v, json_type_string)
                        ? log_level_from_string(json_object_get_string(v))
                        : -EINVAL;
        if (level < 0)
            return bad_key(err, it->key, v, "one of err, warning, notice, info, debug");
        memcpy(dst, &level, sizeof(level));
        return 0;
    }
    }
    return -EINVAL;
}

static int attachment_cmp(const void *a, const void *b)
{
    const struct conf_attachment *x = a, *y = b;
    int r = strcmp(x->container_id, y->container_id);
    return r ? r : strcmp(x->if_name, y->if_name);
}

/* cni.dev/valid-attachments: [{"containerID": "...", "ifname": "..."}]. Entries with ids that could
 * never be ours are kept out but are not errors: they only protect, never remove. */
static int parse_valid_attachments(struct json_object *a, struct cni_conf *c, struct cni_error *err)
{
    if (!json_object_is_type(a, json_type_array))
        return bad_key(err, "cni.dev/valid-attachments", a, "an array");
    size_t n = json_object_array_length(a);
    if (n > CONF_MAX_ATTACHMENTS)
        return bad_key(err, "cni.dev/valid-attachments", a, "at most 65536 entries");
    struct conf_attachment *v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(a, i);
        const char *cid = json_get_str(e, "containerID");
        const char *ifn = json_get_str(e, "ifname");
        if (!json_object_is_type(e, json_type_object) || !cid || !ifn) {
            free(v);
            return bad_key(err, "cni.dev/valid-attachments", e,
                           "objects with string containerID and ifname");
        }
        if (strlen(cid) > REG_MAX_ID || strlen(ifn) > REG_MAX_IFNAME)
            continue;
        memcpy(v[k].container_id, cid, strlen(cid) + 1);
        memcpy(v[k].if_name, ifn, strlen(ifn) + 1);
        k++;
    }
    qsort(v, k, sizeof(*v), attachment_cmp);
    c->valid = v;
    c->n_valid = k;
    c->has_valid = true;
    return 0;
}

static void conf_defaults(struct cni_conf *c)
{
    *c = (struct cni_conf){.broker_port = CONF_DEFAULT_BROKER_PORT,
                           .metadata_port = CONF_DEFAULT_METADATA_PORT,
                           .log_level = IDB_LOG_INFO,
                           .name = ""};
    snprintf(c->broker_socket, sizeof(c->broker_socket), "%s", IDB_CTL_DEFAULT_SOCKET);
    snprintf(c->state_dir, sizeof(c->state_dir), "%s", CONF_DEFAULT_STATE_DIR);
    (void)reg_ip_parse(CONF_DEFAULT_BROKER_ADDRESS, &c->broker_address);
    (void)reg_ip_parse(CONF_DEFAULT_METADATA_ADDRESS, &c->metadata_address);
}

int conf_parse(const char *text, size_t len, bool require_version, struct cni_conf *ret,
               struct cni_error *err)
{
    struct cni_conf c;
    conf_defaults(&c);

    const char *why = NULL;
    int r = json_parse_strict(text, len, &c.root, &why);
    if (r < 0)
        return cni_fail(err, CNI_ERR_DECODE, r, "cannot decode the network configuration", "%s",
                        why ? why : idb_strerror(r));
    if (!json_object_is_type(c.root, json_type_object)) {
        conf_done(&c);
        return cni_fail(err, CNI_ERR_DECODE, -EBADMSG, "cannot decode the network configuration",
                        "expected a JSON object");
    }

    struct json_object *v;
    if (json_object_object_get_ex(c.root, "cniVersion", &v)) {
        if (!json_object_is_type(v, json_type_string)) {
            r = bad_key(err, "cniVersion", v, "a string");
            goto fail;
        }
        c.cni_version = json_object_get_string(v);
    }
    if (require_version && !cni_version_supported(c.cni_version)) {
        r = cni_fail(err, CNI_ERR_INCOMPATIBLE_VERSION, -EPROTONOSUPPORT,
                     "incompatible CNI version",
                     "cniVersion '%s' is not one of 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0",
                     c.cni_version ? c.cni_version : "(none)");
        goto fail;
    }
    if (json_object_object_get_ex(c.root, "name", &v)) {
        if (!json_object_is_type(v, json_type_string)) {
            r = bad_key(err, "name", v, "a string");
            goto fail;
        }
        c.name = json_object_get_string(v);
    }
    if (json_object_object_get_ex(c.root, "prevResult", &v) &&
        !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_object)) {
            r = bad_key(err, "prevResult", v, "an object");
            goto fail;
        }
        c.prev_result = v;
    }
    for (size_t i = 0; i < ELEMENTSOF(conf_items); i++)
        if (json_object_object_get_ex(c.root, conf_items[i].key, &v)) {
            r = apply_item(&conf_items[i], v, &c, err);
            if (r < 0)
                goto fail;
        }

    /* The redirect is a DNAT, which cannot change the address family; and it must never point at
     * loopback (CVE-2020-8558: that would need route_localnet). */
    if (c.broker_address.family != c.metadata_address.family) {
        r = cni_fail(err, CNI_ERR_INVALID_CONFIG, -EINVAL, "invalid network configuration",
                     "brokerAddress and metadataAddress must be of the same address family");
        goto fail;
    }
    if ((c.broker_address.family == AF_INET && c.broker_address.addr.v4[0] == 127) ||
        (c.broker_address.family == AF_INET6 &&
         memcmp(c.broker_address.addr.v6, in6addr_loopback.s6_addr, 16) == 0)) {
        r = cni_fail(err, CNI_ERR_INVALID_CONFIG, -EINVAL, "invalid network configuration",
                     "brokerAddress must not be a loopback address");
        goto fail;
    }
    if (reg_ip_equal(&c.broker_address, &c.metadata_address)) {
        r = cni_fail(err, CNI_ERR_INVALID_CONFIG, -EINVAL, "invalid network configuration",
                     "brokerAddress must differ from metadataAddress");
        goto fail;
    }

    struct json_object *rc;
    if (json_object_object_get_ex(c.root, "runtimeConfig", &rc) &&
        json_object_object_get_ex(rc, "cni.dev/valid-attachments", &v)) {
        r = parse_valid_attachments(v, &c, err);
        if (r < 0)
            goto fail;
    } else if (json_object_object_get_ex(c.root, "cni.dev/valid-attachments", &v)) {
        /* Spec 1.1.0 puts the list at the top level of GC's input. */
        r = parse_valid_attachments(v, &c, err);
        if (r < 0)
            goto fail;
    }

    *ret = c;
    return 0;
fail:
    conf_done(&c);
    return r;
}

void conf_done(struct cni_conf *c)
{
    if (!c)
        return;
    if (c->root)
        json_object_put(c->root);
    free(c->valid);
    c->root = NULL;
    c->prev_result = NULL;
    c->cni_version = NULL;
    c->name = "";
    c->valid = NULL;
    c->n_valid = 0;
    c->has_valid = false;
}

static int parse_mac(const char *s, uint8_t ret[6])
{
    uint8_t m[6];
    for (int i = 0; i < 6; i++) {
        int v = 0;
        for (int j = 0; j < 2; j++) {
            char ch = *s++;
            int d = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (d < 0)
                return -EINVAL;
            v = v * 16 + d;
        }
        m[i] = (uint8_t)v;
        if (i < 5 && *s++ != ':')
            return -EINVAL;
    }
    if (*s)
        return -EINVAL;
    memcpy(ret, m, 6);
    return 0;
}

#define bad_prev(err, ...)                                                                         \
    cni_fail((err), CNI_ERR_INVALID_CONFIG, -EINVAL, "invalid prevResult", __VA_ARGS__)

/* "IP/len" -> address and prefix length. */
static int parse_cidr(const char *s, struct conf_ip *ret)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || (size_t)(slash - s) >= INET6_ADDRSTRLEN)
        return -EINVAL;
    char addr[INET6_ADDRSTRLEN];
    memcpy(addr, s, (size_t)(slash - s));
    addr[slash - s] = '\0';
    struct reg_ip ip;
    if (reg_ip_parse(addr, &ip) < 0)
        return -EINVAL;
    const char *p = slash + 1;
    int len = 0;
    if (!*p)
        return -EINVAL;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || len > 128)
            return -EINVAL;
        len = len * 10 + (*p - '0');
    }
    if (len > (ip.family == AF_INET ? 32 : 128))
        return -EINVAL;
    ret->addr = ip;
    ret->prefix_len = len;
    return 0;
}

int conf_from_list(const char *text, size_t len, char **ret, struct cni_error *err)
{
    *ret = NULL;
    _cleanup_json_ struct json_object *root = NULL;
    const char *why = NULL;
    int r = json_parse_strict(text, len, &root, &why);
    if (r < 0)
        return cni_fail(err, CNI_ERR_DECODE, r, "cannot decode the network configuration", "%s",
                        why ? why : idb_strerror(r));
    struct json_object *plugins;
    if (!json_object_is_type(root, json_type_object) ||
        !json_object_object_get_ex(root, "plugins", &plugins))
        return 0; /* not a list: a plugin configuration, parsed as such */
    if (!json_object_is_type(plugins, json_type_array))
        return bad_key(err, "plugins", plugins, "an array");
    struct json_object *entry = NULL;
    for (size_t i = 0; !entry && i < json_object_array_length(plugins); i++) {
        struct json_object *p = json_object_array_get_idx(plugins, i), *t;
        if (json_object_is_type(p, json_type_object) && json_object_object_get_ex(p, "type", &t) &&
            json_object_is_type(t, json_type_string) &&
            streq(json_object_get_string(t), "idbroker"))
            entry = p;
    }
    if (!entry)
        return cni_fail(err, CNI_ERR_INVALID_CONFIG, -ENOENT, "invalid network configuration",
                        "the list has no plugin of type 'idbroker'");
    _cleanup_json_ struct json_object *conf = NULL;
    if (json_object_deep_copy(entry, &conf, NULL) < 0)
        return -ENOMEM;
    /* As libcni gives them to every plugin of the list: the list's values win. */
    static const char *const inherited[] = {"name", "cniVersion"};
    for (size_t i = 0; i < ELEMENTSOF(inherited); i++) {
        struct json_object *v;
        json_object_object_del(conf, inherited[i]);
        if (json_object_object_get_ex(root, inherited[i], &v) &&
            json_object_object_add(conf, inherited[i], json_object_get(v)) < 0)
            return -ENOMEM;
    }
    char *out = strdup(json_object_to_json_string_ext(conf, JSON_C_TO_STRING_PLAIN));
    if (!out)
        return -ENOMEM;
    *ret = out;
    return 1;
}

int conf_parse_prev_result(struct json_object *prev, struct conf_prev_result *ret,
                           struct cni_error *err)
{
    if (!json_object_is_type(prev, json_type_object))
        return bad_prev(err, "%s", "prevResult is not an object");

    struct conf_prev_result *pr = calloc(1, sizeof(*pr));
    if (!pr)
        return -ENOMEM;
    _cleanup_free_ struct conf_prev_result *p = pr;
    struct json_object *a;

    if (json_object_object_get_ex(prev, "interfaces", &a) &&
        !json_object_is_type(a, json_type_null)) {
        if (!json_object_is_type(a, json_type_array))
            return bad_prev(err, "%s", "interfaces is not an array");
        size_t n = json_object_array_length(a);
        if (n > CONF_MAX_IFACES)
            return bad_prev(err, "%s", "too many interfaces");
        for (size_t i = 0; i < n; i++) {
            struct json_object *e = json_object_array_get_idx(a, i);
            struct conf_iface *f = &p->ifaces[i];
            const char *name = json_get_str(e, "name");
            if (!json_object_is_type(e, json_type_object) || !name || !*name ||
                strlen(name) >= sizeof(f->name) || strchr(name, '/'))
                return bad_prev(err, "%s", "an interface has no valid name");
            memcpy(f->name, name, strlen(name) + 1);
            const char *mac = json_get_str(e, "mac");
            if (mac && *mac) {
                if (parse_mac(mac, f->mac) < 0)
                    return bad_prev(err, "interface has a malformed mac '%.40s'", mac);
                f->has_mac = true;
            }
            const char *sandbox = json_get_str(e, "sandbox");
            f->in_sandbox = sandbox && *sandbox;
        }
        p->n_ifaces = n;
    }

    if (!json_object_object_get_ex(prev, "ips", &a) || !json_object_is_type(a, json_type_array) ||
        json_object_array_length(a) == 0)
        return bad_prev(err, "%s", "prevResult has no IP addresses");
    size_t n = json_object_array_length(a);
    if (n > CONF_MAX_RESULT_IPS)
        return bad_prev(err, "%s", "too many IP addresses");
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(a, i);
        struct conf_ip *ip = &p->ips[i];
        const char *addr = json_get_str(e, "address");
        if (!json_object_is_type(e, json_type_object) || !addr || parse_cidr(addr, ip) < 0)
            return bad_prev(err, "%s", "an IP entry has no valid address (IP/prefix)");
        /* 0.3.x/0.4.0 also carry "version": "4"|"6"; when present it must agree. */
        const char *ver = json_get_str(e, "version");
        if (ver && !((streq(ver, "4") && ip->addr.family == AF_INET) ||
                     (streq(ver, "6") && ip->addr.family == AF_INET6)))
            return bad_prev(err, "IP entry version '%.8s' does not match its address", ver);
        ip->iface = -1;
        struct json_object *idx;
        if (json_object_object_get_ex(e, "interface", &idx) &&
            !json_object_is_type(idx, json_type_null)) {
            int64_t k = json_object_is_type(idx, json_type_int) ? json_object_get_int64(idx) : -1;
            if (k < 0 || (size_t)k >= p->n_ifaces)
                return bad_prev(err, "%s", "an IP entry names an interface that is not listed");
            ip->iface = (int)k;
        }
    }
    p->n_ips = n;

    memcpy(ret, p, sizeof(*p));
    return 0;
}

static int set_arg(char *dst, size_t size, const char *key, const char *v, size_t n,
                   struct cni_error *err)
{
    if (n >= size || memchr(v, '\0', n))
        return cni_fail(err, CNI_ERR_INVALID_ENV, -EINVAL, "invalid CNI_ARGS",
                        "value of %s is too long", key);
    memcpy(dst, v, n);
    dst[n] = '\0';
    return 0;
}

int conf_parse_cni_args(const char *args, struct conf_pod *ret, struct cni_error *err)
{
    struct conf_pod pod;
    memset(&pod, 0, sizeof(pod));
    const char *s = args ? args : "";
    while (*s) {
        const char *end = strchr(s, ';');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        const char *eq = memchr(s, '=', n);
        if (n > 0) {
            if (!eq || eq == s)
                return cni_fail(err, CNI_ERR_INVALID_ENV, -EINVAL, "invalid CNI_ARGS",
                                "'%.*s' is not KEY=VALUE", (int)(n > 64 ? 64 : n), s);
            size_t kl = (size_t)(eq - s), vl = n - kl - 1;
            const char *v = eq + 1;
            int r = 0;
            if (kl == 17 && memcmp(s, "K8S_POD_NAMESPACE", kl) == 0)
                r = set_arg(pod.pod_namespace, sizeof(pod.pod_namespace), "K8S_POD_NAMESPACE", v,
                            vl, err);
            else if (kl == 12 && memcmp(s, "K8S_POD_NAME", kl) == 0)
                r = set_arg(pod.pod_name, sizeof(pod.pod_name), "K8S_POD_NAME", v, vl, err);
            else if (kl == 11 && memcmp(s, "K8S_POD_UID", kl) == 0)
                r = set_arg(pod.pod_uid, sizeof(pod.pod_uid), "K8S_POD_UID", v, vl, err);
            if (r < 0)
                return r;
        }
        if (!end)
            break;
        s = end + 1;
    }
    *ret = pod;
    return 0;
}

bool conf_attachment_valid(const struct cni_conf *c, const char *container_id, const char *if_name)
{
    struct conf_attachment key;
    memset(&key, 0, sizeof(key));
    if (!c->valid || strlen(container_id) > REG_MAX_ID || strlen(if_name) > REG_MAX_IFNAME)
        return false;
    memcpy(key.container_id, container_id, strlen(container_id) + 1);
    memcpy(key.if_name, if_name, strlen(if_name) + 1);
    return bsearch(&key, c->valid, c->n_valid, sizeof(key), attachment_cmp) != NULL;
}
