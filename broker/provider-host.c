/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The provider host process (provider-host.h). The main thread reads frames; each issue() runs on
 * a detached thread that writes its own answer. One host per process, so its state is static: the
 * host API's issue_via has no userdata to carry it.
 */
#include "provider-host.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <idbroker/provider.h>

#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>
#include <idbroker-internal/thread.h>

#include "host-api.h"
#include "plugin-loader.h"
#include "provider-proto.h"

#define MAX_SLOTS 64 /* providers; the loader's own cap */

/* A host->issue_via() or limiter call waiting for the broker's answer. Lives on the waiting
 * thread's stack. */
struct via_wait {
    uint64_t id;
    pthread_cond_t cond;
    bool done;
    int code;
    struct idb_token tok; /* PP_VIA_RESULT */
    uint32_t hint_ms;     /* PP_UP_RESULT */
    struct via_wait *next;
};

static struct {
    int fd;
    pthread_mutex_t lock; /* running, vias, closed */
    pthread_mutex_t write_lock;
    struct plugin_set *plugins;
    char *dir;
    uint32_t timeout_ms, max_calls;
    unsigned running[MAX_SLOTS]; /* issue() calls running, by the provider's index in the set */
    unsigned running_total;
    unsigned loading; /* load threads running */
    bool issued; /* a call was dispatched: no more loading (init() never runs beside issue()) */
    bool closed; /* the channel ended */
    struct via_wait *vias;
    uint64_t via_next;
} H = {
    .fd = -1,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .write_lock = PTHREAD_MUTEX_INITIALIZER,
};

struct call {
    size_t slot;
    const struct plugin *pl;
    uint8_t *frame;
    size_t len;
    struct pp_msg msg;
};

static void frame_free(uint8_t *f, size_t len)
{
    if (f) {
        explicit_bzero(f, len);
        free(f);
    }
}

static void token_done(struct idb_token *t)
{
    if (t->access_token) {
        explicit_bzero(t->access_token, strlen(t->access_token));
        free(t->access_token);
    }
    free(t->client_id);
    free(t->upstream_error);
    t->access_token = t->client_id = t->upstream_error = NULL;
}

/* Writes one frame. A failed write means the broker is gone: the main thread's read ends too. */
static int send_frame(const uint8_t *f, size_t len)
{
    pthread_mutex_lock(&H.write_lock);
    int r = provider_proto_write(H.fd, f, len);
    pthread_mutex_unlock(&H.write_lock);
    return r;
}

static void send_result(uint64_t id, int code, const struct idb_token *tok)
{
    uint8_t *f = NULL;
    size_t len = 0;
    if (provider_proto_encode_result(PP_RESULT, id, code, tok, &f, &len) < 0 &&
        provider_proto_encode_result(PP_RESULT, id, IDB_E_UPSTREAM_BAD_REPLY, NULL, &f, &len) < 0)
        return; /* out of memory: the broker's deadline answers the pod */
    (void)send_frame(f, len);
    frame_free(f, len);
}

static void *call_run(void *ud)
{
    struct call *c = ud;
    struct idb_token_req req;
    struct idb_token tok = {.size = sizeof(tok)};
    int r = provider_proto_get_request(&c->msg, &req);
    if (r >= 0) {
        r = plugin_call_issue(c->pl, &req, &tok);
        /* A success without a token is the plugin's bug; the broker checks the rest. */
        if (r >= 0 && (!tok.access_token || !tok.access_token[0]))
            r = IDB_E_UPSTREAM_BAD_REPLY;
    } else
        r = -EINVAL;
    send_result(c->msg.id, r, &tok);
    token_done(&tok);
    pthread_mutex_lock(&H.lock);
    H.running[c->slot]--;
    H.running_total--;
    pthread_mutex_unlock(&H.lock);
    frame_free(c->frame, c->len);
    free(c);
    return NULL;
}

/* Index of the provider in the set, or SIZE_MAX. */
static size_t slot_of(const char *name)
{
    for (size_t i = 0; i < plugin_set_count(H.plugins); i++)
        if (streq(plugin_set_at(H.plugins, i)->name, name))
            return i;
    return SIZE_MAX;
}

/* A PP_ISSUE: starts a thread for it, or refuses at once. Takes the frame. */
static void on_issue(uint8_t *frame, size_t len, const struct pp_msg *m)
{
    const char *name = m->str[PP_T_PROVIDER];
    size_t slot = slot_of(name);
    if (slot == SIZE_MAX) {
        frame_free(frame, len);
        send_result(m->id, IDB_E_NO_PROVIDER, NULL);
        return;
    }
    struct call *c = calloc(1, sizeof(*c));
    if (!c) {
        frame_free(frame, len);
        send_result(m->id, -ENOMEM, NULL);
        return;
    }
    *c = (struct call){
        .slot = slot, .pl = plugin_set_at(H.plugins, slot), .frame = frame, .len = len, .msg = *m};
    pthread_mutex_lock(&H.lock);
    H.issued = true;
    bool ok = H.running[slot] < H.max_calls;
    if (ok) {
        H.running[slot]++;
        H.running_total++;
    }
    pthread_mutex_unlock(&H.lock);
    if (!ok) {
        log_warning("provider host: provider '%s' already has %u calls running, refusing another",
                    name, H.max_calls);
    } else {
        pthread_attr_t a;
        pthread_t th;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        ok = pthread_create(&th, &a, call_run, c) == 0;
        pthread_attr_destroy(&a);
        if (ok)
            return;
        pthread_mutex_lock(&H.lock);
        H.running[slot]--;
        H.running_total--;
        pthread_mutex_unlock(&H.lock);
    }
    uint64_t id = m->id;
    frame_free(c->frame, c->len);
    free(c);
    send_result(id, IDB_E_UPSTREAM_UNAVAILABLE, NULL);
}

/* A PP_LOAD: the broker's strict loader, in this process. */
static int load_one(const struct pp_msg *m)
{
    const char *name = m->str[PP_T_PROVIDER];
    _cleanup_free_ char *err = NULL;
    int r;
    pthread_mutex_lock(&H.lock);
    bool issued = H.issued;
    pthread_mutex_unlock(&H.lock);
    if (issued) {
        r = -EBUSY;
        err = strdup("providers are loaded only before the first call");
    } else
        r = plugin_set_load(H.plugins, H.dir, name, m->str[PP_T_CONF], host_api_get(), &err);
    uint8_t *f = NULL;
    size_t len = 0;
    const struct plugin *pl = r >= 0 ? plugin_set_find(H.plugins, name) : NULL;
    if (pl)
        r = provider_proto_encode_loaded(m->id, 0, NULL, pl->version, pl->abi_major, pl->abi_minor,
                                         pl->path, &f, &len);
    else
        r = provider_proto_encode_loaded(m->id, r < 0 ? r : -EIO, err, NULL, 0, 0, NULL, &f, &len);
    if (r < 0)
        return r;
    r = send_frame(f, len);
    frame_free(f, len);
    return r;
}

struct load_job {
    uint8_t *frame;
    size_t len;
    struct pp_msg msg;
};

static void *load_run(void *ud)
{
    struct load_job *j = ud;
    int r = load_one(&j->msg);
    if (r < 0)
        log_error("provider host: cannot answer a load request: %s", idb_strerror(r));
    frame_free(j->frame, j->len);
    free(j);
    pthread_mutex_lock(&H.lock);
    H.loading--;
    pthread_mutex_unlock(&H.lock);
    return NULL;
}

/* Loads on a thread of its own, so that the main thread goes on reading: a provider's init() may
 * ask the broker something (its upstream limits) and wait for the answer. The broker sends one
 * load at a time and no call before the last answer, so init() still runs alone. Takes the frame.
 */
static int on_load(uint8_t *frame, size_t len, const struct pp_msg *m)
{
    struct load_job *j = calloc(1, sizeof(*j));
    if (!j) {
        frame_free(frame, len);
        return -ENOMEM;
    }
    *j = (struct load_job){.frame = frame, .len = len, .msg = *m};
    pthread_mutex_lock(&H.lock);
    H.loading++;
    pthread_mutex_unlock(&H.lock);
    pthread_attr_t a;
    pthread_t th;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int r = -pthread_create(&th, &a, load_run, j);
    pthread_attr_destroy(&a);
    if (r == 0)
        return 0;
    pthread_mutex_lock(&H.lock);
    H.loading--;
    pthread_mutex_unlock(&H.lock);
    frame_free(j->frame, j->len);
    free(j);
    return r;
}

/* Finds and unlinks the waiter for id; H.lock held. */
static struct via_wait *waiter_take(uint64_t id)
{
    for (struct via_wait **pw = &H.vias; *pw; pw = &(*pw)->next) {
        struct via_wait *w = *pw;
        if (w->id == id) {
            *pw = w->next;
            return w;
        }
    }
    return NULL;
}

/* A PP_VIA_RESULT or PP_UP_RESULT: hands the answer to the thread waiting for it (if it still
 * waits). */
static void on_answer(const struct pp_msg *m)
{
    pthread_mutex_lock(&H.lock);
    struct via_wait *w = waiter_take(m->id);
    if (w) {
        if (m->type == PP_UP_RESULT) {
            int64_t code = (int64_t)m->num[PP_T_CODE];
            w->code = code <= 0 && code >= INT_MIN ? (int)code : -EPROTO;
            w->hint_ms =
                m->num[PP_T_HINT_MS] > UINT32_MAX ? UINT32_MAX : (uint32_t)m->num[PP_T_HINT_MS];
        } else if (provider_proto_get_result(m, &w->code, &w->tok) < 0)
            w->code = IDB_E_UPSTREAM_BAD_REPLY;
        w->done = true;
        pthread_cond_signal(&w->cond);
    }
    pthread_mutex_unlock(&H.lock);
}

/* Registers w (zeroed by the caller) for an answer of the broker and gives it an id. Before the
 * first call the broker reads only load answers and limiter calls: only those may ask it then.
 * Returns 0, -EPIPE (channel closed) or -ENOTSUP (too early). */
static int wait_begin(struct via_wait *w, bool early_ok)
{
    (void)cond_init_monotonic(&w->cond);
    pthread_mutex_lock(&H.lock);
    int r = H.closed ? -EPIPE : !H.issued && !early_ok ? -ENOTSUP : 0;
    if (r == 0) {
        w->id = ++H.via_next;
        w->next = H.vias;
        H.vias = w;
    }
    pthread_mutex_unlock(&H.lock);
    if (r < 0)
        pthread_cond_destroy(&w->cond);
    return r;
}

/* Sends the request (send_r: how building and sending it went) and waits for the answer until
 * deadline_ms. Returns 0 with w->done set, -ETIMEDOUT, -EPIPE (channel closed) or send_r. */
static int wait_end(struct via_wait *w, int send_r, uint64_t deadline_ms)
{
    pthread_mutex_lock(&H.lock);
    if (send_r >= 0) {
        struct timespec ts = {.tv_sec = (time_t)(deadline_ms / 1000),
                              .tv_nsec = (long)(deadline_ms % 1000) * 1000000L};
        while (!w->done && !H.closed && now_monotonic_ms() < deadline_ms)
            pthread_cond_timedwait(&w->cond, &H.lock, &ts);
    }
    int r = 0;
    if (!w->done) {
        waiter_take(w->id);
        r = send_r < 0 ? send_r : H.closed ? -EPIPE : -ETIMEDOUT;
    }
    pthread_mutex_unlock(&H.lock);
    pthread_cond_destroy(&w->cond);
    return r;
}

/* host->issue_via() in the host: a PP_VIA to the broker, then wait for its PP_VIA_RESULT. req and
 * ret are full-size (host-api.c sees to that). */
static int host_via(const char *provider, const struct idb_token_req *req, struct idb_token *ret)
{
    struct via_wait w = {.tok = {.size = sizeof(w.tok)}};
    /* issue_via is for issue(), not init(). */
    int r = wait_begin(&w, false);
    if (r < 0)
        return r == -EPIPE ? IDB_E_UPSTREAM_UNAVAILABLE : r;
    uint64_t deadline = req->deadline_ms ? req->deadline_ms : now_monotonic_ms() + H.timeout_ms;
    uint8_t *f = NULL;
    size_t len = 0;
    r = provider_proto_encode_request(PP_VIA, w.id, provider, req, &f, &len);
    if (r >= 0)
        r = send_frame(f, len);
    free(f);
    r = wait_end(&w, r, deadline);
    if (r == -ETIMEDOUT)
        return IDB_E_PROVIDER_TIMEOUT;
    if (r == -EPIPE)
        return IDB_E_UPSTREAM_UNAVAILABLE;
    if (r < 0)
        return r;
    uint32_t size = ret->size;
    memcpy(ret, &w.tok, size < sizeof(w.tok) ? size : sizeof(w.tok));
    ret->size = size;
    return w.code;
}

/* The limiter calls, sent to the broker (host_upstream_router). An acquire waits for the broker's
 * answer a little past its deadline, since the broker answers -EAGAIN only then. */
#define UP_ANSWER_SLACK_MS 2000

static int up_limits(const char *name, uint32_t max_concurrent, uint32_t max_per_second)
{
    struct via_wait w = {0};
    int r = wait_begin(&w, true);
    if (r < 0)
        return r;
    uint8_t *f = NULL;
    size_t len = 0;
    r = provider_proto_encode_up_limits(w.id, name, max_concurrent, max_per_second, &f, &len);
    if (r >= 0)
        r = send_frame(f, len);
    free(f);
    r = wait_end(&w, r, now_monotonic_ms() + H.timeout_ms + UP_ANSWER_SLACK_MS);
    return r < 0 ? r : w.code;
}

static int up_acquire(const char *name, uint64_t deadline_ms, uint32_t *hint_ms)
{
    struct via_wait w = {0};
    int r = wait_begin(&w, true);
    if (r < 0)
        return r == -EPIPE ? -EAGAIN : r;
    uint8_t *f = NULL;
    size_t len = 0;
    r = provider_proto_encode_up_acquire(w.id, name, deadline_ms, &f, &len);
    if (r >= 0)
        r = send_frame(f, len);
    free(f);
    r = wait_end(&w, r, deadline_ms + UP_ANSWER_SLACK_MS);
    if (r < 0)
        return -EAGAIN; /* the broker releases a slot it granted to a host that is gone */
    if (hint_ms && w.code == -EAGAIN)
        *hint_ms = w.hint_ms;
    return w.code;
}

static void up_release(const char *name)
{
    uint8_t *f = NULL;
    size_t len = 0;
    if (provider_proto_encode_up_release(name, &f, &len) < 0)
        return;
    (void)send_frame(f, len);
    free(f);
}

static const struct host_upstream_router up_router = {
    .limits = up_limits,
    .acquire = up_acquire,
    .release = up_release,
};

/* Signals: see provider-host.h. */
static void setup_signals(void)
{
    sigset_t all;
    sigemptyset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    signal(SIGFPE, SIG_DFL);
    signal(SIGILL, SIG_DFL);
}

/* Reads and applies PP_INIT. */
static int read_init(void)
{
    uint8_t *f = NULL;
    size_t len = 0;
    struct pp_msg m;
    int r = provider_proto_read(H.fd, 0, &f, &len);
    if (r < 0)
        return r;
    r = provider_proto_decode(f, len, &m);
    if (r >= 0 && (m.type != PP_INIT || m.num[PP_T_LOG_LEVEL] > 7 ||
                   m.num[PP_T_LOG_FORMAT] > LOG_FORMAT_TEXT || m.num[PP_T_MAX_CALLS] < 1 ||
                   m.num[PP_T_MAX_CALLS] > UINT32_MAX || m.num[PP_T_TIMEOUT_MS] > UINT32_MAX))
        r = -EBADMSG;
    if (r >= 0) {
        log_setup((int)m.num[PP_T_LOG_LEVEL], (enum log_format)m.num[PP_T_LOG_FORMAT],
                  STDERR_FILENO);
        H.timeout_ms = (uint32_t)m.num[PP_T_TIMEOUT_MS];
        H.max_calls = (uint32_t)m.num[PP_T_MAX_CALLS];
        H.dir = strdup(m.str[PP_T_DIR]);
        if (!H.dir)
            r = -ENOMEM;
    }
    frame_free(f, len);
    return r;
}

int provider_host_main(int fd)
{
    setup_signals();
    H.fd = fd;
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    int r = read_init();
    if (r < 0) {
        log_error("provider host: no valid start-up frame from the broker: %s", idb_strerror(r));
        return 1;
    }
    H.plugins = plugin_set_new();
    host_api_set_upstream_router(&up_router);
    if (!H.plugins || host_api_init(host_via) < 0) {
        log_error("provider host: out of memory at start");
        return 1;
    }
    uint8_t *ok = NULL;
    size_t ok_len = 0;
    r = provider_proto_encode_init_ok(&ok, &ok_len);
    if (r >= 0)
        r = send_frame(ok, ok_len);
    free(ok);
    if (r < 0) {
        log_error("provider host: cannot answer the broker: %s", idb_strerror(r));
        return 1;
    }
    log_debug("provider host started (pid %d)", (int)getpid());

    int status = 0;
    for (;;) {
        uint8_t *f = NULL;
        size_t len = 0;
        struct pp_msg m;
        r = provider_proto_read(fd, 0, &f, &len);
        if (r == -ECONNRESET)
            break; /* the broker closed the channel: stop */
        if (r >= 0)
            r = provider_proto_decode(f, len, &m);
        if (r >= 0 && m.type == PP_ISSUE) {
            on_issue(f, len, &m);
            continue;
        }
        if (r >= 0 && m.type == PP_LOAD) {
            r = on_load(f, len, &m);
            if (r >= 0)
                continue;
            f = NULL; /* taken */
        } else if (r >= 0 && (m.type == PP_VIA_RESULT || m.type == PP_UP_RESULT))
            on_answer(&m);
        else if (r >= 0 && m.type == PP_SET_LOG && m.num[PP_T_LOG_LEVEL] <= 7 &&
                 m.num[PP_T_LOG_FORMAT] <= LOG_FORMAT_TEXT)
            log_setup((int)m.num[PP_T_LOG_LEVEL], (enum log_format)m.num[PP_T_LOG_FORMAT],
                      STDERR_FILENO);
        else if (r >= 0)
            r = -EBADMSG;
        frame_free(f, len);
        if (r < 0) {
            log_error("provider host: channel to the broker failed: %s", idb_strerror(r));
            status = 1;
            break;
        }
    }

    pthread_mutex_lock(&H.lock);
    H.closed = true;
    for (struct via_wait *w = H.vias; w; w = w->next)
        pthread_cond_signal(&w->cond);
    bool busy = H.running_total > 0 || H.loading > 0;
    pthread_mutex_unlock(&H.lock);
    if (busy) {
        /* issue() calls still run: their plugin's state cannot be destroyed under them. */
        log_debug("provider host: stopping with calls still running");
        _exit(status);
    }
    H.plugins = plugin_set_free(H.plugins);
    host_api_done();
    free(H.dir);
    close(fd);
    return status;
}
