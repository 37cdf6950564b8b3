/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small Kubernetes API client (libcurl + json-c) for the node broker: connection settings from
 * the in-cluster service account or a kubeconfig file, plain requests (server-side apply, delete),
 * paginated LIST, and WATCH with a streaming, capped decoder of the event stream.
 *
 * TLS is always verified (a kubeconfig with insecure-skip-tls-verify is refused). The bearer token
 * of a token file is re-read every K8S_TOKEN_REREAD_MS and at once after a 401. Thread-safe: one
 * client serves several threads, each request on its own curl handle. Knows nothing of the policy.
 *
 * Errors (negative errno): -ECONNREFUSED / -ETIMEDOUT / -EHOSTUNREACH / -EIO for transport
 * failures, -ESTALE for 410 Gone (resourceVersion or continue token expired), -EAGAIN for 429 and
 * 503 (status->retry_after_s set from Retry-After when given), -EACCES for 401, -EPERM for 403,
 * -ENOENT for 404, -EPROTO for any other unexpected status, -EBADMSG for a malformed body, -E2BIG
 * for a body or event over its cap (broker/limits.h), -ECANCELED once k8s_client_stop() was
 * called.
 */
#ifndef IDB_BROKER_K8S_CLIENT_H
#define IDB_BROKER_K8S_CLIENT_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define K8S_TOKEN_REREAD_MS 60000
#define K8S_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

struct k8s_config {
    char *origin;  /* "in-cluster" or the kubeconfig path, for messages */
    char *server;  /* "https://host:port", no trailing slash */
    char *ca_file; /* PEM file, or NULL */
    char *ca_data; /* PEM text, or NULL (takes precedence over ca_file) */
    size_t ca_data_len;
    char *token;      /* a static bearer token, or NULL */
    char *token_file; /* a bearer token file, re-read; or NULL */
    char *cert_file;  /* client certificate (PEM), or NULL */
    char *key_file;
    char *cert_data; /* client certificate (PEM text), or NULL */
    size_t cert_data_len;
    char *key_data;
    size_t key_data_len;
    char *namespace; /* the context's (or the service account's) namespace, may be NULL */
};

/* Frees everything (key material is wiped). Accepts NULL; returns NULL. */
struct k8s_config *k8s_config_free(struct k8s_config *c);

/* Parses a kubeconfig (YAML or JSON, borrowed text): the current context's cluster and user.
 * Relative file names are taken relative to the directory of `path` (borrowed, may be NULL for
 * "."). Supports server, certificate-authority(-data), token, tokenFile, client-certificate(-data),
 * client-key(-data); refuses insecure-skip-tls-verify, exec and auth-provider users, a client
 * certificate without its key (or a key without its certificate), and a server that is not https.
 * Returns 0 and *ret (returns new) or -EINVAL / IDB_E_BAD_MANIFEST / -ENOMEM with *ret_error
 * (optional, returns new) naming the key. */
int k8s_config_parse_kubeconfig(const char *text, size_t len, const char *path,
                                struct k8s_config **ret, char **ret_error);
/* The in-cluster configuration: KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT and the service
 * account directory `sa_dir` (borrowed; K8S_SA_DIR in production): token file, ca.crt,
 * namespace. Errors as above (-ENOENT when not running in a cluster). */
int k8s_config_in_cluster(const char *sa_dir, struct k8s_config **ret, char **ret_error);
/* A kubeconfig file (`kubeconfig` non-NULL) or else the in-cluster configuration. The files a
 * kubeconfig names (certificate-authority, client-certificate, client-key) must be readable now:
 * -errno with *ret_error naming the key and the file otherwise. */
int k8s_config_load(const char *kubeconfig, struct k8s_config **ret, char **ret_error);

struct k8s_client;

/* Returns new; takes ownership of `cfg` on success only. -ENOMEM, -EINVAL. */
int k8s_client_new(struct k8s_config *cfg, struct k8s_client **ret);
/* The client must be idle (no request running on another thread). Accepts NULL; returns NULL. */
struct k8s_client *k8s_client_free(struct k8s_client *c);
/* Makes every running and later request end with -ECANCELED within about a second. Sticky. */
void k8s_client_stop(struct k8s_client *c);
bool k8s_client_stopped(const struct k8s_client *c);
/* The server URL (borrowed). */
const char *k8s_client_server(const struct k8s_client *c);

/* What the server said, beyond the return code. */
struct k8s_status {
    long http_status;       /* 0 when no response arrived */
    uint32_t retry_after_s; /* Retry-After of a 429/503, 0 if absent */
    char message[256];      /* Status.message or the transport error, printable, may be "" */
};

struct k8s_reply {
    long http_status;
    char *body; /* returns new, NUL-terminated, "" when empty */
    size_t len;
    uint32_t retry_after_s;
};
void k8s_reply_done(struct k8s_reply *r);

/* One request. `path` (borrowed) starts with "/" and may carry a query; `content_type` and `body`
 * may be NULL. Returns 0 when any response arrived (*ret filled, any status; a 401 is retried once
 * with a re-read token), or a negative transport error (*ret untouched). */
int k8s_request(struct k8s_client *c, const char *method, const char *path,
                const char *content_type, const char *body, struct k8s_reply *ret);

/* Maps a reply's status to the errors listed at the top (0 for 2xx) and fills *ret_status
 * (optional) from it, Status.message included. */
int k8s_reply_check(const struct k8s_reply *r, struct k8s_status *ret_status);

/* LIST every page of `path` (borrowed, no query) with `query` (borrowed, may be NULL or "":
 * selectors, already escaped) and limit=page_size/continue. cb is called for each item (borrowed;
 * < 0 stops the list with that value). On success returns 0 and *ret_rv (returns new) = the
 * list's resourceVersion. On failure *ret_status (optional) says what the server said. */
int k8s_list(struct k8s_client *c, const char *path, const char *query, uint32_t page_size,
             int (*cb)(struct json_object *item, void *ud), void *ud, char **ret_rv,
             struct k8s_status *ret_status);

enum k8s_event_type {
    K8S_EVENT_ADDED,
    K8S_EVENT_MODIFIED,
    K8S_EVENT_DELETED,
    K8S_EVENT_BOOKMARK,
    K8S_EVENT_ERROR, /* object is a metav1.Status: code 410 means "relist" */
};

struct k8s_event {
    enum k8s_event_type type;
    struct json_object *object; /* borrowed for the length of the callback */
};

typedef int (*k8s_event_fn)(const struct k8s_event *ev, void *ud);

/* WATCH `path` from resourceVersion `rv` (borrowed, non-empty) with allowWatchBookmarks=true and
 * timeoutSeconds=timeout_s. Calls cb for each event (< 0 ends the watch with that value; ERROR
 * events are passed on, not interpreted). Returns 0 when the server ended the stream cleanly, or
 * the errors above (-ESTALE for an HTTP 410, -E2BIG for an event over K8S_MAX_EVENT_BYTES,
 * -EBADMSG for a stream that is not a sequence of events). */
int k8s_watch(struct k8s_client *c, const char *path, const char *query, const char *rv,
              uint32_t timeout_s, k8s_event_fn cb, void *ud, struct k8s_status *ret_status);

/* The streaming decoder of a watch body: concatenated (usually newline-separated) JSON objects
 * {"type": "...", "object": {...}}, fed in arbitrary pieces. Each event may be at most
 * `max_event_bytes` long and K8S_MAX_EVENT_DEPTH deep. */
struct k8s_decoder;
struct k8s_decoder *k8s_decoder_new(size_t max_event_bytes);
struct k8s_decoder *k8s_decoder_free(struct k8s_decoder *d);
/* Feeds data[0..len). Calls cb for every complete event. Returns 0, cb's negative value, -E2BIG,
 * -EBADMSG (not JSON, not an object, unknown type, object missing) or -ENOMEM. After an error the
 * decoder stays failed. */
int k8s_decoder_feed(struct k8s_decoder *d, const char *data, size_t len, k8s_event_fn cb,
                     void *ud);
/* Whether the decoder is between events (nothing buffered): a stream that ends elsewhere was cut.
 */
bool k8s_decoder_idle(const struct k8s_decoder *d);

/* Helpers on Kubernetes objects (borrowed; NULL when absent). */
const char *k8s_meta_str(struct json_object *obj, const char *key); /* metadata.<key> */
/* Backoff: the delay before attempt `failures` (1-based) of a jittered exponential backoff from
 * K8S_BACKOFF_INITIAL_MS doubling to K8S_BACKOFF_MAX_MS; `rnd` in [0, 1) picks the jitter. */
#define K8S_BACKOFF_INITIAL_MS 800
#define K8S_BACKOFF_MAX_MS 30000
uint64_t k8s_backoff_ms(unsigned failures, double rnd);

#endif
