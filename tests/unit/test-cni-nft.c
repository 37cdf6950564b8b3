/* SPDX-License-Identifier: Apache-2.0 */
/* nftables script generation of the CNI plugin (cni-plugin/nft.c). Nothing is sent to the kernel
 * here; tests/e2e/test_cni_*.py run the same scripts in network namespaces. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/registration.h>

#include "attachment.h"
#include "nft.h"

#include <cmocka.h>

static struct nft_params v4_params(void)
{
    struct nft_params p = {.metadata_port = 80, .broker_port = 2579};
    assert_int_equal(reg_ip_parse("169.254.169.254", &p.metadata), 0);
    assert_int_equal(reg_ip_parse("169.254.169.250", &p.broker), 0);
    return p;
}

static void bridged(struct attachment *a)
{
    memset(a, 0, sizeof(*a));
    snprintf(a->container_id, sizeof(a->container_id), "c1");
    snprintf(a->if_name, sizeof(a->if_name), "eth0");
    a->l3_ifindex = 3;
    snprintf(a->l3_ifname, sizeof(a->l3_ifname), "cni0");
    a->port_ifindex = 7;
    snprintf(a->port_ifname, sizeof(a->port_ifname), "veth1");
    a->has_mac = true;
    const uint8_t mac[6] = {0x0a, 0x58, 0x0a, 0x16, 0x00, 0x05};
    memcpy(a->mac, mac, 6);
    assert_int_equal(reg_ip_parse("10.22.0.5", &a->ips[0]), 0);
    assert_int_equal(reg_ip_parse("fd00::5", &a->ips[1]), 0);
    a->n_ips = 2;
}

static void has_line(const char *script, const char *line)
{
    const char *p = script;
    size_t n = strlen(line);
    while ((p = strstr(p, line))) {
        if ((p == script || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return;
        p++;
    }
    print_error("script lacks the line '%s':\n%s\n", line, script);
    fail();
}

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void test_base_v4(void **state)
{
    (void)state;
    struct nft_params p = v4_params();
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(nft_script_base(&b, &p), 0);
    has_line(b.data, "add table inet idbroker");
    has_line(b.data, "add set inet idbroker pods4 { type ifname . ipv4_addr; }");
    has_line(b.data, "add chain inet idbroker nat_pre { type nat hook prerouting priority -110; "
                     "policy accept; }");
    has_line(b.data, "flush chain inet idbroker nat_pre");
    has_line(b.data,
             "add rule inet idbroker nat_pre ip daddr 169.254.169.254 tcp dport 80 iifname . ip "
             "saddr @pods4 dnat ip to 169.254.169.250:2579 comment \"registered pod -> broker\"");
    has_line(b.data,
             "add rule inet idbroker guard ip daddr 169.254.169.254 drop comment \"metadata, "
             "not redirected\"");
    has_line(b.data, "add rule inet idbroker guard ip6 daddr { ::ffff:169.254.169.254, "
                     "64:ff9b::a9fe:a9fe } drop comment \"metadata, IPv6 spellings\"");
    has_line(b.data,
             "add rule inet idbroker guard ip daddr 169.254.169.250 iifname . ip saddr != @pods4 "
             "drop comment \"broker: registered pods only\"");
    has_line(b.data, "flush chain bridge idbroker guard");
    has_line(b.data,
             "add rule bridge idbroker guard ip daddr { 169.254.169.254, 169.254.169.250 } iifname "
             ". ip saddr != @port_ip4 drop comment \"metadata and broker: the port's own pod "
             "address only\"");
    /* Never loopback, never a sysctl. */
    assert_null(strstr(b.data, "127.0.0.1"));
    assert_null(strstr(b.data, "route_localnet"));
    /* Rules are rewritten, never appended to: each chain is flushed before its rules. */
    assert_int_equal(count(b.data, "flush chain"), 3);
    assert_int_equal(count(b.data, "flush set"), 2); /* the revision markers */
    buf_done(&b);
}

static void test_base_v6(void **state)
{
    (void)state;
    struct nft_params p = {.metadata_port = 80, .broker_port = 8080};
    assert_int_equal(reg_ip_parse("fd00:ec2::254", &p.metadata), 0);
    assert_int_equal(reg_ip_parse("fd00:ec2::250", &p.broker), 0);
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(nft_script_base(&b, &p), 0);
    has_line(b.data,
             "add rule inet idbroker nat_pre ip6 daddr fd00:ec2::254 tcp dport 80 iifname . ip6 "
             "saddr @pods6 dnat ip6 to [fd00:ec2::250]:8080 comment \"registered pod -> "
             "broker\"");
    has_line(b.data,
             "add rule inet idbroker guard ip6 daddr fd00:ec2::250 iifname . ip6 saddr != @pods6 "
             "drop comment \"broker: registered pods only\"");
    assert_null(strstr(b.data, "::ffff:"));
    buf_done(&b);
}

static void test_revision(void **state)
{
    (void)state;
    struct nft_params p = v4_params(), q = v4_params();
    uint32_t a, b, c;
    assert_int_equal(nft_base_revision(&p, &a), 0);
    assert_int_equal(nft_base_revision(&q, &b), 0);
    assert_int_equal(a, b);
    q.broker_port = 2580;
    assert_int_equal(nft_base_revision(&q, &c), 0);
    assert_int_not_equal(a, c);

    /* The full base carries its revision in both tables; the cheap prologue only declares sets. */
    struct buf s;
    buf_init(&s, 1 << 20);
    assert_int_equal(nft_script_base(&s, &p), 0);
    char line[128];
    snprintf(line, sizeof(line), "add element inet idbroker base_rev { 0x%08x }", a);
    has_line(s.data, line);
    snprintf(line, sizeof(line), "add element bridge idbroker base_rev { 0x%08x }", a);
    has_line(s.data, line);
    has_line(s.data, "flush set inet idbroker base_rev");
    buf_reset(&s);
    assert_int_equal(nft_script_sets(&s), 0);
    assert_null(strstr(s.data, "chain"));
    assert_null(strstr(s.data, "rule"));
    has_line(s.data, "add set bridge idbroker port_mac { type ifname . ether_addr; }");
    buf_done(&s);
}

static void test_base_capped(void **state)
{
    (void)state;
    struct nft_params p = v4_params();
    struct buf b;
    buf_init(&b, 64);
    assert_int_equal(nft_script_base(&b, &p), -E2BIG);
    buf_done(&b);
}

static void test_elements(void **state)
{
    (void)state;
    struct attachment a;
    bridged(&a);
    struct nft_elem e[NFT_MAX_ELEMS_PER_ATTACHMENT];
    size_t n = nft_elements(&a, e, NFT_MAX_ELEMS_PER_ATTACHMENT);
    assert_int_equal(n, 7);
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(nft_script_add(&b, &a), 0);
    has_line(b.data, "add element inet idbroker pods4 { \"cni0\" . 10.22.0.5 }");
    has_line(b.data, "add element inet idbroker pods6 { \"cni0\" . fd00::5 }");
    has_line(b.data, "add element bridge idbroker ports { \"veth1\" }");
    has_line(b.data, "add element bridge idbroker mac_ports { \"veth1\" }");
    has_line(b.data, "add element bridge idbroker port_mac { \"veth1\" . 0a:58:0a:16:00:05 }");
    has_line(b.data, "add element bridge idbroker port_ip4 { \"veth1\" . 10.22.0.5 }");
    has_line(b.data, "add element bridge idbroker port_ip6 { \"veth1\" . fd00::5 }");
    assert_int_equal(count(b.data, "\n"), 7);
    buf_done(&b);

    /* ptp: the veth is the L3 interface; no bridge elements. Without a MAC, no MAC binding. */
    a.port_ifindex = 0;
    a.has_mac = false;
    a.l3_ifindex = 9;
    snprintf(a.l3_ifname, sizeof(a.l3_ifname), "veth9");
    n = nft_elements(&a, e, NFT_MAX_ELEMS_PER_ATTACHMENT);
    assert_int_equal(n, 2);
    assert_string_equal(e[0].key, "\"veth9\" . 10.22.0.5");
    assert_string_equal(e[0].set, "pods4");

    /* The output is bounded by max. */
    bridged(&a);
    assert_int_equal(nft_elements(&a, e, 3), 3);

    /* A name that could break out of its quotes yields nothing. */
    snprintf(a.port_ifname, sizeof(a.port_ifname), "v\"; flush");
    assert_int_equal(nft_elements(&a, e, NFT_MAX_ELEMS_PER_ATTACHMENT), 0);
    assert_false(nft_ifname_ok("a b"));
    assert_false(nft_ifname_ok(""));
    assert_false(nft_ifname_ok("0123456789abcdef"));
    assert_true(nft_ifname_ok("veth1a2b.3_4-5+"));
}

static void test_remove(void **state)
{
    (void)state;
    struct attachment a, keep;
    bridged(&a);
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(nft_script_remove(&b, &a, NULL), 0);
    /* add-then-delete for each element: never fails on an absent element. */
    has_line(b.data, "add element inet idbroker pods4 { \"cni0\" . 10.22.0.5 }");
    has_line(b.data, "delete element inet idbroker pods4 { \"cni0\" . 10.22.0.5 }");
    assert_int_equal(count(b.data, "delete element"), 7);
    assert_int_equal(count(b.data, "add element"), 7);
    buf_reset(&b);

    /* Re-ADD of the same attachment with a new address keeps the unchanged elements. */
    keep = a;
    assert_int_equal(reg_ip_parse("10.22.0.6", &keep.ips[0]), 0);
    assert_int_equal(nft_script_remove(&b, &a, &keep), 0);
    has_line(b.data, "delete element inet idbroker pods4 { \"cni0\" . 10.22.0.5 }");
    has_line(b.data, "delete element bridge idbroker port_ip4 { \"veth1\" . 10.22.0.5 }");
    assert_int_equal(count(b.data, "delete element"), 2);
    buf_reset(&b);
    assert_int_equal(nft_script_remove(&b, &a, &a), 0);
    assert_int_equal(b.len, 0);
    buf_done(&b);
}

static void test_flush_sets(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(nft_script_flush_sets(&b), 0);
    has_line(b.data, "flush set inet idbroker pods4");
    has_line(b.data, "flush set inet idbroker pods6");
    has_line(b.data, "flush set bridge idbroker port_mac");
    assert_int_equal(count(b.data, "flush set"), 7);
    buf_done(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_v4),     cmocka_unit_test(test_base_v6),
        cmocka_unit_test(test_base_capped), cmocka_unit_test(test_revision),
        cmocka_unit_test(test_elements),    cmocka_unit_test(test_remove),
        cmocka_unit_test(test_flush_sets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
