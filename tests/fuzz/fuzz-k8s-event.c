/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the watch-stream decoder (k8s_decoder_feed) with the input split at a point taken from
 * its first byte, and applies every decoded event to a policy store of the kind chosen by its
 * second byte (k8s_watch_apply_event: manifest conversion, put, remove), then decides for the pod
 * the event named. Invariants: a stream fed in two pieces gives the same events as fed whole; an
 * event over the cap is never delivered (its object re-serialised is at most 6 bytes per byte of
 * its text: json-c writes a raw control character of a string as \u00XX). Seeds:
 * tests/fuzz/corpus/k8s-event/ (crash-k8s-event-control-chars: the regression case of a wrong
 * bound here, found by libFuzzer).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>

#include "k8s-client.h"
#include "k8s-watch.h"
#include "manifest.h"
#include "policy.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CAP 4096

struct ctx {
    struct policy *p;
    int kind;
    size_t events;
    uint64_t sum; /* of the events' type and serialised length, to compare two runs */
};

static int on_event(const struct k8s_event *ev, void *ud)
{
    struct ctx *c = ud;
    c->events++;
    size_t len = strlen(json_object_to_json_string_ext(ev->object, JSON_C_TO_STRING_PLAIN));
    if (len > 6 * CAP)
        abort(); /* the cap bounds the event's text; see the top of this file */
    c->sum = c->sum * 31 + (uint64_t)ev->type * 1000003u + len;
    if (c->p && k8s_watch_apply_event(c->p, c->kind, (int)ev->type, ev->object) >= 0) {
        const char *ns = k8s_meta_str(ev->object, "namespace");
        const char *name = k8s_meta_str(ev->object, "name");
        struct decision d;
        if (name)
            store_decide(c->p->store, &c->p->flags, ns ? ns : "default", name, SELECTOR_NONE, NULL,
                         &d);
    }
    return 0;
}

static int run(const char *text, size_t len, size_t cut, struct ctx *c)
{
    struct k8s_decoder *d = k8s_decoder_new(CAP);
    if (!d)
        return -1;
    int r = k8s_decoder_feed(d, text, cut, on_event, c);
    if (r >= 0)
        r = k8s_decoder_feed(d, text + cut, len - cut, on_event, c);
    k8s_decoder_free(d);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        /* Unusable objects are logged as warnings: a million of them would be the run's cost. */
        log_setup(IDB_LOG_ERR, LOG_FORMAT_TEXT, 2);
        init = 1;
    }
    if (size < 2)
        return 0;
    size_t len = size - 2;
    const char *text = (const char *)data + 2;
    size_t cut = len ? data[0] % (len + 1) : 0;
    struct ctx whole = {0}, split = {0};
    int r1 = run(text, len, len, &whole);
    int r2 = run(text, len, cut, &split);
    /* Same events and the same outcome however the stream is cut (errors may differ only when both
     * fail: the first error stops at the same event). */
    if (whole.events != split.events || whole.sum != split.sum || (r1 < 0) != (r2 < 0))
        abort();

    struct policy p;
    struct store_policy flags = {.namespaced = data[1] & 1, .exceptions = (data[1] >> 1) & 1};
    if (policy_init(&p, &flags, false) < 0)
        return 0;
    struct ctx apply = {.p = &p, .kind = MANIFEST_IDENTITY + (data[1] >> 2) % 4};
    run(text, len, cut, &apply);
    policy_done(&p);
    return 0;
}
