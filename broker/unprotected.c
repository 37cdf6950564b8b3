/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unprotected pods (unprotected.h). Each scan lists the candidates (running, pod network, not
 * registered) as sorted "namespace/name" keys; a pod is reported when it was a candidate in the
 * previous scan too. Reported sets of two scans are compared to log the changes.
 */
#include "unprotected.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

struct keys {
    char **v; /* sorted, owned */
    size_t n, cap;
};

struct unprotected {
    struct keys candidates; /* of the last scan */
    struct keys reported;   /* of the last scan: candidates in it and the one before */
};

static void keys_done(struct keys *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->v[i]);
    free(k->v);
    *k = (struct keys){0};
}

static int keys_push(struct keys *k, char *key)
{
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 16;
        char **v = reallocarray(k->v, cap, sizeof(*v));
        if (!v)
            return -ENOMEM;
        k->v = v;
        k->cap = cap;
    }
    k->v[k->n++] = key;
    return 0;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool keys_has(const struct keys *k, const char *key)
{
    return k->n && bsearch(&key, k->v, k->n, sizeof(char *), cmp_key);
}

struct scan {
    const char *node;
    bool (*registered)(const char *ns, const char *name, void *ud);
    void *ud;
    struct keys found;
    int error;
};

static int scan_pod(const struct pod_meta *p, void *ud)
{
    struct scan *sc = ud;
    if (!p->running || p->terminating || p->host_network || p->n_ips == 0 || !p->node ||
        !streq(p->node, sc->node) || sc->registered(p->namespace, p->name, sc->ud))
        return 0;
    char *key;
    if (asprintf(&key, "%s/%s", p->namespace, p->name) < 0 || keys_push(&sc->found, key) < 0) {
        sc->error = -ENOMEM;
        return -ENOMEM;
    }
    return 0;
}

struct unprotected *unprotected_new(void)
{
    return calloc(1, sizeof(struct unprotected));
}

struct unprotected *unprotected_free(struct unprotected *u)
{
    if (u) {
        keys_done(&u->candidates);
        keys_done(&u->reported);
        free(u);
    }
    return NULL;
}

int unprotected_scan(struct unprotected *u, const struct store *s, const char *node,
                     bool (*registered)(const char *ns, const char *name, void *ud), void *ud)
{
    struct scan sc = {.node = node, .registered = registered, .ud = ud};
    (void)store_foreach_pod(s, scan_pod, &sc);
    struct keys reported = {0};
    for (size_t i = 0; sc.error == 0 && i < sc.found.n; i++)
        if (keys_has(&u->candidates, sc.found.v[i])) {
            char *k = strdup(sc.found.v[i]);
            if (!k || keys_push(&reported, k) < 0) {
                free(k);
                sc.error = -ENOMEM;
            }
        }
    if (sc.error < 0) {
        keys_done(&sc.found);
        keys_done(&reported);
        return sc.error;
    }
    /* store_foreach_pod() goes in (namespace, name) order, but '/' sorts before some name
     * characters: sort by key for bsearch. */
    if (sc.found.n > 1)
        qsort(sc.found.v, sc.found.n, sizeof(char *), cmp_key);
    if (reported.n > 1)
        qsort(reported.v, reported.n, sizeof(char *), cmp_key);

    size_t named = 0, more = 0;
    for (size_t i = 0; i < reported.n; i++) {
        if (keys_has(&u->reported, reported.v[i]))
            continue;
        if (named++ < UNPROTECTED_LOG_MAX)
            log_warning(
                "pod %s runs on this node without idbroker: the idbroker CNI plugin did not "
                "set it up (it was created before idbroker was installed, or while the "
                "network configuration lacked idbroker), so its requests to the metadata "
                "address get no answer; delete it so that it is created again",
                reported.v[i]);
        else
            more++;
    }
    if (more)
        log_warning("%zu more pods run on this node without idbroker (%zu in all)", more,
                    reported.n);
    for (size_t i = 0; i < u->reported.n; i++)
        if (!keys_has(&reported, u->reported.v[i]))
            log_notice("pod %s is no longer an unprotected pod of this node (registered by the "
                       "CNI plugin, or gone)",
                       u->reported.v[i]);

    keys_done(&u->candidates);
    keys_done(&u->reported);
    u->candidates = sc.found;
    u->reported = reported;
    return (int)reported.n;
}
