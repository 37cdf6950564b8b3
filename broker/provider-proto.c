/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The broker <-> provider host frame codec (provider-proto.h). Encoding runs twice over one field
 * list: once to size the frame, once to write it into a buffer of exactly that size.
 */
#include "provider-proto.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <idbroker-internal/macro.h>

#include "host-api.h"

#define FIELD_HEADER_BYTES 6
#define BIT(t) (UINT64_C(1) << (t))

/* The tags that are numbers; every other tag is a string. */
static const uint64_t number_tags =
    BIT(PP_T_IDENTITY_TYPE) | BIT(PP_T_DEADLINE_MS) | BIT(PP_T_CODE) | BIT(PP_T_EXPIRES_ON) |
    BIT(PP_T_NOT_BEFORE) | BIT(PP_T_EXT_EXPIRES_IN) | BIT(PP_T_UPSTREAM_STATUS) |
    BIT(PP_T_RETRY_AFTER) | BIT(PP_T_ABI_MAJOR) | BIT(PP_T_ABI_MINOR) | BIT(PP_T_LOG_LEVEL) |
    BIT(PP_T_LOG_FORMAT) | BIT(PP_T_TIMEOUT_MS) | BIT(PP_T_MAX_CALLS) | BIT(PP_T_MAX_CONCURRENT) |
    BIT(PP_T_MAX_PER_SECOND) | BIT(PP_T_HINT_MS);

#define REQUEST_TAGS                                                                               \
    (BIT(PP_T_PROVIDER) | BIT(PP_T_RESOURCE) | BIT(PP_T_IDENTITY_NAME) |                           \
     BIT(PP_T_IDENTITY_NAMESPACE) | BIT(PP_T_IDENTITY_TYPE) | BIT(PP_T_CLIENT_ID) |                \
     BIT(PP_T_RESOURCE_ID) | BIT(PP_T_TENANT_ID) | BIT(PP_T_AD_ENDPOINT) |                         \
     BIT(PP_T_AD_RESOURCE_ID) | BIT(PP_T_SECRET_NAME) | BIT(PP_T_SECRET_NAMESPACE) |               \
     BIT(PP_T_ANNOTATION) | BIT(PP_T_DEADLINE_MS))
#define REQUEST_REQUIRED                                                                           \
    (BIT(PP_T_PROVIDER) | BIT(PP_T_RESOURCE) | BIT(PP_T_IDENTITY_TYPE) | BIT(PP_T_DEADLINE_MS))
#define RESULT_TAGS                                                                                \
    (BIT(PP_T_CODE) | BIT(PP_T_ACCESS_TOKEN) | BIT(PP_T_EXPIRES_ON) | BIT(PP_T_NOT_BEFORE) |       \
     BIT(PP_T_EXT_EXPIRES_IN) | BIT(PP_T_TOKEN_CLIENT_ID) | BIT(PP_T_UPSTREAM_STATUS) |            \
     BIT(PP_T_UPSTREAM_ERROR) | BIT(PP_T_RETRY_AFTER))

static const struct {
    uint64_t allowed, required;
} schema[_PP_TYPE_MAX] = {
    [PP_INIT] = {BIT(PP_T_LOG_LEVEL) | BIT(PP_T_LOG_FORMAT) | BIT(PP_T_DIR) | BIT(PP_T_TIMEOUT_MS) |
                     BIT(PP_T_MAX_CALLS),
                 BIT(PP_T_LOG_LEVEL) | BIT(PP_T_LOG_FORMAT) | BIT(PP_T_DIR) | BIT(PP_T_TIMEOUT_MS) |
                     BIT(PP_T_MAX_CALLS)},
    [PP_LOAD] = {BIT(PP_T_PROVIDER) | BIT(PP_T_CONF), BIT(PP_T_PROVIDER) | BIT(PP_T_CONF)},
    [PP_LOADED] = {BIT(PP_T_CODE) | BIT(PP_T_ERROR) | BIT(PP_T_VERSION) | BIT(PP_T_ABI_MAJOR) |
                       BIT(PP_T_ABI_MINOR) | BIT(PP_T_PATH),
                   BIT(PP_T_CODE)},
    [PP_ISSUE] = {REQUEST_TAGS, REQUEST_REQUIRED},
    [PP_RESULT] = {RESULT_TAGS, BIT(PP_T_CODE)},
    [PP_VIA] = {REQUEST_TAGS, REQUEST_REQUIRED},
    [PP_VIA_RESULT] = {RESULT_TAGS, BIT(PP_T_CODE)},
    [PP_SET_LOG] = {BIT(PP_T_LOG_LEVEL) | BIT(PP_T_LOG_FORMAT),
                    BIT(PP_T_LOG_LEVEL) | BIT(PP_T_LOG_FORMAT)},
    [PP_INIT_OK] = {0, 0},
    [PP_UP_LIMITS] = {BIT(PP_T_UPSTREAM) | BIT(PP_T_MAX_CONCURRENT) | BIT(PP_T_MAX_PER_SECOND),
                      BIT(PP_T_UPSTREAM) | BIT(PP_T_MAX_CONCURRENT) | BIT(PP_T_MAX_PER_SECOND)},
    [PP_UP_ACQUIRE] = {BIT(PP_T_UPSTREAM) | BIT(PP_T_DEADLINE_MS),
                       BIT(PP_T_UPSTREAM) | BIT(PP_T_DEADLINE_MS)},
    [PP_UP_RELEASE] = {BIT(PP_T_UPSTREAM), BIT(PP_T_UPSTREAM)},
    [PP_UP_RESULT] = {BIT(PP_T_CODE) | BIT(PP_T_HINT_MS), BIT(PP_T_CODE)},
};

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int provider_proto_frame_length(const uint8_t hdr[PP_HEADER_BYTES])
{
    uint32_t len = get_u32(hdr);
    if (len < PP_HEADER_BYTES || len > PP_MAX_FRAME_BYTES || hdr[5] != PP_VERSION || hdr[6] != 0 ||
        hdr[7] != 0)
        return -EBADMSG;
    return (int)len;
}

bool provider_proto_has(const struct pp_msg *m, enum pp_tag tag)
{
    return tag > 0 && tag < _PP_TAG_MAX && (m->present & BIT(tag));
}

int provider_proto_decode(const uint8_t *frame, size_t len, struct pp_msg *ret)
{
    if (!frame || len < PP_HEADER_BYTES)
        return -EBADMSG;
    int flen = provider_proto_frame_length(frame);
    if (flen < 0 || (size_t)flen != len)
        return -EBADMSG;
    uint8_t type = frame[4];
    if (type == 0 || type >= _PP_TYPE_MAX)
        return -EBADMSG;

    /* Large (annotations): decoded in place, copied out only when valid. */
    struct pp_msg *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->type = (enum pp_type)type;
    m->id = get_u64(frame + 8);
    int r = -EBADMSG;
    size_t off = PP_HEADER_BYTES;
    while (off < len) {
        if (len - off < FIELD_HEADER_BYTES)
            goto out;
        unsigned tag = (unsigned)frame[off] | (unsigned)frame[off + 1] << 8;
        uint32_t n = get_u32(frame + off + 2);
        off += FIELD_HEADER_BYTES;
        if (n > len - off || tag == 0 || tag >= _PP_TAG_MAX || !(schema[type].allowed & BIT(tag)))
            goto out;
        const uint8_t *v = frame + off;
        off += n;
        if (tag != PP_T_ANNOTATION && (m->present & BIT(tag)))
            goto out;
        m->present |= BIT(tag);
        if (number_tags & BIT(tag)) {
            if (n != 8)
                goto out;
            m->num[tag] = get_u64(v);
            continue;
        }
        /* A C string: NUL-terminated, no NUL inside. */
        if (n < 1 || v[n - 1] != 0 || memchr(v, 0, n - 1))
            goto out;
        if (tag == PP_T_ANNOTATION) {
            if (m->n_annotations >= PP_MAX_ANNOTATION_STRINGS)
                goto out;
            m->annotations[m->n_annotations++] = (const char *)v;
        } else
            m->str[tag] = (const char *)v;
    }
    if ((m->present & schema[type].required) != schema[type].required || m->n_annotations % 2)
        goto out;
    m->annotations[m->n_annotations] = NULL;
    *ret = *m;
    r = 0;
out:
    free(m);
    return r;
}

/* One encoding pass: with p == NULL it only counts. */
struct writer {
    uint8_t *p;
    size_t len;
    size_t n_annotations;
};

static void w_header(struct writer *w, enum pp_type type, uint64_t id)
{
    if (w->p) {
        w->p[4] = (uint8_t)type;
        w->p[5] = PP_VERSION;
        w->p[6] = 0;
        w->p[7] = 0;
        put_u64(w->p + 8, id);
    }
    w->len = PP_HEADER_BYTES;
}

static void w_field(struct writer *w, enum pp_tag tag, const void *v, size_t n)
{
    /* A field longer than a frame can only fail the size check; do not let n wrap the total. */
    if (n > PP_MAX_FRAME_BYTES)
        n = PP_MAX_FRAME_BYTES;
    if (w->p) {
        put_u16(w->p + w->len, (uint16_t)tag);
        put_u32(w->p + w->len + 2, (uint32_t)n);
        memcpy(w->p + w->len + FIELD_HEADER_BYTES, v, n);
    }
    if (w->len <= 2 * (size_t)PP_MAX_FRAME_BYTES)
        w->len += FIELD_HEADER_BYTES + n;
}

static void w_str(struct writer *w, enum pp_tag tag, const char *s)
{
    if (s)
        w_field(w, tag, s, strnlen(s, (size_t)PP_MAX_FRAME_BYTES + 1) + 1);
}

static void w_num(struct writer *w, enum pp_tag tag, uint64_t v)
{
    uint8_t b[8];
    put_u64(b, v);
    w_field(w, tag, b, sizeof(b));
}

typedef void (*fill_fn)(struct writer *w, const void *ud);

/* Sizes, allocates and writes one frame. */
static int encode(enum pp_type type, uint64_t id, fill_fn fill, const void *ud, uint8_t **ret_frame,
                  size_t *ret_len)
{
    struct writer w = {0};
    w_header(&w, type, id);
    fill(&w, ud);
    if (w.len > PP_MAX_FRAME_BYTES || w.n_annotations > PP_MAX_ANNOTATION_STRINGS)
        return -E2BIG;
    size_t len = w.len;
    uint8_t *p = malloc(len);
    if (!p)
        return -ENOMEM;
    w = (struct writer){.p = p};
    w_header(&w, type, id);
    fill(&w, ud);
    put_u32(p, (uint32_t)len);
    *ret_frame = p;
    *ret_len = len;
    return 0;
}

struct init_args {
    int log_level, log_format;
    const char *dir;
    uint32_t timeout_ms, max_calls;
};

static void fill_init(struct writer *w, const void *ud)
{
    const struct init_args *a = ud;
    w_num(w, PP_T_LOG_LEVEL, (uint64_t)a->log_level);
    w_num(w, PP_T_LOG_FORMAT, (uint64_t)a->log_format);
    w_str(w, PP_T_DIR, a->dir);
    w_num(w, PP_T_TIMEOUT_MS, a->timeout_ms);
    w_num(w, PP_T_MAX_CALLS, a->max_calls);
}

int provider_proto_encode_init(uint64_t id, int log_level, int log_format, const char *plugin_dir,
                               uint32_t timeout_ms, uint32_t max_calls, uint8_t **ret_frame,
                               size_t *ret_len)
{
    if (!plugin_dir || log_level < 0 || log_level > 7 || log_format < 0 || log_format > 1 ||
        max_calls < 1)
        return -EINVAL;
    struct init_args a = {log_level, log_format, plugin_dir, timeout_ms, max_calls};
    return encode(PP_INIT, id, fill_init, &a, ret_frame, ret_len);
}

static void fill_nothing(struct writer *w, const void *ud)
{
    (void)w;
    (void)ud;
}

int provider_proto_encode_init_ok(uint8_t **ret_frame, size_t *ret_len)
{
    return encode(PP_INIT_OK, 0, fill_nothing, NULL, ret_frame, ret_len);
}

static void fill_set_log(struct writer *w, const void *ud)
{
    const struct init_args *a = ud;
    w_num(w, PP_T_LOG_LEVEL, (uint64_t)a->log_level);
    w_num(w, PP_T_LOG_FORMAT, (uint64_t)a->log_format);
}

int provider_proto_encode_set_log(int log_level, int log_format, uint8_t **ret_frame,
                                  size_t *ret_len)
{
    if (log_level < 0 || log_level > 7 || log_format < 0 || log_format > 1)
        return -EINVAL;
    struct init_args a = {.log_level = log_level, .log_format = log_format};
    return encode(PP_SET_LOG, 0, fill_set_log, &a, ret_frame, ret_len);
}

struct load_args {
    const char *name, *conf;
};

static void fill_load(struct writer *w, const void *ud)
{
    const struct load_args *a = ud;
    w_str(w, PP_T_PROVIDER, a->name);
    w_str(w, PP_T_CONF, a->conf);
}

int provider_proto_encode_load(uint64_t id, const char *name, const char *conf, uint8_t **ret_frame,
                               size_t *ret_len)
{
    if (!name || !conf)
        return -EINVAL;
    struct load_args a = {name, conf};
    return encode(PP_LOAD, id, fill_load, &a, ret_frame, ret_len);
}

struct loaded_args {
    int code;
    const char *error, *version, *path;
    uint32_t abi_major, abi_minor;
};

static void fill_loaded(struct writer *w, const void *ud)
{
    const struct loaded_args *a = ud;
    w_num(w, PP_T_CODE, (uint64_t)(int64_t)a->code);
    if (a->code < 0) {
        w_str(w, PP_T_ERROR, a->error);
        return;
    }
    w_str(w, PP_T_VERSION, a->version);
    w_num(w, PP_T_ABI_MAJOR, a->abi_major);
    w_num(w, PP_T_ABI_MINOR, a->abi_minor);
    w_str(w, PP_T_PATH, a->path);
}

int provider_proto_encode_loaded(uint64_t id, int code, const char *error, const char *version,
                                 uint32_t abi_major, uint32_t abi_minor, const char *path,
                                 uint8_t **ret_frame, size_t *ret_len)
{
    struct loaded_args a = {code < 0 ? code : 0, error, version, path, abi_major, abi_minor};
    return encode(PP_LOADED, id, fill_loaded, &a, ret_frame, ret_len);
}

struct up_args {
    const char *name;
    uint64_t a, b;
    int code;
    enum pp_type type;
};

static void fill_up(struct writer *w, const void *ud)
{
    const struct up_args *u = ud;
    switch (u->type) {
    case PP_UP_LIMITS:
        w_str(w, PP_T_UPSTREAM, u->name);
        w_num(w, PP_T_MAX_CONCURRENT, u->a);
        w_num(w, PP_T_MAX_PER_SECOND, u->b);
        break;
    case PP_UP_ACQUIRE:
        w_str(w, PP_T_UPSTREAM, u->name);
        w_num(w, PP_T_DEADLINE_MS, u->a);
        break;
    case PP_UP_RELEASE:
        w_str(w, PP_T_UPSTREAM, u->name);
        break;
    default:
        w_num(w, PP_T_CODE, (uint64_t)(int64_t)u->code);
        if (u->a)
            w_num(w, PP_T_HINT_MS, u->a);
        break;
    }
}

int provider_proto_encode_up_limits(uint64_t id, const char *name, uint32_t max_concurrent,
                                    uint32_t max_per_second, uint8_t **ret_frame, size_t *ret_len)
{
    if (!name)
        return -EINVAL;
    struct up_args u = {name, max_concurrent, max_per_second, 0, PP_UP_LIMITS};
    return encode(PP_UP_LIMITS, id, fill_up, &u, ret_frame, ret_len);
}

int provider_proto_encode_up_acquire(uint64_t id, const char *name, uint64_t deadline_ms,
                                     uint8_t **ret_frame, size_t *ret_len)
{
    if (!name)
        return -EINVAL;
    struct up_args u = {name, deadline_ms, 0, 0, PP_UP_ACQUIRE};
    return encode(PP_UP_ACQUIRE, id, fill_up, &u, ret_frame, ret_len);
}

int provider_proto_encode_up_release(const char *name, uint8_t **ret_frame, size_t *ret_len)
{
    if (!name)
        return -EINVAL;
    struct up_args u = {name, 0, 0, 0, PP_UP_RELEASE};
    return encode(PP_UP_RELEASE, 0, fill_up, &u, ret_frame, ret_len);
}

int provider_proto_encode_up_result(uint64_t id, int code, uint32_t hint_ms, uint8_t **ret_frame,
                                    size_t *ret_len)
{
    struct up_args u = {NULL, hint_ms, 0, code < 0 ? code : 0, PP_UP_RESULT};
    return encode(PP_UP_RESULT, id, fill_up, &u, ret_frame, ret_len);
}

struct request_args {
    const char *provider;
    const struct idb_token_req *req;
};

static void fill_request(struct writer *w, const void *ud)
{
    const struct request_args *a = ud;
    const struct idb_token_req *q = a->req;
    w_str(w, PP_T_PROVIDER, a->provider);
    w_str(w, PP_T_RESOURCE, q->resource);
    w_str(w, PP_T_IDENTITY_NAME, q->identity_name);
    w_str(w, PP_T_IDENTITY_NAMESPACE, q->identity_namespace);
    w_num(w, PP_T_IDENTITY_TYPE, (uint64_t)(int64_t)q->identity_type);
    w_str(w, PP_T_CLIENT_ID, q->client_id);
    w_str(w, PP_T_RESOURCE_ID, q->resource_id);
    w_str(w, PP_T_TENANT_ID, q->tenant_id);
    w_str(w, PP_T_AD_ENDPOINT, q->ad_endpoint);
    w_str(w, PP_T_AD_RESOURCE_ID, q->ad_resource_id);
    w_str(w, PP_T_SECRET_NAME, q->secret_name);
    w_str(w, PP_T_SECRET_NAMESPACE, q->secret_namespace);
    w_num(w, PP_T_DEADLINE_MS, q->deadline_ms);
    size_t n = 0;
    if (q->annotations)
        for (; q->annotations[n]; n++)
            if (n < PP_MAX_ANNOTATION_STRINGS)
                w_str(w, PP_T_ANNOTATION, q->annotations[n]);
    w->n_annotations = n; /* more than the cap fails the encode */
}

int provider_proto_encode_request(enum pp_type type, uint64_t id, const char *provider,
                                  const struct idb_token_req *req, uint8_t **ret_frame,
                                  size_t *ret_len)
{
    if ((type != PP_ISSUE && type != PP_VIA) || !provider || !req || !req->resource)
        return -EINVAL;
    size_t n = 0;
    if (req->annotations)
        while (req->annotations[n])
            n++;
    if (n % 2)
        return -EINVAL;
    struct request_args a = {provider, req};
    return encode(type, id, fill_request, &a, ret_frame, ret_len);
}

struct result_args {
    int code;
    const struct idb_token *tok;
};

static void fill_result(struct writer *w, const void *ud)
{
    const struct result_args *a = ud;
    const struct idb_token *t = a->tok;
    w_num(w, PP_T_CODE, (uint64_t)(int64_t)a->code);
    if (!t)
        return;
    if (a->code >= 0) {
        w_str(w, PP_T_ACCESS_TOKEN, t->access_token);
        w_num(w, PP_T_EXPIRES_ON, t->expires_on);
        w_num(w, PP_T_NOT_BEFORE, t->not_before);
        w_num(w, PP_T_EXT_EXPIRES_IN, t->ext_expires_in);
        w_str(w, PP_T_TOKEN_CLIENT_ID, t->client_id);
        return;
    }
    if (t->upstream_status > 0 && t->upstream_status < 1000)
        w_num(w, PP_T_UPSTREAM_STATUS, (uint64_t)t->upstream_status);
    w_str(w, PP_T_UPSTREAM_ERROR, t->upstream_error);
    if (t->retry_after_s)
        w_num(w, PP_T_RETRY_AFTER, t->retry_after_s);
}

int provider_proto_encode_result(enum pp_type type, uint64_t id, int code,
                                 const struct idb_token *tok, uint8_t **ret_frame, size_t *ret_len)
{
    if (type != PP_RESULT && type != PP_VIA_RESULT)
        return -EINVAL;
    struct result_args a = {code < 0 ? code : 0, tok};
    return encode(type, id, fill_result, &a, ret_frame, ret_len);
}

int provider_proto_get_request(const struct pp_msg *m, struct idb_token_req *ret)
{
    if (m->type != PP_ISSUE && m->type != PP_VIA)
        return -EBADMSG;
    int64_t type = (int64_t)m->num[PP_T_IDENTITY_TYPE];
    if (type < INT_MIN || type > INT_MAX)
        return -EBADMSG;
    *ret = (struct idb_token_req){
        .size = sizeof(struct idb_token_req),
        .resource = m->str[PP_T_RESOURCE],
        .identity_name = m->str[PP_T_IDENTITY_NAME],
        .identity_namespace = m->str[PP_T_IDENTITY_NAMESPACE],
        .identity_type = (int)type,
        .client_id = m->str[PP_T_CLIENT_ID],
        .resource_id = m->str[PP_T_RESOURCE_ID],
        .tenant_id = m->str[PP_T_TENANT_ID],
        .ad_endpoint = m->str[PP_T_AD_ENDPOINT],
        .ad_resource_id = m->str[PP_T_AD_RESOURCE_ID],
        .secret_name = m->str[PP_T_SECRET_NAME],
        .secret_namespace = m->str[PP_T_SECRET_NAMESPACE],
        .annotations = m->n_annotations ? m->annotations : NULL,
        .deadline_ms = m->num[PP_T_DEADLINE_MS],
    };
    return 0;
}

static void wipe_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

int provider_proto_get_result(const struct pp_msg *m, int *ret_code, struct idb_token *ret)
{
    if (m->type != PP_RESULT && m->type != PP_VIA_RESULT)
        return -EBADMSG;
    int64_t code = (int64_t)m->num[PP_T_CODE];
    uint64_t status = m->num[PP_T_UPSTREAM_STATUS], retry = m->num[PP_T_RETRY_AFTER];
    if (code > 0 || code < INT_MIN || status >= 1000 || retry > UINT32_MAX)
        return -EBADMSG;
    if (code == 0 && !m->str[PP_T_ACCESS_TOKEN])
        return -EBADMSG;
    /* Every field through reserved0 is ABI 1.0; callers in this tree always pass a full struct. */
    if (ret->size < offsetof(struct idb_token, reserved0) + sizeof(ret->reserved0))
        return -EINVAL;

    char *at = NULL, *cid = NULL, *uerr = NULL;
    if (m->str[PP_T_ACCESS_TOKEN] && !(at = strdup(m->str[PP_T_ACCESS_TOKEN])))
        goto oom;
    if (m->str[PP_T_TOKEN_CLIENT_ID] && !(cid = strdup(m->str[PP_T_TOKEN_CLIENT_ID])))
        goto oom;
    if (m->str[PP_T_UPSTREAM_ERROR] && !(uerr = strdup(m->str[PP_T_UPSTREAM_ERROR])))
        goto oom;
    ret->access_token = at;
    ret->expires_on = m->num[PP_T_EXPIRES_ON];
    ret->not_before = m->num[PP_T_NOT_BEFORE];
    ret->ext_expires_in = m->num[PP_T_EXT_EXPIRES_IN];
    ret->client_id = cid;
    ret->upstream_status = (long)status;
    ret->upstream_error = uerr;
    ret->retry_after_s = (uint32_t)retry;
    *ret_code = (int)code;
    return 0;
oom:
    wipe_free(at);
    free(cid);
    free(uerr);
    return -ENOMEM;
}

static int read_all(int fd, uint8_t *p, size_t n, uint64_t deadline_ms)
{
    while (n > 0) {
        if (deadline_ms) {
            uint64_t now = now_monotonic_ms();
            if (now >= deadline_ms)
                return -ETIMEDOUT;
            uint64_t left = deadline_ms - now;
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            int k = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0)
                return -errno;
            if (k == 0)
                return -ETIMEDOUT;
        }
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            return -ECONNRESET;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int provider_proto_read(int fd, uint64_t deadline_ms, uint8_t **ret_frame, size_t *ret_len)
{
    uint8_t hdr[PP_HEADER_BYTES];
    int r = read_all(fd, hdr, sizeof(hdr), deadline_ms);
    if (r < 0)
        return r;
    int len = provider_proto_frame_length(hdr);
    if (len < 0)
        return len;
    uint8_t *f = malloc((size_t)len);
    if (!f)
        return -ENOMEM;
    memcpy(f, hdr, sizeof(hdr));
    r = read_all(fd, f + sizeof(hdr), (size_t)len - sizeof(hdr), deadline_ms);
    if (r < 0) {
        explicit_bzero(f, (size_t)len);
        free(f);
        return r;
    }
    *ret_frame = f;
    *ret_len = (size_t)len;
    return 0;
}

int provider_proto_write(int fd, const uint8_t *frame, size_t len)
{
    while (len > 0) {
        ssize_t k = send(fd, frame, len, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
        frame += k;
        len -= (size_t)k;
    }
    return 0;
}
