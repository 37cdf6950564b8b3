/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of broker/conf.c: defaults, the shipped example, every key, every error kind. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "conf.h"
#include "limits.h"
#include "test-util.h"

#include <cmocka.h>

#define EXAMPLE_PATH IDB_SOURCE_DIR "/conf/idbrokerd.json"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/idb-conf-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rm_rf(tmpdir);
}

static struct broker_conf *parse_ok(const char *text)
{
    struct broker_conf *c = NULL;
    char *error = NULL;
    int r = conf_parse(text, strlen(text), "test.json", &c, &error);
    if (r < 0)
        fail_msg("conf_parse(%s) = %d: %s", text, r, strna(error));
    assert_non_null(c);
    assert_null(error);
    return c;
}

/* Every field but path and providers. */
static void assert_conf_equal(const struct broker_conf *a, const struct broker_conf *b)
{
    assert_string_equal(a->node_name, b->node_name);
    assert_string_equal(a->listen, b->listen);
    assert_string_equal(a->health_listen, b->health_listen);
    assert_string_equal(a->control_socket, b->control_socket);
    assert_string_equal(a->state_dir, b->state_dir);
    assert_string_equal(a->plugin_dir, b->plugin_dir);
    assert_int_equal(a->source_kind, b->source_kind);
    assert_string_equal(a->source_dir, b->source_dir);
    if (a->kubeconfig || b->kubeconfig)
        assert_string_equal(strna(a->kubeconfig), strna(b->kubeconfig));
    assert_int_equal(a->source_poll_ms, b->source_poll_ms);
    assert_int_equal(a->provider_isolation, b->provider_isolation);
    for (int t = 0; t < CONF_MAX_TYPES; t++)
        assert_string_equal(a->type_providers[t], b->type_providers[t]);
    assert_int_equal(a->namespaced, b->namespaced);
    assert_int_equal(a->strict_selection, b->strict_selection);
    assert_int_equal(a->exceptions, b->exceptions);
    assert_int_equal(a->log_level, b->log_level);
    assert_int_equal(a->log_format, b->log_format);
    assert_int_equal(a->log_audit, b->log_audit);
    assert_int_equal(a->sync_timeout_ms, b->sync_timeout_ms);
    assert_int_equal(a->provider_timeout_ms, b->provider_timeout_ms);
    assert_int_equal(a->retry_after_s, b->retry_after_s);
    assert_int_equal(a->cache_max_entries, b->cache_max_entries);
    assert_int_equal(a->cache_min_ttl_s, b->cache_min_ttl_s);
    assert_int_equal(a->cache_negative_ms, b->cache_negative_ms);
    assert_int_equal(a->rate_per_pod, b->rate_per_pod);
    assert_int_equal(a->rate_burst, b->rate_burst);
    assert_int_equal(a->proxy_instance, b->proxy_instance);
    assert_int_equal(a->proxy_versions, b->proxy_versions);
    assert_int_equal(a->instance_namespaces.n, b->instance_namespaces.n);
    for (size_t i = 0; i < a->instance_namespaces.n; i++)
        assert_string_equal(a->instance_namespaces.v[i], b->instance_namespaces.v[i]);
    assert_int_equal(a->versions_namespaces.n, b->versions_namespaces.n);
    assert_string_equal(a->imds_endpoint, b->imds_endpoint);
    assert_string_equal(a->cni_conf_dir, b->cni_conf_dir);
    assert_int_equal(a->http_max_connections, b->http_max_connections);
    assert_int_equal(a->http_max_per_ip, b->http_max_per_ip);
    assert_int_equal(a->http_timeout_s, b->http_timeout_s);
}

static void test_defaults(void **state)
{
    (void)state;
    struct broker_conf *c = NULL;
    assert_int_equal(conf_new_default(&c), 0);

    char host[256] = "";
    assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
    for (char *p = host; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');

    assert_string_equal(c->path, "<defaults>");
    assert_string_equal(c->node_name, host);
    assert_string_equal(c->listen, CONF_DEFAULT_LISTEN);
    assert_string_equal(c->health_listen, CONF_DEFAULT_HEALTH_LISTEN);
    assert_string_equal(c->control_socket, "/run/idbroker/idbrokerd.sock");
    assert_string_equal(c->state_dir, "/var/lib/idbroker");
    assert_string_equal(c->plugin_dir, IDB_DEFAULT_PLUGIN_DIR);
    assert_int_equal(c->source_kind, SOURCE_FILES);
    assert_string_equal(c->source_dir, "/etc/idbroker/identities");
    assert_null(c->kubeconfig);
    assert_int_equal(c->source_poll_ms, 1000);
    assert_int_equal(c->n_providers, 0);
    assert_null(c->providers);
    assert_int_equal(c->provider_isolation, PROVIDER_ISOLATION_PROCESS);
    assert_string_equal(conf_type_provider(c, 0), "azure-msi");
    assert_string_equal(conf_type_provider(c, 1), "keyvault");
    assert_string_equal(conf_type_provider(c, 2), "keyvault");
    assert_null(conf_type_provider(c, -1));
    assert_null(conf_type_provider(c, 3));
    assert_true(c->namespaced);
    assert_false(c->strict_selection);
    assert_false(c->exceptions);
    assert_int_equal(c->log_level, IDB_LOG_INFO);
    assert_int_equal(c->log_format, LOG_FORMAT_JSON);
    assert_true(c->log_audit);
    assert_int_equal(c->sync_timeout_ms, 5000);
    assert_int_equal(c->provider_timeout_ms, 10000);
    assert_int_equal(c->retry_after_s, 5);
    assert_int_equal(c->cache_max_entries, 65536);
    assert_int_equal(c->cache_min_ttl_s, 300);
    assert_int_equal(c->cache_negative_ms, 2000);
    assert_int_equal(c->rate_per_pod, 20);
    assert_int_equal(c->rate_burst, 40);
    assert_false(c->proxy_instance);
    assert_false(c->proxy_versions);
    assert_int_equal(c->instance_namespaces.n, 0);
    assert_int_equal(c->versions_namespaces.n, 0);
    assert_false(conf_names_contain(&c->instance_namespaces, "default"));
    assert_string_equal(c->imds_endpoint, "http://169.254.169.254");
    assert_string_equal(c->cni_conf_dir, "/etc/cni/net.d");
    assert_int_equal(c->http_max_connections, 1024);
    assert_int_equal(c->http_max_per_ip, 64);
    assert_int_equal(c->http_timeout_s, 15);

    /* An empty object is the defaults too, under its own name. */
    struct broker_conf *e = parse_ok(" {\n}\n");
    assert_string_equal(e->path, "test.json");
    assert_conf_equal(c, e);
    assert_int_equal(e->n_providers, 0);
    conf_free(e);
    conf_free(c);
}

static void test_example_file(void **state)
{
    (void)state;
    struct broker_conf *d = NULL, *c = NULL;
    char *error = NULL;
    assert_int_equal(conf_new_default(&d), 0);
    int r = conf_load(EXAMPLE_PATH, &c, &error);
    if (r < 0)
        fail_msg("%s", strna(error));
    assert_string_equal(c->path, EXAMPLE_PATH);

    /* Every key it shows is the default (nodeName and pluginDir are null: computed / built in). */
    assert_conf_equal(d, c);

    /* Except providers, which are examples, kept as compact JSON text in file order. */
    assert_int_equal(c->n_providers, 2);
    assert_string_equal(c->providers[0].name, "mock");
    assert_non_null(strstr(c->providers[0].json, "\"lifetimeSeconds\":3600"));
    assert_non_null(
        strstr(c->providers[0].json, "\"jwksFile\":\"/var/lib/idbroker/mock/jwks.json\""));
    assert_string_equal(c->providers[1].name, "azure-msi");
    assert_string_equal(c->providers[1].json, "{\"endpoint\":\"http://169.254.169.254\"}");
    assert_ptr_equal(conf_find_provider(c, "azure-msi"), &c->providers[1]);
    assert_null(conf_find_provider(c, "keyvault"));
    assert_null(conf_find_provider(NULL, "mock"));
    assert_null(conf_restart_key(d, c));
    conf_free(c);
    conf_free(d);
}

static const char all_keys[] =
    "{\n"
    "  \"nodeName\": \"node-7.example\",\n"
    "  \"listen\": \"[fd00::1]:8080\",\n"
    "  \"healthListen\": \"0.0.0.0:9090\",\n"
    "  \"controlSocket\": \"/tmp/ctl.sock\",\n"
    "  \"stateDir\": \"/tmp/state\",\n"
    "  \"pluginDir\": \"/opt/idbroker/providers\",\n"
    "  \"source\": {\"kind\": \"kubernetes\", \"dir\": \"/ignored\", \"kubeconfig\": "
    "\"kube.yaml\",\n"
    "             \"pollIntervalMs\": 100},\n"
    "  \"providers\": {\"z-last\": {\"b\": [1, 2], \"a\": \"x/y\"}, \"a-first\": {}},\n"
    "  \"typeProviders\": {\"2\": \"z-last\", \"0\": \"a-first\", \"1\": \"a-first\"},\n"
    "  \"providerIsolation\": \"inline\",\n"
    "  \"namespaced\": false, \"strictSelection\": true, \"exceptions\": true,\n"
    "  \"log\": {\"level\": \"debug\", \"format\": \"text\", \"audit\": false},\n"
    "  \"syncTimeoutMs\": 0, \"providerTimeoutMs\": 120000, \"retryAfterSeconds\": 3600,\n"
    "  \"cache\": {\"maxEntries\": 4194304, \"minTtlSeconds\": 0, \"negativeTtlMs\": 60000},\n"
    "  \"rateLimit\": {\"requestsPerSecond\": 0, \"burst\": 1000000},\n"
    "  \"metadataProxy\": {\"instance\": true, \"versions\": true,\n"
    "                    \"instanceNamespaces\": [\"team-a\", \"kube-system\", \"team-a\"],\n"
    "                    \"versionsNamespaces\": [],\n"
    "                    \"endpoint\": \"https://imds.example:8443/\"},\n"
    "  \"cni\": {\"confDir\": \"\"},\n"
    "  \"http\": {\"maxConnections\": 65536, \"maxConnectionsPerPod\": 1, \"timeoutSeconds\": 1}\n"
    "}\n";

static void test_all_keys(void **state)
{
    (void)state;
    struct broker_conf *c = parse_ok(all_keys);
    assert_string_equal(c->node_name, "node-7.example");
    assert_string_equal(c->listen, "[fd00::1]:8080");
    assert_string_equal(c->health_listen, "0.0.0.0:9090");
    assert_string_equal(c->control_socket, "/tmp/ctl.sock");
    assert_string_equal(c->state_dir, "/tmp/state");
    assert_string_equal(c->plugin_dir, "/opt/idbroker/providers");
    assert_int_equal(c->source_kind, SOURCE_KUBERNETES);
    assert_string_equal(c->source_dir, "/ignored");
    assert_string_equal(c->kubeconfig, "kube.yaml");
    assert_int_equal(c->source_poll_ms, 100);
    assert_int_equal(c->n_providers, 2);
    assert_string_equal(c->providers[0].name, "z-last");
    assert_string_equal(c->providers[0].json, "{\"b\":[1,2],\"a\":\"x/y\"}");
    assert_string_equal(c->providers[1].name, "a-first");
    assert_string_equal(c->providers[1].json, "{}");
    assert_string_equal(conf_type_provider(c, 0), "a-first");
    assert_string_equal(conf_type_provider(c, 1), "a-first");
    assert_string_equal(conf_type_provider(c, 2), "z-last");
    assert_int_equal(c->provider_isolation, PROVIDER_ISOLATION_INLINE);
    assert_false(c->namespaced);
    assert_true(c->strict_selection);
    assert_true(c->exceptions);
    assert_int_equal(c->log_level, IDB_LOG_DEBUG);
    assert_int_equal(c->log_format, LOG_FORMAT_TEXT);
    assert_false(c->log_audit);
    assert_int_equal(c->sync_timeout_ms, 0);
    assert_int_equal(c->provider_timeout_ms, 120000);
    assert_int_equal(c->retry_after_s, 3600);
    assert_int_equal(c->cache_max_entries, 1 << 22);
    assert_int_equal(c->cache_min_ttl_s, 0);
    assert_int_equal(c->cache_negative_ms, 60000);
    assert_int_equal(c->rate_per_pod, 0);
    assert_int_equal(c->rate_burst, 1000000);
    assert_true(c->proxy_instance);
    assert_true(c->proxy_versions);
    assert_int_equal(c->instance_namespaces.n, 3);
    assert_string_equal(c->instance_namespaces.v[0], "team-a");
    assert_string_equal(c->instance_namespaces.v[1], "kube-system");
    assert_true(conf_names_contain(&c->instance_namespaces, "kube-system"));
    assert_false(conf_names_contain(&c->instance_namespaces, "team-b"));
    assert_false(conf_names_contain(&c->instance_namespaces, NULL));
    assert_int_equal(c->versions_namespaces.n, 0);
    assert_string_equal(c->imds_endpoint, "https://imds.example:8443/");
    assert_string_equal(c->cni_conf_dir, "");
    assert_int_equal(c->http_max_connections, 65536);
    assert_int_equal(c->http_max_per_ip, 1);
    assert_int_equal(c->http_timeout_s, 1);
    conf_free(c);
}

/* The syntax check lets every form of valid JSON through to the provider's text, up to 16 levels.
 */
static void test_json_syntax(void **state)
{
    (void)state;
    struct broker_conf *c = parse_ok(
        "\t{ \"providers\" :{\"m\":{\"s\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 "
        "\\uD83D\\uDE00 \u00e9\","
        " \"n\": [0, -0, 1.5, -2.25e+3, 1E-2, 10e5, 123456789012], \"l\": [true, false, null],"
        " \"e\": {}, \"a\": [], \"d\": [[[[[[[[[[[[[1]]]]]]]]]]]]]}} }\r\n");
    assert_int_equal(c->n_providers, 1);
    assert_non_null(strstr(c->providers[0].json, "\"l\":[true,false,null]"));
    assert_non_null(strstr(c->providers[0].json, "[[[[[[[[[[[[[1]]]]]]]]]]]]]"));
    conf_free(c);
}

static void test_partial_sections(void **state)
{
    (void)state;
    struct broker_conf *d = NULL;
    assert_int_equal(conf_new_default(&d), 0);

    /* A key present replaces only that entry; siblings keep their defaults. */
    struct broker_conf *c = parse_ok("{\"typeProviders\": {\"1\": \"custom-sp\"},"
                                     " \"cache\": {\"minTtlSeconds\": 60}, \"log\": {}}");
    assert_string_equal(conf_type_provider(c, 0), "azure-msi");
    assert_string_equal(conf_type_provider(c, 1), "custom-sp");
    assert_string_equal(conf_type_provider(c, 2), "keyvault");
    assert_int_equal(c->cache_min_ttl_s, 60);
    assert_int_equal(c->cache_max_entries, d->cache_max_entries);
    assert_int_equal(c->cache_negative_ms, d->cache_negative_ms);
    assert_int_equal(c->log_level, d->log_level);
    conf_free(c);

    /* null restores the computed or built-in default where a key allows it. */
    c = parse_ok("{\"nodeName\": null, \"pluginDir\": null, \"source\": {\"kubeconfig\": null},"
                 " \"providers\": {}, \"log\": {\"level\": \"WARN\"}}");
    assert_string_equal(c->node_name, d->node_name);
    assert_string_equal(c->plugin_dir, IDB_DEFAULT_PLUGIN_DIR);
    assert_null(c->kubeconfig);
    assert_int_equal(c->n_providers, 0);
    assert_int_equal(c->log_level, IDB_LOG_WARNING);
    conf_free(c);
    conf_free(d);
}

struct error_case {
    const char *text;
    int r;
    const char *msg; /* expected substring, after "test.json: " */
};

static const struct error_case error_cases[] = {
    /* unknown keys, at every level */
    {"{\"nodeNmae\": \"x\"}", -EINVAL, "test.json: unknown key 'nodeNmae'"},
    {"{\"cache\": {\"maxEntrys\": 5}}", -EINVAL, "test.json: unknown key 'cache.maxEntrys'"},
    {"{\"source\": {\"kind\": \"files\", \"directory\": \"/x\"}}", -EINVAL,
     "test.json: unknown key 'source.directory'"},
    {"{\"log\": {\"lvl\": \"info\"}}", -EINVAL, "unknown key 'log.lvl'"},
    {"{\"http\": {\"timeoutSeconds\": 5, \"x\": {}}}", -EINVAL, "unknown key 'http.x'"},
    {"{\"cache.maxEntries\": 5}", -EINVAL, "unknown key 'cache.maxEntries'"},
    {"{\"\": 5}", -EINVAL, "unknown key ''"},
    {"{\"a\\u0001'b\": 5}", -EINVAL, "unknown key 'a??b'"},
    {"{\"typeProviders\": {\"3\": \"x\"}}", -EINVAL, "unknown key 'typeProviders.3'"},
    {"{\"typeProviders\": {\"00\": \"x\"}}", -EINVAL, "unknown key 'typeProviders.00'"},
    /* wrong types */
    {"{\"namespaced\": \"yes\"}", -EINVAL,
     "test.json: key 'namespaced': expected a boolean, got '\"yes\"'"},
    {"{\"exceptions\": 1}", -EINVAL, "key 'exceptions': expected a boolean, got '1'"},
    {"{\"log\": {\"audit\": null}}", -EINVAL, "key 'log.audit': expected a boolean, got 'null'"},
    {"{\"cache\": 5}", -EINVAL, "key 'cache': expected an object, got '5'"},
    {"{\"source\": [\"files\"]}", -EINVAL, "key 'source': expected an object, got '[\"files\"]'"},
    {"{\"syncTimeoutMs\": \"5000\"}", -EINVAL,
     "key 'syncTimeoutMs': expected an integer in 0..60000, got '\"5000\"'"},
    {"{\"retryAfterSeconds\": 1.5}", -EINVAL,
     "key 'retryAfterSeconds': expected an integer in 1..3600, got '1.5'"},
    {"{\"retryAfterSeconds\": 5.0}", -EINVAL, "expected an integer in 1..3600, got '5.0'"},
    {"{\"listen\": 2579}", -EINVAL, "key 'listen': expected an address"},
    {"{\"stateDir\": null}", -EINVAL, "key 'stateDir': expected an absolute path, got 'null'"},
    {"{\"log\": {\"level\": 7}}", -EINVAL, "key 'log.level': expected one of"},
    /* out of range: the bounds are named */
    {"{\"cache\": {\"maxEntries\": 0}}", -EINVAL,
     "key 'cache.maxEntries': expected an integer in 1..4194304, got '0'"},
    {"{\"cache\": {\"maxEntries\": 4194305}}", -EINVAL, "in 1..4194304, got '4194305'"},
    {"{\"providerTimeoutMs\": -1}", -EINVAL,
     "key 'providerTimeoutMs': expected an integer in 100..120000, got '-1'"},
    {"{\"http\": {\"maxConnections\": 99999999999999999999}}", -EINVAL,
     "key 'http.maxConnections': expected an integer in 1..65536, got '18446744073709551615'"},
    {"{\"source\": {\"pollIntervalMs\": 99}}", -EINVAL, "in 100..60000, got '99'"},
    {"{\"rateLimit\": {\"burst\": 0}}", -EINVAL, "key 'rateLimit.burst': expected an integer in"},
    /* bad values */
    {"{\"log\": {\"level\": \"verbose\"}}", -EINVAL,
     "key 'log.level': expected one of 'err', 'warning', 'notice', 'info', 'debug', got "
     "'\"verbose\"'"},
    {"{\"log\": {\"format\": \"xml\"}}", -EINVAL,
     "key 'log.format': expected one of 'json', 'text', got '\"xml\"'"},
    {"{\"source\": {\"kind\": \"etcd\"}}", -EINVAL,
     "key 'source.kind': expected one of 'files', 'kubernetes', got '\"etcd\"'"},
    {"{\"providerIsolation\": \"thread\"}", -EINVAL,
     "key 'providerIsolation': expected one of 'process', 'inline', got '\"thread\"'"},
    {"{\"providerIsolation\": true}", -EINVAL, "key 'providerIsolation': expected one of"},
    {"{\"listen\": \"localhost:80\"}", -EINVAL,
     "key 'listen': expected an address 'IPv4:PORT' or '[IPv6]:PORT', got '\"localhost:80\"'"},
    {"{\"healthListen\": \"127.0.0.1:0\"}", -EINVAL, "key 'healthListen': expected an address"},
    {"{\"listen\": \"::1:80\"}", -EINVAL, "key 'listen': expected an address"},
    {"{\"stateDir\": \"var/lib/idbroker\"}", -EINVAL,
     "key 'stateDir': expected an absolute path, got '\"var/lib/idbroker\"'"},
    {"{\"pluginDir\": \"\"}", -EINVAL, "key 'pluginDir': expected an absolute path or null"},
    {"{\"source\": {\"dir\": \"identities\"}}", -EINVAL, "key 'source.dir': expected an absolute"},
    {"{\"source\": {\"kubeconfig\": \"\"}}", -EINVAL,
     "key 'source.kubeconfig': expected a non-empty path or null, got '\"\"'"},
    {"{\"stateDir\": \"/a\\u0000b\"}", -EINVAL, "key 'stateDir': expected an absolute path"},
    {"{\"stateDir\": \"/a\\nb\"}", -EINVAL, "key 'stateDir': expected an absolute path"},
    {"{\"controlSocket\": \"run/x.sock\"}", -EINVAL,
     "key 'controlSocket': expected an absolute path of at most 107 bytes"},
    {"{\"metadataProxy\": {\"endpoint\": \"ftp://imds\"}}", -EINVAL,
     "key 'metadataProxy.endpoint': expected an http:// or https:// URL, got '\"ftp://imds\"'"},
    {"{\"metadataProxy\": {\"endpoint\": \"http://\"}}", -EINVAL,
     "expected an http:// or https://"},
    {"{\"metadataProxy\": {\"instanceNamespaces\": \"default\"}}", -EINVAL,
     "key 'metadataProxy.instanceNamespaces': expected an array of at most 1024 namespace names, "
     "got '\"default\"'"},
    {"{\"metadataProxy\": {\"instanceNamespaces\": null}}", -EINVAL,
     "key 'metadataProxy.instanceNamespaces': expected an array"},
    {"{\"metadataProxy\": {\"versionsNamespaces\": [\"ok\", \"Team_A\"]}}", -EINVAL,
     "key 'metadataProxy.versionsNamespaces[1]': expected a namespace name ([a-z0-9-], at most 63 "
     "characters), got '\"Team_A\"'"},
    {"{\"metadataProxy\": {\"instanceNamespaces\": [\"\"]}}", -EINVAL,
     "key 'metadataProxy.instanceNamespaces[0]': expected a namespace name"},
    {"{\"metadataProxy\": {\"instanceNamespaces\": [\"-a\"]}}", -EINVAL,
     "expected a namespace name"},
    {"{\"metadataProxy\": {\"instanceNamespaces\": [\"a.b\"]}}", -EINVAL,
     "expected a namespace name"},
    {"{\"metadataProxy\": {\"instanceNamespaces\": [1]}}", -EINVAL, "expected a namespace name"},
    {"{\"metadataProxy\": {\"instanceNamespaces\": "
     "[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]}}",
     -EINVAL, "expected a namespace name"},
    {"{\"cni\": {\"confDir\": \"etc/cni\"}}", -EINVAL,
     "key 'cni.confDir': expected an absolute path or \"\" (off), got '\"etc/cni\"'"},
    {"{\"cni\": {\"confDir\": null}}", -EINVAL, "key 'cni.confDir': expected an absolute path"},
    {"{\"cni\": {\"dir\": \"/x\"}}", -EINVAL, "unknown key 'cni.dir'"},
    {"{\"nodeName\": \"Node_1\"}", -EINVAL, "key 'nodeName': expected a node name"},
    {"{\"nodeName\": \"\"}", -EINVAL, "key 'nodeName': expected a node name"},
    {"{\"nodeName\": \"-node\"}", -EINVAL, "key 'nodeName': expected a node name"},
    /* providers */
    {"{\"providers\": {\"Mock\": {}}}", -EINVAL,
     "test.json: key 'providers': invalid provider name 'Mock', expected [a-z0-9-]+"},
    {"{\"providers\": {\"../evil\": {}}}", -EINVAL, "invalid provider name '../evil'"},
    {"{\"providers\": {\"\": {}}}", -EINVAL, "invalid provider name ''"},
    {"{\"providers\": {\"mock\": \"x\"}}", -EINVAL,
     "key 'providers.mock': expected an object, got '\"x\"'"},
    {"{\"providers\": {\"mock\": {}, \"azure-msi\": null}}", -EINVAL,
     "key 'providers.azure-msi': expected an object, got 'null'"},
    {"{\"providers\": []}", -EINVAL, "key 'providers': expected an object, got '[]'"},
    {"{\"typeProviders\": {\"0\": \"Azure MSI\"}}", -EINVAL,
     "key 'typeProviders.0': expected a provider name ([a-z0-9-]+), got '\"Azure MSI\"'"},
    {"{\"typeProviders\": {\"1\": 1}}", -EINVAL, "key 'typeProviders.1': expected a provider name"},
    {"{\"typeProviders\": \"keyvault\"}", -EINVAL, "key 'typeProviders': expected an object"},
    /* not one JSON object */
    {"", -EBADMSG, "test.json: empty file, expected a JSON object"},
    {" \n\t\r\n", -EBADMSG, "test.json: empty file, expected a JSON object"},
    {"[1]", -EBADMSG, "test.json: expected a JSON object"},
    {"\"str\"", -EBADMSG, "test.json: expected a JSON object"},
    {"42", -EBADMSG, "test.json: expected a JSON object"},
    {"null", -EBADMSG, "test.json: expected a JSON object"},
    {"\xef\xbb\xbf{}", -EBADMSG, "test.json: expected a JSON object"},
    {"{} x", -EBADMSG, "test.json: line 1, column 4: unexpected data after the JSON object"},
    {"{}{}", -EBADMSG, "line 1, column 3: unexpected data after the JSON object"},
    {"{\"namespaced\": true}\n\n}", -EBADMSG, "line 3, column 1: unexpected data after"},
    {"{\"namespaced\": true", -EBADMSG, "invalid JSON: unexpected end of input"},
    {"{\"namespaced\": }", -EBADMSG, "test.json: line 1, column 16: invalid JSON:"},
    {"{\"namespaced\": true,}", -EBADMSG, "invalid JSON:"},
    {"{/* c */}", -EBADMSG, "invalid JSON:"},
    {"{'namespaced': true}", -EBADMSG, "invalid JSON:"},
    {"{\"nodeName\": \"\xff\"}", -EBADMSG, "invalid JSON:"},
    {"{\"providers\": {\"mock\": {\"a\": {\"b\": {\"c\": {\"d\": {\"e\": {\"f\": {\"g\": {\"h\": "
     "{\"i\": {\"j\": {\"k\": {\"l\": {\"m\": {\"n\": {\"o\": {}}}}}}}}}}}}}}}}}}}",
     -EBADMSG, "invalid JSON: nested deeper than 16 levels"},
    {"{\"a\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", -EBADMSG,
     "nested deeper than 16 levels"},
};

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < ELEMENTSOF(error_cases); i++) {
        const struct error_case *t = &error_cases[i];
        struct broker_conf *c = (struct broker_conf *)(uintptr_t)0x1; /* must stay untouched */
        char *error = NULL;
        int r = conf_parse(t->text, strlen(t->text), "test.json", &c, &error);
        if (r != t->r || !error || !strstr(error, t->msg))
            fail_msg("case %zu %s: r=%d (want %d), error '%s', want '%s'", i, t->text, r, t->r,
                     strna(error), t->msg);
        assert_ptr_equal(c, (struct broker_conf *)(uintptr_t)0x1);
        assert_true(strncmp(error, "test.json: ", 11) == 0);
        assert_null(strchr(error, '\n'));
        free(error);

        /* ret_error is optional */
        r = conf_parse(t->text, strlen(t->text), NULL, &c, NULL);
        assert_int_equal(r, t->r);
        assert_ptr_equal(c, (struct broker_conf *)(uintptr_t)0x1);
    }
}

static void test_error_details(void **state)
{
    (void)state;
    struct broker_conf *c = NULL;
    char *error = NULL;

    /* A NUL byte ends json-c's parse; the rest is still garbage. */
    static const char nul[] = "{\"namespaced\": true}\0{";
    assert_int_equal(conf_parse(nul, sizeof(nul) - 1, "n.json", &c, &error), -EBADMSG);
    assert_non_null(strstr(error, "n.json: line 1, column 21: unexpected data after"));
    free(error);

    /* No path: messages still say where. */
    assert_int_equal(conf_parse("{\"x\":1}", 7, NULL, &c, &error), -EINVAL);
    assert_string_equal(error, "<config>: unknown key 'x'");
    free(error);

    /* Long keys and values are cut, never copied whole into the message. */
    char text[4096];
    char longkey[1000];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    snprintf(text, sizeof(text), "{\"cache\": {\"%s\": 1}}", longkey);
    assert_int_equal(conf_parse(text, strlen(text), "t", &c, &error), -EINVAL);
    assert_non_null(strstr(error, "unknown key 'cache.kkkk"));
    assert_non_null(strstr(error, "...'"));
    assert_true(strlen(error) < 200);
    free(error);
    snprintf(text, sizeof(text), "{\"nodeName\": \"%s\"}", longkey);
    assert_int_equal(conf_parse(text, strlen(text), "t", &c, &error), -EINVAL);
    assert_non_null(strstr(error, "got '\"kkkk"));
    assert_true(strlen(error) < 300);
    free(error);

    /* Over the cap: refused before parsing. */
    size_t big = CONF_MAX_FILE_BYTES + 1;
    char *buf = malloc(big);
    assert_non_null(buf);
    memset(buf, ' ', big);
    buf[0] = '{';
    buf[big - 1] = '}';
    assert_int_equal(conf_parse(buf, big, "big", &c, &error), -E2BIG);
    assert_non_null(strstr(error, "big: larger than 1048576 bytes"));
    free(error);
    /* At the cap: fine. */
    assert_int_equal(conf_parse(buf, big - 1, "big", &c, &error), -EBADMSG); /* no closing brace */
    free(error);
    buf[big - 2] = '}';
    assert_int_equal(conf_parse(buf, big - 1, "big", &c, &error), 0);
    c = conf_free(c);
    free(buf);
}

static void test_load(void **state)
{
    (void)state;
    struct broker_conf *c = NULL;
    char *error = NULL;
    char path[128];

    assert_int_equal(conf_load("/nonexistent/idbrokerd.json", &c, &error), -ENOENT);
    assert_string_equal(error,
                        "cannot read '/nonexistent/idbrokerd.json': No such file or directory");
    free(error);
    assert_null(c);

    assert_int_equal(conf_load(tmpdir, &c, &error), -EISDIR);
    assert_non_null(strstr(error, "cannot read '/tmp/idb-conf-"));
    assert_non_null(strstr(error, "': Is a directory"));
    free(error);

    /* Too large. */
    snprintf(path, sizeof(path), "%s/big.json", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputc('{', f);
    for (size_t i = 0; i < CONF_MAX_FILE_BYTES; i++)
        fputc(' ', f);
    fputc('}', f);
    fclose(f);
    assert_int_equal(conf_load(path, &c, &error), -E2BIG);
    assert_non_null(strstr(error, "big.json': larger than 1048576 bytes"));
    free(error);

    /* Parse errors name the file. */
    snprintf(path, sizeof(path), "%s/bad.json", tmpdir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\n  \"cache\": {\"maxEntrys\": 1}\n}\n", f);
    fclose(f);
    assert_int_equal(conf_load(path, &c, &error), -EINVAL);
    char want[256];
    snprintf(want, sizeof(want), "%s: unknown key 'cache.maxEntrys'", path);
    assert_string_equal(error, want);
    free(error);
    assert_null(c);

    /* ret_error optional here too. */
    assert_int_equal(conf_load("/nonexistent/x.json", &c, NULL), -ENOENT);

    snprintf(path, sizeof(path), "%s/good.json", tmpdir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"nodeName\": \"n1\"}", f);
    fclose(f);
    assert_int_equal(conf_load(path, &c, &error), 0);
    assert_string_equal(c->path, path);
    assert_string_equal(c->node_name, "n1");
    c = conf_free(c);
    assert_null(c);
}

static void test_restart_key(void **state)
{
    (void)state;
    struct broker_conf *d = NULL;
    assert_int_equal(conf_new_default(&d), 0);

    struct broker_conf *c =
        parse_ok("{\"log\": {\"level\": \"debug\"}, \"namespaced\": false,"
                 " \"providers\": {\"mock\": {}}, \"cache\": {\"minTtlSeconds\": 1},"
                 " \"typeProviders\": {\"0\": \"mock\"}}");
    assert_null(conf_restart_key(d, c));
    conf_free(c);

    static const struct {
        const char *text, *key;
    } cases[] = {
        {"{\"nodeName\": \"other-node\"}", "nodeName"},
        {"{\"listen\": \"169.254.169.251:2579\"}", "listen"},
        {"{\"healthListen\": \"127.0.0.1:1\"}", "healthListen"},
        {"{\"controlSocket\": \"/run/x.sock\"}", "controlSocket"},
        {"{\"stateDir\": \"/x\"}", "stateDir"},
        {"{\"pluginDir\": \"/x\"}", "pluginDir"},
        {"{\"source\": {\"kind\": \"kubernetes\"}}", "source.kind"},
        {"{\"providerIsolation\": \"inline\"}", "providerIsolation"},
        {"{\"source\": {\"dir\": \"/x\"}}", "source.dir"},
        {"{\"source\": {\"kubeconfig\": \"/k\"}}", "source.kubeconfig"},
        {"{\"cache\": {\"maxEntries\": 5}}", "cache.maxEntries"},
        {"{\"http\": {\"maxConnections\": 5}}", "http.maxConnections"},
        {"{\"http\": {\"maxConnectionsPerPod\": 5}}", "http.maxConnectionsPerPod"},
        {"{\"http\": {\"timeoutSeconds\": 5}}", "http.timeoutSeconds"},
        {"{\"metadataProxy\": {\"instance\": true}}", "metadataProxy.instance"},
        {"{\"metadataProxy\": {\"instanceNamespaces\": [\"a\"]}}",
         "metadataProxy.instanceNamespaces"},
        {"{\"metadataProxy\": {\"versionsNamespaces\": [\"a\"]}}",
         "metadataProxy.versionsNamespaces"},
        {"{\"cni\": {\"confDir\": \"/x\"}}", "cni.confDir"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        c = parse_ok(cases[i].text);
        const char *key = conf_restart_key(d, c);
        if (!key || strcmp(key, cases[i].key) != 0)
            fail_msg("%s: restart key %s, want %s", cases[i].text, strna(key), cases[i].key);
        assert_string_equal(conf_restart_key(c, d), cases[i].key);
        conf_free(c);
    }
    conf_free(d);
}

static void test_listen(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    unsigned len = 0;

    assert_int_equal(conf_parse_listen("127.0.0.1:80", &ss, &len), 0);
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)&ss;
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(in4->sin_port), 80);
    assert_int_equal(ntohl(in4->sin_addr.s_addr), 0x7f000001);

    assert_int_equal(conf_parse_listen(CONF_DEFAULT_LISTEN, &ss, &len), 0);
    assert_int_equal(ntohs(in4->sin_port), 2579);

    assert_int_equal(conf_parse_listen("[::1]:65535", &ss, &len), 0);
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    assert_int_equal(ntohs(in6->sin6_port), 65535);
    assert_true(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));

    assert_int_equal(conf_parse_listen("[fe80::1:2]:1", NULL, NULL), 0);
    assert_int_equal(conf_parse_listen("0.0.0.0:2580", NULL, NULL), 0);
    assert_int_equal(conf_parse_listen("[::ffff:169.254.169.250]:2579", NULL, NULL), 0);

    static const char *const bad[] = {
        "",
        ":80",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:123456",
        "127.0.0.1:+80",
        "127.0.0.1:-1",
        "127.0.0.1:8 0",
        "127.0.0.1: 80",
        " 127.0.0.1:80",
        "127.0.0.1:80 ",
        "127.0.0.1:0x50",
        "::1:80",
        "::1",
        "[::1]80",
        "[::1]",
        "[::1]:",
        "[]:80",
        "[::1:80",
        "[127.0.0.1]:80",
        "[::1%lo]:80",
        "[::1]:80]",
        "localhost:80",
        "1.2.3:80",
        "1.2.3.4.5:80",
        "256.1.1.1:80",
        "01.2.3.4:80",
        "[::1]:[80]",
        "[0000:0000:0000:0000:0000:0000:0000:0000:0000]:80",
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        memset(&ss, 0xaa, sizeof(ss));
        len = 12345;
        if (conf_parse_listen(bad[i], &ss, &len) != -EINVAL)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(len, 12345); /* written only on success */
        assert_int_equal(((const unsigned char *)&ss)[0], 0xaa);
    }
    assert_int_equal(conf_parse_listen(NULL, &ss, &len), -EINVAL);
}

static void test_free_null(void **state)
{
    (void)state;
    assert_null(conf_free(NULL));
    assert_null(conf_type_provider(NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_example_file),
        cmocka_unit_test(test_all_keys),
        cmocka_unit_test(test_partial_sections),
        cmocka_unit_test(test_json_syntax),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_details),
        cmocka_unit_test_setup_teardown(test_load, setup, teardown),
        cmocka_unit_test(test_restart_key),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_free_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
