/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reflectors: LIST + WATCH per kind, each on its own thread (a blocking curl transfer per watch).
 * Objects are converted with manifest.c's field rules outside the policy lock and applied under
 * it; a relist is applied in one critical section so a reader never sees half a list.
 */
#include "k8s-watch.h"

#include <curl/curl.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <idbroker/errno.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/thread.h>

#include "host-api.h"
#include "k8s-client.h"
#include "manifest.h"
#include "metrics.h"
#include "policy.h"
#include "store.h"

#define GROUP_PATH "/apis/aadpodidentity.k8s.io/v1"
#define KIND_AAI 0 /* not a manifest kind: AzureAssignedIdentity */

struct kind_desc {
    const char *name; /* resource, for messages and status */
    const char *path;
    int mkind; /* enum manifest_kind, or KIND_AAI */
    bool field_node;
    bool label_node;
};

static const struct kind_desc kinds[] = {
    {"pods", "/api/v1/pods", MANIFEST_POD, true, false},
    {"azureidentities", GROUP_PATH "/azureidentities", MANIFEST_IDENTITY, false, false},
    {"azureidentitybindings", GROUP_PATH "/azureidentitybindings", MANIFEST_BINDING, false, false},
    {"azurepodidentityexceptions", GROUP_PATH "/azurepodidentityexceptions", MANIFEST_EXCEPTION,
     false, false},
    {"azureassignedidentities", GROUP_PATH "/azureassignedidentities", KIND_AAI, false, true},
};

#define N_KINDS ELEMENTSOF(kinds)

struct reflector {
    struct k8s_watch *w;
    const struct kind_desc *kind;
    pthread_t thread;
    bool started;
    char *query; /* selectors, escaped */
    /* under w->lock, for status: */
    char *rv;
    bool listed;
    uint64_t relists;
    unsigned failures;
    uint64_t last_failure_ms;
    char last_error[256];
};

struct k8s_watch {
    struct k8s_client *client;
    struct policy *policy;
    char *node;
    void (*on_change)(void *ud);
    void *on_change_ud;
    struct k8s_aai_sink aai;
    bool have_aai;
    uint32_t watch_timeout_s;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* stop wakes sleepers */
    bool stop;
    unsigned n_listed;
    struct reflector refl[N_KINDS];
    size_t n_refl;
};

/* ---- store changes ---- */

static void key_of(struct json_object *obj, const char **ns, const char **name)
{
    *ns = k8s_meta_str(obj, "namespace");
    *name = k8s_meta_str(obj, "name");
    if (!*ns || !**ns)
        *ns = "default";
}

static int remove_kind(struct store *s, int mkind, const char *ns, const char *name)
{
    switch (mkind) {
    case MANIFEST_IDENTITY:
        return store_remove_identity(s, ns, name);
    case MANIFEST_BINDING:
        return store_remove_binding(s, ns, name);
    case MANIFEST_EXCEPTION:
        return store_remove_exception(s, ns, name);
    case MANIFEST_POD:
        return store_remove_pod(s, ns, name);
    default:
        return -EINVAL;
    }
}

/* Moves the converted object into the store. On failure the object stays with the caller. */
static int put_object(struct store *s, struct manifest_object *m)
{
    int r = -EINVAL;
    switch (m->kind) {
    case MANIFEST_IDENTITY:
        r = store_put_identity(s, m->identity);
        if (r >= 0)
            m->identity = NULL;
        break;
    case MANIFEST_BINDING:
        r = store_put_binding(s, m->binding);
        if (r >= 0)
            m->binding = NULL;
        break;
    case MANIFEST_EXCEPTION:
        r = store_put_exception(s, m->exception);
        if (r >= 0)
            m->exception = NULL;
        break;
    case MANIFEST_POD:
        r = store_put_pod(s, m->pod);
        if (r >= 0)
            m->pod = NULL;
        break;
    }
    return r;
}

/* "api <kind> rv N": the origin shown by explain. Returns new. */
static char *api_origin(int mkind, struct json_object *obj)
{
    static const char *const names[] = {
        [MANIFEST_IDENTITY] = "AzureIdentity",
        [MANIFEST_BINDING] = "AzureIdentityBinding",
        [MANIFEST_EXCEPTION] = "AzurePodIdentityException",
        [MANIFEST_POD] = "Pod",
    };
    const char *rv = k8s_meta_str(obj, "resourceVersion");
    char *o;
    if (asprintf(&o, "api:%s@%s", names[mkind], rv ? rv : "?") < 0)
        return NULL;
    return o;
}

/* Converts obj; on a conversion error *ret_error says why and *m is empty. */
static int convert(int mkind, struct json_object *obj, struct manifest_object *m, char **ret_error)
{
    _cleanup_free_ char *origin = api_origin(mkind, obj);
    if (!origin)
        return -ENOMEM;
    return manifest_object_from_json(obj, (enum manifest_kind)mkind, origin, m, ret_error);
}

int k8s_watch_apply_event(struct policy *policy, int mkind, int type, struct json_object *obj)
{
    if (mkind < MANIFEST_IDENTITY || mkind > MANIFEST_POD || !obj)
        return -EINVAL;
    const char *ns, *name;
    key_of(obj, &ns, &name);
    if (!name || !*name)
        return -EBADMSG;
    struct manifest_object m = {0};
    int conv = 0;
    if (type == K8S_EVENT_ADDED || type == K8S_EVENT_MODIFIED) {
        _cleanup_free_ char *err = NULL;
        conv = convert(mkind, obj, &m, &err);
        if (conv == -ENOMEM)
            return conv;
        if (conv < 0)
            log_warning("k8s-watch: %s/%s cannot be used, treating it as absent: %s", ns, name,
                        err ? err : idb_strerror(conv));
    } else if (type != K8S_EVENT_DELETED)
        return 0;
    policy_write_lock(policy);
    int r;
    if (type == K8S_EVENT_DELETED || conv < 0)
        r = remove_kind(policy->store, mkind, ns, name);
    else {
        r = put_object(policy->store, &m);
        if (r >= 0)
            r = 1;
    }
    policy_write_unlock(policy);
    manifest_object_done(&m);
    return r;
}

/* ---- relist: replace one kind ---- */

struct listed {
    struct manifest_object *objs;
    size_t n, cap;
    char **keys; /* "ns\x1fname" of every listed object, sorted after the list */
    size_t n_keys, cap_keys;
    int mkind;
    unsigned bad;
    struct k8s_watch *w;
    const struct kind_desc *kind;
};

static void listed_done(struct listed *l)
{
    for (size_t i = 0; i < l->n; i++)
        manifest_object_done(&l->objs[i]);
    free(l->objs);
    for (size_t i = 0; i < l->n_keys; i++)
        free(l->keys[i]);
    free(l->keys);
}

static char *make_key(const char *ns, const char *name)
{
    char *k;
    if (asprintf(&k, "%s\x1f%s", ns, name) < 0)
        return NULL;
    return k;
}

static int add_key(struct listed *l, const char *ns, const char *name)
{
    if (l->n_keys == l->cap_keys) {
        size_t cap = l->cap_keys ? l->cap_keys * 2 : 64;
        char **k = realloc(l->keys, cap * sizeof(*k));
        if (!k)
            return -ENOMEM;
        l->keys = k;
        l->cap_keys = cap;
    }
    char *k = make_key(ns, name);
    if (!k)
        return -ENOMEM;
    l->keys[l->n_keys++] = k;
    return 0;
}

static int list_item(struct json_object *item, void *ud)
{
    struct listed *l = ud;
    if (l->mkind == KIND_AAI) {
        if (l->w->have_aai)
            l->w->aai.upsert(l->w->aai.ud, item);
        return 0;
    }
    const char *ns, *name;
    key_of(item, &ns, &name);
    if (!name || !*name) {
        l->bad++;
        return 0;
    }
    struct manifest_object m = {0};
    _cleanup_free_ char *err = NULL;
    int r = convert(l->mkind, item, &m, &err);
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        l->bad++;
        log_warning("k8s-watch: %s %s/%s cannot be used, treating it as absent: %s", l->kind->name,
                    ns, name, err ? err : idb_strerror(r));
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct manifest_object *o = realloc(l->objs, cap * sizeof(*o));
        if (!o) {
            manifest_object_done(&m);
            return -ENOMEM;
        }
        l->objs = o;
        l->cap = cap;
    }
    /* Only usable objects count as listed: an unusable one is removed like a vanished one, so an
     * older good version never stays in force. */
    r = add_key(l, ns, name);
    if (r < 0) {
        manifest_object_done(&m);
        return r;
    }
    l->objs[l->n++] = m;
    return 0;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct vanished {
    const struct listed *l;
    char **keys; /* ns\x1fname to delete */
    size_t n, cap;
};

static int note_if_vanished(struct vanished *v, const char *ns, const char *name)
{
    _cleanup_free_ char *k = make_key(ns, name);
    if (!k)
        return -ENOMEM;
    if (v->l->n_keys && bsearch(&k, v->l->keys, v->l->n_keys, sizeof(char *), cmp_key))
        return 0;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        char **nk = realloc(v->keys, cap * sizeof(*nk));
        if (!nk)
            return -ENOMEM;
        v->keys = nk;
        v->cap = cap;
    }
    v->keys[v->n++] = TAKE_PTR(k);
    return 0;
}

static int van_identity(const struct identity *i, void *ud)
{
    return note_if_vanished(ud, i->namespace, i->name);
}
static int van_binding(const struct binding *b, void *ud)
{
    return note_if_vanished(ud, b->namespace, b->name);
}
static int van_exception(const struct pod_exception *e, void *ud)
{
    return note_if_vanished(ud, e->namespace, e->name);
}
static int van_pod(const struct pod_meta *p, void *ud)
{
    return note_if_vanished(ud, p->namespace, p->name);
}

/* Under the write lock: every object of the kind that the list did not return is deleted, every
 * listed object is put. Returns how many were deleted, or -ENOMEM (nothing deleted then). */
static int replace_kind(struct store *s, struct listed *l, size_t *ret_put)
{
    struct vanished v = {.l = l};
    int r;
    switch (l->mkind) {
    case MANIFEST_IDENTITY:
        r = store_foreach_identity(s, van_identity, &v);
        break;
    case MANIFEST_BINDING:
        r = store_foreach_binding(s, van_binding, &v);
        break;
    case MANIFEST_EXCEPTION:
        r = store_foreach_exception(s, van_exception, &v);
        break;
    default:
        r = store_foreach_pod(s, van_pod, &v);
        break;
    }
    int deleted = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (r >= 0) {
            char *sep = strchr(v.keys[i], '\x1f');
            *sep = '\0';
            if (remove_kind(s, l->mkind, v.keys[i], sep + 1) > 0)
                deleted++;
        }
        free(v.keys[i]);
    }
    free(v.keys);
    if (r < 0)
        return r;
    /* Unusable listed objects: absent from the store (a previous good version must not stay). */
    size_t put = 0;
    for (size_t i = 0; i < l->n; i++)
        if (put_object(s, &l->objs[i]) >= 0)
            put++;
    *ret_put = put;
    return deleted;
}

/* ---- the reflector thread ---- */

static bool stopping(struct k8s_watch *w)
{
    pthread_mutex_lock(&w->lock);
    bool s = w->stop;
    pthread_mutex_unlock(&w->lock);
    return s || k8s_client_stopped(w->client);
}

/* Sleeps ms unless stopped first. Returns false when stopping. */
static bool sleep_ms(struct k8s_watch *w, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t end = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + ms;
    struct timespec dl = {.tv_sec = (time_t)(end / 1000), .tv_nsec = (long)(end % 1000) * 1000000L};
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        if (pthread_cond_timedwait(&w->cond, &w->lock, &dl) == ETIMEDOUT)
            break;
    }
    bool s = w->stop;
    pthread_mutex_unlock(&w->lock);
    return !s && !k8s_client_stopped(w->client);
}

static double random_unit(void)
{
    uint32_t x = 0;
    if (getrandom(&x, sizeof(x), GRND_NONBLOCK) != (ssize_t)sizeof(x))
        x = (uint32_t)now_monotonic_ms() * 2654435761u;
    return (double)x / 4294967296.0;
}

static void changed(struct k8s_watch *w)
{
    if (w->on_change)
        w->on_change(w->on_change_ud);
}

/* Records a failure and sleeps the backoff (at least Retry-After). */
static void fail_and_wait(struct reflector *rf, int r, const struct k8s_status *st,
                          const char *what)
{
    struct k8s_watch *w = rf->w;
    if (r == -ECANCELED || stopping(w))
        return;
    uint64_t now = now_monotonic_ms();
    pthread_mutex_lock(&w->lock);
    rf->failures++;
    rf->last_failure_ms = now;
    unsigned failures = rf->failures;
    if (st && st->message[0])
        snprintf(rf->last_error, sizeof(rf->last_error), "%s: %s (HTTP %ld): %s", what,
                 idb_strerror(r), st->http_status, st->message);
    else
        snprintf(rf->last_error, sizeof(rf->last_error), "%s: %s", what, idb_strerror(r));
    pthread_mutex_unlock(&w->lock);
    uint64_t ms = k8s_backoff_ms(failures, random_unit());
    if (st && st->retry_after_s) {
        uint64_t ra = (uint64_t)(st->retry_after_s > K8S_RETRY_AFTER_MAX_S ? K8S_RETRY_AFTER_MAX_S
                                                                           : st->retry_after_s) *
                      1000;
        if (ra > ms)
            ms = ra;
    }
    log_warning("k8s-watch: %s %s failed, retrying in %llu ms: %s", rf->kind->name, what,
                (unsigned long long)ms, rf->last_error);
    sleep_ms(w, ms);
}

static void set_rv(struct reflector *rf, const char *rv)
{
    if (!rv || !*rv)
        return;
    char *d = strdup(rv);
    if (!d)
        return;
    pthread_mutex_lock(&rf->w->lock);
    free(rf->rv);
    rf->rv = d;
    pthread_mutex_unlock(&rf->w->lock);
}

/* Returns new: the current resourceVersion, or NULL (relist). */
static char *get_rv(struct reflector *rf)
{
    pthread_mutex_lock(&rf->w->lock);
    char *d = rf->rv ? strdup(rf->rv) : NULL;
    pthread_mutex_unlock(&rf->w->lock);
    return d;
}

static void clear_rv(struct reflector *rf)
{
    pthread_mutex_lock(&rf->w->lock);
    free(rf->rv);
    rf->rv = NULL;
    pthread_mutex_unlock(&rf->w->lock);
}

static void mark_listed(struct reflector *rf)
{
    struct k8s_watch *w = rf->w;
    pthread_mutex_lock(&w->lock);
    bool first = !rf->listed;
    rf->listed = true;
    if (first)
        w->n_listed++;
    bool all = first && w->n_listed == w->n_refl;
    pthread_mutex_unlock(&w->lock);
    if (all) {
        policy_write_lock(w->policy);
        w->policy->synced = true;
        policy_write_unlock(w->policy);
        log_notice("k8s-watch: every kind listed from %s, the policy is synced",
                   k8s_client_server(w->client));
    }
}

static int do_list(struct reflector *rf)
{
    struct k8s_watch *w = rf->w;
    struct listed l = {.mkind = rf->kind->mkind, .w = w, .kind = rf->kind};
    struct k8s_status st;
    _cleanup_free_ char *rv = NULL;
    if (rf->kind->mkind == KIND_AAI && w->have_aai)
        w->aai.reset(w->aai.ud);
    uint64_t t0 = now_monotonic_ms();
    int r =
        k8s_list(w->client, rf->kind->path, rf->query, K8S_LIST_PAGE_SIZE, list_item, &l, &rv, &st);
    if (r < 0) {
        listed_done(&l);
        fail_and_wait(rf, r, &st, "list");
        return r;
    }
    size_t put = 0;
    int deleted = 0;
    if (rf->kind->mkind != KIND_AAI) {
        if (l.n_keys > 1)
            qsort(l.keys, l.n_keys, sizeof(char *), cmp_key);
        policy_write_lock(w->policy);
        deleted = replace_kind(w->policy->store, &l, &put);
        policy_write_unlock(w->policy);
        if (deleted < 0) {
            listed_done(&l);
            fail_and_wait(rf, deleted, NULL, "list");
            return deleted;
        }
    } else if (w->have_aai)
        w->aai.listed(w->aai.ud);
    listed_done(&l);
    /* A LIST's pages are large and short-lived: give their memory back (every thread has its own
     * malloc arena, which would otherwise keep it). */
    malloc_trim(0);
    set_rv(rf, rv);
    pthread_mutex_lock(&w->lock);
    bool relist = rf->listed;
    if (relist)
        rf->relists++;
    pthread_mutex_unlock(&w->lock);
    if (relist)
        metrics_inc(M_WATCH_RELISTS);
    log_info("k8s-watch: listed %s at resourceVersion %s in %llu ms: %zu objects, %d removed, %u "
             "unusable",
             rf->kind->name, rv, (unsigned long long)(now_monotonic_ms() - t0),
             rf->kind->mkind == KIND_AAI ? (size_t)0 : put, deleted, l.bad);
    mark_listed(rf);
    if (rf->kind->mkind != KIND_AAI)
        changed(w);
    return 0;
}

struct watch_ctx {
    struct reflector *rf;
    bool gone; /* an ERROR event with code 410 */
    int error; /* another ERROR event */
    char error_msg[200];
    unsigned events;
};

static int on_event(const struct k8s_event *ev, void *ud)
{
    struct watch_ctx *x = ud;
    struct reflector *rf = x->rf;
    struct k8s_watch *w = rf->w;
    if (ev->type == K8S_EVENT_ERROR) {
        int64_t code = json_get_int(ev->object, "code", 0);
        const char *msg = json_get_str(ev->object, "message");
        snprintf(x->error_msg, sizeof(x->error_msg), "%s", msg ? msg : "");
        if (code == 410)
            x->gone = true;
        else
            x->error = -EPROTO;
        return -ESHUTDOWN; /* ends the watch */
    }
    x->events++;
    const char *rv = k8s_meta_str(ev->object, "resourceVersion");
    if (ev->type == K8S_EVENT_BOOKMARK) {
        set_rv(rf, rv);
        return 0;
    }
    if (rf->kind->mkind == KIND_AAI) {
        if (w->have_aai) {
            if (ev->type == K8S_EVENT_DELETED) {
                const char *ns, *name;
                key_of(ev->object, &ns, &name);
                if (name)
                    w->aai.remove(w->aai.ud, ns, name);
            } else
                w->aai.upsert(w->aai.ud, ev->object);
        }
        set_rv(rf, rv);
        return 0;
    }
    int r = k8s_watch_apply_event(w->policy, rf->kind->mkind, (int)ev->type, ev->object);
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        const char *ns, *name;
        key_of(ev->object, &ns, &name);
        log_warning("k8s-watch: %s event for %s/%s ignored: %s", rf->kind->name, ns, strna(name),
                    idb_strerror(r));
    }
    set_rv(rf, rv);
    if (r > 0)
        changed(w);
    return 0;
}

static void do_watch(struct reflector *rf, const char *rv)
{
    struct k8s_watch *w = rf->w;
    uint32_t base = w->watch_timeout_s ? w->watch_timeout_s : K8S_WATCH_MIN_TIMEOUT_S;
    uint32_t timeout = base + (uint32_t)(random_unit() * base);
    struct watch_ctx x = {.rf = rf};
    struct k8s_status st;
    uint64_t t0 = now_monotonic_ms();
    int r = k8s_watch(w->client, rf->kind->path, rf->query, rv, timeout, on_event, &x, &st);
    uint64_t up = now_monotonic_ms() - t0;
    if (up >= K8S_BACKOFF_RESET_MS) {
        pthread_mutex_lock(&w->lock);
        rf->failures = 0;
        pthread_mutex_unlock(&w->lock);
    }
    if (x.gone || r == -ESTALE) {
        log_info("k8s-watch: %s: resourceVersion %s is too old (410 Gone), relisting",
                 rf->kind->name, rv);
        clear_rv(rf);
        return;
    }
    if (r == -ESHUTDOWN && x.error) {
        snprintf(st.message, sizeof(st.message), "ERROR event: %s", x.error_msg);
        fail_and_wait(rf, x.error, &st, "watch");
        return;
    }
    if (r == -E2BIG || r == -EBADMSG) {
        /* The stream cannot be trusted past this point, and resuming from the same
         * resourceVersion would meet the same event again: relist after the backoff. */
        clear_rv(rf);
        fail_and_wait(rf, r, &st, "watch");
        return;
    }
    if (r == 0) {
        log_debug("k8s-watch: %s watch ended after %llu ms and %u events, resuming from %s",
                  rf->kind->name, (unsigned long long)up, x.events, rv);
        return;
    }
    fail_and_wait(rf, r, &st, "watch");
}

static void *reflector_main(void *ud)
{
    struct reflector *rf = ud;
    struct k8s_watch *w = rf->w;
    while (!stopping(w)) {
        _cleanup_free_ char *rv = get_rv(rf);
        if (!rv) {
            do_list(rf);
            continue;
        }
        do_watch(rf, rv);
    }
    return NULL;
}

/* ---- lifecycle ---- */

int k8s_watch_start(const struct k8s_watch_options *o, struct k8s_watch **ret)
{
    if (!o || !o->client || !o->policy || !o->node_name || !*o->node_name || !ret)
        return -EINVAL;
    struct k8s_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->client = o->client;
    w->policy = o->policy;
    w->on_change = o->on_change;
    w->on_change_ud = o->on_change_ud;
    w->watch_timeout_s = o->watch_timeout_s;
    if (o->aai) {
        w->aai = *o->aai;
        w->have_aai = true;
    }
    pthread_mutex_init(&w->lock, NULL);
    (void)cond_init_monotonic(&w->cond);
    int r = -ENOMEM;
    w->node = strdup(o->node_name);
    if (!w->node)
        goto fail;
    char *esc = curl_easy_escape(NULL, o->node_name, 0);
    if (!esc)
        goto fail;
    for (size_t k = 0; k < N_KINDS; k++) {
        if (kinds[k].mkind == KIND_AAI && !w->have_aai)
            continue;
        struct reflector *rf = &w->refl[w->n_refl++];
        rf->w = w;
        rf->kind = &kinds[k];
        int n = 0;
        if (kinds[k].field_node)
            n = asprintf(&rf->query, "fieldSelector=spec.nodeName%%3D%s", esc);
        else if (kinds[k].label_node)
            n = asprintf(&rf->query, "labelSelector=nodename%%3D%s", esc);
        if (n < 0) {
            rf->query = NULL;
            curl_free(esc);
            goto fail;
        }
    }
    curl_free(esc);
    for (size_t k = 0; k < w->n_refl; k++) {
        r = -pthread_create(&w->refl[k].thread, NULL, reflector_main, &w->refl[k]);
        if (r < 0)
            goto fail;
        w->refl[k].started = true;
    }
    *ret = w;
    return 0;
fail:
    k8s_client_stop(o->client);
    k8s_watch_free(w);
    return r;
}

struct k8s_watch *k8s_watch_free(struct k8s_watch *w)
{
    if (!w)
        return NULL;
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (size_t k = 0; k < w->n_refl; k++) {
        if (w->refl[k].started)
            pthread_join(w->refl[k].thread, NULL);
        free(w->refl[k].query);
        free(w->refl[k].rv);
    }
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w->node);
    free(w);
    return NULL;
}

bool k8s_watch_synced(struct k8s_watch *w)
{
    pthread_mutex_lock(&w->lock);
    bool s = w->n_listed == w->n_refl;
    pthread_mutex_unlock(&w->lock);
    return s;
}

struct json_object *k8s_watch_status(struct k8s_watch *w)
{
    struct json_object *o = json_object_new_object(), *arr = json_object_new_array();
    if (!o || !arr) {
        json_object_put(o);
        json_object_put(arr);
        return NULL;
    }
    json_add_str(o, "server", k8s_client_server(w->client));
    pthread_mutex_lock(&w->lock);
    json_object_object_add(o, "synced", json_object_new_boolean(w->n_listed == w->n_refl));
    for (size_t k = 0; k < w->n_refl; k++) {
        const struct reflector *rf = &w->refl[k];
        struct json_object *e = json_object_new_object();
        if (!e)
            continue;
        json_add_str(e, "kind", rf->kind->name);
        json_object_object_add(e, "listed", json_object_new_boolean(rf->listed));
        json_add_str(e, "resourceVersion", rf->rv);
        json_add_int(e, "relists", (int64_t)rf->relists);
        json_add_int(e, "failures", rf->failures);
        if (rf->last_error[0])
            json_add_str(e, "lastError", rf->last_error);
        json_object_array_add(arr, e);
    }
    pthread_mutex_unlock(&w->lock);
    json_object_object_add(o, "kinds", arr);
    return o;
}
