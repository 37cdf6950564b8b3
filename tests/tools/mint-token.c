/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mint-token: loads one provider through the broker's real loader and host API and prints one
 * token. For tests, not installed.
 *
 *   mint-token [--identity NS/NAME] [--client-id ID] [--resource-id ID] [--annotation KEY=VALUE]...
 *              [--json] DIR NAME CONFIG_JSON RESOURCE
 *
 * Prints the access token (or, with --json, {"access_token","expires_on","not_before"}) on stdout.
 * Exits 0 on success, 1 when loading or issuing fails (the reason on stderr), 2 on bad usage.
 */
#include <getopt.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <idbroker/provider.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "host-api.h"
#include "plugin-loader.h"

#define MAX_ANNOTATIONS 16

static int usage(void)
{
    fprintf(stderr, "usage: mint-token [--identity NS/NAME] [--client-id ID] [--resource-id ID]\n"
                    "                  [--annotation KEY=VALUE]... [--json] DIR NAME CONFIG_JSON "
                    "RESOURCE\n");
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"identity", required_argument, NULL, 'i'},
        {"client-id", required_argument, NULL, 'c'},
        {"resource-id", required_argument, NULL, 'r'},
        {"annotation", required_argument, NULL, 'a'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *ns = "default", *name = "test-identity", *client_id = "", *resource_id = "";
    const char *annotations[2 * MAX_ANNOTATIONS + 1] = {0};
    size_t n_ann = 0;
    bool json = false;
    int c, ret = 1;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i': {
            char *slash = strchr(optarg, '/');
            if (!slash)
                return usage();
            *slash = '\0';
            ns = optarg;
            name = slash + 1;
            break;
        }
        case 'c':
            client_id = optarg;
            break;
        case 'r':
            resource_id = optarg;
            break;
        case 'a': {
            char *eq = strchr(optarg, '=');
            if (!eq || n_ann >= MAX_ANNOTATIONS)
                return usage();
            *eq = '\0';
            annotations[2 * n_ann] = optarg;
            annotations[2 * n_ann + 1] = eq + 1;
            n_ann++;
            break;
        }
        case 'j':
            json = true;
            break;
        default:
            return usage();
        }
    }
    if (argc - optind != 4)
        return usage();
    const char *dir = argv[optind], *pname = argv[optind + 1], *conf = argv[optind + 2];
    const char *resource = argv[optind + 3];

    log_setup(IDB_LOG_INFO, LOG_FORMAT_TEXT, STDERR_FILENO);
    if (host_api_init(NULL) < 0) {
        fprintf(stderr, "mint-token: cannot initialize the host API\n");
        return 1;
    }
    struct plugin_set *s = plugin_set_new();
    char *err = NULL;
    if (!s) {
        fprintf(stderr, "mint-token: out of memory\n");
        goto out;
    }
    int r = plugin_set_load(s, dir, pname, conf, host_api_get(), &err);
    if (r < 0) {
        fprintf(stderr, "mint-token: %s\n", err ? err : idb_strerror(r));
        goto out;
    }
    const struct plugin *pl = plugin_set_find(s, pname);
    struct idb_token_req req = {
        .size = sizeof(req),
        .resource = resource,
        .identity_name = name,
        .identity_namespace = ns,
        .client_id = client_id,
        .resource_id = resource_id,
        .tenant_id = "",
        .ad_endpoint = "",
        .ad_resource_id = "",
        .secret_name = "",
        .secret_namespace = "",
        .annotations = n_ann ? annotations : NULL,
        .deadline_ms = now_monotonic_ms() + 10000,
    };
    struct idb_token t = {.size = sizeof(t)};
    r = pl->p->issue(pl->state, &req, &t);
    if (r < 0) {
        fprintf(stderr, "mint-token: provider '%s' failed to issue: %s\n", pname, idb_strerror(r));
    } else if (json) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "access_token", json_object_new_string(t.access_token));
        json_object_object_add(o, "expires_on", json_object_new_int64((int64_t)t.expires_on));
        json_object_object_add(o, "not_before", json_object_new_int64((int64_t)t.not_before));
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
        json_object_put(o);
        ret = 0;
    } else {
        printf("%s\n", t.access_token);
        ret = 0;
    }
    if (t.access_token)
        explicit_bzero(t.access_token, strlen(t.access_token));
    host_api_get()->free(t.access_token);
    host_api_get()->free(t.client_id);
    host_api_get()->free(t.upstream_error);
out:
    free(err);
    plugin_set_free(s);
    host_api_done();
    return ret;
}
