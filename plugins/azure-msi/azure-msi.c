/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The azure-msi provider: tokens of user-assigned managed identities from the node's own IMDS
 * (DESIGN §1.3), within IMDS' limits of 5 concurrent and 20 identity requests per second per VM.
 * README.md in this folder documents the configuration, the limits and the retry policy.
 *
 * Every request to IMDS goes through one node-wide limiter: at most maxConcurrent in flight and at
 * most maxPerSecond started in any sliding second. With a host of ABI 1.1 or later that is the
 * host's IDB_UPSTREAM_IMDS limiter, whose limits this plugin sets at init() and which the broker's
 * pass-through of excepted pods shares; with an older host it is this plugin's own (the broker
 * loads a provider once, so it covers the node all the same, minus the pass-through). A caller that
 * finds no slot waits for one until its deadline, then fails with IDB_E_RATE_LIMITED. Single-flight
 * per (identity, resource) is the broker's token cache: this plugin is called once per cold key
 * however many pods ask.
 *
 * Threads: issue() runs on many threads at once; the configuration is read-only after init() and
 * the limiter has its own mutex.
 */
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <idbroker/provider.h>

#include <idbroker-internal/macro.h>

#include "arm.h"
#include "imds-reply.h"

#define MSI_NAME "azure-msi"
#define MSI_TOKEN_PATH "/metadata/identity/oauth2/token"
#define MSI_DEFAULT_ENDPOINT "http://169.254.169.254"
#define MSI_DEFAULT_API_VERSION "2018-02-01"
#define MSI_INSTANCE_PATH "/metadata/instance?api-version=2021-02-01"
#define MSI_DEFAULT_ARM_ENDPOINT "https://management.azure.com"
#define MSI_DEFAULT_ARM_RESOURCE "https://management.azure.com/"
#define MSI_DEFAULT_ARM_API_VERSION "2023-03-01"
#define MSI_ARM_TOKEN_MARGIN_S 300  /* renew the node's ARM token this long before it expires */
#define MSI_ARM_POLL_MS 500         /* between GETs while ARM is still updating the VM */
#define MSI_SWEEP_MS 1000           /* how often unused assigned identities are looked for */
#define MSI_SWEEP_DEADLINE_MS 30000 /* ARM's time for one removal */
#define MSI_MAX_CONF_STRING 1024
#define MSI_MAX_QUERY_VALUE 2048   /* resource, client id or resource id, before encoding */
#define MSI_MIN_ATTEMPT_MS 50      /* an attempt with less time left is not started */
#define MSI_DEADLINE_MARGIN_MS 100 /* answer this long before the broker's deadline */
/* The rate window is a second plus this guard, so that jitter in connection set-up cannot make
 * IMDS, which counts arrivals, see one request more than maxPerSecond in its second. */
#define MSI_RATE_WINDOW_MS 1050

struct msi_conf {
    char *endpoint; /* no trailing '/' */
    char *api_version;
    char *ca_file; /* NULL = system default */
    uint32_t attempt_timeout_ms;
    uint32_t max_total_ms;
    uint32_t max_concurrent;
    uint32_t max_per_second;
    uint32_t backoff_initial_ms;
    uint32_t backoff_max_ms;
    uint32_t max_attempts; /* 0 = as many as the deadline allows */
    /* identity assignment through ARM (README.md) */
    bool assign_identities;
    char *arm_endpoint; /* no trailing '/' */
    char *arm_resource;
    char *arm_api_version;
    char *arm_ca_file;
    char *node_resource_id;        /* NULL = compute.resourceId from IMDS */
    char *node_identity_client_id; /* NULL = IMDS' default identity */
    uint32_t unassign_grace_s;
};

/* An identity the provider knows to be on the node's VM/VMSS. */
struct assigned {
    char *resource_id;
    bool ours;             /* added by this provider: removed once unused; else never touched */
    uint64_t last_used_ms; /* CLOCK_MONOTONIC of the last issue() for it */
    uint64_t lifetime_s;   /* of its last token (0 until one was issued) */
};

struct arm {
    pthread_mutex_t op_lock; /* one ARM operation at a time: a GET and its PATCH never interleave */
    char *node_resource;     /* under op_lock: the VM or VMSS whose identity block we change */
    char *token;             /* under op_lock: the node's ARM token (secret) */
    uint64_t token_exp;
    pthread_mutex_t lock; /* the table and `stop` */
    pthread_cond_t cond;  /* CLOCK_MONOTONIC; wakes the sweeper to stop */
    struct assigned *tab;
    size_t n, cap;
    bool stop;
    bool sweeper_running;
    pthread_t sweeper;
};

/*
 * Node-wide admission to IMDS. `starts` is a ring of the CLOCK_MONOTONIC ms at which the last
 * max_per_second requests started: a new one may start only when the oldest of them is at least
 * MSI_RATE_WINDOW_MS old. That is a token bucket of max_per_second tokens where each token
 * comes back one second (plus a guard) after it was spent, so no sliding second ever sees more
 * than max_per_second starts.
 */
struct limiter {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC; signalled when a slot is released */
    uint32_t max_concurrent, per_second;
    uint32_t in_flight;
    uint64_t *starts;
    uint32_t n_starts, next;
};

struct msi {
    const struct idb_host_api *host;
    struct msi_conf conf;
    struct arm *arm;   /* NULL unless assignIdentities */
    bool host_limiter; /* the host's IDB_UPSTREAM_IMDS limiter, else lim */
    struct limiter lim;
};

#define LOG(m, level, ...) (m)->host->log((level), MSI_NAME, __VA_ARGS__)

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timespec mono_timespec(uint64_t ms)
{
    return (struct timespec){.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
}

static uint32_t random_u32(void)
{
    uint32_t v;
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
        v = (uint32_t)mono_ms() * 2654435761u;
    return v;
}

/* Sleeps until CLOCK_MONOTONIC ms `until`. */
static void sleep_until(uint64_t until)
{
    struct timespec ts = mono_timespec(until);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* ---- the limiter ---- */

static int limiter_init(struct limiter *l, uint32_t max_concurrent, uint32_t per_second)
{
    l->starts = calloc(per_second, sizeof(*l->starts));
    if (!l->starts)
        return -ENOMEM;
    l->max_concurrent = max_concurrent;
    l->per_second = per_second;
    pthread_condattr_t ca;
    int r = pthread_condattr_init(&ca);
    if (r == 0) {
        r = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (r == 0)
            r = pthread_cond_init(&l->cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (r != 0) {
        free(l->starts);
        l->starts = NULL;
        return -r;
    }
    pthread_mutex_init(&l->lock, NULL);
    return 0;
}

static void limiter_done(struct limiter *l)
{
    if (!l->starts)
        return;
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    free(l->starts);
    l->starts = NULL;
}

/* When the next request may start as far as the rate goes (CLOCK_MONOTONIC ms). Under the lock.
 */
static uint64_t rate_free_at(const struct limiter *l)
{
    if (l->n_starts < l->per_second)
        return 0;
    return l->starts[l->next] + MSI_RATE_WINDOW_MS; /* the oldest start leaves the window */
}

/*
 * Takes a slot: waits until fewer than max_concurrent requests are in flight and the rate
 * allows one more, or until `deadline` (CLOCK_MONOTONIC ms). Returns 0, or -EAGAIN at the
 * deadline with *ret_wait_ms set to a guess of how long a later caller would wait.
 */
static int limiter_acquire(struct limiter *l, uint64_t deadline, uint64_t *ret_wait_ms)
{
    pthread_mutex_lock(&l->lock);
    for (;;) {
        uint64_t now = mono_ms(), free_at = rate_free_at(l);
        bool conc_ok = l->in_flight < l->max_concurrent;
        if (conc_ok && now >= free_at) {
            l->in_flight++;
            l->starts[l->next] = now;
            l->next = (l->next + 1) % l->per_second;
            if (l->n_starts < l->per_second)
                l->n_starts++;
            pthread_mutex_unlock(&l->lock);
            return 0;
        }
        if (now >= deadline) {
            *ret_wait_ms = free_at > now ? free_at - now : 1000;
            pthread_mutex_unlock(&l->lock);
            return -EAGAIN;
        }
        /* Wake at the deadline, or when the rate window moves (a release signals the rest). */
        uint64_t wake = deadline;
        if (conc_ok && free_at < wake)
            wake = free_at;
        struct timespec ts = mono_timespec(wake);
        pthread_cond_timedwait(&l->cond, &l->lock, &ts);
    }
}

static void limiter_release(struct limiter *l)
{
    pthread_mutex_lock(&l->lock);
    l->in_flight--;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
}

/* A slot of the node-wide IMDS budget: the host's limiter when it has one (ABI 1.1), else ours.
 */
static int imds_acquire(struct msi *m, uint64_t deadline, uint64_t *ret_wait_ms)
{
    if (!m->host_limiter)
        return limiter_acquire(&m->lim, deadline, ret_wait_ms);
    /* The host's deadline is on its clock; ours is CLOCK_MONOTONIC too, but convert anyway. */
    uint64_t now = mono_ms(), host_now = m->host->now_monotonic_ms();
    uint64_t host_deadline = host_now + (deadline > now ? deadline - now : 0);
    uint32_t hint = 0;
    int r = m->host->upstream_acquire(IDB_UPSTREAM_IMDS, host_deadline, &hint);
    if (r == -EAGAIN)
        *ret_wait_ms = hint;
    return r < 0 ? -EAGAIN : 0;
}

static void imds_release(struct msi *m)
{
    if (m->host_limiter)
        m->host->upstream_release(IDB_UPSTREAM_IMDS);
    else
        limiter_release(&m->lim);
}

/* ---- configuration ---- */

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static int conf_string(struct msi *m, const char *key, struct json_object *v, char **ret)
{
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
    if (!s || s[0] == '\0' || strlen(s) > MSI_MAX_CONF_STRING || !printable(s)) {
        LOG(m, IDB_LOG_ERR,
            "config: key '%s' must be a non-empty string of printable characters (at most %d)", key,
            MSI_MAX_CONF_STRING);
        return IDB_E_BAD_CONFIG;
    }
    char *d = strdup(s);
    if (!d)
        return -ENOMEM;
    free(*ret);
    *ret = d;
    return 0;
}

static int conf_uint(struct msi *m, const char *key, struct json_object *v, uint32_t min,
                     uint32_t max, uint32_t *ret)
{
    int64_t n = json_object_get_int64(v);
    if (!json_object_is_type(v, json_type_int) || n < min || n > max) {
        LOG(m, IDB_LOG_ERR, "config: key '%s' must be an integer in %u..%u", key, min, max);
        return IDB_E_BAD_CONFIG;
    }
    *ret = (uint32_t)n;
    return 0;
}

struct uint_key {
    const char *key;
    size_t offset;
    uint32_t min, max, def;
};

#define OFF(f) offsetof(struct msi_conf, f)
static const struct uint_key uint_keys[] = {
    {"attemptTimeoutMs", OFF(attempt_timeout_ms), 100, 60000, 3000},
    {"maxTotalMs", OFF(max_total_ms), 100, 120000, 8000},
    {"maxConcurrent", OFF(max_concurrent), 1, 1000, 5},
    {"maxPerSecond", OFF(max_per_second), 1, 10000, 20},
    {"backoffInitialMs", OFF(backoff_initial_ms), 1, 60000, 500},
    {"backoffMaxMs", OFF(backoff_max_ms), 1, 60000, 4000},
    {"maxAttempts", OFF(max_attempts), 0, 100, 0},
    {"unassignGraceSeconds", OFF(unassign_grace_s), 0, 7 * 86400, 300},
};
#define KNOWN_KEYS                                                                                 \
    "endpoint, apiVersion, caFile, attemptTimeoutMs, maxTotalMs, maxConcurrent, maxPerSecond, "    \
    "backoffInitialMs, backoffMaxMs, maxAttempts, assignIdentities, armEndpoint, armResource, "    \
    "armApiVersion, armCaFile, nodeResourceId, nodeIdentityClientId, unassignGraceSeconds"

static int conf_endpoint(struct msi *m, const char *key, char *endpoint)
{
    if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0) {
        LOG(m, IDB_LOG_ERR, "config: key '%s' must be an http:// or https:// URL, not '%s'", key,
            endpoint);
        return IDB_E_BAD_CONFIG;
    }
    if (strpbrk(endpoint, "?# \"\\")) {
        LOG(m, IDB_LOG_ERR, "config: key '%s' must be a URL without query or fragment", key);
        return IDB_E_BAD_CONFIG;
    }
    size_t n = strlen(endpoint);
    while (n > 0 && endpoint[n - 1] == '/')
        endpoint[--n] = '\0';
    return 0;
}

/* Values that go into ARM URLs: checked once here. */
static int conf_arm(struct msi *m, struct msi_conf *c)
{
    for (const char *p = c->arm_api_version; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || *p == '-')) {
            LOG(m, IDB_LOG_ERR, "config: key 'armApiVersion' must look like 2023-03-01, not '%s'",
                c->arm_api_version);
            return IDB_E_BAD_CONFIG;
        }
    if (c->node_resource_id) {
        _cleanup_free_ char *node = NULL;
        if (arm_node_resource(c->node_resource_id, &node) < 0) {
            LOG(m, IDB_LOG_ERR,
                "config: key 'nodeResourceId' must be the resource ID of a virtual machine or "
                "scale "
                "set (instance), not '%s'",
                c->node_resource_id);
            return IDB_E_BAD_CONFIG;
        }
    }
    if (c->node_identity_client_id && strlen(c->node_identity_client_id) > MSI_MAX_QUERY_VALUE) {
        LOG(m, IDB_LOG_ERR, "config: key 'nodeIdentityClientId' is too long");
        return IDB_E_BAD_CONFIG;
    }
    return 0;
}

static int conf_api_version(struct msi *m, const struct msi_conf *c)
{
    const char *v = c->api_version;
    bool ok = strlen(v) == 10;
    for (size_t i = 0; ok && i < 10; i++)
        ok = (i == 4 || i == 7) ? v[i] == '-' : (v[i] >= '0' && v[i] <= '9');
    if (!ok || strcmp(v, "2018-02-01") < 0) {
        LOG(m, IDB_LOG_ERR,
            "config: key 'apiVersion' must be an IMDS api-version YYYY-MM-DD, 2018-02-01 or "
            "later, "
            "not '%s'",
            v);
        return IDB_E_BAD_CONFIG;
    }
    return 0;
}

static int conf_parse(struct msi *m, struct json_object *o, struct msi_conf *c)
{
    for (size_t i = 0; i < ELEMENTSOF(uint_keys); i++)
        *(uint32_t *)((char *)c + uint_keys[i].offset) = uint_keys[i].def;
    c->endpoint = strdup(MSI_DEFAULT_ENDPOINT);
    c->api_version = strdup(MSI_DEFAULT_API_VERSION);
    c->arm_endpoint = strdup(MSI_DEFAULT_ARM_ENDPOINT);
    c->arm_resource = strdup(MSI_DEFAULT_ARM_RESOURCE);
    c->arm_api_version = strdup(MSI_DEFAULT_ARM_API_VERSION);
    if (!c->endpoint || !c->api_version || !c->arm_endpoint || !c->arm_resource ||
        !c->arm_api_version)
        return -ENOMEM;

    json_object_object_foreach(o, k, v)
    {
        int r = 1;
        if (streq(k, "endpoint"))
            r = conf_string(m, k, v, &c->endpoint);
        else if (streq(k, "apiVersion"))
            r = conf_string(m, k, v, &c->api_version);
        else if (streq(k, "caFile"))
            r = conf_string(m, k, v, &c->ca_file);
        else if (streq(k, "armEndpoint"))
            r = conf_string(m, k, v, &c->arm_endpoint);
        else if (streq(k, "armResource"))
            r = conf_string(m, k, v, &c->arm_resource);
        else if (streq(k, "armApiVersion"))
            r = conf_string(m, k, v, &c->arm_api_version);
        else if (streq(k, "armCaFile"))
            r = conf_string(m, k, v, &c->arm_ca_file);
        else if (streq(k, "nodeResourceId"))
            r = conf_string(m, k, v, &c->node_resource_id);
        else if (streq(k, "nodeIdentityClientId"))
            r = conf_string(m, k, v, &c->node_identity_client_id);
        else if (streq(k, "assignIdentities")) {
            if (!json_object_is_type(v, json_type_boolean)) {
                LOG(m, IDB_LOG_ERR, "config: key 'assignIdentities' must be true or false");
                return IDB_E_BAD_CONFIG;
            }
            c->assign_identities = json_object_get_boolean(v);
            r = 0;
        }
        for (size_t i = 0; r == 1 && i < ELEMENTSOF(uint_keys); i++)
            if (streq(k, uint_keys[i].key))
                r = conf_uint(m, k, v, uint_keys[i].min, uint_keys[i].max,
                              (uint32_t *)((char *)c + uint_keys[i].offset));
        if (r == 1) {
            LOG(m, IDB_LOG_ERR, "config: unknown key '%.64s' (known: " KNOWN_KEYS ")", k);
            return IDB_E_BAD_CONFIG;
        }
        if (r < 0)
            return r;
    }
    int r = conf_endpoint(m, "endpoint", c->endpoint);
    if (r < 0)
        return r;
    r = conf_endpoint(m, "armEndpoint", c->arm_endpoint);
    if (r < 0)
        return r;
    r = conf_api_version(m, c);
    if (r < 0)
        return r;
    r = conf_arm(m, c);
    if (r < 0)
        return r;
    if (c->backoff_max_ms < c->backoff_initial_ms) {
        LOG(m, IDB_LOG_ERR, "config: 'backoffMaxMs' (%u) must not be below 'backoffInitialMs' (%u)",
            c->backoff_max_ms, c->backoff_initial_ms);
        return IDB_E_BAD_CONFIG;
    }
    return 0;
}

static void conf_done(struct msi_conf *c)
{
    free(c->endpoint);
    free(c->api_version);
    free(c->ca_file);
    free(c->arm_endpoint);
    free(c->arm_resource);
    free(c->arm_api_version);
    free(c->arm_ca_file);
    free(c->node_resource_id);
    free(c->node_identity_client_id);
    memset(c, 0, sizeof(*c));
}

/* ---- provider entry points ---- */

static int arm_start(struct msi *m);
static struct arm *arm_free(struct arm *a);

static void msi_destroy(void *state)
{
    struct msi *m = state;
    if (!m)
        return;
    m->arm = arm_free(m->arm); /* stops the sweeper first: it uses the rest */
    limiter_done(&m->lim);
    conf_done(&m->conf);
    free(m);
}

static int msi_init(const struct idb_host_api *host, const char *conf, void **ret_state)
{
    if (!host || !IDB_HOST_HAS(host, http) || !ret_state)
        return -EINVAL;
    struct msi *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->host = host;

    enum json_tokener_error jerr = json_tokener_success;
    struct json_object *o = json_tokener_parse_verbose(conf ? conf : "{}", &jerr);
    int r = IDB_E_BAD_CONFIG;
    if (!o || !json_object_is_type(o, json_type_object)) {
        LOG(m, IDB_LOG_ERR, "config must be a JSON object%s%s", o ? "" : ": ",
            o ? "" : json_tokener_error_desc(jerr));
        goto out;
    }
    r = conf_parse(m, o, &m->conf);
    if (r < 0)
        goto out;
    if (IDB_HOST_HAS(host, upstream_release)) {
        r = host->upstream_limits(IDB_UPSTREAM_IMDS, m->conf.max_concurrent,
                                  m->conf.max_per_second);
        m->host_limiter = true;
    } else {
        r = limiter_init(&m->lim, m->conf.max_concurrent, m->conf.max_per_second);
    }
    if (r < 0)
        goto out;
    if (m->conf.assign_identities) {
        if (!IDB_HOST_HAS(host, upstream_release)) {
            /* PATCH came with ABI 1.1. */
            LOG(m, IDB_LOG_ERR, "config: 'assignIdentities' needs a broker of provider ABI 1.1");
            r = IDB_E_BAD_CONFIG;
            goto out;
        }
        r = arm_start(m);
        if (r < 0)
            goto out;
        LOG(m, IDB_LOG_INFO,
            "identity assignment through ARM at '%s' (api-version %s) on %s; unused identities "
            "are removed after their token lifetime plus %u s",
            m->conf.arm_endpoint, m->conf.arm_api_version,
            m->conf.node_resource_id ? m->conf.node_resource_id : "the VM/VMSS named by IMDS",
            m->conf.unassign_grace_s);
    }
    LOG(m, IDB_LOG_INFO,
        "IMDS at '%s' (api-version %s), at most %u concurrent and %u per second (%s limiter), "
        "attempts of %u ms within %u ms",
        m->conf.endpoint, m->conf.api_version, m->conf.max_concurrent, m->conf.max_per_second,
        m->host_limiter ? "the host's node-wide" : "own", m->conf.attempt_timeout_ms,
        m->conf.max_total_ms);
    *ret_state = TAKE_PTR(m);
    r = 0;
out:
    json_object_put(o);
    msi_destroy(m);
    return r;
}

/* Appends the percent-encoding (RFC 3986 unreserved kept) of s to out[*pos..cap). */
static int url_encode(char *out, size_t cap, size_t *pos, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                     (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        if (*pos + (plain ? 1 : 3) >= cap)
            return -E2BIG;
        if (plain) {
            out[(*pos)++] = (char)ch;
        } else {
            out[(*pos)++] = '%';
            out[(*pos)++] = hex[ch >> 4];
            out[(*pos)++] = hex[ch & 15];
        }
    }
    out[*pos] = '\0';
    return 0;
}

static int append(char *out, size_t cap, size_t *pos, const char *s)
{
    size_t n = strlen(s);
    if (*pos + n >= cap)
        return -E2BIG;
    memcpy(out + *pos, s, n + 1);
    *pos += n;
    return 0;
}

/* Builds the token URL for req into a new string. */
static int token_url(const struct msi *m, const struct idb_token_req *req, char **ret)
{
    size_t cap = strlen(m->conf.endpoint) + 128 + 6 * MSI_MAX_QUERY_VALUE, pos = 0;
    _cleanup_free_ char *u = malloc(cap);
    if (!u)
        return -ENOMEM;
    u[0] = '\0';
    bool by_client = req->client_id && req->client_id[0];
    int r = append(u, cap, &pos, m->conf.endpoint);
    if (r >= 0)
        r = append(u, cap, &pos, MSI_TOKEN_PATH "?api-version=");
    if (r >= 0)
        r = append(u, cap, &pos, m->conf.api_version);
    if (r >= 0)
        r = append(u, cap, &pos, "&resource=");
    if (r >= 0)
        r = url_encode(u, cap, &pos, req->resource);
    if (r >= 0)
        r = append(u, cap, &pos, by_client ? "&client_id=" : "&msi_res_id=");
    if (r >= 0)
        r = url_encode(u, cap, &pos, by_client ? req->client_id : req->resource_id);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(u);
    return 0;
}

/* A string from host->alloc, or NULL. */
static char *host_strdup(const struct msi *m, const char *s)
{
    size_t n = strlen(s);
    char *d = m->host->alloc(n + 1);
    if (d)
        memcpy(d, s, n + 1);
    return d;
}

/* Sets the pod-facing IMDS error body of a refusal. */
static void set_error_body(const struct msi *m, struct idb_token *ret, const char *body, size_t len,
                           const char *error, const char *description)
{
    if (!IDB_TOKEN_HAS(ret, upstream_error) || ret->upstream_error)
        return;
    if (body && imds_error_body_valid(body, len)) {
        ret->upstream_error = host_strdup(m, body);
        return;
    }
    struct json_object *o = json_object_new_object();
    if (!o)
        return;
    json_object_object_add(o, "error", json_object_new_string(error));
    json_object_object_add(o, "error_description", json_object_new_string(description));
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    if (s)
        ret->upstream_error = host_strdup(m, s);
    json_object_put(o);
}

static int fill_token(const struct msi *m, const struct idb_token_req *req,
                      const struct imds_token *t, struct idb_token *ret)
{
    char *tok = host_strdup(m, t->access_token);
    if (!tok)
        return -ENOMEM;
    char *cid = NULL;
    if (t->client_id && !(req->client_id && streq(req->client_id, t->client_id))) {
        cid = host_strdup(m, t->client_id);
        if (!cid) {
            explicit_bzero(tok, strlen(tok));
            m->host->free(tok);
            return -ENOMEM;
        }
    }
    ret->access_token = tok;
    ret->expires_on = t->expires_on;
    ret->not_before = t->not_before;
    ret->ext_expires_in = t->ext_expires_in;
    ret->client_id = cid;
    return 0;
}

/* Seconds to tell a pod to wait, at least 1. */
static uint32_t seconds_up(uint64_t ms)
{
    uint64_t s = (ms + 999) / 1000;
    return s == 0 ? 1 : s > 3600 ? 3600 : (uint32_t)s;
}

/* The outcome of one exchange with IMDS. */
struct attempt {
    int rc;      /* host->http's return */
    long status; /* reply status when rc == 0 */
    uint32_t retry_after_s;
    char *body; /* host->alloc'd; may hold a token: wiped */
    size_t body_len;
};

static void attempt_done(const struct msi *m, struct attempt *a)
{
    if (a->body) {
        explicit_bzero(a->body, a->body_len);
        m->host->free(a->body);
    }
    *a = (struct attempt){0};
}

/* Describes an attempt's outcome for the log. */
static void outcome(const struct msi *m, const struct attempt *a, char *buf, size_t len)
{
    if (a->rc < 0)
        snprintf(buf, len, "%s", m->host->strerror(a->rc));
    else
        snprintf(buf, len, "status %ld", a->status);
}

static void do_attempt(struct msi *m, const char *url, uint64_t deadline, struct attempt *a)
{
    uint64_t now = mono_ms(), left = deadline > now ? deadline - now : 0;
    static const char *const headers[] = {"Metadata: true", NULL};
    struct idb_http_req hreq = {
        .size = sizeof(hreq),
        .method = "GET",
        .url = url,
        .headers = headers,
        .timeout_ms =
            (uint32_t)(left < m->conf.attempt_timeout_ms ? left : m->conf.attempt_timeout_ms),
        .ca_file = m->conf.ca_file,
    };
    struct idb_http_resp resp = {.size = sizeof(resp)};
    a->rc = m->host->http(&hreq, &resp);
    if (a->rc < 0)
        return;
    a->status = resp.status;
    a->retry_after_s = resp.retry_after_s;
    a->body = resp.body;
    a->body_len = resp.body_len;
    m->host->free(resp.www_authenticate);
}

/* ---- identity assignment through ARM (README.md, "Identity assignment") ---- */

/*
 * A GET of the node's IMDS (the IMDS limiter applies) with IMDS' retry policy, within the
 * deadline. Returns 0 with *a holding a 200 reply, or IDB_E_UPSTREAM_UNAVAILABLE /
 * IDB_E_RATE_LIMITED / IDB_E_UPSTREAM_4XX / IDB_E_UPSTREAM_BAD_REPLY / a local error.
 */
static int imds_get(struct msi *m, const char *url, uint64_t deadline, struct attempt *a)
{
    for (unsigned n = 1;; n++) {
        attempt_done(m, a);
        uint64_t lim_wait = 0;
        if (imds_acquire(m, deadline, &lim_wait) < 0)
            return IDB_E_RATE_LIMITED;
        if (mono_ms() + MSI_MIN_ATTEMPT_MS > deadline) {
            imds_release(m);
            return IDB_E_UPSTREAM_UNAVAILABLE;
        }
        do_attempt(m, url, deadline, a);
        imds_release(m);
        switch (imds_classify(a->rc, a->status)) {
        case IMDS_V_OK:
            return 0;
        case IMDS_V_REFUSED:
            return IDB_E_UPSTREAM_4XX;
        case IMDS_V_BAD_REPLY:
            return IDB_E_UPSTREAM_BAD_REPLY;
        case IMDS_V_FAILED:
            return a->rc;
        case IMDS_V_RETRY:
        case IMDS_V_THROTTLED:
            break;
        }
        uint64_t wait =
            imds_backoff_ms(n, m->conf.backoff_initial_ms, m->conf.backoff_max_ms, random_u32());
        if ((uint64_t)a->retry_after_s * 1000 > wait)
            wait = (uint64_t)a->retry_after_s * 1000;
        uint64_t now = mono_ms();
        if (now + wait + MSI_MIN_ATTEMPT_MS > deadline)
            return a->status == 429 ? IDB_E_RATE_LIMITED : IDB_E_UPSTREAM_UNAVAILABLE;
        sleep_until(now + wait);
    }
}

/* The node's own token for ARM, from IMDS, cached until shortly before it expires. Under
 * op_lock.
 */
static int arm_token(struct msi *m, uint64_t deadline)
{
    struct arm *arm = m->arm;
    if (arm->token && arm->token_exp > m->host->now_realtime() + MSI_ARM_TOKEN_MARGIN_S)
        return 0;
    struct idb_token_req req = {
        .size = sizeof(req),
        .resource = m->conf.arm_resource,
        .client_id = m->conf.node_identity_client_id,
    };
    _cleanup_free_ char *url = NULL;
    int r;
    if (req.client_id) {
        r = token_url(m, &req, &url);
    } else {
        /* No selector: IMDS' default identity of the node. */
        size_t cap = strlen(m->conf.endpoint) + 128 + 3 * strlen(req.resource), pos = 0;
        url = malloc(cap);
        r = url ? 0 : -ENOMEM;
        if (r >= 0)
            r = append(url, cap, &pos, m->conf.endpoint);
        if (r >= 0)
            r = append(url, cap, &pos, MSI_TOKEN_PATH "?api-version=");
        if (r >= 0)
            r = append(url, cap, &pos, m->conf.api_version);
        if (r >= 0)
            r = append(url, cap, &pos, "&resource=");
        if (r >= 0)
            r = url_encode(url, cap, &pos, req.resource);
    }
    if (r < 0)
        return r;
    struct attempt a = {0};
    r = imds_get(m, url, deadline, &a);
    if (r < 0) {
        LOG(m, IDB_LOG_WARNING, "no ARM token of the node's identity from IMDS: %s",
            m->host->strerror(r));
        attempt_done(m, &a);
        return r == IDB_E_UPSTREAM_4XX ? IDB_E_UPSTREAM_UNAVAILABLE : r;
    }
    struct imds_token t = {0};
    r = imds_reply_parse(a.body, a.body_len, m->host->now_realtime(), &t);
    attempt_done(m, &a);
    if (r < 0)
        return IDB_E_UPSTREAM_BAD_REPLY;
    if (arm->token) {
        explicit_bzero(arm->token, strlen(arm->token));
        free(arm->token);
    }
    arm->token = TAKE_PTR(t.access_token);
    arm->token_exp = t.expires_on;
    imds_token_done(&t);
    return 0;
}

/* The VM or VMSS whose identity block we change: configured, or compute.resourceId from IMDS'
 * instance metadata (asked once). Under op_lock. */
static int arm_node(struct msi *m, uint64_t deadline)
{
    struct arm *arm = m->arm;
    if (arm->node_resource)
        return 0;
    if (m->conf.node_resource_id)
        return arm_node_resource(m->conf.node_resource_id, &arm->node_resource);
    size_t n = strlen(m->conf.endpoint) + sizeof(MSI_INSTANCE_PATH);
    _cleanup_free_ char *url = malloc(n);
    if (!url)
        return -ENOMEM;
    snprintf(url, n, "%s%s", m->conf.endpoint, MSI_INSTANCE_PATH);
    struct attempt a = {0};
    int r = imds_get(m, url, deadline, &a);
    _cleanup_free_ char *rid = NULL;
    if (r >= 0)
        r = arm_instance_resource_id(a.body, a.body_len, &rid);
    attempt_done(m, &a);
    if (r >= 0)
        r = arm_node_resource(rid, &arm->node_resource);
    if (r < 0) {
        LOG(m, IDB_LOG_ERR, "cannot learn the node's VM/VMSS from IMDS instance metadata: %s",
            m->host->strerror(r));
        return r == -EINVAL || r == -EBADMSG ? IDB_E_UPSTREAM_BAD_REPLY : r;
    }
    LOG(m, IDB_LOG_INFO, "the node's identities live on '%s'", arm->node_resource);
    return 0;
}

/* One exchange with ARM about the node's resource (no IMDS limiter: ARM is not IMDS). */
static void arm_exchange(struct msi *m, const char *method, const char *body, uint64_t deadline,
                         struct attempt *a)
{
    struct arm *arm = m->arm;
    attempt_done(m, a);
    size_t n = strlen(m->conf.arm_endpoint) + strlen(arm->node_resource) +
               strlen(m->conf.arm_api_version) + 16;
    _cleanup_free_ char *url = malloc(n);
    size_t hn = strlen(arm->token) + 32;
    _cleanup_erase_ char *auth = malloc(hn);
    if (!url || !auth) {
        a->rc = -ENOMEM;
        return;
    }
    snprintf(url, n, "%s%s?api-version=%s", m->conf.arm_endpoint, arm->node_resource,
             m->conf.arm_api_version);
    snprintf(auth, hn, "Authorization: Bearer %s", arm->token);
    const char *const headers[] = {auth, "Content-Type: application/json", NULL};
    uint64_t now = mono_ms(), left = deadline > now ? deadline - now : 0;
    struct idb_http_req hreq = {
        .size = sizeof(hreq),
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .timeout_ms = (uint32_t)(left > 60000 ? 60000 : left),
        .ca_file = m->conf.arm_ca_file,
    };
    struct idb_http_resp resp = {.size = sizeof(resp)};
    if (left < MSI_MIN_ATTEMPT_MS) {
        a->rc = -ETIMEDOUT;
        return;
    }
    a->rc = m->host->http(&hreq, &resp);
    if (a->rc < 0)
        return;
    a->status = resp.status;
    a->retry_after_s = resp.retry_after_s;
    a->body = resp.body;
    a->body_len = resp.body_len;
    m->host->free(resp.www_authenticate);
}

/* What an ARM failure means to the pod. */
static int arm_failure(struct msi *m, const char *what, const struct attempt *a)
{
    char o[64];
    outcome(m, a, o, sizeof(o));
    LOG(m, IDB_LOG_WARNING, "ARM %s of '%s' failed: %s", what, m->arm->node_resource, o);
    if (a->rc < 0 || a->status >= 500 || a->status == 408 || a->status == 409)
        return IDB_E_UPSTREAM_UNAVAILABLE;
    if (a->status == 429)
        return IDB_E_RATE_LIMITED;
    return IDB_E_UPSTREAM_4XX; /* 401/403 (missing roles), 404 (no such VM), 400 */
}

/* GET of the node's resource: its identity block. Under op_lock. */
static int arm_read(struct msi *m, uint64_t deadline, struct arm_identity *ret)
{
    struct attempt a = {0};
    arm_exchange(m, "GET", NULL, deadline, &a);
    int r;
    if (a.rc < 0 || a.status != 200)
        r = arm_failure(m, "GET", &a);
    else if (arm_identity_parse(a.body, a.body_len, ret) < 0)
        r = IDB_E_UPSTREAM_BAD_REPLY;
    else
        r = 0;
    attempt_done(m, &a);
    return r;
}

static bool state_terminal(const char *s)
{
    return !s || strcasecmp(s, "Succeeded") == 0 || strcasecmp(s, "Failed") == 0 ||
           strcasecmp(s, "Canceled") == 0;
}

/* PATCH of the node's identity block, then GETs until ARM has applied it. Under op_lock. */
static int arm_update(struct msi *m, const char *body, uint64_t deadline)
{
    struct attempt a = {0};
    arm_exchange(m, "PATCH", body, deadline, &a);
    if (a.rc < 0 || (a.status != 200 && a.status != 201 && a.status != 202)) {
        int r = arm_failure(m, "PATCH", &a);
        attempt_done(m, &a);
        return r;
    }
    struct arm_identity id = {0};
    int r = a.status == 202 ? 0 : arm_identity_parse(a.body, a.body_len, &id);
    bool done = a.status != 202 && r >= 0 && state_terminal(id.provisioning_state);
    attempt_done(m, &a);
    while (!done) {
        arm_identity_done(&id);
        if (mono_ms() + MSI_ARM_POLL_MS + MSI_MIN_ATTEMPT_MS > deadline) {
            LOG(m, IDB_LOG_WARNING, "ARM still updating '%s' at the deadline",
                m->arm->node_resource);
            return IDB_E_UPSTREAM_UNAVAILABLE;
        }
        sleep_until(mono_ms() + MSI_ARM_POLL_MS);
        r = arm_read(m, deadline, &id);
        if (r < 0)
            return r;
        done = state_terminal(id.provisioning_state);
    }
    if (id.provisioning_state && strcasecmp(id.provisioning_state, "Succeeded") != 0) {
        LOG(m, IDB_LOG_WARNING, "ARM update of '%s' ended '%s'", m->arm->node_resource,
            id.provisioning_state);
        r = IDB_E_UPSTREAM_UNAVAILABLE;
    }
    arm_identity_done(&id);
    return r < 0 ? r : 0;
}

/* The table entry of resource_id, under arm->lock. */
static struct assigned *assigned_find(struct arm *arm, const char *resource_id)
{
    for (size_t i = 0; i < arm->n; i++)
        if (strcasecmp(arm->tab[i].resource_id, resource_id) == 0)
            return &arm->tab[i];
    return NULL;
}

static int assigned_add(struct arm *arm, const char *resource_id, bool ours, uint64_t now)
{
    pthread_mutex_lock(&arm->lock);
    int r = 0;
    struct assigned *e = assigned_find(arm, resource_id);
    if (!e) {
        if (arm->n == arm->cap) {
            size_t cap = arm->cap ? arm->cap * 2 : 16;
            struct assigned *t = realloc(arm->tab, cap * sizeof(*t));
            if (!t) {
                r = -ENOMEM;
                goto out;
            }
            arm->tab = t;
            arm->cap = cap;
        }
        char *d = strdup(resource_id);
        if (!d) {
            r = -ENOMEM;
            goto out;
        }
        e = &arm->tab[arm->n++];
        *e = (struct assigned){.resource_id = d, .ours = ours};
    }
    e->last_used_ms = now;
out:
    pthread_mutex_unlock(&arm->lock);
    return r;
}

/* Marks resource_id used now; returns whether it is known to be on the node. */
static bool assigned_touch(struct arm *arm, const char *resource_id, uint64_t lifetime_s)
{
    pthread_mutex_lock(&arm->lock);
    struct assigned *e = assigned_find(arm, resource_id);
    if (e) {
        e->last_used_ms = mono_ms();
        if (lifetime_s)
            e->lifetime_s = lifetime_s;
    }
    pthread_mutex_unlock(&arm->lock);
    return e != NULL;
}

/*
 * Makes sure the identity resource_id is on the node's VM/VMSS before its first token: GET the
 * identity block and, if it is not there, PATCH it with the union of what is there and this
 * one. *ret_fresh tells whether this call added it (IMDS may take a moment to know it then).
 */
static int arm_ensure(struct msi *m, const char *resource_id, uint64_t deadline, bool *ret_fresh)
{
    struct arm *arm = m->arm;
    *ret_fresh = false;
    if (assigned_touch(arm, resource_id, 0))
        return 0;
    pthread_mutex_lock(&arm->op_lock);
    /* Another thread may have added it while we waited for the lock. */
    if (assigned_touch(arm, resource_id, 0)) {
        pthread_mutex_unlock(&arm->op_lock);
        return 0;
    }
    struct arm_identity id = {0};
    _cleanup_free_ char *body = NULL;
    int r = arm_node(m, deadline);
    if (r >= 0)
        r = arm_token(m, deadline);
    if (r >= 0)
        r = arm_read(m, deadline, &id);
    if (r < 0)
        goto out;
    if (arm_identity_has(&id, resource_id)) {
        /* Someone else put it there (AKS, an operator): never ours to remove. */
        r = assigned_add(arm, resource_id, false, mono_ms());
        goto out;
    }
    r = arm_patch_add(&id, resource_id, &body);
    if (r >= 0)
        r = arm_update(m, body, deadline);
    if (r >= 0) {
        LOG(m, IDB_LOG_NOTICE, "assigned identity '%s' to '%s'", resource_id, arm->node_resource);
        *ret_fresh = true;
        r = assigned_add(arm, resource_id, true, mono_ms());
    }
out:
    arm_identity_done(&id);
    pthread_mutex_unlock(&arm->op_lock);
    return r;
}

/* Removes identity resource_id (one we added) from the node, keeping every other. */
static int arm_remove(struct msi *m, const char *resource_id)
{
    struct arm *arm = m->arm;
    uint64_t deadline = mono_ms() + MSI_SWEEP_DEADLINE_MS;
    struct arm_identity id = {0};
    _cleanup_free_ char *body = NULL;
    pthread_mutex_lock(&arm->op_lock);
    int r = arm_token(m, deadline);
    if (r >= 0)
        r = arm_read(m, deadline, &id);
    if (r >= 0 && arm_identity_has(&id, resource_id)) {
        r = arm_patch_remove(&id, resource_id, &body);
        if (r >= 0)
            r = arm_update(m, body, deadline);
    }
    /* Failed: back in the table as ours (before anyone else may look at the VM), so that it is
     * tried again after another idle period, unless it is used again meanwhile. */
    if (r < 0)
        assigned_add(arm, resource_id, true, mono_ms());
    arm_identity_done(&id);
    pthread_mutex_unlock(&arm->op_lock);
    return r;
}

/*
 * The sweeper: removes an identity this provider added once no token of it was issued for the
 * lifetime of its last token plus unassignGraceSeconds. The broker's cache refreshes a token at
 * half-life for as long as some pod asked for it within the last token lifetime, and never
 * calls the provider for a key no pod asks for any more; so an identity in use sees an issue()
 * at least every half-life, and one that saw none for a whole lifetime is no longer used by any
 * pod here.
 */
static void *sweeper_main(void *arg)
{
    struct msi *m = arg;
    struct arm *arm = m->arm;
    pthread_mutex_lock(&arm->lock);
    while (!arm->stop) {
        struct timespec ts = mono_timespec(mono_ms() + MSI_SWEEP_MS);
        pthread_cond_timedwait(&arm->cond, &arm->lock, &ts);
        if (arm->stop)
            break;
        uint64_t now = mono_ms();
        char *victim = NULL;
        for (size_t i = 0; i < arm->n && !victim; i++) {
            struct assigned *e = &arm->tab[i];
            uint64_t idle_limit = (e->lifetime_s + m->conf.unassign_grace_s) * 1000;
            if (e->ours && now - e->last_used_ms > idle_limit) {
                /* Out of the table first: an issue() from now on assigns it again. */
                victim = e->resource_id;
                arm->tab[i] = arm->tab[--arm->n];
            }
        }
        if (!victim)
            continue;
        pthread_mutex_unlock(&arm->lock);
        int r = arm_remove(m, victim);
        if (r < 0) {
            LOG(m, IDB_LOG_WARNING,
                "cannot remove unused identity '%s' from the node: %s, retrying "
                "later",
                victim, m->host->strerror(r));
        } else {
            LOG(m, IDB_LOG_NOTICE, "removed identity '%s' from '%s': no pod on this node uses it",
                victim, strna(arm->node_resource));
        }
        free(victim);
        pthread_mutex_lock(&arm->lock);
    }
    pthread_mutex_unlock(&arm->lock);
    return NULL;
}

static struct arm *arm_free(struct arm *arm)
{
    if (!arm)
        return NULL;
    if (arm->sweeper_running) {
        pthread_mutex_lock(&arm->lock);
        arm->stop = true;
        pthread_cond_broadcast(&arm->cond);
        pthread_mutex_unlock(&arm->lock);
        pthread_join(arm->sweeper, NULL);
    }
    for (size_t i = 0; i < arm->n; i++)
        free(arm->tab[i].resource_id);
    free(arm->tab);
    free(arm->node_resource);
    if (arm->token) {
        explicit_bzero(arm->token, strlen(arm->token));
        free(arm->token);
    }
    pthread_cond_destroy(&arm->cond);
    pthread_mutex_destroy(&arm->lock);
    pthread_mutex_destroy(&arm->op_lock);
    free(arm);
    return NULL;
}

static int arm_start(struct msi *m)
{
    struct arm *arm = calloc(1, sizeof(*arm));
    if (!arm)
        return -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&arm->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&arm->lock, NULL);
    pthread_mutex_init(&arm->op_lock, NULL);
    m->arm = arm;
    int r = pthread_create(&arm->sweeper, NULL, sweeper_main, m);
    if (r != 0) {
        m->arm = arm_free(arm);
        return -r;
    }
    arm->sweeper_running = true;
    return 0;
}

static int msi_issue(void *state, const struct idb_token_req *req, struct idb_token *ret)
{
    struct msi *m = state;
    if (!m || !req || !ret || !IDB_REQ_HAS(req, deadline_ms) || !IDB_TOKEN_HAS(ret, reserved0))
        return -EINVAL;
    if (!req->resource || !req->resource[0] || strlen(req->resource) > MSI_MAX_QUERY_VALUE)
        return -EINVAL;
    const char *ns = strna(req->identity_namespace), *name = strna(req->identity_name);
    bool has_client = req->client_id && req->client_id[0];
    bool has_res = req->resource_id && req->resource_id[0];
    if ((!has_client && !has_res) || (has_client && strlen(req->client_id) > MSI_MAX_QUERY_VALUE) ||
        (has_res && strlen(req->resource_id) > MSI_MAX_QUERY_VALUE)) {
        LOG(m, IDB_LOG_WARNING, "identity %s/%s has neither a usable clientID nor resourceID", ns,
            name);
        ret->upstream_status = 400;
        set_error_body(m, ret, NULL, 0, "invalid_request",
                       "The AzureIdentity has neither clientID nor resourceID");
        return IDB_E_UPSTREAM_4XX;
    }

    /* Our deadline: the broker's (converted to our clock, with a margin so that our answer, not
     * its timeout, reaches the pod) or maxTotalMs, whichever comes first. */
    uint64_t start = mono_ms(), host_now = m->host->now_monotonic_ms();
    uint64_t deadline = start + m->conf.max_total_ms;
    if (req->deadline_ms) {
        uint64_t left = req->deadline_ms > host_now ? req->deadline_ms - host_now : 0;
        left = left > MSI_DEADLINE_MARGIN_MS * 2 ? left - MSI_DEADLINE_MARGIN_MS : left / 2;
        if (start + left < deadline)
            deadline = start + left;
    }

    _cleanup_free_ char *url = NULL;
    int r = token_url(m, req, &url);
    if (r < 0)
        return r;

    /* Identity assignment: the identity must be on the node's VM/VMSS before IMDS can issue. */
    bool fresh = false, tracked = m->arm && has_res;
    if (tracked) {
        if (!arm_identity_id_valid(req->resource_id)) {
            LOG(m, IDB_LOG_WARNING, "identity %s/%s: resourceID is not a user-assigned identity",
                ns, name);
            ret->upstream_status = 400;
            set_error_body(m, ret, NULL, 0, "invalid_request",
                           "The AzureIdentity's resourceID is not a user-assigned identity");
            return IDB_E_UPSTREAM_4XX;
        }
        r = arm_ensure(m, req->resource_id, deadline, &fresh);
        if (r == IDB_E_UPSTREAM_4XX) {
            ret->upstream_status = 400;
            set_error_body(m, ret, NULL, 0, "invalid_request",
                           "Identity not found: it could not be assigned to this node");
        } else if (r == IDB_E_UPSTREAM_UNAVAILABLE || r == IDB_E_RATE_LIMITED) {
            ret->retry_after_s = 5;
        }
        if (r < 0) {
            LOG(m, IDB_LOG_WARNING, "identity %s/%s: not assigned to the node: %s", ns, name,
                m->host->strerror(r));
            return r;
        }
    }

    struct attempt a = {0};
    enum imds_verdict v = IMDS_V_RETRY;
    uint64_t wait_ms = 0;
    for (unsigned n = 1;; n++) {
        attempt_done(m, &a);
        uint64_t lim_wait = 0;
        if (imds_acquire(m, deadline, &lim_wait) < 0) {
            /* Throttled by our own limits until the deadline: the node is at IMDS' limits. */
            LOG(m, IDB_LOG_NOTICE, "identity %s/%s: no IMDS slot before the deadline (%s)", ns,
                name, n == 1 ? "first attempt" : "retry");
            ret->retry_after_s = seconds_up(lim_wait);
            return IDB_E_RATE_LIMITED;
        }
        uint64_t now = mono_ms();
        if (now + MSI_MIN_ATTEMPT_MS > deadline) {
            imds_release(m);
            break;
        }
        do_attempt(m, url, deadline, &a);
        imds_release(m);
        v = imds_classify(a.rc, a.status);
        /* IMDS may not know an identity for a moment after ARM assigned it. */
        if (v == IMDS_V_REFUSED && fresh && a.status == 400)
            v = IMDS_V_RETRY;

        if (v == IMDS_V_OK) {
            struct imds_token t = {0};
            r = imds_reply_parse(a.body, a.body_len, m->host->now_realtime(), &t);
            attempt_done(m, &a);
            if (r < 0) {
                LOG(m, IDB_LOG_WARNING, "identity %s/%s: IMDS sent a malformed token reply: %s", ns,
                    name, m->host->strerror(r));
                return IDB_E_UPSTREAM_BAD_REPLY;
            }
            r = fill_token(m, req, &t, ret);
            uint64_t now_s = m->host->now_realtime();
            if (r >= 0 && tracked)
                assigned_touch(m->arm, req->resource_id,
                               t.expires_on > now_s ? t.expires_on - now_s : 1);
            imds_token_done(&t);
            return r;
        }
        if (v == IMDS_V_REFUSED) {
            LOG(m, IDB_LOG_WARNING, "identity %s/%s: IMDS refused the token request with %ld", ns,
                name, a.status);
            ret->upstream_status = a.status;
            set_error_body(m, ret, a.body, a.body_len, "invalid_request",
                           "The node's metadata service refused the token request");
            attempt_done(m, &a);
            return IDB_E_UPSTREAM_4XX;
        }
        if (v == IMDS_V_BAD_REPLY) {
            char what[64];
            outcome(m, &a, what, sizeof(what));
            LOG(m, IDB_LOG_WARNING, "identity %s/%s: unexpected IMDS reply (%s)", ns, name, what);
            attempt_done(m, &a);
            return IDB_E_UPSTREAM_BAD_REPLY;
        }
        if (v == IMDS_V_FAILED) {
            LOG(m, IDB_LOG_ERR, "identity %s/%s: cannot ask IMDS: %s", ns, name,
                m->host->strerror(a.rc));
            return a.rc;
        }

        /* Retryable: back off (at least as long as IMDS asked), never past the deadline. */
        wait_ms =
            imds_backoff_ms(n, m->conf.backoff_initial_ms, m->conf.backoff_max_ms, random_u32());
        if ((uint64_t)a.retry_after_s * 1000 > wait_ms)
            wait_ms = (uint64_t)a.retry_after_s * 1000;
        char what[64];
        outcome(m, &a, what, sizeof(what));
        LOG(m, IDB_LOG_INFO, "identity %s/%s: IMDS attempt %u: %s, retrying in %llu ms", ns, name,
            n, what, (unsigned long long)wait_ms);
        now = mono_ms();
        if ((m->conf.max_attempts && n >= m->conf.max_attempts) ||
            now + wait_ms + MSI_MIN_ATTEMPT_MS > deadline)
            break;
        sleep_until(now + wait_ms);
    }

    /* Out of time or attempts. */
    uint32_t hint = seconds_up(wait_ms ? wait_ms : 1000);
    if (a.retry_after_s > hint)
        hint = a.retry_after_s;
    ret->retry_after_s = hint;
    if (v == IMDS_V_THROTTLED) {
        LOG(m, IDB_LOG_WARNING, "identity %s/%s: IMDS still throttling at the deadline", ns, name);
        attempt_done(m, &a);
        return IDB_E_RATE_LIMITED;
    }
    char what[64];
    outcome(m, &a, what, sizeof(what));
    LOG(m, IDB_LOG_WARNING, "identity %s/%s: IMDS unavailable until the deadline (last: %s)", ns,
        name, what);
    attempt_done(m, &a);
    return IDB_E_UPSTREAM_UNAVAILABLE;
}

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .abi_minor = IDB_PLUGIN_ABI_MINOR,
    .size = sizeof(struct idb_provider),
    .name = MSI_NAME,
    .version = "1.0",
    .init = msi_init,
    .issue = msi_issue,
    .destroy = msi_destroy,
};
