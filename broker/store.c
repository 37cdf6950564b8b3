/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy store: four tables keyed by (namespace, name) and four indexes, so that a decision
 * costs O(bindings that carry the pod's selector), not O(all bindings):
 *
 *   bindings_by_ns_sel  (namespace, selector) -> bindings   namespaced decisions
 *   bindings_by_sel     ("", selector)        -> bindings   cluster-wide decisions and explain
 *   identities_by_name  ("", name)            -> identities cluster-wide identity lookup by name
 *   exceptions_by_ns    (namespace, "")       -> exceptions
 *
 * Every mutation reserves what it needs before it changes anything, so a failed store_put_*()
 * leaves the store as it was (and the caller still owns the object).
 */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idbroker/errno.h>

#include <idbroker-internal/macro.h>

/* ---- hashing ---- */

#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV_PRIME UINT64_C(0x100000001b3)

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* Hashes s with its terminating NUL; NULL hashes differently from "" so the two never collide. */
static uint64_t fnv_str(uint64_t h, const char *s)
{
    if (!s) {
        static const unsigned char null_marker[2] = {0xff, 0x00};
        return fnv_bytes(h, null_marker, sizeof(null_marker));
    }
    return fnv_bytes(h, s, strlen(s) + 1);
}

/* splitmix64's finaliser: spreads a hash before it is summed with others. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

/* ---- hash table: (a, b) string pair -> value, chained, key copied into the entry ---- */

struct entry {
    struct entry *next;
    uint64_t hash;
    void *value;
    const char *b; /* points into key[], after a's NUL */
    char key[];    /* a NUL b NUL */
};

struct table {
    struct entry **buckets;
    size_t n_buckets; /* 0 or a power of two */
    size_t n;
};

static uint64_t key_hash(const char *a, const char *b)
{
    return fnv_str(fnv_str(FNV_OFFSET, a), b);
}

static struct entry *table_find(const struct table *t, const char *a, const char *b)
{
    if (t->n_buckets == 0)
        return NULL;
    uint64_t h = key_hash(a, b);
    for (struct entry *e = t->buckets[h & (t->n_buckets - 1)]; e; e = e->next)
        if (e->hash == h && streq(e->key, a) && streq(e->b, b))
            return e;
    return NULL;
}

static void *table_get(const struct table *t, const char *a, const char *b)
{
    struct entry *e = table_find(t, a, b);
    return e ? e->value : NULL;
}

static struct entry *entry_new(const char *a, const char *b, void *value)
{
    size_t la = strlen(a), lb = strlen(b);
    struct entry *e = malloc(sizeof(*e) + la + lb + 2);
    if (!e)
        return NULL;
    memcpy(e->key, a, la + 1);
    memcpy(e->key + la + 1, b, lb + 1);
    e->b = e->key + la + 1;
    e->hash = key_hash(a, b);
    e->value = value;
    e->next = NULL;
    return e;
}

/* Doubles the bucket array when the load passes 1. Failure is harmless: chains only get longer. */
static void table_maybe_grow(struct table *t)
{
    if (t->n < t->n_buckets)
        return;
    size_t nb = t->n_buckets ? t->n_buckets * 2 : 16;
    struct entry **buckets = calloc(nb, sizeof(*buckets));
    if (!buckets)
        return;
    for (size_t i = 0; i < t->n_buckets; i++) {
        struct entry *e = t->buckets[i];
        while (e) {
            struct entry *next = e->next;
            e->next = buckets[e->hash & (nb - 1)];
            buckets[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = buckets;
    t->n_buckets = nb;
}

/* Links a fresh entry (from entry_new) whose key is not in the table yet. table_reserve() must have
 * succeeded before, so this never fails. */
static void table_link(struct table *t, struct entry *e)
{
    table_maybe_grow(t);
    size_t i = e->hash & (t->n_buckets - 1);
    e->next = t->buckets[i];
    t->buckets[i] = e;
    t->n++;
}

/* Unlinks and returns the entry for (a, b), or NULL. The caller frees it. */
static struct entry *table_unlink(struct table *t, const char *a, const char *b)
{
    if (t->n_buckets == 0)
        return NULL;
    uint64_t h = key_hash(a, b);
    for (struct entry **pe = &t->buckets[h & (t->n_buckets - 1)]; *pe; pe = &(*pe)->next) {
        struct entry *e = *pe;
        if (e->hash == h && streq(e->key, a) && streq(e->b, b)) {
            *pe = e->next;
            t->n--;
            return e;
        }
    }
    return NULL;
}

/* Ensures a bucket array exists, so table_link() never has to allocate. */
static int table_reserve(struct table *t)
{
    if (t->n_buckets > 0)
        return 0;
    t->buckets = calloc(16, sizeof(*t->buckets));
    if (!t->buckets)
        return -ENOMEM;
    t->n_buckets = 16;
    return 0;
}

/* Frees every entry, calling free_value on each value (may be NULL). */
static void table_done(struct table *t, void (*free_value)(void *))
{
    for (size_t i = 0; i < t->n_buckets; i++) {
        struct entry *e = t->buckets[i];
        while (e) {
            struct entry *next = e->next;
            if (free_value)
                free_value(e->value);
            free(e);
            e = next;
        }
    }
    free(t->buckets);
    *t = (struct table){0};
}

/* ---- multimap: a table whose values are vectors of borrowed pointers ---- */

struct vec {
    const void **items;
    size_t n, cap;
};

static void vec_free(void *p)
{
    struct vec *v = p;
    if (!v)
        return;
    free(v->items);
    free(v);
}

/* Returns the vector for (a, b) with room for one more item, creating it if needed. The only step
 * of an index update that can fail; a vector created here and never filled is empty and harmless.
 */
static int mm_reserve(struct table *mm, const char *a, const char *b, struct vec **ret)
{
    struct vec *v = table_get(mm, a, b);
    if (!v) {
        int r = table_reserve(mm);
        if (r < 0)
            return r;
        v = calloc(1, sizeof(*v));
        if (!v)
            return -ENOMEM;
        struct entry *e = entry_new(a, b, v);
        if (!e) {
            free(v);
            return -ENOMEM;
        }
        table_link(mm, e);
    }
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 2;
        const void **items = realloc(v->items, cap * sizeof(*items));
        if (!items)
            return -ENOMEM;
        v->items = items;
        v->cap = cap;
    }
    *ret = v;
    return 0;
}

static void vec_push(struct vec *v, const void *item)
{
    /* Room was made by mm_reserve(). */
    v->items[v->n++] = item;
}

/* Removes item from the vector of (a, b), keeping the vector even if it becomes empty. */
static void mm_remove_keep(struct table *mm, const char *a, const char *b, const void *item)
{
    struct vec *v = table_get(mm, a, b);
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        if (v->items[i] == item) {
            v->items[i] = v->items[--v->n];
            return;
        }
}

/* Drops the vector of (a, b) if it is empty, so churn of selectors does not accumulate memory. */
static void mm_drop_if_empty(struct table *mm, const char *a, const char *b)
{
    struct vec *v = table_get(mm, a, b);
    if (!v || v->n > 0)
        return;
    struct entry *e = table_unlink(mm, a, b);
    vec_free(e->value);
    free(e);
}

static void mm_remove(struct table *mm, const char *a, const char *b, const void *item)
{
    mm_remove_keep(mm, a, b, item);
    mm_drop_if_empty(mm, a, b);
}

static void mm_replace(struct table *mm, const char *a, const char *b, const void *old,
                       const void *item)
{
    struct vec *v = table_get(mm, a, b);
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        if (v->items[i] == old) {
            v->items[i] = item;
            return;
        }
}

static const struct vec *mm_get(const struct table *mm, const char *a, const char *b)
{
    return table_get(mm, a, b);
}

/* ---- objects ---- */

static void kv_free_array(struct kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

static const char *kv_get(const struct kv *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (kv[i].key && streq(kv[i].key, key))
            return nz(kv[i].value);
    return NULL;
}

struct identity *identity_free(struct identity *i)
{
    if (!i)
        return NULL;
    free(i->namespace);
    free(i->name);
    free(i->uid);
    free(i->resource_id);
    free(i->client_id);
    free(i->tenant_id);
    free(i->ad_endpoint);
    free(i->ad_resource_id);
    free(i->secret_name);
    free(i->secret_namespace);
    kv_free_array(i->annotations, i->n_annotations);
    free(i->origin);
    free(i);
    return NULL;
}

struct binding *binding_free(struct binding *b)
{
    if (!b)
        return NULL;
    free(b->namespace);
    free(b->name);
    free(b->identity);
    free(b->selector);
    free(b->origin);
    free(b);
    return NULL;
}

struct pod_exception *pod_exception_free(struct pod_exception *e)
{
    if (!e)
        return NULL;
    free(e->namespace);
    free(e->name);
    kv_free_array(e->pod_labels, e->n_pod_labels);
    free(e->origin);
    free(e);
    return NULL;
}

struct pod_meta *pod_meta_free(struct pod_meta *p)
{
    if (!p)
        return NULL;
    free(p->namespace);
    free(p->name);
    free(p->uid);
    free(p->node);
    kv_free_array(p->labels, p->n_labels);
    for (size_t i = 0; i < p->n_ips; i++)
        free(p->ips[i]);
    free(p->ips);
    free(p->origin);
    free(p);
    return NULL;
}

void identity_update_hash(struct identity *i)
{
    uint64_t h = FNV_OFFSET;
    h = fnv_str(h, i->namespace);
    h = fnv_str(h, i->name);
    h = fnv_str(h, i->uid);
    int32_t type = i->type;
    h = fnv_bytes(h, &type, sizeof(type));
    h = fnv_str(h, i->resource_id);
    h = fnv_str(h, i->client_id);
    h = fnv_str(h, i->tenant_id);
    h = fnv_str(h, i->ad_endpoint);
    h = fnv_str(h, i->ad_resource_id);
    h = fnv_str(h, i->secret_name);
    h = fnv_str(h, i->secret_namespace);
    /* Annotations are a map: their order must not change the hash, so their mixed hashes are
     * summed. */
    uint64_t sum = 0;
    for (size_t k = 0; k < i->n_annotations; k++)
        sum += mix64(fnv_str(fnv_str(FNV_OFFSET, i->annotations[k].key), i->annotations[k].value));
    uint64_t n = i->n_annotations;
    h = fnv_bytes(h, &n, sizeof(n));
    h = fnv_bytes(h, &sum, sizeof(sum));
    i->hash = h;
}

const char *identity_annotation(const struct identity *i, const char *key)
{
    if (!i || !key)
        return NULL;
    return kv_get(i->annotations, i->n_annotations, key);
}

/* ---- the store ---- */

struct store {
    struct table identities; /* (ns, name) -> struct identity */
    struct table bindings;   /* (ns, name) -> struct binding */
    struct table exceptions; /* (ns, name) -> struct pod_exception */
    struct table pods;       /* (ns, name) -> struct pod_meta */

    struct table bindings_by_ns_sel; /* (ns, selector) -> vec of bindings */
    struct table bindings_by_sel;    /* ("", selector) -> vec of bindings */
    struct table identities_by_name; /* ("", name) -> vec of identities */
    struct table exceptions_by_ns;   /* (ns, "") -> vec of exceptions */
};

struct store *store_new(void)
{
    return calloc(1, sizeof(struct store));
}

static void identity_free_void(void *p)
{
    identity_free(p);
}

static void binding_free_void(void *p)
{
    binding_free(p);
}

static void exception_free_void(void *p)
{
    pod_exception_free(p);
}

static void pod_free_void(void *p)
{
    pod_meta_free(p);
}

struct store *store_free(struct store *s)
{
    if (!s)
        return NULL;
    table_done(&s->bindings_by_ns_sel, vec_free);
    table_done(&s->bindings_by_sel, vec_free);
    table_done(&s->identities_by_name, vec_free);
    table_done(&s->exceptions_by_ns, vec_free);
    table_done(&s->identities, identity_free_void);
    table_done(&s->bindings, binding_free_void);
    table_done(&s->exceptions, exception_free_void);
    table_done(&s->pods, pod_free_void);
    free(s);
    return NULL;
}

static bool key_ok(const char *ns, const char *name)
{
    return ns && name && *ns && *name;
}

/* Inserts or replaces `value` under (ns, name) in a primary table. The caller has called
 * table_reserve() and, for a new key, passes a fresh entry in *fresh (consumed). Returns the old
 * value or NULL. */
static void *primary_set(struct table *t, struct entry *existing, struct entry **fresh, void *value)
{
    if (existing) {
        void *old = existing->value;
        existing->value = value;
        return old;
    }
    (*fresh)->value = value;
    table_link(t, TAKE_PTR(*fresh));
    return NULL;
}

/* Prepares a primary-table insert of (ns, name): returns the existing entry in *ret_existing, or a
 * fresh unlinked entry in *ret_fresh. */
static int primary_prepare(struct table *t, const char *ns, const char *name,
                           struct entry **ret_existing, struct entry **ret_fresh)
{
    int r = table_reserve(t);
    if (r < 0)
        return r;
    struct entry *e = table_find(t, ns, name);
    if (e) {
        *ret_existing = e;
        *ret_fresh = NULL;
        return 0;
    }
    struct entry *f = entry_new(ns, name, NULL);
    if (!f)
        return -ENOMEM;
    *ret_existing = NULL;
    *ret_fresh = f;
    return 0;
}

int store_put_identity(struct store *s, struct identity *i)
{
    if (!s || !i || !key_ok(i->namespace, i->name))
        return -EINVAL;

    struct entry *existing, *fresh;
    int r = primary_prepare(&s->identities, i->namespace, i->name, &existing, &fresh);
    if (r < 0)
        return r;
    struct vec *v;
    r = mm_reserve(&s->identities_by_name, "", i->name, &v);
    if (r < 0) {
        free(fresh);
        return r;
    }

    identity_update_hash(i);
    struct identity *old = primary_set(&s->identities, existing, &fresh, i);
    if (old)
        mm_replace(&s->identities_by_name, "", old->name, old, i);
    else
        vec_push(v, i);
    identity_free(old);
    return 0;
}

int store_put_binding(struct store *s, struct binding *b)
{
    if (!s || !b || !key_ok(b->namespace, b->name))
        return -EINVAL;

    struct entry *existing, *fresh;
    int r = primary_prepare(&s->bindings, b->namespace, b->name, &existing, &fresh);
    if (r < 0)
        return r;
    struct vec *v_ns, *v_all;
    r = mm_reserve(&s->bindings_by_ns_sel, b->namespace, nz(b->selector), &v_ns);
    if (r >= 0)
        r = mm_reserve(&s->bindings_by_sel, "", nz(b->selector), &v_all);
    if (r < 0) {
        free(fresh);
        return r;
    }

    struct binding *old = primary_set(&s->bindings, existing, &fresh, b);
    if (old) {
        /* The old binding may have had another selector. Take it out of its vectors without
         * dropping them (v_ns / v_all may be the same vectors), add b, and only then drop emptied
         * ones. */
        mm_remove_keep(&s->bindings_by_ns_sel, old->namespace, nz(old->selector), old);
        mm_remove_keep(&s->bindings_by_sel, "", nz(old->selector), old);
    }
    vec_push(v_ns, b);
    vec_push(v_all, b);
    if (old) {
        mm_drop_if_empty(&s->bindings_by_ns_sel, old->namespace, nz(old->selector));
        mm_drop_if_empty(&s->bindings_by_sel, "", nz(old->selector));
        binding_free(old);
    }
    return 0;
}

int store_put_exception(struct store *s, struct pod_exception *e)
{
    if (!s || !e || !key_ok(e->namespace, e->name))
        return -EINVAL;

    struct entry *existing, *fresh;
    int r = primary_prepare(&s->exceptions, e->namespace, e->name, &existing, &fresh);
    if (r < 0)
        return r;
    struct vec *v;
    r = mm_reserve(&s->exceptions_by_ns, e->namespace, "", &v);
    if (r < 0) {
        free(fresh);
        return r;
    }

    struct pod_exception *old = primary_set(&s->exceptions, existing, &fresh, e);
    if (old)
        mm_replace(&s->exceptions_by_ns, old->namespace, "", old, e);
    else
        vec_push(v, e);
    pod_exception_free(old);
    return 0;
}

int store_put_pod(struct store *s, struct pod_meta *p)
{
    if (!s || !p || !key_ok(p->namespace, p->name))
        return -EINVAL;

    struct entry *existing, *fresh;
    int r = primary_prepare(&s->pods, p->namespace, p->name, &existing, &fresh);
    if (r < 0)
        return r;
    pod_meta_free(primary_set(&s->pods, existing, &fresh, p));
    return 0;
}

/* Unlinks (ns, name) from a primary table and returns its value, or NULL. */
static void *primary_take(struct table *t, const char *ns, const char *name)
{
    if (!ns || !name)
        return NULL;
    struct entry *e = table_unlink(t, ns, name);
    if (!e)
        return NULL;
    void *v = e->value;
    free(e);
    return v;
}

int store_remove_identity(struct store *s, const char *ns, const char *name)
{
    if (!s)
        return -EINVAL;
    struct identity *i = primary_take(&s->identities, ns, name);
    if (!i)
        return 0;
    mm_remove(&s->identities_by_name, "", i->name, i);
    identity_free(i);
    return 1;
}

int store_remove_binding(struct store *s, const char *ns, const char *name)
{
    if (!s)
        return -EINVAL;
    struct binding *b = primary_take(&s->bindings, ns, name);
    if (!b)
        return 0;
    mm_remove(&s->bindings_by_ns_sel, b->namespace, nz(b->selector), b);
    mm_remove(&s->bindings_by_sel, "", nz(b->selector), b);
    binding_free(b);
    return 1;
}

int store_remove_exception(struct store *s, const char *ns, const char *name)
{
    if (!s)
        return -EINVAL;
    struct pod_exception *e = primary_take(&s->exceptions, ns, name);
    if (!e)
        return 0;
    mm_remove(&s->exceptions_by_ns, e->namespace, "", e);
    pod_exception_free(e);
    return 1;
}

int store_remove_pod(struct store *s, const char *ns, const char *name)
{
    if (!s)
        return -EINVAL;
    struct pod_meta *p = primary_take(&s->pods, ns, name);
    if (!p)
        return 0;
    pod_meta_free(p);
    return 1;
}

const struct identity *store_get_identity(const struct store *s, const char *ns, const char *name)
{
    if (!s || !ns || !name)
        return NULL;
    return table_get(&s->identities, ns, name);
}

const struct pod_meta *store_get_pod(const struct store *s, const char *ns, const char *name)
{
    if (!s || !ns || !name)
        return NULL;
    return table_get(&s->pods, ns, name);
}

size_t store_count_identities(const struct store *s)
{
    return s ? s->identities.n : 0;
}

size_t store_count_bindings(const struct store *s)
{
    return s ? s->bindings.n : 0;
}

size_t store_count_exceptions(const struct store *s)
{
    return s ? s->exceptions.n : 0;
}

size_t store_count_pods(const struct store *s)
{
    return s ? s->pods.n : 0;
}

/* ---- ordered iteration ---- */

static int entry_cmp(const void *x, const void *y)
{
    const struct entry *a = *(const struct entry *const *)x, *b = *(const struct entry *const *)y;
    int c = strcmp(a->key, b->key);
    return c ? c : strcmp(a->b, b->b);
}

/* Returns new: the entries of t sorted by (namespace, name), in *ret (NULL when t is empty). */
static int table_sorted(const struct table *t, struct entry ***ret)
{
    if (t->n == 0) {
        *ret = NULL;
        return 0;
    }
    struct entry **v = malloc(t->n * sizeof(*v));
    if (!v)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < t->n_buckets; i++)
        for (struct entry *e = t->buckets[i]; e; e = e->next)
            v[n++] = e;
    qsort(v, n, sizeof(*v), entry_cmp);
    *ret = v;
    return 0;
}

/* The callbacks must not change the store: the sorted snapshot borrows its entries. */
#define DEFINE_FOREACH(fname, member, type)                                                        \
    int fname(const struct store *s, int (*cb)(const type *, void *), void *ud)                    \
    {                                                                                              \
        if (!s || !cb)                                                                             \
            return -EINVAL;                                                                        \
        _cleanup_free_ struct entry **v = NULL;                                                    \
        int r = table_sorted(&s->member, &v);                                                      \
        if (r < 0)                                                                                 \
            return r;                                                                              \
        for (size_t i = 0; i < s->member.n; i++) {                                                 \
            r = cb(v[i]->value, ud);                                                               \
            if (r < 0)                                                                             \
                return r;                                                                          \
        }                                                                                          \
        return 0;                                                                                  \
    }

DEFINE_FOREACH(store_foreach_identity, identities, struct identity)
DEFINE_FOREACH(store_foreach_binding, bindings, struct binding)
DEFINE_FOREACH(store_foreach_exception, exceptions, struct pod_exception)
DEFINE_FOREACH(store_foreach_pod, pods, struct pod_meta)

/* ---- JSON views ---- */

static int jadd(struct json_object *o, const char *key, struct json_object *v)
{
    if (!v)
        return -ENOMEM;
    if (json_object_object_add(o, key, v) < 0) {
        json_object_put(v);
        return -ENOMEM;
    }
    return 0;
}

static int jadd_str(struct json_object *o, const char *key, const char *val)
{
    return jadd(o, key, json_object_new_string(nz(val)));
}

static struct json_object *kv_to_json(const struct kv *kv, size_t n)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (jadd_str(o, nz(kv[i].key), kv[i].value) < 0) {
            json_object_put(o);
            return NULL;
        }
    return o;
}

/* Returns new {apiVersion, kind, metadata{namespace, name[, uid][, annotations]}} or NULL. */
static struct json_object *object_new(const char *kind, const char *ns, const char *name,
                                      const char *uid, const struct kv *ann, size_t n_ann,
                                      struct json_object **ret_spec)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    int r = jadd_str(o, "apiVersion", "aadpodidentity.k8s.io/v1");
    if (r >= 0)
        r = jadd_str(o, "kind", kind);
    if (r >= 0)
        r = jadd(o, "metadata", json_object_new_object());
    if (r >= 0)
        r = jadd(o, "spec", json_object_new_object());
    struct json_object *m = json_object_object_get(o, "metadata");
    if (r >= 0)
        r = jadd_str(m, "namespace", ns);
    if (r >= 0)
        r = jadd_str(m, "name", name);
    if (r >= 0 && uid)
        r = jadd_str(m, "uid", uid);
    if (r >= 0 && n_ann > 0)
        r = jadd(m, "annotations", kv_to_json(ann, n_ann));
    if (r < 0) {
        json_object_put(o);
        return NULL;
    }
    *ret_spec = json_object_object_get(o, "spec");
    return o;
}

struct json_object *identity_to_json(const struct identity *i)
{
    if (!i)
        return NULL;
    struct json_object *spec;
    struct json_object *o = object_new("AzureIdentity", i->namespace, i->name, i->uid,
                                       i->annotations, i->n_annotations, &spec);
    if (!o)
        return NULL;
    int r = jadd(spec, "type", json_object_new_int(i->type));
    if (r >= 0)
        r = jadd_str(spec, "resourceID", i->resource_id);
    if (r >= 0)
        r = jadd_str(spec, "clientID", i->client_id);
    if (r >= 0)
        r = jadd_str(spec, "tenantID", i->tenant_id);
    if (r >= 0 &&
        ((i->secret_name && *i->secret_name) || (i->secret_namespace && *i->secret_namespace))) {
        struct json_object *cp = json_object_new_object();
        r = jadd(spec, "clientPassword", cp);
        if (r >= 0)
            r = jadd_str(cp, "name", i->secret_name);
        if (r >= 0)
            r = jadd_str(cp, "namespace", i->secret_namespace);
    }
    if (r >= 0)
        r = jadd_str(spec, "adEndpoint", i->ad_endpoint);
    if (r >= 0)
        r = jadd_str(spec, "adResourceID", i->ad_resource_id);
    if (r < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

struct json_object *binding_to_json(const struct binding *b)
{
    if (!b)
        return NULL;
    struct json_object *spec;
    struct json_object *o =
        object_new("AzureIdentityBinding", b->namespace, b->name, NULL, NULL, 0, &spec);
    if (!o)
        return NULL;
    int r = jadd_str(spec, "azureIdentity", b->identity);
    if (r >= 0)
        r = jadd_str(spec, "selector", b->selector);
    if (r >= 0)
        r = jadd(spec, "weight", json_object_new_int64(b->weight));
    if (r < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

struct json_object *pod_exception_to_json(const struct pod_exception *e)
{
    if (!e)
        return NULL;
    struct json_object *spec;
    struct json_object *o =
        object_new("AzurePodIdentityException", e->namespace, e->name, NULL, NULL, 0, &spec);
    if (!o)
        return NULL;
    if (jadd(spec, "podLabels", kv_to_json(e->pod_labels, e->n_pod_labels)) < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* ---- decisions ---- */

enum cand_status {
    CAND_OK,
    CAND_OTHER_NAMESPACE,     /* namespaced mode: binding outside the pod's namespace */
    CAND_NO_IDENTITY,         /* the AzureIdentity it names does not exist */
    CAND_AMBIGUOUS_IDENTITY,  /* cluster-wide: the name exists in several other namespaces */
    CAND_BEHAVIOR_NAMESPACED, /* identity annotated Behavior: namespaced, namespaces differ */
};

static const char *pod_label(const struct pod_meta *pod, const char *key)
{
    return kv_get(pod->labels, pod->n_labels, key);
}

/* Resolves the identity a binding refers to, under the policy. */
static enum cand_status evaluate(const struct store *s, const struct store_policy *p,
                                 const struct pod_meta *pod, const struct binding *b,
                                 const struct identity **ret_identity)
{
    *ret_identity = NULL;
    if (p->namespaced && !streq(b->namespace, pod->namespace))
        return CAND_OTHER_NAMESPACE;

    const struct identity *i = table_get(&s->identities, b->namespace, nz(b->identity));
    if (!i && !p->namespaced) {
        /* aad-pod-identity's cluster-wide matching: the identity is found by name alone, but only
         * when the name is unambiguous. */
        const struct vec *v = mm_get(&s->identities_by_name, "", nz(b->identity));
        if (v && v->n > 1)
            return CAND_AMBIGUOUS_IDENTITY;
        if (v && v->n == 1)
            i = v->items[0];
    }
    if (!i)
        return CAND_NO_IDENTITY;
    *ret_identity = i;

    const char *behavior = identity_annotation(i, STORE_ANNOTATION_BEHAVIOR);
    if (behavior && strcasecmp(behavior, "namespaced") == 0 &&
        !(streq(pod->namespace, i->namespace) && streq(i->namespace, b->namespace)))
        return CAND_BEHAVIOR_NAMESPACED;
    return CAND_OK;
}

static void describe(char *buf, size_t n, enum cand_status st, const struct binding *b,
                     const struct identity *i, const struct pod_meta *pod)
{
    switch (st) {
    case CAND_OK:
        snprintf(buf, n, "binding %s/%s (weight %" PRId64 ") grants identity %s/%s", b->namespace,
                 b->name, b->weight, i->namespace, i->name);
        break;
    case CAND_OTHER_NAMESPACE:
        snprintf(buf, n,
                 "binding %s/%s is in namespace %s but the pod is in %s; namespaced mode requires "
                 "the same namespace",
                 b->namespace, b->name, b->namespace, pod->namespace);
        break;
    case CAND_NO_IDENTITY:
        snprintf(buf, n, "binding %s/%s names AzureIdentity %s/%s, which does not exist",
                 b->namespace, b->name, b->namespace, nz(b->identity));
        break;
    case CAND_AMBIGUOUS_IDENTITY:
        snprintf(buf, n,
                 "binding %s/%s names AzureIdentity '%s', which is not in namespace %s and "
                 "exists in several other namespaces",
                 b->namespace, b->name, nz(b->identity), b->namespace);
        break;
    case CAND_BEHAVIOR_NAMESPACED:
        snprintf(buf, n,
                 "identity %s/%s is annotated %s: namespaced, and binding %s/%s or the pod is in "
                 "another namespace",
                 i->namespace, i->name, STORE_ANNOTATION_BEHAVIOR, b->namespace, b->name);
        break;
    }
}

static bool identity_matches(const struct identity *i, enum selector_kind sel, const char *val)
{
    const char *have = NULL;
    switch (sel) {
    case SELECTOR_NONE:
        return true;
    case SELECTOR_CLIENT_ID:
        have = i->client_id;
        break;
    case SELECTOR_RESOURCE_ID:
        have = i->resource_id;
        break;
    case SELECTOR_OBJECT_ID:
        have = identity_annotation(i, STORE_ANNOTATION_OBJECT_ID);
        break;
    }
    /* An empty requested or stored value never matches: "" must not select an identity that simply
     * lacks the field. */
    return val && *val && have && *have && strcasecmp(have, val) == 0;
}

static const char *selector_name(enum selector_kind sel)
{
    switch (sel) {
    case SELECTOR_CLIENT_ID:
        return "client_id";
    case SELECTOR_OBJECT_ID:
        return "object_id";
    case SELECTOR_RESOURCE_ID:
        return "resource id";
    case SELECTOR_NONE:
        break;
    }
    return "identity";
}

/* The deterministic order among candidates: highest weight, then identity name, identity namespace,
 * binding name, binding namespace. */
static bool better(const struct binding *b, const struct identity *i, const struct binding *best_b,
                   const struct identity *best_i)
{
    if (!best_b)
        return true;
    if (b->weight != best_b->weight)
        return b->weight > best_b->weight;
    int c = strcmp(i->name, best_i->name);
    if (c == 0)
        c = strcmp(i->namespace, best_i->namespace);
    if (c == 0)
        c = strcmp(b->name, best_b->name);
    if (c == 0)
        c = strcmp(b->namespace, best_b->namespace);
    return c < 0;
}

static const struct pod_exception *find_exception(const struct store *s, const struct pod_meta *pod,
                                                  const struct kv **ret_label)
{
    const struct vec *v = mm_get(&s->exceptions_by_ns, pod->namespace, "");
    if (!v)
        return NULL;
    const struct pod_exception *found = NULL;
    for (size_t k = 0; k < v->n; k++) {
        const struct pod_exception *e = v->items[k];
        /* Several may match: report the first by name, so the reason is stable. */
        if (found && strcmp(e->name, found->name) >= 0)
            continue;
        for (size_t j = 0; j < e->n_pod_labels; j++) {
            const char *have = pod_label(pod, nz(e->pod_labels[j].key));
            if (have && streq(have, nz(e->pod_labels[j].value))) {
                found = e;
                *ret_label = &e->pod_labels[j];
                break;
            }
        }
    }
    return found;
}

int store_decide(const struct store *s, const struct store_policy *p, const char *ns,
                 const char *name, enum selector_kind sel, const char *sel_value,
                 struct decision *ret)
{
    if (!s || !p || !ns || !name || !ret)
        return -EINVAL;

    struct decision d = {.result = 0};
    const struct pod_meta *pod = store_get_pod(s, ns, name);
    if (!pod) {
        d.result = IDB_E_NOT_SYNCED;
        snprintf(d.reason, sizeof(d.reason), "no metadata for pod %s/%s yet", ns, name);
        goto out;
    }

    if (p->exceptions) {
        const struct kv *label = NULL;
        const struct pod_exception *e = find_exception(s, pod, &label);
        if (e) {
            d.result = IDB_E_EXCEPTED;
            snprintf(d.reason, sizeof(d.reason),
                     "pod matches AzurePodIdentityException %s/%s (label %s=%s)", e->namespace,
                     e->name, nz(label->key), nz(label->value));
            goto out;
        }
    }

    const char *value = pod_label(pod, STORE_POD_LABEL);
    if (!value) {
        d.result = IDB_E_NO_BINDING;
        snprintf(d.reason, sizeof(d.reason), "pod has no label %s", STORE_POD_LABEL);
        goto out;
    }

    const struct vec *v = p->namespaced ? mm_get(&s->bindings_by_ns_sel, ns, value)
                                        : mm_get(&s->bindings_by_sel, "", value);
    const struct binding *best_b = NULL, *skipped_b = NULL;
    const struct identity *best_i = NULL, *skipped_i = NULL, *other_i = NULL;
    enum cand_status skipped_st = CAND_OK;
    size_t n_bound = 0;
    for (size_t k = 0; v && k < v->n; k++) {
        const struct binding *b = v->items[k];
        const struct identity *i;
        enum cand_status st = evaluate(s, p, pod, b, &i);
        if (st != CAND_OK) {
            /* Remember the first skipped binding by (namespace, name) for a stable reason. */
            if (!skipped_b || strcmp(b->namespace, skipped_b->namespace) < 0 ||
                (streq(b->namespace, skipped_b->namespace) &&
                 strcmp(b->name, skipped_b->name) < 0)) {
                skipped_b = b;
                skipped_i = i;
                skipped_st = st;
            }
            continue;
        }
        n_bound++;
        if (!identity_matches(i, sel, sel_value))
            continue;
        if (best_i && i != best_i && !other_i)
            other_i = i;
        if (better(b, i, best_b, best_i)) {
            if (best_i && best_i != i)
                other_i = best_i;
            best_b = b;
            best_i = i;
        }
    }

    if (n_bound == 0) {
        d.result = IDB_E_NO_BINDING;
        if (skipped_b) {
            char why[400];
            describe(why, sizeof(why), skipped_st, skipped_b, skipped_i, pod);
            snprintf(d.reason, sizeof(d.reason), "no usable binding: %s", why);
        } else if (p->namespaced)
            snprintf(d.reason, sizeof(d.reason),
                     "no AzureIdentityBinding selects label %s=%s in namespace %s", STORE_POD_LABEL,
                     value, ns);
        else
            snprintf(d.reason, sizeof(d.reason),
                     "no AzureIdentityBinding selects label %s=%s in any namespace",
                     STORE_POD_LABEL, value);
        goto out;
    }
    if (!best_b) {
        /* Never name the requested value: client IDs do not go into logs (THREATS T17). */
        d.result = IDB_E_IDENTITY_NOT_FOUND;
        snprintf(d.reason, sizeof(d.reason),
                 "the requested %s is not one of the identities bound to this pod",
                 selector_name(sel));
        goto out;
    }
    if (sel == SELECTOR_NONE && other_i && p->strict_selection) {
        d.result = IDB_E_MULTIPLE_IDENTITIES;
        snprintf(d.reason, sizeof(d.reason),
                 "several identities are bound (%s/%s, %s/%s, ...) and none was requested; "
                 "strictSelection is on",
                 best_i->namespace, best_i->name, other_i->namespace, other_i->name);
        goto out;
    }

    d.identity = best_i;
    d.binding = best_b;
    snprintf(d.reason, sizeof(d.reason), "bound by binding %s/%s (weight %" PRId64 ")%s",
             best_b->namespace, best_b->name, best_b->weight,
             sel != SELECTOR_NONE ? "; matches the requested identity"
             : other_i            ? "; chosen among several identities by weight, then name"
                                  : "");
out:
    *ret = d;
    return 0;
}

struct grant {
    const struct identity *identity;
    const struct binding *binding;
};

static int grant_cmp(const void *x, const void *y)
{
    const struct grant *a = x, *b = y;
    int c = strcmp(a->identity->namespace, b->identity->namespace);
    return c ? c : strcmp(a->identity->name, b->identity->name);
}

int store_foreach_grant(const struct store *s, const struct store_policy *p, const char *ns,
                        const char *name,
                        int (*cb)(const struct identity *i, const struct binding *b, void *ud),
                        void *ud)
{
    if (!s || !p || !ns || !name || !cb)
        return -EINVAL;
    const struct pod_meta *pod = store_get_pod(s, ns, name);
    if (!pod)
        return 0;
    const struct kv *label;
    if (p->exceptions && find_exception(s, pod, &label))
        return 0;
    const char *value = pod_label(pod, STORE_POD_LABEL);
    if (!value)
        return 0;
    const struct vec *v = p->namespaced ? mm_get(&s->bindings_by_ns_sel, ns, value)
                                        : mm_get(&s->bindings_by_sel, "", value);
    if (!v || v->n == 0)
        return 0;
    _cleanup_free_ struct grant *g = calloc(v->n, sizeof(*g));
    if (!g)
        return -ENOMEM;
    size_t n = 0;
    for (size_t k = 0; k < v->n; k++) {
        const struct binding *b = v->items[k];
        const struct identity *i;
        if (evaluate(s, p, pod, b, &i) != CAND_OK)
            continue;
        /* One entry per identity, with its best binding. */
        size_t j = 0;
        while (j < n && g[j].identity != i)
            j++;
        if (j == n) {
            g[n++] = (struct grant){i, b};
        } else if (better(b, i, g[j].binding, i))
            g[j].binding = b;
    }
    if (n > 1)
        qsort(g, n, sizeof(*g), grant_cmp);
    for (size_t k = 0; k < n; k++) {
        int r = cb(g[k].identity, g[k].binding, ud);
        if (r < 0)
            return r;
    }
    return 0;
}

static const char *decision_name(int result)
{
    switch (result) {
    case 0:
        return "granted";
    case IDB_E_EXCEPTED:
        return "excepted";
    case IDB_E_NOT_SYNCED:
        return "not-synced";
    case IDB_E_MULTIPLE_IDENTITIES:
        return "ambiguous";
    default:
        return "denied";
    }
}

static struct json_object *ns_name_json(const char *ns, const char *name)
{
    char buf[600];
    snprintf(buf, sizeof(buf), "%s/%s", nz(ns), nz(name));
    return json_object_new_string(buf);
}

static int binding_ptr_cmp(const void *x, const void *y)
{
    const struct binding *a = *(const struct binding *const *)x;
    const struct binding *b = *(const struct binding *const *)y;
    int c = strcmp(a->namespace, b->namespace);
    return c ? c : strcmp(a->name, b->name);
}

/* Appends to `arr` one entry per binding that carries the pod's selector, in any namespace, sorted.
 */
static int explain_candidates(const struct store *s, const struct store_policy *p,
                              const struct pod_meta *pod, const struct decision *d,
                              struct json_object *arr)
{
    const char *value = pod_label(pod, STORE_POD_LABEL);
    const struct vec *v = value ? mm_get(&s->bindings_by_sel, "", value) : NULL;
    if (!v)
        return 0;
    _cleanup_free_ const struct binding **sorted = malloc(v->n * sizeof(*sorted));
    if (!sorted)
        return -ENOMEM;
    memcpy(sorted, v->items, v->n * sizeof(*sorted));
    qsort(sorted, v->n, sizeof(*sorted), binding_ptr_cmp);

    for (size_t k = 0; k < v->n; k++) {
        const struct binding *b = sorted[k];
        const struct identity *i;
        enum cand_status st = evaluate(s, p, pod, b, &i);
        char why[400];
        describe(why, sizeof(why), st, b, i, pod);
        struct json_object *c = json_object_new_object();
        if (!c || json_object_array_add(arr, c) < 0) {
            json_object_put(c);
            return -ENOMEM;
        }
        int r = jadd(c, "binding", ns_name_json(b->namespace, b->name));
        if (r >= 0)
            r = jadd(c, "identity",
                     i ? ns_name_json(i->namespace, i->name)
                       : ns_name_json(b->namespace, b->identity));
        if (r >= 0)
            r = jadd(c, "weight", json_object_new_int64(b->weight));
        if (r >= 0)
            r = jadd(c, "applies", json_object_new_boolean(st == CAND_OK));
        if (r >= 0)
            r = jadd(c, "chosen", json_object_new_boolean(d->binding == b));
        if (r >= 0)
            r = jadd_str(c, "why", why);
        if (r >= 0)
            r = jadd_str(c, "origin", b->origin);
        if (r < 0)
            return r;
    }
    return 0;
}

struct json_object *store_explain(const struct store *s, const struct store_policy *p,
                                  const char *ns, const char *name)
{
    struct decision d;
    if (store_decide(s, p, ns, name, SELECTOR_NONE, NULL, &d) < 0)
        return NULL;

    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    int r = jadd(o, "pod", ns_name_json(ns, name));
    if (r >= 0)
        r = jadd_str(o, "decision", decision_name(d.result));
    if (r >= 0)
        r = jadd(o, "result", json_object_new_int(d.result));
    if (r >= 0)
        r = jadd_str(o, "reason", d.reason);
    if (r >= 0)
        r = json_object_object_add(
            o, "identity",
            d.identity ? ns_name_json(d.identity->namespace, d.identity->name) : NULL);
    if (r >= 0)
        r = json_object_object_add(
            o, "binding", d.binding ? ns_name_json(d.binding->namespace, d.binding->name) : NULL);
    if (r >= 0 && d.identity)
        r = jadd_str(o, "identityOrigin", d.identity->origin);
    if (r >= 0)
        r = jadd(o, "policy", json_object_new_object());
    struct json_object *pol = json_object_object_get(o, "policy");
    if (r >= 0)
        r = jadd(pol, "namespaced", json_object_new_boolean(p->namespaced));
    if (r >= 0)
        r = jadd(pol, "strictSelection", json_object_new_boolean(p->strict_selection));
    if (r >= 0)
        r = jadd(pol, "exceptions", json_object_new_boolean(p->exceptions));

    const struct pod_meta *pod = store_get_pod(s, ns, name);
    if (r >= 0)
        r = jadd(o, "candidates", json_object_new_array());
    struct json_object *arr = json_object_object_get(o, "candidates");
    if (r >= 0 && pod)
        r = jadd(o, "labels", kv_to_json(pod->labels, pod->n_labels));
    if (r >= 0 && pod)
        r = explain_candidates(s, p, pod, &d, arr);
    if (r < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}
