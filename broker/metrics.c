/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus metrics (DESIGN §9). Every counter is a relaxed atomic: metrics are statistics, not
 * synchronisation. Labelled families use small fixed tables so a label can never come from request
 * data: HTTP status codes index an array, provider and CNI-operation names are registered once
 * (under a mutex) into a table of fixed size and read lock-free afterwards.
 */
#include "metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <idbroker/errno.h>

#include <idbroker-internal/buf.h>

#define HTTP_CODE_MIN 100
#define HTTP_CODE_MAX 599
#define MAX_PROVIDERS 32
#define MAX_CTL_OPS 16
#define NAME_MAX_BYTES 64

/* Result labels of a provider call: a fixed set derived from the error code. */
enum presult {
    PR_OK,
    PR_TIMEOUT,
    PR_REJECTED,
    PR_UNAVAILABLE,
    PR_BAD_REPLY,
    PR_ERROR,
    _PR_MAX,
};

static const char *const presult_names[_PR_MAX] = {
    [PR_OK] = "ok",
    [PR_TIMEOUT] = "timeout",
    [PR_REJECTED] = "rejected",
    [PR_UNAVAILABLE] = "unavailable",
    [PR_BAD_REPLY] = "bad_reply",
    [PR_ERROR] = "error",
};

/* Latency buckets of idbroker_provider_request_duration_seconds, in milliseconds. */
static const uint64_t bucket_ms[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
#define N_BUCKETS (sizeof(bucket_ms) / sizeof(bucket_ms[0]))

struct provider_slot {
    char name[NAME_MAX_BYTES];
    _Atomic uint64_t calls[_PR_MAX];
    _Atomic uint64_t buckets[N_BUCKETS]; /* non-cumulative; summed when rendered */
    _Atomic uint64_t latency_sum_ms;
    _Atomic uint64_t latency_count;
};

struct ctl_slot {
    char name[NAME_MAX_BYTES];
    _Atomic uint64_t ok;
    _Atomic uint64_t err;
};

static _Atomic uint64_t counters[_M_COUNTER_MAX];
static _Atomic int64_t gauges[_G_GAUGE_MAX];
static _Atomic uint64_t http_codes[HTTP_CODE_MAX - HTTP_CODE_MIN + 1];
static _Atomic uint64_t
    http_other; /* a status outside 100..599: counted, rendered as code="other" */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct provider_slot providers[MAX_PROVIDERS];
static _Atomic unsigned n_providers; /* slots [0, n) have a name; published with release */
static struct provider_slot provider_overflow = {.name = "other"};
static struct ctl_slot ctl_ops[MAX_CTL_OPS];
static _Atomic unsigned n_ctl_ops;
static struct ctl_slot ctl_overflow = {.name = "other"};

struct counter_desc {
    const char *name;
    const char *help;
};

static const struct counter_desc counter_descs[_M_COUNTER_MAX] = {
    [M_CACHE_HITS] = {"idbroker_cache_hits_total", "Token requests served from the token cache."},
    [M_CACHE_MISSES] = {"idbroker_cache_misses_total",
                        "Token requests that needed a provider fetch."},
    [M_CACHE_REFRESHES] = {"idbroker_cache_refreshes_total",
                           "Background refreshes of cached tokens past half their lifetime."},
    [M_CACHE_COALESCED] = {"idbroker_cache_coalesced_total",
                           "Token requests that joined a fetch already in flight."},
    [M_UPSTREAM_ERRORS] = {"idbroker_upstream_errors_total", "Failed provider fetches."},
    [M_UPSTREAM_TIMEOUTS] = {"idbroker_upstream_timeouts_total",
                             "Provider fetches that missed their deadline."},
    [M_UPSTREAM_THROTTLES] = {"idbroker_upstream_throttles_total",
                              "Provider fetches throttled by the upstream service."},
    [M_REGISTRATIONS_ADDED] = {"idbroker_registrations_added_total",
                               "Pod registrations added (CNI ADD or idbrokerctl register)."},
    [M_REGISTRATIONS_REMOVED] = {"idbroker_registrations_removed_total",
                                 "Pod registrations removed (CNI DEL, GC or unregister)."},
    [M_SOURCE_RELOADS] = {"idbroker_source_reloads_total",
                          "Reloads of the identity source (files or Kubernetes)."},
    [M_SOURCE_RELOAD_ERRORS] = {"idbroker_source_reload_errors_total",
                                "Failed reloads of the identity source."},
    [M_WATCH_RELISTS] = {"idbroker_watch_relists_total", "Kubernetes watch relists."},
    [M_CTL_REQUESTS] = {"idbroker_control_requests_total", "Requests on the control socket."},
    [M_RATE_LIMITED] = {"idbroker_rate_limited_total",
                        "Token requests refused by the per-pod rate limit."},
    [M_PROVIDER_RESTARTS] = {"idbroker_provider_restarts_total",
                             "Restarts of the provider host process after it died or was killed."},
};

static const struct counter_desc gauge_descs[_G_GAUGE_MAX] = {
    [G_REGISTRATIONS] = {"idbroker_registrations", "Pods registered on this node."},
    [G_IDENTITIES] = {"idbroker_identities", "AzureIdentity objects known."},
    [G_BINDINGS] = {"idbroker_bindings", "AzureIdentityBinding objects known."},
    [G_CACHE_ENTRIES] = {"idbroker_cache_entries", "Entries in the token cache."},
    [G_READY] = {"idbroker_ready", "1 when configuration, providers and sources are ready."},
    [G_CNI_CHAIN_OK] = {"idbroker_cni_chain_ok",
                        "0 while the node's CNI network configuration lacks the idbroker plugin."},
    [G_UNPROTECTED_PODS] = {"idbroker_pods_unprotected",
                            "Running pods of this node that the idbroker CNI plugin did not set up "
                            "(kubernetes mode)."},
};

void metrics_inc(enum metric_counter m)
{
    metrics_add(m, 1);
}

void metrics_add(enum metric_counter m, uint64_t v)
{
    if ((unsigned)m >= _M_COUNTER_MAX)
        return;
    atomic_fetch_add_explicit(&counters[m], v, memory_order_relaxed);
}

void metrics_set(enum metric_gauge g, int64_t v)
{
    if ((unsigned)g >= _G_GAUGE_MAX)
        return;
    atomic_store_explicit(&gauges[g], v, memory_order_relaxed);
}

void metrics_http_status(int status)
{
    if (status < HTTP_CODE_MIN || status > HTTP_CODE_MAX)
        atomic_fetch_add_explicit(&http_other, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&http_codes[status - HTTP_CODE_MIN], 1, memory_order_relaxed);
}

static bool name_ok(const char *name)
{
    return name && name[0] && strlen(name) < NAME_MAX_BYTES;
}

/* Finds a registered name among slots [0, n). */
static struct provider_slot *provider_find(const char *name, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (strcmp(providers[i].name, name) == 0)
            return &providers[i];
    return NULL;
}

static struct provider_slot *provider_slot(const char *name)
{
    if (!name_ok(name))
        return &provider_overflow;
    struct provider_slot *s =
        provider_find(name, atomic_load_explicit(&n_providers, memory_order_acquire));
    if (s)
        return s;

    pthread_mutex_lock(&reg_lock);
    unsigned n = atomic_load_explicit(&n_providers, memory_order_relaxed);
    s = provider_find(name, n);
    if (!s && n < MAX_PROVIDERS) {
        s = &providers[n];
        memcpy(s->name, name, strlen(name) + 1);
        atomic_store_explicit(&n_providers, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&reg_lock);
    return s ? s : &provider_overflow;
}

static struct ctl_slot *ctl_find(const char *name, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (strcmp(ctl_ops[i].name, name) == 0)
            return &ctl_ops[i];
    return NULL;
}

static struct ctl_slot *ctl_slot(const char *name)
{
    if (!name_ok(name))
        return &ctl_overflow;
    struct ctl_slot *s = ctl_find(name, atomic_load_explicit(&n_ctl_ops, memory_order_acquire));
    if (s)
        return s;

    pthread_mutex_lock(&reg_lock);
    unsigned n = atomic_load_explicit(&n_ctl_ops, memory_order_relaxed);
    s = ctl_find(name, n);
    if (!s && n < MAX_CTL_OPS) {
        s = &ctl_ops[n];
        memcpy(s->name, name, strlen(name) + 1);
        atomic_store_explicit(&n_ctl_ops, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&reg_lock);
    return s ? s : &ctl_overflow;
}

static enum presult presult_of(int r)
{
    switch (r) {
    case 0:
        return PR_OK;
    case IDB_E_PROVIDER_TIMEOUT:
    case -ETIMEDOUT:
        return PR_TIMEOUT;
    case IDB_E_UPSTREAM_4XX:
    case IDB_E_RATE_LIMITED:
        return PR_REJECTED;
    case IDB_E_UPSTREAM_UNAVAILABLE:
        return PR_UNAVAILABLE;
    case IDB_E_UPSTREAM_BAD_REPLY:
        return PR_BAD_REPLY;
    default:
        return r > 0 ? PR_OK : PR_ERROR;
    }
}

void metrics_provider_call(const char *provider, int result, uint64_t latency_ms)
{
    struct provider_slot *s = provider_slot(provider);
    atomic_fetch_add_explicit(&s->calls[presult_of(result)], 1, memory_order_relaxed);
    size_t b = 0;
    while (b < N_BUCKETS && latency_ms > bucket_ms[b])
        b++;
    if (b < N_BUCKETS)
        atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->latency_sum_ms, latency_ms, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->latency_count, 1, memory_order_relaxed);
}

void metrics_ctl_op(const char *op, int result)
{
    struct ctl_slot *s = ctl_slot(op);
    if (result < 0)
        atomic_fetch_add_explicit(&s->err, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&s->ok, 1, memory_order_relaxed);
}

static uint64_t ld(_Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

/* Label values are registered names; escape them anyway as the exposition format requires. */
static int put_label_value(struct buf *out, const char *v)
{
    int r = 0;
    for (const char *p = v; *p && r >= 0; p++) {
        if (*p == '\\')
            r = buf_puts(out, "\\\\");
        else if (*p == '"')
            r = buf_puts(out, "\\\"");
        else if (*p == '\n')
            r = buf_puts(out, "\\n");
        else
            r = buf_append(out, p, 1);
    }
    return r;
}

static int put_header(struct buf *out, const char *name, const char *help, const char *type)
{
    return buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int render_http(struct buf *out)
{
    const char *name = "idbroker_http_requests_total";
    int r = put_header(out, name, "Token endpoint replies by HTTP status code.", "counter");
    for (int c = HTTP_CODE_MIN; c <= HTTP_CODE_MAX && r >= 0; c++) {
        uint64_t v = ld(&http_codes[c - HTTP_CODE_MIN]);
        if (v)
            r = buf_printf(out, "%s{code=\"%d\"} %llu\n", name, c, (unsigned long long)v);
    }
    uint64_t other = ld(&http_other);
    if (r >= 0 && other)
        r = buf_printf(out, "%s{code=\"other\"} %llu\n", name, (unsigned long long)other);
    return r;
}

/* The slots to render: registered ones, then the overflow slot if it was used. */
static unsigned provider_list(struct provider_slot **list)
{
    unsigned n = atomic_load_explicit(&n_providers, memory_order_acquire), k = 0;
    for (unsigned i = 0; i < n; i++)
        list[k++] = &providers[i];
    if (ld(&provider_overflow.latency_count))
        list[k++] = &provider_overflow;
    return k;
}

static int render_providers(struct buf *out)
{
    struct provider_slot *list[MAX_PROVIDERS + 1];
    unsigned n = provider_list(list);

    const char *name = "idbroker_provider_requests_total";
    int r = put_header(out, name, "Provider token fetches by provider and result.", "counter");
    for (unsigned i = 0; i < n && r >= 0; i++) {
        struct provider_slot *s = list[i];
        for (int k = 0; k < _PR_MAX && r >= 0; k++) {
            uint64_t v = ld(&s->calls[k]);
            if (!v && k != PR_OK)
                continue;
            r = buf_printf(out, "%s{provider=\"", name);
            if (r >= 0)
                r = put_label_value(out, s->name);
            if (r >= 0)
                r = buf_printf(out, "\",result=\"%s\"} %llu\n", presult_names[k],
                               (unsigned long long)v);
        }
    }

    name = "idbroker_provider_request_duration_seconds";
    if (r >= 0)
        r = put_header(out, name, "Latency of provider token fetches.", "histogram");
    for (unsigned i = 0; i < n && r >= 0; i++) {
        struct provider_slot *s = list[i];
        uint64_t cum = 0;
        for (size_t b = 0; b <= N_BUCKETS && r >= 0; b++) {
            char le[32];
            if (b < N_BUCKETS) {
                cum += ld(&s->buckets[b]);
                snprintf(le, sizeof(le), "%llu.%03llu", (unsigned long long)(bucket_ms[b] / 1000),
                         (unsigned long long)(bucket_ms[b] % 1000));
            } else {
                cum = ld(&s->latency_count);
                snprintf(le, sizeof(le), "+Inf");
            }
            r = buf_printf(out, "%s_bucket{provider=\"", name);
            if (r >= 0)
                r = put_label_value(out, s->name);
            if (r >= 0)
                r = buf_printf(out, "\",le=\"%s\"} %llu\n", le, (unsigned long long)cum);
        }
        uint64_t sum = ld(&s->latency_sum_ms);
        if (r >= 0)
            r = buf_printf(out, "%s_sum{provider=\"", name);
        if (r >= 0)
            r = put_label_value(out, s->name);
        if (r >= 0)
            r = buf_printf(out, "\"} %llu.%03llu\n", (unsigned long long)(sum / 1000),
                           (unsigned long long)(sum % 1000));
        if (r >= 0)
            r = buf_printf(out, "%s_count{provider=\"", name);
        if (r >= 0)
            r = put_label_value(out, s->name);
        if (r >= 0)
            r = buf_printf(out, "\"} %llu\n", (unsigned long long)ld(&s->latency_count));
    }
    return r;
}

static int render_ctl(struct buf *out)
{
    const char *name = "idbroker_cni_operations_total";
    int r =
        put_header(out, name, "CNI-related control operations by operation and result.", "counter");
    unsigned n = atomic_load_explicit(&n_ctl_ops, memory_order_acquire);
    for (unsigned i = 0; i <= n && r >= 0; i++) {
        struct ctl_slot *s = i < n ? &ctl_ops[i] : &ctl_overflow;
        uint64_t ok = ld(&s->ok), err = ld(&s->err);
        if (i == n && !ok && !err)
            break;
        for (int k = 0; k < 2 && r >= 0; k++) {
            r = buf_printf(out, "%s{op=\"", name);
            if (r >= 0)
                r = put_label_value(out, s->name);
            if (r >= 0)
                r = buf_printf(out, "\",result=\"%s\"} %llu\n", k == 0 ? "ok" : "error",
                               (unsigned long long)(k == 0 ? ok : err));
        }
    }
    return r;
}

int metrics_render(struct buf *out)
{
    if (!out)
        return -EINVAL;
    int r = render_http(out);
    for (int i = 0; i < _M_COUNTER_MAX && r >= 0; i++) {
        r = put_header(out, counter_descs[i].name, counter_descs[i].help, "counter");
        if (r >= 0)
            r = buf_printf(out, "%s %llu\n", counter_descs[i].name,
                           (unsigned long long)ld(&counters[i]));
    }
    for (int i = 0; i < _G_GAUGE_MAX && r >= 0; i++) {
        r = put_header(out, gauge_descs[i].name, gauge_descs[i].help, "gauge");
        if (r >= 0)
            r = buf_printf(out, "%s %lld\n", gauge_descs[i].name,
                           (long long)atomic_load_explicit(&gauges[i], memory_order_relaxed));
    }
    if (r >= 0)
        r = render_providers(out);
    if (r >= 0)
        r = render_ctl(out);
    return r < 0 ? r : 0;
}

uint64_t metrics_get(enum metric_counter m)
{
    if ((unsigned)m >= _M_COUNTER_MAX)
        return 0;
    return ld(&counters[m]);
}

uint64_t metrics_provider_calls(const char *provider)
{
    if (!name_ok(provider))
        return 0;
    struct provider_slot *s =
        provider_find(provider, atomic_load_explicit(&n_providers, memory_order_acquire));
    if (!s)
        return 0;
    return ld(&s->latency_count);
}

static void provider_slot_clear(struct provider_slot *s, bool keep_name)
{
    for (int k = 0; k < _PR_MAX; k++)
        atomic_store(&s->calls[k], 0);
    for (size_t b = 0; b < N_BUCKETS; b++)
        atomic_store(&s->buckets[b], 0);
    atomic_store(&s->latency_sum_ms, 0);
    atomic_store(&s->latency_count, 0);
    if (!keep_name)
        memset(s->name, 0, sizeof(s->name));
}

void metrics_reset(void)
{
    for (int i = 0; i < _M_COUNTER_MAX; i++)
        atomic_store(&counters[i], 0);
    for (int i = 0; i < _G_GAUGE_MAX; i++)
        atomic_store(&gauges[i], 0);
    for (size_t i = 0; i < sizeof(http_codes) / sizeof(http_codes[0]); i++)
        atomic_store(&http_codes[i], 0);
    atomic_store(&http_other, 0);

    pthread_mutex_lock(&reg_lock);
    /* Unpublish first so a concurrent reader sees no half-cleared slot by name. */
    atomic_store(&n_providers, 0);
    atomic_store(&n_ctl_ops, 0);
    for (unsigned i = 0; i < MAX_PROVIDERS; i++)
        provider_slot_clear(&providers[i], false);
    provider_slot_clear(&provider_overflow, true);
    for (unsigned i = 0; i < MAX_CTL_OPS; i++) {
        memset(ctl_ops[i].name, 0, sizeof(ctl_ops[i].name));
        atomic_store(&ctl_ops[i].ok, 0);
        atomic_store(&ctl_ops[i].err, 0);
    }
    atomic_store(&ctl_overflow.ok, 0);
    atomic_store(&ctl_overflow.err, 0);
    pthread_mutex_unlock(&reg_lock);
}
