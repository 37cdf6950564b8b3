/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Feeds arbitrary bytes to registration_parse() (common/registration.c): the broker reads these
 * files from the state directory, where the CNI plugin writes them. Every input must either be
 * refused with a negative code or give a registration whose fields hold the parser's promises
 * (valid identifiers, bounded strings, at most REG_MAX_IPS addresses), and which survives a round
 * trip through registration_to_json() unchanged. Seeds: tests/fuzz/corpus/registration/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/registration.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_str(const char *s, size_t size)
{
    if (strnlen(s, size) >= size)
        abort();
}

static void check_fields(const struct registration *r)
{
    check_str(r->container_id, sizeof(r->container_id));
    check_str(r->if_name, sizeof(r->if_name));
    check_str(r->pod_namespace, sizeof(r->pod_namespace));
    check_str(r->pod_name, sizeof(r->pod_name));
    check_str(r->pod_uid, sizeof(r->pod_uid));
    check_str(r->netns, sizeof(r->netns));
    check_str(r->host_ifname, sizeof(r->host_ifname));
    check_str(r->origin, sizeof(r->origin));
    if (!reg_valid_container_id(r->container_id) || !reg_valid_ifname(r->if_name))
        abort();
    if (r->host_ifname[0] && !reg_valid_ifname(r->host_ifname))
        abort();
    if (r->n_ips > REG_MAX_IPS || r->host_ifindex < 0)
        abort();
    for (size_t i = 0; i < r->n_ips; i++) {
        if (r->ips[i].family != AF_INET && r->ips[i].family != AF_INET6)
            abort();
        char buf[64];
        reg_ip_to_string(&r->ips[i], buf, sizeof(buf));
        struct reg_ip back;
        if (reg_ip_parse(buf, &back) < 0 || !reg_ip_equal(&back, &r->ips[i]))
            abort();
    }
    /* The identifiers become a file name: it must always fit and stay in pods/. */
    char path[REG_MAX_PATH + 512];
    if (registration_path("/state", r->container_id, r->if_name, path, sizeof(path)) < 0)
        abort();
    if (strncmp(path, "/state/pods/", 12) != 0 || strchr(path + 12, '/'))
        abort();
}

static bool same(const struct registration *a, const struct registration *b)
{
    if (a->n_ips != b->n_ips)
        return false;
    for (size_t i = 0; i < a->n_ips; i++)
        if (!reg_ip_equal(&a->ips[i], &b->ips[i]))
            return false;
    /* An empty origin is written as "cni" (the plugin's files predate the field). */
    const char *oa = a->origin[0] ? a->origin : "cni", *ob = b->origin[0] ? b->origin : "cni";
    return streq(a->container_id, b->container_id) && streq(a->if_name, b->if_name) &&
           streq(a->pod_namespace, b->pod_namespace) && streq(a->pod_name, b->pod_name) &&
           streq(a->pod_uid, b->pod_uid) && streq(a->netns, b->netns) &&
           streq(a->host_ifname, b->host_ifname) && a->host_ifindex == b->host_ifindex &&
           a->created == b->created && streq(oa, ob);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct registration r;
    const char *why = NULL;
    memset(&r, 0xa5, sizeof(r));
    int k = registration_parse((const char *)data, size, &r, &why);
    if (k < 0) {
        if (k > -1 || !why)
            abort(); /* every refusal is negative and says what */
        return 0;
    }
    check_fields(&r);

    struct json_object *o = registration_to_json(&r);
    if (!o)
        return 0; /* out of memory */
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    struct registration back;
    const char *why2 = NULL;
    if (registration_parse(text, strlen(text), &back, &why2) < 0 || !same(&r, &back))
        abort();
    json_object_put(o);
    return 0;
}
