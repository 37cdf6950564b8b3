/* SPDX-License-Identifier: Apache-2.0 */
/* k8s-watch without a server: API objects converted with manifest.c's rules
 * (manifest_object_from_json), watch events applied to a policy store (add, modify, delete, an
 * unusable object treated as absent), and the AzureAssignedIdentity name. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker/errno.h>

#include <idbroker-internal/json-util.h>

#include "aai.h"
#include "k8s-client.h"
#include "k8s-watch.h"
#include "manifest.h"
#include "policy.h"
#include "store.h"

#include <cmocka.h>

static struct json_object *parse(const char *text)
{
    struct json_object *o = NULL;
    assert_int_equal(json_parse_strict(text, strlen(text), &o, NULL), 0);
    return o;
}

/* A pod as the API lists it: no kind/apiVersion in list items, many fields we ignore. */
static const char POD[] =
    "{\"metadata\":{\"name\":\"p1\",\"namespace\":\"ns1\",\"uid\":\"u-1\",\"resourceVersion\":"
    "\"42\",\"labels\":{\"aadpodidbinding\":\"%s\",\"app\":\"x\"},\"annotations\":{\"a\":\"b\"},"
    "\"managedFields\":[{\"manager\":\"kubectl\"}]},\"spec\":{\"nodeName\":\"n1\",\"containers\":"
    "[{\"name\":\"c\",\"image\":\"i\"}]},\"status\":{\"phase\":\"Running\",\"podIP\":\"10.0.0.5\","
    "\"podIPs\":[{\"ip\":\"10.0.0.5\"},{\"ip\":\"fd00::5\"}]}}";

static void test_convert_pod(void **state)
{
    (void)state;
    char text[2048];
    snprintf(text, sizeof(text), POD, "sel");
    struct json_object *o = parse(text);
    struct manifest_object m = {0};
    char *err = NULL;
    assert_int_equal(manifest_object_from_json(o, MANIFEST_POD, "api:Pod@42", &m, &err), 0);
    assert_non_null(m.pod);
    assert_string_equal(m.pod->namespace, "ns1");
    assert_string_equal(m.pod->uid, "u-1");
    assert_string_equal(m.pod->node, "n1");
    assert_string_equal(m.pod->origin, "api:Pod@42");
    assert_int_equal(m.pod->n_ips, 2);
    assert_string_equal(m.pod->ips[1], "fd00::5");
    assert_int_equal(m.pod->n_labels, 2);
    manifest_object_done(&m);
    assert_null(m.pod);
    json_object_put(o);

    /* status.podIP alone */
    o = parse("{\"metadata\":{\"name\":\"p\"},\"status\":{\"podIP\":\"10.1.1.1\"}}");
    assert_int_equal(manifest_object_from_json(o, MANIFEST_POD, "api", &m, NULL), 0);
    assert_int_equal(m.pod->n_ips, 1);
    assert_string_equal(m.pod->namespace, "default");
    manifest_object_done(&m);
    json_object_put(o);
}

static void test_convert_crds(void **state)
{
    (void)state;
    struct json_object *o =
        parse("{\"apiVersion\":\"aadpodidentity.k8s.io/v1\",\"kind\":\"AzureIdentity\","
              "\"metadata\":{\"name\":\"id\",\"namespace\":\"ns1\",\"uid\":\"x\",\"annotations\":"
              "{\"idbroker.io/provider\":\"mock\"}},\"spec\":{\"type\":1,\"clientID\":\"c\","
              "\"clientPassword\":{\"name\":\"s\",\"namespace\":\"ns1\"}}}");
    struct manifest_object m = {0};
    assert_int_equal(manifest_object_from_json(o, MANIFEST_IDENTITY, "api", &m, NULL), 0);
    assert_int_equal(m.identity->type, 1);
    assert_string_equal(m.identity->secret_name, "s");
    assert_string_equal(identity_annotation(m.identity, "idbroker.io/provider"), "mock");
    assert_true(m.identity->hash != 0);
    manifest_object_done(&m);
    json_object_put(o);

    o = parse("{\"metadata\":{\"name\":\"b\",\"namespace\":\"ns1\"},\"spec\":{\"azureIdentity\":"
              "\"id\",\"selector\":\"sel\",\"weight\":7}}");
    assert_int_equal(manifest_object_from_json(o, MANIFEST_BINDING, "api", &m, NULL), 0);
    assert_int_equal(m.binding->weight, 7);
    manifest_object_done(&m);
    json_object_put(o);

    o = parse("{\"metadata\":{\"name\":\"e\",\"namespace\":\"ns1\"},\"spec\":{\"podLabels\":"
              "{\"app\":\"legacy\"}}}");
    assert_int_equal(manifest_object_from_json(o, MANIFEST_EXCEPTION, "api", &m, NULL), 0);
    assert_int_equal(m.exception->n_pod_labels, 1);
    manifest_object_done(&m);
    json_object_put(o);

    /* Field errors name the field; nothing is returned. */
    o = parse("{\"metadata\":{\"name\":\"b\"},\"spec\":{\"azureIdentity\":\"id\"}}");
    char *err = NULL;
    m = (struct manifest_object){0};
    assert_int_equal(manifest_object_from_json(o, MANIFEST_BINDING, "api:x", &m, &err),
                     IDB_E_BAD_MANIFEST);
    assert_null(m.binding);
    assert_non_null(strstr(err, "spec.selector"));
    free(err);
    json_object_put(o);
    o = parse("[1]");
    assert_true(manifest_object_from_json(o, MANIFEST_POD, "api", &m, NULL) < 0);
    assert_int_equal(manifest_object_from_json(o, 99, "api", &m, NULL), -EINVAL);
    json_object_put(o);
}

static void test_yaml_to_json(void **state)
{
    (void)state;
    const char *y = "a: 1\nb: [x, y]\n---\nc: 2\n";
    struct json_object *o = NULL;
    assert_int_equal(manifest_yaml_to_json(y, strlen(y), "t", &o, NULL), 0);
    assert_string_equal(json_get_str(o, "a"), "1");
    assert_false(json_object_object_get_ex(o, "c", NULL)); /* first document only */
    json_object_put(o);
    char *err = NULL;
    assert_true(manifest_yaml_to_json("&a x: *a\n", 9, "t", &o, &err) < 0);
    free(err);
    err = NULL;
    assert_true(manifest_yaml_to_json("", 0, "t", &o, &err) < 0);
    free(err);
}

static int apply(struct policy *p, int kind, int type, const char *text)
{
    struct json_object *o = parse(text);
    int r = k8s_watch_apply_event(p, kind, type, o);
    json_object_put(o);
    return r;
}

static void test_apply_events(void **state)
{
    (void)state;
    struct policy p;
    struct store_policy flags = {.namespaced = true};
    assert_int_equal(policy_init(&p, &flags, false), 0);
    uint64_t g0 = policy_generation(&p);
    char text[2048];
    snprintf(text, sizeof(text), POD, "sel");
    assert_int_equal(apply(&p, MANIFEST_POD, K8S_EVENT_ADDED, text), 1);
    assert_true(policy_generation(&p) > g0);
    assert_int_equal(apply(&p, MANIFEST_IDENTITY, K8S_EVENT_ADDED,
                           "{\"metadata\":{\"name\":\"id\",\"namespace\":\"ns1\"},\"spec\":{"
                           "\"type\":0,\"clientID\":\"c\"}}"),
                     1);
    assert_int_equal(apply(&p, MANIFEST_BINDING, K8S_EVENT_ADDED,
                           "{\"metadata\":{\"name\":\"b\",\"namespace\":\"ns1\"},\"spec\":{"
                           "\"azureIdentity\":\"id\",\"selector\":\"sel\"}}"),
                     1);
    struct decision d;
    store_decide(p.store, &p.flags, "ns1", "p1", SELECTOR_NONE, NULL, &d);
    assert_int_equal(d.result, 0);

    /* Label change by MODIFIED: denied. */
    snprintf(text, sizeof(text), POD, "other");
    assert_int_equal(apply(&p, MANIFEST_POD, K8S_EVENT_MODIFIED, text), 1);
    store_decide(p.store, &p.flags, "ns1", "p1", SELECTOR_NONE, NULL, &d);
    assert_int_equal(d.result, IDB_E_NO_BINDING);
    snprintf(text, sizeof(text), POD, "sel");
    assert_int_equal(apply(&p, MANIFEST_POD, K8S_EVENT_MODIFIED, text), 1);

    /* A binding that becomes unusable is treated as absent (not kept in its old form). */
    assert_int_equal(apply(&p, MANIFEST_BINDING, K8S_EVENT_MODIFIED,
                           "{\"metadata\":{\"name\":\"b\",\"namespace\":\"ns1\"},\"spec\":{"
                           "\"azureIdentity\":\"id\",\"selector\":7}}"),
                     1);
    assert_int_equal(store_count_bindings(p.store), 0);
    store_decide(p.store, &p.flags, "ns1", "p1", SELECTOR_NONE, NULL, &d);
    assert_int_equal(d.result, IDB_E_NO_BINDING);

    /* DELETED removes; deleting again changes nothing; BOOKMARK is not a store change. */
    assert_int_equal(apply(&p, MANIFEST_POD, K8S_EVENT_DELETED, text), 1);
    assert_int_equal(apply(&p, MANIFEST_POD, K8S_EVENT_DELETED, text), 0);
    assert_int_equal(apply(&p, MANIFEST_POD, K8S_EVENT_BOOKMARK, text), 0);
    assert_null(store_get_pod(p.store, "ns1", "p1"));
    assert_int_equal(apply(&p, MANIFEST_POD, K8S_EVENT_ADDED, "{\"metadata\":{}}"), -EBADMSG);
    assert_int_equal(apply(&p, 0, K8S_EVENT_ADDED, "{\"metadata\":{}}"), -EINVAL);
    policy_done(&p);
}

static void test_aai_name(void **state)
{
    (void)state;
    char buf[300];
    assert_int_equal(aai_name("pod", "ns", "id", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "pod-ns-id");
    char longname[200];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(aai_name(longname, "ns",
                              "identity-with-a-long-name-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", buf,
                              sizeof(buf)),
                     -ENAMETOOLONG);
    assert_int_equal(aai_name("p", "n", "i", buf, 4), -ENAMETOOLONG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convert_pod),  cmocka_unit_test(test_convert_crds),
        cmocka_unit_test(test_yaml_to_json), cmocka_unit_test(test_apply_events),
        cmocka_unit_test(test_aai_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
