/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the conflist check (THREATS T21): the node's CNI configuration is written by
 * the primary CNI, outside idbroker's control. The first input byte picks the file name's kind
 * (.conflist or .conf), the rest is the file. Besides memory safety: the result is one of the three
 * states a text can have, an invalid file always says why, and the check is deterministic.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "conflist-watch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *name = (data[0] & 1) ? "10-net.conf" : "10-net.conflist";
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    const char *why = NULL, *why2 = NULL;
    enum conflist_chain c = conflist_watch_check_text(name, text, len, &why);
    if (c != CONFLIST_CHAIN_OK && c != CONFLIST_CHAIN_MISSING && c != CONFLIST_CHAIN_INVALID)
        abort();
    if (c == CONFLIST_CHAIN_INVALID && (!why || !*why))
        abort();
    /* A single network (.conf) can never chain idbroker. */
    if ((data[0] & 1) && c == CONFLIST_CHAIN_OK)
        abort();
    if (conflist_watch_check_text(name, text, len, &why2) != c)
        abort();
    return 0;
}
