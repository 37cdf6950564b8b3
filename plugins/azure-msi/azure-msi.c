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

#include "imds-reply.h"

#define MSI_NAME "azure-msi"
#define MSI_TOKEN_PATH "/metadata/identity/oauth2/token"
#define MSI_DEFAULT_ENDPOINT "http://169.254.169.254"
#define MSI_DEFAULT_API_VERSION "2018-02-01"
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
};

/*
 * Node-wide admission to IMDS. `starts` is a ring of the CLOCK_MONOTONIC ms at which the last
 * max_per_second requests started: a new one may start only when the oldest of them is at least
 * MSI_RATE_WINDOW_MS old. That is a token bucket of max_per_second tokens where each token comes
 * back one second (plus a guard) after it was spent, so no sliding second ever sees more than
 * max_per_second starts.
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

/* When the next request may start as far as the rate goes (CLOCK_MONOTONIC ms). Under the lock. */
static uint64_t rate_free_at(const struct limiter *l)
{
    if (l->n_starts < l->per_second)
        return 0;
    return l->starts[l->next] + MSI_RATE_WINDOW_MS; /* the oldest start leaves the window */
}

/*
 * Takes a slot: waits until fewer than max_concurrent requests are in flight and the rate allows
 * one more, or until `deadline` (CLOCK_MONOTONIC ms). Returns 0, or -EAGAIN at the deadline with
 * *ret_wait_ms set to a guess of how long a later caller would wait.
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

/* A slot of the node-wide IMDS budget: the host's limiter when it has one (ABI 1.1), else ours. */
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
};
#define KNOWN_KEYS                                                                                 \
    "endpoint, apiVersion, caFile, attemptTimeoutMs, maxTotalMs, maxConcurrent, maxPerSecond, "    \
    "backoffInitialMs, backoffMaxMs, maxAttempts"

static int conf_endpoint(struct msi *m, struct msi_conf *c)
{
    if (strncmp(c->endpoint, "http://", 7) != 0 && strncmp(c->endpoint, "https://", 8) != 0) {
        LOG(m, IDB_LOG_ERR, "config: key 'endpoint' must be an http:// or https:// URL, not '%s'",
            c->endpoint);
        return IDB_E_BAD_CONFIG;
    }
    if (strpbrk(c->endpoint, "?# \"\\")) {
        LOG(m, IDB_LOG_ERR, "config: key 'endpoint' must be a URL without query or fragment");
        return IDB_E_BAD_CONFIG;
    }
    size_t n = strlen(c->endpoint);
    while (n > 0 && c->endpoint[n - 1] == '/')
        c->endpoint[--n] = '\0';
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
            "config: key 'apiVersion' must be an IMDS api-version YYYY-MM-DD, 2018-02-01 or later, "
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
    if (!c->endpoint || !c->api_version)
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
    int r = conf_endpoint(m, c);
    if (r < 0)
        return r;
    r = conf_api_version(m, c);
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
    memset(c, 0, sizeof(*c));
}

/* ---- provider entry points ---- */

static void msi_destroy(void *state)
{
    struct msi *m = state;
    if (!m)
        return;
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
