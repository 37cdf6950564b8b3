/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes what the keyvault provider reads from Entra ID's token endpoint, and the request pieces it
 * builds from identity fields: the token reply, the scope, the token URL and the form encoding.
 * Seeds: tests/fuzz/corpus/entra-reply/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "entra.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int unreserved(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    struct entra_reply r;
    if (entra_parse_reply(body, size, &r) == 0) {
        if (!r.access_token == !r.error)
            abort();
        if (r.access_token) {
            if (r.expires_in == 0 || !r.access_token[0])
                abort();
            for (const char *p = r.access_token; *p; p++)
                if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
                    abort();
        }
        (void)entra_reply_bad_credential(&r);
        entra_reply_done(&r);
    }

    char *text = strndup(body, size);
    if (!text)
        return 0;
    char *scope = entra_scope(text);
    free(scope);
    char *url = NULL, *host = NULL;
    int port;
    if (entra_token_url("https://login.microsoftonline.com", text, &url, &host, &port) == 0) {
        if (!entra_valid_tenant(text))
            abort();
        free(url);
        free(host);
    }
    struct entra_form f = {0};
    if (entra_form_add(&f, "k", text) == 0) {
        for (size_t i = 2; i < f.len; i++)
            if (!unreserved(f.buf[i]) && f.buf[i] != '%')
                abort();
    }
    entra_form_done(&f);
    free(text);
    return 0;
}
