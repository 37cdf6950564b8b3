/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The parser of IMDS' token reply, a pure function shared by the azure-msi provider, its unit test
 * and the fuzz target tests/fuzz/fuzz-imds-reply.c (which compile this file in).
 *
 * IMDS answers a token request with a JSON object whose values are strings, numbers included:
 *   {"access_token":"…","client_id":"…","expires_in":"86399","expires_on":"1700086399",
 *    "ext_expires_in":"86399","not_before":"1700000000","resource":"…","token_type":"Bearer"}
 * Clients differ (some send numbers), so a time field may be a string of decimal digits or a JSON
 * integer; anything else (a sign, a fraction, an exponent, white space, more than 12 digits) is a
 * malformed reply.
 */
#ifndef IDB_PLUGIN_AZURE_MSI_IMDS_REPLY_H
#define IDB_PLUGIN_AZURE_MSI_IMDS_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds on what a well-formed reply may carry. */
#define IMDS_REPLY_MAX_BYTES (256 * 1024)
#define IMDS_TOKEN_MAX_BYTES (64 * 1024)
#define IMDS_FIELD_MAX_BYTES 4096
#define IMDS_MAX_LIFETIME_S (400u * 86400u) /* a token valid longer than this is a bad reply */

struct imds_token {
    char *access_token;      /* malloc'd secret: imds_token_done() wipes it */
    char *client_id;         /* malloc'd, NULL when the reply has none */
    uint64_t expires_on;     /* epoch seconds; from expires_in when the reply has no expires_on */
    uint64_t not_before;     /* epoch seconds, 0 when absent */
    uint64_t expires_in;     /* seconds, as sent (or expires_on - now) */
    uint64_t ext_expires_in; /* seconds, 0 when absent */
};

/*
 * Parses a 200 reply body (body[0..len), need not be NUL-terminated) received at epoch second
 * `now`. Returns 0 and fills *ret (strings new; free with imds_token_done()), or -EBADMSG for a
 * malformed reply (not a JSON object, no non-empty printable access_token, a time field of the
 * wrong shape, neither expires_on nor expires_in, a token already expired or valid for longer than
 * IMDS_MAX_LIFETIME_S, a token_type other than Bearer), -E2BIG when the body or a field is over its
 * bound, or -ENOMEM. *ret is written only on success.
 */
int imds_reply_parse(const char *body, size_t len, uint64_t now, struct imds_token *ret);

/* Wipes and frees the strings of t (which may be partly filled or zeroed), and zeroes it. */
void imds_token_done(struct imds_token *t);

/*
 * Whether body[0..len) is an IMDS-shaped error body worth passing to a pod as it is: a JSON object
 * with a string "error" and, if present, a string "error_description", at most
 * IMDS_FIELD_MAX_BYTES long, printable.
 */
bool imds_error_body_valid(const char *body, size_t len);

/*
 * The retry policy (IMDS' documented guidance for identity tokens), as a pure table.
 * transport_rc is host->http()'s return (0 when a reply arrived); status is the reply's status.
 */
enum imds_verdict {
    IMDS_V_OK,        /* 200: parse the token */
    IMDS_V_RETRY,     /* 404, 408, 410, 5xx, or IMDS unreachable/timed out: back off and retry */
    IMDS_V_THROTTLED, /* 429: retry after Retry-After (or the backoff), never past the deadline */
    IMDS_V_REFUSED,   /* any other 4xx: final, passed to the pod */
    IMDS_V_BAD_REPLY, /* 1xx/2xx other than 200/3xx, or a reply over the size cap: final */
    IMDS_V_FAILED,    /* a local failure (bad URL, out of memory, TLS set-up): final */
};
enum imds_verdict imds_classify(int transport_rc, long status);

/*
 * Backoff before retry number `attempt` (1 for the first retry): exponential from initial_ms,
 * doubling, capped at max_ms, with "equal jitter": half the step fixed, half drawn from rnd.
 * Returns milliseconds in [step - step/2, step], step = min(initial_ms * 2^(attempt-1), max_ms).
 */
uint64_t imds_backoff_ms(unsigned attempt, uint32_t initial_ms, uint32_t max_ms, uint32_t rnd);

#endif
