/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plugin's private record of one attachment: exactly which nftables elements ADD installed, so
 * DEL and GC can remove them without a netns, a prevResult or the interfaces (which may be gone by
 * then). The broker never reads these; it reads the shared registration (registration.h).
 *
 * Layout under <stateDir>/cni/ (0700):
 *   <containerId>@<ifName>.json   {"version":1,"containerId","ifName","l3Ifindex","l3Ifname",
 *                                  "portIfindex","portIfname","mac","ips":[...]}
 *   by-ip/<IP>                    symlink -> "<containerId>@<ifName>": which attachment holds an
 * address Files are written like registrations (temporary file, fsync, rename, fsync of the
 * directory). Callers hold registration_lock() around every change.
 */
#ifndef IDB_CNI_ATTACHMENT_H
#define IDB_CNI_ATTACHMENT_H

#include <json-c/json.h>
#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <idbroker-internal/registration.h>

#define ATTACHMENT_VERSION 1
#define ATTACHMENT_KEY_MAX (REG_MAX_ID + 1 + REG_MAX_IFNAME + 1)

struct attachment {
    char container_id[REG_MAX_ID + 1];
    char if_name[REG_MAX_IFNAME + 1];
    /* Where the pod's routed traffic enters the node's IP stack: the bridge, or the ptp veth. */
    int l3_ifindex;
    char l3_ifname[IFNAMSIZ];
    /* The pod's bridge port (its host-side veth) behind a bridge; 0 / "" otherwise. */
    int port_ifindex;
    char port_ifname[IFNAMSIZ];
    bool has_mac;
    uint8_t mac[6]; /* the pod interface's MAC, from prevResult */
    struct reg_ip ips[REG_MAX_IPS];
    size_t n_ips;
};

/* "<containerId>@<ifName>" into buf (>= ATTACHMENT_KEY_MAX). -EINVAL on invalid ids. */
int attachment_key(const char *container_id, const char *if_name, char *buf, size_t size);

/* JSON <-> struct; from_json validates every field and names the bad one in *ret_error (static). */
struct json_object *attachment_to_json(const struct attachment *a); /* returns new */
int attachment_from_json(struct json_object *o, struct attachment *ret, const char **ret_error);
bool attachment_equal(const struct attachment *a, const struct attachment *b);

/* Creates <stateDir>/cni and by-ip (0700) if missing. */
int attachment_dir_ensure(const char *state_dir);
/* Writes the record and its by-ip links (atomically each). */
int attachment_save(const char *state_dir, const struct attachment *a);
/* -ENOENT when absent; -EBADMSG when unreadable. */
int attachment_load(const char *state_dir, const char *container_id, const char *if_name,
                    struct attachment *ret);
/* Removes the record and the by-ip links that still point to it, and the temporary files a killed
 * attachment_save() of the same key and addresses left. 0 if absent (idempotent). */
int attachment_remove(const char *state_dir, const struct attachment *a);
/* Removes the record file and its temporary file only (for a record that cannot be parsed or is
 * missing). */
int attachment_remove_key(const char *state_dir, const char *container_id, const char *if_name);
/* Which attachment holds `ip`: its key into buf, or -ENOENT. */
int attachment_owner_of(const char *state_dir, const struct reg_ip *ip, char *buf, size_t size);
/* Splits a key back into its ids. */
int attachment_key_split(const char *key, char container_id[REG_MAX_ID + 1],
                         char if_name[REG_MAX_IFNAME + 1]);
/* Calls cb for every record (valid or not: `a` is NULL for an unreadable one, with its key).
 * Returns the number of records or -errno. */
int attachment_foreach(const char *state_dir,
                       void (*cb)(const char *key, const struct attachment *a, void *userdata),
                       void *userdata);

#endif
