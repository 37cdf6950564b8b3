/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The issuer over a real in-process world: a policy built from manifest text, a registry on a
 * temporary stateDir, a token cache, and the test providers (tests/plugins/good.c, hang.c) loaded
 * by the real loader from a temporary 0755 directory. Each test builds its own world and removes
 * it. Nothing asserts on how long something took, except that a wait lasted at least as long as
 * its deadline (a lower bound the issuer guarantees).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <idbroker/errno.h>
#include <idbroker/provider.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/registration.h>

#include "host-api.h"
#include "issuer.h"
#include "manifest.h"
#include "plugin-loader.h"
#include "policy.h"
#include "registry.h"
#include "store.h"
#include "test-util.h"
#include "token-cache.h"

#include <cmocka.h>

/* ---- the world ---- */

#define ID(name, client, extra)                                                                    \
    "apiVersion: aadpodidentity.k8s.io/v1\n"                                                       \
    "kind: AzureIdentity\n"                                                                        \
    "metadata: {name: " name ", namespace: default" extra "}\n"                                    \
    "spec: {type: 0, clientID: " client ", resourceID: /r/" name "}\n"                             \
    "---\n"
#define GOOD ", annotations: {idbroker.io/provider: good}"
#define BIND(name, identity, selector)                                                             \
    "apiVersion: aadpodidentity.k8s.io/v1\n"                                                       \
    "kind: AzureIdentityBinding\n"                                                                 \
    "metadata: {name: " name ", namespace: default}\n"                                             \
    "spec: {azureIdentity: " identity ", selector: " selector "}\n"                                \
    "---\n"
#define POD(name, uid, selector)                                                                   \
    "apiVersion: v1\n"                                                                             \
    "kind: Pod\n"                                                                                  \
    "metadata: {name: " name ", namespace: default, uid: " uid                                     \
    ", labels: {aadpodidbinding: " selector "}}\n"                                                 \
    "---\n"

/* pod-a: one identity. pod-b: two (selectable by client ID). pod-np: an identity whose provider
 * is not loaded. pod-t: an identity without a provider annotation (typeProviders[0] = good).
 * pod-u: the policy's UID differs from the registration's. pod-nm (registered only) and pod-k
 * (registered only) have no Pod manifest. */
static const char policy_yaml[] =
    ID("id-a", "c-a", GOOD) BIND("b-a", "id-a", "sel-a") ID("id-b1", "c-b1", GOOD)
        ID("id-b2", "c-b2", GOOD) BIND("b-b1", "id-b1", "sel-b") BIND("b-b2", "id-b2", "sel-b")
            ID("id-np", "c-np", ", annotations: {idbroker.io/provider: missing}")
                BIND("b-np", "id-np", "sel-np") ID("id-t", "c-t", "") BIND("b-t", "id-t", "sel-t")
                    POD("pod-a", "uid-a", "sel-a") POD("pod-b", "uid-b", "sel-b")
                        POD("pod-np", "uid-np", "sel-np") POD("pod-t", "uid-t", "sel-t")
                            POD("pod-u", "uid-new", "sel-a");

struct world_opts {
    const char *good_conf; /* NULL: "{}" */
    bool kubernetes;       /* authoritative = false */
    uint32_t sync_timeout_ms;
    uint32_t provider_timeout_ms;
    uint32_t rate, burst;
    bool audit;
    bool hang; /* load hang.so too */
};

struct world {
    char state_dir[64];
    char plugin_dir[64];
    struct policy policy;
    struct registry *registry;
    struct token_cache *cache;
    struct plugin_set *plugins;
    struct issuer *issuer;
};

static void install(const char *dir, const char *name)
{
    char src[512], dst[512], data[65536];
    snprintf(src, sizeof(src), "%s/%s.so", IDB_TEST_PLUGIN_DIR, name);
    snprintf(dst, sizeof(dst), "%s/%s.so", dir, name);
    int in = open(src, O_RDONLY | O_CLOEXEC);
    assert_true(in >= 0);
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(out >= 0);
    ssize_t n;
    while ((n = read(in, data, sizeof(data))) > 0)
        assert_int_equal(write(out, data, (size_t)n), n);
    assert_int_equal(n, 0);
    close(in);
    assert_int_equal(fchmod(out, 0644), 0);
    close(out);
}

static struct store *parse_policy(const char *yaml)
{
    struct store *s = store_new();
    assert_non_null(s);
    char *err = NULL;
    int r = manifest_parse(yaml, strlen(yaml), "test.yaml", s, &err);
    if (r < 0)
        fail_msg("policy: %s", err ? err : "?");
    return s;
}

static struct registration mkreg(const char *cid, const char *name, const char *uid, const char *ip)
{
    struct registration r;
    memset(&r, 0, sizeof(r));
    snprintf(r.container_id, sizeof(r.container_id), "%s", cid);
    snprintf(r.if_name, sizeof(r.if_name), "eth0");
    snprintf(r.pod_namespace, sizeof(r.pod_namespace), "default");
    snprintf(r.pod_name, sizeof(r.pod_name), "%s", name);
    snprintf(r.pod_uid, sizeof(r.pod_uid), "%s", uid);
    assert_int_equal(reg_ip_parse(ip, &r.ips[0]), 0);
    r.n_ips = 1;
    r.created = 1700000000;
    snprintf(r.origin, sizeof(r.origin), "cni");
    return r;
}

static void add_reg(struct world *w, const char *cid, const char *name, const char *uid,
                    const char *ip)
{
    struct registration r = mkreg(cid, name, uid, ip);
    assert_int_equal(registry_add(w->registry, &r, true), 0);
}

static struct world *world_new(const struct world_opts *o)
{
    struct world *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    snprintf(w->state_dir, sizeof(w->state_dir), "/tmp/idb-issuer-state-XXXXXX");
    snprintf(w->plugin_dir, sizeof(w->plugin_dir), "/tmp/idb-issuer-plugins-XXXXXX");
    assert_non_null(mkdtemp(w->state_dir));
    assert_non_null(mkdtemp(w->plugin_dir));
    assert_int_equal(chmod(w->plugin_dir, 0755), 0);
    install(w->plugin_dir, "good");
    if (o->hang)
        install(w->plugin_dir, "hang");

    assert_int_equal(host_api_init(NULL), 0);
    struct store_policy f = {.namespaced = true};
    assert_int_equal(policy_init(&w->policy, &f, !o->kubernetes), 0);
    policy_replace(&w->policy, parse_policy(policy_yaml));
    w->registry = registry_new(w->state_dir);
    assert_non_null(w->registry);
    struct tc_options tco = {.max_entries = 100, .min_ttl_s = 60, .negative_ms = 0};
    w->cache = token_cache_new(&tco);
    assert_non_null(w->cache);
    w->plugins = plugin_set_new();
    assert_non_null(w->plugins);
    char *err = NULL;
    if (plugin_set_load(w->plugins, w->plugin_dir, "good", o->good_conf ? o->good_conf : "{}",
                        host_api_get(), &err) < 0)
        fail_msg("load good: %s", err ? err : "?");
    if (o->hang &&
        plugin_set_load(w->plugins, w->plugin_dir, "hang", "{}", host_api_get(), &err) < 0)
        fail_msg("load hang: %s", err ? err : "?");

    struct issuer_options io = {
        .registry = w->registry,
        .policy = &w->policy,
        .cache = w->cache,
        .plugins = w->plugins,
        .type_providers = {"good", NULL, NULL},
        .sync_timeout_ms = o->sync_timeout_ms,
        .provider_timeout_ms = o->provider_timeout_ms ? o->provider_timeout_ms : 10000,
        .retry_after_s = 7,
        .rate_per_pod = o->rate,
        .rate_burst = o->burst,
        .audit = o->audit,
    };
    w->issuer = issuer_new(&io);
    assert_non_null(w->issuer);

    add_reg(w, "ca", "pod-a", "uid-a", "10.0.0.1");
    add_reg(w, "cb", "pod-b", "uid-b", "10.0.0.2");
    add_reg(w, "cnp", "pod-np", "uid-np", "10.0.0.3");
    add_reg(w, "ct", "pod-t", "uid-t", "10.0.0.4");
    add_reg(w, "cu", "pod-u", "uid-old", "10.0.0.5");
    add_reg(w, "cnm", "pod-nm", "uid-nm", "10.0.0.6");
    add_reg(w, "ck", "pod-k", "uid-k", "fd00::7");
    return w;
}

static void world_free(struct world *w)
{
    issuer_free(w->issuer);
    token_cache_free(w->cache);
    plugin_set_free(w->plugins);
    registry_free(w->registry);
    policy_done(&w->policy);
    host_api_done();
    assert_int_equal(rm_rf(w->state_dir), 0);
    assert_int_equal(rm_rf(w->plugin_dir), 0);
    free(w);
}

static const struct issue_request plain = {.resource = "https://management.azure.com/"};

static void issue4(struct world *w, const char *ip, const struct issue_request *req,
                   struct issue_result *ret)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(40000)};
    assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
    issuer_issue_for_peer(w->issuer, (const struct sockaddr *)&sin, sizeof(sin), req, ret);
}

static void issue6(struct world *w, const char *ip, const struct issue_request *req,
                   struct issue_result *ret)
{
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(40000)};
    assert_int_equal(inet_pton(AF_INET6, ip, &sin6.sin6_addr), 1);
    issuer_issue_for_peer(w->issuer, (const struct sockaddr *)&sin6, sizeof(sin6), req, ret);
}

/* The granted token's text, copied (the result is released by the caller). */
static void expect_granted(const struct issue_result *r, const char *identity, const char *client)
{
    if (r->code != 0)
        fail_msg("expected a token, got %d (%s): %s", r->code, idb_strerror(r->code), r->reason);
    assert_non_null(r->token);
    assert_non_null(r->token->access_token);
    assert_string_equal(r->identity, identity);
    assert_string_equal(r->client_id, client);
}

static void expect_denied(const struct issue_result *r, int code)
{
    if (r->code != code)
        fail_msg("expected %d (%s), got %d (%s): %s", code, idb_strerror(code), r->code,
                 idb_strerror(r->code), r->reason);
    assert_null(r->token);
    assert_true(r->reason[0] != '\0');
}

/* ---- tests ---- */

static void test_unknown_peer(void **state)
{
    (void)state;
    struct world_opts o = {0};
    struct world *w = world_new(&o);
    struct issue_result r;
    issue4(w, "10.9.9.9", &plain, &r);
    expect_denied(&r, IDB_E_UNKNOWN_POD);
    assert_string_equal(r.pod, "addr:10.9.9.9");
    assert_string_equal(r.identity, "");
    issuer_result_done(w->issuer, &r);

    issue6(w, "fd00::99", &plain, &r);
    expect_denied(&r, IDB_E_UNKNOWN_POD);
    assert_string_equal(r.pod, "addr:fd00::99");
    issuer_result_done(w->issuer, &r);

    /* An address family the registry does not know (AF_UNIX) is an unknown pod too. */
    struct sockaddr_storage ss = {.ss_family = AF_UNIX};
    issuer_issue_for_peer(w->issuer, (const struct sockaddr *)&ss, sizeof(ss), &plain, &r);
    expect_denied(&r, IDB_E_UNKNOWN_POD);
    assert_string_equal(r.pod, "addr:?");
    issuer_result_done(w->issuer, &r);

    /* By name. */
    issuer_issue_for_pod(w->issuer, "default", "nobody", &plain, &r);
    expect_denied(&r, IDB_E_UNKNOWN_POD);
    assert_string_equal(r.pod, "default/nobody");
    issuer_result_done(w->issuer, &r);
    world_free(w);
}

static void test_granted(void **state)
{
    (void)state;
    struct world_opts o = {0};
    struct world *w = world_new(&o);
    struct issue_result r;
    issue4(w, "10.0.0.1", &plain, &r);
    expect_granted(&r, "default/id-a", "c-a");
    assert_string_equal(r.pod, "default/pod-a");
    assert_string_equal(r.token->access_token, "good-token-1");
    assert_true(r.token->expires_on > (uint64_t)time(NULL));
    issuer_result_done(w->issuer, &r);
    assert_null(r.token);

    /* The second request is a cache hit: the same token, no second provider call. */
    issue4(w, "10.0.0.1", &plain, &r);
    expect_granted(&r, "default/id-a", "c-a");
    assert_string_equal(r.token->access_token, "good-token-1");
    issuer_result_done(w->issuer, &r);

    /* bypass_cache fetches anew. */
    struct issue_request bypass = plain;
    bypass.bypass_cache = true;
    issue4(w, "10.0.0.1", &bypass, &r);
    expect_granted(&r, "default/id-a", "c-a");
    assert_string_equal(r.token->access_token, "good-token-2");
    issuer_result_done(w->issuer, &r);

    /* Another resource is another key. */
    struct issue_request other = {.resource = "https://vault.azure.net"};
    issue4(w, "10.0.0.1", &other, &r);
    expect_granted(&r, "default/id-a", "c-a");
    assert_string_equal(r.token->access_token, "good-token-3");
    issuer_result_done(w->issuer, &r);

    /* By name, as the control socket asks. */
    issuer_issue_for_pod(w->issuer, "default", "pod-a", &plain, &r);
    expect_granted(&r, "default/id-a", "c-a");
    assert_string_equal(r.token->access_token, "good-token-2");
    issuer_result_done(w->issuer, &r);

    /* No provider annotation: typeProviders[type] serves it. */
    issue4(w, "10.0.0.4", &plain, &r);
    expect_granted(&r, "default/id-t", "c-t");
    issuer_result_done(w->issuer, &r);
    world_free(w);
}

static void test_v4_mapped_peer(void **state)
{
    (void)state;
    struct world_opts o = {0};
    struct world *w = world_new(&o);
    struct issue_result r;
    /* A dual-stack socket reports IPv4 callers as ::ffff:a.b.c.d. */
    issue6(w, "::ffff:10.0.0.1", &plain, &r);
    expect_granted(&r, "default/id-a", "c-a");
    assert_string_equal(r.pod, "default/pod-a");
    issuer_result_done(w->issuer, &r);
    /* An unknown mapped address is reported in its IPv4 form. */
    issue6(w, "::ffff:10.0.0.9", &plain, &r);
    expect_denied(&r, IDB_E_UNKNOWN_POD);
    assert_string_equal(r.pod, "addr:10.0.0.9");
    issuer_result_done(w->issuer, &r);
    world_free(w);
}

static void test_selectors(void **state)
{
    (void)state;
    struct world_opts o = {0};
    struct world *w = world_new(&o);
    struct issue_result r;
    struct issue_request req = plain;
    req.sel = SELECTOR_CLIENT_ID;
    req.sel_value = "nope";
    issue4(w, "10.0.0.2", &req, &r);
    expect_denied(&r, IDB_E_IDENTITY_NOT_FOUND);
    assert_string_equal(r.pod, "default/pod-b");
    issuer_result_done(w->issuer, &r);

    req.sel_value = "C-B2"; /* client IDs compare case-insensitively */
    issue4(w, "10.0.0.2", &req, &r);
    expect_granted(&r, "default/id-b2", "c-b2");
    issuer_result_done(w->issuer, &r);

    req.sel = SELECTOR_RESOURCE_ID;
    req.sel_value = "/r/id-b1";
    issue4(w, "10.0.0.2", &req, &r);
    expect_granted(&r, "default/id-b1", "c-b1");
    issuer_result_done(w->issuer, &r);

    /* pod-a is bound only to id-a: asking for id-b1 is refused, not answered with id-a. */
    req.sel = SELECTOR_CLIENT_ID;
    req.sel_value = "c-b1";
    issue4(w, "10.0.0.1", &req, &r);
    expect_denied(&r, IDB_E_IDENTITY_NOT_FOUND);
    issuer_result_done(w->issuer, &r);
    world_free(w);
}

static void test_files_mode_no_manifest(void **state)
{
    (void)state;
    /* A sync timeout that would make the test slow if files mode waited for the pod. */
    struct world_opts o = {.sync_timeout_ms = 50000};
    struct world *w = world_new(&o);
    struct issue_result r;
    issue4(w, "10.0.0.6", &plain, &r);
    expect_denied(&r, IDB_E_NO_BINDING);
    assert_string_equal(r.pod, "default/pod-nm");
    assert_non_null(strstr(r.reason, "no Pod manifest"));
    assert_int_equal(r.retry_after_s, 0);
    issuer_result_done(w->issuer, &r);
    world_free(w);
}

static void test_kubernetes_not_synced(void **state)
{
    (void)state;
    struct world_opts o = {.kubernetes = true, .sync_timeout_ms = 100};
    struct world *w = world_new(&o);
    struct issue_result r;
    uint64_t t0 = now_monotonic_ms();
    issue6(w, "fd00::7", &plain, &r);
    uint64_t waited = now_monotonic_ms() - t0;
    expect_denied(&r, IDB_E_NOT_SYNCED);
    assert_string_equal(r.pod, "default/pod-k");
    assert_int_equal(r.retry_after_s, 7);
    /* It waited for the policy for the whole sync timeout before giving up. */
    assert_true(waited >= 100);
    issuer_result_done(w->issuer, &r);

    /* A pod the policy does know is served at once in kubernetes mode too. */
    issue4(w, "10.0.0.1", &plain, &r);
    expect_granted(&r, "default/id-a", "c-a");
    issuer_result_done(w->issuer, &r);
    world_free(w);
}

struct putter {
    struct policy *policy;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool go;
};

static void *put_pod_later(void *ud)
{
    struct putter *p = ud;
    pthread_mutex_lock(&p->lock);
    while (!p->go)
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
    /* Give the request a moment to start waiting. Either order is correct (a pod that appears
     * before the request looks is simply found); this only makes the wake-up path the usual one. */
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    struct pod_meta *pm = calloc(1, sizeof(*pm));
    struct kv *l = calloc(1, sizeof(*l));
    assert_non_null(pm);
    assert_non_null(l);
    pm->namespace = strdup("default");
    pm->name = strdup("pod-k");
    pm->uid = strdup("uid-k");
    l->key = strdup("aadpodidbinding");
    l->value = strdup("sel-a");
    pm->labels = l;
    pm->n_labels = 1;
    policy_write_lock(p->policy);
    assert_int_equal(store_put_pod(p->policy->store, pm), 0);
    policy_write_unlock(p->policy);
    return NULL;
}

static void test_kubernetes_change_during_wait(void **state)
{
    (void)state;
    /* A long sync timeout: if the change did not wake the request it would end NOT_SYNCED. */
    struct world_opts o = {.kubernetes = true, .sync_timeout_ms = 40000};
    struct world *w = world_new(&o);
    struct putter p = {.policy = &w->policy};
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.cond, NULL);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, put_pod_later, &p), 0);
    pthread_mutex_lock(&p.lock);
    p.go = true;
    pthread_cond_signal(&p.cond);
    pthread_mutex_unlock(&p.lock);

    struct issue_result r;
    issue6(w, "fd00::7", &plain, &r);
    assert_int_equal(pthread_join(t, NULL), 0);
    expect_granted(&r, "default/id-a", "c-a");
    assert_string_equal(r.pod, "default/pod-k");
    issuer_result_done(w->issuer, &r);
    pthread_mutex_destroy(&p.lock);
    pthread_cond_destroy(&p.cond);
    world_free(w);
}

static void test_uid_mismatch(void **state)
{
    (void)state;
    struct world_opts o = {.sync_timeout_ms = 20};
    struct world *w = world_new(&o);
    struct issue_result r;
    /* pod-u is registered with uid-old; the policy knows a pod-u with uid-new: another pod of the
     * same name. Never served as if it were the same pod (THREATS T2). */
    issue4(w, "10.0.0.5", &plain, &r);
    expect_denied(&r, IDB_E_NOT_SYNCED);
    assert_int_equal(r.retry_after_s, 7);
    assert_non_null(strstr(r.reason, "uid-old"));
    assert_non_null(strstr(r.reason, "uid-new"));
    issuer_result_done(w->issuer, &r);

    /* Once the registration is the policy's pod, it is served. */
    add_reg(w, "cu", "pod-u", "uid-new", "10.0.0.5");
    issue4(w, "10.0.0.5", &plain, &r);
    expect_granted(&r, "default/id-a", "c-a");
    issuer_result_done(w->issuer, &r);

    /* A registration without a UID (an old runtime) is not compared. */
    add_reg(w, "cu", "pod-u", "", "10.0.0.5");
    issue4(w, "10.0.0.5", &plain, &r);
    expect_granted(&r, "default/id-a", "c-a");
    issuer_result_done(w->issuer, &r);
    world_free(w);
}

static void test_no_provider(void **state)
{
    (void)state;
    struct world_opts o = {0};
    struct world *w = world_new(&o);
    struct issue_result r;
    issue4(w, "10.0.0.3", &plain, &r);
    expect_denied(&r, IDB_E_NO_PROVIDER);
    assert_string_equal(r.identity, "default/id-np");
    assert_non_null(strstr(r.reason, "'missing'"));
    issuer_result_done(w->issuer, &r);
    world_free(w);
}

static void test_provider_fails(void **state)
{
    (void)state;
    struct world_opts o = {.good_conf = "{\"fail\":\"4xx\"}"};
    struct world *w = world_new(&o);
    struct issue_result r;
    issue4(w, "10.0.0.1", &plain, &r);
    expect_denied(&r, IDB_E_UPSTREAM_4XX);
    assert_int_equal(r.upstream_status, 400);
    assert_non_null(r.upstream_error);
    assert_non_null(strstr(r.upstream_error, "invalid_request"));
    assert_string_equal(r.identity, "default/id-a");
    issuer_result_done(w->issuer, &r);
    assert_null(r.upstream_error);
    world_free(w);

    struct world_opts u = {.good_conf = "{\"fail\":\"unavailable\"}"};
    w = world_new(&u);
    issue4(w, "10.0.0.1", &plain, &r);
    expect_denied(&r, IDB_E_UPSTREAM_UNAVAILABLE);
    assert_int_equal(r.retry_after_s, 5); /* the provider's, not the broker's default */
    assert_int_equal(r.upstream_status, 0);
    assert_null(r.upstream_error);
    issuer_result_done(w->issuer, &r);
    world_free(w);
}

/* Runs in a child process: a hanging provider call keeps a cache worker busy for a minute, which
 * only process exit ends. Returns the number of the failed check, or 0. */
static int hang_child(void)
{
    int step = 0;
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        step++;                                                                                    \
        if (!(x))                                                                                  \
            return step;                                                                           \
    } while (0)
    struct world_opts o = {.hang = true, .provider_timeout_ms = 200};
    struct world *w = world_new(&o);
    /* Serve id-a through the hanging provider. */
    struct store *s = parse_policy(ID("id-a", "c-a", ", annotations: {idbroker.io/provider: hang}")
                                       BIND("b-a", "id-a", "sel-a") POD("pod-a", "uid-a", "sel-a")
                                           ID("id-t", "c-t", "") BIND("b-t", "id-t", "sel-t")
                                               POD("pod-t", "uid-t", "sel-t"));
    policy_replace(&w->policy, s);
    struct issue_result r;
    uint64_t t0 = now_monotonic_ms();
    issue4(w, "10.0.0.1", &plain, &r);
    uint64_t waited = now_monotonic_ms() - t0;
    CHECK(r.code == IDB_E_PROVIDER_TIMEOUT);
    CHECK(r.token == NULL);
    CHECK(streq(r.identity, "default/id-a"));
    CHECK(r.retry_after_s == 7);
    CHECK(waited >= 200); /* not before its deadline */
    /* A second request joins the same hanging fetch and times out as well. */
    issue4(w, "10.0.0.1", &plain, &r);
    CHECK(r.code == IDB_E_PROVIDER_TIMEOUT);
    /* The broker is not stuck: other providers still serve. */
    issue4(w, "10.0.0.4", &plain, &r);
    CHECK(r.code == 0);
    issuer_result_done(w->issuer, &r);
    CHECK(token_cache_wait_idle(w->cache, now_monotonic_ms() + 10) == -ETIMEDOUT);
    rm_rf(w->state_dir);
    rm_rf(w->plugin_dir);
#undef CHECK
    return 0;
}

static void test_provider_hangs(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(hang_child()); /* no clean-up: the hanging call ends with the process */
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("check %d of hang_child() failed", WEXITSTATUS(status));
}

static void test_rate_limit(void **state)
{
    (void)state;
    struct world_opts o = {.rate = 1, .burst = 2};
    struct world *w = world_new(&o);
    struct issue_result r;
    for (int i = 0; i < 2; i++) {
        issue4(w, "10.0.0.1", &plain, &r);
        expect_granted(&r, "default/id-a", "c-a");
        issuer_result_done(w->issuer, &r);
    }
    issue4(w, "10.0.0.1", &plain, &r);
    expect_denied(&r, IDB_E_RATE_LIMITED);
    assert_true(r.retry_after_s >= 1);
    assert_string_equal(r.pod, "default/pod-a");
    issuer_result_done(w->issuer, &r);
    /* The limit is per pod: another pod is still served. */
    issue4(w, "10.0.0.2", &plain, &r);
    expect_granted(&r, "default/id-b1", "c-b1");
    issuer_result_done(w->issuer, &r);
    world_free(w);
}

static char *read_all(int fd)
{
    off_t n = lseek(fd, 0, SEEK_END);
    assert_true(n >= 0);
    char *s = calloc(1, (size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(pread(fd, s, (size_t)n, 0), n);
    return s;
}

/* Sends the log (JSON, info and up) to a fresh unlinked file; returns its descriptor. */
static int capture_log(void)
{
    char path[] = "/tmp/idb-issuer-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    log_setup(IDB_LOG_INFO, LOG_FORMAT_JSON, fd);
    return fd;
}

/* nowait (the event loop's first attempt): a cold key, bypass_cache and a pod the policy has not
 * synced would block, and then nothing happened (no rate-limit charge, no provider call, no audit);
 * a hit and a final denial are answered at once, each charged once. */
static void test_nowait(void **state)
{
    (void)state;
    int fd = capture_log();

    struct world_opts o = {.rate = 1, .burst = 2, .audit = true};
    struct world *w = world_new(&o);
    struct issue_request nw = plain;
    nw.nowait = true;
    struct issue_result r;
    for (int i = 0; i < 5; i++) { /* a burst of 2: five charges would be refused */
        issue4(w, "10.0.0.1", &nw, &r);
        assert_true(r.would_block);
        assert_int_equal(r.code, -EAGAIN);
        assert_null(r.token);
        issuer_result_done(w->issuer, &r);
    }
    /* The blocking call fetches (the first provider call: token 1) and is charged once. */
    issue4(w, "10.0.0.1", &plain, &r);
    expect_granted(&r, "default/id-a", "c-a");
    assert_false(r.would_block);
    assert_string_equal(r.token->access_token, "good-token-1");
    issuer_result_done(w->issuer, &r);
    /* Now a hit: answered without blocking, charged (the second of the burst). */
    issue4(w, "10.0.0.1", &nw, &r);
    expect_granted(&r, "default/id-a", "c-a");
    assert_false(r.would_block);
    assert_string_equal(r.token->access_token, "good-token-1");
    issuer_result_done(w->issuer, &r);
    /* The burst is spent: the hit is refused with 429, like a blocking call would be. */
    issue4(w, "10.0.0.1", &nw, &r);
    expect_denied(&r, IDB_E_RATE_LIMITED);
    assert_false(r.would_block);
    assert_string_equal(r.identity, "");
    issuer_result_done(w->issuer, &r);
    /* bypass_cache always waits for the provider. */
    struct issue_request nwb = nw;
    nwb.bypass_cache = true;
    issue4(w, "10.0.0.2", &nwb, &r);
    assert_true(r.would_block);
    issuer_result_done(w->issuer, &r);
    /* A final denial needs no waiting. */
    struct issue_request nws = nw;
    nws.sel = SELECTOR_CLIENT_ID;
    nws.sel_value = "nope";
    issue4(w, "10.0.0.2", &nws, &r);
    expect_denied(&r, IDB_E_IDENTITY_NOT_FOUND);
    assert_false(r.would_block);
    issuer_result_done(w->issuer, &r);
    world_free(w);

    /* A pod the policy has not synced yet would wait for it. */
    struct world_opts ok = {.kubernetes = true, .sync_timeout_ms = 100};
    w = world_new(&ok);
    issue6(w, "fd00::7", &nw, &r);
    assert_true(r.would_block);
    issuer_result_done(w->issuer, &r);
    world_free(w);
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);

    /* Audit records: the blocking grant, the hit, the 429 and the denial; none for would-block. */
    _cleanup_free_ char *log = read_all(fd);
    close(fd);
    int records = 0;
    for (const char *p = log; (p = strstr(p, "\"audit\":\"token\"")); p++)
        records++;
    assert_int_equal(records, 4);
}

static void test_cache_key_not_truncated(void **state)
{
    (void)state;
    struct world_opts o = {0};
    struct world *w = world_new(&o);
    /* Two long resources that differ only in their last character get different tokens. */
    char *a = malloc(3001), *b = malloc(3001);
    assert_non_null(a);
    assert_non_null(b);
    memset(a, 'x', 3000);
    memcpy(b, a, 3000);
    a[2999] = 'a';
    b[2999] = 'b';
    a[3000] = b[3000] = '\0';
    struct issue_request ra = {.resource = a}, rb = {.resource = b};
    struct issue_result r;
    issue4(w, "10.0.0.1", &ra, &r);
    expect_granted(&r, "default/id-a", "c-a");
    assert_string_equal(r.token->access_token, "good-token-1");
    issuer_result_done(w->issuer, &r);
    issue4(w, "10.0.0.1", &rb, &r);
    expect_granted(&r, "default/id-a", "c-a");
    assert_string_equal(r.token->access_token, "good-token-2");
    issuer_result_done(w->issuer, &r);

    /* Past what a key can hold (the control socket admits 64 KiB requests): refused, never cut
     * to a prefix another resource shares. */
    size_t n = 20000;
    char *c = malloc(n + 1), *d = malloc(n + 1);
    assert_non_null(c);
    assert_non_null(d);
    memset(c, 'y', n);
    memcpy(d, c, n);
    c[n - 1] = 'c';
    d[n - 1] = 'd';
    c[n] = d[n] = '\0';
    struct issue_request rc = {.resource = c}, rd = {.resource = d};
    issue4(w, "10.0.0.1", &rc, &r);
    expect_denied(&r, -ENAMETOOLONG);
    issuer_result_done(w->issuer, &r);
    issue4(w, "10.0.0.1", &rd, &r);
    expect_denied(&r, -ENAMETOOLONG);
    issuer_result_done(w->issuer, &r);
    free(a);
    free(b);
    free(c);
    free(d);
    world_free(w);
}

/* ---- eviction ---- */

static const char evict_before[] = ID("id-keep", "c-keep", GOOD) BIND("b-keep", "id-keep", "s-keep")
    ID("id-gone", "c-gone", GOOD) BIND("b-gone", "id-gone", "s-gone") ID("id-chg", "c-chg", GOOD)
        BIND("b-chg", "id-chg", "s-chg") ID("id-unb", "c-unb", GOOD)
            BIND("b-unb", "id-unb", "s-unb") POD("p-keep", "u1", "s-keep")
                POD("p-gone", "u2", "s-gone") POD("p-chg", "u3", "s-chg")
                    POD("p-unb", "u4", "s-unb");
/* id-gone removed; id-chg has a new client ID (so a new hash); id-unb is no longer bound. */
static const char evict_after[] =
    ID("id-keep", "c-keep", GOOD) BIND("b-keep", "id-keep", "s-keep") ID("id-chg", "c-chg2", GOOD)
        BIND("b-chg", "id-chg", "s-chg") ID("id-unb", "c-unb", GOOD) POD("p-keep", "u1", "s-keep")
            POD("p-gone", "u2", "s-gone") POD("p-chg", "u3", "s-chg") POD("p-unb", "u4", "s-unb");

static void test_evict_stale(void **state)
{
    (void)state;
    struct world_opts o = {0};
    struct world *w = world_new(&o);
    policy_replace(&w->policy, parse_policy(evict_before));
    static const char *pods[] = {"p-keep", "p-gone", "p-chg", "p-unb"};
    for (size_t i = 0; i < ELEMENTSOF(pods); i++) {
        char cid[16], ip[16];
        snprintf(cid, sizeof(cid), "ce%zu", i);
        snprintf(ip, sizeof(ip), "10.0.1.%zu", i + 1);
        add_reg(w, cid, pods[i], "", ip);
    }
    char keep_token[64] = "";
    for (size_t i = 0; i < ELEMENTSOF(pods); i++) {
        struct issue_result r;
        issuer_issue_for_pod(w->issuer, "default", pods[i], &plain, &r);
        if (r.code != 0)
            fail_msg("%s: %s", pods[i], r.reason);
        if (i == 0)
            snprintf(keep_token, sizeof(keep_token), "%s", r.token->access_token);
        issuer_result_done(w->issuer, &r);
    }
    /* Nothing is stale yet. */
    assert_int_equal(issuer_evict_stale(w->issuer), 0);
    /* A token fetched through issue_via is not the policy's to evict. */
    struct idb_token_req vreq = {.size = sizeof(vreq), .resource = "r", .client_id = "c-v"};
    struct idb_token vt = {.size = sizeof(vt)};
    assert_int_equal(issuer_issue_via(w->issuer, "good", &vreq, &vt), 0);
    free(vt.access_token);
    free(vt.client_id);
    struct tc_stats st;
    token_cache_stats(w->cache, &st);
    assert_int_equal(st.entries, 5);

    policy_replace(&w->policy, parse_policy(evict_after));
    assert_int_equal(issuer_evict_stale(w->issuer), 3);
    token_cache_stats(w->cache, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(issuer_evict_stale(w->issuer), 0);

    /* The kept identity's token is still the cached one. */
    struct issue_result r;
    issuer_issue_for_pod(w->issuer, "default", "p-keep", &plain, &r);
    expect_granted(&r, "default/id-keep", "c-keep");
    assert_string_equal(r.token->access_token, keep_token);
    issuer_result_done(w->issuer, &r);
    /* The changed identity gets a fresh token with its new client ID. */
    issuer_issue_for_pod(w->issuer, "default", "p-chg", &plain, &r);
    expect_granted(&r, "default/id-chg", "c-chg2");
    issuer_result_done(w->issuer, &r);
    world_free(w);
}

static void test_issue_via(void **state)
{
    (void)state;
    struct world_opts o = {0};
    struct world *w = world_new(&o);
    struct idb_token_req req = {
        .size = sizeof(req),
        .resource = "https://vault.azure.net",
        .identity_name = "kv",
        .identity_namespace = "default",
        .client_id = "c-kv",
    };
    struct idb_token t1 = {.size = sizeof(t1)}, t2 = {.size = sizeof(t2)};
    assert_int_equal(issuer_issue_via(w->issuer, "good", &req, &t1), 0);
    assert_non_null(t1.access_token);
    assert_true(t1.expires_on > (uint64_t)time(NULL));
    /* Through the cache: the second call is served the same token. */
    assert_int_equal(issuer_issue_via(w->issuer, "good", &req, &t2), 0);
    assert_string_equal(t1.access_token, t2.access_token);
    free(t2.access_token);
    free(t2.client_id);
    /* Another client ID is another token. */
    req.client_id = "c-kv2";
    struct idb_token t3 = {.size = sizeof(t3)};
    assert_int_equal(issuer_issue_via(w->issuer, "good", &req, &t3), 0);
    assert_string_not_equal(t1.access_token, t3.access_token);
    free(t3.access_token);
    free(t3.client_id);
    free(t1.access_token);
    free(t1.client_id);

    struct idb_token t4 = {.size = sizeof(t4)};
    assert_int_equal(issuer_issue_via(w->issuer, "missing", &req, &t4), IDB_E_NO_PROVIDER);
    assert_null(t4.access_token);

    /* Every field the provider sees is part of the key: another tenant or type is another
     * token, never the cached one. */
    req.client_id = "c-kv";
    req.tenant_id = "tenant-1";
    struct idb_token t5 = {.size = sizeof(t5)}, t6 = {.size = sizeof(t6)},
                     t7 = {.size = sizeof(t7)};
    assert_int_equal(issuer_issue_via(w->issuer, "good", &req, &t5), 0);
    req.tenant_id = "tenant-2";
    assert_int_equal(issuer_issue_via(w->issuer, "good", &req, &t6), 0);
    assert_string_not_equal(t5.access_token, t6.access_token);
    req.identity_type = 1;
    assert_int_equal(issuer_issue_via(w->issuer, "good", &req, &t7), 0);
    assert_string_not_equal(t6.access_token, t7.access_token);
    free(t5.access_token);
    free(t6.access_token);
    free(t7.access_token);

    /* A separator inside a field could make two requests one key: refused. */
    req.client_id = "a\x1f"
                    "b";
    struct idb_token t8 = {.size = sizeof(t8)};
    assert_int_equal(issuer_issue_via(w->issuer, "good", &req, &t8), -EINVAL);
    assert_null(t8.access_token);
    req.client_id = "c-kv";
    req.resource = NULL;
    assert_int_equal(issuer_issue_via(w->issuer, "good", &req, &t8), -EINVAL);
    world_free(w);
}

/* ---- reload while serving ---- */

struct reloader {
    struct world *w;
    int rounds;
};

static void *reload_options(void *ud)
{
    struct reloader *rl = ud;
    for (int i = 0; i < rl->rounds; i++) {
        /* Fresh strings each time, as a configuration reload makes them. */
        char name[16];
        snprintf(name, sizeof(name), "%s", i % 2 ? "good" : "hang");
        struct issuer_options io = {
            .registry = rl->w->registry,
            .policy = &rl->w->policy,
            .cache = rl->w->cache,
            .plugins = rl->w->plugins,
            .type_providers = {name, NULL, NULL},
            .provider_timeout_ms = 10000,
            .retry_after_s = 7,
        };
        assert_int_equal(issuer_set_options(rl->w->issuer, &io), 0);
    }
    return NULL;
}

static void test_reload_while_serving(void **state)
{
    (void)state;
    /* typeProviders names are replaced (and the old ones freed) by a reload while requests use
     * them: every request sees either the old or the new name, never freed memory. */
    struct world_opts o = {0};
    struct world *w = world_new(&o);
    struct reloader rl = {.w = w, .rounds = 400};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, reload_options, &rl), 0);
    for (int i = 0; i < 400; i++) {
        struct issue_result r;
        issue4(w, "10.0.0.4", &plain, &r);
        /* "hang" is not loaded in this world: either served by good or refused. */
        if (r.code != 0 && r.code != IDB_E_NO_PROVIDER)
            fail_msg("unexpected %d: %s", r.code, r.reason);
        if (r.code == IDB_E_NO_PROVIDER)
            assert_non_null(strstr(r.reason, "'hang'"));
        issuer_result_done(w->issuer, &r);
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    world_free(w);
}

/* ---- audit ---- */

static void test_audit(void **state)
{
    (void)state;
    int fd = capture_log();

    struct world_opts o = {.audit = true};
    struct world *w = world_new(&o);
    struct issue_result r;
    issue4(w, "10.0.0.1", &plain, &r);
    expect_granted(&r, "default/id-a", "c-a");
    char token[64];
    snprintf(token, sizeof(token), "%s", r.token->access_token);
    issuer_result_done(w->issuer, &r);
    struct issue_request req = plain;
    req.sel = SELECTOR_CLIENT_ID;
    req.sel_value = "nope";
    issue4(w, "10.0.0.2", &req, &r);
    expect_denied(&r, IDB_E_IDENTITY_NOT_FOUND);
    issuer_result_done(w->issuer, &r);
    issue4(w, "10.9.9.9", &plain, &r);
    issuer_result_done(w->issuer, &r);
    world_free(w);
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);

    _cleanup_free_ char *log = read_all(fd);
    close(fd);
    assert_null(strstr(log, token));
    assert_null(strstr(log, "good-token"));
    /* One record per request, each a JSON line naming pod, identity and decision. */
    int records = 0;
    for (char *line = log, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        struct json_object *j = json_tokener_parse(line);
        assert_non_null(j);
        struct json_object *v;
        if (!json_object_object_get_ex(j, "audit", &v)) {
            json_object_put(j);
            continue;
        }
        records++;
        const char *pod = json_object_object_get_ex(j, "pod", &v) ? json_object_get_string(v) : "";
        const char *dec =
            json_object_object_get_ex(j, "decision", &v) ? json_object_get_string(v) : "";
        const char *id =
            json_object_object_get_ex(j, "identity", &v) ? json_object_get_string(v) : NULL;
        const char *res =
            json_object_object_get_ex(j, "resource", &v) ? json_object_get_string(v) : "";
        assert_string_equal(res, plain.resource);
        if (records == 1) {
            assert_string_equal(pod, "default/pod-a");
            assert_string_equal(dec, "issued");
            assert_non_null(id);
            assert_string_equal(id, "default/id-a");
            assert_true(json_object_object_get_ex(j, "podUid", &v));
            assert_string_equal(json_object_get_string(v), "uid-a");
        } else if (records == 2) {
            assert_string_equal(pod, "default/pod-b");
            assert_string_equal(dec, "denied");
            assert_true(json_object_object_get_ex(j, "error", &v));
            assert_true(json_object_object_get_ex(j, "reason", &v));
        } else {
            assert_string_equal(pod, "addr:10.9.9.9");
            assert_string_equal(dec, "denied");
            assert_null(id);
        }
        json_object_put(j);
    }
    assert_int_equal(records, 3);
}

int main(void)
{
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_provider_hangs), /* first: fork() before any test made threads */
        cmocka_unit_test(test_unknown_peer),
        cmocka_unit_test(test_granted),
        cmocka_unit_test(test_v4_mapped_peer),
        cmocka_unit_test(test_selectors),
        cmocka_unit_test(test_files_mode_no_manifest),
        cmocka_unit_test(test_kubernetes_not_synced),
        cmocka_unit_test(test_kubernetes_change_during_wait),
        cmocka_unit_test(test_uid_mismatch),
        cmocka_unit_test(test_no_provider),
        cmocka_unit_test(test_provider_fails),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_nowait),
        cmocka_unit_test(test_cache_key_not_truncated),
        cmocka_unit_test(test_evict_stale),
        cmocka_unit_test(test_issue_via),
        cmocka_unit_test(test_reload_while_serving),
        cmocka_unit_test(test_audit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
