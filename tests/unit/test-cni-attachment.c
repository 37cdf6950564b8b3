/* SPDX-License-Identifier: Apache-2.0 */
/* The CNI plugin's private attachment records (cni-plugin/attachment.c). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/registration.h>

#include "attachment.h"
#include "test-util.h"

#include <cmocka.h>

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/idb-att-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    return attachment_dir_ensure(tmpdir);
}

static int teardown(void **state)
{
    (void)state;
    return rm_rf(tmpdir);
}

static void fill(struct attachment *a, const char *cid, const char *ip)
{
    memset(a, 0, sizeof(*a));
    snprintf(a->container_id, sizeof(a->container_id), "%s", cid);
    snprintf(a->if_name, sizeof(a->if_name), "eth0");
    a->l3_ifindex = 4;
    snprintf(a->l3_ifname, sizeof(a->l3_ifname), "cni0");
    a->port_ifindex = 12;
    snprintf(a->port_ifname, sizeof(a->port_ifname), "veth%s", cid);
    a->has_mac = true;
    a->mac[5] = 0x42;
    assert_int_equal(reg_ip_parse(ip, &a->ips[0]), 0);
    a->n_ips = 1;
}

static void test_json_round_trip(void **state)
{
    (void)state;
    struct attachment a, b;
    fill(&a, "abc", "10.0.0.9");
    assert_int_equal(reg_ip_parse("fd00::9", &a.ips[1]), 0);
    a.n_ips = 2;
    _cleanup_json_ struct json_object *o = attachment_to_json(&a);
    assert_non_null(o);
    assert_int_equal(attachment_from_json(o, &b, NULL), 0);
    assert_true(attachment_equal(&a, &b));

    const char *why = NULL;
    json_object_object_add(o, "l3Ifindex", json_object_new_int(0));
    assert_int_equal(attachment_from_json(o, &b, &why), -EBADMSG);
    assert_string_equal(why, "l3Ifindex");
    json_object_object_add(o, "l3Ifindex", json_object_new_int(4));
    json_object_object_add(o, "containerId", json_object_new_string("../x"));
    assert_int_equal(attachment_from_json(o, &b, &why), -EBADMSG);
    assert_string_equal(why, "containerId");
    json_object_object_add(o, "containerId", json_object_new_string("abc"));
    json_object_object_add(o, "mac", json_object_new_string("00:11"));
    assert_int_equal(attachment_from_json(o, &b, &why), -EBADMSG);
    assert_string_equal(why, "mac");
    json_object_object_add(o, "mac", json_object_new_string("00:11:22:33:44:55"));
    json_object_object_add(o, "ips", json_object_new_array());
    assert_int_equal(attachment_from_json(o, &b, &why), -EBADMSG);
    assert_string_equal(why, "ips");
}

static void test_keys(void **state)
{
    (void)state;
    char key[ATTACHMENT_KEY_MAX], cid[REG_MAX_ID + 1], ifn[REG_MAX_IFNAME + 1];
    assert_int_equal(attachment_key("abc", "eth0", key, sizeof(key)), 0);
    assert_string_equal(key, "abc@eth0");
    assert_int_equal(attachment_key_split(key, cid, ifn), 0);
    assert_string_equal(cid, "abc");
    assert_string_equal(ifn, "eth0");
    assert_int_equal(attachment_key("a/b", "eth0", key, sizeof(key)), -EINVAL);
    assert_int_equal(attachment_key("abc", "e@h", key, sizeof(key)), -EINVAL);
    assert_int_equal(attachment_key_split("noat", cid, ifn), -EINVAL);
    assert_int_equal(attachment_key_split("..@eth0", cid, ifn), -EINVAL);
}

static void test_save_load_remove(void **state)
{
    (void)state;
    struct attachment a, b;
    fill(&a, "c1", "10.0.0.1");
    assert_int_equal(attachment_load(tmpdir, "c1", "eth0", &b), -ENOENT);
    assert_int_equal(attachment_save(tmpdir, &a), 0);
    assert_int_equal(attachment_load(tmpdir, "c1", "eth0", &b), 0);
    assert_true(attachment_equal(&a, &b));

    char owner[ATTACHMENT_KEY_MAX + 1];
    assert_int_equal(attachment_owner_of(tmpdir, &a.ips[0], owner, sizeof(owner)), 0);
    assert_string_equal(owner, "c1@eth0");

    /* A newer attachment takes the address over; removing the old one keeps the new link. */
    struct attachment n;
    fill(&n, "c2", "10.0.0.1");
    assert_int_equal(attachment_save(tmpdir, &n), 0);
    assert_int_equal(attachment_owner_of(tmpdir, &a.ips[0], owner, sizeof(owner)), 0);
    assert_string_equal(owner, "c2@eth0");
    assert_int_equal(attachment_remove(tmpdir, &a), 0);
    assert_int_equal(attachment_load(tmpdir, "c1", "eth0", &b), -ENOENT);
    assert_int_equal(attachment_owner_of(tmpdir, &a.ips[0], owner, sizeof(owner)), 0);
    assert_string_equal(owner, "c2@eth0");
    assert_int_equal(attachment_remove(tmpdir, &a), 0); /* idempotent */
    assert_int_equal(attachment_remove(tmpdir, &n), 0);
    assert_int_equal(attachment_owner_of(tmpdir, &n.ips[0], owner, sizeof(owner)), -ENOENT);
}

static void touch(const char *path, bool link)
{
    if (link) {
        assert_int_equal(symlink("x@eth0", path), 0);
        return;
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"version\":1,\"contai", f);
    fclose(f);
}

/* An ADD killed between creating a temporary file and renaming it: DEL removes what it left. */
static void test_remove_temporaries(void **state)
{
    (void)state;
    struct attachment a;
    fill(&a, "t1", "10.0.2.1");
    char rec[256], lnk[256];
    snprintf(rec, sizeof(rec), "%s/cni/.tmp-t1@eth0", tmpdir);
    snprintf(lnk, sizeof(lnk), "%s/cni/by-ip/.tmp-10.0.2.1", tmpdir);

    /* Killed before the record was renamed: there is no record, only its temporary file. */
    touch(rec, false);
    assert_int_equal(attachment_remove_key(tmpdir, "t1", "eth0"), 0);
    assert_int_equal(access(rec, F_OK), -1);

    /* Killed between the record and the rename of an address link. */
    assert_int_equal(attachment_save(tmpdir, &a), 0);
    touch(rec, false);
    touch(lnk, true);
    assert_int_equal(attachment_remove(tmpdir, &a), 0);
    assert_int_equal(access(rec, F_OK), -1);
    assert_int_equal(faccessat(AT_FDCWD, lnk, F_OK, AT_SYMLINK_NOFOLLOW), -1);

    /* A retried save reuses the temporary names. */
    touch(rec, false);
    touch(lnk, true);
    assert_int_equal(attachment_save(tmpdir, &a), 0);
    assert_int_equal(access(rec, F_OK), -1);
    assert_int_equal(faccessat(AT_FDCWD, lnk, F_OK, AT_SYMLINK_NOFOLLOW), -1);
    assert_int_equal(attachment_remove(tmpdir, &a), 0);
}

static void count_cb(const char *key, const struct attachment *a, void *userdata)
{
    int *n = userdata;
    (void)key;
    n[a ? 0 : 1]++;
}

static void test_foreach_and_corrupt(void **state)
{
    (void)state;
    struct attachment a;
    fill(&a, "d1", "10.0.1.1");
    assert_int_equal(attachment_save(tmpdir, &a), 0);
    fill(&a, "d2", "10.0.1.2");
    assert_int_equal(attachment_save(tmpdir, &a), 0);
    char p[256];
    snprintf(p, sizeof(p), "%s/cni/d3@eth0.json", tmpdir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("{\"version\":1", f);
    fclose(f);
    int n[2] = {0, 0};
    assert_int_equal(attachment_foreach(tmpdir, count_cb, n), 3);
    assert_int_equal(n[0], 2);
    assert_int_equal(n[1], 1);
    struct attachment b;
    assert_int_equal(attachment_load(tmpdir, "d3", "eth0", &b), -EBADMSG);
    assert_int_equal(attachment_remove_key(tmpdir, "d3", "eth0"), 0);
    assert_int_equal(access(p, F_OK), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_keys),
        cmocka_unit_test_setup_teardown(test_save_load_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_temporaries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreach_and_corrupt, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
