/* SPDX-License-Identifier: Apache-2.0 */
/* The CNI plugin's input parsing (cni-plugin/conf.c) and output objects (cni-plugin/cni-result.c).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/registration.h>

#include "cni-result.h"
#include "conf.h"

#include <cmocka.h>

/* Debian's bridge plugin, spec 1.0.0: the bridge, the host veth, the pod's eth0. */
#define PREV_BRIDGE_1_0                                                                            \
    "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"cni0\",\"mac\":\"aa:bb:cc:dd:ee:01\"}," \
    "{\"name\":\"veth12345678\",\"mac\":\"aa:bb:cc:dd:ee:02\"},"                                   \
    "{\"name\":\"eth0\",\"mac\":\"0A:58:0A:16:00:05\",\"sandbox\":\"/var/run/netns/p\"}],"         \
    "\"ips\":[{\"interface\":2,\"address\":\"10.22.0.5/16\",\"gateway\":\"10.22.0.1\"},"           \
    "{\"interface\":2,\"address\":\"fd00::5/64\"}],\"routes\":[{\"dst\":\"0.0.0.0/0\"}],"          \
    "\"dns\":{}}"

/* Spec 0.3.x/0.4.0 shape: "version" per IP. */
#define PREV_PTP_0_3                                                                               \
    "{\"cniVersion\":\"0.3.1\",\"interfaces\":[{\"name\":\"veth0abc\",\"mac\":\"aa:bb:cc:dd:ee:"   \
    "03\"},"                                                                                       \
    "{\"name\":\"eth0\",\"mac\":\"aa:bb:cc:dd:ee:04\",\"sandbox\":\"/var/run/netns/q\"}],"         \
    "\"ips\":[{\"version\":\"4\",\"interface\":1,\"address\":\"10.1.0.7/32\",\"gateway\":"         \
    "\"10.1.0.1\"}]}"

static int parse(const char *text, struct cni_conf *c, struct cni_error *e)
{
    memset(e, 0, sizeof(*e));
    return conf_parse(text, strlen(text), true, c, e);
}

static void test_defaults(void **state)
{
    (void)state;
    struct cni_conf c;
    struct cni_error e;
    assert_int_equal(
        parse("{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"idbroker\"}", &c, &e), 0);
    assert_string_equal(c.cni_version, "1.0.0");
    assert_string_equal(c.name, "n");
    assert_null(c.prev_result);
    assert_string_equal(c.broker_socket, "/run/idbroker/idbrokerd.sock");
    assert_string_equal(c.state_dir, "/var/lib/idbroker");
    char b[64];
    assert_string_equal(reg_ip_to_string(&c.broker_address, b, sizeof(b)), "169.254.169.250");
    assert_string_equal(reg_ip_to_string(&c.metadata_address, b, sizeof(b)), "169.254.169.254");
    assert_int_equal(c.broker_port, 2579);
    assert_int_equal(c.metadata_port, 80);
    assert_string_equal(c.log_file, "");
    assert_int_equal(c.log_level, IDB_LOG_INFO);
    assert_false(c.has_valid);
    conf_done(&c);
}

static void test_keys(void **state)
{
    (void)state;
    struct cni_conf c;
    struct cni_error e;
    assert_int_equal(
        parse(
            "{\"cniVersion\":\"0.4.0\",\"brokerSocket\":\"/tmp/"
            "s\",\"brokerAddress\":\"169.254.1.2\","
            "\"brokerPort\":8080,\"stateDir\":\"/tmp/st\",\"metadataAddress\":\"169.254.169.253\","
            "\"metadataPort\":81,\"logFile\":\"/tmp/l\",\"logLevel\":\"debug\",\"future\":[1,2]}",
            &c, &e),
        0);
    char b[64];
    assert_string_equal(c.broker_socket, "/tmp/s");
    assert_string_equal(reg_ip_to_string(&c.broker_address, b, sizeof(b)), "169.254.1.2");
    assert_int_equal(c.broker_port, 8080);
    assert_string_equal(c.state_dir, "/tmp/st");
    assert_string_equal(reg_ip_to_string(&c.metadata_address, b, sizeof(b)), "169.254.169.253");
    assert_int_equal(c.metadata_port, 81);
    assert_string_equal(c.log_file, "/tmp/l");
    assert_int_equal(c.log_level, IDB_LOG_DEBUG);
    conf_done(&c);
}

static void expect_code(const char *text, unsigned code, const char *needle)
{
    struct cni_conf c;
    struct cni_error e;
    assert_true(parse(text, &c, &e) < 0);
    assert_int_equal(e.code, code);
    if (needle && !strstr(e.details, needle)) {
        print_error("details '%s' lack '%s'\n", e.details, needle);
        fail();
    }
}

static void test_errors(void **state)
{
    (void)state;
    expect_code("", CNI_ERR_DECODE, NULL);
    expect_code("{", CNI_ERR_DECODE, NULL);
    expect_code("[]", CNI_ERR_DECODE, "object");
    expect_code("{\"cniVersion\":\"1.0.0\"} {}", CNI_ERR_DECODE, NULL);
    expect_code("{}", CNI_ERR_INCOMPATIBLE_VERSION, "(none)");
    expect_code("{\"cniVersion\":\"0.2.0\"}", CNI_ERR_INCOMPATIBLE_VERSION, "0.2.0");
    expect_code("{\"cniVersion\":1}", CNI_ERR_INVALID_CONFIG, "cniVersion");
    expect_code("{\"cniVersion\":\"1.0.0\",\"brokerPort\":0}", CNI_ERR_INVALID_CONFIG,
                "brokerPort");
    expect_code("{\"cniVersion\":\"1.0.0\",\"brokerPort\":\"80\"}", CNI_ERR_INVALID_CONFIG,
                "'\"80\"'");
    expect_code("{\"cniVersion\":\"1.0.0\",\"metadataPort\":65536}", CNI_ERR_INVALID_CONFIG, NULL);
    expect_code("{\"cniVersion\":\"1.0.0\",\"brokerAddress\":\"127.0.0.1\"}",
                CNI_ERR_INVALID_CONFIG, "loopback");
    expect_code(
        "{\"cniVersion\":\"1.0.0\",\"brokerAddress\":\"::1\",\"metadataAddress\":\"fd00::1\"}",
        CNI_ERR_INVALID_CONFIG, "loopback");
    expect_code("{\"cniVersion\":\"1.0.0\",\"brokerAddress\":\"fd00::1\"}", CNI_ERR_INVALID_CONFIG,
                "family");
    expect_code("{\"cniVersion\":\"1.0.0\",\"brokerAddress\":\"169.254.169.254\"}",
                CNI_ERR_INVALID_CONFIG, "differ");
    expect_code("{\"cniVersion\":\"1.0.0\",\"stateDir\":\"\"}", CNI_ERR_INVALID_CONFIG, "stateDir");
    expect_code("{\"cniVersion\":\"1.0.0\",\"logLevel\":\"loud\"}", CNI_ERR_INVALID_CONFIG,
                "logLevel");
    expect_code("{\"cniVersion\":\"1.0.0\",\"prevResult\":[]}", CNI_ERR_INVALID_CONFIG,
                "prevResult");
    expect_code("{\"cniVersion\":\"1.1.0\",\"cni.dev/valid-attachments\":{}}",
                CNI_ERR_INVALID_CONFIG, "valid-attachments");
    expect_code("{\"cniVersion\":\"1.1.0\",\"cni.dev/valid-attachments\":[{\"containerID\":1}]}",
                CNI_ERR_INVALID_CONFIG, "valid-attachments");

    /* VERSION accepts a missing cniVersion. */
    struct cni_conf c;
    struct cni_error e = {0};
    assert_int_equal(conf_parse("{}", 2, false, &c, &e), 0);
    assert_null(c.cni_version);
    conf_done(&c);
}

static void test_prev_result_1_0(void **state)
{
    (void)state;
    struct cni_conf c;
    struct cni_error e;
    assert_int_equal(parse("{\"cniVersion\":\"1.0.0\",\"prevResult\":" PREV_BRIDGE_1_0 "}", &c, &e),
                     0);
    assert_non_null(c.prev_result);
    struct conf_prev_result *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    assert_int_equal(conf_parse_prev_result(c.prev_result, p, &e), 0);
    assert_int_equal(p->n_ifaces, 3);
    assert_string_equal(p->ifaces[0].name, "cni0");
    assert_false(p->ifaces[0].in_sandbox);
    assert_false(p->ifaces[1].in_sandbox);
    assert_true(p->ifaces[2].in_sandbox);
    assert_true(p->ifaces[2].has_mac);
    assert_int_equal(p->ifaces[2].mac[0], 0x0a);
    assert_int_equal(p->ifaces[2].mac[5], 0x05);
    assert_int_equal(p->n_ips, 2);
    char b[64];
    assert_string_equal(reg_ip_to_string(&p->ips[0].addr, b, sizeof(b)), "10.22.0.5");
    assert_int_equal(p->ips[0].prefix_len, 16);
    assert_int_equal(p->ips[0].iface, 2);
    assert_int_equal(p->ips[1].addr.family, AF_INET6);
    assert_int_equal(p->ips[1].prefix_len, 64);
    free(p);
    conf_done(&c);
}

static void test_prev_result_0_3(void **state)
{
    (void)state;
    struct cni_conf c;
    struct cni_error e;
    assert_int_equal(parse("{\"cniVersion\":\"0.3.1\",\"prevResult\":" PREV_PTP_0_3 "}", &c, &e),
                     0);
    struct conf_prev_result *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    assert_int_equal(conf_parse_prev_result(c.prev_result, p, &e), 0);
    assert_int_equal(p->n_ifaces, 2);
    assert_int_equal(p->n_ips, 1);
    assert_int_equal(p->ips[0].prefix_len, 32);
    assert_int_equal(p->ips[0].iface, 1);
    free(p);
    conf_done(&c);
}

static void expect_prev_error(const char *prev, const char *needle)
{
    _cleanup_json_ struct json_object *o = NULL;
    assert_int_equal(json_parse_strict(prev, strlen(prev), &o, NULL), 0);
    struct conf_prev_result *p = calloc(1, sizeof(*p));
    struct cni_error e = {0};
    assert_non_null(p);
    assert_true(conf_parse_prev_result(o, p, &e) < 0);
    free(p);
    assert_int_equal(e.code, CNI_ERR_INVALID_CONFIG);
    if (!strstr(e.details, needle)) {
        print_error("details '%s' lack '%s'\n", e.details, needle);
        fail();
    }
}

static void test_prev_result_errors(void **state)
{
    (void)state;
    expect_prev_error("{}", "no IP");
    expect_prev_error("{\"ips\":[]}", "no IP");
    expect_prev_error("{\"ips\":{}}", "no IP");
    expect_prev_error("{\"ips\":[{\"address\":\"10.0.0.1\"}]}", "address");
    expect_prev_error("{\"ips\":[{\"address\":\"10.0.0.1/33\"}]}", "address");
    expect_prev_error("{\"ips\":[{\"address\":\"10.0.0.1/\"}]}", "address");
    expect_prev_error("{\"ips\":[{\"address\":\"/24\"}]}", "address");
    expect_prev_error("{\"ips\":[{\"address\":\"fd00::1/129\"}]}", "address");
    expect_prev_error("{\"ips\":[{\"version\":\"6\",\"address\":\"10.0.0.1/24\"}]}", "version");
    expect_prev_error("{\"ips\":[{\"interface\":0,\"address\":\"10.0.0.1/24\"}]}", "interface");
    expect_prev_error("{\"interfaces\":[{}],\"ips\":[{\"address\":\"10.0.0.1/24\"}]}", "name");
    expect_prev_error(
        "{\"interfaces\":[{\"name\":\"a/b\"}],\"ips\":[{\"address\":\"10.0.0.1/24\"}]}", "name");
    expect_prev_error("{\"interfaces\":[{\"name\":\"x\",\"mac\":\"zz\"}],"
                      "\"ips\":[{\"address\":\"10.0.0.1/24\"}]}",
                      "mac");
    expect_prev_error("{\"interfaces\":[{\"name\":\"x\"}],"
                      "\"ips\":[{\"interface\":-1,\"address\":\"10.0.0.1/24\"}]}",
                      "interface");
}

static void test_cni_args(void **state)
{
    (void)state;
    struct conf_pod p;
    struct cni_error e = {0};
    assert_int_equal(conf_parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;"
                                         "K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1234-5678",
                                         &p, &e),
                     0);
    assert_string_equal(p.pod_namespace, "ns");
    assert_string_equal(p.pod_name, "web-0");
    assert_string_equal(p.pod_uid, "1234-5678");

    /* podman: only the name. */
    assert_int_equal(conf_parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=nervous_tesla", &p, &e), 0);
    assert_string_equal(p.pod_namespace, "");
    assert_string_equal(p.pod_name, "nervous_tesla");
    assert_string_equal(p.pod_uid, "");

    assert_int_equal(conf_parse_cni_args(NULL, &p, &e), 0);
    assert_string_equal(p.pod_name, "");
    assert_int_equal(conf_parse_cni_args(";;K8S_POD_NAME=a;", &p, &e), 0);
    assert_string_equal(p.pod_name, "a");
    /* A prefix of a known key is another key. */
    assert_int_equal(conf_parse_cni_args("K8S_POD_NAMES=x;K8S_POD=y", &p, &e), 0);
    assert_string_equal(p.pod_name, "");

    assert_true(conf_parse_cni_args("novalue", &p, &e) < 0);
    assert_int_equal(e.code, CNI_ERR_INVALID_ENV);
    memset(&e, 0, sizeof(e));
    assert_true(conf_parse_cni_args("=x", &p, &e) < 0);
    char longer[400] = "K8S_POD_NAME=";
    memset(longer + strlen(longer), 'a', 300);
    memset(&e, 0, sizeof(e));
    assert_true(conf_parse_cni_args(longer, &p, &e) < 0);
    assert_int_equal(e.code, CNI_ERR_INVALID_ENV);
}

static void test_valid_attachments(void **state)
{
    (void)state;
    struct cni_conf c;
    struct cni_error e;
    assert_int_equal(parse("{\"cniVersion\":\"1.1.0\",\"cni.dev/valid-attachments\":["
                           "{\"containerID\":\"bbb\",\"ifname\":\"eth0\"},"
                           "{\"containerID\":\"aaa\",\"ifname\":\"eth1\"},"
                           "{\"containerID\":\"aaa\",\"ifname\":\"eth0\"}]}",
                           &c, &e),
                     0);
    assert_true(c.has_valid);
    assert_int_equal(c.n_valid, 3);
    assert_true(conf_attachment_valid(&c, "aaa", "eth0"));
    assert_true(conf_attachment_valid(&c, "aaa", "eth1"));
    assert_true(conf_attachment_valid(&c, "bbb", "eth0"));
    assert_false(conf_attachment_valid(&c, "bbb", "eth1"));
    assert_false(conf_attachment_valid(&c, "ccc", "eth0"));
    conf_done(&c);

    /* Also accepted under runtimeConfig; an empty list is valid (GC everything). */
    assert_int_equal(
        parse("{\"cniVersion\":\"1.1.0\",\"runtimeConfig\":{\"cni.dev/valid-attachments\":[]}}", &c,
              &e),
        0);
    assert_true(c.has_valid);
    assert_int_equal(c.n_valid, 0);
    assert_false(conf_attachment_valid(&c, "aaa", "eth0"));
    conf_done(&c);
}

static void test_versions(void **state)
{
    (void)state;
    assert_true(cni_version_supported("0.3.0"));
    assert_true(cni_version_supported("1.1.0"));
    assert_false(cni_version_supported("0.2.0"));
    assert_false(cni_version_supported(NULL));
    assert_true(cni_version_cmp("0.3.1", "0.4.0") < 0);
    assert_true(cni_version_cmp("1.1.0", "1.0.0") > 0);
    assert_int_equal(cni_version_cmp("1.0.0", "1.0.0"), 0);
    assert_true(cni_version_cmp("0.10.0", "0.9.0") > 0);
    assert_true(cni_version_cmp("x", "0.1.0") < 0);
    assert_true(cni_version_cmp(NULL, "0.1.0") < 0);

    char *v = cni_version_json("0.4.0");
    assert_string_equal(v, "{\"cniVersion\":\"0.4.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\","
                           "\"0.4.0\",\"1.0.0\",\"1.1.0\"]}");
    free(v);
}

static void test_error_json(void **state)
{
    (void)state;
    struct cni_error e = {0};
    assert_int_equal(cni_fail(&e, CNI_ERR_TRY_AGAIN, 0, "cannot", "why %d", 42), -EINVAL);
    assert_int_equal(cni_fail(&e, CNI_ERR_INVALID_CONFIG, -ENOENT, "later", NULL), -ENOENT);
    assert_int_equal(e.code, CNI_ERR_TRY_AGAIN); /* the first failure wins */
    char *s = cni_error_json(&e, "0.4.0");
    assert_string_equal(
        s, "{\"cniVersion\":\"0.4.0\",\"code\":11,\"msg\":\"cannot\",\"details\":\"why 42\"}");
    free(s);
    s = cni_error_json(&e, "9.9.9");
    assert_non_null(strstr(s, "\"cniVersion\":\"1.1.0\""));
    free(s);
}

/* conf_from_list: the idbroker entry of a conflist, as libcni hands it to the plugin. */
static void expect_entry(const char *list, const char *want)
{
    char *out = NULL;
    struct cni_error e = {0};
    int r = conf_from_list(list, strlen(list), &out, &e);
    if (!want) {
        assert_int_equal(r, 0);
        assert_null(out);
        return;
    }
    assert_int_equal(r, 1);
    assert_non_null(out);
    struct json_object *got = NULL, *exp = NULL;
    assert_int_equal(json_parse_strict(out, strlen(out), &got, NULL), 0);
    assert_int_equal(json_parse_strict(want, strlen(want), &exp, NULL), 0);
    if (!json_object_equal(got, exp))
        fail_msg("conf_from_list(%s) = %s, want %s", list, out, want);
    json_object_put(got);
    json_object_put(exp);
    free(out);
}

static void expect_list_error(const char *list, unsigned code, const char *needle)
{
    char *out = NULL;
    struct cni_error e = {0};
    assert_true(conf_from_list(list, strlen(list), &out, &e) < 0);
    assert_null(out);
    assert_int_equal(e.code, code);
    if (needle && !strstr(e.details, needle))
        fail_msg("details '%s' lack '%s'", e.details, needle);
}

static void test_from_list(void **state)
{
    (void)state;
    expect_entry(
        "{\"cniVersion\":\"1.0.0\",\"name\":\"k8s\",\"plugins\":[{\"type\":\"bridge\"},"
        "{\"type\":\"idbroker\",\"brokerPort\":2600}]}",
        "{\"type\":\"idbroker\",\"brokerPort\":2600,\"name\":\"k8s\",\"cniVersion\":\"1.0.0\"}");
    /* The list's name and cniVersion win over the entry's; the first idbroker entry is taken. */
    expect_entry(
        "{\"cniVersion\":\"0.3.1\",\"name\":\"k8s\",\"plugins\":[{\"type\":\"calico\"},"
        "{\"type\":\"idbroker\",\"name\":\"x\",\"cniVersion\":\"1.1.0\",\"logLevel\":\"debug\"},"
        "{\"type\":\"idbroker\",\"brokerPort\":1}]}",
        "{\"type\":\"idbroker\",\"logLevel\":\"debug\",\"name\":\"k8s\",\"cniVersion\":\"0.3.1\"}");
    /* Absent ones stay absent (conf_parse then names what is missing). */
    expect_entry("{\"name\":\"k8s\",\"plugins\":[{\"type\":\"ptp\"},{\"type\":\"idbroker\"}]}",
                 "{\"type\":\"idbroker\",\"name\":\"k8s\"}");
    /* Not a list: the plugin's own configuration, parsed as it is. */
    expect_entry("{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"idbroker\"}", NULL);
    expect_entry("[1]", NULL);
    expect_list_error("{\"plugins\":", CNI_ERR_DECODE, NULL);
    expect_list_error("{\"plugins\":{}}", CNI_ERR_INVALID_CONFIG, "plugins");
    expect_list_error(
        "{\"name\":\"k8s\",\"plugins\":[{\"type\":\"bridge\"},\"idbroker\",{\"type\":1}]}",
        CNI_ERR_INVALID_CONFIG, "no plugin of type 'idbroker'");
}

static void test_result_passthrough(void **state)
{
    (void)state;
    const char *prev = PREV_BRIDGE_1_0;
    _cleanup_json_ struct json_object *o = NULL, *back = NULL;
    assert_int_equal(json_parse_strict(prev, strlen(prev), &o, NULL), 0);
    char *s = cni_result_json(o, "1.1.0");
    assert_non_null(s);
    assert_int_equal(json_parse_strict(s, strlen(s), &back, NULL), 0);
    /* Only cniVersion differs; "/" is not escaped. */
    assert_string_equal(json_get_str(back, "cniVersion"), "1.1.0");
    assert_non_null(strstr(s, "\"10.22.0.5/16\""));
    json_object_object_del(back, "cniVersion");
    json_object_object_del(o, "cniVersion");
    assert_true(json_object_equal(o, back));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_prev_result_1_0),
        cmocka_unit_test(test_prev_result_0_3),
        cmocka_unit_test(test_prev_result_errors),
        cmocka_unit_test(test_cni_args),
        cmocka_unit_test(test_valid_attachments),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_result_passthrough),
        cmocka_unit_test(test_from_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
