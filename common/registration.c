/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/registration.h>

#define REG_SUFFIX ".json"
#define REG_TMP_PREFIX ".tmp-"

bool reg_valid_container_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > REG_MAX_ID || !isalnum((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
            return false;
    return true;
}

bool reg_valid_ifname(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > REG_MAX_IFNAME || streq(s, ".") || streq(s, ".."))
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '/' || s[i] == '@' || isspace((unsigned char)s[i]) ||
            !isprint((unsigned char)s[i]))
            return false;
    return true;
}

int reg_ip_parse(const char *s, struct reg_ip *ret)
{
    struct reg_ip ip = {0};
    if (!s)
        return -EINVAL;
    if (inet_pton(AF_INET, s, ip.addr.v4) == 1)
        ip.family = AF_INET;
    else if (inet_pton(AF_INET6, s, ip.addr.v6) == 1)
        ip.family = AF_INET6;
    else
        return -EINVAL;
    *ret = ip;
    return 0;
}

const char *reg_ip_to_string(const struct reg_ip *ip, char *buf, size_t size)
{
    if (!inet_ntop(ip->family, &ip->addr, buf, (socklen_t)size))
        snprintf(buf, size, "?");
    return buf;
}

bool reg_ip_equal(const struct reg_ip *a, const struct reg_ip *b)
{
    if (a->family != b->family)
        return false;
    return memcmp(&a->addr, &b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

/* Copies an optional string field with a length cap. */
static int get_str(struct json_object *o, const char *key, bool required, char *out, size_t size,
                   const char **ret_error)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
        if (required) {
            *ret_error = key;
            return -EINVAL;
        }
        out[0] = '\0';
        return 0;
    }
    if (!json_object_is_type(v, json_type_string)) {
        *ret_error = key;
        return -EINVAL;
    }
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    if (n >= size || strlen(s) != n) {
        *ret_error = key;
        return -EINVAL;
    }
    memcpy(out, s, n + 1);
    return 0;
}

int registration_from_json(struct json_object *o, struct registration *ret, const char **ret_error)
{
    const char *why = NULL;
    struct registration *r = calloc(1, sizeof(*r));
    int e = -EINVAL;
    if (!r)
        return -ENOMEM;
    if (!json_object_is_type(o, json_type_object)) {
        why = "registration is not a JSON object";
        goto out;
    }
    struct json_object *v;
    if (!json_object_object_get_ex(o, "version", &v) || !json_object_is_type(v, json_type_int) ||
        json_object_get_int64(v) != REG_VERSION) {
        why = "version";
        goto out;
    }
    if (get_str(o, "containerId", true, r->container_id, sizeof(r->container_id), &why) < 0 ||
        get_str(o, "ifName", true, r->if_name, sizeof(r->if_name), &why) < 0 ||
        get_str(o, "podNamespace", false, r->pod_namespace, sizeof(r->pod_namespace), &why) < 0 ||
        get_str(o, "podName", false, r->pod_name, sizeof(r->pod_name), &why) < 0 ||
        get_str(o, "podUid", false, r->pod_uid, sizeof(r->pod_uid), &why) < 0 ||
        get_str(o, "netns", false, r->netns, sizeof(r->netns), &why) < 0 ||
        get_str(o, "hostInterface", false, r->host_ifname, sizeof(r->host_ifname), &why) < 0 ||
        get_str(o, "origin", false, r->origin, sizeof(r->origin), &why) < 0)
        goto out;
    if (!reg_valid_container_id(r->container_id)) {
        why = "containerId";
        goto out;
    }
    if (!reg_valid_ifname(r->if_name)) {
        why = "ifName";
        goto out;
    }
    if (r->host_ifname[0] && !reg_valid_ifname(r->host_ifname)) {
        why = "hostInterface";
        goto out;
    }
    if (json_object_object_get_ex(o, "hostIfindex", &v)) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
            json_object_get_int64(v) > INT32_MAX) {
            why = "hostIfindex";
            goto out;
        }
        r->host_ifindex = (int)json_object_get_int64(v);
    }
    if (json_object_object_get_ex(o, "created", &v)) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0) {
            why = "created";
            goto out;
        }
        r->created = (uint64_t)json_object_get_int64(v);
    }
    if (!json_object_object_get_ex(o, "ips", &v) || !json_object_is_type(v, json_type_array)) {
        why = "ips";
        goto out;
    }
    size_t n = json_object_array_length(v);
    if (n > REG_MAX_IPS) {
        why = "ips";
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct json_object *ip = json_object_array_get_idx(v, i);
        if (!json_object_is_type(ip, json_type_string) ||
            reg_ip_parse(json_object_get_string(ip), &r->ips[i]) < 0) {
            why = "ips";
            goto out;
        }
    }
    r->n_ips = n;
    *ret = *r;
    e = 0;
out:
    free(r);
    if (e < 0 && ret_error)
        *ret_error = why;
    return e;
}

int registration_parse(const char *text, size_t len, struct registration *ret,
                       const char **ret_error)
{
    _cleanup_json_ struct json_object *o = NULL;
    const char *why = NULL;
    int r = json_parse_strict(text, len, &o, &why);
    if (r < 0) {
        if (ret_error)
            *ret_error = why;
        return r;
    }
    return registration_from_json(o, ret, ret_error);
}

struct json_object *registration_to_json(const struct registration *r)
{
    _cleanup_json_ struct json_object *o = json_object_new_object();
    struct json_object *ips = json_object_new_array();
    if (!o || !ips) {
        json_object_put(ips);
        return NULL;
    }
    json_object_object_add(o, "version", json_object_new_int(REG_VERSION));
    json_add_str(o, "containerId", r->container_id);
    json_add_str(o, "ifName", r->if_name);
    json_add_str(o, "podNamespace", r->pod_namespace);
    json_add_str(o, "podName", r->pod_name);
    json_add_str(o, "podUid", r->pod_uid);
    json_add_str(o, "netns", r->netns);
    json_add_str(o, "hostInterface", r->host_ifname);
    json_add_int(o, "hostIfindex", r->host_ifindex);
    for (size_t i = 0; i < r->n_ips && i < REG_MAX_IPS; i++) {
        char b[INET6_ADDRSTRLEN];
        json_object_array_add(ips,
                              json_object_new_string(reg_ip_to_string(&r->ips[i], b, sizeof(b))));
    }
    json_object_object_add(o, "ips", ips);
    json_add_int(o, "created", (int64_t)r->created);
    json_add_str(o, "origin", r->origin[0] ? r->origin : "cni");
    return TAKE_PTR(o);
}

int registration_path(const char *state_dir, const char *container_id, const char *if_name,
                      char *buf, size_t size)
{
    if (!reg_valid_container_id(container_id) || !reg_valid_ifname(if_name))
        return -EINVAL;
    int n = snprintf(buf, size, "%s/pods/%s@%s" REG_SUFFIX, state_dir, container_id, if_name);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    return 0;
}

static int mkdir_0700(const char *path)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    return 0;
}

int registration_dir_ensure(const char *state_dir)
{
    char p[REG_MAX_PATH + 16];
    /* Create parents as needed (mkdir -p), the leaf and pods/ with 0700. */
    if (snprintf(p, sizeof(p), "%s", state_dir) >= (int)sizeof(p))
        return -ENAMETOOLONG;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    int r = mkdir_0700(p);
    if (r < 0)
        return r;
    if (snprintf(p, sizeof(p), "%s/pods", state_dir) >= (int)sizeof(p))
        return -ENAMETOOLONG;
    return mkdir_0700(p);
}

int registration_lock(const char *state_dir, int timeout_ms)
{
    char p[REG_MAX_PATH + 16];
    if (snprintf(p, sizeof(p), "%s/lock", state_dir) >= (int)sizeof(p))
        return -ENAMETOOLONG;
    int r = registration_dir_ensure(state_dir);
    if (r < 0)
        return r;
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    for (int waited = 0;; waited += 5) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return fd;
        if (errno != EWOULDBLOCK && errno != EINTR) {
            r = -errno;
            close(fd);
            return r;
        }
        if (waited >= timeout_ms) {
            close(fd);
            return -ETIMEDOUT;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

int registration_save(const char *state_dir, const struct registration *reg)
{
    char path[REG_MAX_PATH + 512], tmp[REG_MAX_PATH + 512], dir[REG_MAX_PATH + 16];
    int r = registration_path(state_dir, reg->container_id, reg->if_name, path, sizeof(path));
    if (r < 0)
        return r;
    snprintf(dir, sizeof(dir), "%s/pods", state_dir);
    /* One temporary name per key (writers hold registration_lock()): a writer killed before its
     * rename leaves at most this file, which the next save of the key reuses and
     * registration_remove() deletes. */
    if (snprintf(tmp, sizeof(tmp), "%s/" REG_TMP_PREFIX "%s@%s", dir, reg->container_id,
                 reg->if_name) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    r = registration_dir_ensure(state_dir);
    if (r < 0)
        return r;

    _cleanup_json_ struct json_object *o = registration_to_json(reg);
    if (!o)
        return -ENOMEM;
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    size_t len = strlen(text);

    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    const char *p = text;
    size_t left = len;
    while (left > 0) {
        ssize_t k = write(fd, p, left);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            goto fail;
        }
        p += k;
        left -= (size_t)k;
    }
    if (write(fd, "\n", 1) != 1) {
        r = errno ? -errno : -EIO;
        goto fail;
    }
    if (fsync(fd) < 0) {
        r = -errno;
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        r = -errno;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        r = -errno;
        goto fail;
    }
    return fsync_dir(dir);
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return r;
}

int registration_remove(const char *state_dir, const char *container_id, const char *if_name)
{
    char path[REG_MAX_PATH + 512], dir[REG_MAX_PATH + 16];
    int r = registration_path(state_dir, container_id, if_name, path, sizeof(path));
    if (r < 0)
        return r;
    snprintf(dir, sizeof(dir), "%s/pods", state_dir);
    /* A temporary file of the key left by a killed writer goes too (never read: not an error). */
    char tmp[REG_MAX_PATH + 512];
    if (snprintf(tmp, sizeof(tmp), "%s/" REG_TMP_PREFIX "%s@%s", dir, container_id, if_name) <
        (int)sizeof(tmp))
        (void)unlink(tmp);
    if (unlink(path) < 0)
        return errno == ENOENT ? 0 : -errno;
    return fsync_dir(dir);
}

static int load_file(const char *path, struct registration *ret, const char **ret_error)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct buf b;
    buf_init(&b, REG_MAX_FILE);
    int r = buf_read_fd(&b, fd);
    if (r >= 0)
        r = registration_parse(b.data ? b.data : "", b.len, ret, ret_error);
    else if (ret_error)
        *ret_error = r == -E2BIG ? "file too large" : "read failed";
    buf_done(&b);
    return r;
}

int registration_load(const char *state_dir, const char *container_id, const char *if_name,
                      struct registration *ret)
{
    char path[REG_MAX_PATH + 512];
    int r = registration_path(state_dir, container_id, if_name, path, sizeof(path));
    if (r < 0)
        return r;
    struct registration reg;
    const char *why = NULL;
    r = load_file(path, &reg, &why);
    if (r < 0)
        return r;
    /* The file name is the key: a file whose content names another key is not this registration. */
    if (!streq(reg.container_id, container_id) || !streq(reg.if_name, if_name))
        return -EBADMSG;
    *ret = reg;
    return 0;
}

int registration_load_all(
    const char *state_dir, void (*cb)(const struct registration *r, void *userdata),
    void (*bad_cb)(const char *path, int error, const char *why, void *userdata), void *userdata)
{
    char dir[REG_MAX_PATH + 16];
    if (snprintf(dir, sizeof(dir), "%s/pods", state_dir) >= (int)sizeof(dir))
        return -ENAMETOOLONG;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        if (streq(n, ".") || streq(n, ".."))
            continue;
        char path[REG_MAX_PATH + 512];
        if (snprintf(path, sizeof(path), "%s/%s", dir, n) >= (int)sizeof(path))
            continue;
        if (strncmp(n, REG_TMP_PREFIX, strlen(REG_TMP_PREFIX)) == 0) {
            /* A writer died between create and rename: the old file (if any) is intact. */
            unlink(path);
            continue;
        }
        size_t len = strlen(n);
        if (len <= strlen(REG_SUFFIX) || !streq(n + len - strlen(REG_SUFFIX), REG_SUFFIX))
            continue;
        struct registration reg;
        const char *why = NULL;
        int r = load_file(path, &reg, &why);
        if (r >= 0) {
            char expect[REG_MAX_ID + REG_MAX_IFNAME + 16];
            snprintf(expect, sizeof(expect), "%s@%s" REG_SUFFIX, reg.container_id, reg.if_name);
            if (!streq(expect, n)) {
                r = -EBADMSG;
                why = "file name does not match containerId@ifName";
            }
        }
        if (r < 0) {
            if (bad_cb)
                bad_cb(path, r, why ? why : "unreadable", userdata);
            continue;
        }
        if (cb)
            cb(&reg, userdata);
        count++;
    }
    closedir(d);
    return count;
}
