/* SPDX-License-Identifier: Apache-2.0 */
#include "nft.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <net/if.h>
#include <nftables/libnftables.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker-internal/macro.h>

static const char *const inet_sets[] = {"pods4", "pods6"};
static const char *const bridge_sets[] = {"ports", "mac_ports", "port_mac", "port_ip4", "port_ip6"};

static void ip_str(const struct reg_ip *ip, char buf[INET6_ADDRSTRLEN])
{
    reg_ip_to_string(ip, buf, INET6_ADDRSTRLEN);
}

/* "addr:port" for ip, "[addr]:port" for ip6, as dnat wants it. */
static void endpoint_str(const struct reg_ip *ip, uint16_t port, char *buf, size_t size)
{
    char a[INET6_ADDRSTRLEN];
    ip_str(ip, a);
    if (ip->family == AF_INET6)
        snprintf(buf, size, "[%s]:%u", a, port);
    else
        snprintf(buf, size, "%s:%u", a, port);
}

/* The tables, sets, chains and rules, without the revision marker. */
static int base_rules(struct buf *b, const struct nft_params *p)
{
    char m[INET6_ADDRSTRLEN], br[INET6_ADDRSTRLEN], to[INET6_ADDRSTRLEN + 16];
    ip_str(&p->metadata, m);
    ip_str(&p->broker, br);
    endpoint_str(&p->broker, p->broker_port, to, sizeof(to));
    bool v4 = p->metadata.family == AF_INET;
    const char *fam = v4 ? "ip" : "ip6", *sfx = v4 ? "4" : "6";
    int r = 0;

#define P(...)                                                                                     \
    do {                                                                                           \
        r = buf_printf(b, __VA_ARGS__);                                                            \
        if (r < 0)                                                                                 \
            return r;                                                                              \
    } while (0)

    P("add table inet " NFT_TABLE "\n"
      "add set inet " NFT_TABLE " pods4 { type ifname . ipv4_addr; }\n"
      "add set inet " NFT_TABLE " pods6 { type ifname . ipv6_addr; }\n"
      "add chain inet " NFT_TABLE
      " nat_pre { type nat hook prerouting priority %d; policy accept; }\n"
      "add chain inet " NFT_TABLE
      " guard { type filter hook prerouting priority %d; policy accept; }\n"
      "flush chain inet " NFT_TABLE " nat_pre\n"
      "flush chain inet " NFT_TABLE " guard\n",
      NFT_NAT_PRIORITY, NFT_GUARD_PRIORITY);
    P("add rule inet " NFT_TABLE
      " nat_pre %s daddr %s tcp dport %u iifname . %s saddr @pods%s dnat %s to "
      "%s comment \"registered pod -> broker\"\n",
      fam, m, p->metadata_port, fam, sfx, fam, to);
    P("add rule inet " NFT_TABLE " guard iifname \"lo\" accept comment \"the node itself\"\n");
    P("add rule inet " NFT_TABLE " guard %s daddr %s drop comment \"metadata, not redirected\"\n",
      fam, m);
    if (v4) {
        const uint8_t *a = p->metadata.addr.v4;
        P("add rule inet " NFT_TABLE
          " guard ip6 daddr { ::ffff:%s, 64:ff9b::%02x%02x:%02x%02x } drop "
          "comment \"metadata, IPv6 spellings\"\n",
          m, a[0], a[1], a[2], a[3]);
    }
    P("add rule inet " NFT_TABLE " guard %s daddr %s iifname . %s saddr != @pods%s drop "
      "comment \"broker: registered pods only\"\n",
      fam, br, fam, sfx);

    P("add table bridge " NFT_TABLE "\n"
      "add set bridge " NFT_TABLE " ports { type ifname; }\n"
      "add set bridge " NFT_TABLE " mac_ports { type ifname; }\n"
      "add set bridge " NFT_TABLE " port_mac { type ifname . ether_addr; }\n"
      "add set bridge " NFT_TABLE " port_ip4 { type ifname . ipv4_addr; }\n"
      "add set bridge " NFT_TABLE " port_ip6 { type ifname . ipv6_addr; }\n"
      "add chain bridge " NFT_TABLE
      " guard { type filter hook prerouting priority -200; policy accept; }\n"
      "flush chain bridge " NFT_TABLE " guard\n");
    P("add rule bridge " NFT_TABLE
      " guard iifname @mac_ports iifname . ether saddr != @port_mac drop "
      "comment \"pod port: own MAC only\"\n");
    P("add rule bridge " NFT_TABLE
      " guard iifname @mac_ports iifname . arp saddr ether != @port_mac drop "
      "comment \"pod port: own ARP sender MAC only\"\n");
    P("add rule bridge " NFT_TABLE " guard iifname @ports arp saddr ip != 0.0.0.0 "
      "iifname . arp saddr ip != @port_ip4 drop comment \"pod port: own ARP sender IP only\"\n");
    P("add rule bridge " NFT_TABLE
      " guard %s daddr { %s, %s } iifname . %s saddr != @port_ip%s drop "
      "comment \"metadata and broker: the port's own pod address only\"\n",
      fam, m, br, fam, sfx);
#undef P
    return 0;
}

static const char sets_text[] =
    "add table inet " NFT_TABLE "\n"
    "add set inet " NFT_TABLE " pods4 { type ifname . ipv4_addr; }\n"
    "add set inet " NFT_TABLE " pods6 { type ifname . ipv6_addr; }\n"
    "add table bridge " NFT_TABLE "\n"
    "add set bridge " NFT_TABLE " ports { type ifname; }\n"
    "add set bridge " NFT_TABLE " mac_ports { type ifname; }\n"
    "add set bridge " NFT_TABLE " port_mac { type ifname . ether_addr; }\n"
    "add set bridge " NFT_TABLE " port_ip4 { type ifname . ipv4_addr; }\n"
    "add set bridge " NFT_TABLE " port_ip6 { type ifname . ipv6_addr; }\n";

/* FNV-1a: a stable fingerprint of the base text, not a security measure. */
static uint32_t fnv1a(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

int nft_base_revision(const struct nft_params *p, uint32_t *ret)
{
    struct buf body;
    buf_init(&body, NFT_MAX_BASE);
    int r = base_rules(&body, p);
    if (r >= 0)
        *ret = fnv1a(body.data, body.len);
    buf_done(&body);
    return r;
}

int nft_script_base(struct buf *b, const struct nft_params *p)
{
    struct buf body;
    buf_init(&body, NFT_MAX_BASE);
    int r = base_rules(&body, p);
    if (r < 0) {
        buf_done(&body);
        return r;
    }
    uint32_t rev = fnv1a(body.data, body.len);
    r = buf_append(b, body.data, body.len);
    buf_done(&body);
    if (r < 0)
        return r;
    static const char *const families[] = {"inet", "bridge"};
    for (size_t i = 0; i < ELEMENTSOF(families); i++) {
        r = buf_printf(b,
                       "add set %s " NFT_TABLE " " NFT_REVISION_SET " { type mark; }\n"
                       "flush set %s " NFT_TABLE " " NFT_REVISION_SET "\n"
                       "add element %s " NFT_TABLE " " NFT_REVISION_SET " { 0x%08x }\n",
                       families[i], families[i], families[i], rev);
        if (r < 0)
            return r;
    }
    return 0;
}

int nft_script_sets(struct buf *b)
{
    return buf_puts(b, sets_text);
}

static void mac_str(const uint8_t *m, char *buf, size_t size)
{
    snprintf(buf, size, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

bool nft_ifname_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= IFNAMSIZ)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("-_.+", name[i]))
            return false;
    return true;
}

size_t nft_elements(const struct attachment *a, struct nft_elem *ret, size_t max)
{
    size_t n = 0;
    /* Names go into the script between quotes: never one that could end them. */
    if (!nft_ifname_ok(a->l3_ifname) || (a->port_ifindex > 0 && !nft_ifname_ok(a->port_ifname)))
        return 0;
#define ELEM(fam, setname, ...)                                                                    \
    do {                                                                                           \
        if (n < max) {                                                                             \
            ret[n].family = (fam);                                                                 \
            ret[n].set = (setname);                                                                \
            snprintf(ret[n].key, sizeof(ret[n].key), __VA_ARGS__);                                 \
            n++;                                                                                   \
        }                                                                                          \
    } while (0)

    for (size_t i = 0; i < a->n_ips; i++) {
        char ip[INET6_ADDRSTRLEN];
        ip_str(&a->ips[i], ip);
        ELEM("inet", a->ips[i].family == AF_INET ? "pods4" : "pods6", "\"%s\" . %s", a->l3_ifname,
             ip);
    }
    if (a->port_ifindex > 0) {
        ELEM("bridge", "ports", "\"%s\"", a->port_ifname);
        if (a->has_mac) {
            char mac[18];
            mac_str(a->mac, mac, sizeof(mac));
            ELEM("bridge", "mac_ports", "\"%s\"", a->port_ifname);
            ELEM("bridge", "port_mac", "\"%s\" . %s", a->port_ifname, mac);
        }
        for (size_t i = 0; i < a->n_ips; i++) {
            char ip[INET6_ADDRSTRLEN];
            ip_str(&a->ips[i], ip);
            ELEM("bridge", a->ips[i].family == AF_INET ? "port_ip4" : "port_ip6", "\"%s\" . %s",
                 a->port_ifname, ip);
        }
    }
#undef ELEM
    return n;
}

static bool elem_in(const struct nft_elem *e, const struct nft_elem *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (streq(e->family, set[i].family) && streq(e->set, set[i].set) &&
            streq(e->key, set[i].key))
            return true;
    return false;
}

int nft_script_add(struct buf *b, const struct attachment *a)
{
    struct nft_elem e[NFT_MAX_ELEMS_PER_ATTACHMENT];
    size_t n = nft_elements(a, e, ELEMENTSOF(e));
    for (size_t i = 0; i < n; i++) {
        int r = buf_printf(b, "add element %s " NFT_TABLE " %s { %s }\n", e[i].family, e[i].set,
                           e[i].key);
        if (r < 0)
            return r;
    }
    return 0;
}

int nft_script_remove(struct buf *b, const struct attachment *a, const struct attachment *keep)
{
    struct nft_elem e[NFT_MAX_ELEMS_PER_ATTACHMENT], k[NFT_MAX_ELEMS_PER_ATTACHMENT];
    size_t n = nft_elements(a, e, ELEMENTSOF(e));
    size_t nk = keep ? nft_elements(keep, k, ELEMENTSOF(k)) : 0;
    for (size_t i = 0; i < n; i++) {
        if (elem_in(&e[i], k, nk))
            continue;
        /* nft 1.0.6 has no "destroy": adding first makes the delete succeed whether or not the
         * element was there, inside the same all-or-nothing batch. */
        int r = buf_printf(b,
                           "add element %s " NFT_TABLE " %s { %s }\n"
                           "delete element %s " NFT_TABLE " %s { %s }\n",
                           e[i].family, e[i].set, e[i].key, e[i].family, e[i].set, e[i].key);
        if (r < 0)
            return r;
    }
    return 0;
}

int nft_script_flush_sets(struct buf *b)
{
    for (size_t i = 0; i < ELEMENTSOF(inet_sets); i++) {
        int r = buf_printf(b, "flush set inet " NFT_TABLE " %s\n", inet_sets[i]);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < ELEMENTSOF(bridge_sets); i++) {
        int r = buf_printf(b, "flush set bridge " NFT_TABLE " %s\n", bridge_sets[i]);
        if (r < 0)
            return r;
    }
    return 0;
}

static struct nft_ctx *ctx_new(bool dry_run)
{
    struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!ctx)
        return NULL;
    if (nft_ctx_buffer_output(ctx) < 0 || nft_ctx_buffer_error(ctx) < 0) {
        nft_ctx_free(ctx);
        return NULL;
    }
    nft_ctx_set_dry_run(ctx, dry_run);
    return ctx;
}

/* nft's message without the trailing new line and the echo of the whole batch. */
static char *error_text(struct nft_ctx *ctx)
{
    const char *e = nft_ctx_get_error_buffer(ctx);
    char *s = strndup(e && *e ? e : "nftables transaction failed", 2048);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
    return s;
}

int nft_apply(const char *script, bool dry_run, char **ret_error)
{
    struct nft_ctx *ctx = ctx_new(dry_run);
    if (!ctx)
        return -ENOMEM;
    int r = 0;
    if (nft_run_cmd_from_buffer(ctx, script) != 0) {
        if (ret_error)
            *ret_error = error_text(ctx);
        r = -EIO;
    }
    nft_ctx_free(ctx);
    return r;
}

static int check_with(struct nft_ctx *ctx, const struct attachment *a, char **ret_error)
{
    static const struct {
        const char *cmd, *needle;
    } chains[] = {
        {"list chain inet " NFT_TABLE " nat_pre", "dnat"},
        {"list chain inet " NFT_TABLE " guard", "drop"},
        {"list chain bridge " NFT_TABLE " guard", "drop"},
    };
    for (size_t i = 0; i < ELEMENTSOF(chains); i++) {
        if (nft_run_cmd_from_buffer(ctx, chains[i].cmd) != 0 ||
            !strstr(nft_ctx_get_output_buffer(ctx), chains[i].needle)) {
            if (ret_error)
                *ret_error = strdup(chains[i].cmd + strlen("list "));
            return -ENOENT;
        }
    }
    struct nft_elem e[NFT_MAX_ELEMS_PER_ATTACHMENT];
    size_t n = nft_elements(a, e, ELEMENTSOF(e));
    for (size_t i = 0; i < n; i++) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "get element %s " NFT_TABLE " %s { %s }", e[i].family, e[i].set,
                 e[i].key);
        if (nft_run_cmd_from_buffer(ctx, cmd) != 0) {
            if (ret_error && asprintf(ret_error, "element { %s } missing from %s %s", e[i].key,
                                      e[i].family, e[i].set) < 0)
                *ret_error = NULL;
            return -ENOENT;
        }
    }
    return 0;
}

bool nft_base_current(const struct nft_params *p)
{
    uint32_t rev;
    if (nft_base_revision(p, &rev) < 0)
        return false;
    char want[16];
    snprintf(want, sizeof(want), "0x%08x", rev);
    struct nft_ctx *ctx = ctx_new(false);
    if (!ctx)
        return false;
    bool current = true;
    static const char *const cmds[] = {
        "list set inet " NFT_TABLE " " NFT_REVISION_SET,
        "list set bridge " NFT_TABLE " " NFT_REVISION_SET,
    };
    for (size_t i = 0; current && i < ELEMENTSOF(cmds); i++)
        current = nft_run_cmd_from_buffer(ctx, cmds[i]) == 0 &&
                  strstr(nft_ctx_get_output_buffer(ctx), want) != NULL;
    nft_ctx_free(ctx);
    return current;
}

int nft_check(const struct attachment *a, char **ret_error)
{
    struct nft_ctx *ctx = ctx_new(false);
    if (!ctx)
        return -ENOMEM;
    int r = check_with(ctx, a, ret_error);
    nft_ctx_free(ctx);
    return r;
}
