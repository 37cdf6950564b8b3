/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Provider plugin loader (DESIGN §8, STYLE R12-R14). Every refusal says which plugin, which file
 * and why, in nginx's words ("... is not binary compatible ...").
 *
 * Trust: the directory and the file must be owned by root (or by our euid when we are not root) and
 * not be group- or world-writable. With the directory so protected, only its owner can swap the
 * file between the checks and dlopen(), and that owner can load anything anyway; so plain
 * dlopen(path) after the checks is enough and keeps the real path in the link map, for debuggers
 * and core dumps.
 */
#include "plugin-loader.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idbroker/provider.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#define PLUGIN_NAME_MAX 64
#define PLUGIN_SET_MAX 64
#define PLUGIN_VERSION_MAX 128

/* ABI 1.0 ends with destroy: a plugin must declare at least that much. */
#define PROVIDER_V1_0_SIZE (offsetof(struct idb_provider, destroy) + sizeof(void (*)(void *)))

struct plugin_set {
    struct plugin *items[PLUGIN_SET_MAX];
    size_t n;
};

struct plugin_set *plugin_set_new(void)
{
    return calloc(1, sizeof(struct plugin_set));
}

static struct plugin *plugin_free(struct plugin *p)
{
    if (!p)
        return NULL;
    if (p->p && p->state && IDB_PROVIDER_HAS(p->p, destroy) && p->p->destroy)
        p->p->destroy(p->state);
    if (p->dl)
        dlclose(p->dl);
    free(p->name);
    free(p->path);
    free(p->version);
    free(p);
    return NULL;
}

struct plugin_set *plugin_set_free(struct plugin_set *s)
{
    if (!s)
        return NULL;
    /* Reverse load order: a later plugin may still hold on to an earlier one through issue_via. */
    while (s->n > 0) {
        s->n--;
        s->items[s->n] = plugin_free(s->items[s->n]);
    }
    free(s);
    return NULL;
}

bool plugin_name_valid(const char *name)
{
    if (!name)
        return false;
    size_t n = strlen(name);
    if (n < 1 || n > PLUGIN_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

const struct plugin *plugin_set_find(const struct plugin_set *s, const char *name)
{
    if (!s || !name)
        return NULL;
    for (size_t i = 0; i < s->n; i++)
        if (streq(s->items[i]->name, name))
            return s->items[i];
    return NULL;
}

size_t plugin_set_count(const struct plugin_set *s)
{
    return s ? s->n : 0;
}

const struct plugin *plugin_set_at(const struct plugin_set *s, size_t i)
{
    if (!s || i >= s->n)
        return NULL;
    return s->items[i];
}

/* Formats a refusal into *ret_error (if wanted) and returns r. */
static int refuse(int r, char **ret_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(int r, char **ret_error, const char *fmt, ...)
{
    if (ret_error) {
        va_list ap;
        char *msg = NULL;
        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
            msg = NULL;
        va_end(ap);
        *ret_error = msg;
    }
    return r;
}

/* Why st (of a file or directory) cannot be trusted, or NULL if it can. */
static const char *untrusted_reason(const struct stat *st)
{
    uid_t me = geteuid();
    if (st->st_uid != 0 && st->st_uid != me)
        return me == 0 ? "is not owned by root" : "is owned by neither root nor the broker's user";
    if (st->st_mode & S_IWOTH)
        return "is world-writable";
    if (st->st_mode & S_IWGRP)
        return "is group-writable";
    return NULL;
}

static const char *file_type(mode_t m)
{
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISLNK(m))
        return "a symbolic link";
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISCHR(m) || S_ISBLK(m))
        return "a device";
    return "not a regular file";
}

/* Checks the directory and the file. Symbolic links to the file are refused: the name is the file.
 */
static int check_files(const char *dir, const char *name, const char *path, char **ret_error)
{
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        int r = -errno;
        return refuse(r, ret_error, "provider '%s' (%s): cannot open plugin directory '%s': %s",
                      name, path, dir, strerror(-r));
    }
    struct stat st;
    if (fstat(dfd, &st) < 0) {
        int r = -errno;
        return refuse(r, ret_error, "provider '%s' (%s): cannot stat plugin directory '%s': %s",
                      name, path, dir, strerror(-r));
    }
    const char *why = untrusted_reason(&st);
    if (why)
        return refuse(-EPERM, ret_error,
                      "provider '%s' (%s) refused: plugin directory '%s' %s (mode %04o, uid %u)",
                      name, path, dir, why, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);

    _cleanup_free_ char *file = NULL;
    if (asprintf(&file, "%s.so", name) < 0)
        return refuse(-ENOMEM, ret_error, "provider '%s': out of memory", name);
    if (fstatat(dfd, file, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        int r = -errno;
        if (r == -ENOENT)
            return refuse(r, ret_error, "provider '%s' (%s) not found", name, path);
        return refuse(r, ret_error, "provider '%s' (%s): cannot stat: %s", name, path,
                      strerror(-r));
    }
    if (!S_ISREG(st.st_mode))
        return refuse(-EINVAL, ret_error, "provider '%s' (%s) refused: %s, not a regular file",
                      name, path, file_type(st.st_mode));
    why = untrusted_reason(&st);
    if (why)
        return refuse(-EPERM, ret_error,
                      "provider '%s' (%s) refused: the file %s (mode %04o, uid %u)", name, path,
                      why, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
    return 0;
}

/* The size of the object behind the symbol, from the ELF symbol table; 0 if unknown. */
static size_t symbol_size(const void *addr)
{
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    if (dladdr1(addr, &info, (void **)&sym, RTLD_DL_SYMENT) == 0 || !sym)
        return 0;
    return sym->st_size;
}

/* Checks the exported struct against ABI 1.x. */
static int check_abi(const struct idb_provider *p, const char *name, const char *path,
                     char **ret_error)
{
    /* Read nothing the plugin did not define: the symbol's object must cover major, minor and size.
     */
    size_t objsize = symbol_size(p);
    size_t header = offsetof(struct idb_provider, size) + sizeof(p->size);
    if (objsize > 0 && objsize < header)
        return refuse(IDB_E_PLUGIN_ABI, ret_error,
                      "provider '%s' (%s) is not binary compatible: symbol '%s' is %zu bytes", name,
                      path, IDB_PLUGIN_SYMBOL, objsize);
    if (p->abi_major != IDB_PLUGIN_ABI_MAJOR)
        return refuse(
            IDB_E_PLUGIN_ABI, ret_error,
            "provider '%s' (%s) is not binary compatible: ABI %u.%u, broker supports %d.x", name,
            path, (unsigned)p->abi_major, (unsigned)p->abi_minor, IDB_PLUGIN_ABI_MAJOR);
    if (p->size < PROVIDER_V1_0_SIZE)
        return refuse(
            IDB_E_PLUGIN_ABI, ret_error,
            "provider '%s' (%s) is not binary compatible: struct idb_provider is too short "
            "(%u bytes, ABI %d.0 needs %zu)",
            name, path, (unsigned)p->size, IDB_PLUGIN_ABI_MAJOR, PROVIDER_V1_0_SIZE);
    if (objsize > 0 && objsize < p->size)
        return refuse(IDB_E_PLUGIN_ABI, ret_error,
                      "provider '%s' (%s) is not binary compatible: struct idb_provider claims %u "
                      "bytes but symbol '%s' is %zu bytes",
                      name, path, (unsigned)p->size, IDB_PLUGIN_SYMBOL, objsize);
    if (!p->name)
        return refuse(IDB_E_PLUGIN_ABI, ret_error, "provider '%s' (%s) refused: it has no name",
                      name, path);
    if (!streq(p->name, name))
        return refuse(IDB_E_PLUGIN_ABI, ret_error,
                      "provider '%s' (%s) refused: it calls itself '%.64s'; the file must be named "
                      "after the provider",
                      name, path, p->name);
    if (!p->init)
        return refuse(IDB_E_PLUGIN_ABI, ret_error, "provider '%s' (%s) refused: init() is NULL",
                      name, path);
    if (!p->issue)
        return refuse(IDB_E_PLUGIN_ABI, ret_error, "provider '%s' (%s) refused: issue() is NULL",
                      name, path);
    return 0;
}

int plugin_set_load(struct plugin_set *s, const char *dir, const char *name, const char *conf_json,
                    const struct idb_host_api *host, char **ret_error)
{
    if (!s || !dir || !host)
        return refuse(-EINVAL, ret_error, "provider '%s': invalid arguments", strna(name));
    if (!plugin_name_valid(name))
        return refuse(-EINVAL, ret_error,
                      "provider name '%.80s' is invalid: it must match [a-z0-9-]+ (at most %d "
                      "characters)",
                      strna(name), PLUGIN_NAME_MAX);

    _cleanup_free_ char *path = NULL;
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    if (asprintf(&path, "%.*s/%s.so", (int)dl, dir, name) < 0)
        return refuse(-ENOMEM, ret_error, "provider '%s': out of memory", name);

    const struct plugin *other = plugin_set_find(s, name);
    if (other)
        return refuse(-EEXIST, ret_error,
                      "provider '%s' (%s) refused: a provider of that name is "
                      "already loaded (%s)",
                      name, path, other->path);
    if (s->n >= PLUGIN_SET_MAX)
        return refuse(-E2BIG, ret_error, "provider '%s' (%s) refused: at most %d providers", name,
                      path, PLUGIN_SET_MAX);

    int r = check_files(dir, name, path, ret_error);
    if (r < 0)
        return r;

    struct plugin *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return refuse(-ENOMEM, ret_error, "provider '%s': out of memory", name);
    pl->name = strdup(name);
    pl->path = strdup(path);
    if (!pl->name || !pl->path) {
        r = refuse(-ENOMEM, ret_error, "provider '%s': out of memory", name);
        goto fail;
    }

    /* dlerror() is per thread; clear what an earlier call left. */
    (void)dlerror();
    pl->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!pl->dl) {
        const char *e = dlerror();
        r = refuse(-ELIBBAD, ret_error, "provider '%s' (%s) cannot be loaded: %s", name, path,
                   e ? e : "unknown dlopen error");
        goto fail;
    }
    (void)dlerror();
    const struct idb_provider *p = dlsym(pl->dl, IDB_PLUGIN_SYMBOL);
    if (!p) {
        r = refuse(IDB_E_PLUGIN_ABI, ret_error,
                   "provider '%s' (%s) is not a provider: it does not export '%s'", name, path,
                   IDB_PLUGIN_SYMBOL);
        goto fail;
    }
    r = check_abi(p, name, path, ret_error);
    if (r < 0)
        goto fail;

    void *state = NULL;
    r = p->init(host, conf_json ? conf_json : "{}", &state);
    if (r < 0) {
        r = refuse(r, ret_error, "provider '%s' (%s) failed to initialize: %s", name, path,
                   idb_strerror(r));
        goto fail;
    }
    pl->p = p;
    pl->state = state;
    pl->abi_major = p->abi_major;
    pl->abi_minor = p->abi_minor;
    if (IDB_PROVIDER_HAS(p, version) && p->version) {
        pl->version = strndup(p->version, PLUGIN_VERSION_MAX);
        if (!pl->version) {
            r = refuse(-ENOMEM, ret_error, "provider '%s': out of memory", name);
            goto fail; /* destroy() runs: init() succeeded */
        }
    }
    s->items[s->n++] = pl;
    return 0;

fail:
    /* pl->p is NULL unless init() succeeded, so no destroy() runs for a plugin whose init() failed.
     */
    plugin_free(pl);
    return r;
}

int plugin_set_add_remote(struct plugin_set *s, const char *name, const char *path,
                          const char *version, uint32_t abi_major, uint32_t abi_minor,
                          plugin_remote_issue_fn fn, void *ud)
{
    if (!s || !path || !fn || !plugin_name_valid(name))
        return -EINVAL;
    if (plugin_set_find(s, name))
        return -EEXIST;
    if (s->n >= PLUGIN_SET_MAX)
        return -E2BIG;
    struct plugin *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return -ENOMEM;
    pl->name = strdup(name);
    pl->path = strdup(path);
    pl->version = version ? strndup(version, PLUGIN_VERSION_MAX) : NULL;
    if (!pl->name || !pl->path || (version && !pl->version)) {
        plugin_free(pl);
        return -ENOMEM;
    }
    pl->abi_major = abi_major;
    pl->abi_minor = abi_minor;
    pl->remote_issue = fn;
    pl->remote_ud = ud;
    s->items[s->n++] = pl;
    return 0;
}

int plugin_call_issue(const struct plugin *pl, const struct idb_token_req *req,
                      struct idb_token *ret)
{
    if (pl->remote_issue)
        return pl->remote_issue(pl->remote_ud, pl, req, ret);
    return pl->p->issue(pl->state, req, ret);
}
