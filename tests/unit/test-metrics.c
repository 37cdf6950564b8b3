/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker/errno.h>

#include <idbroker-internal/buf.h>

#include "metrics.h"

#include <cmocka.h>

static char *render(void)
{
    struct buf b;
    buf_init(&b, 1024 * 1024);
    assert_int_equal(metrics_render(&b), 0);
    return buf_steal(&b);
}

static void assert_line(const char *text, const char *line)
{
    char *want = NULL;
    assert_true(asprintf(&want, "\n%s\n", line) > 0);
    if (!strstr(text, want))
        fail_msg("missing line '%s' in:\n%s", line, text);
    free(want);
}

static void assert_no(const char *text, const char *needle)
{
    if (strstr(text, needle))
        fail_msg("unexpected '%s' in:\n%s", needle, text);
}

static void test_counters_and_gauges(void **state)
{
    (void)state;
    metrics_reset();
    metrics_inc(M_CACHE_HITS);
    metrics_inc(M_CACHE_HITS);
    metrics_add(M_CACHE_MISSES, 5);
    metrics_set(G_REGISTRATIONS, 7);
    metrics_set(G_READY, 1);
    assert_int_equal(metrics_get(M_CACHE_HITS), 2);
    assert_int_equal(metrics_get(M_CACHE_MISSES), 5);

    char *t = render();
    assert_line(t, "# HELP idbroker_cache_hits_total Token requests served from the token cache.");
    assert_line(t, "# TYPE idbroker_cache_hits_total counter");
    assert_line(t, "idbroker_cache_hits_total 2");
    assert_line(t, "idbroker_cache_misses_total 5");
    assert_line(t, "# TYPE idbroker_registrations gauge");
    assert_line(t, "idbroker_registrations 7");
    assert_line(t, "idbroker_ready 1");
    assert_line(t, "idbroker_rate_limited_total 0");
    free(t);

    metrics_reset();
    assert_int_equal(metrics_get(M_CACHE_HITS), 0);
    t = render();
    assert_line(t, "idbroker_cache_hits_total 0");
    assert_line(t, "idbroker_ready 0");
    free(t);
}

static void test_http_status(void **state)
{
    (void)state;
    metrics_reset();
    metrics_http_status(200);
    metrics_http_status(200);
    metrics_http_status(429);
    metrics_http_status(599);
    metrics_http_status(100);
    metrics_http_status(0);
    metrics_http_status(1000);
    char *t = render();
    assert_line(t, "# TYPE idbroker_http_requests_total counter");
    assert_line(t, "idbroker_http_requests_total{code=\"200\"} 2");
    assert_line(t, "idbroker_http_requests_total{code=\"429\"} 1");
    assert_line(t, "idbroker_http_requests_total{code=\"599\"} 1");
    assert_line(t, "idbroker_http_requests_total{code=\"100\"} 1");
    assert_line(t, "idbroker_http_requests_total{code=\"other\"} 2");
    assert_no(t, "code=\"404\"");
    free(t);
}

static void test_providers(void **state)
{
    (void)state;
    metrics_reset();
    metrics_provider_call("mock", 0, 3); /* le 0.005 */
    metrics_provider_call("mock", 0, 5); /* le 0.005 (bucket bound is inclusive) */
    metrics_provider_call("mock", 0, 6); /* le 0.010 */
    metrics_provider_call("mock", IDB_E_PROVIDER_TIMEOUT, 20000); /* +Inf only */
    metrics_provider_call("azure-msi", IDB_E_UPSTREAM_4XX, 120);
    metrics_provider_call("azure-msi", -EIO, 120);
    assert_int_equal(metrics_provider_calls("mock"), 4);
    assert_int_equal(metrics_provider_calls("azure-msi"), 2);
    assert_int_equal(metrics_provider_calls("absent"), 0);

    char *t = render();
    assert_line(t, "# TYPE idbroker_provider_requests_total counter");
    assert_line(t, "idbroker_provider_requests_total{provider=\"mock\",result=\"ok\"} 3");
    assert_line(t, "idbroker_provider_requests_total{provider=\"mock\",result=\"timeout\"} 1");
    assert_line(t, "idbroker_provider_requests_total{provider=\"azure-msi\",result=\"ok\"} 0");
    assert_line(t,
                "idbroker_provider_requests_total{provider=\"azure-msi\",result=\"rejected\"} 1");
    assert_line(t, "idbroker_provider_requests_total{provider=\"azure-msi\",result=\"error\"} 1");
    assert_line(t, "# TYPE idbroker_provider_request_duration_seconds histogram");
    assert_line(
        t, "idbroker_provider_request_duration_seconds_bucket{provider=\"mock\",le=\"0.005\"} 2");
    assert_line(
        t, "idbroker_provider_request_duration_seconds_bucket{provider=\"mock\",le=\"0.010\"} 3");
    assert_line(
        t, "idbroker_provider_request_duration_seconds_bucket{provider=\"mock\",le=\"10.000\"} 3");
    assert_line(
        t, "idbroker_provider_request_duration_seconds_bucket{provider=\"mock\",le=\"+Inf\"} 4");
    assert_line(t, "idbroker_provider_request_duration_seconds_sum{provider=\"mock\"} 20.014");
    assert_line(t, "idbroker_provider_request_duration_seconds_count{provider=\"mock\"} 4");
    assert_line(
        t,
        "idbroker_provider_request_duration_seconds_bucket{provider=\"azure-msi\",le=\"0.100\"} 0");
    assert_line(
        t,
        "idbroker_provider_request_duration_seconds_bucket{provider=\"azure-msi\",le=\"0.250\"} 2");
    free(t);
}

static void test_provider_table_full(void **state)
{
    (void)state;
    metrics_reset();
    char name[32];
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "p%d", i);
        metrics_provider_call(name, 0, 1);
    }
    /* An over-long name or NULL never becomes a label of its own. */
    char longname[200];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    metrics_provider_call(longname, 0, 1);
    metrics_provider_call(NULL, 0, 1);

    char *t = render();
    assert_line(t, "idbroker_provider_requests_total{provider=\"p0\",result=\"ok\"} 1");
    assert_line(t, "idbroker_provider_requests_total{provider=\"p31\",result=\"ok\"} 1");
    assert_no(t, "provider=\"p32\"");
    assert_no(t, "xxxxxxxx");
    /* p32..p39, the long name and NULL: 10 calls lumped together. */
    assert_line(t, "idbroker_provider_requests_total{provider=\"other\",result=\"ok\"} 10");
    free(t);
    metrics_reset();
    t = render();
    assert_no(t, "provider=\"p0\"");
    assert_no(t, "provider=\"other\"");
    free(t);
}

static void test_ctl_ops(void **state)
{
    (void)state;
    metrics_reset();
    metrics_ctl_op("register", 0);
    metrics_ctl_op("register", 0);
    metrics_ctl_op("register", -EINVAL);
    metrics_ctl_op("unregister", 1);
    char *t = render();
    assert_line(t, "# TYPE idbroker_cni_operations_total counter");
    assert_line(t, "idbroker_cni_operations_total{op=\"register\",result=\"ok\"} 2");
    assert_line(t, "idbroker_cni_operations_total{op=\"register\",result=\"error\"} 1");
    assert_line(t, "idbroker_cni_operations_total{op=\"unregister\",result=\"ok\"} 1");
    free(t);
}

static void test_every_family_has_help_and_type(void **state)
{
    (void)state;
    metrics_reset();
    metrics_provider_call("mock", 0, 1);
    metrics_ctl_op("sync", 0);
    metrics_http_status(200);
    char *t = render();
    /* Each sample line's family has a preceding # TYPE line; names are prefixed idbroker_. */
    for (const char *line = t; *line;) {
        const char *nl = strchr(line, '\n');
        assert_non_null(nl);
        if (line[0] != '#')
            assert_memory_equal(line, "idbroker_", 9);
        line = nl + 1;
    }
    free(t);
}

static void *hammer(void *ud)
{
    (void)ud;
    for (int i = 0; i < 1000; i++) {
        metrics_inc(M_CACHE_HITS);
        metrics_provider_call(i % 2 ? "a" : "b", 0, 1);
        metrics_http_status(200);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    metrics_reset();
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(metrics_get(M_CACHE_HITS), 4000);
    assert_int_equal(metrics_provider_calls("a"), 2000);
    assert_int_equal(metrics_provider_calls("b"), 2000);
    char *t = render();
    assert_line(t, "idbroker_http_requests_total{code=\"200\"} 4000");
    free(t);
}

static void test_render_cap(void **state)
{
    (void)state;
    metrics_reset();
    struct buf b;
    buf_init(&b, 64);
    assert_int_equal(metrics_render(&b), -E2BIG);
    buf_done(&b);
    assert_int_equal(metrics_render(NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_and_gauges),
        cmocka_unit_test(test_http_status),
        cmocka_unit_test(test_providers),
        cmocka_unit_test(test_provider_table_full),
        cmocka_unit_test(test_ctl_ops),
        cmocka_unit_test(test_every_family_has_help_and_type),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_render_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
