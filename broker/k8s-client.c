/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Kubernetes API client. Each request runs on a fresh curl easy handle on the caller's thread;
 * the only shared state is the configuration (read-only), the bearer token (under a mutex) and the
 * stop flag, which the transfer-progress callback checks about once a second.
 */
#include "k8s-client.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idbroker/errno.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/macro.h>

#include "curl-init.h"
#include "host-api.h"
#include "limits.h"
#include "manifest.h"

#define CONNECT_TIMEOUT_S 10
#define REQUEST_TIMEOUT_S 60
#define WATCH_GRACE_S 30 /* past timeoutSeconds, a silent watch is given up */

/* ---- configuration ---- */

static void erase_free(char *p, size_t n)
{
    if (!p)
        return;
    explicit_bzero(p, n);
    free(p);
}

struct k8s_config *k8s_config_free(struct k8s_config *c)
{
    if (!c)
        return NULL;
    free(c->origin);
    free(c->server);
    free(c->ca_file);
    free(c->ca_data);
    erase_free(c->token, c->token ? strlen(c->token) : 0);
    free(c->token_file);
    free(c->cert_file);
    free(c->key_file);
    free(c->cert_data);
    erase_free(c->key_data, c->key_data_len);
    free(c->namespace);
    free(c);
    return NULL;
}

static int set_error(char **ret_error, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_error(char **ret_error, int r, const char *fmt, ...)
{
    if (!ret_error)
        return r;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(ret_error, fmt, ap) < 0)
        *ret_error = NULL;
    va_end(ap);
    return r;
}

/* Reads a whole file of at most max bytes. Returns new (NUL-terminated) text and its length. */
static int read_small_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    struct buf b;
    buf_init(&b, max);
    int r = buf_read_fd(&b, fd);
    if (r < 0) {
        if (b.data)
            explicit_bzero(b.data, b.len);
        buf_done(&b);
        return r;
    }
    size_t len = b.len;
    char *d = buf_steal(&b);
    if (!d)
        return -ENOMEM;
    *ret = d;
    if (ret_len)
        *ret_len = len;
    return 0;
}

/* Standard base64 (kubeconfig *-data fields); white space is skipped. Returns new bytes + NUL. */
static int base64_decode(const char *s, char **ret, size_t *ret_len)
{
    size_t n = strlen(s);
    _cleanup_free_ char *out = malloc(n / 4 * 3 + 4);
    if (!out)
        return -ENOMEM;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        int v;
        if (ch >= 'A' && ch <= 'Z')
            v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z')
            v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9')
            v = ch - '0' + 52;
        else if (ch == '+')
            v = 62;
        else if (ch == '/')
            v = 63;
        else if (ch == '=') {
            pad++;
            continue;
        } else if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
            continue;
        else
            return -EINVAL;
        if (pad)
            return -EINVAL; /* data after padding */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    if (pad > 2)
        return -EINVAL;
    out[o] = '\0';
    *ret_len = o;
    *ret = TAKE_PTR(out);
    return 0;
}

/* Finds the entry named `name` in kubeconfig list `key` and returns its `sub` mapping. */
static struct json_object *named_entry(struct json_object *root, const char *key, const char *name,
                                       const char *sub)
{
    struct json_object *arr = NULL;
    if (!json_object_object_get_ex(root, key, &arr) || !json_object_is_type(arr, json_type_array))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        struct json_object *e = json_object_array_get_idx(arr, i);
        const char *n = json_get_str(e, "name");
        struct json_object *v = NULL;
        if (n && streq(n, name) && json_object_object_get_ex(e, sub, &v) &&
            json_object_is_type(v, json_type_object))
            return v;
    }
    return NULL;
}

/* A file name from the kubeconfig, relative to its directory. Returns new. */
static char *resolve_path(const char *dir, const char *name)
{
    char *p;
    if (name[0] == '/' || !dir)
        return strdup(name);
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return NULL;
    return p;
}

/* Reads "<key>-data" (base64) or "<key>" (a file) of `o` into data or a file name. */
static int kc_material(struct json_object *o, const char *key, const char *dir, char **ret_file,
                       char **ret_data, size_t *ret_len, char **ret_error)
{
    char dkey[64];
    snprintf(dkey, sizeof(dkey), "%s-data", key);
    const char *data = json_get_str(o, dkey), *file = json_get_str(o, key);
    if (data && *data) {
        int r = base64_decode(data, ret_data, ret_len);
        if (r == -EINVAL)
            return set_error(ret_error, IDB_E_BAD_MANIFEST, "key '%s' is not valid base64", dkey);
        return r;
    }
    if (file && *file) {
        *ret_file = resolve_path(dir, file);
        return *ret_file ? 0 : -ENOMEM;
    }
    return 0;
}

static bool present(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    return json_object_object_get_ex(o, key, &v) && v;
}

int k8s_config_parse_kubeconfig(const char *text, size_t len, const char *path,
                                struct k8s_config **ret, char **ret_error)
{
    const char *origin = path ? path : "<kubeconfig>";
    _cleanup_json_ struct json_object *root = NULL;
    int r = manifest_yaml_to_json(text, len, origin, &root, ret_error);
    if (r < 0)
        return r;
    _cleanup_free_ char *dir = NULL;
    if (path && strchr(path, '/')) {
        dir = strndup(path, (size_t)(strrchr(path, '/') - path));
        if (!dir)
            return -ENOMEM;
        if (!*dir) {
            free(dir);
            dir = strdup("/");
            if (!dir)
                return -ENOMEM;
        }
    }
    const char *ctx_name = json_get_str(root, "current-context");
    if (!ctx_name || !*ctx_name)
        return set_error(ret_error, -EINVAL, "%s: no 'current-context'", origin);
    struct json_object *ctx = named_entry(root, "contexts", ctx_name, "context");
    if (!ctx)
        return set_error(ret_error, -EINVAL, "%s: context '%s' not found", origin, ctx_name);
    const char *cluster_name = json_get_str(ctx, "cluster"), *user_name = json_get_str(ctx, "user");
    struct json_object *cluster =
        cluster_name ? named_entry(root, "clusters", cluster_name, "cluster") : NULL;
    if (!cluster)
        return set_error(ret_error, -EINVAL, "%s: cluster '%s' of context '%s' not found", origin,
                         strna(cluster_name), ctx_name);
    struct json_object *user = user_name ? named_entry(root, "users", user_name, "user") : NULL;

    struct k8s_config *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    r = -ENOMEM;
    const char *server = json_get_str(cluster, "server");
    const char *skip = json_get_str(cluster, "insecure-skip-tls-verify");
    if (!(c->origin = strdup(origin)))
        goto out;
    if (!server || strncmp(server, "https://", 8) != 0 || !server[8]) {
        r = set_error(ret_error, -EINVAL, "%s: cluster '%s': 'server' must be an https:// URL",
                      origin, cluster_name);
        goto out;
    }
    if (skip && streq(skip, "true")) {
        r = set_error(ret_error, -EINVAL,
                      "%s: cluster '%s': insecure-skip-tls-verify is not supported (TLS is always "
                      "verified)",
                      origin, cluster_name);
        goto out;
    }
    if (!(c->server = strdup(server)))
        goto out;
    size_t sl = strlen(c->server);
    while (sl > 8 && c->server[sl - 1] == '/')
        c->server[--sl] = '\0';
    r = kc_material(cluster, "certificate-authority", dir, &c->ca_file, &c->ca_data,
                    &c->ca_data_len, ret_error);
    if (r < 0)
        goto out;
    if (user) {
        if (present(user, "exec") || present(user, "auth-provider")) {
            r = set_error(ret_error, -EINVAL,
                          "%s: user '%s': exec and auth-provider credentials are not supported; "
                          "use a token, tokenFile or a client certificate",
                          origin, user_name);
            goto out;
        }
        const char *tok = json_get_str(user, "token"), *tf = json_get_str(user, "tokenFile");
        if (tok && *tok && !(c->token = strdup(tok)))
            goto out;
        if (!c->token && tf && *tf && !(c->token_file = resolve_path(dir, tf)))
            goto out;
        r = kc_material(user, "client-certificate", dir, &c->cert_file, &c->cert_data,
                        &c->cert_data_len, ret_error);
        if (r >= 0)
            r = kc_material(user, "client-key", dir, &c->key_file, &c->key_data, &c->key_data_len,
                            ret_error);
        if (r < 0)
            goto out;
        bool has_cert = c->cert_file || c->cert_data, has_key = c->key_file || c->key_data;
        if (has_cert != has_key) {
            /* As client-go: a certificate is useless without its key (and the other way round). */
            r = set_error(ret_error, -EINVAL,
                          "%s: user '%s': '%s' is given without '%s' (client certificate "
                          "authentication needs both)",
                          origin, user_name, has_cert ? "client-certificate" : "client-key",
                          has_cert ? "client-key" : "client-certificate");
            goto out;
        }
    }
    const char *ns = json_get_str(ctx, "namespace");
    if (ns && *ns && !(c->namespace = strdup(ns))) {
        r = -ENOMEM;
        goto out;
    }
    *ret = TAKE_PTR(c);
    r = 0;
out:
    k8s_config_free(c);
    return r;
}

int k8s_config_in_cluster(const char *sa_dir, struct k8s_config **ret, char **ret_error)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !*host || !port || !*port)
        return set_error(ret_error, -ENOENT,
                         "not running in a cluster (KUBERNETES_SERVICE_HOST/PORT unset) and no "
                         "'source.kubeconfig' given");
    _cleanup_free_ char *nsf = NULL; /* before any goto: clang refuses a jump past a cleanup */
    struct k8s_config *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int r = -ENOMEM;
    bool v6 = strchr(host, ':') != NULL;
    if (asprintf(&c->server, v6 ? "https://[%s]:%s" : "https://%s:%s", host, port) < 0) {
        c->server = NULL;
        goto out;
    }
    if (!(c->origin = strdup("in-cluster")))
        goto out;
    if (asprintf(&c->token_file, "%s/token", sa_dir) < 0) {
        c->token_file = NULL;
        goto out;
    }
    if (asprintf(&c->ca_file, "%s/ca.crt", sa_dir) < 0) {
        c->ca_file = NULL;
        goto out;
    }
    if (access(c->token_file, R_OK) < 0) {
        r = set_error(ret_error, -errno, "in-cluster: cannot read the service account token '%s'",
                      c->token_file);
        goto out;
    }
    if (asprintf(&nsf, "%s/namespace", sa_dir) < 0) {
        nsf = NULL;
        goto out;
    }
    char *ns = NULL;
    if (read_small_file(nsf, 256, &ns, NULL) >= 0) {
        ns[strcspn(ns, " \r\n\t")] = '\0';
        c->namespace = ns;
    }
    *ret = TAKE_PTR(c);
    r = 0;
out:
    k8s_config_free(c);
    return r;
}

/* A file the kubeconfig names must be readable now: libcurl opens it only at each request, where a
 * missing file would be a failure repeated forever instead of a configuration error at start. */
static int check_readable(const char *origin, const char *key, const char *file, char **ret_error)
{
    if (!file)
        return 0;
    _cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        return set_error(ret_error, -e, "%s: cannot read the %s file '%s': %s", origin, key, file,
                         strerror(e));
    }
    return 0;
}

int k8s_config_load(const char *kubeconfig, struct k8s_config **ret, char **ret_error)
{
    if (!kubeconfig)
        return k8s_config_in_cluster(K8S_SA_DIR, ret, ret_error);
    _cleanup_erase_ char *text = NULL;
    size_t len = 0;
    int r = read_small_file(kubeconfig, K8S_MAX_CONFIG_BYTES, &text, &len);
    if (r < 0)
        return set_error(ret_error, r, "cannot read kubeconfig '%s': %s", kubeconfig, strerror(-r));
    struct k8s_config *c = NULL;
    r = k8s_config_parse_kubeconfig(text, len, kubeconfig, &c, ret_error);
    if (r < 0)
        return r;
    const struct {
        const char *key, *file;
    } files[] = {
        {"certificate-authority", c->ca_file},
        {"client-certificate", c->cert_file},
        {"client-key", c->key_file},
        {"tokenFile", c->token_file},
    };
    for (size_t i = 0; r >= 0 && i < ELEMENTSOF(files); i++)
        r = check_readable(c->origin, files[i].key, files[i].file, ret_error);
    if (r < 0) {
        k8s_config_free(c);
        return r;
    }
    *ret = c;
    return 0;
}

/* ---- the client ---- */

struct k8s_client {
    struct k8s_config *cfg;
    pthread_mutex_t lock;
    char *token; /* current bearer token (under lock) */
    uint64_t token_read_ms;
    int stop; /* atomic */
};

/* Re-reads the token file if it is due (or forced). Keeps the old token if the file is unreadable.
 * Returns new: "Authorization: Bearer …" or NULL when there is no token. */
static char *auth_header(struct k8s_client *c, bool force)
{
    char *h = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->cfg->token_file) {
        uint64_t now = now_monotonic_ms();
        if (force || !c->token || now - c->token_read_ms >= K8S_TOKEN_REREAD_MS) {
            char *t = NULL;
            if (read_small_file(c->cfg->token_file, K8S_MAX_TOKEN_BYTES, &t, NULL) >= 0) {
                size_t n = strlen(t);
                while (n > 0 && strchr(" \r\n\t", t[n - 1]))
                    t[--n] = '\0';
                erase_free(c->token, c->token ? strlen(c->token) : 0);
                c->token = t;
            }
            c->token_read_ms = now;
        }
    }
    const char *tok = c->token ? c->token : c->cfg->token;
    if (tok && *tok && asprintf(&h, "Authorization: Bearer %s", tok) < 0)
        h = NULL;
    pthread_mutex_unlock(&c->lock);
    return h;
}

int k8s_client_new(struct k8s_config *cfg, struct k8s_client **ret)
{
    if (!cfg || !cfg->server || !ret)
        return -EINVAL;
    struct k8s_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->cfg = cfg;
    pthread_mutex_init(&c->lock, NULL);
    *ret = c;
    return 0;
}

struct k8s_client *k8s_client_free(struct k8s_client *c)
{
    if (!c)
        return NULL;
    erase_free(c->token, c->token ? strlen(c->token) : 0);
    k8s_config_free(c->cfg);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return NULL;
}

void k8s_client_stop(struct k8s_client *c)
{
    __atomic_store_n(&c->stop, 1, __ATOMIC_SEQ_CST);
}

bool k8s_client_stopped(const struct k8s_client *c)
{
    return __atomic_load_n(&c->stop, __ATOMIC_SEQ_CST) != 0;
}

const char *k8s_client_server(const struct k8s_client *c)
{
    return c->cfg->server;
}

void k8s_reply_done(struct k8s_reply *r)
{
    if (!r)
        return;
    free(r->body);
    *r = (struct k8s_reply){0};
}

/* One transfer's state, shared by the curl callbacks. */
struct xfer {
    struct k8s_client *c;
    CURL *h;
    struct buf body; /* the reply (requests, lists, and a watch's error reply) */
    bool watching;   /* body goes to the decoder once the status is 200 */
    long status;     /* known once the first body byte arrives */
    struct k8s_decoder *dec;
    k8s_event_fn cb;
    void *ud;
    int error; /* the first error seen inside a callback */
    CURLcode curl_code;
};

static int progress_cb(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    struct xfer *x = ud;
    return k8s_client_stopped(x->c) ? 1 : 0;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    if (x->status == 0)
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->watching && x->status == 200) {
        int r = k8s_decoder_feed(x->dec, data, n, x->cb, x->ud);
        if (r < 0) {
            x->error = r;
            return 0; /* aborts the transfer */
        }
        return n;
    }
    int r = buf_append(&x->body, data, n);
    if (r < 0) {
        x->error = r;
        return 0;
    }
    return n;
}

static int curl_to_errno(CURLcode e)
{
    switch (e) {
    case CURLE_OK:
        return 0;
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
        return -EHOSTUNREACH;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_ABORTED_BY_CALLBACK:
        return -ECANCELED;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_FILESIZE_EXCEEDED:
        return -E2BIG;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
        return -EKEYREJECTED;
    default:
        return -EIO;
    }
}

/* Performs one transfer. Returns 0 when a response arrived (x->status set), else -errno. */
static int perform(struct xfer *x, const char *method, const char *path, const char *content_type,
                   const char *body, long timeout_s, bool force_token, char *errbuf)
{
    struct k8s_client *c = x->c;
    if (k8s_client_stopped(c))
        return -ECANCELED;
    const struct k8s_config *cfg = c->cfg;
    _cleanup_free_ char *url = NULL;
    if (asprintf(&url, "%s%s", cfg->server, path) < 0)
        return -ENOMEM;
    _cleanup_erase_ char *auth = auth_header(c, force_token);
    struct curl_slist *hdrs = NULL, *t;
    int r = curl_init_once();
    if (r < 0)
        return r;
    r = -ENOMEM;
    CURL *h = curl_easy_init();
    if (!h)
        return -ENOMEM;
    x->h = h;
    x->status = 0;
#define ADD_HDR(s)                                                                                 \
    do {                                                                                           \
        t = curl_slist_append(hdrs, (s));                                                          \
        if (!t)                                                                                    \
            goto out;                                                                              \
        hdrs = t;                                                                                  \
    } while (0)
    ADD_HDR("Accept: application/json");
    ADD_HDR("User-Agent: idbrokerd/" IDB_VERSION);
    if (auth)
        ADD_HDR(auth);
    char ct[128];
    if (content_type) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
        ADD_HDR(ct);
    }
    CURLcode e = CURLE_OK;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (e == CURLE_OK)                                                                         \
            e = curl_easy_setopt(h, (opt), (val));                                                 \
    } while (0)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_HTTPHEADER, hdrs);
    SET(CURLOPT_CUSTOMREQUEST, method);
    SET(CURLOPT_PROTOCOLS_STR, "https");
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
    SET(CURLOPT_TIMEOUT, timeout_s);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_WRITEFUNCTION, write_cb);
    SET(CURLOPT_WRITEDATA, x);
    SET(CURLOPT_NOPROGRESS, 0L);
    SET(CURLOPT_XFERINFOFUNCTION, progress_cb);
    SET(CURLOPT_XFERINFODATA, x);
    SET(CURLOPT_ERRORBUFFER, errbuf);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    if (body) {
        SET(CURLOPT_POSTFIELDS, body);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    if (cfg->ca_data) {
        struct curl_blob b = {
            .data = cfg->ca_data, .len = cfg->ca_data_len, .flags = CURL_BLOB_COPY};
        SET(CURLOPT_CAINFO_BLOB, &b);
    } else if (cfg->ca_file)
        SET(CURLOPT_CAINFO, cfg->ca_file);
    if (cfg->cert_data) {
        struct curl_blob b = {
            .data = cfg->cert_data, .len = cfg->cert_data_len, .flags = CURL_BLOB_COPY};
        SET(CURLOPT_SSLCERT_BLOB, &b);
        SET(CURLOPT_SSLCERTTYPE, "PEM");
    } else if (cfg->cert_file)
        SET(CURLOPT_SSLCERT, cfg->cert_file);
    if (cfg->key_data) {
        struct curl_blob b = {
            .data = cfg->key_data, .len = cfg->key_data_len, .flags = CURL_BLOB_COPY};
        SET(CURLOPT_SSLKEY_BLOB, &b);
        SET(CURLOPT_SSLKEYTYPE, "PEM");
    } else if (cfg->key_file)
        SET(CURLOPT_SSLKEY, cfg->key_file);
#undef SET
#undef ADD_HDR
    if (e != CURLE_OK) {
        r = -EINVAL;
        goto out;
    }
    e = curl_easy_perform(h);
    x->curl_code = e;
    if (x->status == 0)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->error < 0)
        r = x->error;
    else if (e != CURLE_OK)
        r = curl_to_errno(e);
    else
        r = x->status > 0 ? 0 : -EIO;
    if (e == CURLE_ABORTED_BY_CALLBACK || k8s_client_stopped(c))
        r = -ECANCELED;
out:
    curl_slist_free_all(hdrs);
    curl_off_t ra = 0;
    if (r < 0 || curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra) != CURLE_OK)
        ra = 0;
    x->h = NULL;
    curl_easy_cleanup(h);
    if (r < 0)
        return r;
    return ra > 0 && ra < 86400 ? (int)ra : 0;
}

/* Runs a transfer with one retry after a 401 (the token may have been rotated). Returns the
 * Retry-After seconds (>= 0) or -errno. */
static int perform_auth(struct xfer *x, const char *method, const char *path,
                        const char *content_type, const char *body, long timeout_s, char *errbuf)
{
    int r = perform(x, method, path, content_type, body, timeout_s, false, errbuf);
    if (r >= 0 && x->status == 401) {
        buf_reset(&x->body);
        x->error = 0;
        r = perform(x, method, path, content_type, body, timeout_s, true, errbuf);
    }
    return r;
}

static void copy_printable(char *dst, size_t n, const char *src)
{
    size_t o = 0;
    for (size_t i = 0; src && src[i] && o + 1 < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    dst[o] = '\0';
}

int k8s_request(struct k8s_client *c, const char *method, const char *path,
                const char *content_type, const char *body, struct k8s_reply *ret)
{
    struct xfer x = {.c = c};
    buf_init(&x.body, K8S_MAX_REPLY_BYTES);
    char errbuf[CURL_ERROR_SIZE] = "";
    int r = perform_auth(&x, method, path, content_type, body, REQUEST_TIMEOUT_S, errbuf);
    if (r < 0) {
        buf_done(&x.body);
        return r;
    }
    size_t len = x.body.len;
    char *b = buf_steal(&x.body);
    if (!b)
        return -ENOMEM;
    *ret = (struct k8s_reply){
        .http_status = x.status, .body = b, .len = len, .retry_after_s = (uint32_t)r};
    return 0;
}

static int status_to_errno(long st)
{
    if (st >= 200 && st < 300)
        return 0;
    switch (st) {
    case 401:
        return -EACCES;
    case 403:
        return -EPERM;
    case 404:
        return -ENOENT;
    case 409:
        return -EEXIST;
    case 410:
        return -ESTALE;
    case 429:
    case 503:
        return -EAGAIN;
    default:
        return -EPROTO;
    }
}

static void fill_status(struct k8s_status *st, long http, uint32_t retry_after, const char *body,
                        size_t len, const char *transport)
{
    if (!st)
        return;
    *st = (struct k8s_status){.http_status = http, .retry_after_s = retry_after};
    if (transport && *transport) {
        copy_printable(st->message, sizeof(st->message), transport);
        return;
    }
    _cleanup_json_ struct json_object *o = NULL;
    if (body && len > 0 && json_parse_strict(body, len, &o, NULL) >= 0) {
        const char *m = json_get_str(o, "message");
        if (m) {
            copy_printable(st->message, sizeof(st->message), m);
            return;
        }
    }
    if (body)
        copy_printable(st->message, sizeof(st->message) < 120 ? sizeof(st->message) : 120, body);
}

/* The status of a transfer that got no reply: the server, libcurl's words, and for a connection
 * that a client certificate may have been refused on, a hint saying so (with TLS 1.3 the server
 * verifies the certificate after the client's side of the handshake is done, so the client only
 * sees an alert or a reset connection). */
static void fill_transport_status(struct k8s_status *st, const struct xfer *x, int r,
                                  const char *errbuf)
{
    if (!st)
        return;
    const struct k8s_config *cfg = x->c->cfg;
    const char *what = errbuf[0] ? errbuf : strerror(-r);
    bool cert = cfg->cert_file || cfg->cert_data;
    const char *hint = "";
    switch (cert && x->status == 0 && x->error == 0 ? x->curl_code : CURLE_OK) {
    case CURLE_SSL_CERTPROBLEM:
        hint = " (the kubeconfig's client certificate or key cannot be used)";
        break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
#if LIBCURL_VERSION_NUM >= 0x074d00
    case CURLE_SSL_CLIENTCERT:
#endif
        hint = " (no reply: did it refuse the client certificate?)";
        break;
    default:
        break;
    }
    char m[sizeof(st->message)];
    snprintf(m, sizeof(m), "%s%s: %s", cfg->server, hint, what);
    fill_status(st, x->status, 0, NULL, 0, m);
}

int k8s_reply_check(const struct k8s_reply *r, struct k8s_status *ret_status)
{
    fill_status(ret_status, r->http_status, r->retry_after_s, r->body, r->len, NULL);
    return status_to_errno(r->http_status);
}

/* Appends "k=v" to a query, escaping v. */
static int query_add(struct buf *q, const char *k, const char *v)
{
    char *e = curl_easy_escape(NULL, v, 0);
    if (!e)
        return -ENOMEM;
    int r = buf_printf(q, "%s%s=%s", q->len ? "&" : "", k, e);
    curl_free(e);
    return r;
}

int k8s_list(struct k8s_client *c, const char *path, const char *query, uint32_t page_size,
             int (*cb)(struct json_object *item, void *ud), void *ud, char **ret_rv,
             struct k8s_status *ret_status)
{
    _cleanup_free_ char *cont = NULL, *rv = NULL;
    for (unsigned page = 0;; page++) {
        if (page >= K8S_MAX_LIST_PAGES)
            return -E2BIG;
        struct buf q;
        buf_init(&q, 64 * 1024);
        int r = 0;
        if (query && *query)
            r = buf_puts(&q, query);
        if (r >= 0)
            r = buf_printf(&q, "%slimit=%u", q.len ? "&" : "", page_size);
        if (r >= 0 && cont)
            r = query_add(&q, "continue", cont);
        _cleanup_free_ char *full = NULL;
        if (r >= 0 && asprintf(&full, "%s?%s", path, q.data) < 0) {
            full = NULL;
            r = -ENOMEM;
        }
        buf_done(&q);
        if (r < 0)
            return r;

        struct xfer x = {.c = c};
        buf_init(&x.body, K8S_MAX_LIST_PAGE_BYTES);
        char errbuf[CURL_ERROR_SIZE] = "";
        r = perform_auth(&x, "GET", full, NULL, NULL, REQUEST_TIMEOUT_S, errbuf);
        if (r < 0) {
            fill_transport_status(ret_status, &x, r, errbuf);
            buf_done(&x.body);
            return r;
        }
        int k = status_to_errno(x.status);
        if (k < 0) {
            fill_status(ret_status, x.status, (uint32_t)r, x.body.data, x.body.len, NULL);
            buf_done(&x.body);
            return k;
        }
        _cleanup_json_ struct json_object *o = NULL;
        const char *why = NULL;
        k = json_parse_strict(x.body.data ? x.body.data : "", x.body.len, &o, &why);
        buf_done(&x.body);
        struct json_object *items = NULL, *md = NULL;
        if (k < 0 || !json_object_is_type(o, json_type_object) ||
            !json_object_object_get_ex(o, "metadata", &md) ||
            !json_object_is_type(md, json_type_object)) {
            fill_status(ret_status, x.status, 0, NULL, 0, "the LIST reply is not a list object");
            return -EBADMSG;
        }
        if (json_object_object_get_ex(o, "items", &items) && items &&
            !json_object_is_type(items, json_type_array)) {
            fill_status(ret_status, x.status, 0, NULL, 0, "the LIST reply's items is no array");
            return -EBADMSG;
        }
        size_t n = items ? json_object_array_length(items) : 0;
        for (size_t i = 0; i < n; i++) {
            k = cb(json_object_array_get_idx(items, i), ud);
            if (k < 0)
                return k;
        }
        const char *v = json_get_str(md, "resourceVersion");
        free(rv);
        rv = v && *v ? strdup(v) : NULL;
        if (v && *v && !rv)
            return -ENOMEM;
        const char *next = json_get_str(md, "continue");
        free(cont);
        cont = NULL;
        if (!next || !*next)
            break;
        if (!(cont = strdup(next)))
            return -ENOMEM;
    }
    if (!rv) {
        fill_status(ret_status, 200, 0, NULL, 0, "the LIST reply has no resourceVersion");
        return -EBADMSG;
    }
    *ret_rv = TAKE_PTR(rv);
    return 0;
}

int k8s_watch(struct k8s_client *c, const char *path, const char *query, const char *rv,
              uint32_t timeout_s, k8s_event_fn cb, void *ud, struct k8s_status *ret_status)
{
    if (!rv || !*rv)
        return -EINVAL;
    struct buf q;
    buf_init(&q, 64 * 1024);
    int r = 0;
    if (query && *query)
        r = buf_puts(&q, query);
    if (r >= 0)
        r = buf_printf(&q, "%swatch=true&allowWatchBookmarks=true&timeoutSeconds=%u",
                       q.len ? "&" : "", timeout_s);
    if (r >= 0)
        r = query_add(&q, "resourceVersion", rv);
    _cleanup_free_ char *full = NULL;
    if (r >= 0 && asprintf(&full, "%s?%s", path, q.data) < 0) {
        full = NULL;
        r = -ENOMEM;
    }
    buf_done(&q);
    if (r < 0)
        return r;

    struct xfer x = {.c = c, .watching = true, .cb = cb, .ud = ud};
    x.dec = k8s_decoder_new(K8S_MAX_EVENT_BYTES);
    if (!x.dec)
        return -ENOMEM;
    buf_init(&x.body, K8S_MAX_REPLY_BYTES);
    char errbuf[CURL_ERROR_SIZE] = "";
    r = perform_auth(&x, "GET", full, NULL, NULL, (long)timeout_s + WATCH_GRACE_S, errbuf);
    if (r == -E2BIG || r == -EBADMSG) {
        const char *why = r == -E2BIG ? "a watch event is larger than the cap"
                                      : "the watch stream is not a sequence of events";
        fill_status(ret_status, x.status, 0, NULL, 0, why);
    } else if (r < 0) {
        fill_transport_status(ret_status, &x, r, errbuf);
    } else {
        int k = status_to_errno(x.status);
        if (k < 0 || x.status != 200) {
            fill_status(ret_status, x.status, (uint32_t)r, x.body.data, x.body.len, NULL);
            r = k < 0 ? k : -EPROTO;
        } else if (!k8s_decoder_idle(x.dec)) {
            fill_status(ret_status, x.status, 0, NULL, 0, "the watch stream ended inside an event");
            r = -EIO;
        } else {
            fill_status(ret_status, x.status, 0, NULL, 0, NULL);
            r = 0;
        }
    }
    buf_done(&x.body);
    k8s_decoder_free(x.dec);
    return r;
}

/* ---- the event decoder ---- */

struct k8s_decoder {
    struct json_tokener *tok;
    size_t max;
    size_t cur;  /* bytes of the current event so far */
    bool inside; /* an event has started */
    int failed;
    /* The start of a UTF-8 sequence the last piece cut off: json-c checks UTF-8 per piece, so a
     * character split by the network would fail the stream. Held back until it is complete. */
    char carry[4];
    size_t n_carry;
};

struct k8s_decoder *k8s_decoder_new(size_t max_event_bytes)
{
    struct k8s_decoder *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->tok = json_tokener_new_ex(K8S_MAX_EVENT_DEPTH);
    if (!d->tok) {
        free(d);
        return NULL;
    }
    json_tokener_set_flags(d->tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
                                       JSON_TOKENER_VALIDATE_UTF8);
    d->max = max_event_bytes;
    return d;
}

struct k8s_decoder *k8s_decoder_free(struct k8s_decoder *d)
{
    if (!d)
        return NULL;
    json_tokener_free(d->tok);
    free(d);
    return NULL;
}

bool k8s_decoder_idle(const struct k8s_decoder *d)
{
    return !d->inside && !d->failed && d->n_carry == 0;
}

static const struct {
    const char *name;
    enum k8s_event_type type;
} event_types[] = {
    {"ADDED", K8S_EVENT_ADDED},     {"MODIFIED", K8S_EVENT_MODIFIED},
    {"DELETED", K8S_EVENT_DELETED}, {"BOOKMARK", K8S_EVENT_BOOKMARK},
    {"ERROR", K8S_EVENT_ERROR},
};

static int dispatch(struct json_object *o, k8s_event_fn cb, void *ud)
{
    if (!json_object_is_type(o, json_type_object))
        return -EBADMSG;
    const char *type = json_get_str(o, "type");
    struct json_object *obj = NULL;
    if (!type || !json_object_object_get_ex(o, "object", &obj) ||
        !json_object_is_type(obj, json_type_object))
        return -EBADMSG;
    for (size_t i = 0; i < ELEMENTSOF(event_types); i++)
        if (streq(type, event_types[i].name)) {
            struct k8s_event ev = {.type = event_types[i].type, .object = obj};
            return cb(&ev, ud);
        }
    return -EBADMSG;
}

/* Bytes a UTF-8 sequence starting with lead has (1 for anything that starts no longer one). */
static size_t utf8_seq_len(unsigned char lead)
{
    return lead >= 0xF0 && lead <= 0xF4   ? 4
           : lead >= 0xE0 && lead <= 0xEF ? 3
           : lead >= 0xC2 && lead <= 0xDF ? 2
                                          : 1;
}

/* How many bytes at the end of data[0..len) are the unfinished start of a UTF-8 sequence (0-3). */
static size_t utf8_cut_tail(const char *data, size_t len)
{
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned char c = (unsigned char)data[len - back];
        if ((c & 0xC0) == 0x80)
            continue; /* a continuation byte: look further back for its lead */
        return utf8_seq_len(c) > back ? back : 0;
    }
    return 0;
}

static int feed_piece(struct k8s_decoder *d, const char *data, size_t len, k8s_event_fn cb,
                      void *ud);

int k8s_decoder_feed(struct k8s_decoder *d, const char *data, size_t len, k8s_event_fn cb, void *ud)
{
    if (d->failed)
        return d->failed;
    if (d->n_carry > 0) {
        size_t need = utf8_seq_len((unsigned char)d->carry[0]);
        while (d->n_carry < need && len > 0 && ((unsigned char)*data & 0xC0) == 0x80) {
            d->carry[d->n_carry++] = *data++;
            len--;
        }
        if (d->n_carry < need && len == 0)
            return 0;
        /* Complete, or broken off by a byte that continues no character: handed on either way
         * (a broken one fails exactly as it would have in one piece). */
        char whole[sizeof(d->carry)];
        size_t n = d->n_carry;
        memcpy(whole, d->carry, n);
        d->n_carry = 0;
        int r = feed_piece(d, whole, n, cb, ud);
        if (r < 0)
            return r;
    }
    size_t keep = utf8_cut_tail(data, len);
    int r = feed_piece(d, data, len - keep, cb, ud);
    if (r < 0)
        return r;
    memcpy(d->carry, data + len - keep, keep);
    d->n_carry = keep;
    return 0;
}

static int feed_piece(struct k8s_decoder *d, const char *data, size_t len, k8s_event_fn cb,
                      void *ud)
{
    size_t off = 0;
    int r = 0;
    while (off < len) {
        if (!d->inside) {
            char ch = data[off];
            if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') {
                off++;
                continue;
            }
            if (ch != '{') {
                r = -EBADMSG;
                break;
            }
            d->inside = true;
            d->cur = 0;
            json_tokener_reset(d->tok);
        }
        /* Never hand the tokener more than the cap allows, so memory stays bounded. And never past
         * a '}': an event ends at one, and json-c looks at (and UTF-8-checks) the byte after an
         * object when it has it, so an event followed by garbage would be delivered or not
         * depending on where the network cut the stream. */
        size_t room = d->max - d->cur + 1;
        size_t n = len - off < room ? len - off : room;
        const char *close = memchr(data + off, '}', n);
        if (close)
            n = (size_t)(close - (data + off)) + 1;
        if (n > INT32_MAX)
            n = INT32_MAX;
        struct json_object *o = json_tokener_parse_ex(d->tok, data + off, (int)n);
        enum json_tokener_error e = json_tokener_get_error(d->tok);
        if (e == json_tokener_continue) {
            d->cur += n;
            off += n;
            if (d->cur > d->max) {
                r = -E2BIG;
                break;
            }
            continue;
        }
        if (e != json_tokener_success) {
            r = -EBADMSG;
            break;
        }
        size_t used = json_tokener_get_parse_end(d->tok);
        d->cur += used;
        off += used;
        d->inside = false;
        if (d->cur > d->max) {
            json_object_put(o);
            r = -E2BIG;
            break;
        }
        r = dispatch(o, cb, ud);
        json_object_put(o);
        if (r < 0)
            break;
    }
    if (r < 0)
        d->failed = r;
    return r;
}

/* ---- helpers ---- */

const char *k8s_meta_str(struct json_object *obj, const char *key)
{
    struct json_object *md = NULL;
    if (!obj || !json_object_object_get_ex(obj, "metadata", &md))
        return NULL;
    return json_get_str(md, key);
}

uint64_t k8s_backoff_ms(unsigned failures, double rnd)
{
    uint64_t d = K8S_BACKOFF_INITIAL_MS;
    for (unsigned i = 1; i < failures && d < K8S_BACKOFF_MAX_MS; i++)
        d *= 2;
    if (d > K8S_BACKOFF_MAX_MS)
        d = K8S_BACKOFF_MAX_MS;
    /* Jitter: a factor in [1, 1.5), then the cap again, so clients that failed together spread. */
    if (rnd < 0 || rnd >= 1)
        rnd = 0;
    d = (uint64_t)((double)d * (1.0 + 0.5 * rnd));
    return d > K8S_BACKOFF_MAX_MS ? K8S_BACKOFF_MAX_MS : d;
}
