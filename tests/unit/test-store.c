/* SPDX-License-Identifier: Apache-2.0 */
/* The policy store: the decision table of store_decide (DESIGN §4, §5; THREATS T11, T12, T14),
 * explain, JSON views, hashing, ordered iteration and a 10 000-object scale check. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker/errno.h>

#include "store.h"

#include <cmocka.h>

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    assert_non_null(d);
    return d;
}

/* kv array from a NULL-terminated list of key, value, key, value, ... */
static struct kv *kvs(size_t *ret_n, va_list ap)
{
    struct kv *kv = calloc(16, sizeof(*kv));
    assert_non_null(kv);
    size_t n = 0;
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        assert_true(n < 16);
        kv[n].key = xstrdup(k);
        kv[n].value = xstrdup(v);
        n++;
    }
    *ret_n = n;
    return kv;
}

/* Identity with annotations given as key, value pairs ending with NULL. */
static struct identity *mk_identity(const char *ns, const char *name, const char *client_id,
                                    const char *resource_id, ...)
{
    struct identity *i = calloc(1, sizeof(*i));
    assert_non_null(i);
    i->namespace = xstrdup(ns);
    i->name = xstrdup(name);
    i->client_id = xstrdup(client_id);
    i->resource_id = xstrdup(resource_id);
    i->tenant_id = xstrdup("");
    i->ad_endpoint = xstrdup("");
    i->ad_resource_id = xstrdup("");
    i->secret_name = xstrdup("");
    i->secret_namespace = xstrdup("");
    i->origin = xstrdup("test");
    va_list ap;
    va_start(ap, resource_id);
    i->annotations = kvs(&i->n_annotations, ap);
    va_end(ap);
    identity_update_hash(i);
    return i;
}

static struct binding *mk_binding(const char *ns, const char *name, const char *identity,
                                  const char *selector, int64_t weight)
{
    struct binding *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    b->namespace = xstrdup(ns);
    b->name = xstrdup(name);
    b->identity = xstrdup(identity);
    b->selector = xstrdup(selector);
    b->weight = weight;
    b->origin = xstrdup("test");
    return b;
}

/* Pod with labels given as key, value pairs ending with NULL. */
static struct pod_meta *mk_pod(const char *ns, const char *name, ...)
{
    struct pod_meta *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    p->namespace = xstrdup(ns);
    p->name = xstrdup(name);
    va_list ap;
    va_start(ap, name);
    p->labels = kvs(&p->n_labels, ap);
    va_end(ap);
    return p;
}

static struct pod_exception *mk_exception(const char *ns, const char *name, ...)
{
    struct pod_exception *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    e->namespace = xstrdup(ns);
    e->name = xstrdup(name);
    va_list ap;
    va_start(ap, name);
    e->pod_labels = kvs(&e->n_pod_labels, ap);
    va_end(ap);
    return e;
}

static void put_i(struct store *s, struct identity *i)
{
    assert_int_equal(store_put_identity(s, i), 0);
}

static void put_b(struct store *s, struct binding *b)
{
    assert_int_equal(store_put_binding(s, b), 0);
}

static void put_p(struct store *s, struct pod_meta *p)
{
    assert_int_equal(store_put_pod(s, p), 0);
}

static const struct store_policy NS = {.namespaced = true};
static const struct store_policy CLUSTER = {.namespaced = false};
static const struct store_policy NS_STRICT = {.namespaced = true, .strict_selection = true};
static const struct store_policy NS_EXC = {.namespaced = true, .exceptions = true};

static struct decision decide(const struct store *s, const struct store_policy *p, const char *ns,
                              const char *name, enum selector_kind sel, const char *val)
{
    struct decision d;
    memset(&d, 0x5a, sizeof(d));
    assert_int_equal(store_decide(s, p, ns, name, sel, val, &d), 0);
    if (d.result != 0) {
        assert_null(d.identity);
        assert_null(d.binding);
    }
    assert_non_null(memchr(d.reason, '\0', sizeof(d.reason)));
    assert_true(strlen(d.reason) > 0);
    return d;
}

static void assert_granted(const struct decision *d, const char *ins, const char *iname,
                           const char *bname)
{
    if (d->result != 0)
        fail_msg("expected granted, got %d: %s", d->result, d->reason);
    assert_string_equal(d->identity->namespace, ins);
    assert_string_equal(d->identity->name, iname);
    if (bname)
        assert_string_equal(d->binding->name, bname);
}

static void assert_denied(const struct decision *d, int code, const char *reason_part)
{
    if (d->result != code)
        fail_msg("expected %d, got %d: %s", code, d->result, d->reason);
    if (reason_part && !strstr(d->reason, reason_part))
        fail_msg("reason '%s' lacks '%s'", d->reason, reason_part);
}

/* ---- basic rules ---- */

static void test_grant_basic(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("default", "demo-identity", "c1", "/sub/x", NULL));
    put_b(s, mk_binding("default", "demo-binding", "demo-identity", "demo", 0));
    put_p(s, mk_pod("default", "pod-a", "aadpodidbinding", "demo", "app", "x", NULL));
    put_p(s, mk_pod("default", "pod-b", "app", "x", NULL));
    put_p(s, mk_pod("default", "pod-c", "aadpodidbinding", "other", NULL));

    struct decision d = decide(s, &NS, "default", "pod-a", SELECTOR_NONE, NULL);
    assert_granted(&d, "default", "demo-identity", "demo-binding");
    assert_string_equal(d.reason, "bound by binding default/demo-binding (weight 0)");

    d = decide(s, &NS, "default", "pod-b", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, "has no label aadpodidbinding");
    d = decide(s, &NS, "default", "pod-c", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING,
                  "no AzureIdentityBinding selects label aadpodidbinding=other in namespace "
                  "default");
    d = decide(s, &NS, "default", "pod-z", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NOT_SYNCED, "default/pod-z");
    d = decide(s, &NS, "other", "pod-a", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NOT_SYNCED, NULL);

    struct decision dd;
    assert_int_equal(store_decide(NULL, &NS, "a", "b", SELECTOR_NONE, NULL, &dd), -EINVAL);
    assert_int_equal(store_decide(s, NULL, "a", "b", SELECTOR_NONE, NULL, &dd), -EINVAL);
    assert_int_equal(store_decide(s, &NS, NULL, "b", SELECTOR_NONE, NULL, &dd), -EINVAL);
    store_free(s);
}

/* THREATS T11: a pod in namespace b carrying a selector used in namespace a gets nothing. */
static void test_cross_namespace_binding(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("a", "id", "c1", "", NULL));
    put_b(s, mk_binding("a", "bind", "id", "demo", 0));
    put_p(s, mk_pod("b", "intruder", "aadpodidbinding", "demo", NULL));
    put_p(s, mk_pod("a", "legit", "aadpodidbinding", "demo", NULL));

    struct decision d = decide(s, &NS, "b", "intruder", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, "in namespace b");
    d = decide(s, &NS, "b", "intruder", SELECTOR_CLIENT_ID, "c1");
    assert_denied(&d, IDB_E_NO_BINDING, NULL);
    d = decide(s, &NS, "a", "legit", SELECTOR_NONE, NULL);
    assert_granted(&d, "a", "id", "bind");

    /* Cluster-wide mode restores aad-pod-identity's matching. */
    d = decide(s, &CLUSTER, "b", "intruder", SELECTOR_NONE, NULL);
    assert_granted(&d, "a", "id", "bind");
    store_free(s);
}

/* Namespaced: the identity is looked up in the binding's namespace only. */
static void test_namespaced_identity_lookup(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("a", "id", "c1", "", NULL));
    put_b(s, mk_binding("b", "bind", "id", "demo", 0));
    put_p(s, mk_pod("b", "p", "aadpodidbinding", "demo", NULL));

    struct decision d = decide(s, &NS, "b", "p", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, "names AzureIdentity b/id, which does not exist");
    /* Cluster-wide: the unique identity of that name in any namespace. */
    d = decide(s, &CLUSTER, "b", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "a", "id", "bind");

    /* Two of that name elsewhere: ambiguous, skipped. */
    put_i(s, mk_identity("c", "id", "c2", "", NULL));
    d = decide(s, &CLUSTER, "b", "p", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, "several other namespaces");

    /* One in the binding's own namespace is preferred. */
    put_i(s, mk_identity("b", "id", "c3", "", NULL));
    d = decide(s, &CLUSTER, "b", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "b", "id", "bind");
    d = decide(s, &NS, "b", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "b", "id", "bind");
    store_free(s);
}

static void test_behavior_namespaced(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s,
          mk_identity("a", "id", "c1", "", "aadpodidentity.k8s.io/Behavior", "namespaced", NULL));
    put_b(s, mk_binding("a", "bind", "id", "demo", 0));
    put_p(s, mk_pod("a", "home", "aadpodidbinding", "demo", NULL));
    put_p(s, mk_pod("b", "away", "aadpodidbinding", "demo", NULL));

    struct decision d = decide(s, &CLUSTER, "a", "home", SELECTOR_NONE, NULL);
    assert_granted(&d, "a", "id", "bind");
    d = decide(s, &CLUSTER, "b", "away", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, "Behavior: namespaced");

    /* A binding in b naming the (unique) identity of a: the namespaces differ. */
    put_b(s, mk_binding("b", "bind-b", "id", "demo-b", 0));
    put_p(s, mk_pod("b", "away2", "aadpodidbinding", "demo-b", NULL));
    put_p(s, mk_pod("a", "home2", "aadpodidbinding", "demo-b", NULL));
    d = decide(s, &CLUSTER, "b", "away2", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, "Behavior");
    d = decide(s, &CLUSTER, "a", "home2", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, "Behavior");

    /* Without the annotation the same set-up is granted cluster-wide. */
    put_i(s, mk_identity("a", "id", "c1", "", NULL));
    d = decide(s, &CLUSTER, "b", "away2", SELECTOR_NONE, NULL);
    assert_granted(&d, "a", "id", "bind-b");
    store_free(s);
}

static void test_missing_identity_skipped(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("ns", "real", "c1", "", NULL));
    put_b(s, mk_binding("ns", "b-ghost", "ghost", "demo", 100));
    put_b(s, mk_binding("ns", "b-real", "real", "demo", 0));
    put_p(s, mk_pod("ns", "p", "aadpodidbinding", "demo", NULL));

    struct decision d = decide(s, &NS, "ns", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "real", "b-real");
    assert_int_equal(store_remove_identity(s, "ns", "real"), 1);
    assert_int_equal(store_remove_identity(s, "ns", "real"), 0);
    d = decide(s, &NS, "ns", "p", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, "binding ns/b-ghost names AzureIdentity ns/ghost");
    store_free(s);
}

/* ---- choosing among several ---- */

static void test_weights_and_tie_breaks(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("ns", "alpha", "ca", "", NULL));
    put_i(s, mk_identity("ns", "beta", "cb", "", NULL));
    put_i(s, mk_identity("ns", "gamma", "cg", "", NULL));
    put_b(s, mk_binding("ns", "b-beta", "beta", "demo", 0));
    put_b(s, mk_binding("ns", "b-gamma", "gamma", "demo", 0));
    put_p(s, mk_pod("ns", "p", "aadpodidbinding", "demo", NULL));

    /* Equal weight: identity name. */
    struct decision d = decide(s, &NS, "ns", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "beta", "b-beta");
    assert_non_null(strstr(d.reason, "chosen among several"));

    /* Higher weight wins over name order, negative weights too. */
    put_b(s, mk_binding("ns", "b-gamma", "gamma", "demo", 5));
    put_b(s, mk_binding("ns", "b-alpha", "alpha", "demo", -1));
    d = decide(s, &NS, "ns", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "gamma", "b-gamma");
    assert_non_null(strstr(d.reason, "(weight 5)"));

    /* The same identity reachable twice: the higher-weight binding. */
    put_b(s, mk_binding("ns", "a-first", "gamma", "demo", 2));
    put_b(s, mk_binding("ns", "z-last", "gamma", "demo", 9));
    d = decide(s, &NS, "ns", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "gamma", "z-last");
    /* ... and with equal weights the binding name. */
    put_b(s, mk_binding("ns", "a-first", "gamma", "demo", 9));
    d = decide(s, &NS, "ns", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "gamma", "a-first");
    store_free(s);
}

/* Identity namespace is the tie-break after identity name (cluster-wide mode). */
static void test_identity_namespace_tie_break(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("zz", "id", "c1", "", NULL));
    put_i(s, mk_identity("aa", "id", "c2", "", NULL));
    put_b(s, mk_binding("zz", "b1", "id", "demo", 3));
    put_b(s, mk_binding("aa", "b2", "id", "demo", 3));
    put_p(s, mk_pod("pods", "p", "aadpodidbinding", "demo", NULL));

    struct decision d = decide(s, &CLUSTER, "pods", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "aa", "id", "b2");
    d = decide(s, &CLUSTER, "pods", "p", SELECTOR_CLIENT_ID, "c1");
    assert_granted(&d, "zz", "id", "b1");
    store_free(s);
}

static void test_strict_selection(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("ns", "one", "c1", "/r/one", NULL));
    put_i(s, mk_identity("ns", "two", "c2", "/r/two", NULL));
    put_b(s, mk_binding("ns", "b1", "one", "demo", 0));
    put_b(s, mk_binding("ns", "b1-again", "one", "demo", 7));
    put_p(s, mk_pod("ns", "p", "aadpodidbinding", "demo", NULL));

    /* One identity through two bindings is not "multiple". */
    struct decision d = decide(s, &NS_STRICT, "ns", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "one", "b1-again");

    put_b(s, mk_binding("ns", "b2", "two", "demo", 0));
    d = decide(s, &NS_STRICT, "ns", "p", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_MULTIPLE_IDENTITIES, "strictSelection");
    d = decide(s, &NS_STRICT, "ns", "p", SELECTOR_CLIENT_ID, "c2");
    assert_granted(&d, "ns", "two", "b2");
    d = decide(s, &NS, "ns", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "one", "b1-again");
    store_free(s);
}

/* THREATS T12: only identities bound to the pod, whatever the pod asks for. */
static void test_selectors(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("ns", "one", "AbC-1", "/subscriptions/S/RG/one", "idbroker.io/object-id",
                         "OID-1", NULL));
    put_i(s, mk_identity("ns", "two", "def-2", "/subscriptions/s/rg/two", NULL));
    put_i(s, mk_identity("ns", "foreign", "foreign-3", "/subscriptions/s/rg/foreign",
                         "idbroker.io/object-id", "oid-3", NULL));
    put_i(s, mk_identity("other", "elsewhere", "else-4", "/x", NULL));
    put_b(s, mk_binding("ns", "b1", "one", "demo", 0));
    put_b(s, mk_binding("ns", "b2", "two", "demo", 10));
    put_b(s, mk_binding("ns", "bf", "foreign", "someone-else", 0));
    put_b(s, mk_binding("other", "be", "elsewhere", "demo", 0));
    put_p(s, mk_pod("ns", "p", "aadpodidbinding", "demo", NULL));

    struct decision d = decide(s, &NS, "ns", "p", SELECTOR_CLIENT_ID, "abc-1");
    assert_granted(&d, "ns", "one", "b1");
    assert_non_null(strstr(d.reason, "matches the requested"));
    d = decide(s, &NS, "ns", "p", SELECTOR_CLIENT_ID, "DEF-2");
    assert_granted(&d, "ns", "two", "b2");
    d = decide(s, &NS, "ns", "p", SELECTOR_RESOURCE_ID, "/SUBSCRIPTIONS/s/rg/ONE");
    assert_granted(&d, "ns", "one", "b1");
    d = decide(s, &NS, "ns", "p", SELECTOR_OBJECT_ID, "oid-1");
    assert_granted(&d, "ns", "one", "b1");
    d = decide(s, &NS, "ns", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "two", "b2");

    /* Identities that exist but are not bound to this pod. */
    d = decide(s, &NS, "ns", "p", SELECTOR_CLIENT_ID, "foreign-3");
    assert_denied(&d, IDB_E_IDENTITY_NOT_FOUND, "client_id");
    assert_null(strstr(d.reason, "foreign-3")); /* no client IDs in reasons (T17) */
    d = decide(s, &NS, "ns", "p", SELECTOR_OBJECT_ID, "oid-3");
    assert_denied(&d, IDB_E_IDENTITY_NOT_FOUND, NULL);
    d = decide(s, &NS, "ns", "p", SELECTOR_RESOURCE_ID, "/subscriptions/s/rg/foreign");
    assert_denied(&d, IDB_E_IDENTITY_NOT_FOUND, NULL);
    d = decide(s, &NS, "ns", "p", SELECTOR_CLIENT_ID, "else-4");
    assert_denied(&d, IDB_E_IDENTITY_NOT_FOUND, NULL);
    d = decide(s, &CLUSTER, "ns", "p", SELECTOR_CLIENT_ID, "else-4");
    assert_granted(&d, "other", "elsewhere", "be");
    /* Object id of an identity without the annotation, and empty values, never match. */
    d = decide(s, &NS, "ns", "p", SELECTOR_OBJECT_ID, "def-2");
    assert_denied(&d, IDB_E_IDENTITY_NOT_FOUND, NULL);
    d = decide(s, &NS, "ns", "p", SELECTOR_CLIENT_ID, "");
    assert_denied(&d, IDB_E_IDENTITY_NOT_FOUND, NULL);
    d = decide(s, &NS, "ns", "p", SELECTOR_CLIENT_ID, NULL);
    assert_denied(&d, IDB_E_IDENTITY_NOT_FOUND, NULL);
    /* A pod without bindings asking for an identity is "no binding", not "not found". */
    put_p(s, mk_pod("ns", "lonely", NULL));
    d = decide(s, &NS, "ns", "lonely", SELECTOR_CLIENT_ID, "abc-1");
    assert_denied(&d, IDB_E_NO_BINDING, NULL);
    store_free(s);
}

static void test_exceptions(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("ns", "id", "c1", "", NULL));
    put_b(s, mk_binding("ns", "b", "id", "demo", 0));
    put_p(s, mk_pod("ns", "p", "aadpodidbinding", "demo", "app", "legacy", NULL));
    put_p(s, mk_pod("ns", "q", "aadpodidbinding", "demo", "app", "modern", NULL));
    put_p(s, mk_pod("other", "r", "app", "legacy", NULL));
    assert_int_equal(
        store_put_exception(s, mk_exception("ns", "exc", "tier", "x", "app", "legacy", NULL)), 0);
    assert_int_equal(store_count_exceptions(s), 1);

    struct decision d = decide(s, &NS_EXC, "ns", "p", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_EXCEPTED, "AzurePodIdentityException ns/exc (label app=legacy)");
    d = decide(s, &NS, "ns", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "id", "b");
    d = decide(s, &NS_EXC, "ns", "q", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "id", "b");
    /* Exceptions apply only in their own namespace. */
    d = decide(s, &NS_EXC, "other", "r", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, NULL);
    /* Replace, then remove. */
    assert_int_equal(store_put_exception(s, mk_exception("ns", "exc", "app", "modern", NULL)), 0);
    d = decide(s, &NS_EXC, "ns", "p", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "id", "b");
    d = decide(s, &NS_EXC, "ns", "q", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_EXCEPTED, NULL);
    assert_int_equal(store_remove_exception(s, "ns", "exc"), 1);
    assert_int_equal(store_count_exceptions(s), 0);
    d = decide(s, &NS_EXC, "ns", "q", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "id", "b");
    store_free(s);
}

/* ---- store mechanics ---- */

static void test_replace_and_remove(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("ns", "id", "c1", "", NULL));
    put_b(s, mk_binding("ns", "b", "id", "demo", 0));
    put_p(s, mk_pod("ns", "p", "aadpodidbinding", "demo", NULL));
    put_p(s, mk_pod("ns", "q", "aadpodidbinding", "new", NULL));
    assert_int_equal(store_count_bindings(s), 1);
    assert_int_equal(store_count_pods(s), 2);

    /* Re-putting a binding with another selector moves it in the index. */
    put_b(s, mk_binding("ns", "b", "id", "new", 0));
    assert_int_equal(store_count_bindings(s), 1);
    struct decision d = decide(s, &NS, "ns", "p", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, NULL);
    d = decide(s, &CLUSTER, "ns", "p", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, "in any namespace");
    d = decide(s, &NS, "ns", "q", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "id", "b");
    /* Same selector again (the vector must survive its only item being replaced). */
    put_b(s, mk_binding("ns", "b", "id", "new", 4));
    d = decide(s, &CLUSTER, "ns", "q", SELECTOR_NONE, NULL);
    assert_granted(&d, "ns", "id", "b");
    assert_int_equal(d.binding->weight, 4);

    /* Replacing an identity keeps the by-name index pointing at the new one. */
    put_i(s, mk_identity("ns", "id", "c2", "", NULL));
    assert_int_equal(store_count_identities(s), 1);
    assert_string_equal(store_get_identity(s, "ns", "id")->client_id, "c2");
    put_b(s, mk_binding("elsewhere", "b", "id", "new", 0));
    put_p(s, mk_pod("elsewhere", "q", "aadpodidbinding", "new", NULL));
    d = decide(s, &CLUSTER, "elsewhere", "q", SELECTOR_CLIENT_ID, "c2");
    assert_granted(&d, "ns", "id", NULL);

    assert_int_equal(store_remove_binding(s, "ns", "b"), 1);
    assert_int_equal(store_remove_binding(s, "ns", "b"), 0);
    assert_int_equal(store_remove_binding(s, "elsewhere", "b"), 1);
    d = decide(s, &NS, "ns", "q", SELECTOR_NONE, NULL);
    assert_denied(&d, IDB_E_NO_BINDING, NULL);
    assert_int_equal(store_remove_pod(s, "ns", "q"), 1);
    assert_int_equal(store_remove_pod(s, "ns", "q"), 0);
    assert_null(store_get_pod(s, "ns", "q"));
    assert_non_null(store_get_pod(s, "ns", "p"));
    assert_int_equal(store_remove_exception(s, "ns", "none"), 0);
    assert_int_equal(store_remove_identity(s, NULL, "x"), 0);

    /* Invalid objects are refused and stay the caller's. */
    struct binding *bad = mk_binding("", "b", "id", "demo", 0);
    assert_int_equal(store_put_binding(s, bad), -EINVAL);
    binding_free(bad);
    struct identity *badi = mk_identity("ns", "", "c", "", NULL);
    assert_int_equal(store_put_identity(s, badi), -EINVAL);
    identity_free(badi);
    assert_null(store_free(s));
    assert_null(store_free(NULL));
    assert_null(identity_free(NULL));
    assert_null(binding_free(NULL));
    assert_null(pod_exception_free(NULL));
    assert_null(pod_meta_free(NULL));
}

static void test_identity_hash(void **state)
{
    (void)state;
    struct identity *a = mk_identity("ns", "id", "c1", "/r", "k1", "v1", "k2", "v2", NULL);
    struct identity *b = mk_identity("ns", "id", "c1", "/r", "k2", "v2", "k1", "v1", NULL);
    assert_true(a->hash == b->hash); /* annotation order does not matter */

    uint64_t h = a->hash;
    free(a->tenant_id);
    a->tenant_id = xstrdup("t");
    identity_update_hash(a);
    assert_true(a->hash != h);
    free(a->tenant_id);
    a->tenant_id = xstrdup("");
    identity_update_hash(a);
    assert_true(a->hash == h);

    a->type = 1;
    identity_update_hash(a);
    assert_true(a->hash != h);
    a->type = 0;

    free(a->annotations[0].value);
    a->annotations[0].value = xstrdup("changed");
    identity_update_hash(a);
    assert_true(a->hash != h);
    free(a->annotations[0].value);
    a->annotations[0].value = xstrdup("v1");

    free(a->secret_name);
    a->secret_name = xstrdup("s");
    identity_update_hash(a);
    assert_true(a->hash != h);
    free(a->secret_name);
    a->secret_name = xstrdup("");

    /* Moving a byte between adjacent fields changes the hash. */
    free(a->resource_id);
    a->resource_id = xstrdup("/rc");
    free(a->client_id);
    a->client_id = xstrdup("1");
    identity_update_hash(a);
    assert_true(a->hash != h);

    assert_string_equal(identity_annotation(b, "k2"), "v2");
    assert_null(identity_annotation(b, "k3"));
    identity_free(a);
    identity_free(b);
}

struct collect {
    char names[16][64];
    size_t n;
    size_t stop_after;
};

static int collect_binding(const struct binding *b, void *ud)
{
    struct collect *c = ud;
    snprintf(c->names[c->n++], sizeof(c->names[0]), "%s/%s", b->namespace, b->name);
    return c->n == c->stop_after ? -ECANCELED : 0;
}

static int collect_identity(const struct identity *i, void *ud)
{
    struct collect *c = ud;
    snprintf(c->names[c->n++], sizeof(c->names[0]), "%s/%s", i->namespace, i->name);
    return 0;
}

static void test_foreach_order(void **state)
{
    (void)state;
    struct store *s = store_new();
    const char *order[] = {"a/x", "a/y", "b/a", "b/b", "c/z"};
    put_b(s, mk_binding("c", "z", "i", "s", 0));
    put_b(s, mk_binding("a", "y", "i", "s", 0));
    put_b(s, mk_binding("b", "b", "i", "s", 0));
    put_b(s, mk_binding("a", "x", "i", "s", 0));
    put_b(s, mk_binding("b", "a", "i", "s", 0));

    struct collect c = {.n = 0};
    assert_int_equal(store_foreach_binding(s, collect_binding, &c), 0);
    assert_int_equal(c.n, 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(c.names[i], order[i]);

    c = (struct collect){.stop_after = 2};
    assert_int_equal(store_foreach_binding(s, collect_binding, &c), -ECANCELED);
    assert_int_equal(c.n, 2);

    c = (struct collect){.n = 0};
    assert_int_equal(store_foreach_identity(s, collect_identity, &c), 0);
    assert_int_equal(c.n, 0);
    store_free(s);
}

/* The string form of o[k1][k2]...; keys end with NULL. */
static const char *jget(struct json_object *o, ...)
{
    va_list ap;
    va_start(ap, o);
    struct json_object *cur = o;
    for (const char *k = va_arg(ap, const char *); k; k = va_arg(ap, const char *))
        if (!json_object_object_get_ex(cur, k, &cur)) {
            cur = NULL;
            break;
        }
    va_end(ap);
    return cur ? json_object_get_string(cur) : NULL;
}

static void test_json_views(void **state)
{
    (void)state;
    struct identity *i =
        mk_identity("ns", "id", "cid", "/rid", "idbroker.io/provider", "mock", NULL);
    i->type = 1;
    free(i->secret_name);
    i->secret_name = xstrdup("sec");
    free(i->secret_namespace);
    i->secret_namespace = xstrdup("secns");
    free(i->tenant_id);
    i->tenant_id = xstrdup("tid");
    struct json_object *o = identity_to_json(i);
    assert_non_null(o);
    assert_string_equal(jget(o, "apiVersion", NULL), "aadpodidentity.k8s.io/v1");
    assert_string_equal(jget(o, "kind", NULL), "AzureIdentity");
    assert_string_equal(jget(o, "metadata", "namespace", NULL), "ns");
    assert_string_equal(jget(o, "metadata", "name", NULL), "id");
    assert_string_equal(jget(o, "metadata", "annotations", "idbroker.io/provider", NULL), "mock");
    assert_string_equal(jget(o, "spec", "type", NULL), "1");
    assert_string_equal(jget(o, "spec", "clientID", NULL), "cid");
    assert_string_equal(jget(o, "spec", "resourceID", NULL), "/rid");
    assert_string_equal(jget(o, "spec", "tenantID", NULL), "tid");
    assert_string_equal(jget(o, "spec", "clientPassword", "name", NULL), "sec");
    assert_string_equal(jget(o, "spec", "clientPassword", "namespace", NULL), "secns");
    assert_non_null(jget(o, "spec", "adEndpoint", NULL));
    assert_non_null(jget(o, "spec", "adResourceID", NULL));
    json_object_put(o);
    identity_free(i);

    struct binding *b = mk_binding("ns", "b", "id", "sel", 7);
    o = binding_to_json(b);
    assert_string_equal(jget(o, "kind", NULL), "AzureIdentityBinding");
    assert_string_equal(jget(o, "spec", "azureIdentity", NULL), "id");
    assert_string_equal(jget(o, "spec", "selector", NULL), "sel");
    assert_string_equal(jget(o, "spec", "weight", NULL), "7");
    json_object_put(o);
    binding_free(b);

    struct pod_exception *e = mk_exception("ns", "e", "app", "x", NULL);
    o = pod_exception_to_json(e);
    assert_string_equal(jget(o, "kind", NULL), "AzurePodIdentityException");
    assert_string_equal(jget(o, "spec", "podLabels", "app", NULL), "x");
    json_object_put(o);
    pod_exception_free(e);
    assert_null(identity_to_json(NULL));
}

static void test_explain(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("ns", "id", "c1", "", NULL));
    put_i(s, mk_identity("other", "oid", "c2", "", NULL));
    put_b(s, mk_binding("ns", "b", "id", "demo", 3));
    put_b(s, mk_binding("ns", "ghost", "nobody", "demo", 0));
    put_b(s, mk_binding("other", "cross", "oid", "demo", 0));
    put_p(s, mk_pod("ns", "p", "aadpodidbinding", "demo", "app", "x", NULL));

    struct json_object *o = store_explain(s, &NS, "ns", "p");
    assert_non_null(o);
    assert_string_equal(jget(o, "pod", NULL), "ns/p");
    assert_string_equal(jget(o, "decision", NULL), "granted");
    assert_string_equal(jget(o, "identity", NULL), "ns/id");
    assert_string_equal(jget(o, "binding", NULL), "ns/b");
    assert_string_equal(jget(o, "reason", NULL), "bound by binding ns/b (weight 3)");
    assert_string_equal(jget(o, "labels", "app", NULL), "x");
    struct json_object *cands = json_object_object_get(o, "candidates");
    assert_int_equal(json_object_array_length(cands), 3);
    /* Sorted by binding: ns/b, ns/ghost, other/cross. */
    struct json_object *c0 = json_object_array_get_idx(cands, 0);
    struct json_object *c1 = json_object_array_get_idx(cands, 1);
    struct json_object *c2 = json_object_array_get_idx(cands, 2);
    assert_string_equal(jget(c0, "binding", NULL), "ns/b");
    assert_string_equal(jget(c0, "identity", NULL), "ns/id");
    assert_string_equal(jget(c0, "weight", NULL), "3");
    assert_true(json_object_get_boolean(json_object_object_get(c0, "applies")));
    assert_true(json_object_get_boolean(json_object_object_get(c0, "chosen")));
    assert_string_equal(jget(c1, "binding", NULL), "ns/ghost");
    assert_false(json_object_get_boolean(json_object_object_get(c1, "applies")));
    assert_non_null(strstr(jget(c1, "why", NULL), "does not exist"));
    assert_string_equal(jget(c2, "binding", NULL), "other/cross");
    assert_false(json_object_get_boolean(json_object_object_get(c2, "applies")));
    assert_non_null(strstr(jget(c2, "why", NULL), "namespaced mode"));
    json_object_put(o);

    o = store_explain(s, &NS, "ns", "unknown");
    assert_string_equal(jget(o, "decision", NULL), "not-synced");
    assert_null(json_object_object_get(o, "identity"));
    assert_int_equal(json_object_array_length(json_object_object_get(o, "candidates")), 0);
    json_object_put(o);

    put_p(s, mk_pod("other", "q", "aadpodidbinding", "nothing", NULL));
    o = store_explain(s, &NS, "other", "q");
    assert_string_equal(jget(o, "decision", NULL), "denied");
    json_object_put(o);
    store_free(s);
}

/* 10 000 identities and 10 000 bindings: loading and deciding stay cheap (indexed, not scanned). */
static void test_scale(void **state)
{
    (void)state;
    enum { N = 10000, NAMESPACES = 100 };
    struct store *s = store_new();
    char ns[32], name[32], sel[32], cid[48];
    for (int k = 0; k < N; k++) {
        snprintf(ns, sizeof(ns), "ns-%d", k % NAMESPACES);
        snprintf(name, sizeof(name), "id-%d", k);
        snprintf(sel, sizeof(sel), "sel-%d", k);
        snprintf(cid, sizeof(cid), "00000000-0000-0000-0000-%012d", k);
        put_i(s, mk_identity(ns, name, cid, "", NULL));
        snprintf(name, sizeof(name), "b-%d", k);
        char iname[32];
        snprintf(iname, sizeof(iname), "id-%d", k);
        put_b(s, mk_binding(ns, name, iname, sel, k % 7));
        snprintf(name, sizeof(name), "pod-%d", k);
        put_p(s, mk_pod(ns, name, "aadpodidbinding", sel, NULL));
    }
    assert_int_equal(store_count_identities(s), N);
    assert_int_equal(store_count_bindings(s), N);
    assert_int_equal(store_count_pods(s), N);

    for (int k = 0; k < N; k++) {
        snprintf(ns, sizeof(ns), "ns-%d", k % NAMESPACES);
        snprintf(name, sizeof(name), "pod-%d", k);
        snprintf(cid, sizeof(cid), "00000000-0000-0000-0000-%012d", k);
        struct decision d;
        assert_int_equal(store_decide(s, &NS, ns, name, SELECTOR_NONE, NULL, &d), 0);
        assert_int_equal(d.result, 0);
        assert_int_equal(store_decide(s, &CLUSTER, ns, name, SELECTOR_CLIENT_ID, cid, &d), 0);
        assert_int_equal(d.result, 0);
        /* Someone else's client id. */
        snprintf(cid, sizeof(cid), "00000000-0000-0000-0000-%012d", (k + 1) % N);
        assert_int_equal(store_decide(s, &NS, ns, name, SELECTOR_CLIENT_ID, cid, &d), 0);
        assert_int_equal(d.result, IDB_E_IDENTITY_NOT_FOUND);
    }
    for (int k = 0; k < N; k += 2) {
        snprintf(ns, sizeof(ns), "ns-%d", k % NAMESPACES);
        snprintf(name, sizeof(name), "b-%d", k);
        assert_int_equal(store_remove_binding(s, ns, name), 1);
    }
    assert_int_equal(store_count_bindings(s), N / 2);
    struct decision d;
    assert_int_equal(store_decide(s, &NS, "ns-0", "pod-0", SELECTOR_NONE, NULL, &d), 0);
    assert_int_equal(d.result, IDB_E_NO_BINDING);
    assert_int_equal(store_decide(s, &NS, "ns-1", "pod-1", SELECTOR_NONE, NULL, &d), 0);
    assert_int_equal(d.result, 0);
    store_free(s);
}

/* ---- packed objects and table churn ---- */

static void test_packed(void **state)
{
    (void)state;
    struct kv ann[] = {{"idbroker.io/provider", "mock"}, {"empty", ""}};
    char name[] = "id";
    struct identity *i = identity_new(&(struct identity){
        .namespace = "ns",
        .name = name,
        .type = 2,
        .client_id = "cid",
        .resource_id = "",
        .tenant_id = "tid",
        .annotations = ann,
        .n_annotations = 2,
        .origin = "f.yaml#1",
    });
    assert_non_null(i);
    name[0] = 'X'; /* the template is borrowed: the copy does not change */
    assert_true(i->packed);
    assert_string_equal(i->name, "id");
    assert_string_equal(i->namespace, "ns");
    assert_int_equal(i->type, 2);
    assert_null(i->uid);
    assert_null(i->ad_endpoint);
    assert_string_equal(i->resource_id, "");
    assert_string_equal(i->tenant_id, "tid");
    assert_string_equal(identity_annotation(i, "idbroker.io/provider"), "mock");
    assert_string_equal(identity_annotation(i, "empty"), "");
    assert_string_equal(i->origin, "f.yaml#1");
    /* Same hash as the same identity built field by field. */
    struct identity *u =
        mk_identity("ns", "id", "cid", "", "idbroker.io/provider", "mock", "empty", "", NULL);
    free(u->tenant_id);
    u->tenant_id = xstrdup("tid");
    u->type = 2;
    free(u->ad_endpoint);
    u->ad_endpoint = NULL;
    free(u->ad_resource_id);
    u->ad_resource_id = NULL;
    free(u->secret_name);
    u->secret_name = NULL;
    free(u->secret_namespace);
    u->secret_namespace = NULL;
    identity_update_hash(u);
    assert_true(i->hash == u->hash);
    identity_free(u);

    struct binding *b = binding_new(&(struct binding){
        .namespace = "ns", .name = "b", .identity = "id", .selector = "sel", .weight = -3});
    assert_non_null(b);
    assert_true(b->packed);
    assert_int_equal(b->weight, -3);
    assert_null(b->origin);

    char *ips[] = {"10.0.0.1", "fd00::1"};
    struct kv labels[] = {{STORE_POD_LABEL, "sel"}};
    struct pod_meta *p = pod_meta_new(&(struct pod_meta){.namespace = "ns",
                                                         .name = "pod",
                                                         .uid = "u",
                                                         .labels = labels,
                                                         .n_labels = 1,
                                                         .ips = ips,
                                                         .n_ips = 2});
    assert_non_null(p);
    assert_int_equal(p->n_ips, 2);
    assert_string_equal(p->ips[1], "fd00::1");
    assert_null(p->node);

    struct kv pl[] = {{"app", "x"}};
    struct pod_exception *e = pod_exception_new(&(struct pod_exception){
        .namespace = "ns", .name = "e", .pod_labels = pl, .n_pod_labels = 1});
    assert_non_null(e);
    assert_string_equal(e->pod_labels[0].value, "x");

    struct store *s = store_new();
    put_i(s, i);
    put_b(s, b);
    put_p(s, p);
    assert_int_equal(store_put_exception(s, e), 0);
    struct decision d = decide(s, &NS, "ns", "pod", SELECTOR_CLIENT_ID, "cid");
    assert_int_equal(d.result, 0);
    assert_ptr_equal(d.identity, i);
    store_free(s);
}

static int count_grant(const struct identity *i, const struct binding *b, void *ud)
{
    (void)i;
    (void)b;
    (*(size_t *)ud)++;
    return 0;
}

/* Random puts, replacements (with another selector) and removals against a model: the tables grow,
 * shrink and delete by shifting, and an index key goes from one object to several and back. */
static void test_churn(void **state)
{
    (void)state;
    enum { NB = 300, NNS = 3, NSEL = 20, OPS = 6000 };
    int sel_of[NB];  /* -1: absent */
    bool has_id[NB]; /* identity i<k> of binding k, in namespace k % NNS */
    for (int k = 0; k < NB; k++) {
        sel_of[k] = -1;
        has_id[k] = false;
    }
    struct store *s = store_new();
    char ns[16], name[16], iname[16], sel[16];
    for (int j = 0; j < NNS; j++)
        for (int q = 0; q < NSEL; q++) {
            snprintf(ns, sizeof(ns), "ns%d", j);
            snprintf(name, sizeof(name), "p-s%d", q);
            snprintf(sel, sizeof(sel), "s%d", q);
            put_p(s, mk_pod(ns, name, STORE_POD_LABEL, sel, NULL));
        }
    uint32_t x = 12345;
    for (int op = 0; op < OPS; op++) {
        x = x * 1103515245u + 12345u;
        int k = (int)((x >> 8) % NB), what = (int)((x >> 20) % 8);
        snprintf(ns, sizeof(ns), "ns%d", k % NNS);
        snprintf(name, sizeof(name), "b%d", k);
        snprintf(iname, sizeof(iname), "i%d", k);
        if (what < 4) {
            /* Few selectors early, so vectors form; then spread out. */
            int q = (int)((x >> 12) % (op < OPS / 2 ? 4 : NSEL));
            snprintf(sel, sizeof(sel), "s%d", q);
            struct binding *b = binding_new(&(struct binding){
                .namespace = ns, .name = name, .identity = iname, .selector = sel});
            assert_non_null(b);
            put_b(s, b);
            sel_of[k] = q;
        } else if (what < 6) {
            assert_int_equal(store_remove_binding(s, ns, name), sel_of[k] >= 0 ? 1 : 0);
            sel_of[k] = -1;
        } else if (what == 6) {
            struct identity *i = identity_new(&(struct identity){
                .namespace = ns, .name = iname, .client_id = iname, .resource_id = ""});
            assert_non_null(i);
            put_i(s, i);
            has_id[k] = true;
        } else {
            assert_int_equal(store_remove_identity(s, ns, iname), has_id[k] ? 1 : 0);
            has_id[k] = false;
        }
        if (op % 200 != 199 && op != OPS - 1)
            continue;
        size_t nb = 0, ni = 0;
        for (int m = 0; m < NB; m++) {
            nb += sel_of[m] >= 0;
            ni += has_id[m];
        }
        assert_int_equal(store_count_bindings(s), nb);
        assert_int_equal(store_count_identities(s), ni);
        for (int j = 0; j < NNS; j++)
            for (int q = 0; q < NSEL; q++) {
                size_t want_ns = 0, want_all = 0;
                for (int m = 0; m < NB; m++) {
                    if (sel_of[m] != q)
                        continue;
                    want_all++;
                    want_ns += (m % NNS == j) && has_id[m];
                }
                snprintf(ns, sizeof(ns), "ns%d", j);
                snprintf(name, sizeof(name), "p-s%d", q);
                size_t got = 0;
                assert_int_equal(store_foreach_grant(s, &NS, ns, name, count_grant, &got), 0);
                assert_int_equal(got, want_ns);
                struct json_object *o = store_explain(s, &CLUSTER, ns, name);
                assert_non_null(o);
                struct json_object *c = json_object_object_get(o, "candidates");
                assert_int_equal(json_object_array_length(c), want_all);
                json_object_put(o);
            }
    }
    /* Empty it (the tables shrink back), then use it again. */
    for (int k = 0; k < NB; k++) {
        snprintf(ns, sizeof(ns), "ns%d", k % NNS);
        snprintf(name, sizeof(name), "b%d", k);
        snprintf(iname, sizeof(iname), "i%d", k);
        assert_int_equal(store_remove_binding(s, ns, name), sel_of[k] >= 0 ? 1 : 0);
        assert_int_equal(store_remove_identity(s, ns, iname), has_id[k] ? 1 : 0);
    }
    assert_int_equal(store_count_bindings(s), 0);
    assert_int_equal(store_count_identities(s), 0);
    put_i(s, mk_identity("ns0", "i0", "c", "", NULL));
    put_b(s, mk_binding("ns0", "b0", "i0", "s1", 0));
    size_t got = 0;
    assert_int_equal(store_foreach_grant(s, &NS, "ns0", "p-s1", count_grant, &got), 0);
    assert_int_equal(got, 1);
    store_free(s);
}

/* ---- store_foreach_grant: every identity a pod may use (AzureAssignedIdentity writer) ---- */

struct grants {
    char seen[8][128];
    size_t n;
    int stop_after;
};

static int collect_grant(const struct identity *i, const struct binding *b, void *ud)
{
    struct grants *g = ud;
    assert_true(g->n < 8);
    snprintf(g->seen[g->n++], sizeof(g->seen[0]), "%s/%s<-%s", i->namespace, i->name, b->name);
    if (g->stop_after && (int)g->n == g->stop_after)
        return -42;
    return 0;
}

static void test_foreach_grant(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_i(s, mk_identity("ns1", "id-b", "c1", "r1", NULL));
    put_i(s, mk_identity("ns1", "id-a", "c2", "r2", NULL));
    put_i(s, mk_identity("ns2", "id-c", "c3", "r3", NULL));
    put_b(s, mk_binding("ns1", "bind-b", "id-b", "sel", 0));
    put_b(s, mk_binding("ns1", "bind-a1", "id-a", "sel", 1));
    put_b(s, mk_binding("ns1", "bind-a2", "id-a", "sel", 5));   /* same identity, better weight */
    put_b(s, mk_binding("ns1", "bind-x", "missing", "sel", 9)); /* names no identity */
    put_b(s, mk_binding("ns2", "bind-c", "id-c", "sel", 0));    /* other namespace */
    put_p(s, mk_pod("ns1", "pod", "aadpodidbinding", "sel", NULL));
    put_p(s, mk_pod("ns1", "nolabel", NULL));

    struct grants g = {0};
    assert_int_equal(store_foreach_grant(s, &NS, "ns1", "pod", collect_grant, &g), 0);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.seen[0], "ns1/id-a<-bind-a2");
    assert_string_equal(g.seen[1], "ns1/id-b<-bind-b");

    /* strict selection does not hide grants */
    g = (struct grants){0};
    assert_int_equal(store_foreach_grant(s, &NS_STRICT, "ns1", "pod", collect_grant, &g), 0);
    assert_int_equal(g.n, 2);

    /* cluster-wide: the binding in ns2 grants too (pod in ns1) */
    g = (struct grants){0};
    assert_int_equal(store_foreach_grant(s, &CLUSTER, "ns1", "pod", collect_grant, &g), 0);
    assert_int_equal(g.n, 3);
    assert_string_equal(g.seen[2], "ns2/id-c<-bind-c");

    /* stop early: the callback's value comes back */
    g = (struct grants){.stop_after = 1};
    assert_int_equal(store_foreach_grant(s, &NS, "ns1", "pod", collect_grant, &g), -42);
    assert_int_equal(g.n, 1);

    /* no label, unknown pod: no call */
    g = (struct grants){0};
    assert_int_equal(store_foreach_grant(s, &NS, "ns1", "nolabel", collect_grant, &g), 0);
    assert_int_equal(store_foreach_grant(s, &NS, "ns1", "ghost", collect_grant, &g), 0);
    assert_int_equal(g.n, 0);

    /* excepted pod: no grant when exceptions are honoured */
    struct pod_exception *e = mk_exception("ns1", "exc", "aadpodidbinding", "sel", NULL);
    assert_int_equal(store_put_exception(s, e), 0);
    assert_int_equal(store_foreach_grant(s, &NS_EXC, "ns1", "pod", collect_grant, &g), 0);
    assert_int_equal(g.n, 0);

    /* binding deleted: that grant ends */
    assert_int_equal(store_remove_binding(s, "ns1", "bind-b"), 1);
    assert_int_equal(store_foreach_grant(s, &NS, "ns1", "pod", collect_grant, &g), 0);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.seen[0], "ns1/id-a<-bind-a2");

    assert_int_equal(store_foreach_grant(NULL, &NS, "ns1", "pod", collect_grant, &g), -EINVAL);
    store_free(s);
}

static int count_pod(const struct pod_meta *p, void *ud)
{
    char *last = ud;
    char key[256];
    snprintf(key, sizeof(key), "%s/%s", p->namespace, p->name);
    assert_true(strcmp(last, key) < 0);
    snprintf(last, 256, "%s", key);
    return 0;
}

static void test_foreach_pod_and_ips(void **state)
{
    (void)state;
    struct store *s = store_new();
    put_p(s, mk_pod("b", "p2", NULL));
    put_p(s, mk_pod("a", "p9", NULL));
    struct pod_meta *p = mk_pod("a", "p1", NULL);
    p->ips = calloc(2, sizeof(char *));
    assert_non_null(p->ips);
    p->ips[0] = xstrdup("10.0.0.1");
    p->ips[1] = xstrdup("fd00::1");
    p->n_ips = 2;
    put_p(s, p);
    char last[256] = "";
    assert_int_equal(store_foreach_pod(s, count_pod, last), 0);
    assert_string_equal(last, "b/p2");
    assert_int_equal(store_get_pod(s, "a", "p1")->n_ips, 2);
    store_free(s); /* frees the IPs (ASan checks) */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grant_basic),
        cmocka_unit_test(test_cross_namespace_binding),
        cmocka_unit_test(test_namespaced_identity_lookup),
        cmocka_unit_test(test_behavior_namespaced),
        cmocka_unit_test(test_missing_identity_skipped),
        cmocka_unit_test(test_weights_and_tie_breaks),
        cmocka_unit_test(test_identity_namespace_tie_break),
        cmocka_unit_test(test_strict_selection),
        cmocka_unit_test(test_selectors),
        cmocka_unit_test(test_exceptions),
        cmocka_unit_test(test_replace_and_remove),
        cmocka_unit_test(test_identity_hash),
        cmocka_unit_test(test_foreach_order),
        cmocka_unit_test(test_json_views),
        cmocka_unit_test(test_explain),
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_foreach_grant),
        cmocka_unit_test(test_foreach_pod_and_ips),
        cmocka_unit_test(test_packed),
        cmocka_unit_test(test_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
