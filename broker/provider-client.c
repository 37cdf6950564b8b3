/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The broker's side of the provider host (provider-client.h).
 *
 * Threads: callers of provider_client_issue() (token-cache workers) write a request and wait on
 * their own condition variable; one supervisor thread reads every frame from the host, completes
 * the waiting calls, hands each issue_via request to a short-lived thread of its own, and restarts
 * the host when it dies. Only one thread ever starts a host: the caller of start/load before run(),
 * the supervisor after.
 *
 * Locks: `lock` guards the calls in flight, the state flags and the counters; `write_lock`
 * serialises frames on the channel and guards `fd` and `gen` (so a frame is never written to a
 * closed or reused descriptor, nor an answer to a host that was not asked). Never take `lock`
 * while holding `write_lock`.
 */
#include "provider-client.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <idbroker/provider.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/thread.h>

#include "host-api.h"
#include "limits.h"
#include "metrics.h"
#include "plugin-loader.h"
#include "provider-proto.h"

#define HOST_CHANNEL_FD 3
#define EXE_FD_MIN 10
#define HELD_MAX 16 /* upstream names; the limiters' own cap */
#define RESTART_MIN_MS 100u
#define RESTART_MAX_MS 10000u
#define STABLE_MS 10000u      /* a host that lived this long resets the backoff */
#define LOAD_TIMEOUT_MS 30000 /* one provider's init() in the host */
#define STOP_GRACE_MS 2000    /* a host told to stop gets this long before SIGKILL */
#define SEND_TIMEOUT_MS 5000  /* a host that does not read its channel this long is killed */

/* One call in flight. Owned by the caller while it waits; once abandoned (deadline passed), by the
 * list: whoever unlinks it frees it. */
struct pending {
    uint64_t id;
    size_t plugin; /* index into pc->plugins */
    pthread_cond_t cond;
    bool done, abandoned;
    int code;
    struct idb_token tok; /* the result; strings malloc'ed */
    struct pending *next;
};

struct loaded {
    char *name;
    char *conf;      /* may hold secrets: wiped when freed */
    unsigned stuck;  /* abandoned calls the host has not answered yet */
    unsigned active; /* calls in flight now (for the death report) */
};

struct provider_client {
    struct provider_client_options o;
    char *exe, *plugin_dir;
    int exe_fd; /* O_PATH of the program, opened once: a new host runs the same file even after an
                 * upgrade replaced it; -1 if it could not be opened (then exe is executed by path)
                 */

    pthread_mutex_t lock;
    pthread_cond_t cond; /* stop requested, via_running dropped */
    struct pending *pending;
    struct loaded *plugins; /* fixed once run() is called */
    size_t n_plugins;
    uint64_t next_id;
    bool up, stopping, stopped, thread_started, kill_requested;
    pid_t pid;
    uint64_t started_ms;
    uint32_t backoff_ms;
    uint64_t restarts;
    unsigned via_running;
    pthread_t thread;
    /* Upstream limiter slots the current host holds (granted, not yet released): given back when it
     * dies. */
    struct held {
        char name[IDB_UPSTREAM_NAME_MAX + 1];
        unsigned n;
    } held[HELD_MAX];

    pthread_mutex_t write_lock;
    int fd;       /* the channel; -1 when no host */
    uint64_t gen; /* bumped for every host */
};

/* Waits on c until deadline_ms (CLOCK_MONOTONIC ms). */
static void cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, uint64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline_ms / 1000),
                          .tv_nsec = (long)(deadline_ms % 1000) * 1000000L};
    pthread_cond_timedwait(c, m, &ts);
}

static void wipe_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

static void token_done(struct idb_token *t)
{
    wipe_free(t->access_token);
    free(t->client_id);
    free(t->upstream_error);
    t->access_token = t->client_id = t->upstream_error = NULL;
}

static void frame_free(uint8_t *f, size_t len)
{
    if (f) {
        explicit_bzero(f, len);
        free(f);
    }
}

static struct pending *pending_free(struct pending *p)
{
    if (!p)
        return NULL;
    token_done(&p->tok);
    pthread_cond_destroy(&p->cond);
    free(p);
    return NULL;
}

void provider_info_done(struct provider_info *i)
{
    free(i->path);
    free(i->version);
    i->path = i->version = NULL;
}

struct provider_client *provider_client_new(const struct provider_client_options *o)
{
    struct provider_client *pc = calloc(1, sizeof(*pc));
    if (!pc)
        return NULL;
    pc->o = *o;
    pc->exe = strdup(o->exe ? o->exe : "/proc/self/exe");
    pc->plugin_dir = strdup(o->plugin_dir ? o->plugin_dir : "");
    if (!pc->exe || !pc->plugin_dir) {
        free(pc->exe);
        free(pc->plugin_dir);
        free(pc);
        return NULL;
    }
    pc->o.exe = pc->exe;
    pc->o.plugin_dir = pc->plugin_dir;
    /* Above the channel's fd 3, and out of the way of the low numbers the child rearranges. */
    pc->exe_fd = -1;
    int fd = open(pc->exe, O_PATH | O_CLOEXEC);
    if (fd >= 0) {
        pc->exe_fd = fcntl(fd, F_DUPFD_CLOEXEC, EXE_FD_MIN);
        close(fd);
    }
    if (!pc->o.restart_min_ms)
        pc->o.restart_min_ms = RESTART_MIN_MS;
    if (!pc->o.restart_max_ms)
        pc->o.restart_max_ms = RESTART_MAX_MS;
    if (pc->o.restart_max_ms < pc->o.restart_min_ms)
        pc->o.restart_max_ms = pc->o.restart_min_ms;
    pc->backoff_ms = pc->o.restart_min_ms;
    pc->fd = -1;
    pthread_mutex_init(&pc->lock, NULL);
    pthread_mutex_init(&pc->write_lock, NULL);
    cond_init_monotonic(&pc->cond);
    return pc;
}

/* Forks and executes the host with one end of a socketpair as its fd 3. */
static int host_spawn(struct provider_client *pc, int *ret_fd, pid_t *ret_pid)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    /* Everything the child needs is prepared here: after fork() it may only make system calls. */
    char *const argv[] = {(char *)"idbrokerd", (char *)"--provider-host", (char *)"3", NULL};
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* The host dies with the broker, even on SIGKILL (the thread that forked lives as long as
         * the broker: main, or the supervisor). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
        if (sv[1] == HOST_CHANNEL_FD) {
            if (fcntl(HOST_CHANNEL_FD, F_SETFD, 0) < 0)
                _exit(127);
        } else if (dup2(sv[1], HOST_CHANNEL_FD) < 0)
            _exit(127);
        /* Listening sockets and state files stay with the broker (exe_fd is O_CLOEXEC). */
        if (pc->exe_fd > HOST_CHANNEL_FD) {
            close_range(HOST_CHANNEL_FD + 1, (unsigned)pc->exe_fd - 1, 0);
            close_range((unsigned)pc->exe_fd + 1, ~0u, 0);
            execveat(pc->exe_fd, "", argv, environ, AT_EMPTY_PATH);
        } else
            close_range(HOST_CHANNEL_FD + 1, ~0u, 0);
        execv(pc->exe, argv);
        _exit(127);
    }
    int err = errno;
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        return -err;
    }
    struct timeval tv = {.tv_sec = SEND_TIMEOUT_MS / 1000,
                         .tv_usec = (SEND_TIMEOUT_MS % 1000) * 1000};
    (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    *ret_fd = sv[0];
    *ret_pid = pid;
    return 0;
}

/* Describes a wait status: "exited with status 1", "was killed by signal 11 (SIGSEGV)". */
static void describe_status(int status, char *buf, size_t size)
{
    if (WIFEXITED(status))
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) {
        const char *abbrev = sigabbrev_np(WTERMSIG(status));
        snprintf(buf, size, "was killed by signal %d (SIG%s)%s", WTERMSIG(status),
                 abbrev ? abbrev : "?", WCOREDUMP(status) ? ", core dumped" : "");
    } else
        snprintf(buf, size, "ended with wait status %d", status);
}

/* Waits for the host to exit, up to grace_ms, then kills it; reaps it and describes how it ended.
 */
static void host_reap(pid_t pid, uint32_t grace_ms, char *why, size_t size)
{
    int status = 0;
    uint64_t deadline = now_monotonic_ms() + grace_ms;
    for (;;) {
        pid_t k = waitpid(pid, &status, WNOHANG);
        if (k == pid) {
            describe_status(status, why, size);
            return;
        }
        if (k < 0 && errno != EINTR) {
            snprintf(why, size, "is gone (waitpid: %s)", strerror(errno));
            return;
        }
        if (now_monotonic_ms() >= deadline)
            break;
        struct timespec ts = {.tv_nsec = 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    (void)kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            snprintf(why, size, "is gone (waitpid: %s)", strerror(errno));
            return;
        }
    describe_status(status, why, size);
}

/* Sends one frame on the current channel if it is still host `gen` (0 = whichever). On a failed
 * write the channel is broken (part of a frame may be out): the host is killed, and the
 * supervisor sees the end of the channel. */
static int send_frame(struct provider_client *pc, uint64_t gen, const uint8_t *f, size_t len)
{
    pthread_mutex_lock(&pc->write_lock);
    int r = -EPIPE;
    if (pc->fd >= 0 && (gen == 0 || gen == pc->gen)) {
        r = provider_proto_write(pc->fd, f, len);
        if (r < 0)
            (void)shutdown(pc->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&pc->write_lock);
    return r;
}

static int up_serve(struct provider_client *pc, uint64_t gen, const struct pp_msg *m,
                    uint32_t *ret_hint);
static void up_release(struct provider_client *pc, const struct pp_msg *m);
static void held_release_all(struct provider_client *pc);

/* Reads the answer to a request of the start-up exchange, which runs before any call. A provider's
 * init() may set its upstream limits meanwhile: those calls are served here, in order. */
static int read_answer(struct provider_client *pc, int fd, enum pp_type want, uint64_t id,
                       uint8_t **ret_frame, size_t *ret_len, struct pp_msg *ret_msg)
{
    uint64_t deadline = now_monotonic_ms() + LOAD_TIMEOUT_MS;
    for (;;) {
        uint8_t *f = NULL;
        size_t len = 0;
        int r = provider_proto_read(fd, deadline, &f, &len);
        if (r < 0)
            return r;
        r = provider_proto_decode(f, len, ret_msg);
        if (r >= 0 && (ret_msg->type == PP_UP_LIMITS || ret_msg->type == PP_UP_ACQUIRE)) {
            uint32_t hint = 0;
            /* The host being started is not published yet: it will be generation gen + 1. */
            pthread_mutex_lock(&pc->lock);
            uint64_t gen = pc->gen + 1;
            pthread_mutex_unlock(&pc->lock);
            int code = up_serve(pc, gen, ret_msg, &hint);
            uint64_t mid = ret_msg->id;
            frame_free(f, len);
            r = provider_proto_encode_up_result(mid, code, hint, &f, &len);
            if (r >= 0) {
                r = provider_proto_write(fd, f, len);
                frame_free(f, len);
            }
            if (r < 0)
                return r;
            continue;
        }
        if (r >= 0 && ret_msg->type == PP_UP_RELEASE) {
            up_release(pc, ret_msg);
            frame_free(f, len);
            continue;
        }
        if (r < 0 || ret_msg->type != want || ret_msg->id != id) {
            frame_free(f, len);
            return -EBADMSG;
        }
        *ret_frame = f;
        *ret_len = len;
        return 0;
    }
}

/* Asks the host at fd to load one provider. Returns the plugin's result: 0 with *ret_info, or < 0
 * with *ret_error; or a channel error (< 0, *ret_error NULL, nothing else set) if the host did not
 * answer. */
static int host_load(struct provider_client *pc, int fd, const char *name, const char *conf,
                     struct provider_info *ret_info, char **ret_error, bool *ret_channel_ok)
{
    uint8_t *f = NULL;
    size_t len = 0;
    pthread_mutex_lock(&pc->lock);
    uint64_t id = ++pc->next_id;
    pthread_mutex_unlock(&pc->lock);
    *ret_channel_ok = false;
    int r = provider_proto_encode_load(id, name, conf, &f, &len);
    if (r < 0)
        return r;
    r = provider_proto_write(fd, f, len);
    frame_free(f, len);
    if (r < 0)
        return r;
    struct pp_msg m;
    r = read_answer(pc, fd, PP_LOADED, id, &f, &len, &m);
    if (r < 0)
        return r;
    *ret_channel_ok = true;
    int code = (int)(int64_t)m.num[PP_T_CODE];
    if (code < 0) {
        if (ret_error)
            *ret_error =
                strdup_printf("%s", m.str[PP_T_ERROR] ? m.str[PP_T_ERROR] : idb_strerror(code));
        frame_free(f, len);
        return code;
    }
    struct provider_info info = {
        .path = strdup(m.str[PP_T_PATH] ? m.str[PP_T_PATH] : ""),
        .version = m.str[PP_T_VERSION] ? strdup(m.str[PP_T_VERSION]) : NULL,
        .abi_major = (uint32_t)m.num[PP_T_ABI_MAJOR],
        .abi_minor = (uint32_t)m.num[PP_T_ABI_MINOR],
    };
    frame_free(f, len);
    if (!info.path || (m.str[PP_T_VERSION] && !info.version)) {
        provider_info_done(&info);
        return -ENOMEM;
    }
    if (ret_info)
        *ret_info = info;
    else
        provider_info_done(&info);
    return 0;
}

/*
 * Starts a host and loads every provider loaded so far into it. Runs with no host up (nobody else
 * touches fd). On success the new channel and pid are published. A provider that fails to load in
 * a restarted host (its file changed, say) is logged; its calls get IDB_E_NO_PROVIDER from the
 * host.
 */
static int host_start(struct provider_client *pc, char **ret_error)
{
    int fd = -1;
    pid_t pid = 0;
    uint8_t *f = NULL;
    size_t len = 0;
    char why[128];
    int r = host_spawn(pc, &fd, &pid);
    if (r < 0) {
        if (ret_error)
            *ret_error = strdup_printf("cannot start the provider host: %s", idb_strerror(r));
        return r;
    }
    pthread_mutex_lock(&pc->lock);
    int level = pc->o.log_level, format = pc->o.log_format;
    pthread_mutex_unlock(&pc->lock);
    r = provider_proto_encode_init(0, level, format, pc->plugin_dir, pc->o.timeout_ms,
                                   PROVIDER_HOST_MAX_CALLS, &f, &len);
    if (r >= 0) {
        r = provider_proto_write(fd, f, len);
        frame_free(f, len);
    }
    if (r >= 0) {
        /* The answer proves the program started and speaks this protocol. */
        struct pp_msg m;
        r = read_answer(pc, fd, PP_INIT_OK, 0, &f, &len, &m);
        if (r >= 0)
            frame_free(f, len);
    }
    for (size_t i = 0; r >= 0 && i < pc->n_plugins; i++) {
        _cleanup_free_ char *err = NULL;
        bool channel_ok;
        int k =
            host_load(pc, fd, pc->plugins[i].name, pc->plugins[i].conf, NULL, &err, &channel_ok);
        if (!channel_ok)
            r = k;
        else if (k < 0)
            log_error("provider host: %s", err ? err : idb_strerror(k));
    }
    if (r < 0) {
        close(fd);
        host_reap(pid, 0, why, sizeof(why));
        held_release_all(pc);
        if (ret_error)
            *ret_error = strdup_printf("the provider host (pid %d) did not start: %s; it %s",
                                       (int)pid, idb_strerror(r), why);
        return r;
    }
    pthread_mutex_lock(&pc->lock);
    pthread_mutex_lock(&pc->write_lock);
    pc->fd = fd;
    pc->gen++;
    pthread_mutex_unlock(&pc->write_lock);
    pc->pid = pid;
    pc->started_ms = now_monotonic_ms();
    pthread_mutex_unlock(&pc->lock);
    return 0;
}

int provider_client_start(struct provider_client *pc, char **ret_error)
{
    if (pc->thread_started || pc->fd >= 0)
        return -EALREADY;
    return host_start(pc, ret_error);
}

/* Counts a slot of `name` as held by the current host; lock held. Returns false if it cannot be
 * counted (then the caller gives it back at once). */
static bool held_add(struct provider_client *pc, const char *name)
{
    struct held *free_slot = NULL;
    for (size_t i = 0; i < HELD_MAX; i++) {
        if (pc->held[i].n > 0 && streq(pc->held[i].name, name)) {
            pc->held[i].n++;
            return true;
        }
        if (pc->held[i].n == 0 && !free_slot)
            free_slot = &pc->held[i];
    }
    if (!free_slot || strlen(name) > IDB_UPSTREAM_NAME_MAX)
        return false;
    memcpy(free_slot->name, name, strlen(name) + 1);
    free_slot->n = 1;
    return true;
}

/* Uncounts one slot of `name`; lock held. Returns whether the host held one. */
static bool held_remove(struct provider_client *pc, const char *name)
{
    for (size_t i = 0; i < HELD_MAX; i++)
        if (pc->held[i].n > 0 && streq(pc->held[i].name, name)) {
            pc->held[i].n--;
            return true;
        }
    return false;
}

/* Gives back every slot the host held. */
static void held_release_all(struct provider_client *pc)
{
    struct held held[HELD_MAX];
    pthread_mutex_lock(&pc->lock);
    memcpy(held, pc->held, sizeof(held));
    memset(pc->held, 0, sizeof(pc->held));
    pthread_mutex_unlock(&pc->lock);
    for (size_t i = 0; i < HELD_MAX; i++)
        for (unsigned k = 0; k < held[i].n; k++)
            host_api_upstream_release(held[i].name);
}

/* A limiter call of the host, served by the broker's limiters (the node's). Returns the code for
 * PP_UP_RESULT, and *ret_hint. Blocks up to the acquire's deadline. `gen` is the host's: a slot
 * granted to a host that is gone meanwhile is given back at once. */
static int up_serve(struct provider_client *pc, uint64_t gen, const struct pp_msg *m,
                    uint32_t *ret_hint)
{
    const char *name = m->str[PP_T_UPSTREAM];
    *ret_hint = 0;
    if (m->type == PP_UP_LIMITS) {
        uint64_t c = m->num[PP_T_MAX_CONCURRENT], ps = m->num[PP_T_MAX_PER_SECOND];
        if (c > UINT32_MAX || ps > UINT32_MAX)
            return -EINVAL;
        return host_api_upstream_limits(name, (uint32_t)c, (uint32_t)ps);
    }
    /* An acquire waits no longer than any call may. */
    uint64_t cap = now_monotonic_ms() + pc->o.timeout_ms;
    uint64_t deadline = m->num[PP_T_DEADLINE_MS] < cap ? m->num[PP_T_DEADLINE_MS] : cap;
    int r = host_api_upstream_acquire(name, deadline, ret_hint);
    if (r < 0)
        return r;
    pthread_mutex_lock(&pc->lock);
    bool counted = gen == pc->gen + (pc->pid > 0 ? 0 : 1) && held_add(pc, name);
    pthread_mutex_unlock(&pc->lock);
    if (!counted) {
        host_api_upstream_release(name);
        return -EAGAIN;
    }
    return 0;
}

/* A PP_UP_RELEASE: gives back a slot the host held (and nothing else: a host cannot release the
 * broker's own slots). */
static void up_release(struct provider_client *pc, const struct pp_msg *m)
{
    const char *name = m->str[PP_T_UPSTREAM];
    pthread_mutex_lock(&pc->lock);
    bool held = held_remove(pc, name);
    pthread_mutex_unlock(&pc->lock);
    if (held)
        host_api_upstream_release(name);
}

/*
 * The host is gone, or must go: fail every call in flight, close the channel, reap the process.
 * Returns how many calls failed; *why says how the host ended.
 */
static unsigned host_down(struct provider_client *pc, uint32_t grace_ms, char *why, size_t size,
                          char *inflight, size_t isize)
{
    unsigned failed = 0;
    pthread_mutex_lock(&pc->lock);
    pc->up = false;
    pid_t pid = pc->pid;
    pc->pid = 0;
    pc->kill_requested = false;
    inflight[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < pc->n_plugins; i++) {
        if (pc->plugins[i].active > 0 && used < isize) {
            int k = snprintf(inflight + used, isize - used, "%s%s x%u", used ? ", " : "",
                             pc->plugins[i].name, pc->plugins[i].active);
            used += k > 0 ? (size_t)k : 0;
        }
        pc->plugins[i].stuck = 0;
        pc->plugins[i].active = 0;
    }
    while (pc->pending) {
        struct pending *p = pc->pending;
        pc->pending = p->next;
        if (p->abandoned) {
            pending_free(p);
            continue;
        }
        p->done = true;
        p->code = IDB_E_UPSTREAM_UNAVAILABLE;
        failed++;
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&pc->lock);
    held_release_all(pc);

    pthread_mutex_lock(&pc->write_lock);
    if (pc->fd >= 0)
        close(pc->fd);
    pc->fd = -1;
    pthread_mutex_unlock(&pc->write_lock);
    if (pid > 0)
        host_reap(pid, grace_ms, why, size);
    else
        snprintf(why, size, "is gone");
    return failed;
}

int provider_client_load(struct provider_client *pc, const char *name, const char *conf_json,
                         struct provider_info *ret_info, char **ret_error)
{
    if (pc->thread_started || !name)
        return -EINVAL;
    const char *conf = conf_json ? conf_json : "{}";
    if (pc->fd < 0) {
        /* An earlier host died and could not be restarted: try once more. */
        int r = host_start(pc, ret_error);
        if (r < 0)
            return r;
    }
    struct loaded *grown = realloc(pc->plugins, (pc->n_plugins + 1) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    pc->plugins = grown;
    struct loaded l = {.name = strdup(name), .conf = strdup(conf)};
    if (!l.name || !l.conf) {
        free(l.name);
        wipe_free(l.conf);
        return -ENOMEM;
    }

    char *err = NULL;
    bool channel_ok;
    struct provider_info info;
    int r = host_load(pc, pc->fd, name, conf, &info, &err, &channel_ok);
    if (r >= 0) {
        pc->plugins[pc->n_plugins++] = l;
        *ret_info = info;
        return 0;
    }
    free(l.name);
    wipe_free(l.conf);
    if (channel_ok) {
        if (ret_error)
            *ret_error = err;
        else
            free(err);
        return r;
    }
    /* The host died (or hung) loading this one: report it, and start a host without it. */
    char why[128], inflight[8];
    host_down(pc, 0, why, sizeof(why), inflight, sizeof(inflight));
    if (ret_error)
        *ret_error = strdup_printf("provider '%s' refused: the provider host %s while loading it",
                                   name, why);
    _cleanup_free_ char *serr = NULL;
    if (host_start(pc, &serr) < 0)
        log_error("%s", strna(serr));
    return r == -ETIMEDOUT ? -ETIMEDOUT : IDB_E_UPSTREAM_UNAVAILABLE;
}

/* Index of the provider called name, or n_plugins. The list is fixed while calls run. */
static size_t plugin_index(const struct provider_client *pc, const char *name)
{
    size_t i = 0;
    while (i < pc->n_plugins && !streq(pc->plugins[i].name, name))
        i++;
    return i;
}

/* Unlinks p from the calls in flight; lock held. Returns whether it was linked. */
static bool pending_unlink(struct provider_client *pc, const struct pending *p)
{
    for (struct pending **pp = &pc->pending; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return true;
        }
    return false;
}

int provider_client_issue(void *ud, const struct plugin *pl, const struct idb_token_req *req,
                          struct idb_token *ret)
{
    struct provider_client *pc = ud;
    if (!pc || !pl || !req || !req->resource || !ret)
        return -EINVAL;
    size_t idx = plugin_index(pc, pl->name);
    if (idx >= pc->n_plugins)
        return IDB_E_NO_PROVIDER;
    uint64_t deadline = req->deadline_ms ? req->deadline_ms : now_monotonic_ms() + pc->o.timeout_ms;

    struct pending *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    cond_init_monotonic(&p->cond);
    p->plugin = idx;
    p->tok.size = sizeof(p->tok);
    pthread_mutex_lock(&pc->lock);
    if (!pc->up) {
        pthread_mutex_unlock(&pc->lock);
        pending_free(p);
        return IDB_E_UPSTREAM_UNAVAILABLE;
    }
    p->id = ++pc->next_id;
    p->next = pc->pending;
    pc->pending = p;
    pc->plugins[idx].active++;
    uint64_t id = p->id;
    pthread_mutex_unlock(&pc->lock);

    uint8_t *f = NULL;
    size_t len = 0;
    int r = provider_proto_encode_request(PP_ISSUE, id, pl->name, req, &f, &len);
    if (r >= 0)
        r = send_frame(pc, 0, f, len);
    free(f);

    pthread_mutex_lock(&pc->lock);
    if (r < 0 && !p->done) {
        /* Never sent (or not wholly): nobody will answer. */
        pending_unlink(pc, p);
        pc->plugins[idx].active--;
        pthread_mutex_unlock(&pc->lock);
        pending_free(p);
        return r == -E2BIG || r == -EINVAL || r == -ENOMEM ? r : IDB_E_UPSTREAM_UNAVAILABLE;
    }
    while (!p->done && now_monotonic_ms() < deadline)
        cond_wait_until(&p->cond, &pc->lock, deadline);
    if (!p->done) {
        /* The answer, if it ever comes, is dropped; until then the call counts as stuck. */
        p->abandoned = true;
        struct loaded *l = &pc->plugins[idx];
        l->stuck++;
        if (l->stuck >= PROVIDER_HOST_MAX_STUCK && !pc->kill_requested && pc->pid > 0) {
            pc->kill_requested = true;
            log_warning("provider '%s' has %u calls stuck past their deadline; restarting the "
                        "provider host (pid %d) to reclaim them",
                        l->name, l->stuck, (int)pc->pid);
            (void)kill(pc->pid, SIGKILL);
        }
        pthread_mutex_unlock(&pc->lock);
        return IDB_E_PROVIDER_TIMEOUT;
    }
    pthread_mutex_unlock(&pc->lock);
    /* Done: whoever completed p unlinked it; it is ours. */
    r = p->code;
    uint32_t size = ret->size;
    size_t n = size < sizeof(p->tok) ? size : sizeof(p->tok);
    memcpy(ret, &p->tok, n);
    ret->size = size;
    memset(&p->tok, 0, sizeof(p->tok));
    pending_free(p);
    return r;
}

/* A PP_RESULT: completes (or drops, if abandoned) the call it answers. */
static void on_result(struct provider_client *pc, const struct pp_msg *m)
{
    struct idb_token tok = {.size = sizeof(tok)};
    int code = 0;
    int r = provider_proto_get_result(m, &code, &tok);
    pthread_mutex_lock(&pc->lock);
    struct pending *p = pc->pending;
    while (p && p->id != m->id)
        p = p->next;
    if (!p) {
        pthread_mutex_unlock(&pc->lock);
        if (r >= 0)
            token_done(&tok);
        return;
    }
    pending_unlink(pc, p);
    struct loaded *l = &pc->plugins[p->plugin];
    if (l->active > 0)
        l->active--;
    if (p->abandoned) {
        if (l->stuck > 0)
            l->stuck--;
        pthread_mutex_unlock(&pc->lock);
        if (r >= 0)
            token_done(&tok);
        pending_free(p);
        return;
    }
    if (r < 0) {
        /* A valid frame with values out of range: the plugin's answer, not the channel, is bad. */
        p->code = r == -ENOMEM ? r : IDB_E_UPSTREAM_BAD_REPLY;
    } else {
        p->code = code;
        p->tok = tok;
    }
    p->done = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&pc->lock);
}

struct via_job {
    struct provider_client *pc;
    uint64_t gen;
    uint8_t *frame;
    size_t len;
    struct pp_msg msg;
};

static void via_job_free(struct via_job *j)
{
    frame_free(j->frame, j->len);
    free(j);
}

static void via_answer(struct provider_client *pc, uint64_t gen, uint64_t id, int code,
                       const struct idb_token *tok)
{
    uint8_t *f = NULL;
    size_t len = 0;
    if (provider_proto_encode_result(PP_VIA_RESULT, id, code, tok, &f, &len) < 0 &&
        provider_proto_encode_result(PP_VIA_RESULT, id, IDB_E_UPSTREAM_BAD_REPLY, NULL, &f, &len) <
            0)
        return;
    (void)send_frame(pc, gen, f, len);
    frame_free(f, len);
}

static void *via_run(void *ud)
{
    struct via_job *j = ud;
    struct provider_client *pc = j->pc;
    if (j->msg.type == PP_UP_LIMITS || j->msg.type == PP_UP_ACQUIRE) {
        uint32_t hint = 0;
        int code = up_serve(pc, j->gen, &j->msg, &hint);
        uint8_t *f = NULL;
        size_t len = 0;
        if (provider_proto_encode_up_result(j->msg.id, code, hint, &f, &len) >= 0 &&
            send_frame(pc, j->gen, f, len) < 0 && code == 0) {
            /* The host never learns of its slot: give it back (if the host still counts it). */
            pthread_mutex_lock(&pc->lock);
            bool held = held_remove(pc, j->msg.str[PP_T_UPSTREAM]);
            pthread_mutex_unlock(&pc->lock);
            if (held)
                host_api_upstream_release(j->msg.str[PP_T_UPSTREAM]);
        }
        free(f);
    } else {
        struct idb_token_req req;
        struct idb_token tok = {.size = sizeof(tok)};
        int r = provider_proto_get_request(&j->msg, &req);
        if (r < 0)
            r = -EINVAL;
        else if (!pc->o.via)
            r = -ENOTSUP;
        else
            r = pc->o.via(pc->o.via_ud, j->msg.str[PP_T_PROVIDER], &req, &tok);
        via_answer(pc, j->gen, j->msg.id, r, &tok);
        token_done(&tok);
    }
    via_job_free(j);
    pthread_mutex_lock(&pc->lock);
    pc->via_running--;
    pthread_cond_broadcast(&pc->cond);
    pthread_mutex_unlock(&pc->lock);
    return NULL;
}

/* A PP_VIA: served on a thread of its own, since it may need this very channel (the provider it
 * names runs in the host too). Takes the frame. The reading thread never writes (so it can never
 * wait for a host that waits for it): a request over the limit gets no answer, and the plugin's
 * issue_via() fails at its deadline. */
static void on_via(struct provider_client *pc, uint64_t gen, uint8_t *frame, size_t len,
                   const struct pp_msg *m)
{
    struct via_job *j = calloc(1, sizeof(*j));
    if (!j) {
        frame_free(frame, len);
        return;
    }
    *j = (struct via_job){.pc = pc, .gen = gen, .frame = frame, .len = len, .msg = *m};
    pthread_mutex_lock(&pc->lock);
    bool ok = !pc->stopping && pc->via_running < PROVIDER_HOST_MAX_VIA;
    if (ok)
        pc->via_running++;
    pthread_mutex_unlock(&pc->lock);
    if (ok) {
        pthread_attr_t a;
        pthread_t th;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        ok = pthread_create(&th, &a, via_run, j) == 0;
        pthread_attr_destroy(&a);
        if (ok)
            return;
        pthread_mutex_lock(&pc->lock);
        pc->via_running--;
        pthread_cond_broadcast(&pc->cond);
        pthread_mutex_unlock(&pc->lock);
    }
    log_warning("provider host: a request to the broker dropped (%u running)",
                (unsigned)PROVIDER_HOST_MAX_VIA);
    via_job_free(j);
}

/* Reads frames from the host until its channel ends. Returns why it ended (< 0). */
static int serve(struct provider_client *pc)
{
    pthread_mutex_lock(&pc->write_lock);
    int fd = pc->fd;
    uint64_t gen = pc->gen;
    pthread_mutex_unlock(&pc->write_lock);
    if (fd < 0)
        return -EPIPE;
    for (;;) {
        uint8_t *f = NULL;
        size_t len = 0;
        int r = provider_proto_read(fd, 0, &f, &len);
        if (r < 0)
            return r;
        struct pp_msg m;
        r = provider_proto_decode(f, len, &m);
        if (r >= 0 && m.type == PP_UP_RELEASE) {
            up_release(pc, &m);
            frame_free(f, len);
            continue;
        }
        if (r < 0 || (m.type != PP_RESULT && m.type != PP_VIA && m.type != PP_UP_LIMITS &&
                      m.type != PP_UP_ACQUIRE)) {
            frame_free(f, len);
            log_error("provider host sent an invalid frame (%s), restarting it",
                      r < 0 ? idb_strerror(r) : "unexpected type");
            return -EBADMSG;
        }
        if (m.type != PP_RESULT) {
            on_via(pc, gen, f, len, &m);
            continue;
        }
        on_result(pc, &m);
        frame_free(f, len);
    }
}

static void *supervise(void *ud)
{
    struct provider_client *pc = ud;
    char why[128], inflight[512];
    pthread_mutex_lock(&pc->lock);
    for (;;) {
        if (pc->stopping)
            break;
        if (pc->fd < 0) {
            /* No host: wait out the backoff, then start one. */
            uint64_t at = now_monotonic_ms() + pc->backoff_ms;
            while (!pc->stopping && now_monotonic_ms() < at)
                cond_wait_until(&pc->cond, &pc->lock, at);
            if (pc->stopping)
                break;
            uint32_t next = pc->backoff_ms * 2;
            pc->backoff_ms = next > pc->o.restart_max_ms ? pc->o.restart_max_ms : next;
            pthread_mutex_unlock(&pc->lock);
            _cleanup_free_ char *err = NULL;
            int r = host_start(pc, &err);
            pthread_mutex_lock(&pc->lock);
            if (r < 0) {
                log_error("%s; retrying in %u ms", strna(err), pc->backoff_ms);
                continue;
            }
            pc->up = !pc->stopping;
            log_notice("provider host restarted (pid %d)", (int)pc->pid);
            continue;
        }
        pthread_mutex_unlock(&pc->lock);
        int r = serve(pc);
        pthread_mutex_lock(&pc->lock);
        bool stopping = pc->stopping;
        uint64_t lived = now_monotonic_ms() - pc->started_ms;
        pid_t pid = pc->pid;
        pthread_mutex_unlock(&pc->lock);
        unsigned failed = host_down(pc, stopping ? STOP_GRACE_MS : 0, why, sizeof(why), inflight,
                                    sizeof(inflight));
        pthread_mutex_lock(&pc->lock);
        if (stopping) {
            log_debug("provider host %s", why);
            break;
        }
        if (lived >= STABLE_MS)
            pc->backoff_ms = pc->o.restart_min_ms;
        pc->restarts++;
        metrics_inc(M_PROVIDER_RESTARTS);
        log_error("provider host (pid %d) %s (%s); %u calls in flight failed%s%s%s; restarting "
                  "it in %u ms",
                  (int)pid, why, r == -ECONNRESET ? "channel closed" : idb_strerror(r), failed,
                  inflight[0] ? " (" : "", inflight, inflight[0] ? ")" : "", pc->backoff_ms);
    }
    pid_t pid = pc->pid;
    pthread_mutex_unlock(&pc->lock);
    /* A host this thread started must be stopped before the thread ends: PR_SET_PDEATHSIG fires
     * when the thread that forked it exits. */
    if (pid > 0) {
        host_down(pc, STOP_GRACE_MS, why, sizeof(why), inflight, sizeof(inflight));
        log_debug("provider host %s", why);
    }
    return NULL;
}

int provider_client_run(struct provider_client *pc)
{
    pthread_mutex_lock(&pc->lock);
    if (pc->thread_started || pc->stopping) {
        pthread_mutex_unlock(&pc->lock);
        return -EALREADY;
    }
    pc->up = pc->fd >= 0;
    int r = pthread_create(&pc->thread, NULL, supervise, pc);
    if (r != 0) {
        pc->up = false;
        pthread_mutex_unlock(&pc->lock);
        return -r;
    }
    pc->thread_started = true;
    pthread_mutex_unlock(&pc->lock);
    return 0;
}

void provider_client_set_log(struct provider_client *pc, int log_level, int log_format)
{
    uint8_t *f = NULL;
    size_t len = 0;
    if (provider_proto_encode_set_log(log_level, log_format, &f, &len) < 0)
        return;
    pthread_mutex_lock(&pc->lock);
    pc->o.log_level = log_level;
    pc->o.log_format = log_format;
    bool up = pc->up;
    pthread_mutex_unlock(&pc->lock);
    /* A host starting now reads the new values; one already up gets the frame. */
    if (up)
        (void)send_frame(pc, 0, f, len);
    free(f);
}

bool provider_client_up(struct provider_client *pc)
{
    pthread_mutex_lock(&pc->lock);
    bool up = pc->up;
    pthread_mutex_unlock(&pc->lock);
    return up;
}

pid_t provider_client_pid(struct provider_client *pc)
{
    pthread_mutex_lock(&pc->lock);
    pid_t pid = pc->pid;
    pthread_mutex_unlock(&pc->lock);
    return pid;
}

uint64_t provider_client_restarts(struct provider_client *pc)
{
    pthread_mutex_lock(&pc->lock);
    uint64_t n = pc->restarts;
    pthread_mutex_unlock(&pc->lock);
    return n;
}

int provider_client_stop(struct provider_client *pc)
{
    if (!pc)
        return 0;
    pthread_mutex_lock(&pc->lock);
    if (pc->stopped) {
        pthread_mutex_unlock(&pc->lock);
        return pc->via_running ? -EBUSY : 0;
    }
    pc->stopping = true;
    pc->up = false;
    bool thread = pc->thread_started;
    pthread_cond_broadcast(&pc->cond);
    pthread_mutex_unlock(&pc->lock);

    /* End of file on its channel tells the host to exit; our own reads end at once too. */
    pthread_mutex_lock(&pc->write_lock);
    if (pc->fd >= 0)
        (void)shutdown(pc->fd, SHUT_RDWR);
    pthread_mutex_unlock(&pc->write_lock);
    if (thread)
        pthread_join(pc->thread, NULL);
    char why[128], inflight[8];
    if (pc->fd >= 0 || pc->pid > 0) {
        host_down(pc, STOP_GRACE_MS, why, sizeof(why), inflight, sizeof(inflight));
        log_debug("provider host %s", why);
    }

    /* issue_via requests end by their deadline at the latest. */
    pthread_mutex_lock(&pc->lock);
    pc->stopped = true;
    uint64_t deadline = now_monotonic_ms() + pc->o.timeout_ms + STOP_GRACE_MS;
    while (pc->via_running > 0 && now_monotonic_ms() < deadline)
        cond_wait_until(&pc->cond, &pc->lock, deadline);
    int r = pc->via_running ? -EBUSY : 0;
    pthread_mutex_unlock(&pc->lock);
    return r;
}

struct provider_client *provider_client_free(struct provider_client *pc)
{
    if (!pc)
        return NULL;
    if (provider_client_stop(pc) < 0)
        return NULL; /* a thread still uses it: leak rather than crash */
    for (size_t i = 0; i < pc->n_plugins; i++) {
        free(pc->plugins[i].name);
        wipe_free(pc->plugins[i].conf);
    }
    free(pc->plugins);
    while (pc->pending) {
        struct pending *p = pc->pending;
        pc->pending = p->next;
        pending_free(p);
    }
    pthread_cond_destroy(&pc->cond);
    pthread_mutex_destroy(&pc->lock);
    pthread_mutex_destroy(&pc->write_lock);
    if (pc->exe_fd >= 0)
        close(pc->exe_fd);
    free(pc->exe);
    free(pc->plugin_dir);
    free(pc);
    return NULL;
}
