/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The AzureAssignedIdentity writer. State, under `lock`: what the watch says exists on this node
 * (observed: key "ns/name" -> summary of the fields we write), which AAIs got a token (assigned),
 * and a dirty flag. The thread computes the desired set from the policy under its read lock, then
 * applies the difference with no lock held.
 */
#include "aai.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <idbroker/errno.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/thread.h>

#include "host-api.h"
#include "k8s-client.h"
#include "k8s-watch.h"
#include "policy.h"
#include "store.h"

#define AAI_PATH "/apis/aadpodidentity.k8s.io/v1/namespaces/%s/azureassignedidentities/%s"
#define AAI_MAX_NAME 253

/* A sorted set of "ns/name" keys, each with a value string (may be NULL). */
struct kset {
    char **keys;
    char **vals;
    uint64_t *nums; /* a number per key (assigned: the sequence of its last issued token) */
    size_t n, cap;
};

static void kset_done(struct kset *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->keys[i]);
        free(s->vals[i]);
    }
    free(s->keys);
    free(s->vals);
    free(s->nums);
    *s = (struct kset){0};
}

/* Index of key, or -(insertion point) - 1. */
static ssize_t kset_find(const struct kset *s, const char *key)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->keys[mid], key);
        if (c == 0)
            return (ssize_t)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(ssize_t)lo - 1;
}

/* Sets key to val (copied; NULL allowed). Returns 1 if something changed, 0 if not, -ENOMEM. */
static int kset_put(struct kset *s, const char *key, const char *val)
{
    ssize_t i = kset_find(s, key);
    if (i >= 0) {
        const char *old = s->vals[i];
        if ((!old && !val) || (old && val && streq(old, val)))
            return 0;
        char *v = val ? strdup(val) : NULL;
        if (val && !v)
            return -ENOMEM;
        free(s->vals[i]);
        s->vals[i] = v;
        return 1;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        char **k = realloc(s->keys, cap * sizeof(*k));
        if (!k)
            return -ENOMEM;
        s->keys = k;
        char **v = realloc(s->vals, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        s->vals = v;
        uint64_t *nu = realloc(s->nums, cap * sizeof(*nu));
        if (!nu)
            return -ENOMEM;
        s->nums = nu;
        s->cap = cap;
    }
    char *k = strdup(key), *v = val ? strdup(val) : NULL;
    if (!k || (val && !v)) {
        free(k);
        free(v);
        return -ENOMEM;
    }
    size_t at = (size_t)(-i - 1);
    memmove(s->keys + at + 1, s->keys + at, (s->n - at) * sizeof(char *));
    memmove(s->vals + at + 1, s->vals + at, (s->n - at) * sizeof(char *));
    memmove(s->nums + at + 1, s->nums + at, (s->n - at) * sizeof(uint64_t));
    s->keys[at] = k;
    s->vals[at] = v;
    s->nums[at] = 0;
    s->n++;
    return 1;
}

static int kset_del(struct kset *s, const char *key)
{
    ssize_t i = kset_find(s, key);
    if (i < 0)
        return 0;
    free(s->keys[i]);
    free(s->vals[i]);
    memmove(s->keys + i, s->keys + i + 1, (s->n - (size_t)i - 1) * sizeof(char *));
    memmove(s->vals + i, s->vals + i + 1, (s->n - (size_t)i - 1) * sizeof(char *));
    memmove(s->nums + i, s->nums + i + 1, (s->n - (size_t)i - 1) * sizeof(uint64_t));
    s->n--;
    return 1;
}

static int kset_copy(const struct kset *src, struct kset *dst)
{
    *dst = (struct kset){0};
    for (size_t i = 0; i < src->n; i++)
        if (kset_put(dst, src->keys[i], src->vals[i]) < 0) {
            kset_done(dst);
            return -ENOMEM;
        }
    return 0;
}

struct aai_writer {
    struct k8s_client *client;
    struct policy *policy;
    char *node;
    struct k8s_aai_sink sink;
    pthread_t thread;
    bool started;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
    bool dirty;
    bool listed;          /* the watch has listed this node's AAIs */
    struct kset observed; /* "ns/name" -> summary */
    struct kset assigned; /* "ns/name" of AAIs a token was issued for; nums: issue sequence */
    uint64_t issue_seq;   /* bumps on every issued token */
};

int aai_name(const char *pod, const char *pod_ns, const char *identity, char *buf, size_t n)
{
    int k = snprintf(buf, n, "%s-%s-%s", pod, pod_ns, identity);
    if (k < 0 || (size_t)k >= n || k > AAI_MAX_NAME)
        return -ENAMETOOLONG;
    return 0;
}

/* ---- summaries: the fields we write, from our own object or one the watch reports ---- */

static const char *path_str(struct json_object *o, const char *const *path)
{
    for (; *path && o; path++) {
        struct json_object *v = NULL;
        if (!json_object_object_get_ex(o, *path, &v))
            return NULL;
        o = v;
    }
    if (!o)
        return NULL;
    if (json_object_is_type(o, json_type_string))
        return json_object_get_string(o);
    return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
}

/* Returns new: the fields that matter joined with '|' (NULL fields as ""). */
static char *summary(struct json_object *o)
{
    static const char *const fields[][5] = {
        {"metadata", "labels", "nodename", NULL},
        {"spec", "pod", NULL},
        {"spec", "podNamespace", NULL},
        {"spec", "nodename", NULL},
        {"spec", "azureIdentityRef", "metadata", "name", NULL},
        {"spec", "azureIdentityRef", "metadata", "namespace", NULL},
        {"spec", "azureIdentityRef", "spec", "clientID", NULL},
        {"spec", "azureIdentityRef", "spec", "resourceID", NULL},
        {"spec", "azureIdentityRef", "spec", "type", NULL},
        {"spec", "azureBindingRef", "metadata", "name", NULL},
        {"spec", "azureBindingRef", "spec", "selector", NULL},
        {"status", "status", NULL},
    };
    struct buf_s {
        char *p;
        size_t n;
    } b = {NULL, 0};
    FILE *f = open_memstream(&b.p, &b.n);
    if (!f)
        return NULL;
    for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
        const char *v = path_str(o, fields[i]);
        fprintf(f, "%s%s", i ? "|" : "", v ? v : "");
    }
    if (fclose(f) != 0) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---- the sink (reflector thread) ---- */

static void wake(struct aai_writer *a)
{
    a->dirty = true;
    pthread_cond_broadcast(&a->cond);
}

static void sink_reset(void *ud)
{
    struct aai_writer *a = ud;
    pthread_mutex_lock(&a->lock);
    kset_done(&a->observed);
    a->listed = false;
    pthread_mutex_unlock(&a->lock);
}

static void sink_upsert(void *ud, struct json_object *obj)
{
    struct aai_writer *a = ud;
    const char *ns = k8s_meta_str(obj, "namespace"), *name = k8s_meta_str(obj, "name");
    if (!ns || !name)
        return;
    _cleanup_free_ char *key = NULL, *sum = summary(obj);
    if (asprintf(&key, "%s/%s", ns, name) < 0) {
        key = NULL;
        return;
    }
    if (!sum)
        return;
    pthread_mutex_lock(&a->lock);
    if (kset_put(&a->observed, key, sum) > 0 && a->listed)
        wake(a);
    pthread_mutex_unlock(&a->lock);
}

static void sink_remove(void *ud, const char *ns, const char *name)
{
    struct aai_writer *a = ud;
    _cleanup_free_ char *key = NULL;
    if (asprintf(&key, "%s/%s", ns, name) < 0) {
        key = NULL;
        return;
    }
    pthread_mutex_lock(&a->lock);
    if (kset_del(&a->observed, key) > 0 && a->listed)
        wake(a);
    pthread_mutex_unlock(&a->lock);
}

static void sink_listed(void *ud)
{
    struct aai_writer *a = ud;
    pthread_mutex_lock(&a->lock);
    a->listed = true;
    wake(a);
    pthread_mutex_unlock(&a->lock);
}

/* ---- desired state ---- */

struct desired {
    struct kset want; /* "ns/name" -> JSON body without status */
    const char *node;
    const char *pod_ns, *pod_name;
    int error;
};

static struct json_object *ref_identity(const struct identity *i)
{
    struct json_object *o = json_object_new_object(), *md = json_object_new_object(),
                       *spec = json_object_new_object();
    if (!o || !md || !spec) {
        json_object_put(o);
        json_object_put(md);
        json_object_put(spec);
        return NULL;
    }
    json_add_str(md, "name", i->name);
    json_add_str(md, "namespace", i->namespace);
    json_object_object_add(spec, "type", json_object_new_int(i->type));
    json_add_str(spec, "resourceID", i->resource_id);
    json_add_str(spec, "clientID", i->client_id);
    json_object_object_add(o, "metadata", md);
    json_object_object_add(o, "spec", spec);
    return o;
}

static struct json_object *ref_binding(const struct binding *b)
{
    struct json_object *o = json_object_new_object(), *md = json_object_new_object(),
                       *spec = json_object_new_object();
    if (!o || !md || !spec) {
        json_object_put(o);
        json_object_put(md);
        json_object_put(spec);
        return NULL;
    }
    json_add_str(md, "name", b->name);
    json_add_str(md, "namespace", b->namespace);
    json_add_str(spec, "azureIdentity", b->identity);
    json_add_str(spec, "selector", b->selector);
    json_add_int(spec, "weight", b->weight);
    json_object_object_add(o, "metadata", md);
    json_object_object_add(o, "spec", spec);
    return o;
}

static int want_grant(const struct identity *i, const struct binding *b, void *ud)
{
    struct desired *d = ud;
    char name[AAI_MAX_NAME + 2];
    if (aai_name(d->pod_name, d->pod_ns, i->name, name, sizeof(name)) < 0) {
        log_warning("aai: the AzureAssignedIdentity name for pod %s/%s and identity %s/%s is "
                    "longer than %d characters, not written",
                    d->pod_ns, d->pod_name, i->namespace, i->name, AAI_MAX_NAME);
        return 0;
    }
    _cleanup_json_ struct json_object *o = json_object_new_object();
    struct json_object *md = json_object_new_object(), *labels = json_object_new_object(),
                       *spec = json_object_new_object();
    if (!o || !md || !labels || !spec) {
        json_object_put(md);
        json_object_put(labels);
        json_object_put(spec);
        return -ENOMEM;
    }
    json_add_str(o, "apiVersion", "aadpodidentity.k8s.io/v1");
    json_add_str(o, "kind", "AzureAssignedIdentity");
    json_add_str(md, "name", name);
    json_add_str(md, "namespace", i->namespace);
    json_add_str(labels, "nodename", d->node);
    json_object_object_add(md, "labels", labels);
    json_object_object_add(o, "metadata", md);
    json_object_object_add(spec, "azureIdentityRef", ref_identity(i));
    json_object_object_add(spec, "azureBindingRef", ref_binding(b));
    json_add_str(spec, "pod", d->pod_name);
    json_add_str(spec, "podNamespace", d->pod_ns);
    json_add_str(spec, "nodename", d->node);
    json_object_object_add(o, "spec", spec);
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    char key[2 * AAI_MAX_NAME + 4];
    snprintf(key, sizeof(key), "%s/%s", i->namespace, name);
    if (!text || kset_put(&d->want, key, text) < 0)
        return -ENOMEM;
    return 0;
}

static int want_pod(const struct pod_meta *p, void *ud)
{
    struct desired *d = ud;
    d->pod_ns = p->namespace;
    d->pod_name = p->name;
    return 0;
}

/* Both iterations only read the store, so one may run inside the other's callback. */
struct pods {
    struct desired *d;
    const struct store *s;
    const struct store_policy *flags;
};

static int pod_grants(const struct pod_meta *p, void *ud)
{
    struct pods *x = ud;
    if (x->d->node && p->node && *p->node && !streq(p->node, x->d->node))
        return 0; /* not this node's pod (files-style metadata); the watch only lists ours */
    want_pod(p, x->d);
    return store_foreach_grant(x->s, x->flags, p->namespace, p->name, want_grant, x->d);
}

/* Under the policy read lock. */
static int compute_desired(struct aai_writer *a, struct kset *ret)
{
    struct desired d = {.node = a->node};
    policy_read_lock(a->policy);
    bool synced = a->policy->synced;
    int r = 0;
    if (synced) {
        struct pods x = {.d = &d, .s = a->policy->store, .flags = &a->policy->flags};
        r = store_foreach_pod(a->policy->store, pod_grants, &x);
    }
    policy_read_unlock(a->policy);
    if (!synced) {
        kset_done(&d.want);
        return -EAGAIN;
    }
    if (r < 0) {
        kset_done(&d.want);
        return r;
    }
    *ret = d.want;
    return 0;
}

/* ---- applying ---- */

static int apply_one(struct aai_writer *a, const char *key, const char *body_no_status,
                     bool assigned, char **ret_summary)
{
    _cleanup_json_ struct json_object *o = NULL;
    int r = json_parse_strict(body_no_status, strlen(body_no_status), &o, NULL);
    if (r < 0)
        return r;
    struct json_object *st = json_object_new_object();
    if (!st)
        return -ENOMEM;
    json_add_str(st, "status", assigned ? "Assigned" : "Created");
    json_add_int(st, "availableReplicas", 1);
    json_object_object_add(o, "status", st);
    const char *body = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    _cleanup_free_ char *sum = summary(o);
    if (!body || !sum)
        return -ENOMEM;
    char ns[AAI_MAX_NAME + 1], name[AAI_MAX_NAME + 1];
    const char *slash = strchr(key, '/');
    snprintf(ns, sizeof(ns), "%.*s", (int)(slash - key), key);
    snprintf(name, sizeof(name), "%s", slash + 1);
    _cleanup_free_ char *path = NULL;
    char *ens = curl_easy_escape(NULL, ns, 0), *ename = curl_easy_escape(NULL, name, 0);
    if (ens && ename &&
        asprintf(&path, AAI_PATH "?fieldManager=" AAI_FIELD_MANAGER "&force=true", ens, ename) < 0)
        path = NULL;
    curl_free(ens);
    curl_free(ename);
    if (!path)
        return -ENOMEM;
    struct k8s_reply rep;
    r = k8s_request(a->client, "PATCH", path, "application/apply-patch+yaml", body, &rep);
    if (r < 0)
        return r;
    struct k8s_status kst;
    r = k8s_reply_check(&rep, &kst);
    k8s_reply_done(&rep);
    if (r < 0) {
        log_warning("aai: apply of AzureAssignedIdentity %s failed (HTTP %ld): %s", key,
                    kst.http_status, kst.message);
        return r;
    }
    log_info("aai: AzureAssignedIdentity %s applied (%s)", key, assigned ? "Assigned" : "Created");
    *ret_summary = TAKE_PTR(sum);
    return 0;
}

static int delete_one(struct aai_writer *a, const char *key)
{
    char ns[AAI_MAX_NAME + 1], name[AAI_MAX_NAME + 1];
    const char *slash = strchr(key, '/');
    if (!slash)
        return -EINVAL;
    snprintf(ns, sizeof(ns), "%.*s", (int)(slash - key), key);
    snprintf(name, sizeof(name), "%s", slash + 1);
    char *ens = curl_easy_escape(NULL, ns, 0), *ename = curl_easy_escape(NULL, name, 0);
    _cleanup_free_ char *path = NULL;
    int r = -ENOMEM;
    if (ens && ename && asprintf(&path, AAI_PATH, ens, ename) < 0)
        path = NULL;
    curl_free(ens);
    curl_free(ename);
    if (!path)
        return r;
    struct k8s_reply rep;
    r = k8s_request(a->client, "DELETE", path, NULL, NULL, &rep);
    if (r < 0)
        return r;
    struct k8s_status kst;
    r = k8s_reply_check(&rep, &kst);
    k8s_reply_done(&rep);
    if (r == -ENOENT)
        r = 0;
    if (r < 0) {
        log_warning("aai: delete of AzureAssignedIdentity %s failed (HTTP %ld): %s", key,
                    kst.http_status, kst.message);
        return r;
    }
    log_info("aai: AzureAssignedIdentity %s deleted (no grant backs it)", key);
    return 0;
}

/* One pass. Returns 0 when everything is as desired, < 0 when something failed (retry). */
static int reconcile(struct aai_writer *a)
{
    struct kset want = {0}, observed = {0}, assigned = {0};
    /* "assigned" is read before the desired set is computed: a token issued in between is kept
     * (its key is not in the snapshot), and only keys whose grant had ended by then are dropped. */
    pthread_mutex_lock(&a->lock);
    int r = kset_copy(&a->assigned, &assigned);
    uint64_t seq = a->issue_seq;
    pthread_mutex_unlock(&a->lock);
    if (r < 0)
        return r;
    r = compute_desired(a, &want);
    if (r < 0) {
        kset_done(&assigned);
        return r == -EAGAIN ? 0 : r;
    }
    pthread_mutex_lock(&a->lock);
    bool listed = a->listed;
    if (listed)
        r = kset_copy(&a->observed, &observed);
    pthread_mutex_unlock(&a->lock);
    if (!listed || r < 0) {
        kset_done(&want);
        kset_done(&observed);
        kset_done(&assigned);
        return r;
    }
    int failed = 0;
    for (size_t i = 0; i < want.n && !k8s_client_stopped(a->client); i++) {
        bool is_assigned = kset_find(&assigned, want.keys[i]) >= 0;
        /* Compare what we would write with what is there. */
        _cleanup_json_ struct json_object *o = NULL;
        if (json_parse_strict(want.vals[i], strlen(want.vals[i]), &o, NULL) < 0) {
            failed = -EBADMSG;
            continue;
        }
        struct json_object *st = json_object_new_object();
        if (st) {
            json_add_str(st, "status", is_assigned ? "Assigned" : "Created");
            json_object_object_add(o, "status", st);
        }
        _cleanup_free_ char *sum = summary(o);
        ssize_t at = kset_find(&observed, want.keys[i]);
        if (sum && at >= 0 && observed.vals[at] && streq(observed.vals[at], sum))
            continue;
        char *applied = NULL;
        int k = apply_one(a, want.keys[i], want.vals[i], is_assigned, &applied);
        if (k < 0) {
            failed = k;
            continue;
        }
        pthread_mutex_lock(&a->lock);
        kset_put(&a->observed, want.keys[i], applied);
        pthread_mutex_unlock(&a->lock);
        free(applied);
    }
    for (size_t i = 0; i < observed.n && !k8s_client_stopped(a->client); i++) {
        if (kset_find(&want, observed.keys[i]) >= 0)
            continue;
        int k = delete_one(a, observed.keys[i]);
        if (k < 0) {
            failed = k;
            continue;
        }
        pthread_mutex_lock(&a->lock);
        kset_del(&a->observed, observed.keys[i]);
        pthread_mutex_unlock(&a->lock);
    }
    /* A grant that ended forgets that it was assigned: a new grant starts at Created. A token
     * issued after the snapshot (the grant may be back already) keeps its key. */
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < assigned.n; i++) {
        if (kset_find(&want, assigned.keys[i]) >= 0)
            continue;
        ssize_t at = kset_find(&a->assigned, assigned.keys[i]);
        if (at >= 0 && a->assigned.nums[at] <= seq)
            kset_del(&a->assigned, assigned.keys[i]);
    }
    pthread_mutex_unlock(&a->lock);
    kset_done(&want);
    kset_done(&observed);
    kset_done(&assigned);
    return failed;
}

static void *writer_main(void *ud)
{
    struct aai_writer *a = ud;
    unsigned failures = 0;
    uint64_t next_resync = now_monotonic_ms() + AAI_RESYNC_MS;
    for (;;) {
        pthread_mutex_lock(&a->lock);
        uint64_t wait_until = next_resync;
        if (failures)
            wait_until = now_monotonic_ms() + k8s_backoff_ms(failures, 0.5);
        struct timespec dl = {.tv_sec = (time_t)(wait_until / 1000),
                              .tv_nsec = (long)(wait_until % 1000) * 1000000L};
        while (!a->stop && !(a->dirty && !failures)) {
            if (pthread_cond_timedwait(&a->cond, &a->lock, &dl) == ETIMEDOUT)
                break;
        }
        bool stop = a->stop;
        a->dirty = false;
        pthread_mutex_unlock(&a->lock);
        if (stop || k8s_client_stopped(a->client))
            break;
        int r = reconcile(a);
        if (r < 0 && !k8s_client_stopped(a->client)) {
            failures++;
            log_warning("aai: reconcile failed (%s), retrying", idb_strerror(r));
        } else
            failures = 0;
        next_resync = now_monotonic_ms() + AAI_RESYNC_MS;
    }
    return NULL;
}

int aai_writer_start(const struct aai_options *o, struct aai_writer **ret)
{
    if (!o || !o->client || !o->policy || !o->node_name || !ret)
        return -EINVAL;
    struct aai_writer *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->client = o->client;
    a->policy = o->policy;
    a->node = strdup(o->node_name);
    pthread_mutex_init(&a->lock, NULL);
    (void)cond_init_monotonic(&a->cond);
    a->sink = (struct k8s_aai_sink){
        .reset = sink_reset,
        .upsert = sink_upsert,
        .remove = sink_remove,
        .listed = sink_listed,
        .ud = a,
    };
    if (!a->node) {
        aai_writer_free(a);
        return -ENOMEM;
    }
    int r = -pthread_create(&a->thread, NULL, writer_main, a);
    if (r < 0) {
        aai_writer_free(a);
        return r;
    }
    a->started = true;
    *ret = a;
    return 0;
}

struct aai_writer *aai_writer_free(struct aai_writer *a)
{
    if (!a)
        return NULL;
    pthread_mutex_lock(&a->lock);
    a->stop = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    if (a->started)
        pthread_join(a->thread, NULL);
    kset_done(&a->observed);
    kset_done(&a->assigned);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
    free(a->node);
    free(a);
    return NULL;
}

void aai_writer_notify(struct aai_writer *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    wake(a);
    pthread_mutex_unlock(&a->lock);
}

void aai_writer_issued(void *ud, const char *pod_ns, const char *pod_name, const char *id_ns,
                       const char *id_name)
{
    struct aai_writer *a = ud;
    if (!a)
        return;
    char name[AAI_MAX_NAME + 2], key[2 * AAI_MAX_NAME + 4];
    if (aai_name(pod_name, pod_ns, id_name, name, sizeof(name)) < 0)
        return;
    snprintf(key, sizeof(key), "%s/%s", id_ns, name);
    pthread_mutex_lock(&a->lock);
    ssize_t at = kset_find(&a->assigned, key);
    if (at < 0 && kset_put(&a->assigned, key, NULL) > 0) {
        wake(a);
        at = kset_find(&a->assigned, key);
    }
    if (at >= 0)
        a->assigned.nums[at] = ++a->issue_seq;
    pthread_mutex_unlock(&a->lock);
}

const struct k8s_aai_sink *aai_writer_sink(struct aai_writer *a)
{
    return &a->sink;
}
