/* SPDX-License-Identifier: Apache-2.0 */
/*
 * idbrokerd: the node broker. Owns every long-lived object (struct broker), wires the modules
 * together, handles signals (SIGHUP reload, SIGTERM/SIGINT stop) and polls the files source for
 * changes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <idbroker/ctl-proto.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "aai.h"
#include "broker.h"
#include "conf.h"
#include "conflist-watch.h"
#include "control.h"
#include "host-api.h"
#include "http-server.h"
#include "issuer.h"
#include "k8s-client.h"
#include "k8s-watch.h"
#include "manifest.h"
#include "metrics.h"
#include "netaddr.h"
#include "plugin-loader.h"
#include "provider-client.h"
#include "provider-host.h"
#include "registry.h"
#include "store.h"
#include "token-cache.h"
#include "token-endpoint.h"
#include "unprotected.h"

#define SHUTDOWN_GRACE_MS 2000
#define TRIM_INTERVAL_MS 10000
#define UNPROTECTED_SCAN_MS 5000
#define MALLOC_ARENAS 4

static struct broker *the_broker;

static int host_issue_via(const char *provider, const struct idb_token_req *req,
                          struct idb_token *ret)
{
    if (!the_broker || !the_broker->issuer)
        return -ENOTSUP;
    return issuer_issue_via(the_broker->issuer, provider, req, ret);
}

static void bad_registration(const char *path, int error, const char *why, void *ud)
{
    (void)ud;
    log_warning_errno(error, "state: registration file '%s' is invalid (%s), ignoring", path, why);
}

/* The provider host's issue_via requests (provider-client.h). */
static int via_from_host(void *ud, const char *provider, const struct idb_token_req *req,
                         struct idb_token *ret)
{
    (void)ud;
    return host_issue_via(provider, req, ret);
}

/* providerIsolation "process": the providers are loaded by the provider host process, with the same
 * loader and the same refusals; the broker keeps what the host reports about them. */
static int load_providers_isolated(struct broker *b)
{
    const struct broker_conf *c = b->conf;
    /* Where this very program is: /proc/self/exe, or (no /proc, e.g. in a chroot) the path it
     * was started by, as the kernel recorded it (relative to the working directory, unchanged). */
    const char *exe = "/proc/self/exe";
    if (access(exe, X_OK) < 0 && getauxval(AT_EXECFN))
        exe = (const char *)getauxval(AT_EXECFN);
    struct provider_client_options o = {
        .exe = exe,
        .plugin_dir = c->plugin_dir,
        .log_level = c->log_level,
        .log_format = c->log_format,
        .timeout_ms = c->provider_timeout_ms,
        .via = via_from_host,
    };
    b->provider_host = provider_client_new(&o);
    if (!b->provider_host)
        return log_error_errno(-ENOMEM, "out of memory at start");
    _cleanup_free_ char *err = NULL;
    int r = provider_client_start(b->provider_host, &err);
    if (r < 0)
        log_error("%s", err ? err : idb_strerror(r));
    for (size_t i = 0; i < c->n_providers; i++) {
        free(TAKE_PTR(err));
        struct provider_info info;
        int k = provider_client_load(b->provider_host, c->providers[i].name, c->providers[i].json,
                                     &info, &err);
        if (k < 0) {
            log_error("%s", err ? err : idb_strerror(k));
            r = k;
            continue;
        }
        k = plugin_set_add_remote(b->plugins, c->providers[i].name, info.path, info.version,
                                  info.abi_major, info.abi_minor, provider_client_issue,
                                  b->provider_host);
        if (k < 0) {
            log_error_errno(k, "provider '%s': cannot register it: %s", c->providers[i].name,
                            idb_strerror(k));
            r = k;
        } else
            log_info("provider '%s' loaded from '%s' (ABI %u.%u) in the provider host (pid %d)",
                     c->providers[i].name, info.path, info.abi_major, info.abi_minor,
                     (int)provider_client_pid(b->provider_host));
        provider_info_done(&info);
    }
    int k = provider_client_run(b->provider_host);
    if (k < 0)
        return log_error_errno(k, "cannot supervise the provider host: %s", idb_strerror(k));
    return r;
}

static int load_providers(struct broker *b)
{
    const struct broker_conf *c = b->conf;
    if (c->provider_isolation == PROVIDER_ISOLATION_PROCESS)
        return load_providers_isolated(b);
    int r = 0;
    for (size_t i = 0; i < c->n_providers; i++) {
        _cleanup_free_ char *err = NULL;
        int k = plugin_set_load(b->plugins, c->plugin_dir, c->providers[i].name,
                                c->providers[i].json, host_api_get(), &err);
        if (k < 0) {
            log_error("%s", err ? err : idb_strerror(k));
            r = k;
            continue;
        }
        const struct plugin *p = plugin_set_find(b->plugins, c->providers[i].name);
        log_info("provider '%s' loaded from '%s' (ABI %u.%u), inline", p->name, p->path,
                 p->abi_major, p->abi_minor);
    }
    return r;
}

/* The token endpoint's dedicated link-local address must exist before we bind (see netaddr.h). */
static void ensure_listen_address(const char *listen)
{
    struct sockaddr_storage ss;
    unsigned len;
    char ip[INET6_ADDRSTRLEN];
    if (conf_parse_listen(listen, &ss, &len) < 0)
        return;
    const void *a = ss.ss_family == AF_INET
                        ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                        : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
    if (!inet_ntop(ss.ss_family, a, ip, sizeof(ip)) || !netaddr_is_managed(ip))
        return;
    int r = netaddr_ensure(ip);
    if (r < 0)
        log_warning_errno(r, "cannot add the listen address %s to lo, binding may fail", ip);
    else if (r > 0)
        log_info("added the broker address %s/32 to lo", ip);
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: idbrokerd [--config FILE] [--check-config] [--version] [--help]\n"
            "\n"
            "The idbroker node daemon: an IMDS-compatible token endpoint that gives each pod the\n"
            "token of the identity bound to it.\n"
            "\n"
            "  -c, --config FILE    configuration file (default " CONF_DEFAULT_PATH
            " if it exists,\n"
            "                       else built-in defaults)\n"
            "      --check-config   parse the configuration and the policy source, then exit\n"
            "  -V, --version        print the version\n"
            "  -h, --help           this text\n"
            "\n"
            "Signals: SIGHUP reloads the configuration and the policy; SIGTERM/SIGINT stop.\n"
            "Docs: docs/operating.md, docs/configuration.md\n");
}

/* Kubernetes source: a store change evicts stale tokens and updates the AzureAssignedIdentities. */
static void k8s_changed(void *ud)
{
    struct broker *b = ud;
    issuer_evict_stale(b->issuer);
    aai_writer_notify(b->aai);
}

static int k8s_source_start(struct broker *b)
{
    struct k8s_watch_options wo = {
        .client = b->k8s,
        .policy = &b->policy,
        .node_name = b->conf->node_name,
        .on_change = k8s_changed,
        .on_change_ud = b,
        .aai = b->aai ? aai_writer_sink(b->aai) : NULL,
    };
    int r = k8s_watch_start(&wo, &b->watch);
    if (r < 0)
        return log_error_errno(r, "cannot start the Kubernetes watch");
    log_info("watching the Kubernetes API at %s for node '%s'", k8s_client_server(b->k8s),
             b->conf->node_name);
    return 0;
}

static bool has_registration(const char *ns, const char *name, void *ud)
{
    return registry_has_pod(ud, ns, name);
}

/* Pods of this node without idbroker (unprotected.h), once the pods are listed. */
static void scan_unprotected(struct broker *b)
{
    policy_read_lock(&b->policy);
    int n = b->policy.synced ? unprotected_scan(b->unprotected, b->policy.store, b->conf->node_name,
                                                has_registration, b->registry)
                             : -EAGAIN;
    policy_read_unlock(&b->policy);
    if (n == -ENOMEM)
        log_warning("out of memory scanning for unprotected pods, trying again later");
    if (n < 0)
        return;
    __atomic_store_n(&b->unprotected_pods, (size_t)n, __ATOMIC_RELAXED);
    metrics_set(G_UNPROTECTED_PODS, n);
}

static void broker_shutdown(struct broker *b)
{
    b->ctl = control_server_stop(b->ctl);
    b->http = http_server_stop(b->http);
    b->health = http_server_stop(b->health);
    if (b->k8s)
        k8s_client_stop(b->k8s);
    b->cni = conflist_watch_free(b->cni);
    b->watch = k8s_watch_free(b->watch);
    b->unprotected = unprotected_free(b->unprotected);
    b->aai = aai_writer_free(b->aai);
    b->k8s = k8s_client_free(b->k8s);
    /* The provider host goes before the cache: its calls in flight fail at once, so the cache
     * drains fast. Its issue_via requests use the issuer and the cache, which must outlive them. */
    if (provider_client_stop(b->provider_host) < 0) {
        log_warning("an issue_via request of the provider host is still running, exiting without "
                    "waiting");
        _exit(0);
    }
    /* A provider call that hangs must not hold up the exit: give running fetches a grace period,
     * then leave without freeing what they still use (the registrations are on disk already). */
    if (token_cache_wait_idle(b->cache, now_monotonic_ms() + SHUTDOWN_GRACE_MS) < 0) {
        log_warning("a provider call is still running after %d ms, exiting without waiting",
                    SHUTDOWN_GRACE_MS);
        _exit(0);
    }
    b->te = token_endpoint_free(b->te);
    b->issuer = issuer_free(b->issuer);
    b->cache = token_cache_free(b->cache);
    b->provider_host = provider_client_free(b->provider_host);
    b->plugins = plugin_set_free(b->plugins);
    b->registry = registry_free(b->registry);
    policy_done(&b->policy);
    host_api_done();
    b->conf = conf_free(b->conf);
    free(b->source_dir);
    free(b->last_error);
    free(b->conf_path);
    pthread_mutex_destroy(&b->reload_lock);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        /* Internal: run as the provider host on channel fd (provider-host.h); not in --help. */
        {"provider-host", required_argument, NULL, 'P'},
        {NULL, 0, NULL, 0},
    };
    const char *conf_path = NULL;
    bool check_only = false;
    int c;
    /* glibc gives threads up to 8 arenas per core, each keeping its own free pages. The event loop
     * does most allocations on http.threads threads; the short-lived threads of deferred requests
     * and the reflectors would otherwise each leave an arena behind (docs/performance.md). */
    mallopt(M_ARENA_MAX, MALLOC_ARENAS);
    while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) >= 0) {
        switch (c) {
        case 'c':
            conf_path = optarg;
            break;
        case 'C':
            check_only = true;
            break;
        case 'V':
            printf("idbrokerd %s (provider ABI %d.%d)\n", IDB_VERSION, IDB_PLUGIN_ABI_MAJOR,
                   IDB_PLUGIN_ABI_MINOR);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case 'P': {
            char *end = NULL;
            long fd = strtol(optarg, &end, 10);
            if (!end || *end || fd < 3 || fd > 1024) {
                fprintf(stderr, "idbrokerd: invalid --provider-host fd '%s'\n", optarg);
                return 2;
            }
            return provider_host_main((int)fd);
        }
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "idbrokerd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!conf_path && access(CONF_DEFAULT_PATH, F_OK) == 0)
        conf_path = CONF_DEFAULT_PATH;

    struct broker b = {.started = time(NULL)};
    pthread_mutex_init(&b.reload_lock, NULL);
    int r;
    _cleanup_free_ char *err = NULL;
    if (conf_path)
        r = conf_load(conf_path, &b.conf, &err);
    else
        r = conf_new_default(&b.conf);
    if (r < 0) {
        fprintf(stderr, "idbrokerd: %s\n", err ? err : idb_strerror(r));
        return 1;
    }
    b.conf_path = conf_path ? strdup(conf_path) : NULL;
    log_setup(b.conf->log_level, (enum log_format)b.conf->log_format, STDERR_FILENO);

    bool kube = b.conf->source_kind == SOURCE_KUBERNETES;
    struct k8s_config *kcfg = NULL;
    if (kube) {
        r = k8s_config_load(b.conf->kubeconfig, &kcfg, &err);
        if (r < 0) {
            fprintf(stderr, "idbrokerd: %s\n", err ? err : idb_strerror(r));
            conf_free(b.conf);
            free(b.conf_path);
            return 1;
        }
        if (check_only) {
            printf("configuration '%s' is valid; Kubernetes API at %s (%s)\n", strna(conf_path),
                   kcfg->server, kcfg->origin);
            k8s_config_free(kcfg);
            conf_free(b.conf);
            free(b.conf_path);
            return 0;
        }
    }
    b.source_dir = strdup(b.conf->source_dir);

    if (check_only) {
        struct store *s = NULL;
        r = source_files_load(b.source_dir, &s, &err);
        if (r < 0) {
            fprintf(stderr, "idbrokerd: %s\n", err ? err : idb_strerror(r));
            return 1;
        }
        printf("configuration '%s' and policy '%s' are valid: %zu identities, %zu bindings\n",
               strna(conf_path), b.source_dir, store_count_identities(s), store_count_bindings(s));
        store_free(s);
        return 0;
    }

    /* Every thread inherits this mask; the main thread takes the signals with sigtimedwait. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    the_broker = &b;
    struct store_policy flags;
    broker_policy_flags(b.conf, &flags);
    struct tc_options tco;
    broker_cache_options(b.conf, &tco);
    if (host_api_init(host_issue_via) < 0 || policy_init(&b.policy, &flags, !kube) < 0 ||
        !(b.registry = registry_new(b.conf->state_dir)) || !(b.plugins = plugin_set_new()) ||
        !(b.cache = token_cache_new(&tco))) {
        log_error("out of memory at start");
        return 1;
    }
    if (kube) {
        r = k8s_client_new(kcfg, &b.k8s);
        if (r >= 0) {
            kcfg = NULL;
            struct aai_options ao = {
                .client = b.k8s, .policy = &b.policy, .node_name = b.conf->node_name};
            r = aai_writer_start(&ao, &b.aai);
        }
        if (r < 0) {
            k8s_config_free(kcfg);
            log_error_errno(r, "cannot set up the Kubernetes client");
            return 1;
        }
    }
    struct issuer_options io;
    broker_issuer_options(b.conf, &b, &io);
    if (!(b.issuer = issuer_new(&io))) {
        log_error("out of memory at start");
        return 1;
    }

    r = registration_dir_ensure(b.conf->state_dir);
    if (r < 0) {
        log_error_errno(r, "cannot create state directory '%s'", b.conf->state_dir);
        return 1;
    }
    r = registry_load(b.registry, bad_registration, NULL);
    if (r < 0) {
        log_error_errno(r, "cannot load registrations from '%s'", b.conf->state_dir);
        return 1;
    }
    log_info("%d registrations loaded from '%s'", r, b.conf->state_dir);

    b.plugins_ok = load_providers(&b) >= 0;
    if (b.conf->cni_conf_dir[0]) {
        struct conflist_watch_options co = {
            .dir = b.conf->cni_conf_dir, .node_name = b.conf->node_name, .k8s = b.k8s};
        r = conflist_watch_start(&co, &b.cni);
        if (r < 0) {
            log_error_errno(r, "cannot watch the CNI configuration in '%s'", b.conf->cni_conf_dir);
            return 1;
        }
    }
    if (kube && k8s_source_start(&b) < 0)
        return 1;
    if (kube && !(b.unprotected = unprotected_new())) {
        log_error("out of memory at start");
        return 1;
    }
    broker_reload_source(&b, true);

    r = control_server_start(b.conf->control_socket, broker_ctl_ops, &b, &b.ctl);
    if (r < 0) {
        log_error_errno(r, "cannot open control socket '%s'", b.conf->control_socket);
        return 1;
    }
    /* A CNI ADD or DEL since the first load could not tell us (no control socket yet; the plugin
     * only logs that): read the state directory again, now that every later change is notified,
     * and before the first token request, so that no registered pod is ever unknown. Bad files
     * were reported by the first load. */
    r = registry_load(b.registry, NULL, NULL);
    if (r < 0)
        log_warning_errno(r, "cannot reload registrations from '%s': %s", b.conf->state_dir,
                          idb_strerror(r));
    else
        log_debug("%d registrations after opening the control socket", r);
    struct token_endpoint_options teo = {
        .listen_host = b.conf->listen,
        .proxy_instance = b.conf->proxy_instance,
        .proxy_versions = b.conf->proxy_versions,
        .instance_namespaces = b.conf->instance_namespaces.v,
        .n_instance_namespaces = b.conf->instance_namespaces.n,
        .versions_namespaces = b.conf->versions_namespaces.v,
        .n_versions_namespaces = b.conf->versions_namespaces.n,
        .imds_endpoint = b.conf->imds_endpoint,
        .retry_after_s = b.conf->retry_after_s,
    };
    struct http_server_options hso = {
        .max_connections = b.conf->http_max_connections,
        .max_per_ip = b.conf->http_max_per_ip,
        .timeout_s = b.conf->http_timeout_s,
        .threads = b.conf->http_threads,
    };
    ensure_listen_address(b.conf->listen);
    b.te = token_endpoint_new(b.issuer, &teo);
    if (!b.te) {
        log_error("out of memory at start");
        return 1;
    }
    free(TAKE_PTR(err));
    b.http = http_server_start(b.conf->listen, &hso, token_endpoint_handle, b.te, &err);
    if (!b.http) {
        log_error("cannot serve tokens on '%s': %s", b.conf->listen, strna(err));
        return 1;
    }
    free(TAKE_PTR(err));
    struct http_server_options hh = {.max_connections = 64, .max_per_ip = 16, .timeout_s = 10};
    b.health = http_server_start(b.conf->health_listen, &hh, health_handle, &b, &err);
    if (!b.health) {
        log_error("cannot serve health and metrics on '%s': %s", b.conf->health_listen, strna(err));
        return 1;
    }
    log_notice("idbrokerd %s serving tokens on %s (node '%s'), health on %s, control at %s",
               IDB_VERSION, b.conf->listen, b.conf->node_name, b.conf->health_listen,
               b.conf->control_socket);

    uint64_t last_trim_ms = now_monotonic_ms(), last_scan_ms = last_trim_ms;
    for (;;) {
        uint32_t ms = b.conf->source_poll_ms ? b.conf->source_poll_ms : 1000;
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            log_notice("received %s, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
        if (sig == SIGHUP) {
            log_info("received SIGHUP, reloading");
            broker_reload(&b, NULL);
            continue;
        }
        pthread_mutex_lock(&b.reload_lock);
        broker_reload_source(&b, false);
        pthread_mutex_unlock(&b.reload_lock);
        uint64_t now = now_monotonic_ms();
        if (b.unprotected && now - last_scan_ms >= UNPROTECTED_SCAN_MS) {
            scan_unprotected(&b);
            last_scan_ms = now;
        }
        /* A burst of connections leaves its per-connection memory free in the malloc arenas of
         * threads that are gone: hand whole free pages back now and then (a few ms at most). */
        if (now - last_trim_ms >= TRIM_INTERVAL_MS) {
            malloc_trim(0);
            last_trim_ms = now;
        }
    }
    broker_shutdown(&b);
    the_broker = NULL;
    return 0;
}
