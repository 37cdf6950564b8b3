/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The broker's side of provider isolation (THREATS T19, docs/plugin-abi.md "Process isolation").
 * Providers run in a helper process, the provider host (`idbrokerd --provider-host 3`, see
 * provider-host.h), that loads them with the broker's own strict loader and host API and serves
 * issue() calls over a socketpair (provider-proto.h). This module starts that process, loads the
 * configured providers into it, forwards calls, serves the host's issue_via requests, and
 * supervises it:
 *  - when the host dies (crash, kill), every call in flight fails at once with
 *    IDB_E_UPSTREAM_UNAVAILABLE, idbroker_provider_restarts_total goes up, and a new host is
 * started after a backoff (100 ms doubling to 10 s; back to 100 ms once a host has lived 10 s) with
 * the same providers; calls made while no host is up fail at once the same way;
 *  - a call past its deadline fails with IDB_E_PROVIDER_TIMEOUT; its thread in the host is
 *    "stuck" until issue() returns. When one provider has PROVIDER_HOST_MAX_STUCK stuck calls, the
 *    host is killed and restarted, which reclaims them (the host also refuses more than
 *    PROVIDER_HOST_MAX_CALLS concurrent calls per provider, so its threads stay bounded).
 * Thread-safe after provider_client_run().
 */
#ifndef IDB_BROKER_PROVIDER_CLIENT_H
#define IDB_BROKER_PROVIDER_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct plugin;
struct idb_token_req;
struct idb_token;
struct provider_client;

/* Serves a plugin's host->issue_via() in the broker (same contract as idb_host_api.issue_via; req
 * and ret are full-size). Called on a thread of its own, at most PROVIDER_HOST_MAX_VIA at once. */
typedef int (*provider_via_fn)(void *ud, const char *provider, const struct idb_token_req *req,
                               struct idb_token *ret);

struct provider_client_options {
    const char *exe; /* the program run as host with "--provider-host 3" (copied); opened (O_PATH)
                      * at once, so later hosts run this very file even if it is replaced */
    const char *plugin_dir; /* copied */
    int log_level;          /* the host's log: syslog level and enum log_format */
    int log_format;
    uint32_t timeout_ms; /* deadline of calls without one, and of the host's issue_via waits */
    provider_via_fn via; /* NULL: issue_via answers -ENOTSUP */
    void *via_ud;
    uint32_t restart_min_ms; /* 0 = PROVIDER_HOST_RESTART_MIN_MS */
    uint32_t restart_max_ms; /* 0 = PROVIDER_HOST_RESTART_MAX_MS */
};

/* What the host reported for a loaded provider. Strings are new; free with
 * provider_info_done(). */
struct provider_info {
    char *path;
    char *version; /* NULL if the plugin has none */
    uint32_t abi_major, abi_minor;
};
void provider_info_done(struct provider_info *i);

/* Returns new, or NULL when out of memory. Starts nothing. */
struct provider_client *provider_client_new(const struct provider_client_options *o);

/* Starts the host process and waits for it to take its configuration. Returns 0, or < 0 with
 * *ret_error (returns new) saying why. */
int provider_client_start(struct provider_client *pc, char **ret_error);

/* Before provider_client_run(): loads provider `name` with `conf_json` (the plugin's object as JSON
 * text; copied and wiped when freed) in the host. On success returns 0 and *ret_info, and every
 * later host loads it too. On failure returns < 0 and *ret_error (returns new): the loader's
 * refusal, or why the host died while loading (then a new host is started with the providers
 * loaded so far, and this one is left out for good). */
int provider_client_load(struct provider_client *pc, const char *name, const char *conf_json,
                         struct provider_info *ret_info, char **ret_error);

/* Starts serving calls and supervising the host. Returns 0 or -errno (no thread). */
int provider_client_run(struct provider_client *pc);

/* A plugin_remote_issue_fn (ud = the client): calls pl->name's issue() in the host and waits until
 * the answer or req->deadline_ms. Returns what the plugin returned (ret filled as issue() does;
 * strings are malloc'ed), IDB_E_PROVIDER_TIMEOUT at the deadline, IDB_E_UPSTREAM_UNAVAILABLE when
 * no host is up or it died during the call, IDB_E_NO_PROVIDER for a provider the host did not load.
 */
int provider_client_issue(void *ud, const struct plugin *pl, const struct idb_token_req *req,
                          struct idb_token *ret);

/* Changes the host's log level and format (reload): now, if a host is up, and for every later
 * host. */
void provider_client_set_log(struct provider_client *pc, int log_level, int log_format);
/* Whether a host is up and serving calls. */
bool provider_client_up(struct provider_client *pc);
/* The host's pid, or 0 when none runs. */
pid_t provider_client_pid(struct provider_client *pc);
/* How many times a host died and was restarted. */
uint64_t provider_client_restarts(struct provider_client *pc);

/* Stops for good: closes the channel (the host exits on its own, or is killed after 2 s), fails
 * every call in flight, stops the supervisor and waits for issue_via requests to finish. Later
 * calls fail at once. Returns 0, or -EBUSY if an issue_via request is still running after the
 * deadline `timeout_ms` allows (the client must then not be freed). Idempotent. */
int provider_client_stop(struct provider_client *pc);
/* Stops (as provider_client_stop) and frees. Accepts NULL; returns NULL. */
struct provider_client *provider_client_free(struct provider_client *pc);

#endif
