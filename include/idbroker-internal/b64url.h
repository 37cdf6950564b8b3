/* SPDX-License-Identifier: Apache-2.0 */
/* base64url (RFC 4648 §5, no padding), for JWTs and JWKs. Shared by the providers that sign tokens.
 */
#ifndef IDBROKER_INTERNAL_B64URL_H
#define IDBROKER_INTERNAL_B64URL_H

#include <stddef.h>

/* Returns new (malloc; NUL-terminated) base64url of p[0..n), or NULL when out of memory. */
char *b64url_encode(const void *p, size_t n);

#endif
