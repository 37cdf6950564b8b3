/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plugin loader against real test providers (tests/plugins/, built as .so files like redis's
 * tests/modules). Each test copies the .so files it needs into a fresh 0755 directory, since the
 * loader checks ownership and modes.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idbroker/provider.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "host-api.h"
#include "plugin-loader.h"
#include "test-util.h"

#include <cmocka.h>

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/idb-loader-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    return chmod(dir, 0755);
}

static int teardown(void **state)
{
    (void)state;
    return rm_rf(dir);
}

/* Copies test-plugins/<name>.so to <dir>/<as>.so, mode 0644. */
static void install_as(const char *name, const char *as)
{
    char src[512], dst[512], data[65536];
    snprintf(src, sizeof(src), "%s/%s.so", IDB_TEST_PLUGIN_DIR, name);
    snprintf(dst, sizeof(dst), "%s/%s.so", dir, as);
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

static void install(const char *name)
{
    install_as(name, name);
}

static char *path_of(const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s.so", dir, name) > 0);
    return p;
}

/* Loads `name` expecting refusal `code`; checks the message names the plugin and holds `why`. */
static void expect_refusal(const char *name, const char *conf, int code, const char *why)
{
    struct plugin_set *s = plugin_set_new();
    assert_non_null(s);
    char *err = NULL;
    int r = plugin_set_load(s, dir, name, conf, host_api_get(), &err);
    assert_int_equal(r, code);
    assert_non_null(err);
    char quoted[128];
    snprintf(quoted, sizeof(quoted), "'%s'", name);
    if (!strstr(err, quoted) || !strstr(err, why))
        fail_msg("refusal of '%s' is '%s', wanted '%s'", name, err, why);
    assert_int_equal(plugin_set_count(s), 0);
    assert_null(plugin_set_find(s, name));
    free(err);
    plugin_set_free(s);
}

static void issue_req(struct idb_token_req *req, const char *resource)
{
    *req = (struct idb_token_req){
        .size = sizeof(*req),
        .resource = resource,
        .identity_name = "id1",
        .identity_namespace = "default",
        .client_id = "",
        .resource_id = "",
        .tenant_id = "",
        .ad_endpoint = "",
        .ad_resource_id = "",
        .secret_name = "",
        .secret_namespace = "",
    };
}

static void token_done(struct idb_token *t)
{
    const struct idb_host_api *h = host_api_get();
    h->free(t->access_token);
    h->free(t->client_id);
    h->free(t->upstream_error);
}

static void test_load_good(void **state)
{
    (void)state;
    install("good");
    struct plugin_set *s = plugin_set_new();
    char *err = NULL;
    assert_int_equal(plugin_set_load(s, dir, "good", NULL, host_api_get(), &err), 0);
    assert_null(err);
    assert_int_equal(plugin_set_count(s), 1);
    const struct plugin *pl = plugin_set_find(s, "good");
    assert_non_null(pl);
    assert_ptr_equal(plugin_set_at(s, 0), pl);
    assert_null(plugin_set_at(s, 1));
    assert_null(plugin_set_find(s, "mock"));
    assert_string_equal(pl->name, "good");
    _cleanup_free_ char *path = path_of("good");
    assert_string_equal(pl->path, path);
    assert_string_equal(pl->p->version, "1.0-test");
    assert_non_null(pl->state);

    /* The token counts the calls; see tests/plugins/good.c. */
    for (int i = 1; i <= 2; i++) {
        struct idb_token_req req;
        issue_req(&req, "https://vault.azure.net");
        struct idb_token t = {.size = sizeof(t)};
        assert_int_equal(pl->p->issue(pl->state, &req, &t), 0);
        char want[32];
        snprintf(want, sizeof(want), "good-token-%d", i);
        assert_string_equal(t.access_token, want);
        assert_true(t.expires_on > now_realtime_s());
        token_done(&t);
    }

    /* Built with hidden visibility: the struct is the only symbol the broker can see. */
    assert_non_null(dlsym(pl->dl, IDB_PLUGIN_SYMBOL));
    assert_null(dlsym(pl->dl, "good_issue_count"));
    assert_null(dlsym(pl->dl, "good_issue"));
    plugin_set_free(s);
}

static void test_good_fail_modes(void **state)
{
    (void)state;
    install("good");
    struct plugin_set *s = plugin_set_new();
    assert_int_equal(
        plugin_set_load(s, dir, "good", "{\"fail\":\"unavailable\"}", host_api_get(), NULL), 0);
    const struct plugin *pl = plugin_set_find(s, "good");
    struct idb_token_req req;
    issue_req(&req, "r");
    struct idb_token t = {.size = sizeof(t)};
    assert_int_equal(pl->p->issue(pl->state, &req, &t), IDB_E_UPSTREAM_UNAVAILABLE);
    assert_int_equal(t.retry_after_s, 5);
    assert_null(t.access_token);
    token_done(&t);
    s = plugin_set_free(s);
    assert_null(s);

    s = plugin_set_new();
    assert_int_equal(
        plugin_set_load(s, dir, "good", "{\"fail\":\"4xx\",\"delayMs\":1}", host_api_get(), NULL),
        0);
    pl = plugin_set_find(s, "good");
    t = (struct idb_token){.size = sizeof(t)};
    assert_int_equal(pl->p->issue(pl->state, &req, &t), IDB_E_UPSTREAM_4XX);
    assert_int_equal(t.upstream_status, 400);
    assert_non_null(strstr(t.upstream_error, "invalid_request"));
    token_done(&t);
    plugin_set_free(s);
}

static void test_init_fails(void **state)
{
    (void)state;
    install("good");
    expect_refusal("good", "{\"fail\":\"bogus\"}", -EINVAL, "failed to initialize");
    expect_refusal("good", "not json", -EINVAL, "failed to initialize");
}

static void test_duplicate(void **state)
{
    (void)state;
    install("good");
    struct plugin_set *s = plugin_set_new();
    assert_int_equal(plugin_set_load(s, dir, "good", "{}", host_api_get(), NULL), 0);
    char *err = NULL;
    assert_int_equal(plugin_set_load(s, dir, "good", "{}", host_api_get(), &err), -EEXIST);
    assert_non_null(strstr(err, "provider 'good'"));
    assert_non_null(strstr(err, "already loaded"));
    assert_int_equal(plugin_set_count(s), 1);
    free(err);
    plugin_set_free(s);
}

static void test_abi_major(void **state)
{
    (void)state;
    install("abi2");
    struct plugin_set *s = plugin_set_new();
    char *err = NULL;
    assert_int_equal(plugin_set_load(s, dir, "abi2", "{}", host_api_get(), &err), IDB_E_PLUGIN_ABI);
    char want[256];
    snprintf(want, sizeof(want),
             "provider 'abi2' (%s/abi2.so) is not binary compatible: ABI 2.0, broker supports 1.x",
             dir);
    assert_string_equal(err, want);
    free(err);
    plugin_set_free(s);
}

static void test_abi_refusals(void **state)
{
    (void)state;
    install("short");
    install("nosym");
    install("badname");
    install("noinit");
    install("noissue");
    char why[128];
    snprintf(why, sizeof(why),
             "is not binary compatible: struct idb_provider is too short (%zu bytes, ABI 1.0 "
             "needs %zu)",
             offsetof(struct idb_provider, destroy), sizeof(struct idb_provider));
    expect_refusal("short", "{}", IDB_E_PLUGIN_ABI, why);
    expect_refusal("nosym", "{}", IDB_E_PLUGIN_ABI, "does not export 'idb_plugin_v1'");
    expect_refusal("badname", "{}", IDB_E_PLUGIN_ABI, "calls itself 'not-badname'");
    expect_refusal("noinit", "{}", IDB_E_PLUGIN_ABI, "init() is NULL");
    expect_refusal("noissue", "{}", IDB_E_PLUGIN_ABI, "issue() is NULL");
}

/* A plugin of a later 1.x minor, with a longer struct, loads; a size the object cannot back does
 * not. */
static void test_abi_minor(void **state)
{
    (void)state;
    install("newer");
    install("oversize");
    struct plugin_set *s = plugin_set_new();
    assert_int_equal(plugin_set_load(s, dir, "newer", "{}", host_api_get(), NULL), 0);
    const struct plugin *pl = plugin_set_find(s, "newer");
    assert_int_equal(pl->p->abi_minor, 7);
    assert_true(pl->p->size > sizeof(struct idb_provider));
    plugin_set_free(s);
    char why[160];
    snprintf(why, sizeof(why),
             "is not binary compatible: struct idb_provider claims 4096 bytes but symbol "
             "'idb_plugin_v1' is %zu bytes",
             sizeof(struct idb_provider));
    expect_refusal("oversize", "{}", IDB_E_PLUGIN_ABI, why);
}

static void test_names(void **state)
{
    (void)state;
    assert_true(plugin_name_valid("mock"));
    assert_true(plugin_name_valid("azure-msi"));
    assert_true(plugin_name_valid("a0-9"));
    static const char *const bad[] = {"",    "Mock", "../good", "good/x", "a_b",
                                      "a.b", "a b",  "good\n",  "é"};
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        assert_false(plugin_name_valid(bad[i]));
        struct plugin_set *s = plugin_set_new();
        char *err = NULL;
        assert_int_equal(plugin_set_load(s, dir, bad[i], "{}", host_api_get(), &err), -EINVAL);
        assert_non_null(strstr(err, "is invalid: it must match [a-z0-9-]+"));
        free(err);
        plugin_set_free(s);
    }
    char longname[66];
    memset(longname, 'a', 65);
    longname[65] = '\0';
    assert_false(plugin_name_valid(longname));
    longname[64] = '\0';
    assert_true(plugin_name_valid(longname));
    assert_false(plugin_name_valid(NULL));
}

static void test_missing(void **state)
{
    (void)state;
    expect_refusal("absent", "{}", -ENOENT, "not found");
}

static void test_writable(void **state)
{
    (void)state;
    install("good");
    _cleanup_free_ char *path = path_of("good");

    assert_int_equal(chmod(path, 0646), 0);
    expect_refusal("good", "{}", -EPERM, "the file is world-writable (mode 0646");
    assert_int_equal(chmod(path, 0664), 0);
    expect_refusal("good", "{}", -EPERM, "the file is group-writable");
    assert_int_equal(chmod(path, 0644), 0);

    assert_int_equal(chmod(dir, 0757), 0);
    expect_refusal("good", "{}", -EPERM, "is world-writable");
    assert_int_equal(chmod(dir, 0775), 0);
    expect_refusal("good", "{}", -EPERM, "is group-writable");
    assert_int_equal(chmod(dir, 0755), 0);

    struct plugin_set *s = plugin_set_new();
    assert_int_equal(plugin_set_load(s, dir, "good", "{}", host_api_get(), NULL), 0);
    plugin_set_free(s);
}

static void test_not_owned(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* chown to another user needs root */
    const struct passwd *nobody = getpwnam("nobody");
    uid_t uid = nobody ? nobody->pw_uid : 65534;
    install("good");
    _cleanup_free_ char *path = path_of("good");

    assert_int_equal(chown(path, uid, 0), 0);
    expect_refusal("good", "{}", -EPERM, "the file is not owned by root");
    assert_int_equal(chown(path, 0, 0), 0);

    assert_int_equal(chown(dir, uid, 0), 0);
    expect_refusal("good", "{}", -EPERM, "is not owned by root");
    assert_int_equal(chown(dir, 0, 0), 0);

    /* Group ownership alone is harmless as long as the group cannot write. */
    assert_int_equal(chown(path, 0, uid), 0);
    struct plugin_set *s = plugin_set_new();
    assert_int_equal(plugin_set_load(s, dir, "good", "{}", host_api_get(), NULL), 0);
    plugin_set_free(s);
}

static void test_not_regular(void **state)
{
    (void)state;
    install("good");
    char p[256];
    snprintf(p, sizeof(p), "%s/sub.so", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    expect_refusal("sub", "{}", -EINVAL, "a directory, not a regular file");

    snprintf(p, sizeof(p), "%s/link.so", dir);
    assert_int_equal(symlink("good.so", p), 0);
    expect_refusal("link", "{}", -EINVAL, "a symbolic link, not a regular file");

    snprintf(p, sizeof(p), "%s/fifo.so", dir);
    assert_int_equal(mkfifo(p, 0644), 0);
    expect_refusal("fifo", "{}", -EINVAL, "a FIFO, not a regular file");
}

static void test_dir_forms(void **state)
{
    (void)state;
    install("good");
    char d[128];
    snprintf(d, sizeof(d), "%s//", dir);
    struct plugin_set *s = plugin_set_new();
    assert_int_equal(plugin_set_load(s, d, "good", "{}", host_api_get(), NULL), 0);
    _cleanup_free_ char *path = path_of("good");
    assert_string_equal(plugin_set_find(s, "good")->path, path);
    plugin_set_free(s);

    char *err = NULL;
    s = plugin_set_new();
    assert_int_equal(plugin_set_load(s, "/nonexistent/idb", "good", "{}", host_api_get(), &err),
                     -ENOENT);
    assert_non_null(strstr(err, "cannot open plugin directory '/nonexistent/idb'"));
    free(err);
    plugin_set_free(s);
}

/* Two providers in one set, freed in reverse order; NULL-tolerant accessors. */
static void test_set(void **state)
{
    (void)state;
    install("good");
    install_as("hang", "hang");
    struct plugin_set *s = plugin_set_new();
    assert_int_equal(plugin_set_load(s, dir, "good", "{}", host_api_get(), NULL), 0);
    assert_int_equal(plugin_set_load(s, dir, "hang", NULL, host_api_get(), NULL), 0);
    assert_int_equal(plugin_set_count(s), 2);
    assert_string_equal(plugin_set_at(s, 1)->name, "hang");
    assert_null(plugin_set_free(s));
    assert_null(plugin_set_free(NULL));
    assert_int_equal(plugin_set_count(NULL), 0);
    assert_null(plugin_set_find(NULL, "good"));
    assert_null(plugin_set_at(NULL, 0));
}

int main(void)
{
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);
    assert_int_equal(host_api_init(NULL), 0);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_load_good),  T(test_good_fail_modes),
        T(test_init_fails), T(test_duplicate),
        T(test_abi_major),  T(test_abi_refusals),
        T(test_abi_minor),  T(test_names),
        T(test_missing),    T(test_writable),
        T(test_not_owned),  T(test_not_regular),
        T(test_dir_forms),  T(test_set),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    host_api_done();
    return r;
}
