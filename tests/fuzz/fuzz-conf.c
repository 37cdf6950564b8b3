/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the broker configuration parser (STYLE R21, wireguard's src/fuzz/config.c).
 * Every input either parses into a configuration whose invariants hold, or fails with a message
 * that names the source; nothing leaks either way (ASan's leak check runs at exit).
 */
#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "conf.h"

static volatile size_t sink; /* keeps the results observable, so nothing is optimised away */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct broker_conf *c = NULL;
    char *error = NULL;
    int r = conf_parse((const char *)data, size, "fuzz.json", &c, &error);
    if (r < 0) {
        /* A failure always explains itself, and never hands out a configuration. */
        if (c || (error && strncmp(error, "fuzz.json: ", 11) != 0))
            abort();
        sink += error ? strlen(error) : 0;
        free(error);
        return 0;
    }
    if (!c || error)
        abort();

    /* What the parser accepted, the rest of the broker can use as is. */
    struct sockaddr_storage ss;
    unsigned len;
    if (conf_parse_listen(c->listen, &ss, &len) < 0 ||
        conf_parse_listen(c->health_listen, &ss, &len) < 0)
        abort();
    if (!c->node_name || !c->node_name[0] || c->state_dir[0] != '/' || c->plugin_dir[0] != '/' ||
        c->control_socket[0] != '/' || c->source_dir[0] != '/')
        abort();
    for (int t = 0; t < CONF_MAX_TYPES; t++)
        if (!conf_type_provider(c, t))
            abort();
    for (size_t i = 0; i < c->n_providers; i++) {
        if (conf_find_provider(c, c->providers[i].name) != &c->providers[i])
            abort();
        /* The provider's text is one JSON object, as the plugin will receive it. */
        struct json_object *o = json_tokener_parse(c->providers[i].json);
        if (!json_object_is_type(o, json_type_object))
            abort();
        sink += (size_t)json_object_object_length(o);
        json_object_put(o);
    }
    if (conf_restart_key(c, c))
        abort();
    sink += c->cache_max_entries + (size_t)len;
    conf_free(c);
    return 0;
}
