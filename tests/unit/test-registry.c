/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry: lookups by address (v4, v6), replace, idempotent remove, ambiguity and IP reuse (T2),
 * persistence and reload, sync after external writes, pod queries, bad files, and a concurrency
 * smoke test. Each test gets its own temporary stateDir, removed afterwards.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idbroker/errno.h>

#include <idbroker-internal/macro.h>
#include <idbroker-internal/registration.h>

#include "registry.h"
#include "test-util.h"

#include <cmocka.h>

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/idb-registry-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rm_rf(tmpdir);
}

/* A registration of pod ns/name with the given addresses (NULL-terminated list). */
static struct registration mkreg(const char *cid, const char *ifn, const char *ns, const char *name,
                                 const char *uid, uint64_t created, const char *ip1,
                                 const char *ip2)
{
    struct registration r;
    memset(&r, 0, sizeof(r));
    snprintf(r.container_id, sizeof(r.container_id), "%s", cid);
    snprintf(r.if_name, sizeof(r.if_name), "%s", ifn);
    snprintf(r.pod_namespace, sizeof(r.pod_namespace), "%s", ns);
    snprintf(r.pod_name, sizeof(r.pod_name), "%s", name);
    snprintf(r.pod_uid, sizeof(r.pod_uid), "%s", uid);
    snprintf(r.netns, sizeof(r.netns), "/var/run/netns/%s", cid);
    snprintf(r.host_ifname, sizeof(r.host_ifname), "veth%.8s", cid);
    r.host_ifindex = 12;
    r.created = created;
    snprintf(r.origin, sizeof(r.origin), "cni");
    if (ip1)
        assert_int_equal(reg_ip_parse(ip1, &r.ips[r.n_ips++]), 0);
    if (ip2)
        assert_int_equal(reg_ip_parse(ip2, &r.ips[r.n_ips++]), 0);
    return r;
}

/* Field by field: struct padding is not part of a registration. */
static void assert_reg_equal(const struct registration *a, const struct registration *b)
{
    assert_string_equal(a->container_id, b->container_id);
    assert_string_equal(a->if_name, b->if_name);
    assert_string_equal(a->pod_namespace, b->pod_namespace);
    assert_string_equal(a->pod_name, b->pod_name);
    assert_string_equal(a->pod_uid, b->pod_uid);
    assert_string_equal(a->netns, b->netns);
    assert_string_equal(a->host_ifname, b->host_ifname);
    assert_int_equal(a->host_ifindex, b->host_ifindex);
    assert_int_equal(a->n_ips, b->n_ips);
    for (size_t i = 0; i < a->n_ips; i++)
        assert_true(reg_ip_equal(&a->ips[i], &b->ips[i]));
    assert_int_equal(a->created, b->created);
    assert_string_equal(a->origin, b->origin);
}

static struct reg_ip ip(const char *s)
{
    struct reg_ip a;
    assert_int_equal(reg_ip_parse(s, &a), 0);
    return a;
}

/* Looks up an address; returns the result and copies the container ID (or "") to cid. */
static int lookup(struct registry *r, const char *addr, char *cid, size_t size)
{
    struct reg_ip a = ip(addr);
    struct registration got;
    memset(&got, 0xa5, sizeof(got));
    int k = registry_lookup_ip(r, &a, &got);
    if (k >= 0)
        snprintf(cid, size, "%s", got.container_id);
    else
        cid[0] = 0;
    return k;
}

static void test_add_lookup(void **state)
{
    (void)state;
    struct registry *r = registry_new(tmpdir);
    assert_non_null(r);
    char cid[REG_MAX_ID + 1];
    uint64_t g0 = registry_generation(r);

    struct registration a =
        mkreg("aaa", "eth0", "default", "pod-a", "uid-a", 100, "10.22.0.5", "fd00::5");
    assert_int_equal(registry_add(r, &a, false), 0);
    assert_true(registry_generation(r) > g0);
    assert_int_equal(registry_count(r), 1);

    struct registration got;
    struct reg_ip v4 = ip("10.22.0.5");
    assert_int_equal(registry_lookup_ip(r, &v4, &got), 0);
    assert_reg_equal(&got, &a);
    assert_int_equal(lookup(r, "fd00::5", cid, sizeof(cid)), 0);
    assert_string_equal(cid, "aaa");
    assert_int_equal(lookup(r, "10.22.0.6", cid, sizeof(cid)), -ENOENT);
    assert_int_equal(lookup(r, "fd00::6", cid, sizeof(cid)), -ENOENT);
    /* An IPv4 address and an IPv6 address with the same leading bytes are different. */
    assert_int_equal(lookup(r, "a16:5::", cid, sizeof(cid)), -ENOENT);
    struct reg_ip bad = {.family = AF_UNIX};
    assert_int_equal(registry_lookup_ip(r, &bad, &got), -EAFNOSUPPORT);

    /* Invalid registrations are refused and change nothing. */
    uint64_t g1 = registry_generation(r);
    struct registration inval = mkreg("../x", "eth0", "default", "p", "u", 1, "10.0.0.1", NULL);
    assert_int_equal(registry_add(r, &inval, false), -EINVAL);
    inval = mkreg("ok", "eth/0", "default", "p", "u", 1, "10.0.0.1", NULL);
    assert_int_equal(registry_add(r, &inval, true), -EINVAL);
    inval = mkreg("ok", "eth0", "default", "p", "u", 1, "10.0.0.1", NULL);
    inval.ips[0].family = 0;
    assert_int_equal(registry_add(r, &inval, false), -EINVAL);
    assert_int_equal(registry_generation(r), g1);

    /* Many registrations (the tables grow) stay reachable. */
    for (int i = 0; i < 300; i++) {
        char c[32], a4[32], a6[48];
        snprintf(c, sizeof(c), "c%03d", i);
        snprintf(a4, sizeof(a4), "10.1.%d.%d", i / 200, i % 200);
        snprintf(a6, sizeof(a6), "fd00:1::%x", i);
        struct registration x = mkreg(c, "eth0", "ns", c, c, 1, a4, a6);
        assert_int_equal(registry_add(r, &x, false), 0);
    }
    assert_int_equal(registry_count(r), 301);
    assert_int_equal(lookup(r, "10.1.1.99", cid, sizeof(cid)), 0);
    assert_string_equal(cid, "c299");
    assert_int_equal(lookup(r, "fd00:1::7", cid, sizeof(cid)), 0);
    assert_string_equal(cid, "c007");
    registry_free(r);
    assert_null(registry_free(NULL));
}

static void test_replace_remove(void **state)
{
    (void)state;
    struct registry *r = registry_new(tmpdir);
    char cid[REG_MAX_ID + 1];

    struct registration a = mkreg("aaa", "eth0", "default", "pod-a", "uid-a", 100, "10.0.0.1",
                                  "10.0.0.1"); /* a duplicate address is one claim */
    assert_int_equal(registry_add(r, &a, false), 0);
    assert_int_equal(lookup(r, "10.0.0.1", cid, sizeof(cid)), 0);
    a = mkreg("aaa", "eth0", "default", "pod-a", "uid-a", 100, "10.0.0.2", NULL);
    assert_int_equal(registry_add(r, &a, false), 0);
    assert_int_equal(registry_count(r), 1);
    assert_int_equal(lookup(r, "10.0.0.1", cid, sizeof(cid)), -ENOENT);
    assert_int_equal(lookup(r, "10.0.0.2", cid, sizeof(cid)), 0);

    /* Another ifName of the same container is a separate attachment. */
    struct registration a1 =
        mkreg("aaa", "net1", "default", "pod-a", "uid-a", 100, "10.9.0.2", NULL);
    assert_int_equal(registry_add(r, &a1, false), 0);
    assert_int_equal(registry_count(r), 2);

    uint64_t g = registry_generation(r);
    assert_int_equal(registry_remove(r, "aaa", "eth0", false), 1);
    assert_true(registry_generation(r) > g);
    g = registry_generation(r);
    assert_int_equal(registry_remove(r, "aaa", "eth0", false), 0);
    assert_int_equal(registry_remove(r, "aaa", "eth0", true), 0);
    assert_int_equal(registry_remove(r, "never", "eth0", false), 0);
    assert_int_equal(registry_generation(r), g);
    assert_int_equal(registry_remove(r, "", "eth0", false), -EINVAL);
    assert_int_equal(registry_remove(r, "aaa", "a/b", true), -EINVAL);
    assert_int_equal(lookup(r, "10.0.0.2", cid, sizeof(cid)), -ENOENT);
    assert_int_equal(lookup(r, "10.9.0.2", cid, sizeof(cid)), 0);
    assert_int_equal(registry_count(r), 1);
    registry_free(r);
}

static void test_ambiguity(void **state)
{
    (void)state;
    struct registry *r = registry_new(tmpdir);
    char cid[REG_MAX_ID + 1];

    /* Two different pods claim one address: neither gets it. */
    struct registration a = mkreg("aaa", "eth0", "ns", "pod-a", "uid-a", 100, "10.0.0.7", "fd::7");
    struct registration b = mkreg("bbb", "eth0", "ns", "pod-b", "uid-b", 200, "10.0.0.7", NULL);
    assert_int_equal(registry_add(r, &a, false), 0);
    assert_int_equal(registry_add(r, &b, false), 0);
    assert_int_equal(lookup(r, "10.0.0.7", cid, sizeof(cid)), IDB_E_AMBIGUOUS_POD);
    /* The other address of A is A's alone. */
    assert_int_equal(lookup(r, "fd::7", cid, sizeof(cid)), 0);
    assert_string_equal(cid, "aaa");

    /* Once one goes, the other is found. */
    assert_int_equal(registry_remove(r, "aaa", "eth0", false), 1);
    assert_int_equal(lookup(r, "10.0.0.7", cid, sizeof(cid)), 0);
    assert_string_equal(cid, "bbb");

    /* Two sandboxes of the same pod (same UID) are not ambiguous: the newest answers. */
    struct registration b2 = mkreg("bbb2", "eth0", "ns", "pod-b", "uid-b", 300, "10.0.0.7", NULL);
    assert_int_equal(registry_add(r, &b2, false), 0);
    assert_int_equal(lookup(r, "10.0.0.7", cid, sizeof(cid)), 0);
    assert_string_equal(cid, "bbb2");

    /* Same name but an unknown UID is not provably the same pod. */
    struct registration b3 = mkreg("bbb3", "eth0", "ns", "pod-b", "", 400, "10.0.0.8", NULL);
    struct registration b4 = mkreg("bbb4", "eth0", "ns", "pod-b", "", 500, "10.0.0.8", NULL);
    assert_int_equal(registry_add(r, &b3, false), 0);
    assert_int_equal(registry_add(r, &b4, false), 0);
    assert_int_equal(lookup(r, "10.0.0.8", cid, sizeof(cid)), IDB_E_AMBIGUOUS_POD);

    /* A third, different pod on the same-pod pair makes it ambiguous again. */
    struct registration c = mkreg("ccc", "eth0", "ns", "pod-c", "uid-c", 50, "10.0.0.7", NULL);
    assert_int_equal(registry_add(r, &c, false), 0);
    assert_int_equal(lookup(r, "10.0.0.7", cid, sizeof(cid)), IDB_E_AMBIGUOUS_POD);
    registry_free(r);
}

static void test_ip_reuse(void **state)
{
    (void)state;
    struct registry *r = registry_new(tmpdir);
    char cid[REG_MAX_ID + 1];
    struct registration a = mkreg("aaa", "eth0", "ns", "pod-a", "uid-a", 100, "10.0.0.9", NULL);
    struct registration b = mkreg("bbb", "eth0", "ns", "pod-b", "uid-b", 200, "10.0.0.9", NULL);

    assert_int_equal(registry_add(r, &a, true), 0);
    assert_int_equal(registry_remove(r, "aaa", "eth0", true), 1);
    assert_int_equal(registry_add(r, &b, true), 0);
    struct registration got;
    struct reg_ip x = ip("10.0.0.9");
    assert_int_equal(registry_lookup_ip(r, &x, &got), 0);
    assert_string_equal(got.container_id, "bbb");
    assert_string_equal(got.pod_name, "pod-b");
    assert_string_equal(got.pod_uid, "uid-b");

    /* Also after a restart. */
    registry_free(r);
    r = registry_new(tmpdir);
    assert_int_equal(registry_load(r, NULL, NULL), 1);
    assert_int_equal(lookup(r, "10.0.0.9", cid, sizeof(cid)), 0);
    assert_string_equal(cid, "bbb");
    registry_free(r);
}

struct collect {
    struct registration regs[16];
    size_t n;
};

static int collect_cb(const struct registration *reg, void *ud)
{
    struct collect *c = ud;
    if (c->n >= 16)
        return -E2BIG;
    c->regs[c->n++] = *reg;
    return 0;
}

static void test_persist_load(void **state)
{
    (void)state;
    struct registry *r = registry_new(tmpdir);
    struct registration regs[] = {
        mkreg("ccc", "eth0", "ns1", "pod-c", "uid-c", 3, "10.0.0.3", "fd00::3"),
        mkreg("aaa", "eth0", "ns1", "pod-a", "uid-a", 1, "10.0.0.1", NULL),
        mkreg("bbb", "net1", "ns2", "pod-b", "uid-b", 2, "fd00::2", NULL),
    };
    for (size_t i = 0; i < ELEMENTSOF(regs); i++)
        assert_int_equal(registry_add(r, &regs[i], true), 0);
    /* A memory-only registration does not survive. */
    struct registration mem = mkreg("zzz", "eth0", "ns1", "pod-z", "uid-z", 9, "10.0.0.26", NULL);
    assert_int_equal(registry_add(r, &mem, false), 0);

    /* The files are there, in the shared format. */
    struct registration disk;
    assert_int_equal(registration_load(tmpdir, "bbb", "net1", &disk), 0);
    assert_reg_equal(&disk, &regs[2]);
    assert_int_equal(registration_load(tmpdir, "zzz", "eth0", &disk), -ENOENT);

    struct collect before = {0};
    assert_int_equal(registry_foreach(r, collect_cb, &before), 4);
    assert_string_equal(before.regs[0].container_id, "aaa");
    assert_string_equal(before.regs[1].container_id, "bbb");
    assert_string_equal(before.regs[2].container_id, "ccc");
    assert_string_equal(before.regs[3].container_id, "zzz");
    registry_free(r);

    r = registry_new(tmpdir);
    assert_int_equal(registry_count(r), 0);
    uint64_t g = registry_generation(r);
    assert_int_equal(registry_load(r, NULL, NULL), 3);
    assert_true(registry_generation(r) > g);
    struct collect after = {0};
    assert_int_equal(registry_foreach(r, collect_cb, &after), 3);
    for (size_t i = 0; i < 3; i++)
        assert_reg_equal(&after.regs[i], &before.regs[i]);

    /* load replaces the set: a memory-only entry disappears. */
    assert_int_equal(registry_add(r, &mem, false), 0);
    assert_int_equal(registry_load(r, NULL, NULL), 3);
    char cid[REG_MAX_ID + 1];
    assert_int_equal(lookup(r, "10.0.0.26", cid, sizeof(cid)), -ENOENT);

    /* A callback error stops foreach and is returned. */
    struct collect full = {.n = 16};
    assert_int_equal(registry_foreach(r, collect_cb, &full), -E2BIG);
    registry_free(r);

    /* An empty or missing stateDir loads nothing. */
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/sub", tmpdir);
    r = registry_new(missing);
    assert_int_equal(registry_load(r, NULL, NULL), 0);
    struct collect none = {0};
    assert_int_equal(registry_foreach(r, collect_cb, &none), 0);
    registry_free(r);
}

static void test_sync(void **state)
{
    (void)state;
    struct registry *r = registry_new(tmpdir);
    char cid[REG_MAX_ID + 1];

    /* Nothing there, nothing known. */
    assert_int_equal(registry_sync(r, "aaa", "eth0"), 0);
    assert_int_equal(registry_sync(r, "../etc", "eth0"), -EINVAL);

    /* The CNI plugin writes a file, then asks for a sync. */
    struct registration a = mkreg("aaa", "eth0", "ns", "pod-a", "uid-a", 1, "10.0.1.1", NULL);
    assert_int_equal(registration_save(tmpdir, &a), 0);
    assert_int_equal(lookup(r, "10.0.1.1", cid, sizeof(cid)), -ENOENT);
    assert_int_equal(registry_sync(r, "aaa", "eth0"), 1);
    assert_int_equal(lookup(r, "10.0.1.1", cid, sizeof(cid)), 0);
    assert_string_equal(cid, "aaa");

    /* A rewritten file replaces the registration. */
    a = mkreg("aaa", "eth0", "ns", "pod-a", "uid-a", 1, "10.0.1.2", NULL);
    assert_int_equal(registration_save(tmpdir, &a), 0);
    assert_int_equal(registry_sync(r, "aaa", "eth0"), 1);
    assert_int_equal(lookup(r, "10.0.1.1", cid, sizeof(cid)), -ENOENT);
    assert_int_equal(lookup(r, "10.0.1.2", cid, sizeof(cid)), 0);

    /* DEL removed the file. */
    assert_int_equal(registration_remove(tmpdir, "aaa", "eth0"), 0);
    uint64_t g = registry_generation(r);
    assert_int_equal(registry_sync(r, "aaa", "eth0"), 0);
    assert_true(registry_generation(r) > g);
    assert_int_equal(lookup(r, "10.0.1.2", cid, sizeof(cid)), -ENOENT);
    assert_int_equal(registry_count(r), 0);

    /* A corrupt file is an error and leaves memory as it was. */
    assert_int_equal(registry_add(r, &a, true), 0);
    char path[REG_MAX_PATH];
    assert_int_equal(registration_path(tmpdir, "aaa", "eth0", path, sizeof(path)), 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"version\":1,", f);
    fclose(f);
    assert_true(registry_sync(r, "aaa", "eth0") < 0);
    assert_int_equal(lookup(r, "10.0.1.2", cid, sizeof(cid)), 0);
    registry_free(r);
}

static void test_pods(void **state)
{
    (void)state;
    struct registry *r = registry_new(tmpdir);
    struct registration got;

    struct registration x1 = mkreg("xxx", "net1", "ns", "web", "uid-w", 10, "10.0.2.2", NULL);
    struct registration x0 = mkreg("xxx", "eth0", "ns", "web", "uid-w", 11, "10.0.2.1", NULL);
    struct registration o = mkreg("ooo", "eth0", "other", "web", "uid-o", 10, "10.0.2.3", NULL);
    assert_int_equal(registry_add(r, &x1, true), 0);
    assert_int_equal(registry_add(r, &x0, true), 0);
    assert_int_equal(registry_add(r, &o, true), 0);

    assert_true(registry_has_pod(r, "ns", "web"));
    assert_true(registry_has_pod(r, "other", "web"));
    assert_false(registry_has_pod(r, "ns", "db"));
    assert_false(registry_has_pod(r, "", ""));
    assert_int_equal(registry_find_pod(r, "ns", "web", &got), 0);
    assert_string_equal(got.if_name, "eth0");
    assert_string_equal(got.pod_uid, "uid-w");
    assert_int_equal(registry_find_pod(r, "ns", "db", &got), -ENOENT);

    /* A stale sandbox of the same pod: its newest eth0 is the first attachment. */
    struct registration y0 = mkreg("yyy", "eth0", "ns", "web", "uid-w", 20, "10.0.2.9", NULL);
    assert_int_equal(registry_add(r, &y0, false), 0);
    assert_int_equal(registry_find_pod(r, "ns", "web", &got), 0);
    assert_string_equal(got.container_id, "yyy");
    assert_int_equal(registry_remove(r, "yyy", "eth0", false), 1);

    assert_int_equal(registry_remove_pod(r, "ns", "web", true), 2);
    assert_false(registry_has_pod(r, "ns", "web"));
    assert_true(registry_has_pod(r, "other", "web"));
    assert_int_equal(registration_load(tmpdir, "xxx", "eth0", &got), -ENOENT);
    assert_int_equal(registration_load(tmpdir, "xxx", "net1", &got), -ENOENT);
    assert_int_equal(registration_load(tmpdir, "ooo", "eth0", &got), 0);
    assert_int_equal(registry_remove_pod(r, "ns", "web", true), 0);
    assert_int_equal(registry_remove_pod(r, "other", "web", false), 1);
    assert_int_equal(registry_count(r), 0);
    /* Memory-only removal left the file. */
    assert_int_equal(registry_load(r, NULL, NULL), 1);
    registry_free(r);
}

struct bad_seen {
    int calls;
    int error;
    char path[REG_MAX_PATH];
};

static void bad_cb(const char *path, int error, const char *why, void *ud)
{
    struct bad_seen *b = ud;
    assert_non_null(why);
    b->calls++;
    b->error = error;
    snprintf(b->path, sizeof(b->path), "%s", path);
}

static void test_bad_file(void **state)
{
    (void)state;
    struct registration good = mkreg("good", "eth0", "ns", "pod", "uid", 1, "10.0.3.1", NULL);
    assert_int_equal(registration_save(tmpdir, &good), 0);
    char path[REG_MAX_PATH + 64];
    snprintf(path, sizeof(path), "%s/pods/bad@eth0.json", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("not json", f);
    fclose(f);

    struct registry *r = registry_new(tmpdir);
    struct bad_seen seen = {0};
    assert_int_equal(registry_load(r, bad_cb, &seen), 1);
    assert_int_equal(seen.calls, 1);
    assert_true(seen.error < 0);
    assert_non_null(strstr(seen.path, "bad@eth0.json"));
    char cid[REG_MAX_ID + 1];
    assert_int_equal(lookup(r, "10.0.3.1", cid, sizeof(cid)), 0);
    registry_free(r);
}

struct worker {
    struct registry *r;
    int id;
    int failures;
};

static void *worker_thread(void *p)
{
    struct worker *w = p;
    for (int j = 0; j < 200; j++) {
        char c[32], a[32];
        snprintf(c, sizeof(c), "t%d-%d", w->id, j % 10);
        snprintf(a, sizeof(a), "10.%d.0.%d", w->id, j % 10);
        bool persist = j % 20 == 0;
        struct registration reg = mkreg(c, "eth0", "ns", c, c, (uint64_t)j, a, "fd00::1");
        if (registry_add(w->r, &reg, persist) < 0)
            w->failures++;
        struct reg_ip x;
        struct registration got;
        reg_ip_parse(a, &x);
        if (registry_lookup_ip(w->r, &x, &got) < 0 || strcmp(got.container_id, c) != 0)
            w->failures++;
        /* fd00::1 is claimed by every thread's pods: ambiguous or (alone) found, never corrupt. */
        reg_ip_parse("fd00::1", &x);
        int k = registry_lookup_ip(w->r, &x, &got);
        if (k < 0 && k != IDB_E_AMBIGUOUS_POD && k != -ENOENT)
            w->failures++;
        registry_has_pod(w->r, "ns", c);
        registry_count(w->r);
        if (registry_remove(w->r, c, "eth0", persist) != 1)
            w->failures++;
    }
    return NULL;
}

static int count_cb(const struct registration *reg, void *ud)
{
    (void)reg;
    (*(int *)ud)++;
    return 0;
}

static void test_concurrency(void **state)
{
    (void)state;
    enum { N = 4 };
    struct registry *r = registry_new(tmpdir);
    struct worker w[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){.r = r, .id = i + 1};
        assert_int_equal(pthread_create(&th[i], NULL, worker_thread, &w[i]), 0);
    }
    /* Readers of whole snapshots run alongside. */
    for (int i = 0; i < 50; i++) {
        int n = 0;
        assert_true(registry_foreach(r, count_cb, &n) >= 0);
        assert_true(n <= N);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(registry_count(r), 0);
    assert_int_equal(registry_load(r, NULL, NULL), 0);
    registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ambiguity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ip_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persist_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
