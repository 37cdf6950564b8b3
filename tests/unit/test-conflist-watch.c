/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The conflist watch (THREATS T21): the check of one file's text, the choice of the file a runtime
 * would use, the watch's state and reason across a rewrite and its repair (re-checked on the test's
 * thread, so nothing depends on timing), and the Event's JSON.
 */
#include <errno.h>
#include <json-c/json.h>
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

#include "conflist-watch.h"
#include "limits.h"

#include <cmocka.h>

#define WITH_IDBROKER                                                                              \
    "{\"cniVersion\":\"1.0.0\",\"name\":\"k8s\",\"plugins\":[{\"type\":\"bridge\"},"               \
    "{\"type\":\"portmap\"},{\"type\":\"idbroker\"}]}"
#define WITHOUT_IDBROKER                                                                           \
    "{\"cniVersion\":\"1.0.0\",\"name\":\"k8s\",\"plugins\":[{\"type\":\"bridge\"}]}"

static void test_check_text(void **state)
{
    (void)state;
    static const struct {
        const char *name, *text;
        enum conflist_chain want;
        const char *detail; /* substring, or NULL */
    } rows[] = {
        {"10-k8s.conflist", WITH_IDBROKER, CONFLIST_CHAIN_OK, NULL},
        {"10-k8s.conflist", WITHOUT_IDBROKER, CONFLIST_CHAIN_MISSING, NULL},
        /* first: no primary before it, every ADD would fail (found by fuzz-conflist) */
        {"10-k8s.conflist", "{\"plugins\":[{\"type\":\"idbroker\"}]}", CONFLIST_CHAIN_INVALID,
         "first plugin"},
        {"10-k8s.conflist", "{\"plugins\":[{\"type\":\"idbroker\"},{\"type\":\"bridge\"}]}",
         CONFLIST_CHAIN_INVALID, "first plugin"},
        /* "idbroker" somewhere else is not the plugin */
        {"10-k8s.conflist",
         "{\"name\":\"idbroker\",\"plugins\":[{\"type\":\"bridge\",\"x\":"
         "{\"type\":\"idbroker\"}}]}",
         CONFLIST_CHAIN_MISSING, NULL},
        {"10-k8s.conflist", "{\"plugins\":[\"idbroker\",{\"type\":\"IDBROKER\"}]}",
         CONFLIST_CHAIN_MISSING, NULL},
        {"10-k8s.conflist", "{\"plugins\":[{\"type\":[\"idbroker\"]}]}", CONFLIST_CHAIN_MISSING,
         NULL},
        /* not a usable list */
        {"10-k8s.conflist", "{\"plugins\":[]}", CONFLIST_CHAIN_INVALID, "plugins"},
        {"10-k8s.conflist", "{\"plugins\":{\"type\":\"idbroker\"}}", CONFLIST_CHAIN_INVALID,
         "plugins"},
        {"10-k8s.conflist", "{\"type\":\"idbroker\"}", CONFLIST_CHAIN_INVALID, "plugins"},
        {"10-k8s.conflist", "", CONFLIST_CHAIN_INVALID, "not JSON"},
        {"10-k8s.conflist", "{\"plugins\":[{\"type\":\"idbroker\"}]", CONFLIST_CHAIN_INVALID,
         "not JSON"},
        {"10-k8s.conflist", WITH_IDBROKER " x", CONFLIST_CHAIN_INVALID, "not JSON"},
        {"10-k8s.conflist", "[" WITH_IDBROKER "]", CONFLIST_CHAIN_INVALID, "object"},
        /* a single network: one plugin, nothing chained after it */
        {"10-bridge.conf", "{\"cniVersion\":\"0.4.0\",\"type\":\"bridge\"}", CONFLIST_CHAIN_MISSING,
         NULL},
        {"10-bridge.json", "{\"type\":\"bridge\"}", CONFLIST_CHAIN_MISSING, NULL},
        {"10-bridge.conf", WITH_IDBROKER, CONFLIST_CHAIN_INVALID, "type"},
        {"10-bridge.conf", "{\"type\":\"idbroker\"}", CONFLIST_CHAIN_INVALID, "alone"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *detail = "unset";
        enum conflist_chain got =
            conflist_watch_check_text(rows[i].name, rows[i].text, strlen(rows[i].text), &detail);
        if (got != rows[i].want)
            fail_msg("row %zu (%s '%s'): %d, want %d", i, rows[i].name, rows[i].text, got,
                     rows[i].want);
        if (rows[i].detail) {
            assert_non_null(detail);
            assert_non_null(strstr(detail, rows[i].detail));
        } else {
            assert_null(detail);
        }
    }
    /* Over the cap: refused before parsing. */
    assert_int_equal(
        conflist_watch_check_text("a.conflist", WITH_IDBROKER, CNI_CONF_MAX_BYTES + 1, NULL),
        CONFLIST_CHAIN_INVALID);
}

static char tmpdir[256];

static void path_of(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

/* Writes the file as tools do: a temporary name, then rename (a new inode). */
static void put(const char *name, const char *text)
{
    char path[512], tmp[512];
    path_of(name, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s/.tmp", tmpdir);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(rename(tmp, path), 0);
}

static void del(const char *name)
{
    char path[512];
    path_of(name, path, sizeof(path));
    assert_int_equal(unlink(path), 0);
}

static void expect_dir(enum conflist_chain want, const char *file)
{
    struct conflist_chain_status st;
    conflist_watch_check_dir(tmpdir, &st);
    if (st.chain != want)
        fail_msg("chain %d, want %d (file '%s', %s)", st.chain, want, st.file, st.detail);
    char path[512] = "";
    if (file)
        path_of(file, path, sizeof(path));
    assert_string_equal(st.file, path);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/idb-conflist-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s/.tmp", tmpdir);
    unlink(tmp);                        /* left only by a failed put() */
    return rmdir(tmpdir) == 0 ? 0 : -1; /* each test removes what it made */
}

static void test_check_dir(void **state)
{
    (void)state;
    struct conflist_chain_status st;
    conflist_watch_check_dir("/nonexistent/idb-conflist", &st);
    assert_int_equal(st.chain, CONFLIST_CHAIN_NO_CONFIG);
    assert_string_equal(st.file, "");

    expect_dir(CONFLIST_CHAIN_NO_CONFIG, NULL);
    /* Names a runtime never loads. */
    put("10-k8s.conflist.bak", WITHOUT_IDBROKER);
    put("README", "not a network");
    char sub[512];
    path_of("00-dir.conflist", sub, sizeof(sub));
    assert_int_equal(mkdir(sub, 0755), 0);
    expect_dir(CONFLIST_CHAIN_NO_CONFIG, NULL);

    put("10-k8s.conflist", WITH_IDBROKER);
    expect_dir(CONFLIST_CHAIN_OK, "10-k8s.conflist");
    /* A later name does not matter, an earlier one does; byte order ('Z' < 'a'). */
    put("99-other.conflist", WITHOUT_IDBROKER);
    expect_dir(CONFLIST_CHAIN_OK, "10-k8s.conflist");
    put("05-bridge.conf", "{\"type\":\"bridge\"}");
    expect_dir(CONFLIST_CHAIN_MISSING, "05-bridge.conf");
    put("01-Z.json", "{\"plugins\":[]");
    expect_dir(CONFLIST_CHAIN_INVALID, "01-Z.json");
    put("01-A.conflist", WITH_IDBROKER);
    expect_dir(CONFLIST_CHAIN_OK, "01-A.conflist");
    del("01-A.conflist");
    del("01-Z.json");
    del("05-bridge.conf");
    expect_dir(CONFLIST_CHAIN_OK, "10-k8s.conflist");
    /* libcni does not skip hidden files, and '.' sorts before digits; '-' before '.'. */
    put(".hidden.conflist", WITHOUT_IDBROKER);
    expect_dir(CONFLIST_CHAIN_MISSING, ".hidden.conflist");
    put("-first.conflist", WITH_IDBROKER);
    expect_dir(CONFLIST_CHAIN_OK, "-first.conflist");
    del("-first.conflist");
    del(".hidden.conflist");
    put(".conf", "{\"type\":\"bridge\"}"); /* Go's filepath.Ext(".conf") is ".conf" */
    expect_dir(CONFLIST_CHAIN_MISSING, ".conf");
    del(".conf");

    /* A file over the cap. */
    char *big = malloc(CNI_CONF_MAX_BYTES + 2);
    assert_non_null(big);
    memset(big, ' ', CNI_CONF_MAX_BYTES + 1);
    big[0] = '{';
    big[CNI_CONF_MAX_BYTES] = '}';
    big[CNI_CONF_MAX_BYTES + 1] = '\0';
    put("00-big.conflist", big);
    free(big);
    expect_dir(CONFLIST_CHAIN_INVALID, "00-big.conflist");
    del("00-big.conflist");

    /* A file that cannot be opened (a dangling symlink) is not usable either. */
    char link[512];
    path_of("00-link.conflist", link, sizeof(link));
    assert_int_equal(symlink("/nonexistent/x.conflist", link), 0);
    expect_dir(CONFLIST_CHAIN_INVALID, "00-link.conflist");
    del("00-link.conflist");
    del("99-other.conflist");
    del("10-k8s.conflist");
    del("10-k8s.conflist.bak");
    del("README");
    assert_int_equal(rmdir(sub), 0);
}

static void test_watch(void **state)
{
    (void)state;
    assert_int_equal(conflist_watch_start(&(struct conflist_watch_options){.dir = ""}, NULL),
                     -EINVAL);
    put("10-k8s.conflist", WITH_IDBROKER);
    /* The thread's own checks are an hour apart: every check below is the test's. */
    struct conflist_watch_options o = {
        .dir = tmpdir, .node_name = "node-1", .interval_ms = 3600000};
    struct conflist_watch *w = NULL;
    assert_int_equal(conflist_watch_start(&o, &w), 0);
    char why[8192] = "untouched";
    assert_true(conflist_watch_ok(w, why, sizeof(why)));
    assert_string_equal(why, "untouched");

    /* The primary rewrites its conflist without idbroker. */
    put("10-k8s.conflist", WITHOUT_IDBROKER);
    assert_true(conflist_watch_ok(w, NULL, 0)); /* not checked yet */
    conflist_watch_recheck(w);
    assert_false(conflist_watch_ok(w, why, sizeof(why)));
    char path[512];
    path_of("10-k8s.conflist", path, sizeof(path));
    assert_non_null(strstr(why, path));
    assert_non_null(strstr(why, "idbroker is missing"));
    struct conflist_chain_status st;
    conflist_watch_status(w, &st);
    assert_int_equal(st.chain, CONFLIST_CHAIN_MISSING);
    conflist_watch_recheck(w); /* the same file: still missing */
    assert_false(conflist_watch_ok(w, NULL, 0));

    /* install-cni.sh puts it back. */
    put("10-k8s.conflist", WITH_IDBROKER);
    conflist_watch_recheck(w);
    assert_true(conflist_watch_ok(w, why, sizeof(why)));

    /* Torn or garbage: not usable, and the reason says why. */
    put("10-k8s.conflist", "{\"plugins\": [");
    conflist_watch_recheck(w);
    assert_false(conflist_watch_ok(w, why, sizeof(why)));
    assert_non_null(strstr(why, "not JSON"));
    assert_non_null(strstr(why, path));

    /* No configuration at all: the runtime starts no pod, nothing to report. */
    del("10-k8s.conflist");
    conflist_watch_recheck(w);
    assert_true(conflist_watch_ok(w, NULL, 0));
    w = conflist_watch_free(w);
    assert_null(w);
    assert_null(conflist_watch_free(NULL));

    /* Started on a bad directory: not ready from the first moment. */
    put("10-k8s.conflist", WITHOUT_IDBROKER);
    assert_int_equal(conflist_watch_start(&o, &w), 0);
    assert_false(conflist_watch_ok(w, NULL, 0));
    conflist_watch_free(w);
    del("10-k8s.conflist");
}

static void test_event_json(void **state)
{
    (void)state;
    /* 2024-01-02T03:04:05Z and 6 ns */
    uint64_t ns = 1704164645ull * 1000000000ull + 6;
    char *text = conflist_watch_event_json("node-1", true, "IdbrokerMissingFromConflist",
                                           "idbroker is missing from '/etc/cni/net.d/\"x\"'", ns);
    assert_non_null(text);
    struct json_object *o = json_tokener_parse(text);
    assert_non_null(o);
    struct json_object *v, *meta, *ref, *src;
    assert_true(json_object_object_get_ex(o, "metadata", &meta));
    assert_true(json_object_object_get_ex(o, "involvedObject", &ref));
    assert_true(json_object_object_get_ex(o, "source", &src));
#define STR(obj, key, want)                                                                        \
    do {                                                                                           \
        assert_true(json_object_object_get_ex((obj), (key), &v));                                  \
        assert_string_equal(json_object_get_string(v), (want));                                    \
    } while (0)
    STR(o, "apiVersion", "v1");
    STR(o, "kind", "Event");
    STR(meta, "namespace", "default");
    STR(meta, "name", "node-1.17a668b730013206");
    STR(ref, "kind", "Node");
    STR(ref, "name", "node-1");
    STR(ref, "apiVersion", "v1");
    STR(o, "reason", "IdbrokerMissingFromConflist");
    STR(o, "message", "idbroker is missing from '/etc/cni/net.d/\"x\"'");
    STR(o, "type", "Warning");
    STR(src, "component", "idbrokerd");
    STR(src, "host", "node-1");
    STR(o, "firstTimestamp", "2024-01-02T03:04:05Z");
    STR(o, "lastTimestamp", "2024-01-02T03:04:05Z");
    assert_true(json_object_object_get_ex(o, "count", &v));
    assert_int_equal(json_object_get_int(v), 1);
    json_object_put(o);
    free(text);

    text = conflist_watch_event_json("node-1", false, "IdbrokerBackInConflist", "back", ns);
    o = json_tokener_parse(text);
    STR(o, "type", "Normal");
#undef STR
    json_object_put(o);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_text),
        cmocka_unit_test(test_check_dir),
        cmocka_unit_test(test_watch),
        cmocka_unit_test(test_event_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
