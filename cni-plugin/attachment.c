/* SPDX-License-Identifier: Apache-2.0 */
#include "attachment.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/macro.h>

#define ATTACHMENT_SUBDIR "cni"
#define ATTACHMENT_IPDIR "cni/by-ip"

int attachment_key(const char *container_id, const char *if_name, char *buf, size_t size)
{
    if (!reg_valid_container_id(container_id) || !reg_valid_ifname(if_name))
        return -EINVAL;
    int n = snprintf(buf, size, "%s@%s", container_id, if_name);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    return 0;
}

int attachment_key_split(const char *key, char container_id[REG_MAX_ID + 1],
                         char if_name[REG_MAX_IFNAME + 1])
{
    /* Container ids never contain '@' (reg_valid_container_id), so the first one separates. */
    const char *at = strchr(key, '@');
    if (!at || (size_t)(at - key) > REG_MAX_ID || strlen(at + 1) > REG_MAX_IFNAME)
        return -EINVAL;
    char cid[REG_MAX_ID + 1], ifn[REG_MAX_IFNAME + 1];
    memcpy(cid, key, (size_t)(at - key));
    cid[at - key] = '\0';
    memcpy(ifn, at + 1, strlen(at + 1) + 1);
    if (!reg_valid_container_id(cid) || !reg_valid_ifname(ifn))
        return -EINVAL;
    memcpy(container_id, cid, sizeof(cid));
    memcpy(if_name, ifn, sizeof(ifn));
    return 0;
}

static void mac_to_string(const uint8_t m[6], char buf[18])
{
    snprintf(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

struct json_object *attachment_to_json(const struct attachment *a)
{
    _cleanup_json_ struct json_object *o = json_object_new_object();
    struct json_object *ips = json_object_new_array();
    if (!o || !ips || json_object_object_add(o, "ips", ips) < 0) {
        json_object_put(ips);
        return NULL;
    }
    if (json_add_int(o, "version", ATTACHMENT_VERSION) < 0 ||
        json_add_str(o, "containerId", a->container_id) < 0 ||
        json_add_str(o, "ifName", a->if_name) < 0 ||
        json_add_int(o, "l3Ifindex", a->l3_ifindex) < 0 ||
        json_add_str(o, "l3Ifname", a->l3_ifname) < 0 ||
        json_add_int(o, "portIfindex", a->port_ifindex) < 0 ||
        json_add_str(o, "portIfname", a->port_ifname) < 0)
        return NULL;
    if (a->has_mac) {
        char mac[18];
        mac_to_string(a->mac, mac);
        if (json_add_str(o, "mac", mac) < 0)
            return NULL;
    }
    for (size_t i = 0; i < a->n_ips; i++) {
        char buf[INET6_ADDRSTRLEN];
        struct json_object *s =
            json_object_new_string(reg_ip_to_string(&a->ips[i], buf, sizeof(buf)));
        if (!s || json_object_array_add(ips, s) < 0) {
            json_object_put(s);
            return NULL;
        }
    }
    return TAKE_PTR(o);
}

static int get_ifname(struct json_object *o, const char *key, bool allow_empty, char dst[IFNAMSIZ])
{
    const char *s = json_get_str(o, key);
    if (!s || strlen(s) >= IFNAMSIZ || (!allow_empty && !*s) || strchr(s, '/'))
        return -EBADMSG;
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

int attachment_from_json(struct json_object *o, struct attachment *ret, const char **ret_error)
{
    struct attachment a;
    memset(&a, 0, sizeof(a));
    const char *why = NULL;
#define BAD(w)                                                                                     \
    do {                                                                                           \
        why = (w);                                                                                 \
        goto bad;                                                                                  \
    } while (0)

    if (!json_object_is_type(o, json_type_object))
        BAD("not an object");
    if (json_get_int(o, "version", -1) != ATTACHMENT_VERSION)
        BAD("version");
    const char *cid = json_get_str(o, "containerId"), *ifn = json_get_str(o, "ifName");
    if (!cid || !reg_valid_container_id(cid))
        BAD("containerId");
    if (!ifn || !reg_valid_ifname(ifn))
        BAD("ifName");
    memcpy(a.container_id, cid, strlen(cid) + 1);
    memcpy(a.if_name, ifn, strlen(ifn) + 1);
    int64_t l3 = json_get_int(o, "l3Ifindex", -1), port = json_get_int(o, "portIfindex", -1);
    if (l3 <= 0 || l3 > INT32_MAX)
        BAD("l3Ifindex");
    if (port < 0 || port > INT32_MAX)
        BAD("portIfindex");
    a.l3_ifindex = (int)l3;
    a.port_ifindex = (int)port;
    if (get_ifname(o, "l3Ifname", false, a.l3_ifname) < 0)
        BAD("l3Ifname");
    if (get_ifname(o, "portIfname", true, a.port_ifname) < 0)
        BAD("portIfname");
    const char *mac = json_get_str(o, "mac");
    if (mac) {
        unsigned m[6];
        char tail;
        if (sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x%c", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5],
                   &tail) != 6)
            BAD("mac");
        for (int i = 0; i < 6; i++)
            a.mac[i] = (uint8_t)m[i];
        a.has_mac = true;
    }
    struct json_object *ips;
    if (!json_object_object_get_ex(o, "ips", &ips) || !json_object_is_type(ips, json_type_array) ||
        json_object_array_length(ips) == 0 || json_object_array_length(ips) > REG_MAX_IPS)
        BAD("ips");
    for (size_t i = 0; i < json_object_array_length(ips); i++) {
        struct json_object *e = json_object_array_get_idx(ips, i);
        if (!json_object_is_type(e, json_type_string) ||
            reg_ip_parse(json_object_get_string(e), &a.ips[i]) < 0)
            BAD("ips");
    }
    a.n_ips = json_object_array_length(ips);
#undef BAD
    *ret = a;
    return 0;
bad:
    if (ret_error)
        *ret_error = why;
    return -EBADMSG;
}

bool attachment_equal(const struct attachment *a, const struct attachment *b)
{
    if (!streq(a->container_id, b->container_id) || !streq(a->if_name, b->if_name) ||
        a->l3_ifindex != b->l3_ifindex || !streq(a->l3_ifname, b->l3_ifname) ||
        a->port_ifindex != b->port_ifindex || !streq(a->port_ifname, b->port_ifname) ||
        a->has_mac != b->has_mac || (a->has_mac && memcmp(a->mac, b->mac, 6) != 0) ||
        a->n_ips != b->n_ips)
        return false;
    for (size_t i = 0; i < a->n_ips; i++)
        if (!reg_ip_equal(&a->ips[i], &b->ips[i]))
            return false;
    return true;
}

static int path_of(const char *state_dir, const char *sub, const char *name, const char *suffix,
                   char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s/%s/%s%s", state_dir, sub, name, suffix);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    return 0;
}

static int mkdir_p0700(const char *path)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int attachment_dir_ensure(const char *state_dir)
{
    char p[REG_MAX_PATH + 64];
    int r = registration_dir_ensure(state_dir);
    if (r < 0)
        return r;
    if (snprintf(p, sizeof(p), "%s/%s", state_dir, ATTACHMENT_SUBDIR) >= (int)sizeof(p))
        return -ENAMETOOLONG;
    r = mkdir_p0700(p);
    if (r < 0)
        return r;
    if (snprintf(p, sizeof(p), "%s/%s", state_dir, ATTACHMENT_IPDIR) >= (int)sizeof(p))
        return -ENAMETOOLONG;
    return mkdir_p0700(p);
}

static int fsync_dir_of(const char *state_dir, const char *sub)
{
    char p[REG_MAX_PATH + 64];
    if (snprintf(p, sizeof(p), "%s/%s", state_dir, sub) >= (int)sizeof(p))
        return -ENAMETOOLONG;
    _cleanup_close_ int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        return -errno;
    return 0;
}

static int write_record(const char *state_dir, const char *key, const char *text)
{
    char path[REG_MAX_PATH + 256], tmp[REG_MAX_PATH + 256];
    int r = path_of(state_dir, ATTACHMENT_SUBDIR, key, ".json", path, sizeof(path));
    if (r < 0)
        return r;
    r = path_of(state_dir, ATTACHMENT_SUBDIR, ".tmp-", key, tmp, sizeof(tmp));
    if (r < 0)
        return r;
    _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t k = write(fd, text + off, len - off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            goto fail;
        }
        off += (size_t)k;
    }
    if (fsync(fd) < 0) {
        r = -errno;
        goto fail;
    }
    if (rename(tmp, path) < 0) {
        r = -errno;
        goto fail;
    }
    return 0;
fail:
    (void)unlink(tmp);
    return r;
}

static int link_ip(const char *state_dir, const struct reg_ip *ip, const char *key)
{
    char name[INET6_ADDRSTRLEN], path[REG_MAX_PATH + 128], tmp[REG_MAX_PATH + 128];
    reg_ip_to_string(ip, name, sizeof(name));
    int r = path_of(state_dir, ATTACHMENT_IPDIR, name, "", path, sizeof(path));
    if (r < 0)
        return r;
    r = path_of(state_dir, ATTACHMENT_IPDIR, ".tmp-", name, tmp, sizeof(tmp));
    if (r < 0)
        return r;
    (void)unlink(tmp);
    if (symlink(key, tmp) < 0)
        return -errno;
    if (rename(tmp, path) < 0) {
        r = -errno;
        (void)unlink(tmp);
        return r;
    }
    return 0;
}

int attachment_save(const char *state_dir, const struct attachment *a)
{
    char key[ATTACHMENT_KEY_MAX];
    int r = attachment_key(a->container_id, a->if_name, key, sizeof(key));
    if (r < 0)
        return r;
    _cleanup_json_ struct json_object *o = attachment_to_json(a);
    if (!o)
        return -ENOMEM;
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    if (!text)
        return -ENOMEM;
    r = write_record(state_dir, key, text);
    if (r < 0)
        return r;
    for (size_t i = 0; i < a->n_ips; i++) {
        r = link_ip(state_dir, &a->ips[i], key);
        if (r < 0)
            return r;
    }
    r = fsync_dir_of(state_dir, ATTACHMENT_IPDIR);
    if (r < 0)
        return r;
    return fsync_dir_of(state_dir, ATTACHMENT_SUBDIR);
}

static int read_small(const char *path, size_t max, char **ret)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    _cleanup_free_ char *b = malloc(max + 1);
    if (!b)
        return -ENOMEM;
    size_t len = 0;
    for (;;) {
        ssize_t k = read(fd, b + len, max + 1 - len);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            break;
        len += (size_t)k;
        if (len > max)
            return -EFBIG;
    }
    b[len] = '\0';
    *ret = TAKE_PTR(b);
    return (int)len;
}

int attachment_load(const char *state_dir, const char *container_id, const char *if_name,
                    struct attachment *ret)
{
    char key[ATTACHMENT_KEY_MAX], path[REG_MAX_PATH + 256];
    int r = attachment_key(container_id, if_name, key, sizeof(key));
    if (r < 0)
        return r;
    r = path_of(state_dir, ATTACHMENT_SUBDIR, key, ".json", path, sizeof(path));
    if (r < 0)
        return r;
    _cleanup_free_ char *text = NULL;
    r = read_small(path, REG_MAX_FILE, &text);
    if (r < 0)
        return r;
    _cleanup_json_ struct json_object *o = NULL;
    r = json_parse_strict(text, (size_t)r, &o, NULL);
    if (r < 0)
        return -EBADMSG;
    struct attachment a;
    r = attachment_from_json(o, &a, NULL);
    if (r < 0)
        return r;
    if (!streq(a.container_id, container_id) || !streq(a.if_name, if_name))
        return -EBADMSG;
    *ret = a;
    return 0;
}

int attachment_owner_of(const char *state_dir, const struct reg_ip *ip, char *buf, size_t size)
{
    char name[INET6_ADDRSTRLEN], path[REG_MAX_PATH + 128];
    reg_ip_to_string(ip, name, sizeof(name));
    int r = path_of(state_dir, ATTACHMENT_IPDIR, name, "", path, sizeof(path));
    if (r < 0)
        return r;
    if (size < 2)
        return -ENOBUFS;
    ssize_t n = readlink(path, buf, size - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return 0;
}

int attachment_remove_key(const char *state_dir, const char *container_id, const char *if_name)
{
    char key[ATTACHMENT_KEY_MAX], path[REG_MAX_PATH + 256], tmp[REG_MAX_PATH + 256];
    int r = attachment_key(container_id, if_name, key, sizeof(key));
    if (r < 0)
        return r;
    r = path_of(state_dir, ATTACHMENT_SUBDIR, key, ".json", path, sizeof(path));
    if (r < 0)
        return r;
    r = path_of(state_dir, ATTACHMENT_SUBDIR, ".tmp-", key, tmp, sizeof(tmp));
    if (r < 0)
        return r;
    /* The temporary file of a writer killed before its rename: never read, removed here. */
    bool gone = unlink(tmp) == 0;
    if (unlink(path) == 0)
        gone = true;
    else if (errno != ENOENT)
        return -errno;
    return gone ? fsync_dir_of(state_dir, ATTACHMENT_SUBDIR) : 0;
}

int attachment_remove(const char *state_dir, const struct attachment *a)
{
    char key[ATTACHMENT_KEY_MAX];
    int r = attachment_key(a->container_id, a->if_name, key, sizeof(key));
    if (r < 0)
        return r;
    for (size_t i = 0; i < a->n_ips; i++) {
        char owner[ATTACHMENT_KEY_MAX + 1], name[INET6_ADDRSTRLEN], path[REG_MAX_PATH + 128];
        /* Only our own links: the address may already belong to a newer attachment. */
        if (attachment_owner_of(state_dir, &a->ips[i], owner, sizeof(owner)) < 0 ||
            !streq(owner, key))
            continue;
        reg_ip_to_string(&a->ips[i], name, sizeof(name));
        r = path_of(state_dir, ATTACHMENT_IPDIR, name, "", path, sizeof(path));
        if (r < 0)
            return r;
        if (unlink(path) < 0 && errno != ENOENT)
            return -errno;
    }
    for (size_t i = 0; i < a->n_ips; i++) {
        /* A link a killed ADD created but never renamed (ADDs of one address are serialised by
         * the lock, so it is ours or stale). */
        char name[INET6_ADDRSTRLEN], tmp[REG_MAX_PATH + 128];
        reg_ip_to_string(&a->ips[i], name, sizeof(name));
        if (path_of(state_dir, ATTACHMENT_IPDIR, ".tmp-", name, tmp, sizeof(tmp)) >= 0)
            (void)unlink(tmp);
    }
    r = fsync_dir_of(state_dir, ATTACHMENT_IPDIR);
    if (r < 0 && r != -ENOENT)
        return r;
    return attachment_remove_key(state_dir, a->container_id, a->if_name);
}

int attachment_foreach(const char *state_dir,
                       void (*cb)(const char *key, const struct attachment *a, void *userdata),
                       void *userdata)
{
    char dir[REG_MAX_PATH + 64];
    if (snprintf(dir, sizeof(dir), "%s/%s", state_dir, ATTACHMENT_SUBDIR) >= (int)sizeof(dir))
        return -ENAMETOOLONG;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    int count = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                count = -errno;
            break;
        }
        size_t n = strlen(de->d_name);
        if (de->d_name[0] == '.' || n <= 5 || !streq(de->d_name + n - 5, ".json") ||
            n - 5 >= ATTACHMENT_KEY_MAX)
            continue;
        char key[ATTACHMENT_KEY_MAX], cid[REG_MAX_ID + 1], ifn[REG_MAX_IFNAME + 1];
        memcpy(key, de->d_name, n - 5);
        key[n - 5] = '\0';
        if (attachment_key_split(key, cid, ifn) < 0)
            continue;
        struct attachment a;
        int r = attachment_load(state_dir, cid, ifn, &a);
        cb(key, r < 0 ? NULL : &a, userdata);
        count++;
    }
    closedir(d);
    return count;
}
