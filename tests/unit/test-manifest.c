/* SPDX-License-Identifier: Apache-2.0 */
/* Manifests of the files source (DESIGN §5): YAML and JSON, multi-document, Lists, the seed's
 * capitalised fields, every error message form, the caps, and source_files_load /
 * source_files_fingerprint on a temporary directory. */
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
#include <unistd.h>

#include <idbroker/errno.h>

#include "limits.h"
#include "manifest.h"
#include "store.h"
#include "test-util.h"

#include <cmocka.h>

static bool streq_ok(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

static struct store *parse_ok(const char *text, const char *origin)
{
    struct store *s = store_new();
    assert_non_null(s);
    char *err = NULL;
    int r = manifest_parse(text, strlen(text), origin, s, &err);
    if (r < 0)
        fail_msg("manifest_parse failed (%d): %s", r, err ? err : "(no message)");
    assert_null(err);
    return s;
}

/* Parses and expects the exact error message. */
static void parse_fails(const char *text, const char *origin, const char *want)
{
    struct store *s = store_new();
    char *err = NULL;
    int r = manifest_parse(text, strlen(text), origin, s, &err);
    assert_int_equal(r, IDB_E_BAD_MANIFEST);
    assert_non_null(err);
    if (!streq_ok(err, want))
        fail_msg("error\n  got:  %s\n  want: %s", err, want);
    free(err);
    store_free(s);
}

#define DEMO_IDENTITY                                                                              \
    "apiVersion: aadpodidentity.k8s.io/v1\n"                                                       \
    "kind: AzureIdentity\n"                                                                        \
    "metadata:\n"                                                                                  \
    "  name: demo-identity\n"                                                                      \
    "  annotations:\n"                                                                             \
    "    idbroker.io/provider: mock\n"                                                             \
    "    kubectl.kubernetes.io/last-applied-configuration: '{\"kind\":\"AzureIdentity\"}'\n"       \
    "spec:\n"                                                                                      \
    "  type: 0\n"                                                                                  \
    "  clientID: 00000000-0000-0000-0000-00000000c1d1\n"                                           \
    "  resourceID: /subscriptions/s/rg/demo\n"

static const char *multi_doc = "# leading comment\n" DEMO_IDENTITY "---\n"
                               "apiVersion: aadpodidentity.k8s.io/v1\n"
                               "kind: AzureIdentityBinding\n"
                               "metadata: {name: demo-binding, namespace: default}\n"
                               "spec:\n"
                               "  azureIdentity: demo-identity\n"
                               "  selector: demo\n"
                               "  weight: \"3\"\n"
                               "---\n"
                               "apiVersion: v1\n"
                               "kind: Pod\n"
                               "metadata:\n"
                               "  name: pod-a\n"
                               "  uid: 1234-5678\n"
                               "  labels:\n"
                               "    aadpodidbinding: demo\n"
                               "    empty:\n"
                               "spec:\n"
                               "  nodeName: node-1\n"
                               "  containers: [{name: c, image: busybox}]\n"
                               "---\n"
                               "apiVersion: aadpodidentity.k8s.io/v1\n"
                               "kind: AzurePodIdentityException\n"
                               "metadata:\n"
                               "  name: exc\n"
                               "  namespace: kube-system\n"
                               "spec:\n"
                               "  podLabels:\n"
                               "    component: kube-proxy\n"
                               "---\n"
                               "apiVersion: v1\n"
                               "kind: ConfigMap\n"
                               "metadata: {name: ignored}\n"
                               "---\n"
                               "...\n";

static void test_multi_doc_yaml(void **state)
{
    (void)state;
    struct store *s = parse_ok(multi_doc, "ids.yaml");
    assert_int_equal(store_count_identities(s), 1);
    assert_int_equal(store_count_bindings(s), 1);
    assert_int_equal(store_count_pods(s), 1);
    assert_int_equal(store_count_exceptions(s), 1);

    const struct identity *i = store_get_identity(s, "default", "demo-identity");
    assert_non_null(i);
    assert_int_equal(i->type, 0);
    assert_string_equal(i->client_id, "00000000-0000-0000-0000-00000000c1d1");
    assert_string_equal(i->resource_id, "/subscriptions/s/rg/demo");
    assert_string_equal(i->tenant_id, "");
    assert_string_equal(i->secret_name, "");
    assert_null(i->uid);
    assert_string_equal(identity_annotation(i, "idbroker.io/provider"), "mock");
    /* kubectl's copy of the object is not kept (nor handed to providers). */
    assert_null(identity_annotation(i, "kubectl.kubernetes.io/last-applied-configuration"));
    assert_int_equal(i->n_annotations, 1);
    assert_string_equal(i->origin, "ids.yaml#1");
    assert_true(i->hash != 0);

    const struct pod_meta *p = store_get_pod(s, "default", "pod-a");
    assert_non_null(p);
    assert_string_equal(p->uid, "1234-5678");
    assert_string_equal(p->node, "node-1");
    assert_int_equal(p->n_labels, 2);
    assert_string_equal(p->origin, "ids.yaml#3");

    struct store_policy pol = {.namespaced = true};
    struct decision d;
    assert_int_equal(store_decide(s, &pol, "default", "pod-a", SELECTOR_NONE, NULL, &d), 0);
    assert_int_equal(d.result, 0);
    assert_int_equal(d.binding->weight, 3);
    assert_string_equal(d.binding->origin, "ids.yaml#2");
    store_free(s);
}

static void test_json(void **state)
{
    (void)state;
    const char *one = "{\"apiVersion\": \"aadpodidentity.k8s.io/v1\", \"kind\": \"AzureIdentity\","
                      " \"metadata\": {\"name\": \"j\", \"namespace\": \"ns\"},"
                      " \"spec\": {\"type\": 2, \"clientID\": \"c\", \"tenantID\": \"t\","
                      " \"clientPassword\": {\"name\": \"sec\", \"namespace\": \"ns\"}}}";
    struct store *s = parse_ok(one, "one.json");
    const struct identity *i = store_get_identity(s, "ns", "j");
    assert_non_null(i);
    assert_int_equal(i->type, 2);
    assert_string_equal(i->tenant_id, "t");
    assert_string_equal(i->secret_name, "sec");
    assert_string_equal(i->secret_namespace, "ns");
    store_free(s);

    /* A List, then a second JSON value in the same file. */
    const char *list =
        "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": ["
        " {\"apiVersion\": \"aadpodidentity.k8s.io/v1\", \"kind\": \"AzureIdentityBinding\","
        "  \"metadata\": {\"name\": \"b\"}, \"spec\": {\"azureIdentity\": \"x\", \"selector\": "
        "\"s\", \"weight\": 7}},"
        " {\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\","
        "  \"labels\": {\"aadpodidbinding\": \"s\"}}}]}\n"
        "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p2\"}}\n";
    s = parse_ok(list, "list.json");
    assert_int_equal(store_count_bindings(s), 1);
    assert_int_equal(store_count_pods(s), 2);
    assert_non_null(store_get_pod(s, "default", "p2"));
    assert_string_equal(store_get_pod(s, "default", "p2")->origin, "list.json#2");
    store_free(s);

    s = parse_ok("", "empty.json");
    assert_int_equal(store_count_pods(s), 0);
    store_free(s);
    s = parse_ok("", "empty.yaml");
    store_free(s);
}

/* What the unprotected-pod check reads (THREATS T21): spec.hostNetwork, status.phase and
 * metadata.deletionTimestamp, in JSON (the API) and YAML (files). */
static void test_pod_state(void **state)
{
    (void)state;
    struct store *s = parse_ok(
        "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"run\"},"
        " \"spec\": {\"nodeName\": \"n1\"}, \"status\": {\"phase\": \"Running\", \"podIP\": "
        "\"10.0.0.5\"}}\n"
        "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"hn\"},"
        " \"spec\": {\"hostNetwork\": true}, \"status\": {\"phase\": \"Running\"}}\n"
        "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"del\","
        " \"deletionTimestamp\": \"2026-01-01T00:00:00Z\"}, \"spec\": {\"hostNetwork\": null},"
        " \"status\": {\"phase\": \"Running\"}}\n"
        "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"done\"},"
        " \"status\": {\"phase\": \"Succeeded\"}}\n",
        "pods.json");
    const struct pod_meta *p = store_get_pod(s, "default", "run");
    assert_true(p->running && !p->host_network && !p->terminating);
    p = store_get_pod(s, "default", "hn");
    assert_true(p->running && p->host_network && !p->terminating);
    p = store_get_pod(s, "default", "del");
    assert_true(p->running && !p->host_network && p->terminating);
    p = store_get_pod(s, "default", "done");
    assert_true(!p->running && !p->host_network && !p->terminating);
    store_free(s);

    s = parse_ok("apiVersion: v1\nkind: Pod\nmetadata: {name: y}\nspec: {hostNetwork: true}\n"
                 "status: {phase: Running}\n---\n"
                 "apiVersion: v1\nkind: Pod\nmetadata: {name: y11}\nspec: {hostNetwork: yes}\n---\n"
                 "apiVersion: v1\nkind: Pod\nmetadata: {name: n11}\nspec: {hostNetwork: Off}\n",
                 "pod.yaml");
    p = store_get_pod(s, "default", "y");
    assert_true(p->running && p->host_network);
    assert_true(store_get_pod(s, "default", "y11")->host_network);
    assert_false(store_get_pod(s, "default", "n11")->host_network);
    store_free(s);
    parse_fails("{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"x\"},"
                " \"spec\": {\"hostNetwork\": \"maybe\"}}",
                "bad.json",
                "bad.json: document 1: field 'spec.hostNetwork': expected true or false, got "
                "'maybe'");
}

static void test_yaml_list_and_capitalised(void **state)
{
    (void)state;
    const char *text = "apiVersion: v1\n"
                       "kind: List\n"
                       "items:\n"
                       "- apiVersion: aadpodidentity.k8s.io/v1\n"
                       "  kind: AzureIdentity\n"
                       "  metadata: {name: seed, namespace: ns}\n"
                       "  spec:\n"
                       "    Type: \"1\"\n"
                       "    ResourceID: /r\n"
                       "    ClientID: cid\n"
                       "    TenantID: tid\n"
                       "    ClientPassword: {name: pw, namespace: ns}\n"
                       "    ADEndpoint: https://login\n"
                       "    ADResourceID: https://res\n"
                       "- apiVersion: aadpodidentity.k8s.io/v1\n"
                       "  kind: AzureIdentityBinding\n"
                       "  metadata: {name: seed-b, namespace: ns}\n"
                       "  spec: {AzureIdentity: seed, Selector: sel, Weight: 4}\n"
                       "- apiVersion: aadpodidentity.k8s.io/v1\n"
                       "  kind: AzurePodIdentityException\n"
                       "  metadata: {name: seed-e, namespace: ns}\n"
                       "  spec: {PodLabels: {a: b}}\n";
    struct store *s = parse_ok(text, "seed.yml");
    const struct identity *i = store_get_identity(s, "ns", "seed");
    assert_non_null(i);
    assert_int_equal(i->type, 1);
    assert_string_equal(i->resource_id, "/r");
    assert_string_equal(i->client_id, "cid");
    assert_string_equal(i->tenant_id, "tid");
    assert_string_equal(i->secret_name, "pw");
    assert_string_equal(i->ad_endpoint, "https://login");
    assert_string_equal(i->ad_resource_id, "https://res");
    assert_string_equal(i->origin, "seed.yml#1");
    assert_int_equal(store_count_bindings(s), 1);
    assert_int_equal(store_count_exceptions(s), 1);

    struct json_object *o = binding_to_json(NULL);
    assert_null(o);
    store_free(s);
}

#define IDENTITY_TYPE_FMT                                                                          \
    "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\nmetadata: {name: n}\n"             \
    "spec: {type: %s}\n"
#define BINDING_WEIGHT_FMT                                                                         \
    "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata: {name: b}\n"      \
    "spec: {azureIdentity: i, selector: s, weight: %s}\n"

static void test_numbers(void **state)
{
    (void)state;
    const char *good[] = {"0", "\"0\"", "'2'", "1"};
    for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++) {
        char buf[256];
        snprintf(buf, sizeof(buf), IDENTITY_TYPE_FMT, good[k]);
        struct store *s = parse_ok(buf, "n.yaml");
        assert_non_null(store_get_identity(s, "default", "n"));
        store_free(s);
    }
    const char *weights[] = {"-12", "~", "\"+7\"", "2147483647"};
    for (size_t k = 0; k < sizeof(weights) / sizeof(weights[0]); k++) {
        char buf[256];
        snprintf(buf, sizeof(buf), BINDING_WEIGHT_FMT, weights[k]);
        struct store *s = parse_ok(buf, "b.yaml");
        assert_int_equal(store_count_bindings(s), 1);
        store_free(s);
    }
}

static void test_error_messages(void **state)
{
    (void)state;
    parse_fails(DEMO_IDENTITY "---\n"
                              "apiVersion: aadpodidentity.k8s.io/v1\n"
                              "kind: AzureIdentityBinding\n"
                              "metadata: {name: b}\n"
                              "spec: {azureIdentity: i, selector: s, weight: heavy}\n",
                "ids.yaml",
                "ids.yaml: document 2: field 'spec.weight': expected an integer, got 'heavy'");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\n"
                "metadata: {name: b}\nspec: {azureIdentity: i, selector: s, Weight: 1.5}\n",
                "w.yaml",
                "w.yaml: document 1: field 'spec.Weight': expected an integer, got '1.5'");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\n"
                "metadata: {name: b}\nspec: {azureIdentity: i, selector: s, weight: 99999999999}\n",
                "w.yaml",
                "w.yaml: document 1: field 'spec.weight': expected an integer from -2147483648 to "
                "2147483647, got '99999999999'");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\n"
                "metadata: {namespace: x}\nspec: {type: 0}\n",
                "a.yaml", "a.yaml: document 1: field 'metadata.name': required");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\n"
                "spec: {type: 0}\n",
                "a.yaml", "a.yaml: document 1: field 'metadata': required");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\n"
                "metadata: {name: \"\"}\nspec: {type: 0}\n",
                "a.yaml", "a.yaml: document 1: field 'metadata.name': must not be empty");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\n"
                "metadata: {name: Bad_Name}\nspec: {type: 0}\n",
                "a.yaml",
                "a.yaml: document 1: field 'metadata.name': expected a lower-case DNS name, got "
                "'Bad_Name'");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\n"
                "metadata: {name: ok, namespace: a.b}\nspec: {type: 0}\n",
                "a.yaml",
                "a.yaml: document 1: field 'metadata.namespace': expected a lower-case DNS label, "
                "got 'a.b'");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1beta1\nkind: AzureIdentity\n"
                "metadata: {name: a}\nspec: {type: 0}\n",
                "a.yaml",
                "a.yaml: document 1: field 'apiVersion': expected 'aadpodidentity.k8s.io/v1' for "
                "kind AzureIdentity, got 'aadpodidentity.k8s.io/v1beta1'");
    parse_fails("kind: Pod\nmetadata: {name: a}\n", "p.yaml",
                "p.yaml: document 1: field 'apiVersion': required");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: Pod\nmetadata: {name: a}\n", "p.yaml",
                "p.yaml: document 1: field 'apiVersion': expected 'v1' for kind Pod, got "
                "'aadpodidentity.k8s.io/v1'");
    parse_fails("apiVersion: v1\nmetadata: {name: a}\n", "p.yaml",
                "p.yaml: document 1: field 'kind': required");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\n"
                "metadata: {name: a}\nspec: {type: 3}\n",
                "a.yaml",
                "a.yaml: document 1: field 'spec.type': expected an integer from 0 to 2, got '3'");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\n"
                "metadata: {name: a}\nspec: {clientID: c}\n",
                "a.yaml", "a.yaml: document 1: field 'spec.type': required");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\n"
                "metadata: {name: a}\n",
                "a.yaml", "a.yaml: document 1: field 'spec': required");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\n"
                "metadata: {name: a}\nspec: [1, 2]\n",
                "a.yaml",
                "a.yaml: document 1: field 'spec': expected a mapping, got '[\"1\",\"2\"]'");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\n"
                "metadata: {name: b}\nspec: {azureIdentity: i}\n",
                "b.yaml", "b.yaml: document 1: field 'spec.selector': required");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\n"
                "metadata: {name: b}\nspec: {selector: s}\n",
                "b.yaml", "b.yaml: document 1: field 'spec.azureIdentity': required");
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\n"
                "metadata: {name: b}\nspec: {azureIdentity: {x: y}, selector: s}\n",
                "b.yaml",
                "b.yaml: document 1: field 'spec.azureIdentity': expected a string, got "
                "'{\"x\":\"y\"}'");
    parse_fails("{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\","
                " \"labels\": {\"app\": 5}}}",
                "p.json",
                "p.json: document 1: field 'metadata.labels.app': expected a string, got '5'");
    parse_fails("{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\","
                " \"labels\": [\"app\"]}}",
                "p.json",
                "p.json: document 1: field 'metadata.labels': expected a mapping, got '[\"app\"]'");
    parse_fails("{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\"}}\n"
                "{\"apiVersion\": \"v1\", \"kind\": 7}",
                "p.json", "p.json: document 2: field 'kind': expected a string, got '7'");
    parse_fails("[1, 2]", "p.json", "p.json: document 1: expected a mapping, got '[1,2]'");
    parse_fails("- a\n- b\n", "p.yaml",
                "p.yaml: document 1: expected a mapping, got '[\"a\",\"b\"]'");
    parse_fails("just a string\n", "p.yaml",
                "p.yaml: document 1: expected a mapping, got 'just a string'");
    /* A List item's path says which item. */
    parse_fails("apiVersion: v1\nkind: List\nitems:\n"
                "- {apiVersion: v1, kind: Pod, metadata: {name: ok}}\n"
                "- apiVersion: aadpodidentity.k8s.io/v1\n"
                "  kind: AzureIdentityBinding\n"
                "  metadata: {name: b}\n"
                "  spec: {azureIdentity: i, selector: s, weight: heavy}\n",
                "l.yaml",
                "l.yaml: document 1: field 'items[1].spec.weight': expected an integer, got "
                "'heavy'");
    parse_fails("apiVersion: v1\nkind: List\nitems: {a: b}\n", "l.yaml",
                "l.yaml: document 1: field 'items': expected a list, got '{\"a\":\"b\"}'");
    parse_fails("apiVersion: v1\nkind: List\nitems:\n- {kind: List, items: []}\n", "l.yaml",
                "l.yaml: document 1: field 'items[0]': a List inside a List is not supported");
    /* Duplicates, within a document and across documents. */
    parse_fails("apiVersion: v1\nkind: Pod\nkind: Pod\nmetadata: {name: a}\n", "d.yaml",
                "d.yaml: document 1: duplicate key 'kind'");
    parse_fails("apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {x: 1, x: 2}}\n", "d.yaml",
                "d.yaml: document 1: field 'metadata.labels': duplicate key 'x'");
    parse_fails(DEMO_IDENTITY "---\n" DEMO_IDENTITY, "d.yaml",
                "d.yaml: document 2: AzureIdentity default/demo-identity is defined twice (first "
                "in d.yaml#1)");
    parse_fails("{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\"}}"
                "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\"}}",
                "d.json", "d.json: document 2: Pod default/p is defined twice (first in d.json#1)");
    const char *b = "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\n"
                    "metadata: {name: b}\nspec: {azureIdentity: i, selector: s}\n";
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s---\n%s", b, b);
    parse_fails(buf, "d.yaml",
                "d.yaml: document 2: AzureIdentityBinding default/b is defined twice");
    /* Syntax errors. */
    parse_fails("apiVersion: v1\nkind: Pod\nmetadata: {name: [\n", "s.yaml",
                "s.yaml: document 1: YAML error at line 4 column 1: while parsing a flow node did "
                "not find expected node content");
    parse_fails("{\"kind\": \"Pod\",}", "s.json",
                "s.json: document 1: JSON error at byte 15: unexpected character");
    parse_fails("{\"kind\": \"Pod\"", "s.json",
                "s.json: document 1: JSON error: unexpected end of input");
    /* Quoted values are sanitised and capped. */
    parse_fails("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\n"
                "metadata: {name: b}\nspec: {azureIdentity: i, selector: s, weight: \"a\\tb\"}\n",
                "q.yaml",
                "q.yaml: document 1: field 'spec.weight': expected an integer, got 'a?b'");
}

static void test_anchors_rejected(void **state)
{
    (void)state;
    parse_fails("apiVersion: v1\nkind: Pod\nmetadata:\n  name: &n a\n  labels: {x: *n}\n", "a.yaml",
                "a.yaml: document 1: field 'metadata.name': YAML anchors and aliases are not "
                "allowed");
    parse_fails("a: &a [x, x]\nb: [*a, *a]\n", "a.yaml",
                "a.yaml: document 1: field 'a': YAML anchors and aliases are not allowed");
    parse_fails("base: &b {x: 1}\nkind: Pod\nother:\n  <<: *b\n", "a.yaml",
                "a.yaml: document 1: field 'base': YAML anchors and aliases are not allowed");
    parse_fails("? &k key\n: v\n", "a.yaml",
                "a.yaml: document 1: YAML anchors and aliases are not allowed");
}

static void test_caps(void **state)
{
    (void)state;
    /* Depth: MANIFEST_MAX_DEPTH nested flow sequences are too many. */
    char deep[4 * MANIFEST_MAX_DEPTH + 64];
    size_t o = 0;
    o += (size_t)snprintf(deep + o, sizeof(deep) - o, "a: ");
    for (int k = 0; k < MANIFEST_MAX_DEPTH; k++)
        deep[o++] = '[';
    for (int k = 0; k < MANIFEST_MAX_DEPTH; k++)
        deep[o++] = ']';
    deep[o++] = '\n';
    deep[o] = '\0';
    char want[256];
    struct store *s = store_new();
    char *err = NULL;
    assert_int_equal(manifest_parse(deep, strlen(deep), "deep.yaml", s, &err), IDB_E_BAD_MANIFEST);
    snprintf(want, sizeof(want), "nesting deeper than %d levels", MANIFEST_MAX_DEPTH);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, "deep.yaml: document 1: field 'a"));
    free(err);
    err = NULL;

    /* The same in JSON. */
    o = 0;
    o += (size_t)snprintf(deep + o, sizeof(deep) - o, "{\"a\": ");
    for (int k = 0; k < MANIFEST_MAX_DEPTH; k++)
        deep[o++] = '[';
    for (int k = 0; k < MANIFEST_MAX_DEPTH; k++)
        deep[o++] = ']';
    deep[o++] = '}';
    deep[o] = '\0';
    assert_int_equal(manifest_parse(deep, strlen(deep), "deep.json", s, &err), IDB_E_BAD_MANIFEST);
    assert_string_equal(err, "deep.json: document 1: nesting deeper than 32 levels");
    free(err);
    err = NULL;

    /* Too many labels. */
    size_t cap = 64 * (MANIFEST_MAX_LABELS + 1) + 256;
    char *many = malloc(cap);
    assert_non_null(many);
    o = (size_t)snprintf(many, cap, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n");
    for (int k = 0; k <= MANIFEST_MAX_LABELS; k++)
        o += (size_t)snprintf(many + o, cap - o, "    l%d: v\n", k);
    assert_int_equal(manifest_parse(many, o, "l.yaml", s, &err), IDB_E_BAD_MANIFEST);
    snprintf(want, sizeof(want),
             "l.yaml: document 1: field 'metadata.labels': more than %d entries",
             MANIFEST_MAX_LABELS);
    assert_string_equal(err, want);
    free(err);
    err = NULL;

    /* Annotations of a Pod are not read, so many of them are fine. */
    o = (size_t)snprintf(many, cap,
                         "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n");
    for (int k = 0; k <= MANIFEST_MAX_LABELS; k++)
        o += (size_t)snprintf(many + o, cap - o, "    a%d: v\n", k);
    assert_int_equal(manifest_parse(many, o, "a.yaml", s, &err), 0);
    assert_null(err);
    assert_int_equal(store_remove_pod(s, "default", "p"), 1);
    free(many);

    /* File size. */
    char *big = calloc(1, (size_t)MANIFEST_MAX_FILE_BYTES + 1);
    assert_non_null(big);
    memset(big, ' ', (size_t)MANIFEST_MAX_FILE_BYTES + 1);
    assert_int_equal(manifest_parse(big, (size_t)MANIFEST_MAX_FILE_BYTES + 1, "big.yaml", s, &err),
                     IDB_E_BAD_MANIFEST);
    assert_non_null(strstr(err, "big.yaml: file is larger than"));
    free(err);
    free(big);
    err = NULL;

    /* Errors without a place to put the message still fail. */
    assert_int_equal(manifest_parse("[", 1, "x.json", s, NULL), IDB_E_BAD_MANIFEST);
    assert_int_equal(store_count_pods(s), 0);
    store_free(s);
}

static void test_skips(void **state)
{
    (void)state;
    struct store *s = parse_ok("---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {}\n"
                               "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                               "---\n# only a comment\n",
                               "skip.yaml");
    assert_int_equal(store_count_pods(s), 1);
    assert_non_null(store_get_pod(s, "default", "p"));
    store_free(s);
}

/* ---- files source ---- */

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/idb-manifest-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rm_rf(tmpdir);
}

static void write_file(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void remove_file(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    assert_int_equal(unlink(path), 0);
}

static const char *pod_yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-a\n"
                              "  labels: {aadpodidbinding: demo}\n";

static void test_source_files_load(void **state)
{
    (void)state;
    write_file("10-identity.yaml", DEMO_IDENTITY);
    write_file("20-binding.json",
               "{\"apiVersion\": \"aadpodidentity.k8s.io/v1\", \"kind\": \"AzureIdentityBinding\","
               " \"metadata\": {\"name\": \"demo-binding\"},"
               " \"spec\": {\"azureIdentity\": \"demo-identity\", \"selector\": \"demo\"}}");
    write_file("30-pods.yml", pod_yaml);
    /* Skipped: hidden files, other extensions, subdirectories. */
    write_file(".hidden.yaml", "this: [is broken\n");
    write_file("README.md", "not a manifest: [\n");
    write_file("notes.yaml.bak", "broken: [\n");
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/sub.yaml", tmpdir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(sub, sizeof(sub), "%s/sub.yaml/x.yaml", tmpdir);
    FILE *f = fopen(sub, "w");
    assert_non_null(f);
    fputs("broken: [\n", f);
    fclose(f);

    struct store *s = NULL;
    char *err = NULL;
    int r = source_files_load(tmpdir, &s, &err);
    if (r < 0)
        fail_msg("load failed: %s", err);
    assert_non_null(s);
    assert_null(err);
    assert_int_equal(store_count_identities(s), 1);
    assert_int_equal(store_count_bindings(s), 1);
    assert_int_equal(store_count_pods(s), 1);
    assert_string_equal(store_get_identity(s, "default", "demo-identity")->origin,
                        "10-identity.yaml#1");
    struct store_policy pol = {.namespaced = true};
    struct decision d;
    assert_int_equal(store_decide(s, &pol, "default", "pod-a", SELECTOR_NONE, NULL, &d), 0);
    assert_int_equal(d.result, 0);
    store_free(s);

    /* One broken file: nothing is loaded, *ret untouched, the message names file and field. */
    write_file("40-broken.yaml", "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\n"
                                 "metadata: {name: x}\nspec: {type: nine}\n");
    struct store *sentinel = (struct store *)&pol;
    s = sentinel;
    r = source_files_load(tmpdir, &s, &err);
    assert_int_equal(r, IDB_E_BAD_MANIFEST);
    assert_ptr_equal(s, sentinel);
    assert_string_equal(err, "40-broken.yaml: document 1: field 'spec.type': expected an "
                             "integer, got 'nine'");
    free(err);
    err = NULL;
    remove_file("40-broken.yaml");

    /* The same object in two files: sorted order decides which one is "first". */
    write_file("05-dup.yaml", pod_yaml);
    r = source_files_load(tmpdir, &s, &err);
    assert_int_equal(r, IDB_E_BAD_MANIFEST);
    assert_string_equal(err, "30-pods.yml: document 1: Pod default/pod-a is defined twice (first "
                             "in 05-dup.yaml#1)");
    free(err);
    err = NULL;
    remove_file("05-dup.yaml");

    /* A missing directory. */
    r = source_files_load("/nonexistent/idb-dir", &s, &err);
    assert_int_equal(r, -ENOENT);
    assert_ptr_equal(s, sentinel);
    assert_non_null(strstr(err, "/nonexistent/idb-dir"));
    free(err);
}

static void test_example_manifests(void **state)
{
    (void)state;
    struct store *s = NULL;
    char *err = NULL;
    int r = source_files_load(IDB_SOURCE_DIR "/conf/identities", &s, &err);
    if (r < 0)
        fail_msg("conf/identities: %s", err);
    const struct identity *i = store_get_identity(s, "default", "demo-identity");
    assert_non_null(i);
    assert_int_equal(i->type, 0);
    assert_string_equal(i->client_id, "00000000-0000-0000-0000-00000000c1d1");
    assert_true(strlen(i->resource_id) > 0);
    assert_string_equal(identity_annotation(i, STORE_ANNOTATION_PROVIDER), "mock");
    struct store_policy pol = {.namespaced = true};
    struct decision d;
    assert_int_equal(store_decide(s, &pol, "default", "pod-a", SELECTOR_NONE, NULL, &d), 0);
    assert_int_equal(d.result, 0);
    assert_string_equal(d.binding->name, "demo-binding");
    assert_int_equal(store_decide(s, &pol, "default", "pod-b", SELECTOR_NONE, NULL, &d), 0);
    assert_int_equal(d.result, IDB_E_NO_BINDING);
    store_free(s);
}

static void test_fingerprint(void **state)
{
    (void)state;
    uint64_t a, b, c;
    assert_int_equal(source_files_fingerprint(tmpdir, &a), 0);
    assert_int_equal(source_files_fingerprint(tmpdir, &b), 0);
    assert_true(a == b);

    write_file("p.yaml", pod_yaml);
    assert_int_equal(source_files_fingerprint(tmpdir, &b), 0);
    assert_true(a != b);

    /* An edit that keeps the size: only the mtime (set explicitly, no sleeping) differs. */
    char path[256];
    snprintf(path, sizeof(path), "%s/p.yaml", tmpdir);
    struct timespec ts[2] = {{.tv_sec = 1000000000, .tv_nsec = 1},
                             {.tv_sec = 1000000000, .tv_nsec = 1}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    assert_int_equal(source_files_fingerprint(tmpdir, &b), 0);
    ts[1].tv_nsec = 2;
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    assert_int_equal(source_files_fingerprint(tmpdir, &c), 0);
    assert_true(b != c);

    /* Content change with a different size. */
    write_file("p.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\n");
    assert_int_equal(source_files_fingerprint(tmpdir, &b), 0);
    assert_true(b != c);

    /* Irrelevant files do not count. */
    write_file(".swp.yaml", "x");
    write_file("notes.txt", "x");
    assert_int_equal(source_files_fingerprint(tmpdir, &c), 0);
    assert_true(b == c);

    remove_file("p.yaml");
    remove_file(".swp.yaml");
    remove_file("notes.txt");
    assert_int_equal(source_files_fingerprint(tmpdir, &c), 0);
    assert_true(a == c);
    assert_true(source_files_fingerprint("/nonexistent/idb-dir", &c) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multi_doc_yaml),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_pod_state),
        cmocka_unit_test(test_yaml_list_and_capitalised),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_anchors_rejected),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_skips),
        cmocka_unit_test_setup_teardown(test_source_files_load, setup, teardown),
        cmocka_unit_test(test_example_manifests),
        cmocka_unit_test_setup_teardown(test_fingerprint, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
