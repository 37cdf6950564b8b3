/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The running broker's reload and readiness (broker.h), shared by main.c and the reporting modules
 * (ctl-ops.c, health.c). Moved from main.c unchanged, so that unit tests can link them.
 */
#include "broker.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "aai.h"
#include "conf.h"
#include "conflist-watch.h"
#include "issuer.h"
#include "manifest.h"
#include "metrics.h"
#include "policy.h"
#include "provider-client.h"
#include "store.h"
#include "token-cache.h"

void broker_issuer_options(const struct broker_conf *c, struct broker *b, struct issuer_options *o)
{
    *o = (struct issuer_options){
        .registry = b->registry,
        .policy = &b->policy,
        .cache = b->cache,
        .plugins = b->plugins,
        .sync_timeout_ms = c->sync_timeout_ms,
        .provider_timeout_ms = c->provider_timeout_ms,
        .retry_after_s = c->retry_after_s,
        .rate_per_pod = c->rate_per_pod,
        .rate_burst = c->rate_burst,
        .audit = c->log_audit,
        .on_issued = b->aai ? aai_writer_issued : NULL,
        .on_issued_ud = b->aai,
    };
    for (int i = 0; i < 3; i++)
        o->type_providers[i] = conf_type_provider(c, i);
}

void broker_cache_options(const struct broker_conf *c, struct tc_options *o)
{
    *o = (struct tc_options){
        .max_entries = c->cache_max_entries,
        .min_ttl_s = c->cache_min_ttl_s,
        .negative_ms = c->cache_negative_ms,
    };
}

void broker_policy_flags(const struct broker_conf *c, struct store_policy *f)
{
    *f = (struct store_policy){
        .namespaced = c->namespaced,
        .strict_selection = c->strict_selection,
        .exceptions = c->exceptions,
    };
}

static void set_last_error(struct broker *b, const char *e)
{
    free(b->last_error);
    b->last_error = e ? strdup(e) : NULL;
}

int broker_reload_source(struct broker *b, bool force)
{
    if (b->conf->source_kind != SOURCE_FILES)
        return 0;
    uint64_t fp = 0;
    int r = source_files_fingerprint(b->source_dir, &fp);
    if (r < 0 && !force) {
        if (b->source_fingerprint_valid || !b->last_error) {
            char m[512];
            snprintf(m, sizeof(m), "cannot read source directory '%s': %s", b->source_dir,
                     idb_strerror(r));
            log_error("%s", m);
            set_last_error(b, m);
            b->source_fingerprint_valid = false;
        }
        return r;
    }
    if (!force && b->source_fingerprint_valid && fp == b->source_fingerprint)
        return 0;
    struct store *s = NULL;
    _cleanup_free_ char *err = NULL;
    b->source_fingerprint = fp;
    b->source_fingerprint_valid = r >= 0;
    r = source_files_load(b->source_dir, &s, &err);
    if (r < 0) {
        metrics_inc(M_SOURCE_RELOAD_ERRORS);
        log_error("policy not reloaded, the last good policy stays in force: %s",
                  err ? err : idb_strerror(r));
        set_last_error(b, err ? err : idb_strerror(r));
        return r;
    }
    size_t ni = store_count_identities(s), nb = store_count_bindings(s), np = store_count_pods(s),
           ne = store_count_exceptions(s);
    policy_replace(&b->policy, s);
    /* Loading parsed every file into short-lived trees, and the old store is gone now: give the
     * free pages back instead of keeping the peak resident. */
    malloc_trim(0);
    size_t evicted = issuer_evict_stale(b->issuer);
    metrics_inc(M_SOURCE_RELOADS);
    b->last_reload = time(NULL);
    set_last_error(b, NULL);
    log_info("policy loaded from '%s': %zu identities, %zu bindings, %zu exceptions, %zu pods; %zu "
             "cached tokens dropped",
             b->source_dir, ni, nb, ne, np, evicted);
    return 1;
}

#define SWAP(a, b)                                                                                 \
    do {                                                                                           \
        __typeof__(a) t_ = (a);                                                                    \
        (a) = (b);                                                                                 \
        (b) = t_;                                                                                  \
    } while (0)

/* Settings that only take effect at start keep their running values; a reload that changes them
 * says so (docs/configuration.md marks them "restart"). Swapping rather than copying lets
 * conf_free() free each side's own strings. */
static void keep_restart_settings(struct broker_conf *old, struct broker_conf *new)
{
    const char *k = conf_restart_key(old, new);
    if (k)
        log_warning("reload: '%s' changed; it takes effect at restart, ignoring until restart", k);
    SWAP(old->node_name, new->node_name);
    SWAP(old->listen, new->listen);
    SWAP(old->health_listen, new->health_listen);
    SWAP(old->control_socket, new->control_socket);
    SWAP(old->state_dir, new->state_dir);
    SWAP(old->plugin_dir, new->plugin_dir);
    SWAP(old->source_dir, new->source_dir);
    SWAP(old->kubeconfig, new->kubeconfig);
    SWAP(old->imds_endpoint, new->imds_endpoint);
    SWAP(old->instance_namespaces, new->instance_namespaces);
    SWAP(old->versions_namespaces, new->versions_namespaces);
    SWAP(old->cni_conf_dir, new->cni_conf_dir);
    new->source_kind = old->source_kind;
    new->provider_isolation = old->provider_isolation;
    new->cache_max_entries = old->cache_max_entries;
    new->http_max_connections = old->http_max_connections;
    new->http_max_per_ip = old->http_max_per_ip;
    new->http_timeout_s = old->http_timeout_s;
    new->http_threads = old->http_threads;
    new->proxy_instance = old->proxy_instance;
    new->proxy_versions = old->proxy_versions;
    bool same = old->n_providers == new->n_providers;
    for (size_t i = 0; same && i < old->n_providers; i++)
        same = streq(old->providers[i].name, new->providers[i].name) &&
               streq(old->providers[i].json, new->providers[i].json);
    if (!same)
        log_warning("reload: 'providers' changed; providers are loaded at start, ignoring until "
                    "restart");
    SWAP(old->providers, new->providers);
    SWAP(old->n_providers, new->n_providers);
}

int broker_reload(struct broker *b, char **ret_error)
{
    pthread_mutex_lock(&b->reload_lock);
    int r = 0;
    if (b->conf_path) {
        struct broker_conf *c = NULL;
        char *err = NULL;
        r = conf_load(b->conf_path, &c, &err);
        if (r < 0) {
            log_error("reload: configuration not changed: %s", strna(err));
            set_last_error(b, err);
            if (ret_error)
                *ret_error = err;
            else
                free(err);
            pthread_mutex_unlock(&b->reload_lock);
            return r;
        }
        keep_restart_settings(b->conf, c);
        log_setup(c->log_level, (enum log_format)c->log_format, STDERR_FILENO);
        if (b->provider_host)
            provider_client_set_log(b->provider_host, c->log_level, c->log_format);
        struct store_policy f;
        broker_policy_flags(c, &f);
        policy_set_flags(&b->policy, &f);
        struct tc_options tco;
        broker_cache_options(c, &tco);
        token_cache_set_options(b->cache, &tco);
        struct broker_conf *old = b->conf;
        b->conf = c;
        struct issuer_options io;
        broker_issuer_options(c, b, &io);
        issuer_set_options(b->issuer, &io);
        conf_free(old);
    }
    r = broker_reload_source(b, true);
    if (r < 0 && ret_error && b->last_error)
        *ret_error = strdup(b->last_error);
    pthread_mutex_unlock(&b->reload_lock);
    if (r >= 0)
        log_info("reloaded%s", b->conf_path ? " configuration and policy" : " policy");
    return r < 0 ? r : 0;
}

bool broker_ready(struct broker *b, char *ret_why, size_t size)
{
    const char *why = NULL;
    if (!b->plugins_ok)
        why = "a configured provider failed to load";
    else if (b->provider_host && !provider_client_up(b->provider_host))
        why = "the provider host process is not running (it is being restarted)";
    else if (!b->policy.synced)
        why = "the policy source has not been loaded yet";
    else if (b->cni && !conflist_watch_ok(b->cni, ret_why, size))
        return false; /* THREATS T21: the reason names the CNI configuration file */
    if (ret_why && why)
        snprintf(ret_why, size, "%s", why);
    return !why;
}
