/* SPDX-License-Identifier: Apache-2.0 */
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

#include <idbroker-internal/buf.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/registration.h>

#include "test-util.h"

#include <cmocka.h>

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/idb-reg-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rm_rf(tmpdir);
}

static void fill(struct registration *r, const char *cid, const char *ip)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->container_id, sizeof(r->container_id), "%s", cid);
    snprintf(r->if_name, sizeof(r->if_name), "eth0");
    snprintf(r->pod_namespace, sizeof(r->pod_namespace), "default");
    snprintf(r->pod_name, sizeof(r->pod_name), "pod-%s", cid);
    snprintf(r->pod_uid, sizeof(r->pod_uid), "uid-%s", cid);
    snprintf(r->host_ifname, sizeof(r->host_ifname), "veth%s", cid);
    r->host_ifindex = 7;
    assert_int_equal(reg_ip_parse(ip, &r->ips[0]), 0);
    assert_int_equal(reg_ip_parse("fd00::5", &r->ips[1]), 0);
    r->n_ips = 2;
    r->created = 1700000000;
    snprintf(r->origin, sizeof(r->origin), "cni");
}

static void test_roundtrip(void **state)
{
    (void)state;
    struct registration a, b;
    fill(&a, "abc123", "10.22.0.5");
    assert_int_equal(registration_save(tmpdir, &a), 0);
    assert_int_equal(registration_load(tmpdir, "abc123", "eth0", &b), 0);
    assert_string_equal(b.pod_name, "pod-abc123");
    assert_int_equal(b.n_ips, 2);
    assert_true(reg_ip_equal(&a.ips[0], &b.ips[0]));
    assert_true(reg_ip_equal(&a.ips[1], &b.ips[1]));
    assert_int_equal(b.host_ifindex, 7);
    assert_int_equal(b.created, 1700000000);

    char p[4200];
    snprintf(p, sizeof(p), "%s/pods", tmpdir);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    assert_int_equal(registration_remove(tmpdir, "abc123", "eth0"), 0);
    assert_int_equal(registration_remove(tmpdir, "abc123", "eth0"), 0);
    assert_int_equal(registration_load(tmpdir, "abc123", "eth0", &b), -ENOENT);

    /* A writer killed before its rename leaves the key's one temporary file: the next save reuses
     * it, a removal deletes it. */
    snprintf(p, sizeof(p), "%s/pods/.tmp-abc123@eth0", tmpdir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("{\"vers", f);
    fclose(f);
    assert_int_equal(registration_remove(tmpdir, "abc123", "eth0"), 0);
    assert_int_equal(access(p, F_OK), -1);
    f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(registration_save(tmpdir, &a), 0);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(registration_load(tmpdir, "abc123", "eth0", &b), 0);
    assert_int_equal(registration_remove(tmpdir, "abc123", "eth0"), 0);
}

static int count;
static int bad;
static void cb(const struct registration *r, void *ud)
{
    (void)r;
    (void)ud;
    count++;
}
static void bad_cb(const char *path, int error, const char *why, void *ud)
{
    (void)path;
    (void)error;
    (void)why;
    (void)ud;
    bad++;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_load_all(void **state)
{
    (void)state;
    struct registration a;
    fill(&a, "c1", "10.0.0.1");
    assert_int_equal(registration_save(tmpdir, &a), 0);
    fill(&a, "c2", "10.0.0.2");
    assert_int_equal(registration_save(tmpdir, &a), 0);
    char p[4200];
    snprintf(p, sizeof(p), "%s/pods/.tmp-c3@eth0.1", tmpdir);
    write_file(p, "{");
    snprintf(p, sizeof(p), "%s/pods/c4@eth0.json", tmpdir);
    write_file(p, "{\"version\":1,\"containerId\":\"c4\",\"ifName\":\"eth0\",\"ips\":[\"nope\"]}");
    snprintf(p, sizeof(p), "%s/pods/c5@eth0.json", tmpdir);
    write_file(p, "{\"version\":1,\"containerId\":\"other\",\"ifName\":\"eth0\",\"ips\":[]}");
    count = bad = 0;
    assert_int_equal(registration_load_all(tmpdir, cb, bad_cb, NULL), 2);
    assert_int_equal(count, 2);
    assert_int_equal(bad, 2);
    snprintf(p, sizeof(p), "%s/pods/.tmp-c3@eth0.1", tmpdir);
    assert_int_equal(access(p, F_OK), -1);
}

static void test_validation(void **state)
{
    (void)state;
    struct registration r;
    const char *why = NULL;
    static const struct {
        const char *text;
        const char *why;
    } bad_rows[] = {
        {"[]", "registration is not a JSON object"},
        {"{\"version\":2,\"containerId\":\"a\",\"ifName\":\"eth0\",\"ips\":[]}", "version"},
        {"{\"version\":1,\"containerId\":\"../x\",\"ifName\":\"eth0\",\"ips\":[]}", "containerId"},
        {"{\"version\":1,\"containerId\":\"a\",\"ifName\":\"a/b\",\"ips\":[]}", "ifName"},
        {"{\"version\":1,\"containerId\":\"a\",\"ifName\":\"eth0\"}", "ips"},
        {"{\"version\":1,\"containerId\":\"a\",\"ifName\":\"eth0\",\"ips\":[1]}", "ips"},
        {"{\"version\":1,\"containerId\":\"a\",\"ifName\":\"eth0\",\"ips\":[],\"podName\":5}",
         "podName"},
        {"{\"version\":1,\"containerId\":\"a\",\"ifName\":\"eth0\",\"ips\":[],\"hostIfindex\":-1}",
         "hostIfindex"},
    };
    for (size_t i = 0; i < sizeof(bad_rows) / sizeof(bad_rows[0]); i++) {
        why = NULL;
        assert_true(registration_parse(bad_rows[i].text, strlen(bad_rows[i].text), &r, &why) < 0);
        assert_non_null(why);
        assert_string_equal(why, bad_rows[i].why);
    }
    assert_true(registration_parse("{} x", 4, &r, &why) < 0);
    assert_false(reg_valid_container_id(""));
    assert_false(reg_valid_container_id(".hidden"));
    assert_true(reg_valid_container_id("0123abcDEF-_.x"));
    assert_false(reg_valid_ifname("eth0@x"));
    assert_false(reg_valid_ifname("0123456789abcdef"));
}

static void test_lock(void **state)
{
    (void)state;
    int fd = registration_lock(tmpdir, 100);
    assert_true(fd >= 0);
    /* flock locks belong to the open file description: a second open conflicts. */
    assert_int_equal(registration_lock(tmpdir, 50), -ETIMEDOUT);
    close(fd);
    fd = registration_lock(tmpdir, 50);
    assert_true(fd >= 0);
    close(fd);
}

static void test_buf(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 8);
    assert_int_equal(buf_puts(&b, "abcd"), 0);
    assert_int_equal(buf_printf(&b, "%d", 1234), 0);
    assert_int_equal(buf_puts(&b, "x"), -E2BIG);
    assert_string_equal(b.data, "abcd1234");
    char *s = buf_steal(&b);
    assert_string_equal(s, "abcd1234");
    free(s);
    buf_done(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_all, setup, teardown),
        cmocka_unit_test(test_validation),
        cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
        cmocka_unit_test(test_buf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
