/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the CNI plugin's stdin parsers: the network configuration with prevResult
 * and GC's valid attachments (conf_parse, conf_parse_prev_result), `idbroker --guard`'s conflist
 * (conf_from_list), the CNI_ARGS parser, and the private attachment record reader. Results feed a
 * volatile sink so nothing is optimised away.
 */
#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attachment.h"
#include "cni-result.h"
#include "conf.h"

static volatile size_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > CONF_MAX_STDIN)
        return 0;
    struct cni_conf c;
    struct cni_error e = {0};
    for (int strict = 0; strict < 2; strict++) {
        memset(&e, 0, sizeof(e));
        if (conf_parse((const char *)data, size, strict, &c, &e) < 0) {
            sink += e.code + strlen(e.msg) + strlen(e.details);
            continue;
        }
        sink += c.broker_port + c.metadata_port + c.n_valid + strlen(c.state_dir);
        if (c.prev_result) {
            struct conf_prev_result *p = calloc(1, sizeof(*p));
            if (p && conf_parse_prev_result(c.prev_result, p, &e) == 0)
                sink += p->n_ips + p->n_ifaces + (size_t)p->ips[0].prefix_len;
            free(p);
            char *out = cni_result_json(c.prev_result, c.cni_version ? c.cni_version : "1.0.0");
            sink += out ? strlen(out) : 0;
            free(out);
        }
        if (c.has_valid && c.n_valid > 0)
            sink += conf_attachment_valid(&c, c.valid[0].container_id, c.valid[0].if_name);
        struct attachment a;
        if (attachment_from_json(c.root, &a, NULL) == 0)
            sink += a.n_ips;
        conf_done(&c);
    }

    /* The same bytes as `idbroker --guard` input: a conflist's idbroker entry, then parsed. */
    char *entry = NULL;
    memset(&e, 0, sizeof(e));
    if (conf_from_list((const char *)data, size, &entry, &e) > 0) {
        if (conf_parse(entry, strlen(entry), true, &c, &e) == 0) {
            sink += c.broker_port;
            conf_done(&c);
        }
        free(entry);
    } else
        sink += e.code;

    /* The same bytes as CNI_ARGS. */
    char *args = malloc(size + 1);
    if (!args)
        return 0;
    memcpy(args, data, size);
    args[size] = '\0';
    struct conf_pod pod;
    memset(&e, 0, sizeof(e));
    if (conf_parse_cni_args(args, &pod, &e) == 0)
        sink += strlen(pod.pod_namespace) + strlen(pod.pod_name) + strlen(pod.pod_uid);
    free(args);
    return 0;
}
