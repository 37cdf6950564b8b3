/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plugin's input (DESIGN §6): the network configuration on stdin (with prevResult), the
 * CNI_ARGS pod keys and GC's valid attachments. Pure parsing, no I/O, so it can be fuzzed
 * (tests/fuzz/fuzz-cni-conf.c). Unknown keys are ignored, as CNI plugins do; known keys of the
 * wrong type or out of range are errors (code 7) naming the key and the bad value.
 */
#ifndef IDB_CNI_CONF_H
#define IDB_CNI_CONF_H

#include <json-c/json.h>
#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>

#include <idbroker-internal/registration.h>

#include "cni-result.h"

#define CONF_MAX_STDIN (1024 * 1024) /* the whole stdin; more is a decode error (code 6) */
#define CONF_MAX_IFACES 32           /* prevResult.interfaces entries */
#define CONF_MAX_RESULT_IPS 32       /* prevResult.ips entries */
#define CONF_MAX_ATTACHMENTS 65536   /* GC's cni.dev/valid-attachments */

#define CONF_DEFAULT_BROKER_ADDRESS "169.254.169.250" /* = broker/conf.h CONF_DEFAULT_LISTEN */
#define CONF_DEFAULT_BROKER_PORT 2579
#define CONF_DEFAULT_METADATA_ADDRESS "169.254.169.254"
#define CONF_DEFAULT_METADATA_PORT 80
#define CONF_DEFAULT_STATE_DIR "/var/lib/idbroker"

struct cni_conf {
    struct json_object *root;        /* owned: the whole parsed stdin */
    const char *cni_version;         /* borrowed from root; NULL when absent (VERSION) */
    const char *name;                /* borrowed from root; "" when absent */
    struct json_object *prev_result; /* borrowed from root; NULL when absent */

    char broker_socket[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* "brokerSocket" */
    struct reg_ip broker_address;                                    /* "brokerAddress" */
    uint16_t broker_port;                                            /* "brokerPort" */
    struct reg_ip metadata_address;                                  /* "metadataAddress" */
    uint16_t metadata_port;                                          /* "metadataPort" */
    char state_dir[REG_MAX_PATH + 1];                                /* "stateDir" */
    char log_file[REG_MAX_PATH + 1];                                 /* "logFile"; "" = stderr */
    int log_level;                                                   /* "logLevel" */

    /* cni.dev/valid-attachments (GC), owned; NULL when absent. */
    struct conf_attachment *valid;
    size_t n_valid;
    bool has_valid;
};

struct conf_attachment {
    char container_id[REG_MAX_ID + 1];
    char if_name[REG_MAX_IFNAME + 1];
};

/* One entry of prevResult.interfaces. */
struct conf_iface {
    char name[IFNAMSIZ];
    bool has_mac;
    uint8_t mac[6];
    bool in_sandbox; /* "sandbox" present and non-empty: the interface lives in the pod */
};

/* One entry of prevResult.ips. */
struct conf_ip {
    struct reg_ip addr;
    int prefix_len;
    int iface; /* index into interfaces, -1 when absent */
};

struct conf_prev_result {
    struct conf_iface ifaces[CONF_MAX_IFACES];
    size_t n_ifaces;
    struct conf_ip ips[CONF_MAX_RESULT_IPS];
    size_t n_ips;
};

/* The K8S_POD_* keys of CNI_ARGS. Absent keys are "" (see docs/cni.md: a pod without a namespace
 * matches no namespaced binding). */
struct conf_pod {
    char pod_namespace[REG_MAX_NAME + 1];
    char pod_name[REG_MAX_NAME + 1];
    char pod_uid[REG_MAX_ID + 1];
};

/* Parses the stdin configuration text[0..len). Fills *ret (call conf_done() afterwards) on success;
 * on failure records the CNI error (6 decode, 7 invalid config, 1 incompatible version) in err.
 * `require_version`: the command needs a supported cniVersion (all but VERSION). */
int conf_parse(const char *text, size_t len, bool require_version, struct cni_conf *ret,
               struct cni_error *err);
/* Frees what conf_parse() allocated; c stays valid as an empty config. NULL-safe. */
void conf_done(struct cni_conf *c);

/* For `idbroker --guard`: when text[0..len) is a network configuration list (an object with
 * "plugins"), *ret (returns new) is the configuration a runtime gives the list's first plugin of
 * type idbroker: that object with the list's "name" and "cniVersion" (absent ones stay absent), and
 * 1 is returned. Returns 0 with *ret NULL for anything else (a plugin configuration: parse it with
 * conf_parse). Records code 6 (not JSON) or 7 ("plugins" not an array, no idbroker plugin) in err.
 */
int conf_from_list(const char *text, size_t len, char **ret, struct cni_error *err);

/* Parses a prevResult object (borrowed) of any supported version: interfaces (name, mac, sandbox)
 * and ips (address "IP/len", interface index). Records code 7 in err when it is malformed. */
int conf_parse_prev_result(struct json_object *prev, struct conf_prev_result *ret,
                           struct cni_error *err);

/* Parses CNI_ARGS ("K=V;K=V"), keeping K8S_POD_NAMESPACE/NAME/UID; other keys are ignored. NULL or
 * "" gives an empty pod. Records code 4 in err on malformed or over-long values. */
int conf_parse_cni_args(const char *args, struct conf_pod *ret, struct cni_error *err);

/* Whether (container_id, if_name) is in c->valid. */
bool conf_attachment_valid(const struct cni_conf *c, const char *container_id, const char *if_name);

#endif
