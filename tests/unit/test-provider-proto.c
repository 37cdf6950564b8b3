/* SPDX-License-Identifier: Apache-2.0 */
/*
 * provider-proto: the frames between idbrokerd and its provider host. Round trips of every message
 * type, the decoder's refusals (built byte by byte), size caps, the range checks of the
 * converters, and whole frames over a socketpair.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "host-api.h"
#include "provider-proto.h"

#include <cmocka.h>

/* --- a hand-made frame, to reach what the encoders never produce --- */

struct raw {
    uint8_t b[8192];
    size_t len;
};

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void raw_begin(struct raw *r, uint8_t type, uint64_t id)
{
    memset(r, 0, sizeof(*r));
    r->b[4] = type;
    r->b[5] = PP_VERSION;
    put_le(r->b + 8, id, 8);
    r->len = PP_HEADER_BYTES;
}

static void raw_field(struct raw *r, uint16_t tag, const void *v, uint32_t n)
{
    put_le(r->b + r->len, tag, 2);
    put_le(r->b + r->len + 2, n, 4);
    memcpy(r->b + r->len + 6, v, n);
    r->len += 6 + n;
}

static void raw_str(struct raw *r, uint16_t tag, const char *s)
{
    raw_field(r, tag, s, (uint32_t)strlen(s) + 1);
}

static void raw_num(struct raw *r, uint16_t tag, uint64_t v)
{
    uint8_t b[8];
    put_le(b, v, 8);
    raw_field(r, tag, b, 8);
}

/* Patches the length and decodes. */
static int raw_decode(struct raw *r, struct pp_msg *m)
{
    put_le(r->b, r->len, 4);
    return provider_proto_decode(r->b, r->len, m);
}

/* A minimal valid PP_RESULT failure. */
static void raw_result(struct raw *r)
{
    raw_begin(r, PP_RESULT, 7);
    raw_num(r, PP_T_CODE, (uint64_t)(int64_t)IDB_E_UPSTREAM_UNAVAILABLE);
}

static const char *const annotations[] = {"idbroker.io/provider", "mock", "a", "", NULL};

static struct idb_token_req full_request(void)
{
    return (struct idb_token_req){
        .size = sizeof(struct idb_token_req),
        .resource = "https://vault.azure.net",
        .identity_name = "id",
        .identity_namespace = "ns",
        .identity_type = 2,
        .client_id = "00000000-0000-0000-0000-000000000001",
        .resource_id = "/subscriptions/x",
        .tenant_id = "t",
        .ad_endpoint = "https://login.example/",
        .ad_resource_id = "r",
        .secret_name = "s",
        .secret_namespace = "sn",
        .annotations = annotations,
        .deadline_ms = 123456789012ULL,
    };
}

static void test_request_round_trip(void **state)
{
    (void)state;
    static const enum pp_type types[] = {PP_ISSUE, PP_VIA};
    for (size_t t = 0; t < 2; t++) {
        struct idb_token_req in = full_request();
        uint8_t *f = NULL;
        size_t len = 0;
        assert_int_equal(provider_proto_encode_request(types[t], 42, "keyvault", &in, &f, &len), 0);
        assert_int_equal(provider_proto_frame_length(f), (int)len);
        struct pp_msg m;
        assert_int_equal(provider_proto_decode(f, len, &m), 0);
        assert_int_equal(m.type, types[t]);
        assert_int_equal(m.id, 42);
        assert_string_equal(m.str[PP_T_PROVIDER], "keyvault");
        struct idb_token_req out;
        assert_int_equal(provider_proto_get_request(&m, &out), 0);
        assert_int_equal(out.size, sizeof(out));
        assert_string_equal(out.resource, in.resource);
        assert_string_equal(out.identity_name, in.identity_name);
        assert_string_equal(out.identity_namespace, in.identity_namespace);
        assert_int_equal(out.identity_type, 2);
        assert_string_equal(out.client_id, in.client_id);
        assert_string_equal(out.resource_id, in.resource_id);
        assert_string_equal(out.tenant_id, in.tenant_id);
        assert_string_equal(out.ad_endpoint, in.ad_endpoint);
        assert_string_equal(out.ad_resource_id, in.ad_resource_id);
        assert_string_equal(out.secret_name, in.secret_name);
        assert_string_equal(out.secret_namespace, in.secret_namespace);
        assert_int_equal(out.deadline_ms, in.deadline_ms);
        for (size_t i = 0; i < 4; i++)
            assert_string_equal(out.annotations[i], annotations[i]);
        assert_null(out.annotations[4]);
        /* Strings are borrowed from the frame. */
        assert_true((const uint8_t *)out.resource > f && (const uint8_t *)out.resource < f + len);
        free(f);
    }
}

static void test_request_optional_fields(void **state)
{
    (void)state;
    struct idb_token_req in = {.size = sizeof(in), .resource = "r", .identity_type = -1};
    uint8_t *f = NULL;
    size_t len = 0;
    assert_int_equal(provider_proto_encode_request(PP_ISSUE, 1, "mock", &in, &f, &len), 0);
    struct pp_msg m;
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    struct idb_token_req out;
    assert_int_equal(provider_proto_get_request(&m, &out), 0);
    assert_null(out.identity_name);
    assert_null(out.client_id);
    assert_null(out.annotations);
    assert_int_equal(out.identity_type, -1);
    assert_false(provider_proto_has(&m, PP_T_CLIENT_ID));
    assert_true(provider_proto_has(&m, PP_T_RESOURCE));
    free(f);

    /* Refused: no resource, an odd annotation list, a type that is not a request. */
    in.resource = NULL;
    assert_int_equal(provider_proto_encode_request(PP_ISSUE, 1, "mock", &in, &f, &len), -EINVAL);
    static const char *const odd[] = {"k", NULL};
    in.resource = "r";
    in.annotations = odd;
    assert_int_equal(provider_proto_encode_request(PP_ISSUE, 1, "mock", &in, &f, &len), -EINVAL);
    in.annotations = NULL;
    assert_int_equal(provider_proto_encode_request(PP_RESULT, 1, "mock", &in, &f, &len), -EINVAL);
    assert_int_equal(provider_proto_encode_request(PP_ISSUE, 1, NULL, &in, &f, &len), -EINVAL);
}

static void test_result_round_trip(void **state)
{
    (void)state;
    struct idb_token tok = {
        .size = sizeof(tok),
        .access_token = (char *)"eyJ.secret.sig",
        .expires_on = 2000000000,
        .not_before = 1999996400,
        .ext_expires_in = 7200,
        .client_id = (char *)"cid",
        /* Error fields are not sent with a success. */
        .upstream_status = 400,
        .upstream_error = (char *)"{}",
        .retry_after_s = 9,
    };
    uint8_t *f = NULL;
    size_t len = 0;
    assert_int_equal(provider_proto_encode_result(PP_RESULT, 9, 0, &tok, &f, &len), 0);
    struct pp_msg m;
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_false(provider_proto_has(&m, PP_T_UPSTREAM_ERROR));
    struct idb_token out = {.size = sizeof(out)};
    int code = 1;
    assert_int_equal(provider_proto_get_result(&m, &code, &out), 0);
    assert_int_equal(code, 0);
    assert_string_equal(out.access_token, "eyJ.secret.sig");
    assert_int_equal(out.expires_on, 2000000000);
    assert_int_equal(out.not_before, 1999996400);
    assert_int_equal(out.ext_expires_in, 7200);
    assert_string_equal(out.client_id, "cid");
    assert_null(out.upstream_error);
    assert_int_equal(out.upstream_status, 0);
    /* Copies, not pointers into the frame. */
    assert_false((uint8_t *)out.access_token >= f && (uint8_t *)out.access_token < f + len);
    free(out.access_token);
    free(out.client_id);
    explicit_bzero(f, len);
    free(f);

    /* A failure carries the error fields only; a positive code is sent as 0. */
    assert_int_equal(
        provider_proto_encode_result(PP_VIA_RESULT, 10, IDB_E_UPSTREAM_4XX, &tok, &f, &len), 0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal(m.type, PP_VIA_RESULT);
    assert_false(provider_proto_has(&m, PP_T_ACCESS_TOKEN));
    out = (struct idb_token){.size = sizeof(out)};
    assert_int_equal(provider_proto_get_result(&m, &code, &out), 0);
    assert_int_equal(code, IDB_E_UPSTREAM_4XX);
    assert_null(out.access_token);
    assert_int_equal(out.upstream_status, 400);
    assert_string_equal(out.upstream_error, "{}");
    assert_int_equal(out.retry_after_s, 9);
    free(out.upstream_error);
    free(f);

    /* No token at all: just the code. */
    assert_int_equal(provider_proto_encode_result(PP_RESULT, 11, -ENOMEM, NULL, &f, &len), 0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    out = (struct idb_token){.size = sizeof(out)};
    assert_int_equal(provider_proto_get_result(&m, &code, &out), 0);
    assert_int_equal(code, -ENOMEM);
    free(f);

    assert_int_equal(provider_proto_encode_result(PP_ISSUE, 11, 0, &tok, &f, &len), -EINVAL);
}

static void test_control_round_trip(void **state)
{
    (void)state;
    uint8_t *f = NULL;
    size_t len = 0;
    struct pp_msg m;

    assert_int_equal(provider_proto_encode_init(0, 7, 1, "/usr/lib/p", 10000, 64, &f, &len), 0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal(m.type, PP_INIT);
    assert_int_equal(m.num[PP_T_LOG_LEVEL], 7);
    assert_int_equal(m.num[PP_T_LOG_FORMAT], 1);
    assert_string_equal(m.str[PP_T_DIR], "/usr/lib/p");
    assert_int_equal(m.num[PP_T_TIMEOUT_MS], 10000);
    assert_int_equal(m.num[PP_T_MAX_CALLS], 64);
    free(f);
    assert_int_equal(provider_proto_encode_init(0, 8, 1, "/p", 1, 1, &f, &len), -EINVAL);
    assert_int_equal(provider_proto_encode_init(0, 6, 1, "/p", 1, 0, &f, &len), -EINVAL);

    assert_int_equal(provider_proto_encode_init_ok(&f, &len), 0);
    assert_int_equal(len, PP_HEADER_BYTES);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal(m.type, PP_INIT_OK);
    assert_int_equal(m.present, 0);
    free(f);

    /* The upstream limiter calls and their answer. */
    assert_int_equal(provider_proto_encode_up_limits(5, "imds", 5, 20, &f, &len), 0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal(m.type, PP_UP_LIMITS);
    assert_string_equal(m.str[PP_T_UPSTREAM], "imds");
    assert_int_equal(m.num[PP_T_MAX_CONCURRENT], 5);
    assert_int_equal(m.num[PP_T_MAX_PER_SECOND], 20);
    free(f);
    assert_int_equal(provider_proto_encode_up_acquire(6, "imds", 987654321, &f, &len), 0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal(m.type, PP_UP_ACQUIRE);
    assert_int_equal(m.id, 6);
    assert_int_equal(m.num[PP_T_DEADLINE_MS], 987654321);
    free(f);
    assert_int_equal(provider_proto_encode_up_release("imds", &f, &len), 0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal(m.type, PP_UP_RELEASE);
    free(f);
    assert_int_equal(provider_proto_encode_up_result(6, -EAGAIN, 250, &f, &len), 0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal(m.type, PP_UP_RESULT);
    assert_int_equal((int)(int64_t)m.num[PP_T_CODE], -EAGAIN);
    assert_int_equal(m.num[PP_T_HINT_MS], 250);
    free(f);
    assert_int_equal(provider_proto_encode_up_result(7, 0, 0, &f, &len), 0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_false(provider_proto_has(&m, PP_T_HINT_MS));
    free(f);
    assert_int_equal(provider_proto_encode_up_acquire(6, NULL, 1, &f, &len), -EINVAL);

    assert_int_equal(provider_proto_encode_set_log(3, 0, &f, &len), 0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal(m.type, PP_SET_LOG);
    assert_int_equal(m.num[PP_T_LOG_LEVEL], 3);
    assert_int_equal(m.num[PP_T_LOG_FORMAT], 0);
    free(f);
    assert_int_equal(provider_proto_encode_set_log(3, 2, &f, &len), -EINVAL);

    assert_int_equal(provider_proto_encode_load(3, "mock", "{\"a\":1}", &f, &len), 0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal(m.type, PP_LOAD);
    assert_string_equal(m.str[PP_T_PROVIDER], "mock");
    assert_string_equal(m.str[PP_T_CONF], "{\"a\":1}");
    free(f);

    assert_int_equal(provider_proto_encode_loaded(3, 0, NULL, "1.2", 1, 4, "/p/mock.so", &f, &len),
                     0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal((int64_t)m.num[PP_T_CODE], 0);
    assert_string_equal(m.str[PP_T_VERSION], "1.2");
    assert_int_equal(m.num[PP_T_ABI_MAJOR], 1);
    assert_int_equal(m.num[PP_T_ABI_MINOR], 4);
    assert_string_equal(m.str[PP_T_PATH], "/p/mock.so");
    assert_false(provider_proto_has(&m, PP_T_ERROR));
    free(f);

    assert_int_equal(provider_proto_encode_loaded(4, IDB_E_PLUGIN_ABI, "not binary compatible", "x",
                                                  2, 0, "/p", &f, &len),
                     0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal((int)(int64_t)m.num[PP_T_CODE], IDB_E_PLUGIN_ABI);
    assert_string_equal(m.str[PP_T_ERROR], "not binary compatible");
    assert_false(provider_proto_has(&m, PP_T_PATH));
    free(f);
}

static void test_header(void **state)
{
    (void)state;
    struct raw r;
    struct pp_msg m;
    raw_result(&r);
    put_le(r.b, r.len, 4);
    assert_int_equal(provider_proto_frame_length(r.b), (int)r.len);
    assert_int_equal(provider_proto_decode(r.b, r.len, &m), 0);
    assert_int_equal(m.id, 7);

    put_le(r.b, PP_HEADER_BYTES - 1, 4);
    assert_int_equal(provider_proto_frame_length(r.b), -EBADMSG);
    put_le(r.b, PP_MAX_FRAME_BYTES + 1, 4);
    assert_int_equal(provider_proto_frame_length(r.b), -EBADMSG);
    put_le(r.b, r.len, 4);
    r.b[5] = PP_VERSION + 1;
    assert_int_equal(provider_proto_frame_length(r.b), -EBADMSG);
    r.b[5] = PP_VERSION;
    r.b[7] = 1;
    assert_int_equal(provider_proto_frame_length(r.b), -EBADMSG);
    r.b[7] = 0;
    /* The length must equal the buffer's. */
    assert_int_equal(provider_proto_decode(r.b, r.len - 1, &m), -EBADMSG);
    assert_int_equal(provider_proto_decode(r.b, 3, &m), -EBADMSG);
    assert_int_equal(provider_proto_decode(NULL, 0, &m), -EBADMSG);
    /* Unknown types. */
    r.b[4] = 0;
    assert_int_equal(provider_proto_decode(r.b, r.len, &m), -EBADMSG);
    r.b[4] = _PP_TYPE_MAX;
    assert_int_equal(provider_proto_decode(r.b, r.len, &m), -EBADMSG);
}

static void test_decode_refusals(void **state)
{
    (void)state;
    struct raw r;
    struct pp_msg m;
    memset(&m, 0xa5, sizeof(m));
    struct pp_msg untouched = m;

    /* A field header cut short. */
    raw_result(&r);
    r.b[r.len++] = PP_T_RETRY_AFTER;
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    /* A field longer than what is left. */
    raw_result(&r);
    raw_str(&r, PP_T_UPSTREAM_ERROR, "abc");
    put_le(r.b + r.len - 4 - 4, 5, 4);
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    /* Unknown tag, tag 0, a tag this type does not allow. */
    raw_result(&r);
    raw_num(&r, _PP_TAG_MAX, 1);
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    raw_result(&r);
    raw_num(&r, 0, 1);
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    raw_result(&r);
    raw_str(&r, PP_T_RESOURCE, "r");
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    /* A repeated tag. */
    raw_result(&r);
    raw_num(&r, PP_T_RETRY_AFTER, 1);
    raw_num(&r, PP_T_RETRY_AFTER, 2);
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    /* A number of the wrong size. */
    raw_result(&r);
    raw_field(&r, PP_T_RETRY_AFTER, "1234", 4);
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    /* Strings: empty, not NUL-terminated, a NUL inside. */
    raw_result(&r);
    raw_field(&r, PP_T_UPSTREAM_ERROR, "", 0);
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    raw_result(&r);
    raw_field(&r, PP_T_UPSTREAM_ERROR, "abc", 3);
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    raw_result(&r);
    raw_field(&r, PP_T_UPSTREAM_ERROR, "a\0b", 4);
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    /* A required tag missing. */
    raw_begin(&r, PP_RESULT, 1);
    raw_num(&r, PP_T_RETRY_AFTER, 1);
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    raw_begin(&r, PP_ISSUE, 1);
    raw_str(&r, PP_T_PROVIDER, "mock");
    raw_num(&r, PP_T_IDENTITY_TYPE, 0);
    raw_num(&r, PP_T_DEADLINE_MS, 1);
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    raw_str(&r, PP_T_RESOURCE, "r");
    /* An odd annotation list; then the pair completed. */
    raw_str(&r, PP_T_ANNOTATION, "k");
    assert_int_equal(raw_decode(&r, &m), -EBADMSG);
    assert_memory_equal(&m, &untouched, sizeof(m));
    raw_str(&r, PP_T_ANNOTATION, "v");
    assert_int_equal(raw_decode(&r, &m), 0);
    assert_int_equal(m.n_annotations, 2);
    assert_null(m.annotations[2]);
}

static void test_truncations(void **state)
{
    (void)state;
    struct idb_token_req in = full_request();
    uint8_t *f = NULL;
    size_t len = 0;
    assert_int_equal(provider_proto_encode_request(PP_VIA, 5, "azure-msi", &in, &f, &len), 0);
    /* Every shorter frame, with its length field patched to match, is refused, but for cuts at a
     * field boundary that keep every required field and an even number of annotations. */
    bool boundary[PP_MAX_FRAME_BYTES / 1024] = {false};
    assert_true(len < sizeof(boundary));
    for (size_t off = PP_HEADER_BYTES; off < len;) {
        boundary[off] = true;
        off += 6 + ((size_t)f[off + 2] | (size_t)f[off + 3] << 8);
    }
    uint8_t *g = malloc(len);
    assert_non_null(g);
    struct pp_msg m;
    size_t valid = 0;
    for (size_t n = PP_HEADER_BYTES; n < len; n++) {
        memcpy(g, f, n);
        put_le(g, n, 4);
        int r = provider_proto_decode(g, n, &m);
        if (r == 0) {
            assert_true(boundary[n]);
            valid++;
        } else
            assert_int_equal(r, -EBADMSG);
    }
    /* Without the last annotation pair, and without both pairs. */
    assert_int_equal(valid, 2);
    free(g);
    free(f);
}

static void test_caps(void **state)
{
    (void)state;
    uint8_t *f = NULL;
    size_t len = 0;
    /* A string that cannot fit a frame. */
    size_t big = PP_MAX_FRAME_BYTES;
    char *s = malloc(big + 1);
    assert_non_null(s);
    memset(s, 'x', big);
    s[big] = '\0';
    struct idb_token_req in = {.size = sizeof(in), .resource = s};
    assert_int_equal(provider_proto_encode_request(PP_ISSUE, 1, "mock", &in, &f, &len), -E2BIG);
    /* Just under the cap fits. */
    size_t room = PP_MAX_FRAME_BYTES - PP_HEADER_BYTES - 6 * 4 - 8 * 2 - sizeof("mock") - 1;
    s[room] = '\0';
    assert_int_equal(provider_proto_encode_request(PP_ISSUE, 1, "mock", &in, &f, &len), 0);
    assert_int_equal(len, PP_MAX_FRAME_BYTES);
    struct pp_msg m;
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    free(f);
    s[room + 1] = '\0';
    s[room] = 'x';
    assert_int_equal(provider_proto_encode_request(PP_ISSUE, 1, "mock", &in, &f, &len), -E2BIG);
    free(s);

    /* Too many annotations. */
    const char **a = calloc(PP_MAX_ANNOTATION_STRINGS + 3, sizeof(char *));
    assert_non_null(a);
    for (size_t i = 0; i < PP_MAX_ANNOTATION_STRINGS + 2; i++)
        a[i] = "k";
    in = (struct idb_token_req){.size = sizeof(in), .resource = "r", .annotations = a};
    assert_int_equal(provider_proto_encode_request(PP_ISSUE, 1, "mock", &in, &f, &len), -E2BIG);
    a[PP_MAX_ANNOTATION_STRINGS] = NULL;
    assert_int_equal(provider_proto_encode_request(PP_ISSUE, 1, "mock", &in, &f, &len), 0);
    assert_int_equal(provider_proto_decode(f, len, &m), 0);
    assert_int_equal(m.n_annotations, PP_MAX_ANNOTATION_STRINGS);
    free(f);
    free(a);

    /* The decoder's cap on annotations (a hand-made frame past it). */
    struct raw *r = malloc(sizeof(*r));
    assert_non_null(r);
    raw_begin(r, PP_ISSUE, 1);
    raw_str(r, PP_T_PROVIDER, "m");
    raw_str(r, PP_T_RESOURCE, "r");
    raw_num(r, PP_T_IDENTITY_TYPE, 0);
    raw_num(r, PP_T_DEADLINE_MS, 1);
    for (size_t i = 0; i < PP_MAX_ANNOTATION_STRINGS + 2; i++)
        raw_str(r, PP_T_ANNOTATION, "k");
    assert_true(r->len <= sizeof(r->b));
    assert_int_equal(raw_decode(r, &m), -EBADMSG);
    r->len -= 2 * 8; /* each "k" field is 8 bytes */
    assert_int_equal(raw_decode(r, &m), 0);
    assert_int_equal(m.n_annotations, PP_MAX_ANNOTATION_STRINGS);
    free(r);
}

static void test_converters(void **state)
{
    (void)state;
    struct raw r;
    struct pp_msg m;
    struct idb_token tok = {.size = sizeof(tok)};
    int code = 0;

    /* A positive code, a success without a token, a status or Retry-After out of range. */
    raw_begin(&r, PP_RESULT, 1);
    raw_num(&r, PP_T_CODE, 1);
    raw_str(&r, PP_T_ACCESS_TOKEN, "t");
    assert_int_equal(raw_decode(&r, &m), 0);
    assert_int_equal(provider_proto_get_result(&m, &code, &tok), -EBADMSG);
    raw_begin(&r, PP_RESULT, 1);
    raw_num(&r, PP_T_CODE, 0);
    assert_int_equal(raw_decode(&r, &m), 0);
    assert_int_equal(provider_proto_get_result(&m, &code, &tok), -EBADMSG);
    raw_result(&r);
    raw_num(&r, PP_T_UPSTREAM_STATUS, 1000);
    assert_int_equal(raw_decode(&r, &m), 0);
    assert_int_equal(provider_proto_get_result(&m, &code, &tok), -EBADMSG);
    raw_result(&r);
    raw_num(&r, PP_T_RETRY_AFTER, (uint64_t)UINT32_MAX + 1);
    assert_int_equal(raw_decode(&r, &m), 0);
    assert_int_equal(provider_proto_get_result(&m, &code, &tok), -EBADMSG);
    raw_begin(&r, PP_RESULT, 1);
    raw_num(&r, PP_T_CODE, (uint64_t)INT64_MIN);
    assert_int_equal(raw_decode(&r, &m), 0);
    assert_int_equal(provider_proto_get_result(&m, &code, &tok), -EBADMSG);
    assert_null(tok.access_token);
    /* A struct idb_token short of ABI 1.0. */
    raw_result(&r);
    assert_int_equal(raw_decode(&r, &m), 0);
    tok.size = 8;
    assert_int_equal(provider_proto_get_result(&m, &code, &tok), -EINVAL);
    /* Wrong types for each converter. */
    struct idb_token_req req;
    assert_int_equal(provider_proto_get_request(&m, &req), -EBADMSG);
    raw_begin(&r, PP_ISSUE, 1);
    raw_str(&r, PP_T_PROVIDER, "m");
    raw_str(&r, PP_T_RESOURCE, "r");
    raw_num(&r, PP_T_IDENTITY_TYPE, (uint64_t)1 << 40);
    raw_num(&r, PP_T_DEADLINE_MS, 1);
    assert_int_equal(raw_decode(&r, &m), 0);
    assert_int_equal(provider_proto_get_request(&m, &req), -EBADMSG);
    tok.size = sizeof(tok);
    assert_int_equal(provider_proto_get_result(&m, &code, &tok), -EBADMSG);
}

static void test_io(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    uint8_t *f = NULL, *g = NULL;
    size_t len = 0, glen = 0;
    assert_int_equal(provider_proto_encode_load(1, "mock", "{}", &f, &len), 0);
    assert_int_equal(provider_proto_write(sv[0], f, len), 0);
    assert_int_equal(provider_proto_write(sv[0], f, len), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(provider_proto_read(sv[1], 0, &g, &glen), 0);
        assert_int_equal(glen, len);
        assert_memory_equal(g, f, len);
        free(g);
    }
    /* Nothing to read: the deadline ends the wait. */
    assert_int_equal(provider_proto_read(sv[1], now_monotonic_ms() + 20, &g, &glen), -ETIMEDOUT);
    /* A bad header. */
    uint8_t bad[PP_HEADER_BYTES] = {0xff, 0xff, 0xff, 0xff, 1, PP_VERSION};
    assert_int_equal(write(sv[0], bad, sizeof(bad)), (ssize_t)sizeof(bad));
    assert_int_equal(provider_proto_read(sv[1], 0, &g, &glen), -EBADMSG);
    /* End of file in the middle of a frame, and at a frame boundary. */
    assert_int_equal(write(sv[0], f, len - 1), (ssize_t)len - 1);
    close(sv[0]);
    assert_int_equal(provider_proto_read(sv[1], 0, &g, &glen), -ECONNRESET);
    assert_int_equal(provider_proto_read(sv[1], 0, &g, &glen), -ECONNRESET);
    /* Writing to a closed peer fails without SIGPIPE. */
    assert_int_equal(provider_proto_write(sv[1], f, len), -EPIPE);
    close(sv[1]);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_request_optional_fields),
        cmocka_unit_test(test_result_round_trip),
        cmocka_unit_test(test_control_round_trip),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_decode_refusals),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_converters),
        cmocka_unit_test(test_io),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
