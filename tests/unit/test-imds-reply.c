/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The azure-msi provider's pure parts (plugins/azure-msi/imds-reply.c, compiled in here as it is
 * into the plugin): the IMDS token reply parser, the error-body check, the retry policy table and
 * the backoff.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../plugins/azure-msi/imds-reply.c"

#include <cmocka.h>

#define NOW 1700000000u

static int parse(const char *body, struct imds_token *t)
{
    return imds_reply_parse(body, strlen(body), NOW, t);
}

static void test_imds_shape(void **state)
{
    (void)state;
    struct imds_token t;
    const char *body =
        "{\"access_token\":\"eyJ0.eyJh.c2ln\",\"client_id\":\"cid-1\",\"expires_in\":\"86399\","
        "\"expires_on\":\"1700086399\",\"ext_expires_in\":\"86400\",\"not_before\":\"1699999999\","
        "\"resource\":\"https://vault.azure.net\",\"token_type\":\"Bearer\"}";
    assert_int_equal(parse(body, &t), 0);
    assert_string_equal(t.access_token, "eyJ0.eyJh.c2ln");
    assert_string_equal(t.client_id, "cid-1");
    assert_int_equal(t.expires_on, 1700086399u);
    assert_int_equal(t.expires_in, 86399);
    assert_int_equal(t.ext_expires_in, 86400);
    assert_int_equal(t.not_before, 1699999999u);
    imds_token_done(&t);
    assert_null(t.access_token);
}

static void test_numbers_and_defaults(void **state)
{
    (void)state;
    struct imds_token t;
    /* Numbers instead of strings; no expires_on: computed from expires_in. */
    assert_int_equal(parse("{\"access_token\":\"x\",\"expires_in\":3600,\"not_before\":5}", &t), 0);
    assert_int_equal(t.expires_on, NOW + 3600);
    assert_int_equal(t.not_before, 5);
    assert_null(t.client_id);
    imds_token_done(&t);
    /* Only expires_on: expires_in derived. Trailing white space is fine. */
    assert_int_equal(parse("{\"access_token\":\"x\",\"expires_on\":\"1700000600\"}\r\n", &t), 0);
    assert_int_equal(t.expires_in, 600);
    imds_token_done(&t);
    /* An empty client_id is "none"; token_type is case-insensitive. */
    assert_int_equal(
        parse("{\"access_token\":\"x\",\"expires_in\":\"9\",\"client_id\":\"\",\"token_type\":"
              "\"bearer\"}",
              &t),
        0);
    assert_null(t.client_id);
    imds_token_done(&t);
}

static void test_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "null",
        "[]",
        "\"access_token\"",
        "{}",
        "{\"access_token\":\"x\"}",                               /* no expiry at all */
        "{\"access_token\":\"\",\"expires_in\":\"10\"}",          /* empty token */
        "{\"access_token\":7,\"expires_in\":\"10\"}",             /* not a string */
        "{\"access_token\":\"a b\",\"expires_in\":\"10\"}",       /* space */
        "{\"access_token\":\"a\\nb\",\"expires_in\":\"10\"}",     /* control character */
        "{\"access_token\":\"a\\u0000b\",\"expires_in\":\"10\"}", /* NUL inside */
        "{\"access_token\":\"x\",\"expires_in\":\"-1\"}",
        "{\"access_token\":\"x\",\"expires_in\":\"+1\"}",
        "{\"access_token\":\"x\",\"expires_in\":\" 1\"}",
        "{\"access_token\":\"x\",\"expires_in\":\"1e3\"}",
        "{\"access_token\":\"x\",\"expires_in\":\"\"}",
        "{\"access_token\":\"x\",\"expires_in\":1.5}",
        "{\"access_token\":\"x\",\"expires_in\":-5}",
        "{\"access_token\":\"x\",\"expires_in\":true}",
        "{\"access_token\":\"x\",\"expires_in\":\"1234567890123\"}", /* 13 digits */
        "{\"access_token\":\"x\",\"expires_in\":\"0\"}",             /* already expired */
        "{\"access_token\":\"x\",\"expires_on\":\"1700000000\"}",    /* expires now */
        "{\"access_token\":\"x\",\"expires_in\":\"999999999\"}",     /* longer than 400 days */
        "{\"access_token\":\"x\",\"expires_in\":\"10\",\"not_before\":\"x\"}",
        "{\"access_token\":\"x\",\"expires_in\":\"10\",\"ext_expires_in\":\"-\"}",
        "{\"access_token\":\"x\",\"expires_in\":\"10\",\"token_type\":\"pop\"}",
        "{\"access_token\":\"x\",\"expires_in\":\"10\",\"client_id\":5}",
        "{\"access_token\":\"x\",\"expires_in\":\"10\",\"resource\":[]}",
        "{\"access_token\":\"x\",\"expires_in\":\"10\"} {}", /* trailing data */
        "{\"access_token\":\"x\",\"expires_in\":\"10\"",     /* truncated */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct imds_token t = {.access_token = (char *)"untouched"};
        int r = parse(bad[i], &t);
        if (r != -EBADMSG)
            print_error("input %zu: %s -> %d\n", i, bad[i], r);
        assert_int_equal(r, -EBADMSG);
        assert_string_equal(t.access_token, "untouched");
    }
    struct imds_token t;
    assert_int_equal(imds_reply_parse(NULL, 0, NOW, &t), -EBADMSG);
    /* Not NUL-terminated: only len bytes count. */
    const char *body = "{\"access_token\":\"x\",\"expires_in\":\"10\"}GARBAGE";
    assert_int_equal(imds_reply_parse(body, strlen(body) - 7, NOW, &t), 0);
    imds_token_done(&t);
}

static void test_bounds(void **state)
{
    (void)state;
    size_t n = IMDS_TOKEN_MAX_BYTES + 1;
    char *body = malloc(n + 64);
    assert_non_null(body);
    memcpy(body, "{\"access_token\":\"", 17);
    memset(body + 17, 'a', n);
    memcpy(body + 17 + n, "\",\"expires_in\":\"10\"}", 21);
    struct imds_token t;
    assert_int_equal(parse(body, &t), -E2BIG);
    /* One byte less is fine. */
    memmove(body + 17 + n - 1, body + 17 + n, strlen(body + 17 + n) + 1);
    assert_int_equal(parse(body, &t), 0);
    assert_int_equal(strlen(t.access_token), IMDS_TOKEN_MAX_BYTES);
    imds_token_done(&t);
    free(body);
    assert_int_equal(imds_reply_parse("{}", IMDS_REPLY_MAX_BYTES + 1, NOW, &t), -E2BIG);
}

static void test_error_body(void **state)
{
    (void)state;
    const char *ok = "{\"error\":\"invalid_request\",\"error_description\":\"Identity not found\"}";
    assert_true(imds_error_body_valid(ok, strlen(ok)));
    assert_true(imds_error_body_valid("{\"error\":\"x\"}", 13));
    assert_false(imds_error_body_valid("{\"error\":\"\"}", 11));
    assert_false(imds_error_body_valid("{\"error\":5}", 11));
    assert_false(imds_error_body_valid("{\"error\":\"x\",\"error_description\":7}", 35));
    assert_false(imds_error_body_valid("{\"error_description\":\"x\"}", 25));
    assert_false(imds_error_body_valid("<html>", 6));
    assert_false(imds_error_body_valid("", 0));
    assert_false(imds_error_body_valid(NULL, 0));
    const char *ctl = "{\"error\":\"a\\u0001b\"}";
    assert_false(imds_error_body_valid(ctl, strlen(ctl)));
}

/* The retry policy table (README.md "Retry policy"). */
static void test_retry_table(void **state)
{
    (void)state;
    static const struct {
        int rc;
        long status;
        enum imds_verdict v;
    } table[] = {
        {0, 200, IMDS_V_OK},
        {0, 404, IMDS_V_RETRY},
        {0, 408, IMDS_V_RETRY},
        {0, 410, IMDS_V_RETRY},
        {0, 429, IMDS_V_THROTTLED},
        {0, 500, IMDS_V_RETRY},
        {0, 502, IMDS_V_RETRY},
        {0, 503, IMDS_V_RETRY},
        {0, 504, IMDS_V_RETRY},
        {0, 599, IMDS_V_RETRY},
        {0, 400, IMDS_V_REFUSED},
        {0, 401, IMDS_V_REFUSED},
        {0, 403, IMDS_V_REFUSED},
        {0, 405, IMDS_V_REFUSED},
        {0, 499, IMDS_V_REFUSED},
        {0, 201, IMDS_V_BAD_REPLY},
        {0, 204, IMDS_V_BAD_REPLY},
        {0, 301, IMDS_V_BAD_REPLY},
        {0, 100, IMDS_V_BAD_REPLY},
        {0, 600, IMDS_V_BAD_REPLY},
        {-ETIMEDOUT, 0, IMDS_V_RETRY},
        {-ECONNREFUSED, 0, IMDS_V_RETRY},
        {-ECONNRESET, 0, IMDS_V_RETRY},
        {-EHOSTUNREACH, 0, IMDS_V_RETRY},
        {-EIO, 0, IMDS_V_RETRY},
        {-E2BIG, 0, IMDS_V_BAD_REPLY},
        {-EINVAL, 0, IMDS_V_FAILED},
        {-ENOMEM, 0, IMDS_V_FAILED},
        {-EPROTO, 0, IMDS_V_FAILED},
        {-EPROTONOSUPPORT, 0, IMDS_V_FAILED},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        enum imds_verdict v = imds_classify(table[i].rc, table[i].status);
        if (v != table[i].v)
            print_error("rc %d status %ld -> %d, want %d\n", table[i].rc, table[i].status, v,
                        table[i].v);
        assert_int_equal(v, table[i].v);
    }
}

static void test_backoff(void **state)
{
    (void)state;
    /* Exponential steps 500, 1000, 2000, 4000, capped at 4000; equal jitter within [step/2, step].
     */
    static const uint64_t steps[] = {500, 1000, 2000, 4000, 4000, 4000};
    for (unsigned a = 1; a <= 6; a++) {
        uint64_t s = steps[a - 1];
        assert_int_equal(imds_backoff_ms(a, 500, 4000, 0), s - s / 2);
        assert_int_equal(imds_backoff_ms(a, 500, 4000, (uint32_t)(s / 2)), s);
        for (uint32_t r = 0; r < 5000; r += 97) {
            uint64_t b = imds_backoff_ms(a, 500, 4000, r);
            assert_true(b >= s - s / 2 && b <= s);
        }
    }
    /* Huge attempt numbers do not overflow. */
    assert_int_equal(imds_backoff_ms(1000, 500, 4000, 0), 2000);
    assert_int_equal(imds_backoff_ms(1, 1, 1, 12345), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_imds_shape), cmocka_unit_test(test_numbers_and_defaults),
        cmocka_unit_test(test_malformed),  cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_error_body), cmocka_unit_test(test_retry_table),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
