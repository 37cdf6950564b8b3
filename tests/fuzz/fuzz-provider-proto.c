/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Feeds arbitrary bytes to the provider host channel's decoder (broker/provider-proto.c), as they
 * come (the length must match) and with the length field patched to the input's size, so the
 * fields are reached too. A decoded message must point only inside the frame; its converters must
 * not crash; and a request or result re-encoded from it must decode to the same values.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "provider-proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_inside(const uint8_t *f, size_t len, const char *s)
{
    if (s && ((const uint8_t *)s < f || (const uint8_t *)s + strlen(s) >= f + len))
        abort();
}

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check_request(const struct pp_msg *m)
{
    struct idb_token_req req;
    if (provider_proto_get_request(m, &req) < 0)
        return;
    uint8_t *f = NULL;
    size_t len = 0;
    if (provider_proto_encode_request(m->type, m->id, m->str[PP_T_PROVIDER], &req, &f, &len) < 0)
        return; /* only out of memory: whatever decoded fits a frame again */
    struct pp_msg m2;
    struct idb_token_req req2;
    if (provider_proto_decode(f, len, &m2) < 0 || provider_proto_get_request(&m2, &req2) < 0)
        abort();
    if (!same(req.resource, req2.resource) || !same(req.client_id, req2.client_id) ||
        !same(req.secret_namespace, req2.secret_namespace) ||
        req.identity_type != req2.identity_type || req.deadline_ms != req2.deadline_ms ||
        m2.n_annotations != m->n_annotations || m2.id != m->id)
        abort();
    for (size_t i = 0; i < m->n_annotations; i++)
        if (strcmp(m->annotations[i], m2.annotations[i]) != 0)
            abort();
    free(f);
}

static void check_result(const struct pp_msg *m)
{
    struct idb_token tok = {.size = sizeof(tok)};
    int code = 0;
    if (provider_proto_get_result(m, &code, &tok) < 0)
        return;
    if (code > 0 || (code == 0 && !tok.access_token))
        abort();
    uint8_t *f = NULL;
    size_t len = 0;
    if (provider_proto_encode_result(m->type, m->id, code, &tok, &f, &len) == 0) {
        struct pp_msg m2;
        struct idb_token tok2 = {.size = sizeof(tok2)};
        int code2 = 1;
        if (provider_proto_decode(f, len, &m2) < 0 ||
            provider_proto_get_result(&m2, &code2, &tok2) < 0 || code2 != code)
            abort();
        if (code == 0 &&
            (strcmp(tok.access_token, tok2.access_token) != 0 || tok.expires_on != tok2.expires_on))
            abort();
        free(tok2.access_token);
        free(tok2.client_id);
        free(tok2.upstream_error);
        free(f);
    }
    free(tok.access_token);
    free(tok.client_id);
    free(tok.upstream_error);
}

static void one(const uint8_t *f, size_t len)
{
    struct pp_msg *m = malloc(sizeof(*m));
    if (!m)
        return;
    if (provider_proto_decode(f, len, m) == 0) {
        if (provider_proto_frame_length(f) != (int)len || m->type <= 0 || m->type >= _PP_TYPE_MAX)
            abort();
        for (int t = 0; t < _PP_TAG_MAX; t++)
            check_inside(f, len, m->str[t]);
        for (size_t i = 0; i < m->n_annotations; i++)
            check_inside(f, len, m->annotations[i]);
        if (m->n_annotations % 2 || m->annotations[m->n_annotations])
            abort();
        if (m->type == PP_ISSUE || m->type == PP_VIA)
            check_request(m);
        if (m->type == PP_RESULT || m->type == PP_VIA_RESULT)
            check_result(m);
    }
    free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > PP_MAX_FRAME_BYTES)
        return 0;
    one(data, size);
    if (size >= PP_HEADER_BYTES) {
        uint8_t *f = malloc(size);
        if (!f)
            return 0;
        memcpy(f, data, size);
        for (int i = 0; i < 4; i++)
            f[i] = (uint8_t)(size >> (8 * i));
        f[5] = PP_VERSION;
        f[6] = f[7] = 0;
        one(f, size);
        free(f);
    }
    return 0;
}
