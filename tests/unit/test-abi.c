/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pins the provider ABI 1.0 layout (STYLE R12): reordering, retyping or removing a field of the
 * public structs breaks this test. Appending a field needs a new minor version and new asserts
 * here, never a change to an existing 1.0 offset. Offsets are x86_64 (LP64) ones.
 * ABI 1.1 appended upstream_limits/acquire/release to struct idb_host_api, at its 1.0 size (72).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <idbroker/provider.h>

#include <cmocka.h>

#define PIN(type, field, off) _Static_assert(offsetof(type, field) == (off), #type "." #field)
#define PIN_SIZE(type, sz) _Static_assert(sizeof(type) == (sz), "sizeof " #type)

_Static_assert(IDB_PLUGIN_ABI_MAJOR == 1, "ABI major");

#if defined(__x86_64__) && defined(__LP64__)
PIN(struct idb_provider, abi_major, 0);
PIN(struct idb_provider, abi_minor, 4);
PIN(struct idb_provider, size, 8);
PIN(struct idb_provider, name, 16);
PIN(struct idb_provider, version, 24);
PIN(struct idb_provider, init, 32);
PIN(struct idb_provider, issue, 40);
PIN(struct idb_provider, destroy, 48);
PIN_SIZE(struct idb_provider, 56);

PIN(struct idb_host_api, size, 0);
PIN(struct idb_host_api, abi_minor, 4);
PIN(struct idb_host_api, log, 8);
PIN(struct idb_host_api, alloc, 16);
PIN(struct idb_host_api, free, 24);
PIN(struct idb_host_api, strerror, 32);
PIN(struct idb_host_api, now_realtime, 40);
PIN(struct idb_host_api, now_monotonic_ms, 48);
PIN(struct idb_host_api, http, 56);
PIN(struct idb_host_api, issue_via, 64);
/* ABI 1.0 ended at 72; 1.1 appends at exactly that offset. */
PIN(struct idb_host_api, upstream_limits, 72);
PIN(struct idb_host_api, upstream_acquire, 80);
PIN(struct idb_host_api, upstream_release, 88);
PIN_SIZE(struct idb_host_api, 96);

PIN(struct idb_token_req, size, 0);
PIN(struct idb_token_req, resource, 8);
PIN(struct idb_token_req, identity_name, 16);
PIN(struct idb_token_req, identity_namespace, 24);
PIN(struct idb_token_req, identity_type, 32);
PIN(struct idb_token_req, client_id, 40);
PIN(struct idb_token_req, resource_id, 48);
PIN(struct idb_token_req, tenant_id, 56);
PIN(struct idb_token_req, ad_endpoint, 64);
PIN(struct idb_token_req, ad_resource_id, 72);
PIN(struct idb_token_req, secret_name, 80);
PIN(struct idb_token_req, secret_namespace, 88);
PIN(struct idb_token_req, annotations, 96);
PIN(struct idb_token_req, deadline_ms, 104);
PIN_SIZE(struct idb_token_req, 112);

PIN(struct idb_token, size, 0);
PIN(struct idb_token, access_token, 8);
PIN(struct idb_token, expires_on, 16);
PIN(struct idb_token, not_before, 24);
PIN(struct idb_token, ext_expires_in, 32);
PIN(struct idb_token, client_id, 40);
PIN(struct idb_token, upstream_status, 48);
PIN(struct idb_token, upstream_error, 56);
PIN(struct idb_token, retry_after_s, 64);
PIN(struct idb_token, reserved0, 68);
PIN_SIZE(struct idb_token, 72);

PIN(struct idb_http_req, size, 0);
PIN(struct idb_http_req, method, 8);
PIN(struct idb_http_req, url, 16);
PIN(struct idb_http_req, headers, 24);
PIN(struct idb_http_req, body, 32);
PIN(struct idb_http_req, body_len, 40);
PIN(struct idb_http_req, timeout_ms, 48);
PIN(struct idb_http_req, ca_file, 56);
PIN_SIZE(struct idb_http_req, 64);

PIN(struct idb_http_resp, size, 0);
PIN(struct idb_http_resp, status, 8);
PIN(struct idb_http_resp, body, 16);
PIN(struct idb_http_resp, body_len, 24);
PIN(struct idb_http_resp, retry_after_s, 32);
PIN(struct idb_http_resp, www_authenticate, 40);
PIN_SIZE(struct idb_http_resp, 48);
#define LAYOUT_PINNED 1
#else
#define LAYOUT_PINNED 0
#endif

/* The same facts at run time, so the test report shows them and a non-x86_64 build says it skipped.
 */
static void test_layout(void **state)
{
    (void)state;
    if (!LAYOUT_PINNED)
        skip();
    assert_int_equal(offsetof(struct idb_provider, destroy), 48);
    assert_int_equal(offsetof(struct idb_host_api, upstream_limits), 72); /* the 1.0 size */
    assert_int_equal(sizeof(struct idb_host_api), 96);
    assert_int_equal(offsetof(struct idb_token_req, deadline_ms), 104);
    assert_int_equal(sizeof(struct idb_token), 72);
}

/* The version constants and symbol name are part of the ABI too. */
static void test_constants(void **state)
{
    (void)state;
    assert_int_equal(IDB_PLUGIN_ABI_MAJOR, 1);
    assert_int_equal(IDB_PLUGIN_ABI_MINOR, 1);
    assert_string_equal(IDB_UPSTREAM_IMDS, "imds");
    assert_int_equal(IDB_UPSTREAM_IMDS_MAX_CONCURRENT, 5);
    assert_int_equal(IDB_UPSTREAM_IMDS_MAX_PER_SECOND, 20);
    assert_string_equal(IDB_PLUGIN_SYMBOL, "idb_plugin_v1");
    assert_int_equal(IDB_HTTP_MAX_REPLY_BYTES, 1024 * 1024);
    assert_int_equal(IDB_LOG_ERR, 3);
    assert_int_equal(IDB_LOG_DEBUG, 7);
}

/* IDB_*_HAS: a 1.0 struct has its last 1.0 field and nothing past it. */
static void test_has_macros(void **state)
{
    (void)state;
    struct idb_provider p = {.size = sizeof(struct idb_provider)};
    assert_true(IDB_PROVIDER_HAS(&p, destroy));
    p.size = (uint32_t)offsetof(struct idb_provider, destroy);
    assert_false(IDB_PROVIDER_HAS(&p, destroy));
    assert_true(IDB_PROVIDER_HAS(&p, issue));

    struct idb_token_req r = {.size = sizeof(struct idb_token_req)};
    assert_true(IDB_REQ_HAS(&r, deadline_ms));
    r.size = (uint32_t)offsetof(struct idb_token_req, annotations);
    assert_false(IDB_REQ_HAS(&r, annotations));

    struct idb_host_api h = {.size = sizeof(struct idb_host_api)};
    assert_true(IDB_HOST_HAS(&h, issue_via));
    assert_true(IDB_HOST_HAS(&h, upstream_release));
    h.size = 72; /* a 1.0 host */
    assert_true(IDB_HOST_HAS(&h, issue_via));
    assert_false(IDB_HOST_HAS(&h, upstream_limits));
    assert_false(IDB_HOST_HAS(&h, upstream_release));
    struct idb_token t = {.size = sizeof(struct idb_token)};
    assert_true(IDB_TOKEN_HAS(&t, retry_after_s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_constants),
        cmocka_unit_test(test_has_macros),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
