/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The conflist watch (THREATS T21): a primary CNI that rewrites its network configuration can drop
 * idbroker from it, and pods created meanwhile get no redirect. The broker looks at the node's CNI
 * configuration directory the way a container runtime picks the network (libcni's ConfFiles,
 * sorted: the first *.conflist, *.conf or *.json by name) and reports while that file does not
 * chain idbroker: a warning in the log per transition, the gauge idbroker_cni_chain_ok,
 * /readyz (through broker_ready()) and, with a Kubernetes client, a core/v1 Event on the Node. The
 * file itself is repaired by deploy/install-cni.sh in watch mode, never by the broker (its mount is
 * read-only).
 *
 * A thread re-checks every CONFLIST_WATCH_INTERVAL_MS; a file whose name, inode, size and mtime did
 * not change is not read again.
 */
#ifndef IDB_BROKER_CONFLIST_WATCH_H
#define IDB_BROKER_CONFLIST_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFLIST_WATCH_INTERVAL_MS 1000
#define CONFLIST_WATCH_PATH_MAX 4352 /* a directory of PATH_MAX and a file name of NAME_MAX */

/* What the file a runtime would use says about idbroker. */
enum conflist_chain {
    /* the runtime's network configuration calls idbroker */
    CONFLIST_CHAIN_OK,
    /* no directory, or no network configuration in it: the runtime starts no pod */
    CONFLIST_CHAIN_NO_CONFIG,
    /* that configuration has no plugin of type "idbroker" */
    CONFLIST_CHAIN_MISSING,
    /* that configuration cannot be read or is not a network configuration */
    CONFLIST_CHAIN_INVALID,
};

struct conflist_chain_status {
    enum conflist_chain chain;
    /* the file the runtime uses ("" with CONFLIST_CHAIN_NO_CONFIG) */
    char file[CONFLIST_WATCH_PATH_MAX];
    /* CONFLIST_CHAIN_INVALID: why, e.g. "not JSON"; else "" */
    char detail[128];
};

/* Whether a chain state leaves new pods served (OK, NO_CONFIG) rather than unprotected. */
static inline bool conflist_chain_ok(enum conflist_chain c)
{
    return c == CONFLIST_CHAIN_OK || c == CONFLIST_CHAIN_NO_CONFIG;
}

/* Checks one network configuration file's text[0..len) (borrowed). `name` (borrowed) decides its
 * kind as libcni does: "*.conflist" is a list whose "plugins" array must hold an object of "type"
 * "idbroker" after the first plugin (the primary); any other name is a single network, which
 * cannot chain idbroker (MISSING; INVALID when that one plugin is idbroker itself, since it only
 * runs chained). Returns CONFLIST_CHAIN_OK, CONFLIST_CHAIN_MISSING or CONFLIST_CHAIN_INVALID (with
 * *ret_detail, a static string, saying why; optional). Pure: fuzzable. */
enum conflist_chain conflist_watch_check_text(const char *name, const char *text, size_t len,
                                              const char **ret_detail);

/* Finds the file a runtime would use in `dir` (borrowed) and checks it (at most CNI_CONF_MAX_BYTES
 * are read). Always fills *ret. */
void conflist_watch_check_dir(const char *dir, struct conflist_chain_status *ret);

/* A core/v1 Event on Node `node` (borrowed), as JSON text (returns new): namespace "default" (where
 * kubelet posts node events), type "Warning" or "Normal", source component "idbrokerd", name
 * "<node>.<now_ns in hex>" as client-go names events. NULL without memory. */
char *conflist_watch_event_json(const char *node, bool warning, const char *reason,
                                const char *message, uint64_t now_ns);

struct k8s_client;
struct conflist_watch;

struct conflist_watch_options {
    const char *dir;        /* copied; must be non-empty */
    const char *node_name;  /* copied; involvedObject of the Events */
    struct k8s_client *k8s; /* borrowed, must outlive the watch; NULL: no Events (files mode) */
    uint32_t interval_ms;   /* 0: CONFLIST_WATCH_INTERVAL_MS */
};

/* Checks once (so readiness is right from the start, and a bad state is logged and posted), then
 * starts the thread. Returns 0 and *ret (returns new), -ENOMEM, -EINVAL, or the error of
 * pthread_create. */
int conflist_watch_start(const struct conflist_watch_options *o, struct conflist_watch **ret);
/* Stops the thread (an Event being posted ends once k8s_client_stop() was called) and frees w.
 * Accepts NULL; returns NULL. */
struct conflist_watch *conflist_watch_free(struct conflist_watch *w);
/* Checks now, on the caller's thread, as the thread does (logs, Events on a transition). */
void conflist_watch_recheck(struct conflist_watch *w);
/* Whether new pods are served (conflist_chain_ok() of the last check). If not and why != NULL,
 * writes a reason naming the file to why[0..size). Thread-safe, never blocks on I/O. */
bool conflist_watch_ok(struct conflist_watch *w, char *why, size_t size);
/* A copy of the last check's status. Thread-safe. */
void conflist_watch_status(struct conflist_watch *w, struct conflist_chain_status *ret);

#endif
