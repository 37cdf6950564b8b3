/* SPDX-License-Identifier: Apache-2.0 */
/*
 * netaddr: which addresses the broker manages (pure), and netaddr_ensure() — the latter only when
 * running as root, and then only inside a fresh network namespace that a forked child creates
 * with unshare(CLONE_NEWNET), so the machine's own interfaces are never touched. Otherwise that
 * test is skipped.
 */
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "netaddr.h"

#include <cmocka.h>

static void test_is_managed(void **state)
{
    (void)state;
    static const char *yes[] = {
        "169.254.169.250", "169.254.0.0", "169.254.255.255", "169.254.169.253", "169.254.1.1",
        "fe80::1",         "fe80::",      "febf::1",         "FE80::abcd",
    };
    static const char *no[] = {
        "169.254.169.254", /* the metadata address itself */
        "169.253.1.1",
        "169.255.0.1",
        "170.254.1.1",
        "127.0.0.1",
        "10.0.0.1",
        "0.0.0.0",
        "fec0::1", /* just past fe80::/10 */
        "fe00::1",
        "::1",
        "::",
        "::ffff:169.254.1.1",
        "2001:db8::1",
        "",
        "169.254",
        "169.254.1.1.1",
        "169.254.1.1/32",
        " 169.254.1.1",
        "169.254.1.1 ",
        "x",
        "fe80::1%lo",
        "0251.0376.1.1", /* inet_pton takes dotted decimal only */
    };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!netaddr_is_managed(yes[i]))
            fail_msg("'%s' should be managed", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (netaddr_is_managed(no[i]))
            fail_msg("'%s' should not be managed", no[i]);
}

#define NO_NETNS 77 /* root, but not allowed to create a network namespace (a container): skip */

/* Runs in the child, inside its own network namespace. Returns 0, or the number of the failed
 * check (exit statuses are 8 bits, so not a line number). */
static int ensure_in_netns(void)
{
    int step = 0;
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        step++;                                                                                    \
        if (!(x))                                                                                  \
            return step;                                                                           \
    } while (0)
    if (unshare(CLONE_NEWNET) < 0)
        return NO_NETNS;
    /* A fresh namespace has only lo, down and without addresses: adding works whatever the link
     * state, and a second call finds the address. */
    CHECK(netaddr_ensure("169.254.169.250") == 1);
    CHECK(netaddr_ensure("169.254.169.250") == 0);
    /* A different address is added too; the first stays. */
    CHECK(netaddr_ensure("169.254.10.1") == 1);
    CHECK(netaddr_ensure("169.254.169.250") == 0);
    CHECK(netaddr_ensure("fe80::a9fe:a9fa") == 1);
    CHECK(netaddr_ensure("fe80::a9fe:a9fa") == 0);
    /* Not addresses: libnl's parser would take keywords and prefixes, netaddr_ensure does not. */
    CHECK(netaddr_ensure("not-an-ip") == -EINVAL);
    CHECK(netaddr_ensure("fe80::zz") == -EINVAL);
    CHECK(netaddr_ensure("default") == -EINVAL);
    CHECK(netaddr_ensure("any") == -EINVAL);
    CHECK(netaddr_ensure("169.254.10.2/16") == -EINVAL);
    CHECK(netaddr_ensure("") == -EINVAL);
#undef CHECK
    return 0;
}

static void test_ensure_in_netns(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        skip();
        return;
    }
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(ensure_in_netns());
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == NO_NETNS) {
        skip();
        return;
    }
    if (WEXITSTATUS(status) != 0)
        fail_msg("check %d of ensure_in_netns() failed", WEXITSTATUS(status));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_managed),
        cmocka_unit_test(test_ensure_in_netns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
