/* SPDX-License-Identifier: Apache-2.0 */
/* Every hard cap on input from outside, in one place (STYLE R11). */
#ifndef IDB_BROKER_LIMITS_H
#define IDB_BROKER_LIMITS_H

#define HTTP_MAX_URI_BYTES 4096     /* request target; longer -> 414 */
#define HTTP_MAX_HEADER_BYTES 16384 /* all request headers together -> 431 */
#define HTTP_MAX_HEADERS 64         /* number of request headers -> 431 */
#define HTTP_MAX_BODY_BYTES 0       /* token requests carry no body; any body -> 400/413 */
#define HTTP_MAX_QUERY_PARAMS 16
#define HTTP_MAX_PARAM_BYTES 2048 /* one decoded query value */
#define HTTP_CONN_TIMEOUT_S 15    /* idle or slow connection */
#define HTTP_MAX_CONNECTIONS 1024
#define HTTP_MAX_CONNECTIONS_PER_IP 64
/* epoll event-loop threads of the token endpoint (0: a thread per connection) */
#define HTTP_THREADS 2

#define CONF_MAX_FILE_BYTES (1024 * 1024)
#define CONF_MAX_DEPTH 16 /* JSON nesting of the broker config, provider objects included */
#define MANIFEST_MAX_FILE_BYTES (8 * 1024 * 1024)
#define MANIFEST_MAX_DOCS 100000
#define MANIFEST_MAX_DEPTH 32
#define MANIFEST_MAX_LABELS 64
#define MANIFEST_MAX_POD_IPS 8 /* status.podIPs of one pod */

/* Kubernetes API (k8s-client). A watch event is one object: etcd stores at most 1.5 MiB, and JSON
 * escaping can grow it, so 3 MiB; an event past the cap ends the watch (the reflector relists). */
#define K8S_MAX_EVENT_BYTES (3 * 1024 * 1024)
#define K8S_MAX_EVENT_DEPTH 64
#define K8S_MAX_LIST_PAGE_BYTES (64 * 1024 * 1024) /* one LIST page (limit=K8S_LIST_PAGE_SIZE) */
#define K8S_MAX_REPLY_BYTES (1024 * 1024)          /* any other reply (apply, delete, errors) */
#define K8S_MAX_CONFIG_BYTES (1024 * 1024)         /* kubeconfig, CA, certificate, key files */
#define K8S_MAX_TOKEN_BYTES (64 * 1024)            /* bearer token file */
#define K8S_MAX_LIST_PAGES 10000                   /* pages of one LIST */

/* A CNI network configuration file read by the conflist watch (conflist-watch.h). */
#define CNI_CONF_MAX_BYTES (1024 * 1024)

#define CTL_MAX_CLIENTS 16
#define CTL_IO_TIMEOUT_MS 5000

#define PROVIDER_TOKEN_MAX_BYTES (64 * 1024) /* a provider's access_token */
/* The provider host process (provider-client.h): issue() calls running at once per provider (more
 * are refused at once), calls of one provider past their deadline that make the broker restart the
 * host, and issue_via requests from the host served at once. The frame cap is PP_MAX_FRAME_BYTES
 * (provider-proto.h). */
#define PROVIDER_HOST_MAX_CALLS 64
#define PROVIDER_HOST_MAX_STUCK 16
#define PROVIDER_HOST_MAX_VIA 64
#define TOKEN_CACHE_DEFAULT_MAX_ENTRIES 65536

#endif
