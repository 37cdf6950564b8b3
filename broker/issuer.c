/* SPDX-License-Identifier: Apache-2.0 */
#include "issuer.h"

#include <errno.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <idbroker/provider.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "host-api.h"
#include "limits.h"
#include "metrics.h"
#include "plugin-loader.h"
#include "policy.h"
#include "registry.h"
#include "token-cache.h"

#define KEY_SEP '\x1f'
/* Keys of issue_via tokens start with this; never a provider name ([a-z0-9-]+), so no key of a
 * provider called "via…" is mistaken for one. */
#define VIA_PREFIX "+via"
#define RATE_BUCKETS 1024
#define RATE_SWEEP_MS 10000

/* A per-pod token bucket, keyed by containerId@ifName. */
struct bucket {
    char key[REG_MAX_ID + REG_MAX_IFNAME + 2];
    double tokens;
    uint64_t last_ms;
    struct bucket *next;
};

struct issuer {
    /* `lock` guards o, type_providers and buckets: a reload (issuer_set_options) replaces the
     * options and frees the old type-provider names while requests run. */
    pthread_mutex_t lock;
    struct issuer_options o;
    char *type_providers[3];
    struct bucket *buckets[RATE_BUCKETS];
    uint64_t last_sweep_ms;
};

/* Everything a provider call needs, copied out of the store so the fetch may outlive the request.
 */
struct fetch_ctx {
    const struct plugin *plugin;
    char *resource, *ns, *name, *client_id, *resource_id, *tenant_id, *ad_endpoint, *ad_resource_id,
        *secret_name, *secret_namespace;
    char **annotations; /* k, v, …, NULL */
    int type;
    uint32_t timeout_ms;
};

static void fetch_ctx_free(void *ud)
{
    struct fetch_ctx *f = ud;
    if (!f)
        return;
    free(f->resource);
    free(f->ns);
    free(f->name);
    free(f->client_id);
    free(f->resource_id);
    free(f->tenant_id);
    free(f->ad_endpoint);
    free(f->ad_resource_id);
    free(f->secret_name);
    free(f->secret_namespace);
    if (f->annotations)
        for (char **a = f->annotations; *a; a++)
            free(*a);
    free(f->annotations);
    free(f);
}

static char *dup0(const char *s)
{
    return strdup(s ? s : "");
}

static struct fetch_ctx *fetch_ctx_new(const struct plugin *pl, const struct identity *id,
                                       const char *resource, uint32_t timeout_ms)
{
    struct fetch_ctx *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->plugin = pl;
    f->type = id->type;
    f->timeout_ms = timeout_ms;
    f->resource = dup0(resource);
    f->ns = dup0(id->namespace);
    f->name = dup0(id->name);
    f->client_id = dup0(id->client_id);
    f->resource_id = dup0(id->resource_id);
    f->tenant_id = dup0(id->tenant_id);
    f->ad_endpoint = dup0(id->ad_endpoint);
    f->ad_resource_id = dup0(id->ad_resource_id);
    f->secret_name = dup0(id->secret_name);
    f->secret_namespace = dup0(id->secret_namespace);
    f->annotations = calloc(2 * id->n_annotations + 1, sizeof(char *));
    bool ok = f->resource && f->ns && f->name && f->client_id && f->resource_id && f->tenant_id &&
              f->ad_endpoint && f->ad_resource_id && f->secret_name && f->secret_namespace &&
              f->annotations;
    for (size_t i = 0; ok && i < id->n_annotations; i++) {
        f->annotations[2 * i] = dup0(id->annotations[i].key);
        f->annotations[2 * i + 1] = dup0(id->annotations[i].value);
        ok = f->annotations[2 * i] && f->annotations[2 * i + 1];
    }
    if (!ok) {
        fetch_ctx_free(f);
        return NULL;
    }
    return f;
}

/* Runs on a token-cache worker thread: one provider call, its result checked and converted. */
static int fetch_token(void *ud, struct tc_token *ret, struct tc_error *ret_err)
{
    struct fetch_ctx *f = ud;
    const struct plugin *pl = f->plugin;
    uint64_t t0 = now_monotonic_ms();
    struct idb_token_req req = {
        .size = sizeof(req),
        .resource = f->resource,
        .identity_name = f->name,
        .identity_namespace = f->ns,
        .identity_type = f->type,
        .client_id = f->client_id,
        .resource_id = f->resource_id,
        .tenant_id = f->tenant_id,
        .ad_endpoint = f->ad_endpoint,
        .ad_resource_id = f->ad_resource_id,
        .secret_name = f->secret_name,
        .secret_namespace = f->secret_namespace,
        .annotations = (const char *const *)f->annotations,
        .deadline_ms = t0 + f->timeout_ms,
    };
    struct idb_token tok = {.size = sizeof(tok)};
    int r = plugin_call_issue(pl, &req, &tok);
    uint64_t now = now_realtime_s();
    if (r >= 0) {
        size_t len = tok.access_token ? strnlen(tok.access_token, PROVIDER_TOKEN_MAX_BYTES + 1) : 0;
        if (len == 0 || len > PROVIDER_TOKEN_MAX_BYTES || tok.expires_on <= now)
            r = IDB_E_UPSTREAM_BAD_REPLY;
    }
    metrics_provider_call(pl->name, r, now_monotonic_ms() - t0);
    if (r < 0) {
        if (tok.access_token) {
            explicit_bzero(tok.access_token, strlen(tok.access_token));
            free(tok.access_token);
        }
        free(tok.client_id);
        ret_err->code = r;
        ret_err->upstream_status = tok.upstream_status;
        ret_err->upstream_error = tok.upstream_error;
        ret_err->retry_after_s = tok.retry_after_s;
        return r;
    }
    free(tok.upstream_error);
    ret->access_token = tok.access_token;
    ret->client_id = tok.client_id;
    ret->expires_on = tok.expires_on;
    ret->not_before = tok.not_before ? tok.not_before : now;
    ret->ext_expires_in = tok.ext_expires_in;
    ret->issued_at = now;
    return 0;
}

struct issuer *issuer_new(const struct issuer_options *o)
{
    struct issuer *is = calloc(1, sizeof(*is));
    if (!is)
        return NULL;
    pthread_mutex_init(&is->lock, NULL);
    if (issuer_set_options(is, o) < 0)
        return issuer_free(is);
    return is;
}

struct issuer *issuer_free(struct issuer *is)
{
    if (!is)
        return NULL;
    for (size_t i = 0; i < 3; i++)
        free(is->type_providers[i]);
    for (size_t i = 0; i < RATE_BUCKETS; i++)
        while (is->buckets[i]) {
            struct bucket *b = is->buckets[i];
            is->buckets[i] = b->next;
            free(b);
        }
    pthread_mutex_destroy(&is->lock);
    free(is);
    return NULL;
}

int issuer_set_options(struct issuer *is, const struct issuer_options *o)
{
    char *tp[3] = {NULL, NULL, NULL};
    for (size_t i = 0; i < 3; i++)
        if (o->type_providers[i] && !(tp[i] = strdup(o->type_providers[i]))) {
            free(tp[0]);
            free(tp[1]);
            return -ENOMEM;
        }
    pthread_mutex_lock(&is->lock);
    is->o = *o;
    for (size_t i = 0; i < 3; i++) {
        free(is->type_providers[i]);
        is->type_providers[i] = tp[i];
        is->o.type_providers[i] = tp[i];
    }
    pthread_mutex_unlock(&is->lock);
    return 0;
}

/* The options in force now, for one request. The type_providers pointers are not copied: they
 * may be freed by a reload as soon as the lock is dropped (use type_provider()). */
static void options_get(struct issuer *is, struct issuer_options *ret)
{
    pthread_mutex_lock(&is->lock);
    *ret = is->o;
    pthread_mutex_unlock(&is->lock);
    for (size_t i = 0; i < 3; i++)
        ret->type_providers[i] = NULL;
}

/* The provider configured for identity type `type` (typeProviders): the plugin, or NULL if none is
 * configured or it is not loaded; its name is copied to name[size] ("" if none). */
static const struct plugin *type_provider(struct issuer *is, int type, char *name, size_t size)
{
    const struct plugin *pl = NULL;
    name[0] = '\0';
    if (type < 0 || type >= 3)
        return NULL;
    pthread_mutex_lock(&is->lock);
    const char *n = is->type_providers[type];
    if (n) {
        snprintf(name, size, "%s", n);
        pl = plugin_set_find(is->o.plugins, n);
    }
    pthread_mutex_unlock(&is->lock);
    return pl;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Token bucket per pod attachment. Returns 0 if allowed, else the seconds to wait. */
/* Drops buckets that have been idle long enough to be full again: a fresh bucket is identical, so
 * this loses nothing, and the table stays as small as the set of recently active pods. Lock held.
 */
static void sweep_buckets(struct issuer *is, uint64_t now)
{
    double refill_ms = 1000.0 * is->o.rate_burst / is->o.rate_per_pod;
    for (size_t i = 0; i < RATE_BUCKETS; i++)
        for (struct bucket **p = &is->buckets[i]; *p;) {
            struct bucket *b = *p;
            if ((double)(now - b->last_ms) >= refill_ms) {
                *p = b->next;
                free(b);
            } else
                p = &b->next;
        }
}

static uint32_t rate_check(struct issuer *is, const struct registration *reg)
{
    char key[sizeof(((struct bucket *)0)->key)];
    snprintf(key, sizeof(key), "%s@%s", reg->container_id, reg->if_name);
    uint64_t now = now_monotonic_ms();
    uint32_t wait = 0;
    pthread_mutex_lock(&is->lock);
    if (is->o.rate_per_pod == 0) {
        pthread_mutex_unlock(&is->lock);
        return 0;
    }
    if (now - is->last_sweep_ms >= RATE_SWEEP_MS) {
        sweep_buckets(is, now);
        is->last_sweep_ms = now;
    }
    struct bucket **slot = &is->buckets[hash_str(key) % RATE_BUCKETS], *b = *slot;
    while (b && !streq(b->key, key))
        b = b->next;
    if (!b && (b = calloc(1, sizeof(*b)))) {
        snprintf(b->key, sizeof(b->key), "%s", key);
        b->tokens = is->o.rate_burst;
        b->last_ms = now;
        b->next = *slot;
        *slot = b;
    }
    if (b) {
        b->tokens += (double)(now - b->last_ms) * is->o.rate_per_pod / 1000.0;
        if (b->tokens > is->o.rate_burst)
            b->tokens = is->o.rate_burst;
        b->last_ms = now;
        if (b->tokens >= 1.0)
            b->tokens -= 1.0;
        else
            wait = (uint32_t)((1.0 - b->tokens) / is->o.rate_per_pod) + 1;
    }
    pthread_mutex_unlock(&is->lock);
    return wait;
}

static void audit(bool enabled, const struct registration *reg, const struct issue_request *req,
                  const struct issue_result *res, uint64_t t0, bool hit)
{
    if (!enabled)
        return;
    char latency[24];
    snprintf(latency, sizeof(latency), "%" PRIu64, now_monotonic_ms() - t0);
    bool ok = res->code == 0;
    const struct log_field f[] = {
        {"audit", "token", 0},
        {"pod", res->pod, 0},
        {"podUid", reg && reg->pod_uid[0] ? reg->pod_uid : NULL, 0},
        {"identity", res->identity[0] ? res->identity : NULL, 0},
        {"resource", req->resource, 0},
        {"decision", ok ? "issued" : "denied", 0},
        {"error", ok ? NULL : idb_strerror(res->code), 0},
        {"reason", res->reason[0] ? res->reason : NULL, 0},
        {"cache", ok ? (hit ? "hit" : "miss") : NULL, 0},
        {"latencyMs", latency, 1},
    };
    log_fields(ok ? IDB_LOG_INFO : IDB_LOG_NOTICE, f, ELEMENTSOF(f), "token %s",
               ok ? "issued" : "denied");
}

static void result_fail(struct issue_result *ret, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void result_fail(struct issue_result *ret, int code, const char *fmt, ...)
{
    ret->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ret->reason, sizeof(ret->reason), fmt, ap);
    va_end(ap);
}

/* Charges the pod's rate limit; when exceeded fills *ret (429) and returns true. */
static bool rate_limited(struct issuer *is, const struct registration *reg,
                         const struct issuer_options *o, struct issue_result *ret)
{
    uint32_t wait = rate_check(is, reg);
    if (wait == 0)
        return false;
    metrics_inc(M_RATE_LIMITED);
    ret->identity[0] = ret->client_id[0] = '\0';
    ret->retry_after_s = wait;
    result_fail(ret, IDB_E_RATE_LIMITED, "per-pod rate limit of %u/s exceeded", o->rate_per_pod);
    return true;
}

/* nowait: gives up before any side effect (see issue_request.nowait). */
static void would_block(struct issue_result *ret)
{
    ret->would_block = true;
    ret->code = -EAGAIN;
}

static void issue_for_registration(struct issuer *is, const struct registration *reg,
                                   const struct issue_request *req, struct issue_result *ret,
                                   uint64_t t0)
{
    struct issuer_options o;
    options_get(is, &o);
    struct policy *pol = o.policy;
    bool hit = false;
    snprintf(ret->pod, sizeof(ret->pod), "%s/%s", reg->pod_namespace, reg->pod_name);

    /* nowait charges the limit once the answer is known, at `out` (a deferred request is charged
     * by its second, blocking, call only); the outcome is the same, rate-limited or not. */
    bool charged = !req->nowait;
    if (!req->nowait && rate_limited(is, reg, &o, ret))
        goto out;
    if (req->nowait && req->bypass_cache) {
        would_block(ret);
        return;
    }

    uint64_t sync_deadline = t0 + o.sync_timeout_ms;
    struct fetch_ctx *f = NULL;
    const struct tc_token *tok = NULL;
    char key[8192];
    for (;;) {
        uint64_t gen = policy_generation(pol);
        struct decision d;
        policy_read_lock(pol);
        store_decide(pol->store, &pol->flags, reg->pod_namespace, reg->pod_name, req->sel,
                     req->sel_value, &d);
        if (d.result == 0) {
            const struct pod_meta *pm =
                store_get_pod(pol->store, reg->pod_namespace, reg->pod_name);
            /* A registration and the pod the policy knows must be the same pod (THREATS T2). */
            char why[sizeof(d.reason)];
            if (pm && issuer_check_registration(pm, reg, why, sizeof(why)) < 0) {
                d.result = IDB_E_NOT_SYNCED;
                d.identity = NULL;
                d.binding = NULL;
                snprintf(d.reason, sizeof(d.reason), "%s", why);
            }
        }
        if (d.result != IDB_E_NOT_SYNCED && !pol->authoritative && !pol->synced) {
            /* Kubernetes source before the first LIST of every kind: a denial may only mean that
             * the bindings have not arrived yet, a grant that an exception has not. */
            d.result = IDB_E_NOT_SYNCED;
            d.identity = NULL;
            d.binding = NULL;
            snprintf(d.reason, sizeof(d.reason),
                     "the policy source has not listed every kind yet (no decision for %s/%s)",
                     reg->pod_namespace, reg->pod_name);
        }
        if (d.result == IDB_E_NOT_SYNCED && pol->authoritative && pol->synced &&
            !store_get_pod(pol->store, reg->pod_namespace, reg->pod_name)) {
            /* Files mode: the manifests are the whole truth; a pod without one has no labels. */
            d.result = IDB_E_NO_BINDING;
            snprintf(d.reason, sizeof(d.reason), "no Pod manifest for %s/%s in the files source",
                     reg->pod_namespace, reg->pod_name);
        }
        if (d.result == 0) {
            const struct identity *id = d.identity;
            snprintf(ret->identity, sizeof(ret->identity), "%s/%s", id->namespace, id->name);
            snprintf(ret->client_id, sizeof(ret->client_id), "%s",
                     id->client_id ? id->client_id : "");
            snprintf(ret->reason, sizeof(ret->reason), "%s", d.reason);
            const char *pname = identity_annotation(id, STORE_ANNOTATION_PROVIDER);
            char tpname[128];
            const struct plugin *pl;
            if (pname)
                pl = plugin_set_find(o.plugins, pname);
            else {
                pl = type_provider(is, id->type, tpname, sizeof(tpname));
                pname = tpname[0] ? tpname : NULL;
            }
            if (!pl) {
                policy_read_unlock(pol);
                result_fail(ret, IDB_E_NO_PROVIDER, "identity %s needs provider '%s', not loaded",
                            ret->identity, strna(pname));
                goto out;
            }
            int kn = snprintf(key, sizeof(key), "%s%c%s/%s%c%016" PRIx64 "%c%s", pl->name, KEY_SEP,
                              id->namespace, id->name, KEY_SEP, id->hash, KEY_SEP, req->resource);
            if (kn < 0 || (size_t)kn >= sizeof(key)) {
                /* Never truncate a cache key: two resources would share a token. */
                policy_read_unlock(pol);
                result_fail(ret, -ENAMETOOLONG, "resource too long");
                goto out;
            }
            /* A plain cache hit needs no copy of the identity for a provider call (hot path). */
            if (!req->bypass_cache && token_cache_peek(o.cache, key, &tok) >= 0) {
                policy_read_unlock(pol);
                if (!charged) {
                    /* before the hit is counted and reported */
                    charged = true;
                    if (rate_limited(is, reg, &o, ret)) {
                        token_cache_release(o.cache, tok);
                        goto out;
                    }
                }
                hit = true;
                break;
            }
            if (req->nowait) {
                policy_read_unlock(pol);
                would_block(ret);
                return;
            }
            f = fetch_ctx_new(pl, id, req->resource, o.provider_timeout_ms);
            policy_read_unlock(pol);
            if (!f) {
                result_fail(ret, -ENOMEM, "out of memory");
                goto out;
            }
            break;
        }
        policy_read_unlock(pol);
        /* An excepted pod is answered by the node's IMDS, which the caller waits for. */
        if (req->nowait && (d.result == IDB_E_EXCEPTED ||
                            (d.result == IDB_E_NOT_SYNCED && now_monotonic_ms() < sync_deadline))) {
            would_block(ret);
            return;
        }
        if (d.result == IDB_E_NOT_SYNCED && now_monotonic_ms() < sync_deadline &&
            policy_wait_change(pol, gen, sync_deadline))
            continue;
        if (d.result == IDB_E_NOT_SYNCED)
            ret->retry_after_s = o.retry_after_s;
        result_fail(ret, d.result, "%s", d.reason);
        goto out;
    }

    struct tc_error err = {0};
    int r = tok ? 0
                : token_cache_get(o.cache, key, req->bypass_cache,
                                  now_monotonic_ms() + o.provider_timeout_ms, fetch_token, f,
                                  fetch_ctx_free, &tok, &hit, &err);
    metrics_inc(hit ? M_CACHE_HITS : M_CACHE_MISSES);
    if (r < 0) {
        ret->upstream_status = err.upstream_status;
        ret->upstream_error = TAKE_PTR(err.upstream_error);
        ret->retry_after_s = err.retry_after_s ? err.retry_after_s : o.retry_after_s;
        if (r == IDB_E_PROVIDER_TIMEOUT)
            metrics_inc(M_UPSTREAM_TIMEOUTS);
        else
            metrics_inc(M_UPSTREAM_ERRORS);
        if (r == IDB_E_RATE_LIMITED || err.upstream_status == 429)
            metrics_inc(M_UPSTREAM_THROTTLES);
        tc_error_done(&err);
        result_fail(ret, r, "provider failed for %s: %s", ret->identity, idb_strerror(r));
        goto out;
    }
    tc_error_done(&err);
    ret->token = tok;
    if (tok->client_id && tok->client_id[0])
        snprintf(ret->client_id, sizeof(ret->client_id), "%s", tok->client_id);
    ret->code = 0;
    if (is->o.on_issued) {
        char idns[sizeof(ret->identity)];
        snprintf(idns, sizeof(idns), "%s", ret->identity);
        char *slash = strchr(idns, '/');
        if (slash) {
            *slash = '\0';
            is->o.on_issued(is->o.on_issued_ud, reg->pod_namespace, reg->pod_name, idns, slash + 1);
        }
    }
out:
    if (!charged) /* nowait, answered without blocking: a denial costs a token of the limit too */
        (void)rate_limited(is, reg, &o, ret);
    audit(o.audit, reg, req, ret, t0, hit);
}

int issuer_check_registration(const struct pod_meta *pm, const struct registration *reg, char *why,
                              size_t n)
{
    if (!streq(pm->namespace, reg->pod_namespace) || !streq(pm->name, reg->pod_name)) {
        snprintf(why, n, "the registration is for pod %s/%s, the policy source has %s/%s",
                 reg->pod_namespace, reg->pod_name, pm->namespace, pm->name);
        return IDB_E_NOT_SYNCED;
    }
    if (pm->uid && pm->uid[0] && reg->pod_uid[0] && !streq(pm->uid, reg->pod_uid)) {
        snprintf(why, n,
                 "pod UID '%s' of the registration differs from '%s' in the policy source (the "
                 "pod was replaced, or the source has not seen the new one yet)",
                 reg->pod_uid, pm->uid);
        return IDB_E_NOT_SYNCED;
    }
    if (pm->n_ips == 0)
        return 0;
    for (size_t i = 0; i < reg->n_ips; i++) {
        bool found = false;
        for (size_t k = 0; k < pm->n_ips && !found; k++) {
            struct reg_ip ip;
            found = reg_ip_parse(pm->ips[k], &ip) >= 0 && reg_ip_equal(&ip, &reg->ips[i]);
        }
        if (!found) {
            char a[64];
            reg_ip_to_string(&reg->ips[i], a, sizeof(a));
            snprintf(why, n,
                     "the registration's address %s is not an IP of pod %s/%s in the policy "
                     "source (%s%s)",
                     a, pm->namespace, pm->name, pm->ips[0], pm->n_ips > 1 ? ", ..." : "");
            return IDB_E_NOT_SYNCED;
        }
    }
    return 0;
}

static void result_init(struct issue_result *ret)
{
    memset(ret, 0, sizeof(*ret));
}

/* The caller's address as a registration address; IPv4-mapped IPv6 becomes IPv4. */
static int peer_to_ip(const struct sockaddr *sa, socklen_t len, struct reg_ip *ret)
{
    struct reg_ip ip = {0};
    if (!sa || len < sizeof(sa_family_t))
        return -EAFNOSUPPORT;
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        ip.family = AF_INET;
        memcpy(ip.addr.v4, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            ip.family = AF_INET;
            memcpy(ip.addr.v4, &a->s6_addr[12], 4);
        } else {
            ip.family = AF_INET6;
            memcpy(ip.addr.v6, a, 16);
        }
    } else
        return -EAFNOSUPPORT;
    *ret = ip;
    return 0;
}

/* Whether ip is one of this network namespace's own addresses (loopback included). Only called on
 * the denial path, so a getifaddrs() per call is fine. */
static bool address_is_local(const struct reg_ip *ip)
{
    struct ifaddrs *ifa = NULL;
    if (getifaddrs(&ifa) < 0)
        return false;
    bool found = false;
    for (struct ifaddrs *i = ifa; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != ip->family)
            continue;
        if (ip->family == AF_INET)
            found = memcmp(&((struct sockaddr_in *)i->ifa_addr)->sin_addr, ip->addr.v4, 4) == 0;
        else
            found = memcmp(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, ip->addr.v6, 16) == 0;
    }
    freeifaddrs(ifa);
    if (!found && ip->family == AF_INET && ip->addr.v4[0] == 127)
        found = true; /* all of 127.0.0.0/8 is local */
    return found;
}

/* The one attribution of a caller: its address (*ret_ip, set whenever the address is understood)
 * and the registration that owns it. */
static int peer_lookup(struct issuer *is, const struct sockaddr *peer, socklen_t peer_len,
                       struct reg_ip *ret_ip, struct registration *ret)
{
    int r = peer_to_ip(peer, peer_len, ret_ip);
    if (r < 0)
        return r;
    return registry_lookup_ip(is->o.registry, ret_ip, ret);
}

int issuer_peer_registration(struct issuer *is, const struct sockaddr *peer, socklen_t peer_len,
                             struct registration *ret)
{
    struct reg_ip ip = {0};
    return peer_lookup(is, peer, peer_len, &ip, ret);
}

void issuer_issue_for_peer(struct issuer *is, const struct sockaddr *peer, socklen_t peer_len,
                           const struct issue_request *req, struct issue_result *ret)
{
    uint64_t t0 = now_monotonic_ms();
    result_init(ret);
    struct issuer_options o;
    options_get(is, &o);
    struct reg_ip ip = {0}; /* family 0 ("?" in messages) unless the address is understood */
    struct registration reg;
    int r = peer_lookup(is, peer, peer_len, &ip, &reg);
    if (r < 0) {
        char a[64] = "?";
        if (ip.family)
            reg_ip_to_string(&ip, a, sizeof(a));
        if (r == -ENOENT && ip.family && address_is_local(&ip)) {
            /* THREATS T10: hostNetwork pods share the node's addresses; never guess a pod. */
            result_fail(ret, IDB_E_NODE_CALLER,
                        "%s is an address of the node: a hostNetwork pod or a node process", a);
        } else if (r == IDB_E_AMBIGUOUS_POD) {
            ret->retry_after_s = o.retry_after_s;
            result_fail(ret, r, "more than one registration claims %s", a);
        } else
            result_fail(ret, IDB_E_UNKNOWN_POD, "no pod registered on this node owns %s", a);
        snprintf(ret->pod, sizeof(ret->pod), "addr:%s", a);
        audit(o.audit, NULL, req, ret, t0, false);
        return;
    }
    issue_for_registration(is, &reg, req, ret, t0);
}

void issuer_issue_for_pod(struct issuer *is, const char *ns, const char *name,
                          const struct issue_request *req, struct issue_result *ret)
{
    uint64_t t0 = now_monotonic_ms();
    result_init(ret);
    struct registration reg;
    if (registry_find_pod(is->o.registry, ns, name, &reg) < 0) {
        struct issuer_options o;
        options_get(is, &o);
        snprintf(ret->pod, sizeof(ret->pod), "%s/%s", ns, name);
        result_fail(ret, IDB_E_UNKNOWN_POD, "pod %s/%s is not registered on this node", ns, name);
        audit(o.audit, NULL, req, ret, t0, false);
        return;
    }
    issue_for_registration(is, &reg, req, ret, t0);
}

void issuer_result_done(struct issuer *is, struct issue_result *r)
{
    if (r->token)
        token_cache_release(is->o.cache, r->token);
    r->token = NULL;
    free(r->upstream_error);
    r->upstream_error = NULL;
}

struct stale_ctx {
    const struct store *store;
};

static int binding_refs(const struct binding *b, void *ud)
{
    const struct identity *id = ud;
    /* By name only: in non-namespaced mode a binding may name an identity of another namespace.
     * Keeping a token too long is harmless (every request is decided afresh); this only frees
     * memory and ends refreshes. */
    if (streq(b->identity, id->name))
        return -1; /* found: stop */
    return 0;
}

/* Key: provider SEP ns/name SEP hash SEP resource. */
static bool key_is_stale(const char *key, void *ud)
{
    struct stale_ctx *c = ud;
    const char *a = strchr(key, KEY_SEP);
    const char *b = a ? strchr(a + 1, KEY_SEP) : NULL;
    const char *e = b ? strchr(b + 1, KEY_SEP) : NULL;
    if (!a || !b || !e || strncmp(key, VIA_PREFIX, strlen(VIA_PREFIX)) == 0)
        return false;
    char nsname[2 * REG_MAX_NAME + 2], hash[17];
    size_t n = (size_t)(b - a - 1);
    if (n >= sizeof(nsname) || (size_t)(e - b - 1) != 16)
        return true;
    memcpy(nsname, a + 1, n);
    nsname[n] = '\0';
    memcpy(hash, b + 1, 16);
    hash[16] = '\0';
    char *slash = strchr(nsname, '/');
    if (!slash)
        return true;
    *slash = '\0';
    const struct identity *id = store_get_identity(c->store, nsname, slash + 1);
    if (!id)
        return true;
    char want[17];
    snprintf(want, sizeof(want), "%016" PRIx64, id->hash);
    if (!streq(want, hash))
        return true;
    /* Still referenced by some binding? (namespaced: a binding in the identity's namespace.) */
    return store_foreach_binding(c->store, binding_refs, (void *)id) == 0;
}

size_t issuer_evict_stale(struct issuer *is)
{
    struct stale_ctx c;
    policy_read_lock(is->o.policy);
    c.store = is->o.policy->store;
    size_t n = token_cache_evict_if(is->o.cache, key_is_stale, &c);
    policy_read_unlock(is->o.policy);
    return n;
}

int issuer_issue_via(struct issuer *is, const char *provider, const struct idb_token_req *req,
                     struct idb_token *ret)
{
    struct issuer_options o;
    options_get(is, &o);
    if (!req->resource)
        return -EINVAL;
    const struct plugin *pl = plugin_set_find(o.plugins, provider);
    if (!pl)
        return IDB_E_NO_PROVIDER;
    struct identity id = {
        .namespace = (char *)(req->identity_namespace ? req->identity_namespace : ""),
        .name = (char *)(req->identity_name ? req->identity_name : ""),
        .type = req->identity_type,
        .client_id = (char *)(req->client_id ? req->client_id : ""),
        .resource_id = (char *)(req->resource_id ? req->resource_id : ""),
        .tenant_id = (char *)(req->tenant_id ? req->tenant_id : ""),
        .ad_endpoint = (char *)"",
        .ad_resource_id = (char *)"",
        .secret_name = (char *)"",
        .secret_namespace = (char *)"",
    };
    /* Key: every field the provider gets that can change the token. A separator inside a field
     * would let two different requests share one key (the resource is last, so it may hold
     * anything). */
    if (strchr(id.client_id, KEY_SEP) || strchr(id.resource_id, KEY_SEP) ||
        strchr(id.tenant_id, KEY_SEP))
        return -EINVAL;
    char key[8192];
    int kn = snprintf(key, sizeof(key), VIA_PREFIX "%c%s%c%d%c%s%c%s%c%s%c%s", KEY_SEP, pl->name,
                      KEY_SEP, id.type, KEY_SEP, id.client_id, KEY_SEP, id.resource_id, KEY_SEP,
                      id.tenant_id, KEY_SEP, req->resource);
    if (kn < 0 || (size_t)kn >= sizeof(key))
        return -ENAMETOOLONG;
    struct fetch_ctx *f = fetch_ctx_new(pl, &id, req->resource, o.provider_timeout_ms);
    if (!f)
        return -ENOMEM;
    const struct tc_token *tok = NULL;
    struct tc_error err = {0};
    bool hit;
    uint64_t deadline =
        req->deadline_ms ? req->deadline_ms : now_monotonic_ms() + o.provider_timeout_ms;
    int r = token_cache_get(o.cache, key, false, deadline, fetch_token, f, fetch_ctx_free, &tok,
                            &hit, &err);
    if (r < 0) {
        ret->upstream_status = err.upstream_status;
        ret->upstream_error = TAKE_PTR(err.upstream_error);
        ret->retry_after_s = err.retry_after_s;
        tc_error_done(&err);
        return r;
    }
    tc_error_done(&err);
    char *at = strdup(tok->access_token);
    char *cid = tok->client_id ? strdup(tok->client_id) : NULL;
    if (!at || (tok->client_id && !cid)) {
        if (at) {
            explicit_bzero(at, strlen(at));
            free(at);
        }
        free(cid);
        token_cache_release(o.cache, tok);
        return -ENOMEM;
    }
    ret->access_token = at;
    ret->client_id = cid;
    ret->expires_on = tok->expires_on;
    ret->not_before = tok->not_before;
    ret->ext_expires_in = tok->ext_expires_in;
    token_cache_release(o.cache, tok);
    return 0;
}
