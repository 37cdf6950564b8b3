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
 * Memory matters here (tens of thousands of objects on every node): a table is an open-addressing
 * array of object pointers, and the key is read from the object itself, so a table costs 8 to 16
 * bytes per object and no allocation. An index slot holds its one object directly, and a tagged
 * pointer to a vector only when several objects share the key.
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

/* ---- tables: open addressing over object pointers, the key read from the object ---- */

/* Several objects under one key (an index only): the slot holds this, tagged in its low bit.
 * Objects are at least pointer-aligned, so an object pointer never has that bit set. */
struct vec {
    size_t n, cap;
    const void *items[];
};

#define VEC_TAG ((uintptr_t)1)

struct table {
    void **slots; /* NULL (free), an object, or a tagged struct vec * */
    size_t cap;   /* 0 or a power of two; never more than 3/4 full */
    size_t n;     /* used slots: objects in a primary table, keys in an index */
    void (*key)(const void *obj, const char **ret_a, const char **ret_b);
};

static bool slot_is_vec(const void *p)
{
    return ((uintptr_t)p & VEC_TAG) != 0;
}

static struct vec *slot_vec(const void *p)
{
    return (struct vec *)((uintptr_t)p & ~VEC_TAG);
}

static void *vec_slot(struct vec *v)
{
    return (void *)((uintptr_t)v | VEC_TAG);
}

/* The object a used slot's key is read from: every object of a vector has the same key. */
static const void *slot_obj(const void *p)
{
    return slot_is_vec(p) ? slot_vec(p)->items[0] : p;
}

static uint64_t key_hash(const char *a, const char *b)
{
    return fnv_str(fnv_str(FNV_OFFSET, a), b);
}

static uint64_t slot_hash(const struct table *t, const void *p)
{
    const char *a, *b;
    t->key(slot_obj(p), &a, &b);
    return key_hash(a, b);
}

/* The index of the slot that holds (a, b), or of the free slot where it would go; *ret_found says
 * which. The table has slots, and always a free one. */
static size_t table_probe(const struct table *t, const char *a, const char *b, bool *ret_found)
{
    size_t mask = t->cap - 1;
    for (size_t i = key_hash(a, b) & mask;; i = (i + 1) & mask) {
        const void *p = t->slots[i];
        if (!p) {
            *ret_found = false;
            return i;
        }
        const char *ka, *kb;
        t->key(slot_obj(p), &ka, &kb);
        if (streq(kb, b) && streq(ka, a)) {
            *ret_found = true;
            return i;
        }
    }
}

/* The slot of (a, b), or NULL. */
static void *const *table_find(const struct table *t, const char *a, const char *b)
{
    if (t->cap == 0)
        return NULL;
    bool found;
    size_t i = table_probe(t, a, b, &found);
    return found ? &t->slots[i] : NULL;
}

static int table_resize(struct table *t, size_t cap)
{
    void **slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        void *p = t->slots[i];
        if (!p)
            continue;
        size_t k = slot_hash(t, p) & (cap - 1);
        while (slots[k])
            k = (k + 1) & (cap - 1);
        slots[k] = p;
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

/* Makes room for one more key, so that adding one cannot fail. */
static int table_reserve(struct table *t)
{
    if (t->cap > 0 && (t->n + 1) * 4 <= t->cap * 3)
        return 0;
    return table_resize(t, t->cap ? t->cap * 2 : 16);
}

/* Empties slot i and moves later slots of its run back, so no probe sequence is cut short
 * (backward-shift deletion: linear probing needs no tombstones). */
static void table_delete_at(struct table *t, size_t i)
{
    size_t mask = t->cap - 1;
    for (size_t j = (i + 1) & mask; t->slots[j]; j = (j + 1) & mask) {
        size_t home = slot_hash(t, t->slots[j]) & mask;
        /* The entry at j may move to i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i] = NULL;
    t->n--;
    /* Shrink after mass deletion (a relist that emptied a kind), keeping it at most 3/8 full so
     * the next additions do not grow it straight back. Failure only keeps the larger array. */
    if (t->cap > 16 && t->n * 8 < t->cap)
        (void)table_resize(t, t->cap / 2);
}

/* Frees the slot array, the vectors, and (free_obj, may be NULL) every object. */
static void table_done(struct table *t, void (*free_obj)(void *))
{
    for (size_t i = 0; i < t->cap; i++) {
        void *p = t->slots[i];
        if (!p)
            continue;
        if (slot_is_vec(p)) {
            struct vec *v = slot_vec(p);
            for (size_t k = 0; free_obj && k < v->n; k++)
                free_obj((void *)v->items[k]);
            free(v);
        } else if (free_obj)
            free_obj(p);
    }
    free(t->slots);
    t->slots = NULL;
    t->cap = t->n = 0;
}

/* ---- primary tables: one object per key ---- */

static void *table_get(const struct table *t, const char *a, const char *b)
{
    void *const *slot = table_find(t, a, b);
    return slot ? *slot : NULL;
}

/* Puts obj under its key after table_reserve(); returns the object it replaces, or NULL. */
static void *primary_put(struct table *t, void *obj)
{
    const char *a, *b;
    t->key(obj, &a, &b);
    bool found;
    size_t i = table_probe(t, a, b, &found);
    void *old = found ? t->slots[i] : NULL;
    t->slots[i] = obj;
    if (!found)
        t->n++;
    return old;
}

/* Takes (a, b) out and returns its object, or NULL. */
static void *primary_take(struct table *t, const char *a, const char *b)
{
    if (!a || !b || t->cap == 0)
        return NULL;
    bool found;
    size_t i = table_probe(t, a, b, &found);
    if (!found)
        return NULL;
    void *obj = t->slots[i];
    table_delete_at(t, i);
    return obj;
}

/* ---- indexes (multimaps): objects sharing a key ---- */

/* The objects under (a, b): returns how many, and *ret_items (borrowed; valid until the index
 * changes) when there are any. */
static size_t mm_get(const struct table *t, const char *a, const char *b,
                     const void *const **ret_items)
{
    void *const *slot = table_find(t, a, b);
    if (!slot)
        return 0;
    if (slot_is_vec(*slot)) {
        const struct vec *v = slot_vec(*slot);
        *ret_items = v->items;
        return v->n;
    }
    *ret_items = (const void *const *)slot; /* the slot itself is a one-object array */
    return 1;
}

/* Makes room for one more object under (a, b), so that mm_add() cannot fail. A key that holds one
 * object gets its vector here; a vector of one is as valid as a bare object. */
static int mm_reserve(struct table *t, const char *a, const char *b)
{
    int r = table_reserve(t);
    if (r < 0)
        return r;
    bool found;
    size_t i = table_probe(t, a, b, &found);
    if (!found)
        return 0;
    void *p = t->slots[i];
    struct vec *v;
    if (!slot_is_vec(p)) {
        v = malloc(sizeof(*v) + 2 * sizeof(v->items[0]));
        if (!v)
            return -ENOMEM;
        v->n = 1;
        v->cap = 2;
        v->items[0] = p;
    } else {
        v = slot_vec(p);
        if (v->n < v->cap)
            return 0;
        v = realloc(v, sizeof(*v) + 2 * v->cap * sizeof(v->items[0]));
        if (!v)
            return -ENOMEM;
        v->cap *= 2;
    }
    t->slots[i] = vec_slot(v);
    return 0;
}

/* Adds obj under its key; mm_reserve() for that key came first. */
static void mm_add(struct table *t, const void *obj)
{
    const char *a, *b;
    t->key(obj, &a, &b);
    bool found;
    size_t i = table_probe(t, a, b, &found);
    if (!found) {
        t->slots[i] = (void *)obj;
        t->n++;
        return;
    }
    /* mm_reserve() made the slot a vector with room. */
    struct vec *v = slot_vec(t->slots[i]);
    v->items[v->n++] = obj;
}

/* Removes obj from under its key (read from obj, which must still be intact). */
static void mm_remove(struct table *t, const void *obj)
{
    const char *a, *b;
    t->key(obj, &a, &b);
    void *const *slot = table_find(t, a, b);
    if (!slot)
        return;
    size_t i = (size_t)(slot - t->slots);
    if (!slot_is_vec(*slot)) {
        if (*slot == obj)
            table_delete_at(t, i);
        return;
    }
    struct vec *v = slot_vec(*slot);
    for (size_t k = 0; k < v->n; k++)
        if (v->items[k] == obj) {
            v->items[k] = v->items[--v->n];
            break;
        }
    if (v->n == 1) {
        t->slots[i] = (void *)v->items[0];
        free(v);
    } else if (v->n == 0) {
        /* A vector of one (see mm_reserve) emptied: no object is left to key it. */
        free(v);
        table_delete_at(t, i);
    }
}

/* Replaces old by obj, which has the same key. */
static void mm_replace(struct table *t, const void *old, const void *obj)
{
    const char *a, *b;
    t->key(old, &a, &b);
    void *const *slot = table_find(t, a, b);
    if (!slot)
        return;
    size_t i = (size_t)(slot - t->slots);
    if (!slot_is_vec(*slot)) {
        if (*slot == old)
            t->slots[i] = (void *)obj;
        return;
    }
    struct vec *v = slot_vec(*slot);
    for (size_t k = 0; k < v->n; k++)
        if (v->items[k] == old)
            v->items[k] = obj;
}

/* ---- objects ---- */

/* What empty strings of packed objects point to. */
static char empty_string[1];

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

/* Packing: pack_size() adds up what pack_str() and pack_kv() will take, then one malloc holds the
 * struct, its arrays and its strings, in that order (arrays of pointers first, so they stay
 * aligned). */
static size_t str_size(const char *s)
{
    return s && *s ? strlen(s) + 1 : 0;
}

static size_t kv_size(const struct kv *kv, size_t n)
{
    size_t sum = n * sizeof(*kv);
    for (size_t i = 0; i < n; i++)
        sum += str_size(kv[i].key) + str_size(kv[i].value);
    return sum;
}

/* Copies s to *cursor and advances it; "" becomes the shared empty string, NULL stays NULL. */
static char *pack_str(char **cursor, const char *s)
{
    if (!s)
        return NULL;
    if (!*s)
        return empty_string;
    size_t n = strlen(s) + 1;
    char *d = memcpy(*cursor, s, n);
    *cursor += n;
    return d;
}

/* Copies the array to *arr (n elements, already carved out of the block) and its strings to
 * *cursor. Returns NULL for n == 0. */
static struct kv *pack_kv(struct kv *arr, char **cursor, const struct kv *kv, size_t n)
{
    if (n == 0)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        arr[i].key = pack_str(cursor, kv[i].key);
        arr[i].value = pack_str(cursor, kv[i].value);
    }
    return arr;
}

struct identity *identity_new(const struct identity *t)
{
    size_t n_ann = t->annotations ? t->n_annotations : 0;
    size_t size = sizeof(*t) + kv_size(t->annotations, n_ann) + str_size(t->namespace) +
                  str_size(t->name) + str_size(t->uid) + str_size(t->resource_id) +
                  str_size(t->client_id) + str_size(t->tenant_id) + str_size(t->ad_endpoint) +
                  str_size(t->ad_resource_id) + str_size(t->secret_name) +
                  str_size(t->secret_namespace) + str_size(t->origin);
    struct identity *i = malloc(size);
    if (!i)
        return NULL;
    struct kv *arr = (struct kv *)(i + 1);
    char *c = (char *)(arr + n_ann);
    *i = (struct identity){
        .type = t->type,
        .packed = true,
        .n_annotations = n_ann,
    };
    i->annotations = pack_kv(arr, &c, t->annotations, n_ann);
    i->namespace = pack_str(&c, t->namespace);
    i->name = pack_str(&c, t->name);
    i->uid = pack_str(&c, t->uid);
    i->resource_id = pack_str(&c, t->resource_id);
    i->client_id = pack_str(&c, t->client_id);
    i->tenant_id = pack_str(&c, t->tenant_id);
    i->ad_endpoint = pack_str(&c, t->ad_endpoint);
    i->ad_resource_id = pack_str(&c, t->ad_resource_id);
    i->secret_name = pack_str(&c, t->secret_name);
    i->secret_namespace = pack_str(&c, t->secret_namespace);
    i->origin = pack_str(&c, t->origin);
    identity_update_hash(i);
    return i;
}

struct binding *binding_new(const struct binding *t)
{
    size_t size = sizeof(*t) + str_size(t->namespace) + str_size(t->name) + str_size(t->identity) +
                  str_size(t->selector) + str_size(t->origin);
    struct binding *b = malloc(size);
    if (!b)
        return NULL;
    char *c = (char *)(b + 1);
    *b = (struct binding){.weight = t->weight, .packed = true};
    b->namespace = pack_str(&c, t->namespace);
    b->name = pack_str(&c, t->name);
    b->identity = pack_str(&c, t->identity);
    b->selector = pack_str(&c, t->selector);
    b->origin = pack_str(&c, t->origin);
    return b;
}

struct pod_exception *pod_exception_new(const struct pod_exception *t)
{
    size_t n_lab = t->pod_labels ? t->n_pod_labels : 0;
    size_t size = sizeof(*t) + kv_size(t->pod_labels, n_lab) + str_size(t->namespace) +
                  str_size(t->name) + str_size(t->origin);
    struct pod_exception *e = malloc(size);
    if (!e)
        return NULL;
    struct kv *arr = (struct kv *)(e + 1);
    char *c = (char *)(arr + n_lab);
    *e = (struct pod_exception){.n_pod_labels = n_lab, .packed = true};
    e->pod_labels = pack_kv(arr, &c, t->pod_labels, n_lab);
    e->namespace = pack_str(&c, t->namespace);
    e->name = pack_str(&c, t->name);
    e->origin = pack_str(&c, t->origin);
    return e;
}

struct pod_meta *pod_meta_new(const struct pod_meta *t)
{
    size_t n_lab = t->labels ? t->n_labels : 0, n_ips = t->ips ? t->n_ips : 0;
    size_t size = sizeof(*t) + n_ips * sizeof(char *) + kv_size(t->labels, n_lab) +
                  str_size(t->namespace) + str_size(t->name) + str_size(t->uid) +
                  str_size(t->node) + str_size(t->origin);
    for (size_t k = 0; k < n_ips; k++)
        size += str_size(t->ips[k]);
    struct pod_meta *p = malloc(size);
    if (!p)
        return NULL;
    char **ips = (char **)(p + 1);
    struct kv *arr = (struct kv *)(ips + n_ips);
    char *c = (char *)(arr + n_lab);
    *p = (struct pod_meta){
        .n_labels = n_lab,
        .n_ips = n_ips,
        .host_network = t->host_network,
        .running = t->running,
        .terminating = t->terminating,
        .packed = true,
    };
    p->labels = pack_kv(arr, &c, t->labels, n_lab);
    if (n_ips > 0) {
        for (size_t k = 0; k < n_ips; k++)
            ips[k] = pack_str(&c, t->ips[k]);
        p->ips = ips;
    }
    p->namespace = pack_str(&c, t->namespace);
    p->name = pack_str(&c, t->name);
    p->uid = pack_str(&c, t->uid);
    p->node = pack_str(&c, t->node);
    p->origin = pack_str(&c, t->origin);
    return p;
}

struct identity *identity_free(struct identity *i)
{
    if (!i)
        return NULL;
    if (!i->packed) {
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
    }
    free(i);
    return NULL;
}

struct binding *binding_free(struct binding *b)
{
    if (!b)
        return NULL;
    if (!b->packed) {
        free(b->namespace);
        free(b->name);
        free(b->identity);
        free(b->selector);
        free(b->origin);
    }
    free(b);
    return NULL;
}

struct pod_exception *pod_exception_free(struct pod_exception *e)
{
    if (!e)
        return NULL;
    if (!e->packed) {
        free(e->namespace);
        free(e->name);
        kv_free_array(e->pod_labels, e->n_pod_labels);
        free(e->origin);
    }
    free(e);
    return NULL;
}

struct pod_meta *pod_meta_free(struct pod_meta *p)
{
    if (!p)
        return NULL;
    if (!p->packed) {
        free(p->namespace);
        free(p->name);
        free(p->uid);
        free(p->node);
        kv_free_array(p->labels, p->n_labels);
        for (size_t i = 0; i < p->n_ips; i++)
            free(p->ips[i]);
        free(p->ips);
        free(p->origin);
    }
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

/* Keys of the tables and indexes. */
static void key_identity(const void *o, const char **ret_a, const char **ret_b)
{
    const struct identity *i = o;
    *ret_a = i->namespace;
    *ret_b = i->name;
}

static void key_identity_name(const void *o, const char **ret_a, const char **ret_b)
{
    *ret_a = "";
    *ret_b = ((const struct identity *)o)->name;
}

static void key_binding(const void *o, const char **ret_a, const char **ret_b)
{
    const struct binding *b = o;
    *ret_a = b->namespace;
    *ret_b = b->name;
}

static void key_binding_ns_sel(const void *o, const char **ret_a, const char **ret_b)
{
    const struct binding *b = o;
    *ret_a = b->namespace;
    *ret_b = nz(b->selector);
}

static void key_binding_sel(const void *o, const char **ret_a, const char **ret_b)
{
    *ret_a = "";
    *ret_b = nz(((const struct binding *)o)->selector);
}

static void key_exception(const void *o, const char **ret_a, const char **ret_b)
{
    const struct pod_exception *e = o;
    *ret_a = e->namespace;
    *ret_b = e->name;
}

static void key_exception_ns(const void *o, const char **ret_a, const char **ret_b)
{
    *ret_a = ((const struct pod_exception *)o)->namespace;
    *ret_b = "";
}

static void key_pod(const void *o, const char **ret_a, const char **ret_b)
{
    const struct pod_meta *p = o;
    *ret_a = p->namespace;
    *ret_b = p->name;
}

struct store {
    struct table identities; /* (ns, name) -> struct identity */
    struct table bindings;   /* (ns, name) -> struct binding */
    struct table exceptions; /* (ns, name) -> struct pod_exception */
    struct table pods;       /* (ns, name) -> struct pod_meta */

    struct table bindings_by_ns_sel; /* (ns, selector) -> bindings */
    struct table bindings_by_sel;    /* ("", selector) -> bindings */
    struct table identities_by_name; /* ("", name) -> identities */
    struct table exceptions_by_ns;   /* (ns, "") -> exceptions */
};

struct store *store_new(void)
{
    struct store *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->identities.key = key_identity;
    s->bindings.key = key_binding;
    s->exceptions.key = key_exception;
    s->pods.key = key_pod;
    s->bindings_by_ns_sel.key = key_binding_ns_sel;
    s->bindings_by_sel.key = key_binding_sel;
    s->identities_by_name.key = key_identity_name;
    s->exceptions_by_ns.key = key_exception_ns;
    return s;
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
    table_done(&s->bindings_by_ns_sel, NULL);
    table_done(&s->bindings_by_sel, NULL);
    table_done(&s->identities_by_name, NULL);
    table_done(&s->exceptions_by_ns, NULL);
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

int store_put_identity(struct store *s, struct identity *i)
{
    if (!s || !i || !key_ok(i->namespace, i->name))
        return -EINVAL;
    /* A replacement keeps its key in the index (same name): no room to reserve there. */
    bool replace = table_get(&s->identities, i->namespace, i->name) != NULL;
    int r = table_reserve(&s->identities);
    if (r >= 0 && !replace)
        r = mm_reserve(&s->identities_by_name, "", i->name);
    if (r < 0)
        return r;

    identity_update_hash(i);
    struct identity *old = primary_put(&s->identities, i);
    if (old)
        mm_replace(&s->identities_by_name, old, i); /* same name, same key */
    else
        mm_add(&s->identities_by_name, i);
    identity_free(old);
    return 0;
}

int store_put_binding(struct store *s, struct binding *b)
{
    if (!s || !b || !key_ok(b->namespace, b->name))
        return -EINVAL;
    const struct binding *cur = table_get(&s->bindings, b->namespace, b->name);
    bool same_keys = cur && streq(nz(cur->selector), nz(b->selector));
    int r = table_reserve(&s->bindings);
    if (r >= 0 && !same_keys)
        r = mm_reserve(&s->bindings_by_ns_sel, b->namespace, nz(b->selector));
    if (r >= 0 && !same_keys)
        r = mm_reserve(&s->bindings_by_sel, "", nz(b->selector));
    if (r < 0)
        return r;

    struct binding *old = primary_put(&s->bindings, b);
    if (same_keys) {
        mm_replace(&s->bindings_by_ns_sel, old, b);
        mm_replace(&s->bindings_by_sel, old, b);
    } else {
        /* b goes in first and the old binding (another selector) out after, so no vector is
         * ever left empty in between. */
        mm_add(&s->bindings_by_ns_sel, b);
        mm_add(&s->bindings_by_sel, b);
        if (old) {
            mm_remove(&s->bindings_by_ns_sel, old);
            mm_remove(&s->bindings_by_sel, old);
        }
    }
    binding_free(old);
    return 0;
}

int store_put_exception(struct store *s, struct pod_exception *e)
{
    if (!s || !e || !key_ok(e->namespace, e->name))
        return -EINVAL;
    bool replace = table_get(&s->exceptions, e->namespace, e->name) != NULL;
    int r = table_reserve(&s->exceptions);
    if (r >= 0 && !replace)
        r = mm_reserve(&s->exceptions_by_ns, e->namespace, "");
    if (r < 0)
        return r;

    struct pod_exception *old = primary_put(&s->exceptions, e);
    if (old)
        mm_replace(&s->exceptions_by_ns, old, e);
    else
        mm_add(&s->exceptions_by_ns, e);
    pod_exception_free(old);
    return 0;
}

int store_put_pod(struct store *s, struct pod_meta *p)
{
    if (!s || !p || !key_ok(p->namespace, p->name))
        return -EINVAL;
    int r = table_reserve(&s->pods);
    if (r < 0)
        return r;
    pod_meta_free(primary_put(&s->pods, p));
    return 0;
}

int store_remove_identity(struct store *s, const char *ns, const char *name)
{
    if (!s)
        return -EINVAL;
    struct identity *i = primary_take(&s->identities, ns, name);
    if (!i)
        return 0;
    mm_remove(&s->identities_by_name, i);
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
    mm_remove(&s->bindings_by_ns_sel, b);
    mm_remove(&s->bindings_by_sel, b);
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
    mm_remove(&s->exceptions_by_ns, e);
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

/* Returns new: the objects of primary table t, unsorted, in *ret (NULL when t is empty). */
static int table_objects(const struct table *t, void ***ret)
{
    if (t->n == 0) {
        *ret = NULL;
        return 0;
    }
    void **v = malloc(t->n * sizeof(*v));
    if (!v)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i])
            v[n++] = t->slots[i];
    *ret = v;
    return 0;
}

/* The callbacks must not change the store: the sorted snapshot borrows its objects. Every kind
 * has `namespace` and `name`, the order. */
#define DEFINE_FOREACH(fname, member, type)                                                        \
    static int fname##_cmp(const void *x, const void *y)                                           \
    {                                                                                              \
        const type *a = *(const type *const *)x, *b = *(const type *const *)y;                     \
        int c = strcmp(a->namespace, b->namespace);                                                \
        return c ? c : strcmp(a->name, b->name);                                                   \
    }                                                                                              \
    int fname(const struct store *s, int (*cb)(const type *, void *), void *ud)                    \
    {                                                                                              \
        if (!s || !cb)                                                                             \
            return -EINVAL;                                                                        \
        _cleanup_free_ void **v = NULL;                                                            \
        int r = table_objects(&s->member, &v);                                                     \
        if (r < 0)                                                                                 \
            return r;                                                                              \
        size_t n = s->member.n;                                                                    \
        if (n > 1)                                                                                 \
            qsort(v, n, sizeof(*v), fname##_cmp);                                                  \
        for (size_t i = 0; i < n; i++) {                                                           \
            r = cb(v[i], ud);                                                                      \
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
        const void *const *items;
        size_t n = mm_get(&s->identities_by_name, "", nz(b->identity), &items);
        if (n > 1)
            return CAND_AMBIGUOUS_IDENTITY;
        if (n == 1)
            i = items[0];
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
    const void *const *items;
    size_t n = mm_get(&s->exceptions_by_ns, pod->namespace, "", &items);
    const struct pod_exception *found = NULL;
    for (size_t k = 0; k < n; k++) {
        const struct pod_exception *e = items[k];
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

    const void *const *items;
    size_t n_items = p->namespaced ? mm_get(&s->bindings_by_ns_sel, ns, value, &items)
                                   : mm_get(&s->bindings_by_sel, "", value, &items);
    const struct binding *best_b = NULL, *skipped_b = NULL;
    const struct identity *best_i = NULL, *skipped_i = NULL, *other_i = NULL;
    enum cand_status skipped_st = CAND_OK;
    size_t n_bound = 0;
    for (size_t k = 0; k < n_items; k++) {
        const struct binding *b = items[k];
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
    const void *const *items;
    size_t n_items = p->namespaced ? mm_get(&s->bindings_by_ns_sel, ns, value, &items)
                                   : mm_get(&s->bindings_by_sel, "", value, &items);
    if (n_items == 0)
        return 0;
    _cleanup_free_ struct grant *g = calloc(n_items, sizeof(*g));
    if (!g)
        return -ENOMEM;
    size_t n = 0;
    for (size_t k = 0; k < n_items; k++) {
        const struct binding *b = items[k];
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
    const void *const *items;
    size_t n = value ? mm_get(&s->bindings_by_sel, "", value, &items) : 0;
    if (n == 0)
        return 0;
    _cleanup_free_ const struct binding **sorted = malloc(n * sizeof(*sorted));
    if (!sorted)
        return -ENOMEM;
    memcpy(sorted, items, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), binding_ptr_cmp);

    for (size_t k = 0; k < n; k++) {
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
