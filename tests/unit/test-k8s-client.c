/* SPDX-License-Identifier: Apache-2.0 */
/* k8s-client without a server: the watch event decoder (pieces, caps, garbage), kubeconfig and
 * in-cluster configuration, and the backoff schedule. The protocol itself is covered by
 * tests/integration/test_k8s_*.py against the fake API server. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idbroker/errno.h>

#include <idbroker-internal/json-util.h>

#include "k8s-client.h"
#include "limits.h"

#include <cmocka.h>

struct seen {
    int types[16];
    char names[16][64];
    size_t n;
    int fail_at; /* 1-based event that returns -EINTR */
};

static int on_event(const struct k8s_event *ev, void *ud)
{
    struct seen *s = ud;
    assert_true(s->n < 16);
    s->types[s->n] = (int)ev->type;
    const char *name = k8s_meta_str(ev->object, "name");
    snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name ? name : "");
    s->n++;
    if (s->fail_at && (int)s->n == s->fail_at)
        return -EINTR;
    return 0;
}

static const char STREAM[] =
    "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"5\"}}}\n"
    "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"b\"}}}\r\n\n"
    "  {\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"c\"}}}"
    "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"9\"}}}\n"
    "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410}}\n";

static void test_decoder_whole_and_pieces(void **state)
{
    (void)state;
    /* Every split of the stream into two pieces, and byte by byte, gives the same events. */
    size_t len = strlen(STREAM);
    for (size_t cut = 0; cut <= len; cut += (cut < len ? 1 : 1)) {
        struct k8s_decoder *d = k8s_decoder_new(4096);
        struct seen s = {0};
        assert_int_equal(k8s_decoder_feed(d, STREAM, cut, on_event, &s), 0);
        assert_int_equal(k8s_decoder_feed(d, STREAM + cut, len - cut, on_event, &s), 0);
        assert_int_equal(s.n, 5);
        assert_int_equal(s.types[0], K8S_EVENT_ADDED);
        assert_string_equal(s.names[0], "a");
        assert_int_equal(s.types[1], K8S_EVENT_MODIFIED);
        assert_int_equal(s.types[2], K8S_EVENT_DELETED);
        assert_string_equal(s.names[2], "c");
        assert_int_equal(s.types[3], K8S_EVENT_BOOKMARK);
        assert_int_equal(s.types[4], K8S_EVENT_ERROR);
        assert_true(k8s_decoder_idle(d));
        k8s_decoder_free(d);
    }
    struct k8s_decoder *d = k8s_decoder_new(4096);
    struct seen s = {0};
    for (size_t i = 0; i < len; i++)
        assert_int_equal(k8s_decoder_feed(d, STREAM + i, 1, on_event, &s), 0);
    assert_int_equal(s.n, 5);
    k8s_decoder_free(d);
}

/* Feeds text[0..len) to a new decoder in two pieces cut at `cut`; returns the first error or 0. */
static int feed_cut(const char *text, size_t len, size_t cut, struct seen *s)
{
    struct k8s_decoder *d = k8s_decoder_new(4096);
    assert_non_null(d);
    int r = k8s_decoder_feed(d, text, cut, on_event, s);
    if (r >= 0)
        r = k8s_decoder_feed(d, text + cut, len - cut, on_event, s);
    k8s_decoder_free(d);
    return r;
}

/* A multi-byte character cut by the network is no error (json-c checks UTF-8 per piece; found by
 * fuzz-k8s-event): every split gives the same events. */
static void test_decoder_utf8_split(void **state)
{
    (void)state;
    static const char stream[] =
        "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"\xc7\xbc-\xe2\x82\xac-"
        "\xf0\x9f\x94\x91\"}}}\n"
        "{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"b\"}}}\n";
    size_t len = sizeof(stream) - 1;
    for (size_t cut = 0; cut <= len; cut++) {
        struct k8s_decoder *d = k8s_decoder_new(4096);
        struct seen s = {0};
        assert_int_equal(k8s_decoder_feed(d, stream, cut, on_event, &s), 0);
        assert_int_equal(k8s_decoder_feed(d, stream + cut, len - cut, on_event, &s), 0);
        assert_int_equal(s.n, 2);
        assert_string_equal(s.names[0], "\xc7\xbc-\xe2\x82\xac-\xf0\x9f\x94\x91");
        assert_string_equal(s.names[1], "b");
        assert_true(k8s_decoder_idle(d));
        k8s_decoder_free(d);
    }
    /* A stream that ends inside a character is not idle (and is no event). */
    struct k8s_decoder *d = k8s_decoder_new(4096);
    struct seen s = {0};
    assert_int_equal(k8s_decoder_feed(d, "\xe2\x82", 2, on_event, &s), 0);
    assert_false(k8s_decoder_idle(d));
    k8s_decoder_free(d);
    /* A started character that the next piece does not continue fails as it does in one piece
     * (found by fuzz-k8s-event). */
    static const char broken[] = "{\"type\":\"ADDED\",\"object\":{\"x\":\"\xef"
                                 "0\"}}\n";
    for (size_t cut = 0; cut <= sizeof(broken) - 1; cut++) {
        struct seen b = {0};
        assert_int_equal(feed_cut(broken, sizeof(broken) - 1, cut, &b), -EBADMSG);
        assert_int_equal(b.n, 0);
    }
    d = k8s_decoder_new(4096);
    assert_int_equal(k8s_decoder_feed(d, "\xef", 1, on_event, &s), 0);
    assert_int_equal(k8s_decoder_feed(d, "0", 1, on_event, &s), -EBADMSG);
    k8s_decoder_free(d);
    /* Bytes that start no character are refused as before. */
    d = k8s_decoder_new(4096);
    assert_int_equal(k8s_decoder_feed(d, "{\"type\":\"\xc0\xaf\"}", 13, on_event, &s), -EBADMSG);
    k8s_decoder_free(d);
}

static void test_decoder_partial_is_not_idle(void **state)
{
    (void)state;
    struct k8s_decoder *d = k8s_decoder_new(4096);
    struct seen s = {0};
    assert_int_equal(k8s_decoder_feed(d, "{\"type\":\"ADD", 12, on_event, &s), 0);
    assert_false(k8s_decoder_idle(d));
    assert_int_equal(s.n, 0);
    k8s_decoder_free(d);
}

static int feed_str(size_t cap, const char *text, struct seen *s)
{
    struct k8s_decoder *d = k8s_decoder_new(cap);
    assert_non_null(d);
    int r = k8s_decoder_feed(d, text, strlen(text), on_event, s);
    if (r >= 0)
        assert_true(k8s_decoder_idle(d));
    else /* sticky */
        assert_int_equal(k8s_decoder_feed(d, "{}", 2, on_event, s), r);
    k8s_decoder_free(d);
    return r;
}

static void test_decoder_rejects(void **state)
{
    (void)state;
    struct seen s = {0};
    assert_int_equal(feed_str(4096, "not json", &s), -EBADMSG);
    assert_int_equal(feed_str(4096, "[1,2]", &s), -EBADMSG);
    assert_int_equal(feed_str(4096, "{\"type\":\"ADDED\"}\n", &s), -EBADMSG);
    assert_int_equal(feed_str(4096, "{\"type\":\"ADDED\",\"object\":[]}\n", &s), -EBADMSG);
    assert_int_equal(feed_str(4096, "{\"type\":\"EXPLODED\",\"object\":{}}\n", &s), -EBADMSG);
    assert_int_equal(feed_str(4096, "{\"type\":5,\"object\":{}}\n", &s), -EBADMSG);
    assert_int_equal(feed_str(4096, "{\"type\":\"ADDED\",\"object\":{}}}", &s), -EBADMSG);
    assert_int_equal(s.n, 1); /* the last one: the event before the stray brace was delivered */
    /* invalid UTF-8 */
    assert_int_equal(feed_str(4096, "{\"type\":\"ADDED\",\"object\":{\"x\":\"\xff\"}}", &s),
                     -EBADMSG);
    /* An event followed at once by a byte that is no UTF-8: the event is delivered and the stream
     * fails, wherever the network cut it (json-c checks the byte after an object when it has it;
     * found by fuzz-k8s-event). */
    static const char garbage[] = "{\"type\":\"ADDED\",\"object\":{}}\x97\x97\n";
    for (size_t cut = 0; cut <= sizeof(garbage) - 1; cut++) {
        struct seen g = {0};
        assert_int_equal(feed_cut(garbage, sizeof(garbage) - 1, cut, &g), -EBADMSG);
        assert_int_equal(g.n, 1);
    }
    /* too deep */
    char deep[4 * K8S_MAX_EVENT_DEPTH + 64];
    size_t o = (size_t)snprintf(deep, sizeof(deep), "{\"type\":\"ADDED\",\"object\":");
    for (int i = 0; i < K8S_MAX_EVENT_DEPTH + 2; i++)
        deep[o++] = '[';
    deep[o] = '\0';
    assert_int_equal(feed_str(sizeof(deep) * 2, deep, &s), -EBADMSG);
}

static void test_decoder_cap(void **state)
{
    (void)state;
    const char *ev = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"abcdefgh\"}}}";
    size_t n = strlen(ev);
    struct seen s = {0};
    assert_int_equal(feed_str(n, ev, &s), 0); /* exactly at the cap */
    assert_int_equal(feed_str(n - 1, ev, &s), -E2BIG);
    /* An endless value is cut at the cap without waiting for its end. */
    struct k8s_decoder *d = k8s_decoder_new(1000);
    const char *head = "{\"type\":\"ADDED\",\"object\":{\"x\":\"";
    int r = k8s_decoder_feed(d, head, strlen(head), on_event, &s);
    assert_int_equal(r, 0);
    char chunk[256];
    memset(chunk, 'a', sizeof(chunk));
    for (int i = 0; i < 10 && r == 0; i++)
        r = k8s_decoder_feed(d, chunk, sizeof(chunk), on_event, &s);
    assert_int_equal(r, -E2BIG);
    k8s_decoder_free(d);
    /* The callback's error stops the feed. */
    struct seen f = {.fail_at = 2};
    assert_int_equal(feed_str(4096, STREAM, &f), -EINTR);
    assert_int_equal(f.n, 2);
}

static char *write_tmp(const char *dir, const char *name, const char *text)
{
    char *p;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static const char KUBECONFIG[] = "apiVersion: v1\n"
                                 "kind: Config\n"
                                 "current-context: ctx\n"
                                 "clusters:\n"
                                 "- name: other\n"
                                 "  cluster: {server: 'https://10.0.0.1'}\n"
                                 "- name: c1\n"
                                 "  cluster:\n"
                                 "    server: https://127.0.0.1:6443/\n"
                                 "    certificate-authority-data: %s\n"
                                 "users:\n"
                                 "- name: u1\n"
                                 "  user:\n"
                                 "    tokenFile: tok\n"
                                 "    client-certificate: certs/c.pem\n"
                                 "    client-key-data: %s\n"
                                 "contexts:\n"
                                 "- name: ctx\n"
                                 "  context: {cluster: c1, user: u1, namespace: ns1}\n";

static void test_kubeconfig(void **state)
{
    (void)state;
    char text[4096];
    /* "PEM-CA" and "KEY" in base64 */
    snprintf(text, sizeof(text), KUBECONFIG, "UEVNLUNB", "S0VZ");
    struct k8s_config *c = NULL;
    char *err = NULL;
    assert_int_equal(k8s_config_parse_kubeconfig(text, strlen(text), "/etc/kube/config", &c, &err),
                     0);
    assert_string_equal(c->server, "https://127.0.0.1:6443");
    assert_int_equal(c->ca_data_len, 6);
    assert_memory_equal(c->ca_data, "PEM-CA", 6);
    assert_string_equal(c->token_file, "/etc/kube/tok");
    assert_string_equal(c->cert_file, "/etc/kube/certs/c.pem");
    assert_int_equal(c->key_data_len, 3);
    assert_string_equal(c->namespace, "ns1");
    assert_null(c->token);
    k8s_config_free(c);

    static const struct {
        const char *text;
        const char *needle;
    } bad[] = {
        {"current-context: x\n", "context 'x' not found"},
        {"clusters: []\n", "current-context"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: "
         "[{name: k, cluster: {server: 'http://1.2.3.4'}}]\n",
         "https"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: "
         "[{name: k, cluster: {server: 'https://1.2.3.4', insecure-skip-tls-verify: true}}]\n",
         "insecure-skip-tls-verify"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: "
         "[{name: k, cluster: {server: 'https://1.2.3.4'}}]\nusers: [{name: u, user: {exec: "
         "{command: x}}}]\n",
         "exec"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: "
         "[{name: k, cluster: {server: 'https://1.2.3.4', certificate-authority-data: '!!'}}]\n",
         "base64"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: "
         "[{name: k, cluster: {server: 'https://1.2.3.4'}}]\nusers: [{name: u, user: "
         "{client-certificate: c.pem}}]\n",
         "'client-certificate' is given without 'client-key'"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: "
         "[{name: k, cluster: {server: 'https://1.2.3.4'}}]\nusers: [{name: u, user: "
         "{token: t, client-key-data: S0VZ}}]\n",
         "'client-key' is given without 'client-certificate'"},
        {"- a\n- b\n", "mapping"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        c = NULL;
        int r = k8s_config_parse_kubeconfig(bad[i].text, strlen(bad[i].text), "kc", &c, &err);
        assert_true(r < 0);
        assert_null(c);
        assert_non_null(err);
        if (!strstr(err, bad[i].needle))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, bad[i].needle);
        free(err);
    }
}

static void test_in_cluster(void **state)
{
    (void)state;
    char dir[] = "/tmp/idb-k8s-sa-XXXXXX";
    assert_non_null(mkdtemp(dir));
    free(write_tmp(dir, "token", "t0k\n"));
    free(write_tmp(dir, "ca.crt", "PEM"));
    free(write_tmp(dir, "namespace", "kube-system\n"));
    unsetenv("KUBERNETES_SERVICE_HOST");
    struct k8s_config *c = NULL;
    char *err = NULL;
    assert_int_equal(k8s_config_in_cluster(dir, &c, &err), -ENOENT);
    free(err);
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    assert_int_equal(k8s_config_in_cluster(dir, &c, NULL), 0);
    assert_string_equal(c->server, "https://[fd00::1]:443");
    assert_string_equal(c->namespace, "kube-system");
    assert_non_null(strstr(c->token_file, "/token"));
    assert_non_null(strstr(c->ca_file, "/ca.crt"));
    /* The client reads the token file lazily; creating it does not touch the network. */
    struct k8s_client *cl = NULL;
    assert_int_equal(k8s_client_new(c, &cl), 0);
    assert_string_equal(k8s_client_server(cl), "https://[fd00::1]:443");
    k8s_client_stop(cl);
    assert_true(k8s_client_stopped(cl));
    struct k8s_reply rep;
    assert_int_equal(k8s_request(cl, "GET", "/version", NULL, NULL, &rep), -ECANCELED);
    k8s_client_free(cl);
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "%s/token", dir);
    unlink(cmd);
    snprintf(cmd, sizeof(cmd), "%s/ca.crt", dir);
    unlink(cmd);
    snprintf(cmd, sizeof(cmd), "%s/namespace", dir);
    unlink(cmd);
    rmdir(dir);
}

static void test_backoff(void **state)
{
    (void)state;
    assert_int_equal(k8s_backoff_ms(1, 0), 800);
    assert_int_equal(k8s_backoff_ms(2, 0), 1600);
    assert_int_equal(k8s_backoff_ms(3, 0.999), 4798);
    assert_int_equal(k8s_backoff_ms(6, 0), 25600);
    assert_int_equal(k8s_backoff_ms(7, 0), K8S_BACKOFF_MAX_MS);
    assert_int_equal(k8s_backoff_ms(6, 0.99), K8S_BACKOFF_MAX_MS);
    assert_int_equal(k8s_backoff_ms(1000, 0.5), K8S_BACKOFF_MAX_MS);
    assert_int_equal(k8s_backoff_ms(1, 7.0), 800); /* out-of-range jitter ignored */
}

static void test_reply_check(void **state)
{
    (void)state;
    static const struct {
        long st;
        int r;
    } map[] = {{200, 0},       {201, 0},       {401, -EACCES}, {403, -EPERM}, {404, -ENOENT},
               {410, -ESTALE}, {429, -EAGAIN}, {503, -EAGAIN}, {500, -EPROTO}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        char body[] = "{\"kind\":\"Status\",\"message\":\"too old\\u0001\"}";
        struct k8s_reply r = {
            .http_status = map[i].st, .body = body, .len = strlen(body), .retry_after_s = 3};
        struct k8s_status st;
        assert_int_equal(k8s_reply_check(&r, &st), map[i].r);
        assert_int_equal(st.http_status, map[i].st);
        assert_int_equal(st.retry_after_s, 3);
        assert_string_equal(st.message, "too old?");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decoder_whole_and_pieces),
        cmocka_unit_test(test_decoder_utf8_split),
        cmocka_unit_test(test_decoder_partial_is_not_idle),
        cmocka_unit_test(test_decoder_rejects),
        cmocka_unit_test(test_decoder_cap),
        cmocka_unit_test(test_kubeconfig),
        cmocka_unit_test(test_in_cluster),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_reply_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
