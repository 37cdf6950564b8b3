/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The running broker: every long-lived object, owned by main.c. ctl-ops.c (control socket
 * operations) and health.c (health and metrics listener) read it; they are the only modules besides
 * main.c that see every other module, because their job is to report on all of them.
 */
#ifndef IDB_BROKER_BROKER_H
#define IDB_BROKER_BROKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "control.h"
#include "policy.h"

struct broker_conf;
struct registry;
struct plugin_set;
struct token_cache;
struct issuer;
struct token_endpoint;
struct http_server;
struct control_server;
struct provider_client;
struct k8s_client;
struct k8s_watch;
struct aai_writer;
struct conflist_watch;

struct broker {
    char *conf_path;          /* NULL: built-in defaults */
    struct broker_conf *conf; /* replaced on reload under reload_lock */
    pthread_mutex_t reload_lock;

    struct registry *registry;
    struct policy policy;
    struct plugin_set *plugins;
    struct provider_client *provider_host; /* NULL when providers run inline */
    struct token_cache *cache;
    struct issuer *issuer;
    struct token_endpoint *te;
    struct http_server *http;
    struct http_server *health;
    struct control_server *ctl;

    /* kubernetes source (NULL in files mode) */
    struct k8s_client *k8s;
    struct k8s_watch *watch;
    struct aai_writer *aai;

    struct conflist_watch *cni; /* the conflist watch (THREATS T21); NULL when cni.confDir is "" */
    /* pods of this node without idbroker (THREATS T21; kubernetes mode, else NULL), scanned by the
     * main loop; unprotected_pods is its last count, read with __atomic_load_n by others */
    struct unprotected *unprotected;
    size_t unprotected_pods;

    /* files source */
    char *source_dir;
    uint64_t source_fingerprint;
    bool source_fingerprint_valid;
    time_t last_reload; /* last successful policy load */
    char *last_error;   /* last source or reload error, NULL if none (under reload_lock) */
    bool plugins_ok;
    time_t started;
};

/* broker.c: the module options a configuration gives (at start and on reload). */
struct issuer_options;
struct tc_options;
void broker_issuer_options(const struct broker_conf *c, struct broker *b,
                           struct issuer_options *ret);
void broker_cache_options(const struct broker_conf *c, struct tc_options *ret);
void broker_policy_flags(const struct broker_conf *c, struct store_policy *ret);

/* Reloads the configuration file (if any) and the policy source. Keeps registrations and valid
 * cached tokens. Settings that need a restart (listen addresses, providers, stateDir) are reported
 * in the log and left as they were. Returns < 0 with *ret_error (returns new) on a bad file:
 * nothing changes. */
int broker_reload(struct broker *b, char **ret_error);
/* Re-reads the files source if it changed (or `force`). Returns 1 if the policy was replaced. */
int broker_reload_source(struct broker *b, bool force);
/* Whether /readyz would say ready. If not and why != NULL, writes what is missing to
 * why[0..size). */
#define BROKER_WHY_MAX 4608
bool broker_ready(struct broker *b, char *why, size_t size);

/* ctl-ops.c: the op table for control_server_start (ud = struct broker *). */
extern const struct control_op broker_ctl_ops[];
/* health.c: http_handler_fn for the health listener (ud = struct broker *). */
struct http_request;
struct http_response;
void health_handle(void *ud, const struct http_request *req, struct http_response *resp);

#endif
