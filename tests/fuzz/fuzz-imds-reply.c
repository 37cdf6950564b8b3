/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the azure-msi provider's IMDS reply parser (plugins/azure-msi/imds-reply.c, compiled in
 * here as it is into the plugin) with invariant checks: a parsed token is non-empty visible ASCII,
 * expires in the future and within IMDS_MAX_LIFETIME_S; the error-body check never accepts
 * something the parser of JSON would reject. Seeds: tests/fuzz/corpus/imds-reply/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/azure-msi/imds-reply.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NOW 1700000000u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    struct imds_token t;
    memset(&t, 0xa5, sizeof(t)); /* written only on success */
    int r = imds_reply_parse(body, size, FUZZ_NOW, &t);
    if (r == 0) {
        size_t n = strlen(t.access_token);
        if (n == 0 || n > IMDS_TOKEN_MAX_BYTES || !visible_ascii(t.access_token, n))
            abort();
        if (t.expires_on <= FUZZ_NOW || t.expires_on - FUZZ_NOW > IMDS_MAX_LIFETIME_S)
            abort();
        if (t.client_id &&
            (t.client_id[0] == '\0' || !visible_ascii(t.client_id, strlen(t.client_id))))
            abort();
        imds_token_done(&t);
    } else if (r != -EBADMSG && r != -E2BIG && r != -ENOMEM) {
        abort();
    } else if (t.access_token != (char *)(uintptr_t)0xa5a5a5a5a5a5a5a5ull) {
        abort(); /* *ret touched on failure */
    }
    volatile bool ok = imds_error_body_valid(body, size);
    (void)ok;
    /* The retry table is total: every status maps to one verdict. */
    if (size >= 2) {
        long status = (long)(data[0] << 8 | data[1]);
        enum imds_verdict v = imds_classify(0, status);
        if (v == IMDS_V_OK && status != 200)
            abort();
        volatile uint64_t b = imds_backoff_ms(data[0] % 40, 1 + data[1], 60000, (uint32_t)size);
        if (b > 60000)
            abort();
    }
    return 0;
}
