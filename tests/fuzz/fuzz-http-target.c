/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes token_endpoint_parse_target (THREATS T6). Besides memory safety it checks the invariants
 * the handler relies on, and aborts when one breaks:
 * - a routed path is canonical: absolute, no "//", no dot-segments, no ';', '%', '\\', control or
 *   non-ASCII bytes;
 * - TOKEN/VERSIONS carry exactly their canonical path; INSTANCE starts with "/metadata/instance";
 * - only a raw target that names the token path (case-insensitively, after one decoding) is TOKEN;
 * - a selector value is present exactly when a selector kind is; errors always carry a description;
 * - parsing is deterministic.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "issuer.h"
#include "token-endpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Only the pure parser is fuzzed; the handler (and with it the issuer) is never called. These stubs
 * keep the target from pulling the real issuer, and everything it depends on, out of the library.
 */
void issuer_issue_for_peer(struct issuer *is, const struct sockaddr *peer, socklen_t peer_len,
                           const struct issue_request *req, struct issue_result *ret)
{
    (void)is;
    (void)peer;
    (void)peer_len;
    (void)req;
    memset(ret, 0, sizeof(*ret));
    ret->code = -ENOSYS;
}

void issuer_result_done(struct issuer *is, struct issue_result *r)
{
    (void)is;
    (void)r;
}

int issuer_peer_registration(struct issuer *is, const struct sockaddr *peer, socklen_t peer_len,
                             struct registration *ret)
{
    (void)is;
    (void)peer;
    (void)peer_len;
    (void)ret;
    return -ENOSYS;
}

static void check(int cond)
{
    if (!cond)
        abort();
}

static void check_canonical(const char *p)
{
    check(p[0] == '/');
    check(!strstr(p, "//"));
    check(!strstr(p, "/./") && !strstr(p, "/../"));
    size_t n = strlen(p);
    check(!(n >= 2 && strcmp(p + n - 2, "/.") == 0));
    check(!(n >= 3 && strcmp(p + n - 3, "/..") == 0));
    for (const unsigned char *c = (const unsigned char *)p; *c; c++)
        check(*c > 0x20 && *c < 0x7f && *c != ';' && *c != '%' && *c != '\\' && *c != '?' &&
              *c != '#');
}

static int hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Whether the raw path (before '?'), decoded once, is the token path in any case with at most one
 * trailing slash: an independent oracle for TE_ROUTE_TOKEN. */
static int spells_token_path(const char *raw)
{
    static const char tok[] = "/metadata/identity/oauth2/token";
    char dec[64];
    size_t n = 0;
    for (const char *p = raw; *p && *p != '?'; p++) {
        int c = (unsigned char)*p;
        if (c == '%') {
            if (hex(p[1]) < 0 || hex(p[2]) < 0)
                return 0;
            c = hex(p[1]) * 16 + hex(p[2]);
            p += 2;
        }
        if (n + 1 >= sizeof(dec))
            return 0;
        dec[n++] = (char)c;
    }
    dec[n] = '\0';
    if (n == sizeof(tok) && dec[n - 1] == '/')
        dec[--n] = '\0';
    return n == sizeof(tok) - 1 && strcasecmp(dec, tok) == 0;
}

/* A sink the optimiser cannot drop. */
static volatile size_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    char *raw = malloc(size + 1);
    if (!raw)
        return 0;
    memcpy(raw, data, size);
    raw[size] = '\0';

    enum te_route route, route2;
    struct te_query q, q2;
    char *desc = NULL, *desc2 = NULL;
    int r = token_endpoint_parse_target(raw, &route, &q, &desc);
    int r2 = token_endpoint_parse_target(raw, &route2, &q2, &desc2);
    check(r == r2);

    if (r < 0) {
        check(r == -EINVAL || r == -ENOMEM);
        check(r == -ENOMEM || (desc && desc[0]));
        check(desc2 && strcmp(desc ? desc : "", desc2) == 0);
        sink += strlen(desc ? desc : "");
        free(desc);
        free(desc2);
        free(raw);
        return 0;
    }
    check(!desc);
    check(route == route2);

    switch (route) {
    case TE_ROUTE_TOKEN:
        check(q.path && strcmp(q.path, "/metadata/identity/oauth2/token") == 0);
        check(spells_token_path(raw));
        break;
    case TE_ROUTE_VERSIONS:
        check(q.path && strcmp(q.path, "/metadata/versions") == 0);
        break;
    case TE_ROUTE_INSTANCE:
        check(q.path && strncmp(q.path, "/metadata/instance", 18) == 0);
        check(q.path[18] == '\0' || q.path[18] == '/');
        check_canonical(q.path);
        break;
    case TE_ROUTE_NOT_FOUND:
        check(q.path != NULL);
        check_canonical(q.path);
        check(strcasecmp(q.path, "/metadata/identity/oauth2/token") != 0);
        break;
    case TE_ROUTE_REJECTED:
        check(!q.path && !q.resource && !q.sel_value);
        break;
    default:
        abort();
    }
    check((q.sel == SELECTOR_NONE) == (q.sel_value == NULL));
    check(!q.sel_value || q.sel_value[0]);
    check(!q.resource || q.resource[0]);
    check(q.has_query == (strchr(raw, '?') != NULL));
    if (route != TE_ROUTE_TOKEN)
        check(!q.resource && !q.api_version && !q.sel_value && !q.bypass_cache);
    check((q.path == NULL) == (q2.path == NULL));
    check(!q.path || strcmp(q.path, q2.path) == 0);

    sink += (size_t)route + (q.path ? strlen(q.path) : 0) + (q.resource ? strlen(q.resource) : 0) +
            (size_t)q.sel + token_endpoint_api_version_valid(q.api_version);
    te_query_done(&q);
    te_query_done(&q2);
    free(raw);
    return 0;
}
