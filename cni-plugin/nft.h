/* SPDX-License-Identifier: Apache-2.0 */
/*
 * idbroker's nftables rules (DESIGN §4, §6; THREATS T1, T3, T9, T13, T22). Two tables of our own,
 * both named "idbroker", whose rules never change with the pod count; pods are elements of sets.
 *
 * table inet idbroker: sets pods4 and pods6 hold (ifname . address) pairs: the interface where the
 * pod's traffic enters the node's IP stack (the bridge, or the ptp veth) and the pod's address.
 *   chain nat_pre (nat prerouting, priority -110): metadataAddress:metadataPort from a registered
 *     (iifname . saddr) is DNATed to brokerAddress:brokerPort.
 *   chain guard (filter prerouting, priority -90, after NAT): everything else to the metadata
 *     address is dropped, also its IPv6 spellings ::ffff:M and 64:ff9b::M; the broker address only
 *     accepts registered (iifname . saddr).
 * table bridge idbroker: anti-spoofing per bridge port, where the inet family sees only the bridge.
 *   Sets ports, mac_ports, port_mac, port_ip4, port_ip6.
 *   chain guard (filter prerouting): a registered port may only use its pod's MAC (so it cannot
 *     steal another pod's FDB entry, ARP binding or replies) and its pod's address as ARP sender;
 *     traffic to the metadata or broker address must carry the port's own pod address.
 *
 * The base (tables, sets, chains and rules) carries a revision: a fingerprint of its text, which
 * depends on the configured addresses and ports, kept as the one element of the set "base_rev" in
 * both tables. ADD and DEL read it (a filtered listing that never fetches the pods' elements) and
 * rewrite the chains only when it differs or is missing: rewriting base chains costs the kernel an
 * RCU grace period (~10 ms), adding an element does not. GC and STATUS always use the full base,
 * which flushes and rewrites the chains and so repairs any tampering. Either way a transaction is
 * self-contained (add table/set/chain are idempotent) and its cost does not depend on the number of
 * pods. Elements are removed with "add, then delete", which never fails on absent elements. All of
 * it goes through libnftables in one batch: no nft or iptables process.
 */
#ifndef IDB_CNI_NFT_H
#define IDB_CNI_NFT_H

#include <stdbool.h>
#include <stdint.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/registration.h>

#include "attachment.h"

#define NFT_TABLE "idbroker"
#define NFT_MAX_SCRIPT (256 * 1024 * 1024) /* GC of 65536 attachments stays far below */
#define NFT_NAT_PRIORITY (-110)            /* before dstnat (-100) chains of others */
#define NFT_GUARD_PRIORITY (-90)           /* after every dstnat chain */
#define NFT_MAX_ELEMS_PER_ATTACHMENT (3 + 2 * REG_MAX_IPS)
#define NFT_MAX_BASE (64 * 1024) /* the base script is ~3 KiB */
#define NFT_REVISION_SET "base_rev"

struct nft_params {
    struct reg_ip metadata;
    uint16_t metadata_port;
    struct reg_ip broker;
    uint16_t broker_port;
};

/* One set element: "add element <family> idbroker <set> { <key> }". */
struct nft_elem {
    const char *family; /* "inet" | "bridge" */
    const char *set;
    char key[96];
};

/* Interface names are used as set keys (ifname, not iface_index: parsing an iface_index makes
 * libnftables dump every link of the node, a cost that grows with the pods). The ifindex is still
 * recorded in the registration. Names outside [A-Za-z0-9._+-] are refused. */
bool nft_ifname_ok(const char *name);
/* The elements that represent attachment a. Returns their number (<= max); 0 if a's interface names
 * are not nft_ifname_ok(). */
size_t nft_elements(const struct attachment *a, struct nft_elem *ret, size_t max);

/* Append to b (STYLE R11: b's cap bounds the script). Return 0, -E2BIG or -ENOMEM. */
/* The full base: tables, sets, chains flushed and rewritten, and the revision marker. */
int nft_script_base(struct buf *b, const struct nft_params *p);
/* Only "add table" and "add set" (idempotent, cheap): for transactions when the base is current. */
int nft_script_sets(struct buf *b);
int nft_script_add(struct buf *b, const struct attachment *a);
/* Removes a's elements, except those that `keep` (borrowed, may be NULL) also has. */
int nft_script_remove(struct buf *b, const struct attachment *a, const struct attachment *keep);
/* Empties every set (GC rebuilds them from the records). */
int nft_script_flush_sets(struct buf *b);

/* The revision of the base for p. Returns 0 or -ENOMEM/-E2BIG. */
int nft_base_revision(const struct nft_params *p, uint32_t *ret);
/* Whether both tables carry p's base revision (false on any error: the caller then writes the
 * base). */
bool nft_base_current(const struct nft_params *p);

/* Runs script as ONE transaction in the current network namespace (all or nothing). With dry_run
 * the kernel checks it without committing. On failure returns -EIO and *ret_error (optional,
 * returns new) holds nft's message. */
int nft_apply(const char *script, bool dry_run, char **ret_error);

/* Verifies that idbroker's chains exist with their redirect and that every element of a is present.
 * Returns 0, -ENOENT (with *ret_error saying what is missing) or -EIO. */
int nft_check(const struct attachment *a, char **ret_error);

#endif
