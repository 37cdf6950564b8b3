/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The keyvault provider's parsers: Key Vault secret URLs, host allow-list patterns, the bearer
 * challenge, Key Vault's secret and error replies; Entra ID's scope, token URL, form encoding and
 * token reply.
 */
#include <errno.h>
#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "entra.h"
#include "kv-parse.h"

#include <cmocka.h>

static void test_secret_url(void **state)
{
    (void)state;
    struct kv_ref r;
    assert_int_equal(kv_parse_secret_url("https://My-Vault.Vault.Azure.NET/secrets/sp-one", &r), 0);
    assert_string_equal(r.vault, "https://my-vault.vault.azure.net");
    assert_string_equal(r.host, "my-vault.vault.azure.net");
    assert_int_equal(r.port, 0);
    assert_string_equal(r.name, "sp-one");
    assert_null(r.version);
    kv_ref_done(&r);

    assert_int_equal(
        kv_parse_secret_url("https://v.vault.azure.net:8443/secrets/x/0123abcdef0123abcdef/", &r),
        0);
    assert_string_equal(r.vault, "https://v.vault.azure.net:8443");
    assert_int_equal(r.port, 8443);
    assert_string_equal(r.version, "0123abcdef0123abcdef");
    kv_ref_done(&r);

    assert_int_equal(kv_parse_secret_url("https://v.vault.azure.net/secrets/x/", &r), 0);
    assert_null(r.version);
    kv_ref_done(&r);

    static const char *const bad[] = {
        "http://v.vault.azure.net/secrets/x",
        "https://v.vault.azure.net/secrets/",
        "https://v.vault.azure.net/keys/x",
        "https://v.vault.azure.net/secrets/x?api-version=7.4",
        "https://v.vault.azure.net/secrets/x#frag",
        "https://user@v.vault.azure.net/secrets/x",
        "https://v.vault.azure.net/secrets/x/ver/extra",
        "https://v.vault.azure.net/secrets/x_y",
        "https://v.vault.azure.net/secrets/%2e%2e",
        "https://v.vault.azure.net/secrets/../x",
        "https://v.vault.azure.net:0/secrets/x",
        "https://v.vault.azure.net:70000/secrets/x",
        "https://v.vault.azure.net:/secrets/x",
        "https://.vault.azure.net/secrets/x",
        "https://v..azure.net/secrets/x",
        "https://[::1]/secrets/x",
        "https:///secrets/x",
        "",
        "https://v.vault.azure.net/secrets/x\r\nHost: evil",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (kv_parse_secret_url(bad[i], &r) != -EINVAL)
            fail_msg("accepted '%s'", bad[i]);
    }
    char longname[200] = "https://v.vault.azure.net/secrets/";
    memset(longname + strlen(longname), 'a', 128);
    assert_int_equal(kv_parse_secret_url(longname, &r), -EINVAL);
}

static void test_vault_url(void **state)
{
    (void)state;
    struct kv_ref r;
    assert_int_equal(kv_parse_vault_url("https://127.0.0.1:8443/", "sp", NULL, &r), 0);
    assert_string_equal(r.vault, "https://127.0.0.1:8443");
    assert_string_equal(r.name, "sp");
    kv_ref_done(&r);
    assert_int_equal(kv_parse_vault_url("https://v.vault.azure.net", "a.b", NULL, &r), -EINVAL);
    assert_int_equal(kv_parse_vault_url("https://v.vault.azure.net/x", "ab", NULL, &r), -EINVAL);
    assert_int_equal(kv_parse_vault_url("https://v.vault.azure.net", "", NULL, &r), -EINVAL);
    assert_int_equal(kv_parse_vault_url("https://v.vault.azure.net", "ab", "v-1", &r), -EINVAL);
    assert_true(kv_parse_valid_name("Abc-123"));
    assert_false(kv_parse_valid_name("abc/123"));
    assert_false(kv_parse_valid_name(NULL));
}

static void test_host_match(void **state)
{
    (void)state;
    assert_true(kv_parse_host_match("*.vault.azure.net", "a.vault.azure.net", 0));
    assert_true(kv_parse_host_match("*.vault.azure.net", "a.b.vault.azure.net", 443));
    assert_true(kv_parse_host_match("*.VAULT.azure.net", "a.vault.azure.net", 0));
    assert_false(kv_parse_host_match("*.vault.azure.net", "vault.azure.net", 0));
    assert_false(kv_parse_host_match("*.vault.azure.net", "avault.azure.net", 0));
    assert_false(kv_parse_host_match("*.vault.azure.net", "a.vault.azure.net.evil.com", 0));
    assert_false(kv_parse_host_match("*.vault.azure.net", "a.vault.azure.net", 8443));
    assert_true(kv_parse_host_match("127.0.0.1:*", "127.0.0.1", 8443));
    assert_true(kv_parse_host_match("127.0.0.1:8443", "127.0.0.1", 8443));
    assert_false(kv_parse_host_match("127.0.0.1:8443", "127.0.0.1", 8444));
    assert_false(kv_parse_host_match("127.0.0.1", "127.0.0.1", 8443));
    assert_true(kv_parse_host_match("127.0.0.1", "127.0.0.1", 0));
    assert_false(kv_parse_host_match("127.0.0.1:abc", "127.0.0.1", 0));
    assert_false(kv_parse_host_match("", "a", 0));
}

static void test_challenge(void **state)
{
    (void)state;
    struct kv_challenge c;
    assert_int_equal(kv_parse_challenge("Bearer authorization=\"https://login.windows.net/"
                                        "72f988bf-86f1-41af-91ab-2d7cd011db47\", "
                                        "resource=\"https://vault.azure.net\"",
                                        &c),
                     0);
    assert_string_equal(c.authorization,
                        "https://login.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47");
    assert_string_equal(c.resource, "https://vault.azure.net");
    kv_challenge_done(&c);

    assert_int_equal(
        kv_parse_challenge("bearer authorization_uri=https://login.microsoftonline.com/"
                           "t,scope=\"https://vault.azure.cn/.default\"",
                           &c),
        0);
    assert_string_equal(c.authorization, "https://login.microsoftonline.com/t");
    assert_string_equal(c.resource, "https://vault.azure.cn");
    kv_challenge_done(&c);

    /* resource wins over scope; unknown params and a following scheme are ignored */
    assert_int_equal(kv_parse_challenge("Bearer scope=\"a/.default b\", resource=\"r\", "
                                        "error=\"invalid_token\", PoP nonce=\"x\"",
                                        &c),
                     0);
    assert_string_equal(c.resource, "r");
    kv_challenge_done(&c);

    assert_int_equal(kv_parse_challenge("Bearer resource=\"a\\\"b\"", &c), 0);
    assert_string_equal(c.resource, "a\"b");
    kv_challenge_done(&c);

    assert_int_equal(kv_parse_challenge("Bearer", &c), 0);
    assert_null(c.resource);
    kv_challenge_done(&c);

    assert_int_equal(kv_parse_challenge("Basic realm=\"x\"", &c), -EBADMSG);
    assert_int_equal(kv_parse_challenge("Bearerx resource=a", &c), -EBADMSG);
    assert_int_equal(kv_parse_challenge("Bearer resource=\"unterminated", &c), -EBADMSG);
    assert_int_equal(kv_parse_challenge("Bearer resource=", &c), -EBADMSG);
    assert_int_equal(kv_parse_challenge("Bearer resource=\"a\" junk", &c), -EBADMSG);
    assert_int_equal(kv_parse_challenge("Bearer =x", &c), -EBADMSG);
    assert_int_equal(kv_parse_challenge(NULL, &c), -EBADMSG);
    char big[KV_MAX_CHALLENGE + 16];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(kv_parse_challenge(big, &c), -E2BIG);
}

static void test_secret_reply(void **state)
{
    (void)state;
    struct kv_secret s;
    const char *full =
        "{\"value\":\"pa\\u0073s\",\"contentType\":\"application/x-pkcs12\",\"id\":\"https://v."
        "vault.azure.net/secrets/x/abc\",\"attributes\":{\"enabled\":true,\"exp\":2000000000,"
        "\"nbf\":1000,\"created\":1},\"tags\":{}}  \n";
    assert_int_equal(kv_parse_secret_reply(full, strlen(full), &s), 0);
    assert_string_equal(s.value, "pass");
    assert_int_equal(s.value_len, 4);
    assert_string_equal(s.content_type, "application/x-pkcs12");
    assert_string_equal(s.id, "https://v.vault.azure.net/secrets/x/abc");
    assert_true(s.enabled);
    assert_int_equal(s.exp, 2000000000);
    assert_int_equal(s.nbf, 1000);
    kv_secret_done(&s);

    const char *min = "{\"value\":\"x\"}";
    assert_int_equal(kv_parse_secret_reply(min, strlen(min), &s), 0);
    assert_null(s.content_type);
    assert_true(s.enabled);
    kv_secret_done(&s);

    const char *disabled = "{\"value\":\"x\",\"attributes\":{\"enabled\":false}}";
    assert_int_equal(kv_parse_secret_reply(disabled, strlen(disabled), &s), 0);
    assert_false(s.enabled);
    kv_secret_done(&s);

    static const char *const bad[] = {
        "",
        "[]",
        "{}",
        "{\"value\":1}",
        "{\"value\":\"x\",\"contentType\":5}",
        "{\"value\":\"x\",\"attributes\":[]}",
        "{\"value\":\"x\",\"attributes\":{\"enabled\":\"yes\"}}",
        "{\"value\":\"x\",\"attributes\":{\"exp\":-1}}",
        "{\"value\":\"x\"} {}",
        "{\"value\":\"a\\u0000b\"}",
        "{\"value\":\"x\"",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (kv_parse_secret_reply(bad[i], strlen(bad[i]), &s) != -EBADMSG)
            fail_msg("accepted '%s'", bad[i]);
}

static void test_error_reply(void **state)
{
    (void)state;
    char *code = NULL, *msg = NULL, *inner = NULL;
    const char *e = "{\"error\":{\"code\":\"Forbidden\",\"message\":\"no\\nway\",\"innererror\":"
                    "{\"code\":\"ForbiddenByRbac\"}}}";
    assert_int_equal(kv_parse_error_reply(e, strlen(e), &code, &msg, &inner), 0);
    assert_string_equal(code, "Forbidden");
    assert_string_equal(msg, "no?way");
    assert_string_equal(inner, "ForbiddenByRbac");
    free(code);
    free(msg);
    free(inner);
    const char *e2 = "{\"error\":\"x\"}";
    assert_int_equal(kv_parse_error_reply(e2, strlen(e2), &code, &msg, &inner), -EBADMSG);
    const char *e3 = "{\"error\":{}}";
    assert_int_equal(kv_parse_error_reply(e3, strlen(e3), &code, &msg, &inner), -EBADMSG);
}

static void test_scope_and_url(void **state)
{
    (void)state;
    char *s = entra_scope("https://management.azure.com/");
    assert_string_equal(s, "https://management.azure.com//.default");
    free(s);
    s = entra_scope("https://vault.azure.net");
    assert_string_equal(s, "https://vault.azure.net/.default");
    free(s);
    s = entra_scope("api://app/.default");
    assert_string_equal(s, "api://app/.default");
    free(s);
    s = entra_scope("00000002-0000-0000-c000-000000000000");
    assert_string_equal(s, "00000002-0000-0000-c000-000000000000/.default");
    free(s);
    assert_null(entra_scope(""));

    char *url = NULL, *host = NULL;
    int port = -1;
    assert_int_equal(entra_token_url("https://login.microsoftonline.com/",
                                     "contoso.onmicrosoft.com", &url, &host, &port),
                     0);
    assert_string_equal(
        url, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
    assert_string_equal(host, "login.microsoftonline.com");
    assert_int_equal(port, 0);
    free(url);
    free(host);
    assert_int_equal(
        entra_token_url("https://login.microsoftonline.com", "../x", &url, &host, &port), -EINVAL);
    assert_int_equal(
        entra_token_url("https://login.microsoftonline.com/x", "t", &url, &host, &port), -EINVAL);
    assert_int_equal(entra_token_url("http://login.microsoftonline.com", "t", &url, &host, &port),
                     -EINVAL);
    assert_true(entra_valid_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47"));
    assert_false(entra_valid_tenant("a/b"));
    assert_false(entra_valid_tenant(""));
    assert_true(entra_valid_client_id("11111111-0000-0000-0000-000000000001"));
    assert_false(entra_valid_client_id("a b"));
    assert_false(entra_valid_client_id(""));
}

static void test_form(void **state)
{
    (void)state;
    struct entra_form f = {0};
    assert_int_equal(entra_form_add(&f, "grant_type", "client_credentials"), 0);
    assert_int_equal(entra_form_add(&f, "client_secret", "a b&c=d+e%f~g.h_i-j/\xc3\xa9"), 0);
    assert_int_equal(entra_form_add(&f, "scope", "https://x//.default"), 0);
    assert_string_equal(f.buf,
                        "grant_type=client_credentials&client_secret=a%20b%26c%3Dd%2Be%25f~g.h_"
                        "i-j%2F%C3%A9&scope=https%3A%2F%2Fx%2F%2F.default");
    assert_int_equal(f.len, strlen(f.buf));
    entra_form_done(&f);
    assert_null(f.buf);

    char *big = malloc(200 * 1024);
    assert_non_null(big);
    memset(big, '&', 200 * 1024 - 1);
    big[200 * 1024 - 1] = '\0';
    assert_int_equal(entra_form_add(&f, "x", big), -E2BIG);
    entra_form_done(&f);
    free(big);
}

static void test_entra_reply(void **state)
{
    (void)state;
    struct entra_reply r;
    const char *ok = "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":\"7199\","
                     "\"access_token\":\"eyJ0.eyJ1.sig\"}";
    assert_int_equal(entra_parse_reply(ok, strlen(ok), &r), 0);
    assert_string_equal(r.access_token, "eyJ0.eyJ1.sig");
    assert_int_equal(r.expires_in, 3599);
    assert_int_equal(r.ext_expires_in, 7199);
    assert_null(r.error);
    entra_reply_done(&r);

    const char *v1 = "{\"token_type\":\"bearer\",\"expires_in\":\"3600\",\"access_token\":\"t\"}";
    assert_int_equal(entra_parse_reply(v1, strlen(v1), &r), 0);
    assert_int_equal(r.expires_in, 3600);
    entra_reply_done(&r);

    const char *err =
        "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: "
        "Invalid client secret provided.\\r\\nTrace ID: x\",\"error_codes\":[7000215]}";
    assert_int_equal(entra_parse_reply(err, strlen(err), &r), 0);
    assert_null(r.access_token);
    assert_string_equal(r.error, "invalid_client");
    assert_string_equal(r.error_description,
                        "AADSTS7000215: Invalid client secret provided.??Trace ID: x");
    assert_int_equal(r.error_code, 7000215);
    assert_true(entra_reply_bad_credential(&r));
    entra_reply_done(&r);

    const char *tenant = "{\"error\":\"invalid_request\",\"error_codes\":[90002]}";
    assert_int_equal(entra_parse_reply(tenant, strlen(tenant), &r), 0);
    assert_false(entra_reply_bad_credential(&r));
    entra_reply_done(&r);

    const char *expired = "{\"error\":\"unauthorized_client\",\"error_codes\":[7000222]}";
    assert_int_equal(entra_parse_reply(expired, strlen(expired), &r), 0);
    assert_true(entra_reply_bad_credential(&r));
    entra_reply_done(&r);

    static const char *const bad[] = {
        "{}",
        "{\"access_token\":\"t\"}",
        "{\"access_token\":\"t\",\"expires_in\":0}",
        "{\"access_token\":\"t\",\"expires_in\":-5}",
        "{\"access_token\":\"t\",\"expires_in\":\"12a\"}",
        "{\"access_token\":\"t\",\"expires_in\":\"\"}",
        "{\"access_token\":\"t\",\"expires_in\":1.5}",
        "{\"access_token\":\"\",\"expires_in\":5}",
        "{\"access_token\":\"a b\",\"expires_in\":5}",
        "{\"access_token\":5,\"expires_in\":5}",
        "{\"access_token\":\"t\",\"expires_in\":5,\"token_type\":\"pop\"}",
        "{\"error\":5}",
        "{\"error\":\"x\",\"error_description\":[]}",
        "not json",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (entra_parse_reply(bad[i], strlen(bad[i]), &r) != -EBADMSG)
            fail_msg("accepted '%s'", bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_url),    cmocka_unit_test(test_vault_url),
        cmocka_unit_test(test_host_match),    cmocka_unit_test(test_challenge),
        cmocka_unit_test(test_secret_reply),  cmocka_unit_test(test_error_reply),
        cmocka_unit_test(test_scope_and_url), cmocka_unit_test(test_form),
        cmocka_unit_test(test_entra_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
