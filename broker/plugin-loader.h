/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Loads provider plugins (DESIGN §8, STYLE R14). Strict, and says why it refuses:
 *  - name must match [a-z0-9-]+ (1..64 chars); the file is <dir>/<name>.so;
 *  - the directory and the file must be owned by root (or by the broker's own euid when it is not
 *    root) and not be group- or world-writable; the file must be a regular file;
 *  - dlopen(RTLD_NOW | RTLD_LOCAL); the symbol IDB_PLUGIN_SYMBOL must exist;
 *  - abi_major must equal IDB_PLUGIN_ABI_MAJOR; size must cover ABI 1.0 (through `destroy`);
 *    name inside the plugin must equal the file's name; init/issue must not be NULL;
 *  - a second plugin with the same name is refused.
 * Refusals read like nginx's: "provider 'x' (/path/x.so) is not binary compatible: ABI 2.0, broker
 * supports 1.x".
 */
#ifndef IDB_BROKER_PLUGIN_LOADER_H
#define IDB_BROKER_PLUGIN_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <idbroker/provider.h>

struct plugin;

/* Runs issue() of a plugin that lives elsewhere (the provider host process, provider-client.h);
 * same contract as idb_provider.issue. */
typedef int (*plugin_remote_issue_fn)(void *ud, const struct plugin *pl,
                                      const struct idb_token_req *req, struct idb_token *ret);

/*
 * A loaded provider. Either inline (dl, p and state set: dlopen()ed into this process) or remote
 * (remote_issue set, dl and p NULL: loaded by the provider host process with this same loader, and
 * called through remote_issue). name, path, version and the ABI numbers are set for both.
 */
struct plugin {
    char *name;
    char *path;
    void *dl;
    const struct idb_provider *p;
    void *state;   /* from p->init */
    char *version; /* the plugin's own version string, NULL if it has none */
    uint32_t abi_major, abi_minor;
    plugin_remote_issue_fn remote_issue;
    void *remote_ud; /* borrowed; must outlive the set */
};

struct plugin_set;

struct plugin_set *plugin_set_new(void);
/* destroy()s and dlclose()s every plugin. */
struct plugin_set *plugin_set_free(struct plugin_set *s);

/* Validates and loads <dir>/<name>.so and calls its init() with `conf_json` (the plugin's config
 * object as text) and `host` (borrowed; must outlive the set). On refusal returns < 0 with
 * *ret_error (returns new) naming the plugin and the reason; nothing is kept. */
int plugin_set_load(struct plugin_set *s, const char *dir, const char *name, const char *conf_json,
                    const struct idb_host_api *host, char **ret_error);
/* Adds a remote plugin: its metadata (copied) as the provider host reported it, and the function
 * that calls it. Refuses a second plugin of the same name (-EEXIST) and an invalid name (-EINVAL).
 */
int plugin_set_add_remote(struct plugin_set *s, const char *name, const char *path,
                          const char *version, uint32_t abi_major, uint32_t abi_minor,
                          plugin_remote_issue_fn fn, void *ud);
/* Calls the plugin's issue(): directly when inline, through remote_issue when remote. Same contract
 * as idb_provider.issue (ret->size set by the caller). Thread-safe. */
int plugin_call_issue(const struct plugin *pl, const struct idb_token_req *req,
                      struct idb_token *ret);
/* Borrowed; NULL if not loaded. */
const struct plugin *plugin_set_find(const struct plugin_set *s, const char *name);
size_t plugin_set_count(const struct plugin_set *s);
const struct plugin *plugin_set_at(const struct plugin_set *s, size_t i);

/* Whether name matches [a-z0-9-]{1,64}. */
bool plugin_name_valid(const char *name);

#endif
