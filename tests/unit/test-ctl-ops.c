/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control socket's operations (broker/ctl-ops.c) and the health listener (broker/health.c)
 * over a real in-process broker: configuration from JSON text, the files source in a temporary
 * directory loaded by broker_reload_source(), a registry on a temporary stateDir, the token cache,
 * the issuer and the good test provider loaded by the real loader. Requests go through
 * control_handle_message() exactly as the socket server hands them over; health requests call
 * health_handle() with a request struct.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <idbroker/ctl-proto.h>
#include <idbroker/errno.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/registration.h>

#include "broker.h"
#include "conf.h"
#include "conflist-watch.h"
#include "control.h"
#include "host-api.h"
#include "http-server.h"
#include "issuer.h"
#include "plugin-loader.h"
#include "registry.h"
#include "test-util.h"
#include "token-cache.h"

#include <cmocka.h>

static const char policy_yaml[] = "apiVersion: aadpodidentity.k8s.io/v1\n"
                                  "kind: AzureIdentity\n"
                                  "metadata: {name: id-a, namespace: default, annotations: "
                                  "{idbroker.io/provider: good}}\n"
                                  "spec: {type: 0, clientID: c-a, resourceID: /r/id-a}\n"
                                  "---\n"
                                  "apiVersion: aadpodidentity.k8s.io/v1\n"
                                  "kind: AzureIdentity\n"
                                  "metadata: {name: id-t, namespace: default}\n"
                                  "spec: {type: 1, clientID: c-t, tenantID: t}\n"
                                  "---\n"
                                  "apiVersion: aadpodidentity.k8s.io/v1\n"
                                  "kind: AzureIdentityBinding\n"
                                  "metadata: {name: b-a, namespace: default}\n"
                                  "spec: {azureIdentity: id-a, selector: sel-a}\n"
                                  "---\n"
                                  "apiVersion: aadpodidentity.k8s.io/v1\n"
                                  "kind: AzurePodIdentityException\n"
                                  "metadata: {name: ex-1, namespace: default}\n"
                                  "spec: {podLabels: {app: skip}}\n"
                                  "---\n"
                                  "apiVersion: v1\n"
                                  "kind: Pod\n"
                                  "metadata: {name: pod-a, namespace: default, uid: uid-a, "
                                  "labels: {aadpodidbinding: sel-a}}\n";

static char root[64], state_dir[128], source_dir[128], plugin_dir[128];
static struct broker b;

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
}

static void install_good(void)
{
    char src[512], dst[512], data[65536];
    snprintf(src, sizeof(src), "%s/good.so", IDB_TEST_PLUGIN_DIR);
    snprintf(dst, sizeof(dst), "%s/good.so", plugin_dir);
    int in = open(src, O_RDONLY | O_CLOEXEC);
    assert_true(in >= 0);
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(out >= 0);
    ssize_t n;
    while ((n = read(in, data, sizeof(data))) > 0)
        assert_int_equal(write(out, data, (size_t)n), n);
    assert_int_equal(n, 0);
    close(in);
    close(out);
}

static struct registration mkreg(const char *cid, const char *name, const char *ip)
{
    struct registration r;
    memset(&r, 0, sizeof(r));
    snprintf(r.container_id, sizeof(r.container_id), "%s", cid);
    snprintf(r.if_name, sizeof(r.if_name), "eth0");
    snprintf(r.pod_namespace, sizeof(r.pod_namespace), "default");
    snprintf(r.pod_name, sizeof(r.pod_name), "%s", name);
    assert_int_equal(reg_ip_parse(ip, &r.ips[0]), 0);
    r.n_ips = 1;
    r.created = 1700000000;
    snprintf(r.origin, sizeof(r.origin), "cni");
    return r;
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof(root), "/tmp/idb-ctlops-XXXXXX");
    if (!mkdtemp(root) || chmod(root, 0755) < 0)
        return -1;
    snprintf(state_dir, sizeof(state_dir), "%s/state", root);
    snprintf(source_dir, sizeof(source_dir), "%s/identities", root);
    snprintf(plugin_dir, sizeof(plugin_dir), "%s/providers", root);
    if (mkdir(source_dir, 0755) < 0 || mkdir(plugin_dir, 0755) < 0)
        return -1;
    install_good();
    char path[256];
    snprintf(path, sizeof(path), "%s/policy.yaml", source_dir);
    write_file(path, policy_yaml);

    char conf[1024];
    snprintf(conf, sizeof(conf),
             "{\"nodeName\": \"node-1\", \"stateDir\": \"%s\", \"pluginDir\": \"%s\","
             " \"source\": {\"kind\": \"files\", \"dir\": \"%s\"},"
             " \"typeProviders\": {\"1\": \"good\"}, \"namespaced\": true,"
             " \"log\": {\"level\": \"warning\"}}",
             state_dir, plugin_dir, source_dir);
    b = (struct broker){.started = time(NULL)};
    pthread_mutex_init(&b.reload_lock, NULL);
    char *err = NULL;
    if (conf_parse(conf, strlen(conf), "test.json", &b.conf, &err) < 0) {
        fprintf(stderr, "conf: %s\n", err ? err : "?");
        free(err);
        return -1;
    }
    b.source_dir = strdup(b.conf->source_dir);
    struct store_policy flags;
    broker_policy_flags(b.conf, &flags);
    struct tc_options tco;
    broker_cache_options(b.conf, &tco);
    if (host_api_init(NULL) < 0 || policy_init(&b.policy, &flags, true) < 0)
        return -1;
    b.registry = registry_new(b.conf->state_dir);
    b.plugins = plugin_set_new();
    b.cache = token_cache_new(&tco);
    if (!b.registry || !b.plugins || !b.cache)
        return -1;
    struct issuer_options io;
    broker_issuer_options(b.conf, &b, &io);
    b.issuer = issuer_new(&io);
    if (!b.issuer || registration_dir_ensure(state_dir) < 0)
        return -1;
    if (plugin_set_load(b.plugins, plugin_dir, "good", "{}", host_api_get(), &err) < 0) {
        fprintf(stderr, "good: %s\n", err ? err : "?");
        free(err);
        return -1;
    }
    b.plugins_ok = true;
    if (broker_reload_source(&b, true) != 1)
        return -1;
    struct registration r = mkreg("ca", "pod-a", "10.0.0.1");
    return registry_add(b.registry, &r, true);
}

static int teardown(void **state)
{
    (void)state;
    b.issuer = issuer_free(b.issuer);
    b.cache = token_cache_free(b.cache);
    b.plugins = plugin_set_free(b.plugins);
    b.registry = registry_free(b.registry);
    policy_done(&b.policy);
    host_api_done();
    b.conf = conf_free(b.conf);
    free(b.source_dir);
    free(b.last_error);
    free(b.conf_path);
    pthread_mutex_destroy(&b.reload_lock);
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);
    return rm_rf(root);
}

/* ---- calling ops ---- */

struct reply {
    struct json_object *o; /* the whole reply */
    bool ok;
    struct json_object *result; /* borrowed from o */
    const char *error;          /* borrowed from o */
    int code;
};

static struct reply call_as(unsigned uid, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static struct reply call_as(unsigned uid, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    assert_true(vasprintf(&text, fmt, ap) >= 0);
    va_end(ap);
    char *out = control_handle_message(broker_ctl_ops, &b, text, strlen(text), uid);
    assert_non_null(out);
    struct reply r = {0};
    assert_int_equal(json_parse_strict(out, strlen(out), &r.o, NULL), 0);
    assert_int_equal(json_get_int(r.o, "version", 0), IDB_CTL_VERSION);
    r.ok = json_get_bool(r.o, "ok", false);
    json_object_object_get_ex(r.o, "result", &r.result);
    r.error = json_get_str(r.o, "error");
    r.code = (int)json_get_int(r.o, "code", 0);
    free(text);
    free(out);
    return r;
}

#define call(...) call_as(0, __VA_ARGS__)

static void expect_ok(const struct reply *r)
{
    if (!r->ok)
        fail_msg("op failed: %d %s", r->code, r->error ? r->error : "(no message)");
}

static void expect_error(const struct reply *r, int code, const char *text)
{
    if (r->ok)
        fail_msg("op succeeded, wanted %d '%s'", code, text);
    assert_int_equal(r->code, code);
    assert_non_null(r->error);
    if (!strstr(r->error, text))
        fail_msg("error '%s' does not say '%s'", r->error, text);
}

static void reply_done(struct reply *r)
{
    json_object_put(r->o);
    r->o = NULL;
}

static struct json_object *get(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        fail_msg("no '%s' in %s", key, json_object_to_json_string(o));
    return v;
}

/* ---- read-only ops ---- */

static void test_status(void **state)
{
    (void)state;
    struct reply r = call("{\"version\":1,\"op\":\"status\"}");
    expect_ok(&r);
    assert_string_equal(json_get_str(r.result, "nodeName"), "node-1");
    assert_true(json_get_bool(r.result, "ready", false));
    assert_false(json_object_object_get_ex(r.result, "notReady", NULL));
    assert_int_equal(json_get_int(r.result, "pods", -1), 1);
    assert_int_equal(json_get_int(r.result, "identities", -1), 2);
    assert_int_equal(json_get_int(r.result, "bindings", -1), 1);
    assert_int_equal(json_get_int(r.result, "exceptions", -1), 1);
    assert_int_equal(json_get_int(r.result, "providers", -1), 1);
    assert_non_null(json_get_str(r.result, "version"));
    assert_true(json_get_int(r.result, "uptimeSeconds", -1) >= 0);
    struct json_object *src = get(r.result, "source");
    assert_string_equal(json_get_str(src, "kind"), "files");
    assert_string_equal(json_get_str(src, "dir"), source_dir);
    assert_true(json_get_int(src, "lastReload", 0) > 0);
    assert_null(json_get_str(src, "lastError"));
    struct json_object *cache = get(r.result, "cache");
    assert_int_equal(json_get_int(cache, "entries", -1), 0);
    reply_done(&r);

    /* Not ready: says why. */
    b.plugins_ok = false;
    r = call("{\"version\":1,\"op\":\"status\"}");
    expect_ok(&r);
    assert_false(json_get_bool(r.result, "ready", true));
    assert_non_null(strstr(json_get_str(r.result, "notReady"), "provider"));
    reply_done(&r);
    b.plugins_ok = true;
}

static void test_lists(void **state)
{
    (void)state;
    struct reply r = call("{\"version\":1,\"op\":\"pods\"}");
    expect_ok(&r);
    assert_true(json_object_is_type(r.result, json_type_array));
    assert_int_equal(json_object_array_length(r.result), 1);
    struct json_object *p = json_object_array_get_idx(r.result, 0);
    assert_string_equal(json_get_str(p, "containerId"), "ca");
    assert_string_equal(json_get_str(p, "podName"), "pod-a");
    reply_done(&r);

    r = call("{\"version\":1,\"op\":\"identities\"}");
    expect_ok(&r);
    assert_int_equal(json_object_array_length(r.result), 2);
    /* Sorted by (namespace, name); the provider is the annotation's or typeProviders'. */
    struct json_object *a = json_object_array_get_idx(r.result, 0),
                       *t = json_object_array_get_idx(r.result, 1);
    assert_string_equal(json_get_str(get(a, "metadata"), "name"), "id-a");
    assert_string_equal(json_get_str(a, "provider"), "good");
    assert_string_equal(json_get_str(get(t, "metadata"), "name"), "id-t");
    assert_string_equal(json_get_str(t, "provider"), "good");
    reply_done(&r);

    r = call("{\"version\":1,\"op\":\"bindings\"}");
    expect_ok(&r);
    assert_int_equal(json_object_array_length(r.result), 1);
    assert_string_equal(
        json_get_str(get(json_object_array_get_idx(r.result, 0), "metadata"), "name"), "b-a");
    reply_done(&r);

    r = call("{\"version\":1,\"op\":\"exceptions\"}");
    expect_ok(&r);
    assert_int_equal(json_object_array_length(r.result), 1);
    assert_string_equal(
        json_get_str(get(json_object_array_get_idx(r.result, 0), "metadata"), "name"), "ex-1");
    reply_done(&r);

    r = call("{\"version\":1,\"op\":\"providers\"}");
    expect_ok(&r);
    assert_int_equal(json_object_array_length(r.result), 1);
    struct json_object *g = json_object_array_get_idx(r.result, 0);
    assert_string_equal(json_get_str(g, "name"), "good");
    assert_string_equal(json_get_str(g, "version"), "1.0-test");
    assert_int_equal(json_get_int(g, "abiMajor", -1), 1);
    char path[256];
    snprintf(path, sizeof(path), "%s/good.so", plugin_dir);
    assert_string_equal(json_get_str(g, "path"), path);
    reply_done(&r);
}

static void test_explain(void **state)
{
    (void)state;
    struct reply r = call("{\"version\":1,\"op\":\"explain\"}");
    expect_error(&r, -EINVAL, "arguments 'namespace' and 'name' are required");
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"explain\",\"namespace\":\"default\",\"name\":\"\"}");
    expect_error(&r, -EINVAL, "'name'");
    reply_done(&r);

    r = call("{\"version\":1,\"op\":\"explain\",\"namespace\":\"default\",\"name\":\"pod-a\"}");
    expect_ok(&r);
    assert_true(json_get_bool(r.result, "registered", false));
    assert_string_equal(json_get_str(get(r.result, "registration"), "containerId"), "ca");
    assert_null(json_get_str(r.result, "note"));
    reply_done(&r);

    /* Not registered on this node. */
    r = call("{\"version\":1,\"op\":\"explain\",\"namespace\":\"default\",\"name\":\"pod-x\"}");
    expect_ok(&r);
    assert_false(json_get_bool(r.result, "registered", true));
    assert_non_null(strstr(json_get_str(r.result, "note"), "not registered"));
    reply_done(&r);

    /* Registered, but the files source has no Pod manifest for it. */
    struct registration reg = mkreg("cx", "pod-x", "10.0.0.9");
    assert_int_equal(registry_add(b.registry, &reg, false), 0);
    r = call("{\"version\":1,\"op\":\"explain\",\"namespace\":\"default\",\"name\":\"pod-x\"}");
    expect_ok(&r);
    assert_true(json_get_bool(r.result, "registered", false));
    assert_non_null(strstr(json_get_str(r.result, "note"), "no Pod manifest"));
    reply_done(&r);
    assert_int_equal(registry_remove(b.registry, "cx", "eth0", false), 1);
}

static void test_token(void **state)
{
    (void)state;
    struct reply r = call("{\"version\":1,\"op\":\"token\",\"namespace\":\"default\"}");
    expect_error(&r, -EINVAL, "'namespace' and 'name'");
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"token\",\"namespace\":\"default\",\"name\":\"pod-a\"}");
    expect_error(&r, -EINVAL, "argument 'resource' is required");
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"token\",\"namespace\":\"default\",\"name\":\"pod-a\","
             "\"resource\":\"r\",\"clientId\":\"c-a\",\"resourceId\":\"/r/id-a\"}");
    expect_error(&r, -EINVAL, "at most one of clientId, objectId, resourceId");
    reply_done(&r);
    /* Root only. */
    r = call_as(1000, "{\"version\":1,\"op\":\"token\",\"namespace\":\"default\","
                      "\"name\":\"pod-a\",\"resource\":\"r\"}");
    expect_error(&r, -EPERM, "");
    reply_done(&r);

    r = call("{\"version\":1,\"op\":\"token\",\"namespace\":\"default\",\"name\":\"pod-a\","
             "\"resource\":\"https://management.azure.com/\"}");
    expect_ok(&r);
    /* The IMDS reply, every value a string. */
    assert_string_equal(json_get_str(r.result, "access_token"), "good-token-1");
    assert_string_equal(json_get_str(r.result, "client_id"), "c-a");
    assert_string_equal(json_get_str(r.result, "resource"), "https://management.azure.com/");
    assert_string_equal(json_get_str(r.result, "token_type"), "Bearer");
    assert_non_null(json_get_str(r.result, "expires_on"));
    reply_done(&r);

    /* Selector that matches the bound identity; bypassCache fetches anew. */
    r = call("{\"version\":1,\"op\":\"token\",\"namespace\":\"default\",\"name\":\"pod-a\","
             "\"resource\":\"https://management.azure.com/\",\"clientId\":\"c-a\","
             "\"bypassCache\":true}");
    expect_ok(&r);
    assert_string_equal(json_get_str(r.result, "access_token"), "good-token-2");
    reply_done(&r);

    /* Denials carry the issuer's code and reason. */
    r = call("{\"version\":1,\"op\":\"token\",\"namespace\":\"default\",\"name\":\"pod-a\","
             "\"resource\":\"r\",\"clientId\":\"nope\"}");
    expect_error(&r, IDB_E_IDENTITY_NOT_FOUND, idb_strerror(IDB_E_IDENTITY_NOT_FOUND));
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"token\",\"namespace\":\"default\",\"name\":\"nobody\","
             "\"resource\":\"r\"}");
    expect_error(&r, IDB_E_UNKNOWN_POD, "not registered");
    reply_done(&r);
}

/* ---- reload ---- */

static void test_reload_source(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof(path), "%s/more.yaml", source_dir);
    write_file(path, "apiVersion: aadpodidentity.k8s.io/v1\n"
                     "kind: AzureIdentity\n"
                     "metadata: {name: id-new, namespace: default}\n"
                     "spec: {type: 0, clientID: c-new}\n");
    struct reply r = call("{\"version\":1,\"op\":\"reload\"}");
    expect_ok(&r);
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"status\"}");
    assert_int_equal(json_get_int(r.result, "identities", -1), 3);
    reply_done(&r);

    /* A broken file: the reload fails, says which file, and the last good policy stays. */
    write_file(path, "kind: AzureIdentity\nmetadata: [\n");
    r = call("{\"version\":1,\"op\":\"reload\"}");
    expect_error(&r, IDB_E_BAD_MANIFEST, "more.yaml");
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"status\"}");
    assert_int_equal(json_get_int(r.result, "identities", -1), 3);
    assert_non_null(strstr(json_get_str(get(r.result, "source"), "lastError"), "more.yaml"));
    reply_done(&r);

    /* Fixed again: the error is cleared. */
    assert_int_equal(unlink(path), 0);
    r = call("{\"version\":1,\"op\":\"reload\"}");
    expect_ok(&r);
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"status\"}");
    assert_int_equal(json_get_int(r.result, "identities", -1), 2);
    assert_null(json_get_str(get(r.result, "source"), "lastError"));
    reply_done(&r);

    r = call_as(1000, "{\"version\":1,\"op\":\"reload\"}");
    expect_error(&r, -EPERM, "");
    reply_done(&r);
}

static void test_reload_conf(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof(path), "%s/idbrokerd.json", root);
    b.conf_path = strdup(path);
    /* A bad configuration file changes nothing and says why. */
    write_file(path, "{\"nodeName\": 5}");
    struct reply r = call("{\"version\":1,\"op\":\"reload\"}");
    expect_error(&r, -EINVAL, "nodeName");
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"status\"}");
    assert_string_equal(json_get_str(r.result, "nodeName"), "node-1");
    reply_done(&r);

    /* A good one applies what may change at run time and keeps the rest until restart. */
    char conf[1024];
    snprintf(
        conf, sizeof(conf),
        "{\"nodeName\": \"node-2\", \"stateDir\": \"%s\", \"pluginDir\": \"%s\","
        " \"source\": {\"kind\": \"files\", \"dir\": \"%s\"},"
        " \"typeProviders\": {\"1\": \"good\"}, \"strictSelection\": true, \"namespaced\": false,"
        " \"log\": {\"level\": \"err\"}}",
        state_dir, plugin_dir, source_dir);
    write_file(path, conf);
    r = call("{\"version\":1,\"op\":\"reload\"}");
    expect_ok(&r);
    reply_done(&r);
    assert_true(b.policy.flags.strict_selection);
    assert_false(b.policy.flags.namespaced);
    r = call("{\"version\":1,\"op\":\"status\"}");
    assert_string_equal(json_get_str(r.result, "nodeName"), "node-1"); /* restart setting */
    reply_done(&r);
    free(b.conf_path);
    b.conf_path = NULL;
}

/* ---- registrations ---- */

static bool file_exists(const char *cid, const char *ifn)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/pods/%s@%s.json", state_dir, cid, ifn);
    return access(path, F_OK) == 0;
}

static int count_pods(void)
{
    struct reply r = call("{\"version\":1,\"op\":\"pods\"}");
    expect_ok(&r);
    int n = (int)json_object_array_length(r.result);
    reply_done(&r);
    return n;
}

#define REG(extra)                                                                                 \
    "{\"version\":1,\"op\":\"register\",\"registration\":{\"version\":1,\"containerId\":\"c1\","   \
    "\"ifName\":\"eth0\"" extra "}}"

static void test_register(void **state)
{
    (void)state;
    struct reply r = call("{\"version\":1,\"op\":\"register\"}");
    expect_error(&r, -EINVAL, "argument 'registration' is required");
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"register\",\"registration\":{\"version\":2}}");
    expect_error(&r, -EINVAL, "invalid registration: field 'version'");
    reply_done(&r);
    r = call(REG(",\"ips\":[\"10.0.0.300\"]"));
    expect_error(&r, -EINVAL, "invalid registration: field 'ips'");
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"register\",\"registration\":[1]}");
    expect_error(&r, -EINVAL, "invalid registration");
    reply_done(&r);
    r = call(REG(",\"podName\":\"p1\",\"ips\":[\"10.0.0.7\"]"));
    expect_error(&r, -EINVAL, "registration needs podNamespace and podName");
    reply_done(&r);
    r = call(REG(",\"podNamespace\":\"default\",\"podName\":\"p1\",\"ips\":[]"));
    expect_error(&r, -EINVAL, "registration needs at least one address in 'ips'");
    reply_done(&r);
    r = call_as(1000,
                REG(",\"podNamespace\":\"default\",\"podName\":\"p1\",\"ips\":[\"10.0.0.7\"]"));
    expect_error(&r, -EPERM, "");
    reply_done(&r);
    assert_false(file_exists("c1", "eth0"));
    assert_int_equal(count_pods(), 1);

    r = call(REG(",\"podNamespace\":\"default\",\"podName\":\"p1\",\"ips\":[\"10.0.0.7\"]"));
    expect_ok(&r);
    reply_done(&r);
    assert_true(file_exists("c1", "eth0"));
    assert_int_equal(count_pods(), 2);
    /* Persisted: what is on disk is what was registered, with a creation time. */
    struct registration got;
    assert_int_equal(registration_load(state_dir, "c1", "eth0", &got), 0);
    assert_string_equal(got.pod_name, "p1");
    assert_int_equal(got.n_ips, 1);
    assert_true(got.created > 0);
    assert_string_equal(got.origin, "ctl"); /* none given: registered by hand */

    /* Unregister: arguments, by pod, by container ID, idempotent. */
    r = call("{\"version\":1,\"op\":\"unregister\"}");
    expect_error(&r, -EINVAL, "arguments 'namespace' and 'name' are required");
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"unregister\",\"containerId\":\"../x\"}");
    expect_error(&r, -EINVAL, "cannot remove registration");
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"unregister\",\"namespace\":\"default\",\"name\":\"p1\"}");
    expect_ok(&r);
    assert_int_equal(json_get_int(r.result, "removed", -1), 1);
    reply_done(&r);
    assert_false(file_exists("c1", "eth0"));
    assert_int_equal(count_pods(), 1);

    r = call(REG(",\"podNamespace\":\"default\",\"podName\":\"p1\",\"ips\":[\"10.0.0.7\"]"));
    expect_ok(&r);
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"unregister\",\"containerId\":\"c1\"}");
    expect_ok(&r);
    assert_int_equal(json_get_int(r.result, "removed", -1), 1);
    reply_done(&r);
    assert_false(file_exists("c1", "eth0"));
    r = call("{\"version\":1,\"op\":\"unregister\",\"containerId\":\"c1\",\"ifName\":\"eth0\"}");
    expect_ok(&r);
    assert_int_equal(json_get_int(r.result, "removed", -1), 0);
    reply_done(&r);
    assert_int_equal(count_pods(), 1);
}

static void test_sync(void **state)
{
    (void)state;
    struct reply r = call("{\"version\":1,\"op\":\"sync\",\"containerId\":\"c2\"}");
    expect_error(&r, -EINVAL, "arguments 'containerId' and 'ifName' are required");
    reply_done(&r);
    r = call("{\"version\":1,\"op\":\"sync\",\"containerId\":\"../c2\",\"ifName\":\"eth0\"}");
    expect_error(&r, -EINVAL, "arguments 'containerId' and 'ifName' are required");
    reply_done(&r);

    /* The CNI plugin writes the file, then says "sync". */
    struct registration reg = mkreg("c2", "p2", "10.0.0.8");
    assert_int_equal(registration_save(state_dir, &reg), 0);
    assert_int_equal(count_pods(), 1);
    r = call("{\"version\":1,\"op\":\"sync\",\"containerId\":\"c2\",\"ifName\":\"eth0\"}");
    expect_ok(&r);
    reply_done(&r);
    assert_int_equal(count_pods(), 2);
    assert_true(registry_has_pod(b.registry, "default", "p2"));

    /* DEL removes the file, then says "sync". */
    assert_int_equal(registration_remove(state_dir, "c2", "eth0"), 0);
    r = call("{\"version\":1,\"op\":\"sync\",\"containerId\":\"c2\",\"ifName\":\"eth0\"}");
    expect_ok(&r);
    reply_done(&r);
    assert_int_equal(count_pods(), 1);
    assert_false(registry_has_pod(b.registry, "default", "p2"));

    /* A file that does not parse is an error that names it; the registry is unchanged. */
    char path[512];
    snprintf(path, sizeof(path), "%s/pods/c3@eth0.json", state_dir);
    write_file(path, "{\"version\":1}");
    r = call("{\"version\":1,\"op\":\"sync\",\"containerId\":\"c3\",\"ifName\":\"eth0\"}");
    expect_error(&r, -EINVAL, "cannot read registration 'c3@eth0'");
    reply_done(&r);
    assert_int_equal(count_pods(), 1);
    assert_int_equal(unlink(path), 0);
}

/* ---- health ---- */

struct hresp {
    int status;
    const char *type;
    const char *allow;
    char *body;
};

static struct hresp health(const char *method, const char *uri)
{
    struct http_request req = {.method = method, .raw_uri = uri};
    struct http_response resp = {0};
    health_handle(&b, &req, &resp);
    assert_non_null(resp.body);
    assert_int_equal(strlen(resp.body), resp.body_len);
    assert_false(resp.secret);
    return (struct hresp){resp.status, resp.content_type, resp.allow, resp.body};
}

static void test_health(void **state)
{
    (void)state;
    struct hresp h = health("GET", "/healthz");
    assert_int_equal(h.status, 200);
    assert_string_equal(h.body, "ok\n");
    assert_non_null(strstr(h.type, "text/plain"));
    free(h.body);
    h = health("HEAD", "/healthz?verbose=1");
    assert_int_equal(h.status, 200);
    free(h.body);

    h = health("GET", "/readyz");
    assert_int_equal(h.status, 200);
    assert_string_equal(h.body, "ready\n");
    free(h.body);
    b.plugins_ok = false;
    h = health("GET", "/readyz");
    assert_int_equal(h.status, 503);
    assert_string_equal(h.body, "not ready: a configured provider failed to load\n");
    free(h.body);
    b.plugins_ok = true;
    b.policy.synced = false;
    h = health("GET", "/readyz");
    assert_int_equal(h.status, 503);
    assert_non_null(strstr(h.body, "policy source"));
    free(h.body);
    h = health("GET", "/metrics");
    assert_int_equal(h.status, 200);
    assert_non_null(strstr(h.body, "\nidbroker_ready 0\n"));
    free(h.body);
    b.policy.synced = true;

    h = health("GET", "/metrics");
    assert_int_equal(h.status, 200);
    assert_string_equal(h.type, "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null(strstr(h.body, "# TYPE idbroker_cache_hits_total counter"));
    assert_non_null(strstr(h.body, "\nidbroker_ready 1\n"));
    assert_non_null(strstr(h.body, "\nidbroker_registrations 1\n"));
    assert_non_null(strstr(h.body, "\nidbroker_identities 2\n"));
    assert_non_null(strstr(h.body, "\nidbroker_cni_chain_ok 1\n")); /* no watch: nothing wrong */
    free(h.body);

    /* THREATS T21: the node's conflist lost idbroker -> not ready, the reason names the file. */
    char cni_dir[] = "/tmp/idb-ctl-cni-XXXXXX", conflist[64];
    assert_non_null(mkdtemp(cni_dir));
    snprintf(conflist, sizeof(conflist), "%s/10-k8s.conflist", cni_dir);
    FILE *f = fopen(conflist, "w");
    assert_non_null(f);
    fputs("{\"plugins\": [{\"type\": \"bridge\"}]}", f);
    fclose(f);
    struct conflist_watch_options co = {.dir = cni_dir, .node_name = "n", .interval_ms = 3600000};
    assert_int_equal(conflist_watch_start(&co, &b.cni), 0);
    h = health("GET", "/readyz");
    assert_int_equal(h.status, 503);
    assert_non_null(strstr(h.body, "not ready: idbroker is missing from the CNI network "
                                   "configuration '"));
    assert_non_null(strstr(h.body, conflist));
    free(h.body);
    h = health("GET", "/metrics");
    assert_non_null(strstr(h.body, "\nidbroker_cni_chain_ok 0\n"));
    assert_non_null(strstr(h.body, "\nidbroker_ready 0\n"));
    free(h.body);
    f = fopen(conflist, "w");
    assert_non_null(f);
    fputs("{\"plugins\": [{\"type\": \"bridge\"}, {\"type\": \"idbroker\"}]}", f);
    fclose(f);
    conflist_watch_recheck(b.cni);
    h = health("GET", "/readyz");
    assert_int_equal(h.status, 200);
    free(h.body);
    h = health("GET", "/metrics");
    assert_non_null(strstr(h.body, "\nidbroker_cni_chain_ok 1\n"));
    free(h.body);
    b.cni = conflist_watch_free(b.cni);
    assert_int_equal(unlink(conflist), 0);
    assert_int_equal(rmdir(cni_dir), 0);

    static const char *missing[] = {"/",        "/healthzz", "/health", "/metrics/x",
                                    "/readyz/", "/HEALTHZ",  ""};
    for (size_t i = 0; i < ELEMENTSOF(missing); i++) {
        h = health("GET", missing[i]);
        if (h.status != 404)
            fail_msg("'%s' gave %d", missing[i], h.status);
        free(h.body);
    }
    static const char *methods[] = {"POST", "PUT", "DELETE", "get", "OPTIONS"};
    for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
        h = health(methods[i], "/healthz");
        assert_int_equal(h.status, 405);
        assert_string_equal(h.allow, "GET, HEAD");
        free(h.body);
    }
}

int main(void)
{
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_explain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_source, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_conf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
