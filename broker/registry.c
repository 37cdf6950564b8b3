/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pod registrations in memory (DESIGN §4, THREATS T2). See registry.h for the contract.
 *
 * A table holds one node per attachment, chained by container ID + ifName, and an address index:
 * every address of a node is a "claim" chained by the address. All claims for one address sit in
 * the same chain, so registry_lookup_ip() sees every claimant and can refuse when two different
 * pods claim one address (a missed CNI DEL followed by IP reuse must not hand the new pod the old
 * pod's identity). Two claimants that are the same pod (same non-empty pod UID, namespace and name:
 * a sandbox re-created before the old one's DEL arrived) are not ambiguous; the newest registration
 * answers.
 *
 * Locks: `lock` guards the table and the generation; it is never held across I/O. `io` serialises
 * the operations that touch stateDir (persisting add/remove, sync, load), so memory changes in the
 * same order as the files do. Order: io, then the stateDir lock (registration_lock), then lock.
 */
#include "registry.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <idbroker/errno.h>

#include <idbroker-internal/macro.h>

#define TABLE_MIN_BUCKETS 64
#define STATE_LOCK_TIMEOUT_MS 2000
#define LOAD_LOCK_TIMEOUT_MS 5000

struct node;

/* One address claimed by one node. */
struct claim {
    struct claim *next;
    uint64_t hash;
    struct node *node;
    const struct reg_ip *ip; /* points into node->reg.ips */
};

/* A registration as a node keeps it: struct registration without its netns buffer, which is
 * REG_MAX_PATH + 1 bytes of its ~5.4 KiB, for a path that is rarely 100 bytes long. The path gets
 * an allocation of its own (NULL when empty), so 250 pods cost ~0.3 MiB instead of 1.4 MiB.
 * kept_from() and kept_to() convert; a field added to struct registration goes in all three. */
struct kept {
    char container_id[REG_MAX_ID + 1];
    char if_name[REG_MAX_IFNAME + 1];
    char pod_namespace[REG_MAX_NAME + 1];
    char pod_name[REG_MAX_NAME + 1];
    char pod_uid[REG_MAX_ID + 1];
    char *netns;
    char host_ifname[REG_MAX_IFNAME + 1];
    int host_ifindex;
    struct reg_ip ips[REG_MAX_IPS];
    size_t n_ips;
    uint64_t created;
    char origin[8];
};

struct node {
    struct node *next;
    uint64_t hash;
    struct kept reg;
    struct claim claims[REG_MAX_IPS]; /* distinct addresses of reg */
    size_t n_claims;
};

/* Copies a registration into *k; k->netns is new (NULL when empty). Returns false when out of
 * memory. */
static bool kept_from(const struct registration *r, struct kept *k)
{
    _Static_assert(sizeof(k->container_id) == sizeof(r->container_id) &&
                       sizeof(k->if_name) == sizeof(r->if_name) &&
                       sizeof(k->pod_namespace) == sizeof(r->pod_namespace) &&
                       sizeof(k->pod_name) == sizeof(r->pod_name) &&
                       sizeof(k->pod_uid) == sizeof(r->pod_uid) &&
                       sizeof(k->host_ifname) == sizeof(r->host_ifname) &&
                       sizeof(k->ips) == sizeof(r->ips) && sizeof(k->origin) == sizeof(r->origin),
                   "struct kept mirrors struct registration");
    memcpy(k->container_id, r->container_id, sizeof(k->container_id));
    memcpy(k->if_name, r->if_name, sizeof(k->if_name));
    memcpy(k->pod_namespace, r->pod_namespace, sizeof(k->pod_namespace));
    memcpy(k->pod_name, r->pod_name, sizeof(k->pod_name));
    memcpy(k->pod_uid, r->pod_uid, sizeof(k->pod_uid));
    memcpy(k->host_ifname, r->host_ifname, sizeof(k->host_ifname));
    k->host_ifindex = r->host_ifindex;
    memcpy(k->ips, r->ips, sizeof(k->ips));
    k->n_ips = r->n_ips;
    k->created = r->created;
    memcpy(k->origin, r->origin, sizeof(k->origin));
    k->netns = NULL;
    if (r->netns[0]) {
        k->netns = strndup(r->netns, sizeof(r->netns) - 1);
        if (!k->netns)
            return false;
    }
    return true;
}

/* Fills *r from k. Only the bytes of r that hold something are written, with the NUL after netns:
 * r may be a large buffer the caller never touched. */
static void kept_to(const struct kept *k, struct registration *r)
{
    memcpy(r->container_id, k->container_id, sizeof(r->container_id));
    memcpy(r->if_name, k->if_name, sizeof(r->if_name));
    memcpy(r->pod_namespace, k->pod_namespace, sizeof(r->pod_namespace));
    memcpy(r->pod_name, k->pod_name, sizeof(r->pod_name));
    memcpy(r->pod_uid, k->pod_uid, sizeof(r->pod_uid));
    size_t n = k->netns ? strlen(k->netns) : 0;
    if (n)
        memcpy(r->netns, k->netns, n);
    r->netns[n] = '\0';
    memcpy(r->host_ifname, k->host_ifname, sizeof(r->host_ifname));
    r->host_ifindex = k->host_ifindex;
    memcpy(r->ips, k->ips, sizeof(r->ips));
    r->n_ips = k->n_ips;
    r->created = k->created;
    memcpy(r->origin, k->origin, sizeof(r->origin));
}

static struct node *node_free(struct node *n)
{
    if (n) {
        free(n->reg.netns);
        free(n);
    }
    return NULL;
}

struct table {
    struct node **nodes;
    size_t n_node_buckets, n;
    struct claim **claims;
    size_t n_claim_buckets, n_claims;
};

struct registry {
    pthread_mutex_t lock;
    pthread_mutex_t io;
    char *state_dir;
    struct table *tab;
    uint64_t generation;
};

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t key_hash(const char *container_id, const char *if_name)
{
    uint64_t h = fnv1a(0xcbf29ce484222325ULL, container_id, strlen(container_id) + 1);
    return fnv1a(h, if_name, strlen(if_name));
}

static uint64_t ip_hash(const struct reg_ip *ip)
{
    uint8_t fam = ip->family == AF_INET ? 4 : 6;
    uint64_t h = fnv1a(0xcbf29ce484222325ULL, &fam, 1);
    return fnv1a(h, &ip->addr, ip->family == AF_INET ? 4 : 16);
}

static struct table *table_new(void)
{
    struct table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->nodes = calloc(TABLE_MIN_BUCKETS, sizeof(*t->nodes));
    t->claims = calloc(TABLE_MIN_BUCKETS, sizeof(*t->claims));
    if (!t->nodes || !t->claims) {
        free(t->nodes);
        free(t->claims);
        free(t);
        return NULL;
    }
    t->n_node_buckets = t->n_claim_buckets = TABLE_MIN_BUCKETS;
    return t;
}

static struct table *table_free(struct table *t)
{
    if (!t)
        return NULL;
    for (size_t i = 0; i < t->n_node_buckets; i++) {
        struct node *n = t->nodes[i];
        while (n) {
            struct node *next = n->next;
            node_free(n);
            n = next;
        }
    }
    free(t->nodes);
    free(t->claims);
    free(t);
    return NULL;
}

static struct node *table_find(const struct table *t, const char *container_id, const char *if_name)
{
    uint64_t h = key_hash(container_id, if_name);
    for (struct node *n = t->nodes[h % t->n_node_buckets]; n; n = n->next)
        if (n->hash == h && streq(n->reg.container_id, container_id) &&
            streq(n->reg.if_name, if_name))
            return n;
    return NULL;
}

/* Doubles the bucket arrays when their load passes 1. Failure to grow only lengthens chains. */
static void table_maybe_grow(struct table *t)
{
    if (t->n >= t->n_node_buckets) {
        size_t nb = t->n_node_buckets * 2;
        struct node **b = calloc(nb, sizeof(*b));
        if (b) {
            for (size_t i = 0; i < t->n_node_buckets; i++)
                for (struct node *n = t->nodes[i], *next; n; n = next) {
                    next = n->next;
                    n->next = b[n->hash % nb];
                    b[n->hash % nb] = n;
                }
            free(t->nodes);
            t->nodes = b;
            t->n_node_buckets = nb;
        }
    }
    if (t->n_claims >= t->n_claim_buckets) {
        size_t nb = t->n_claim_buckets * 2;
        struct claim **b = calloc(nb, sizeof(*b));
        if (b) {
            for (size_t i = 0; i < t->n_claim_buckets; i++)
                for (struct claim *c = t->claims[i], *next; c; c = next) {
                    next = c->next;
                    c->next = b[c->hash % nb];
                    b[c->hash % nb] = c;
                }
            free(t->claims);
            t->claims = b;
            t->n_claim_buckets = nb;
        }
    }
}

static void table_unlink(struct table *t, struct node *n)
{
    for (struct node **p = &t->nodes[n->hash % t->n_node_buckets]; *p; p = &(*p)->next)
        if (*p == n) {
            *p = n->next;
            t->n--;
            break;
        }
    for (size_t i = 0; i < n->n_claims; i++) {
        struct claim *c = &n->claims[i];
        for (struct claim **p = &t->claims[c->hash % t->n_claim_buckets]; *p; p = &(*p)->next)
            if (*p == c) {
                *p = c->next;
                t->n_claims--;
                break;
            }
    }
}

/* Inserts n (taken), replacing and freeing a node with the same key. */
static void table_put(struct table *t, struct node *n)
{
    struct node *old = table_find(t, n->reg.container_id, n->reg.if_name);
    if (old) {
        table_unlink(t, old);
        node_free(old);
    }
    table_maybe_grow(t);
    size_t i = n->hash % t->n_node_buckets;
    n->next = t->nodes[i];
    t->nodes[i] = n;
    t->n++;
    for (size_t k = 0; k < n->n_claims; k++) {
        struct claim *c = &n->claims[k];
        size_t j = c->hash % t->n_claim_buckets;
        c->next = t->claims[j];
        t->claims[j] = c;
        t->n_claims++;
    }
}

/* Removes the node with this key. Returns 1 if there was one, 0 if not. */
static int table_del(struct table *t, const char *container_id, const char *if_name)
{
    struct node *n = table_find(t, container_id, if_name);
    if (!n)
        return 0;
    table_unlink(t, n);
    node_free(n);
    return 1;
}

static bool valid_registration(const struct registration *reg)
{
    if (!reg_valid_container_id(reg->container_id) || !reg_valid_ifname(reg->if_name))
        return false;
    if (reg->n_ips > REG_MAX_IPS)
        return false;
    for (size_t i = 0; i < reg->n_ips; i++)
        if (reg->ips[i].family != AF_INET && reg->ips[i].family != AF_INET6)
            return false;
    return true;
}

/* A new node holding a copy of reg, with one claim per distinct address. */
static struct node *node_new(const struct registration *reg)
{
    struct node *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    if (!kept_from(reg, &n->reg))
        return node_free(n);
    n->hash = key_hash(reg->container_id, reg->if_name);
    for (size_t i = 0; i < reg->n_ips; i++) {
        bool dup = false;
        for (size_t k = 0; k < n->n_claims && !dup; k++)
            dup = reg_ip_equal(n->claims[k].ip, &n->reg.ips[i]);
        if (dup)
            continue;
        n->claims[n->n_claims++] =
            (struct claim){.hash = ip_hash(&n->reg.ips[i]), .node = n, .ip = &n->reg.ips[i]};
    }
    return n;
}

struct registry *registry_new(const char *state_dir)
{
    struct registry *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->state_dir = strdup(state_dir);
    r->tab = table_new();
    if (!r->state_dir || !r->tab) {
        free(r->state_dir);
        table_free(r->tab);
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->io, NULL);
    return r;
}

struct registry *registry_free(struct registry *r)
{
    if (!r)
        return NULL;
    table_free(r->tab);
    free(r->state_dir);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->io);
    free(r);
    return NULL;
}

/* registration_load_all() has one userdata for both callbacks: ours, and the caller's bad_cb. */
struct load_ctx {
    struct table *tab;
    int error;
    void (*bad_cb)(const char *path, int error, const char *why, void *ud);
    void *ud;
};

static void load_bad(const char *path, int error, const char *why, void *ud)
{
    struct load_ctx *l = ud;
    if (l->bad_cb)
        l->bad_cb(path, error, why, l->ud);
}

static void load_one(const struct registration *reg, void *ud)
{
    struct load_ctx *l = ud;
    if (l->error < 0)
        return;
    struct node *n = node_new(reg);
    if (!n) {
        l->error = -ENOMEM;
        return;
    }
    table_put(l->tab, n);
}

int registry_load(struct registry *r,
                  void (*bad_cb)(const char *path, int error, const char *why, void *ud), void *ud)
{
    struct load_ctx l = {.tab = table_new(), .bad_cb = bad_cb, .ud = ud};
    if (!l.tab)
        return -ENOMEM;

    pthread_mutex_lock(&r->io);
    /* The state lock keeps registration_load_all() from deleting a temporary file a CNI plugin is
     * still writing. If it cannot be had (timeout, read-only stateDir), loading without it beats
     * not starting. */
    int fd = registration_lock(r->state_dir, LOAD_LOCK_TIMEOUT_MS);
    int k = registration_load_all(r->state_dir, load_one, load_bad, &l);
    if (fd >= 0)
        close(fd);
    if (k >= 0 && l.error < 0)
        k = l.error;
    if (k < 0) {
        pthread_mutex_unlock(&r->io);
        table_free(l.tab);
        return k;
    }

    pthread_mutex_lock(&r->lock);
    struct table *old = r->tab;
    r->tab = l.tab;
    r->generation++;
    size_t n = r->tab->n;
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_unlock(&r->io);
    table_free(old);
    return (int)n;
}

/* Puts n (taken) into memory. */
static void memory_put(struct registry *r, struct node *n)
{
    pthread_mutex_lock(&r->lock);
    table_put(r->tab, n);
    r->generation++;
    pthread_mutex_unlock(&r->lock);
}

static int memory_del(struct registry *r, const char *container_id, const char *if_name)
{
    pthread_mutex_lock(&r->lock);
    int k = table_del(r->tab, container_id, if_name);
    if (k > 0)
        r->generation++;
    pthread_mutex_unlock(&r->lock);
    return k;
}

int registry_add(struct registry *r, const struct registration *reg, bool persist)
{
    if (!valid_registration(reg))
        return -EINVAL;
    /* Allocate first, so nothing can fail after the file is written. */
    struct node *n = node_new(reg);
    if (!n)
        return -ENOMEM;
    if (!persist) {
        memory_put(r, n);
        return 0;
    }

    pthread_mutex_lock(&r->io);
    _cleanup_close_ int fd = registration_lock(r->state_dir, STATE_LOCK_TIMEOUT_MS);
    int k = fd < 0 ? fd : registration_save(r->state_dir, reg);
    if (k >= 0)
        memory_put(r, n);
    else
        node_free(n);
    pthread_mutex_unlock(&r->io);
    return k < 0 ? k : 0;
}

int registry_remove(struct registry *r, const char *container_id, const char *if_name, bool persist)
{
    if (!reg_valid_container_id(container_id) || !reg_valid_ifname(if_name))
        return -EINVAL;
    if (!persist)
        return memory_del(r, container_id, if_name);

    pthread_mutex_lock(&r->io);
    _cleanup_close_ int fd = registration_lock(r->state_dir, STATE_LOCK_TIMEOUT_MS);
    int k = fd < 0 ? fd : registration_remove(r->state_dir, container_id, if_name);
    if (k >= 0)
        k = memory_del(r, container_id, if_name);
    pthread_mutex_unlock(&r->io);
    return k;
}

struct reg_key {
    char container_id[REG_MAX_ID + 1];
    char if_name[REG_MAX_IFNAME + 1];
};

static bool is_pod(const struct kept *reg, const char *ns, const char *name)
{
    return name[0] && streq(reg->pod_namespace, ns) && streq(reg->pod_name, name);
}

int registry_remove_pod(struct registry *r, const char *ns, const char *name, bool persist)
{
    pthread_mutex_lock(&r->io);
    _cleanup_close_ int fd = -1;
    if (persist) {
        fd = registration_lock(r->state_dir, STATE_LOCK_TIMEOUT_MS);
        if (fd < 0) {
            pthread_mutex_unlock(&r->io);
            return fd;
        }
    }

    /* The keys first (no I/O under the lock), then file and memory one by one. */
    pthread_mutex_lock(&r->lock);
    size_t n_keys = 0;
    _cleanup_free_ struct reg_key *keys = calloc(r->tab->n ? r->tab->n : 1, sizeof(*keys));
    for (size_t i = 0; keys && i < r->tab->n_node_buckets; i++)
        for (struct node *n = r->tab->nodes[i]; n; n = n->next)
            if (is_pod(&n->reg, ns, name)) {
                memcpy(keys[n_keys].container_id, n->reg.container_id,
                       sizeof(keys[n_keys].container_id));
                memcpy(keys[n_keys].if_name, n->reg.if_name, sizeof(keys[n_keys].if_name));
                n_keys++;
            }
    pthread_mutex_unlock(&r->lock);
    if (!keys) {
        pthread_mutex_unlock(&r->io);
        return -ENOMEM;
    }

    int removed = 0, k = 0;
    for (size_t i = 0; i < n_keys; i++) {
        if (persist) {
            k = registration_remove(r->state_dir, keys[i].container_id, keys[i].if_name);
            if (k < 0)
                break;
        }
        removed += memory_del(r, keys[i].container_id, keys[i].if_name);
    }
    pthread_mutex_unlock(&r->io);
    return k < 0 ? k : removed;
}

int registry_sync(struct registry *r, const char *container_id, const char *if_name)
{
    if (!reg_valid_container_id(container_id) || !reg_valid_ifname(if_name))
        return -EINVAL;

    /* No state lock: files are replaced atomically, and the CNI plugin may be holding it while it
     * asks us to sync. The io mutex orders concurrent syncs, so the last one read wins. */
    pthread_mutex_lock(&r->io);
    struct registration reg;
    int k = registration_load(r->state_dir, container_id, if_name, &reg);
    if (k == -ENOENT) {
        memory_del(r, container_id, if_name);
        k = 0;
    } else if (k >= 0 && !valid_registration(&reg))
        k = -EBADMSG;
    else if (k >= 0) {
        struct node *n = node_new(&reg);
        if (n) {
            memory_put(r, n);
            k = 1;
        } else
            k = -ENOMEM;
    }
    pthread_mutex_unlock(&r->io);
    return k;
}

static bool same_pod(const struct kept *a, const struct kept *b)
{
    return a->pod_uid[0] && streq(a->pod_uid, b->pod_uid) &&
           streq(a->pod_namespace, b->pod_namespace) && streq(a->pod_name, b->pod_name);
}

/* Whether a is a better answer than b among registrations of one pod: newer, then lower key. */
static bool preferred(const struct kept *a, const struct kept *b)
{
    if (a->created != b->created)
        return a->created > b->created;
    int c = strcmp(a->container_id, b->container_id);
    return c != 0 ? c < 0 : strcmp(a->if_name, b->if_name) < 0;
}

int registry_lookup_ip(struct registry *r, const struct reg_ip *ip, struct registration *ret)
{
    if (ip->family != AF_INET && ip->family != AF_INET6)
        return -EAFNOSUPPORT;
    uint64_t h = ip_hash(ip);
    int k = -ENOENT;

    pthread_mutex_lock(&r->lock);
    const struct node *best = NULL;
    for (const struct claim *c = r->tab->claims[h % r->tab->n_claim_buckets]; c; c = c->next) {
        if (c->hash != h || !reg_ip_equal(c->ip, ip))
            continue;
        if (!best) {
            best = c->node;
            continue;
        }
        if (!same_pod(&best->reg, &c->node->reg)) {
            k = IDB_E_AMBIGUOUS_POD;
            goto out;
        }
        if (preferred(&c->node->reg, &best->reg))
            best = c->node;
    }
    if (best) {
        kept_to(&best->reg, ret);
        k = 0;
    }
out:
    pthread_mutex_unlock(&r->lock);
    return k;
}

/* Among attachments of one pod the "first" is the lowest ifName (eth0 before net1); among sandboxes
 * with the same ifName (a stale one whose DEL was missed) the newest. */
static bool first_attachment(const struct kept *a, const struct kept *b)
{
    int c = strcmp(a->if_name, b->if_name);
    if (c != 0)
        return c < 0;
    return preferred(a, b);
}

int registry_find_pod(struct registry *r, const char *ns, const char *name,
                      struct registration *ret)
{
    int k = -ENOENT;
    pthread_mutex_lock(&r->lock);
    const struct node *best = NULL;
    for (size_t i = 0; i < r->tab->n_node_buckets; i++)
        for (const struct node *n = r->tab->nodes[i]; n; n = n->next)
            if (is_pod(&n->reg, ns, name) && (!best || first_attachment(&n->reg, &best->reg)))
                best = n;
    if (best) {
        kept_to(&best->reg, ret);
        k = 0;
    }
    pthread_mutex_unlock(&r->lock);
    return k;
}

bool registry_has_pod(struct registry *r, const char *ns, const char *name)
{
    bool found = false;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->tab->n_node_buckets && !found; i++)
        for (const struct node *n = r->tab->nodes[i]; n && !found; n = n->next)
            found = is_pod(&n->reg, ns, name);
    pthread_mutex_unlock(&r->lock);
    return found;
}

size_t registry_count(struct registry *r)
{
    pthread_mutex_lock(&r->lock);
    size_t n = r->tab->n;
    pthread_mutex_unlock(&r->lock);
    return n;
}

static int cmp_key(const void *a, const void *b)
{
    const struct kept *x = a, *y = b;
    int c = strcmp(x->container_id, y->container_id);
    return c != 0 ? c : strcmp(x->if_name, y->if_name);
}

static void snap_free(struct kept *snap, size_t n)
{
    for (size_t i = 0; snap && i < n; i++)
        free(snap[i].netns);
    free(snap);
}

int registry_foreach(struct registry *r, int (*cb)(const struct registration *reg, void *ud),
                     void *ud)
{
    pthread_mutex_lock(&r->lock);
    size_t n = r->tab->n;
    struct kept *snap = calloc(n ? n : 1, sizeof(*snap));
    size_t k = 0;
    bool ok = snap != NULL;
    for (size_t i = 0; ok && i < r->tab->n_node_buckets; i++)
        for (const struct node *node = r->tab->nodes[i]; ok && node; node = node->next) {
            snap[k] = node->reg;
            snap[k].netns = NULL;
            ok = !node->reg.netns || (snap[k].netns = strdup(node->reg.netns));
            k++;
        }
    pthread_mutex_unlock(&r->lock);
    _cleanup_free_ struct registration *reg = ok ? malloc(sizeof(*reg)) : NULL;
    if (!reg) {
        snap_free(snap, k);
        return -ENOMEM;
    }

    qsort(snap, n, sizeof(*snap), cmp_key);
    for (size_t i = 0; i < n; i++) {
        kept_to(&snap[i], reg);
        int q = cb(reg, ud);
        if (q < 0) {
            snap_free(snap, n);
            return q;
        }
    }
    snap_free(snap, n);
    return (int)n;
}

uint64_t registry_generation(struct registry *r)
{
    pthread_mutex_lock(&r->lock);
    uint64_t g = r->generation;
    pthread_mutex_unlock(&r->lock);
    return g;
}
