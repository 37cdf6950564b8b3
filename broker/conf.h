/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Broker configuration (DESIGN §7, STYLE R16): one JSON file, parsed by a declarative table. Every
 * key has a default (conf/idbrokerd.json lists them all; docs/configuration.md explains each).
 * Unknown keys and wrong types are errors naming the file, the key path and the bad value.
 */
#ifndef IDB_BROKER_CONF_H
#define IDB_BROKER_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONF_DEFAULT_PATH "/etc/idbroker/idbrokerd.json"
#define CONF_DEFAULT_LISTEN "169.254.169.250:2579"
#define CONF_DEFAULT_HEALTH_LISTEN "127.0.0.1:2580"
#define CONF_MAX_TYPES 3 /* AzureIdentity spec.type 0, 1, 2 */

enum source_kind {
    SOURCE_FILES,
    SOURCE_KUBERNETES,
};

/* Where provider plugins run (THREATS T19). */
enum provider_isolation {
    PROVIDER_ISOLATION_PROCESS, /* in the provider host process, restarted when it dies */
    PROVIDER_ISOLATION_INLINE,  /* dlopen()ed into idbrokerd itself (debugging, benchmarks) */
};

/* A list of names from the file ("metadataProxy.instanceNamespaces"), in file order. */
struct conf_names {
    char **v;
    size_t n;
};

struct provider_conf {
    char *name; /* [a-z0-9-]+ */
    char *json; /* the plugin's object, as JSON text */
};

struct broker_conf {
    char *path;           /* file it was read from, or "<defaults>" */
    char *node_name;      /* "nodeName"; null or absent: gethostname(), lower-cased */
    char *listen;         /* "listen": "IP:PORT" of the token endpoint ([v6]:port accepted) */
    char *health_listen;  /* "healthListen" */
    char *control_socket; /* "controlSocket" */
    char *state_dir;      /* "stateDir" */
    char *plugin_dir;     /* "pluginDir" */

    enum source_kind source_kind; /* "source.kind" */
    char *source_dir;             /* "source.dir" (files) */
    char *kubeconfig;             /* "source.kubeconfig" (kubernetes; null/NULL = in-cluster) */
    uint32_t source_poll_ms;      /* "source.pollIntervalMs": files mode change check */

    struct provider_conf *providers; /* "providers": one per key, in file order */
    size_t n_providers;
    char *type_providers[CONF_MAX_TYPES];       /* "typeProviders" */
    enum provider_isolation provider_isolation; /* "providerIsolation" */

    bool namespaced;       /* "namespaced" */
    bool strict_selection; /* "strictSelection" */
    bool exceptions;       /* "exceptions" */

    int log_level;  /* "log.level" (syslog level) */
    int log_format; /* "log.format" (enum log_format) */
    bool log_audit; /* "log.audit" */

    uint32_t sync_timeout_ms;     /* "syncTimeoutMs": wait for identity data of a known pod */
    uint32_t provider_timeout_ms; /* "providerTimeoutMs": deadline of one provider call */
    uint32_t retry_after_s;       /* "retryAfterSeconds" on 503 */

    uint32_t cache_max_entries; /* "cache.maxEntries" */
    uint32_t cache_min_ttl_s;   /* "cache.minTtlSeconds": never serve a token with less left */
    uint32_t cache_negative_ms; /* "cache.negativeTtlMs": remember provider failures this long */

    uint32_t rate_per_pod; /* "rateLimit.requestsPerSecond" per pod; 0 = off */
    uint32_t rate_burst;   /* "rateLimit.burst" */

    bool proxy_instance; /* "metadataProxy.instance": proxy /metadata/instance to the node IMDS */
    bool proxy_versions; /* "metadataProxy.versions" */
    /* "metadataProxy.instanceNamespaces" / "versionsNamespaces": pods of these namespaces get the
     * path proxied even when the boolean is false (THREATS T8) */
    struct conf_names instance_namespaces;
    struct conf_names versions_namespaces;
    char *imds_endpoint; /* "metadataProxy.endpoint" */

    char *cni_conf_dir; /* "cni.confDir": watched for idbroker in the network config; "" = off */

    uint32_t http_max_connections; /* "http.maxConnections" */
    uint32_t http_max_per_ip;      /* "http.maxConnectionsPerPod" */
    uint32_t http_timeout_s;       /* "http.timeoutSeconds" */
    uint32_t http_threads;         /* "http.threads": 0 = a thread per connection */
};

/* Returns new (*ret, free with conf_free()): the configuration with every default; path
 * "<defaults>". -ENOMEM, or -errno if gethostname() fails. */
int conf_new_default(struct broker_conf **ret);
/* Parses text[0..len) (borrowed; need not be NUL-terminated): exactly one JSON object, nothing but
 * white space after it, at most CONF_MAX_FILE_BYTES and CONF_MAX_DEPTH deep. Keys absent from it
 * keep their defaults. `path` (borrowed, NULL = "<config>") names the source in messages and is
 * copied to ->path. Returns 0 and *ret (returns new), or -EBADMSG (not JSON / not one object),
 * -EINVAL (unknown key, wrong type, bad value), -E2BIG, -ENOMEM. On failure *ret_error (optional;
 * returns new, caller frees; NULL if even that allocation failed) says e.g. "FILE: key 'a.b':
 * expected …, got '…'". Never partial: *ret is written only on success, *ret_error only on failure.
 */
int conf_parse(const char *text, size_t len, const char *path, struct broker_conf **ret,
               char **ret_error);
/* Reads `path` (capped at CONF_MAX_FILE_BYTES) and parses it as conf_parse() does. Errors as there,
 * plus -errno / -E2BIG from reading, with *ret_error "cannot read 'PATH': …". */
int conf_load(const char *path, struct broker_conf **ret, char **ret_error);
/* Frees c and everything it owns (provider JSON is wiped first). Accepts NULL; returns NULL. */
struct broker_conf *conf_free(struct broker_conf *c);
/* The provider name (borrowed from c) for an AzureIdentity spec.type, or NULL outside 0..2. */
const char *conf_type_provider(const struct broker_conf *c, int type);
/* Whether `name` is one of list's names. Both borrowed. */
bool conf_names_contain(const struct conf_names *list, const char *name);
/* The "providers" entry called `name` (borrowed from c), or NULL. */
const struct provider_conf *conf_find_provider(const struct broker_conf *c, const char *name);
/* For reload on SIGHUP: the key path (static string) of the first key whose new value differs from
 * the old one but takes effect only on restart (listen, stateDir, source.*, …;
 * docs/configuration.md lists them), or NULL if `new_conf` can be applied in place. Both borrowed.
 */
const char *conf_restart_key(const struct broker_conf *old_conf,
                             const struct broker_conf *new_conf);
/* Splits "IPv4:PORT" / "[IPv6]:PORT" (numeric only, no host names, no zone ids; port 1..65535) into
 * a sockaddr_in / sockaddr_in6. Both out-parameters optional (NULL = only validate); written only
 * on success. Returns -EINVAL on any other form. */
struct sockaddr_storage;
int conf_parse_listen(const char *s, struct sockaddr_storage *ret, unsigned *ret_len);

#endif
