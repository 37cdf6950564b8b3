/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The conflist watch (THREATS T21; conflist-watch.h). The check is a pure function of the
 * directory's contents; the thread only remembers the last result, and acts on a change of it: log,
 * Event. Readiness and the gauge read the result (broker_ready(), health.c), so nothing here can
 * make the broker fail: a watch that cannot read the directory reports it as not chaining idbroker.
 */
#include "conflist-watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/thread.h>

#include "host-api.h" /* now_monotonic_ms() */
#include "k8s-client.h"
#include "limits.h"

#define PLUGIN_TYPE "idbroker"
#define EVENT_NAMESPACE "default"
#define EVENT_COMPONENT "idbrokerd"
#define REASON_MISSING "IdbrokerMissingFromConflist"
#define REASON_BACK "IdbrokerBackInConflist"
#define EVENT_PENDING_MAX 4
#define EVENT_RETRY_MAX_MS 60000

/* ---- the check (pure) ---- */

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && memcmp(s + n - k, suffix, k) == 0;
}

/* libcni's ConfFiles(dir, [".conf", ".conflist", ".json"]): by extension only. */
static bool is_net_conf_name(const char *name)
{
    return name[0] != '.' && (has_suffix(name, ".conflist") || has_suffix(name, ".conf") ||
                              has_suffix(name, ".json"));
}

static bool is_idbroker(struct json_object *plugin)
{
    const char *type = json_get_str(plugin, "type");
    return type && streq(type, PLUGIN_TYPE);
}

enum conflist_chain conflist_watch_check_text(const char *name, const char *text, size_t len,
                                              const char **ret_detail)
{
    const char *detail = NULL;
    enum conflist_chain r = CONFLIST_CHAIN_INVALID;
    struct json_object *o = NULL;
    if (len > CNI_CONF_MAX_BYTES) {
        detail = "larger than the size cap";
        goto out;
    }
    if (json_parse_strict(text, len, &o, NULL) < 0) {
        detail = "not JSON";
        goto out;
    }
    if (!json_object_is_type(o, json_type_object)) {
        detail = "not a JSON object";
        goto out;
    }
    if (has_suffix(name, ".conflist")) {
        struct json_object *plugins = NULL;
        if (!json_object_object_get_ex(o, "plugins", &plugins) ||
            !json_object_is_type(plugins, json_type_array) ||
            json_object_array_length(plugins) == 0) {
            detail = "no \"plugins\" array";
            goto out;
        }
        r = CONFLIST_CHAIN_MISSING;
        for (size_t i = 0; i < json_object_array_length(plugins); i++)
            if (is_idbroker(json_object_array_get_idx(plugins, i)))
                r = CONFLIST_CHAIN_OK;
        /* First in the list it has no primary before it: every ADD fails (no prevResult). */
        if (r == CONFLIST_CHAIN_OK && is_idbroker(json_object_array_get_idx(plugins, 0))) {
            r = CONFLIST_CHAIN_INVALID;
            detail = "idbroker is the first plugin (it must follow the primary plugin)";
        }
        goto out;
    }
    /* A single network: one plugin, so nothing is chained after the primary. */
    if (!json_get_str(o, "type")) {
        detail = "no \"type\"";
        goto out;
    }
    r = CONFLIST_CHAIN_MISSING;
    if (is_idbroker(o)) {
        r = CONFLIST_CHAIN_INVALID;
        detail = "idbroker alone (it must follow the primary plugin in a .conflist)";
    }
out:
    json_object_put(o);
    if (ret_detail)
        *ret_detail = detail;
    return r;
}

/* Writes to ret[size] the name of the file a runtime would load from dir: the least network
 * configuration name in byte order. Directories are skipped as libcni skips them.
 * Returns 0, -ENOENT if there is none, or -errno of opendir(). */
static int pick_file(const char *dir, char *ret, size_t size)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    bool found = false;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_net_conf_name(e->d_name) || strlen(e->d_name) >= size)
            continue;
        if (found && strcmp(e->d_name, ret) >= 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 && S_ISDIR(st.st_mode))
            continue;
        snprintf(ret, size, "%s", e->d_name);
        found = true;
    }
    closedir(d);
    return found ? 0 : -ENOENT;
}

/* Reads path into *ret (returns new, NUL-terminated), at most CNI_CONF_MAX_BYTES + 1 bytes so an
 * oversized file is seen as one. */
static int read_capped(int fd, char **ret, size_t *ret_len)
{
    _cleanup_free_ char *data = malloc(CNI_CONF_MAX_BYTES + 2);
    if (!data)
        return -ENOMEM;
    size_t len = 0;
    while (len <= CNI_CONF_MAX_BYTES) {
        ssize_t k = read(fd, data + len, CNI_CONF_MAX_BYTES + 1 - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            break;
        len += (size_t)k;
    }
    data[len] = '\0';
    *ret = TAKE_PTR(data);
    *ret_len = len;
    return 0;
}

/* What identifies one version of the chosen file, to skip re-reading it. */
struct file_id {
    char name[256];
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

static bool file_id_eq(const struct file_id *a, const struct file_id *b)
{
    return streq(a->name, b->name) && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* The check, with a shortcut: when `last` (optional) names the same version of the same file as
 * the one found now, *ret is left as it is (the caller's previous result) and 1 is returned. */
static int check_dir(const char *dir, struct file_id *last, struct conflist_chain_status *ret)
{
    char name[256];
    int r = pick_file(dir, name, sizeof(name));
    if (r < 0) {
        /* ENOENT/ENOTDIR: no directory or nothing in it yet. Any other error is reported as an
         * unreadable configuration: the broker cannot tell whether pods are protected. */
        bool none = r == -ENOENT || r == -ENOTDIR;
        memset(ret, 0, sizeof(*ret));
        ret->chain = none ? CONFLIST_CHAIN_NO_CONFIG : CONFLIST_CHAIN_INVALID;
        if (!none) {
            snprintf(ret->file, sizeof(ret->file), "%s", dir);
            snprintf(ret->detail, sizeof(ret->detail), "cannot list the directory: %s",
                     idb_strerror(r));
        }
        if (last)
            memset(last, 0, sizeof(*last));
        return 0;
    }

    struct conflist_chain_status st;
    memset(&st, 0, sizeof(st));
    snprintf(st.file, sizeof(st.file), "%s/%s", dir, name);
    /* O_NONBLOCK: a FIFO planted there must not stall the watch. */
    _cleanup_close_ int fd = open(st.file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat sb;
    r = fd < 0 || fstat(fd, &sb) < 0 ? -errno : 0;
    if (r < 0 || !S_ISREG(sb.st_mode)) {
        st.chain = CONFLIST_CHAIN_INVALID;
        snprintf(st.detail, sizeof(st.detail), "cannot read it: %s",
                 r < 0 ? idb_strerror(r) : "not a regular file");
        if (last)
            memset(last, 0, sizeof(*last));
        *ret = st;
        return 0;
    }
    struct file_id id = {.dev = sb.st_dev,
                         .ino = sb.st_ino,
                         .size = sb.st_size,
                         .mtime = sb.st_mtim,
                         .ctime = sb.st_ctim};
    snprintf(id.name, sizeof(id.name), "%s", name);
    if (last && file_id_eq(last, &id))
        return 1;

    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    r = read_capped(fd, &text, &len);
    if (r < 0) {
        st.chain = CONFLIST_CHAIN_INVALID;
        snprintf(st.detail, sizeof(st.detail), "cannot read it: %s", idb_strerror(r));
    } else {
        const char *detail = NULL;
        st.chain = conflist_watch_check_text(name, text, len, &detail);
        snprintf(st.detail, sizeof(st.detail), "%s", detail ? detail : "");
    }
    if (last)
        *last = id;
    *ret = st;
    return 0;
}

void conflist_watch_check_dir(const char *dir, struct conflist_chain_status *ret)
{
    check_dir(dir, NULL, ret);
}

/* ---- the Event ---- */

static void rfc3339(uint64_t ns, char *buf, size_t size)
{
    time_t t = (time_t)(ns / 1000000000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

char *conflist_watch_event_json(const char *node, bool warning, const char *reason,
                                const char *message, uint64_t now_ns)
{
    char name[320], ts[32];
    snprintf(name, sizeof(name), "%s.%" PRIx64, node, now_ns);
    rfc3339(now_ns, ts, sizeof(ts));
    _cleanup_json_ struct json_object *o = json_object_new_object();
    struct json_object *meta = json_object_new_object(), *ref = json_object_new_object(),
                       *src = json_object_new_object();
    if (!o || !meta || !ref || !src) {
        json_object_put(meta);
        json_object_put(ref);
        json_object_put(src);
        return NULL;
    }
    json_object_object_add(o, "metadata", meta);
    json_object_object_add(o, "involvedObject", ref);
    json_object_object_add(o, "source", src);
    int r = json_add_str(o, "apiVersion", "v1");
    r |= json_add_str(o, "kind", "Event");
    r |= json_add_str(meta, "name", name);
    r |= json_add_str(meta, "namespace", EVENT_NAMESPACE);
    /* kubelet's node events name the Node by name, and use the name as its UID too. */
    r |= json_add_str(ref, "apiVersion", "v1");
    r |= json_add_str(ref, "kind", "Node");
    r |= json_add_str(ref, "name", node);
    r |= json_add_str(ref, "uid", node);
    r |= json_add_str(o, "reason", reason);
    r |= json_add_str(o, "message", message);
    r |= json_add_str(o, "type", warning ? "Warning" : "Normal");
    r |= json_add_str(src, "component", EVENT_COMPONENT);
    r |= json_add_str(src, "host", node);
    r |= json_add_str(o, "reportingComponent", EVENT_COMPONENT);
    r |= json_add_str(o, "reportingInstance", node);
    r |= json_add_str(o, "firstTimestamp", ts);
    r |= json_add_str(o, "lastTimestamp", ts);
    r |= json_add_int(o, "count", 1);
    if (r < 0)
        return NULL;
    const char *text =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    return text ? strdup(text) : NULL;
}

/* ---- the watch ---- */

struct pending_event {
    char *body; /* the Event as first built: its timestamps are those of the transition */
    char reason[64];
};

struct conflist_watch {
    char *dir;
    char *node_name;
    struct k8s_client *k8s;
    uint32_t interval_ms;

    pthread_mutex_t check_lock; /* one check at a time (thread and conflist_watch_recheck()) */
    struct file_id last;        /* under check_lock */
    bool checked;               /* under check_lock: st holds a result */
    /* Events the API server did not take yet, oldest first (under check_lock): posted again at
     * the next checks, with a doubling pause, so an API outage at a transition loses nothing. */
    struct pending_event pending[EVENT_PENDING_MAX];
    size_t n_pending;
    uint64_t retry_at_ms;
    uint32_t retry_pause_ms;

    pthread_mutex_t lock; /* st, stop */
    pthread_cond_t cond;
    struct conflist_chain_status st;
    bool stop;
    pthread_t thread;
    bool thread_started;
};

/* The reason for /readyz and the Event (why[size]). */
static void describe(const struct conflist_chain_status *st, char *why, size_t size)
{
    if (st->chain == CONFLIST_CHAIN_MISSING)
        snprintf(why, size,
                 "idbroker is missing from the CNI network configuration '%s': pods created now "
                 "are not served by idbroker",
                 st->file);
    else if (st->chain == CONFLIST_CHAIN_INVALID)
        snprintf(why, size,
                 "the CNI network configuration '%s' cannot be used (%s): pods created now may not "
                 "be served by idbroker",
                 st->file, st->detail);
    else if (size)
        why[0] = '\0';
}

/* Posts one Event. Returns 0 when the API server took it, -EAGAIN when it may take it later
 * (no answer, 429, 5xx, 401 while a rotated token is picked up), another negative errno when
 * asking again is pointless (403: RBAC; 4xx: a bad body). */
static int post_event_body(struct conflist_watch *w, const char *reason, const char *body)
{
    struct k8s_reply rep = {0};
    struct k8s_status status = {0};
    int r = k8s_request(w->k8s, "POST", "/api/v1/namespaces/" EVENT_NAMESPACE "/events",
                        "application/json", body, &rep);
    bool again = r < 0;
    if (r >= 0) {
        r = k8s_reply_check(&rep, &status);
        k8s_reply_done(&rep);
        again = r < 0 && (status.http_status == 401 || status.http_status == 429 ||
                          status.http_status >= 500);
    }
    if (r >= 0) {
        log_debug("conflist-watch: posted Event '%s' on node '%s'", reason, w->node_name);
        return 0;
    }
    log_warning_errno(r, "conflist-watch: cannot post Event '%s' on node '%s': %s%s%s, %s", reason,
                      w->node_name, idb_strerror(r), status.message[0] ? ": " : "", status.message,
                      again ? "will try again" : "dropping it");
    return again ? -EAGAIN : r;
}

/* Posts what is pending, oldest first, until one fails for now (under check_lock). */
static void post_pending(struct conflist_watch *w, uint64_t now_ms)
{
    size_t done = 0;
    int r = 0;
    while (done < w->n_pending) {
        r = post_event_body(w, w->pending[done].reason, w->pending[done].body);
        if (r == -EAGAIN)
            break;
        free(w->pending[done].body);
        done++;
    }
    memmove(w->pending, w->pending + done, (w->n_pending - done) * sizeof(w->pending[0]));
    w->n_pending -= done;
    if (w->n_pending == 0) {
        w->retry_pause_ms = 0;
        return;
    }
    w->retry_pause_ms = w->retry_pause_ms ? w->retry_pause_ms * 2 : w->interval_ms;
    if (w->retry_pause_ms > EVENT_RETRY_MAX_MS)
        w->retry_pause_ms = EVENT_RETRY_MAX_MS;
    w->retry_at_ms = now_ms + w->retry_pause_ms;
}

/* Queues an Event for the Node (under check_lock) and posts the queue now. */
static void post_event(struct conflist_watch *w, bool warning, const char *reason,
                       const char *message)
{
    if (!w->k8s)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    char *body = conflist_watch_event_json(w->node_name, warning, reason, message, ns);
    if (!body) {
        log_warning("conflist-watch: cannot post Event '%s': out of memory, ignoring", reason);
        return;
    }
    if (w->n_pending == EVENT_PENDING_MAX) {
        log_warning("conflist-watch: the API server has not taken %d Events, dropping the "
                    "oldest ('%s')",
                    EVENT_PENDING_MAX, w->pending[0].reason);
        free(w->pending[0].body);
        memmove(w->pending, w->pending + 1, (EVENT_PENDING_MAX - 1) * sizeof(w->pending[0]));
        w->n_pending--;
    }
    struct pending_event *e = &w->pending[w->n_pending++];
    e->body = body;
    snprintf(e->reason, sizeof(e->reason), "%s", reason);
    w->retry_pause_ms = 0; /* a new transition: try at once */
    post_pending(w, now_monotonic_ms());
}

void conflist_watch_recheck(struct conflist_watch *w)
{
    pthread_mutex_lock(&w->check_lock);
    struct conflist_chain_status now, before;
    pthread_mutex_lock(&w->lock);
    before = w->st;
    pthread_mutex_unlock(&w->lock);
    now = before;
    bool first = !w->checked; /* w->last is zero then, so the file is read */
    if (w->n_pending > 0) {
        uint64_t t = now_monotonic_ms();
        if (t >= w->retry_at_ms)
            post_pending(w, t);
    }
    if (check_dir(w->dir, &w->last, &now) == 1) {
        pthread_mutex_unlock(&w->check_lock);
        return; /* the same version of the same file as last time */
    }
    w->checked = true;
    pthread_mutex_lock(&w->lock);
    w->st = now;
    pthread_mutex_unlock(&w->lock);

    /* A transition: the state, or (still bad) the file or what is wrong with it, changed. */
    bool was_ok = first || conflist_chain_ok(before.chain), ok = conflist_chain_ok(now.chain);
    bool changed =
        first
            ? !ok
            : was_ok != ok || (!ok && (before.chain != now.chain || !streq(before.file, now.file) ||
                                       !streq(before.detail, now.detail)));
    char why[CONFLIST_WATCH_PATH_MAX + 256];
    if (!ok && changed) {
        describe(&now, why, sizeof(why));
        log_warning("conflist-watch: %s", why);
        post_event(w, true, REASON_MISSING, why);
    } else if (ok && !was_ok) {
        snprintf(why, sizeof(why), "idbroker is back in the CNI network configuration%s%s%s",
                 now.file[0] ? " '" : "", now.file, now.file[0] ? "'" : " (none is left)");
        log_notice("conflist-watch: %s", why);
        post_event(w, false, REASON_BACK, why);
    } else if (first) {
        if (now.chain == CONFLIST_CHAIN_OK)
            log_info("conflist-watch: '%s' chains idbroker", now.file);
        else
            log_info("conflist-watch: no CNI network configuration in '%s' yet", w->dir);
    }
    pthread_mutex_unlock(&w->check_lock);
}

static void *watch_thread(void *ud)
{
    struct conflist_watch *w = ud;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += w->interval_ms / 1000;
        until.tv_nsec += (long)(w->interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!w->stop && pthread_cond_timedwait(&w->cond, &w->lock, &until) != ETIMEDOUT)
            ;
        if (w->stop)
            break;
        pthread_mutex_unlock(&w->lock);
        conflist_watch_recheck(w);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

struct conflist_watch *conflist_watch_free(struct conflist_watch *w)
{
    if (!w)
        return NULL;
    if (w->thread_started) {
        pthread_mutex_lock(&w->lock);
        w->stop = true;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->thread, NULL);
    }
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    pthread_mutex_destroy(&w->check_lock);
    for (size_t i = 0; i < w->n_pending; i++)
        free(w->pending[i].body);
    free(w->dir);
    free(w->node_name);
    free(w);
    return NULL;
}

int conflist_watch_start(const struct conflist_watch_options *o, struct conflist_watch **ret)
{
    if (!o || !o->dir || !*o->dir)
        return -EINVAL;
    struct conflist_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    pthread_mutex_init(&w->check_lock, NULL);
    pthread_mutex_init(&w->lock, NULL);
    (void)cond_init_monotonic(&w->cond);
    w->dir = strdup(o->dir);
    w->node_name = strdup(o->node_name ? o->node_name : "");
    w->k8s = o->k8s;
    w->interval_ms = o->interval_ms ? o->interval_ms : CONFLIST_WATCH_INTERVAL_MS;
    if (!w->dir || !w->node_name) {
        conflist_watch_free(w);
        return -ENOMEM;
    }
    conflist_watch_recheck(w);
    int r = pthread_create(&w->thread, NULL, watch_thread, w);
    if (r != 0) {
        conflist_watch_free(w);
        return -r;
    }
    w->thread_started = true;
    *ret = w;
    return 0;
}

bool conflist_watch_ok(struct conflist_watch *w, char *why, size_t size)
{
    pthread_mutex_lock(&w->lock);
    bool ok = conflist_chain_ok(w->st.chain);
    if (!ok && why)
        describe(&w->st, why, size);
    pthread_mutex_unlock(&w->lock);
    return ok;
}

void conflist_watch_status(struct conflist_watch *w, struct conflist_chain_status *ret)
{
    pthread_mutex_lock(&w->lock);
    *ret = w->st;
    pthread_mutex_unlock(&w->lock);
}
