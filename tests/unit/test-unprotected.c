/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unprotected pods (broker/unprotected.c, THREATS T21): which pods count, the two-scan rule, the
 * log lines (once per pod and transition, capped per scan).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "store.h"
#include "unprotected.h"

#include <cmocka.h>

#define NODE "node-1"

static char *registered_pods[64];

static bool is_registered(const char *ns, const char *name, void *ud)
{
    (void)ud;
    char key[256];
    snprintf(key, sizeof(key), "%s/%s", ns, name);
    for (size_t i = 0; i < ELEMENTSOF(registered_pods) && registered_pods[i]; i++)
        if (streq(registered_pods[i], key))
            return true;
    return false;
}

static void put(struct store *s, const char *name, const char *node, bool running,
                bool host_network, bool terminating, bool with_ip)
{
    char *ips[] = {"10.0.0.9"};
    struct pod_meta *p = pod_meta_new(&(struct pod_meta){
        .namespace = "default",
        .name = (char *)name,
        .node = (char *)node,
        .ips = with_ip ? ips : NULL,
        .n_ips = with_ip ? 1 : 0,
        .origin = "api",
        .running = running,
        .host_network = host_network,
        .terminating = terminating,
    });
    assert_non_null(p);
    assert_int_equal(store_put_pod(s, p), 0);
}

/* Runs one scan with the log going to a temporary file; returns the count, fills log. */
static int scan(struct unprotected *u, struct store *s, char *log, size_t size)
{
    char path[] = "/tmp/idb-unprot-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    log_setup(IDB_LOG_INFO, LOG_FORMAT_TEXT, fd);
    int n = unprotected_scan(u, s, NODE, is_registered, NULL);
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);
    ssize_t len = pread(fd, log, size - 1, 0);
    close(fd);
    log[len > 0 ? len : 0] = '\0';
    return n;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void test_which_pods(void **state)
{
    (void)state;
    struct store *s = store_new();
    put(s, "plain", NODE, true, false, false, true);         /* counts */
    put(s, "hostnet", NODE, true, true, false, true);        /* hostNetwork: never */
    put(s, "pending", NODE, false, false, false, true);      /* not Running */
    put(s, "deleting", NODE, true, false, true, true);       /* being deleted */
    put(s, "elsewhere", "node-2", true, false, false, true); /* another node */
    put(s, "noaddr", NODE, true, false, false, false);       /* no address yet */
    put(s, "registered", NODE, true, false, false, true);    /* set up by the plugin */
    registered_pods[0] = "default/registered";
    struct unprotected *u = unprotected_new();
    char log[8192];

    assert_int_equal(scan(u, s, log, sizeof(log)), 0); /* seen once: not yet */
    assert_null(strstr(log, "default/plain"));
    assert_int_equal(scan(u, s, log, sizeof(log)), 1);
    assert_int_equal(count(log, "pod default/plain runs on this node without idbroker"), 1);
    assert_null(strstr(log, "hostnet"));
    assert_null(strstr(log, "elsewhere"));
    assert_int_equal(scan(u, s, log, sizeof(log)), 1);
    assert_int_equal(count(log, "default/plain"), 0); /* said once, not every scan */

    /* Registered now (a late ADD, or by hand): a notice, and the count drops. */
    registered_pods[1] = "default/plain";
    assert_int_equal(scan(u, s, log, sizeof(log)), 0);
    assert_non_null(strstr(log, "pod default/plain is no longer an unprotected pod"));
    registered_pods[1] = NULL;
    /* Unregistered again: two scans in a row again before it is reported. */
    assert_int_equal(scan(u, s, log, sizeof(log)), 0);
    assert_int_equal(scan(u, s, log, sizeof(log)), 1);
    /* Gone from the API: a notice. */
    assert_int_equal(store_remove_pod(s, "default", "plain"), 1);
    assert_int_equal(scan(u, s, log, sizeof(log)), 0);
    assert_non_null(strstr(log, "pod default/plain is no longer"));

    registered_pods[0] = NULL;
    unprotected_free(u);
    store_free(s);
}

static void test_log_cap(void **state)
{
    (void)state;
    struct store *s = store_new();
    char name[32];
    for (int i = 0; i < UNPROTECTED_LOG_MAX + 5; i++) {
        snprintf(name, sizeof(name), "p%02d", i);
        put(s, name, NODE, true, false, false, true);
    }
    struct unprotected *u = unprotected_new();
    static char log[65536];
    assert_int_equal(scan(u, s, log, sizeof(log)), 0);
    assert_int_equal(scan(u, s, log, sizeof(log)), UNPROTECTED_LOG_MAX + 5);
    assert_int_equal(count(log, "runs on this node without idbroker:"), UNPROTECTED_LOG_MAX);
    assert_non_null(strstr(log, "5 more pods run on this node without idbroker (25 in all)"));
    unprotected_free(u);
    store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_which_pods),
        cmocka_unit_test(test_log_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
