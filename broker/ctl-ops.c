/* SPDX-License-Identifier: Apache-2.0 */
/* The control socket's operations (include/idbroker/ctl-proto.h) over the running broker. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <idbroker/ctl-proto.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/registration.h>

#include "broker.h"
#include "conf.h"
#include "control.h"
#include "host-api.h"
#include "issuer.h"
#include "k8s-watch.h"
#include "metrics.h"
#include "plugin-loader.h"
#include "provider-client.h"
#include "registry.h"
#include "store.h"
#include "token-cache.h"
#include "token-endpoint.h"

static int set_error(char **ret_error, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_error(char **ret_error, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (ret_error && vasprintf(ret_error, fmt, ap) < 0)
        *ret_error = NULL;
    va_end(ap);
    return r;
}

/* "namespace" and "name" arguments, both required and non-empty. */
static int get_pod_args(struct json_object *req, const char **ret_ns, const char **ret_name,
                        char **ret_error)
{
    const char *ns = json_get_str(req, "namespace"), *name = json_get_str(req, "name");
    if (!ns || !name || !ns[0] || !name[0])
        return set_error(ret_error, -EINVAL, "arguments 'namespace' and 'name' are required");
    *ret_ns = ns;
    *ret_name = name;
    return 0;
}

static int op_status(void *ud, struct json_object *req, struct json_object **ret, char **ret_error)
{
    (void)req;
    (void)ret_error;
    struct broker *b = ud;
    _cleanup_json_ struct json_object *o = json_object_new_object();
    struct json_object *src = json_object_new_object(), *cache = json_object_new_object();
    if (!o || !src || !cache) {
        json_object_put(src);
        json_object_put(cache);
        return -ENOMEM;
    }
    char why[BROKER_WHY_MAX];
    bool ready = broker_ready(b, why, sizeof(why));
    pthread_mutex_lock(&b->reload_lock);
    json_add_str(o, "nodeName", b->conf->node_name);
    json_add_str(o, "version", IDB_VERSION);
    json_object_object_add(o, "ready", json_object_new_boolean(ready));
    if (!ready)
        json_add_str(o, "notReady", why);
    json_add_str(o, "listen", b->conf->listen);
    json_add_int(o, "uptimeSeconds", (int64_t)(time(NULL) - b->started));
    json_add_str(src, "kind", b->conf->source_kind == SOURCE_FILES ? "files" : "kubernetes");
    json_add_str(src, "dir", b->conf->source_kind == SOURCE_FILES ? b->conf->source_dir : NULL);
    json_add_int(src, "lastReload", (int64_t)b->last_reload);
    json_add_str(src, "lastError", b->last_error);
    pthread_mutex_unlock(&b->reload_lock);
    if (b->watch)
        json_object_object_add(src, "kubernetes", k8s_watch_status(b->watch));
    json_object_object_add(o, "source", src);
    json_add_int(o, "pods", (int64_t)registry_count(b->registry));
    if (b->unprotected)
        json_add_int(o, "unprotectedPods",
                     (int64_t)__atomic_load_n(&b->unprotected_pods, __ATOMIC_RELAXED));
    policy_read_lock(&b->policy);
    json_add_int(o, "identities", (int64_t)store_count_identities(b->policy.store));
    json_add_int(o, "bindings", (int64_t)store_count_bindings(b->policy.store));
    json_add_int(o, "exceptions", (int64_t)store_count_exceptions(b->policy.store));
    policy_read_unlock(&b->policy);
    json_add_int(o, "providers", (int64_t)plugin_set_count(b->plugins));
    json_add_str(o, "providerIsolation", b->provider_host ? "process" : "inline");
    if (b->provider_host) {
        json_add_int(o, "providerHostPid", (int64_t)provider_client_pid(b->provider_host));
        json_add_int(o, "providerHostRestarts",
                     (int64_t)provider_client_restarts(b->provider_host));
    }
    struct tc_stats st;
    token_cache_stats(b->cache, &st);
    json_add_int(cache, "entries", (int64_t)st.entries);
    json_add_int(cache, "hits", (int64_t)st.hits);
    json_add_int(cache, "misses", (int64_t)st.misses);
    json_add_int(cache, "refreshes", (int64_t)st.refreshes);
    json_object_object_add(o, "cache", cache);
    *ret = TAKE_PTR(o);
    return 0;
}

static int add_registration(const struct registration *r, void *ud)
{
    struct json_object *o = registration_to_json(r);
    if (!o)
        return -ENOMEM;
    json_object_array_add(ud, o);
    return 0;
}

static int op_pods(void *ud, struct json_object *req, struct json_object **ret, char **ret_error)
{
    (void)req;
    (void)ret_error;
    struct broker *b = ud;
    _cleanup_json_ struct json_object *a = json_object_new_array();
    if (!a)
        return -ENOMEM;
    int r = registry_foreach(b->registry, add_registration, a);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(a);
    return 0;
}

struct list_ctx {
    struct broker *b;
    struct json_object *a;
};

static int add_identity(const struct identity *i, void *ud)
{
    struct list_ctx *c = ud;
    struct json_object *o = identity_to_json(i);
    if (!o)
        return -ENOMEM;
    const char *p = identity_annotation(i, STORE_ANNOTATION_PROVIDER);
    if (!p)
        p = conf_type_provider(c->b->conf, i->type);
    json_add_str(o, "provider", p);
    json_object_array_add(c->a, o);
    return 0;
}

static int add_binding(const struct binding *bd, void *ud)
{
    struct json_object *o = binding_to_json(bd);
    if (!o)
        return -ENOMEM;
    json_object_array_add(((struct list_ctx *)ud)->a, o);
    return 0;
}

static int add_exception(const struct pod_exception *e, void *ud)
{
    struct json_object *o = pod_exception_to_json(e);
    if (!o)
        return -ENOMEM;
    json_object_array_add(((struct list_ctx *)ud)->a, o);
    return 0;
}

enum list_kind { LIST_IDENTITIES, LIST_BINDINGS, LIST_EXCEPTIONS };

static int list_policy(struct broker *b, enum list_kind kind, struct json_object **ret)
{
    _cleanup_json_ struct json_object *a = json_object_new_array();
    if (!a)
        return -ENOMEM;
    struct list_ctx c = {b, a};
    pthread_mutex_lock(&b->reload_lock); /* conf, for provider names */
    policy_read_lock(&b->policy);
    int r = kind == LIST_IDENTITIES ? store_foreach_identity(b->policy.store, add_identity, &c)
            : kind == LIST_BINDINGS ? store_foreach_binding(b->policy.store, add_binding, &c)
                                    : store_foreach_exception(b->policy.store, add_exception, &c);
    policy_read_unlock(&b->policy);
    pthread_mutex_unlock(&b->reload_lock);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(a);
    return 0;
}

static int op_identities(void *ud, struct json_object *req, struct json_object **ret, char **e)
{
    (void)req;
    (void)e;
    return list_policy(ud, LIST_IDENTITIES, ret);
}

static int op_bindings(void *ud, struct json_object *req, struct json_object **ret, char **e)
{
    (void)req;
    (void)e;
    return list_policy(ud, LIST_BINDINGS, ret);
}

static int op_exceptions(void *ud, struct json_object *req, struct json_object **ret, char **e)
{
    (void)req;
    (void)e;
    return list_policy(ud, LIST_EXCEPTIONS, ret);
}

static int op_providers(void *ud, struct json_object *req, struct json_object **ret, char **e)
{
    (void)req;
    (void)e;
    struct broker *b = ud;
    _cleanup_json_ struct json_object *a = json_object_new_array();
    if (!a)
        return -ENOMEM;
    for (size_t i = 0; i < plugin_set_count(b->plugins); i++) {
        const struct plugin *p = plugin_set_at(b->plugins, i);
        struct json_object *o = json_object_new_object();
        if (!o)
            return -ENOMEM;
        json_add_str(o, "name", p->name);
        json_add_str(o, "version", p->version);
        json_add_int(o, "abiMajor", p->abi_major);
        json_add_int(o, "abiMinor", p->abi_minor);
        json_add_str(o, "path", p->path);
        json_add_int(o, "calls", (int64_t)metrics_provider_calls(p->name));
        json_object_array_add(a, o);
    }
    *ret = TAKE_PTR(a);
    return 0;
}

static int op_explain(void *ud, struct json_object *req, struct json_object **ret, char **ret_error)
{
    struct broker *b = ud;
    const char *ns = NULL, *name = NULL;
    int r = get_pod_args(req, &ns, &name, ret_error);
    if (r < 0)
        return r;
    struct registration reg;
    bool registered = registry_find_pod(b->registry, ns, name, &reg) >= 0;
    policy_read_lock(&b->policy);
    struct json_object *o = store_explain(b->policy.store, &b->policy.flags, ns, name);
    const struct pod_meta *pm = store_get_pod(b->policy.store, ns, name);
    bool known = pm != NULL;
    bool synced = b->policy.synced, authoritative = b->policy.authoritative;
    /* The registration must be the pod the source knows (THREATS T2): say why not. */
    char why[512] = "";
    int check = registered && pm ? issuer_check_registration(pm, &reg, why, sizeof(why)) : 0;
    policy_read_unlock(&b->policy);
    if (!o)
        return -ENOMEM;
    json_object_object_add(o, "registered", json_object_new_boolean(registered));
    if (registered)
        json_object_object_add(o, "registration", registration_to_json(&reg));
    if (check < 0) {
        json_add_str(o, "registrationMismatch", why);
        json_add_str(o, "note", why);
        *ret = o;
        return 0;
    }
    if (!registered)
        json_add_str(o, "note",
                     "the pod is not registered on this node: requests from it get 403 until the "
                     "CNI plugin (or idbrokerctl register) registers it");
    else if (!known && authoritative && synced)
        json_add_str(o, "note",
                     "no Pod manifest in the files source: the pod has no labels, so no "
                     "binding can select it");
    *ret = o;
    return 0;
}

static int op_token(void *ud, struct json_object *req, struct json_object **ret, char **ret_error)
{
    struct broker *b = ud;
    const char *ns = NULL, *name = NULL;
    int r = get_pod_args(req, &ns, &name, ret_error);
    if (r < 0)
        return r;
    const char *resource = json_get_str(req, "resource");
    if (!resource || !resource[0])
        return set_error(ret_error, -EINVAL, "argument 'resource' is required");
    struct issue_request ir = {.resource = resource,
                               .bypass_cache = json_get_bool(req, "bypassCache", false)};
    static const struct {
        const char *key;
        enum selector_kind sel;
    } sels[] = {{"clientId", SELECTOR_CLIENT_ID},
                {"objectId", SELECTOR_OBJECT_ID},
                {"resourceId", SELECTOR_RESOURCE_ID}};
    for (size_t i = 0; i < ELEMENTSOF(sels); i++) {
        const char *v = json_get_str(req, sels[i].key);
        if (!v)
            continue;
        if (ir.sel != SELECTOR_NONE)
            return set_error(ret_error, -EINVAL,
                             "give at most one of clientId, objectId, resourceId");
        ir.sel = sels[i].sel;
        ir.sel_value = v;
    }
    struct issue_result res;
    issuer_issue_for_pod(b->issuer, ns, name, &ir, &res);
    if (res.code < 0) {
        r = set_error(ret_error, res.code, "%s: %s", idb_strerror(res.code), res.reason);
        issuer_result_done(b->issuer, &res);
        return r;
    }
    /* The same bytes a pod would get; the debug tool prints them as they are. */
    char *body = NULL;
    size_t len = 0;
    r = token_endpoint_render_token(res.token, res.client_id, resource, now_realtime_s(), &body,
                                    &len);
    issuer_result_done(b->issuer, &res);
    if (r < 0)
        return r;
    r = json_parse_strict(body, len, ret, NULL);
    explicit_bzero(body, len);
    free(body);
    return r;
}

static int op_reload(void *ud, struct json_object *req, struct json_object **ret, char **ret_error)
{
    (void)req;
    (void)ret;
    return broker_reload(ud, ret_error);
}

static int op_register(void *ud, struct json_object *req, struct json_object **ret,
                       char **ret_error)
{
    (void)ret;
    struct broker *b = ud;
    struct json_object *o;
    if (!json_object_object_get_ex(req, "registration", &o))
        return set_error(ret_error, -EINVAL, "argument 'registration' is required");
    struct registration reg;
    const char *why = NULL;
    int r = registration_from_json(o, &reg, &why);
    if (r < 0)
        return set_error(ret_error, r, "invalid registration: field '%s'", strna(why));
    if (!reg.pod_namespace[0] || !reg.pod_name[0])
        return set_error(ret_error, -EINVAL, "registration needs podNamespace and podName");
    if (reg.n_ips == 0)
        return set_error(ret_error, -EINVAL, "registration needs at least one address in 'ips'");
    if (!reg.created)
        reg.created = (uint64_t)time(NULL);
    /* Registered by hand: the file says so, unless the client named the origin itself (an absent
     * origin is read back as "cni"). */
    if (!reg.origin[0])
        snprintf(reg.origin, sizeof(reg.origin), "ctl");
    r = registry_add(b->registry, &reg, true);
    metrics_ctl_op("register", r);
    if (r < 0)
        return set_error(ret_error, r, "cannot persist registration: %s", idb_strerror(r));
    metrics_inc(M_REGISTRATIONS_ADDED);
    log_info("registered pod %s/%s (container %s, %zu addresses) by hand", reg.pod_namespace,
             reg.pod_name, reg.container_id, reg.n_ips);
    return 0;
}

static int op_unregister(void *ud, struct json_object *req, struct json_object **ret,
                         char **ret_error)
{
    struct broker *b = ud;
    const char *cid = json_get_str(req, "containerId");
    int r;
    if (cid) {
        const char *ifn = json_get_str(req, "ifName");
        r = registry_remove(b->registry, cid, ifn ? ifn : "eth0", true);
    } else {
        const char *ns = NULL, *name = NULL;
        r = get_pod_args(req, &ns, &name, ret_error);
        if (r < 0)
            return r;
        r = registry_remove_pod(b->registry, ns, name, true);
    }
    metrics_ctl_op("unregister", r);
    if (r < 0)
        return set_error(ret_error, r, "cannot remove registration: %s", idb_strerror(r));
    metrics_add(M_REGISTRATIONS_REMOVED, (uint64_t)r);
    struct json_object *o = json_object_new_object();
    if (!o)
        return -ENOMEM;
    json_add_int(o, "removed", r);
    *ret = o;
    return 0;
}

/* The CNI plugin wrote or removed <stateDir>/pods/<containerId>@<ifName>.json: read it again. */
static int op_sync(void *ud, struct json_object *req, struct json_object **ret, char **ret_error)
{
    (void)ret;
    struct broker *b = ud;
    const char *cid = json_get_str(req, "containerId"), *ifn = json_get_str(req, "ifName");
    if (!cid || !ifn || !reg_valid_container_id(cid) || !reg_valid_ifname(ifn))
        return set_error(ret_error, -EINVAL, "arguments 'containerId' and 'ifName' are required");
    int r = registry_sync(b->registry, cid, ifn);
    metrics_ctl_op("sync", r);
    if (r < 0)
        return set_error(ret_error, r, "cannot read registration '%s@%s': %s", cid, ifn,
                         idb_strerror(r));
    metrics_inc(r > 0 ? M_REGISTRATIONS_ADDED : M_REGISTRATIONS_REMOVED);
    log_info("registration %s@%s %s by the CNI plugin", cid, ifn, r > 0 ? "added" : "removed");
    return 0;
}

const struct control_op broker_ctl_ops[] = {
    {IDB_CTL_OP_STATUS, op_status, 0},
    {IDB_CTL_OP_PODS, op_pods, 0},
    {IDB_CTL_OP_IDENTITIES, op_identities, 0},
    {IDB_CTL_OP_BINDINGS, op_bindings, 0},
    {IDB_CTL_OP_EXCEPTIONS, op_exceptions, 0},
    {IDB_CTL_OP_PROVIDERS, op_providers, 0},
    {IDB_CTL_OP_EXPLAIN, op_explain, 0},
    {IDB_CTL_OP_TOKEN, op_token, 1},
    {IDB_CTL_OP_RELOAD, op_reload, 1},
    {IDB_CTL_OP_REGISTER, op_register, 1},
    {IDB_CTL_OP_UNREGISTER, op_unregister, 1},
    {IDB_CTL_OP_SYNC, op_sync, 1},
    {NULL, NULL, 0},
};
