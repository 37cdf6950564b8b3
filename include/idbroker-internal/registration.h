/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pod registrations: the one on-disk format, shared by the CNI plugin (writer at ADD, remover at
 * DEL) and the broker (reader at start and on "sync"; writer for `idbrokerctl register`).
 *
 * Layout: <stateDir>/pods/<containerId>@<ifName>.json, one JSON object per attachment:
 *   {"version":1, "containerId":"…", "ifName":"eth0", "podNamespace":"…", "podName":"…",
 *    "podUid":"…", "netns":"/var/run/netns/…", "hostInterface":"veth…", "hostIfindex":12,
 *    "ips":["10.22.0.5","fd00::5"], "created":1700000000, "origin":"cni"|"ctl"}
 * Writes are atomic: a temporary file in the same directory, fsync, rename, fsync of the directory.
 * A reader therefore sees the old file, the new file or none, never a torn one. Writers that may
 * race (parallel CNI ADD/DEL, the broker) hold registration_lock() around read-modify-write
 * sequences.
 */
#ifndef IDBROKER_INTERNAL_REGISTRATION_H
#define IDBROKER_INTERNAL_REGISTRATION_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REG_VERSION 1
#define REG_MAX_IPS 8
#define REG_MAX_ID 128    /* container ID, pod UID */
#define REG_MAX_NAME 253  /* DNS subdomain: namespace, pod name */
#define REG_MAX_IFNAME 15 /* IFNAMSIZ - 1 */
#define REG_MAX_PATH 4096
#define REG_MAX_FILE (64 * 1024)

struct reg_ip {
    int family; /* AF_INET or AF_INET6 */
    union {
        uint8_t v4[4];
        uint8_t v6[16];
    } addr;
};

struct registration {
    char container_id[REG_MAX_ID + 1];
    char if_name[REG_MAX_IFNAME + 1];
    char pod_namespace[REG_MAX_NAME + 1]; /* "" when the runtime did not say */
    char pod_name[REG_MAX_NAME + 1];
    char pod_uid[REG_MAX_ID + 1];         /* "" when unknown */
    char netns[REG_MAX_PATH + 1];         /* "" when unknown */
    char host_ifname[REG_MAX_IFNAME + 1]; /* "" when unknown */
    int host_ifindex;                     /* 0 when unknown */
    struct reg_ip ips[REG_MAX_IPS];
    size_t n_ips;
    uint64_t created; /* epoch seconds */
    char origin[8];   /* "cni" or "ctl" */
};

/* Validators for the identifiers that become file names or keys. */
bool reg_valid_container_id(const char *s); /* [A-Za-z0-9][A-Za-z0-9._-]{0,127} */
bool reg_valid_ifname(const char *s);       /* 1..15 chars, no '/', no white space, not . or .. */

/* Parses/prints an address. reg_ip_to_string writes into buf (>= 46 bytes). */
int reg_ip_parse(const char *s, struct reg_ip *ret);
const char *reg_ip_to_string(const struct reg_ip *ip, char *buf, size_t size);
bool reg_ip_equal(const struct reg_ip *a, const struct reg_ip *b);

/* JSON <-> struct. registration_from_json() validates every field (types, lengths, identifiers,
 * IPs) and rejects unknown versions; it names the bad field in *ret_error (static string,
 * optional). */
int registration_from_json(struct json_object *o, struct registration *ret, const char **ret_error);
int registration_parse(const char *text, size_t len, struct registration *ret,
                       const char **ret_error);
/* Returns new. */
struct json_object *registration_to_json(const struct registration *r);

/* <stateDir>/pods/<containerId>@<ifName>.json into buf. -ENAMETOOLONG, -EINVAL on bad ids. */
int registration_path(const char *state_dir, const char *container_id, const char *if_name,
                      char *buf, size_t size);

/* Creates <stateDir> and <stateDir>/pods (0700) if missing. */
int registration_dir_ensure(const char *state_dir);
/* Takes the exclusive lock <stateDir>/lock (flock), waiting at most timeout_ms. Returns the fd to
 * close to release it, -ETIMEDOUT or -errno. */
int registration_lock(const char *state_dir, int timeout_ms);
/* Atomic durable write (see above) through <stateDir>/pods/.tmp-<containerId>@<ifName>; the caller
 * holds registration_lock(). -ENOSPC/-EDQUOT on a full disk, nothing written. */
int registration_save(const char *state_dir, const struct registration *r);
/* Removes the file, and the key's temporary file a killed writer left; 0 if it did not exist
 * (idempotent). */
int registration_remove(const char *state_dir, const char *container_id, const char *if_name);
/* Loads one. -ENOENT if absent. */
int registration_load(const char *state_dir, const char *container_id, const char *if_name,
                      struct registration *ret);
/* Calls cb for every valid registration file; invalid ones are reported through bad_cb (may be
 * NULL) and skipped. Leftover temporary files are removed. Returns the number loaded or -errno. */
int registration_load_all(
    const char *state_dir, void (*cb)(const struct registration *r, void *userdata),
    void (*bad_cb)(const char *path, int error, const char *why, void *userdata), void *userdata);

#endif
