/* SPDX-License-Identifier: Apache-2.0 */
#include "cmd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/registration.h>

#include "attachment.h"
#include "broker-client.h"
#include "netlink.h"
#include "nft.h"

#define MAX_EVICT REG_MAX_IPS
#define GC_NOTIFY_BUDGET_MS 2000 /* GC tells the broker about removals within this much time */

static struct nft_params params_of(const struct cni_conf *c)
{
    return (struct nft_params){.metadata = c->metadata_address,
                               .metadata_port = c->metadata_port,
                               .broker = c->broker_address,
                               .broker_port = c->broker_port};
}

static int need_env(const char *v, const char *name, struct cni_error *err)
{
    if (!v || !*v)
        return cni_fail(err, CNI_ERR_INVALID_ENV, -EINVAL, "missing environment variable",
                        "%s is not set", name);
    return 0;
}

/* CNI_CONTAINERID and CNI_IFNAME become file names: validate them before anything else. */
static int need_ids(const struct cni_env *env, struct cni_error *err)
{
    int r = need_env(env->container_id, "CNI_CONTAINERID", err);
    if (r < 0)
        return r;
    r = need_env(env->ifname, "CNI_IFNAME", err);
    if (r < 0)
        return r;
    if (!reg_valid_container_id(env->container_id))
        return cni_fail(err, CNI_ERR_INVALID_ENV, -EINVAL, "invalid environment variable",
                        "CNI_CONTAINERID '%.140s' is not [A-Za-z0-9][A-Za-z0-9._-]{0,127}",
                        env->container_id);
    if (!reg_valid_ifname(env->ifname))
        return cni_fail(err, CNI_ERR_INVALID_ENV, -EINVAL, "invalid environment variable",
                        "CNI_IFNAME '%.40s' is not an interface name", env->ifname);
    return 0;
}

/* Takes the state lock (creating the directories first). Returns the lock fd. */
static int lock_state(const struct cni_conf *conf, struct cni_error *err)
{
    int r = attachment_dir_ensure(conf->state_dir);
    if (r < 0)
        return cni_fail(err, cni_state_error_code(r), r, "cannot create the state directory",
                        "'%s': %s", conf->state_dir, idb_strerror(r));
    int fd = registration_lock(conf->state_dir, CMD_LOCK_TIMEOUT_MS);
    if (fd < 0)
        return cni_fail(err, CNI_ERR_TRY_AGAIN, fd, "cannot lock the state directory", "'%s': %s",
                        conf->state_dir, idb_strerror(fd));
    return fd;
}

/* Releases the state lock; usage: lock = unlock(lock); */
static int unlock(int fd)
{
    if (fd >= 0)
        close(fd);
    return -1;
}

/* Returns the exchange's result; failures are only logged (the state directory is the truth). */
static int notify_broker(const struct cni_conf *conf, const char *container_id, const char *if_name,
                         int timeout_ms)
{
    int r = broker_client_sync(conf->broker_socket, container_id, if_name, timeout_ms);
    if (r < 0)
        log_warning_errno(r,
                          "cannot notify the broker at '%s' about %s@%s: %s; it reads the state "
                          "directory when it starts, ignoring",
                          conf->broker_socket, container_id, if_name, idb_strerror(r));
    return r;
}

/* The pod's own addresses: IPs on an interface inside the sandbox, or on none named. */
static int pod_addresses(const struct conf_prev_result *pr, const char *ifname,
                         struct attachment *a, struct cni_error *err)
{
    int mac_from = -1;
    for (size_t i = 0; i < pr->n_ips; i++) {
        const struct conf_ip *ip = &pr->ips[i];
        if (ip->iface >= 0 && !pr->ifaces[ip->iface].in_sandbox)
            continue;
        bool dup = false;
        for (size_t k = 0; k < a->n_ips && !dup; k++)
            dup = reg_ip_equal(&a->ips[k], &ip->addr);
        if (dup)
            continue;
        if (a->n_ips == REG_MAX_IPS)
            return cni_fail(err, CNI_ERR_INVALID_CONFIG, -E2BIG, "invalid prevResult",
                            "the pod has more than %d addresses", REG_MAX_IPS);
        a->ips[a->n_ips++] = ip->addr;
        if (mac_from < 0 && ip->iface >= 0)
            mac_from = ip->iface;
    }
    if (a->n_ips == 0)
        return cni_fail(err, CNI_ERR_INVALID_CONFIG, -EINVAL, "invalid prevResult",
                        "prevResult has no IP address inside the pod");
    /* The pod's MAC: from the interface its addresses are on, else the sandbox interface
     * CNI_IFNAME. */
    for (size_t i = 0; mac_from < 0 && i < pr->n_ifaces; i++)
        if (pr->ifaces[i].in_sandbox && streq(pr->ifaces[i].name, ifname))
            mac_from = (int)i;
    if (mac_from >= 0 && pr->ifaces[mac_from].has_mac) {
        a->has_mac = true;
        memcpy(a->mac, pr->ifaces[mac_from].mac, 6);
    }
    return 0;
}

/* Finds where the pod's traffic enters the node: behind a bridge, the bridge (l3) and the pod's
 * veth (port); with ptp and other routed set-ups, the host-side veth (l3). prevResult's host-side
 * interfaces first (bridge lists the bridge and the veth, ptp the veth), then the route to the pod.
 */
static int host_side(const struct conf_prev_result *pr, struct attachment *a, struct cni_error *err)
{
    struct netlink_link port = {0}, bridge = {0}, routed = {0};
    for (size_t i = 0; i < pr->n_ifaces; i++) {
        const struct conf_iface *f = &pr->ifaces[i];
        if (f->in_sandbox)
            continue;
        struct netlink_link l, m;
        int r = netlink_link_by_name(f->name, &l);
        if (r == -ENODEV) {
            log_debug("host-side interface '%s' of prevResult does not exist, ignoring", f->name);
            continue;
        }
        if (r < 0)
            return cni_fail(err, CNI_ERR_TRY_AGAIN, r, "cannot look up interfaces", "'%s': %s",
                            f->name, idb_strerror(r));
        if (l.is_bridge)
            continue;
        if (l.master > 0 && netlink_link_by_index(l.master, &m) >= 0 && m.is_bridge) {
            if (port.ifindex && port.ifindex != l.ifindex)
                return cni_fail(
                    err, CNI_ERR_NO_HOST_SIDE, -EINVAL, "cannot tell the pod's host-side interface",
                    "prevResult names two bridge ports, '%s' and '%s'", port.name, l.name);
            port = l;
            bridge = m;
            continue;
        }
        if (routed.ifindex && routed.ifindex != l.ifindex)
            return cni_fail(
                err, CNI_ERR_NO_HOST_SIDE, -EINVAL, "cannot tell the pod's host-side interface",
                "prevResult names two host-side interfaces, '%s' and '%s'", routed.name, l.name);
        routed = l;
    }
    const char *bad = port.ifindex && !nft_ifname_ok(port.name)                        ? port.name
                      : port.ifindex && !nft_ifname_ok(bridge.name)                    ? bridge.name
                      : !port.ifindex && routed.ifindex && !nft_ifname_ok(routed.name) ? routed.name
                                                                                       : NULL;
    if (bad)
        return cni_fail(err, CNI_ERR_NO_HOST_SIDE, -EINVAL, "unsupported host-side interface name",
                        "'%s' has characters other than [A-Za-z0-9._+-]", bad);
    if (port.ifindex) {
        a->port_ifindex = port.ifindex;
        memcpy(a->port_ifname, port.name, sizeof(a->port_ifname));
        a->l3_ifindex = bridge.ifindex;
        memcpy(a->l3_ifname, bridge.name, sizeof(a->l3_ifname));
        return 0;
    }
    if (!routed.ifindex) {
        /* Primaries such as Calico list only the pod's interface: the node routes the pod's
         * address to its host-side veth. */
        int ifindex = 0;
        int r = netlink_route_dev(&a->ips[0], &ifindex);
        if (r >= 0)
            r = netlink_link_by_index(ifindex, &routed);
        if (r < 0)
            return cni_fail(
                err, CNI_ERR_NO_HOST_SIDE, r, "cannot tell the pod's host-side interface",
                "prevResult names none and the node has no route to the pod: %s", idb_strerror(r));
        if (routed.is_bridge)
            return cni_fail(
                err, CNI_ERR_NO_HOST_SIDE, -EINVAL, "cannot tell the pod's host-side interface",
                "the pod is behind bridge '%s' but prevResult names no port of it", routed.name);
    }
    if (!nft_ifname_ok(routed.name))
        return cni_fail(err, CNI_ERR_NO_HOST_SIDE, -EINVAL, "unsupported host-side interface name",
                        "'%s' has characters other than [A-Za-z0-9._+-]", routed.name);
    a->l3_ifindex = routed.ifindex;
    memcpy(a->l3_ifname, routed.name, sizeof(a->l3_ifname));
    return 0;
}

static void fill_registration(const struct cni_env *env, const struct conf_pod *pod,
                              const struct attachment *a, struct registration *reg)
{
    memset(reg, 0, sizeof(*reg));
    snprintf(reg->container_id, sizeof(reg->container_id), "%s", a->container_id);
    snprintf(reg->if_name, sizeof(reg->if_name), "%s", a->if_name);
    memcpy(reg->pod_namespace, pod->pod_namespace, sizeof(reg->pod_namespace));
    memcpy(reg->pod_name, pod->pod_name, sizeof(reg->pod_name));
    memcpy(reg->pod_uid, pod->pod_uid, sizeof(reg->pod_uid));
    snprintf(reg->netns, sizeof(reg->netns), "%s", env->netns ? env->netns : "");
    if (a->port_ifindex) {
        memcpy(reg->host_ifname, a->port_ifname, sizeof(reg->host_ifname));
        reg->host_ifindex = a->port_ifindex;
    } else {
        memcpy(reg->host_ifname, a->l3_ifname, sizeof(reg->host_ifname));
        reg->host_ifindex = a->l3_ifindex;
    }
    memcpy(reg->ips, a->ips, sizeof(reg->ips));
    reg->n_ips = a->n_ips;
    reg->created = (uint64_t)time(NULL);
    snprintf(reg->origin, sizeof(reg->origin), "cni");
}

/* Older attachments that still hold one of a's addresses: their DEL never came, and the IPAM has
 * handed the address out again, so they are stale. */
static size_t find_stale(const struct cni_conf *conf, const struct attachment *a,
                         struct attachment *ret, size_t max)
{
    char key[ATTACHMENT_KEY_MAX];
    size_t n = 0;
    if (attachment_key(a->container_id, a->if_name, key, sizeof(key)) < 0)
        return 0;
    for (size_t i = 0; i < a->n_ips && n < max; i++) {
        char owner[ATTACHMENT_KEY_MAX + 1], cid[REG_MAX_ID + 1], ifn[REG_MAX_IFNAME + 1];
        if (attachment_owner_of(conf->state_dir, &a->ips[i], owner, sizeof(owner)) < 0 ||
            streq(owner, key) || attachment_key_split(owner, cid, ifn) < 0)
            continue;
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = streq(ret[k].container_id, cid) && streq(ret[k].if_name, ifn);
        if (!seen && attachment_load(conf->state_dir, cid, ifn, &ret[n]) >= 0)
            n++;
    }
    return n;
}

/* What a per-pod transaction starts with: the full base only when it is missing or outdated. */
static int prologue(struct buf *script, const struct nft_params *params)
{
    if (nft_base_current(params))
        return nft_script_sets(script);
    log_info("writing idbroker's nftables chains (missing or of another revision)");
    return nft_script_base(script, params);
}

static int run_script(struct buf *script, bool dry_run, struct cni_error *err, unsigned code,
                      const char *msg)
{
    _cleanup_free_ char *why = NULL;
    int r = nft_apply(script->data, dry_run, &why);
    if (r < 0)
        return cni_fail(err, code, r, msg, "%s", why ? why : idb_strerror(r));
    return 0;
}

/* Removes the nftables elements of `first` (optional) and of more[0..n) in one transaction. */
static int remove_elements(const struct cni_conf *conf, const struct attachment *first,
                           const struct attachment *more, size_t n, struct cni_error *err,
                           const char *msg)
{
    struct nft_params params = params_of(conf);
    struct buf script;
    buf_init(&script, NFT_MAX_SCRIPT);
    int r = prologue(&script, &params);
    if (r >= 0 && first)
        r = nft_script_remove(&script, first, NULL);
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = nft_script_remove(&script, &more[i], NULL);
    if (r >= 0)
        r = run_script(&script, false, err, CNI_ERR_TRY_AGAIN, msg);
    else
        r = cni_fail(err, CNI_ERR_INTERNAL, r, "cannot build the nftables transaction", "%s",
                     idb_strerror(r));
    buf_done(&script);
    return r;
}

/* What ADD and CHECK both need: the container ID and ifname, a netns, and a prevResult (the plugin
 * only runs chained). */
static int need_chained(const struct cni_env *env, const struct cni_conf *conf,
                        struct cni_error *err)
{
    int r = need_ids(env, err);
    if (r < 0)
        return r;
    r = need_env(env->netns, "CNI_NETNS", err);
    if (r < 0)
        return r;
    if (!conf->prev_result)
        return cni_fail(err, CNI_ERR_INVALID_CONFIG, -EINVAL, "must be called as chained plugin",
                        "prevResult is missing: list idbroker after the primary plugin");
    return 0;
}

int cmd_add(const struct cni_env *env, const struct cni_conf *conf, char **ret_out,
            struct cni_error *err)
{
    int r = need_chained(env, conf, err);
    if (r < 0)
        return r;
    struct conf_pod pod;
    r = conf_parse_cni_args(env->args, &pod, err);
    if (r < 0)
        return r;

    _cleanup_free_ struct conf_prev_result *pr = calloc(1, sizeof(*pr));
    _cleanup_free_ struct attachment *a = calloc(1, sizeof(*a));
    _cleanup_free_ struct attachment *old = calloc(1, sizeof(*old));
    _cleanup_free_ struct attachment *stale = calloc(MAX_EVICT, sizeof(*stale));
    _cleanup_free_ struct registration *reg = calloc(1, sizeof(*reg));
    if (!pr || !a || !old || !stale || !reg)
        return -ENOMEM;
    r = conf_parse_prev_result(conf->prev_result, pr, err);
    if (r < 0)
        return r;
    snprintf(a->container_id, sizeof(a->container_id), "%s", env->container_id);
    snprintf(a->if_name, sizeof(a->if_name), "%s", env->ifname);
    r = pod_addresses(pr, env->ifname, a, err);
    if (r < 0)
        return r;
    r = host_side(pr, a, err);
    if (r < 0)
        return r;

    char dev[IFNAMSIZ] = "";
    r = netlink_address_ensure(&conf->broker_address, dev);
    if (r < 0) {
        char b[INET6_ADDRSTRLEN];
        return cni_fail(err, CNI_ERR_TRY_AGAIN, r, "cannot install the metadata redirect",
                        "cannot make the broker address %s local: %s",
                        reg_ip_to_string(&conf->broker_address, b, sizeof(b)), idb_strerror(r));
    }

    _cleanup_close_ int lock = lock_state(conf, err);
    if (lock < 0)
        return lock;

    bool have_old = false;
    r = attachment_load(conf->state_dir, a->container_id, a->if_name, old);
    if (r >= 0)
        have_old = true;
    else if (r != -ENOENT)
        log_warning_errno(r, "unreadable record of %s@%s, replacing it: %s", a->container_id,
                          a->if_name, idb_strerror(r));
    size_t n_stale = find_stale(conf, a, stale, MAX_EVICT);

    /* Crash-safe order (a kill -9 may stop ADD anywhere): the record of what the pod's transaction
     * installs is written before it, so a DEL after any crash knows every element to remove.
     * Elements of attachments being replaced go first, in a transaction of their own, then their
     * files; until the pod's own transaction its traffic to the metadata address is dropped. */
    bool same_old = have_old && attachment_equal(old, a);
    struct nft_params params = params_of(conf);
    if (n_stale > 0 || (have_old && !same_old)) {
        r = remove_elements(conf, have_old && !same_old ? old : NULL, stale, n_stale, err,
                            "cannot install the metadata redirect");
        if (r < 0)
            return r;
        for (size_t i = 0; i < n_stale; i++) {
            log_warning("address of %s@%s still held by %s@%s, whose DEL never came: removing it",
                        a->container_id, a->if_name, stale[i].container_id, stale[i].if_name);
            (void)registration_remove(conf->state_dir, stale[i].container_id, stale[i].if_name);
            (void)attachment_remove(conf->state_dir, &stale[i]);
        }
        if (have_old && !same_old)
            (void)attachment_remove(conf->state_dir, old);
    }

    r = attachment_save(conf->state_dir, a);
    if (r < 0) {
        /* A repeated ADD keeps its intact record (the rename did not happen) and its elements. */
        if (!same_old) {
            (void)attachment_remove(conf->state_dir, a);
            (void)registration_remove(conf->state_dir, a->container_id, a->if_name);
        }
        return cni_fail(err, cni_state_error_code(r), r, "cannot write the pod's record",
                        "'%s': %s", conf->state_dir, idb_strerror(r));
    }

    struct buf script;
    buf_init(&script, NFT_MAX_SCRIPT);
    r = prologue(&script, &params);
    if (r >= 0)
        r = nft_script_add(&script, a);
    if (r >= 0)
        r = run_script(&script, false, err, CNI_ERR_TRY_AGAIN,
                       "cannot install the metadata redirect");
    else
        r = cni_fail(err, CNI_ERR_INTERNAL, r, "cannot build the nftables transaction", "%s",
                     idb_strerror(r));
    buf_done(&script);
    if (r < 0) {
        /* Nothing changed in nftables: a repeated ADD keeps what it had, a new one nothing. */
        if (!same_old) {
            (void)attachment_remove(conf->state_dir, a);
            (void)registration_remove(conf->state_dir, a->container_id, a->if_name);
        }
        return r;
    }

    /* Connections the pod (or an earlier holder of its address) opened before the redirect must not
     * keep their old path. The guard chain drops such packets anyway; this makes it immediate. */
    const struct reg_ip dsts[] = {conf->metadata_address, conf->broker_address};
    unsigned flushed = 0;
    r = netlink_conntrack_flush(a->ips, a->n_ips, dsts, ELEMENTSOF(dsts), &flushed);
    if (r < 0)
        log_warning_errno(r, "cannot flush conntrack entries of %s@%s: %s, ignoring",
                          a->container_id, a->if_name, idb_strerror(r));

    fill_registration(env, &pod, a, reg);
    r = registration_save(conf->state_dir, reg);
    if (r < 0) {
        int saved = r;
        struct buf undo;
        buf_init(&undo, NFT_MAX_SCRIPT);
        if (nft_script_sets(&undo) >= 0 && nft_script_remove(&undo, a, NULL) >= 0)
            (void)nft_apply(undo.data, false, NULL);
        buf_done(&undo);
        (void)registration_remove(conf->state_dir, a->container_id, a->if_name);
        (void)attachment_remove(conf->state_dir, a);
        return cni_fail(err, cni_state_error_code(saved), saved,
                        "cannot write the pod's registration", "'%s': %s", conf->state_dir,
                        idb_strerror(saved));
    }
    lock = unlock(lock);

    char ips[REG_MAX_IPS * (INET6_ADDRSTRLEN + 1)] = "";
    for (size_t i = 0; i < a->n_ips; i++) {
        char b[INET6_ADDRSTRLEN];
        size_t n = strlen(ips);
        snprintf(ips + n, sizeof(ips) - n, "%s%s", i ? "," : "",
                 reg_ip_to_string(&a->ips[i], b, sizeof(b)));
    }
    log_info("ADD %s@%s pod '%s/%s' ips %s via %s%s%s (broker address on %s, %u conntrack entries "
             "flushed)",
             a->container_id, a->if_name, pod.pod_namespace, pod.pod_name, ips, a->l3_ifname,
             a->port_ifindex ? " port " : "", a->port_ifname, dev, flushed);

    for (size_t i = 0; i < n_stale; i++)
        notify_broker(conf, stale[i].container_id, stale[i].if_name, BROKER_CLIENT_TIMEOUT_MS);
    notify_broker(conf, a->container_id, a->if_name, BROKER_CLIENT_TIMEOUT_MS);

    char *out = cni_result_json(conf->prev_result, conf->cni_version);
    if (!out)
        return -ENOMEM;
    *ret_out = out;
    return 0;
}

int cmd_del(const struct cni_env *env, const struct cni_conf *conf, char **ret_out,
            struct cni_error *err)
{
    int r = need_ids(env, err);
    if (r < 0)
        return r;
    _cleanup_close_ int lock = lock_state(conf, err);
    if (lock < 0)
        return lock;

    struct attachment a;
    bool have = false, removed = false;
    r = attachment_load(conf->state_dir, env->container_id, env->ifname, &a);
    if (r >= 0)
        have = true;
    else if (r == -ENOENT)
        /* An ADD killed before its record was renamed leaves at most a temporary file. */
        (void)attachment_remove_key(conf->state_dir, env->container_id, env->ifname);
    else {
        /* Its elements are unknown now; the next GC rebuilds the sets from the records. */
        log_warning_errno(r, "unreadable record of %s@%s, removing it: %s", env->container_id,
                          env->ifname, idb_strerror(r));
        (void)attachment_remove_key(conf->state_dir, env->container_id, env->ifname);
        removed = true;
    }

    if (have) {
        r = remove_elements(conf, &a, NULL, 0, err, "cannot remove the pod's nftables elements");
        if (r < 0)
            return r;
        r = attachment_remove(conf->state_dir, &a);
        if (r < 0)
            return cni_fail(err, cni_state_error_code(r), r, "cannot remove the pod's record",
                            "'%s': %s", conf->state_dir, idb_strerror(r));
        removed = true;
    }

    struct registration reg;
    if (registration_load(conf->state_dir, env->container_id, env->ifname, &reg) >= 0)
        removed = true;
    r = registration_remove(conf->state_dir, env->container_id, env->ifname);
    if (r < 0)
        return cni_fail(err, cni_state_error_code(r), r, "cannot remove the pod's registration",
                        "'%s': %s", conf->state_dir, idb_strerror(r));
    lock = unlock(lock);

    if (removed) {
        log_info("DEL %s@%s", env->container_id, env->ifname);
        notify_broker(conf, env->container_id, env->ifname, BROKER_CLIENT_TIMEOUT_MS);
    } else
        log_debug("DEL %s@%s: nothing registered", env->container_id, env->ifname);
    *ret_out = NULL;
    return 0;
}

int cmd_check(const struct cni_env *env, const struct cni_conf *conf, char **ret_out,
              struct cni_error *err)
{
    int r = need_chained(env, conf, err);
    if (r < 0)
        return r;
    _cleanup_free_ struct conf_prev_result *pr = calloc(1, sizeof(*pr));
    _cleanup_free_ struct attachment *want = calloc(1, sizeof(*want));
    _cleanup_free_ struct registration *reg = calloc(1, sizeof(*reg));
    if (!pr || !want || !reg)
        return -ENOMEM;
    r = conf_parse_prev_result(conf->prev_result, pr, err);
    if (r < 0)
        return r;
    r = pod_addresses(pr, env->ifname, want, err);
    if (r < 0)
        return r;

    _cleanup_close_ int lock = lock_state(conf, err);
    if (lock < 0)
        return lock;
    struct attachment a;
    r = attachment_load(conf->state_dir, env->container_id, env->ifname, &a);
    if (r < 0)
        return cni_fail(err, CNI_ERR_CHECK_STATE, r, "the pod is not registered with idbroker",
                        "record of %s@%s: %s", env->container_id, env->ifname, idb_strerror(r));
    r = registration_load(conf->state_dir, env->container_id, env->ifname, reg);
    if (r < 0)
        return cni_fail(err, CNI_ERR_CHECK_STATE, r, "the pod is not registered with idbroker",
                        "registration of %s@%s: %s", env->container_id, env->ifname,
                        idb_strerror(r));
    bool same = a.n_ips == want->n_ips && reg->n_ips == a.n_ips;
    for (size_t i = 0; same && i < a.n_ips; i++)
        same = reg_ip_equal(&a.ips[i], &want->ips[i]) && reg_ip_equal(&reg->ips[i], &a.ips[i]);
    if (!same)
        return cni_fail(err, CNI_ERR_CHECK_STATE, -ESTALE,
                        "the pod's registration does not match prevResult",
                        "registered addresses differ from prevResult's");
    _cleanup_free_ char *why = NULL;
    r = nft_check(&a, &why);
    if (r < 0)
        return cni_fail(err, CNI_ERR_CHECK_RULES, r, "the pod's metadata redirect is missing", "%s",
                        why ? why : idb_strerror(r));
    *ret_out = NULL;
    return 0;
}

struct gc_scan {
    const struct cni_conf *conf;
    struct attachment *keep;
    size_t n_keep, max_keep;
    struct conf_attachment *drop;
    size_t n_drop, max_drop;
    int error;
};

static void gc_drop(struct gc_scan *g, const char *cid, const char *ifn)
{
    for (size_t i = 0; i < g->n_drop; i++)
        if (streq(g->drop[i].container_id, cid) && streq(g->drop[i].if_name, ifn))
            return;
    if (g->n_drop == g->max_drop) {
        size_t m = g->max_drop ? g->max_drop * 2 : 64;
        struct conf_attachment *n = reallocarray(g->drop, m, sizeof(*n));
        if (!n) {
            g->error = -ENOMEM;
            return;
        }
        g->drop = n;
        g->max_drop = m;
    }
    snprintf(g->drop[g->n_drop].container_id, sizeof(g->drop[0].container_id), "%s", cid);
    snprintf(g->drop[g->n_drop].if_name, sizeof(g->drop[0].if_name), "%s", ifn);
    g->n_drop++;
}

static void gc_record(const char *key, const struct attachment *a, void *userdata)
{
    struct gc_scan *g = userdata;
    char cid[REG_MAX_ID + 1], ifn[REG_MAX_IFNAME + 1];
    if (attachment_key_split(key, cid, ifn) < 0)
        return;
    if (!a || !conf_attachment_valid(g->conf, cid, ifn)) {
        gc_drop(g, cid, ifn);
        return;
    }
    if (g->n_keep == g->max_keep) {
        size_t m = g->max_keep ? g->max_keep * 2 : 64;
        struct attachment *n = reallocarray(g->keep, m, sizeof(*n));
        if (!n) {
            g->error = -ENOMEM;
            return;
        }
        g->keep = n;
        g->max_keep = m;
    }
    g->keep[g->n_keep++] = *a;
}

static void gc_registration(const struct registration *reg, void *userdata)
{
    struct gc_scan *g = userdata;
    /* Registrations made by hand (idbrokerctl register) are not the runtime's to collect. */
    if (streq(reg->origin, "cni") &&
        !conf_attachment_valid(g->conf, reg->container_id, reg->if_name))
        gc_drop(g, reg->container_id, reg->if_name);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cmd_gc(const struct cni_env *env, const struct cni_conf *conf, char **ret_out,
           struct cni_error *err)
{
    (void)env;
    if (!conf->has_valid)
        return cni_fail(err, CNI_ERR_INVALID_CONFIG, -EINVAL, "invalid network configuration",
                        "GC needs cni.dev/valid-attachments");
    _cleanup_close_ int lock = lock_state(conf, err);
    if (lock < 0)
        return lock;

    struct gc_scan g = {.conf = conf};
    int r = attachment_foreach(conf->state_dir, gc_record, &g);
    if (r >= 0)
        r = registration_load_all(conf->state_dir, gc_registration, NULL, &g);
    if (r >= 0 && g.error < 0)
        r = g.error;
    if (r < 0) {
        free(g.keep);
        free(g.drop);
        return cni_fail(err, CNI_ERR_STATE, r, "cannot read the state directory", "'%s': %s",
                        conf->state_dir, idb_strerror(r));
    }

    /* The sets are rebuilt from the records that stay: this also drops elements no record
     * accounts for (a crash between transaction and record, an unreadable record). */
    struct nft_params params = params_of(conf);
    struct buf script;
    buf_init(&script, NFT_MAX_SCRIPT);
    r = nft_script_base(&script, &params);
    if (r >= 0)
        r = nft_script_flush_sets(&script);
    for (size_t i = 0; r >= 0 && i < g.n_keep; i++)
        r = nft_script_add(&script, &g.keep[i]);
    if (r >= 0)
        r = run_script(&script, false, err, CNI_ERR_TRY_AGAIN, "cannot rebuild idbroker's sets");
    else
        r = cni_fail(err, CNI_ERR_INTERNAL, r, "cannot build the nftables transaction", "%s",
                     idb_strerror(r));
    buf_done(&script);
    if (r < 0) {
        free(g.keep);
        free(g.drop);
        return r;
    }

    for (size_t i = 0; i < g.n_drop; i++) {
        struct attachment a;
        const char *cid = g.drop[i].container_id, *ifn = g.drop[i].if_name;
        if (attachment_load(conf->state_dir, cid, ifn, &a) >= 0)
            (void)attachment_remove(conf->state_dir, &a);
        else
            (void)attachment_remove_key(conf->state_dir, cid, ifn);
        r = registration_remove(conf->state_dir, cid, ifn);
        if (r < 0)
            log_warning_errno(r, "GC: cannot remove the registration of %s@%s: %s, ignoring", cid,
                              ifn, idb_strerror(r));
    }
    lock = unlock(lock);
    log_info("GC: kept %zu attachments, removed %zu", g.n_keep, g.n_drop);

    int64_t deadline = mono_ms() + GC_NOTIFY_BUDGET_MS;
    for (size_t i = 0; i < g.n_drop; i++) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            log_warning("GC: %zu removals not told to the broker in time; it re-reads the state "
                        "directory when it starts, ignoring",
                        g.n_drop - i);
            break;
        }
        r = notify_broker(conf, g.drop[i].container_id, g.drop[i].if_name,
                          left < BROKER_CLIENT_TIMEOUT_MS ? (int)left : BROKER_CLIENT_TIMEOUT_MS);
        if (r == -ENOENT || r == -ECONNREFUSED)
            break; /* no broker: it loads the state directory when it starts */
    }
    free(g.keep);
    free(g.drop);
    *ret_out = NULL;
    return 0;
}

/* The full base (chains, rules, empty sets, revision) as one transaction, or its dry run. */
static int base_transaction(const struct cni_conf *conf, bool dry_run, struct cni_error *err,
                            unsigned code, const char *msg)
{
    struct nft_params params = params_of(conf);
    struct buf script;
    buf_init(&script, NFT_MAX_SCRIPT);
    int r = nft_script_base(&script, &params);
    if (r >= 0)
        r = run_script(&script, dry_run, err, code, msg);
    else
        r = cni_fail(err, code, r, "cannot build the nftables transaction", "%s", idb_strerror(r));
    buf_done(&script);
    return r;
}

int cmd_status(const struct cni_env *env, const struct cni_conf *conf, char **ret_out,
               struct cni_error *err)
{
    (void)env;
    int r = base_transaction(conf, true, err, CNI_ERR_NOT_AVAILABLE,
                             "idbroker cannot program nftables: new pods would be unprotected");
    if (r < 0)
        return r;
    *ret_out = NULL;
    return 0;
}

int cmd_guard(const struct cni_conf *conf, bool *ret_written, struct cni_error *err)
{
    *ret_written = false;
    struct nft_params params = params_of(conf);
    if (nft_base_current(&params))
        return 0;
    int r = base_transaction(conf, false, err, CNI_ERR_TRY_AGAIN,
                             "cannot install idbroker's nftables tables");
    if (r < 0)
        return r;
    *ret_written = true;
    return 0;
}
