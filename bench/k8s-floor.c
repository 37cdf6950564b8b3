/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The memory floor of Kubernetes mode (bench/k8s-floor.sh, docs/performance.md): a program with
 * no broker code that links the libraries idbrokerd links (Debian's libcurl with OpenSSL 3,
 * json-c, libmicrohttpd, libyaml, libnl), initialises libcurl, opens N watches over TLS to an API
 * server as the broker's reflectors do (one thread and one connection each), and prints its
 * VmRSS, RssAnon and RssFile in KiB once they are open.
 *
 *   k8s-floor URL CA_FILE TOKEN_FILE N
 */
#include <curl/curl.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

static const char *url, *ca_file;
static char auth[4096];

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

static void *watch(void *ud)
{
    (void)ud;
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, auth);
    if (!h || !hdrs)
        return NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CAINFO, ca_file);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    CURLcode e = curl_easy_perform(h);
    if (e != CURLE_OK)
        fprintf(stderr, "k8s-floor: watch: %s\n", curl_easy_strerror(e));
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: k8s-floor URL CA_FILE TOKEN_FILE N\n");
        return 2;
    }
    url = argv[1];
    ca_file = argv[2];
    FILE *f = fopen(argv[3], "r");
    char token[2048] = "";
    if (!f || !fgets(token, sizeof(token), f)) {
        fprintf(stderr, "k8s-floor: cannot read %s\n", argv[3]);
        return 1;
    }
    fclose(f);
    token[strcspn(token, "\r\n")] = '\0';
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
    long n = strtol(argv[4], NULL, 10);

    /* Touch each of the broker's other libraries once, as the broker does at start. */
    json_object_put(json_object_new_object());
    yaml_parser_t y;
    yaml_parser_initialize(&y);
    yaml_parser_delete(&y);
    nl_socket_free(nl_socket_alloc());
    (void)rtnl_link_alloc;
    (void)MHD_get_version();

    curl_global_init(CURL_GLOBAL_DEFAULT);
    for (long i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, watch, NULL) != 0)
            return 1;
        pthread_detach(t);
    }
    sleep(3); /* connected and idle on their watches by then */
    f = fopen("/proc/self/status", "r");
    char line[256];
    long rss = 0, anon = 0, file = 0;
    while (f && fgets(line, sizeof(line), f)) {
        sscanf(line, "VmRSS: %ld", &rss);
        sscanf(line, "RssAnon: %ld", &anon);
        sscanf(line, "RssFile: %ld", &file);
    }
    printf("%ld %ld %ld\n", rss, anon, file);
    fflush(stdout);
    _exit(0); /* the watches are still open */
}
