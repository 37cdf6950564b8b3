/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Kubernetes source (DESIGN §5): one reflector thread per watched kind, as client-go's
 * reflector does it. Each one LISTs (paginated), WATCHes from the list's resourceVersion with
 * bookmarks and a randomised timeoutSeconds, resumes from the last resourceVersion it saw, and on
 * 410 Gone (HTTP or an ERROR event) relists and replaces its kind in the store, deleting what
 * vanished. Failures back off with jitter from 0.8 s to 30 s (reset once a watch has stayed up
 * K8S_BACKOFF_RESET_MS); a 429/503 Retry-After is honoured.
 *
 * Watched: pods of this node (fieldSelector spec.nodeName=<node>), azureidentities,
 * azureidentitybindings, azurepodidentityexceptions (aadpodidentity.k8s.io/v1) into the policy
 * store, under policy_write_lock; and this node's azureassignedidentities (labelSelector
 * nodename=<node>), which never reach the store (an AAI grants nothing) but are reported to an
 * optional sink for the AAI writer. policy->synced becomes true once every kind has been listed;
 * afterwards the last known policy stays in force whatever the API server does.
 */
#ifndef IDB_BROKER_K8S_WATCH_H
#define IDB_BROKER_K8S_WATCH_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#define K8S_LIST_PAGE_SIZE 500
#define K8S_WATCH_MIN_TIMEOUT_S 300 /* timeoutSeconds is drawn from [min, 2 * min) */
#define K8S_BACKOFF_RESET_MS 10000  /* a watch up this long resets the backoff */
#define K8S_RETRY_AFTER_MAX_S 60    /* a longer Retry-After is cut to this */

struct k8s_client;
struct policy;

/* Where the AzureAssignedIdentity objects of this node go (all callbacks on a reflector thread,
 * no lock held; strings borrowed for the call). */
struct k8s_aai_sink {
    /* A (re)list starts: forget every AAI seen so far. */
    void (*reset)(void *ud);
    /* An AAI exists or changed; `obj` is the whole object (borrowed). */
    void (*upsert)(void *ud, struct json_object *obj);
    void (*remove)(void *ud, const char *ns, const char *name);
    /* A (re)list is complete: what was reported since reset() is everything. */
    void (*listed)(void *ud);
    void *ud;
};

struct k8s_watch_options {
    struct k8s_client *client;   /* borrowed; must outlive the watch */
    struct policy *policy;       /* borrowed */
    const char *node_name;       /* copied */
    void (*on_change)(void *ud); /* after every applied store change, no lock held; optional */
    void *on_change_ud;
    const struct k8s_aai_sink *aai; /* copied; optional (NULL: AAIs are not watched) */
    uint32_t watch_timeout_s;       /* 0: K8S_WATCH_MIN_TIMEOUT_S */
};

struct k8s_watch;

/* Starts the reflector threads. Returns 0 and *ret (returns new), or -errno. */
int k8s_watch_start(const struct k8s_watch_options *o, struct k8s_watch **ret);
/* Stops and joins the threads and frees. Call k8s_client_stop() on the client first, or a
 * running request holds this up until it ends. Accepts NULL; returns NULL. */
struct k8s_watch *k8s_watch_free(struct k8s_watch *w);
/* Whether every kind has been listed at least once. */
bool k8s_watch_synced(struct k8s_watch *w);
/* Returns new: {"server":…, "synced":bool, "kinds":[{"kind","listed","resourceVersion","relists",
 * "failures","lastError"}]} for `idbrokerctl status`. */
struct json_object *k8s_watch_status(struct k8s_watch *w);

/* Applies one watch event of kind `mkind` (enum manifest_kind) to the store of `policy` under its
 * write lock; for tests and the fuzzer. Returns 1 if the store changed, 0 if not, < 0 on error. */
int k8s_watch_apply_event(struct policy *policy, int mkind, int type, struct json_object *obj);

#endif
