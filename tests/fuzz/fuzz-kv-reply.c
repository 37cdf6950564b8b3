/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes what the keyvault provider reads from Key Vault and from AzureIdentity annotations: the
 * secret reply (and the credential in it: secret, PEM, base64 PKCS#12), the error reply, the
 * WWW-Authenticate challenge, the secret URL and allow-list matching. The first input byte picks
 * the content type the credential is read as. Seeds: tests/fuzz/corpus/kv-reply/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cred.h"
#include "kv-parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const content_types[] = {NULL, "application/x-pkcs12", "application/x-pem-file",
                                            "text/plain"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *ct = content_types[data[0] & 3];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    struct kv_secret s;
    if (kv_parse_secret_reply(body, len, &s) == 0) {
        if (!s.value || strlen(s.value) != s.value_len)
            abort();
        struct cred *c = NULL;
        if (cred_load(s.value, s.value_len, s.content_type ? s.content_type : ct, "pw", &c, NULL) ==
            0) {
            if (c->kind == CRED_CERT && (!c->key || !c->cert))
                abort();
            if (c->kind == CRED_SECRET && (!c->secret || !c->secret[0]))
                abort();
            cred_unref(c);
        }
        kv_secret_done(&s);
    }
    /* The raw body as a credential value too, so PEM and PKCS#12 get fuzzed directly. */
    struct cred *c = NULL;
    if (cred_load(body, len, ct, NULL, &c, NULL) == 0)
        cred_unref(c);

    char *code = NULL, *msg = NULL, *inner = NULL;
    if (kv_parse_error_reply(body, len, &code, &msg, &inner) == 0) {
        if (!code && !msg)
            abort();
        free(code);
        free(msg);
        free(inner);
    }

    char *text = strndup(body, len);
    if (!text)
        return 0;
    struct kv_challenge ch;
    if (kv_parse_challenge(text, &ch) == 0)
        kv_challenge_done(&ch);
    struct kv_ref ref;
    if (kv_parse_secret_url(text, &ref) == 0) {
        if (!kv_parse_valid_name(ref.name) || strncmp(ref.vault, "https://", 8) != 0)
            abort();
        if (kv_parse_host_match(text, ref.host, ref.port) && strchr(text, '/'))
            abort(); /* a URL is never a pattern that matches */
        kv_ref_done(&ref);
    }
    (void)kv_parse_host_match(text, "a.vault.azure.net", 0);
    free(text);
    return 0;
}
