/* SPDX-License-Identifier: Apache-2.0 */
/*
 * idbroker provider plugin ABI, version 1 (DESIGN §8, STYLE R12-R14).
 *
 * A provider is a shared object that exports exactly one symbol, IDB_PLUGIN_SYMBOL
 * ("idb_plugin_v1"), a `const struct idb_provider`. The broker loads it with dlopen(RTLD_NOW |
 * RTLD_LOCAL) from its configured plugin directory as "<name>.so", where name matches [a-z0-9-]+
 * and equals idb_provider.name.
 *
 * Versioning rules:
 *  - abi_major changes on any incompatible change; the broker refuses another major.
 *  - abi_minor grows when fields are appended to struct idb_provider, idb_host_api or
 * idb_token_req. 1.1 appended the upstream limiters to idb_host_api and allowed PATCH in http.
 *  - Every struct starts with (or contains) its size as the other side was built with it; read a
 * field only if IDB_PROVIDER_HAS / IDB_HOST_HAS / IDB_REQ_HAS says the other side has it.
 *  - Structs only grow at the end. Fields are never reordered, removed or retyped.
 *
 * Threads: issue() may be called from several threads at once, with the same state. init() and
 * destroy() are called once each, from one thread, with no issue() running. A plugin must not block
 * forever: the broker gives each issue() call a deadline (req->deadline_ms) and answers the pod
 * with an error once it passes, whether or not the plugin returns.
 *
 * Memory: strings returned through ret_ parameters are allocated with host->alloc and freed by the
 * broker with host->free. All pointers passed to the plugin are borrowed for the duration of the
 * call. The state made by init() belongs to the plugin until destroy().
 *
 * Sizes: whoever fills a struct for the other side sets `size` to sizeof() as it was built; whoever
 * hands the other side a struct to fill (struct idb_token) sets `size` before the call, and the
 * filler writes only the fields that size covers. Every 1.0 struct ends on an 8-byte boundary with
 * no hidden tail padding, so a field appended later always starts at the old sizeof().
 *
 * See docs/plugin-abi.md for the full rules and how to build a provider out of tree with
 * pkg-config.
 *
 * Errors: return >= 0 on success or a negative errno / IDB_E_* code (idbroker/errno.h). Use
 * IDB_E_UPSTREAM_4XX with ret->upstream_status set to pass a 4xx of the identity service to the
 * pod, and IDB_E_UPSTREAM_UNAVAILABLE for transient failures (the pod gets 503 + Retry-After).
 */
#ifndef IDBROKER_PROVIDER_H
#define IDBROKER_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

#include <idbroker/errno.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IDB_PLUGIN_ABI_MAJOR 1
#define IDB_PLUGIN_ABI_MINOR 1
#define IDB_PLUGIN_SYMBOL "idb_plugin_v1"

#if defined(__GNUC__)
#define IDB_EXPORT __attribute__((visibility("default")))
#define IDB_PRINTF_FMT(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define IDB_EXPORT
#define IDB_PRINTF_FMT(fmt, args)
#endif

/* The host's HTTP helper fails with -E2BIG rather than return a larger reply body. */
#define IDB_HTTP_MAX_REPLY_BYTES (1024 * 1024)

/* ABI 1.1: the node's IMDS as an upstream of host->upstream_acquire(), and its documented per-VM
 * limits for identity requests, which the host applies until a provider sets others. */
#define IDB_UPSTREAM_IMDS "imds"
#define IDB_UPSTREAM_IMDS_MAX_CONCURRENT 5
#define IDB_UPSTREAM_IMDS_MAX_PER_SECOND 20
/* ABI 1.1: upstream names are [a-z0-9-]{1,IDB_UPSTREAM_NAME_MAX}, limits 1..IDB_UPSTREAM_LIMIT_MAX
 */
#define IDB_UPSTREAM_NAME_MAX 32
#define IDB_UPSTREAM_LIMIT_MAX 100000

/* Log levels are syslog's. */
enum idb_log_level {
    IDB_LOG_ERR = 3,
    IDB_LOG_WARNING = 4,
    IDB_LOG_NOTICE = 5,
    IDB_LOG_INFO = 6,
    IDB_LOG_DEBUG = 7,
};

/* An HTTP exchange done by the host for a plugin (libcurl in the broker): http and https only, no
 * proxy, TLS verified, no redirects followed, reply body capped at IDB_HTTP_MAX_REPLY_BYTES. */
struct idb_http_req {
    uint32_t size;              /* sizeof(struct idb_http_req) the caller was built with */
    const char *method;         /* "GET" or "POST"; since ABI 1.1 (host->abi_minor >= 1) "PATCH" */
    const char *url;            /* http:// or https:// */
    const char *const *headers; /* NULL-terminated "Name: value" list, may be NULL; no CR/LF */
    const char *body;           /* POST (and PATCH) only; may be NULL */
    size_t body_len;
    uint32_t timeout_ms; /* whole exchange; 0 = host default (10 s); capped at 120 s */
    const char *ca_file; /* optional CA bundle; NULL = system default */
};

/* Filled by the host. The host writes the fields of the ABI version that req->size reveals. */
struct idb_http_resp {
    uint32_t size; /* set by the host: the bytes it wrote */
    long status;   /* HTTP status of the final reply */
    char *body;    /* NUL-terminated, from host->alloc ("" when empty); free with host->free */
    size_t body_len;
    uint32_t retry_after_s; /* Retry-After in seconds (capped at 86400), 0 if absent or a date */
    char *www_authenticate; /* WWW-Authenticate header if any, from host->alloc, else NULL */
};

/* What a provider is asked for: a token of one identity for one resource. All strings borrowed. */
struct idb_token_req {
    uint32_t size;             /* sizeof(struct idb_token_req) the broker was built with */
    const char *resource;      /* audience asked for by the pod, e.g. "https://vault.azure.net" */
    const char *identity_name; /* AzureIdentity metadata.name */
    const char *identity_namespace;
    int identity_type;          /* AzureIdentity spec.type: 0 MSI, 1 SP secret, 2 SP certificate */
    const char *client_id;      /* spec.clientID, may be "" */
    const char *resource_id;    /* spec.resourceID, may be "" */
    const char *tenant_id;      /* spec.tenantID, may be "" */
    const char *ad_endpoint;    /* spec.adEndpoint, may be "" */
    const char *ad_resource_id; /* spec.adResourceID, may be "" */
    const char *secret_name;    /* spec.clientPassword.name, may be "" */
    const char *secret_namespace; /* spec.clientPassword.namespace, may be "" */
    /* AzureIdentity annotations: NULL-terminated key, value, key, value ... list (without
     * kubectl's last-applied-configuration); may be NULL */
    const char *const *annotations;
    uint64_t deadline_ms; /* CLOCK_MONOTONIC milliseconds after which the answer is useless */
    /* --- ABI 1.0 ends here; append only --- */
};

/* A token, as issued. The caller zeroes it and sets size; the provider fills it. */
struct idb_token {
    uint32_t size;           /* set by the caller (the broker, or a plugin using issue_via) */
    char *access_token;      /* from host->alloc; the broker wipes and frees it */
    uint64_t expires_on;     /* epoch seconds */
    uint64_t not_before;     /* epoch seconds; 0 = issue time */
    uint64_t ext_expires_in; /* seconds, 0 = same as expires_in */
    char *client_id;        /* optional: client id to report, from host->alloc; NULL = identity's */
    long upstream_status;   /* on IDB_E_UPSTREAM_4XX: the status to pass on */
    char *upstream_error;   /* on failure: optional IMDS-shaped JSON error body, from host->alloc */
    uint32_t retry_after_s; /* on failure: optional hint */
    uint32_t reserved0;     /* zero; keeps the 1.0 struct free of tail padding */
    /* --- ABI 1.0 ends here; append only --- */
};

struct idb_host_api {
    uint32_t size; /* sizeof(struct idb_host_api) the broker was built with */
    uint32_t abi_minor;
    /* Logs through the broker's log, prefixed with "[provider:<plugin>] "; `plugin` is the plugin's
     * own name. Never pass secrets. Messages longer than 4 KiB are truncated. Thread-safe. */
    void (*log)(int level, const char *plugin, const char *fmt, ...) IDB_PRINTF_FMT(3, 4);
    void *(*alloc)(size_t n);
    void (*free)(void *p);          /* accepts NULL */
    const char *(*strerror)(int r); /* static message for an errno or IDB_E_* code */
    uint64_t (*now_realtime)(void); /* epoch seconds */
    uint64_t (*now_monotonic_ms)(void);
    /* Performs an HTTP exchange. Returns 0 when a reply arrived (any status) and fills *ret, whose
     * strings the caller frees with host->free. Returns < 0 on failure with *ret untouched: -EINVAL
     * (bad request), -ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH (name or route), -EPROTO (TLS),
     * -EPROTONOSUPPORT (not http/https), -E2BIG (reply too large), -ENOMEM, -EIO. Thread-safe;
     * blocks for at most the timeout. */
    int (*http)(const struct idb_http_req *req, struct idb_http_resp *ret);
    /* Asks another loaded provider for a token (e.g. keyvault asks azure-msi for a vault token).
     * Goes through the broker's cache. ret->access_token from alloc. Thread-safe. -ENOTSUP when the
     * broker offers no such routing (e.g. in test tools). */
    int (*issue_via)(const char *provider, const struct idb_token_req *req, struct idb_token *ret);
    /* --- ABI 1.0 ends here; append only --- */

    /*
     * ABI 1.1: node-wide admission to a shared upstream. One limiter per upstream name, shared by
     * every provider and by the broker itself (its pass-through of AzurePodIdentityException pods
     * to the node's IMDS takes slots of IDB_UPSTREAM_IMDS), so all of them together stay within the
     * upstream's limits. The host knows IDB_UPSTREAM_IMDS from the start, with IMDS' documented
     * limits. Check IDB_HOST_HAS(host, upstream_release) before use.
     */
    /* Sets the limits of upstream `name`, creating it: at most max_concurrent exchanges in flight
     * and at most max_per_second started in any sliding second, counted over every caller. The last
     * call wins; slots already held stay valid. Returns 0, or -EINVAL (a name not
     * [a-z0-9-]{1,IDB_UPSTREAM_NAME_MAX}, a limit outside 1..IDB_UPSTREAM_LIMIT_MAX), -ENOSPC (too
     * many upstreams), -ENOMEM. Thread-safe. */
    int (*upstream_limits)(const char *name, uint32_t max_concurrent, uint32_t max_per_second);
    /* Takes one slot of upstream `name`: waits until both limits allow one more exchange, or until
     * deadline_ms (CLOCK_MONOTONIC ms, as req->deadline_ms). Returns 0: the caller may start one
     * exchange and must call upstream_release(name) once it is over (whatever its outcome, but not
     * during a backoff). Returns -EAGAIN at the deadline, and then sets *hint_ms (may be NULL) to a
     * guess of how long a later caller would wait; -ENOENT for a name without limits; -EINVAL.
     * Thread-safe; blocks at most until the deadline. */
    int (*upstream_acquire)(const char *name, uint64_t deadline_ms, uint32_t *hint_ms);
    /* Gives back one slot taken by upstream_acquire(name). Thread-safe; never blocks for long. */
    void (*upstream_release)(const char *name);
    /* --- ABI 1.1 ends here; append only --- */
};

struct idb_provider {
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t size; /* sizeof(struct idb_provider) the plugin was built with */
    const char *name;
    const char *version; /* the plugin's own version string, free-form; may be NULL */
    /* Parses `conf` (the plugin's object from the broker config, as JSON text; "{}" when absent)
     * and makes the plugin's state. Returns < 0 with nothing allocated on failure. */
    int (*init)(const struct idb_host_api *host, const char *conf, void **ret_state);
    /* Issues a token. On success fills ret->access_token and ret->expires_on and returns 0. On
     * failure returns < 0 and may fill ret->upstream_status / upstream_error / retry_after_s.
     * Thread-safe. */
    int (*issue)(void *state, const struct idb_token_req *req, struct idb_token *ret);
    /* Frees the state; must accept NULL. */
    void (*destroy)(void *state);
    /* --- ABI 1.0 ends here; append only --- */
};

#define IDB_STRUCT_HAS(p, type, f) ((p)->size >= offsetof(type, f) + sizeof((p)->f))
#define IDB_PROVIDER_HAS(p, f) IDB_STRUCT_HAS(p, struct idb_provider, f)
#define IDB_HOST_HAS(h, f) IDB_STRUCT_HAS(h, struct idb_host_api, f)
#define IDB_REQ_HAS(r, f) IDB_STRUCT_HAS(r, struct idb_token_req, f)
#define IDB_TOKEN_HAS(t, f) IDB_STRUCT_HAS(t, struct idb_token, f)

#ifdef __cplusplus
}
#endif
#endif
