/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes manifest_parse, once as YAML and once as JSON (the origin's extension picks the parser),
 * and then every store operation on what it produced: iteration, JSON views, decisions under each
 * policy and selector, explain, removal. Seeds: tests/fuzz/corpus/manifest/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int touch_identity(const struct identity *i, void *ud)
{
    struct json_object *o = identity_to_json(i);
    json_object_put(o);
    (*(size_t *)ud)++;
    return 0;
}

static int touch_binding(const struct binding *b, void *ud)
{
    struct json_object *o = binding_to_json(b);
    json_object_put(o);
    (*(size_t *)ud)++;
    return 0;
}

static int touch_exception(const struct pod_exception *e, void *ud)
{
    struct json_object *o = pod_exception_to_json(e);
    json_object_put(o);
    (*(size_t *)ud)++;
    return 0;
}

static void run(const uint8_t *data, size_t size, const char *origin)
{
    struct store *s = store_new();
    if (!s)
        return;
    char *err = NULL;
    int r = manifest_parse((const char *)data, size, origin, s, &err);
    if (r < 0 && err && strncmp(err, origin, strlen(origin)) != 0)
        abort(); /* every message names its origin */
    free(err);

    size_t n = 0;
    store_foreach_identity(s, touch_identity, &n);
    store_foreach_binding(s, touch_binding, &n);
    store_foreach_exception(s, touch_exception, &n);

    /* Decide for a few likely pod names under every policy and selector. */
    static const char *names[][2] = {{"default", "p"}, {"default", "pod-a"}, {"ns", "p"}};
    static const struct store_policy pols[] = {
        {.namespaced = true},
        {.namespaced = false, .strict_selection = true, .exceptions = true},
    };
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
        for (size_t j = 0; j < sizeof(pols) / sizeof(pols[0]); j++) {
            struct decision d;
            store_decide(s, &pols[j], names[k][0], names[k][1], SELECTOR_NONE, NULL, &d);
            store_decide(s, &pols[j], names[k][0], names[k][1], SELECTOR_CLIENT_ID, "c", &d);
            store_decide(s, &pols[j], names[k][0], names[k][1], SELECTOR_OBJECT_ID, "o", &d);
            store_decide(s, &pols[j], names[k][0], names[k][1], SELECTOR_RESOURCE_ID, "/r", &d);
            json_object_put(store_explain(s, &pols[j], names[k][0], names[k][1]));
        }
    store_remove_binding(s, "default", "b");
    store_remove_identity(s, "default", "i");
    store_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(data, size, "fuzz.yaml");
    run(data, size, "fuzz.json");
    return 0;
}
